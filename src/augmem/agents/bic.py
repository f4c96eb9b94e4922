"""BiC, bias correction (Wu et al., CVPR 2019) as the study's adapted code runs it (spec 14.3), each published quirk
behind a training switch.

Network. The adapted code's own network *is* the study's SqueezeNet 1.0 with its ImageNet weights (the job's
``weights``) and ``classifier[1] = Conv2d(512, C, 3x3, pad 1)``, post-ReLU and average-pooled, run at 32 x 32 with
CIFAR normalisation and flip + crop augmentation (hp ``network: own``: :class:`~augmem.agents.external.Renormalize`
in front of the study network, the loop feeds 32 px). ``network: study``: the same network at ``image_size``,
ImageNet normalisation, no augmentation.

Per task i (the loop calls :meth:`learn_stream` once per epoch: ``n_epoch_first_task`` = 15 on task 0, ``n_epoch``
= 1 on later tasks):

* the network's optimiser (SGD(lr, momentum 0.9, wd 2e-4) with the published settings) is re-created at the task's
  first epoch; StepLR(70, 0.1), stepped at every epoch start as the adapted code (old PyTorch: the first step makes
  the scheduler's epoch 1), sets lr * 0.1 ** ((epoch + 1) // 70) (it never fires within 15 epochs);
* stage 1 (every epoch): model in train mode, bias layers fixed. z = bias_forward(f(x)). Without a teacher (task 0)
  L = CE(z[:, seen], y); with one, L = T^2 KD + (1 - alpha) CE(z[:, seen], y), KD = -mean_b sum_j p_old log
  softmax(z[:, cols] / T), p_old = softmax(bias_forward(f_prev(x))[:, cols] / T) without gradient (the bias layers
  are shared by the teacher and the model, as the adapted code);
* after the last epoch: the exemplar memory is updated, stage 2 fits one bias pair (i > 0) with Adam(bias_lr) on the
  validation exemplars (model in eval mode, its outputs computed without gradient: only the pair moves), and the
  model is copied into the teacher f_prev. The loop's evaluation after that last epoch therefore sees the
  bias-corrected network after stage 2, which is what the adapted code records (max of its tests after stage 2 and
  at the end, which are identical).

Prediction: :meth:`forward` returns the bias-corrected logits, so the loop's argmax over the seen classes is the
adapted code's CI over seen classes.

Switches (reference = the adapted code; corrected = the paper's BiC):

* ``bic_one_exemplar_val_is_train``: reference: after each task the memory keeps, for each class new in the task,
  its first image in filelist order (the stored tensor as loaded, before augmentation), and the 'validation'
  exemplar is the same image. A task's training set is [the previous classes' exemplars] + the task's images twice
  (the adapted code's train_x + val_x), shuffled, in batches of ``batch_size`` with the last incomplete batch dropped
  while ``external_drop_last`` is on. Stage 2: one epoch, batch 1, shuffled. The adapted code's cls_num is
  C // 20 (0 on the small datasets: crash, quirk 18); this runs cls_num = classes per task (:attr:`BiC.reference_note`).
  Corrected: a memory of ``memory_size`` exemplars over the seen classes (memory_size // seen per class), each class
  split into a training part and a held-out validation part (val quota max(1, round(val_fraction * quota)) when the
  quota is >= 2). At a task's first epoch every class of the task's data holds out max(1, round(val_fraction * n_c))
  random images (n_c >= 2; drawn from the agent's generator); stage 1 trains on the memory's training parts + the
  rest of the task. After stage 1 new classes fill their training quota by herding (penultimate features in eval
  mode, each candidate mean L2-normalised, distinct picks) over their training images and their validation quota by
  herding over their held-out images; old classes are trimmed to the first items of each part (herding order). Stage
  2 trains on the validation parts of every seen class (balanced, held out) in batches of ``bias_batch_size`` (100),
  for ``bias_epochs`` epochs (null: as many as the network had in this task). Without augmentation (study network)
  the fixed network's logits of the validation exemplars are computed once per stage 2, so many bias epochs are
  cheap.
* ``bic_hardcoded_alpha_slice``: reference alpha = (S - 5) / S and cols = the first S - 2 seen columns (S = seen
  classes; 1 - alpha = 1.25 at S = 4). Corrected alpha = S_old / S and cols = the S_old classes seen before the task.
* ``bic_teacher_train_mode``: reference: the teacher runs in train mode (SqueezeNet's classifier dropout active) and
  T = 5; corrected: eval mode and T = 2 (hp ``temperature`` set explicitly overrides either).
* ``bic_fixed_bias_blocks``: reference: bias layer k corrects the fixed columns [5k, 5k + 5) (k = 0..ceil(C/5) - 1;
  layers k >= ceil(C/5), created when the task index reaches them, correct nothing) and stage 2 trains layer i = the
  task index, which on 2-class tasks never touches the seen columns (its Adam steps see zero gradients). Corrected:
  one (alpha, beta) pair per task that added classes, applied to that task's classes; stage 2 trains the current
  task's pair (skipped when the task added no class).
* ``external_drop_last`` (shared): drop the last incomplete training batch.

Randomness: shuffles, augmentation and the held-out split come from the agent's own generator (checkpointed);
dropout (model and reference teacher) uses the global torch RNG. The checkpoint holds the memory, the bias layers,
the teacher and the classes seen before the current task, so a run resumed after any task is identical.
"""
from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset

from augmem.agents.base import Agent, n_params_bytes
from augmem.agents.external import ExternalAgent, ExternalHP, Renormalize, flip_crop
from augmem.agents.herding import herding_select
from augmem.agents.hparams import hparam
from augmem.agents.naive_rehearsal import dataset_labels, image_bytes, take_items
from augmem.train.seeding import throwaway_generator

BLOCK = 5  # the adapted code's bias-layer block width (CIFAR-100's classes per task)
LR_STEP, LR_GAMMA = 70, 0.1  # StepLR(70, 0.1) of the adapted code
FEATURE_BATCH = 100


@dataclasses.dataclass(frozen=True)
class BiCHP(ExternalHP):
    lr: float = hparam(0.001, "learning rate of the network's SGD (re-created per task)", gt=0)
    momentum: float = hparam(0.9, "momentum of the network's SGD", min=0)
    weight_decay: float = hparam(0.0002, "weight decay of the network's SGD", min=0)
    batch_size: int = hparam(128, "training batch size (also the evaluation batch)", unit="images", min=1)
    n_epoch: int = hparam(1, "epochs of every task after the first", unit="epochs", min=1)
    n_epoch_first_task: int | None = hparam(15, "epochs of the first task", unit="epochs", min=1)
    temperature: float | None = hparam(None, "distillation temperature (null: 5 while switch bic_teacher_train_mode "
                                       "is on, as the adapted code; 2 otherwise, as the paper)", gt=0)
    memory_size: int = hparam(2000, "corrected: exemplar budget over all seen classes (memory_size // seen per "
                              "class, training + validation parts); reference keeps 1 image per class",
                              unit="exemplar images in total", min=0)
    val_fraction: float = hparam(0.1, "corrected: fraction of each class held out to fit the bias layer (9:1)",
                                 min=0, max=0.5)
    bias_lr: float = hparam(0.001, "learning rate of the bias layer's Adam (stage 2)", gt=0)
    bias_batch_size: int = hparam(100, "corrected: stage-2 batch size (reference: 1)", unit="images", min=1)
    bias_epochs: int | None = hparam(None, "corrected: stage-2 epochs (null: as many as the network had in the "
                                     "task; reference: 1)", unit="epochs", min=1)


class BiasLayer(nn.Module):
    """One scalar pair (alpha = 1, beta = 0) applied as alpha * z + beta to its columns."""

    def __init__(self):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1))
        self.beta = nn.Parameter(torch.zeros(1))


def _collate_memory(x: torch.Tensor, y: torch.Tensor, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    return x[idx], y[idx]


class BiC(ExternalAgent):
    name = "BiC"
    HP = BiCHP
    reference_note = ("reference BiC on a dataset other than CIFAR-100 runs the cls_num = classes-per-task variant "
                      "(spec 14.3 q18)")

    def result_notes(self) -> list[str]:
        """The results table's ¶ note: at HEAD the adapted code crashes on every dataset but CIFAR-100 (q18), so
        reference runs the nearest runnable variant there."""
        return [self.reference_note] if self.switches.bic_one_exemplar_val_is_train and self.n_class != 100 else []

    @classmethod
    def extra_checks(cls, hp: dict[str, Any]) -> list[tuple[str, str]]:
        out = super().extra_checks(hp)
        for key in ("keep_best_task1_net", "keep_best_net_all_tasks"):
            if hp.get(key):
                out.append((key, "BiC runs stage 2, the memory update and the teacher copy inside a task's last "
                                 "epoch; keep-best would restore other network weights after them (set it false)"))
        return out

    def __init__(self, n_class, hp, switches, device="cpu"):
        self.bias_layers = nn.ModuleList()
        super().__init__(n_class, hp, switches, device)
        self.mem_train: dict[int, torch.Tensor] = {}  # label -> (n, 3, H, W) stored inputs (CPU), herding order
        self.mem_val: dict[int, torch.Tensor] = {}  # reference: the same tensors as mem_train
        self.teacher: nn.Module | None = None
        self.prev_active: list[int] = []  # classes seen before the current task (the teacher's)
        self._task: int | None = None
        self._split: tuple[list[int], list[int]] | None = None  # corrected: (train, held-out) indices of the task
        self.last_stage2_layer: int | None = None
        if self.switches.bic_fixed_bias_blocks:
            self.ensure_layers(math.ceil(self.n_class / BLOCK))

    # ------------------------------------------------------------------------------------------------ network
    def build_own_network(self) -> nn.Module:
        """The study's SqueezeNet (job's ``weights``) with :class:`Renormalize` (ImageNet -> CIFAR) in front."""
        net = Agent.build_model(self)
        return nn.Sequential(nn.Sequential(Renormalize(), net[0]), net[1])

    @property
    def temperature(self) -> float:
        t = self.hp["temperature"]
        if t is not None:
            return float(t)
        return 5.0 if self.switches.bic_teacher_train_mode else 2.0

    # ------------------------------------------------------------------------------------------------ bias layers
    def ensure_layers(self, n: int) -> None:
        while len(self.bias_layers) < n:
            self.bias_layers.append(BiasLayer().to(self.device))

    def set_active(self, active: list[int]) -> None:
        super().set_active(active)
        if not self.switches.bic_fixed_bias_blocks:
            self.ensure_layers(len(self.task_classes))

    def layer_columns(self, k: int) -> list[int]:
        """The logit columns bias layer k corrects."""
        if self.switches.bic_fixed_bias_blocks:
            return list(range(BLOCK * k, min(BLOCK * k + BLOCK, self.n_class)))
        return list(self.task_classes[k]) if k < len(self.task_classes) else []

    def bias_forward(self, z: torch.Tensor) -> torch.Tensor:
        """alpha_k * z + beta_k on the columns of every bias layer k; other columns unchanged."""
        a = torch.ones(z.shape[1], device=z.device, dtype=z.dtype)
        b = torch.zeros(z.shape[1], device=z.device, dtype=z.dtype)
        for k, layer in enumerate(self.bias_layers):
            cols = self.layer_columns(k)
            if not cols:
                continue
            idx = torch.as_tensor(cols, dtype=torch.long, device=z.device)
            a = a.index_copy(0, idx, layer.alpha.to(z.dtype).expand(len(cols)))
            b = b.index_copy(0, idx, layer.beta.to(z.dtype).expand(len(cols)))
        return z * a + b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Bias-corrected logits over all C classes."""
        return self.bias_forward(self.model[1](self.front_forward(x)))

    def positions(self, y: torch.Tensor) -> torch.Tensor:
        """Labels -> their column among the seen classes (equal to the labels: seen classes are 0..S-1)."""
        return torch.searchsorted(self.active_index, y.to(self.device))

    # ------------------------------------------------------------------------------------------------ stage 1
    def distill_columns(self) -> tuple[torch.Tensor, float]:
        """(columns distilled, alpha) of the current task."""
        act = self.active_index
        s = len(self.active)
        if self.switches.bic_hardcoded_alpha_slice:
            return act[:max(s - 2, 0)], (s - BLOCK) / s
        return torch.as_tensor(self.prev_active, dtype=torch.long, device=self.device), len(self.prev_active) / s

    def stage1_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        z = self.forward(x)
        ce = F.cross_entropy(z[:, self.active_index], self.positions(y))
        if self.teacher is None:
            return ce
        cols, alpha = self.distill_columns()
        t = self.temperature
        self.teacher.train(bool(self.switches.bic_teacher_train_mode))
        with torch.no_grad():
            p_old = F.softmax(self.bias_forward(self.teacher(x))[:, cols] / t, dim=1)
        kd = -(p_old * F.log_softmax(z[:, cols] / t, dim=1)).sum(1).mean()
        return t * t * kd + (1 - alpha) * ce

    def stage1_step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        self.model.train()
        self.bias_layers.eval()
        loss = self.stage1_loss(x, y)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.last_loss = float(loss.detach())
        return self.last_loss

    # ------------------------------------------------------------------------------------------------ data
    @staticmethod
    def _stack(mem: dict[int, torch.Tensor], like: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        xs = [v for v in mem.values() if len(v)]
        if not xs:
            shape = (0,) if like is None else (0, *like.shape[1:])
            return torch.empty(shape), torch.empty(0, dtype=torch.long)
        ys = [torch.full((len(v),), int(c), dtype=torch.long) for c, v in mem.items() if len(v)]
        return torch.cat(xs), torch.cat(ys)

    def training_parts(self, dataset) -> tuple[tuple[torch.Tensor, torch.Tensor], list[int]]:
        """((memory inputs, labels), dataset indices) of one stage-1 epoch: reference: the previous classes'
        exemplars + the task twice; corrected: the memory's training parts + the task minus its held-out part."""
        mem = self._stack(self.mem_train)
        n = len(dataset)
        if self.switches.bic_one_exemplar_val_is_train:
            return mem, list(range(n)) + list(range(n))
        return mem, list(self._split[0])

    def mixed_batches(self, loader, mem: tuple[torch.Tensor, torch.Tensor], ds_indices: list[int]):
        """Shuffled batches over [memory items] + [dataset items at ds_indices] (the agent's generator), batch
        ``batch_size``, last incomplete batch dropped per ``external_drop_last``, augmented on the own network.
        Memory items come from RAM, dataset items through a loader with ``loader``'s workers."""
        gen = self.generator()
        mx, my = mem
        n_mem = len(my)
        total = n_mem + len(ds_indices)
        order = torch.randperm(total, generator=gen).tolist()
        bs = int(self.hp["batch_size"])
        batches = [order[i:i + bs] for i in range(0, total, bs)]
        if batches and self.switches.external_drop_last and len(batches[-1]) < bs:
            batches.pop()
        plan = [([j for j in b if j < n_mem], [ds_indices[j - n_mem] for j in b if j >= n_mem]) for b in batches]
        seed = int(torch.randint(0, 2**62, (1,), generator=gen))
        ds_batches = [d for _, d in plan if d]
        fetched = iter(DataLoader(loader.dataset, batch_sampler=ds_batches, num_workers=loader.num_workers,
                                  collate_fn=loader.collate_fn, pin_memory=loader.pin_memory,
                                  generator=torch.Generator().manual_seed(seed))) if ds_batches else iter(())
        for m_idx, d_idx in plan:
            xs, ys = [], []
            if m_idx:
                x, y = _collate_memory(mx, my, m_idx)
                xs.append(x)
                ys.append(y)
            if d_idx:
                x, y = next(fetched)
                xs.append(torch.as_tensor(x).cpu())
                ys.append(torch.as_tensor(y).long().cpu())
            x, y = torch.cat(xs), torch.cat(ys)
            if self.own_network:
                x = flip_crop(x, gen)
            yield x.to(self.device), y.to(self.device)

    def draw_split(self, dataset) -> tuple[list[int], list[int]]:
        """Corrected: per class of the task, max(1, round(val_fraction * n_c)) random held-out indices (n_c >= 2)."""
        labels = dataset_labels(dataset)
        gen = self.generator()
        f = float(self.hp["val_fraction"])
        held: list[int] = []
        for c in sorted(set(labels)):
            inds = [i for i, lab in enumerate(labels) if lab == c]
            n_val = min(len(inds) - 1, max(1, round(f * len(inds)))) if len(inds) >= 2 and f > 0 else 0
            perm = torch.randperm(len(inds), generator=gen).tolist()
            held += [inds[j] for j in perm[:n_val]]
        held_set = set(held)
        return [i for i in range(len(labels)) if i not in held_set], sorted(held)

    # ------------------------------------------------------------------------------------------------ protocol
    def learn_stream(self, loader, task: int, epoch: int, last_epoch: bool) -> None:
        dataset = loader.dataset
        if task != self._task:  # a new task: fresh optimiser (the adapted code re-creates it per task)
            self._task = task
            self.optimizer = self.build_optimizer(self.model.parameters())
            self._split = None if self.switches.bic_one_exemplar_val_is_train else self.draw_split(dataset)
            if self.switches.bic_fixed_bias_blocks:
                self.ensure_layers(task + 1)
        for g in self.optimizer.param_groups:  # StepLR(70, 0.1) stepped at every epoch start
            g["lr"] = float(self.hp["lr"]) * LR_GAMMA ** ((epoch + 1) // LR_STEP)
        mem, ds_indices = self.training_parts(dataset)
        for x, y in self.mixed_batches(loader, mem, ds_indices):
            self.stage1_step(x, y)
        if last_epoch:
            self.end_task(dataset, task, n_epochs=epoch + 1)

    def end_task(self, dataset, task: int, n_epochs: int) -> None:
        """Memory update, stage 2, teacher copy (after the task's last stage-1 epoch)."""
        self.update_memory(dataset)
        self.last_stage2_layer = None
        if self.teacher is not None:  # i > 0
            if self.switches.bic_fixed_bias_blocks:
                k = task
            else:
                k = len(self.task_classes) - 1 if set(self.current_classes) - set(self.prev_active) else None
            if k is not None:
                if self.switches.bic_one_exemplar_val_is_train:
                    self.stage2(k, epochs=1, batch=1)
                else:
                    epochs = self.hp["bias_epochs"] or n_epochs
                    self.stage2(k, epochs=int(epochs), batch=int(self.hp["bias_batch_size"]))
        self.teacher = copy.deepcopy(self.model)
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.prev_active = list(self.active)
        self._task = None

    # ------------------------------------------------------------------------------------------------ stage 2
    def stage2(self, k: int, epochs: int, batch: int) -> None:
        """Adam(bias_lr) on bias layer k only, on the validation exemplars of every seen class (model fixed)."""
        vx, vy = self._stack(self.mem_val)
        if len(vy) == 0:
            return
        self.last_stage2_layer = k
        layer = self.bias_layers[k]
        opt = torch.optim.Adam(layer.parameters(), lr=float(self.hp["bias_lr"]))
        gen = self.generator()
        self.model.eval()
        self.bias_layers.train()
        cached = None
        if not self.own_network:  # no augmentation: the fixed network's logits are computed once
            with torch.no_grad():
                cached = torch.cat([self.model[1](self.front_forward(x.to(self.device)))
                                    for x in vx.split(FEATURE_BATCH)])
        for _ in range(epochs):
            order = torch.randperm(len(vy), generator=gen)
            for idx in order.split(batch):
                y = vy[idx].to(self.device)
                if cached is not None:
                    logits = cached[idx.to(self.device)]
                else:
                    x = flip_crop(vx[idx], gen).to(self.device)
                    with torch.no_grad():
                        logits = self.model[1](self.front_forward(x))
                z = self.bias_forward(logits)
                loss = F.cross_entropy(z[:, self.active_index], self.positions(y))
                opt.zero_grad()
                loss.backward()
                opt.step()
        for p in self.bias_layers.parameters():
            p.grad = None
        self.bias_layers.eval()

    # ------------------------------------------------------------------------------------------------ memory
    def update_memory(self, dataset) -> None:
        labels = dataset_labels(dataset)
        if self.switches.bic_one_exemplar_val_is_train:
            # first image of each class new in the task (filelist order); old classes trimmed to their first
            self.mem_train = {c: v[:1] for c, v in self.mem_train.items()}
            first: dict[int, int] = {}
            for i, lab in enumerate(labels):
                first.setdefault(int(lab), i)
            for c in sorted(first):
                if c not in self.mem_train:
                    self.mem_train[c] = take_items(dataset, [first[c]])[0]
            self.mem_train = dict(sorted(self.mem_train.items()))
            self.mem_val = self.mem_train  # the 'validation' list is the training list
            return
        seen = len(self.active)
        quota = int(self.hp["memory_size"]) // seen if seen else 0
        f = float(self.hp["val_fraction"])
        q_val = min(quota, max(1, round(f * quota))) if quota >= 2 and f > 0 else 0
        q_train = quota - q_val
        self.mem_train = {c: v[:q_train] for c, v in self.mem_train.items()}
        self.mem_val = {c: v[:q_val] for c, v in self.mem_val.items()}
        train_idx, val_idx = self._split if self._split is not None else (list(range(len(labels))), [])
        for c in sorted(set(int(v) for v in labels)):
            if c in self.mem_train:
                continue
            self.mem_train[c] = self.herd(dataset, [i for i in train_idx if labels[i] == c], q_train)
            self.mem_val[c] = self.herd(dataset, [i for i in val_idx if labels[i] == c], q_val)
        self.mem_train = dict(sorted(self.mem_train.items()))
        self.mem_val = dict(sorted(self.mem_val.items()))

    @torch.no_grad()
    def herd(self, dataset, indices: list[int], n: int) -> torch.Tensor:
        """Up to n herding picks (distinct; eval-mode penultimate features) among dataset[indices], stored inputs."""
        n = min(n, len(indices))
        if n <= 0:
            x0 = dataset[0][0]
            return torch.empty((0, *torch.as_tensor(x0).shape))
        mode = self.model.training
        self.model.eval()
        feats = []
        for x, _ in DataLoader(Subset(dataset, indices), batch_size=FEATURE_BATCH, shuffle=False,
                               generator=throwaway_generator()):
            feats.append(self.penultimate(torch.as_tensor(x).to(self.device)).float().cpu())
        self.model.train(mode)
        picks = herding_select(torch.cat(feats), n, frobenius_norm=False, allow_repeats=False)
        return take_items(dataset, [indices[j] for j in picks])[0]

    def exemplar_counts(self) -> dict[int, tuple[int, int]]:
        return {c: (len(self.mem_train[c]), len(self.mem_val.get(c, ()))) for c in self.mem_train}

    # ------------------------------------------------------------------------------------------------ state
    def memory_bytes(self) -> dict[str, int]:
        out = {"images": sum(image_bytes(v) for v in self.mem_train.values())}
        if self.mem_val is not self.mem_train:
            out["images"] += sum(image_bytes(v) for v in self.mem_val.values())
        out["bias_layers"] = n_params_bytes(self.bias_layers.parameters())
        if self.teacher is not None:
            out["teacher_network"] = n_params_bytes(self.teacher.state_dict().values())
        return out

    def extra_state(self) -> dict[str, Any]:
        state = super().extra_state()
        state.update({
            "mem_labels": [int(c) for c in self.mem_train],
            "mem_train": [v.clone() for v in self.mem_train.values()],
            "mem_val": [] if self.mem_val is self.mem_train else [self.mem_val[c].clone() for c in self.mem_train],
            "bias": [torch.cat([layer.alpha.detach(), layer.beta.detach()]).cpu() for layer in self.bias_layers],
            "has_teacher": self.teacher is not None,
            "teacher": copy.deepcopy(self.teacher.state_dict()) if self.teacher is not None else {},
            "prev_active": list(self.prev_active),
        })
        return state

    def load_extra_state(self, state: dict[str, Any]) -> None:
        super().load_extra_state(state)
        labels = [int(c) for c in state["mem_labels"]]
        self.mem_train = {c: v.clone() for c, v in zip(labels, state["mem_train"])}
        if self.switches.bic_one_exemplar_val_is_train:
            self.mem_val = self.mem_train
        else:
            self.mem_val = {c: v.clone() for c, v in zip(labels, state["mem_val"])}
        self.ensure_layers(len(state["bias"]))
        with torch.no_grad():
            for layer, ab in zip(self.bias_layers, state["bias"]):
                layer.alpha.copy_(ab[:1])
                layer.beta.copy_(ab[1:2])
        if state["has_teacher"]:
            self.teacher = copy.deepcopy(self.model)
            self.teacher.load_state_dict(state["teacher"])
            for p in self.teacher.parameters():
                p.requires_grad_(False)
        else:
            self.teacher = None
        self.prev_active = [int(c) for c in state["prev_active"]]
        self._task = None
        self._split = None
