"""Stable SGD (spec 14.1; Mirzadeh et al., NeurIPS 2020) as the study's adapted code runs it.

Training, per task (0-based ``task`` of the loop; the spec's 1-based t = task + 1):

* lr_t = max(lr * lr_decay ** t, min_lr): the first task is already decayed once (quirk 3, kept in both fidelities);
* every epoch builds a **new** ``SGD(lr_t, momentum)`` (momentum 0.8, no weight decay in the published runs), so the
  momentum buffer is reset each epoch (quirk 3, kept);
* one pass over the task in the adapted code's shuffled minibatches (:meth:`ExternalAgent.epoch_batches`: flip + crop
  on the own network, last incomplete batch dropped while ``external_drop_last`` is on);
* loss: cross-entropy over the logits with every entry outside the task's block set to -1e11. The fill is made on the
  tensor's data (the adapted code's ``.data.fill_``), invisible to autograd: the gradient reaches every logit as if
  nothing had been filled, so a filled entry gets its cross-entropy gradient at the filled value: 0 for a class that
  is not the label (its softmax underflows to exactly 0), -1 for a label that lies outside the block (the package
  variant's 5-wide blocks on 2-class tasks, quirk 2).

The block (switch ``stable_sgd_fixed_blocks``): reference, the network has 100 outputs and task i's block is
[w*i, w*i + w) with w = 5 (``variant: package``) or 2 (``variant: toplevel``); corrected, C outputs and the block is
the current task's classes. With ``network: study`` (the study's SqueezeNet, which has C outputs) the block is always
the task's classes, whatever the switch.

Output paths, all recorded in both fidelities (the primary one, the headline, first):

* ``acc``: class-incremental over the seen classes (the study's protocol);
* ``ci100``: argmax over all outputs of the network, never-seen ones included (the package variant's evaluation;
  over 100 outputs on the reference own network);
* ``ti``: argmax inside the test image's own task block (the top-level variant's evaluation, task-incremental); the
  loop hands the true labels to :meth:`StableSGD.predict` (``predict_uses_labels``), of which only the image's task
  (the task that introduced its class) is read.

Switch ``stable_sgd_variant_eval``: reference, the primary path is the variant's own (``ci100`` for the package,
``ti`` for the top-level variant); corrected, ``acc``.

The own network (``network: own``) is the reduced ResNet-18 of width 20 (:mod:`augmem.models.resnet_reduced`), random
init, with Dropout(``dropout``) after each of its BatchNorms, behind :class:`~augmem.agents.external.Renormalize`;
``head_bias_init`` applies to the study network only. No memory: 0 bytes per sample (spec 14.9).
"""
from __future__ import annotations

import dataclasses
import torch
import torch.nn.functional as F
from torch import nn

from augmem.agents.external import ExternalAgent, ExternalHP, Renormalize
from augmem.agents.hparams import hparam
from augmem.models.resnet_reduced import ReducedResNet18

FILL = -1e11  # the adapted code's -10e10
N_OUT_FIXED = 100  # ResNet18(nclasses=100, nf=20) whatever the dataset
WIDTH = 20
BLOCK_WIDTH = {"package": 5, "toplevel": 2}
PRIMARY = {"package": "ci100", "toplevel": "ti"}


@dataclasses.dataclass(frozen=True)
class StableSGDHP(ExternalHP):
    """The adapted code's CLI defaults (``other_models/stable_sgd/stable_sgd/utils.py:21-32``); published values per
    dataset in params/agents.yaml (spec 14.1 "Published settings")."""

    optimizer: str = hparam("SGD", "Stable SGD trains with SGD only (a new optimiser every epoch)", choices=("SGD",))
    lr: float = hparam(0.1, "initial learning rate eta (lr_t = max(eta * lr_decay**t, min_lr), t = 1 at task 1)",
                       gt=0)
    momentum: float = hparam(0.8, "SGD momentum (its buffer is reset every epoch)", min=0)
    weight_decay: float = hparam(0.0, "SGD weight decay (the adapted code uses none)", min=0)
    batch_size: int = hparam(128, "training and evaluation batch size", unit="images", min=1)
    variant: str = hparam("package", "package: mask blocks of 5, headline CI over all 100 outputs (CIFAR-100, "
                          "CORe50 scripts); toplevel: blocks of 2, headline task-incremental (Toybox script)",
                          choices=("package", "toplevel"))
    lr_decay: float = hparam(0.85, "gamma, the per-task learning-rate decay", gt=0, max=1)
    min_lr: float = hparam(5e-5, "floor of the decayed learning rate", min=0)
    dropout: float = hparam(0.1, "dropout after every BatchNorm of the own network's blocks (network: own only)",
                            min=0, max=1)


class StableSGD(ExternalAgent):
    name = "StableSGD"
    HP = StableSGDHP
    predict_uses_labels = True  # path ti: the argmax within each test image's own task

    def __init__(self, n_class, hp, switches, device="cpu"):
        super().__init__(n_class, hp, switches, device)
        self.variant = self.hp["variant"]
        self.primary_path = PRIMARY[self.variant] if self.switches.stable_sgd_variant_eval else "acc"
        self.last_loss = None

    # ------------------------------------------------------------------------------------------------ network
    @property
    def fixed_blocks(self) -> bool:
        """Reference on the own network: 100 outputs and hard-coded blocks (switch ``stable_sgd_fixed_blocks``)."""
        return self.own_network and bool(self.switches.stable_sgd_fixed_blocks)

    @property
    def n_out(self) -> int:
        return N_OUT_FIXED if self.fixed_blocks else self.n_class

    def build_own_network(self) -> nn.Module:
        if self.fixed_blocks and self.n_class > N_OUT_FIXED:
            raise ValueError(f"Stable SGD's fixed 100-output network cannot hold {self.n_class} classes")
        net = ReducedResNet18(self.n_out, WIDTH, float(self.hp["dropout"]))
        if self.hp["freeze_feature_extract"]:
            for p in net.trunk.parameters():
                p.requires_grad_(False)
        return nn.Sequential(nn.Sequential(Renormalize(), net.trunk), net.linear)

    # ------------------------------------------------------------------------------------------------ schedule
    def task_lr(self, task: int) -> float:
        """lr_t = max(eta * gamma^t, min_lr), the spec's 1-based t = task + 1 (already decayed at the first task)."""
        return max(float(self.hp["lr"]) * float(self.hp["lr_decay"]) ** (task + 1), float(self.hp["min_lr"]))

    def epoch_optimizer(self, lr: float) -> torch.optim.Optimizer:
        """A new SGD for one epoch (its momentum buffer starts empty)."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        return torch.optim.SGD(params, lr=lr, momentum=float(self.hp["momentum"]),
                               weight_decay=float(self.hp["weight_decay"]))

    # ------------------------------------------------------------------------------------------------ blocks
    def fixed_block(self, k: int) -> list[int]:
        w = BLOCK_WIDTH[self.variant]
        return [c for c in range(w * k, w * k + w) if c < self.n_out]

    def train_block(self, task: int) -> list[int]:
        """The output columns the loss of ``task`` keeps: the hard-coded block of the task index, or its classes."""
        return self.fixed_block(task) if self.fixed_blocks else list(self.current_classes)

    def eval_block(self, k: int) -> list[int]:
        """The output columns of the k-th task (the k-th entry of ``task_classes``) for path ``ti``."""
        return self.fixed_block(k) if self.fixed_blocks else list(self.task_classes[k])

    def keep_mask(self, block: list[int]) -> torch.Tensor:
        keep = torch.zeros(self.n_out, dtype=torch.bool, device=self.device)
        keep[torch.as_tensor(block, dtype=torch.long, device=self.device)] = True
        return keep

    @staticmethod
    def fill_outside(logits: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """``logits`` with every entry outside ``keep`` (bool, (n_out,) or (B, n_out)) set to -1e11 on the data only:
        the adapted code's ``out[...].data.fill_(-10e10)``; autograd sees the unfilled logits (identity gradient)."""
        out = logits.clone()
        out.data.masked_fill_(~keep.expand_as(out), FILL)
        return out

    def task_of(self, y: torch.Tensor) -> torch.Tensor:
        """The index in ``task_classes`` of the task that introduced each label of ``y``."""
        top = max([c for k in self.task_classes for c in k] + [int(y.max()) if y.numel() else 0]) + 1
        lookup = torch.full((top,), -1, dtype=torch.long)
        for k, classes in enumerate(self.task_classes):
            lookup[torch.as_tensor(classes, dtype=torch.long)] = k
        tasks = lookup[y.detach().cpu().long()]
        if (tasks < 0).any():
            bad = sorted(set(y.detach().cpu()[tasks < 0].tolist()))
            raise ValueError(f"labels {bad} belong to no task seen so far (tasks: {self.task_classes})")
        return tasks

    # ------------------------------------------------------------------------------------------------ training
    def learn_stream(self, loader, task: int, epoch: int, last_epoch: bool) -> None:
        self.optimizer = self.epoch_optimizer(self.task_lr(task))
        keep = self.keep_mask(self.train_block(task))
        self.model.train()
        for x, y in self.epoch_batches(loader):
            self.train_batch(x, y, keep)

    def train_batch(self, x: torch.Tensor, y: torch.Tensor, keep: torch.Tensor) -> float:
        loss = F.cross_entropy(self.fill_outside(self.forward(x), keep), y)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.last_loss = float(loss.detach())
        return self.last_loss

    # ------------------------------------------------------------------------------------------------ prediction
    def output_paths(self) -> list[str]:
        return [self.primary_path] + [p for p in ("acc", "ci100", "ti") if p != self.primary_path]

    @torch.no_grad()
    def predict(self, x: torch.Tensor, y: torch.Tensor | None = None,
                paths: list[str] | None = None) -> dict[str, torch.Tensor]:
        """Predicted labels per output path (default: all of :meth:`output_paths`). ``y`` (the true labels) is read
        only by path ``ti``, and only for each image's task."""
        paths = self.output_paths() if paths is None else list(paths)
        if "ti" in paths and y is None:
            raise ValueError("StableSGD.predict: path 'ti' (argmax within each image's own task) needs the true "
                             "labels y: call predict(x, y), or ask for paths=['acc', 'ci100']")
        self.model.eval()
        logits = self.forward(x)
        out = {}
        if "acc" in paths:
            out["acc"] = self.pick_labels(logits[:, self.active_index])
        if "ci100" in paths:
            out["ci100"] = logits.argmax(1)
        if "ti" in paths:
            blocks = torch.stack([self.keep_mask(self.eval_block(k)) for k in range(len(self.task_classes))])
            keep = blocks[self.task_of(torch.as_tensor(y)).to(self.device)]
            out["ti"] = self.fill_outside(logits, keep).argmax(1)
        unknown = set(paths) - set(out)
        if unknown:
            raise ValueError(f"StableSGD.predict: unknown output path(s) {sorted(unknown)}")
        return {p: out[p] for p in paths}

    def evaluate(self, loader) -> dict[str, float]:
        """Top-1 accuracy in % per output path (the labels go to :meth:`predict` for path ``ti``)."""
        correct: dict[str, int] = {}
        total = 0
        for x, y in loader:
            x, y = x.to(self.device), y.to(self.device)
            for path, pred in self.predict(x, y).items():
                correct[path] = correct.get(path, 0) + int((pred == y).sum())
            total += len(y)
        if total == 0:
            return {p: float("nan") for p in self.output_paths()}
        return {p: 100.0 * c / total for p, c in correct.items()}

    def result_notes(self) -> list[str]:
        """The results table's ¶ note when the headline is the variant's own protocol (q1), not the study's CI."""
        if self.primary_path == "ti":
            return ["reference Stable SGD (top-level variant) reports task-incremental accuracy: the argmax within "
                    "each test image's own task (spec 14.1 q1); path acc holds the class-incremental value"]
        if self.primary_path == "ci100":
            return ["reference Stable SGD (package variant) reports the argmax over all 100 outputs, unseen classes "
                    "included (spec 14.1 q1)"]
        return []

    def memory_bytes(self) -> dict[str, int]:
        return {}  # no buffer: 0 bytes per sample (spec 14.9)
