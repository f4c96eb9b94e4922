"""The paper's figures, rebuilt from the aggregated tables and from per-run viz.npz files (spec 5.5, 10).

Every ``plot_*`` function returns a matplotlib Figure (or None when there is nothing to draw) so that tests can
inspect its axes; ``save(fig, stem)`` writes ``stem.png`` (150 dpi) and ``stem.pdf`` atomically. Figures are built
with ``matplotlib.figure.Figure`` and the Agg canvas (no pyplot, no display, no global figure state).

* curves (``plot_accuracy``): mean ± SEM (shaded) per task of every agent, chance = 100 / classes seen (class
  scenarios) or 100 / n_class (iid, instance);
* ``plot_average_accuracy``: bars of the average accuracy over tasks per agent, scenarios side by side (hatched);
* ``plot_ablation``: last-task accuracy of each ``augmem_*`` agent, the full model dotted, chance dashed;
* from viz.npz: memory heat maps, slot usage, t-SNE of the direct logits, confusion matrices, hypothesis montage.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display; harmless when pyplot is never imported

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import to_rgb  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from PIL import Image  # noqa: E402

from augmem.io import InputError, atomic_path  # noqa: E402
from augmem.results.aggregate import job_from_path  # noqa: E402
from augmem.results.style import (  # noqa: E402
    agent_colour, agent_label, agent_style, is_ablation, sort_agents,
)

DPI = 150
_HATCHES = ["", "///", "xx", "..", "\\\\\\", "++"]
_MEASURES = {
    "acc_all": "Accuracy on all seen classes (%)",
    "acc_first": "Accuracy on first-task classes (%)",
}


# ---------------------------------------------------------------------------------------------------------- saving
def save(fig: Figure, stem: str | Path) -> list[Path]:
    """Write ``stem.png`` (150 dpi) and ``stem.pdf``, each atomically; returns both paths."""
    stem = Path(stem)
    out = []
    for fmt in ("png", "pdf"):
        path = stem.with_name(stem.name + f".{fmt}")
        meta = {"CreationDate": None} if fmt == "pdf" else {}
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=DPI, metadata=meta)
        out.append(path)
    return out


def _hatch_colour(colour) -> str:
    """White hatching on dark bars, black on light ones."""
    r, g, b = to_rgb(colour)
    return "white" if 0.299 * r + 0.587 * g + 0.114 * b < 0.35 else "black"


def _new_figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def _cell(df: pd.DataFrame, dataset: str, fidelity: str, scenario: str | None = None) -> pd.DataFrame:
    """Rows of one dataset (x scenario) for one fidelity, plus the imported rows (shown with every fidelity)."""
    sel = (df["dataset"] == dataset) & ((df["fidelity"] == fidelity) | df["imported"].astype(bool))
    if scenario is not None:
        sel &= df["scenario"] == scenario
    if "primary" in df.columns:
        sel &= df["primary"].astype(bool)
    return df[sel]


# ------------------------------------------------------------------------------------------------ accuracy curves
def plot_accuracy(per_task: pd.DataFrame, dataset: str, scenario: str, fidelity: str,
                  measure: str = "acc_all") -> Figure | None:
    """Accuracy vs task (mean line, SEM band) for every agent of one cell set, with the chance line."""
    if measure not in _MEASURES:
        raise ValueError(f"measure must be one of {list(_MEASURES)}")
    sel = _cell(per_task, dataset, fidelity, scenario)
    own = sel[~sel["imported"].astype(bool)]
    if own.empty:
        return None
    fig = _new_figure(8.5, 4.6)
    ax = fig.add_subplot()
    n_tasks = int(sel["task"].max()) + 1
    for agent in sort_agents(sel["agent"]):
        g = sel[sel["agent"] == agent].sort_values("task")
        x = g["task"].to_numpy() + 1
        y = g[f"{measure}_mean"].to_numpy(dtype=float)
        e = np.nan_to_num(g[f"{measure}_sem"].to_numpy(dtype=float))
        st = agent_style(agent)
        n = int(g[f"{measure}_n"].max())
        ax.plot(x, y, color=st["color"], marker=st["marker"], linestyle=st["linestyle"], markersize=5,
                linewidth=1.5, label=f"{st['label']} (n={n})")
        ax.fill_between(x, y - e, y + e, color=st["color"], alpha=0.15, linewidth=0)
    ch = own.drop_duplicates("task").sort_values("task")
    ax.plot(ch["task"] + 1, ch["chance"], color="0.3", linestyle=(0, (6, 3)), linewidth=1.4, label="chance")
    ax.set_xlabel("Task number (accuracy after training on the task)")
    ax.set_ylabel(_MEASURES[measure])
    ax.set_xticks(range(1, n_tasks + 1))
    ax.set_xlim(0.7, n_tasks + 0.3)
    ax.set_ylim(0, 101)
    ax.grid(True, alpha=0.3)
    what = "all seen classes" if measure == "acc_all" else "first-task classes"
    ax.set_title(f"{dataset} · {scenario} · {fidelity}\naccuracy on {what} (mean ± SEM over runs)", fontsize=10)
    fig.legend(loc="outside right upper", fontsize=8, title="agent (runs)", title_fontsize=8)
    return fig


def plot_first_task(per_task: pd.DataFrame, dataset: str, scenario: str, fidelity: str) -> Figure | None:
    """First-task accuracy vs task (see ``plot_accuracy``)."""
    return plot_accuracy(per_task, dataset, scenario, fidelity, measure="acc_first")


# ----------------------------------------------------------------------------------------------- average accuracy
def plot_average_accuracy(summary: pd.DataFrame, dataset: str, fidelity: str) -> Figure | None:
    """Bars of the average accuracy over tasks (mean ± SEM over runs) per agent, one hatched bar per scenario."""
    sel = _cell(summary, dataset, fidelity)
    if sel[~sel["imported"].astype(bool)].empty:
        return None
    scenarios = sorted(sel["scenario"].unique())
    agents = sort_agents(sel["agent"])
    width = 0.8 / len(scenarios)
    fig = _new_figure(min(14.0, max(6.5, 0.32 * len(agents) * len(scenarios) + 3.5)), 4.8)
    ax = fig.add_subplot()
    for i, scen in enumerate(scenarios):
        hatch = _HATCHES[i % len(_HATCHES)]
        for j, agent in enumerate(agents):
            r = sel[(sel["scenario"] == scen) & (sel["agent"] == agent)]
            if r.empty or pd.isna(r["avg_mean"].iloc[0]):
                continue
            x = j - 0.4 + width * (i + 0.5)
            sem_v = r["avg_sem"].iloc[0]
            ax.bar(x, r["avg_mean"].iloc[0], width=width * 0.92, color=agent_colour(agent), hatch=hatch,
                   edgecolor="black", hatchcolor=_hatch_colour(agent_colour(agent)), linewidth=0.6, yerr=0 if pd.isna(sem_v) else sem_v, capsize=2,
                   error_kw={"elinewidth": 0.8})
    handles = [Patch(facecolor="white", edgecolor="black", hatch=_HATCHES[i % len(_HATCHES)], label=s)
               for i, s in enumerate(scenarios)]
    chance = sel[~sel["imported"].astype(bool)].groupby("scenario")["chance_avg"].first()
    for value in sorted(chance.dropna().unique()):
        names = ", ".join(chance.index[np.isclose(chance.to_numpy(), value)])
        line = ax.axhline(value, color="0.35", linestyle=(0, (5, 3)), linewidth=1.2, label=f"chance ({names})")
        handles.append(line)
    ax.set_xticks(range(len(agents)))
    ax.set_xticklabels([agent_label(a) for a in agents], rotation=35, ha="right", fontsize=8)
    ax.set_xlim(-0.6, len(agents) - 0.4)
    ax.set_ylim(0, 101)
    ax.set_ylabel("Average accuracy over tasks (%)")
    ax.set_xlabel("Agent")
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_title(f"{dataset} · {fidelity}\naverage accuracy over tasks\n(bars: mean, error bars: SEM over runs)",
                 fontsize=10)
    fig.legend(handles=handles, loc="outside right upper", fontsize=8, title="scenario", title_fontsize=8)
    return fig


# -------------------------------------------------------------------------------------------------------- ablation
def plot_ablation(summary: pd.DataFrame, dataset: str, scenario: str, fidelity: str,
                  runs: pd.DataFrame | None = None) -> Figure | None:
    """Last-task accuracy of each AugMem ablation (bars, SEM, kept runs as dots) vs the full model and chance."""
    sel = _cell(summary, dataset, fidelity, scenario)
    ablations = [a for a in sort_agents(sel["agent"]) if is_ablation(a)]
    if not ablations:
        return None
    fig = _new_figure(max(6.5, 0.7 * len(ablations) + 4), 4.6)
    ax = fig.add_subplot()
    dots = None
    for j, agent in enumerate(ablations):
        r = sel[sel["agent"] == agent].iloc[0]
        sem_v = r["final_sem"]
        ax.bar(j, r["final_mean"], width=0.65, color=agent_colour(agent), edgecolor="black", linewidth=0.6,
               yerr=0 if pd.isna(sem_v) else sem_v, capsize=3, alpha=0.85)
        if runs is not None:
            kept = [int(x) for x in str(r.get("runs", "")).split()]
            rr = runs[(runs["dataset"] == dataset) & (runs["scenario"] == scenario) & (runs["fidelity"] == fidelity)
                      & (runs["agent"] == agent) & runs["primary"].astype(bool) & runs["run"].isin(kept)]
            rr = rr[rr["task"] == rr["task"].max()] if not rr.empty else rr
            if not rr.empty:
                jitter = np.linspace(-0.18, 0.18, len(rr)) if len(rr) > 1 else np.zeros(1)
                dots = ax.scatter(j + jitter, rr["acc_all"], s=10, color="black", zorder=3, label="single runs")
    handles = []
    full = sel[sel["agent"] == "augmem"]
    if not full.empty and pd.notna(full["final_mean"].iloc[0]):
        handles.append(ax.axhline(full["final_mean"].iloc[0], color=agent_colour("augmem"), linestyle=":",
                                  linewidth=2, label="AugMem (full model)"))
    ch = sel["chance_final"].dropna()
    if not ch.empty:
        handles.append(ax.axhline(ch.iloc[0], color="0.35", linestyle="--", linewidth=1.2, label="chance"))
    if dots is not None:
        handles.append(dots)
    ax.set_xticks(range(len(ablations)))
    ax.set_xticklabels([agent_label(a).replace("AugMem: ", "") for a in ablations], rotation=30, ha="right",
                       fontsize=8)
    ax.set_xlim(-0.6, len(ablations) - 0.4)
    ax.set_ylim(0, 101)
    ax.set_xlabel("AugMem ablation")
    ax.set_ylabel("Accuracy on all classes after the last task (%)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_title(f"{dataset} · {scenario} · {fidelity}\nAugMem ablations after the last task\n"
                 "(mean ± SEM over runs)", fontsize=10)
    if handles:
        fig.legend(handles=handles, loc="outside right upper", fontsize=8)
    return fig


# ------------------------------------------------------------------------------------------------------- viz files
@dataclass
class Viz:
    """The arrays of one run's viz.npz, its meta_json and the run's identity (for titles and file names)."""

    arrays: dict
    meta: dict
    job: dict  # dataset, fidelity, scenario, agent, run (values may be "?" when unknown)
    source: str

    @property
    def tasks(self) -> list[int]:
        return sorted(int(k[4:-7]) for k in self.arrays if k.startswith("task") and k.endswith("_labels"))

    @property
    def is_augmem(self) -> bool:
        return any(k.endswith("_memory") for k in self.arrays)

    @property
    def name(self) -> str:
        j = self.job
        return f"{j['dataset']}_{j['scenario']}_{j['fidelity']}_{j['agent']}_run{j['run']}"

    @property
    def title(self) -> str:
        j = self.job
        return f"{agent_label(j['agent'])} · {j['dataset']} · {j['scenario']} · {j['fidelity']} · run {j['run']}"

    def get(self, key: str) -> np.ndarray:
        if key not in self.arrays:
            raise InputError(f"{self.source}: viz file lacks array {key!r}")
        return self.arrays[key]

    def class_name(self, label: int) -> str:
        names = self.meta.get("class_names") or {}
        return str(names.get(str(int(label)), names.get(int(label), label)) if isinstance(names, dict) else label)

    def seen_labels(self, t: int) -> list[int]:
        """Labels seen up to task t (from meta tasks; else the labels of the visualised images)."""
        tasks = self.meta.get("tasks")
        if isinstance(tasks, list) and len(tasks) > t:
            return sorted({int(lab) for task in tasks[: t + 1] for lab in task})
        return sorted({int(lab) for lab in self.get(f"task{t}_labels")})


def load_viz(path: str | Path, job: dict | None = None) -> Viz:
    """Read a viz.npz. The run's identity comes from ``job``, else the sibling metrics.json, else the path.

    A run trained with ``visualize`` off writes a viz.npz holding only ``meta_json`` (with ``"visualize": false``):
    that gives a Viz without tasks (no visualisation for this run). Any other file without task arrays is an error.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: viz file not found")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as exc:
        raise InputError(f"{path}: cannot be read as .npz ({exc})") from exc
    if "meta_json" not in arrays:
        raise InputError(f"{path}: viz file lacks 'meta_json'")
    try:
        meta = json.loads(str(arrays.pop("meta_json")[()]))
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: meta_json is not valid JSON ({exc})") from None
    if job is None:
        metrics = path.with_name("metrics.json")
        try:
            m = json.loads(metrics.read_text())["meta"] if metrics.is_file() else None
            job = {k: m[k] for k in ("dataset", "fidelity", "scenario", "agent", "run")} if m else None
        except (json.JSONDecodeError, KeyError, TypeError):
            job = None
    if job is None:
        try:
            job = job_from_path(path)
        except InputError:
            job = {"dataset": "?", "fidelity": "?", "scenario": "?", "agent": path.parent.name or path.stem,
                   "run": "?"}
    viz = Viz(arrays, meta, job, str(path))
    if not viz.tasks and meta.get("visualize", True) is not False:
        raise InputError(f"{path}: viz file has no task<t>_labels arrays")
    return viz


def pick_tasks(tasks: list[int], k: int = 3) -> list[int]:
    """Up to k tasks spread evenly from the first to the last (e.g. 5 tasks -> 0, 2, 4, like the paper's 1, 3, 5)."""
    if len(tasks) <= k:
        return list(tasks)
    idx = np.unique(np.round(np.linspace(0, len(tasks) - 1, k)).astype(int))
    return [tasks[i] for i in idx]


def _panels(n: int, width_each: float, height: float, extra: float = 1.2) -> tuple[Figure, list]:
    fig = _new_figure(width_each * n + extra, height)
    axes = fig.subplots(1, n, squeeze=False)[0]
    return fig, list(axes)


def plot_memory(viz: Viz, tasks: list[int] | None = None, max_panels: int = 6) -> Figure | None:
    """Heat maps of the memory matrix (slots x features) per task: diverging colours, one symmetric scale."""
    tasks = pick_tasks([t for t in viz.tasks if f"task{t}_memory" in viz.arrays] if tasks is None else tasks,
                       max_panels)
    if not tasks:
        return None
    mats = [np.asarray(viz.get(f"task{t}_memory"), dtype=float) for t in tasks]
    vmax = max(float(np.max(np.abs(m))) for m in mats) or 1.0
    fig, axes = _panels(len(tasks), 2.4, 4.2)
    im = None
    for ax, t, m in zip(axes, tasks, mats):
        im = ax.imshow(m, aspect="auto", cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest")
        ax.set_title(f"after task {t + 1}", fontsize=9)
        ax.set_xlabel("feature")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].set_ylabel("memory slot")
    fig.colorbar(im, ax=axes, label="memory value", shrink=0.9)
    fig.suptitle(f"Memory matrix ({mats[0].shape[0]} slots × {mats[0].shape[1]} features)\n{viz.title}",
                 fontsize=10)
    return fig


def plot_slot_usage(viz: Viz, tasks: list[int] | None = None, max_panels: int = 6) -> Figure | None:
    """Per task: how many stored entries of each seen class point to each memory slot (classes x slots)."""
    tasks = pick_tasks([t for t in viz.tasks if f"task{t}_slot_usage" in viz.arrays] if tasks is None else tasks,
                       max_panels)
    if not tasks:
        return None
    data = []
    for t in tasks:
        usage = np.asarray(viz.get(f"task{t}_slot_usage"), dtype=float)
        seen = [s for s in viz.seen_labels(t) if s < usage.shape[0]]
        data.append((t, seen, usage[seen] if seen else usage))
    vmax = max(float(d[2].max()) for d in data) or 1.0
    fig, axes = _panels(len(tasks), 2.6, 3.8)
    im = None
    for ax, (t, seen, u) in zip(axes, data):
        im = ax.imshow(u, aspect="auto", cmap="viridis", vmin=0, vmax=vmax, interpolation="nearest")
        ax.set_title(f"after task {t + 1}", fontsize=9)
        ax.set_xlabel("memory slot")
        ax.xaxis.set_major_locator(MaxNLocator(nbins=4, integer=True))
        if len(seen) <= 15:
            ax.set_yticks(range(len(seen)))
            ax.set_yticklabels([viz.class_name(s) for s in seen], fontsize=7)
    axes[0].set_ylabel("class")
    fig.colorbar(im, ax=axes, label="stored entries pointing to the slot", shrink=0.9)
    fig.suptitle(f"Memory slot usage by class\n{viz.title}", fontsize=10)
    return fig


def _class_colours(labels) -> dict:
    cmap = matplotlib.colormaps["tab10" if len(labels) <= 10 else "tab20"]
    return {lab: cmap(i % cmap.N) for i, lab in enumerate(sorted(labels))}


def tsne_embedding(x: np.ndarray, random_state: int = 0) -> np.ndarray:
    """2-D t-SNE (sklearn, PCA init, fixed random_state, one thread); perplexity min(30, (n-1)/3) < n."""
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    n = x.shape[0]
    perplexity = float(min(30.0, max(1.0, (n - 1) / 3.0)))
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=random_state)
    # One thread: OpenMP oversubscription makes Barnes-Hut t-SNE 100x slower on a busy machine, and the result
    # then does not depend on the core count.
    with threadpool_limits(limits=1):
        return tsne.fit_transform(np.asarray(x, dtype=np.float64))


def plot_tsne(viz: Viz, tasks: list[int] | None = None, random_state: int = 0) -> Figure | None:
    """t-SNE of the direct logits (restricted to the seen classes' outputs) at up to 3 tasks, coloured by class."""
    tasks = pick_tasks(viz.tasks if tasks is None else tasks, 3)
    tasks = [t for t in tasks if f"task{t}_logits" in viz.arrays]
    if not tasks:
        return None
    all_labels = sorted({int(v) for t in tasks for v in viz.get(f"task{t}_labels")})
    colours = _class_colours(all_labels)
    fig, axes = _panels(len(tasks), 3.4, 3.6, extra=1.6)
    for ax, t in zip(axes, tasks):
        logits = np.asarray(viz.get(f"task{t}_logits"), dtype=float)
        labels = np.asarray(viz.get(f"task{t}_labels")).astype(int)
        seen = [s for s in viz.seen_labels(t) if s < logits.shape[1]]
        if seen:
            logits = logits[:, seen]
        ax.set_title(f"after task {t + 1} ({len(seen) or logits.shape[1]} classes)", fontsize=9)
        ax.set_xlabel("t-SNE 1")
        ax.set_xticks([])
        ax.set_yticks([])
        finite = np.isfinite(logits).all(axis=1)  # a diverged run (NaN logits) is shown as such, not plotted
        logits, labels = logits[finite], labels[finite]
        # identical logits for every image (a dead network) make t-SNE's PCA start degenerate: say so instead
        constant = logits.shape[0] > 0 and float(np.ptp(logits, axis=0).max()) < 1e-8
        if logits.shape[0] < 5 or constant:
            msg = ("non-finite logits (diverged run)" if (~finite).any() and logits.shape[0] < 5
                   else "identical logits for every image" if constant else "too few images")
            ax.text(0.5, 0.5, msg, ha="center", va="center", transform=ax.transAxes)
            continue
        emb = tsne_embedding(logits, random_state)
        for lab in sorted(set(labels.tolist())):
            sel = labels == lab
            ax.scatter(emb[sel, 0], emb[sel, 1], s=8, color=colours[lab], label=viz.class_name(lab))
    axes[0].set_ylabel("t-SNE 2")
    handles = [Patch(color=colours[lab], label=viz.class_name(lab)) for lab in all_labels]
    fig.legend(handles=handles, loc="outside right upper", fontsize=7, title="class", title_fontsize=8)
    fig.suptitle(f"t-SNE of the direct logits\n{viz.title}", fontsize=10)
    return fig


def row_normalise(conf: np.ndarray) -> np.ndarray:
    """Each row divided by its sum (rows without any image stay 0), so values lie in 0..1."""
    conf = np.asarray(conf, dtype=float)
    sums = conf.sum(axis=1, keepdims=True)
    return np.divide(conf, sums, out=np.zeros_like(conf), where=sums > 0)


def plot_confusion(viz: Viz, tasks: list[int] | None = None) -> Figure | None:
    """Row-normalised confusion matrices (true x predicted, 0..1) at up to 3 tasks."""
    tasks = pick_tasks(viz.tasks if tasks is None else tasks, 3)
    tasks = [t for t in tasks if f"task{t}_confusion" in viz.arrays]
    if not tasks:
        return None
    fig, axes = _panels(len(tasks), 3.3, 3.6)
    im = None
    for ax, t in zip(axes, tasks):
        conf = row_normalise(viz.get(f"task{t}_confusion"))
        k = conf.shape[0]
        im = ax.imshow(conf, cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(f"after task {t + 1} ({k} classes)", fontsize=9)
        ax.set_xlabel("predicted class")
        if k <= 12:
            names = [viz.class_name(i) for i in range(k)]
            ax.set_xticks(range(k))
            ax.set_xticklabels(names, rotation=90, fontsize=7)
            ax.set_yticks(range(k))
            ax.set_yticklabels(names, fontsize=7)
    axes[0].set_ylabel("true class")
    fig.colorbar(im, ax=axes, label="fraction of the true class", shrink=0.9)
    fig.suptitle(f"Confusion matrices (row-normalised)\n{viz.title}", fontsize=10)
    return fig


def hypothesis_mask(top_slots: np.ndarray, slot: int, size: tuple[int, int]) -> np.ndarray:
    """(H, W) mask in 0..1: per location, the number of groups whose top slot is ``slot``, divided by the maximum,
    upsampled bilinearly to ``size`` = (H, W). All zeros when the slot is not used."""
    counts = (np.asarray(top_slots) == slot).sum(axis=-1).astype(np.float32)  # (h, w)
    if counts.max() > 0:
        counts /= counts.max()
    h, w = size
    up = np.asarray(Image.fromarray(counts).resize((w, h), Image.Resampling.BILINEAR), dtype=np.float32)
    return np.clip(up, 0.0, 1.0)


def plot_hypotheses(viz: Viz, task: int | None = None, n_classes: int = 2, images_per_class: int = 2,
                    n_slots: int = 4) -> Figure | None:
    """Montage (spec 10, VisAttentionBackImage): for each of the first classes, its test images masked by the
    locations whose top-1 slot is each of the class's most used slots (first column: the raw image).

    Slot use is counted over every location and group of the class's shown images; the mask of image i and slot s is
    ``hypothesis_mask`` (groups pointing to s per location, normalised, upsampled) multiplied onto the image.
    """
    candidates = [t for t in viz.tasks if f"task{t}_images" in viz.arrays and f"task{t}_top_slots" in viz.arrays]
    if not candidates:
        return None
    t = candidates[0] if task is None else task
    images = np.asarray(viz.get(f"task{t}_images"))
    index = np.asarray(viz.get(f"task{t}_image_index")).astype(int)
    labels = np.asarray(viz.get(f"task{t}_labels")).astype(int)[index]
    top = np.asarray(viz.get(f"task{t}_top_slots"))[index]
    classes = sorted(set(labels.tolist()))[:n_classes]
    groups = []  # (class, image rows, slots, share of tops)
    for c in classes:
        rows = np.flatnonzero(labels == c)[:images_per_class]
        slots, counts = np.unique(top[rows], return_counts=True)
        order = np.argsort(-counts, kind="stable")[:n_slots]
        groups.append((c, rows, slots[order], counts[order] / counts.sum()))
    ncol = 1 + max(len(g[2]) for g in groups)
    nrow = sum(len(g[1]) for g in groups)
    fig = _new_figure(1.5 * ncol + 0.6, 1.75 * nrow + 0.9)
    axes = fig.subplots(nrow, ncol, squeeze=False)
    r = 0
    for c, rows, slots, share in groups:
        for k, i in enumerate(rows):
            img = images[i].transpose(1, 2, 0).astype(np.float32) / 255.0
            for col in range(ncol):
                ax = axes[r, col]
                ax.set_xticks([])
                ax.set_yticks([])
                if col == 0:
                    ax.imshow(img)
                    if k == 0:
                        ax.set_title("raw image", fontsize=8)
                elif col - 1 < len(slots):
                    mask = hypothesis_mask(top[i], int(slots[col - 1]), img.shape[:2])
                    ax.imshow(img * mask[..., None])
                    if k == 0:
                        ax.set_title(f"slot {int(slots[col - 1])} ({share[col - 1]:.0%})", fontsize=8)
                else:
                    ax.set_axis_off()
            axes[r, 0].set_ylabel(viz.class_name(c), fontsize=8)
            r += 1
    fig.suptitle(f"Hypotheses after task {t + 1}: image regions whose top memory slot is s\n"
                 f"(the class's most used slots, % of its top-slot picks) · {viz.title}", fontsize=9)
    return fig


# -------------------------------------------------------------------------------------------------------- render all
def render_all(summary: pd.DataFrame, per_task: pd.DataFrame, out_dir: str | Path, runs: pd.DataFrame | None = None,
               viz_paths=()) -> list[dict]:
    """Draw and save every figure the inputs allow; returns index entries {stem, files, caption}."""
    out_dir = Path(out_dir)
    entries: list[dict] = []

    def emit(fig, stem, caption):
        if fig is None:
            return
        files = save(fig, out_dir / stem)
        entries.append({"stem": stem, "files": [f.name for f in files], "caption": caption})

    filt = "; ".join(sorted(summary.loc[~summary["imported"].astype(bool), "run_filter"].dropna().unique())) \
        if "run_filter" in summary else "none"
    own = per_task[~per_task["imported"].astype(bool) & per_task["primary"].astype(bool)]
    for (dataset, scenario, fidelity), _ in own.groupby(["dataset", "scenario", "fidelity"], sort=True):
        tag = f"{dataset}_{scenario}_{fidelity}"
        emit(plot_accuracy(per_task, dataset, scenario, fidelity), f"accuracy_{tag}",
             f"{dataset}, {scenario}, {fidelity}: accuracy on all seen classes after each task, mean ± SEM over "
             f"runs per agent; dashed: chance. Run filter: {filt}.")
        emit(plot_first_task(per_task, dataset, scenario, fidelity), f"first_task_{tag}",
             f"{dataset}, {scenario}, {fidelity}: accuracy on the first task's classes after each task, mean ± SEM "
             f"over runs. Run filter: {filt}.")
        emit(plot_ablation(summary, dataset, scenario, fidelity, runs), f"ablation_{tag}",
             f"{dataset}, {scenario}, {fidelity}: accuracy after the last task of each AugMem ablation (mean ± SEM, "
             f"dots: single runs); dotted: full AugMem; dashed: chance. Run filter: {filt}.")
    for (dataset, fidelity), _ in own.groupby(["dataset", "fidelity"], sort=True):
        emit(plot_average_accuracy(summary, dataset, fidelity), f"average_accuracy_{dataset}_{fidelity}",
             f"{dataset}, {fidelity}: average accuracy over tasks per agent (per-run mean over tasks, then mean ± "
             f"SEM over runs), scenarios side by side; dashed: chance. Run filter: {filt}.")
    for p in viz_paths:
        viz = load_viz(p)
        if not viz.tasks:
            continue  # trained with `visualize` off: no visualisation for this run
        if viz.is_augmem:
            emit(plot_memory(viz), f"memory_{viz.name}",
                 f"{viz.title}: memory matrix (slots × features) after each task; diverging colours, symmetric scale.")
            emit(plot_slot_usage(viz), f"slot_usage_{viz.name}",
                 f"{viz.title}: number of stored entries of each seen class pointing to each memory slot.")
            emit(plot_hypotheses(viz), f"hypotheses_{viz.name}",
                 f"{viz.title}: test images of the first classes masked by the locations whose top memory slot is "
                 f"each of the most used slots (first column: raw image).")
        emit(plot_tsne(viz), f"tsne_{viz.name}",
             f"{viz.title}: t-SNE of the direct logits of the visualised test images at up to 3 tasks.")
        emit(plot_confusion(viz), f"confusion_{viz.name}",
             f"{viz.title}: row-normalised confusion matrices (true × predicted) at up to 3 tasks.")
    return entries

