"""Hyperparameter grid search: grids as data, stable point ids, scoring, ranking, selection and the top-k figure.

The study's grid search (spec 9) wrote grids as CSVs, turned them into shell scripts, ran them by hand and copied
the winners into the run scripts; its ``--validate`` crashed (spec 12.11), so it selected on **test** accuracy
(``CheckGridSearch_toybox.m``). Here a grid is data (``params/gridsearch.yaml``, schema
``workflow/schemas/gridsearch.schema.yaml``), every (dataset, fidelity, scenario, agent, point, run) is one
``stages.train`` job of the workflow (``workflow/rules/gridsearch.smk``) and ``stages.gridsearch_summary`` ranks the
points and writes the winner (``selected.yaml``), which the main training jobs can take (config ``hparams:
selected``; ``stages.train --selected``).

Grid file::

    runs: 2                          # runs per point (the study: 2)
    scenarios: [class_iid, class_instance]
    plot_top: 10                     # points drawn in summary_plot.png
    grids:
      <agent>:                       # a key of params/agents.yaml
        fixed: {batch_size: 20}      # applied to every point of this grid (search-time settings, not selected)
        grid:                        # the searched keys: a list, or a range
          lr: [1.0e-5, 1.0e-4, 1.0e-3]
          reg_coef: {log_range: [1, 1000, 4]}      # 1, 10, 100, 1000 (inclusive, log-spaced)
          momentum: {linear_range: [0.5, 0.9, 3]}  # 0.5, 0.7, 0.9 (inclusive)

A point's hyperparameters are the job's published resolution (``augmem.train.hparams.resolve_job``) with ``fixed``
and the point's values on top, validated by the agent's declaration like every other route (:func:`point_hparams`).

**Point ids** (:func:`point_id`) name a point by its searched keys, sorted, as ``key=value`` joined by ``,``
(``lr=1e-4,reg_coef=100``: the study's folder names, with ``=``): numbers in their shortest exact form (whole numbers
below 10^6 as integers, ``100`` for 100 and 100.0; otherwise the shorter of positional and scientific notation,
scientific on a tie: ``1e-4``, ``1e-2``, ``2.5e-4``, ``0.5``), booleans ``true``/``false``,
``null``; :func:`parse_point_id` reads one back. The same point always has the same id, whatever the order of the
keys or values in the file, so adding values to a grid adds jobs and leaves the finished ones alone.

**Selection** (:func:`run_score`), per fidelity of the grid's jobs:

* ``corrected``: every grid job holds out a validation split (``holdout_validation: true``: a fixed 25 % of the test
  images, chosen by a hash of the image path, the same in every run and job; ``augmem.train.loop.holdout_split``) and
  reports test accuracy on the other 75 %. A point's score is the mean over tasks and runs of ``val_all`` (accuracy
  on all seen classes of the validation images) on the agent's primary path. The reported test images are never
  read by the selection. A point with a diverged run (``meta.diverged``; grid jobs go on after a divergence so that
  one bad point does not stop the search) is ranked after every other point and never selected.
* ``reference``: what the study did (``CheckGridSearch_toybox.m``): the mean over runs of test accuracy (all seen
  classes, primary path) after the last task. It selects on the test set and is marked as such everywhere.

Ties go to the point listed first in the grid (expansion order). SEM = std (ddof 1) / sqrt(n) over runs.
"""
from __future__ import annotations

import copy
import dataclasses
import itertools
import math
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd
import yaml

from augmem.io import InputError

SELECTIONS = ("reference", "corrected")
SCHEMA = Path(__file__).resolve().parents[3] / "workflow" / "schemas" / "gridsearch.schema.yaml"
#: what each selection scores, for the summary, the figure and selected.yaml
SELECTED_ON = {
    "corrected": "validation split: mean over tasks and runs of val_all (held-out 25 % of the test images, never "
                 "the reported ones)",
    "reference": "TEST accuracy after the last task, mean over runs (the study's CheckGridSearch_toybox.m): "
                 "test-set selection, not held out",
}
#: keys a selected.yaml must not carry into a main job: they change the job's declared inputs (caches, weights
#: files), which Snakemake and DVC fix when the DAG is built, before the grid search has run
INPUT_SHAPING_KEYS = ("image_size", "weights", "backbone", "freeze_feature_extract", "image_cache", "feature_cache",
                      "network", "n_workers")
_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_STR_RE = re.compile(r"^[A-Za-z0-9_.+-]+$")
_INT_RE = re.compile(r"^[+-]?\d+$")
_SCI_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")  # what YAML 1.1 reads as a string (1e-4)


# ------------------------------------------------------------------------------------------------- values, ids
def _number(value: Any, where: str) -> float:
    if isinstance(value, str) and _SCI_RE.match(value.strip()):
        return float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{where}: expected a number, got {value!r}")
    return value


def _clean(value: Any) -> Any:
    """A grid value as the hyperparameter it stands for: YAML's string '1e-4' -> 1e-4; floats rounded to 12
    significant digits (10 ** -4.0 computed as 9.999999999999999e-05 is 1e-4)."""
    if isinstance(value, str) and _SCI_RE.match(value.strip()):
        value = float(value)
    if isinstance(value, float) and math.isfinite(value):
        value = float(f"{value:.12g}")
    return value


def expand_values(spec: Any, where: str) -> list[Any]:
    """The values of one searched key: a list as written, ``{log_range: [lo, hi, n]}`` (n log-spaced values from lo
    to hi inclusive) or ``{linear_range: [lo, hi, n]}`` (n evenly spaced values)."""
    if isinstance(spec, list):
        if not spec:
            raise InputError(f"{where}: empty list of values")
        return [_clean(v) for v in spec]
    if isinstance(spec, Mapping) and len(spec) == 1 and next(iter(spec)) in ("log_range", "linear_range"):
        kind, args = next(iter(spec.items()))
        if not isinstance(args, list) or len(args) != 3:
            raise InputError(f"{where}: {kind} takes [low, high, number of values], got {args!r}")
        lo, hi = _number(args[0], f"{where}.{kind}[0]"), _number(args[1], f"{where}.{kind}[1]")
        n = args[2]
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise InputError(f"{where}: {kind}: the number of values must be an integer >= 1, got {n!r}")
        if kind == "log_range":
            if lo <= 0 or hi <= 0:
                raise InputError(f"{where}: log_range needs positive bounds, got {lo!r} and {hi!r}")
            values = np.logspace(math.log10(lo), math.log10(hi), n) if n > 1 else np.array([lo])
        else:
            values = np.linspace(lo, hi, n) if n > 1 else np.array([lo])
        ints = all(isinstance(a, int) and not isinstance(a, bool) for a in (lo, hi))
        out = [_clean(float(v)) for v in values]
        if ints and all(float(v).is_integer() for v in out):
            out = [int(v) for v in out]
        return out
    raise InputError(f"{where}: expected a list of values, {{log_range: [low, high, n]}} or "
                     f"{{linear_range: [low, high, n]}}, got {spec!r}")


def format_value(value: Any) -> str:
    """One value as it appears in a point id (module docstring)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InputError(f"grid value {value!r} is not a finite number")
        if value.is_integer() and abs(value) < 1e6:
            return str(int(value))  # 100.0 and 100 are the same point (a float key reads 100 as 100.0)
        pos = repr(value)
        if "e" in pos or "E" in pos:
            pos = f"{value:f}".rstrip("0")  # positional form of a repr that was scientific
        pos = pos[:-2] if pos.endswith(".0") else pos.rstrip(".")
        for digits in range(17):
            sci = f"{value:.{digits}e}"
            if float(sci) == value:
                break
        mant, exp = sci.split("e")
        sci = f"{mant}e{int(exp)}"
        if float(pos) != value:
            return sci
        return sci if len(sci) <= len(pos) else pos
    if isinstance(value, str):
        if not _STR_RE.match(value) or value in ("true", "false", "null") or _parsed(value) != value:
            raise InputError(f"grid value {value!r}: text values may hold only letters, digits and _ . + - and must "
                             "not read as a number or true/false/null")
        return value
    raise InputError(f"grid value {value!r}: only numbers, true/false, null and simple text can be searched")


def _parsed(text: str) -> Any:
    if text == "null":
        return None
    if text in ("true", "false"):
        return text == "true"
    if _INT_RE.match(text):
        return int(text)
    try:
        return float(text)
    except ValueError:
        return text


def point_id(values: Mapping[str, Any]) -> str:
    """The stable, readable id of a point: ``key=value`` for each searched key, sorted by key, joined by ``,``."""
    if not values:
        raise InputError("a grid point needs at least one searched key")
    for key in values:
        if not _KEY_RE.match(str(key)):
            raise InputError(f"grid key {key!r} is not a hyperparameter name")
    return ",".join(f"{k}={format_value(values[k])}" for k in sorted(values))


def parse_point_id(pid: str) -> dict[str, Any]:
    """The values of a point id (numbers as int where written without a point or exponent)."""
    out = {}
    for part in str(pid).split(","):
        key, sep, text = part.partition("=")
        if not sep or not _KEY_RE.match(key) or not text:
            raise InputError(f"point id {pid!r}: {part!r} is not key=value")
        if key in out:
            raise InputError(f"point id {pid!r}: key {key} twice")
        out[key] = _parsed(text)
    return out


def expand_grid(grid: Mapping[str, Any], where: str = "grid") -> list[dict[str, Any]]:
    """Every point of a grid (the Cartesian product of its keys' values, keys sorted, values in the order given)."""
    if not grid:
        raise InputError(f"{where}: no searched keys")
    keys = sorted(grid)
    values = [expand_values(grid[k], f"{where}.{k}") for k in keys]
    points = [dict(zip(keys, combo)) for combo in itertools.product(*values)]
    seen: dict[str, dict] = {}
    for p in points:
        pid = point_id(p)
        if pid in seen:
            raise InputError(f"{where}: two values give the same point {pid!r} (a value listed twice?)")
        seen[pid] = p
    return points


# ------------------------------------------------------------------------------------------------- grid files
@dataclasses.dataclass
class AgentGrid:
    agent: str
    fixed: dict[str, Any]
    keys: list[str]
    points: list[dict[str, Any]]  # expansion order
    source: str  # where the grid was written (file, or the config's gridsearch.grids)

    @property
    def ids(self) -> list[str]:
        return [point_id(p) for p in self.points]


@dataclasses.dataclass
class GridSearch:
    runs: int
    scenarios: list[str]
    plot_top: int
    grids: dict[str, AgentGrid]
    file: str


def _schema_problems(doc: Any) -> list[str]:
    import jsonschema

    with open(SCHEMA) as fh:
        schema = yaml.safe_load(fh)
    validator = jsonschema.Draft202012Validator(schema)
    out = []
    for err in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path))):
        where = ".".join(map(str, err.absolute_path)) or "(top level)"
        out.append(f"{where}: {err.message}")
    return out


def load_gridsearch(path: str | Path, config: Mapping[str, Any] | None = None) -> GridSearch:
    """The grid file, with the configuration's ``gridsearch`` section over it (``runs``, ``scenarios``,
    ``plot_top`` replace the file's; each agent of ``grids`` replaces that agent's grid), schema-checked and
    expanded. InputError naming the file (or the config) and what is wrong."""
    from augmem.train.hparams import read_yaml

    path = Path(path)
    doc = read_yaml(path)
    gs = dict((config or {}).get("gridsearch") or {})
    problems = [f"{path}: {p}" for p in _schema_problems(doc)]
    own = {k: gs[k] for k in ("runs", "scenarios", "plot_top") if gs.get(k) is not None}
    extra = gs.get("grids") or {}
    if own or extra:
        probe = {"grids": extra, **own}
        problems += [f"config gridsearch: {p}" for p in _schema_problems(probe)]
    if problems:
        raise InputError("grid search: " + "; ".join(problems))
    merged = {**doc, **own}
    grids: dict[str, AgentGrid] = {}
    for origin, entries in ((str(path), doc.get("grids") or {}), ("config: gridsearch.grids", extra)):
        for agent, entry in entries.items():
            where = f"{origin}: grids.{agent}"
            points = expand_grid(entry["grid"], f"{where}.grid")
            fixed = {k: _clean(v) for k, v in (entry.get("fixed") or {}).items()}
            both = sorted(set(fixed) & set(entry["grid"]))
            if both:
                raise InputError(f"{where}: {both} both fixed and searched")
            grids[agent] = AgentGrid(agent, fixed, sorted(entry["grid"]), points, origin)
    return GridSearch(int(merged.get("runs", 2)), list(merged.get("scenarios") or []),
                      int(merged.get("plot_top", 10)), grids, str(path))


def point_hparams(job, grid: AgentGrid, point: Mapping[str, Any], selection: str) -> dict[str, Any]:
    """One grid job's complete hyperparameters: the published resolution ``job`` (a JobHParams) with the grid's
    ``fixed`` values and the point on top (``visualize`` off unless ``fixed`` sets it); ``corrected`` selection adds
    ``holdout_validation: true`` (the validation split) and lets the job go on after a divergence
    (``switch_overrides.continue_after_divergence``), so that a diverging point is ranked last instead of stopping
    the search. Validated by the agent's declaration
    (InputError naming the grid and the key)."""
    from augmem.agents import get_agent_class

    if selection not in SELECTIONS:
        raise InputError(f"unknown selection {selection!r}; expected one of {list(SELECTIONS)}")
    hp = copy.deepcopy(job.hp)
    sources = dict(job.sources)
    if "visualize" in hp:  # a grid job's figures are never drawn (visualize changes no number; fixed may set it)
        hp["visualize"], sources["visualize"] = False, "gridsearch: no visualisation"
    for key, value in grid.fixed.items():
        hp[key], sources[key] = copy.deepcopy(value), f"{grid.source}: grids.{grid.agent}.fixed"
    for key, value in point.items():
        hp[key], sources[key] = copy.deepcopy(value), f"{grid.source}: grids.{grid.agent}.grid"
    if selection == "corrected":
        if hp.get("holdout_validation") is False and sources.get("holdout_validation", "").startswith(grid.source):
            raise InputError(f"{grid.source}: grids.{grid.agent}: holdout_validation: false, but corrected selection "
                             "scores on the held-out validation split")
        hp["holdout_validation"], sources["holdout_validation"] = True, "gridsearch: corrected selection"
        overrides = dict(hp.get("switch_overrides") or {})
        overrides.setdefault("continue_after_divergence", True)
        hp["switch_overrides"], sources["switch_overrides"] = overrides, "gridsearch: corrected selection"
    cls = get_agent_class(job.impl)
    return cls.check_hparams(hp, sources, agent=f"{grid.agent} ({job.impl})")


# ------------------------------------------------------------------------------------------------- scoring
def _curve(block: Any, primary: str, what: str, where: str) -> list[float]:
    if not isinstance(block, Mapping) or primary not in block or not isinstance(block[primary], list) \
            or not block[primary]:
        raise InputError(f"{where}: {what} has no per-task values for the primary path {primary!r}")
    out = []
    for v in block[primary]:
        out.append(math.nan if v is None else float(v))
    return out


def run_score(metrics: Mapping[str, Any], selection: str, where: str = "metrics") -> tuple[float, list[float]]:
    """(score, per-task curve) of one grid run (module docstring). ``corrected`` reads only ``val_all`` and refuses
    a run without the held-out split; ``reference`` reads ``test_all`` (the study's test-set selection)."""
    primary = metrics.get("primary_path")
    if selection == "corrected":
        if not (metrics.get("hparams") or {}).get("holdout_validation"):
            raise InputError(f"{where}: corrected selection needs a run with holdout_validation: true (its "
                             "validation split is disjoint from the reported test images)")
        curve = _curve(metrics.get("val_all"), primary, "val_all", where)
        return float(np.mean(curve)), curve
    if selection == "reference":
        curve = _curve(metrics.get("test_all"), primary, "test_all", where)
        return curve[-1], curve
    raise InputError(f"unknown selection {selection!r}; expected one of {list(SELECTIONS)}")


def _sem(values) -> float:
    v = np.asarray([x for x in values if not math.isnan(x)], dtype=float)
    return float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else math.nan


def _mean(values) -> float:
    v = [x for x in values if not math.isnan(x)]
    return float(np.mean(v)) if v else math.nan


@dataclasses.dataclass
class GridRun:
    point: str
    run: int
    score: float
    curve: list[float]
    diverged: bool


def grid_runs(metrics_list: Iterable[tuple[str, Mapping[str, Any]]], keys: list[str], selection: str) -> list[GridRun]:
    """One GridRun per (source, metrics dict); the point comes from the run's own hyperparameters (``keys``)."""
    out = []
    for where, m in metrics_list:
        hp = m.get("hparams") or {}
        missing = [k for k in keys if k not in hp]
        if missing:
            raise InputError(f"{where}: hparams lack the searched key(s) {missing}")
        pid = point_id({k: hp[k] for k in keys})
        score, curve = run_score(m, selection, where)
        run = (m.get("meta") or {}).get("run")
        if run is None:
            raise InputError(f"{where}: meta.run is missing")
        out.append(GridRun(pid, int(run), score, curve, bool((m.get("meta") or {}).get("diverged"))))
    return out


def summarise_grid(runs: list[GridRun], points: list[str], selection: str) -> pd.DataFrame:
    """Every point ranked (rank 1 = selected): ``rank``, ``point``, one column per searched key, ``selection``,
    ``score_mean``, ``score_sem``, ``n_runs``, ``runs``, ``diverged_runs``, ``selectable`` and per task ``task<t>_mean``
    / ``task<t>_sem`` of the scored curve (``curve``: val_all or test_all). ``points`` (grid order) must each have
    at least one run, and every run must belong to one of them."""
    by_point: dict[str, list[GridRun]] = {p: [] for p in points}
    for r in runs:
        if r.point not in by_point:
            raise InputError(f"a run of point {r.point!r} is not a point of the grid {points}")
        by_point[r.point].append(r)
    empty = [p for p, rs in by_point.items() if not rs]
    if empty:
        raise InputError(f"grid point(s) {empty} have no runs")
    n_tasks = {len(r.curve) for r in runs}
    if len(n_tasks) != 1:
        raise InputError(f"the grid's runs have different numbers of tasks {sorted(n_tasks)}")
    n_tasks = n_tasks.pop()
    rows = []
    for order, pid in enumerate(points):
        rs = sorted(by_point[pid], key=lambda r: r.run)
        runs_seen = [r.run for r in rs]
        if len(set(runs_seen)) != len(runs_seen):
            raise InputError(f"grid point {pid}: run(s) given twice {runs_seen}")
        scores = [r.score for r in rs]
        diverged = [r.run for r in rs if r.diverged]
        row = {"point": pid, **parse_point_id(pid), "selection": selection, "curve": "val_all" if selection ==
               "corrected" else "test_all", "score_mean": _mean(scores), "score_sem": _sem(scores),
               "n_runs": len(rs), "runs": " ".join(map(str, runs_seen)),
               "diverged_runs": " ".join(map(str, diverged)),
               "selectable": not (selection == "corrected" and diverged) and not math.isnan(_mean(scores)),
               "_order": order}
        for t in range(n_tasks):
            vals = [r.curve[t] for r in rs]
            row[f"task{t}_mean"], row[f"task{t}_sem"] = _mean(vals), _sem(vals)
        rows.append(row)
    df = pd.DataFrame(rows)
    df["_key"] = df["score_mean"].fillna(-math.inf)
    df = df.sort_values(["selectable", "_key", "_order"], ascending=[False, False, True], kind="stable")
    df.insert(0, "rank", range(1, len(df) + 1))
    return df.drop(columns=["_key", "_order"]).reset_index(drop=True)


def selected_point(summary: pd.DataFrame) -> str:
    """The id of the winning point (rank 1); InputError when no point can be selected (all diverged)."""
    top = summary.iloc[0]
    if not bool(top["selectable"]):
        raise InputError("no grid point can be selected: every point diverged or has no score")
    return str(top["point"])


def selected_doc(summary: pd.DataFrame, *, selection: str, cell: Mapping[str, str]) -> dict[str, Any]:
    """The content of selected.yaml: the cell, how it was selected, the winning point and its values (``hp``: the
    searched keys, plus ``holdout_validation: true`` for corrected selection, so that main jobs report on the same
    75 % of the test images)."""
    pid = selected_point(summary)
    top = summary.iloc[0]
    hp = parse_point_id(pid)
    if selection == "corrected":
        hp["holdout_validation"] = True
    return {**{k: str(cell[k]) for k in ("dataset", "fidelity", "scenario", "agent")},
            "selection": selection, "selected_on": SELECTED_ON[selection], "point": pid,
            "score": None if math.isnan(top["score_mean"]) else round(float(top["score_mean"]), 6),
            "score_sem": None if math.isnan(top["score_sem"]) else round(float(top["score_sem"]), 6),
            "n_runs": int(top["n_runs"]), "n_points": int(len(summary)), "hp": hp}


def selected_yaml(doc: Mapping[str, Any]) -> str:
    head = ("# Written by stages.gridsearch_summary: the winning grid point. `stages.train --selected THIS_FILE` "
            "merges `hp` over\n# the job's published hyperparameters (config `hparams: selected`).\n")
    if doc.get("selection") == "reference":
        head += ("# REFERENCE SELECTION: chosen on TEST accuracy after the last task, as the study did "
                 "(CheckGridSearch_toybox.m);\n# results built on it are not a held-out evaluation.\n")
    return head + yaml.safe_dump(dict(doc), sort_keys=False)


# ------------------------------------------------------------------------------------------------- --selected
def read_selected(path: str | Path) -> dict[str, Any]:
    """A selected.yaml, checked for shape (InputError naming the file)."""
    from augmem.train.hparams import read_yaml

    doc = read_yaml(path)
    hp = doc.get("hp")
    if not isinstance(hp, Mapping) or not hp:
        raise InputError(f"{path}: expected a mapping `hp` of selected hyperparameters")
    if doc.get("selection") not in SELECTIONS:
        raise InputError(f"{path}: selection must be one of {list(SELECTIONS)}, not {doc.get('selection')!r}")
    return doc


def merge_selected(path: str | Path, impl: str, hp: Mapping[str, Any], *, agent: str,
                   job: Mapping[str, str] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(complete validated hyperparameters, meta record) of a job whose published ``hp`` takes the values of
    selected.yaml ``path``. The file must be for this job's cell (``job``: dataset, fidelity, scenario, agent, those
    given), must not carry keys that change the job's inputs (INPUT_SHAPING_KEYS), and its values are validated
    by the agent's declaration, naming the file: the same validation as every route."""
    from augmem.agents import get_agent_class

    doc = read_selected(path)
    for key, want in (job or {}).items():
        if key in doc and str(doc[key]) != str(want):
            raise InputError(f"{path}: selected for {key} {doc[key]!r}, but this job's {key} is {want!r}")
    values = dict(doc["hp"])
    shaping = sorted(set(values) & set(INPUT_SHAPING_KEYS))
    if shaping:
        raise InputError(f"{path}: {shaping} change the job's declared inputs (caches, weights) and cannot be "
                         "taken from a grid search; set them in the configuration")
    merged = {**dict(hp), **values}
    sources = {k: f"{path}: hp" for k in values}
    full = get_agent_class(impl).check_hparams(merged, sources, agent=f"{agent} ({impl})")
    meta = {"file": str(path), "selection": doc["selection"], "point": doc.get("point"),
            "keys": sorted(values)}
    return full, meta


def selected_note(info: Mapping[str, Any]) -> str:
    """The run note (metrics.json ``meta.notes``; the results table's ¶ note) of a job that took selected values."""
    keys = ", ".join(k for k in info.get("keys", []) if k != "holdout_validation")
    if info.get("selection") == "reference":
        return (f"{keys} selected by the grid search with the REFERENCE selection: on TEST accuracy after the last "
                "task, as the study did (not a held-out selection)")
    return (f"{keys} selected by the grid search on a held-out validation split (corrected selection), test "
            "accuracy on the other 75 % of the test images")  # no "; ": the table splits a cell's notes on it


# ------------------------------------------------------------------------------------------------- figure
def plot_top(summary: pd.DataFrame, out: str | Path, *, top: int = 10, title: str = "") -> None:
    """The study's summarize_gridsearch.py figure: the ``top`` best points' scored curves (accuracy vs task, mean
    ± SEM over runs as error bars), written atomically (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from augmem.io import atomic_path

    tasks = sorted(int(c[4:-5]) for c in summary.columns if re.match(r"^task\d+_mean$", c))
    rows = summary.head(top)
    selection = str(rows["selection"].iloc[0]) if len(rows) else "corrected"
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    x = np.arange(1, len(tasks) + 1)
    for _, r in rows.iterrows():
        mean = [r[f"task{t}_mean"] for t in tasks]
        sem = [0.0 if math.isnan(r[f"task{t}_sem"]) else r[f"task{t}_sem"] for t in tasks]
        label = f"{int(r['rank'])}. {r['point']} ({r['score_mean']:.1f})"
        if str(r.get("diverged_runs") or "") not in ("", "nan"):
            label += " diverged"
        ax.errorbar(x + (int(r["rank"]) - 1) * 0.01, mean, yerr=sem, marker="o", ms=3, capsize=3, lw=1.2, label=label)
    ax.set_xticks(x)
    ax.set_xlabel("task")
    what = "validation accuracy, all seen classes (held-out 25 %)" if selection == "corrected" else \
        "TEST accuracy, all seen classes"
    ax.set_ylabel(f"{what} (%)", fontsize=8)
    mark = "" if selection == "corrected" else \
        "\nREFERENCE: selected on TEST accuracy after the last task, as the study"
    ax.set_title((title + "\n" if title else "") + f"top {len(rows)} of {len(summary)} points, mean ± SEM over runs"
                 + mark, fontsize=9)
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def holdout_fraction_check(paths: list[str]) -> float:
    """The share of ``paths`` the holdout split puts into validation (for reports and tests)."""
    from augmem.train.loop import holdout_split

    _, val = holdout_split(paths)
    return len(val) / max(len(paths), 1)
