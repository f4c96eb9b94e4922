"""Nothing injected: a raw-data root whose name has spaces, single quotes and `$(touch PWNED)` is one literal
argument in every command, through Snakemake and through `dvc repro` (from a regenerated dvc.yaml). Unquoted (the
rules before `:q`), the dirmap job ran `touch PWNED` in the working copy."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from augmem.data.demo import make_core50

from .helpers import BIN, copy_repo, env, snakemake

DATASET = "core50_quoted"
ROOT = "data/raw/a 'quoted' $(touch PWNED) root"  # relative to the working copy; unquoted, the shell runs it
CONFIG = {
    "datasets": [DATASET], "scenarios": ["class_iid"], "fidelities": ["reference"], "runs": 1,
    "train": {"datasets": [DATASET], "scenarios": ["class_iid"], "agents": ["lower_bound"], "runs": 1,
              "device": "cpu", "threads": 1, "seed_base": 0},
    "roots": {DATASET: ROOT},
}
METRICS = f"results/{DATASET}/reference/class_iid/lower_bound/run0/metrics.json"


def _run(cmd, cwd, timeout=1800):
    proc = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}"
    return proc


def _working_copy(dest: Path, raw: Path) -> Path:
    """A copy of the repository with a non-demo CORe50-layout dataset (the demo's facts, demo: false, no pre-trained
    weights) whose raw root is ROOT, holding the demo's CORe50 images; CONFIG merged into params/default.yaml."""
    work = copy_repo(dest)
    datasets = yaml.safe_load((work / "params/datasets.yaml").read_text())
    entry = json.loads(json.dumps(datasets["core50_demo"]))
    entry["demo"] = False
    entry["hp"] = {**entry["hp"], "weights": "none", "visualize": False}
    entry.pop("agent_hp", None)
    datasets[DATASET] = entry
    (work / "params/datasets.yaml").write_text(yaml.safe_dump(datasets, sort_keys=False))
    default = yaml.safe_load((work / "params/default.yaml").read_text())
    default.update(CONFIG)
    (work / "params/default.yaml").write_text(yaml.safe_dump(default, sort_keys=False))
    shutil.copytree(raw, work / ROOT)
    return work


def _no_pwned(*roots: Path) -> None:
    hits = [os.path.join(d, f) for r in roots for d, _, files in os.walk(r) for f in files if f == "PWNED"]
    assert not hits, f"a path was run as shell code: {hits}"


@pytest.mark.slow
@pytest.mark.timeout(3000)
def test_hostile_raw_root_through_snakemake_and_dvc(tmp_path):
    raw = tmp_path / "raw"
    make_core50(raw, seed=0, jobs=2)

    # Snakemake: data set-up, one training job, the results
    snk = _working_copy(tmp_path / "snakemake", raw)
    snakemake(snk)
    assert (snk / METRICS).is_file() and (snk / "results/table.md").is_file()
    log = (snk / f"logs/dirmap/{DATASET}.log").read_text()
    assert "rows" in log, log

    # DVC: the copy's own dvc.yaml, generated from its DAG; every command word quoted
    d = _working_copy(tmp_path / "dvc", raw)
    _run([sys.executable, "workflow/scripts/make_dvc.py"], d, timeout=300)
    assert "$(touch PWNED)" in (d / "dvc.yaml").read_text()
    _run(["git", "init", "-q"], d)
    _run(["git", "-c", "user.email=ci@example.com", "-c", "user.name=ci", "add", "-A"], d)
    _run(["git", "-c", "user.email=ci@example.com", "-c", "user.name=ci", "commit", "-qm", "quoted root"], d)
    _run([str(BIN / "dvc"), "repro"], d, timeout=2400)
    assert "Data and pipelines are up to date" in _run([str(BIN / "dvc"), "status"], d).stdout

    a, b = (json.loads((w / METRICS).read_text()) for w in (snk, d))
    assert a["test_all"] == b["test_all"] and a["hparams"] == b["hparams"]
    _no_pwned(tmp_path, Path.cwd(), Path(__file__).resolve().parents[2])
