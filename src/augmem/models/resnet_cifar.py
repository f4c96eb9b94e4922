"""The CIFAR-style ResNet-18 feature extractor of the adapted LwF code (spec 14.5: ``resnet18_cbam()``).

Layout (for a 3 x 32 x 32 input):

* stem: conv 3x3 (3 -> 64, stride 1, padding 1, no bias), BatchNorm, ReLU; **no max-pool** (32 x 32 stays 32 x 32);
* four stages of two :class:`BasicBlock` each, 64 / 128 / 256 / 512 channels, strides 1 / 2 / 2 / 2
  (32 -> 32 -> 16 -> 8 -> 4); a block is conv3x3-BN-ReLU-conv3x3-BN plus the shortcut, then ReLU; the shortcut is a
  1x1 conv (no bias) + BN where the stride or the width changes, else the identity;
* ``AvgPool2d(4)`` and flatten: a 512-d feature (exactly 512 only for 32 x 32 inputs, the size the adapted code and
  the loop's ``network: own`` feed).

Init as the adapted code: every conv ``normal(0, sqrt(2 / n))`` with ``n = k * k * out_channels`` (He, fan-out),
every BatchNorm weight 1 and bias 0, drawn from the global torch RNG in module order.

Differences from the original module, on purpose:

* The CBAM attention modules (a channel-attention MLP and a 7x7 spatial-attention conv per block) are built in the
  original but their calls are commented out of the forward (``other_models/lwf/ResNet.py:90-91``), so they never
  change an output or receive a gradient. They are left out here. With the usual CBAM design (channel reduction 16,
  1x1 convs without bias; spatial conv 2 -> 1 channels, 7x7, no bias) they hold, per block of width p,
  p^2 / 8 + 98 parameters: 2 x (512 + 2,048 + 8,192 + 32,768) + 8 x 98 = 87,824 parameters in all.
* The original's own (unused) ``fc`` layer is left out too; LwF's classifier is the separate growing head
  (:mod:`augmem.agents.lwf`).

So this module has :data:`N_PARAMS` = 11,168,832 parameters (the original module: that + 87,824 CBAM + its fc),
plus 9,600 BatchNorm running statistics (and 20 ``num_batches_tracked`` counters). The draws of the global RNG
differ from the original's accordingly (no CBAM or fc init), which changes no distribution.
"""
from __future__ import annotations

import math

import torch
from torch import nn

WIDTHS = (64, 128, 256, 512)
STRIDES = (1, 2, 2, 2)
BLOCKS = (2, 2, 2, 2)
FEATURE_DIM = 512
N_PARAMS = 11_168_832  # computed by hand in tests/models/test_resnet_cifar.py


def conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN + shortcut, ReLU (the original's CBAM calls are commented out)."""

    expansion = 1

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = conv3x3(c_in, c_out, stride)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(c_out, c_out)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, kernel_size=1, stride=stride, bias=False),
                                            nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class ResNetCIFAR(nn.Module):
    """CIFAR-stem ResNet (no max-pool, AvgPool2d(4)) returning the flattened pooled feature (no classifier)."""

    def __init__(self, blocks=BLOCKS, widths=WIDTHS, strides=STRIDES):
        super().__init__()
        self.conv1 = conv3x3(3, widths[0])
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        c_in = widths[0]
        stages = []
        for n, width, stride in zip(blocks, widths, strides):
            layers = [BasicBlock(c_in, width, stride)] + [BasicBlock(width, width) for _ in range(n - 1)]
            stages.append(nn.Sequential(*layers))
            c_in = width
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AvgPool2d(4)
        self.out_dim = c_in
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The adapted code's init: convs normal(0, sqrt(2 / (k_h * k_w * out_channels))), BN weight 1, bias 0."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                with torch.no_grad():
                    m.weight.normal_(0.0, math.sqrt(2.0 / n))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)


def resnet18_cifar() -> ResNetCIFAR:
    """ResNet-18 (2, 2, 2, 2 BasicBlocks) with the CIFAR stem: 3 x 32 x 32 -> 512."""
    return ResNetCIFAR()
