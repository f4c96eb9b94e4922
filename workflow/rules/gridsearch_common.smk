# Hyperparameter grid search: the grids, the grid jobs and their inputs (README "Grid search"; spec 9;
# augmem.results.gridsearch). Off by default. The rules are in gridsearch.smk.
#
# Grids are data (params/gridsearch.yaml, or config gridsearch.file, with config gridsearch.grids over it). One
# training job per (dataset, fidelity, scenario, agent, point, run), through the same stages.train as every job, into
# results/gridsearch/<dataset>/<fidelity>/<scenario>/<agent>/<point>/run<r>/; one gridsearch_summary per cell writes
# summary.csv, summary_plot.png and selected.yaml next to them. The selection follows the fidelity: corrected scores
# a held-out validation split (hp holdout_validation), reference the test accuracy after the last task (the study's).
# Config `hparams: selected` makes every main training job of an agent with a grid take its cell's selected.yaml
# (train rule input; stages.train --selected), so the results table is built from the selected values.
from types import SimpleNamespace

from augmem.data.cache_plan import weights_key
from augmem.results.gridsearch import load_gridsearch, point_hparams

GS_CONFIG = config.get("gridsearch") or {}
HPARAMS_SOURCE = config.get("hparams", "published")
GS_DIR = "results/gridsearch/{dataset}/{fidelity}/{scenario}/{agent}"
GS_RUN = f"{GS_DIR}/{{point}}/run{{run}}"  # one grid point's run folder
# the selection of a cell follows its fidelity
GS_SELECTION = {"reference": "reference", "corrected": "corrected"}


def _load_gridsearch():
    """The grids (only when the config uses them: the default build never reads the grid file)."""
    if not (GS_CONFIG.get("enabled") or HPARAMS_SOURCE == "selected"):
        return None
    try:
        return load_gridsearch(GS_CONFIG.get("file", "params/gridsearch.yaml"), config)
    except InputError as exc:
        raise WorkflowError(str(exc))


GRIDSEARCH = _load_gridsearch()


def _gridsearch_cells():
    """(dataset, fidelity, scenario, agent) of every grid search the build needs: those the config asks for
    (gridsearch.enabled) and those whose selected.yaml a main training job takes (hparams: selected)."""
    if GRIDSEARCH is None:
        return [], []
    asked = []
    if GS_CONFIG.get("enabled"):
        datasets = GS_CONFIG.get("datasets") or config["train"]["datasets"]
        scenarios = GS_CONFIG.get("scenarios") or GRIDSEARCH.scenarios or config["train"]["scenarios"]
        agents = GS_CONFIG.get("agents") or [a for a in config["train"]["agents"] if a in GRIDSEARCH.grids]
        problems = [f"dataset {d!r} is not defined" for d in datasets if d not in DATASETS]
        problems += [f"agent {a!r} has no grid in {GRIDSEARCH.file} or the config's gridsearch.grids "
                     f"(grids: {sorted(GRIDSEARCH.grids)})" for a in agents if a not in GRIDSEARCH.grids]
        problems += [f"agent {a!r} is not defined in params/agents.yaml" for a in agents
                     if a not in AGENTS_PARAMS["agents"]]
        if problems:
            raise WorkflowError("gridsearch:\n  " + "\n  ".join(problems))
        asked = [(d, f, s, a) for d in datasets for f in config["fidelities"] for s in scenarios_for(d, scenarios)
                 for a in agents]
    fed = []
    if HPARAMS_SOURCE == "selected":
        fed = [(d, f, s, a) for d, f, s, a, _ in train_jobs() if a in GRIDSEARCH.grids]
    return list(dict.fromkeys(asked)), list(dict.fromkeys(asked + fed))


GRIDSEARCH_ASKED, GRIDSEARCH_CELLS = _gridsearch_cells()


def _resolve_grid_jobs():
    """Every grid job's hyperparameters, resolved and validated once at start (the job's published resolution, then
    the grid's fixed values and the point, validated by the agent's declaration): one error listing every problem."""
    out, errors = {}, []
    for ds, fid, sc, agent in GRIDSEARCH_CELLS:
        grid = GRIDSEARCH.grids[agent]
        try:
            base = _job(SimpleNamespace(dataset=ds, fidelity=fid, scenario=sc, agent=agent))
        except WorkflowError as exc:
            errors.append(str(exc))
            continue
        for pid, point in zip(grid.ids, grid.points):
            try:
                hp = point_hparams(base, grid, point, GS_SELECTION[fid])
            except InputError as exc:
                errors.append(f"{ds} / {fid} / {sc} / {pid}: {exc}")
                continue
            prefixes = cache_prefixes(f"data/interim/{ds}/cache", base.impl, hp)
            if "feature_cache" in prefixes and weights_key(hp["weights"]) not in CACHE_WEIGHTS:
                errors.append(f"{ds} / {fid} / {sc} / {pid}: weights {hp['weights']!r} are not those of any main "
                              "training job, so no feature cache is planned for them: search them in a main job "
                              "or set feature_cache: false in the grid's fixed values")
            out[ds, fid, sc, agent, pid] = (base, hp)
    if errors:
        raise WorkflowError("gridsearch hyperparameters:\n  " + "\n  ".join(dict.fromkeys(errors)))
    return out


GRID_JOBS = _resolve_grid_jobs()


def _grid_job(w):
    key = (w.dataset, w.fidelity, w.scenario, w.agent, w.point)
    if key not in GRID_JOBS:
        raise WorkflowError(f"gridsearch: no grid job {'/'.join(key)} in this configuration (gridsearch.enabled, "
                            "gridsearch.datasets/scenarios/agents, hparams: selected)")
    return GRID_JOBS[key]


def grid_cell_dir(ds, fid, sc, agent):
    return GS_DIR.format(dataset=ds, fidelity=fid, scenario=sc, agent=agent)


def grid_metrics(ds, fid, sc, agent):
    """Every run of every point of one cell (grid order)."""
    return [f"{grid_cell_dir(ds, fid, sc, agent)}/{pid}/run{r}/metrics.json"
            for pid in GRIDSEARCH.grids[agent].ids for r in range(GRIDSEARCH.runs)]


def gridsearch_outputs():
    """The summaries, figures and selections of the grid searches the config asks for (gridsearch.enabled)."""
    return [f"{grid_cell_dir(*cell)}/{name}" for cell in GRIDSEARCH_ASKED
            for name in ("summary.csv", "summary_plot.png", "selected.yaml")]


def selected_input(w):
    """The train rule's extra input under `hparams: selected`: the cell's selected.yaml (agents with a grid)."""
    if HPARAMS_SOURCE == "selected" and w.agent in GRIDSEARCH.grids:
        return {"selected": f"{grid_cell_dir(w.dataset, w.fidelity, w.scenario, w.agent)}/selected.yaml"}
    return {}


def selected_args(w):
    """`--selected FILE` for stages.train (nothing under `hparams: published`)."""
    return ["--selected", selected_input(w)["selected"]] if selected_input(w) else []


def _grid_job_config(w):
    base, hp = _grid_job(w)
    hp = {k: v for k, v in hp.items() if k not in EXECUTION_ONLY}
    return json.dumps({"impl": base.impl, "family": base.family, "layout": DATASETS[w.dataset]["layout"],
                       "n_class": base.n_class, **hp}, sort_keys=True)


def _grid_prefixes(w):
    base, hp = _grid_job(w)
    return cache_prefixes(f"data/interim/{w.dataset}/cache", base.impl, hp)


def _grid_previous_runs(w):
    """Runs 0..r-1 of the point for a reference job that continues from earlier runs (LwF), as the train rule."""
    base, hp = _grid_job(w)
    if not chains_runs(base.impl, w.fidelity, hp.get("switch_overrides")):
        return []
    return [filelist_dir(w.dataset, w.fidelity, w.scenario, k) for k in range(int(w.run))]


def _grid_train_inputs(w):
    """What a grid job reads: as the train rule's inputs (train_inputs), from the point's hyperparameters."""
    base, hp = _grid_job(w)
    inputs = {"filelists": filelist_dir(w.dataset, w.fidelity, w.scenario, w.run),
              "images": image_root_input(w.dataset)}
    if _grid_previous_runs(w):
        inputs["previous_runs"] = _grid_previous_runs(w)
    weights = initial_weights(base.impl, hp)
    if weights == "imagenet":
        inputs["weights"] = job_imagenet_file(base.impl, hp)
    elif weights not in ("", "none"):
        inputs["weights"] = weights
    return {**inputs, **cache_input_files(_grid_prefixes(w))}


def _grid_weights_args(w):
    base, hp = _grid_job(w)
    return ["--imagenet-weights", job_imagenet_file(base.impl, hp)] \
        if initial_weights(base.impl, hp) == "imagenet" else []


def _grid_previous_args(w):
    dirs = _grid_previous_runs(w)
    return ["--previous-runs", *dirs] if dirs else []
