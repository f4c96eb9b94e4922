"""Balanced sampling: each rule of spec 2.2 / 2.4 on crafted dirmaps, the published Toybox output byte for byte."""
from __future__ import annotations

import io
import random
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from augmem.data.dirmap import ILAB_COLUMNS, reindex_ilab
from augmem.data.sample import balance_ilab, balance_toybox, ilab_block_starts, mirror_pad
from augmem.io import InputError

REPO = Path(__file__).resolve().parents[2]
REF = Path("/work/shared/reference/dirmaps")
needs_ref = pytest.mark.skipif(not REF.is_dir(), reason="reference dirmaps not available")


def roundtrip(df: pd.DataFrame) -> pd.DataFrame:
    """Write with the index and read back without index_col, as the stages do (index -> `Unnamed: 0`)."""
    buf = io.StringIO()
    df.to_csv(buf)
    buf.seek(0)
    return pd.read_csv(buf)


# ------------------------------------------------------------------------------------------------------ Toybox
def toybox_rows(spec: dict[tuple[int, int, int], int]) -> pd.DataFrame:
    """Unbalanced dirmap with frames 1..n for each (class, object, session): n, sorted and index reset."""
    rows = [(c, o, s, k, f"c{c}/o{o}/s{s}_{k}.png") for (c, o, s), n in spec.items() for k in range(1, n + 1)]
    df = pd.DataFrame(rows, columns=["class", "object", "session", "im_num", "im_path"])
    return df.sort_values(["class", "object", "session", "im_num"]).reset_index(drop=True)


def test_mirror_pad_nine_frames():
    sess = toybox_rows({(6, 13, 4): 9})
    padded = mirror_pad(sess, 15)
    assert padded["im_num"].tolist() == list(range(1, 16))
    assert [int(p.split("_")[-1][:-4]) for p in padded["im_path"]] == [1, 2, 3, 4, 5, 6, 7, 8, 9, 8, 7, 6, 5, 4, 3]
    assert mirror_pad(toybox_rows({(1, 1, 1): 3}), 15)["im_path"].str[-5].tolist() == list("12321")


def small_toybox() -> pd.DataFrame:
    spec = {}
    for o in range(1, 6):  # class 1: objects 1..4 complete (4 is dropped as object number N); object 5 > N: ignored
        for s in (1, 2):
            spec[(1, o, s)] = 6  # one frame more than needed: im_num 6 is cut
    spec[(2, 1, 1)] = 3  # short session: mirror-padded to 1,2,3,2,1
    spec[(2, 1, 2)] = 5
    spec[(2, 2, 1)] = 5  # object with a single session: dropped
    for o in (3, 4):
        for s in (1, 2):
            spec[(2, o, s)] = 5
    return toybox_rows(spec)


def test_balance_toybox_rules():
    out = balance_toybox(roundtrip(small_toybox()), objects_per_class=4, sessions_per_object=2, frames_per_session=5)
    assert list(out.columns) == ["class", "object", "session", "im_num", "im_path"]
    assert len(out) == 2 * 3 * 2 * 5
    # class 1 keeps objects 1..3 (object 4 = N dropped); class 2 had 3 complete objects (1, 3, 4) -> renumbered 1..3
    kept = out.groupby(["class", "object"])["im_path"].first().str.split("/").str[1].to_dict()
    assert kept == {(1, 1): "o1", (1, 2): "o2", (1, 3): "o3", (2, 1): "o1", (2, 2): "o3", (2, 3): "o4"}
    # the index is not reset: it numbers the padded frame before the object drops (class 1 object 4 = 30..39,
    # class 2 object 2 = 50..54)
    assert out.index.tolist() == list(range(0, 30)) + list(range(40, 50)) + list(range(55, 75))
    padded = out[(out["class"] == 2) & (out["object"] == 1) & (out["session"] == 1)]
    assert padded["im_num"].tolist() == [1, 2, 3, 4, 5]
    assert padded["im_path"].tolist() == [f"c2/o1/s1_{k}.png" for k in (1, 2, 3, 2, 1)]
    assert out["im_num"].max() == 5


def test_balance_toybox_keeps_object_n_when_class_is_short():
    spec = {(1, o, s): 3 for o in (1, 2, 3) for s in (1, 2)}  # 3 objects = N - 1: object 3 (= N - 1) stays
    out = balance_toybox(roundtrip(toybox_rows(spec)), objects_per_class=4, sessions_per_object=2, frames_per_session=3)
    assert sorted(out["object"].unique()) == [1, 2, 3]


def test_balance_toybox_too_small():
    spec = {(1, o, s): 5 for o in (1, 2, 3) for s in (1, 2)}
    spec[(1, 2, 2)] = 2  # 1,2,1 after padding: still shorter than 5
    with pytest.raises(InputError, match=r"too small.*frames per session should be 5.*\[3\]"):
        balance_toybox(roundtrip(toybox_rows(spec)), objects_per_class=4, sessions_per_object=2, frames_per_session=5)
    spec = {(1, o, s): 5 for o in (1, 2) for s in (1, 2)}  # only 2 objects where 3 are needed
    with pytest.raises(InputError, match=r"too small.*objects per class should be 3.*class 1: 2"):
        balance_toybox(roundtrip(toybox_rows(spec)), objects_per_class=4, sessions_per_object=2, frames_per_session=5)


@needs_ref
def test_toybox_pipeline_reproduces_published_dirmap(tmp_path):
    """Frames tree consistent with the published set -> stages.dirmap -> stages.sample == toybox_dirmap.csv, bytes.

    The tree: 12 classes x 30 objects x 10 sessions (+ present/absent videos), 15..17 frames per video; duck_06,
    giraffe_02 and car_03 lack one session; cat_13 rxminus has 9 frames; folder cup_21 holds truck_21_* files (as in
    the published data). The index gaps of the published file (150 rows per dropped object 30, 135 per object with 9
    sessions) come out only if every rule, the padding and the non-reset index are right.
    """
    cats = pd.read_csv(REPO / "params" / "toybox_classes.csv")["class"].tolist()
    trans = pd.read_csv(REPO / "params" / "toybox_sessions.csv")["transformation"].tolist()
    frames = tmp_path / "images"
    for ci, cat in enumerate(cats):
        sup = ["household", "animals", "vehicles"][ci // 4]
        for o in range(1, 31):
            folder = frames / sup / f"{cat}_{o:02d}_pivothead"
            folder.mkdir(parents=True)
            prefix = f"{'truck' if (cat, o) == ('cup', 21) else cat}_{o:02d}_pivothead"
            for j, t in enumerate(trans + ["present", "absent"]):
                if (cat, o) in {("duck", 6), ("giraffe", 2), ("car", 3)} and t == "tz":
                    continue
                n = 9 if (cat, o, t) == ("cat", 13, "rxminus") else 15 + (o + j) % 3
                for k in range(1, n + 1):
                    (folder / f"{prefix}_{t}_{k}.png").touch()
    unbalanced, balanced = tmp_path / "toybox_dirmap_unbalanced.csv", tmp_path / "toybox_dirmap.csv"
    for args in (["stages.dirmap", "--layout", "toybox", "--root", str(frames), "--out", str(unbalanced)],
                 ["stages.sample", "--layout", "toybox", "--dirmap", str(unbalanced), "--out", str(balanced),
                  "--objects-per-class", "30", "--sessions-per-object", "10", "--frames-per-session", "15"]):
        run = subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
    assert balanced.read_bytes() == (REF / "toybox_dirmap.csv").read_bytes()


# -------------------------------------------------------------------------------------------------------- iLab
# (class, instance, background) -> number of frames; frame j has camera j // 3, rotation j % 3, lighting 0
ILAB_SPEC = {
    ("boat", 10, 1): 6, ("boat", 10, 2): 2, ("boat", 10, 3): 5, ("boat", 10, 4): 7,  # bg 2 too short; bg 4 = session 3
    ("boat", 20, 5): 4,  # a single usable background: object dropped
    ("boat", 30, 1): 8, ("boat", 30, 2): 3,
    ("boat", 40, 1): 4, ("boat", 40, 2): 4,  # third object: cut by objects_per_class = 2
    ("semi", 1, 1): 5, ("semi", 1, 2): 5,  # class semi is always removed
    ("car", 2, 3): 6, ("car", 2, 9): 4, ("car", 5, 1): 3, ("car", 5, 2): 10,
}


def ilab_name(cls, inst, bg, j):
    return f"{cls}-i{inst:04d}-b{bg:04d}-c{j // 3:02d}-r{j % 3:02d}-l0-f2.jpg"


def ilab_all() -> pd.DataFrame:
    rows = [{"class": c, "instance": i, "background": b, "camera": j // 3, "rotation": j % 3, "lighting": 0,
             "im_path": "train_img/" + ilab_name(c, i, b, j)} for (c, i, b), n in ILAB_SPEC.items() for j in range(n)]
    return roundtrip(reindex_ilab(pd.DataFrame(rows)))  # as read back from ilab2mlight_dirmap_all.csv


SIZES = dict(objects_per_class=2, sessions_per_object=2, frames_per_session=3)


def test_balance_ilab_rules_and_draw_order():
    out = balance_ilab(ilab_all(), seed=0, **SIZES)
    assert list(out.columns) == ILAB_COLUMNS and out.index.tolist() == list(range(len(out)))
    assert len(out) == 2 * 2 * 2 * 3 and set(out["class"]) == {"boat", "car"}
    assert out["im_num"].tolist() == [1, 2, 3] * 8
    # sorted groups after the filters, with their max im_num: the draw order of spec 2.4, recomputed by hand
    groups = [("boat", 10, 1, 6), ("boat", 10, 3, 5), ("boat", 30, 1, 8), ("boat", 30, 2, 3),
              ("car", 2, 3, 6), ("car", 2, 9, 4), ("car", 5, 1, 3), ("car", 5, 2, 10)]
    random.seed(0)
    starts = [random.randint(1, m - 3 + 1) for *_, m in groups]
    expected = ["train_img/" + ilab_name(c, i, b, j) for (c, i, b, _), s in zip(groups, starts)
                for j in range(s - 1, s + 2)]
    assert out["im_path"].tolist() == expected
    assert out[["class", "object", "session", "instance", "background"]].drop_duplicates().values.tolist() == [
        ["boat", 1, 1, 10, 1], ["boat", 1, 2, 10, 3], ["boat", 2, 1, 30, 1], ["boat", 2, 2, 30, 2],
        ["car", 1, 1, 2, 3], ["car", 1, 2, 2, 9], ["car", 2, 1, 5, 1], ["car", 2, 2, 5, 2]]


def test_balance_ilab_seed_reproducible():
    a = balance_ilab(ilab_all(), seed=0, **SIZES)
    pd.testing.assert_frame_equal(a, balance_ilab(ilab_all(), seed=0, **SIZES))
    assert not a.equals(balance_ilab(ilab_all(), seed=3, **SIZES))


def test_ilab_block_starts_one_draw_per_group():
    df = reindex_ilab(ilab_all())
    df = df[df["class"] == "car"]
    starts = ilab_block_starts(df, 3, seed=5)
    random.seed(5)
    want = [random.randint(1, 6 - 2), random.randint(1, 4 - 2), random.randint(1, 3 - 2), random.randint(1, 10 - 2)]
    per_group = starts.groupby([df["object"], df["session"]]).agg(["min", "max"])
    assert (per_group["min"] == per_group["max"]).all()
    assert per_group["min"].tolist() == want


def test_balance_ilab_too_small():
    with pytest.raises(InputError, match=r"too small.*objects per class should be 3"):
        balance_ilab(ilab_all(), objects_per_class=3, sessions_per_object=2, frames_per_session=3)
    with pytest.raises(InputError, match="too small"):
        balance_ilab(ilab_all(), objects_per_class=2, sessions_per_object=2, frames_per_session=50)


def test_sample_stage_ilab(tmp_path):
    src = tmp_path / "ilab2mlight_dirmap_all.csv"
    reindex_ilab(ilab_all()).to_csv(src)
    out = tmp_path / "ilab2mlight_dirmap_massed.csv"
    args = [sys.executable, "-m", "stages.sample", "--layout", "ilab", "--dirmap", str(src), "--out", str(out),
            "--objects-per-class", "2", "--sessions-per-object", "2", "--frames-per-session", "3", "--seed", "0"]
    run = subprocess.run(args, cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert out.read_text() == balance_ilab(ilab_all(), seed=0, **SIZES).to_csv()
    bad_out = tmp_path / "x.csv"
    args[args.index("--objects-per-class") + 1] = "5"
    args[args.index("--out") + 1] = str(bad_out)
    run = subprocess.run(args, cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 1 and run.stderr.startswith("error:") and "too small" in run.stderr
    assert not bad_out.exists()
    help_ = subprocess.run([sys.executable, "-m", "stages.sample", "--help"], cwd=REPO, capture_output=True, text=True)
    assert help_.returncode == 0 and "--objects-per-class" in help_.stdout
