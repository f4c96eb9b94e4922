"""The whole table's shape on the four demo datasets (params/demo_full.yaml, README "The whole table on the demo"):
its DAG holds every agent x dataset x scenario x fidelity x 3 runs, and a reduced slice of it (two demo datasets, the
external baselines of part 2) builds a table through Snakemake."""
from __future__ import annotations

import pandas as pd
import pytest
import yaml

from .helpers import REPO, copy_repo, dry_run_jobs, snakemake

AGENTS = yaml.safe_load((REPO / "params" / "demo_full.yaml").read_text())["train"]["agents"]


def test_demo_full_dag_has_every_cell_of_the_paper_table():
    jobs = [j for j in dry_run_jobs(snakemake(REPO, "--configfile", "params/demo_full.yaml", "-n", "-p",
                                              "--forceall")) if j["rule"] == "train"]
    # results/{dataset}/{fidelity}/{scenario}/{agent}/run{run}/metrics.json
    keys = [next(o for o in j["output"] if o.endswith("metrics.json")).split("/")[1:6] for j in jobs]
    cells = {(ds, sc, agent, fid) for ds, fid, sc, agent, _ in keys}
    for agent in ("augmem", "stable_sgd", "gss", "bic", "cope", "lwf", "remind", "lower_bound", "upper_bound"):
        for ds, sc in (("core50_demo", "class_instance"), ("toybox_demo", "class_iid"),
                       ("ilab2mlight_demo", "class_instance"), ("cifar100_demo", "class_iid")):
            assert {(ds, sc, agent, f) for f in ("reference", "corrected")} <= cells, (agent, ds, sc)
    assert {c[2] for c in cells} == set(AGENTS)
    assert {c[2] for c in cells if c[0] != "core50_demo"} == {a for a in AGENTS if not a.startswith("augmem_")}
    runs = {}
    for ds, fid, sc, agent, run in keys:
        runs.setdefault((ds, sc, agent, fid), set()).add(run)
    assert all(r == {"run0", "run1", "run2"} for r in runs.values())
    assert len(jobs) == 3 * len(cells)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_demo_full_slice_builds_a_table(tmp_path):
    work = copy_repo(tmp_path / "repo")
    sl = tmp_path / "slice.yaml"
    sl.write_text(yaml.safe_dump({
        "datasets": ["ilab2mlight_demo", "cifar100_demo"], "scenarios": ["class_iid"], "fidelities": ["reference"],
        "runs": 1,
        "train": {"datasets": ["ilab2mlight_demo", "cifar100_demo"], "scenarios": ["class_iid"],
                  "agents": ["gss", "cope", "remind"], "runs": 1, "device": "cpu", "threads": 1},
    }))
    snakemake(work, "--configfile", "params/demo_full.yaml", str(sl))
    summary = pd.read_csv(work / "results" / "tables" / "summary.csv")
    assert set(zip(summary["dataset"], summary["agent"])) == {
        (ds, a) for ds in ("ilab2mlight_demo", "cifar100_demo") for a in ("gss", "cope", "remind")}
    assert (summary["n_runs"] == 1).all() and summary["avg_mean"].notna().all()
    md = (work / "results" / "table.md").read_text()
    for label in ("GSS", "CoPE", "REMIND"):
        assert f"| {label} " in md
    # the random-init own networks carry †; CoPE's settings are a choice (¶)
    assert "†" in md and "¶" in md
