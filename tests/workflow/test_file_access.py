"""Nothing lost: every file a job of the demo slice reads lies in its declared inputs and every file it leaves
written lies in its declared outputs (or its log / benchmark), by the file-access audit of the slice run
(augmem.audit, switched on by the slice_run fixture)."""
from __future__ import annotations

import os
import shlex
import tempfile
from pathlib import Path

import pytest

from augmem.audit import job_effects, read_log

from .helpers import REPO, audit_log, dry_run_jobs, snakemake

# outside the working copy: the interpreter's and the system's files, library caches, temporary files, the augmem
# sources (editable install); anything else outside (e.g. the repository's own params/ or data/) is a finding
ALLOWED_OUTSIDE = ("/usr/", "/etc/", "/lib/", "/lib64/", "/bin/", "/sbin/", "/opt/", "/var/", "/run/",
                   str(Path.home() / ".cache") + "/", str(Path.home() / ".config") + "/",
                   os.path.realpath(tempfile.gettempdir()) + "/", str(REPO / "src") + "/")
# inside the working copy: the code the stages import (not data)
CODE = ("stages", "src", ".snakemake")


def _under(path: str, roots) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def _ancestor(path: str, paths) -> bool:
    return any(p.startswith(path.rstrip("/") + "/") for p in paths)


def _checked(path: str, work: str) -> bool:
    """Whether a path is data the rules must declare (False: code, system, caches, temporary files)."""
    if _under(path, [work]):
        return not _under(path, [os.path.join(work, c) for c in CODE])
    return not path.startswith(ALLOWED_OUTSIDE)


def _abs(work: str, paths) -> list[str]:
    return [os.path.normpath(os.path.join(work, p)) for p in paths]


def undeclared(work: Path, job: dict, effects: dict) -> list[str]:
    """The job's reads and writes that its declaration does not cover, as readable findings."""
    w = os.path.realpath(work)
    inputs, outputs = _abs(w, job["input"]), _abs(w, job["output"])
    extra = _abs(w, job["log"] + job["benchmark"])
    created = effects["created"]
    found = []
    for p in sorted(effects["writes"]):
        if _checked(p, w) and not (_under(p, outputs + extra) or _ancestor(p, outputs + extra)):
            found.append(f"writes undeclared {p}")
    for p in sorted(effects["removed"]):
        if _checked(p, w) and not _under(p, outputs):
            found.append(f"removes undeclared {p}")
    for p in sorted(effects["reads"]):
        if _checked(p, w) and not (_under(p, inputs + outputs) or _ancestor(p, inputs + outputs)
                                   or _under(p, created)):
            found.append(f"reads undeclared {p}")
    return [f.replace(w + "/", "") for f in found]


@pytest.mark.slow
@pytest.mark.timeout(3000)
def test_every_job_reads_and_writes_only_what_it_declares(slice_run):
    work, cfg = slice_run
    # the jobs with their declared inputs, outputs, log and benchmark, as Snakemake prints them (--cores 2: the
    # same commands as the slice run)
    jobs = {tuple(shlex.split(j["shell"])[1:-3]): j
            for j in dry_run_jobs(snakemake(work, "--configfile", str(cfg), "-n", "-p", "--forceall"))
            if j["rule"] != "all"}
    events = read_log(audit_log(work))
    effects = job_effects(events)
    unknown = [" ".join(k[:3]) for k in effects if k not in jobs]
    assert not unknown, f"audited processes that are no job of the slice: {unknown}"
    silent = [j["rule"] for k, j in jobs.items() if k not in effects]
    assert not silent, f"jobs without audit events (did the audit run?): {silent}"
    findings = {}
    for key, job in jobs.items():
        bad = undeclared(work, job, effects[key])
        if bad:
            findings[f"{job['rule']} -> {job['output'][0]}"] = bad[:20]
    assert not findings, "undeclared file accesses:\n" + "\n".join(
        f"{name}:\n  " + "\n  ".join(bad) for name, bad in findings.items())
    # the audit saw the essentials: training wrote both declared files, figures read every viz.npz
    train = [(k, j) for k, j in jobs.items() if j["rule"] == "train"]
    w = os.path.realpath(work)
    for key, job in train:
        assert set(_abs(w, job["output"])) <= effects[key]["writes"], job["output"]
    (fig_key, fig), = [(k, j) for k, j in jobs.items() if j["rule"] == "figures"]
    assert {p for p in _abs(w, fig["input"]) if p.endswith("viz.npz")} <= effects[fig_key]["reads"]
