"""Grid search (augmem.results.gridsearch, stages.gridsearch_summary, stages.train --selected): grid expansion, point
ids, the published grids as data, ranking and SEM on hand-made metrics, reference vs corrected scoring, the held-out
split, the blindness of the corrected selection to the reported test images, the --selected merge and its errors."""
from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from augmem.io import InputError
from augmem.results.gridsearch import (expand_grid, expand_values, grid_runs, load_gridsearch, merge_selected,
                                       parse_point_id, point_hparams, point_id, read_selected, run_score,
                                       selected_doc, selected_point, summarise_grid)
from augmem.train.loop import VAL_FRACTION, holdout_split

REPO = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------------------------ expansion
def test_expand_lists_and_ranges():
    assert expand_values([1.0e-4, "1e-3", 5], "g.lr") == [1e-4, 1e-3, 5]  # YAML's text '1e-3' is the number
    assert expand_values({"log_range": ["1e-5", 1.0e-2, 4]}, "g.lr") == [1e-5, 1e-4, 1e-3, 1e-2]
    assert expand_values({"log_range": [1, 1000, 4]}, "g.reg_coef") == [1, 10, 100, 1000]
    assert all(isinstance(v, int) for v in expand_values({"log_range": [1, 1000, 4]}, "g.reg_coef"))
    assert expand_values({"linear_range": [0.5, 0.9, 3]}, "g.momentum") == [0.5, 0.7, 0.9]
    assert expand_values({"linear_range": [2, 6, 3]}, "g.n_epoch") == [2, 4, 6]
    assert expand_values({"log_range": [1.0e-3, 1.0e-3, 1]}, "g.lr") == [1e-3]
    for bad, what in (([], "empty list"), ({"log_range": [0, 1, 3]}, "positive bounds"),
                      ({"log_range": [1, 2]}, "low, high"), ({"linear_range": [1, 2, 0]}, ">= 1"),
                      ({"range": [1, 2, 3]}, "expected a list")):
        with pytest.raises(InputError, match=what):
            expand_values(bad, "grids.l2.grid.lr")


def test_expand_grid_is_the_product_in_sorted_key_order():
    points = expand_grid({"reg_coef": [1, 100], "lr": [1e-4, 1e-3]})
    assert [point_id(p) for p in points] == ["lr=1e-4,reg_coef=1", "lr=1e-4,reg_coef=100", "lr=1e-3,reg_coef=1",
                                              "lr=1e-3,reg_coef=100"]
    with pytest.raises(InputError, match="same point 'lr=1e-4'"):
        expand_grid({"lr": [1e-4, 0.0001]}, "grids.l2.grid")


# ------------------------------------------------------------------------------------------------ point ids
def test_point_ids_are_readable_and_stable():
    assert point_id({"reg_coef": 100.0, "lr": 1e-4}) == "lr=1e-4,reg_coef=100"  # the study's keys, sorted
    assert point_id({"lr": 1e-4, "reg_coef": 100}) == point_id({"reg_coef": 100.0, "lr": 0.0001})  # int = float
    assert point_id({"lr": 2.5e-4, "memory_Nslots": 500, "herding_mode": True, "n_epoch_first_task": None}) == \
        "herding_mode=true,lr=2.5e-4,memory_Nslots=500,n_epoch_first_task=null"
    assert point_id({"momentum": 0.5, "optimizer": "Adam"}) == "momentum=0.5,optimizer=Adam"
    for bad in ({"optimizer": "a b"}, {"x": "1e3"}, {"x": [1, 2]}, {"bad key": 1}, {}):
        with pytest.raises(InputError):
            point_id(bad)


def test_point_ids_round_trip():
    rng = random.Random(0)
    values = [1e-5, 1e-4, 2.5e-4, 3e-4, 1e-3, 0.1, 0.5, 1.0, 1, 15, 100, 500, 1000, 1e6, 1e20, 1 / 3, 0.9, True,
              False, None, "SGD", "squeezenet"] + [10 ** rng.uniform(-8, 8) for _ in range(200)]
    for v in values:
        pid = point_id({"k": v})
        back = parse_point_id(pid)["k"]
        assert back == v and type(back) in ((type(v), int) if isinstance(v, float) else (type(v),)), (v, pid, back)
        assert point_id({"k": back}) == pid  # id -> values -> id
    assert parse_point_id("lr=1e-4,reg_coef=100") == {"lr": 1e-4, "reg_coef": 100}
    for bad in ("lr", "lr=", "=1", "lr=1,lr=2"):
        with pytest.raises(InputError):
            parse_point_id(bad)


# ------------------------------------------------------------------------------------------------ grids as data
def test_published_grids_are_data():
    gs = load_gridsearch(REPO / "params/gridsearch.yaml")
    assert gs.runs == 2 and gs.scenarios == ["class_iid", "class_instance"] and gs.plot_top == 10
    for agent in ("lower_bound", "upper_bound", "naive_rehearsal", "gem", "icarl"):
        assert gs.grids[agent].ids == ["lr=1e-5", "lr=1e-4", "lr=1e-3"], agent
    for agent in ("l2", "ewc", "si", "mas"):
        assert len(gs.grids[agent].ids) * len(gs.scenarios) == 18  # the study's 18 configurations each
        assert {tuple(p.items()) for p in gs.grids[agent].points} == \
            {(("lr", lr), ("reg_coef", c)) for lr in (1e-5, 1e-4, 1e-3) for c in (1, 100, 500)}
    published = ("lower_bound", "upper_bound", "naive_rehearsal", "gem", "icarl", "l2", "ewc", "si", "mas")
    for agent in published:  # the study's fixed values (spec 9); AugMem's and the external baselines' are ours
        grid = gs.grids[agent]
        assert grid.fixed["batch_size"] == 20 and grid.fixed["momentum"] == 0.9
        assert grid.fixed["weight_decay"] == 1e-4
    for agent in ("stable_sgd", "lwf", "bic"):
        assert gs.grids[agent].ids == ["lr=1e-5", "lr=1e-4", "lr=1e-3"], agent
    assert gs.grids["upper_bound"].fixed["n_epoch"] == 10
    assert all(gs.grids[a].fixed["memory_size"] == 15 for a in ("naive_rehearsal", "gem", "icarl"))
    assert set(gs.grids["augmem"].keys) == {"lr", "memory_Nslots", "logit_coef", "replay_coef", "reg_coef"}
    assert len(gs.grids["augmem"].points) == 48


def test_grid_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "grids.yaml"
    bad.write_text(yaml.safe_dump({"grids": {"l2": {"grid": {"lr": {"log_rnage": [1, 2, 3]}}}}, "run": 2}))
    with pytest.raises(InputError, match=rf"{bad}: .*run"):
        load_gridsearch(bad)
    bad.write_text(yaml.safe_dump({"grids": {"l2": {"grid": {"lr": [1e-4]}, "fixed": {"lr": 1e-3}}}}))
    with pytest.raises(InputError, match=r"grids.l2: \['lr'\] both fixed and searched"):
        load_gridsearch(bad)


def test_config_replaces_runs_and_grids(tmp_path):
    cfg = {"gridsearch": {"runs": 1, "grids": {"l2": {"grid": {"reg_coef": {"log_range": [1, 100, 3]}}}}}}
    gs = load_gridsearch(REPO / "params/gridsearch.yaml", cfg)
    assert gs.runs == 1 and gs.grids["l2"].ids == ["reg_coef=1", "reg_coef=10", "reg_coef=100"]
    assert gs.grids["l2"].fixed == {} and gs.grids["ewc"].ids[0] == "lr=1e-5,reg_coef=1"
    with pytest.raises(InputError, match="config gridsearch"):
        load_gridsearch(REPO / "params/gridsearch.yaml", {"gridsearch": {"grids": {"l2": {"gird": {}}}}})


def test_point_hyperparameters_are_validated_like_every_route():
    from augmem.train.hparams import load_params, resolve_job

    params = load_params(REPO / "params")
    job = resolve_job(params, "core50_demo", "l2", "class_iid", fidelity="corrected")
    grid = load_gridsearch(REPO / "params/gridsearch.yaml").grids["l2"]
    hp = point_hparams(job, grid, {"lr": 1e-3, "reg_coef": 500}, "corrected")
    assert hp["lr"] == 1e-3 and hp["reg_coef"] == 500.0 and hp["batch_size"] == 20 and hp["image_size"] == 64
    assert hp["holdout_validation"] is True and hp["switch_overrides"] == {"continue_after_divergence": True}
    ref = point_hparams(job, grid, {"lr": 1e-3, "reg_coef": 500}, "reference")
    assert ref["holdout_validation"] is False and ref["switch_overrides"] == {}
    with pytest.raises(InputError, match=r"lr = -1.0 \(from .*gridsearch.yaml: grids.l2.grid\): must be > 0"):
        point_hparams(job, grid, {"lr": -1.0}, "corrected")
    with pytest.raises(InputError, match="reg_coeff .*did you mean 'reg_coef'"):
        point_hparams(job, grid, {"reg_coeff": 3}, "corrected")


# ------------------------------------------------------------------------------------------------ scoring
def _metrics(point: dict, run: int, *, val=None, test=None, holdout=True, diverged=None, primary="acc"):
    n = len(val if val is not None else test)
    test = test if test is not None else [50.0] * n
    return {"meta": {"run": run, "diverged": diverged, "dataset": "d", "fidelity": "corrected",
                     "scenario": "class_iid", "agent": "l2"},
            "hparams": {**point, "holdout_validation": holdout}, "primary_path": primary,
            "test_all": {primary: test}, "val_all": None if val is None else {primary: val}}


def test_summary_ranking_and_sem_on_hand_made_metrics():
    a, b, c = {"lr": 1e-4}, {"lr": 1e-3}, {"lr": 1e-2}
    metrics = [
        ("a0", _metrics(a, 0, val=[80.0, 60.0, 40.0])),  # run score 60
        ("a1", _metrics(a, 1, val=[90.0, 70.0, 50.0])),  # 70
        ("b0", _metrics(b, 0, val=[90.0, 80.0, 70.0])),  # 80
        ("b1", _metrics(b, 1, val=[70.0, 60.0, 50.0])),  # 60
        ("c0", _metrics(c, 0, val=[99.0, 99.0, 99.0], diverged={"task": 2, "epoch": 1})),  # 99, but diverged
        ("c1", _metrics(c, 1, val=[99.0, 99.0, 99.0])),
    ]
    points = ["lr=1e-4", "lr=1e-3", "lr=1e-2"]
    s = summarise_grid(grid_runs(metrics, ["lr"], "corrected"), points, "corrected")
    # 70 > 65; the diverged point (99) is ranked last and never selected
    assert s["point"].tolist() == ["lr=1e-3", "lr=1e-4", "lr=1e-2"]
    assert s["rank"].tolist() == [1, 2, 3] and s["selectable"].tolist() == [True, True, False]
    row = s.set_index("point")
    assert row.loc["lr=1e-4", "score_mean"] == pytest.approx(65.0)
    assert row.loc["lr=1e-4", "score_sem"] == pytest.approx(np.std([60, 70], ddof=1) / math.sqrt(2))  # 5.0
    assert row.loc["lr=1e-3", "score_mean"] == pytest.approx(70.0)
    assert row.loc["lr=1e-3", "score_sem"] == pytest.approx(10.0)
    assert row.loc["lr=1e-4", "task0_mean"] == pytest.approx(85.0) and row.loc["lr=1e-4", "task0_sem"] == \
        pytest.approx(5.0)
    assert row.loc["lr=1e-2", "diverged_runs"] == "0" and row.loc["lr=1e-2", "n_runs"] == 2
    assert selected_point(s) == "lr=1e-3"


def test_ties_go_to_the_point_listed_first_and_missing_points_fail():
    m = [("x", _metrics({"lr": 1e-4}, 0, val=[50.0])), ("y", _metrics({"lr": 1e-3}, 0, val=[50.0]))]
    s = summarise_grid(grid_runs(m, ["lr"], "corrected"), ["lr=1e-3", "lr=1e-4"], "corrected")
    assert selected_point(s) == "lr=1e-3" and math.isnan(s.loc[0, "score_sem"])  # one run: no SEM
    with pytest.raises(InputError, match="no runs"):
        summarise_grid(grid_runs(m[:1], ["lr"], "corrected"), ["lr=1e-3", "lr=1e-4"], "corrected")
    with pytest.raises(InputError, match="not a point of the grid"):
        summarise_grid(grid_runs(m, ["lr"], "corrected"), ["lr=1e-4"], "corrected")


def test_reference_and_corrected_scoring_differ():
    """corrected: mean over tasks of val_all; reference: test accuracy after the last task (the study's)."""
    a = _metrics({"lr": 1e-4}, 0, val=[90.0, 80.0, 70.0], test=[60.0, 50.0, 40.0])
    b = _metrics({"lr": 1e-3}, 0, val=[60.0, 50.0, 40.0], test=[90.0, 80.0, 75.0])
    assert run_score(a, "corrected") == (80.0, [90.0, 80.0, 70.0])
    assert run_score(a, "reference") == (40.0, [60.0, 50.0, 40.0])
    points = ["lr=1e-4", "lr=1e-3"]
    m = [("a", a), ("b", b)]
    corr = summarise_grid(grid_runs(m, ["lr"], "corrected"), points, "corrected")
    ref = summarise_grid(grid_runs(m, ["lr"], "reference"), points, "reference")
    assert selected_point(corr) == "lr=1e-4" and selected_point(ref) == "lr=1e-3"
    assert corr["curve"].iloc[0] == "val_all" and ref["curve"].iloc[0] == "test_all"
    doc = selected_doc(ref, selection="reference", cell={"dataset": "d", "fidelity": "reference",
                                                          "scenario": "class_iid", "agent": "l2"})
    assert doc["hp"] == {"lr": 1e-3} and "TEST" in doc["selected_on"]
    doc = selected_doc(corr, selection="corrected", cell={"dataset": "d", "fidelity": "corrected",
                                                           "scenario": "class_iid", "agent": "l2"})
    assert doc["hp"] == {"lr": 1e-4, "holdout_validation": True} and doc["score"] == 80.0
    with pytest.raises(InputError, match="holdout_validation: true"):  # no held-out split: corrected refuses
        run_score(_metrics({"lr": 1e-4}, 0, val=[1.0], holdout=False), "corrected", "m.json")


# ------------------------------------------------------------------------------------------------ held-out split
def test_holdout_split_depends_on_the_image_only():
    paths = [f"s{s}/o{o}/C_{s:02d}_{o:02d}_{f:03d}.png" for s in range(3) for o in range(20) for f in range(20)]
    test, val = holdout_split(paths)
    assert sorted(test + val) == list(range(len(paths))) and not set(test) & set(val)
    assert abs(len(val) / len(paths) - VAL_FRACTION) < 0.03
    shuffled = paths[::-1]  # another order (another run's filelist): the same images held out
    _, val2 = holdout_split(shuffled)
    assert {shuffled[i] for i in val2} == {paths[i] for i in val}


def _tiny_job(files, out, lr, hp_extra=None):
    from augmem.agents.normal_nn import NormalNN
    from augmem.train.fidelity import train_switches
    from augmem.train.loop import run_stream
    from augmem.train.seeding import seed_everything

    image_root, run_dir = files
    hp = {"optimizer": "SGD", "lr": lr, "momentum": 0.9, "weight_decay": 0.0, "batch_size": 8, "n_epoch": 1,
          "weights": "none", "image_size": 32, "n_workers": 0, "holdout_validation": True, **(hp_extra or {})}
    switches = train_switches("corrected", None)
    seed_everything(0)
    agent = NormalNN(4, hp, switches, "cpu")
    meta = {"dataset": "tiny", "kind": "tiny", "scenario": "class_iid", "agent": "lower_bound", "run": 0,
            "fidelity": "corrected", "seed": 0}
    return run_stream(agent, run_dir, image_root, out, hp=hp, switches=switches, meta=meta, seed=0,
                      log=lambda m: None)


@pytest.mark.usefixtures("one_torch_thread")
def test_corrected_selection_is_blind_to_the_reported_test_images(tiny_files, tmp_path):
    """Permuting the labels of the reported test images (the 75 % outside the held-out split) changes the reported
    test accuracies but neither the validation numbers (every score, SEM and per-task value) nor the selected point."""
    image_root, run_dir = tiny_files
    test_file = run_dir / "stream" / "test_filelist.txt"
    lines = test_file.read_text().splitlines()
    _, val_idx = holdout_split([ln.split()[0] for ln in lines])
    reported = [i for i in range(len(lines)) if i not in set(val_idx)]
    assert val_idx and len(reported) > len(val_idx)
    points = {"lr=1e-3": 1e-3, "lr=1e-2": 1e-2, "lr=3e-2": 3e-2}

    def search(tag):
        runs = [(f"{tag}/{pid}", _tiny_job(tiny_files, tmp_path / tag / pid, lr)) for pid, lr in points.items()]
        return summarise_grid(grid_runs(runs, ["lr"], "corrected"), list(points), "corrected"), dict(runs)

    before, m_before = search("a")
    new = list(lines)
    for i in reported:  # the label values permuted (0 -> 1 -> 2 -> 3 -> 0) on every reported image
        path, lab = lines[i].split()
        new[i] = f"{path} {(int(lab) + 1) % 4}"
    test_file.write_text("\n".join(new) + "\n")
    after, m_after = search("b")
    assert selected_point(before) == selected_point(after)
    pd.testing.assert_frame_equal(before, after)  # every score, SEM and validation curve
    assert any(m_before[f"a/{p}"]["test_all"] != m_after[f"b/{p}"]["test_all"] for p in points)  # it did matter
    assert all(m_before[f"a/{p}"]["n_test"] == len(reported) for p in points)


# ------------------------------------------------------------------------------------------------ --selected
def _selected_file(tmp_path, hp, **cell):
    path = tmp_path / "selected.yaml"
    doc = {"dataset": "core50_demo", "fidelity": "corrected", "scenario": "class_iid", "agent": "l2",
           "selection": "corrected", "point": "x", "hp": hp, **cell}
    path.write_text(yaml.safe_dump(doc))
    return path


def test_selected_merge_and_validation_errors(tmp_path):
    from augmem.train.hparams import load_params, resolve_job

    job = resolve_job(load_params(REPO / "params"), "core50_demo", "l2", "class_iid", fidelity="corrected")
    cell = {"dataset": "core50_demo", "fidelity": "corrected", "scenario": "class_iid", "agent": "l2"}
    path = _selected_file(tmp_path, {"lr": 1.0e-3, "reg_coef": 10, "holdout_validation": True})
    hp, info = merge_selected(path, job.impl, job.hp, agent="l2", job=cell)
    assert hp["lr"] == 1e-3 and hp["reg_coef"] == 10.0 and hp["holdout_validation"] is True
    assert {k: v for k, v in hp.items() if k not in ("lr", "reg_coef", "holdout_validation")} == \
        {k: v for k, v in job.hp.items() if k not in ("lr", "reg_coef", "holdout_validation")}
    assert info == {"file": str(path), "selection": "corrected", "point": "x",
                    "keys": ["holdout_validation", "lr", "reg_coef"]}
    cases = [({"reg_coeff": 10}, rf"reg_coeff \(from {path}: hp\): unknown hyperparameter; did you mean 'reg_coef'"),
             ({"lr": "1e-3"}, rf"lr = '1e-3' \(from {path}: hp\): must be a float"),
             ({"lr": -1}, rf"lr = -1 \(from {path}: hp\): must be > 0"),
             ({"image_size": 32}, rf"{path}: \['image_size'\] change the job's declared inputs")]
    for values, msg in cases:
        path = _selected_file(tmp_path, values)
        with pytest.raises(InputError, match=msg):
            merge_selected(path, job.impl, job.hp, agent="l2", job=cell)
    path = _selected_file(tmp_path, {"lr": 1e-3}, agent="ewc")
    with pytest.raises(InputError, match=rf"{path}: selected for agent 'ewc', but this job's agent is 'l2'"):
        merge_selected(path, job.impl, job.hp, agent="l2", job=cell)
    path.write_text("hp: [1, 2]\n")
    with pytest.raises(InputError, match=rf"{path}: expected a mapping `hp`"):
        read_selected(path)


def test_train_stage_takes_selected_values_and_records_the_source(tiny_files, tmp_path):
    image_root, run_dir = tiny_files
    hp = {"impl": "NormalNN", "n_class": 4, "family": None, "layout": "class_folders", "lr": 0.01,
          "batch_size": 8, "weights": "none", "image_size": 32, "n_workers": 0}
    path = tmp_path / "sel.yaml"
    path.write_text(yaml.safe_dump({"dataset": "tiny", "fidelity": "corrected", "scenario": "class_iid",
                                    "agent": "lower_bound", "selection": "reference", "point": "lr=1e-3",
                                    "hp": {"lr": 1.0e-3}}))
    base = [sys.executable, "-m", "stages.train", "--dataset", "tiny", "--scenario", "class_iid", "--agent",
            "lower_bound", "--run", "0", "--fidelity", "corrected", "--filelists", str(run_dir), "--image-root",
            str(image_root), "--hparams", json.dumps(hp), "--device", "cpu", "--threads", "1"]
    res = subprocess.run(base + ["--out", str(tmp_path / "out"), "--selected", str(path)], cwd=REPO,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert m["hparams"]["lr"] == 1e-3 and m["meta"]["hparams_source"] == "selected"
    assert m["meta"]["hparams_selected"]["file"] == str(path)
    assert any("REFERENCE selection" in n for n in m["meta"]["notes"])
    path.write_text(path.read_text().replace("lr: 0.001", "lr: -3"))
    res = subprocess.run(base + ["--out", str(tmp_path / "bad"), "--selected", str(path)], cwd=REPO,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 1 and f"(from {path}: hp): must be > 0" in res.stderr
    assert not (tmp_path / "bad" / "metrics.json").exists()


# ------------------------------------------------------------------------------------------------ the stage
def _write(path: Path, data: dict) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return str(path)


def test_summary_stage_writes_ranked_summary_plot_and_selection(tmp_path):
    from stages.gridsearch_summary import main

    cell = {"dataset": "d", "fidelity": "corrected", "scenario": "class_iid", "agent": "l2"}
    files = []
    for pid, vals in (("lr=1e-4,reg_coef=1", [[50, 40], [52, 44]]), ("lr=1e-4,reg_coef=100", [[70, 60], [66, 58]]),
                      ("lr=1e-3,reg_coef=1", [[30, 20], [34, 22]])):
        for run, val in enumerate(vals):
            m = _metrics(parse_point_id(pid), run, val=[float(v) for v in val])
            m["meta"].update(cell)
            files.append(_write(tmp_path / "grid" / pid / f"run{run}" / "metrics.json", m))
    out = tmp_path / "out"
    args = ["--metrics", *files, "--points", "lr=1e-4,reg_coef=1", "lr=1e-4,reg_coef=100", "lr=1e-3,reg_coef=1",
            "--keys", "lr", "reg_coef", "--selection", "corrected", "--dataset", "d", "--fidelity", "corrected",
            "--scenario", "class_iid", "--agent", "l2", "--out-summary", str(out / "summary.csv"),
            "--out-plot", str(out / "summary_plot.png"), "--out-selected", str(out / "selected.yaml")]
    main(args)
    s = pd.read_csv(out / "summary.csv")
    assert s["point"].tolist() == ["lr=1e-4,reg_coef=100", "lr=1e-4,reg_coef=1", "lr=1e-3,reg_coef=1"]
    assert s.loc[0, "score_mean"] == pytest.approx(63.5) and s.loc[0, "score_sem"] == pytest.approx(1.5)
    assert (out / "summary_plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    sel = yaml.safe_load((out / "selected.yaml").read_text())
    assert sel["point"] == "lr=1e-4,reg_coef=100" and sel["hp"] == {"lr": 1e-4, "reg_coef": 100,
                                                                     "holdout_validation": True}
    with pytest.raises(SystemExit, match="meta.agent is 'l2', not this cell's 'ewc'"):
        main([a if a != "l2" else "ewc" for a in args])


def test_aggregate_records_the_hyperparameter_source(tmp_path):
    from augmem.results import aggregate as agg
    from augmem.results.table import build_table, to_markdown

    from .conftest import write_metrics

    m = [[90.0, None, None], [60.0, 80.0, None], [40.0, 50.0, 70.0]]
    sel = {"hparams_source": "selected", "hparams_selected": {"selection": "corrected", "keys": ["lr"]},
           "notes": ["lr selected by the grid search on a held-out validation split (corrected selection)"]}
    paths = [write_metrics(tmp_path, agent="l2", run=r, matrix=m, meta=sel) for r in (0, 1)]
    paths += [write_metrics(tmp_path, agent="ewc", run=r, matrix=m) for r in (0, 1)]
    summary = agg.summarise(agg.load_runs(paths))
    src = dict(zip(summary["agent"], summary["hparams_source"]))
    assert src == {"l2": "selected/corrected", "ewc": "published"}
    md = to_markdown(build_table(summary))
    assert "¶" in md and "held-out validation split" in md
