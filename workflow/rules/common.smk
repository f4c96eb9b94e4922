# Shared set-up: parameter loading and schema validation, dataset facts, path helpers and the target lists.
import json
import os
import re

import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from augmem.data import layouts
from augmem.data.cache_plan import imagenet_arch, initial_weights
from augmem.io import InputError
from augmem.models.backbones import FETCHABLE_ARCHS as BACKBONE_ARCHS, imagenet_weights_file
from augmem.train.fidelity import chains_runs
from augmem.train.hparams import merged_datasets, resolve_job

validate(config, "../schemas/config.schema.yaml")

with open("params/datasets.yaml") as _fh:
    _PARAMS_DATASETS = yaml.safe_load(_fh)
# a config file may declare its own datasets (or change those of params/datasets.yaml), entry by entry
DATASETS = merged_datasets(_PARAMS_DATASETS, config)
for _name, _entry in DATASETS.items():
    if isinstance(_entry, dict) and "kind" in _entry:
        raise WorkflowError(layouts.dataset_problems(_name, _entry, [])[0])
validate(DATASETS, "../schemas/datasets.schema.yaml")
with open("params/agents.yaml") as _fh:
    AGENTS_PARAMS = yaml.safe_load(_fh)
validate(AGENTS_PARAMS, "../schemas/agents.schema.yaml")

PARAMS = {"default": config, "datasets": DATASETS, "agents": AGENTS_PARAMS}
SCENARIOS = list(layouts.SCENARIOS)


def _check_names():
    for ds in config["datasets"] + config["train"]["datasets"]:
        if ds not in DATASETS:
            raise WorkflowError(f"config: dataset {ds!r} is not defined in params/datasets.yaml or the config's "
                                f"define_datasets (defined: {sorted(DATASETS)})")
    for agent in config["train"]["agents"]:
        if agent not in AGENTS_PARAMS["agents"]:
            raise WorkflowError(f"config: agent {agent!r} is not defined in params/agents.yaml "
                                f"(defined: {sorted(AGENTS_PARAMS['agents'])})")


_check_names()


def layout(ds):
    """The dataset's layout record (augmem.data.layouts): reader, image root, preparation steps, task arguments."""
    return layouts.get(DATASETS[ds]["layout"])


def _alternatives(names):
    """A wildcard regex matching exactly these names (never matches when the list is empty)."""
    names = sorted(names)
    return "|".join(re.escape(n) for n in names) if names else "(?!x)x"


def datasets_where(test):
    """The datasets whose layout passes ``test`` (a function of the layout record)."""
    return [d for d in DATASETS if test(layout(d))]


wildcard_constraints:
    dataset=_alternatives(DATASETS),
    fidelity="reference|corrected",
    scenario="|".join(SCENARIOS),
    run=r"\d+",
    agent=r"[a-z0-9_]+",


def raw_root(ds):
    """The dataset's raw folder: generated for demo datasets, the user's `roots` entry otherwise."""
    if DATASETS[ds].get("demo"):
        return f"data/raw/{ds}"
    try:
        return config["roots"][ds]
    except KeyError:
        raise WorkflowError(f"config: no raw-data root for dataset {ds!r}: set roots.{ds} in params/default.yaml "
                            "or your config file")


def interim_dir(ds):
    return f"data/interim/{ds}"


def image_root(ds):
    """The folder the task filelists' paths are relative to (the original DATAROOT of each dataset)."""
    return layout(ds).image_root(raw_root(ds), interim_dir(ds))


def image_root_input(ds):
    """What a training job depends on for its images: the raw root (images in the raw tree) or a produced folder."""
    return layout(ds).image_root_input(raw_root(ds), interim_dir(ds))


def scenarios_for(ds, wanted):
    return [s for s in wanted if s in DATASETS[ds]["scenarios"]]


def filelist_dir(ds, fidelity, scenario, run):
    return f"data/interim/{ds}/filelists/{fidelity}/{ds}_task_filelists/{scenario}/run{run}"


def data_outputs():
    out = []
    for ds in config["datasets"]:
        out.append(f"data/interim/{ds}/dirmap_stats.json")
        for fid in config["fidelities"]:
            for sc in scenarios_for(ds, config["scenarios"]):
                out += [filelist_dir(ds, fid, sc, r) for r in range(config["runs"])]
    return out


def train_jobs():
    """(dataset, fidelity, scenario, agent, run) of every requested training job."""
    t = config["train"]
    only = t.get("agent_datasets", {})  # agent -> the datasets it is trained on (default: all)
    runs = t.get("agent_runs", {})  # agent -> number of runs (default: train.runs)
    return [(ds, fid, sc, agent, r)
            for ds in t["datasets"] for fid in config["fidelities"] for sc in scenarios_for(ds, t["scenarios"])
            for agent in t["agents"] if ds in only.get(agent, [ds])
            for r in range(runs.get(agent, t["runs"]))]


def metrics_path(ds, fid, sc, agent, run):
    return f"results/{ds}/{fid}/{sc}/{agent}/run{run}/metrics.json"


def train_outputs():
    """Every training job's metrics.json."""
    return [metrics_path(*job) for job in train_jobs()]


def viz_outputs():
    """Every training job's viz.npz (always written; only meta_json when the job's `visualize` is off)."""
    return [m.removesuffix("metrics.json") + "viz.npz" for m in train_outputs()]


def all_outputs():
    out = data_outputs() + train_outputs()
    if train_jobs():
        out += ["results/table.md", "results/table.csv", "results/table.tex", "results/figures"]
    return out


# ---------------------------------------------------------------- per-rule helpers (inputs, params)


def _dirmap_inputs(w):
    """The folder a dirmap indexes (Toybox: the extracted frames) and the tables its layout's reader needs."""
    lay = layout(w.dataset)
    return {"src": lay.dirmap_source(raw_root(w.dataset), interim_dir(w.dataset)),
            **{m.name: m.rule_input for m in lay.dirmap_maps}}


def final_dirmap(ds):
    """The dirmap that task set-up reads: balanced (Toybox), distributed (iLab) or raw (CORe50, class folders)."""
    return f"{interim_dir(ds)}/{layout(ds).final_dirmap}"


def _filelist_args(w):
    """The task set-up arguments the scenario reads, the test sessions, the layout's own and the dataset's n_class."""
    return layouts.filelist_args(DATASETS[w.dataset], w.scenario)


def _check_datasets():
    """Every dataset in use has the keys its layout and the scenarios it is used in need (one error listing all)."""
    problems = []
    for ds in dict.fromkeys(config["datasets"] + config["train"]["datasets"]):
        used = scenarios_for(ds, config["scenarios"] if ds in config["datasets"] else [])
        used += [s for s in scenarios_for(ds, config["train"]["scenarios"] if ds in config["train"]["datasets"]
                                          else []) if s not in used]
        problems += layouts.dataset_problems(ds, DATASETS[ds], used)
        if DATASETS[ds].get("demo") and layout(ds).demo is None:
            problems.append(f"dataset {ds}: layout {layout(ds).name} has no demo generator")
    if problems:
        raise WorkflowError("datasets:\n  " + "\n  ".join(problems))


_check_datasets()


def _resolve_all_jobs():
    """Every requested job's hyperparameters, resolved and validated once when the workflow starts (the same
    resolution stages.train uses on the DVC and command-line routes): one error naming every bad agent/key/source."""
    out, errors = {}, []
    for ds, fid, sc, agent, _ in train_jobs():
        if (ds, fid, sc, agent) in out:
            continue
        try:
            out[ds, fid, sc, agent] = resolve_job(PARAMS, ds, agent, sc, config, fid)
        except InputError as exc:
            errors.append(f"{ds} / {fid} / {sc}: {exc}")
    if errors:
        raise WorkflowError("hyperparameters:\n  " + "\n  ".join(dict.fromkeys(errors)))
    return out


JOB_HPARAMS = _resolve_all_jobs()
# settings that cannot change any number: passed on the command line, not in the rerun-triggering params JSON
EXECUTION_ONLY = ("n_workers", "image_cache")


def _job(w):
    """The resolved job of wildcards ``w``; a job asked for by its output path rather than by the config is
    resolved (and validated) on first use."""
    key = (w.dataset, w.fidelity, w.scenario, w.agent)
    if key not in JOB_HPARAMS:
        try:
            JOB_HPARAMS[key] = resolve_job(PARAMS, w.dataset, w.agent, w.scenario, config, w.fidelity)
        except InputError as exc:
            raise WorkflowError(f"hyperparameters: {key[0]} / {key[1]} / {key[2]}: {exc}")
    return JOB_HPARAMS[key]


def job_hparams(w):
    """(impl, complete hp) of a job (see params/agents.yaml for the resolution order)."""
    job = _job(w)
    return job.impl, job.hp


def job_config(w):
    """The resolved job as one JSON string for `stages.train --hparams` (also Snakemake's rerun trigger): every
    hyperparameter except the execution-only ones (`--n-workers`, `--image-cache`), so changing those reruns nothing."""
    job = _job(w)
    hp = {k: v for k, v in job.hp.items() if k not in EXECUTION_ONLY}
    return json.dumps({"impl": job.impl, "family": job.family, "layout": DATASETS[w.dataset]["layout"],
                       "n_class": job.n_class, **hp}, sort_keys=True)


def job_n_workers(w):
    return int(_job(w).hp["n_workers"])


def weights_file(backbone):
    """The fetched ImageNet weights of a backbone (rule fetch_weights)."""
    return imagenet_weights_file(backbone)


def job_imagenet_file(impl, hp):
    """The fetched ImageNet file of a job: its own network's (REMIND: ResNet-18) or its study backbone's."""
    arch = imagenet_arch(impl, hp)
    return f"data/weights/{arch}_imagenet.pth" if arch else weights_file(hp["backbone"])


def train_inputs(w):
    impl, hp = job_hparams(w)
    inputs = {
        "filelists": filelist_dir(w.dataset, w.fidelity, w.scenario, w.run),
        "images": image_root_input(w.dataset),
    }
    previous = previous_run_dirs(w)
    if previous:
        inputs["previous_runs"] = previous  # reference LwF trains runs 0..r-1 first (stages.train --previous-runs)
    weights = initial_weights(impl, hp)  # 'none' for an external baseline's own random-init network
    if weights == "imagenet":
        inputs["weights"] = job_imagenet_file(impl, hp)  # passed as --imagenet-weights; hp keeps 'imagenet'
    elif weights not in ("", "none"):
        inputs["weights"] = weights  # a local state-dict file (e.g. the demo's pre-trained weights)
    return inputs


def previous_run_dirs(w):
    """The filelist folders of runs 0..r-1 for a job whose reference continues from earlier runs (LwF, spec 14.5
    q32: switch lwf_shared_backbone), else []."""
    impl, hp = job_hparams(w)
    if not chains_runs(impl, w.fidelity, hp.get("switch_overrides")):
        return []
    return [filelist_dir(w.dataset, w.fidelity, w.scenario, k) for k in range(int(w.run))]


def previous_runs_args(w):
    dirs = previous_run_dirs(w)
    return ["--previous-runs", *dirs] if dirs else []


def imagenet_weights_args(w):
    impl, hp = job_hparams(w)
    return ["--imagenet-weights", job_imagenet_file(impl, hp)] if initial_weights(impl, hp) == "imagenet" else []


USE_GPU = config["train"]["device"] == "cuda"
