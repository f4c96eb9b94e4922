"""Aggregate per-run training results (metrics.json) into tidy tables: runs, per-cell summary, per-task curves.

A *cell* is one (dataset, kind, scenario, agent, fidelity). Every statistic over runs is the mean and the standard
error of the mean, SEM = std(ddof=1) / sqrt(n) (NaN for a single run), like the MATLAB figures and ``plot.py``.

Per cell, on the *primary path* of the agent (``mem`` for AugMem, ``acc`` for the others):

* accuracy after each task t (``acc_all``: on all classes seen so far; ``acc_first``: on task 0's classes);
* average accuracy: per run the mean over tasks of ``acc_all``, then mean and SEM over runs (the MATLAB bar charts);
  the same for ``acc_first`` (``first_avg``);
* final accuracy: ``acc_all`` after the last task (``final``), and ``acc_first`` after the last task (``first_final``);
* with a = the run's accuracy matrix of the primary path (a[i][j] = accuracy on task j's classes after task i) and
  T tasks, per run, then mean and SEM over runs:

  - forgetting (Chaudhry et al. 2018): mean over tasks j < T-1 of ( max_{i in [j, T-2]} a[i][j] - a[T-1][j] );
  - backward transfer, BWT (Lopez-Paz & Ranzato 2017): mean over j < T-1 of ( a[T-1][j] - a[j][j] ).

  Both are NaN for T = 1 and for imported rows (no accuracy matrix published);
* memory the method stores, in bytes (``memory_bytes_total`` and one ``memory_bytes_<kind>`` column per kind), and
  the configured budget ``memory_size`` with its unit (``memory_size_unit``), which differs between agents: images
  split over the tasks seen (naive rehearsal, GEM, A-GEM), exemplar images (iCaRL), hypotheses (AugMem). The unit is
  the agent's own declaration (``declared(HP)["memory_size"].unit``, found from ``meta.impl``); agents without a
  memory budget have neither;
* the initial weights (``hparams.weights``) and ``hparams.freeze_feature_extract``: ``random_init`` is true when a
  run started from random weights (``weights: none``), and ``random_frozen_front`` when that random front was also
  frozen (AugMem's front then never learns). The results table marks such cells;
* AugMem's memory health (metrics.json ``health``, one object per task, and ``health_verdict``; see
  :mod:`augmem.agents.augmem_health`), per run from the final task: ``health_keys_per_image``, ``health_map``
  ("hxw"), ``health_max_attention`` (mean max attention), ``health_uniform_keys`` (uniform key fraction),
  ``health_slots_used``, ``health_distinct_codes``, and ``health_shared_codes`` (the largest shared-code fraction of
  any task >= 1); ``health_collapsed`` (the verdict is not healthy) and ``health_regimes`` (";"-joined
  ``shared_codes`` / ``uniform_reads``). Per cell, over all its runs (before the run filter, like the settings
  above: a collapse is a property of the run): ``n_health`` runs with a verdict, ``n_collapsed`` of them collapsed,
  ``n_shared_codes`` / ``n_uniform_reads`` per regime (a run can be in both), ``health_regimes`` (their union) and
  the mean over runs of each figure (``health_map``: the runs' maps). All empty for agents without health. The
  results table marks cells with a collapsed run;
* wall time per job: ``timing.total_s`` of metrics.json, and the ``s`` column of Snakemake benchmark TSV files when
  given (``bench_s``; also ``max_rss`` in MB when present). Times are over all runs of the cell, before the run
  filter: they measure the cost of the jobs, which does not depend on a result-based filter.

Run filter (spec 12.26), OFF by default. ``"published"`` keeps a run only when its task-0 accuracy (``test_all``
after task 0 of the primary path) exceeds 80 % for kind core50 and 95 % for toybox and ilab2mlight (no filter for
cifar100 or any other kind). Imported rows are never filtered: the published AAN/REMIND runs were reported with all
10 runs (most AAN CORe50 task-0 accuracies are below 80 %, so the filter would remove the baseline altogether; the
MATLAB scripts also exempt external baselines, spec 10). Each summary row records the filter and the number of
runs before and after it.

Imported rows (``load_imported``) are the per-run CSVs the authors published for external baselines; they take the
same tidy format with agent ``AAN (imported)`` / ``REMIND (imported)``, ``imported=True`` and fidelity
``published``.
"""
from __future__ import annotations

import functools
import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from augmem.io import InputError
from augmem.results.style import agent_sort_key

CELL = ["dataset", "kind", "scenario", "agent", "fidelity"]
RUN_KEY = ["dataset", "fidelity", "scenario", "agent", "run"]
IMPORTED_FIDELITY = "published"
#: Number of classes of the published datasets (spec 5.1).
PUBLISHED_N_CLASS = {"core50": 10, "toybox": 12, "ilab2mlight": 14, "cifar100": 100}
#: Task-0 accuracy thresholds (%) of the published run filter, by dataset kind (spec 10, 12.26).
PUBLISHED_THRESHOLDS = {"core50": 80.0, "toybox": 95.0, "ilab2mlight": 95.0}
RUN_FILTERS = ("none", "published")

RUNS_COLUMNS = [
    "dataset", "kind", "scenario", "agent", "impl", "fidelity", "run", "seed", "imported", "path", "primary", "task",
    "n_tasks", "n_seen", "n_class", "acc_all", "acc_first", "val_all", "acc_row", "n_train", "selected_epoch",
    "train_s", "eval_s", "total_s", "weights", "freeze_feature_extract", "memory_size", "memory_size_unit",
    "memory_bytes_total", "memory_bytes", "health_collapsed", "health_regimes", "health_keys_per_image", "health_map",
    "health_max_attention", "health_uniform_keys", "health_slots_used", "health_distinct_codes",
    "health_shared_codes", "n_test", "hparams_source", "notes", "source",
]
#: ``hparams.weights`` of a run that started from random weights.
RANDOM_WEIGHTS = "none"
#: AugMem's collapsed-memory regimes (``health_verdict.regimes``; augmem.agents.augmem_health.verdict), in order
HEALTH_REGIMES = ("shared_codes", "uniform_reads")
#: per-run health figures (runs.csv; their means over runs in summary.csv, health_map: the runs' maps)
HEALTH_FIGURES = ["health_keys_per_image", "health_map", "health_max_attention", "health_uniform_keys",
                  "health_slots_used", "health_distinct_codes", "health_shared_codes"]
HEALTH_INT_FIGURES = ("health_keys_per_image", "health_slots_used", "health_distinct_codes")
#: per-cell health counts of summary.csv (empty for agents without health)
HEALTH_COUNTS = ["n_health", "n_collapsed", "n_shared_codes", "n_uniform_reads"]


# --------------------------------------------------------------------------------------------------------- loading
def _num(value) -> float:
    """JSON number or null -> float (null -> NaN)."""
    if value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"not a number: {value!r}") from None


def _need(obj: dict, key: str, where: str, path: Path):
    if not isinstance(obj, dict) or key not in obj:
        raise InputError(f"{path}: incomplete metrics: missing key {where}{key!r}")
    return obj[key]


def _series(block, name: str, p: str, n_tasks: int, path: Path) -> list[float]:
    """The per-task list ``block[p]`` as floats, checked to have one value per task."""
    if not isinstance(block, dict) or p not in block:
        raise InputError(f"{path}: incomplete metrics: {name} has no path {p!r}")
    values = block[p]
    if not isinstance(values, list) or len(values) != n_tasks:
        got = len(values) if isinstance(values, list) else type(values).__name__
        raise InputError(f"{path}: incomplete metrics: {name}[{p!r}] has {got} values for {n_tasks} tasks")
    try:
        return [_num(v) for v in values]
    except ValueError as exc:
        raise InputError(f"{path}: {name}[{p!r}]: {exc}") from None


def _matrix(block, p: str, n_tasks: int, path: Path) -> list[list[float]] | None:
    """acc_matrix[p] as a T x T list (NaN above the diagonal), or None when that path has no matrix."""
    if not isinstance(block, dict) or p not in block or block[p] is None:
        return None
    rows = block[p]
    if not isinstance(rows, list) or len(rows) != n_tasks:
        raise InputError(f"{path}: acc_matrix[{p!r}] must have {n_tasks} rows (one per task)")
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) < i + 1 or len(row) > n_tasks:
            raise InputError(f"{path}: acc_matrix[{p!r}] row {i} must have {i + 1}..{n_tasks} values")
        try:
            vals = [_num(v) for v in row]
        except ValueError as exc:
            raise InputError(f"{path}: acc_matrix[{p!r}] row {i}: {exc}") from None
        out.append(vals + [math.nan] * (n_tasks - len(vals)))
    return out


def _json_list(values) -> str:
    """A list of floats as JSON with NaN written as null (CSV-safe, parseable)."""
    return json.dumps([None if (v is None or (isinstance(v, float) and math.isnan(v))) else v for v in values])


@functools.lru_cache(maxsize=None)
def memory_size_unit(impl: str | None) -> str | None:
    """The unit of ``memory_size`` as the agent implementation ``impl`` declares it (its HP dataclass), or None when
    the agent has no memory budget or ``impl`` is not one of this project's agents (imported rows).

    ``impl`` is the registry name of metrics.json's ``meta.impl`` (``AugMem``, ``NaiveRehearsal``, ...); the class
    name (``AugMemAgent``) is accepted too."""
    from augmem.agents import REGISTRY, get_agent_class
    from augmem.agents.hparams import declared

    if not impl:
        return None
    names = {name: name for name in REGISTRY}
    names.update({target.split(":")[1]: name for name, target in REGISTRY.items()})
    if str(impl) not in names:
        return None
    decl = declared(get_agent_class(names[str(impl)]).HP).get("memory_size")
    return decl.unit if decl is not None else None


def _hparam_fields(data: dict, impl, path: Path) -> dict:
    """weights, freeze_feature_extract, memory_size and its unit of one run (None where metrics.json lacks them)."""
    hp = data.get("hparams")
    hp = hp if isinstance(hp, dict) else {}
    meta = data.get("meta") if isinstance(data.get("meta"), dict) else {}
    # the weights the run really started from (an external baseline's own random-init network: 'none')
    weights = meta.get("initial_weights", hp.get("weights"))
    freeze = hp.get("freeze_feature_extract")
    unit = memory_size_unit(impl)
    size = hp.get("memory_size") if unit is not None else None
    if size is not None and (isinstance(size, bool) or not isinstance(size, (int, float))):
        raise InputError(f"{path}: hparams.memory_size must be a number, got {size!r}")
    return {"weights": None if weights is None else str(weights),
            "freeze_feature_extract": None if freeze is None else bool(freeze),
            "memory_size": size, "memory_size_unit": unit}


def hparams_source(meta: dict) -> str:
    """Where a run's hyperparameters came from (metrics.json ``meta.hparams_source``, stages.train --selected):
    ``published`` (params/ and the config; also runs written before the grid search existed), or
    ``selected/corrected`` / ``selected/reference`` (a grid search's selected.yaml and how it was selected;
    reference = on test accuracy, as the study)."""
    if meta.get("hparams_source", "published") != "selected":
        return "published"
    return f"selected/{(meta.get('hparams_selected') or {}).get('selection', 'unknown')}"


def run_notes(meta: dict, path: Path) -> str:
    """A run's notes (metrics.json ``meta.notes``: what a reader of its numbers must know, e.g. the variant a
    reference external baseline runs), "; "-joined ('' for none)."""
    notes = meta.get("notes") or []
    if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
        raise InputError(f"{path}: meta.notes must be a list of strings, got {notes!r}")
    return "; ".join(notes)


def _regime_text(regimes) -> str:
    """Regimes ";"-joined in the order of HEALTH_REGIMES (unknown names after them, sorted)."""
    regimes = {str(r) for r in regimes}
    return ";".join([r for r in HEALTH_REGIMES if r in regimes] + sorted(regimes - set(HEALTH_REGIMES)))


def _health_fields(data: dict, path: Path) -> dict:
    """The run's health columns (HEALTH_FIGURES from the final task, health_collapsed, health_regimes); all None for
    a run without ``health`` (agents other than AugMem). A run with ``health`` but no ``health_verdict`` gets the
    verdict computed from its figures."""
    health, verdict = data.get("health"), data.get("health_verdict")
    out = dict.fromkeys(["health_collapsed", "health_regimes", *HEALTH_FIGURES])
    if health is None and verdict is None:
        return out
    if health is not None and (not isinstance(health, list) or not health
                               or not all(isinstance(h, dict) for h in health)):
        raise InputError(f"{path}: health must be a non-empty list of per-task objects")
    if verdict is None:
        from augmem.agents.augmem_health import verdict as health_verdict

        verdict = health_verdict(health)
    if not isinstance(verdict, dict) or not isinstance(verdict.get("healthy"), bool) \
            or not isinstance(verdict.get("regimes", []), list):
        raise InputError(f"{path}: health_verdict must be an object with a bool 'healthy' and a list 'regimes'")
    out["health_collapsed"] = not verdict["healthy"]
    out["health_regimes"] = _regime_text(verdict.get("regimes") or [])
    if health is None:
        return out
    last = health[-1]
    hw = last.get("map")
    try:
        out["health_map"] = "x".join(str(int(v)) for v in hw) if isinstance(hw, (list, tuple)) and hw else None
        for col, key in (("health_keys_per_image", "keys_per_image"), ("health_slots_used", "slots_used"),
                         ("health_distinct_codes", "distinct_codes")):
            out[col] = None if last.get(key) is None else int(last[key])
        out["health_max_attention"] = _num(last.get("max_attention_mean"))
        out["health_uniform_keys"] = _num(last.get("uniform_key_fraction"))
        shared = [_num(h.get("shared_code_fraction")) for h in health]
    except (TypeError, ValueError) as exc:
        raise InputError(f"{path}: health of the final task is malformed ({exc})") from None
    shared = [v for v in shared if not math.isnan(v)]
    out["health_shared_codes"] = max(shared) if shared else math.nan
    return out


def read_metrics(path: str | Path) -> dict:
    """Read one metrics.json; a missing, unreadable or non-object file raises InputError naming it."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: metrics file not found (the requested run has no result)")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot be read ({exc})") from exc
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg}); the run did not finish cleanly")
    if not isinstance(data, dict):
        raise InputError(f"{path}: metrics must be a JSON object, got {type(data).__name__}")
    return data


def metrics_rows(data: dict, path: str | Path) -> list[dict]:
    """Tidy rows (one per task x path) of one run's metrics (the dict of metrics.json); checks completeness."""
    path = Path(path)
    meta = _need(data, "meta", "", path)
    for key in ("dataset", "scenario", "agent", "fidelity", "run"):
        _need(meta, key, "meta.", path)
    tasks = _need(data, "tasks", "", path)
    if not isinstance(tasks, list) or not tasks:
        raise InputError(f"{path}: incomplete metrics: 'tasks' must be a non-empty list")
    n_tasks = len(tasks)
    paths = _need(data, "paths", "", path)
    primary = _need(data, "primary_path", "", path)
    if not isinstance(paths, list) or primary not in paths:
        raise InputError(f"{path}: primary_path {primary!r} is not one of paths {paths!r}")
    test_all = _need(data, "test_all", "", path)
    test_first = _need(data, "test_first", "", path)
    val_all = data.get("val_all")
    acc_matrix = _need(data, "acc_matrix", "", path)
    if _matrix(acc_matrix, primary, n_tasks, path) is None:
        raise InputError(f"{path}: incomplete metrics: acc_matrix has no primary path {primary!r}")
    timing = data.get("timing") or {}
    mem = data.get("memory_bytes") or {}
    try:
        run = int(meta["run"])
    except (TypeError, ValueError):
        raise InputError(f"{path}: meta.run must be an integer, got {meta['run']!r}") from None
    n_class = meta.get("n_class")
    hp_fields = _hparam_fields(data, meta.get("impl"), path)
    health_fields = _health_fields(data, path)

    def per_task(key: str, t: int) -> float:
        values = timing.get(key)
        return _num(values[t]) if isinstance(values, list) and t < len(values) else math.nan

    seen: list[int] = []
    n_seen = []
    for t, task in enumerate(tasks):
        active = task.get("active") if isinstance(task, dict) else None
        if active is None:
            seen = sorted(set(seen) | set((task or {}).get("labels") or []))
            n_seen.append(len(seen) if seen else math.nan)
        else:
            n_seen.append(len(active))

    rows = []
    for p in paths:
        acc_all = _series(test_all, "test_all", p, n_tasks, path)
        acc_first = _series(test_first, "test_first", p, n_tasks, path)
        val = _series(val_all, "val_all", p, n_tasks, path) if isinstance(val_all, dict) and p in val_all \
            else [math.nan] * n_tasks
        matrix = _matrix(acc_matrix, p, n_tasks, path)
        for t in range(n_tasks):
            task = tasks[t] if isinstance(tasks[t], dict) else {}
            rows.append({
                "dataset": str(meta["dataset"]), "kind": str(meta.get("kind") or meta["dataset"]),
                "scenario": str(meta["scenario"]), "agent": str(meta["agent"]), "impl": meta.get("impl"),
                "fidelity": str(meta["fidelity"]), "run": run, "seed": meta.get("seed"), "imported": False,
                "path": p, "primary": p == primary, "task": t, "n_tasks": n_tasks, "n_seen": n_seen[t],
                "n_class": n_class, "acc_all": acc_all[t], "acc_first": acc_first[t], "val_all": val[t],
                "acc_row": _json_list(matrix[t]) if matrix is not None else None,
                "n_train": task.get("n_train"), "selected_epoch": task.get("selected_epoch"),
                "train_s": per_task("train_s", t), "eval_s": per_task("eval_s", t),
                "total_s": _num(timing.get("total_s")), **hp_fields,
                "memory_bytes_total": _num(data.get("memory_bytes_total")),
                "memory_bytes": json.dumps(mem, sort_keys=True), **health_fields, "n_test": data.get("n_test"),
                "hparams_source": hparams_source(meta), "notes": run_notes(meta, path), "source": str(path),
            })
    return rows


def load_runs(paths) -> pd.DataFrame:
    """Tidy table of many runs: one row per run x task x path (columns ``RUNS_COLUMNS``).

    Every path must hold a complete metrics.json: a missing or broken one raises InputError naming it (a requested
    run without a result fails the build; it is never dropped silently). Two files for the same
    (dataset, fidelity, scenario, agent, run) and runs of one cell with different numbers of tasks are errors too.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise InputError("no metrics files given")
    rows: list[dict] = []
    for p in paths:
        rows.extend(metrics_rows(read_metrics(p), p))
    runs = pd.DataFrame(rows, columns=RUNS_COLUMNS)
    _check_runs(runs)
    return sort_runs(runs)


def _check_runs(runs: pd.DataFrame) -> None:
    first = runs[runs["task"] == 0].drop_duplicates(RUN_KEY + ["source"])
    dup = first[first.duplicated(RUN_KEY, keep=False)]
    if not dup.empty:
        r = dup.iloc[0]
        files = ", ".join(dup[(dup[RUN_KEY] == r[RUN_KEY]).all(axis=1)]["source"].astype(str))
        raise InputError(f"run {dict(r[RUN_KEY])} appears in more than one metrics file: {files}")
    n_tasks = first.groupby(CELL, dropna=False)["n_tasks"].nunique()
    bad = n_tasks[n_tasks > 1]
    if not bad.empty:
        cell = dict(zip(CELL, bad.index[0]))
        raise InputError(f"runs of {cell} have different numbers of tasks: "
                         f"{sorted(first.set_index(CELL).loc[bad.index[0], 'n_tasks'].unique().tolist())}")


def sort_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Sort by dataset, scenario, fidelity, agent (stable agent order), run, path (primary first), task."""
    if runs.empty:
        return runs.reset_index(drop=True)
    out = runs.assign(_agent=runs["agent"].map(agent_sort_key), _primary=~runs["primary"].astype(bool))
    out = out.sort_values(["dataset", "scenario", "fidelity", "_agent", "run", "_primary", "path", "task"],
                          kind="stable")
    out = out.drop(columns=["_agent", "_primary"]).reset_index(drop=True)
    for col in HEALTH_INT_FIGURES:  # counts stay integers next to the empty cells of agents without health
        if col in out:
            out[col] = _int_array(out[col])
    return out


def _int_array(values) -> pd.array:
    """Integral numbers as a nullable Int64 array (None/NaN -> <NA>); values left as they are when one is not."""
    values = list(values)
    if all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
           and float(v).is_integer() for v in values if _present(v)):
        return pd.array([int(v) if _present(v) else None for v in values], dtype="Int64")
    return pd.Series(values, dtype=object).to_numpy()


def read_runs_csv(path: str | Path) -> pd.DataFrame:
    """Read results/tables/runs.csv written by the aggregate stage (InputError naming the file if it is wrong)."""
    from augmem.io import read_csv_checked

    df = read_csv_checked(path, ["dataset", "kind", "scenario", "agent", "fidelity", "run", "path", "primary", "task",
                                 "acc_all", "acc_first"],
                          dtype={"dataset": str, "kind": str, "scenario": str, "agent": str, "fidelity": str,
                                 "path": str})
    for col in ("primary", "imported"):
        if col in df:
            df[col] = df[col].map(lambda v: str(v).strip().lower() == "true")
    if "health_collapsed" in df:  # True / False, None for runs without health
        df["health_collapsed"] = df["health_collapsed"].map(
            lambda v: {"true": True, "false": False}.get(str(v).strip().lower()))
    return df


# --------------------------------------------------------------------------------------------------- imported rows
_PUBLISHED_RE = re.compile(r"^(?P<method>[A-Za-z0-9]+)_(?P<dataset>[a-z0-9]+)_(?P<scenario>[a-z_]+?)_test(?P<first>_1st)?\.csv$")


def _read_published_csv(path: Path) -> np.ndarray:
    try:
        df = pd.read_csv(path, header=None)
    except Exception as exc:
        raise InputError(f"{path}: cannot be read as a header-less CSV ({exc})") from exc
    try:
        values = df.to_numpy(dtype=float)
    except ValueError as exc:
        raise InputError(f"{path}: non-numeric accuracy values ({exc})") from None
    finite = values[np.isfinite(values)]
    if finite.size and finite.max() <= 1.0:  # fractions, as some external tools write (MATLAB scripts: x100)
        values = values * 100.0
    return values


def load_imported(published_dir: str | Path, datasets) -> pd.DataFrame:
    """Imported rows from the published per-run CSVs (``<METHOD>_<dataset>_<scenario>_test[_1st].csv``).

    Only datasets whose name equals a published dataset name (core50, toybox, ilab2mlight, cifar100) are read; the
    rows follow ``RUNS_COLUMNS`` with agent ``<METHOD> (imported)``, path ``acc``, ``imported=True`` and fidelity
    ``published``. ``_test.csv`` gives acc_all, ``_test_1st.csv`` acc_first (both must exist and agree in shape).
    """
    published_dir = Path(published_dir)
    if not published_dir.is_dir():
        raise InputError(f"{published_dir}: published results folder not found")
    wanted = {str(d) for d in datasets} & set(PUBLISHED_N_CLASS)
    found: dict[tuple[str, str, str], dict[str, Path]] = {}
    for f in sorted(published_dir.glob("*.csv")):
        m = _PUBLISHED_RE.match(f.name)
        if not m or m["dataset"] not in wanted:
            continue
        found.setdefault((m["method"], m["dataset"], m["scenario"]), {})["first" if m["first"] else "all"] = f
    rows = []
    for (method, dataset, scenario), files in sorted(found.items()):
        if "all" not in files or "first" not in files:
            have = next(iter(files.values()))
            raise InputError(f"{have}: its partner file (_test.csv / _test_1st.csv) is missing in {published_dir}")
        acc_all = _read_published_csv(files["all"])
        acc_first = _read_published_csv(files["first"])
        if acc_all.shape != acc_first.shape:
            raise InputError(f"{files['first']}: shape {acc_first.shape} differs from {files['all'].name} "
                             f"{acc_all.shape}")
        n_runs, n_tasks = acc_all.shape
        n_class = PUBLISHED_N_CLASS[dataset]
        for r in range(n_runs):
            for t in range(n_tasks):
                if scenario.startswith("class"):
                    n_seen = round(n_class * (t + 1) / n_tasks)
                else:
                    n_seen = n_class
                rows.append({
                    "dataset": dataset, "kind": dataset, "scenario": scenario, "agent": f"{method} (imported)",
                    "impl": method, "fidelity": IMPORTED_FIDELITY, "run": r, "seed": None, "imported": True,
                    "path": "acc", "primary": True, "task": t, "n_tasks": n_tasks, "n_seen": n_seen,
                    "n_class": n_class, "acc_all": acc_all[r, t], "acc_first": acc_first[r, t], "val_all": math.nan,
                    "acc_row": None, "n_train": None, "selected_epoch": None, "train_s": math.nan,
                    "eval_s": math.nan, "total_s": math.nan, "weights": None, "freeze_feature_extract": None,
                    "memory_size": None, "memory_size_unit": None, "memory_bytes_total": math.nan, "memory_bytes": "{}",
                    "n_test": None, "notes": "", "source": str(files["all"]),
                })
    return sort_runs(pd.DataFrame(rows, columns=RUNS_COLUMNS))


# ------------------------------------------------------------------------------------------------------ benchmarks
_RUN_DIR_RE = re.compile(r"^run(\d+)(\.tsv|\.txt)?$")


def job_from_path(path: str | Path) -> dict:
    """(dataset, fidelity, scenario, agent, run) of a per-job file from its path.

    The path must end in ``<dataset>/<fidelity>/<scenario>/<agent>/run<r>[.tsv]`` optionally followed by one file
    name (``.../run3/benchmark.tsv``, ``.../run3/viz.npz``), the layout of the workflow's per-run outputs.
    """
    parts = Path(path).parts
    for i in range(len(parts) - 1, 3, -1):
        m = _RUN_DIR_RE.match(parts[i])
        if m and i >= len(parts) - 2:
            dataset, fidelity, scenario, agent = parts[i - 4 : i]
            return {"dataset": dataset, "fidelity": fidelity, "scenario": scenario, "agent": agent,
                    "run": int(m.group(1))}
    raise InputError(f"{path}: cannot tell the job from the path; expected "
                     ".../<dataset>/<fidelity>/<scenario>/<agent>/run<r>[.tsv|/<file>]")


def load_benchmarks(paths) -> pd.DataFrame:
    """Snakemake benchmark TSVs -> one row per job: RUN_KEY, bench_s (mean of column ``s``), max_rss (MB)."""
    rows = []
    for p in paths:
        p = Path(p)
        job = job_from_path(p)
        if not p.is_file():
            raise InputError(f"{p}: benchmark file not found")
        try:
            df = pd.read_csv(p, sep="\t")
        except Exception as exc:
            raise InputError(f"{p}: cannot be read as a benchmark TSV ({exc})") from exc
        if "s" not in df.columns or df.empty:
            raise InputError(f"{p}: benchmark TSV needs a column 's' and at least one row; found {list(df.columns)}")
        s = pd.to_numeric(df["s"], errors="coerce")
        if s.isna().any():
            raise InputError(f"{p}: column 's' has non-numeric values")
        rss = pd.to_numeric(df["max_rss"], errors="coerce").mean() if "max_rss" in df else math.nan
        rows.append({**job, "bench_s": float(s.mean()), "max_rss": float(rss)})
    return pd.DataFrame(rows, columns=RUN_KEY + ["bench_s", "max_rss"])


# ----------------------------------------------------------------------------------------------------- statistics
def sem(values) -> float:
    """Standard error of the mean, std(ddof=1)/sqrt(n) over the non-NaN values; NaN for fewer than 2 values."""
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    if v.size < 2:
        return math.nan
    return float(v.std(ddof=1) / math.sqrt(v.size))


def _mean(values) -> float:
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    return float(v.mean()) if v.size else math.nan


def forgetting(a) -> float:
    """Chaudhry et al. 2018: mean over j < T-1 of max_{i in [j, T-2]} a[i][j] - a[T-1][j] (NaN when T < 2)."""
    a = np.asarray(a, dtype=float)
    T = a.shape[0]
    if T < 2:
        return math.nan
    return float(np.mean([np.max(a[j : T - 1, j]) - a[T - 1, j] for j in range(T - 1)]))


def backward_transfer(a) -> float:
    """Lopez-Paz & Ranzato 2017: mean over j < T-1 of a[T-1][j] - a[j][j] (NaN when T < 2)."""
    a = np.asarray(a, dtype=float)
    T = a.shape[0]
    if T < 2:
        return math.nan
    return float(np.mean([a[T - 1, j] - a[j, j] for j in range(T - 1)]))


def _acc_matrix(group: pd.DataFrame) -> np.ndarray | None:
    """The T x T accuracy matrix of one run x path from its ``acc_row`` JSON strings (None when absent)."""
    rows = group.sort_values("task")["acc_row"].tolist()
    if any(r is None or (isinstance(r, float) and math.isnan(r)) for r in rows):
        return None
    return np.array([[math.nan if v is None else float(v) for v in json.loads(r)] for r in rows], dtype=float)


def filter_description(run_filter: str | None) -> str:
    """One-line description of a run filter for captions and the summary."""
    if run_filter in (None, "none"):
        return "none (all runs)"
    if run_filter == "published":
        return ("published: runs with task-0 accuracy > 80 % (core50) / > 95 % (toybox, ilab2mlight); "
                "all runs for other datasets and imported rows")
    raise InputError(f"unknown run filter {run_filter!r}; expected one of {RUN_FILTERS}")


def kept_runs(runs: pd.DataFrame, run_filter: str | None = None) -> pd.DataFrame:
    """Per run (RUN_KEY + kind, imported): task-0 accuracy of the primary path and whether the filter keeps it."""
    filter_description(run_filter)  # validates the name
    first = runs[(runs["task"] == 0) & runs["primary"].astype(bool)]
    out = first[CELL + ["run", "imported", "acc_all"]].rename(columns={"acc_all": "task0_acc"}).copy()
    if run_filter in (None, "none"):
        out["keep"] = True
    else:
        thr = out["kind"].map(PUBLISHED_THRESHOLDS)
        imported = out["imported"].astype(bool)
        out["keep"] = imported | thr.isna() | (out["task0_acc"] > thr)
    return out.reset_index(drop=True)


def apply_run_filter(runs: pd.DataFrame, run_filter: str | None = None) -> pd.DataFrame:
    """The rows of ``runs`` (all paths and tasks) whose run the filter keeps."""
    keep = kept_runs(runs, run_filter)
    keep = keep[keep["keep"]][CELL + ["run"]]
    return runs.merge(keep, on=CELL + ["run"], how="inner")[runs.columns]


def _chance(scenario: str, n_seen, n_class) -> float:
    """Chance accuracy (%): 1/seen classes for class scenarios, 1/n_class for iid/instance."""
    n = n_seen if str(scenario).startswith("class") else n_class
    try:
        n = float(n)
    except (TypeError, ValueError):
        return math.nan
    return 100.0 / n if n and not math.isnan(n) else math.nan


def per_task(runs: pd.DataFrame, run_filter: str | None = None) -> pd.DataFrame:
    """Mean, SEM and n over (kept) runs per cell x path x task, of acc_all and acc_first, with the chance level."""
    desc = filter_description(run_filter)
    kept = apply_run_filter(runs, run_filter)
    rows = []
    for key, g in kept.groupby(CELL + ["imported", "path", "primary", "task"], sort=False, dropna=False):
        rec = dict(zip(CELL + ["imported", "path", "primary", "task"], key))
        n_seen = g["n_seen"].max()
        n_class = g["n_class"].max()
        rec.update({"n_seen": n_seen, "n_class": n_class, "chance": _chance(rec["scenario"], n_seen, n_class)})
        for m in ("acc_all", "acc_first"):
            rec[f"{m}_mean"] = _mean(g[m])
            rec[f"{m}_sem"] = sem(g[m])
            rec[f"{m}_n"] = int(g[m].notna().sum())
        rec["run_filter"] = desc
        rows.append(rec)
    cols = CELL + ["imported", "path", "primary", "task", "n_seen", "n_class", "chance", "acc_all_mean",
                   "acc_all_sem", "acc_all_n", "acc_first_mean", "acc_first_sem", "acc_first_n", "run_filter"]
    out = pd.DataFrame(rows, columns=cols)
    if out.empty:
        return out
    out = out.assign(_a=out["agent"].map(agent_sort_key), _p=~out["primary"].astype(bool))
    out = out.sort_values(["dataset", "scenario", "fidelity", "_a", "_p", "path", "task"], kind="stable")
    return out.drop(columns=["_a", "_p"]).reset_index(drop=True)


def _present(value) -> bool:
    return value is not None and value is not pd.NA and not (isinstance(value, float) and math.isnan(value))


def _one(values):
    """The value shared by a cell's runs (None when no run has one; several values: space-separated, sorted)."""
    found = sorted({v for v in values if _present(v)}, key=str)
    if not found:
        return None
    return found[0] if len(found) == 1 else " ".join(map(str, found))


def summarise(runs: pd.DataFrame, run_filter: str | None = None,
              benchmarks: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per cell (primary path): the statistics of the module docstring, over the runs the filter keeps.

    Columns: the cell, ``imported``, ``path``, ``n_tasks``, ``run_filter``, ``n_runs_before``, ``n_runs``, ``runs``
    (kept run numbers, space-separated), ``weights`` and ``freeze_feature_extract`` (the runs' values),
    ``random_init`` / ``random_frozen_front`` (some run started from random weights / with a frozen random front),
    ``<stat>_mean`` / ``<stat>_sem`` for avg, final, first_avg, first_final, forgetting, bwt, total_s, bench_s;
    ``chance_avg`` and ``chance_final``; ``memory_size`` and ``memory_size_unit`` (the agent's configured budget and
    its declared unit; empty for agents without one), ``memory_bytes_total`` and ``memory_bytes_<kind>`` (means over
    runs); ``max_rss`` (MB, from the benchmarks); AugMem's health: ``n_health``, ``n_collapsed``, ``n_shared_codes``,
    ``n_uniform_reads`` (Int64, empty for agents without health), ``health_regimes`` and the means of the per-run
    health figures (module docstring). A cell whose runs are all dropped by the filter keeps its row with
    n_runs 0 and NaN statistics. A setting that differs between a cell's runs lists its values, space-separated.
    """
    desc = filter_description(run_filter)
    primary = runs[runs["primary"].astype(bool)]
    decisions = kept_runs(runs, run_filter)
    mem_kinds = sorted({k for s in primary["memory_bytes"].dropna() for k in json.loads(s)})
    bench = benchmarks if benchmarks is not None and not benchmarks.empty else None
    rows = []
    for key, g in primary.groupby(CELL, sort=False, dropna=False):
        cell = dict(zip(CELL, key))
        dec = decisions[(decisions[CELL] == pd.Series(cell)).all(axis=1)]
        keep_ids = sorted(dec.loc[dec["keep"], "run"].astype(int).tolist())
        per_run = []
        for run, r in g.groupby("run", sort=True):
            r = r.sort_values("task")
            a = _acc_matrix(r)
            mem = json.loads(r["memory_bytes"].iloc[0]) if isinstance(r["memory_bytes"].iloc[0], str) else {}
            per_run.append({
                "run": int(run), "avg": _mean(r["acc_all"]), "final": r["acc_all"].iloc[-1],
                "first_avg": _mean(r["acc_first"]), "first_final": r["acc_first"].iloc[-1],
                "forgetting": forgetting(a) if a is not None else math.nan,
                "bwt": backward_transfer(a) if a is not None else math.nan,
                "total_s": r["total_s"].iloc[0], "memory_bytes_total": r["memory_bytes_total"].iloc[0],
                **{f"memory_bytes_{k}": float(mem[k]) if mem.get(k) is not None else math.nan for k in mem_kinds},
                **{k: r[k].iloc[0] for k in ("weights", "freeze_feature_extract", "memory_size", "memory_size_unit",
                                             "health_collapsed", "health_regimes", "notes", "hparams_source",
                                             *HEALTH_FIGURES)
                   if k in r},
            })
        pr = pd.DataFrame(per_run)
        kept = pr[pr["run"].isin(keep_ids)]
        last = g[g["task"] == g["task"].max()]
        rec = {**cell, "imported": bool(g["imported"].iloc[0]), "path": g["path"].iloc[0],
               "n_tasks": int(g["n_tasks"].iloc[0]), "run_filter": desc, "n_runs_before": len(pr),
               "n_runs": len(kept), "runs": " ".join(str(i) for i in keep_ids)}
        random_init = pr["weights"].map(lambda w: _present(w) and str(w) == RANDOM_WEIGHTS)
        frozen = pr["freeze_feature_extract"].map(lambda f: _present(f) and bool(f))
        rec["weights"] = _one(pr["weights"])
        rec["freeze_feature_extract"] = _one(pr["freeze_feature_extract"])
        rec["random_init"] = bool(random_init.any())
        rec["random_frozen_front"] = bool((random_init & frozen).any())
        for stat in ("avg", "final", "first_avg", "first_final", "forgetting", "bwt"):
            rec[f"{stat}_mean"] = _mean(kept[stat])
            rec[f"{stat}_sem"] = sem(kept[stat])
        rec["total_s_mean"] = _mean(pr["total_s"])
        rec["total_s_sem"] = sem(pr["total_s"])
        chances = g.drop_duplicates("task").sort_values("task")
        chances = [_chance(cell["scenario"], n, c) for n, c in zip(chances["n_seen"], chances["n_class"])]
        rec["chance_avg"] = _mean(chances)
        rec["chance_final"] = _chance(cell["scenario"], last["n_seen"].max(), last["n_class"].max())
        rec["notes"] = cell_notes(pr["notes"] if "notes" in pr else [])
        rec["hparams_source"] = _one(pr["hparams_source"]) if "hparams_source" in pr else None
        rec["memory_size"] = _one(pr["memory_size"])
        rec["memory_size_unit"] = _one(pr["memory_size_unit"])
        rec["memory_bytes_total"] = _mean(pr["memory_bytes_total"])
        for k in mem_kinds:
            rec[f"memory_bytes_{k}"] = _mean(pr[f"memory_bytes_{k}"])
        if bench is not None:
            b = bench[(bench["dataset"] == cell["dataset"]) & (bench["fidelity"] == cell["fidelity"])
                      & (bench["scenario"] == cell["scenario"]) & (bench["agent"] == cell["agent"])
                      & bench["run"].isin(pr["run"])]
            rec["bench_s_mean"], rec["bench_s_sem"] = _mean(b["bench_s"]), sem(b["bench_s"])
            rec["bench_n"] = len(b)
            rec["max_rss_mean"] = _mean(b["max_rss"])
        else:
            rec["bench_s_mean"] = rec["bench_s_sem"] = rec["max_rss_mean"] = math.nan
            rec["bench_n"] = 0
        rec.update(_health_summary(pr))
        rows.append(rec)
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    sizes = out["memory_size"]
    if all(isinstance(v, (int, float)) and float(v).is_integer() for v in sizes if _present(v)):
        out["memory_size"] = pd.array([int(v) if _present(v) else None for v in sizes], dtype="Int64")
    for col in HEALTH_COUNTS:
        out[col] = pd.array(out[col].tolist(), dtype="Int64")
    out = out.assign(_a=out["agent"].map(agent_sort_key))
    out = out.sort_values(["dataset", "scenario", "fidelity", "_a"], kind="stable")
    return out.drop(columns=["_a"]).reset_index(drop=True)


def cell_notes(values) -> str:
    """The distinct notes of a cell's runs, in order of first appearance, "; "-joined ('' for none)."""
    seen: list[str] = []
    for v in values:
        for note in (str(v).split("; ") if _present(v) and str(v) else []):
            if note not in seen:
                seen.append(note)
    return "; ".join(seen)


def _health_summary(pr: pd.DataFrame) -> dict:
    """A cell's health columns (HEALTH_COUNTS, health_regimes, HEALTH_FIGURES) over its runs ``pr`` (one row per
    run); all None when no run has a health verdict."""
    out = dict.fromkeys([*HEALTH_COUNTS, "health_regimes", *HEALTH_FIGURES])
    if "health_collapsed" not in pr:
        return out
    judged = pr[pr["health_collapsed"].map(lambda v: isinstance(v, (bool, np.bool_)))]
    if judged.empty:
        return out
    regimes = judged["health_regimes"].map(lambda v: set(str(v).split(";")) - {""} if _present(v) else set())
    out.update({"n_health": len(judged), "n_collapsed": int(judged["health_collapsed"].astype(bool).sum()),
                "n_shared_codes": int(regimes.map(lambda r: "shared_codes" in r).sum()),
                "n_uniform_reads": int(regimes.map(lambda r: "uniform_reads" in r).sum()),
                "health_regimes": _regime_text(set().union(*regimes))})
    for col in HEALTH_FIGURES:
        values = judged[col] if col in judged else pd.Series(dtype=float)
        out[col] = _one(values) if col == "health_map" else _mean(pd.to_numeric(values, errors="coerce").astype(float))
    return out


SUMMARY_REQUIRED = CELL + ["imported", "n_runs", "n_runs_before", "run_filter", "avg_mean", "avg_sem",
                           "final_mean", "final_sem", "chance_avg", "chance_final"]
PER_TASK_REQUIRED = CELL + ["imported", "path", "primary", "task", "chance", "acc_all_mean", "acc_all_sem",
                            "acc_all_n", "acc_first_mean", "acc_first_sem", "acc_first_n"]


def _read_table(path, required) -> pd.DataFrame:
    from augmem.io import read_csv_checked

    df = read_csv_checked(path, required, dtype={c: str for c in ("dataset", "kind", "scenario", "agent", "fidelity",
                                                                  "path", "runs", "run_filter", "weights",
                                                                  "memory_size_unit", "health_regimes",
                                                                  "health_map", "notes", "hparams_source")},
                          keep_default_na=True)
    for col in ("primary", "imported", "random_init", "random_frozen_front"):
        if col in df:
            df[col] = df[col].map(lambda v: str(v).strip().lower() == "true")
    for col in ("runs", "notes"):
        if col in df:
            df[col] = df[col].fillna("")
    for col in HEALTH_COUNTS:
        if col in df:
            df[col] = pd.array([int(v) if _present(v) else None for v in df[col]], dtype="Int64")
    if "health_regimes" in df and "n_health" in df:  # all runs healthy: "" (an empty CSV cell), not "no health"
        df["health_regimes"] = [("" if _present(n) else None) if not isinstance(r, str) else r
                                for r, n in zip(df["health_regimes"], df["n_health"])]
    return df


def read_summary_csv(path: str | Path) -> pd.DataFrame:
    """Read results/tables/summary.csv (InputError naming the file when it is missing or lacks columns)."""
    return _read_table(path, SUMMARY_REQUIRED)


def read_per_task_csv(path: str | Path) -> pd.DataFrame:
    """Read results/tables/per_task.csv (InputError naming the file when it is missing or lacks columns)."""
    return _read_table(path, PER_TASK_REQUIRED)


# --------------------------------------------------------------------------------------------------- console
def collapse_warnings(summary) -> list[str]:
    """One line per cell of ``summary`` (a summary DataFrame or the path of summary.csv) whose AugMem memory collapsed
    in at least one run, e.g. ``WARNING AugMem health: core50_demo reference class_iid augmem: memory collapsed in
    1/1 runs (shared_codes)``; [] when no cell has a collapsed run, when the file does not exist or predates the
    health columns. Never raises (the workflow's ``onsuccess`` handler prints these lines): a file that cannot be read
    gives one line saying so."""
    try:
        if isinstance(summary, pd.DataFrame):
            df = summary
        else:
            if not Path(summary).is_file():
                return []
            df = pd.read_csv(summary, dtype={c: str for c in CELL + ["health_regimes"]}, keep_default_na=True)
        if "n_collapsed" not in df.columns:
            return []
        lines = []
        for r in df.to_dict("records"):
            n = r.get("n_collapsed")
            if not _present(n) or int(n) < 1:
                continue
            m = r.get("n_health")
            of = f"{int(n)}/{int(m)}" if _present(m) else f"{int(n)}"
            regimes = r.get("health_regimes")
            regimes = ", ".join(str(regimes).split(";")) if isinstance(regimes, str) and regimes else "see metrics.json"
            cell = " ".join(str(r.get(k)) for k in ("dataset", "fidelity", "scenario", "agent"))
            lines.append(f"WARNING AugMem health: {cell}: memory collapsed in {of} runs ({regimes})")
        return lines
    except Exception as exc:  # noqa: BLE001 - a console summary must never fail the workflow
        return [f"AugMem health: cannot read {summary if not isinstance(summary, pd.DataFrame) else 'the summary'} "
                f"({type(exc).__name__}: {exc})"]
