"""Train one agent on one run's task stream: ``python -m stages.train --help``.

One job = one (dataset, fidelity, scenario, agent, run), seeded with ``seed_base + run`` (the original seeded once
per process and ran all runs in a row, so its run r depended on runs 0..r-1). Writes ``<out>/metrics.json`` (and
``viz.npz`` when the hyperparameters ask for it); resumes from ``<out>/checkpoint.pt`` after a kill.

Reference LwF (switch ``lwf_shared_backbone``, spec 14.5 q32) shared one feature extractor across the runs of its
process: job r is given the filelists of runs 0..r-1 (``--previous-runs``), trains them in order first (each with its
own seed, in a temporary folder it removes) and starts run r from the feature extractor they leave.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from augmem.io import InputError, check_no_overlap, check_writable


SCENARIOS = ("iid", "class_iid", "instance", "class_instance")


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m stages.train", description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", required=True, help="dataset name (a key of params datasets)")
    ap.add_argument("--scenario", required=True, choices=SCENARIOS)
    ap.add_argument("--agent", required=True, help="agent name (a key of params agents)")
    ap.add_argument("--run", required=True, type=int, help="run number (selects run<R> filelists and the seed)")
    ap.add_argument("--fidelity", required=True, choices=["reference", "corrected"])
    ap.add_argument("--filelists", required=True, help="the run folder holding stream/ and offline/")
    ap.add_argument("--image-root", required=True, help="folder the filelist image paths are relative to")
    ap.add_argument("--out", required=True, help="output folder of this run")
    ap.add_argument("--params-dir", default="params", help="folder of the params YAML files (default: params)")
    ap.add_argument("--config", action="append", default=[], metavar="FILE",
                    help="configuration file merged over <params-dir>/default.yaml, like snakemake --configfile "
                         "(repeatable; hparam_overrides, define_datasets)")
    ap.add_argument("--hparams", default=None,
                    help='the resolved job as JSON ({"impl", "n_class", "family", "layout", hyperparameters...}, '
                         'what the workflow passes; "kind" is the old name of "family"); validated like the params '
                         "route")
    ap.add_argument("--imagenet-weights", default=None, metavar="FILE",
                    help="state-dict file that stands in for weights 'imagenet' (the fetched file; no network)")
    ap.add_argument("--n-workers", type=int, default=None,
                    help="DataLoader workers (execution-only: overrides hp n_workers, not part of the fingerprint)")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--seed-base", type=int, default=0, help="seed = seed_base + run (default 0)")
    ap.add_argument("--image-cache", default=None, metavar="PREFIX",
                    help="decoded-image cache <PREFIX>.u8/.json (stages.image_cache) to read instead of image files")
    ap.add_argument("--feature-cache", default=None, metavar="PREFIX",
                    help="frozen-feature cache <PREFIX>.f16/.json (stages.feature_cache); used when the agent can "
                         "(AugMem, frozen SqueezeNet front, weights not 'none'), else the image cache or files")
    ap.add_argument("--previous-runs", nargs="*", default=[], metavar="FOLDER",
                    help="run folders 0..run-1, in order, for agents that continue from earlier runs (reference LwF)")
    ap.add_argument("--selected", default=None, metavar="FILE",
                    help="a grid search's selected.yaml (results/gridsearch/.../selected.yaml): its `hp` values are "
                         "merged over the resolved hyperparameters and validated like every route; metrics.json "
                         "records meta.hparams_source 'selected' and the file (else 'published')")
    ap.add_argument("--stop-after-task", type=int, default=None, help=argparse.SUPPRESS)  # tests: simulate a kill
    return ap.parse_args(argv)


def resolve(args) -> tuple[str, int, dict, dict]:
    """(impl, n_class, dataset meta {family, layout}, complete validated hp) from --hparams or from the params folder
    (+ --config files), through the same resolution and validation as the workflow (augmem.train.hparams)."""
    from augmem.agents import get_agent_class
    from augmem.train.hparams import load_params, resolve_job

    if args.hparams is not None:
        try:
            hp = json.loads(args.hparams)
        except json.JSONDecodeError as exc:
            raise InputError(f"--hparams: not valid JSON ({exc})") from None
        if not isinstance(hp, dict) or "impl" not in hp or "n_class" not in hp:
            raise InputError('--hparams: expected a JSON object with at least "impl" and "n_class"')
        impl = hp.pop("impl")
        n_class = int(hp.pop("n_class"))
        family = hp.pop("family") if "family" in hp else hp.pop("kind", args.dataset)
        hp.pop("kind", None)
        ds_meta = {"family": family, "layout": hp.pop("layout", None)}
        try:
            cls = get_agent_class(impl)
        except ValueError as exc:
            raise InputError(f"--hparams: {exc}") from None
        full = cls.check_hparams(hp, {k: "--hparams" for k in hp}, agent=f"{args.agent} ({impl})")
        return impl, n_class, ds_meta, full
    params = load_params(args.params_dir, args.config)
    ds = params["datasets"].get(args.dataset)
    if ds is not None and args.scenario not in (ds.get("scenarios") or []):
        raise InputError(f"dataset {args.dataset}: scenario {args.scenario} is not among its scenarios "
                         f"{ds.get('scenarios')}")
    job = resolve_job(params, args.dataset, args.agent, args.scenario, fidelity=args.fidelity)
    return job.impl, job.n_class, {"family": job.family, "layout": (ds or {}).get("layout")}, job.hp


def apply_selected(args, impl: str, hp: dict) -> tuple[dict, dict]:
    """(hyperparameters, meta entries): with ``--selected FILE`` the grid search's values merged over the resolved
    ones and validated (augmem.results.gridsearch.merge_selected; errors name the file), meta ``hparams_source``
    'selected' and ``hparams_selected`` (file, selection, point, keys); without it, 'published'."""
    if args.selected is None:
        return hp, {"hparams_source": "published"}
    from augmem.results.gridsearch import merge_selected

    cell = {"dataset": args.dataset, "fidelity": args.fidelity, "scenario": args.scenario, "agent": args.agent}
    full, info = merge_selected(args.selected, impl, hp, agent=args.agent, job=cell)
    return full, {"hparams_source": "selected", "hparams_selected": info}


def one_line(exc: Exception) -> str:
    """The message of an InputError, also when a DataLoader worker wrapped it (with its traceback) on the way."""
    msg = str(exc)
    if "Original Traceback" in msg:
        last = [line for line in msg.splitlines() if line.strip()][-1]
        msg = last.split("InputError: ", 1)[-1]
    return msg


def check_out(args) -> None:
    """Before any compute: ``--out`` must not overlap the inputs (filelists, image root, cache files) and must be
    writable (InputError otherwise)."""
    from augmem.data.cache_plan import cache_input_files

    prefixes = {k: v for k, v in (("image_cache", args.image_cache), ("feature_cache", args.feature_cache)) if v}
    check_no_overlap(args.out, [args.filelists, args.image_root, *cache_input_files(prefixes).values(),
                                args.selected])
    check_writable(Path(args.out) / "metrics.json")


def train_previous_runs(args, cls, n_class: int, hp: dict, switches, device: str, impl: str):
    """Train runs 0..run-1 (``--previous-runs``) in order, each from the backbone the one before left, and return
    that backbone's state (None when there are none). Only for agents whose reference chains runs; the folders must
    be exactly runs 0..run-1."""
    import tempfile

    from augmem.train.fidelity import chains_runs
    from augmem.train.loop import run_stream
    from augmem.train.seeding import seed_everything

    chained = chains_runs(impl, args.fidelity, hp.get("switch_overrides"))
    if not chained:
        if args.previous_runs:
            raise InputError(f"--previous-runs: agent {impl} at fidelity {args.fidelity} does not continue from "
                             "earlier runs")
        return None
    names = [Path(f).name for f in args.previous_runs]
    if names != [f"run{k}" for k in range(args.run)]:
        raise InputError(f"--previous-runs: {impl} ({args.fidelity}) run {args.run} needs the folders of runs "
                         f"0..{args.run - 1} in order (run0 run1 ...), got {names or 'none'}")
    state = None
    out_parent = Path(args.out).parent
    out_parent.mkdir(parents=True, exist_ok=True)
    for k, folder in enumerate(args.previous_runs):
        seed = args.seed_base + k
        seed_everything(seed)
        agent = cls(n_class, hp, switches, device)
        if state is not None:
            agent.load_backbone_state(state)
        meta = {"dataset": args.dataset, "scenario": args.scenario, "agent": args.agent, "impl": impl, "run": k,
                "fidelity": args.fidelity, "seed": seed, "previous_run_of": args.run}
        # a folder of this process's own, removed afterwards (the previous runs' numbers are not outputs)
        with tempfile.TemporaryDirectory(prefix=f".{Path(args.out).name}.previous-run{k}.", dir=out_parent) as tmp:
            run_stream(agent, folder, args.image_root, tmp, hp=hp, switches=switches, meta=meta, seed=seed,
                       image_cache=args.image_cache, feature_cache=args.feature_cache,
                       log=lambda m, k=k: print(f"[previous run {k}] {m}", flush=True))
        state = agent.backbone_state()
    return state


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        check_out(args)
    except InputError as e:
        raise SystemExit(f"error: {e}")
    from augmem.agents import get_agent_class
    from augmem.data.cache_plan import initial_weights, input_image_size
    from augmem.train.fidelity import train_switches
    from augmem.train.loop import TrainingDiverged, run_stream
    from augmem.train.seeding import seed_everything

    try:
        impl, n_class, ds_meta, hp = resolve(args)
        hp, source_meta = apply_selected(args, impl, hp)
        # execution-only settings come from the command line on every route (never from the resolved JSON, so that
        # changing them reruns nothing): loader workers, and whether a decoded-image cache is read
        hp = dict(hp, image_cache=args.image_cache is not None)
        if args.n_workers is not None:
            hp["n_workers"] = args.n_workers
        if args.imagenet_weights is not None:
            from augmem.data.cache_plan import imagenet_arch

            if imagenet_arch(impl, hp) == "resnet18":  # REMIND's own network
                from augmem.models.resnet18_split import use_local_imagenet_weights as use_resnet18_file

                use_resnet18_file(args.imagenet_weights)
            else:
                from augmem.models.backbones import use_local_imagenet_weights

                use_local_imagenet_weights(hp["backbone"], args.imagenet_weights)
        if args.threads:
            torch.set_num_threads(args.threads)
        if args.device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        elif args.device == "cuda" and not torch.cuda.is_available():
            raise InputError("--device cuda: no CUDA device available")
        else:
            device = args.device
        seed = args.seed_base + args.run
        seed_everything(seed)
        try:
            cls = get_agent_class(impl)
            switches = train_switches(args.fidelity, hp.get("switch_overrides"))
        except ValueError as exc:
            raise InputError(str(exc)) from None
        carried = train_previous_runs(args, cls, n_class, hp, switches, device, impl)
        if carried is not None:
            seed_everything(seed)  # the previous runs drew from the global RNGs
        agent = cls(n_class, hp, switches, device)
        if carried is not None:
            agent.load_backbone_state(carried)
        hp = agent.hp
        # "kind": the hyperparameter family under its old name (the results' published run filter reads it)
        meta = {"dataset": args.dataset, "kind": ds_meta["family"], **ds_meta, "scenario": args.scenario,
                "agent": args.agent,
                "impl": impl, "run": args.run, "fidelity": args.fidelity, "seed": seed, "n_class": n_class,
                "device": device, "torch": torch.__version__, "image_size": input_image_size(impl, hp),
                "initial_weights": initial_weights(impl, hp), "notes": agent.result_notes(), **source_meta}
        if source_meta["hparams_source"] == "selected":  # the results table marks such cells with this note (¶)
            from augmem.results.gridsearch import selected_note

            meta["notes"].append(selected_note(source_meta["hparams_selected"]))
        if args.previous_runs:
            meta["previous_runs"] = [Path(f).name for f in args.previous_runs]
            meta["notes"].append(f"reference {impl}: run r starts from the feature extractor trained through runs "
                                 "0..r-1 of its process (spec 14.5 q32)")
        log = lambda m: print(m, flush=True)  # noqa: E731
        if args.feature_cache is None and impl == "AugMem" and hp["feature_cache"]:
            from augmem.data.feature_cache import feature_cache_reason

            reason = feature_cache_reason(impl, hp)
            if reason is not None:
                log(f"feature cache not possible: {reason}; the frozen front runs on every batch")
        run_stream(agent, args.filelists, args.image_root, args.out, hp=hp, switches=switches, meta=meta, seed=seed,
                   image_cache=args.image_cache, feature_cache=args.feature_cache,
                   stop_after_task=args.stop_after_task, log=log)
    except (InputError, TrainingDiverged) as e:
        raise SystemExit(f"error: {one_line(e)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
