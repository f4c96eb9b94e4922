"""Tests of the embedded demo data (augmem.data.demo, stages.demo_data): layouts, determinism, edge cases, looks."""
from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from augmem.data import demo
from augmem.io import MARKER, InputError, output_owner

REPO = Path(__file__).resolve().parents[2]

TOYBOX_RE = re.compile(r"(household|animals|vehicles)/([a-z]+)_(\d\d)_pivothead/\2_\3_pivothead_"
                       r"(rxplus|ryplus|rzplus|rxminus|ryminus|rzminus|tx|ty|tz|hodgepodge|present|absent)\.mp4")
ILAB_RE = re.compile(r"train_img/([a-z0-9]+)-i(\d+)-b(\d+)-c(\d+)-r(\d+)-l(\d+)-f2\.jpg")
CORE50_RE = re.compile(r"core50_128x128/s(\d+)/o(\d+)/C_(\d\d)_(\d\d)_(\d\d\d)\.png")
CIFAR_RE = re.compile(r"(train|test)/([a-z_]+)/(\d{4})\.png")


def _files(root: Path) -> list[str]:
    """Every file of a demo folder except the output marker (checked by test_demo_folders_carry_the_marker)."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.name != MARKER)


def _digests(root: Path) -> dict[str, str]:
    return {rel: hashlib.sha256((root / rel).read_bytes()).hexdigest() for rel in _files(root)}


def _img(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)


def _object_colour(im: np.ndarray) -> np.ndarray:
    """Mean RGB of the 10 % most saturated pixels: the object's colour (the backgrounds are nearly grey)."""
    px = im.reshape(-1, 3)
    sat = px.max(1) - px.min(1)
    return px[np.argsort(sat)[-max(1, len(px) // 10):]].mean(0)


def _nearest_mean_accuracy(train: dict, test: dict) -> float:
    """Accuracy of a nearest-class-mean classifier on the object colour of each image (a crude 'looks different'
    test: chance is 1 / number of classes)."""
    means = {c: np.mean([_object_colour(im) for im in ims], axis=0) for c, ims in train.items()}
    hits = total = 0
    for c, ims in test.items():
        for im in ims:
            f = _object_colour(im)
            pred = min(means, key=lambda k: np.linalg.norm(f - means[k]))
            hits += pred == c
            total += 1
    return hits / total


# ------------------------------------------------------------------------------------------------ renderer

def test_class_styles_differ_in_shape_colour_and_texture():
    styles = [demo.class_style(k) for k in range(12)]
    assert len({s.shape for s in styles}) == 12
    assert len({s.texture for s in styles}) == 12
    assert len({s.colour for s in styles}) == 12
    more = [demo.class_style(k) for k in range(40)]
    assert len({(s.shape, s.texture, s.colour) for s in more}) == 40


def test_render_is_deterministic_and_pose_changes_the_image():
    pose = (0.1, -0.1, 0.3, 1.0, 0.8)
    a = demo.render(3, 1, pose, 48, np.random.default_rng(5))
    b = demo.render(3, 1, pose, 48, np.random.default_rng(5))
    assert a.shape == (48, 48, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    for other in [(0.5, -0.1, 0.3, 1.0, 0.8), (0.1, -0.1, 1.3, 1.0, 0.8), (0.1, -0.1, 0.3, 1.5, 0.8),
                  (0.1, -0.1, 0.3, 1.0, -0.8)]:
        c = demo.render(3, 1, other, 48, np.random.default_rng(5))
        assert np.abs(c.astype(int) - a).mean() > 3, other
    # objects of one class differ a little; the absent object leaves only the background
    d = demo.render(3, 2, pose, 48, np.random.default_rng(5))
    assert 0 < np.abs(d.astype(int) - a).mean() < 30
    e = demo.render(None, 0, pose, 48, np.random.default_rng(5))
    assert e.std(axis=(0, 1)).max() < 20 < a.std(axis=(0, 1)).max()


def test_render_frames_matches_render_for_one_pose():
    bg = demo.random_background(np.random.default_rng(1))
    pose = (0.0, 0.2, -0.4, 0.9, 1.1)
    one = demo.render(7, 0, pose, 32, np.random.default_rng(9), background=bg)
    batch = demo.render_frames(7, 0, [pose], 32, np.random.default_rng(9), background=bg)
    np.testing.assert_array_equal(one, batch[0])


def test_classes_are_separable_by_object_colour():
    """Random poses and backgrounds: a nearest-mean classifier on the object colour is far above chance (1/10)."""
    def sample(k, i, split):
        rng = np.random.default_rng([split, k, i])
        pose = (rng.uniform(-0.25, 0.25), rng.uniform(-0.25, 0.25), rng.uniform(-3, 3), rng.uniform(0.8, 1.3), 1.0)
        return demo.render(k, i, pose, 32, rng).astype(np.float32)
    train = {k: [sample(k, i, 0) for i in range(20)] for k in range(10)}
    test = {k: [sample(k, i, 1) for i in range(10)] for k in range(10)}
    assert _nearest_mean_accuracy(train, test) > 0.6


# ------------------------------------------------------------------------------------------------ toybox

SMALL_TOYBOX = dict(categories={"household": ["cup"], "animals": ["horse"], "vehicles": ["car"]},
                    objects_per_category=1, image_size=32, missing_video=("car", 1, "ty"), jobs=2)


@pytest.fixture(scope="module")
def toybox_small(tmp_path_factory):
    out = tmp_path_factory.mktemp("toybox") / "raw"
    summary = demo.make_toybox(out, seed=3, **SMALL_TOYBOX)
    return out, summary


def test_toybox_layout_and_counts(toybox_small):
    out, summary = toybox_small
    files = _files(out)
    assert files and all(TOYBOX_RE.fullmatch(f) for f in files), [f for f in files if not TOYBOX_RE.fullmatch(f)]
    assert len(files) == 3 * 12 - 1 == summary["videos"]
    assert summary["session_videos"] == 3 * 10 - 1
    assert {f.split("/")[0] for f in files} == {"household", "animals", "vehicles"}
    assert "household/cup_01_pivothead/cup_01_pivothead_present.mp4" in files
    assert "household/cup_01_pivothead/cup_01_pivothead_absent.mp4" in files
    # the missing session video
    assert "vehicles/car_01_pivothead/car_01_pivothead_ty.mp4" not in files
    assert len([f for f in files if f.startswith("vehicles/car_01_pivothead/")]) == 11
    assert not list(out.parent.glob(".*.tmp"))  # the atomic temp folder is gone


def test_demo_folders_carry_the_marker(toybox_small, ilab_small, core50_small):
    for out, _ in (toybox_small, ilab_small, core50_small):
        assert output_owner(out) == "demo_data"
        assert [p.name for p in out.rglob(MARKER)] == [MARKER]  # only at the top, next to the dataset's folders


def test_toybox_videos_decode_to_expected_frames(toybox_small):
    out, _ = toybox_small
    normal = out / "animals/horse_01_pivothead/horse_01_pivothead_tx.mp4"
    short = out / "animals/horse_01_pivothead/horse_01_pivothead_rxminus.mp4"
    frames = demo.read_video_frames(normal)
    assert frames.shape == (60, 32, 32, 3)
    assert demo.mp4_frame_count(normal) == 60
    assert len(demo.read_video_frames(short)) == 40 == demo.mp4_frame_count(short)
    # what the 1-fps extraction step sees: >= 5 frames normally, exactly 4 for the short video (mirror padding)
    assert len(demo.read_video_frames(normal, size=(32, 32), fps=1)) == 6
    assert len(demo.read_video_frames(short, size=(32, 32), fps=1)) == 4


def test_toybox_object_moves_within_a_session(toybox_small):
    out, _ = toybox_small
    for trans in ("tx", "rzplus", "tz", "rxplus"):
        frames = demo.read_video_frames(out / f"household/cup_01_pivothead/cup_01_pivothead_{trans}.mp4",
                                        size=(32, 32), fps=1).astype(np.float32)
        diffs = [np.abs(frames[i] - frames[i + 1]).mean() for i in range(len(frames) - 1)]
        assert min(diffs) > 1.0, (trans, diffs)
    absent = demo.read_video_frames(out / "household/cup_01_pivothead/cup_01_pivothead_absent.mp4").astype(float)
    assert np.abs(absent[0] - absent[-1]).mean() < 3  # background only


def test_toybox_classes_differ(toybox_small):
    out, _ = toybox_small
    train, test = {}, {}
    for k, rel in enumerate(["household/cup_01_pivothead/cup_01", "animals/horse_01_pivothead/horse_01",
                             "vehicles/car_01_pivothead/car_01"]):
        ims = [f for t in ("rxplus", "ryplus", "rzplus", "tx", "tz", "hodgepodge")
               for f in demo.read_video_frames(out / f"{rel}_pivothead_{t}.mp4", fps=1).astype(np.float32)]
        train[k], test[k] = ims[::2], ims[1::2]
    assert _nearest_mean_accuracy(train, test) > 0.8


def test_toybox_is_deterministic_and_independent_of_jobs(tmp_path):
    kw = dict(categories={"animals": ["horse"]}, objects_per_category=1, image_size=32, seconds=2,
              short_video=None, missing_video=None)
    demo.make_toybox(tmp_path / "a", seed=1, jobs=1, **kw)
    demo.make_toybox(tmp_path / "b", seed=1, jobs=2, **kw)
    da, db = _digests(tmp_path / "a"), _digests(tmp_path / "b")
    assert len(da) == 12 and da == db
    # another seed gives other videos
    demo.make_toybox(tmp_path / "c", seed=2, jobs=2, **kw)
    fa = demo.read_video_frames(tmp_path / "a/animals/horse_01_pivothead/horse_01_pivothead_tz.mp4")
    fc = demo.read_video_frames(tmp_path / "c/animals/horse_01_pivothead/horse_01_pivothead_tz.mp4")
    assert fa.shape == fc.shape == (20, 32, 32, 3) and not np.array_equal(fa, fc)


def test_toybox_bad_arguments(tmp_path):
    with pytest.raises(InputError, match="short_video"):
        demo.make_toybox(tmp_path / "x", categories={"animals": ["duck"]}, objects_per_category=1)
    with pytest.raises(InputError, match="even"):
        demo.make_toybox(tmp_path / "x", image_size=33)
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------------------------ iLab

@pytest.fixture(scope="module")
def ilab_small(tmp_path_factory):
    out = tmp_path_factory.mktemp("ilab") / "raw"
    summary = demo.make_ilab2mlight(out, seed=0, classes=("boat", "bus", "semi"), instances_per_class=3,
                                    backgrounds_per_instance=3, image_size=32, jobs=2)
    return out, summary


def _parse_ilab(name: str) -> dict:
    """The spec 1.3 parser: hyphen fields, each integer ends at the next '-' (needs one more field at the end)."""
    stem = name[:-4]
    fields = {"class": stem.split("-")[0]}
    for key, tag in (("instance", "-i"), ("background", "-b"), ("camera", "-c"), ("rotation", "-r"),
                     ("lighting", "-l")):
        fields[key] = int(stem.split(tag, 1)[1].split("-", 1)[0])
        assert "-" in stem.split(tag, 1)[1]
    return fields


def test_ilab_layout_ids_and_short_session(ilab_small):
    out, summary = ilab_small
    files = _files(out)
    assert all(ILAB_RE.fullmatch(f) for f in files)
    assert len(files) == 3 * 3 * 3 * 8 - 5 == summary["images"]
    rows = [_parse_ilab(f.split("/")[1]) for f in files]
    assert {r["class"] for r in rows} == {"boat", "bus", "semi"}
    for cls in ("boat", "bus", "semi"):
        inst = sorted({r["instance"] for r in rows if r["class"] == cls})
        assert len(inst) == 3 and all(b - a >= 2 for a, b in zip(inst, inst[1:])), inst  # not contiguous
        for i in inst:
            bgs = sorted({r["background"] for r in rows if r["class"] == cls and r["instance"] == i})
            assert len(bgs) == 3 and all(b - a >= 2 for a, b in zip(bgs, bgs[1:]))
    counts: dict[tuple, int] = {}
    for r in rows:
        key = (r["class"], r["instance"], r["background"])
        counts[key] = counts.get(key, 0) + 1
    assert sorted(counts.values()) == [3] + [8] * (len(counts) - 1)
    short = next(k for k, v in counts.items() if v == 3)
    bus_inst = sorted({r["instance"] for r in rows if r["class"] == "bus"})
    bus_bgs = sorted({r["background"] for r in rows if r["class"] == "bus" and r["instance"] == bus_inst[1]})
    assert short == ("bus", bus_inst[1], bus_bgs[2])
    assert {(r["camera"], r["rotation"], r["lighting"]) for r in rows} == {
        (c, r, li) for c in (0, 1) for r in (1, 2) for li in (0, 1)}


def test_ilab_camera_rotation_lighting_change_the_image(ilab_small):
    out, _ = ilab_small
    name = sorted(p.name for p in (out / "train_img").glob("boat-*-c00-r01-l0-f2.jpg"))[0]
    base = _img(out / "train_img" / name)
    lit = _img(out / "train_img" / name.replace("-l0-", "-l1-"))
    cam = _img(out / "train_img" / name.replace("-c00-", "-c01-"))
    rot = _img(out / "train_img" / name.replace("-r01-", "-r02-"))
    assert lit.mean() > base.mean() + 15  # brighter lighting
    assert np.abs(cam - base).mean() > 3 and np.abs(rot - base).mean() > 3
    assert Image.open(out / "train_img" / name).size == (32, 32)


def test_ilab_is_deterministic(ilab_small, tmp_path):
    out, _ = ilab_small
    demo.make_ilab2mlight(tmp_path / "again", seed=0, classes=("boat", "bus", "semi"), instances_per_class=3,
                          backgrounds_per_instance=3, image_size=32, jobs=1)
    assert _digests(out) == _digests(tmp_path / "again")


# ------------------------------------------------------------------------------------------------ CORe50

@pytest.fixture(scope="module")
def core50_small(tmp_path_factory):
    out = tmp_path_factory.mktemp("core50") / "raw"
    summary = demo.make_core50(out, seed=0, objects=10, sessions=4, image_size=32, jobs=2)
    return out, summary


def test_core50_layout_and_frames(core50_small):
    out, summary = core50_small
    files = _files(out)
    assert files and all(CORE50_RE.fullmatch(f) for f in files)
    got: dict[tuple, set] = {}
    for f in files:
        s, o, ss, oo, fff = CORE50_RE.fullmatch(f).groups()
        assert int(ss) == int(s) and int(oo) == int(o)
        got.setdefault((int(s), int(o)), set()).add(int(fff))
    assert set(got) == {(s, o) for s in range(1, 5) for o in range(1, 11)}
    n_missing = 0
    for (s, o), frames in got.items():
        assert {10, 70, 130, 190, 250} <= frames <= {0, 40, 10, 70, 130, 190, 250}
        for extra in (0, 40):
            assert (extra in frames) == (not demo.core50_missing(s, o, extra))
            n_missing += extra not in frames
    assert n_missing > 0 and len(files) == summary["images"] == 4 * 10 * 7 - n_missing
    # the sample rate 60 keeps exactly 10, 70, 130, 190, 250
    assert sorted({f for fr in got.values() for f in fr if (f - 10) % 60 == 0}) == [10, 70, 130, 190, 250]
    assert Image.open(out / files[0]).size == (32, 32)


def test_core50_object_moves_and_classes_differ(core50_small):
    out, _ = core50_small
    root = out / "core50_128x128"
    frames = [_img(root / f"s2/o3/C_02_03_{f:03d}.png") for f in (10, 70, 130, 190, 250)]
    assert min(np.abs(a - b).mean() for a, b in zip(frames, frames[1:])) > 1.0
    # sessions have different backgrounds
    corner = [_img(root / f"s{s}/o3/C_0{s}_03_010.png")[:4, :4].mean((0, 1)) for s in range(1, 5)]
    assert min(np.linalg.norm(a - b) for i, a in enumerate(corner) for b in corner[i + 1:]) > 3
    # class = ceil(o / 5): objects 1-5 vs 6-10
    ims = {c: [_img(p) for o in range(5 * c + 1, 5 * c + 6) for p in sorted(root.glob(f"s*/o{o}/*.png"))]
           for c in (0, 1)}
    assert _nearest_mean_accuracy({c: v[::2] for c, v in ims.items()}, {c: v[1::2] for c, v in ims.items()}) > 0.8


def test_core50_is_deterministic(core50_small, tmp_path):
    out, _ = core50_small
    demo.make_core50(tmp_path / "again", seed=0, objects=10, sessions=4, image_size=32, jobs=1)
    assert _digests(out) == _digests(tmp_path / "again")


# ------------------------------------------------------------------------------------------------ CIFAR-100

def test_cifar100_layout_determinism_and_classes(tmp_path):
    classes = ("whale", "apple", "rocket", "tulip")
    s1 = demo.make_cifar100(tmp_path / "a", seed=0, classes=classes, train_per_class=12, test_per_class=4, jobs=2)
    demo.make_cifar100(tmp_path / "b", seed=0, classes=classes, train_per_class=12, test_per_class=4, jobs=1)
    files = _files(tmp_path / "a")
    assert all(CIFAR_RE.fullmatch(f) for f in files)
    assert len(files) == 4 * 16 == s1["images"]
    assert {f.split("/")[1] for f in files} == set(classes)
    assert "train/apple/0001.png" in files and "train/apple/0012.png" in files and "test/whale/0004.png" in files
    assert "train/apple/0013.png" not in files and "test/whale/0005.png" not in files
    assert _digests(tmp_path / "a") == _digests(tmp_path / "b")
    assert Image.open(tmp_path / "a/train/apple/0001.png").size == (32, 32)
    train = {c: [_img(tmp_path / "a/train" / c / f"{i:04d}.png") for i in range(1, 13)] for c in classes}
    test = {c: [_img(tmp_path / "a/test" / c / f"{i:04d}.png") for i in range(1, 5)] for c in classes}
    assert _nearest_mean_accuracy(train, test) > 0.7
    s3 = demo.make_cifar100(tmp_path / "c", seed=1, classes=classes, train_per_class=2, test_per_class=1)
    assert s3["images"] == 12
    assert (tmp_path / "a/train/apple/0001.png").read_bytes() != (tmp_path / "c/train/apple/0001.png").read_bytes()


# ------------------------------------------------------------------------------------------------ CLI

def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stages.demo_data", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120)


def test_cli_help_and_run(tmp_path):
    proc = _cli("--help")
    assert proc.returncode == 0 and "--kind" in proc.stdout and "--image-size" in proc.stdout
    proc = _cli("--kind", "cifar100", "--out", str(tmp_path / "c"), "--train-per-class", "3", "--test-per-class",
                "1", "--cifar-classes", "apple,bicycle", "--image-size", "16", "--jobs", "1")
    assert proc.returncode == 0, proc.stderr
    assert '"images": 8' in proc.stdout
    assert Image.open(tmp_path / "c/test/bicycle/0001.png").size == (16, 16)


def test_cli_bad_input_exits_with_one_line_error(tmp_path):
    proc = _cli("--kind", "core50", "--out", str(tmp_path / "x"), "--seed", "-1")
    assert proc.returncode != 0
    assert proc.stderr.strip().startswith("error:") and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------------------------ default sizes

@pytest.mark.slow
def test_all_kinds_at_default_size(tmp_path):
    """The four demo data sets at their default sizes: counts, and the timing that the workflow relies on."""
    t0 = time.perf_counter()
    s = demo.make_toybox(tmp_path / "toybox", jobs=2)
    assert (s["classes"], s["videos"], s["session_videos"]) == (6, 6 * 3 * 12 - 1, 6 * 3 * 10 - 1)
    s = demo.make_ilab2mlight(tmp_path / "ilab", jobs=2)
    assert (s["classes"], s["images"], s["sessions"]) == (7, 7 * 4 * 5 * 8 - 5, 7 * 4 * 5)
    s = demo.make_core50(tmp_path / "core50", jobs=2)
    assert s["images_kept_by_sampling"] == 30 * 11 * 5 and 30 * 11 * 5 < s["images"] < 30 * 11 * 7
    s = demo.make_cifar100(tmp_path / "cifar", jobs=2)
    assert (s["train_images"], s["test_images"]) == (500, 100)
    assert {p.name for p in (tmp_path / "cifar/train").iterdir()} == set(demo.CIFAR100_CLASSES)
    assert time.perf_counter() - t0 < 120
    vehicles = sorted(p.name for p in (tmp_path / "toybox/vehicles").iterdir())
    assert vehicles == [f"{c}_0{i}_pivothead" for c in ("airplane", "car") for i in (1, 2, 3)]
    assert not (tmp_path / "toybox/vehicles/car_02_pivothead/car_02_pivothead_ty.mp4").exists()
    assert demo.mp4_frame_count(tmp_path / "toybox/animals/horse_01_pivothead/horse_01_pivothead_rxminus.mp4") == 40
