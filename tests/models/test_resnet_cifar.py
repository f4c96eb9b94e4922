"""The CIFAR-stem ResNet-18 of the adapted LwF code (spec 14.5): shapes, parameter count by hand, init."""
from __future__ import annotations

import math

import torch
from torch import nn

from augmem.models.resnet_cifar import FEATURE_DIM, N_PARAMS, BasicBlock, resnet18_cifar


def hand_count() -> int:
    """Parameters by hand: convs k*k*c_in*c_out (no bias), BatchNorm 2*c, 1x1 downsample conv + BN where the
    width changes (stages 2-4); no CBAM, no fc."""
    bn = lambda c: 2 * c  # noqa: E731
    conv3 = lambda ci, co: 9 * ci * co  # noqa: E731
    total = conv3(3, 64) + bn(64)  # stem: 1,728 + 128
    c_in = 64
    for width in (64, 128, 256, 512):
        # first block (maybe strided, maybe with a 1x1 downsample), second block (width -> width)
        total += conv3(c_in, width) + bn(width) + conv3(width, width) + bn(width)
        if c_in != width:
            total += c_in * width + bn(width)
        total += 2 * (conv3(width, width) + bn(width))
        c_in = width
    return total


def test_parameter_count_by_hand():
    # stem 1,856; stage 1 147,968; stage 2 525,568; stage 3 2,099,712; stage 4 8,393,728
    assert hand_count() == 1_856 + 147_968 + 525_568 + 2_099_712 + 8_393_728 == 11_168_832 == N_PARAMS
    net = resnet18_cifar()
    assert sum(p.numel() for p in net.parameters()) == N_PARAMS
    # BatchNorm running statistics: 2 x (64 + 4*64 + 5*128 + 5*256 + 5*512) = 9,600 values in 20 BatchNorms
    running = sum(b.numel() for n, b in net.named_buffers() if "running" in n)
    assert running == 9_600
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) == 20


def test_shapes_32_to_512_no_maxpool():
    torch.manual_seed(0)
    net = resnet18_cifar().eval()
    shapes = {}
    for name in ("relu", "layer1", "layer2", "layer3", "layer4"):
        getattr(net, name).register_forward_hook(lambda m, i, o, n=name: shapes.update({n: tuple(o.shape)}))
    with torch.no_grad():
        out = net(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, FEATURE_DIM) == (2, 512)
    assert shapes == {"relu": (2, 64, 32, 32), "layer1": (2, 64, 32, 32), "layer2": (2, 128, 16, 16),
                      "layer3": (2, 256, 8, 8), "layer4": (2, 512, 4, 4)}
    assert not any(isinstance(m, nn.MaxPool2d) for m in net.modules())
    assert net.conv1.kernel_size == (3, 3) and net.conv1.stride == (1, 1) and net.conv1.bias is None
    assert isinstance(net.avgpool, nn.AvgPool2d) and net.avgpool.kernel_size == 4


def test_blocks_strides_and_shortcuts():
    net = resnet18_cifar()
    for stage, width, stride in ((net.layer1, 64, 1), (net.layer2, 128, 2), (net.layer3, 256, 2),
                                 (net.layer4, 512, 2)):
        first, second = stage
        assert isinstance(first, BasicBlock) and isinstance(second, BasicBlock)
        assert first.conv1.stride == (stride, stride) and second.conv1.stride == (1, 1)
        assert first.conv2.out_channels == width
        assert (first.downsample is not None) == (width != 64)
        assert second.downsample is None
    # the residual path: a block with zeroed convs passes relu(x) through (identity shortcut)
    block = BasicBlock(4, 4).eval()
    nn.init.zeros_(block.conv1.weight)
    nn.init.zeros_(block.conv2.weight)
    x = torch.randn(1, 4, 5, 5)
    assert torch.equal(block(x), torch.relu(x))


def test_he_init_and_batchnorm_init():
    torch.manual_seed(0)
    net = resnet18_cifar()
    w = net.layer4[1].conv2.weight.detach()  # 512 x 512 x 3 x 3: 2.4 M draws
    expected = math.sqrt(2.0 / (3 * 3 * 512))
    assert abs(float(w.std()) / expected - 1) < 0.01 and abs(float(w.mean())) < 0.01 * expected
    ds = net.layer2[0].downsample[0].weight.detach()  # 1x1: n = 1 * 1 * 128
    assert abs(float(ds.std()) / math.sqrt(2.0 / 128) - 1) < 0.05
    # normal, not uniform: 4.55 % of normal draws lie beyond 2 sigma (0 % for a uniform of that std)
    tail = float((w.abs() > 2 * expected).float().mean())
    assert 0.04 < tail < 0.05
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.equal(m.weight, torch.ones_like(m.weight)) and torch.equal(m.bias, torch.zeros_like(m.bias))
    torch.manual_seed(0)
    again = resnet18_cifar()
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), again.state_dict().values()))
