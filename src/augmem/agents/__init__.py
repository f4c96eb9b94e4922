"""Agents, one per file. :func:`get_agent_class` maps an implementation name (params/agents.yaml ``impl``) to a class."""
from __future__ import annotations

import importlib

# impl name -> "module:Class" (modules are imported lazily so that one broken agent does not break the others)
REGISTRY = {
    "NormalNN": "augmem.agents.normal_nn:NormalNN",
    "Offline": "augmem.agents.normal_nn:OfflineNN",
    "AugMem": "augmem.agents.augmem:AugMemAgent",
    "L2": "augmem.agents.l2:L2",
    "EWC": "augmem.agents.ewc:EWC",
    "EWCOnline": "augmem.agents.ewc_online:EWCOnline",
    "SI": "augmem.agents.si:SI",
    "MAS": "augmem.agents.mas:MAS",
    "NaiveRehearsal": "augmem.agents.naive_rehearsal:NaiveRehearsal",
    "GEM": "augmem.agents.gem:GEM",
    "AGEM": "augmem.agents.agem:AGEM",
    "iCaRL": "augmem.agents.icarl:ICaRL",
    # external baselines (spec 14)
    "StableSGD": "augmem.agents.stable_sgd:StableSGD",
    "LwF": "augmem.agents.lwf:LwF",
    "BiC": "augmem.agents.bic:BiC",
    "GSS": "augmem.agents.gss:GSS",
    "CoPE": "augmem.agents.cope:CoPE",
    "REMIND": "augmem.agents.remind:REMIND",
}


def get_agent_class(impl: str):
    try:
        module, cls = REGISTRY[impl].split(":")
    except KeyError:
        raise ValueError(f"unknown agent implementation {impl!r}; known: {sorted(REGISTRY)}") from None
    return getattr(importlib.import_module(module), cls)
