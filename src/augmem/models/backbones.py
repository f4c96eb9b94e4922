"""Backbones and their cut points (spec 6.4 and 7).

Every agent uses SqueezeNet 1.0 (the original's "ResNet18" is SqueezeNet) with a new 3x3 conv head, split into a
front ``E = features[:12]`` (through the third max-pool: 512 x 13 x 13 for a 224 input) and a back
``H = features[12:] + classifier + Flatten``. AugMem's MobileNetV2 ablation splits ``features[:8]`` (64 x 14 x 14) from
``features[8:] + pool + Linear``. The spatial size follows the input size, so small demo images work.

Weights: ``none`` (random init), ``imagenet`` (torchvision's weights API: needs a network the first time, then its
cache; see ``stages.fetch_weights``), or a path to a local state-dict file of the torchvision model.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torchvision import models as tvm

from augmem.io import InputError

CUTS = {"squeezenet": 12, "mobilenet": 8}
CHANNELS = {"squeezenet": 512, "mobilenet": 64}
ALIASES = {"squeezenet": "squeezenet", "resnet18": "squeezenet", "mobilenet": "mobilenet", "mobilenetv2": "mobilenet"}


@dataclass
class Backbone:
    """A network split at its cut point: ``logits = back(front(x))``."""

    name: str
    front: nn.Module
    back: nn.Module
    channels: int

    def full(self) -> nn.Sequential:
        return nn.Sequential(self.front, self.back)


def canonical_name(name: str) -> str:
    try:
        return ALIASES[name.lower()]
    except KeyError:
        raise InputError(f"unknown backbone {name!r}; expected one of {sorted(ALIASES)}") from None


def _torchvision_model(name: str, weights: str):
    """The torchvision model with the requested weights (before the head is replaced)."""
    ctor, enum = {
        "squeezenet": (tvm.squeezenet1_0, tvm.SqueezeNet1_0_Weights.IMAGENET1K_V1),
        "mobilenet": (tvm.mobilenet_v2, tvm.MobileNet_V2_Weights.IMAGENET1K_V1),
    }[name]
    if weights in (None, "", "none"):
        return ctor(weights=None)
    if weights == "imagenet":
        return ctor(weights=enum)  # downloads into TORCH_HOME on first use
    path = Path(weights)
    if not path.is_file():
        raise InputError(f"{path}: weights file not found (expected 'none', 'imagenet' or a state-dict file)")
    model = ctor(weights=None)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(f"{path}: cannot be loaded as a torch state dict ({exc})") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError) as exc:
        raise InputError(f"{path}: weights do not match torchvision {name} ({str(exc).splitlines()[0]})") from exc
    return model


def build_backbone(name: str, n_class: int, weights: str = "none", head_bias_init: float | None = None) -> Backbone:
    """Build the split backbone with the study's new head for ``n_class`` outputs.

    ``head_bias_init`` (None = PyTorch's default init, as the original) sets the new head's bias to a constant. The
    SqueezeNet head ends in a ReLU, so on small synthetic images a class whose pre-activation starts negative for
    every image never receives a gradient ("dead" output); the embedded demo sets it to 1.0. Real runs leave it None.
    """
    name = canonical_name(name)
    net = _torchvision_model(name, weights)
    cut = CUTS[name]
    if name == "squeezenet":
        net.classifier[1] = nn.Conv2d(512, n_class, kernel_size=3, stride=1, padding=1)
        if head_bias_init is not None:
            nn.init.constant_(net.classifier[1].bias, float(head_bias_init))
        front = net.features[:cut]
        back = nn.Sequential(net.features[cut:], net.classifier, nn.Flatten())
    else:
        net.classifier[1] = nn.Linear(1280, n_class)
        if head_bias_init is not None:
            nn.init.constant_(net.classifier[1].bias, float(head_bias_init))
        front = net.features[:cut]
        # The original used AvgPool2d(7) for 224 inputs; adaptive pooling is the same there and works at any size.
        back = nn.Sequential(net.features[cut:], nn.AdaptiveAvgPool2d(1), nn.Flatten(), net.classifier)
    return Backbone(name=name, front=front, back=back, channels=CHANNELS[name])
