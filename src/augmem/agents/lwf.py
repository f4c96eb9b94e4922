"""LwF, Learning without Forgetting, as the study's adapted code runs it (spec 14.5; Li & Hoiem, ECCV 2016).

Network (hp ``network``):

* ``own`` (the adapted code): the CIFAR-stem ResNet-18 of :mod:`augmem.models.resnet_cifar` (random He init, 32 x 32
  inputs renormalised to CIFAR statistics by :class:`~augmem.agents.external.Renormalize`, flip + crop augmentation)
  as the front ``model[0]`` (3 x 32 x 32 -> 512), and a single growing head ``model[1]`` (:class:`GrowingHead`,
  Linear(512, K) with bias, K = the classes seen so far). Before every task the head grows to the new K: a new
  ``nn.Linear(512, K)`` with PyTorch's default init (global torch RNG) whose first rows are then overwritten with the
  old rows (weights and bias), as ``Incremental_learning`` does (``other_models/lwf/myNetwork.py:23-33``). Labels
  are 0..K-1 in order of first appearance, so column j is label j. hp ``weights``, ``image_size``,
  ``head_bias_init`` and ``freeze_feature_extract`` do not apply to this network (random init, 32 x 32 inputs).
* ``study``: the study's SqueezeNet 1.0 (``weights``, ``image_size``, ImageNet normalisation, no augmentation),
  whose head is a conv over all C classes. Nothing grows: all C output columns are kept and every loss and
  prediction reads only the active (seen) columns 0..K-1; the unseen columns receive no gradient (weight decay
  still shrinks them, as in every study agent).

Training, per task (``learn_stream``; epochs ``n_epoch_first_task`` on task 0 and ``n_epoch`` = 1 later, from the
loop): at the task's first epoch a new optimiser ``SGD(lr, momentum, nesterov=True, weight_decay)`` is created
(re-created per task; the adapted code's momentum 0.9 and weight decay 1e-5 are the declared defaults; its
learning-rate drops at epochs 48/68/85 are never reached and are not modelled); every epoch is one pass over
:meth:`~augmem.agents.external.ExternalAgent.epoch_batches` (shuffled, batch 128, ``drop_last`` while switch
``external_drop_last`` is on). With z the K active outputs of the current network and z_old the K_old outputs of
the teacher on the same (augmented) batch:

* switch ``lwf_sigmoid_distillation`` on (reference, the adapted code ``other_models/lwf/LwF.py:166-176``,
  iCaRL-style): L = mean over the batch and j < K of BCEWithLogits(z_bj, t_bj), t_bj = sigmoid(z_old_bj) for
  j < K_old and one-hot 1[y_b = j] for j >= K_old (:func:`sigmoid_distillation_loss`);
* off (corrected, Li & Hoiem's loss on the single growing head): L = CE(z, y) over the K seen classes
  + lambda_o * KD, KD = mean over the batch of -sum_{j < K_old} softmax(z_old / T)_j log softmax(z[:, :K_old] / T)_j
  with T = hp ``temperature`` (2) and lambda_o = hp ``distill_weight`` (1) (:func:`lwf_kd_loss`). As in the paper
  (its L_old with "modified" probabilities) the KD term is **not** multiplied by T^2 (Hinton et al.'s scaling); use
  ``distill_weight: 4`` for that. The paper's separate per-task heads and warm-up stage are not modelled (one
  growing head, as the adapted code).

On task 0 there is no teacher: one-hot BCE (reference) or plain CE (corrected).

Teacher (``afterTrain``, ``other_models/lwf/LwF.py:179-186``): after the last epoch of every task a frozen deep copy
of the network (eval mode, ``requires_grad`` off) becomes the teacher of the next task; K_old is the number of
classes active when it was taken. A keep-best restore at the task's end also refreshes it (the adapted code has no
keep-best; this keeps the teacher equal to the network the task ends with). It is part of the checkpoint, and its
parameters and buffers are :meth:`memory_bytes` (``teacher_network``; 0 bytes per stored sample, spec 14.9).

Predictions: the base class's argmax over the K active outputs (class-incremental over the seen classes).

Quirk 32 (switch ``lwf_shared_backbone``): the agent itself does not read it. The train stage replays it by training
runs 0..r-1 first and handing the feature extractor over with :meth:`backbone_state` /
:meth:`load_backbone_state` (everything but the classifier head, BatchNorm statistics included). Quirks 33 (an
unused CIFAR-100 download) and 34 (dead ``epochs=1`` assignments) have no counterpart here; quirk 35 is switch
``external_drop_last``.
"""
from __future__ import annotations

import copy
import dataclasses
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from augmem.agents.base import n_params_bytes
from augmem.agents.external import ExternalAgent, ExternalHP, Renormalize
from augmem.agents.hparams import hparam
from augmem.models.resnet_cifar import FEATURE_DIM, resnet18_cifar


@dataclasses.dataclass(frozen=True)
class LwFHP(ExternalHP):
    """LwF's hyperparameters; defaults are the adapted code's (CORe50 driver ``other_models/lwf/core50_main.py``)."""

    lr: float = hparam(0.2, "learning rate of SGD (the adapted code: 0.2 CORe50/iLab/CIFAR-100, 0.02 Toybox)", gt=0)
    momentum: float = hparam(0.9, "momentum of the Nesterov SGD (the adapted code: 0.9)", gt=0)
    weight_decay: float = hparam(1e-5, "weight decay of the SGD (the adapted code: 1e-5)", min=0)
    batch_size: int = hparam(128, "training and evaluation batch size (the adapted code: 128)", unit="images", min=1)
    n_epoch: int = hparam(1, "epochs of every task after the first (the adapted code: 1)", unit="epochs", min=1)
    n_epoch_first_task: int | None = hparam(10, "epochs of the first task (the adapted code: 10; CIFAR-100 20)",
                                            unit="epochs", min=1)
    temperature: float = hparam(2.0, "corrected (lwf_sigmoid_distillation off): softmax distillation temperature T "
                                "(Li & Hoiem: 2)", gt=0)
    distill_weight: float = hparam(1.0, "corrected: lambda_o, the weight of the distillation term (Li & Hoiem: 1; "
                                   "the term is not scaled by T^2)", min=0)


# ---------------------------------------------------------------------------------------------------------- losses
def sigmoid_distillation_loss(z: torch.Tensor, y: torch.Tensor, old: torch.Tensor | None) -> torch.Tensor:
    """The adapted code's loss: mean over (b, j < K) of BCEWithLogits(z_bj, t_bj), t = sigmoid(old) on the first
    K_old = ``old.shape[1]`` columns and one-hot(y) on the others. ``z`` (B, K) logits, ``y`` column indices."""
    target = F.one_hot(y, z.shape[1]).to(z.dtype)
    if old is not None and old.shape[1] > 0:
        target[:, : old.shape[1]] = torch.sigmoid(old.to(z.dtype))
    return F.binary_cross_entropy_with_logits(z, target)


def lwf_kd_loss(z: torch.Tensor, y: torch.Tensor, old: torch.Tensor | None, temperature: float = 2.0,
                weight: float = 1.0) -> torch.Tensor:
    """Li & Hoiem's loss on one head: CE(z, y) over the K columns + ``weight`` * mean over the batch of
    -sum_j softmax(old / T)_j log softmax(z[:, :K_old] / T)_j (no T^2 factor). ``old`` (B, K_old) or None."""
    loss = F.cross_entropy(z, y)
    if old is not None and old.shape[1] > 0:
        k_old = old.shape[1]
        p_old = F.softmax(old.to(z.dtype) / temperature, dim=1)
        log_p = F.log_softmax(z[:, :k_old] / temperature, dim=1)
        loss = loss + weight * (-(p_old * log_p).sum(1).mean())
    return loss


# ---------------------------------------------------------------------------------------------------------- head
class GrowingHead(nn.Module):
    """Linear(in_features, K) that grows: :meth:`grow` keeps the old rows and initialises the new ones."""

    def __init__(self, in_features: int = FEATURE_DIM, out_features: int = 0):
        super().__init__()
        self.in_features = int(in_features)
        self.fc = self._uninitialised(out_features)

    def _uninitialised(self, k: int) -> nn.Linear:
        # no init, no RNG draw: the values are overwritten (grow) or loaded (checkpoint)
        with warnings.catch_warnings():  # the meta-device init of an empty head warns that it does nothing
            warnings.filterwarnings("ignore", message="Initializing zero-element tensors is a no-op")
            return torch.nn.utils.skip_init(nn.Linear, self.in_features, int(k))

    @property
    def out_features(self) -> int:
        return self.fc.out_features

    def grow(self, k: int) -> None:
        """A new ``nn.Linear(in, k)`` with PyTorch's default init (global torch RNG, on the CPU), its first rows
        replaced by the old weights and biases (as ``Incremental_learning``); nothing when ``k`` is the size now."""
        k_old = self.out_features
        if k == k_old:
            return
        if k < k_old:
            raise ValueError(f"the LwF head cannot shrink ({k_old} -> {k} outputs)")
        old = self.fc
        new = nn.Linear(self.in_features, int(k))
        new = new.to(device=old.weight.device, dtype=old.weight.dtype)
        with torch.no_grad():
            new.weight[:k_old] = old.weight
            new.bias[:k_old] = old.bias
        self.fc = new

    def resize_uninitialised(self, k: int) -> None:
        """Replace the layer by an uninitialised one of ``k`` outputs (before loading a state of that size)."""
        device, dtype = self.fc.weight.device, self.fc.weight.dtype
        self.fc = self._uninitialised(k).to(device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


def frozen(module: nn.Module) -> nn.Module:
    """``module`` in eval mode with every parameter's ``requires_grad`` off (in place)."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


# ---------------------------------------------------------------------------------------------------------- agent
class LwF(ExternalAgent):
    """LwF with a single growing head and a frozen teacher copy (see the module docstring)."""

    name = "LwF"
    HP = LwFHP

    def __init__(self, n_class, hp, switches, device="cpu"):
        self.teacher: nn.Module | None = None
        self.teacher_classes: list[int] = []  # the active classes when the teacher was taken (its K_old columns)
        self._teacher_task: int | None = None
        self._optimizer_task: int | None = None
        super().__init__(n_class, hp, switches, device)

    @classmethod
    def extra_checks(cls, hp: dict[str, Any]) -> list[tuple[str, str]]:
        out = super().extra_checks(hp)
        if hp["optimizer"] != "SGD":
            out.append(("optimizer", f"LwF trains with Nesterov SGD (spec 14.5), not {hp['optimizer']}"))
        return out

    # ------------------------------------------------------------------------------------------------ building
    def build_own_network(self) -> nn.Module:
        """front = Renormalize (ImageNet -> CIFAR statistics) + CIFAR ResNet-18 (32 x 32 -> 512); back = the growing
        head, empty until the first task's classes are known (:meth:`set_active`)."""
        return nn.Sequential(nn.Sequential(Renormalize(), resnet18_cifar()), GrowingHead(FEATURE_DIM, 0))

    def build_optimizer(self, params) -> torch.optim.Optimizer:
        """SGD(lr, momentum, Nesterov, weight decay) over the trainable parameters (re-created per task)."""
        params = [p for p in params if p.requires_grad]
        return torch.optim.SGD(params, lr=self.hp["lr"], momentum=self.hp["momentum"], nesterov=True,
                               weight_decay=self.hp["weight_decay"])

    @property
    def head(self) -> nn.Module:
        """The classifier layer: the growing head's Linear (own) or the last module with parameters (study:
        SqueezeNet's classifier conv)."""
        return self.model.get_submodule(self._head_name())

    def _head_name(self) -> str:
        names = [n for n, m in self.model.named_modules() if next(m.parameters(recurse=False), None) is not None]
        return names[-1]

    # ------------------------------------------------------------------------------------------------ classes
    def set_active(self, active: list[int]) -> None:
        """Record the new task's classes; the own network's head grows to the K active classes (columns 0..K-1)."""
        super().set_active(active)
        if self.active != list(range(len(self.active))):
            raise ValueError(f"LwF needs the active labels to be 0..K-1 (labels in order of first appearance), "
                             f"got {self.active}")
        if self.own_network:
            self.model[1].grow(len(self.active))

    # ------------------------------------------------------------------------------------------------ training
    def teacher_logits(self, x: torch.Tensor) -> torch.Tensor | None:
        """The teacher's outputs of its K_old classes on ``x`` (no gradient), or None without a teacher."""
        if self.teacher is None or not self.teacher_classes:
            return None
        with torch.no_grad():
            out = self.teacher(x)
        return out[:, torch.as_tensor(self.teacher_classes, dtype=torch.long, device=out.device)].detach()

    def loss(self, z: torch.Tensor, y: torch.Tensor, old: torch.Tensor | None) -> torch.Tensor:
        if self.switches.lwf_sigmoid_distillation:
            return sigmoid_distillation_loss(z, y, old)
        return lwf_kd_loss(z, y, old, self.hp["temperature"], self.hp["distill_weight"])

    def learn_stream(self, loader, task: int, epoch: int, last_epoch: bool) -> None:
        if task != self._optimizer_task:  # a new task: a fresh optimiser (no momentum carried over)
            self.optimizer = self.build_optimizer(self.model.parameters())
            self._optimizer_task = task
        active = self.active_index
        for x, y in self.epoch_batches(loader):
            self.model.train()
            old = self.teacher_logits(x)
            z = self.forward(x)[:, active]
            loss = self.loss(z, y, old)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            self.last_loss = float(loss.detach())
        if last_epoch:
            self.take_teacher(task)

    def take_teacher(self, task: int | None = None) -> None:
        """The teacher of the next task: a frozen deep copy of the network now (``afterTrain``)."""
        self.teacher = frozen(copy.deepcopy(self.model))
        self.teacher_classes = list(self.active)
        self._teacher_task = task

    def restore_weights(self, weights) -> None:
        super().restore_weights(weights)
        if self.teacher is not None and self._teacher_task is not None and self._teacher_task == self._optimizer_task:
            self.teacher.load_state_dict(weights)  # keep-best at the task's end: the teacher is the kept network

    # ------------------------------------------------------------------------------------------------ quirk 32
    def backbone_state(self) -> dict[str, torch.Tensor]:
        """The feature extractor's state (every parameter and buffer of the network except the classifier head),
        cloned: what the adapted code's runs share (quirk 32)."""
        prefix = self._head_name() + "."
        return {k: v.detach().clone() for k, v in self.model.state_dict().items() if not k.startswith(prefix)}

    def load_backbone_state(self, state: dict[str, torch.Tensor]) -> None:
        """Load :meth:`backbone_state` of another run's agent; the head (and teacher, optimiser) stay as they are."""
        prefix = self._head_name() + "."
        missing, unexpected = self.model.load_state_dict(state, strict=False)
        wrong = [k for k in missing if not k.startswith(prefix)] + list(unexpected)
        if wrong:
            raise ValueError(f"LwF backbone state does not fit the network: {wrong[:5]}")

    # ------------------------------------------------------------------------------------------------ state
    def memory_bytes(self) -> dict[str, int]:
        """The frozen teacher copy (its parameters and persistent buffers); no stored samples."""
        if self.teacher is None:
            return {"teacher_network": 0}
        return {"teacher_network": n_params_bytes(self.teacher.state_dict().values())}

    def _head_size_in(self, model_state: dict[str, torch.Tensor]) -> int:
        return int(model_state[self._head_name() + ".weight"].shape[0])

    def load_checkpoint_state(self, state: dict[str, Any]) -> None:
        if self.own_network:  # the head has the checkpoint's size before its values are loaded
            self.model[1].resize_uninitialised(self._head_size_in(state["model"]))
            self.optimizer = self.build_optimizer(self.model.parameters())
        super().load_checkpoint_state(state)
        self._optimizer_task = None
        self._teacher_task = None

    def extra_state(self) -> dict[str, Any]:
        out = super().extra_state()
        out["teacher"] = (None if self.teacher is None
                          else {k: v.detach().clone() for k, v in self.teacher.state_dict().items()})
        out["teacher_classes"] = [int(c) for c in self.teacher_classes]
        return out

    def load_extra_state(self, state: dict[str, Any]) -> None:
        super().load_extra_state(state)
        self.teacher_classes = [int(c) for c in state["teacher_classes"]]
        if state["teacher"] is None:
            self.teacher = None
            return
        teacher = copy.deepcopy(self.model)
        if self.own_network:
            teacher[1].resize_uninitialised(self._head_size_in(state["teacher"]))
        teacher.load_state_dict(state["teacher"])
        self.teacher = frozen(teacher)
