"""The demo workflow through Snakemake: dry run of the default DAG, lint, and a real run of a small slice
(every data step of the four demo datasets, two training jobs, results), then incremental behaviour."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SNAKEMAKE = str(BIN / "snakemake")


def env():
    e = dict(os.environ)
    e["PATH"] = f"{BIN}:{e.get('PATH', '')}"
    return e


def snakemake(cwd: Path, *args: str, check: bool = True, timeout: int = 1800) -> subprocess.CompletedProcess:
    proc = subprocess.run([SNAKEMAKE, "--cores", "2", *args], cwd=cwd, env=env(), capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {args} failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}")
    return proc


def copy_repo(dest: Path) -> Path:
    """The tracked files of the repository (what a fresh clone has), without outputs of earlier runs."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for f in filter(None, files):
        src = REPO / f
        if src.is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / f)
    return dest


def planned_jobs(proc: subprocess.CompletedProcess) -> dict[str, int]:
    """Job counts per rule from a dry run's 'Job stats' table."""
    counts, on = {}, False
    for line in proc.stdout.splitlines():
        if line.startswith("job ") and "count" in line:
            on = True
            continue
        if on:
            parts = line.split()
            if not parts or parts[0] == "total":
                break
            if parts[0].startswith("-"):
                continue
            counts[parts[0]] = int(parts[1])
    return counts


def test_default_dag_dry_run():
    proc = snakemake(REPO, "-n", "--forceall")
    jobs = planned_jobs(proc)
    for rule in ("demo_data", "extract_frames", "dirmap", "sample_toybox", "sample_ilab", "distribute_ilab",
                 "dirmap_stats", "filelists", "demo_weights", "train", "aggregate", "results_table", "figures"):
        assert jobs.get(rule, 0) >= 1, f"rule {rule} missing from the default DAG: {jobs}"
    # 12 agents x 2 scenarios x 2 runs on the CORe50-like demo
    assert jobs["train"] == 48


def test_lint_is_clean():
    proc = snakemake(REPO, "--lint", check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Lints for rule" not in proc.stdout and "Lints for snakefile" not in proc.stdout, proc.stdout


def test_bad_config_key_is_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("runz: 3\n")
    proc = snakemake(REPO, "-n", "--configfile", str(bad), check=False)
    assert proc.returncode != 0
    assert "runz" in proc.stdout + proc.stderr


SLICE = {
    "datasets": ["core50_demo", "toybox_demo", "ilab2mlight_demo", "cifar100_demo"],
    "scenarios": ["class_iid"],
    "fidelities": ["reference"],
    "runs": 1,
    "train": {"datasets": ["core50_demo"], "scenarios": ["class_iid"], "agents": ["lower_bound", "augmem"],
              "runs": 1, "device": "cpu", "threads": 1, "seed_base": 0},
    "hparam_overrides": {"augmem": {"n_epoch_first_task": 2}},
}


@pytest.mark.slow
@pytest.mark.timeout(3000)
def test_demo_slice_end_to_end_and_incremental(tmp_path):
    work = copy_repo(tmp_path / "repo")
    cfg = tmp_path / "slice.yaml"
    cfg.write_text(yaml.safe_dump(SLICE))
    snakemake(work, "--configfile", str(cfg))
    # every data step produced its outputs, the filelists are in the original layout
    for ds in SLICE["datasets"]:
        stats = json.loads((work / f"data/interim/{ds}/dirmap_stats.json").read_text())
        assert stats["n_images"] > 0
        run0 = work / f"data/interim/{ds}/filelists/reference/{ds}_task_filelists/class_iid/run0"
        for mode in ("stream", "offline"):
            assert (run0 / mode / "train_all.txt").is_file() and (run0 / mode / "test_filelist.txt").is_file()
            assert (run0 / mode / "train_task_00_filelist.txt").is_file()
    for agent in ("lower_bound", "augmem"):
        m = json.loads((work / f"results/core50_demo/reference/class_iid/{agent}/run0/metrics.json").read_text())
        assert len(m["test_all"][m["primary_path"]]) == 3
    assert (work / "results/table.md").is_file() and (work / "results/figures/index.json").is_file()

    # a second invocation does nothing
    proc = snakemake(work, "--configfile", str(cfg), "-n")
    assert "Nothing to be done" in proc.stdout, proc.stdout[-3000:]

    # changing one agent's hyperparameter re-runs only that agent's job and the aggregation
    changed = dict(SLICE, hparam_overrides={"augmem": {"n_epoch_first_task": 2, "memory_size": 100}})
    cfg2 = tmp_path / "slice2.yaml"
    cfg2.write_text(yaml.safe_dump(changed))
    jobs = planned_jobs(snakemake(work, "--configfile", str(cfg2), "-n"))
    assert jobs.get("train") == 1, jobs
    assert set(jobs) <= {"train", "aggregate", "results_table", "figures", "all"}, jobs
    planned = snakemake(work, "--configfile", str(cfg2), "-n").stdout
    train_outputs = [l for l in planned.splitlines()
                     if l.strip().startswith("output: results/") and l.strip().endswith("/metrics.json") and "/run" in l]
    assert len(train_outputs) == 1 and "/augmem/" in train_outputs[0], train_outputs

    # changing one data parameter (the iLab balance seed) re-runs only that dataset's downstream steps
    ds_params = yaml.safe_load((work / "params/datasets.yaml").read_text())
    ds_params["ilab2mlight_demo"]["balance"]["seed"] = 1
    (work / "params/datasets.yaml").write_text(yaml.safe_dump(ds_params, sort_keys=False))
    jobs = planned_jobs(snakemake(work, "--configfile", str(cfg), "-n"))
    assert set(jobs) <= {"sample_ilab", "distribute_ilab", "dirmap_stats", "filelists", "all"}, jobs
    assert jobs.get("sample_ilab") == 1 and jobs.get("filelists") == 1, jobs
