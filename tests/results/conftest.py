"""Fixture builder for the results tests: per-run outputs written exactly as /work/briefs/metrics_format.md says.

``build_results_tree(root)`` writes ``results/{dataset}/{fidelity}/{scenario}/{agent}/run{r}/metrics.json`` for a few
agents x 3 runs x 2 scenarios (dataset core50_demo, kind core50, 3 tasks of 2 classes), an AugMem agent with paths
mem/direct and a healthy memory (``health`` / ``health_verdict``), one AugMem ablation, viz.npz for AugMem and for one baseline (run 0), Snakemake benchmark TSVs, and two
broken runs (one missing, one truncated) that are NOT part of the good list.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

DATASET = "core50_demo"
KIND = "core50"
FIDELITY = "reference"
SCENARIOS = ["class_iid", "class_instance"]
TASK_LABELS = [[0, 1], [2, 3], [4, 5]]
N_CLASS = 6
CLASS_NAMES = {"0": "scissors", "1": "cup", "2": "remote", "3": "can", "4": "phone", "5": "ball"}
# retention factor of old tasks per later task, per agent (lower = more forgetting)
AGENTS = {"lower_bound": 0.3, "upper_bound": 1.0, "ewc": 0.5, "augmem": 0.85, "augmem_noreg": 0.7}
N_RUNS = 3


def acc_matrix(retention: float, run: int, n_tasks: int = 3, scenario_shift: float = 0.0) -> list[list]:
    """a[i][j]: diagonal 95 - 4*run - 3*j - shift, decaying by ``retention`` per later task; None above."""
    a = []
    for i in range(n_tasks):
        row = []
        for j in range(n_tasks):
            if j > i:
                row.append(None)
            else:
                diag = 95.0 - 4.0 * run - 3.0 * j - scenario_shift
                row.append(round(diag * retention ** (i - j), 6))
        a.append(row)
    return a


def health_figures(regimes=(), n_tasks: int = 3, n_slots: int = 40) -> list[dict]:
    """Per-task AugMem health figures (augmem.agents.augmem_health) of a healthy memory, or of one collapsed in the
    given regimes: ``shared_codes`` (1x1 map, 4 keys, the newest task's images share old codes: 0.9 then 1.0) and/or
    ``uniform_reads`` (max attention 0.01 over 40 slots, 97 % uniform keys). Healthy: 2x2 map, 16 keys, max attention
    0.6, shared codes 0.05 then 0.1."""
    shared, uniform = "shared_codes" in regimes, "uniform_reads" in regimes
    out = []
    for t in range(n_tasks):
        n_images = 12 * (t + 1)
        out.append({
            "map": [1, 1] if shared else [2, 2], "keys_per_image": 4 if shared else 16, "n_images": n_images,
            "max_attention_mean": 0.01 if uniform else 0.6, "max_attention_std": 0.002 if uniform else 0.1,
            "uniform_key_fraction": 0.97 if uniform else 0.05, "slots_used": 3 if shared else 20 + 5 * t,
            "n_slots": n_slots, "slots_per_class": {str(c): 3 for c in range(2 * (t + 1))},
            "distinct_codes": 4 if shared else n_images,
            "shared_code_fraction": None if t == 0 else ((0.8 + 0.1 * t) if shared else 0.05 * t),
        })
    return out


def write_metrics(root: Path, *, agent: str, run: int, scenario: str = "class_iid", dataset: str = DATASET,
                  kind: str = KIND, fidelity: str = FIDELITY, matrix: list[list], test_all: list | None = None,
                  test_first: list | None = None, direct_matrix: list[list] | None = None,
                  total_s: float = 10.0, memory_bytes: dict | None = None, hparams: dict | None = None,
                  impl: str | None = None, health="auto", meta: dict | None = None) -> Path:
    """Write one run's metrics.json (metrics_format.md); test_all / test_first default to the matrix's row means /
    first column (equal class sizes); ``hparams`` are added to the default ones, ``impl`` replaces the default
    implementation (AugMem / NormalNN). ``health``: "auto" (AugMem agents: a healthy memory; others: none), None (no
    health keys), or the collapsed regimes to write (``()``: healthy), with the verdict of
    augmem.agents.augmem_health. Returns the path."""
    n_tasks = len(matrix)

    def derived(m):
        ta = [float(np.mean([v for v in m[i][: i + 1]])) for i in range(n_tasks)]
        tf = [m[i][0] for i in range(n_tasks)]
        return ta, tf

    is_augmem = agent.startswith("augmem")
    primary = "mem" if is_augmem else "acc"
    paths = ["mem", "direct"] if is_augmem else ["acc"]
    ta, tf = derived(matrix)
    test_all = ta if test_all is None else test_all
    test_first = tf if test_first is None else test_first
    t_all, t_first, mat = {primary: test_all}, {primary: test_first}, {primary: matrix}
    if is_augmem:
        dm = direct_matrix or [[None if v is None else round(v - 5.0, 6) for v in row] for row in matrix]
        da, df_ = derived(dm)
        t_all["direct"], t_first["direct"], mat["direct"] = da, df_, dm
    if memory_bytes is None:
        memory_bytes = {"slot_indices": 7200, "logits": 4800, "memory_matrix": 3200} if is_augmem else \
            ({"exemplars": 1000} if agent == "ewc" else {})
    seen = []
    tasks = []
    for t in range(n_tasks):
        labels = [2 * t, 2 * t + 1]
        seen = sorted(set(seen) | set(labels))
        tasks.append({"task": t, "labels": labels, "active": list(seen), "n_train": 24, "n_epoch": 2,
                      "selected_epoch": 1})
    data = {
        "meta": {"dataset": dataset, "kind": kind, "scenario": scenario, "agent": agent,
                 "impl": impl or ("AugMem" if is_augmem else "NormalNN"), "run": run, "fidelity": fidelity, "seed": run,
                 "n_class": N_CLASS, "device": "cpu", "torch": "2.14.1", "image_size": 32, "inputs": "pixels",
                 **(meta or {})},
        "hparams": {"lr": 0.001, "visualize": run == 0, **(hparams or {})},
        "switches": {"keep_best_on_test": True},
        "primary_path": primary,
        "paths": paths,
        "tasks": tasks,
        "test_all": t_all,
        "test_first": t_first,
        "val_all": None,
        "acc_matrix": mat,
        "epochs": {"test_all": {p: [[v, v] for v in t_all[p]] for p in paths}},
        "timing": {"train_s": [1.0] * n_tasks, "eval_s": [0.5] * n_tasks, "train_images_per_s": [50.0] * n_tasks,
                   "total_s": total_s},
        "memory_bytes": memory_bytes,
        "memory_bytes_total": int(sum(memory_bytes.values())),
        "n_test": 36,
    }
    if health == "auto":
        health = () if is_augmem else None
    if health is not None:
        from augmem.agents.augmem_health import verdict

        data["health"] = health_figures(tuple(health), n_tasks)
        data["health_verdict"] = verdict(data["health"])
        assert set(data["health_verdict"]["regimes"]) == set(health), data["health_verdict"]
    out = root / "results" / dataset / fidelity / scenario / agent / f"run{run}" / "metrics.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1))
    return out


def write_viz(path: Path, *, augmem: bool, n_per_class: int = 6, seed: int = 0, n_slots: int = 20,
              n_feat: int = 8, groups: int = 8, hw: int = 3, image_size: int = 32) -> Path:
    """Write a viz.npz (metrics_format.md) with class-structured logits, slots and images."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for t in range(len(TASK_LABELS)):
        seen = sorted({lab for task in TASK_LABELS[: t + 1] for lab in task})
        labels = np.repeat(np.array(seen), n_per_class)
        n = labels.size
        logits = rng.normal(0, 1, size=(n, N_CLASS)).astype(np.float32)
        logits[np.arange(n), labels] += 4.0
        pred = labels.copy()
        pred[::5] = (pred[::5] + 1) % len(seen)
        conf = np.zeros((len(seen), len(seen)), dtype=np.int64)
        for y, p in zip(labels, pred):
            conf[y, p] += 10
        arrays[f"task{t}_labels"] = labels.astype(np.int64)
        arrays[f"task{t}_logits"] = logits
        arrays[f"task{t}_pred"] = pred.astype(np.int64)
        arrays[f"task{t}_confusion"] = conf
        if augmem:
            arrays[f"task{t}_memory"] = rng.normal(0, 1 + t, size=(n_slots, n_feat)).astype(np.float32)
            top = (labels[:, None, None, None] * 3 + rng.integers(0, 3, size=(n, hw, hw, groups))) % n_slots
            top[:, 0, 0, :] = (labels[:, None] + 10) % n_slots  # one corner location per class-specific slot
            arrays[f"task{t}_top_slots"] = top.astype(np.int32)
            idx = np.concatenate([np.flatnonzero(labels == c)[:2] for c in seen])
            imgs = np.zeros((idx.size, 3, image_size, image_size), dtype=np.uint8)
            for k, i in enumerate(idx):
                imgs[k, labels[i] % 3] = 60
                imgs[k, :, 8:24, 8 + labels[i]: 20 + labels[i]] = 220
            arrays[f"task{t}_images"] = imgs
            arrays[f"task{t}_image_index"] = idx.astype(np.int64)
            usage = np.zeros((N_CLASS, n_slots), dtype=np.int64)
            for c in seen:
                usage[c, (c * 3) % n_slots: (c * 3) % n_slots + 3] = rng.integers(10, 50, size=3)
            arrays[f"task{t}_slot_usage"] = usage
    meta = {"n_tasks": len(TASK_LABELS), "tasks": TASK_LABELS, "class_names": CLASS_NAMES}
    arrays["meta_json"] = np.array(json.dumps(meta))
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def write_benchmark(root: Path, *, agent: str, run: int, scenario: str, seconds: float) -> Path:
    path = root / "benchmarks" / DATASET / FIDELITY / scenario / agent / f"run{run}.tsv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
                    f"{seconds}\t0:00:{int(seconds):02d}\t512.5\t900.1\t500.0\t505.0\t0.1\t0.2\t95.0\t{seconds}\n")
    return path


@dataclass
class ResultsTree:
    root: Path
    metrics: list[Path] = field(default_factory=list)
    viz: list[Path] = field(default_factory=list)
    benchmarks: list[Path] = field(default_factory=list)
    missing: Path | None = None
    truncated: Path | None = None


def build_results_tree(root: Path) -> ResultsTree:
    tree = ResultsTree(root)
    for s_idx, scenario in enumerate(SCENARIOS):
        for agent, retention in AGENTS.items():
            for run in range(N_RUNS):
                m = acc_matrix(retention, run, scenario_shift=2.0 * s_idx)
                tree.metrics.append(write_metrics(root, agent=agent, run=run, scenario=scenario, matrix=m,
                                                  total_s=10.0 + run))
                if scenario == "class_iid" and run < 2:
                    tree.benchmarks.append(write_benchmark(root, agent=agent, run=run, scenario=scenario,
                                                           seconds=20.0 + 2 * run))
        run0 = root / "results" / DATASET / FIDELITY / scenario
        tree.viz.append(write_viz(run0 / "augmem" / "run0" / "viz.npz", augmem=True, seed=s_idx))
        if scenario == "class_iid":
            tree.viz.append(write_viz(run0 / "ewc" / "run0" / "viz.npz", augmem=False, seed=5))
    tree.missing = root / "results" / DATASET / FIDELITY / "class_iid" / "si" / "run0" / "metrics.json"
    tree.truncated = root / "results" / DATASET / FIDELITY / "class_iid" / "mas" / "run0" / "metrics.json"
    tree.truncated.parent.mkdir(parents=True, exist_ok=True)
    tree.truncated.write_text('{"meta": {"dataset": "core50_demo", "agent": "mas"')
    return tree


@pytest.fixture(scope="session")
def results_tree(tmp_path_factory) -> ResultsTree:
    """A complete fixture results tree (built once per session; tests must not modify it)."""
    return build_results_tree(tmp_path_factory.mktemp("results_tree"))


@pytest.fixture
def metrics_writer():
    """The ``write_metrics`` helper, for tests that build their own small cell."""
    return write_metrics


@pytest.fixture
def viz_writer():
    return write_viz


@pytest.fixture(scope="session")
def aggregated(results_tree):
    """(runs, summary, per_task) of the fixture tree, no run filter."""
    from augmem.results import aggregate as agg

    runs = agg.load_runs(results_tree.metrics)
    bench = agg.load_benchmarks(results_tree.benchmarks)
    return runs, agg.summarise(runs, benchmarks=bench), agg.per_task(runs)


PUBLISHED_DIR = Path("/work/shared/reference/published_results")
