"""The reduced ResNet-18 of the Stable SGD adapter (spec 14.1): shapes, parameter count, the block, unused conv2."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from augmem.models.resnet_reduced import ReducedBlock, ReducedResNet18


def expected_n_params(nf: int, n_out: int) -> int:
    """By hand from the architecture: bias-free 3x3 convs, BN = 2 * channels, conv2 counted though unused."""
    def conv(c_in, c_out, k):
        return c_in * c_out * k * k

    def block(c_in, c_out, stride):
        n = conv(c_in, c_out, 3) + conv(c_out, c_out, 3) + 2 * (2 * c_out)  # conv1, conv2 (unused), 2 BNs
        if stride != 1 or c_in != c_out:
            n += conv(c_in, c_out, 1)  # 1x1 shortcut, no BN
        return n

    total = conv(3, nf, 3) + 2 * nf  # stem conv + BN
    c_in = nf
    for k, stride in enumerate((1, 2, 2, 2)):
        c_out = nf * 2**k
        total += block(c_in, c_out, stride) + block(c_out, c_out, 1)
        c_in = c_out
    return total + (8 * nf) * n_out + n_out  # Linear(160, n_out)


def test_parameter_count_nf20_100_outputs():
    net = ReducedResNet18(100, 20, 0.1)
    n = sum(p.numel() for p in net.parameters())
    assert n == expected_n_params(20, 100) == 1_108_680
    # numbers written out: stem 540 + 40; stages 14,560 + 51,520 + 205,440 + 820,480; head 16,100
    assert n == 540 + 40 + 14_560 + 51_520 + 205_440 + 820_480 + 16_100
    assert sum(p.numel() for p in ReducedResNet18(6, 20).parameters()) == expected_n_params(20, 6)


def test_shapes_and_input_reshape():
    torch.manual_seed(0)
    net = ReducedResNet18(100, 20).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        feats = net.trunk(x)
        assert feats.shape == (3, 160)
        assert net(x).shape == (3, 100)
        assert torch.equal(net(x), net.linear(feats)) and net[0] is net.trunk and net[1] is net.linear
        assert torch.equal(net(x.reshape(3, -1)), net(x))  # flat inputs are reshaped to (B, 3, 32, 32)
        assert net(torch.randn(0, 3, 32, 32)).shape == (0, 100)
    with pytest.raises(ValueError, match="3 x 32 x 32"):
        net(torch.randn(2, 3, 64, 64))
    # stage shapes: 20 @ 32, 40 @ 16, 80 @ 8, 160 @ 4
    t = net.trunk
    out = F.relu(t.bn1(t.conv1(x)))
    for layer, (c, hw) in zip((t.layer1, t.layer2, t.layer3, t.layer4), ((20, 32), (40, 16), (80, 8), (160, 4))):
        out = layer(out)
        assert out.shape == (3, c, hw, hw)


def test_block_structure_and_forward_by_hand():
    torch.manual_seed(1)
    blk = ReducedBlock(4, 8, stride=2, dropout=0.5)
    assert isinstance(blk.shortcut[0], nn.Conv2d) and blk.shortcut[0].stride == (2, 2)
    assert blk.shortcut[0].bias is None and len(blk.shortcut) == 1  # 1x1 conv, no BN
    assert blk.conv1.bias is None and blk.conv1.stride == (2, 2)
    assert [type(m) for m in blk.post_conv] == [nn.BatchNorm2d, nn.Dropout] == [type(m) for m in blk.post_add]
    assert blk.post_conv[1].p == 0.5
    same = ReducedBlock(8, 8, stride=1)
    assert len(same.shortcut) == 0  # identity
    for bn in (blk.post_conv[0], blk.post_add[0]):  # non-trivial BN statistics
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-1, 1)
    blk.eval()
    x = torch.randn(2, 4, 6, 6)

    def bn(m, v):
        return (v - m.running_mean.view(1, -1, 1, 1)) / torch.sqrt(m.running_var.view(1, -1, 1, 1) + m.eps) \
            * m.weight.view(1, -1, 1, 1) + m.bias.view(1, -1, 1, 1)

    h = bn(blk.post_conv[0], F.relu(F.conv2d(x, blk.conv1.weight, stride=2, padding=1)))
    h = h + F.conv2d(x, blk.shortcut[0].weight, stride=2)
    want = bn(blk.post_add[0], F.relu(h))
    with torch.no_grad():
        assert torch.allclose(blk(x), want, atol=1e-5)


def test_conv2_unused_but_initialised_in_order():
    torch.manual_seed(0)
    net = ReducedResNet18(100, 20)
    # construction order = the draws of the global RNG: stem conv, then per block conv1, conv2, shortcut, ...
    torch.manual_seed(0)
    stem = nn.Conv2d(3, 20, 3, padding=1, bias=False)
    c1 = nn.Conv2d(20, 20, 3, padding=1, bias=False)
    c2 = nn.Conv2d(20, 20, 3, padding=1, bias=False)
    assert torch.equal(net.trunk.conv1.weight, stem.weight)
    assert torch.equal(net.trunk.layer1[0].conv1.weight, c1.weight)
    assert torch.equal(net.trunk.layer1[0].conv2.weight, c2.weight)
    # conv2 takes no part in the forward pass: no gradient
    net(torch.randn(2, 3, 32, 32)).sum().backward()
    for name, p in net.named_parameters():
        if name.endswith("conv2.weight"):
            assert p.grad is None, name
        else:
            assert p.grad is not None, name


def test_dropout_active_in_train_mode_only():
    torch.manual_seed(0)
    net = ReducedResNet18(10, 20, dropout=0.5)
    x = torch.randn(4, 3, 32, 32)
    net.eval()
    with torch.no_grad():
        assert torch.equal(net(x), net(x))
    net.train()
    with torch.no_grad():
        assert not torch.equal(net(x), net(x))
