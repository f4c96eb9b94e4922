"""torchvision's ResNet-18 split for REMIND (spec 14.6): G = the stem, layer1-3 and layer4.0 (512 x 7 x 7 at 224 px;
smaller inputs give smaller maps), F = layer4.1 + global average pool + Linear(512, C).

Weights (hp ``weights`` of a REMIND job on its own network):

* ``none``: torchvision's random init (drawn from the global torch RNG, seeded per job);
* ``imagenet``: torchvision's ``ResNet18_Weights.IMAGENET1K_V1`` (the spec's option 3 proxy for the missing ImageNet-100
  checkpoint). A local file registered with :func:`use_local_imagenet_weights` stands in for it; otherwise torchvision's
  weights API is asked (a download on first use: never in tests);
* a path: a state-dict file in torchvision's ResNet-18 layout (``conv1.weight``, ..., ``fc.bias``; a ``{"state_dict":
  ...}`` wrapper and a ``module.`` prefix are accepted), e.g. the original's
  ``best_ResNet18ClassifyAfterLayer4_1_100.pth``.

Loading is the original's ``safe_load_dict``: a tensor whose shape differs from the network's is skipped, so the fc
head is loaded only when the file's head has C outputs (quirk 39: the ImageNet-100 head for CIFAR-100) and stays
random otherwise. Every other tensor of the trunk must be present with the right shape (an InputError otherwise).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision import models as tvm

from augmem.io import InputError

G_CHANNELS = 512  # channels of layer4.0's output
_LOCAL_IMAGENET: dict[str, str] = {}


def use_local_imagenet_weights(path: str | None) -> None:
    """Load weights 'imagenet' from the torchvision-layout state-dict file ``path`` (None: torchvision's API)."""
    if path is None:
        _LOCAL_IMAGENET.pop("resnet18", None)
    else:
        _LOCAL_IMAGENET["resnet18"] = str(path)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: weights file not found (expected 'none', 'imagenet' or a ResNet-18 state-dict file)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(f"{path}: cannot be loaded as a torch state dict ({exc})") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise InputError(f"{path}: not a state dict")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}


def safe_load(net: nn.Module, state: dict[str, torch.Tensor], source: str) -> list[str]:
    """Load every tensor of ``state`` whose name and shape match ``net`` (the original's ``safe_load_dict``); returns
    the names skipped for their shape. Missing trunk tensors (anything but ``fc.*``) are an InputError."""
    own = net.state_dict()
    missing = [k for k in own if k not in state and not k.startswith("fc.")]
    if missing:
        raise InputError(f"{source}: not a torchvision ResNet-18 state dict (missing {', '.join(missing[:4])}"
                         + (", ..." if len(missing) > 4 else "") + ")")
    skipped = [k for k, v in state.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    bad = [k for k in skipped if not k.startswith("fc.")]
    if bad:
        raise InputError(f"{source}: tensors of the wrong shape for ResNet-18: {', '.join(bad[:4])}")
    keep = {k: v for k, v in state.items() if k in own and k not in skipped}
    net.load_state_dict(keep, strict=False)
    return skipped


def resnet18(n_class: int, weights: str = "none") -> nn.Module:
    """torchvision's ResNet-18 with ``n_class`` outputs, from ``weights`` (see the module docstring)."""
    net = tvm.resnet18(weights=None, num_classes=int(n_class))
    if weights in (None, "", "none"):
        return net
    if weights == "imagenet":
        if "resnet18" in _LOCAL_IMAGENET:
            state = read_state_dict(_LOCAL_IMAGENET["resnet18"])
        else:  # torchvision's weights API: downloads into TORCH_HOME on first use
            state = tvm.resnet18(weights=tvm.ResNet18_Weights.IMAGENET1K_V1).state_dict()
        safe_load(net, state, "ResNet-18 ImageNet weights")
        return net
    safe_load(net, read_state_dict(weights), str(weights))
    return net


def split_resnet18(net: nn.Module) -> tuple[nn.Sequential, nn.Sequential]:
    """(G, F) of a torchvision ResNet-18: G = conv1 .. layer4[0], F = layer4[1] + global average pool + fc."""
    g = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4[0])
    f = nn.Sequential(net.layer4[1], nn.AdaptiveAvgPool2d(1), nn.Flatten(), net.fc)
    return g, f


def remind_resnet18(n_class: int, weights: str = "none") -> tuple[nn.Sequential, nn.Sequential]:
    return split_resnet18(resnet18(n_class, weights))
