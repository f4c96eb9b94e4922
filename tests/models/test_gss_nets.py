"""The GSS adapted code's own networks (spec 14.2 q10): MLP 3072-100-100-C (Xavier-uniform, zero biases) and the
ResNet-18 of width 20 (conv-BN-ReLU-conv-BN blocks, 1x1 conv + BN shortcuts, avg_pool2d(4), Linear(160, C))."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from augmem.models.gss_nets import BasicBlock, GSSMLP, GSSResNet18, build_gss_network

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_mlp_layers_xavier_bounds_and_zero_biases():
    torch.manual_seed(0)
    net = GSSMLP(10)
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(3072, 100), (100, 100), (100, 10)]
    assert [type(m) for m in net.front] == [nn.Flatten, nn.Linear, nn.ReLU, nn.Linear, nn.ReLU]
    assert net.linear is linears[-1]
    for m in linears:
        bound = math.sqrt(3) * math.sqrt(2 / (m.in_features + m.out_features))
        w = m.weight.detach()
        assert float(w.abs().max()) <= bound
        # uniform on [-bound, bound]: the largest draw comes close to the bound, the std is bound / sqrt(3)
        assert float(w.abs().max()) > 0.95 * bound
        assert float(w.std()) == pytest.approx(bound / math.sqrt(3), rel=0.1)
        assert torch.equal(m.bias.detach(), torch.zeros_like(m.bias))
    assert sum(p.numel() for p in net.parameters()) == 3072 * 100 + 100 + 100 * 100 + 100 + 100 * 10 + 10


def test_mlp_forward_is_the_two_relu_layers():
    torch.manual_seed(0)
    net = GSSMLP(3)
    x = torch.randn(2, 3, 32, 32)
    l1, l2 = net.front[1], net.front[3]
    h = F.relu(l2(F.relu(l1(x.reshape(2, -1)))))
    assert torch.allclose(net(x), net.linear(h))


def expected_n_params(nf: int, n_out: int) -> int:
    """By hand: bias-free convs, BN = 2 * channels, the shortcut 1x1 conv + BN where the shape changes."""
    def block(c_in, c_out, stride):
        n = c_in * c_out * 9 + c_out * c_out * 9 + 2 * (2 * c_out)
        if stride != 1 or c_in != c_out:
            n += c_in * c_out + 2 * c_out
        return n

    total = 3 * nf * 9 + 2 * nf
    c_in = nf
    for k, stride in enumerate((1, 2, 2, 2)):
        c_out = nf * 2**k
        total += block(c_in, c_out, stride) + block(c_out, c_out, 1)
        c_in = c_out
    return total + 8 * nf * n_out + n_out


def test_resnet_shapes_and_parameter_count():
    torch.manual_seed(0)
    net = GSSResNet18(12)
    assert sum(p.numel() for p in net.parameters()) == expected_n_params(20, 12)
    assert (net.linear.in_features, net.linear.out_features) == (160, 12)
    widths = [net.front.layer1[0].conv1.out_channels, net.front.layer2[0].conv1.out_channels,
              net.front.layer3[0].conv1.out_channels, net.front.layer4[0].conv1.out_channels]
    assert widths == [20, 40, 80, 160]
    assert net.front.conv1.kernel_size == (3, 3) and net.front.conv1.out_channels == 20
    # shortcuts: identity in layer1, 1x1 conv + BN at the first block of the later stages
    assert len(net.front.layer1[0].shortcut) == 0 and len(net.front.layer2[1].shortcut) == 0
    sc = net.front.layer2[0].shortcut
    assert isinstance(sc[0], nn.Conv2d) and sc[0].kernel_size == (1, 1) and sc[0].stride == (2, 2)
    assert isinstance(sc[1], nn.BatchNorm2d)
    net.eval()
    x = torch.randn(2, 3, 32, 32)
    assert net.front(x).shape == (2, 160) and net(x).shape == (2, 12)
    assert net(x.reshape(2, -1)).shape == (2, 12)  # the adapted code's view(bsz, 3, 32, 32) of flat inputs


def test_block_is_conv_bn_relu_conv_bn_plus_shortcut_then_relu():
    torch.manual_seed(0)
    b = BasicBlock(4, 6, stride=2).eval()
    x = torch.randn(2, 4, 8, 8)
    out = F.relu(b.bn2(b.conv2(F.relu(b.bn1(b.conv1(x))))) + b.shortcut[1](b.shortcut[0](x)))
    assert torch.allclose(b(x), out)
    same = BasicBlock(4, 4).eval()
    assert torch.allclose(same(x), F.relu(same.bn2(same.conv2(F.relu(same.bn1(same.conv1(x))))) + x))


def test_stem_and_pooling():
    torch.manual_seed(0)
    net = GSSResNet18(3).eval()
    x = torch.randn(1, 3, 32, 32)
    f = net.front
    out = F.relu(f.bn1(f.conv1(x)))
    out = f.layer4(f.layer3(f.layer2(f.layer1(out))))
    assert out.shape == (1, 160, 4, 4)
    assert torch.allclose(net(x), net.linear(F.avg_pool2d(out, 4).flatten(1)))


def test_build_by_name():
    assert isinstance(build_gss_network("mlp", 4), GSSMLP)
    assert isinstance(build_gss_network("resnet", 4), GSSResNet18)
    with pytest.raises(ValueError, match="unknown GSS backbone"):
        build_gss_network("squeezenet", 4)
