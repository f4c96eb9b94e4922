"""Filelist parsing, the study transform, image loading and the pre-flight check of a run's filelists."""
from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from PIL import Image

from augmem.data.datasets import (IMAGENET_MEAN, IMAGENET_STD, FilelistDataset, check_filelists, read_filelist,
                                  study_transform)
from augmem.io import InputError

REF = Path("/work/shared/reference/filelists")
needs_reference = pytest.mark.skipif(not REF.is_dir(), reason="reference filelists not available")


# ------------------------------------------------------------------------------------------------- read_filelist
def test_read_filelist_order_blank_lines_and_spaces(tmp_path):
    p = tmp_path / "f.txt"
    p.write_text("a/b.png 0\n\n  \nmy dir/with space.png 3\nc.png\t12\n")
    assert read_filelist(p) == [("a/b.png", 0), ("my dir/with space.png", 3), ("c.png", 12)]


@pytest.mark.parametrize("bad, what", [("lonely.png", "expected"), ("a.png x", "not an integer"),
                                       ("a.png 1.5", "not an integer")])
def test_read_filelist_malformed_line(tmp_path, bad, what):
    p = tmp_path / "f.txt"
    p.write_text(f"ok.png 0\n\n{bad}\n")
    with pytest.raises(InputError, match=rf"f\.txt, line 3: .*{what}"):
        read_filelist(p)


def test_read_filelist_missing_file(tmp_path):
    with pytest.raises(InputError, match="nope.txt: filelist not found"):
        read_filelist(tmp_path / "nope.txt")


# ------------------------------------------------------------------------------------------------- transform
def test_study_transform_shape_and_normalisation():
    img = Image.new("RGB", (50, 40), (255, 255, 255))
    x = study_transform(32)(img)
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    expected = [(1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]
    assert torch.allclose(x.mean(dim=(1, 2)), torch.tensor(expected), atol=1e-5)
    gray = Image.new("L", (10, 10), 0)  # non-RGB input is converted by the dataset, the transform needs RGB
    assert study_transform(16)(gray.convert("RGB")).shape == (3, 16, 16)


# ------------------------------------------------------------------------------------------------- dataset
def test_filelist_dataset_loads_in_order(tiny_files):
    image_root, run_dir = tiny_files
    fl = run_dir / "stream" / "train_task_00_filelist.txt"
    ds = FilelistDataset(fl, image_root, study_transform(32))
    assert len(ds) == 24 and ds.targets[:4] == [0, 1, 0, 1]
    x, y = ds[1]
    assert x.shape == (3, 32, 32) and y == 1
    assert ds.paths[0] == "train/c0/t0_000.png"


def test_filelist_dataset_missing_image(tiny_files):
    image_root, run_dir = tiny_files
    fl = run_dir / "stream" / "train_task_00_filelist.txt"
    (image_root / "train/c1/t0_001.png").unlink()
    ds = FilelistDataset(fl, image_root, study_transform(32))
    with pytest.raises(InputError, match=r"t0_001\.png: image not found "
                                         r"\(listed in .*train_task_00_filelist\.txt, line 2\)"):
        ds[1]


def test_filelist_dataset_corrupt_image(tiny_files):
    image_root, run_dir = tiny_files
    (image_root / "test/c0/000.png").write_bytes(b"not a png at all")
    ds = FilelistDataset(run_dir / "stream" / "test_filelist.txt", image_root, study_transform(32))
    with pytest.raises(InputError, match=r"000\.png: cannot read image \(listed in .*test_filelist\.txt, line 1\)"):
        ds[0]


# ------------------------------------------------------------------------------------------------- check_filelists
def test_check_filelists_ok(tiny_files):
    image_root, run_dir = tiny_files
    files = check_filelists(run_dir, "stream", 4, image_root)
    assert files.tasks == [0, 1]
    assert [len(files.train[t]) for t in files.tasks] == [24, 24] and len(files.test) == 24
    assert {lab for _, lab in files.train[1]} == {2, 3}


def test_check_filelists_float_task_column(tiny_files):
    image_root, run_dir = tiny_files
    p = run_dir / "stream" / "train_all.txt"
    df = pd.read_csv(p, index_col=0)
    df["task"] = df["task"].astype(float)
    df.to_csv(p)
    assert "0.0" in p.read_text()
    assert check_filelists(run_dir, "stream", 4, image_root).tasks == [0, 1]


def test_check_filelists_label_out_of_range(tiny_files):
    image_root, run_dir = tiny_files
    with pytest.raises(InputError, match=r"label 3 outside \[0, 3\)"):
        check_filelists(run_dir, "stream", 3, image_root)


def test_check_filelists_test_label_out_of_range(tiny_files):
    image_root, run_dir = tiny_files
    p = run_dir / "stream" / "test_filelist.txt"
    p.write_text(p.read_text() + "test/c0/000.png 7\n")
    with pytest.raises(InputError, match=r"test_filelist\.txt, line 25: label 7 outside \[0, 4\)"):
        check_filelists(run_dir, "stream", 4, image_root)


def test_check_filelists_missing_images_counted(tiny_files):
    image_root, run_dir = tiny_files
    (image_root / "train/c2/t1_002.png").unlink()
    (image_root / "test/c3/020.png").unlink()
    with pytest.raises(InputError, match=r"2 listed image\(s\) missing .*first: .*t1_002\.png \(listed in .*"
                                         r"train_task_01_filelist\.txt, line 3\)"):
        check_filelists(run_dir, "stream", 4, image_root)
    check_filelists(run_dir, "stream", 4, None)  # without an image root only the lists are checked


def test_check_filelists_missing_task_file(tiny_files):
    image_root, run_dir = tiny_files
    (run_dir / "stream" / "train_task_01_filelist.txt").unlink()
    with pytest.raises(InputError, match=r"task\(s\) \[1\] have no train_task_XX_filelist"):
        check_filelists(run_dir, "stream", 4, image_root)


def test_check_filelists_task_gap(tiny_files):
    image_root, run_dir = tiny_files
    stream = run_dir / "stream"
    shutil.move(stream / "train_task_01_filelist.txt", stream / "train_task_02_filelist.txt")
    with pytest.raises(InputError, match=r"task file\(s\) missing for task\(s\) \[1\]"):
        check_filelists(run_dir, "stream", 4, image_root)


def test_check_filelists_extra_nonempty_task_file(tiny_files):
    image_root, run_dir = tiny_files
    stream = run_dir / "stream"
    shutil.copy(stream / "train_task_01_filelist.txt", stream / "train_task_02_filelist.txt")
    with pytest.raises(InputError, match=r"train_task_02_filelist\.txt: disagrees with .*train_all\.txt for task 2"):
        check_filelists(run_dir, "stream", 4, image_root)


def test_check_filelists_empty_extra_task_file_is_allowed(tiny_files):
    """The instance-scenario quirk (spec 12.3): trailing task files exist but are empty."""
    image_root, run_dir = tiny_files
    (run_dir / "stream" / "train_task_02_filelist.txt").write_text("")
    files = check_filelists(run_dir, "stream", 4, image_root)
    assert files.tasks == [0, 1, 2] and files.train[2] == []


def test_check_filelists_counts_disagree(tiny_files):
    image_root, run_dir = tiny_files
    p = run_dir / "stream" / "train_task_00_filelist.txt"
    p.write_text("\n".join(p.read_text().splitlines()[:-1]) + "\n")
    with pytest.raises(InputError, match=r"train_task_00_filelist\.txt: disagrees with .*23 rows"):
        check_filelists(run_dir, "stream", 4, image_root)


def test_check_filelists_missing_train_all_and_folder(tiny_files):
    image_root, run_dir = tiny_files
    with pytest.raises(InputError, match="offline: filelist folder not found"):
        check_filelists(run_dir, "offline", 4, image_root)
    (run_dir / "stream" / "train_all.txt").unlink()
    with pytest.raises(InputError, match="train_all.txt: file not found"):
        check_filelists(run_dir, "stream", 4, image_root)


@needs_reference
@pytest.mark.parametrize("rel, mode, sizes", [
    ("core50_task_filelists/iid/run0", "stream", [1201, 1201, 1201, 1201, 1200]),  # float task column
    ("core50_task_filelists/class_iid/run0", "offline", [1200, 2400, 3600, 4800, 6000]),
])
def test_check_filelists_published(rel, mode, sizes):
    files = check_filelists(REF / rel, mode, 10)
    assert [len(files.train[t]) for t in files.tasks] == sizes and len(files.test) == 2250
