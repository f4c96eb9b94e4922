"""Training on the caches: the decoded-image cache gives exactly the pixel path's numbers; AugMem on cached front
features gives the pixel path's numbers up to the float16 storage of the features (exactly when the pixel path's
front output is rounded to float16 too, within a tolerance otherwise); fallbacks, the stage options, GPU options.

Tolerance of the feature cache (README): |delta accuracy| <= 2 percentage points for every task and output path on
the tiny stream (120 test images), with identical storage shapes.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torchvision import models

from augmem.agents import get_agent_class
from augmem.agents.normal_nn import NormalNN
from augmem.data.feature_cache import build_feature_cache
from augmem.data.image_cache import build_image_cache
from augmem.io import InputError
from augmem.train.fidelity import train_switches
from augmem.train.loop import run_stream
from augmem.train.seeding import seed_everything

from conftest import tiny_arrays  # tests/conftest.py (tests/ is on sys.path: it has no __init__.py)

TOLERANCE_IMAGES = 2  # pixels vs float16 front features: at most this many test images classified differently
SEEDS = (1, 2)  # AugMem runs of the feature-cache comparison (seeds that learn task 0; see augmem_runs)
NN_HP = {"optimizer": "SGD", "lr": 0.01, "momentum": 0.9, "weight_decay": 0.0, "batch_size": 8, "n_epoch": 1,
         "n_epoch_first_task": 2, "weights": "none", "image_size": 32, "n_workers": 0}
AUG_HP = {"optimizer": "SGD", "lr": 0.001, "momentum": 0.9, "weight_decay": 0.0, "batch_size": 4, "n_epoch": 2,
          "n_epoch_first_task": 5, "image_size": 64, "n_workers": 0, "memory_Nslots": 10, "memory_Nfeat": 8,
          "memory_size": 20, "freeze_feature_extract": True, "visualize": True, "viz_per_class": 3,
          "viz_images_per_class": 2, "allow_small_map": True}  # some tests run it at 32 px (a 1x1 map)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def write_stream(root: Path, n_test: int = 30) -> tuple[Path, Path, Path]:
    """The conftest's tiny stream with ``n_test`` test images per class: (image_root, run_dir, dirmap)."""
    train, (tx, ty) = tiny_arrays(n_test=n_test)
    image_root, run_dir = root / "images", root / "run0"
    stream = run_dir / "stream"
    stream.mkdir(parents=True)
    rows, listed = [], []

    def save(rel, im):
        (image_root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(im).save(image_root / rel)
        listed.append(rel)

    for t, (ims, ys) in enumerate(train):
        lines = []
        for i, (im, y) in enumerate(zip(ims, ys)):
            rel = f"train/c{y}/t{t}_{i:03d}.png"
            save(rel, im)
            lines.append(f"{rel} {y}")
            rows.append({"task": t, "label": int(y)})
        (stream / f"train_task_{t:02d}_filelist.txt").write_text("\n".join(lines) + "\n")
    lines = []
    for i, (im, y) in enumerate(zip(tx, ty)):
        rel = f"test/c{y}/{i:03d}.png"
        save(rel, im)
        lines.append(f"{rel} {y}")
    (stream / "test_filelist.txt").write_text("\n".join(lines) + "\n")
    pd.DataFrame(rows).to_csv(stream / "train_all.txt")
    dirmap = root / "dirmap.csv"
    pd.DataFrame({"class": 1, "object": 1, "session": 1, "im_num": range(len(listed)),
                  "im_path": listed}).to_csv(dirmap)
    return image_root, run_dir, dirmap


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The stream on disk, image caches at 32 and 64, a local SqueezeNet weights file and its feature caches."""
    root = tmp_path_factory.mktemp("cached")
    image_root, run_dir, dirmap = write_stream(root)
    quiet = lambda m: None  # noqa: E731
    for size in (32, 64):
        build_image_cache(dirmap, "toybox", image_root, size, root / f"images_{size}", log=quiet)
    weights = root / "squeezenet_local.pth"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        torch.save(models.squeezenet1_0(weights=None).state_dict(), weights)
    for size in (32, 64):
        build_feature_cache(root / f"images_{size}", "squeezenet", str(weights), root / f"features_{size}",
                            log=quiet)
    return {"root": root, "image_root": image_root, "run_dir": run_dir, "weights": str(weights)}


class RoundedFront(torch.nn.Module):
    """The front with its output rounded to float16, as the feature cache stores it."""

    def __init__(self, front):
        super().__init__()
        self.front = front

    def forward(self, x):
        return self.front(x).half().float()


def run(data, cls, hp, out, seed=0, logs=None, rounded_front=False, **caches):
    sw = train_switches("reference")
    seed_everything(seed)
    agent = cls(4, hp, sw, "cpu")
    if rounded_front:
        agent.model.front = RoundedFront(agent.model.front)
    m = run_stream(agent, data["run_dir"], data["image_root"], out, hp=hp, switches=sw, meta={"run": 0}, seed=seed,
                   log=(logs.append if logs is not None else (lambda m: None)), **caches)
    return m, agent


def comparable(m: dict) -> dict:
    """metrics without what legitimately differs between input paths: timings, meta.inputs and (for the float16
    front features) the fingerprint."""
    m = json.loads(json.dumps(m))
    m.pop("timing")
    m["meta"].pop("inputs")
    m["meta"].pop("fingerprint")
    return m


# ---------------------------------------------------------------------------------------------- decoded cache
@pytest.mark.parametrize("workers", [0, 1])
def test_normal_nn_decoded_cache_gives_identical_metrics(data, tmp_path, workers):
    hp = {**NN_HP, "visualize": True, "viz_per_class": 4, "n_workers": workers}
    pix, _ = run(data, NormalNN, hp, tmp_path / "pix")
    cached, _ = run(data, NormalNN, hp, tmp_path / "cache", image_cache=data["root"] / "images_32")
    assert pix["meta"]["inputs"] == "pixels" and cached["meta"]["inputs"] == "decoded_cache"
    assert comparable(cached) == comparable(pix)
    # the decoded-image cache and n_workers are execution-only: the same job fingerprint (nothing reruns)
    assert cached["meta"]["fingerprint"] == pix["meta"]["fingerprint"]
    a, b = np.load(tmp_path / "pix" / "viz.npz"), np.load(tmp_path / "cache" / "viz.npz")
    assert a.files == b.files and all(np.array_equal(a[k], b[k]) for k in a.files)
    assert a["task1_logits"].std() > 0  # the (bit-identical) network outputs are not degenerate


# ---------------------------------------------------------------------------------------------- feature cache
@pytest.fixture(scope="module")
def augmem_runs(data, tmp_path_factory):
    """AugMem with the local weights file at 64x64: pixels, front features, and pixels with the front's output
    rounded to float16; seeds 1 and 2. At this size about a third of the seeds never learn task 0 (50 %: chance);
    the comparisons need two that do (seed 0 stopped doing so when the loaders stopped drawing from the global RNG,
    which shifted the dropout masks)."""
    out = tmp_path_factory.mktemp("augmem_runs")
    cls = get_agent_class("AugMem")
    hp = {**AUG_HP, "weights": data["weights"]}
    feats = {"image_cache": data["root"] / "images_64", "feature_cache": data["root"] / "features_64"}
    runs = {}
    for seed in SEEDS:
        runs["pixels", seed] = run(data, cls, hp, out / f"pix{seed}", seed=seed)
        runs["features", seed] = run(data, cls, hp, out / f"feat{seed}", seed=seed, **feats)
    runs["rounded", SEEDS[0]] = run(data, cls, hp, out / "rounded", seed=SEEDS[0], rounded_front=True)
    return out, runs


def test_augmem_feature_cache_equals_pixels_with_float16_front(augmem_runs):
    """Training on cached features is the pixel computation with the front's output stored as float16."""
    out, runs = augmem_runs
    (feat, fa), (rounded, ra) = runs["features", SEEDS[0]], runs["rounded", SEEDS[0]]
    assert feat["meta"]["inputs"] == "front_features" and rounded["meta"]["inputs"] == "pixels"
    assert comparable(feat) == comparable(rounded)
    # the cache's features were computed in other batches than the training batches, so a few float32 roundings
    # (1e-6 relative) differ before the float16 rounding: the weights agree closely, the metrics exactly
    torch.testing.assert_close(fa.model.memory, ra.model.memory, rtol=1e-3, atol=1e-3)
    assert sorted(fa.storage_idx) == sorted(ra.storage_idx)
    for c in fa.storage_idx:
        assert (fa.storage_idx[c] == ra.storage_idx[c]).float().mean() > 0.99
    a, b = np.load(out / f"feat{SEEDS[0]}" / "viz.npz"), np.load(out / "rounded" / "viz.npz")
    assert a.files == b.files
    for k in a.files:
        if k.endswith(("_logits", "_memory")):
            np.testing.assert_allclose(a[k], b[k], rtol=0.02, atol=0.02)
        elif k.endswith("_top_slots"):
            assert (a[k] == b[k]).mean() > 0.99
        elif k.endswith("_slot_usage"):  # the same number of stored indices, (almost) all in the same slots
            assert np.array_equal(a[k].sum(1), b[k].sum(1)) and np.abs(a[k] - b[k]).sum() <= 0.01 * a[k].sum()
        else:
            assert np.array_equal(a[k], b[k]), k
    # viz.npz still shows the images behind the features
    assert a["task1_images"].shape == (8, 3, 64, 64) and a["task1_images"].dtype == np.uint8


@pytest.mark.parametrize("seed", SEEDS)
def test_augmem_feature_cache_within_tolerance_of_pixels(augmem_runs, seed):
    _, runs = augmem_runs
    (pix, pa), (feat, fa) = runs["pixels", seed], runs["features", seed]
    assert pix["test_all"]["mem"][0] >= 80.0  # the first task is learnt: the comparison means something
    per_class = pix["n_test"] // 4
    n_images = {"test_all": [per_class * len(t["active"]) for t in pix["tasks"]],
                "test_first": [per_class * len(pix["tasks"][0]["labels"])] * len(pix["tasks"])}
    for key in ("test_all", "test_first"):
        for path in ("mem", "direct"):
            for p, f, n in zip(pix[key][path], feat[key][path], n_images[key]):
                assert abs(p - f) / 100 * n <= TOLERANCE_IMAGES + 1e-9, (key, path, pix[key][path], feat[key][path])
    # identical storage shapes and bytes
    assert pix["memory_bytes"] == feat["memory_bytes"] and pix["memory_bytes_total"] > 0
    assert sorted(pa.storage_idx) == sorted(fa.storage_idx)
    for c in pa.storage_idx:
        assert pa.storage_idx[c].shape == fa.storage_idx[c].shape and pa.storage_idx[c].dtype == fa.storage_idx[c].dtype
        assert pa.storage_logits[c].shape == fa.storage_logits[c].shape
    assert [t["n_train"] for t in pix["tasks"]] == [t["n_train"] for t in feat["tasks"]]


def test_feature_cache_fallbacks_and_checks(data, tmp_path):
    cls = get_agent_class("AugMem")
    small = {**AUG_HP, "image_size": 32, "n_epoch_first_task": None, "n_epoch": 1, "visualize": False}
    caches = {"image_cache": data["root"] / "images_32", "feature_cache": data["root"] / "features_32"}
    # weights 'none': the front is the job's own random init -> decoded-image cache, said in the log
    logs = []
    m, agent = run(data, cls, {**small, "weights": "none"}, tmp_path / "none", logs=logs, **caches)
    assert m["meta"]["inputs"] == "decoded_cache" and not getattr(agent, "_inputs_are_features", False)
    assert any("not used" in line and "weights 'none'" in line for line in logs), logs
    # an agent without a frozen front (NormalNN) and an unfrozen AugMem: no features either
    logs = []
    m, _ = run(data, NormalNN, {**NN_HP, "weights": data["weights"]}, tmp_path / "nn", logs=logs, **caches)
    assert m["meta"]["inputs"] == "decoded_cache" and any("not used" in line for line in logs)
    m, _ = run(data, cls, {**small, "weights": data["weights"], "freeze_feature_extract": False}, tmp_path / "unfr",
               feature_cache=caches["feature_cache"])
    assert m["meta"]["inputs"] == "pixels"
    # features of other weights or another image size are refused
    other = tmp_path / "other.pth"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        torch.save(models.squeezenet1_0(weights=None).state_dict(), other)
    with pytest.raises(InputError, match="other front weights"):
        run(data, cls, {**small, "weights": str(other)}, tmp_path / "other", **caches)
    with pytest.raises(InputError, match="the run uses image_size 32"):
        run(data, cls, {**small, "weights": data["weights"]}, tmp_path / "size",
            feature_cache=data["root"] / "features_64")
    with pytest.raises(InputError, match="cached at 64x64, the run uses image_size 32"):
        run(data, NormalNN, NN_HP, tmp_path / "size2", image_cache=data["root"] / "images_64")


def test_gpu_options_are_off_on_cpu(data, tmp_path):
    logs = []
    base, _ = run(data, NormalNN, NN_HP, tmp_path / "base")
    opt, agent = run(data, NormalNN, {**NN_HP, "amp": True, "channels_last": True}, tmp_path / "opt", logs=logs)
    assert opt["test_all"] == base["test_all"] and opt["acc_matrix"] == base["acc_matrix"]
    assert "amp requested but the device is cpu: off (CUDA only)" in logs
    assert "channels_last requested but the device is cpu: off (CUDA only)" in logs
    assert agent.model[0][0].weight.is_contiguous()  # not converted to channels_last


@pytest.mark.parametrize("impl", ["AugMem", "iCaRL"])
def test_amp_hooks_autocast_the_network_only(data, tmp_path, impl):
    """The amp mechanism (bf16 autocast of front and back by forward hooks; CUDA only in runs), exercised with CPU
    autocast: convolutions run in bf16, module outputs and losses stay float32 (AugMem's and iCaRL's BCE are banned
    under CUDA autocast), iCaRL's deep copy of the model keeps working, and the run completes."""
    from augmem.train.loop import autocast_modules

    hp = {**AUG_HP, "image_size": 32, "n_epoch_first_task": None, "n_epoch": 1, "visualize": False,
          "weights": "none", "batch_size": 8, "memory_size": 8}
    if impl != "AugMem":  # AugMem's memory shape is no iCaRL hyperparameter
        hp = {k: v for k, v in hp.items() if k not in ("memory_Nslots", "memory_Nfeat", "allow_small_map")}
    sw = train_switches("corrected")
    seed_everything(0)
    agent = get_agent_class(impl)(4, hp, sw, "cpu")
    autocast_modules([agent.model[0], agent.model[1]], "cpu")
    seen = []
    first_conv = next(m for m in agent.model[0].modules() if isinstance(m, torch.nn.Conv2d))
    first_conv.register_forward_hook(lambda m, a, out: seen.append(out.dtype))
    x = torch.randn(2, 3, 32, 32)
    out = agent.model[1](agent.model[0](x))
    assert seen == [torch.bfloat16] and out.dtype == torch.float32
    assert not torch.is_autocast_enabled("cpu")  # the context ends with the module's forward
    m = run_stream(agent, data["run_dir"], data["image_root"], tmp_path / "o", hp=hp, switches=sw, meta={}, seed=0,
                   log=lambda msg: None)
    assert all(0 <= v <= 100 for v in m["test_all"][agent.primary_path])


def test_stage_options(data, tmp_path, capsys):
    from stages import train as stage

    def args(out, hp, *extra):
        return ["--dataset", "tiny", "--scenario", "class_iid", "--agent", "augmem", "--run", "0",
                "--fidelity", "reference", "--filelists", str(data["run_dir"]), "--image-root",
                str(data["image_root"]), "--out", str(out), "--threads", "1", "--device", "cpu",
                "--hparams", json.dumps({"impl": "AugMem", "n_class": 4, "kind": "tiny", **hp}), *extra]

    hp = {**AUG_HP, "image_size": 32, "n_epoch_first_task": None, "n_epoch": 1, "visualize": False,
          "weights": data["weights"], "feature_cache": True}
    root = data["root"]
    assert stage.main(args(tmp_path / "f", hp, "--image-cache", str(root / "images_32"),
                           "--feature-cache", str(root / "features_32"))) == 0
    assert json.loads((tmp_path / "f" / "metrics.json").read_text())["meta"]["inputs"] == "front_features"
    assert stage.main(args(tmp_path / "i", hp, "--image-cache", str(root / "images_32"))) == 0
    assert json.loads((tmp_path / "i" / "metrics.json").read_text())["meta"]["inputs"] == "decoded_cache"
    capsys.readouterr()
    assert stage.main(args(tmp_path / "n", {**hp, "weights": "none"})) == 0
    assert "feature cache not possible: weights 'none'" in capsys.readouterr().out
    assert json.loads((tmp_path / "n" / "metrics.json").read_text())["meta"]["inputs"] == "pixels"
    with pytest.raises(SystemExit, match=r"^error: .*nope\.json: cache description not found"):
        stage.main(args(tmp_path / "x", hp, "--image-cache", str(root / "nope")))
