"""AugMem health in the results: per-run figures and verdict in runs.csv, per-cell counts in summary.csv, the ``§``
marker and note in the results table (md / csv / tex), and the console lines of the workflow's onsuccess handler."""
from __future__ import annotations

import io
import re
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from augmem.results import aggregate as agg
from augmem.results.table import (COLLAPSED_MARK, COLLAPSED_NOTE, RANDOM_FROZEN_MARK, build_table, read_table_csv,
                                  to_csv_text, to_latex, to_markdown)
from stages import aggregate as aggregate_stage
from stages import table as table_stage

from .conftest import acc_matrix

ROOT = Path(__file__).resolve().parents[2]
IID, INST = "core50_demo/class_iid", "core50_demo/class_instance"
# class_iid: AugMem run 0 healthy, run 1 shared codes, run 2 both regimes; class_instance: AugMem healthy in both
# runs; EWC (no health) in both scenarios
REGIMES = {0: (), 1: ("shared_codes",), 2: ("shared_codes", "uniform_reads")}
NOTE = (f"{COLLAPSED_MARK} AugMem's memory collapsed in 2 of 3 runs of AugMem, core50_demo class_iid "
        f"(shared codes: 2 / uniform reads: 1): {COLLAPSED_NOTE}")
WARNING = ("WARNING AugMem health: core50_demo reference class_iid augmem: memory collapsed in 2/3 runs "
           "(shared_codes, uniform_reads)")


@pytest.fixture
def health_tree(tmp_path, metrics_writer):
    paths = []
    for run, regimes in REGIMES.items():
        paths.append(metrics_writer(tmp_path, agent="augmem", run=run, matrix=acc_matrix(0.8, run), health=regimes))
        paths.append(metrics_writer(tmp_path, agent="ewc", run=run, matrix=acc_matrix(0.5, run)))
    for run in range(2):
        paths.append(metrics_writer(tmp_path, agent="augmem", run=run, scenario="class_instance",
                                    matrix=acc_matrix(0.8, run)))
        paths.append(metrics_writer(tmp_path, agent="ewc", run=run, scenario="class_instance",
                                    matrix=acc_matrix(0.5, run)))
    return paths


@pytest.fixture
def staged(tmp_path, health_tree):
    """The aggregate and table stages run on the health tree: (tables dir, md, csv path, tex)."""
    out = tmp_path / "tables"
    aggregate_stage.main(["--metrics", *map(str, health_tree), "--out-dir", str(out)])
    table_stage.main(["--summary", str(out / "summary.csv"), "--out-md", str(tmp_path / "table.md"),
                      "--out-csv", str(tmp_path / "table.csv"), "--out-tex", str(tmp_path / "table.tex")])
    return out, (tmp_path / "table.md").read_text(), tmp_path / "table.csv", (tmp_path / "table.tex").read_text()


def _cell(md: str, label: str, col: int) -> str:
    line = next(ln for ln in md.splitlines() if ln.startswith(f"| {label} |"))
    return [c.strip() for c in line.strip("|").split("|")][col]


def test_runs_carry_each_runs_final_task_health(health_tree):
    runs = agg.load_runs(health_tree)
    iid = runs[runs["scenario"] == "class_iid"]
    for run, regimes in REGIMES.items():
        r = iid[(iid["agent"] == "augmem") & (iid["run"] == run)]
        assert len(r) == 6  # 3 tasks x 2 paths, the run's values repeated on each
        for col in ("health_collapsed", "health_regimes", "health_map", "health_shared_codes"):
            assert r[col].nunique(dropna=False) == 1, col
        r = r.iloc[0]
        shared = "shared_codes" in regimes
        assert r["health_collapsed"] is bool(regimes)
        assert r["health_regimes"] == ";".join(regimes)
        assert r["health_map"] == ("1x1" if shared else "2x2")
        assert r["health_keys_per_image"] == (4 if shared else 16)
        assert r["health_slots_used"] == (3 if shared else 30)  # final task
        assert r["health_distinct_codes"] == (4 if shared else 36)
        assert r["health_max_attention"] == (0.01 if "uniform_reads" in regimes else 0.6)
        assert r["health_uniform_keys"] == (0.97 if "uniform_reads" in regimes else 0.05)
        assert r["health_shared_codes"] == pytest.approx(1.0 if shared else 0.1)  # max over tasks >= 1
    ewc = runs[runs["agent"] == "ewc"]
    assert ewc["health_collapsed"].isna().all() and ewc["health_regimes"].isna().all()
    assert ewc[agg.HEALTH_FIGURES].isna().all().all()
    assert str(runs["health_keys_per_image"].dtype) == "Int64"


def test_summary_counts_collapsed_runs_per_cell(health_tree):
    s = agg.summarise(agg.load_runs(health_tree)).set_index(["agent", "scenario"])
    c = s.loc[("augmem", "class_iid")]
    assert (c["n_health"], c["n_collapsed"], c["n_shared_codes"], c["n_uniform_reads"]) == (3, 2, 2, 1)
    assert c["health_regimes"] == "shared_codes;uniform_reads"
    assert c["health_keys_per_image"] == pytest.approx((16 + 4 + 4) / 3)
    assert c["health_shared_codes"] == pytest.approx((0.1 + 1.0 + 1.0) / 3)
    assert c["health_max_attention"] == pytest.approx((0.6 + 0.6 + 0.01) / 3)
    assert c["health_slots_used"] == pytest.approx((30 + 3 + 3) / 3)
    assert c["health_map"] == "1x1 2x2"  # the runs' maps differ: both, like the other settings
    healthy = s.loc[("augmem", "class_instance")]
    assert (healthy["n_health"], healthy["n_collapsed"]) == (2, 0) and healthy["health_regimes"] == ""
    assert healthy["health_map"] == "2x2"
    for scenario in ("class_iid", "class_instance"):
        ewc = s.loc[("ewc", scenario)]
        assert all(pd.isna(ewc[k]) for k in [*agg.HEALTH_COUNTS, "health_regimes", *agg.HEALTH_FIGURES])


def test_stage_writes_health_columns_that_read_back(staged):
    out = staged[0]
    s = agg.read_summary_csv(out / "summary.csv").set_index(["agent", "scenario"])
    assert s.loc[("augmem", "class_iid"), "n_collapsed"] == 2 and str(s["n_collapsed"].dtype) == "Int64"
    assert pd.isna(s.loc[("ewc", "class_iid"), "n_collapsed"])
    assert s.loc[("augmem", "class_instance"), "health_regimes"] == ""  # healthy, not "no health"
    assert pd.isna(s.loc[("ewc", "class_instance"), "health_regimes"])
    runs = agg.read_runs_csv(out / "runs.csv")
    aug = runs[(runs["agent"] == "augmem") & (runs["scenario"] == "class_iid")].drop_duplicates("run")
    assert aug["health_collapsed"].tolist() == [False, True, True]
    assert runs.loc[runs["agent"] == "ewc", "health_collapsed"].isna().all()
    text = (out / "runs.csv").read_text()
    assert ",16.0," not in text and ",1x1," in text  # integer figures stay integers beside empty cells


def test_table_marks_collapsed_cells_with_a_note(staged):
    _, md, csv_path, tex = staged
    assert _cell(md, "AugMem", 1).endswith(f"** {COLLAPSED_MARK}")  # the best of its column, and marked
    assert COLLAPSED_MARK not in _cell(md, "AugMem", 2)  # all healthy
    assert COLLAPSED_MARK not in _cell(md, "EWC", 1) + _cell(md, "EWC", 2)  # no health
    assert NOTE in md.splitlines()
    # CSV: the note as a comment, the flag and the counts per column, and the same Markdown back
    csv_text = csv_path.read_text()
    assert f"# {NOTE}" in csv_text.splitlines()
    df = pd.read_csv(csv_path, comment="#")
    assert {f"{IID}|collapsed", f"{IID}|n_collapsed", f"{IID}|n_health", f"{IID}|n_shared_codes",
            f"{IID}|n_uniform_reads"} <= set(df.columns)
    back = read_table_csv(csv_path)
    assert back.collapsed.loc["augmem", IID] and not back.collapsed.loc["augmem", INST]
    assert not back.collapsed.loc["ewc"].any()
    assert back.count("n_collapsed", "augmem", IID) == 2 and back.count("n_health", "augmem", IID) == 3
    assert back.count("n_collapsed", "ewc", IID) is None
    assert to_markdown(back) == md
    # LaTeX: the section-sign superscript on the cell and the note in the caption
    assert tex.count(r"$^\S$") == 2  # the cell + the note
    caption = next(ln for ln in tex.splitlines() if ln.startswith(r"\caption{"))
    assert r"$^\S$ AugMem's memory collapsed in 2 of 3 runs" in caption
    assert r"shared codes: 2 / uniform reads: 1" in caption and r"\texttt{health}" in caption
    assert "`" not in tex


def test_collapsed_cell_with_a_random_frozen_front_gets_both_marks(tmp_path, metrics_writer):
    paths = [metrics_writer(tmp_path, agent="augmem", run=r, matrix=acc_matrix(0.8, r), impl="AugMem",
                            hparams={"weights": "none", "freeze_feature_extract": True}, health=("uniform_reads",))
             for r in range(2)]
    t = build_table(agg.summarise(agg.load_runs(paths)))
    md = to_markdown(t)
    assert _cell(md, "AugMem", 1).endswith(f" {RANDOM_FROZEN_MARK}{COLLAPSED_MARK}")
    notes = t.notes()
    assert notes[0].startswith(RANDOM_FROZEN_MARK) and notes[1] == (
        f"{COLLAPSED_MARK} AugMem's memory collapsed in 2 of 2 runs of AugMem, core50_demo class_iid "
        f"(shared codes: 0 / uniform reads: 2): {COLLAPSED_NOTE}")
    tex = to_latex(t)
    assert r"$^{\ddagger\S}$" in tex and "$$" not in tex


def test_collapsed_cells_each_get_their_counts(tmp_path, metrics_writer):
    paths = [metrics_writer(tmp_path, agent="augmem", run=0, matrix=acc_matrix(0.8, 0), health=("shared_codes",)),
             metrics_writer(tmp_path, agent="augmem_noreg", run=0, matrix=acc_matrix(0.7, 0),
                            health=("uniform_reads",)),
             metrics_writer(tmp_path, agent="augmem_noreg", run=1, matrix=acc_matrix(0.7, 1))]
    note = build_table(agg.summarise(agg.load_runs(paths))).notes()[-1]
    assert re.fullmatch(
        rf"{COLLAPSED_MARK} AugMem's memory collapsed in 1 of 1 runs of AugMem, core50_demo class_iid \(shared codes: "
        r"1 / uniform reads: 0\); 1 of 2 runs of .+, core50_demo class_iid \(shared codes: 0 / uniform reads: 1\): "
        + re.escape(COLLAPSED_NOTE), note), note


def test_old_table_csv_without_collapse_columns_reads(tmp_path, staged):
    csv_path = staged[2]
    lines = csv_path.read_text().splitlines(keepends=True)
    df = pd.read_csv(io.StringIO("".join(ln for ln in lines if not ln.startswith("#"))))
    old = df[[c for c in df.columns if not c.endswith(("|collapsed", "|n_collapsed", "|n_health", "|n_shared_codes",
                                                       "|n_uniform_reads"))]]
    p = tmp_path / "old.csv"
    p.write_text(lines[0] + old.to_csv(index=False))
    back = read_table_csv(p)
    assert not back.collapsed.to_numpy().any() and back.notes() == []
    assert COLLAPSED_MARK not in to_markdown(back)
    # a flag without its counts (hand-made CSV) still gives a note, without invented numbers
    flagged = old.assign(**{f"{IID}|collapsed": old["agent"] == "augmem"})
    p.write_text(lines[0] + flagged.to_csv(index=False))
    assert read_table_csv(p).notes() == [f"{COLLAPSED_MARK} AugMem's memory collapsed in some runs of AugMem, "
                                         f"core50_demo class_iid: {COLLAPSED_NOTE}"]


def test_summary_without_health_columns_has_no_collapse_marks(aggregated):
    """An older summary (no health columns) and the shared fixture (healthy AugMem): no marker, no note."""
    summary = aggregated[1]
    assert (summary.loc[summary["agent"].str.startswith("augmem"), "n_collapsed"] == 0).all()
    for s in (summary, summary.drop(columns=[*agg.HEALTH_COUNTS, "health_regimes", *agg.HEALTH_FIGURES])):
        t = build_table(s)
        assert COLLAPSED_MARK not in to_markdown(t) and t.notes() == [] and r"\S" not in to_latex(t)
        assert "|collapsed" in to_csv_text(t)
        assert agg.collapse_warnings(s) == []


def test_collapse_warnings_lines(tmp_path, staged, aggregated, health_tree, capsys):
    out = staged[0]
    aggregate_stage.main(["--metrics", *map(str, health_tree), "--out-dir", str(tmp_path / "again")])
    assert capsys.readouterr().out.splitlines()[1:] == [WARNING]  # the stage's log says it too
    assert agg.collapse_warnings(out / "summary.csv") == [WARNING]
    assert agg.collapse_warnings(str(out / "summary.csv")) == [WARNING]
    assert agg.collapse_warnings(agg.read_summary_csv(out / "summary.csv")) == [WARNING]
    assert agg.collapse_warnings(tmp_path / "missing.csv") == []
    aggregated[1].to_csv(tmp_path / "healthy.csv", index=False)
    assert agg.collapse_warnings(tmp_path / "healthy.csv") == []
    bad = tmp_path / "bad.csv"
    bad.write_text('dataset,n_collapsed\n"core50_demo,1\n')  # an unterminated quote: pandas cannot parse it
    lines = agg.collapse_warnings(bad)
    assert len(lines) == 1 and lines[0].startswith(f"AugMem health: cannot read {bad}")


def _onsuccess_body() -> str:
    text = (ROOT / "Snakefile").read_text()
    m = re.search(r"^onsuccess:\n((?:[ \t]+.*\n|\n)+)", text, re.M)
    assert m, "the Snakefile has no onsuccess: handler"
    return textwrap.dedent(m.group(1))


def test_snakefile_onsuccess_prints_the_warnings(tmp_path, monkeypatch, capsys, staged):
    """The handler's body, run as Snakemake runs it (cwd = the workdir): one line per collapsed cell, nothing without
    a summary, and it never raises."""
    body = _onsuccess_body()
    assert "collapse_warnings" in body
    monkeypatch.chdir(tmp_path)  # staged wrote tmp_path/tables/summary.csv, not results/tables/summary.csv
    capsys.readouterr()
    exec(compile(body, "Snakefile:onsuccess", "exec"), {"log": None})
    printed = capsys.readouterr()
    assert printed.out + printed.err == ""
    (tmp_path / "results").mkdir(exist_ok=True)  # holds the metrics tree
    (tmp_path / "tables").rename(tmp_path / "results" / "tables")
    exec(compile(body, "Snakefile:onsuccess", "exec"), {"log": None})
    printed = capsys.readouterr()
    assert (printed.out + printed.err).splitlines() == [WARNING]
    monkeypatch.setattr(agg, "collapse_warnings", lambda path: 1 / 0)
    exec(compile(body, "Snakefile:onsuccess", "exec"), {"log": None})  # swallowed: never fails the workflow
    printed = capsys.readouterr()
    assert printed.out + printed.err == ""
