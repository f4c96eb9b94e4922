"""Reference LwF's shared feature extractor (spec 14.5 q32, switch lwf_shared_backbone): job r trains runs 0..r-1
first (``stages.train --previous-runs``) and starts from the feature extractor they leave."""
from __future__ import annotations

import json
import shutil

import pytest

from stages.train import main

HP = {"impl": "LwF", "n_class": 4, "family": None, "n_epoch_first_task": 2, "batch_size": 4, "n_workers": 0,
      "lr": 0.05}


def _job(image_root, runs, run, out, fidelity="reference", previous=(), hp=HP):
    argv = ["--dataset", "tiny", "--scenario", "class_iid", "--agent", "lwf", "--run", str(run), "--fidelity",
            fidelity, "--filelists", str(runs / f"run{run}"), "--image-root", str(image_root), "--out", str(out),
            "--hparams", json.dumps(hp), "--device", "cpu", "--threads", "1"]
    if previous:
        argv += ["--previous-runs", *[str(runs / f"run{k}") for k in previous]]
    assert main(argv) == 0
    return json.loads((out / "metrics.json").read_text())


def test_reference_lwf_job_continues_from_the_previous_runs(tiny_files, tmp_path, capsys):
    image_root, run0 = tiny_files
    runs = run0.parent
    shutil.copytree(run0, runs / "run1")
    first = _job(image_root, runs, 0, tmp_path / "r0")
    chained = _job(image_root, runs, 1, tmp_path / "r1", previous=[0])
    out = capsys.readouterr().out
    assert "[previous run 0] task 2/2 done" in out
    # the previous run is run 0 exactly (same filelists, its own seed), and its numbers are no output of job 1
    prev = [ln.split("] ", 1)[1] for ln in out.splitlines() if ln.startswith("[previous run 0] task") and "done" in ln]
    assert prev == [f"task {t + 1}/2 done: test_all acc={first['test_all']['acc'][t]:.1f} "
                    f"test_first acc={first['test_first']['acc'][t]:.1f}" for t in range(2)]
    assert not [p.name for p in tmp_path.iterdir() if "previous-run" in p.name]  # its temporary folder is gone
    assert sorted(p.name for p in (tmp_path / "r1").iterdir()) == ["metrics.json", "viz.npz"]
    assert chained["meta"]["previous_runs"] == ["run0"]
    assert any("q32" in n for n in chained["meta"]["notes"])
    # without the chain (the switch off) run 1 starts from a fresh network: other numbers
    fresh = _job(image_root, runs, 1, tmp_path / "f1",
                 hp=dict(HP, switch_overrides={"lwf_shared_backbone": False}))
    assert "previous_runs" not in fresh["meta"]
    assert fresh["epochs"]["test_all"] != chained["epochs"]["test_all"]


def test_previous_runs_must_be_runs_0_to_r_minus_1(tiny_files, tmp_path):
    image_root, run0 = tiny_files
    runs = run0.parent
    for k in (1, 2):
        shutil.copytree(run0, runs / f"run{k}")
    with pytest.raises(SystemExit, match=r"needs the folders of runs 0..1 in order"):
        _job(image_root, runs, 2, tmp_path / "a", previous=[1, 0])
    with pytest.raises(SystemExit, match=r"needs the folders of runs 0..0"):
        _job(image_root, runs, 1, tmp_path / "b")
    with pytest.raises(SystemExit, match="does not continue from earlier runs"):
        _job(image_root, runs, 1, tmp_path / "c", fidelity="corrected", previous=[0])
