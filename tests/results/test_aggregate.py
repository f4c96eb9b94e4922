"""Aggregation: tidy runs, hand-computed statistics, run filter, imported rows, errors, the aggregate stage."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from augmem.io import InputError
from augmem.results import aggregate as agg
from stages import aggregate as stage

from .conftest import N_RUNS, PUBLISHED_DIR, SCENARIOS, AGENTS

REPO = Path(__file__).resolve().parents[2]

# Two hand-made runs of 3 tasks (None = not evaluated yet).
A0 = [[90, None, None], [60, 80, None], [50, 70, 85]]
A1 = [[70, None, None], [40, 90, None], [45, 60, 75]]
# test_all per task: run0 90, 70, (50+70+85)/3 = 68.333..; run1 70, 65, 60
# avg over tasks: run0 76.111.., run1 65 -> mean 70.5556, SEM |76.111-65|/2 = 5.5556
# forgetting: run0 ((90-50) + (80-70))/2 = 25; run1 ((70-45) + (90-60))/2 = 27.5 -> 26.25, SEM 1.25
# BWT: run0 ((50-90) + (70-80))/2 = -25; run1 ((45-70) + (60-90))/2 = -27.5 -> -26.25


def _hand_cell(tmp_path, writer, kind="core50", dataset="core50_demo", extra_task0=None):
    paths = [writer(tmp_path, agent="ewc", run=0, matrix=A0, kind=kind, dataset=dataset, total_s=10.0),
             writer(tmp_path, agent="ewc", run=1, matrix=A1, kind=kind, dataset=dataset, total_s=14.0)]
    if extra_task0 is not None:
        for i, v in enumerate(extra_task0):
            m = [[v, None, None], [50, 50, None], [40, 40, 40]]
            paths.append(writer(tmp_path, agent="ewc", run=2 + i, matrix=m, kind=kind, dataset=dataset))
    return paths


def test_statistics_match_hand_computed_values(tmp_path, metrics_writer):
    runs = agg.load_runs(_hand_cell(tmp_path, metrics_writer))
    s = agg.summarise(runs)
    assert len(s) == 1
    r = s.iloc[0]
    assert (r["n_runs"], r["n_runs_before"], r["runs"]) == (2, 2, "0 1")
    assert r["avg_mean"] == pytest.approx((76.0 + 1 / 9 + 65.0) / 2)
    assert r["avg_sem"] == pytest.approx((76.0 + 1 / 9 - 65.0) / 2)
    assert r["final_mean"] == pytest.approx((68.0 + 1 / 3 + 60.0) / 2)
    assert r["final_sem"] == pytest.approx((68.0 + 1 / 3 - 60.0) / 2)
    assert r["first_avg_mean"] == pytest.approx(((90 + 60 + 50) / 3 + (70 + 40 + 45) / 3) / 2)
    assert r["first_final_mean"] == pytest.approx(47.5)
    assert r["forgetting_mean"] == pytest.approx(26.25)
    assert r["forgetting_sem"] == pytest.approx(1.25)
    assert r["bwt_mean"] == pytest.approx(-26.25)
    assert r["bwt_sem"] == pytest.approx(1.25)
    assert r["total_s_mean"] == pytest.approx(12.0) and r["total_s_sem"] == pytest.approx(2.0)
    assert r["chance_avg"] == pytest.approx((50 + 25 + 100 / 6) / 3)
    assert r["chance_final"] == pytest.approx(100 / 6)
    assert r["memory_bytes_exemplars"] == 1000 and r["memory_bytes_total"] == 1000

    pt = agg.per_task(runs)
    assert pt["task"].tolist() == [0, 1, 2]
    assert pt["acc_all_mean"].tolist() == pytest.approx([80.0, 67.5, (68 + 1 / 3 + 60) / 2])
    assert pt["acc_all_sem"].tolist() == pytest.approx([10.0, 2.5, (68 + 1 / 3 - 60) / 2])
    assert pt["acc_first_mean"].tolist() == pytest.approx([80.0, 50.0, 47.5])
    assert pt["acc_all_n"].tolist() == [2, 2, 2]
    assert pt["chance"].tolist() == pytest.approx([50.0, 25.0, 100 / 6])


def test_forgetting_and_bwt_functions():
    a = np.array([[90, np.nan, np.nan], [60, 80, np.nan], [50, 70, 85]], dtype=float)
    assert agg.forgetting(a) == pytest.approx(25.0)
    assert agg.backward_transfer(a) == pytest.approx(-25.0)
    # the max runs over i in [j, T-2]: a later recovery before the last task counts
    b = np.array([[50, np.nan, np.nan], [70, 60, np.nan], [40, 60, 90]], dtype=float)
    assert agg.forgetting(b) == pytest.approx(((70 - 40) + (60 - 60)) / 2)
    assert agg.backward_transfer(b) == pytest.approx(((40 - 50) + (60 - 60)) / 2)
    assert math.isnan(agg.forgetting([[90.0]])) and math.isnan(agg.backward_transfer([[90.0]]))


def test_sem():
    assert agg.sem([1.0, 3.0]) == pytest.approx(1.0)
    assert agg.sem([2.0, 4.0, 9.0]) == pytest.approx(np.std([2, 4, 9], ddof=1) / math.sqrt(3))
    assert math.isnan(agg.sem([5.0]))
    assert math.isnan(agg.sem([]))
    assert agg.sem([1.0, np.nan, 3.0]) == pytest.approx(1.0)


def test_published_filter_core50_keeps_only_runs_above_80(tmp_path, metrics_writer):
    # task-0 accuracies: 90, 70, 80 (exactly 80 is not above), 80.5
    runs = agg.load_runs(_hand_cell(tmp_path, metrics_writer, extra_task0=[80.0, 80.5]))
    none = agg.summarise(runs).iloc[0]
    assert (none["n_runs"], none["n_runs_before"]) == (4, 4)
    assert none["run_filter"].startswith("none")
    pub = agg.summarise(runs, "published").iloc[0]
    assert (pub["n_runs"], pub["n_runs_before"], pub["runs"]) == (2, 4, "0 3")
    assert pub["run_filter"].startswith("published")
    # run 0: average 76.111; run 3: (80.5 + 50 + 40) / 3
    assert pub["avg_mean"] == pytest.approx((76 + 1 / 9 + (80.5 + 50 + 40) / 3) / 2)
    pt = agg.per_task(runs, "published")
    assert pt["acc_all_n"].tolist() == [2, 2, 2]
    assert pt.loc[pt["task"] == 0, "acc_all_mean"].item() == pytest.approx((90 + 80.5) / 2)


def test_published_filter_single_kept_run_has_nan_sem(tmp_path, metrics_writer):
    runs = agg.load_runs(_hand_cell(tmp_path, metrics_writer))
    r = agg.summarise(runs, "published").iloc[0]
    assert (r["n_runs"], r["runs"]) == (1, "0")
    assert r["avg_mean"] == pytest.approx(76 + 1 / 9)
    assert math.isnan(r["avg_sem"])


@pytest.mark.parametrize("kind,task0,kept", [
    ("toybox", [95.0, 95.5], "1"), ("ilab2mlight", [94.0, 99.0], "1"), ("cifar100", [10.0, 20.0], "0 1"),
    ("demo_kind", [10.0, 20.0], "0 1"),
])
def test_published_filter_thresholds_by_kind(tmp_path, metrics_writer, kind, task0, kept):
    paths = [metrics_writer(tmp_path, agent="l2", run=i, kind=kind, matrix=[[v, None], [40.0, 60.0]])
             for i, v in enumerate(task0)]
    r = agg.summarise(agg.load_runs(paths), "published").iloc[0]
    assert r["runs"] == kept
    assert r["n_runs_before"] == 2


def test_filter_that_drops_every_run_keeps_the_cell(tmp_path, metrics_writer):
    paths = [metrics_writer(tmp_path, agent="l2", run=0, matrix=[[50.0, None], [40.0, 60.0]])]
    r = agg.summarise(agg.load_runs(paths), "published").iloc[0]
    assert (r["n_runs"], r["n_runs_before"], r["runs"]) == (0, 1, "")
    assert math.isnan(r["avg_mean"])


def test_unknown_filter_is_an_input_error(aggregated):
    runs = aggregated[0]
    with pytest.raises(InputError, match="unknown run filter"):
        agg.summarise(runs, "strict")


def test_fixture_tree_tidy_runs(results_tree, aggregated):
    runs, summary, per_task = aggregated
    n_files = len(results_tree.metrics)
    assert n_files == len(SCENARIOS) * len(AGENTS) * N_RUNS
    assert runs.drop_duplicates(agg.RUN_KEY).shape[0] == n_files
    am = runs[runs["agent"] == "augmem"]
    assert set(am["path"]) == {"mem", "direct"}
    assert am.loc[am["primary"], "path"].unique().tolist() == ["mem"]
    assert len(runs) == n_files * 3 + len(SCENARIOS) * 2 * N_RUNS * 3  # 3 tasks; 2 AugMem agents x extra path
    assert list(runs.columns) == agg.RUNS_COLUMNS
    # one summary row per cell, agents in the stable order
    assert len(summary) == len(SCENARIOS) * len(AGENTS)
    assert summary[summary["scenario"] == "class_iid"]["agent"].tolist() == \
        ["augmem", "ewc", "lower_bound", "upper_bound", "augmem_noreg"]
    assert (summary["n_runs"] == N_RUNS).all()
    assert set(summary["path"]) == {"acc", "mem"}
    # per-task rows: all paths, primary flagged
    assert set(per_task.loc[per_task["agent"] == "augmem", "path"]) == {"mem", "direct"}
    assert len(per_task) == len(SCENARIOS) * (len(AGENTS) + 2) * 3
    # the direct path of the fixture is 5 points below mem everywhere
    mem = per_task[(per_task["agent"] == "augmem") & (per_task["path"] == "mem")]["acc_all_mean"].to_numpy()
    direct = per_task[(per_task["agent"] == "augmem") & (per_task["path"] == "direct")]["acc_all_mean"].to_numpy()
    assert direct == pytest.approx(mem - 5.0)


def test_fixture_memory_and_benchmarks(aggregated):
    summary = aggregated[1]
    am = summary[(summary["agent"] == "augmem") & (summary["scenario"] == "class_iid")].iloc[0]
    assert am["memory_bytes_total"] == 15200
    assert (am["memory_bytes_slot_indices"], am["memory_bytes_logits"], am["memory_bytes_memory_matrix"]) == \
        (7200, 4800, 3200)
    # benchmarks exist for runs 0 and 1 of class_iid: 20 s and 22 s
    assert am["bench_s_mean"] == pytest.approx(21.0) and am["bench_s_sem"] == pytest.approx(1.0)
    assert am["bench_n"] == 2 and am["max_rss_mean"] == pytest.approx(512.5)
    inst = summary[summary["scenario"] == "class_instance"]
    assert (inst["bench_n"] == 0).all() and inst["bench_s_mean"].isna().all()
    assert am["total_s_mean"] == pytest.approx(11.0)


def test_missing_run_is_an_error_naming_it(results_tree):
    with pytest.raises(InputError, match=r"si/run0/metrics\.json: metrics file not found"):
        agg.load_runs(results_tree.metrics[:2] + [results_tree.missing])


def test_truncated_run_is_an_error_naming_it(results_tree):
    with pytest.raises(InputError, match=r"mas/run0/metrics\.json: not valid JSON"):
        agg.load_runs([results_tree.truncated])


def test_incomplete_metrics_are_errors(tmp_path, metrics_writer):
    p = metrics_writer(tmp_path, agent="ewc", run=0, matrix=A0)
    data = json.loads(p.read_text())
    data["test_all"]["acc"] = data["test_all"]["acc"][:2]
    p.write_text(json.dumps(data))
    with pytest.raises(InputError, match=r"metrics\.json: incomplete metrics: test_all\['acc'\] has 2 values for 3"):
        agg.load_runs([p])
    data = json.loads(metrics_writer(tmp_path, agent="ewc", run=1, matrix=A0).read_text())
    del data["acc_matrix"]
    p.write_text(json.dumps(data))
    with pytest.raises(InputError, match="missing key 'acc_matrix'"):
        agg.load_runs([p])
    data["acc_matrix"] = {"other": A0}
    p.write_text(json.dumps(data))
    with pytest.raises(InputError, match="acc_matrix has no primary path 'acc'"):
        agg.load_runs([p])


def test_duplicate_run_is_an_error(tmp_path, metrics_writer):
    p = metrics_writer(tmp_path, agent="ewc", run=0, matrix=A0)
    copy = tmp_path / "copy" / "metrics.json"
    copy.parent.mkdir()
    copy.write_text(p.read_text())
    with pytest.raises(InputError, match="more than one metrics file"):
        agg.load_runs([p, copy])


def test_null_accuracy_is_nan_and_skipped(tmp_path, metrics_writer):
    p = metrics_writer(tmp_path, agent="ewc", run=0, matrix=A0, test_all=[90.0, None, 60.0])
    q = metrics_writer(tmp_path, agent="ewc", run=1, matrix=A1)
    runs = agg.load_runs([p, q])
    assert runs.loc[(runs["run"] == 0) & (runs["task"] == 1), "acc_all"].isna().all()
    pt = agg.per_task(runs)
    assert pt.loc[pt["task"] == 1, "acc_all_n"].item() == 1
    assert pt.loc[pt["task"] == 1, "acc_all_mean"].item() == pytest.approx(65.0)
    s = agg.summarise(runs).iloc[0]
    assert s["avg_mean"] == pytest.approx((75.0 + 65.0) / 2)  # run 0 averages its 2 valid tasks


def test_imported_rows_from_published_csvs():
    imp = agg.load_imported(PUBLISHED_DIR, ["core50", "core50_demo", "cifar100"])
    aan = imp[(imp["agent"] == "AAN (imported)") & (imp["dataset"] == "core50") & (imp["scenario"] == "class_iid")]
    assert aan["run"].nunique() == 10 and aan["task"].nunique() == 5 and len(aan) == 50
    assert aan["imported"].all() and (aan["fidelity"] == agg.IMPORTED_FIDELITY).all()
    raw = pd.read_csv(PUBLISHED_DIR / "AAN_core50_class_iid_test.csv", header=None).to_numpy()
    raw1 = pd.read_csv(PUBLISHED_DIR / "AAN_core50_class_iid_test_1st.csv", header=None).to_numpy()
    got = aan.pivot(index="run", columns="task", values="acc_all").to_numpy()
    got1 = aan.pivot(index="run", columns="task", values="acc_first").to_numpy()
    np.testing.assert_allclose(got, raw)
    np.testing.assert_allclose(got1, raw1)
    assert got[0, 0] == pytest.approx(73.55555555555556)
    assert aan["n_seen"].drop_duplicates().tolist() == [2, 4, 6, 8, 10]
    assert set(imp["dataset"]) == {"core50", "cifar100"}  # core50_demo is not a published dataset
    remind = imp[imp["agent"] == "REMIND (imported)"]
    assert remind["task"].nunique() == 20 and remind["run"].nunique() == 10
    assert set(imp[imp["dataset"] == "core50"]["scenario"]) == {"class_iid", "class_instance"}
    assert agg.load_imported(PUBLISHED_DIR, ["core50_demo"]).empty


def test_imported_rows_are_not_filtered_and_summarise():
    imp = agg.load_imported(PUBLISHED_DIR, ["core50"])
    s = agg.summarise(imp, "published")
    r = s[(s["agent"] == "AAN (imported)") & (s["scenario"] == "class_iid")].iloc[0]
    assert (r["n_runs"], r["n_runs_before"]) == (10, 10)  # every AAN task-0 accuracy is below 80 %
    raw = pd.read_csv(PUBLISHED_DIR / "AAN_core50_class_iid_test.csv", header=None).to_numpy()
    per_run = raw.mean(axis=1)
    assert r["avg_mean"] == pytest.approx(per_run.mean())
    assert r["avg_sem"] == pytest.approx(per_run.std(ddof=1) / math.sqrt(10))
    assert math.isnan(r["forgetting_mean"]) and bool(r["imported"])


def test_published_dir_errors(tmp_path):
    with pytest.raises(InputError, match="published results folder not found"):
        agg.load_imported(tmp_path / "nope", ["core50"])
    (tmp_path / "AAN_core50_class_iid_test.csv").write_text("1,2\n")
    with pytest.raises(InputError, match="partner file"):
        agg.load_imported(tmp_path, ["core50"])


def test_job_from_path():
    assert agg.job_from_path("benchmarks/train/core50/reference/class_iid/augmem/run3.tsv") == \
        {"dataset": "core50", "fidelity": "reference", "scenario": "class_iid", "agent": "augmem", "run": 3}
    assert agg.job_from_path("results/toybox/corrected/iid/ewc/run12/viz.npz")["run"] == 12
    with pytest.raises(InputError, match="cannot tell the job"):
        agg.job_from_path("bench/augmem.tsv")


def test_benchmark_errors(tmp_path):
    p = tmp_path / "core50" / "reference" / "class_iid" / "ewc" / "run0.tsv"
    p.parent.mkdir(parents=True)
    p.write_text("h:m:s\tmax_rss\n0:00:01\t3\n")
    with pytest.raises(InputError, match="column 's'"):
        agg.load_benchmarks([p])


def test_runs_csv_round_trip(tmp_path, aggregated):
    runs = aggregated[0]
    runs.to_csv(tmp_path / "runs.csv", index=False)
    back = agg.read_runs_csv(tmp_path / "runs.csv")
    pd.testing.assert_frame_equal(agg.summarise(back), agg.summarise(runs), check_dtype=False)


# ------------------------------------------------------------------------------------------------------------ stage
def test_stage_writes_three_tables(tmp_path, results_tree):
    lst = tmp_path / "metrics.txt"
    lst.write_text("\n".join(str(p) for p in results_tree.metrics) + "\n")
    out = tmp_path / "tables"
    stage.main(["--metrics-list", str(lst), "--benchmarks", *map(str, results_tree.benchmarks),
                "--published-dir", str(PUBLISHED_DIR), "--run-filter", "published", "--out-dir", str(out)])
    assert sorted(p.name for p in out.iterdir()) == ["per_task.csv", "runs.csv", "summary.csv"]
    summary = agg.read_summary_csv(out / "summary.csv")
    assert len(summary) == len(SCENARIOS) * len(AGENTS)  # core50_demo: nothing imported
    assert summary["run_filter"].str.startswith("published").all()
    per_task = agg.read_per_task_csv(out / "per_task.csv")
    assert per_task["primary"].dtype == bool and len(per_task) > 0
    runs = agg.read_runs_csv(out / "runs.csv")
    assert runs.drop_duplicates(agg.RUN_KEY).shape[0] == len(results_tree.metrics)


def test_stage_fails_on_missing_run(tmp_path, results_tree, capsys):
    with pytest.raises(SystemExit) as exc:
        stage.main(["--metrics", str(results_tree.metrics[0]), str(results_tree.missing),
                    "--out-dir", str(tmp_path / "t")])
    assert str(exc.value).startswith("error: ") and "si/run0/metrics.json" in str(exc.value)
    assert not (tmp_path / "t").exists()


def test_stage_help_runs_as_module():
    res = subprocess.run([sys.executable, "-m", "stages.aggregate", "--help"], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0 and "--run-filter" in res.stdout and "--metrics-list" in res.stdout


def test_runs_of_one_cell_with_different_task_counts_are_an_error(tmp_path, metrics_writer):
    p = metrics_writer(tmp_path, agent="ewc", run=0, matrix=A0)
    q = metrics_writer(tmp_path, agent="ewc", run=1, matrix=[[80.0, None], [50.0, 70.0]])
    with pytest.raises(InputError, match=r"different numbers of tasks: \[2, 3\]"):
        agg.load_runs([p, q])
