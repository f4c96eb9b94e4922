"""Distribution of the massed iLab images into class/object/session folders (spec 2.5)."""
from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from augmem.data import distribute as dist
from augmem.data.distribute import distribute_ilab
from augmem.io import MARKER, InputError, output_owner

REPO = Path(__file__).resolve().parents[2]
FPS = 3  # frames per session in these small trees


def make_massed(tmp_path: Path) -> tuple[Path, Path]:
    """A massed dirmap CSV (2 classes x 2 objects x 2 sessions x 3 images) and its source tree with real bytes."""
    src = tmp_path / "ilab"
    (src / "train_img").mkdir(parents=True)
    rows = []
    for cls, inst0 in (("bus", 4), ("car", 7)):
        for o in (1, 2):
            for s in (1, 2):
                for k in range(1, FPS + 1):
                    name = f"{cls}-i{inst0 + o:04d}-b{s:04d}-c{k:02d}-r00-l0-f2.jpg"
                    (src / "train_img" / name).write_bytes(name.encode())
                    rows.append({"class": cls, "object": o, "session": s, "im_num": k,
                                 "im_path": f"train_img/{name}", "instance": inst0 + o, "background": s,
                                 "camera": k, "rotation": 0, "lighting": 0})
    massed = tmp_path / "ilab2mlight_dirmap_massed.csv"
    pd.DataFrame(rows).to_csv(massed)
    return massed, src


def test_distribute_layout_links_and_dirmap(tmp_path):
    massed_csv, src = make_massed(tmp_path)
    massed = pd.read_csv(massed_csv)  # without index_col: `Unnamed: 0` is carried along
    out_root = tmp_path / "train_img_distributed"
    out = distribute_ilab(massed, src, out_root, frames_per_session=FPS)
    assert list(out.columns) == ["index", "Unnamed: 0", "class", "object", "session", "im_num", "im_path",
                                 "instance", "background", "camera", "rotation", "lighting"]
    assert out["index"].tolist() == list(range(24)) and out["Unnamed: 0"].tolist() == list(range(24))
    assert out.loc[0, "im_path"] == "bus/obj_1/sess_1/bus-i0005-b0001-c01-r00-l0-f2.jpg"
    assert out.loc[23, "im_path"] == "car/obj_2/sess_2/car-i0009-b0002-c03-r00-l0-f2.jpg"
    files = sorted(p.relative_to(out_root).as_posix() for p in out_root.rglob("*") if p.is_file())
    assert files == sorted([*out["im_path"], MARKER]) and output_owner(out_root) == "distribute"
    for rel, old in zip(out["im_path"], massed["im_path"]):
        assert (out_root / rel).read_bytes() == (src / old).read_bytes()
        assert os.path.samefile(out_root / rel, src / old)  # same file system: hard links
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ilab", "ilab2mlight_dirmap_massed.csv",
                                                          "train_img_distributed"]


def test_distribute_copy_and_link_fallback(tmp_path, monkeypatch):
    massed_csv, src = make_massed(tmp_path)
    massed = pd.read_csv(massed_csv)
    out = distribute_ilab(massed, src, tmp_path / "copied", link="copy", frames_per_session=FPS)
    p = tmp_path / "copied" / out.loc[0, "im_path"]
    assert p.stat().st_nlink == 1 and p.read_bytes() == (src / massed.loc[0, "im_path"]).read_bytes()

    def no_link(a, b):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(dist.os, "link", no_link)
    out = distribute_ilab(massed, src, tmp_path / "fallback", frames_per_session=FPS)
    p = tmp_path / "fallback" / out.loc[5, "im_path"]
    assert p.stat().st_nlink == 1 and p.read_bytes() == (src / massed.loc[5, "im_path"]).read_bytes()


def test_distribute_errors_leave_no_output(tmp_path):
    massed_csv, src = make_massed(tmp_path)
    massed = pd.read_csv(massed_csv)
    out_root = tmp_path / "out"
    missing = massed.loc[7, "im_path"]
    (src / missing).unlink()
    with pytest.raises(InputError, match=Path(missing).name):
        distribute_ilab(massed, src, out_root, frames_per_session=FPS)
    assert not out_root.exists()
    with pytest.raises(InputError, match=r"exactly 3 images.*car/obj_2/sess_2: 2"):
        distribute_ilab(massed.drop(index=23), src, out_root, frames_per_session=FPS)
    with pytest.raises(InputError, match=r"exactly 4 images"):
        distribute_ilab(massed, src, out_root, frames_per_session=4)
    assert not out_root.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ilab", "ilab2mlight_dirmap_massed.csv"]


def test_distribute_stage(tmp_path):
    massed_csv, src = make_massed(tmp_path)
    out_csv = tmp_path / "ilab2mlight_dirmap.csv"
    run = subprocess.run([sys.executable, "-m", "stages.distribute", "--dirmap", str(massed_csv), "--src", str(src),
                          "--out-root", str(tmp_path / "dist"), "--out-dirmap", str(out_csv),
                          "--frames-per-session", str(FPS), "--copy"], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    header, first = out_csv.read_text().splitlines()[:2]
    assert header == (",index,Unnamed: 0,class,object,session,im_num,im_path,instance,background,camera,rotation,"
                      "lighting")
    assert first == "0,0,0,bus,1,1,1,bus/obj_1/sess_1/bus-i0005-b0001-c01-r00-l0-f2.jpg,5,1,1,0,0"
    assert (tmp_path / "dist" / "bus" / "obj_1" / "sess_1" / "bus-i0005-b0001-c01-r00-l0-f2.jpg").is_file()
    bad = tmp_path / "bad.csv"
    bad.write_text(massed_csv.read_text().replace("train_img/bus-i0005", "../bus-i0005", 1))
    run = subprocess.run([sys.executable, "-m", "stages.distribute", "--dirmap", str(bad), "--src", str(src),
                          "--out-root", str(tmp_path / "d2"), "--out-dirmap", str(tmp_path / "d2.csv")],
                         cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 1 and "bad.csv: line 2" in run.stderr and not (tmp_path / "d2").exists()
    help_ = subprocess.run([sys.executable, "-m", "stages.distribute", "--help"], cwd=REPO, capture_output=True,
                           text=True)
    assert help_.returncode == 0 and "--out-root" in help_.stdout
