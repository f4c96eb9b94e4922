"""Stages never delete what they did not create: the three data-loss reproductions of the guard's issue, stale
temporaries of killed jobs, and unwritable outputs found before any compute (small generated data)."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from augmem import io
from augmem.data import demo
from augmem.io import MARKER, output_owner

REPO = Path(__file__).resolve().parents[1]


def _cli(module: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=REPO, capture_output=True, text=True,
                          timeout=300)


def _snapshot(root: Path) -> dict[str, str | None]:
    """Every entry under root (relative path -> sha256 of a file, None for a folder)."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None
            for p in sorted(root.rglob("*"))}


def _refused(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode != 0, proc.stdout
    err = proc.stderr.strip()
    assert err.startswith("error:") and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ------------------------------------------------------------------------------------------------ reproductions
def test_dirmap_out_naming_the_interim_folder_is_refused(tmp_path):
    raw = tmp_path / "data/raw/core50_demo"
    demo.make_core50(raw, objects=10, sessions=2, image_size=16, jobs=2)
    interim = tmp_path / "data/interim/core50_demo"
    (interim / "cache").mkdir(parents=True)
    (interim / "dirmap_raw.csv").write_text("earlier output\n")
    (interim / "cache" / "images_16.u8").write_bytes(b"\0" * 64)
    before = _snapshot(tmp_path / "data")
    proc = _cli("stages.dirmap", "--kind", "core50", "--root", raw, "--out", f"{interim}/")
    _refused(proc, str(interim), "is a folder")
    assert _snapshot(tmp_path / "data") == before
    # the same command with a file path still works
    proc = _cli("stages.dirmap", "--kind", "core50", "--root", raw, "--out", interim / "dirmap_raw.csv")
    assert proc.returncode == 0, proc.stderr
    assert (interim / "cache" / "images_16.u8").exists() and len(pd.read_csv(interim / "dirmap_raw.csv")) > 0


def _make_videos(root: Path) -> Path:
    demo.make_toybox(root, categories={"household": ["cup"]}, objects_per_category=1, image_size=16, fps=2,
                     seconds=2, short_video=None, missing_video=None, jobs=2)
    return root


def test_extract_frames_into_the_videos_folder_is_refused(tmp_path):
    videos = _make_videos(tmp_path / "data/raw/toybox_demo")
    mp4s = sorted(videos.rglob("*.mp4"))
    assert len(mp4s) == 12
    before = _snapshot(tmp_path)
    for out in (videos, videos / "frames", tmp_path / "data/raw"):  # is, lies inside, contains the input
        proc = _cli("stages.extract_frames", "--videos", videos, "--out", out, "--size", 32, "--jobs", 1)
        _refused(proc, str(out), "input", str(videos))
        assert _snapshot(tmp_path) == before  # every .mp4 still there, unchanged; nothing created
    # a folder that is not an earlier frames output (here: an interim folder with other data) is refused too
    interim = tmp_path / "data/interim/toybox_demo"
    interim.mkdir(parents=True)
    (interim / "dirmap_raw.csv").write_text("x\n")
    proc = _cli("stages.extract_frames", "--videos", videos, "--out", interim, "--size", 16, "--jobs", 1)
    _refused(proc, str(interim), MARKER)
    assert (interim / "dirmap_raw.csv").read_text() == "x\n"
    # the right call works, and rerunning it replaces its own earlier output
    frames = interim / "frames"
    for _ in range(2):
        proc = _cli("stages.extract_frames", "--videos", videos, "--out", frames, "--size", 16, "--jobs", 1)
        assert proc.returncode == 0, proc.stderr
    assert output_owner(frames) == "extract_frames" and len(list(frames.rglob("*.png"))) == 12 * 2
    assert sorted(p.name for p in interim.iterdir()) == ["dirmap_raw.csv", "frames"]  # no temporaries left
    assert sorted(videos.rglob("*.mp4")) == mp4s


def _massed(root: Path, fps: int = 3) -> Path:
    """``root/train_img/*.jpg`` (2 classes x 1 object x 1 session x fps images) and its massed dirmap CSV."""
    rows = []
    (root / "train_img").mkdir(parents=True)
    for cls, inst in (("bus", 5), ("car", 9)):
        for k in range(1, fps + 1):
            name = f"{cls}-i{inst:04d}-b0001-c{k:02d}-r00-l0-f2.jpg"
            (root / "train_img" / name).write_bytes(name.encode())
            rows.append({"class": cls, "object": 1, "session": 1, "im_num": k, "im_path": f"train_img/{name}"})
    csv = root.parent / "ilab2mlight_dirmap_massed.csv"
    pd.DataFrame(rows).to_csv(csv)
    return csv


def test_distribute_onto_its_source_is_refused(tmp_path):
    src = tmp_path / "R"
    csv = _massed(src)
    before = _snapshot(tmp_path)
    for out_root in (src, src / "distributed", tmp_path):
        proc = _cli("stages.distribute", "--dirmap", csv, "--src", src, "--out-root", out_root,
                    "--out-dirmap", tmp_path / "out.csv", "--frames-per-session", 3)
        _refused(proc, str(out_root), "input")
        assert _snapshot(tmp_path) == before  # R/train_img untouched, no output written
    # the library call is guarded too
    from augmem.data.distribute import distribute_ilab

    with pytest.raises(io.OutputError, match="is the input"):
        distribute_ilab(pd.read_csv(csv), src, src, frames_per_session=3)
    assert _snapshot(tmp_path) == before
    proc = _cli("stages.distribute", "--dirmap", csv, "--src", src, "--out-root", tmp_path / "images",
                "--out-dirmap", tmp_path / "out.csv", "--frames-per-session", 3)
    assert proc.returncode == 0, proc.stderr
    assert output_owner(tmp_path / "images") == "distribute" and len(list((tmp_path / "images").rglob("*.jpg"))) == 6


# ------------------------------------------------------------------------------------------------ other stages
def test_filelists_refuses_a_foreign_run_folder(tmp_path):
    from stages import filelists as stage

    rows = [{"class": c, "object": o, "session": s, "im_num": k, "im_path": f"{c}/{o}/{s}/{k}.png"}
            for c in range(4) for o in range(2) for s in range(1, 5) for k in range(3)]
    csv = tmp_path / "d.csv"
    pd.DataFrame(rows).to_csv(csv)
    args = ["--dataset", "toybox", "--dirmap", str(csv), "--scenario", "class_iid", "--runs", "0",
            "--fidelity", "reference", "--test-sess", "4", "--out", str(tmp_path / "out")]
    run0 = tmp_path / "out/toybox_task_filelists/class_iid/run0/stream"
    run0.mkdir(parents=True)
    (run0 / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit, match=r"error: .*run0/stream: existing folder without the"):
        stage.main(args)
    assert [p.name for p in run0.iterdir()] == ["notes.txt"]
    (run0 / "notes.txt").unlink()  # an empty folder is accepted, reruns replace the stage's own output
    stage.main(args)
    stage.main(args)
    assert output_owner(run0) == "filelists" and (run0 / "train_all.txt").is_file()
    with pytest.raises(SystemExit, match="lies inside the input"):
        stage.main(args[:-1] + [str(csv)])


def test_stale_temporary_of_a_killed_stage_removed_live_one_kept(tmp_path):
    from stages import demo_data

    out = tmp_path / "cifar"
    host = io._host()
    stale = tmp_path / f".cifar.{host}.{_dead_pid()}.k1ll3d.tmp"
    live = tmp_path / f".cifar.{host}.{os.getppid()}.running.tmp"  # a live process (pytest's parent)
    for d in (stale, live):
        (d / "out" / "train").mkdir(parents=True)
    args = ["--kind", "cifar100", "--out", str(out), "--cifar-classes", "apple,bicycle", "--train-per-class", "2",
            "--test-per-class", "1", "--image-size", "8", "--jobs", "1"]
    demo_data.main(args)
    assert not stale.exists() and live.exists()
    assert output_owner(out) == "demo_data"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["cifar", live.name])
    (out / "train" / "apple" / "0001.png").unlink()
    demo_data.main(args)  # its own earlier output is replaced
    assert (out / "train" / "apple" / "0001.png").is_file()


def test_unwritable_output_fails_before_compute(tmp_path, monkeypatch, capsys):
    from stages import pretrain as stage

    def no_compute(*a, **k):
        raise AssertionError("compute started before the output was checked")

    monkeypatch.setattr(stage, "load_images", no_compute)
    monkeypatch.setattr(stage, "pretrain", no_compute)
    monkeypatch.setattr(stage, "read_csv_checked", no_compute)
    blocker = tmp_path / "weights"
    blocker.write_text("a file, not a folder")
    out = blocker / "squeezenet.pth"
    with pytest.raises(SystemExit, match=r"error: .*squeezenet\.pth: output location is not writable: .*weights is a "
                                         r"file, not a folder"):
        stage.main(["--dirmap", str(tmp_path / "d.csv"), "--image-root", str(tmp_path / "frames"), "--out", str(out)])
    assert blocker.read_text() == "a file, not a folder"


def test_train_checks_out_before_compute(tmp_path, monkeypatch):
    from augmem.train import loop
    from stages import train as stage

    monkeypatch.setattr(loop, "run_stream", lambda *a, **k: pytest.fail("training started"))
    filelists, images = tmp_path / "run0", tmp_path / "images"
    filelists.mkdir()
    images.mkdir()
    (tmp_path / "blocker").write_text("x")
    hp = json.dumps({"impl": "Naive", "n_class": 2})
    base = ["--dataset", "d", "--scenario", "iid", "--agent", "a", "--run", "0", "--fidelity", "reference",
            "--filelists", str(filelists), "--image-root", str(images), "--hparams", hp, "--device", "cpu"]
    with pytest.raises(SystemExit, match=r"error: .*blocker/r0/metrics\.json: output location is not writable"):
        stage.main(base + ["--out", str(tmp_path / "blocker" / "r0")])
    with pytest.raises(SystemExit, match=r"error: .*the output lies inside the input .*images"):
        stage.main(base + ["--out", str(images / "r0")])
    with pytest.raises(SystemExit, match=r"error: .*the output contains the input .*cache/img_32\.u8"):
        stage.main(base + ["--out", str(tmp_path / "cache"), "--image-cache", str(tmp_path / "cache" / "img_32")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker", "images", "run0"]  # nothing created


def test_read_only_output_folder_fails_before_compute(tmp_path, read_only_dir):
    from stages import dirmap_stats

    with pytest.raises(SystemExit, match=r"error: .*stats\.json: output location is not writable"):
        dirmap_stats.main(["--dirmap", str(tmp_path / "missing.csv"), "--out", str(read_only_dir / "stats.json")])


def test_figures_into_its_input_folder_is_refused(tmp_path):
    """The figure folder is written file by file: it must not be (or hold) one of the tables it reads."""
    from stages import figures

    tables = tmp_path / "tables"
    tables.mkdir()
    for name in ("runs.csv", "summary.csv", "per_task.csv"):
        (tables / name).write_text("x\n")
    before = {p.name: p.read_bytes() for p in tables.iterdir()}
    with pytest.raises(SystemExit) as exc:
        figures.main(["--runs", str(tables / "runs.csv"), "--summary", str(tables / "summary.csv"),
                      "--per-task", str(tables / "per_task.csv"), "--out-dir", str(tables)])
    assert str(exc.value).startswith("error: ") and str(tables) in str(exc.value)
    assert {p.name: p.read_bytes() for p in tables.iterdir()} == before
