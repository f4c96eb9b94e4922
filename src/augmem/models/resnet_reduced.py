"""The "reduced" ResNet-18 of the Stable SGD adapter (spec 14.1, ``other_models/stable_sgd/stable_sgd/models.py``).

Width ``nf`` (20): a stem conv3x3(3 -> nf) -> BN -> ReLU, then four stages of two blocks with nf, 2nf, 4nf, 8nf
channels and strides 1, 2, 2, 2, then ``avg_pool2d(4)`` and Linear(8nf, n_out) (100 outputs in the adapted code,
whatever the dataset). Inputs are reshaped to (B, 3, 32, 32), so only 32 x 32 images (3,072 values) work.

The adapted code's block is not the usual basic block::

    out = Dropout(BN(relu(conv1(x))))          # conv1: 3x3, stride s
    out = Dropout(BN(relu(out + shortcut(x)))) # shortcut: identity, or a 1x1 conv of stride s without BN

Its ``conv2`` (3x3, planes -> planes) is constructed but never used (upstream Stable SGD has the same quirk). It is
kept here as a parameter that receives no gradient, because it is part of the network's parameter count and of the
weight initialisation's draws from the global RNG (constructed, per block, in the order conv1, conv2, shortcut).
The 3x3 convolutions have no bias (the ``conv3x3`` helper of the reduced ResNet-18 these codes descend from); the
head's Linear has one. PyTorch's default initialisation, no pretraining.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

INPUT_SIZE = 32  # the model's fixed input: (B, 3, 32, 32)
STAGE_STRIDES = (1, 2, 2, 2)
BLOCKS_PER_STAGE = 2


def conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False)


class ReducedBlock(nn.Module):
    """conv3x3(stride) -> ReLU -> [BN -> Dropout] -> + shortcut -> ReLU -> [BN -> Dropout]; ``conv2`` unused."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1, dropout: float = 0.0):
        super().__init__()
        self.conv1 = conv3x3(c_in, c_out, stride)
        self.conv2 = conv3x3(c_out, c_out)  # defined but never used, as in the adapted code (see module docstring)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, kernel_size=1, stride=stride, bias=False))
        self.post_conv = nn.Sequential(nn.BatchNorm2d(c_out), nn.Dropout(p=dropout))
        self.post_add = nn.Sequential(nn.BatchNorm2d(c_out), nn.Dropout(p=dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.post_conv(F.relu(self.conv1(x)))
        out = out + self.shortcut(x)
        return self.post_add(F.relu(out))


class ReducedResNet18Trunk(nn.Module):
    """Everything before the head: reshape to (B, 3, 32, 32), stem, 4 stages, ``avg_pool2d(4)``, flatten -> (B, 8nf)."""

    def __init__(self, nf: int = 20, dropout: float = 0.0):
        super().__init__()
        self.nf = int(nf)
        self.conv1 = conv3x3(3, nf)
        self.bn1 = nn.BatchNorm2d(nf)
        c_in = nf
        for k, stride in enumerate(STAGE_STRIDES):
            c_out = nf * 2**k
            blocks = []
            for b in range(BLOCKS_PER_STAGE):
                blocks.append(ReducedBlock(c_in, c_out, stride if b == 0 else 1, dropout))
                c_in = c_out
            setattr(self, f"layer{k + 1}", nn.Sequential(*blocks))
        self.out_features = c_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        if x.shape[1:].numel() != 3 * INPUT_SIZE * INPUT_SIZE:
            raise ValueError(f"the reduced ResNet-18 takes 3 x {INPUT_SIZE} x {INPUT_SIZE} inputs (it reshapes them "
                             f"to (B, 3, {INPUT_SIZE}, {INPUT_SIZE})), not {tuple(x.shape[1:])}")
        out = x.reshape(b, 3, INPUT_SIZE, INPUT_SIZE)
        out = F.relu(self.bn1(self.conv1(out)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.avg_pool2d(out, 4)
        return out.flatten(1)


class ReducedResNet18(nn.Sequential):
    """``ResNet18(nclasses, nf)`` of the adapted code: ``trunk`` (see :class:`ReducedResNet18Trunk`) then ``linear``
    (Linear(8nf, n_out)); ``net[0]`` is the trunk and ``net[1]`` the head."""

    def __init__(self, n_out: int = 100, nf: int = 20, dropout: float = 0.0):
        trunk = ReducedResNet18Trunk(nf, dropout)
        super().__init__(OrderedDict([("trunk", trunk), ("linear", nn.Linear(trunk.out_features, n_out))]))
