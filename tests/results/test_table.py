"""Results table: cells, best marks, fidelity columns, imported rows, CSV -> Markdown round trip, stage."""
from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest

from augmem.io import InputError
from augmem.results import aggregate as agg
from augmem.results.table import build_table, read_table_csv, to_csv_text, to_latex, to_markdown
from stages import table as stage

from .conftest import PUBLISHED_DIR


@pytest.fixture
def summary(aggregated):
    return aggregated[1].copy()


def _row(md: str, label: str) -> list[str]:
    line = next(ln for ln in md.splitlines() if ln.startswith(f"| {label} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_cells_and_best(summary):
    t = build_table(summary)
    assert t.columns == ["core50_demo/class_iid", "core50_demo/class_instance"]
    assert t.agents == ["augmem", "ewc", "lower_bound", "upper_bound", "augmem_noreg"]
    s = summary.set_index(["agent", "scenario"])
    assert t.mean.loc["ewc", "core50_demo/class_iid"] == s.loc[("ewc", "class_iid"), "avg_mean"]
    assert t.sem.loc["ewc", "core50_demo/class_iid"] == s.loc[("ewc", "class_iid"), "avg_sem"]
    assert (t.n.to_numpy() == 3).all()
    # the upper bound has the highest mean but bounds are not candidates
    assert t.best["core50_demo/class_iid"].tolist() == [True, False, False, False, False]
    md = to_markdown(t)
    cells = _row(md, "AugMem")
    m, e = s.loc[("augmem", "class_iid"), ["avg_mean", "avg_sem"]]
    assert cells[1] == f"**{m:.1f} ± {e:.1f} (3)**"
    assert _row(md, "EWC")[1].count("**") == 0
    assert "Run filter: none (all runs)" in md
    assert re.search(r"^\| Agent \| core50_demo class_iid \| core50_demo class_instance \|$", md, re.M)


def test_best_with_bounds_included_and_ties(summary):
    t = build_table(summary, exclude_from_best=())
    assert t.best.loc["upper_bound"].all() and t.best.sum().sum() == 2
    summary.loc[summary["agent"] == "ewc", "avg_mean"] = summary.loc[summary["agent"] == "augmem", "avg_mean"].values
    t = build_table(summary)
    assert t.best.loc["ewc"].all() and t.best.loc["augmem"].all()


def test_both_fidelities_side_by_side_with_imported_rows(summary):
    corrected = summary.assign(fidelity="corrected", avg_mean=summary["avg_mean"] + 1.0)
    imp = agg.summarise(agg.load_imported(PUBLISHED_DIR, ["core50"]))
    demo_as_core50 = pd.concat([summary, corrected]).assign(dataset="core50")
    t = build_table(pd.concat([demo_as_core50, imp], ignore_index=True))
    assert t.columns == ["core50/class_iid/reference", "core50/class_iid/corrected",
                         "core50/class_instance/reference", "core50/class_instance/corrected"]
    assert t.agents[-1] == "AAN (imported)"
    aan = imp[(imp["agent"] == "AAN (imported)") & (imp["scenario"] == "class_iid")]["avg_mean"].item()
    assert t.mean.loc["AAN (imported)", "core50/class_iid/reference"] == aan
    assert t.mean.loc["AAN (imported)", "core50/class_iid/corrected"] == aan
    assert t.n.loc["AAN (imported)"].tolist() == [10, 10, 10, 10]
    assert t.mean.loc["ewc", "core50/class_iid/corrected"] == pytest.approx(
        t.mean.loc["ewc", "core50/class_iid/reference"] + 1.0)
    md = to_markdown(t)
    assert "| core50 class_iid (reference) | core50 class_iid (corrected) |" in md
    tex = to_latex(t)
    assert r"\multicolumn{4}{c}{core50}" in tex and r"\multicolumn{2}{c}{class\_iid}" in tex
    assert "AAN (imported)" in tex


def test_missing_cell_and_single_run(summary):
    summary = summary[~((summary["agent"] == "ewc") & (summary["scenario"] == "class_instance"))].copy()
    summary.loc[summary["agent"] == "lower_bound", ["avg_sem", "n_runs"]] = [np.nan, 1]
    t = build_table(summary)
    assert math.isnan(t.mean.loc["ewc", "core50_demo/class_instance"]) and t.n.loc["ewc"].tolist() == [3, 0]
    md = to_markdown(t)
    assert _row(md, "EWC")[2] == "—"
    assert _row(md, "Lower bound")[1].endswith("± — (1)")


def test_csv_round_trip_gives_the_same_numbers_and_markdown(tmp_path, summary):
    summary.loc[0, "avg_mean"] = 1 / 3  # a float that needs every digit
    t = build_table(summary)
    path = tmp_path / "table.csv"
    path.write_text(to_csv_text(t))
    back = read_table_csv(path)
    assert back.agents == t.agents and back.columns == t.columns and back.caption == t.caption
    for part in ("mean", "sem", "n", "best"):
        pd.testing.assert_frame_equal(getattr(back, part), getattr(t, part), check_dtype=False)
    assert back.mean.iloc[0, 0] == 1 / 3
    assert to_markdown(back) == to_markdown(t)
    df = pd.read_csv(path, comment="#")
    assert {"agent", "core50_demo/class_iid|mean", "core50_demo/class_iid|sem", "core50_demo/class_iid|n",
            "core50_demo/class_iid|best"} <= set(df.columns)


def test_read_table_csv_errors(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("agent,x|mean\nl2,1\n")
    with pytest.raises(InputError, match="caption"):
        read_table_csv(p)
    p.write_text("# cap\nagent,x|mean\nl2,1\n")
    with pytest.raises(InputError, match="lacks x|sem"):
        read_table_csv(p)
    with pytest.raises(InputError, match="file not found"):
        read_table_csv(tmp_path / "none.csv")


def test_latex_escapes_and_bold(summary):
    tex = to_latex(build_table(summary))
    assert r"\begin{tabular}{lcc}" in tex and r"\toprule" in tex and r"\bottomrule" in tex
    assert "core50\\_demo" in tex and "class\\_iid" in tex
    assert tex.count(r"\textbf{") == 2 and r"$\pm$" in tex
    assert "_demo" not in tex.replace("\\_demo", "")


def test_empty_summary_is_an_error(summary):
    with pytest.raises(InputError, match="empty"):
        build_table(summary.iloc[0:0])


def test_stage_writes_md_csv_tex(tmp_path, summary):
    summary.to_csv(tmp_path / "summary.csv", index=False)
    out = tmp_path / "out"
    stage.main(["--summary", str(tmp_path / "summary.csv"), "--out-md", str(out / "table.md"),
                "--out-csv", str(out / "table.csv"), "--out-tex", str(out / "table.tex")])
    md = (out / "table.md").read_text()
    assert md == to_markdown(read_table_csv(out / "table.csv"))
    assert (out / "table.tex").read_text().startswith(r"\begin{table}")
    with pytest.raises(SystemExit) as exc:
        stage.main(["--summary", str(tmp_path / "missing.csv"), "--out-md", str(out / "x.md")])
    assert str(exc.value).startswith("error: ") and "missing.csv" in str(exc.value)


def test_run_notes_and_initial_weights_reach_the_table(tmp_path, metrics_writer):
    """meta.notes -> runs/summary ``notes`` -> a ¶ mark and a note naming the agent and columns (Markdown, LaTeX,
    CSV round trip); meta.initial_weights 'none' (an own random-init network) -> † even when hparams.weights names a
    file."""
    from .conftest import acc_matrix

    note = "reference BiC runs the classes-per-task variant (spec 14.3 q18)"
    paths = []
    for sc in ("class_iid", "class_instance"):
        for r in range(2):
            paths.append(metrics_writer(tmp_path, agent="bic", scenario=sc, run=r, matrix=acc_matrix(0.5, r),
                                        impl="BiC", meta={"notes": [note] if sc == "class_iid" else []}))
            paths.append(metrics_writer(tmp_path, agent="stable_sgd", scenario=sc, run=r, matrix=acc_matrix(0.4, r),
                                        impl="StableSGD", hparams={"weights": "data/weights/w.pth"},
                                        meta={"initial_weights": "none"}))
    runs = agg.load_runs(paths)
    assert set(runs.loc[runs["agent"] == "bic", "notes"]) == {note, ""}
    summary = agg.summarise(runs)
    t = build_table(summary)
    assert t.mark("bic", "core50_demo/class_iid") == "¶" and t.mark("bic", "core50_demo/class_instance") == ""
    assert t.mark("stable_sgd", "core50_demo/class_iid") == "†"
    md = to_markdown(t)
    assert f"¶ BiC (core50_demo class_iid): {note}" in md
    assert _row(md, "BiC")[1].endswith("¶")
    assert r"$^\P$" in to_latex(t)
    csv = tmp_path / "t.csv"
    csv.write_text(to_csv_text(t))
    assert to_markdown(read_table_csv(csv)) == md
    # a malformed note is an error naming the file
    bad = metrics_writer(tmp_path / "bad", agent="bic", run=0, matrix=acc_matrix(0.5, 0), meta={"notes": "text"})
    with pytest.raises(InputError, match="meta.notes must be a list"):
        agg.load_runs([bad])
