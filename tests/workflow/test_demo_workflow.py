"""The demo workflow through Snakemake: dry run of the default DAG, lint, and a real run of a small slice
(every data step of the four demo datasets, two training jobs, results), then incremental behaviour."""
from __future__ import annotations

import json

import pytest
import yaml

from .helpers import (KILLED_JOB, REPO, SLICE, SNAKEMAKE, assert_same_training_results, copy_repo, dry_run_jobs,
                      kill_when_checkpointed, planned_jobs, snakemake)


def test_default_dag_dry_run():
    proc = snakemake(REPO, "-n", "--forceall")
    jobs = planned_jobs(proc)
    for rule in ("demo_data", "extract_frames", "dirmap", "sample_toybox", "sample_ilab", "distribute_ilab",
                 "dirmap_stats", "filelists", "demo_weights", "train", "aggregate", "results_table", "figures"):
        assert jobs.get(rule, 0) >= 1, f"rule {rule} missing from the default DAG: {jobs}"
    # 14 agents (11 of the study, 3 external baselines) x 2 scenarios x 1 run on the CORe50-like demo
    assert jobs["train"] == 28


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


def test_bad_hyperparameter_stops_the_workflow_naming_agent_key_and_source(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"hparam_overrides": {"agem": {"memroy_size": 60}, "augmem": {"lr": "1e-4"}}}))
    proc = snakemake(REPO, "-n", "--configfile", str(bad), check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "agent agem (AGEM): memroy_size (from config: hparam_overrides.agem): unknown hyperparameter; did you " \
           "mean 'memory_size'?" in out
    assert "agent augmem (AugMem): lr = '1e-4' (from config: hparam_overrides.augmem)" in out


def test_a_job_asked_for_by_its_path_is_resolved(tmp_path):
    """A training job outside the configured agents (an ablation) can be built by naming its output."""
    target = "results/core50_demo/reference/class_iid/augmem_memslot50/run0/metrics.json"
    proc = snakemake(REPO, "-n", "-p", target)
    job = next(j for j in dry_run_jobs(proc) if j["rule"] == "train")
    assert '"memory_Nslots": 50' in job["shell"]


@pytest.mark.slow
@pytest.mark.timeout(3000)
def test_demo_slice_end_to_end_and_incremental(slice_run, tmp_path):
    work, cfg = slice_run
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
    planned = dry_run_jobs(snakemake(work, "--configfile", str(cfg2), "-n"))
    train_outputs = [j["output"] for j in planned if j["rule"] == "train"]
    assert len(train_outputs) == 1 and all("/augmem/run0/" in o for o in train_outputs[0]), train_outputs

    # changing one data parameter (the iLab balance seed) re-runs only that dataset's downstream steps
    # (on the shared slice: the original file is put back, only dry runs see the change)
    path = work / "params/datasets.yaml"
    original = path.read_text()
    ds_params = yaml.safe_load(original)
    ds_params["ilab2mlight_demo"]["balance"]["seed"] = 1
    path.write_text(yaml.safe_dump(ds_params, sort_keys=False))
    try:
        jobs = planned_jobs(snakemake(work, "--configfile", str(cfg), "-n"))
    finally:
        path.write_text(original)
    assert set(jobs) <= {"sample_ilab", "distribute_ilab", "dirmap_stats", "filelists", "all"}, jobs
    assert jobs.get("sample_ilab") == 1 and jobs.get("filelists") == 1, jobs


@pytest.mark.slow
@pytest.mark.timeout(3000)
def test_killed_snakemake_reruns_to_the_uninterrupted_results(slice_run, tmp_path):
    """SIGKILL snakemake and its running training job mid-way: no output looks complete, and a plain rerun resumes
    the job from its last per-task checkpoint and ends with exactly the results of the uninterrupted run."""
    reference, cfg = slice_run
    work = copy_repo(tmp_path / "repo")
    kill_when_checkpointed([SNAKEMAKE, "--cores", "2", "--configfile", str(cfg)], work, KILLED_JOB)
    # SIGKILL leaves Snakemake's directory lock behind (SIGINT/SIGTERM release it): unlock, as its message says. When
    # the other training job happened to finish just before the kill, Snakemake first names its outputs as incomplete
    # (never marked done): rerun with --rerun-incomplete, as the default profile (`make demo`) does anyway
    refused = snakemake(work, "--configfile", str(cfg), check=False)
    said = refused.stdout + refused.stderr
    assert refused.returncode != 0 and ("--unlock" in said or "--rerun-incomplete" in said), said[-3000:]
    snakemake(work, "--configfile", str(cfg), "--unlock")
    snakemake(work, "--configfile", str(cfg), "--rerun-incomplete")
    log = (work / "logs/train/core50_demo/reference/class_iid/augmem/run0.log").read_text()
    assert "resuming from" in log, log[-3000:]
    assert not (work / KILLED_JOB / "checkpoint.pt").exists()
    assert_same_training_results(reference, work, "killed and rerun vs uninterrupted Snakemake")
    assert "Nothing to be done" in snakemake(work, "--configfile", str(cfg), "-n").stdout
