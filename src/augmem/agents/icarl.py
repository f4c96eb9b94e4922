"""iCaRL as the study ran it (spec 6.3, 12.22), each published quirk behind a training switch.

* Features (``icarl_class_score_features``): reference = the input of the final Flatten, i.e. the C post-ReLU pooled
  class scores (= the logits over all C classes); corrected = the penultimate features (the input of the last
  parameterised block of the back, globally average-pooled: 512 channels for SqueezeNet).
  Herding features are computed in train mode (dropout active) as the original when the reference features are used,
  in eval mode otherwise. Class means for prediction are always computed in eval mode.
* Task 0 (no exemplars yet): NormalNN. Later: the replay set is the concatenation of the stored exemplar images,
  replay batch = ceil(|replay| / n_train_batches), shuffled; each train batch gets one CE step, then one step on a
  replay batch with BCE(sigmoid(logits[:, active]), sigmoid(target[:, active])).
  - ``icarl_misaligned_distill``: the targets are the current model's outputs (train mode) on one pass over the
    shuffled replay loader, then used by batch index on a second, re-shuffled pass (they do not match the inputs).
    Corrected: targets are the outputs of a frozen copy of the model taken at the start of the task, computed on the
    same replay batch (eval mode).
  - ``icarl_zip_truncation``: ``zip(train, replay)`` stops at the shorter loader, so only the first
    ceil(|replay| / replay_batch) train batches are used. Corrected: every train batch; the replay loader cycles.
* Memory update (``icarl_update_every_epoch``: after every epoch, which in effect herds new classes after the *first*
  epoch of a task; corrected: after the last epoch): new classes = labels - {0..seen-1}; seen += |new|;
  per_class = memory_size // seen; old sets are not trimmed and herding allows repeats
  (``icarl_untrimmed_exemplars``; corrected: trimmed to per_class, distinct picks); herding with the Frobenius-norm
  quirk (``herding_frobenius_norm``). Exemplars are the stored (already transformed) image tensors.
* Randomness: the replay loader shuffles with the agent's replay generator
  (:func:`augmem.train.seeding.replay_random`, saved in the checkpoint); the feature loaders draw nothing from the
  global RNG, so evaluating (class means) never moves the training's random numbers.
* Prediction: nearest class mean of exemplars (mean of the features, L2-normalised; test features normalised).
  When an active class has no exemplars yet (corrected, before a task's last epoch) the network's argmax over the
  active nodes is used instead.
"""
from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset, TensorDataset

from augmem.agents.base import CommonHP
from augmem.agents.hparams import hparam
from augmem.agents.herding import herding_select
from augmem.agents.naive_rehearsal import cycle, dataset_labels, image_bytes, take_items
from augmem.agents.normal_nn import NormalNN
from augmem.train.seeding import replay_random, throwaway_generator

FEATURE_BATCH = 100  # batch of the original's exemplar/feature loaders


def replay_plan(n_train: int, batch_size: int, n_replay: int) -> tuple[int, int, int]:
    """(n_train_batches, replay_batch, n_replay_batches) of a replay epoch.

    Under the zip truncation only ``n_replay_batches`` train batches are used (CORe50, memory 15, batch 21: 58 train
    batches, and 14, 20, 24, 26 replay batches in tasks 1-4).
    """
    n_train_batches = math.ceil(n_train / batch_size)
    if n_train_batches == 0 or n_replay == 0:
        return n_train_batches, 0, 0
    replay_batch = math.ceil(n_replay / n_train_batches)
    return n_train_batches, replay_batch, math.ceil(n_replay / replay_batch)


@dataclasses.dataclass(frozen=True)
class ICaRLHP(CommonHP):
    memory_size: int = hparam(1200, "exemplar budget over all classes seen (memory_size // seen classes per class)",
                              unit="exemplar images in total", min=0)


class ICaRL(NormalNN):
    name = "iCaRL"
    HP = ICaRLHP

    def __init__(self, n_class, hp, switches, device="cpu"):
        super().__init__(n_class, hp, switches, device)
        self.memory_size = self.hp["memory_size"]
        self.exemplars: dict[int, torch.Tensor] = {}  # label -> (n, 3, H, W) transformed images (CPU), insertion order
        self.seen_classes = 0
        self._means: tuple[torch.Tensor, torch.Tensor] | None = None  # (labels, normalised class means) cache
        self._old_model: nn.Module | None = None
        self._old_model_task: int | None = None
        self.n_train_steps = 0  # train batches used in the last replay epoch (shows the zip truncation)

    # ----------------------------------------------------------------------------------------------------- features
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The exemplar/NME features of a batch (see the module docstring)."""
        if self.switches.icarl_class_score_features:
            return self.forward(x).reshape(len(x), -1)
        return self.penultimate(x)

    @torch.no_grad()
    def features_of(self, data, train_mode: bool) -> torch.Tensor:
        """Features of every item of a dataset (items ``(x, y)`` or ``(x,)``), batch 100, in order."""
        mode = self.model.training
        self.model.train(train_mode)
        out = []
        for batch in DataLoader(data, batch_size=FEATURE_BATCH, shuffle=False, generator=throwaway_generator()):
            out.append(self.features(batch[0].to(self.device)).float().cpu())
        self.model.train(mode)
        return torch.cat(out) if out else torch.empty(0)

    # ----------------------------------------------------------------------------------------------------- training
    def learn_stream(self, loader, task: int, epoch: int, last_epoch: bool) -> None:
        self._means = None
        if task != self._old_model_task:  # a new task starts: freeze a copy for the corrected distillation targets
            self._old_model_task = task
            self._old_model = None
            if not self.switches.icarl_misaligned_distill and self.exemplars:
                self._old_model = copy.deepcopy(self.model).eval()
                for p in self._old_model.parameters():
                    p.requires_grad_(False)
        if not self.exemplars:
            super().learn_stream(loader, task, epoch, last_epoch)
        else:
            self.learn_with_replay(loader)
        if self.switches.icarl_update_every_epoch or last_epoch:
            self.update_memory(loader.dataset)
        self._means = None

    def distill_step(self, rx: torch.Tensor, target: torch.Tensor) -> float:
        """One optimiser step of BCE(sigmoid(logits[:, active]), sigmoid(target[:, active]))."""
        self.model.train()
        out = self.forward(rx)[:, self.active_index]
        loss = F.binary_cross_entropy(torch.sigmoid(out), torch.sigmoid(target[:, self.active_index]))
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    def learn_with_replay(self, loader) -> None:
        n_train_batches = len(loader)
        replay_x = torch.cat(list(self.exemplars.values()))
        if n_train_batches == 0 or len(replay_x) == 0:
            super().learn_stream(loader, 0, 0, False)
            return
        replay_batch = math.ceil(len(replay_x) / n_train_batches)
        replay_loader = DataLoader(TensorDataset(replay_x), batch_size=replay_batch, shuffle=True,
                                   generator=replay_random(self).torch)
        self.n_train_steps = 0
        if self.switches.icarl_misaligned_distill:
            # targets of one shuffle, by batch index (current model, train mode)
            self.model.train()
            with torch.no_grad():
                targets = [self.forward(rx.to(self.device)).detach() for (rx,) in replay_loader]
        if self.switches.icarl_zip_truncation:
            pairs = zip(loader, replay_loader)
        else:
            pairs = zip(loader, cycle(replay_loader))
        for i, ((x, y), (rx,)) in enumerate(pairs):
            self.update_model(x.to(self.device), y.to(self.device))
            self.n_train_steps += 1
            rx = rx.to(self.device)
            if self.switches.icarl_misaligned_distill:
                target = targets[i]
            else:
                with torch.no_grad():
                    target = self._old_model(rx) if self._old_model is not None else self.forward(rx).detach()
            self.distill_step(rx, target)

    # ----------------------------------------------------------------------------------------------------- memory
    def update_memory(self, dataset) -> None:
        """Herd exemplars for the classes new in ``dataset`` (and trim old sets under corrected)."""
        if len(dataset) == 0:
            return
        labels = dataset_labels(dataset)
        new = sorted(set(labels) - set(range(self.seen_classes)))
        self.seen_classes += len(new)
        if self.seen_classes == 0:
            return
        per_class = self.memory_size // self.seen_classes
        if not self.switches.icarl_untrimmed_exemplars:
            self.exemplars = {c: ex[:per_class] for c, ex in self.exemplars.items()}
        train_mode = self.switches.icarl_class_score_features
        for c in new:
            inds = [i for i, lab in enumerate(labels) if lab == c]
            feats = self.features_of(Subset(dataset, inds), train_mode=train_mode)
            picks = herding_select(feats, per_class, frobenius_norm=self.switches.herding_frobenius_norm,
                                   allow_repeats=self.switches.icarl_untrimmed_exemplars)
            self.exemplars[c] = take_items(dataset, [inds[j] for j in picks])[0]
        self._means = None

    def exemplar_counts(self) -> dict[int, int]:
        return {c: len(ex) for c, ex in self.exemplars.items()}

    # ----------------------------------------------------------------------------------------------------- predicting
    def class_means(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(labels, means): per class with exemplars (insertion order), the mean feature, L2-normalised (eval mode)."""
        if self._means is None:
            labs, means = [], []
            for c, ex in self.exemplars.items():
                if len(ex) == 0:
                    continue
                mu = self.features_of(TensorDataset(ex), train_mode=False).mean(0)
                means.append(mu / mu.norm().clamp_min(1e-12))
                labs.append(c)
            if means:
                self._means = (torch.tensor(labs, dtype=torch.long, device=self.device),
                               torch.stack(means).to(self.device))
            else:
                self._means = (torch.empty(0, dtype=torch.long, device=self.device), torch.empty(0))
        return self._means

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        labels, means = self.class_means()
        if len(labels) == 0 or not set(self.active) <= set(labels.tolist()):
            return super().predict(x)
        self.model.eval()
        f = self.features(x).float()
        f = f / f.norm(dim=1, keepdim=True).clamp_min(1e-12)
        dist = ((f[:, None, :] - means[None, :, :]) ** 2).sum(2)
        return {"acc": labels[dist.argmin(1)]}

    # ----------------------------------------------------------------------------------------------------- state
    def memory_bytes(self) -> dict[str, int]:
        return {"images": sum(image_bytes(ex) for ex in self.exemplars.values())}

    def restore_weights(self, weights) -> None:
        super().restore_weights(weights)
        self._means = None

    def extra_state(self) -> dict[str, Any]:
        return {
            "seen_classes": int(self.seen_classes),
            "exemplar_labels": [int(c) for c in self.exemplars],
            "exemplars": [ex.clone() for ex in self.exemplars.values()],
            "replay_rng": replay_random(self).state(),
        }

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.seen_classes = int(state["seen_classes"])
        self.exemplars = {int(c): ex.clone() for c, ex in zip(state["exemplar_labels"], state["exemplars"])}
        if "replay_rng" in state:
            replay_random(self).load_state(state["replay_rng"])
        self._means = None
        self._old_model = None
        self._old_model_task = None
