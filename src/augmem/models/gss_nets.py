"""The GSS adapted code's own networks (spec 14.2, quirk 10): the MLP 3072-100-100-C of CORe50 and iLab and the
ResNet-18 of width 20 of Toybox, both from random initialisation at 32 x 32 inputs.

* :class:`GSSMLP`: flatten -> Linear(3072, 100) -> ReLU -> Linear(100, 100) -> ReLU -> Linear(100, C); every weight
  Xavier-uniform (bound sqrt(3) * sqrt(2 / (fan_in + fan_out))), every bias 0.
* :class:`GSSResNet18`: stem conv3x3(3, 20)-BN-ReLU, four stages of two :class:`BasicBlock` (20, 40, 80, 160 channels,
  strides 1, 2, 2, 2), ``avg_pool2d(4)``, Linear(160, C). A block is conv3x3-BN-ReLU-conv3x3-BN plus a shortcut (the
  identity, or 1x1 conv + BN when the stride or the width changes), then ReLU. Convolutions have no bias; PyTorch's
  default initialisation.

Both split into ``front`` (everything before the classifier) and ``linear`` (the classifier), so that an agent can
wrap them as ``nn.Sequential(front, linear)`` like the study's backbones.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

MLP_INPUT = 3 * 32 * 32
MLP_HIDDEN = 100
RESNET_WIDTH = 20


def xavier_zero_(linear: nn.Linear) -> nn.Linear:
    """Xavier-uniform weight (gain 1: bound sqrt(6 / (fan_in + fan_out))) and a zero bias, in place."""
    nn.init.xavier_uniform_(linear.weight)
    nn.init.zeros_(linear.bias)
    return linear


class GSSMLP(nn.Module):
    """MLP 3072 -> 100 -> ReLU -> 100 -> ReLU -> C on flattened 32 x 32 RGB inputs."""

    def __init__(self, n_out: int, n_in: int = MLP_INPUT, hidden: int = MLP_HIDDEN, n_layers: int = 2):
        super().__init__()
        sizes = [n_in] + [hidden] * n_layers
        layers: list[nn.Module] = [nn.Flatten()]
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [xavier_zero_(nn.Linear(a, b)), nn.ReLU()]
        self.front = nn.Sequential(*layers)
        self.linear = xavier_zero_(nn.Linear(sizes[-1], n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.front(x))


def conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN + shortcut (identity, or 1x1 conv + BN when the shape changes), then ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = conv3x3(c_in, c_out, stride)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = conv3x3(c_out, c_out)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, kernel_size=1, stride=stride, bias=False),
                                          nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class GSSTrunk(nn.Module):
    """The ResNet's feature extractor: stem, four stages, avg_pool2d(4), flatten (160 features at 32 x 32)."""

    def __init__(self, width: int = RESNET_WIDTH, blocks: tuple[int, ...] = (2, 2, 2, 2)):
        super().__init__()
        self.conv1 = conv3x3(3, width)
        self.bn1 = nn.BatchNorm2d(width)
        stages = []
        c_in = width
        for i, n in enumerate(blocks):
            c_out = width * 2 ** i
            strides = [1 if i == 0 else 2] + [1] * (n - 1)
            layer = []
            for s in strides:
                layer.append(BasicBlock(c_in, c_out, s))
                c_in = c_out
            stages.append(nn.Sequential(*layer))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.out_features = c_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], 3, 32, 32)  # the adapted code's x.view(bsz, 3, 32, 32)
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.avg_pool2d(out, 4)
        return out.flatten(1)


class GSSResNet18(nn.Module):
    """Reduced ResNet-18 (width 20) with a Linear(160, C) classifier, for 32 x 32 inputs."""

    def __init__(self, n_out: int, width: int = RESNET_WIDTH):
        super().__init__()
        self.front = GSSTrunk(width)
        self.linear = nn.Linear(self.front.out_features, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.front(x))


def build_gss_network(kind: str, n_out: int) -> nn.Module:
    """``mlp`` or ``resnet`` (spec 14.2, quirk 10)."""
    if kind == "mlp":
        return GSSMLP(n_out)
    if kind == "resnet":
        return GSSResNet18(n_out)
    raise ValueError(f"unknown GSS backbone {kind!r}; expected 'mlp' or 'resnet'")
