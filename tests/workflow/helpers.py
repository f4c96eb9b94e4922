"""Shared machinery of the workflow tests: running Snakemake on a copy of the repository, the demo slice they build,
and a killed-then-resumed run."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SNAKEMAKE = str(BIN / "snakemake")


def env(**extra: str):
    e = dict(os.environ)
    e["PATH"] = f"{BIN}:{e.get('PATH', '')}"
    e.update(extra)
    return e


def snakemake(cwd: Path, *args: str, check: bool = True, timeout: int = 1800,
              extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([SNAKEMAKE, "--cores", "2", *args], cwd=cwd, env=env(**(extra_env or {})),
                          capture_output=True, text=True, timeout=timeout)
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


def dry_run_jobs(proc: subprocess.CompletedProcess) -> list[dict]:
    """The jobs of a dry run with -p (`snakemake -n -p`), as Snakemake prints them: rule, input, output, log and
    benchmark paths and the shell command. (Snakemake joins a job's paths with ", ": paths containing ", " would be
    split wrongly, which the workflows tested here do not have.)"""
    jobs, job = [], None
    for line in proc.stdout.splitlines():
        head = line.strip()
        if line.startswith(("rule ", "localrule ")) and head.endswith(":"):
            job = {"rule": head.split()[1].rstrip(":"), "input": [], "output": [], "log": [], "benchmark": [],
                   "shell": None}
            jobs.append(job)
        elif job is not None and line.startswith("    ") and head.split(":", 1)[0] in ("input", "output", "log",
                                                                                       "benchmark"):
            key, value = head.split(": ", 1)
            job[key] = value.split(", ")
        elif job is not None and line.startswith("Shell command: "):
            job["shell"] = line[len("Shell command: "):]
        elif not line.strip():
            job = None
    return jobs


SLICE = {
    "datasets": ["core50_demo", "toybox_demo", "ilab2mlight_demo", "cifar100_demo"],
    "scenarios": ["class_iid"],
    "fidelities": ["reference"],
    "runs": 1,
    "train": {"datasets": ["core50_demo"], "scenarios": ["class_iid"], "agents": ["lower_bound", "augmem"],
              "runs": 1, "device": "cpu", "threads": 1, "seed_base": 0},
    "hparam_overrides": {"augmem": {"n_epoch_first_task": 2}},
}


def audit_log(work: Path) -> Path:
    """Where the slice run's file-access audit (augmem.audit) goes: next to the working copy, not inside it."""
    return work.parent / "audit.jsonl"


SLICE_RESULTS = [f"results/core50_demo/reference/class_iid/{agent}/run0" for agent in ("lower_bound", "augmem")]
# AugMem's job (3 tasks, the first with 2 epochs) is the one killed: it checkpoints after every task
KILLED_JOB = "results/core50_demo/reference/class_iid/augmem/run0"


def assert_same_training_results(a: Path, b: Path, what: str) -> None:
    """The slice's per-run results agree between two working copies (timings aside)."""
    for rel in SLICE_RESULTS:
        ma = json.loads((a / rel / "metrics.json").read_text())
        mb = json.loads((b / rel / "metrics.json").read_text())
        for key in ("test_all", "test_first", "acc_matrix", "hparams", "switches"):
            assert ma[key] == mb[key], f"{rel}: {key} differs ({what})"
        assert ma["meta"]["fingerprint"] == mb["meta"]["fingerprint"], f"{rel}: job fingerprints differ ({what})"


def kill_when_checkpointed(cmd: list[str], cwd: Path, job_dir: str, timeout: float = 1800) -> None:
    """Start cmd in its own process group, wait until the training job in job_dir has written its first per-task
    checkpoint (so the job is mid-way), then SIGKILL the whole group: the workflow manager and its running job."""
    ckpt = cwd / job_dir / "checkpoint.pt"
    log = open(cwd.parent / f"{cwd.name}-killed.log", "w")
    proc = subprocess.Popen(cmd, cwd=cwd, env=env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    start = time.monotonic()
    try:
        while not ckpt.exists():
            if proc.poll() is not None:
                raise AssertionError(f"{cmd} ended (rc {proc.returncode}) before {ckpt} appeared; see {log.name}")
            if time.monotonic() - start > timeout:
                raise AssertionError(f"{ckpt} did not appear within {timeout} s")
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()
    assert not (cwd / job_dir / "metrics.json").exists(), "the killed job left a metrics.json"
