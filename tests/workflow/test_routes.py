"""One job, three routes: Snakemake (resolved hyperparameters passed as --hparams), the command line resolving them
itself from params/ plus the same config file (`--config`, which is what `dvc repro` runs; the DVC route is compared
in test_dvc.py), give the same hyperparameters, the same job fingerprint and the same numbers. Execution-only
settings (loader workers) change nothing, not even the fingerprint."""
from __future__ import annotations

import json
import shlex
import subprocess
import sys

import pytest

from .helpers import SLICE_RESULTS, dry_run_jobs, env, snakemake


def _metrics(path):
    m = json.loads(path.read_text())
    m.pop("timing")
    return m


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_command_line_resolves_what_snakemake_passes(slice_run, tmp_path):
    work, cfg = slice_run
    rel = SLICE_RESULTS[1]  # AugMem: the slice's non-default hparam_overrides apply to it
    proc = snakemake(work, "--configfile", str(cfg), "-n", "-p", "--forcerun", f"{rel}/metrics.json",
                     f"{rel}/metrics.json")
    job = next(j for j in dry_run_jobs(proc) if j["rule"] == "train")
    words = shlex.split(job["shell"])
    words = words[: words.index(">")]  # the log redirection
    i = words.index("--hparams")
    words = words[:i] + words[i + 2:] + ["--config", str(cfg)]
    o = words.index("--out")
    for name, extra in (("cli", []), ("cli_workers", ["--n-workers", "2"])):
        argv = [sys.executable if w == "python" else w for w in words]
        argv[o + 1] = str(tmp_path / name)
        res = subprocess.run(argv + extra, cwd=work, env=env(), capture_output=True, text=True, timeout=900)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    snk = _metrics(work / rel / "metrics.json")
    cli = _metrics(tmp_path / "cli" / "metrics.json")
    assert cli["hparams"] == snk["hparams"] and cli["hparams"]["n_epoch_first_task"] == 2  # the slice's override
    assert cli["meta"]["fingerprint"] == snk["meta"]["fingerprint"]
    assert cli == snk
    workers = _metrics(tmp_path / "cli_workers" / "metrics.json")
    assert workers["hparams"]["n_workers"] == 2 and workers["meta"]["fingerprint"] == snk["meta"]["fingerprint"]
    for key in ("test_all", "test_first", "acc_matrix"):
        assert workers[key] == snk[key]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_changing_loader_workers_reruns_nothing(slice_run, tmp_path):
    """n_workers is execution-only: not in the params Snakemake compares (a resource instead), not in the job
    fingerprint, so a finished slice stays finished when it changes."""
    import yaml

    from .helpers import SLICE

    work, _ = slice_run
    cfg = tmp_path / "workers.yaml"
    changed = json.loads(json.dumps(SLICE))
    changed["hparam_overrides"] = {**changed["hparam_overrides"], "all": {"n_workers": 2}}
    cfg.write_text(yaml.safe_dump(changed))
    proc = snakemake(work, "--configfile", str(cfg), "-n")
    assert "Nothing to be done" in proc.stdout + proc.stderr, proc.stdout[-3000:]
