"""Resolve and validate the hyperparameters of one training job: the one resolution every route uses.

Snakemake (workflow/rules/common.smk), ``dvc repro`` and the command line (``python -m stages.train`` without
``--hparams``) all call :func:`resolve_job` on the same parameter files and the same merged configuration, so one
job gets the same hyperparameters, byte for byte, whichever way it runs (tested).

Layers for one job (dataset D of hyperparameter family F, scenario S, agent A); later wins:

1. the agent's declared defaults (its ``HP`` dataclass: the original CLI's defaults, spec 5.4);
2. ``params/agents.yaml`` ``all_agents``: what every published run script passes (spec 8), for each agent that
   declares the key;
3. ``agents.A.hp``, then ``agents.A.overrides`` matching (family, scenario, dataset, fidelity) in order (a dataset
   without a ``family`` matches no family rule: only the agents' own values; a rule with ``fidelity`` applies to that
   fidelity's jobs only, e.g. the external baselines' own networks in ``reference``);
4. the dataset entry's ``hp`` (for each agent that declares the key), then its ``agent_hp.A`` (a mapping, or a list
   of ``{fidelity?, hp}`` rules applied in order);
5. the configuration's ``hparam_overrides.all`` (for each agent that declares the key), then ``hparam_overrides.A``.

A key set for *all* agents (layers 2, 4 ``hp``, 5 ``all``) applies to the agents that declare it and must be
declared by at least one agent; a key set for one agent must be declared by that agent. Every value is checked
(type, range) and every problem is reported at once with the layer it came from.
"""
from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any, Mapping

import yaml

from augmem.io import InputError

PARAM_FILES = ("default", "datasets", "agents")


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: parameter file not found")
    try:
        with open(path) as fh:
            doc = yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not valid YAML ({exc})") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise InputError(f"{path}: expected a mapping at the top level, found {type(doc).__name__}")
    return doc


def merge_config(base: Mapping[str, Any], *overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated by each override in turn, mappings merged recursively (Snakemake's ``--configfile``)."""
    out = copy.deepcopy(dict(base))
    for over in overrides:
        for key, value in (over or {}).items():
            if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
                out[key] = merge_config(out[key], value)
            else:
                out[key] = copy.deepcopy(value)
    return out


def load_params(params_dir: str | Path = "params", configfiles: list[str | Path] | tuple = ()) -> dict[str, Any]:
    """{"default": the merged configuration, "datasets": ..., "agents": ...}.

    ``default`` is ``params_dir/default.yaml`` merged with each of ``configfiles`` (as Snakemake's
    ``--configfile``); ``datasets`` is ``params_dir/datasets.yaml`` with the configuration's ``define_datasets``
    entries merged over it (a user's own dataset, declared in their own config file)."""
    params_dir = Path(params_dir)
    out = {name: read_yaml(params_dir / f"{name}.yaml") for name in PARAM_FILES}
    out["default"] = merge_config(out["default"], *(read_yaml(c) for c in configfiles))
    out["datasets"] = merged_datasets(out["datasets"], out["default"])
    return out


def merged_datasets(datasets: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """params/datasets.yaml with the configuration's ``define_datasets`` merged over it (entry by entry)."""
    return merge_config(datasets, config.get("define_datasets") or {})


@dataclasses.dataclass
class JobHParams:
    """One job's resolved hyperparameters and where each value came from."""

    agent: str
    impl: str
    hp: dict[str, Any]  # complete (every declared key), validated, normalised
    sources: dict[str, str]
    dataset: str
    family: str | None  # the dataset's hyperparameter family (None: no published per-dataset values)
    n_class: int


FIDELITIES = ("reference", "corrected")


def _matches(rule: Mapping, family: str | None, scenario: str, dataset: str, fidelity: str) -> bool:
    return (rule.get("family", family) == family and rule.get("scenario", scenario) == scenario
            and rule.get("dataset", dataset) == dataset and rule.get("fidelity", fidelity) == fidelity)


def all_declared_keys() -> set[str]:
    """Every hyperparameter some registered agent declares."""
    from augmem.agents import REGISTRY, get_agent_class
    from augmem.agents.hparams import declared

    keys: set[str] = set()
    for impl in REGISTRY:
        keys |= set(declared(get_agent_class(impl).HP))
    return keys


def resolve_job(params: Mapping[str, Any], dataset: str, agent: str, scenario: str,
                config: Mapping[str, Any] | None = None, fidelity: str = "reference") -> JobHParams:
    """Resolve (layers above) and validate one job's hyperparameters. ``config`` is the merged run configuration
    (default: ``params["default"]``); ``fidelity`` selects the override rules that name one. InputError naming the
    agent, every bad key and its source."""
    from augmem.agents import get_agent_class
    from augmem.agents.hparams import closest, declared

    config = params["default"] if config is None else config
    agents = (params["agents"] or {}).get("agents", {})
    if agent not in agents:
        raise InputError(f"unknown agent {agent!r}{closest(agent, agents)} (params/agents.yaml defines "
                         f"{sorted(agents)})")
    datasets = params["datasets"]
    if dataset not in datasets:
        raise InputError(f"unknown dataset {dataset!r}{closest(dataset, datasets)} (params/datasets.yaml and the "
                         f"configuration's define_datasets define {sorted(datasets)})")
    ds = datasets[dataset]
    if "kind" in ds:
        raise InputError(f"datasets: {dataset}: `kind` was replaced by `layout` (on-disk layout) and `family` "
                         "(whose published hyperparameters apply; absent = the agents' own values)")
    spec = agents[agent]
    try:
        cls = get_agent_class(spec["impl"])
    except (KeyError, ValueError) as exc:
        raise InputError(f"params/agents.yaml: agents.{agent}: {exc}") from None
    own = set(declared(cls.HP))
    known = all_declared_keys()
    hp: dict[str, Any] = {}
    sources: dict[str, str] = {}
    problems: list[str] = []

    def layer(values: Mapping[str, Any] | None, source: str, shared: bool) -> None:
        if values is None:
            return
        if not isinstance(values, Mapping):
            problems.append(f"{source}: expected a mapping of hyperparameters, found {values!r}")
            return
        for key, value in values.items():
            if shared and key not in own:
                if key not in known:
                    problems.append(f"{key} (from {source}): no agent declares this hyperparameter"
                                    f"{closest(key, known)}")
                continue  # a key for all agents applies to those that declare it
            hp[key] = copy.deepcopy(value)
            sources[key] = source

    layer(params["agents"].get("all_agents"), "params/agents.yaml: all_agents", shared=True)
    layer(spec.get("hp"), f"params/agents.yaml: agents.{agent}.hp", shared=False)
    if fidelity not in FIDELITIES:
        raise InputError(f"unknown fidelity {fidelity!r}; expected one of {list(FIDELITIES)}")
    for i, rule in enumerate(spec.get("overrides") or []):
        if rule.get("fidelity", fidelity) not in FIDELITIES:
            problems.append(f"params/agents.yaml: agents.{agent}.overrides[{i}]: unknown fidelity "
                            f"{rule['fidelity']!r}; expected one of {list(FIDELITIES)}")
        if _matches(rule, ds.get("family"), scenario, dataset, fidelity):
            layer(rule.get("hp"), f"params/agents.yaml: agents.{agent}.overrides[{i}]", shared=False)
    layer(ds.get("hp"), f"datasets: {dataset}.hp", shared=True)
    own_hp = (ds.get("agent_hp") or {}).get(agent)
    if isinstance(own_hp, list):  # rules {fidelity?, hp}, in order (e.g. the demo's lr of an own random-init network)
        for i, rule in enumerate(own_hp):
            where = f"datasets: {dataset}.agent_hp.{agent}[{i}]"
            if not isinstance(rule, Mapping) or "hp" not in rule or set(rule) - {"fidelity", "hp"}:
                problems.append(f"{where}: expected {{hp: {{...}}}} with an optional fidelity, found {rule!r}")
            elif rule.get("fidelity", fidelity) not in FIDELITIES:
                problems.append(f"{where}: unknown fidelity {rule['fidelity']!r}; expected one of {list(FIDELITIES)}")
            elif rule.get("fidelity", fidelity) == fidelity:
                layer(rule["hp"], where, shared=False)
    else:
        layer(own_hp, f"datasets: {dataset}.agent_hp.{agent}", shared=False)
    overrides = config.get("hparam_overrides") or {}
    layer(overrides.get("all"), "config: hparam_overrides.all", shared=True)
    layer(overrides.get(agent), f"config: hparam_overrides.{agent}", shared=False)
    for name in overrides:
        if name != "all" and name not in agents:
            problems.append(f"config: hparam_overrides.{name}: unknown agent{closest(name, agents)}")
    if problems:
        raise InputError(f"agent {agent}: " + "; ".join(problems))
    full = cls.check_hparams(hp, sources, agent=f"{agent} ({spec['impl']})")
    try:
        n_class = int(ds["n_class"])
    except (KeyError, TypeError, ValueError):
        raise InputError(f"datasets: {dataset}: n_class is missing or not an integer") from None
    family = ds.get("family")
    return JobHParams(agent, spec["impl"], full, sources, dataset, None if family is None else str(family), n_class)


def resolve_hparams(params: Mapping[str, Any], dataset: str, agent: str, scenario: str,
                    config: Mapping[str, Any] | None = None, fidelity: str = "reference") -> tuple[str, dict[str, Any]]:
    """(impl, complete hp) of one job: :func:`resolve_job` without the bookkeeping."""
    job = resolve_job(params, dataset, agent, scenario, config, fidelity)
    return job.impl, job.hp
