"""Run settings carried into the results: random-init fronts (hparams.weights / freeze_feature_extract) flagged in
summary.csv and marked in the results table; memory_size with the unit each agent declares, next to the bytes."""
from __future__ import annotations

import io
import math

import pandas as pd
import pytest

from augmem.agents import get_agent_class
from augmem.agents.hparams import declared
from augmem.results import aggregate as agg
from augmem.results.table import (NOTES, RANDOM_FROZEN_MARK, RANDOM_INIT_MARK, build_table, read_table_csv,
                                  to_csv_text, to_latex, to_markdown)
from stages import aggregate as aggregate_stage
from stages import table as table_stage

from .conftest import acc_matrix

PRETRAINED = "data/weights/squeezenet1_0_imagenet.pth"
# agent -> (impl, hparams of its runs); the first three share scenario class_iid, naive_rehearsal / icarl are
# pre-trained, lower_bound starts from random weights (trainable), augmem from a random front that is frozen
CELLS = {
    "lower_bound": ("NormalNN", {"weights": "none", "freeze_feature_extract": False}),
    "naive_rehearsal": ("NaiveRehearsal", {"weights": PRETRAINED, "freeze_feature_extract": False,
                                           "memory_size": 1200}),
    "icarl": ("iCaRL", {"weights": PRETRAINED, "freeze_feature_extract": False, "memory_size": 600}),
    "augmem": ("AugMem", {"weights": "none", "freeze_feature_extract": True, "memory_size": 200}),
}


def _unit(impl: str) -> str:
    return declared(get_agent_class(impl).HP)["memory_size"].unit


@pytest.fixture
def settings_tree(tmp_path, metrics_writer):
    paths = []
    for agent, (impl, hp) in CELLS.items():
        for run in range(2):
            paths.append(metrics_writer(tmp_path, agent=agent, run=run, matrix=acc_matrix(0.8, run), impl=impl,
                                        hparams=hp))
    # class_instance: AugMem pre-trained there, so only its class_iid cell is marked
    for run in range(2):
        paths.append(metrics_writer(tmp_path, agent="augmem", run=run, scenario="class_instance",
                                    matrix=acc_matrix(0.8, run), impl="AugMem",
                                    hparams={"weights": PRETRAINED, "freeze_feature_extract": True,
                                             "memory_size": 200}))
    return paths


def test_declared_memory_units_differ_between_agents():
    units = {impl: _unit(impl) for impl in ("NaiveRehearsal", "GEM", "AGEM", "iCaRL", "AugMem")}
    assert all(units.values()), units
    assert units["NaiveRehearsal"] == units["GEM"] == units["AGEM"]
    assert len({units["NaiveRehearsal"], units["iCaRL"], units["AugMem"]}) == 3
    assert agg.memory_size_unit("AugMem") == units["AugMem"]
    assert agg.memory_size_unit("AugMemAgent") == units["AugMem"]  # the class name (meta.impl fallback)
    assert agg.memory_size_unit("NormalNN") is None  # no memory budget
    assert agg.memory_size_unit("AAN") is None and agg.memory_size_unit(None) is None  # imported / unknown


def test_summary_flags_random_fronts_and_gives_memory_units(settings_tree):
    runs = agg.load_runs(settings_tree)
    assert {"weights", "freeze_feature_extract", "memory_size", "memory_size_unit"} <= set(runs.columns)
    s = agg.summarise(runs).set_index(["agent", "scenario"])
    iid = "class_iid"
    assert s.loc[("lower_bound", iid), "random_init"] and not s.loc[("lower_bound", iid), "random_frozen_front"]
    assert s.loc[("augmem", iid), "random_init"] and s.loc[("augmem", iid), "random_frozen_front"]
    assert not s.loc[("augmem", "class_instance"), "random_init"]
    for agent in ("naive_rehearsal", "icarl"):
        assert not s.loc[(agent, iid), "random_init"] and not s.loc[(agent, iid), "random_frozen_front"]
        assert s.loc[(agent, iid), "weights"] == PRETRAINED
    assert s.loc[("augmem", iid), "weights"] == "none" and s.loc[("augmem", iid), "freeze_feature_extract"]
    # memory_size and the declared unit, per agent
    for agent, (impl, hp) in CELLS.items():
        if "memory_size" in hp:
            assert s.loc[(agent, iid), "memory_size"] == hp["memory_size"]
            assert s.loc[(agent, iid), "memory_size_unit"] == _unit(impl)
        else:
            assert pd.isna(s.loc[(agent, iid), "memory_size"]) and pd.isna(s.loc[(agent, iid), "memory_size_unit"])
    # next to the stored-bytes columns
    cols = list(agg.summarise(runs).columns)
    assert cols.index("memory_size") + 1 == cols.index("memory_size_unit")
    assert cols.index("memory_size_unit") + 1 == cols.index("memory_bytes_total")


def test_cell_without_recorded_weights_is_not_flagged(tmp_path, metrics_writer):
    """metrics.json without hparams.weights (older runs): unknown, so not flagged and the column is empty."""
    p = metrics_writer(tmp_path, agent="ewc", run=0, matrix=acc_matrix(0.5, 0))
    s = agg.summarise(agg.load_runs([p]))
    assert not s.loc[0, "random_init"] and s.loc[0, "weights"] is None


def test_stage_writes_the_settings_to_summary_csv(tmp_path, settings_tree):
    out = tmp_path / "tables"
    aggregate_stage.main(["--metrics", *map(str, settings_tree), "--out-dir", str(out)])
    s = agg.read_summary_csv(out / "summary.csv").set_index(["agent", "scenario"])
    assert s["random_init"].dtype == bool
    assert s.loc[("augmem", "class_iid"), "random_frozen_front"]
    assert s.loc[("icarl", "class_iid"), "memory_size"] == 600
    assert s.loc[("icarl", "class_iid"), "memory_size_unit"] == _unit("iCaRL")
    assert math.isnan(s.loc[("lower_bound", "class_iid"), "memory_size"])
    runs = pd.read_csv(out / "runs.csv")
    assert set(runs.loc[runs["agent"] == "augmem", "weights"]) == {"none", PRETRAINED}


def _cell(md: str, label: str, col: int) -> str:
    line = next(ln for ln in md.splitlines() if ln.startswith(f"| {label} |"))
    return [c.strip() for c in line.strip("|").split("|")][col]


def test_table_marks_random_init_cells_with_a_note(tmp_path, settings_tree):
    out = tmp_path / "tables"
    aggregate_stage.main(["--metrics", *map(str, settings_tree), "--out-dir", str(out)])
    table_stage.main(["--summary", str(out / "summary.csv"), "--out-md", str(tmp_path / "table.md"),
                      "--out-csv", str(tmp_path / "table.csv"), "--out-tex", str(tmp_path / "table.tex")])
    md = (tmp_path / "table.md").read_text()
    # columns: 1 = class_iid, 2 = class_instance
    assert _cell(md, "Lower bound", 1).endswith(f") {RANDOM_INIT_MARK}")
    assert _cell(md, "AugMem", 1).endswith(f" {RANDOM_FROZEN_MARK}")
    assert RANDOM_INIT_MARK not in _cell(md, "AugMem", 2) and RANDOM_FROZEN_MARK not in _cell(md, "AugMem", 2)
    for label in ("Naive rehearsal", "iCaRL"):
        assert not _cell(md, label, 1).endswith((RANDOM_INIT_MARK, RANDOM_FROZEN_MARK))
    assert f"{RANDOM_INIT_MARK} {NOTES[RANDOM_INIT_MARK]}" in md.splitlines()
    assert f"{RANDOM_FROZEN_MARK} {NOTES[RANDOM_FROZEN_MARK]}" in md.splitlines()
    assert "random-init front (weights: none)" in md
    # the CSV carries the flags and the notes, and renders the same Markdown
    csv_text = (tmp_path / "table.csv").read_text()
    assert f"# {RANDOM_INIT_MARK} {NOTES[RANDOM_INIT_MARK]}" in csv_text.splitlines()
    back = read_table_csv(tmp_path / "table.csv")
    assert back.random_init.loc["lower_bound", "core50_demo/class_iid"]
    assert back.random_frozen_front.loc["augmem", "core50_demo/class_iid"]
    assert not back.random_init.loc["augmem", "core50_demo/class_instance"]
    assert to_markdown(back) == md
    # LaTeX: dagger marks and the notes in the caption
    tex = (tmp_path / "table.tex").read_text()
    assert tex.count(r"$^\dagger$") == 2 and tex.count(r"$^\ddagger$") == 2  # one cell each + its note
    caption = next(ln for ln in tex.splitlines() if ln.startswith(r"\caption{"))
    assert "random-init front (weights: none)" in caption and r"$^\ddagger$ random-init" in caption


def test_table_without_random_fronts_has_no_marks(aggregated):
    """The shared fixture records no weights: no marker, no note (and an older summary without the flag columns)."""
    summary = aggregated[1].drop(columns=["random_init", "random_frozen_front"])
    t = build_table(summary)
    md = to_markdown(t)
    assert RANDOM_INIT_MARK not in md and RANDOM_FROZEN_MARK not in md and t.notes() == []
    assert "dagger" not in to_latex(t)


def test_old_table_csv_without_flag_columns_reads(tmp_path, aggregated):
    t = build_table(aggregated[1])
    text = to_csv_text(t)
    df = pd.read_csv(io.StringIO(text.partition("\n")[2]))
    old = df[[c for c in df.columns if not c.endswith(("|random_init", "|random_frozen_front"))]]
    p = tmp_path / "old.csv"
    p.write_text(text.partition("\n")[0] + "\n" + old.to_csv(index=False))
    back = read_table_csv(p)
    assert not back.random_init.to_numpy().any() and to_markdown(back) == to_markdown(t)
