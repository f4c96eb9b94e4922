"""Frozen-feature cache: which runs can use it, the values (the front's output rounded to float16), the bytes (those of
a plain batch-by-batch forward), determinism, the weights check, refused fronts, a failed build leaving nothing, the
heap setting of the build, and the stage CLI. Weights are local state-dict files saved here (no network)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torchvision import models

from augmem.data.feature_cache import (CachedFeatureDataset, assert_cacheable_front, build_feature_cache,
                                       build_front, compute_features, feature_cache_reason, front_digest,
                                       open_image_cache, reused_heap, weights_key)
from augmem.data.image_cache import CachedImageDataset, build_image_cache, normalise_uint8
from augmem.io import InputError

REPO = Path(__file__).resolve().parents[2]
SIZE = 48  # a 2x2 SqueezeNet feature map


def silent(_msg):
    pass


def write_dirmap(image_root: Path, path: Path) -> Path:
    """A dirmap listing every PNG under image_root."""
    paths = sorted(str(p.relative_to(image_root)) for p in image_root.rglob("*.png"))
    pd.DataFrame({"class": 1, "object": 1, "session": 1, "im_num": range(len(paths)), "im_path": paths}).to_csv(path)
    return path


def save_weights(path: Path, seed: int) -> Path:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.save(models.squeezenet1_0(weights=None).state_dict(), path)
    return path


@pytest.fixture
def caches(tiny_files, tmp_path):
    """(image_root, run_dir, image cache prefix, weights file, feature cache prefix)."""
    image_root, run_dir = tiny_files
    dirmap = write_dirmap(image_root, tmp_path / "dirmap.csv")
    build_image_cache(dirmap, "toybox", image_root, SIZE, tmp_path / "img", log=silent)
    weights = save_weights(tmp_path / "sq.pth", 0)
    build_feature_cache(tmp_path / "img", "squeezenet", str(weights), tmp_path / "feat", batch_size=16, log=silent)
    return image_root, run_dir, tmp_path / "img", weights, tmp_path / "feat"


def test_weights_key():
    assert weights_key("none") is None and weights_key(None) is None and weights_key("") is None
    assert weights_key("imagenet") == "imagenet"
    assert weights_key("data/weights/squeezenet1_0_demo.pth") == "squeezenet1_0_demo"
    assert weights_key("/x/my weights.v2.pt") == "my_weights_v2"


def test_which_runs_can_use_it():
    hp = {"freeze_feature_extract": True, "backbone": "squeezenet", "weights": "w.pth"}
    assert feature_cache_reason("AugMem", hp) is None
    assert feature_cache_reason("AugMem", {**hp, "backbone": "resnet18"}) is None  # the original's name for it
    assert feature_cache_reason("AugMem", {**hp, "weights": "imagenet"}) is None
    assert "random init" in feature_cache_reason("AugMem", {**hp, "weights": "none"})
    assert "not frozen" in feature_cache_reason("AugMem", {**hp, "freeze_feature_extract": False})
    assert "BatchNorm" in feature_cache_reason("AugMem", {**hp, "backbone": "mobilenet"})
    assert "whole network" in feature_cache_reason("NormalNN", hp)


def test_cache_plan_names_and_collisions():
    from augmem.data.cache_plan import (SQUEEZENET_NAMES, cache_input_files, cache_prefixes, cache_stage_args,
                                        weights_by_key)
    from augmem.models.backbones import ALIASES

    # the torch-free list of SqueezeNet names agrees with the backbone module
    assert set(SQUEEZENET_NAMES) == {a for a, name in ALIASES.items() if name == "squeezenet"}
    hp = {"image_size": 64, "image_cache": True, "feature_cache": True, "freeze_feature_extract": True,
          "weights": "data/weights/squeezenet1_0_demo.pth"}
    pre = cache_prefixes("data/interim/d/cache", "AugMem", hp)
    assert pre == {"image_cache": "data/interim/d/cache/images_64",
                   "feature_cache": "data/interim/d/cache/features_squeezenet_squeezenet1_0_demo_64"}
    assert cache_input_files(pre) == {
        "image_cache": "data/interim/d/cache/images_64.u8", "image_cache_json": "data/interim/d/cache/images_64.json",
        "feature_cache": "data/interim/d/cache/features_squeezenet_squeezenet1_0_demo_64.f16",
        "feature_cache_json": "data/interim/d/cache/features_squeezenet_squeezenet1_0_demo_64.json"}
    assert cache_stage_args(pre) == ["--image-cache", pre["image_cache"], "--feature-cache", pre["feature_cache"]]
    assert cache_prefixes("c", "NormalNN", hp) == {"image_cache": "c/images_64"}
    assert cache_prefixes("c", "AugMem", {**hp, "weights": "none"}) == {"image_cache": "c/images_64"}
    assert cache_prefixes("c", "AugMem", {**hp, "image_cache": False, "weights": "imagenet"}) == {
        "feature_cache": "c/features_squeezenet_imagenet_64"}
    assert cache_prefixes("c", "AugMem", {"weights": "imagenet"}) == {}  # both off unless asked for
    assert weights_by_key(["none", "imagenet", "a/w.pth", "a/w.pth"], "x/sq_imagenet.pth") == {
        "imagenet": "x/sq_imagenet.pth", "w": "a/w.pth"}
    with pytest.raises(InputError, match="same cache key 'w'"):
        weights_by_key(["a/w.pth", "b/w.pth"], "x/sq_imagenet.pth")
    with pytest.raises(InputError, match="same cache key 'imagenet'"):
        weights_by_key(["b/imagenet.pth"], "x/sq_imagenet.pth")


def test_features_are_the_front_output_in_float16(caches):
    image_root, run_dir, img, weights, feat = caches
    meta = json.loads(Path(f"{feat}.json").read_text())
    assert meta["shape"] == [72, 512, 2, 2] and meta["dtype"] == "float16" and meta["size"] == SIZE
    assert meta["weights_key"] == "sq" and meta["backbone"] == "squeezenet"
    assert Path(f"{feat}.f16").stat().st_size == 72 * 512 * 2 * 2 * 2
    front = build_front("squeezenet", str(weights))
    assert meta["front_digest"] == front_digest(front)
    fl = run_dir / "stream" / "test_filelist.txt"
    pixels = CachedImageDataset(fl, img)
    ds = CachedFeatureDataset(fl, feat, pixel_dataset=pixels)
    assert len(ds) == 24 and ds.targets == pixels.targets
    x = torch.stack([pixels[i][0] for i in range(len(ds))])
    with torch.no_grad():
        want = front(x)
    got = torch.stack([ds[i][0] for i in range(len(ds))])
    assert got.dtype == torch.float32 and got.shape == (24, 512, 2, 2)
    # the float32 output rounded to float16: within half a float16 step (2**-11 relative), up to float32 noise from
    # another batch composition (the cache was computed in batches of 16 in cache order)
    assert ((got - want).abs() <= want.abs() * (2**-11 + 1e-5) + 2e-5).all()
    assert (got == want.half().float()).float().mean() > 0.99
    assert torch.equal(ds.pixel_item(3), pixels[3][0])
    batch = ds.__getitems__([2, 9])
    assert torch.equal(batch[1][0], got[9]) and batch[1][1] == ds.targets[9]


def test_deterministic(caches, tmp_path):
    _, _, img, weights, feat = caches
    build_feature_cache(img, "squeezenet", str(weights), tmp_path / "again", batch_size=16, log=silent)
    assert Path(f"{feat}.f16").read_bytes() == (tmp_path / "again.f16").read_bytes()
    a = json.loads(Path(f"{feat}.json").read_text())
    b = json.loads((tmp_path / "again.json").read_text())
    assert a == b


def plain_batchwise_bytes(img, weights: Path, batch_size: int) -> bytes:
    """The cache's bytes as the simplest code computes them: each fixed batch of the image cache through the front
    under ``torch.no_grad``, rounded to float16, concatenated in row order."""
    front = build_front("squeezenet", str(weights))
    _, images = open_image_cache(img)
    parts = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = normalise_uint8(np.array(images[start : start + batch_size]))
            parts.append(front(x).to(torch.float16).numpy().tobytes())
    return b"".join(parts)


@pytest.mark.parametrize("batch_size", [16, 5, 100])  # the fixture's 16; a ragged last batch; one short batch
def test_bytes_are_those_of_a_plain_batchwise_forward(caches, tmp_path, batch_size):
    _, _, img, weights, feat = caches
    out = feat if batch_size == 16 else tmp_path / f"b{batch_size}"
    if batch_size != 16:
        build_feature_cache(img, "squeezenet", str(weights), out, batch_size=batch_size, log=silent)
    got = Path(f"{out}.f16").read_bytes()
    assert got == plain_batchwise_bytes(img, weights, batch_size)
    # the in-memory variant (any array as output) fills the same values
    front = build_front("squeezenet", str(weights))
    _, images = open_image_cache(img)
    arr = np.zeros((72, 512, 2, 2), np.float16)
    compute_features(front, images, arr, batch_size=batch_size, log=silent)
    assert arr.tobytes() == got
    meta = json.loads(Path(f"{out}.json").read_text())
    assert meta["batch_size"] == batch_size and meta["shape"] == [72, 512, 2, 2]


def test_failed_build_leaves_nothing(caches, tmp_path):
    """Features that overflow float16 (weights scaled up) stop the build after the first batch: no output, no
    temporary, an existing cache at that path left as it was."""
    _, _, img, weights, feat = caches
    sd = torch.load(weights)
    big = tmp_path / "big.pth"
    torch.save({k: v * 20 if k.endswith("weight") else v for k, v in sd.items()}, big)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(InputError, match=r"rows 0\.\.15 overflow float16"):
        build_feature_cache(img, "squeezenet", str(big), tmp_path / "bad", batch_size=16, log=silent)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    old = Path(f"{feat}.f16").read_bytes()
    with pytest.raises(InputError, match="overflow float16"):
        build_feature_cache(img, "squeezenet", str(big), feat, batch_size=16, log=silent)
    assert Path(f"{feat}.f16").read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_reused_heap_is_scoped():
    """The heap setting applies inside the block only (on glibc), also when the block raises; large allocations
    inside and after it work."""
    with reused_heap() as applied:
        assert applied in (True, False)
        x = torch.ones(16, 2**20)  # 64 MB: above glibc's largest mmap threshold
        assert float(x.sum()) == 16 * 2**20
        del x
    with pytest.raises(RuntimeError, match="inside"):
        with reused_heap():
            raise RuntimeError("inside")
    y = torch.ones(16, 2**20)
    assert float(y.sum()) == 16 * 2**20


def test_building_leaves_the_global_rng_alone(caches, tmp_path):
    _, _, img, weights, _ = caches
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    build_feature_cache(img, "squeezenet", str(weights), tmp_path / "f2", batch_size=16, log=silent)
    assert torch.equal(torch.rand(3), expected)


def test_weights_check(caches, tmp_path):
    _, run_dir, _, weights, feat = caches
    fl = run_dir / "stream" / "test_filelist.txt"
    ds = CachedFeatureDataset(fl, feat)
    ds.check_matches(build_front("squeezenet", str(weights)), SIZE)
    other = build_front("squeezenet", str(save_weights(tmp_path / "other.pth", 1)))
    with pytest.raises(InputError, match="other front weights"):
        ds.check_matches(other, SIZE)
    with pytest.raises(InputError, match="the run uses image_size 64"):
        ds.check_matches(build_front("squeezenet", str(weights)), 64)


def test_refused_fronts_and_weights(caches, tmp_path):
    _, _, img, _, _ = caches
    with pytest.raises(InputError, match="weights 'none'"):
        build_feature_cache(img, "squeezenet", "none", tmp_path / "x", log=silent)
    mobilenet = tmp_path / "mb.pth"
    torch.save(models.mobilenet_v2(weights=None).state_dict(), mobilenet)
    with pytest.raises(InputError, match="BatchNorm"):
        build_feature_cache(img, "mobilenet", str(mobilenet), tmp_path / "x", log=silent)
    assert not (tmp_path / "x.f16").exists() and not (tmp_path / "x.json").exists()
    # SqueezeNet's front is a fixed function: no BatchNorm, no dropout (train mode = eval mode)
    assert_cacheable_front(build_front("squeezenet", "none"))
    with pytest.raises(InputError, match=r"weights file not found"):
        build_feature_cache(img, "squeezenet", str(tmp_path / "missing.pth"), tmp_path / "x", log=silent)


def test_stage_cli(caches, tmp_path):
    _, _, img, weights, feat = caches
    res = subprocess.run([sys.executable, "-m", "stages.feature_cache", "--help"], capture_output=True, text=True,
                         cwd=REPO)
    assert res.returncode == 0 and "--weights" in res.stdout and "--image-cache" in res.stdout
    from stages import feature_cache as stage

    out = tmp_path / "s" / "features_squeezenet_sq_48"
    assert stage.main(["--image-cache", str(img), "--weights", str(weights), "--out-prefix", str(out),
                       "--device", "cpu", "--batch-size", "16"]) == 0
    assert Path(f"{out}.f16").read_bytes() == Path(f"{feat}.f16").read_bytes()
    with pytest.raises(SystemExit, match=r"^error: weights 'none'"):
        stage.main(["--image-cache", str(img), "--weights", "none", "--out-prefix", str(out), "--device", "cpu"])
    with pytest.raises(SystemExit, match=r"^error: .*nope\.json: cache description not found"):
        stage.main(["--image-cache", str(tmp_path / "nope"), "--weights", str(weights), "--out-prefix", str(out),
                    "--device", "cpu"])
