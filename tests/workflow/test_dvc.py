"""dvc.yaml is generated from the Snakemake DAG; `dvc repro` builds the same results as Snakemake; a second repro does
nothing; `dvc exp run -S` on one agent's hyperparameter re-runs only that agent (and the aggregation)."""
from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys

import pytest
import yaml

from .helpers import (BIN, KILLED_JOB, REPO, SLICE, SLICE_RESULTS, assert_same_training_results, copy_repo,
                      dry_run_jobs, env, kill_when_checkpointed, snakemake)

DVC = str(BIN / "dvc")


def run(cmd, cwd, timeout=1800):
    proc = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"{cmd} failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}")
    return proc


def test_committed_dvc_yaml_is_generated():
    run([sys.executable, "workflow/scripts/make_dvc.py", "--check"], REPO, timeout=300)


def _dvc_stages(root):
    """{frozenset(outputs): (stage name, command, deps, params files)} of the dvc.yaml in root, as DVC resolves it."""
    from dvc.repo import Repo

    from dvc.dependency.param import ParamsDependency

    stages = {}
    with Repo(str(root)) as repo:
        for st in repo.index.stages:
            outs = frozenset(o.def_path for o in st.outs)  # metrics and plots are outputs too
            deps = [d.def_path for d in st.deps if not isinstance(d, ParamsDependency)]
            params = sorted(d.def_path for d in st.deps if isinstance(d, ParamsDependency))
            assert outs not in stages, f"two DVC stages write {sorted(outs)}"
            stages[outs] = (st.addressing, st.cmd, deps, params)
    return stages


def _words_without(words, option, n=None, values=()):
    """words without `option` and the n words after it (or those after it that are in values)."""
    if option not in words:
        return words
    i = words.index(option)
    j = i + 1 + n if n is not None else i + 1
    while n is None and j < len(words) and words[j] in values:
        j += 1
    return words[:i] + words[j:]


def test_dvc_and_snakemake_dags_agree():
    """The committed dvc.yaml has one stage per Snakemake job of the default DAG with the same edges: the same
    output paths, the same dependency paths (Snakemake-only benchmark files aside) and the same command words (log
    redirection and the training stages' --hparams aside: DVC's training stages read params/ and declare the keys).
    The Snakemake side is what `snakemake -n -p --forceall` prints, independent of make_dvc.py."""
    # --cores 1 as make_dvc.py (DVC runs one stage at a time): the same {threads} in the commands
    jobs = [j for j in dry_run_jobs(snakemake(REPO, "-n", "-p", "--forceall", "--cores", "1")) if j["rule"] != "all"]
    assert len(jobs) > 50 and {j["rule"] for j in jobs} >= {"train", "aggregate", "figures", "filelists", "dirmap"}
    dvc = _dvc_stages(REPO)
    seen = set()
    for job in jobs:
        outs = frozenset(job["output"])
        assert outs in dvc, f"no DVC stage has the outputs of Snakemake's {job['rule']} job: {sorted(outs)}"
        name, cmd, deps, params = dvc[outs]
        seen.add(outs)
        benchmarks = {i for i in job["input"] if i.endswith("benchmark.tsv")}
        assert benchmarks <= set(job["benchmark"]) or job["rule"] == "aggregate", (name, benchmarks)
        assert sorted(deps) == sorted(set(job["input"]) - benchmarks), (name, sorted(deps), job["input"])
        assert len(deps) == len(set(deps)), name
        words = shlex.split(job["shell"])
        assert words[-3:] == [">", *job["log"], "2>&1"], (name, job["shell"])
        words = _words_without(words[:-3], "--benchmarks", values=benchmarks)
        if job["rule"] == "train":
            words = _words_without(words, "--hparams", n=1)
            assert params == ["params/agents.yaml", "params/datasets.yaml", "params/default.yaml"], (name, params)
        else:
            assert params == [], (name, params)
        assert shlex.split(cmd) == words, (name, cmd, job["shell"])
    assert set(dvc) == seen, f"DVC stages without a Snakemake job: {[dvc[o][0] for o in set(dvc) - seen]}"


def _figure_stems(work):
    return sorted(e["stem"] for e in json.loads((work / "results/figures/index.json").read_text())["figures"])


@pytest.mark.slow
@pytest.mark.timeout(3000)
def test_dvc_repro_matches_snakemake_and_is_incremental(slice_run, tmp_path):
    """On the demo slice: a `dvc repro` killed mid-way through AugMem's training job, then rerun, gives the results
    of an uninterrupted Snakemake run; then status, metrics, plots and `dvc exp run -S`."""
    snk, _ = slice_run
    d = copy_repo(tmp_path / "dvc")
    # the slice's own dvc.yaml, generated from the same config file Snakemake was given (`make_dvc.py --configfile`):
    # the training stages resolve their hyperparameters from params/ plus that file (`--config`), with the slice's
    # non-default hparam_overrides, to exactly the hyperparameters and job fingerprints of the Snakemake route
    (d / "slice.yaml").write_text(yaml.safe_dump(SLICE))
    run([sys.executable, "workflow/scripts/make_dvc.py", "--configfile", "slice.yaml"], d, timeout=300)
    assert "--config slice.yaml" in (d / "dvc.yaml").read_text()
    run(["git", "init", "-q"], d)
    run(["git", "-c", "user.email=ci@example.com", "-c", "user.name=ci", "add", "-A"], d)
    run(["git", "-c", "user.email=ci@example.com", "-c", "user.name=ci", "commit", "-qm", "slice"], d)
    kill_when_checkpointed([DVC, "repro"], d, KILLED_JOB)
    out = run([DVC, "repro"], d, timeout=2400).stdout
    assert "resuming from" in out, out[-3000:]
    assert not (d / KILLED_JOB / "checkpoint.pt").exists()
    assert_same_training_results(snk, d, "dvc repro killed and rerun vs uninterrupted Snakemake")
    assert "Data and pipelines are up to date" in run([DVC, "status"], d).stdout
    assert _figure_stems(d) == _figure_stems(snk)
    # training outputs restored from DVC's run cache (viz.npz is a declared output), then the figures redrawn:
    # still every figure, the t-SNE and confusion panels of the visualised runs included
    shutil.rmtree(d / "results" / "core50_demo")
    out = run([DVC, "repro"], d).stdout
    assert "Running stage 'train" not in out, out[-3000:]
    assert all((d / rel / name).is_file() for rel in SLICE_RESULTS for name in ("metrics.json", "viz.npz"))
    run([DVC, "repro", "--force", "--single-item", "figures"], d)
    assert _figure_stems(d) == _figure_stems(snk)
    assert any(s.startswith("tsne_") for s in _figure_stems(d))
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
