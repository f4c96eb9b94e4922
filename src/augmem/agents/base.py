"""Shared machinery of every agent (the loop in :mod:`augmem.train.loop` talks only to this interface).

An agent owns its network, optimiser and any memory. The loop calls, per task ``t`` and epoch ``e``:

    agent.set_active(active_labels)              # output nodes of all classes seen so far, ascending
    agent.learn_stream(loader, task=t, epoch=e, last_epoch=(e == n_epoch - 1))
    agent.evaluate(loader) -> {"acc": float, ...}  # top-1 accuracy in % per output path; ``primary_path`` first

``loader`` yields ``(x, y)`` batches in filelist order (no shuffling: the stream order is the filelist order).
``x`` is an image batch, or — when ``uses_front_features`` is True and the loop feeds a frozen-feature cache —
already the output of the frozen front ``E``; :meth:`front_forward` hides the difference.

Checkpointing: :meth:`checkpoint_state` returns nested dicts/lists of tensors and Python scalars only (so that
``torch.load(weights_only=True)`` can read it back) and :meth:`load_checkpoint_state` restores it exactly.
"""
from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from augmem.agents.hparams import check_hparams, hparam
from augmem.models import build_backbone
from augmem.models.backbones import ALIASES as BACKBONE_NAMES
from augmem.train.fidelity import TrainSwitches, switch_names

OPTIMIZERS = ("SGD", "RMSprop", "Adam", "AdamW", "Adagrad", "Adadelta")


@dataclasses.dataclass(frozen=True)
class CommonHP:
    """What every agent reads. Defaults are the original CLI's (spec 5.4); params/agents.yaml holds the published
    values of each run script (spec 8)."""

    optimizer: str = hparam("SGD", "optimiser (spec 6.1)", choices=OPTIMIZERS)
    lr: float = hparam(0.001, "learning rate", gt=0)
    momentum: float = hparam(0.9, "momentum of SGD / RMSprop", min=0)
    weight_decay: float = hparam(0.0, "L2 weight decay of the optimiser", min=0)
    batch_size: int = hparam(100, "training and evaluation batch size", unit="images", min=1)
    n_epoch: int = hparam(1, "epochs per task", unit="epochs", min=1)
    n_epoch_first_task: int | None = hparam(None, "epochs of the first task (null: n_epoch); keep-best needs > 1",
                                            unit="epochs", min=1)
    keep_best_task1_net: bool = hparam(False, "keep the best epoch of the first task (needs n_epoch_first_task > 1)")
    keep_best_net_all_tasks: bool = hparam(False, "keep the best epoch of every task (needs n_epoch_first_task > 1)")
    eval_every: str = hparam("epoch", "evaluate after every epoch (published) or only after a task's last epoch; "
                             "keep-best always evaluates every epoch", choices=("epoch", "task"))
    backbone: str = hparam("squeezenet", "network (the original's ResNet18 is SqueezeNet 1.0; mobilenet: MobileNetV2)",
                           choices=tuple(BACKBONE_NAMES))
    weights: str = hparam("none", "initial weights: none, imagenet (torchvision; needs a network once) or the path "
                          "of a local state-dict file")
    head_bias_init: float | None = hparam(None, "initial bias of the new class head (null: PyTorch's default)")
    freeze_feature_extract: bool = hparam(False, "freeze the front E (features before the cut)")
    image_size: int = hparam(224, "input images are resized to image_size x image_size", unit="pixels", min=8)
    n_workers: int = hparam(1, "DataLoader worker processes", min=0, affects_results=False)
    image_cache: bool = hparam(True, "read images from the decoded-image cache (bit-identical to the files)",
                               affects_results=False)
    feature_cache: bool = hparam(True, "AugMem with a frozen SqueezeNet front: read cached front features "
                                 "(float16; not bit-identical to the pixel path)")
    amp: bool = hparam(False, "CUDA only: bf16 autocast of the network")
    channels_last: bool = hparam(False, "CUDA only: channels-last memory format")
    visualize: bool = hparam(False, "write logits, confusion matrices and (AugMem) memory and top slots to viz.npz")
    viz_per_class: int = hparam(50, "test images per class kept for the visualisation arrays", unit="images", min=1)
    viz_images_per_class: int = hparam(4, "input images per class kept for the hypotheses figure", unit="images",
                                       min=0)
    switch_overrides: dict = hparam({}, "fidelity switches of this agent set explicitly, {switch: true|false}")
    holdout_validation: bool = hparam(False, "hold out a fixed 25 % of the test images (chosen by image path, the same "
                                      "in every run) as a validation split (val_all) and report test accuracy on the "
                                      "rest: the grid search's corrected selection and the jobs that take its values")


def check_common(hp: dict[str, Any]) -> list[tuple[str, str]]:
    """Cross-key checks every agent shares (names of switch overrides, their values)."""
    out = []
    for name, value in (hp.get("switch_overrides") or {}).items():
        if name not in switch_names():
            from augmem.agents.hparams import closest

            out.append(("switch_overrides", f"unknown fidelity switch {name!r}{closest(name, switch_names())}"))
        elif not isinstance(value, bool):
            out.append(("switch_overrides", f"switch {name} must be true or false, not {value!r}"))
    return out


class Agent:
    """Base class. Subclasses set ``name`` and override :meth:`learn_stream` (and what else they need)."""

    name = "base"
    HP: type = CommonHP  # the hyperparameter declaration (a subclass of CommonHP in the agent's own file)
    primary_path = "acc"  # the output path whose accuracy is the headline number and drives keep-best
    offline = False  # trains on the offline (cumulative) filelists: the upper bound
    uses_front_features = False  # True when the frozen front may be replaced by cached features

    def __init__(self, n_class: int, hp: dict[str, Any], switches: TrainSwitches, device: str | torch.device = "cpu"):
        self.n_class = int(n_class)
        self.hp = self.check_hparams(hp)
        self.switches = switches
        self.device = torch.device(device)
        self.active: list[int] = []
        self.model = self.build_model().to(self.device)
        self.optimizer = self.build_optimizer(self.model.parameters())

    @classmethod
    def extra_checks(cls, hp: dict[str, Any]) -> list[tuple[str, str]]:
        """Cross-key checks of the complete hyperparameters: [(key, what is wrong)] (agents extend this)."""
        return check_common(hp)

    @classmethod
    def check_hparams(cls, hp: dict[str, Any], sources: dict[str, str] | None = None,
                      agent: str | None = None) -> dict[str, Any]:
        """The complete, validated hyperparameters (declared defaults filled in); InputError naming every problem."""
        return check_hparams(cls.HP, hp, agent=agent or cls.name, sources=sources, extra_check=cls.extra_checks)

    # ----------------------------------------------------------------------------------------------------- building
    def output_size(self) -> int:
        """Outputs of the network's head: one per class (CoPE: its embedding size)."""
        return self.n_class

    def build_model(self) -> nn.Module:
        """SqueezeNet 1.0 (the original's "ResNet18") with a new head; the baselines fine-tune all of it."""
        bb = build_backbone(self.hp["backbone"], self.output_size(), self.hp["weights"],
                            head_bias_init=self.hp["head_bias_init"])
        if self.hp["freeze_feature_extract"]:
            for p in bb.front.parameters():
                p.requires_grad_(False)
        return bb.full()

    def build_optimizer(self, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
        """The optimiser of spec 6.1: SGD/RMSprop with momentum, Adam, Adagrad; lr and weight decay from hp."""
        name = self.hp["optimizer"]
        lr = self.hp["lr"]
        wd = self.hp["weight_decay"]
        params = [p for p in params if p.requires_grad]
        if name == "SGD":
            return torch.optim.SGD(params, lr=lr, momentum=self.hp["momentum"], weight_decay=wd)
        if name == "RMSprop":
            return torch.optim.RMSprop(params, lr=lr, momentum=self.hp["momentum"], weight_decay=wd)
        if name in ("Adam", "AdamW", "Adagrad", "Adadelta"):
            return getattr(torch.optim, name)(params, lr=lr, weight_decay=wd)
        raise ValueError(f"unsupported optimizer {name!r}")

    # ----------------------------------------------------------------------------------------------------- helpers
    def set_active(self, active: list[int]) -> None:
        self.active = sorted(int(a) for a in active)

    @property
    def active_index(self) -> torch.Tensor:
        return torch.as_tensor(self.active, dtype=torch.long, device=self.device)

    def front_forward(self, x: torch.Tensor) -> torch.Tensor:
        """E(x), or x itself when x already holds cached front features."""
        if getattr(self, "_inputs_are_features", False):
            return x
        return self.model[0](x)

    def set_inputs_are_features(self, flag: bool) -> None:
        if flag and not self.uses_front_features:
            raise ValueError(f"agent {self.name} cannot train on cached front features")
        self._inputs_are_features = bool(flag)

    def penultimate(self, x: torch.Tensor) -> torch.Tensor:
        """The input of the back's last parameterised child, globally average-pooled and flattened (SqueezeNet: the
        512-channel map before the classifier conv): the features of iCaRL's and BiC's herding."""
        h = self.front_forward(x)
        back = self.model[1]
        if isinstance(back, nn.Sequential):
            children = list(back.children())
            last = max((i for i, m in enumerate(children) if any(True for _ in m.parameters())), default=0)
            for m in children[:last]:
                h = m(h)
        if h.dim() == 4:
            h = F.adaptive_avg_pool2d(h, 1)
        return h.reshape(len(h), -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits over all C classes."""
        return self.model[1](self.front_forward(x))

    def criterion(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """CE over the active output nodes; labels work as column indices because active labels are 0..K-1."""
        return F.cross_entropy(logits[:, self.active_index], y)

    def update_model(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """One optimiser step on one batch (NormalNN's step); returns the loss."""
        self.model.train()
        logits = self.forward(x)
        loss = self.criterion(logits, y)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.last_loss = float(loss.detach())  # read by the loop's divergence check after each epoch
        return self.last_loss

    # ----------------------------------------------------------------------------------------------------- protocol
    def learn_stream(self, loader, task: int, epoch: int, last_epoch: bool) -> None:
        raise NotImplementedError

    def pick_labels(self, scores: torch.Tensor) -> torch.Tensor:
        """The predicted label of each row of ``scores`` (B, |active|), columns in active order.

        Reference (switch ``topk_prediction_ties``): ``scores.topk(1, 1, True, True)`` as the original's
        utils/metric.py, which breaks ties (and NaN rows) in its own order; corrected: ``argmax`` (first tied class).
        """
        if self.switches.topk_prediction_ties:
            pos = scores.topk(1, 1, True, True).indices[:, 0]
        else:
            pos = scores.argmax(1)
        return self.active_index[pos]

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Predicted labels per output path (the top-1 active node, see :meth:`pick_labels`)."""
        self.model.eval()
        return {"acc": self.pick_labels(self.forward(x)[:, self.active_index])}

    def evaluate(self, loader) -> dict[str, float]:
        """Top-1 accuracy in % per output path over a loader; NaN for an empty loader."""
        correct: dict[str, int] = {}
        total = 0
        for x, y in loader:
            x, y = x.to(self.device), y.to(self.device)
            for path, pred in self.predict(x).items():
                correct[path] = correct.get(path, 0) + int((pred == y).sum())
            total += len(y)
        if total == 0:
            return {p: math.nan for p in self.output_paths()}
        return {p: 100.0 * c / total for p, c in correct.items()}

    def output_paths(self) -> list[str]:
        return [self.primary_path]

    def memory_bytes(self) -> dict[str, int]:
        """Bytes the method stores beyond the network, by kind (e.g. {"images": ..., "importance": ...})."""
        return {}

    def result_notes(self) -> list[str]:
        """What a reader of this run's numbers must know (metrics.json ``meta.notes``; the results table marks the
        cell with ``¶`` and prints the note), e.g. that a reference external baseline runs the nearest runnable
        variant of its adapted code. None by default."""
        return []

    # ----------------------------------------------------------------------------------------------------- state
    def checkpoint_state(self) -> dict[str, Any]:
        return {
            "model": copy.deepcopy(self.model.state_dict()),
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "active": list(self.active),
            "extra": self.extra_state(),
        }

    def load_checkpoint_state(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.active = list(state["active"])
        self.load_extra_state(state["extra"])

    def extra_state(self) -> dict[str, Any]:
        """Agent-specific state (memories, anchors, importances) as tensors/scalars/lists/dicts."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    def snapshot_weights(self) -> dict[str, torch.Tensor]:
        """Network weights for keep-best (only the network is restored, as in the original)."""
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def restore_weights(self, weights: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(weights)


def n_params_bytes(tensors: Iterable[torch.Tensor]) -> int:
    return int(sum(t.numel() * t.element_size() for t in tensors))
