"""Figures: every figure from the fixtures, with the expected axes and series; saving; the figures stage."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from augmem.io import InputError
from augmem.results import aggregate as agg
from augmem.results import figures as F
from augmem.results.style import AGENT_ORDER, agent_colour, agent_label, agent_marker, sort_agents
from stages import aggregate as agg_stage
from stages import figures as stage

from .conftest import AGENTS, DATASET, FIDELITY, N_RUNS, PUBLISHED_DIR, acc_matrix

AGENT_LIST = sort_agents(AGENTS)  # the paper's order


def _data_axes(fig):
    """Axes that hold data (not colour bars)."""
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


@pytest.fixture(scope="module")
def viz(results_tree):
    augmem = F.load_viz(next(p for p in results_tree.viz if "/augmem/" in str(p) and "class_iid" in str(p)))
    ewc = F.load_viz(next(p for p in results_tree.viz if "/ewc/" in str(p)))
    return augmem, ewc


# --------------------------------------------------------------------------------------------------------- style
def test_style_order_and_consistency():
    names = ["augmem_zzz", "REMIND (imported)", "icarl", "augmem_noreg", "augmem", "lower_bound", "my_agent",
             "augmem_memslot50", "AAN (imported)", "upper_bound"]
    assert sort_agents(names) == ["augmem", "icarl", "lower_bound", "upper_bound", "augmem_memslot50",
                                  "augmem_noreg", "augmem_zzz", "my_agent", "AAN (imported)", "REMIND (imported)"]
    colours = [agent_colour(a) for a in AGENT_ORDER]
    assert len(set(colours)) == len(colours)
    markers = [agent_marker(a) for a in AGENT_ORDER]
    assert len(set(markers)) == len(markers)
    assert agent_colour("some_new_agent") == agent_colour("some_new_agent")
    assert agent_label("augmem_noreg") == "AugMem: no memory-usage loss"


# ----------------------------------------------------------------------------------------------- accuracy curves
@pytest.mark.parametrize("plot,ylabel", [(F.plot_accuracy, "all seen classes"),
                                         (F.plot_first_task, "first-task classes")])
def test_accuracy_curves(aggregated, plot, ylabel):
    per_task = aggregated[2]
    fig = plot(per_task, DATASET, "class_iid", FIDELITY)
    (ax,) = fig.axes
    lines = ax.get_lines()
    assert len(lines) == len(AGENT_LIST) + 1  # one per agent + chance
    labels = [ln.get_label() for ln in lines]
    assert labels[:-1] == [f"{agent_label(a)} (n={N_RUNS})" for a in AGENT_LIST]
    assert labels[-1] == "chance"
    assert ylabel in ax.get_ylabel() and "(%)" in ax.get_ylabel()
    assert ax.get_xlabel().startswith("Task number")
    assert len(ax.collections) == len(AGENT_LIST)  # SEM bands
    np.testing.assert_allclose(lines[-1].get_ydata(), [50.0, 25.0, 100 / 6])
    np.testing.assert_allclose(lines[0].get_xdata(), [1, 2, 3])
    pt = per_task[(per_task["agent"] == "augmem") & per_task["primary"] & (per_task["scenario"] == "class_iid")]
    col = "acc_all_mean" if plot is F.plot_accuracy else "acc_first_mean"
    np.testing.assert_allclose(lines[AGENT_LIST.index("augmem")].get_ydata(), pt[col])
    assert lines[AGENT_LIST.index("augmem")].get_color() == agent_colour("augmem")
    assert len(fig.legends) == 1 and len(fig.legends[0].get_texts()) == len(AGENT_LIST) + 1
    assert F.plot_accuracy(per_task, "other", "class_iid", FIDELITY) is None


def test_iid_chance_is_one_over_n_class(tmp_path, metrics_writer):
    paths = [metrics_writer(tmp_path, agent="l2", run=r, scenario="iid", matrix=acc_matrix(0.5, r)) for r in range(2)]
    pt = agg.per_task(agg.load_runs(paths))
    fig = F.plot_accuracy(pt, DATASET, "iid", FIDELITY)
    np.testing.assert_allclose(fig.axes[0].get_lines()[-1].get_ydata(), [100 / 6] * 3)


def test_imported_rows_join_the_curves(tmp_path, metrics_writer):
    paths = [metrics_writer(tmp_path, dataset="core50", agent=a, run=r, matrix=acc_matrix(0.6, r, n_tasks=5))
             for a in ("ewc", "augmem") for r in range(2)]
    runs = agg.load_runs(paths)
    runs = agg.sort_runs(pd.concat([runs, agg.load_imported(PUBLISHED_DIR, ["core50"])], ignore_index=True))
    pt = agg.per_task(runs)
    fig = F.plot_accuracy(pt, "core50", "class_iid", FIDELITY)
    lines = fig.axes[0].get_lines()
    assert [ln.get_label() for ln in lines] == ["AugMem (n=2)", "EWC (n=2)", "AAN (imported) (n=10)", "chance"]
    assert lines[2].get_linestyle() == "-." and len(lines[2].get_xdata()) == 5
    summary = agg.summarise(runs)
    bars = F.plot_average_accuracy(summary, "core50", FIDELITY)
    assert [t.get_text() for t in bars.axes[0].get_xticklabels()] == ["AugMem", "EWC", "AAN (imported)"]


# ------------------------------------------------------------------------------------------------- bars, ablation
def test_average_accuracy_bars(aggregated):
    summary = aggregated[1]
    fig = F.plot_average_accuracy(summary, DATASET, FIDELITY)
    (ax,) = fig.axes
    bars = [p for p in ax.patches]
    assert len(bars) == len(AGENT_LIST) * 2  # two scenarios side by side
    heights = sorted(round(b.get_height(), 6) for b in bars)
    assert heights == sorted(round(v, 6) for v in summary["avg_mean"])
    assert [t.get_text() for t in ax.get_xticklabels()] == [agent_label(a) for a in AGENT_LIST]
    assert "Average accuracy" in ax.get_ylabel() and "(%)" in ax.get_ylabel()
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend[:2] == ["class_iid", "class_instance"] and legend[2].startswith("chance")
    chance = [ln for ln in ax.get_lines() if ln.get_label().startswith("chance")]
    assert chance and chance[0].get_ydata()[0] == pytest.approx(summary["chance_avg"].iloc[0])
    assert {b.get_hatch() for b in bars} == {None, "///"} or {b.get_hatch() for b in bars} == {"", "///"}


def test_ablation_bars(aggregated):
    runs, summary, _ = aggregated
    fig = F.plot_ablation(summary, DATASET, "class_iid", FIDELITY, runs)
    (ax,) = fig.axes
    assert len(ax.patches) == 1  # one ablation in the fixture
    s = summary[summary["scenario"] == "class_iid"].set_index("agent")
    assert ax.patches[0].get_height() == pytest.approx(s.loc["augmem_noreg", "final_mean"])
    styles = {ln.get_label(): (ln.get_linestyle(), ln.get_ydata()[0]) for ln in ax.get_lines()
              if ln.get_label() in ("AugMem (full model)", "chance")}
    assert styles["AugMem (full model)"][0] == ":"
    assert styles["AugMem (full model)"][1] == pytest.approx(s.loc["augmem", "final_mean"])
    assert styles["chance"] == ("--", pytest.approx(100 / 6))
    dots = [c for c in ax.collections if c.get_label() == "single runs"]
    assert len(dots) == 1 and len(dots[0].get_offsets()) == N_RUNS
    assert [t.get_text() for t in ax.get_xticklabels()] == ["no memory-usage loss"]
    no_ablation = summary[summary["agent"] != "augmem_noreg"]
    assert F.plot_ablation(no_ablation, DATASET, "class_iid", FIDELITY) is None


# ------------------------------------------------------------------------------------------------------------ viz
def test_load_viz_identity_and_errors(results_tree, viz, tmp_path):
    augmem, ewc = viz
    assert augmem.is_augmem and not ewc.is_augmem
    assert augmem.tasks == [0, 1, 2]
    assert augmem.name == f"{DATASET}_class_iid_{FIDELITY}_augmem_run0"
    assert augmem.class_name(1) == "cup"
    with pytest.raises(InputError, match="viz file not found"):
        F.load_viz(tmp_path / "viz.npz")
    np.savez(tmp_path / "bad.npz", x=np.zeros(2))
    with pytest.raises(InputError, match="meta_json"):
        F.load_viz(tmp_path / "bad.npz")
    # meta_json alone, without saying that visualize was off: a broken file
    np.savez(tmp_path / "empty.npz", meta_json=np.array(json.dumps({"n_tasks": 3})))
    with pytest.raises(InputError, match="no task<t>_labels arrays"):
        F.load_viz(tmp_path / "empty.npz")


def write_viz_off(path: Path) -> Path:
    """The viz.npz the training loop writes with `visualize` off: only meta_json, "visualize": false."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, meta_json=np.array(json.dumps({"n_tasks": 3, "tasks": [[0, 1], [2, 3], [4, 5]],
                                                  "visualize": False, "class_names": {}})))
    return path


def test_load_viz_with_visualize_off_has_no_tasks(tmp_path):
    v = F.load_viz(write_viz_off(tmp_path / "results" / DATASET / FIDELITY / "class_iid" / "ewc" / "run1" / "viz.npz"))
    assert v.tasks == [] and not v.is_augmem
    assert v.job["agent"] == "ewc" and v.job["run"] == 1


def test_memory_heatmaps(viz):
    augmem, ewc = viz
    fig = F.plot_memory(augmem)
    axes = _data_axes(fig)
    assert len(axes) == 3
    lims = {ax.images[0].get_clim() for ax in axes}
    assert len(lims) == 1
    lo, hi = lims.pop()
    vmax = max(np.abs(augmem.arrays[f"task{t}_memory"]).max() for t in range(3))
    assert lo == pytest.approx(-hi) and hi == pytest.approx(vmax)
    assert axes[0].images[0].get_cmap().name == "RdBu_r"
    assert axes[0].get_ylabel() == "memory slot" and axes[0].get_xlabel() == "feature"
    assert axes[0].images[0].get_array().shape == (20, 8)
    assert F.plot_memory(ewc) is None


def test_slot_usage(viz):
    augmem, _ = viz
    fig = F.plot_slot_usage(augmem)
    axes = _data_axes(fig)
    assert [ax.images[0].get_array().shape for ax in axes] == [(2, 20), (4, 20), (6, 20)]  # seen classes x slots
    assert [t.get_text() for t in axes[0].get_yticklabels()] == ["scissors", "cup"]
    assert axes[0].get_xlabel() == "memory slot" and axes[0].get_ylabel() == "class"


@pytest.mark.parametrize("which", [0, 1])
def test_tsne(viz, which):
    v = viz[which]
    fig = F.plot_tsne(v)
    axes = _data_axes(fig)
    assert len(axes) == 3
    for ax, t in zip(axes, [0, 1, 2]):
        n_classes = 2 * (t + 1)
        assert len(ax.collections) == n_classes
        assert sum(len(c.get_offsets()) for c in ax.collections) == len(v.arrays[f"task{t}_labels"])
    assert len(fig.legends[0].get_texts()) == 6


def test_tsne_is_deterministic(viz):
    x = viz[0].arrays["task1_logits"][:, :4]
    np.testing.assert_array_equal(F.tsne_embedding(x, 0), F.tsne_embedding(x, 0))


def test_confusion(viz):
    _, ewc = viz
    fig = F.plot_confusion(ewc)
    axes = _data_axes(fig)
    assert len(axes) == 3
    for ax in axes:
        im = ax.images[0]
        assert im.get_clim() == (0, 1)
        np.testing.assert_allclose(np.asarray(im.get_array()).sum(axis=1), 1.0)
    assert axes[2].images[0].get_array().shape == (6, 6)
    assert axes[0].get_xlabel() == "predicted class" and axes[0].get_ylabel() == "true class"
    assert F.row_normalise(np.array([[0, 0], [1, 3]])).tolist() == [[0, 0], [0.25, 0.75]]


def test_hypothesis_mask():
    top = np.zeros((2, 2, 4), dtype=int)
    top[0, 0, :] = 7          # all 4 groups at (0, 0)
    top[1, 1, :2] = 7         # 2 groups at (1, 1)
    m = F.hypothesis_mask(top, 7, (2, 2))
    np.testing.assert_allclose(m, [[1.0, 0.0], [0.0, 0.5]])
    up = F.hypothesis_mask(top, 7, (8, 8))
    assert up.shape == (8, 8) and up.max() <= 1.0 and up[0, 0] == pytest.approx(1.0)
    assert F.hypothesis_mask(top, 3, (4, 4)).max() == 0.0


def test_hypotheses_montage(viz):
    augmem, ewc = viz
    fig = F.plot_hypotheses(augmem, n_slots=4, images_per_class=2)
    axes = np.array(fig.axes).reshape(4, 5)  # 2 classes x 2 images, raw + 4 slots
    assert axes[0, 0].get_title() == "raw image"
    assert axes[0, 1].get_title().startswith("slot ")
    assert [axes[r, 0].get_ylabel() for r in range(4)] == ["scissors", "scissors", "cup", "cup"]
    raw = np.asarray(axes[0, 0].images[0].get_array())
    for c in range(1, 5):
        masked = np.asarray(axes[0, c].images[0].get_array())
        assert masked.shape == raw.shape and np.all(masked <= raw + 1e-6) and masked.max() > 0
    assert F.plot_hypotheses(ewc) is None


def test_pick_tasks():
    assert F.pick_tasks([0, 1, 2, 3, 4]) == [0, 2, 4]
    assert F.pick_tasks([0, 1]) == [0, 1]
    assert F.pick_tasks(list(range(20))) == [0, 10, 19]


# ------------------------------------------------------------------------------------------------------ save, stage
def test_save_png_and_pdf_deterministic(tmp_path, aggregated):
    # same inputs -> byte-identical files (two independent figures: re-saving one figure re-runs its layout)
    a = F.save(F.plot_accuracy(aggregated[2], DATASET, "class_iid", FIDELITY), tmp_path / "a" / "accuracy")
    b = F.save(F.plot_accuracy(aggregated[2], DATASET, "class_iid", FIDELITY), tmp_path / "b" / "accuracy")
    assert [p.name for p in a] == ["accuracy.png", "accuracy.pdf"]
    with Image.open(a[0]) as im:
        assert round(im.info["dpi"][0]) == 150 and im.size[0] > 800
    assert a[1].read_bytes().startswith(b"%PDF")
    assert a[0].read_bytes() == b[0].read_bytes() and a[1].read_bytes() == b[1].read_bytes()
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["accuracy.pdf", "accuracy.png"]  # no temp left


def test_figures_stage_end_to_end(tmp_path, results_tree):
    """Aggregate the class_iid runs, then draw every figure they allow (+ one AugMem viz) with an index."""
    metrics = [str(p) for p in results_tree.metrics if "/class_iid/" in str(p)]
    tables = tmp_path / "tables"
    agg_stage.main(["--metrics", *metrics, "--out-dir", str(tables)])
    viz = [str(p) for p in results_tree.viz if "/class_iid/augmem/" in str(p)]
    # a run trained with `visualize` off (viz.npz with meta_json only) adds no figure and is no error
    viz.append(str(write_viz_off(tmp_path / "off" / DATASET / FIDELITY / "class_iid" / "ewc" / "run1" / "viz.npz")))
    out = tmp_path / "figures"
    stage.main(["--runs", str(tables / "runs.csv"), "--summary", str(tables / "summary.csv"),
                "--per-task", str(tables / "per_task.csv"), "--viz", *viz, "--out-dir", str(out)])
    index = json.loads((out / "index.json").read_text())["figures"]
    tag = f"{DATASET}_class_iid_{FIDELITY}"
    run = f"{tag}_augmem_run0"
    assert [e["stem"] for e in index] == [
        f"accuracy_{tag}", f"first_task_{tag}", f"ablation_{tag}", f"average_accuracy_{DATASET}_{FIDELITY}",
        f"memory_{run}", f"slot_usage_{run}", f"hypotheses_{run}", f"tsne_{run}", f"confusion_{run}"]
    for e in index:
        assert e["caption"] and all((out / f).stat().st_size > 1000 for f in e["files"])
    assert sorted(Path(f).name for f in out.iterdir()) == sorted(["index.json"] + [f for e in index for f in e["files"]])
    with pytest.raises(SystemExit) as exc:
        stage.main(["--summary", str(tables / "summary.csv"), "--per-task", str(tables / "nope.csv"),
                    "--out-dir", str(tmp_path / "x")])
    assert str(exc.value).startswith("error: ") and "nope.csv" in str(exc.value)
