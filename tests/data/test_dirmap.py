"""Dirmap builders on fake trees (empty files: a dirmap never opens an image), checked against published CSVs."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from augmem.data.dirmap import (DIRMAP_COLUMNS, ILAB_COLUMNS, cifar100_dirmap, core50_dirmap, ilab2mlight_dirmap,
                                parse_ilab_name, read_dirmap, reindex_ilab, toybox_dirmap)
from augmem.io import InputError

REPO = Path(__file__).resolve().parents[2]
REF = Path("/work/shared/reference/dirmaps")
needs_ref = pytest.mark.skipif(not REF.is_dir(), reason="reference dirmaps not available")


def touch_all(root: Path, rel_paths) -> None:
    for rel in rel_paths:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.touch()


# ------------------------------------------------------------------------------------------------------ CORe50
@needs_ref
def test_core50_matches_reference(tmp_path):
    ref = pd.read_csv(REF / "core50_dirmap.csv", index_col=0)
    touch_all(tmp_path / "core50_128x128", ref["im_path"])
    (tmp_path / "core50_128x128" / "s1" / "o1" / "notes.txt").touch()  # non-PNG files are ignored
    df = core50_dirmap(tmp_path)
    assert list(df.columns) == DIRMAP_COLUMNS
    assert df.index.tolist() == list(range(len(ref)))
    pd.testing.assert_frame_equal(df, ref.reset_index(drop=True), check_dtype=False)
    assert df.loc[df["object"] == 12, "class"].unique().tolist() == [3]  # ceil(12 / 5)
    assert df.loc[df["object"] == 50, "class"].unique().tolist() == [10]


def test_core50_sorting_and_bad_names(tmp_path):
    touch_all(tmp_path / "core50_128x128", ["s2/o6/C_02_06_010.png", "s1/o6/C_01_06_290.png",
                                            "s1/o6/C_01_06_030.png", "s11/o1/C_11_01_000.png"])
    df = core50_dirmap(tmp_path)
    assert df.values.tolist() == [
        [1, 1, 11, 0, "s11/o1/C_11_01_000.png"],
        [2, 6, 1, 30, "s1/o6/C_01_06_030.png"],
        [2, 6, 1, 290, "s1/o6/C_01_06_290.png"],
        [2, 6, 2, 10, "s2/o6/C_02_06_010.png"],
    ]
    touch_all(tmp_path / "core50_128x128", ["s3/o6/C_03_07_010.png"])  # file name disagrees with its folder
    with pytest.raises(InputError, match="C_03_07_010.png"):
        core50_dirmap(tmp_path)
    (tmp_path / "core50_128x128" / "s3" / "o6" / "C_03_07_010.png").unlink()
    touch_all(tmp_path / "core50_128x128", ["s3/o6/frame10.png"])
    with pytest.raises(InputError, match="frame10.png"):
        core50_dirmap(tmp_path)
    with pytest.raises(InputError, match="not found"):
        core50_dirmap(tmp_path / "missing")


# ------------------------------------------------------------------------------------------------------ Toybox
def test_toybox_dirmap_parsing_filtering_sorting(tmp_path):
    touch_all(tmp_path, [
        "vehicles/car_02_pivothead/car_02_pivothead_tz_2.png",
        "vehicles/car_02_pivothead/car_02_pivothead_tz_10.png",
        "vehicles/car_02_pivothead/car_02_pivothead_present_1.png",  # not one of the 10 transformations: skipped
        "household/mug_03_pivothead/mug_03_pivothead_hodgepodge_1.png",
        "household/mug_03_pivothead/mug_03_pivothead_rxplus_1.png",
        # the published cup_21 folder holds truck_21_* frames; only the last two tokens count, as in the original
        "household/cup_21_pivothead/truck_21_pivothead_ryminus_4.png",
    ])
    df = toybox_dirmap(tmp_path)
    assert list(df.columns) == DIRMAP_COLUMNS
    assert df.values.tolist() == [
        [1, 21, 5, 4, "household/cup_21_pivothead/truck_21_pivothead_ryminus_4.png"],
        [2, 3, 1, 1, "household/mug_03_pivothead/mug_03_pivothead_rxplus_1.png"],
        [2, 3, 10, 1, "household/mug_03_pivothead/mug_03_pivothead_hodgepodge_1.png"],
        [9, 2, 9, 2, "vehicles/car_02_pivothead/car_02_pivothead_tz_2.png"],
        [9, 2, 9, 10, "vehicles/car_02_pivothead/car_02_pivothead_tz_10.png"],
    ]
    assert df.index.tolist() == list(range(5))


def test_toybox_dirmap_errors(tmp_path):
    touch_all(tmp_path / "a", ["household/cup_01_pivothead/cup_01_pivothead_rxplus_x.png"])
    with pytest.raises(InputError, match="cup_01_pivothead_rxplus_x.png"):
        toybox_dirmap(tmp_path / "a")
    touch_all(tmp_path / "b", ["household/bowl_01_pivothead/bowl_01_pivothead_rxplus_1.png"])
    with pytest.raises(InputError, match="bowl"):
        toybox_dirmap(tmp_path / "b")
    touch_all(tmp_path / "c", ["household/cup_01/cup_01_rxplus_1.png"])
    with pytest.raises(InputError, match="cup_01"):
        toybox_dirmap(tmp_path / "c")


def test_toybox_dirmap_custom_maps(tmp_path):
    (tmp_path / "cls.csv").write_text("class,index\nblock,7\n")
    (tmp_path / "sess.csv").write_text("transformation,session_index\nspin,3\n")
    touch_all(tmp_path / "f", ["toys/block_04_pivothead/block_04_pivothead_spin_2.png",
                               "toys/block_04_pivothead/block_04_pivothead_rxplus_2.png"])
    df = toybox_dirmap(tmp_path / "f", tmp_path / "cls.csv", tmp_path / "sess.csv")
    assert df.values.tolist() == [[7, 4, 3, 2, "toys/block_04_pivothead/block_04_pivothead_spin_2.png"]]


# -------------------------------------------------------------------------------------------------------- iLab
def test_parse_ilab_name():
    assert parse_ilab_name("f1car-i0012-b0003-c04-r05-l2-f2.jpg") == {
        "class": "f1car", "instance": 12, "background": 3, "camera": 4, "rotation": 5, "lighting": 2}
    for bad in ["boat-i0001-b0001-c00-r01-l0.jpg",  # no field after -l: the original's int() fails too
                "boat-i01-b01-c00-r01-lx-f.jpg", "boat.jpg"]:
        with pytest.raises(ValueError):
            parse_ilab_name(bad)


def test_ilab_dirmap_reindex(tmp_path):
    names = [
        "boat-i0009-b0002-c01-r00-l0-f.jpg", "boat-i0009-b0002-c00-r01-l0-f.jpg", "boat-i0009-b0002-c00-r00-l1-f.jpg",
        "boat-i0009-b0005-c00-r00-l0-f.jpg", "boat-i0003-b0007-c00-r00-l0-f.jpg", "bus-i0001-b0001-c00-r00-l0-f.jpg",
    ]
    touch_all(tmp_path / "train_img", names)
    df = ilab2mlight_dirmap(tmp_path)
    assert list(df.columns) == ILAB_COLUMNS
    got = df[["class", "object", "session", "im_num", "im_path"]].values.tolist()
    assert got == [
        ["boat", 1, 1, 1, "train_img/boat-i0003-b0007-c00-r00-l0-f.jpg"],
        ["boat", 2, 1, 1, "train_img/boat-i0009-b0002-c00-r00-l1-f.jpg"],  # camera, then rotation, then lighting
        ["boat", 2, 1, 2, "train_img/boat-i0009-b0002-c00-r01-l0-f.jpg"],
        ["boat", 2, 1, 3, "train_img/boat-i0009-b0002-c01-r00-l0-f.jpg"],
        ["boat", 2, 2, 1, "train_img/boat-i0009-b0005-c00-r00-l0-f.jpg"],
        ["bus", 1, 1, 1, "train_img/bus-i0001-b0001-c00-r00-l0-f.jpg"],
    ]
    # re-indexing a subset renumbers densely and drops extra columns such as `Unnamed: 0`
    sub = df.reset_index().rename(columns={"index": "Unnamed: 0"}).iloc[[2, 4]]
    re = reindex_ilab(sub)
    assert list(re.columns) == ILAB_COLUMNS
    assert re[["object", "session", "im_num"]].values.tolist() == [[1, 1, 1], [1, 2, 1]]

    touch_all(tmp_path / "train_img", ["boat-i0001-b0001-c00-r00-l0.jpg"])
    with pytest.raises(InputError, match="boat-i0001-b0001-c00-r00-l0.jpg"):
        ilab2mlight_dirmap(tmp_path)


# ---------------------------------------------------------------------------------------------------- CIFAR-100
def test_cifar100_small(tmp_path):
    touch_all(tmp_path, ["train/bee/0002.png", "train/bee/0001.png", "train/apple/0001.png",
                         "test/bee/0001.png", "test/apple/0001.png", "test/apple/0002.png"])
    df, classes = cifar100_dirmap(tmp_path)
    assert list(df.columns) == ["class", "object", "session", "im_path", "im_num"]
    assert df.values.tolist() == [
        ["apple", 0, 0, "train/apple/0001.png", 1], ["apple", 0, 1, "test/apple/0001.png", 1],
        ["apple", 0, 1, "test/apple/0002.png", 2], ["bee", 0, 0, "train/bee/0001.png", 1],
        ["bee", 0, 0, "train/bee/0002.png", 2], ["bee", 0, 1, "test/bee/0001.png", 1],
    ]
    assert classes.values.tolist() == [["apple", 0], ["bee", 1]]
    touch_all(tmp_path, ["test/cow/0001.png"])
    with pytest.raises(InputError, match="cow"):
        cifar100_dirmap(tmp_path)


@needs_ref
@pytest.mark.parametrize("layout", [["--layout", "class_folders"], ["--kind", "cifar100"]])  # --kind: alias
def test_cifar100_stage_byte_for_byte(tmp_path, layout):
    ref = pd.read_csv(REF / "cifar100_dirmap.csv", index_col=0)
    root = tmp_path / "cifar"
    touch_all(root, ref["im_path"])
    out, cls = tmp_path / "out" / "cifar100_dirmap.csv", tmp_path / "out" / "cifar100_classes.csv"
    run = subprocess.run([sys.executable, "-m", "stages.dirmap", *layout, "--root", str(root),
                          "--out", str(out), "--classes-out", str(cls)], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert out.read_bytes() == (REF / "cifar100_dirmap.csv").read_bytes()
    assert cls.read_bytes() == (REF / "cifar100_classes.csv").read_bytes()


# -------------------------------------------------------------------------------------------- reading, stages
def test_read_dirmap_rejects_unsafe_paths(tmp_path):
    ok = tmp_path / "ok.csv"
    ok.write_text(",class,object,session,im_num,im_path\n0,1,1,1,1,a/b.png\n")
    assert read_dirmap(ok)["Unnamed: 0"].tolist() == [0]
    for i, bad_path in enumerate(["/etc/passwd", "a/../../b.png", "..", "C:/x.png", "a\\b.png"]):
        bad = tmp_path / f"bad{i}.csv"
        bad.write_text(f",class,object,session,im_num,im_path\n0,1,1,1,1,a/b.png\n1,1,1,1,2,{bad_path}\n")
        with pytest.raises(InputError, match=rf"bad{i}\.csv: line 3"):
            read_dirmap(bad)
    missing = tmp_path / "missing.csv"
    missing.write_text("class,object\n1,1\n")
    with pytest.raises(InputError, match="missing column"):
        read_dirmap(missing)


def test_dirmap_stage_help_and_errors(tmp_path):
    run = subprocess.run([sys.executable, "-m", "stages.dirmap", "--help"], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0 and "--layout" in run.stdout and "--kind" in run.stdout
    touch_all(tmp_path / "frames", ["household/cup_01_pivothead/cup_01_pivothead_rxplus_1.png"])
    out = tmp_path / "toybox_dirmap_unbalanced.csv"
    run = subprocess.run([sys.executable, "-m", "stages.dirmap", "--layout", "toybox",
                          "--root", str(tmp_path / "frames"),
                          "--out", str(out)], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert out.read_text() == (",class,object,session,im_num,im_path\n"
                               "0,1,1,1,1,household/cup_01_pivothead/cup_01_pivothead_rxplus_1.png\n")
    run = subprocess.run([sys.executable, "-m", "stages.dirmap", "--layout", "core50", "--root", str(tmp_path / "x"),
                          "--out", str(tmp_path / "c.csv")], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 1 and run.stderr.startswith("error:") and not (tmp_path / "c.csv").exists()
