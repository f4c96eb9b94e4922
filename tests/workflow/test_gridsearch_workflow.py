"""A tiny grid search end to end through Snakemake and through `dvc repro`: grid jobs, the ranked summary, the figure,
selected.yaml holding the best point, the main job taking the selected values (hparams: selected) and the results
table saying so; a grown grid re-runs only its new point."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from .helpers import BIN, copy_repo, env, planned_jobs, snakemake

CELL = "results/gridsearch/core50_demo/corrected/class_iid/lower_bound"
MAIN = "results/core50_demo/corrected/class_iid/lower_bound/run0/metrics.json"


def grid_config(lrs):
    return {
        "datasets": ["core50_demo"], "scenarios": ["class_iid"], "fidelities": ["corrected"], "runs": 1,
        "train": {"datasets": ["core50_demo"], "scenarios": ["class_iid"], "agents": ["lower_bound"], "runs": 1,
                  "device": "cpu", "threads": 1, "seed_base": 0},
        # random init: no demo pre-training (and no Toybox demo) needed for this slice
        "hparam_overrides": {"all": {"weights": "none"}},
        "hparams": "selected",
        "gridsearch": {"enabled": True, "runs": 1, "scenarios": ["class_iid"],
                       "grids": {"lower_bound": {"grid": {"lr": lrs}}}},
    }


def _check_grid_outputs(work, points):
    summary = pd.read_csv(work / CELL / "summary.csv")
    assert sorted(summary["point"]) == sorted(points) and summary["rank"].tolist() == list(range(1, len(points) + 1))
    scores = {}
    for pid in points:
        m = json.loads((work / CELL / pid / "run0" / "metrics.json").read_text())
        assert m["hparams"]["holdout_validation"] is True and m["val_all"] is not None
        scores[pid] = sum(m["val_all"]["acc"]) / len(m["val_all"]["acc"])
    best = max(points, key=lambda p: (scores[p], -points.index(p)))
    assert summary["point"].iloc[0] == best
    assert math.isclose(summary["score_mean"].iloc[0], scores[best], rel_tol=0, abs_tol=1e-9)
    assert (work / CELL / "summary_plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    selected = yaml.safe_load((work / CELL / "selected.yaml").read_text())
    assert selected["point"] == best and selected["selection"] == "corrected"
    main = json.loads((work / MAIN).read_text())
    assert main["meta"]["hparams_source"] == "selected"
    assert main["hparams"]["lr"] == selected["hp"]["lr"] and main["hparams"]["holdout_validation"] is True
    return best, summary


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_tiny_grid_search_through_snakemake_and_dvc(tmp_path):
    work = copy_repo(tmp_path / "snk")
    cfg = work / "grid.yaml"
    points = ["lr=1e-4", "lr=1e-2"]
    cfg.write_text(yaml.safe_dump(grid_config([1.0e-4, 1.0e-2])))
    proc = snakemake(work, "--configfile", str(cfg), "-n")
    jobs = planned_jobs(proc)
    assert jobs["gridsearch_train"] == 2 and jobs["gridsearch_summary"] == 1 and jobs["train"] == 1, jobs
    snakemake(work, "--configfile", str(cfg))
    best, _ = _check_grid_outputs(work, points)
    summary = pd.read_csv(work / "results/tables/summary.csv")
    assert summary["hparams_source"].tolist() == ["selected/corrected"]
    assert "¶" in (work / "results/table.md").read_text()

    # a grown grid: only the new point trains (then the summary and what depends on it)
    cfg.write_text(yaml.safe_dump(grid_config([1.0e-4, 1.0e-2, 1.0e-3])))
    jobs = planned_jobs(snakemake(work, "--configfile", str(cfg), "-n"))
    assert jobs["gridsearch_train"] == 1 and jobs["gridsearch_summary"] == 1, jobs

    # the same grid search through dvc repro, in a fresh copy: dvc.yaml generated from the DAG
    d = copy_repo(tmp_path / "dvc")
    dcfg = d / "grid.yaml"
    dcfg.write_text(yaml.safe_dump(grid_config([1.0e-4, 1.0e-2])))
    run = dict(cwd=d, env=env(), capture_output=True, text=True, timeout=1800)
    res = subprocess.run([sys.executable, "workflow/scripts/make_dvc.py", "--configfile", "grid.yaml"], **run)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    stages = yaml.safe_load((d / "dvc.yaml").read_text())["stages"]
    assert any(k.startswith("gridsearch_train") for k in stages) and "gridsearch_summary" in "".join(stages)
    for cmd in (["git", "init", "-q"], ["git", "-c", "user.email=ci@example.com", "-c", "user.name=ci", "add", "-A"],
                ["git", "-c", "user.email=ci@example.com", "-c", "user.name=ci", "commit", "-qm", "grid"]):
        assert subprocess.run(cmd, **run).returncode == 0, cmd
    res = subprocess.run([str(BIN / "dvc"), "repro"], **run)
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-3000:]
    dvc_best, dvc_summary = _check_grid_outputs(d, points)
    assert dvc_best == best
    snk_summary = pd.read_csv(work / CELL / "summary.csv")
    snk_summary = snk_summary[snk_summary["point"].isin(points)].reset_index(drop=True)
    pd.testing.assert_frame_equal(dvc_summary[["point", "score_mean"]], snk_summary[["point", "score_mean"]])
    res = subprocess.run([str(BIN / "dvc"), "status"], **run)
    assert "Data and pipelines are up to date" in res.stdout, res.stdout[-3000:]
