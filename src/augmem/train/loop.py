"""The stream-learning loop (spec 5.1): tasks in order, epochs over the task filelist in stream order, evaluation
after every epoch (or, with ``eval_every: task``, after a task's last epoch), keep-best, per-task accuracy matrix,
timings, checkpoints, and the per-run outputs (``metrics.json``, ``viz.npz``; format in the project's metrics
contract).

The loop talks to agents only through :class:`augmem.agents.base.Agent`'s interface. Accuracies are computed here
from the per-sample predictions of ``agent.predict(x)`` (one pass over the active test subset per evaluation), so
every number of one evaluation (all seen classes, first-task classes, accuracy-matrix row) comes from the same pass.

Definitions used in the outputs:
* ``labels`` of task t: the labels of the task's filelist (for offline agents, of the cumulative offline task);
* ``active`` after task t: the sorted union of the labels of tasks 0..t (spec 5.1 step 2);
* ``acc_matrix[i][j]``: accuracy on the test images whose label is among task j's labels, after task i (j <= i);
* ``epochs[kind][path][t]``: the per-epoch curve of task t, one value per *evaluated* epoch, whose epoch indices
  (0-based) are ``tasks[t]["evaluated_epochs"]``: every epoch with ``eval_every: epoch`` (the published behaviour) and
  in tasks with keep-best, else only the task's last epoch (a task without training data: one evaluation, epoch 0);
* ``meta.deterministic``: True when deterministic algorithms were on (:func:`augmem.train.seeding.seed_everything`)
  and no op warned that it has no deterministic implementation during the run (``meta.nondeterministic_ops``: those
  ops, in order of first warning; ``use_deterministic_algorithms(warn_only=True)`` only warns);
* ``meta.diverged``: null, or the first task and epoch (1-based) after which the weights or the loss were not
  finite (reference fidelity trains on, as the original; corrected stops there with :class:`TrainingDiverged`).

Randomness by owner (:mod:`augmem.train.seeding`): training, evaluation and visualisation loaders draw from their
own generators and the agent's replay draws from its own, so evaluating more or less often, the validation split,
``visualize`` and the number of loader workers leave the training untouched; dropout and weight initialisation use
the global torch RNG, which only training consumes.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from augmem.data.datasets import IMAGENET_MEAN, IMAGENET_STD, FilelistDataset, check_filelists, study_transform
from augmem.io import InputError, atomic_path, write_json
from augmem.train.checkpoint import file_digest, fingerprint, load_checkpoint, remove_checkpoint, save_checkpoint
from augmem.train.seeding import (derive_seed, owner_generator, rng_state, set_replay_seed, set_rng_state,
                                 throwaway_generator)

VAL_FRACTION = 0.25
EVAL_EVERY = ("epoch", "task")
RNG_SCHEME = "by-owner-1"  # in the checkpoint fingerprint: checkpoints of the earlier global-RNG loop are not resumed


# ---------------------------------------------------------------------------------------------------------- helpers
def task_label_lists(train: dict[int, list[tuple[str, int]]]) -> list[list[int]]:
    """Unique labels of every task, in order of first appearance."""
    return [list(dict.fromkeys(lab for _, lab in train[t])) for t in sorted(train)]


def active_nodes(labels: list[list[int]]) -> list[list[int]]:
    """Spec 5.1 step 2: the labels of task t extended with those of the earlier tasks, ascending."""
    out, seen = [], set()
    for labs in labels:
        seen |= set(labs)
        out.append(sorted(seen))
    return out


def accuracy(pred: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """Top-1 accuracy in %; NaN when nothing is evaluated."""
    if mask is not None:
        pred, y = pred[mask], y[mask]
    if len(y) == 0:
        return math.nan
    return 100.0 * float((pred == y).sum()) / len(y)


def to_json_safe(obj: Any) -> Any:
    """NaN/inf -> None, tuples -> lists, numpy/torch scalars -> Python, Paths -> str (recursively)."""
    if isinstance(obj, dict):
        return {str(k): to_json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_json_safe(v) for v in obj]
    if isinstance(obj, (bool, type(None), str)):
        return obj
    if isinstance(obj, (np.generic, torch.Tensor)) and getattr(obj, "ndim", 0) == 0:
        obj = obj.item()
    if isinstance(obj, int):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)


def collate(batch):
    """Default collation, except for batches a cached dataset already stacked (``batch.collated``)."""
    pre = getattr(batch, "collated", None)
    return pre if pre is not None else torch.utils.data.default_collate(batch)


def make_loader(dataset, batch_size: int, n_workers: int, device: torch.device,
                generator: torch.Generator | None = None, persistent: bool | None = None):
    """The stream loader of spec 4: filelist order (no shuffling). On CUDA: pinned memory, and with workers,
    persistent workers (the loop reuses one loader per dataset for all epochs of a task; ``persistent`` overrides).
    Every iterator draws its base seed from ``generator`` (its owner's; None: the global torch RNG)."""
    cuda = device.type == "cuda"
    persistent = (cuda if persistent is None else bool(persistent)) and n_workers > 0
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=n_workers,
                                       collate_fn=collate, pin_memory=cuda, persistent_workers=persistent,
                                       generator=generator)


def choose_inputs(agent, hp: dict[str, Any], image_root: str | Path, image_cache: str | Path | None = None,
                  feature_cache: str | Path | None = None,
                  log: Callable[[str], None] = print) -> tuple[Callable, str]:
    """(dataset factory, inputs kind): cached front features when given and the agent can use them, else the
    decoded-image cache when given, else the image files. The kind is ``front_features``, ``decoded_cache`` or
    ``pixels`` (metrics.json ``meta.inputs``). A cache that does not fit the run (image size, front weights) is an
    InputError; a feature cache the agent cannot use is skipped with a log line saying why."""
    from augmem.data.cache_plan import input_image_size
    from augmem.data.feature_cache import CachedFeatureDataset, feature_cache_reason
    from augmem.data.image_cache import CachedImageDataset

    size = input_image_size(agent.name, hp)  # image_size, or an external baseline's own network's input (32)
    transform = study_transform(size)
    if image_cache is not None:
        pixels = lambda fl: CachedImageDataset(fl, image_cache, image_size=size)  # noqa: E731
        kind = "decoded_cache"
    else:
        pixels = lambda fl: FilelistDataset(fl, image_root, transform)  # noqa: E731
        kind = "pixels"
    if feature_cache is not None:
        if agent.uses_front_features:
            reason = feature_cache_reason(agent.name, agent.hp)
        else:
            reason = f"agent {agent.name} has no frozen cacheable front"
        if reason is None:
            checked: list[bool] = []

            def features(fl):
                ds = CachedFeatureDataset(fl, feature_cache, pixel_dataset=pixels(fl))
                if not checked:  # the front digest is checked once per run
                    ds.check_matches(agent.model[0], size)
                    checked.append(True)
                return ds

            agent.set_inputs_are_features(True)
            log(f"inputs: cached front features {feature_cache}.f16")
            return features, "front_features"
        log(f"inputs: feature cache {feature_cache} not used ({reason}); using "
            + ("the decoded-image cache" if image_cache is not None else "the image files"))
    if getattr(agent, "_inputs_are_features", False):
        agent.set_inputs_are_features(False)
    log(f"inputs: {'decoded-image cache ' + str(image_cache) + '.u8' if image_cache is not None else 'image files'}")
    return pixels, kind


def _autocast_enter(module, args):
    ctx = torch.autocast(device_type=module._autocast_device, dtype=torch.bfloat16)
    ctx.__enter__()
    module.__dict__.setdefault("_autocast_stack", []).append(ctx)


def _autocast_exit(module, args, output):
    module._autocast_stack.pop().__exit__(None, None, None)
    if torch.is_tensor(output) and output.is_floating_point():
        return output.float()
    return output


def autocast_modules(modules, device_type: str = "cuda") -> None:
    """Run the forward pass of each module under bf16 autocast and return float32 outputs (forward hooks).

    Only the network parts are autocast, never the agents' losses: some (AugMem's and iCaRL's BCE) are banned
    under CUDA autocast, and losses are better in float32 anyway. Hooks survive ``copy.deepcopy`` (iCaRL's old
    model) and ``state_dict`` round trips; backward passes need no context."""
    for m in modules:
        m._autocast_device = device_type
        m.register_forward_pre_hook(_autocast_enter)
        m.register_forward_hook(_autocast_exit, always_call=True)


def apply_gpu_options(agent, hp: dict[str, Any], log: Callable[[str], None] = print) -> None:
    """hp ``channels_last`` (model memory format) and ``amp`` (bf16 autocast of the front and back); CUDA only."""
    cuda = agent.device.type == "cuda"
    for key in ("amp", "channels_last"):
        if hp.get(key, False) and not cuda:
            log(f"{key} requested but the device is {agent.device}: off (CUDA only)")
    if hp.get("channels_last", False) and cuda:
        agent.model.to(memory_format=torch.channels_last)
        log("channels_last: on")
    if hp.get("amp", False) and cuda:
        autocast_modules([agent.model[0], agent.model[1]], "cuda")
        log("amp: bf16 autocast of the network (losses in float32)")


@dataclasses.dataclass
class Predictions:
    """Labels and per-path predicted labels of one evaluation pass."""

    y: torch.Tensor
    pred: dict[str, torch.Tensor]


def predict(agent, x: torch.Tensor, y) -> dict[str, torch.Tensor]:
    """``agent.predict(x)``; agents with task-incremental output paths (``predict_uses_labels``, e.g. Stable SGD's
    ``ti``: the argmax within each image's own task) also get the true labels, from which they read only the task."""
    if getattr(agent, "predict_uses_labels", False):
        return agent.predict(x, torch.as_tensor(y).to(x.device))
    return agent.predict(x)


def predict_subset(agent, dataset, indices: list[int], batch_size: int, n_workers: int,
                   loader=None, generator: torch.Generator | None = None) -> Predictions:
    """One pass of ``agent.predict`` over ``dataset[indices]`` (in that order); ``loader`` (optional) is a loader
    over exactly that subset, reused between calls; else one is made with ``generator`` (the evaluation's)."""
    paths = agent.output_paths()
    ys, preds = [], {p: [] for p in paths}
    if indices:
        if loader is None:
            loader = make_loader(torch.utils.data.Subset(dataset, indices), batch_size, n_workers, agent.device,
                                 generator)
        for x, y in loader:
            out = predict(agent, x.to(agent.device), y)
            missing = set(paths) - set(out)
            if missing:
                raise RuntimeError(f"agent {agent.name}: predict() lacks output path(s) {sorted(missing)}")
            for p in paths:
                preds[p].append(out[p].detach().to("cpu", torch.long))
            ys.append(torch.as_tensor(y).to(torch.long))
    empty = torch.zeros(0, dtype=torch.long)
    return Predictions(y=torch.cat(ys) if ys else empty,
                       pred={p: (torch.cat(v) if v else empty) for p, v in preds.items()})


def split_test(n_test: int, seed: int) -> tuple[list[int], list[int]]:
    """(test indices, validation indices): a seeded 75/25 split of the test set, each kept in filelist order."""
    perm = torch.randperm(n_test, generator=torch.Generator().manual_seed(int(seed))).tolist()
    n_val = int(round(VAL_FRACTION * n_test))
    return sorted(perm[n_val:]), sorted(perm[:n_val])


def holdout_split(paths: list[str]) -> tuple[list[int], list[int]]:
    """(test indices, validation indices) for hp ``holdout_validation`` (the grid search's selection split): an image
    is a validation image when the SHA-256 of its filelist path falls in the lowest VAL_FRACTION of the hash range.
    It depends on the image alone, never on the run, the seed or the label, so every job and run of a dataset holds
    out the same images (about VAL_FRACTION of them) and reports on the same others; each part in filelist order."""
    import hashlib

    val = [int.from_bytes(hashlib.sha256(f"augmem-holdout:{p}".encode()).digest()[:8], "big") < VAL_FRACTION * 2 ** 64
           for p in paths]
    return [i for i, v in enumerate(val) if not v], [i for i, v in enumerate(val) if v]


# ---------------------------------------------------------------------------------------------------------- viz
def _denormalise(x: torch.Tensor) -> np.ndarray:
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    img = (x.float().cpu() * std + mean).clamp(0, 1)
    return (img * 255).round().to(torch.uint8).numpy()


@torch.no_grad()
def visualization_arrays(agent, dataset, test_idx: list[int], test_labels: list[int], preds: Predictions,
                         t: int, hp: dict, batch_size: int, n_workers: int,
                         generator: torch.Generator | None = None) -> dict[str, np.ndarray]:
    """The ``task{t}_*`` arrays of viz.npz (see the metrics contract); the loader draws from ``generator`` (the
    visualisation's)."""
    active = list(agent.active)
    per_class = int(hp.get("viz_per_class", 50))
    n_images = int(hp.get("viz_images_per_class", 4))
    pos = {lab: k for k, lab in enumerate(active)}
    counts: dict[int, int] = {}
    chosen = []
    for i in test_idx:
        lab = test_labels[i]
        if lab in pos and counts.get(lab, 0) < per_class:
            counts[lab] = counts.get(lab, 0) + 1
            chosen.append(i)
    out: dict[str, np.ndarray] = {}
    logits, pred, top_slots, images, image_index = [], [], [], [], []
    shown: dict[int, int] = {}
    has_viz = callable(getattr(agent, "visualization", None))
    pixel_item = getattr(dataset, "pixel_item", None)  # images behind cached front features
    primary = agent.primary_path
    row = 0
    if chosen:
        loader = make_loader(torch.utils.data.Subset(dataset, chosen), batch_size, n_workers, agent.device, generator)
        for x, y in loader:
            xd = x.to(agent.device)
            pred.append(predict(agent, xd, y)[primary].cpu())
            extra = agent.visualization(xd) if has_viz else {}
            if "logits" in extra:
                lg = extra["logits"]
            else:
                agent.model.eval()
                lg = agent.forward(xd)
            logits.append(lg.detach().float().cpu())
            if "top_slots" in extra:
                top_slots.append(extra["top_slots"].detach().cpu().to(torch.int32))
            image_like = x.dim() == 4 and x.shape[1] == 3 and not getattr(agent, "_inputs_are_features", False)
            for k, lab in enumerate(torch.as_tensor(y).tolist()):
                if has_viz and shown.get(lab, 0) < n_images:
                    img = x[k : k + 1] if image_like else None
                    if img is None and pixel_item is not None:
                        px = pixel_item(chosen[row])
                        img = None if px is None else px.unsqueeze(0)
                    if img is not None:
                        shown[lab] = shown.get(lab, 0) + 1
                        images.append(_denormalise(img))
                        image_index.append(row)
                row += 1
    n_class = agent.n_class
    out[f"task{t}_labels"] = np.asarray([test_labels[i] for i in chosen], dtype=np.int64)
    out[f"task{t}_logits"] = (torch.cat(logits).numpy().astype(np.float32) if logits
                              else np.zeros((0, n_class), np.float32))
    out[f"task{t}_pred"] = torch.cat(pred).numpy().astype(np.int64) if pred else np.zeros(0, np.int64)
    conf = np.zeros((len(active), len(active)), dtype=np.int64)
    for yt, yp in zip(preds.y.tolist(), preds.pred[primary].tolist()):
        if yt in pos and yp in pos:
            conf[pos[yt], pos[yp]] += 1
    out[f"task{t}_confusion"] = conf
    if has_viz:
        if callable(getattr(agent, "memory_matrix", None)):
            out[f"task{t}_memory"] = agent.memory_matrix().detach().cpu().float().numpy()
        if top_slots:
            out[f"task{t}_top_slots"] = torch.cat(top_slots).numpy()
        if images:
            out[f"task{t}_images"] = np.concatenate(images)
            out[f"task{t}_image_index"] = np.asarray(image_index, dtype=np.int64)
        if callable(getattr(agent, "slot_usage", None)):
            out[f"task{t}_slot_usage"] = agent.slot_usage().detach().cpu().to(torch.int64).numpy()
    return out


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:  # a file handle: np.savez would append ".npz" to a bare name
            np.savez_compressed(fh, **arrays)


# ---------------------------------------------------------------------------------------------------------- checks
NONDETERMINISM = [  # warnings of torch.use_deterministic_algorithms(True, warn_only=True); group "op" names the op
    re.compile(r"(?P<op>\S+) does not have a deterministic implementation"),
    re.compile(r"this operation is not deterministic because (?P<op>[^.,;]+)"),
]


class WarningRecorder:
    """Context manager around a run's work: records the ops that warned they have no deterministic implementation
    (``ops``, in order of first warning) and logs every distinct warning once (``warning: <category>: <first line>``).

    Those determinism warnings are always shown to it (torch may raise one per call); every warning is still handed
    on to the caller's ``warnings.showwarning``, each distinct determinism warning once, other warnings as the
    caller's filters say."""

    def __init__(self, log: Callable[[str], None] = print):
        self.log = log
        self.ops: list[str] = []
        self._seen: set[tuple[type, str]] = set()

    def __enter__(self) -> WarningRecorder:
        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        self._forward = warnings.showwarning
        for pattern in NONDETERMINISM:
            warnings.filterwarnings("always", message=".*" + pattern.pattern.replace("(?P<op>", "("))
        warnings.showwarning = self._show
        return self

    def __exit__(self, *exc) -> None:
        self._ctx.__exit__(*exc)

    def _show(self, message, category, filename, lineno, file=None, line=None) -> None:
        text = str(message)
        key = (category, text)
        if key in self._seen:
            return
        self._seen.add(key)
        for pattern in NONDETERMINISM:
            m = pattern.search(text)
            if m and m.group("op").strip() not in self.ops:
                self.ops.append(m.group("op").strip())
        first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
        self.log(f"warning: {category.__name__}: {first}")
        self._forward(message, category, filename, lineno, file, line)


class TrainingDiverged(RuntimeError):
    """The network diverged (non-finite weights or loss) and the fidelity says to stop (corrected)."""


def divergence(agent) -> str | None:
    """What is not finite after an epoch, or None: floating-point tensors of ``agent.model``'s state dict (one
    device sync), and the agent's ``last_loss`` when it keeps one."""
    tensors = [(k, v) for k, v in agent.model.state_dict().items() if torch.is_tensor(v) and v.is_floating_point()]
    what = []
    if tensors and not bool(torch.stack([torch.isfinite(v).all() for _, v in tensors]).all()):
        bad = [k for k, v in tensors if not bool(torch.isfinite(v).all())]
        what.append(f"non-finite weights in {len(bad)} tensor(s): {', '.join(bad[:5])}"
                    + (", ..." if len(bad) > 5 else ""))
    loss = getattr(agent, "last_loss", None)
    if isinstance(loss, (int, float)) or (torch.is_tensor(loss) and loss.numel() == 1):
        if not math.isfinite(float(loss)):
            what.append(f"loss {float(loss)}")
    return "; ".join(what) or None


# ---------------------------------------------------------------------------------------------------------- loop
def _new_partial(paths: list[str], use_val: bool) -> dict[str, Any]:
    per_path = lambda: {p: [] for p in paths}  # noqa: E731
    partial = {
        "tasks": [], "test_all": per_path(), "test_first": per_path(), "acc_matrix": per_path(),
        "epochs": {"test_all": per_path(), "test_first": per_path()},
        "timing": {"train_s": [], "eval_s": [], "train_images_per_s": []}, "elapsed_s": 0.0,
        "nondeterministic_ops": [], "diverged": None,
    }
    partial["val_all"] = per_path() if use_val else None
    if use_val:
        partial["epochs"]["val_all"] = per_path()
    return partial


def job_fingerprint(agent, hp: dict[str, Any], meta: dict[str, Any], switches: dict[str, bool], seed: int, mode: str,
                    inputs: dict[str, str], image_root: str | Path) -> str:
    """What a job's numbers depend on, hashed: metadata, the hyperparameters without the execution-only settings
    (declared ``affects_results=False``: loader workers, the decoded-image cache, which give bit-identical numbers),
    switches, seed, the filelists' digests and the image root as given (relative paths: the same job in another
    checkout has the same fingerprint). Decoded-cache and file inputs count as the same input ("images"); cached
    front features (float16) do not. A resumed checkpoint must match it; metrics.json records it."""
    from augmem.agents.hparams import results_hparams

    view = dict(meta)
    view.pop("fingerprint", None)
    if view.get("inputs") in ("pixels", "decoded_cache"):
        view["inputs"] = "images"
    hp_view = results_hparams(getattr(agent, "HP", None), hp) if dataclasses.is_dataclass(getattr(agent, "HP", None)) \
        else dict(hp)
    return fingerprint({"meta": view, "hp": hp_view, "switches": switches, "seed": int(seed), "mode": mode,
                        "inputs": inputs, "image_root": str(image_root), "rng": RNG_SCHEME})


def run_stream(agent, run_dir: str | Path, image_root: str | Path, out_dir: str | Path, *, hp: dict[str, Any],
               switches, meta: dict[str, Any], seed: int, dataset_factory: Callable | None = None,
               image_cache: str | Path | None = None, feature_cache: str | Path | None = None,
               class_names: dict[int, str] | None = None, stop_after_task: int | None = None,
               log: Callable[[str], None] = print) -> dict[str, Any] | None:
    """Train ``agent`` on one run's task stream and write ``metrics.json`` and ``viz.npz`` into ``out_dir``.

    ``run_dir`` holds ``stream/`` and ``offline/``; offline agents read ``offline/``. ``dataset_factory(filelist)``
    builds a dataset with a ``targets`` list (default: :class:`FilelistDataset` with the study transform at
    ``hp["image_size"]``, or a cache: see :func:`choose_inputs`; ``meta["inputs"]`` records the choice). CUDA-only
    options of hp: ``amp`` (bf16 autocast) and ``channels_last``. ``hp["eval_every"]``: ``epoch`` (default, as
    published) or ``task`` (only after a task's last epoch; tasks with keep-best still evaluate every epoch).
    Resumes from ``<out_dir>/checkpoint.pt`` when its fingerprint matches. With ``stop_after_task=t`` it stops
    (returning None) right after task t's checkpoint, as a killed job would. Returns the metrics dict. Raises
    :class:`TrainingDiverged` when the network diverges and switch ``continue_after_divergence`` is off.
    Warnings raised during the run are logged (:class:`WarningRecorder`) and determinism is reported in ``meta``.
    """
    with WarningRecorder(log) as recorder:
        return _run_stream(agent, run_dir, image_root, out_dir, hp=hp, switches=switches, meta=meta, seed=seed,
                           dataset_factory=dataset_factory, image_cache=image_cache, feature_cache=feature_cache,
                           class_names=class_names, stop_after_task=stop_after_task, log=log, recorder=recorder)


def _run_stream(agent, run_dir, image_root, out_dir, *, hp, switches, meta, seed, dataset_factory, image_cache,
                feature_cache, class_names, stop_after_task, log, recorder: WarningRecorder):
    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    mode = "offline" if agent.offline else "stream"
    files = check_filelists(run_dir, mode, agent.n_class, image_root)
    meta = dict(meta)
    if dataset_factory is None:
        dataset_factory, meta["inputs"] = choose_inputs(agent, hp, image_root, image_cache, feature_cache, log)
    apply_gpu_options(agent, hp, log)

    n_tasks = len(files.tasks)
    labels = task_label_lists(files.train)
    active = active_nodes(labels)
    batch_size = int(hp.get("batch_size", 100))
    n_workers = int(hp.get("n_workers", 1))
    n_epoch = int(hp.get("n_epoch", 1))
    n_epoch_first = hp.get("n_epoch_first_task")
    n_epoch_first = None if n_epoch_first is None else int(n_epoch_first)
    if n_epoch < 1 or (n_epoch_first is not None and n_epoch_first < 1):
        raise InputError(f"n_epoch ({n_epoch}) and n_epoch_first_task ({n_epoch_first}) must be >= 1")
    eval_every = hp.get("eval_every", "epoch")
    if eval_every not in EVAL_EVERY:
        raise InputError(f"eval_every must be one of {list(EVAL_EVERY)}, not {eval_every!r}")
    keep_best_all = bool(hp.get("keep_best_net_all_tasks", False))
    keep_best_first = bool(hp.get("keep_best_task1_net", False))
    keep_best_possible = n_epoch_first is not None and n_epoch_first > 1
    stop_when_diverged = not getattr(switches, "continue_after_divergence", True)

    def keep_best_for(t: int) -> bool:  # spec 5.1 step 4 (n_epoch_first_task > 1 gates every task)
        return (keep_best_all or (keep_best_first and t == 0)) and keep_best_possible

    paths = agent.output_paths()
    primary = agent.primary_path
    select_path = "direct" if hp.get("best_net_direct", False) and "direct" in paths else primary
    use_val = (not switches.keep_best_on_test) and any(keep_best_for(t) for t in range(n_tasks))
    holdout = bool(hp.get("holdout_validation", False))  # grid search: a fixed held-out split (holdout_split)
    use_val = use_val or holdout

    test_ds = dataset_factory(files.test_file)
    test_labels = [int(v) for v in test_ds.targets]
    if use_val:
        test_idx, val_idx = holdout_split([p for p, _ in files.test]) if holdout else split_test(len(test_ds), seed)
    else:
        test_idx, val_idx = list(range(len(test_ds))), []

    meta.setdefault("device", str(agent.device))
    meta.setdefault("torch", torch.__version__)
    from augmem.data.cache_plan import input_image_size

    meta.setdefault("image_size", input_image_size(agent.name, hp))
    meta.setdefault("inputs", "pixels")
    meta.setdefault("seed", int(seed))
    meta.setdefault("n_class", agent.n_class)
    meta.setdefault("impl", type(agent).__name__)
    switches_d = dataclasses.asdict(switches)
    inputs = {p.name: file_digest(p) for p in [files.folder / "train_all.txt", files.test_file,
                                                 *files.task_files.values()]}
    fp = job_fingerprint(agent, hp, meta, switches_d, seed, mode, inputs, image_root)
    meta["fingerprint"] = fp

    # randomness by owner (augmem.train.seeding): loaders draw their base seeds from their owner's generator, the
    # agent's replay draws from its own; the global RNGs (dropout, weight init) are left to training
    gens = {owner: owner_generator(seed, owner) for owner in ("train", "eval", "viz")}
    set_replay_seed(agent, derive_seed(seed, "replay"))

    # resume or start over
    state = load_checkpoint(out_dir, fp, log=log)
    viz: dict[str, np.ndarray] = {}
    if state is not None:
        agent.load_checkpoint_state(state["agent"])
        set_rng_state(state["rng"], gens)
        partial = state["partial"]
        viz = {k: v.numpy() for k, v in state.get("viz", {}).items()}
        first_task = int(state["next_task"])
        log(f"resuming from {out_dir / 'checkpoint.pt'} at task {first_task + 1}/{n_tasks}")
    else:
        partial = _new_partial(paths, use_val)
        first_task = 0
    recorder.ops[:0] = [op for op in partial["nondeterministic_ops"] if op not in recorder.ops]
    # a finished run's metrics.json / viz.npz stay in place until the new ones replace them (atomically, at the end)

    for t in range(first_task, n_tasks):
        agent.set_active(active[t])
        train_ds = dataset_factory(files.task_files[t])
        n_train = len(train_ds)
        n_ep = n_epoch_first if (t == 0 and n_epoch_first is not None) else n_epoch
        if n_train == 0:
            n_ep = 0  # an empty task file (instance-scenario quirk): nothing to learn, still evaluated
        keep_best = keep_best_for(t) and n_ep > 0
        last_e = max(n_ep, 1) - 1
        active_set = set(active[t])
        t_idx = [i for i in test_idx if test_labels[i] in active_set]
        v_idx = [i for i in val_idx if test_labels[i] in active_set]
        first_labels = torch.as_tensor(labels[0] if labels else [], dtype=torch.long)

        ep_vals: list[dict[str, dict[str, float]]] = []
        ep_preds: list[Predictions] = []
        ev_epochs: list[int] = []  # the epochs evaluated (ep_vals[k] was taken after epoch ev_epochs[k])
        train_s = eval_s = 0.0
        best = None  # (score, epoch, weights)
        # one loader per dataset for all epochs of the task (no shuffling: every pass has the filelist order)
        loader = make_loader(train_ds, batch_size, n_workers, agent.device, gens["train"]) if n_ep > 0 else None
        subset_loader = lambda idx: (make_loader(torch.utils.data.Subset(test_ds, idx), batch_size, n_workers,  # noqa
                                                 agent.device, gens["eval"]) if idx else None)
        test_loader, val_loader = subset_loader(t_idx), (subset_loader(v_idx) if use_val else None)
        for e in range(last_e + 1):
            ep_train_s = 0.0
            if n_ep > 0:
                t0 = time.perf_counter()
                agent.learn_stream(loader, task=t, epoch=e, last_epoch=(e == n_ep - 1))
                ep_train_s = time.perf_counter() - t0
                train_s += ep_train_s
                bad = divergence(agent)
                if bad is not None:
                    where = f"task {t + 1}/{n_tasks}, epoch {e + 1}/{n_ep}"
                    if stop_when_diverged:
                        raise TrainingDiverged(
                            f"agent {agent.name} diverged in {where}: {bad}. Corrected fidelity stops here instead "
                            "of reporting the accuracies of a broken network (switch continue_after_divergence).")
                    if partial["diverged"] is None:
                        partial["diverged"] = {"task": t + 1, "epoch": e + 1, "what": bad}
                        log(f"warning: agent {agent.name} diverged in {where}: {bad}; training goes on as in the "
                            "original (switch continue_after_divergence)")
            ips = n_train / ep_train_s if ep_train_s > 0 else math.nan
            msg = f"task {t + 1}/{n_tasks} epoch {e + 1}/{last_e + 1}: {n_train} images, {ips:.1f} img/s"
            if not (keep_best or eval_every == "epoch" or e == last_e):
                log(msg + " (evaluated after the task's last epoch)")
                continue
            t0 = time.perf_counter()
            pr = predict_subset(agent, test_ds, t_idx, batch_size, n_workers, test_loader)
            vals = {"test_all": {p: accuracy(pr.pred[p], pr.y) for p in paths},
                    "test_first": {p: accuracy(pr.pred[p], pr.y, torch.isin(pr.y, first_labels)) for p in paths}}
            if use_val:
                vp = predict_subset(agent, test_ds, v_idx, batch_size, n_workers, val_loader)
                vals["val_all"] = {p: accuracy(vp.pred[p], vp.y) for p in paths}
            eval_s += time.perf_counter() - t0
            ep_vals.append(vals)
            ep_preds.append(pr)
            ev_epochs.append(e)
            msg += ", test_all " + " ".join(f"{p}={vals['test_all'][p]:.1f}" for p in paths)
            if use_val:
                msg += " val_all " + " ".join(f"{p}={vals['val_all'][p]:.1f}" for p in paths)
            log(msg)
            if keep_best:
                score = vals["test_all" if switches.keep_best_on_test else "val_all"][select_path]
                score = -math.inf if math.isnan(score) else score
                if best is None or score > best[0]:
                    best = (score, e, agent.snapshot_weights())

        if keep_best:
            sel = best[1]
            agent.restore_weights(best[2])
            log(f"task {t + 1}/{n_tasks}: keep-best restored epoch {sel + 1}/{n_ep} "
                f"({select_path} on {'test' if switches.keep_best_on_test else 'validation'})")
        else:
            sel = last_e
        k = ev_epochs.index(sel)
        pr = ep_preds[k]

        # record the selected epoch's values
        partial["tasks"].append({"task": t, "labels": sorted(labels[t]), "active": list(active[t]),
                                 "n_train": n_train, "n_epoch": n_ep, "selected_epoch": sel if n_ep > 0 else None,
                                 "evaluated_epochs": list(ev_epochs)})
        for p in paths:
            partial["test_all"][p].append(ep_vals[k]["test_all"][p])
            partial["test_first"][p].append(ep_vals[k]["test_first"][p])
            if use_val:
                partial["val_all"][p].append(ep_vals[k]["val_all"][p])
            row = [accuracy(pr.pred[p], pr.y, torch.isin(pr.y, torch.as_tensor(labels[j], dtype=torch.long)))
                   if j <= t else None for j in range(n_tasks)]
            partial["acc_matrix"][p].append(row)
            for kind in partial["epochs"]:
                partial["epochs"][kind][p].append([v[kind][p] for v in ep_vals])
        partial["timing"]["train_s"].append(train_s)
        partial["timing"]["eval_s"].append(eval_s)
        partial["timing"]["train_images_per_s"].append(n_train * n_ep / train_s if train_s > 0 else math.nan)
        log(f"task {t + 1}/{n_tasks} done: " + " ".join(
            f"test_all {p}={partial['test_all'][p][-1]:.1f} test_first {p}={partial['test_first'][p][-1]:.1f}"
            for p in paths))

        del loader, test_loader, val_loader  # ends persistent workers
        if hp.get("visualize", False):
            viz.update(visualization_arrays(agent, test_ds, test_idx, test_labels, pr, t, hp, batch_size,
                                            n_workers, gens["viz"]))
        if callable(getattr(agent, "task_health", None)) and t_idx:
            # AugMem's health figures on the seen classes' test images (a loader whose seed draw nobody uses)
            hl = make_loader(torch.utils.data.Subset(test_ds, t_idx), batch_size, n_workers, agent.device,
                             throwaway_generator())
            health = agent.task_health(hl, labels[t], sorted({lab for j in range(t) for lab in labels[j]}))
            del hl
            if health is not None:
                partial.setdefault("health", []).append(health)
                log(f"task {t + 1}/{n_tasks} health: map {health['map']}, {health['keys_per_image']} keys/image, "
                    f"max attention {health['max_attention_mean']:.3f} +- {health['max_attention_std']:.3f}, "
                    f"{health['slots_used']}/{health['n_slots']} slots used, {health['distinct_codes']} distinct "
                    f"codes of {health['n_images']} images, shared codes "
                    + ("-" if health["shared_code_fraction"] is None else f"{100 * health['shared_code_fraction']:.0f} %"))

        partial["elapsed_s"] = float(partial.get("elapsed_s", 0.0)) + (time.perf_counter() - t_start)
        partial["nondeterministic_ops"] = list(recorder.ops)
        t_start = time.perf_counter()
        save_checkpoint(out_dir, {
            "fingerprint": fp, "next_task": t + 1, "agent": agent.checkpoint_state(), "rng": rng_state(gens),
            "partial": partial, "viz": {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in viz.items()},
        })
        if stop_after_task is not None and t == stop_after_task and t < n_tasks - 1:
            log(f"stopping after task {t + 1}/{n_tasks} as requested (checkpoint kept)")
            return None

    # outputs
    mem = {k: int(v) for k, v in agent.memory_bytes().items()}
    total_s = float(partial.get("elapsed_s", 0.0)) + (time.perf_counter() - t_start)
    meta.update(determinism_meta(agent.device, recorder.ops))
    meta["diverged"] = partial["diverged"]
    metrics = {
        "meta": meta, "hparams": hp, "switches": switches_d, "primary_path": primary, "paths": paths,
        "tasks": partial["tasks"], "test_all": partial["test_all"], "test_first": partial["test_first"],
        "val_all": partial["val_all"], "acc_matrix": partial["acc_matrix"], "epochs": partial["epochs"],
        "timing": {**partial["timing"], "total_s": total_s},
        "memory_bytes": mem, "memory_bytes_total": int(sum(mem.values())), "n_test": len(test_idx),
    }
    if partial.get("health"):
        from augmem.agents.augmem_health import verdict

        metrics["health"] = partial["health"]
        metrics["health_verdict"] = verdict(partial["health"])
        log(("" if metrics["health_verdict"]["healthy"] else "WARNING: ") + metrics["health_verdict"]["message"])
    metrics = to_json_safe(metrics)
    # viz.npz is always written (a declared output of the train rule): with visualize off it holds only meta_json
    viz["meta_json"] = np.asarray(json.dumps({
        "n_tasks": n_tasks, "tasks": labels, "visualize": bool(hp.get("visualize", False)),
        "class_names": {str(k): v for k, v in (class_names or {}).items()}}))
    write_npz(out_dir / "viz.npz", viz)
    write_json(out_dir / "metrics.json", metrics)
    remove_checkpoint(out_dir)
    return metrics


def determinism_meta(device: torch.device, ops: list[str]) -> dict[str, Any]:
    """``deterministic`` (deterministic algorithms on, cuDNN deterministic without benchmark on CUDA, and no op
    warned), ``nondeterministic_ops``, and on CUDA the GPU's name (``device_name``)."""
    on = torch.are_deterministic_algorithms_enabled()
    if device.type == "cuda":
        on = on and torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    out: dict[str, Any] = {"deterministic": bool(on and not ops), "nondeterministic_ops": list(ops)}
    if device.type == "cuda":
        out["device_name"] = torch.cuda.get_device_name(device)
    return out
