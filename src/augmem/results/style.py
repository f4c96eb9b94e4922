"""One look per agent across every table and figure: a stable order, a display label, a colour and a marker.

Order: the paper's (its table and ``*_aaai.m`` figures): AugMem, EWC (online EWC beside it), GEM, A-GEM, iCaRL, L2,
MAS, naive rehearsal, SI, then the external baselines Stable SGD, GSS, BiC, CoPE, LwF (REMIND after them), then the
bounds; then AugMem's ablations (agents named ``augmem_*``), any other agent, and imported rows (agent names ending in
``(imported)``) last. Known agents have
fixed colours; an unknown agent gets a colour and marker picked by a stable hash of its name, so it looks the same in
every figure whatever other agents are drawn with it.
"""
from __future__ import annotations

import zlib

#: Stable order of the agents this project trains (params/agents.yaml names).
AGENT_ORDER = [
    "augmem", "ewc", "ewc_online", "gem", "agem", "icarl", "l2", "mas", "naive_rehearsal", "si",
    "stable_sgd", "gss", "bic", "cope", "lwf", "remind", "lower_bound", "upper_bound",
]
#: The external baselines of spec 14 (adapted third-party code).
EXTERNAL = ("stable_sgd", "gss", "bic", "cope", "lwf", "remind")
#: The published ablations (spec 8.3), in the order of the paper; other ``augmem_*`` names sort after them.
ABLATION_ORDER = [
    "augmem_memslot50", "augmem_memsz100", "augmem_sparse", "augmem_nologits", "augmem_noreg", "augmem_noreplay",
    "augmem_herding", "augmem_mobilenet",
]
IMPORTED_SUFFIX = "(imported)"
#: Agents that are bounds rather than methods (not candidates for "best" in the results table).
BOUNDS = ("lower_bound", "upper_bound")

_LABELS = {
    "lower_bound": "Lower bound", "upper_bound": "Upper bound (offline)", "l2": "L2", "ewc": "EWC",
    "ewc_online": "Online EWC", "si": "SI", "mas": "MAS", "naive_rehearsal": "Naive rehearsal", "gem": "GEM",
    "agem": "A-GEM", "icarl": "iCaRL", "augmem": "AugMem", "stable_sgd": "Stable SGD", "gss": "GSS", "bic": "BiC",
    "cope": "CoPE", "lwf": "LwF", "remind": "REMIND",
}
_ABLATION_LABELS = {
    "augmem_memslot50": "50 memory slots", "augmem_memsz100": "memory size 100", "augmem_sparse": "sparseness β=1",
    "augmem_nologits": "no distillation loss", "augmem_noreg": "no memory-usage loss",
    "augmem_noreplay": "no replay", "augmem_herding": "herding storage", "augmem_mobilenet": "MobileNetV2 backbone",
}

# tab10 + tab20 colours, picked so that neighbours in the order differ clearly.
_COLOURS = {
    "lower_bound": "#7f7f7f", "upper_bound": "#000000", "l2": "#1f77b4", "ewc": "#ff7f0e", "ewc_online": "#ffbb78",
    "si": "#2ca02c", "mas": "#9467bd", "naive_rehearsal": "#8c564b", "gem": "#e377c2", "agem": "#f7b6d2",
    "icarl": "#17becf", "augmem": "#d62728",
    "stable_sgd": "#bcbd22", "gss": "#aec7e8", "bic": "#98df8a", "cope": "#c5b0d5", "lwf": "#c49c94",
    "remind": "#9edae5",
    # ablations: a separate (tab20b) palette, so they never share a colour with a baseline
    "augmem_memslot50": "#393b79", "augmem_memsz100": "#637939", "augmem_sparse": "#8c6d31",
    "augmem_nologits": "#843c39", "augmem_noreg": "#7b4173", "augmem_noreplay": "#bd9e39",
    "augmem_herding": "#e7969c", "augmem_mobilenet": "#8ca252",
    "AAN (imported)": "#6b6ecf", "REMIND (imported)": "#b5cf6b",
}
_MARKERS = {
    "lower_bound": "v", "upper_bound": "^", "l2": "o", "ewc": "s", "ewc_online": "D", "si": "P", "mas": "X",
    "naive_rehearsal": "<", "gem": ">", "agem": "h", "icarl": "p", "augmem": "*",
    "stable_sgd": "8", "gss": "1", "bic": "2", "cope": "3", "lwf": "4", "remind": "+",
    "AAN (imported)": "d", "REMIND (imported)": "H",
}
_ABLATION_MARKERS = ["o", "s", "D", "^", "v", "<", ">", "P"]
_FALLBACK_COLOURS = ["#5254a3", "#9c9ede", "#cedb9c", "#e7ba52", "#ad494a", "#a55194", "#ce6dbd", "#3182bd",
                     "#e6550d", "#31a354", "#756bb1", "#636363"]
_FALLBACK_MARKERS = ["o", "s", "D", "^", "v", "<", ">", "P", "X", "h", "p", "d"]


def is_imported(agent: str) -> bool:
    return str(agent).endswith(IMPORTED_SUFFIX)


def is_ablation(agent: str) -> bool:
    return str(agent).startswith("augmem_")


def agent_sort_key(agent: str) -> tuple:
    """Sort key implementing the stable agent order (see the module docstring)."""
    agent = str(agent)
    if agent in AGENT_ORDER:
        return (0, AGENT_ORDER.index(agent), agent)
    if is_ablation(agent):
        rank = ABLATION_ORDER.index(agent) if agent in ABLATION_ORDER else len(ABLATION_ORDER)
        return (1, rank, agent)
    if is_imported(agent):
        return (3, 0, agent)
    return (2, 0, agent)


def sort_agents(agents) -> list[str]:
    """Unique agents in the stable order."""
    return sorted({str(a) for a in agents}, key=agent_sort_key)


def agent_label(agent: str) -> str:
    """Human-readable name for legends and table rows."""
    agent = str(agent)
    if agent in _LABELS:
        return _LABELS[agent]
    if agent in _ABLATION_LABELS:
        return f"AugMem: {_ABLATION_LABELS[agent]}"
    if is_ablation(agent):
        return f"AugMem: {agent[len('augmem_'):].replace('_', ' ')}"
    return agent


def _hash(agent: str) -> int:
    return zlib.crc32(agent.encode("utf-8"))


def agent_colour(agent: str) -> str:
    agent = str(agent)
    return _COLOURS.get(agent) or _FALLBACK_COLOURS[_hash(agent) % len(_FALLBACK_COLOURS)]


def agent_marker(agent: str) -> str:
    agent = str(agent)
    if agent in _MARKERS:
        return _MARKERS[agent]
    if agent in ABLATION_ORDER:
        return _ABLATION_MARKERS[ABLATION_ORDER.index(agent)]
    return _FALLBACK_MARKERS[(_hash(agent) // 7) % len(_FALLBACK_MARKERS)]


def agent_style(agent: str) -> dict:
    """Matplotlib line keywords for ``agent`` (colour, marker, line style, label). Imported rows are dash-dotted,
    ablations dashed (methods and bounds solid)."""
    return {
        "color": agent_colour(agent),
        "marker": agent_marker(agent),
        "linestyle": "-." if is_imported(agent) else ("--" if is_ablation(agent) else "-"),
        "label": agent_label(agent),
    }
