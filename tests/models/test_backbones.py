"""Backbones: cut points and shapes (spec 6.4, 7), weights 'none', local weights files and their errors."""
from __future__ import annotations

import pytest
import torch
from torchvision import models as tvm

from augmem.io import InputError
from augmem.models import build_backbone


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("name, alias, channels, hw", [("squeezenet", "ResNet18", 512, 13),
                                                        ("mobilenet", "MobileNetV2", 64, 14)])
def test_cut_shapes_at_224(name, alias, channels, hw):
    bb = build_backbone(alias, 5, "none")
    assert bb.name == name and bb.channels == channels
    bb.front.eval(), bb.back.eval()
    with torch.no_grad():
        e = bb.front(torch.randn(1, 3, 224, 224))
        assert e.shape == (1, channels, hw, hw)
        logits = bb.back(e)
    assert logits.shape == (1, 5)


def test_squeezenet_logits_post_relu_and_full_equals_parts():
    bb = build_backbone("squeezenet", 4, "none")
    net = bb.full().eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        out = net(x)
        assert torch.equal(out, bb.back(bb.front(x)))
    assert out.shape == (3, 4) and (out >= 0).all()  # the original's head ends in ReLU + average pool


@pytest.mark.parametrize("name, size, hw", [("squeezenet", 32, 1), ("squeezenet", 64, 3), ("mobilenet", 32, 2),
                                            ("mobilenet", 64, 4)])
def test_small_inputs_give_smaller_maps(name, size, hw):
    bb = build_backbone(name, 3, "none")
    bb.front.eval(), bb.back.eval()
    with torch.no_grad():
        e = bb.front(torch.randn(2, 3, size, size))
        assert e.shape[2:] == (hw, hw)
        assert bb.back(e).shape == (2, 3)


def test_unknown_backbone():
    with pytest.raises(InputError, match="unknown backbone 'vgg'"):
        build_backbone("vgg", 3, "none")


def test_local_weights_round_trip(tmp_path):
    torch.manual_seed(1)
    src = tvm.squeezenet1_0(weights=None)
    path = tmp_path / "squeeze.pth"
    torch.save(src.state_dict(), path)
    bb = build_backbone("squeezenet", 4, str(path))
    for k, v in bb.front.state_dict().items():  # the front is features[:12]: same tensors as the file
        assert torch.equal(v, src.features.state_dict()[k])
    assert bb.back[1][1].out_channels == 4  # the new head replaces the ImageNet one
    # a {"state_dict": ...} wrapper works too
    torch.save({"state_dict": src.state_dict()}, tmp_path / "wrapped.pth")
    bb2 = build_backbone("squeezenet", 4, str(tmp_path / "wrapped.pth"))
    assert torch.equal(bb2.front[0].weight, src.features[0].weight)


def test_missing_weights_file(tmp_path):
    with pytest.raises(InputError, match="nothere.pth: weights file not found"):
        build_backbone("squeezenet", 4, str(tmp_path / "nothere.pth"))


def test_mismatched_weights_file(tmp_path):
    path = tmp_path / "mobilenet.pth"
    torch.save(tvm.mobilenet_v2(weights=None).state_dict(), path)
    with pytest.raises(InputError, match="mobilenet.pth: weights do not match torchvision squeezenet"):
        build_backbone("squeezenet", 4, str(path))


def test_unreadable_weights_file(tmp_path):
    path = tmp_path / "garbage.pth"
    path.write_bytes(b"\x00\x01 not a torch file")
    with pytest.raises(InputError, match="garbage.pth: cannot be loaded"):
        build_backbone("squeezenet", 4, str(path))


def test_registry_records():
    from augmem.models.backbones import ALIASES, BACKBONES, imagenet_weights_file

    assert set(BACKBONES) == {"squeezenet", "mobilenet", "efficientnet_lite0"}
    assert ALIASES["resnet18"] == "squeezenet" and ALIASES["mobilenetv2"] == "mobilenet"
    assert imagenet_weights_file("resnet18") == "data/weights/squeezenet1_0_imagenet.pth"
    assert imagenet_weights_file("mobilenet") == "data/weights/mobilenet_v2_imagenet.pth"
    from augmem.data.cache_plan import SQUEEZENET_NAMES

    cacheable = {a for a, n in ALIASES.items() if BACKBONES[n].frozen_front_is_fixed}
    assert set(SQUEEZENET_NAMES) == cacheable


def test_imagenet_from_a_local_file(tmp_path):
    """Weights 'imagenet' load the fetched file the job was given, never the network."""
    from augmem.models.backbones import use_local_imagenet_weights

    torch.manual_seed(3)
    ref = tvm.squeezenet1_0(weights=None)
    path = tmp_path / "squeezenet1_0_imagenet.pth"
    torch.save(ref.state_dict(), path)
    use_local_imagenet_weights("resnet18", str(path))
    try:
        bb = build_backbone("squeezenet", 4, "imagenet")
    finally:
        use_local_imagenet_weights("squeezenet", None)
    for (k, v), w in zip(bb.front.state_dict().items(), ref.features[:12].state_dict().values()):
        assert torch.equal(v, w), k
