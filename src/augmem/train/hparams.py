"""Resolve the hyperparameters of one training job from params/*.yaml (resolution order: see params/agents.yaml)."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

PARAM_FILES = ("default", "datasets", "agents")


def load_params(params_dir: str | Path = "params") -> dict[str, Any]:
    """{"default": ..., "datasets": ..., "agents": ...} from the YAML files of ``params_dir``."""
    params_dir = Path(params_dir)
    out = {}
    for name in PARAM_FILES:
        path = params_dir / f"{name}.yaml"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: parameter file not found")
        with open(path) as fh:
            out[name] = yaml.safe_load(fh) or {}
    return out


def _matches(rule: dict, kind: str, scenario: str, dataset: str) -> bool:
    return (rule.get("kind", kind) == kind and rule.get("scenario", scenario) == scenario
            and rule.get("dataset", dataset) == dataset)


def resolve_hparams(params: dict[str, Any], dataset: str, agent: str, scenario: str,
                    config: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """(impl, hp) for one job. ``config`` is the merged run configuration (default.yaml plus any overrides);
    it defaults to ``params["default"]``."""
    config = params["default"] if config is None else config
    agents = params["agents"]["agents"]
    if agent not in agents:
        raise KeyError(f"unknown agent {agent!r}; params/agents.yaml defines {sorted(agents)}")
    datasets = params["datasets"]
    if dataset not in datasets:
        raise KeyError(f"unknown dataset {dataset!r}; params/datasets.yaml defines {sorted(datasets)}")
    ds = datasets[dataset]
    spec = agents[agent]
    hp = copy.deepcopy(params["agents"].get("defaults", {}))
    hp.update(copy.deepcopy(spec.get("hp", {})))
    for rule in spec.get("overrides", []) or []:
        if _matches(rule, ds["kind"], scenario, dataset):
            hp.update(copy.deepcopy(rule["hp"]))
    hp.update(copy.deepcopy(ds.get("hp", {}) or {}))
    hp.update(copy.deepcopy((ds.get("agent_hp", {}) or {}).get(agent, {})))
    overrides = config.get("hparam_overrides", {}) or {}
    hp.update(copy.deepcopy(overrides.get("all", {}) or {}))
    hp.update(copy.deepcopy(overrides.get(agent, {}) or {}))
    return spec["impl"], hp
