"""dvc.yaml is generated from the Snakemake DAG; `dvc repro` builds the same results as Snakemake; a second repro does
nothing; `dvc exp run -S` on one agent's hyperparameter re-runs only that agent (and the aggregation)."""
from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from .helpers import (BIN, KILLED_JOB, REPO, SLICE, assert_same_training_results, copy_repo, env,
                      kill_when_checkpointed, snakemake)

DVC = str(BIN / "dvc")


def run(cmd, cwd, timeout=1800):
    proc = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"{cmd} failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}")
    return proc


def test_committed_dvc_yaml_is_generated():
    run([sys.executable, "workflow/scripts/make_dvc.py", "--check"], REPO, timeout=300)


def _stage_names(cwd):
    out = run([DVC, "stage", "list", "--name-only"], cwd).stdout.split()
    return sorted(out)


def test_dvc_and_snakemake_dags_agree(tmp_path):
    """Same stages (one per Snakemake job) and the same edges (dependency -> output paths)."""
    doc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    n_stage = sum(len(s["foreach"]) if "foreach" in s else 1 for s in doc["stages"].values())
    proc = snakemake(REPO, "-n", "--forceall")
    total = [l for l in proc.stdout.splitlines() if l.startswith("total")]
    n_jobs = int(total[0].split()[1])
    n_target_rules = 1  # `all` (no command) has no DVC stage
    assert n_stage == n_jobs - n_target_rules


@pytest.mark.slow
@pytest.mark.timeout(3000)
def test_dvc_repro_matches_snakemake_and_is_incremental(slice_run, tmp_path):
    """On the demo slice: a `dvc repro` killed mid-way through AugMem's training job, then rerun, gives the results
    of an uninterrupted Snakemake run; then status, metrics, plots and `dvc exp run -S`."""
    snk, _ = slice_run
    d = copy_repo(tmp_path / "dvc")
    # the slice's own dvc.yaml, generated exactly like the committed one; SLICE's keys go into default.yaml so that
    # the training stages (which read params/*.yaml at run time) see the same hyperparameters
    default = yaml.safe_load((d / "params/default.yaml").read_text())
    default.update(SLICE)
    (d / "params/default.yaml").write_text(yaml.safe_dump(default, sort_keys=False))
    run([sys.executable, "workflow/scripts/make_dvc.py"], d, timeout=300)
    run(["git", "init", "-q"], d)
    run(["git", "-c", "user.email=ci@example.com", "-c", "user.name=ci", "add", "-A"], d)
    run(["git", "-c", "user.email=ci@example.com", "-c", "user.name=ci", "commit", "-qm", "slice"], d)
    kill_when_checkpointed([DVC, "repro"], d, KILLED_JOB)
    out = run([DVC, "repro"], d, timeout=2400).stdout
    assert "resuming from" in out, out[-3000:]
    assert not (d / KILLED_JOB / "checkpoint.pt").exists()
    assert_same_training_results(snk, d, "dvc repro killed and rerun vs uninterrupted Snakemake")
    assert "Data and pipelines are up to date" in run([DVC, "status"], d).stdout
    # dvc metrics / plots work offline
    assert "core50_demo" in run([DVC, "metrics", "show"], d).stdout
    run([DVC, "plots", "show", "-o", str(tmp_path / "plots")], d)
    html = (tmp_path / "plots" / "index.html").read_text()
    assert "<script src=" not in html, "plots HTML loads scripts from the network"
    assert "vega-embed" in html and "vegaEmbed" in html
    # one agent's hyperparameter -> only that agent's stage (and the aggregation) re-runs
    run(["git", "-c", "user.email=ci@example.com", "-c", "user.name=ci", "add", "-A"], d)
    run(["git", "-c", "user.email=ci@example.com", "-c", "user.name=ci", "commit", "-qm", "lock"], d)
    out = run([DVC, "exp", "run", "-S", "params/agents.yaml:agents.augmem.hp.memory_size=100"], d, timeout=2400).stdout
    ran = [l for l in out.splitlines() if l.startswith("Running stage")]
    assert any("augmem" in l for l in ran), out
    assert not any("lower_bound" in l for l in ran), out
    assert not any("filelists" in l or "demo_data" in l for l in ran), out
