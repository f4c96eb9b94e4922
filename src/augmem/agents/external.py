"""Shared machinery of the external baselines (spec 14: Stable SGD, BiC, LwF, ...): the adapted codes' input
pipeline, their shuffled task-wise minibatches and the classes of each task.

hp ``network`` chooses what an external baseline runs on:

* ``own`` (the adapted code, ``reference``): its own network (:data:`augmem.data.cache_plan.OWN_NETWORKS`) at its own
  input size (``Resize(32)``: the loop's loader yields 32 x 32 images), CIFAR normalisation (spec 14.0) and the
  adapted code's flip + crop(32, padding 4) augmentation of the training batches;
* ``study`` (``corrected``): the study's backbone (``backbone``, ``weights``, ``image_size``: SqueezeNet 1.0 at 224 with
  the study's pretrained front), ImageNet normalisation and no augmentation, as every agent of the study, so that the
  methods compare on equal terms.

The loop's images arrive in ImageNet normalisation (``augmem.data.datasets.study_transform``). :class:`Renormalize`
(the first module of an own network) maps them to CIFAR normalisation, which equals ``Normalize(CIFAR)`` of the same
pixels up to float rounding; the augmentation pads with black pixels (``RandomCrop(padding=4)``'s fill of 0) in the
incoming normalisation, so that flip, crop and renormalisation commute with the original's order.

Every external agent consumes a task as its adapted code does: ``n_epoch_first_task`` epochs on the first task and
``n_epoch`` (1) on later ones, each epoch one pass over the task's images in a fresh shuffle drawn from the agent's
own generator (:func:`augmem.train.seeding.replay_random`, checkpointed), in batches of ``batch_size``, dropping the
last incomplete batch while switch ``external_drop_last`` is on.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from augmem.agents.base import Agent, CommonHP
from augmem.agents.hparams import hparam
from augmem.data.cache_plan import uses_own_network
from augmem.data.datasets import IMAGENET_MEAN, IMAGENET_STD
from augmem.train.seeding import replay_random

CIFAR_MEAN = (0.5071, 0.4866, 0.4409)  # spec 14.0 "CIFAR normalisation"
CIFAR_STD = (0.2673, 0.2564, 0.2762)
CROP_PADDING = 4


@dataclasses.dataclass(frozen=True)
class ExternalHP(CommonHP):
    network: str = hparam("own", "own: the adapted code's network at its input size (32 x 32), CIFAR normalisation "
                          "and flip + crop augmentation (reference); study: the study's backbone, weights, image_size "
                          "and inputs (corrected: equal terms)", choices=("own", "study"))


def _stats(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).view(1, 3, 1, 1)


class Renormalize(nn.Module):
    """x normalised with (mean_in, std_in) -> the same pixels normalised with (mean_out, std_out)."""

    def __init__(self, mean_in=IMAGENET_MEAN, std_in=IMAGENET_STD, mean_out=CIFAR_MEAN, std_out=CIFAR_STD):
        super().__init__()
        # pixel = x * std_in + mean_in; out = (pixel - mean_out) / std_out = x * scale + shift
        scale = _stats(std_in) / _stats(std_out)
        shift = (_stats(mean_in) - _stats(mean_out)) / _stats(std_out)
        self.register_buffer("scale", scale, persistent=False)
        self.register_buffer("shift", shift, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift


def black(mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """A black pixel (0) in the normalisation (mean, std), shape (1, 3, 1, 1)."""
    return -_stats(mean) / _stats(std)


def flip_crop(x: torch.Tensor, generator: torch.Generator, padding: int = CROP_PADDING,
              fill: torch.Tensor | None = None) -> torch.Tensor:
    """``RandomHorizontalFlip`` then ``RandomCrop(size, padding)`` of every image of a batch (B, 3, H, W), drawn from
    ``generator`` on the CPU: per image one flip draw (p = 0.5) then the crop's top and left offsets in
    [0, 2 * padding]. The padding is ``fill`` (default: black in ImageNet normalisation)."""
    b, c, h, w = x.shape
    fill = black() if fill is None else fill
    flip = torch.rand(b, generator=generator) < 0.5
    top = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
    left = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
    x = torch.where(flip.to(x.device).view(b, 1, 1, 1), x.flip(3), x)
    padded = fill.to(x.device, x.dtype).expand(b, c, h + 2 * padding, w + 2 * padding).clone()
    padded[:, :, padding:padding + h, padding:padding + w] = x
    rows = (top.view(b, 1) + torch.arange(h).view(1, h)).to(x.device)  # (B, H)
    cols = (left.view(b, 1) + torch.arange(w).view(1, w)).to(x.device)  # (B, W)
    idx_b = torch.arange(b, device=x.device).view(b, 1, 1, 1)
    idx_c = torch.arange(c, device=x.device).view(1, c, 1, 1)
    return padded[idx_b, idx_c, rows.view(b, 1, h, 1), cols.view(b, 1, 1, w)]


class ExternalAgent(Agent):
    """Base of the external baselines: ``network`` own/study, shuffled task-wise batches, classes per task.

    Subclasses build their own network in :meth:`build_own_network` (an ``nn.Sequential(front, back)`` whose front
    starts with :class:`Renormalize`) and train on :meth:`epoch_batches`. ``task_classes[k]`` are the labels task k
    added to the active set (ascending); ``current_classes`` those of the task being learned."""

    HP = ExternalHP

    def __init__(self, n_class, hp, switches, device="cpu"):
        self.task_classes: list[list[int]] = []
        super().__init__(n_class, hp, switches, device)

    @property
    def own_network(self) -> bool:
        return uses_own_network(self.name, self.hp)

    def build_model(self) -> nn.Module:
        if self.own_network:
            return self.build_own_network()
        return super().build_model()

    def build_own_network(self) -> nn.Module:
        raise NotImplementedError

    def build_gss_family_network(self) -> nn.Module:
        """The GSS/CoPE own network (models/gss_nets.py, hp ``own_backbone``) behind :class:`Renormalize`, with
        ``output_size()`` outputs; its front is frozen with ``freeze_feature_extract``."""
        from augmem.models.gss_nets import build_gss_network

        net = build_gss_network(self.hp["own_backbone"], self.output_size())
        if self.hp["freeze_feature_extract"]:
            for p in net.front.parameters():
                p.requires_grad_(False)
        return nn.Sequential(nn.Sequential(Renormalize(), net.front), net.linear)

    # ------------------------------------------------------------------------------------------------ task classes
    def set_active(self, active: list[int]) -> None:
        new = sorted(set(int(a) for a in active) - set(self.active))
        if new:
            self.task_classes.append(new)
        super().set_active(active)

    @property
    def current_classes(self) -> list[int]:
        return self.task_classes[-1] if self.task_classes else []

    @property
    def old_classes(self) -> list[int]:
        return sorted(c for k in self.task_classes[:-1] for c in k)

    # ------------------------------------------------------------------------------------------------ batches
    def generator(self) -> torch.Generator:
        """The agent's own generator (shuffles, augmentation): seeded by the loop, checkpointed with the agent."""
        return replay_random(self).torch

    def epoch_batches(self, loader, augment: bool | None = None):
        """One epoch of the adapted code's training batches over ``loader``'s dataset: a fresh shuffle, batches of
        ``batch_size``, the last incomplete batch dropped while ``external_drop_last`` is on, on the agent's device,
        with flip + crop augmentation when ``augment`` (default: on the own network)."""
        augment = self.own_network if augment is None else augment
        gen = self.generator()
        dataset = loader.dataset
        order = torch.randperm(len(dataset), generator=gen).tolist()
        shuffled = torch.utils.data.DataLoader(
            torch.utils.data.Subset(dataset, order), batch_size=int(self.hp["batch_size"]), shuffle=False,
            drop_last=bool(self.switches.external_drop_last), num_workers=loader.num_workers,
            collate_fn=loader.collate_fn, pin_memory=loader.pin_memory,
            generator=torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,), generator=gen))))
        for x, y in shuffled:
            if augment:
                x = flip_crop(x, gen)
            yield x.to(self.device), y.to(self.device)

    # ------------------------------------------------------------------------------------------------ state
    def extra_state(self) -> dict[str, Any]:
        return {"task_classes": [list(k) for k in self.task_classes], "replay_rng": replay_random(self).state()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.task_classes = [list(k) for k in state["task_classes"]]
        replay_random(self).load_state(state["replay_rng"])
