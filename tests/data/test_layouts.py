"""The registry of dataset layouts (augmem.data.layouts): the one list of layouts the schemas, the rules and the
stages use, the dataset entries' checks (keys per scenario), and the early checks of the task arguments."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from augmem.data import filelists as fl
from augmem.data import layouts
from augmem.data.stats import check_dataset_classes
from augmem.io import InputError

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = REPO / "workflow" / "schemas"


def _yaml(path: Path):
    return yaml.safe_load(path.read_text())


# ---------------------------------------------------------------------------------------------- one list of layouts
def test_schema_enums_are_the_registry():
    props = _yaml(SCHEMAS / "datasets.schema.yaml")["additionalProperties"]["properties"]
    assert props["layout"]["enum"] == layouts.names()
    assert props["family"]["enum"] == list(layouts.FAMILIES)
    rule = _yaml(SCHEMAS / "agents.schema.yaml")["properties"]["agents"]["additionalProperties"]["properties"]
    assert rule["overrides"]["items"]["properties"]["family"]["enum"] == list(layouts.FAMILIES)
    assert "kind" not in rule["overrides"]["items"]["properties"]
    assert props["scenarios"]["items"]["enum"] == list(layouts.SCENARIOS)


def test_agents_overrides_use_known_families():
    agents = _yaml(REPO / "params" / "agents.yaml")["agents"]
    used = {r["family"] for spec in agents.values() for r in spec.get("overrides") or [] if "family" in r}
    assert used == set(layouts.FAMILIES)
    assert not [r for spec in agents.values() for r in spec.get("overrides") or [] if "kind" in r]


# the published datasets and the demos keep their old `kind` as family; the layout is the old kind's code path
MIGRATED = {
    "core50": ("core50", "core50"), "toybox": ("toybox", "toybox"), "ilab2mlight": ("ilab", "ilab2mlight"),
    "cifar100": ("class_folders", "cifar100"), "core50_demo": ("core50", "core50"),
    "toybox_demo": ("toybox", "toybox"), "ilab2mlight_demo": ("ilab", "ilab2mlight"),
    "cifar100_demo": ("class_folders", "cifar100"),
}


def test_params_datasets_migrated():
    datasets = _yaml(REPO / "params" / "datasets.yaml")
    assert {ds: (e["layout"], e.get("family")) for ds, e in datasets.items()} == MIGRATED
    for ds, entry in datasets.items():
        assert layouts.dataset_problems(ds, entry, entry["scenarios"]) == [], ds


def test_old_kind_names_are_aliases():
    assert [layouts.get(k).name for k in ("core50", "toybox", "ilab2mlight", "cifar100")] == \
        ["core50", "toybox", "ilab", "class_folders"]
    assert layouts.get("class_folders") is layouts.LAYOUTS["class_folders"]
    with pytest.raises(InputError, match=r"unknown dataset layout 'mnist'.*class_folders"):
        layouts.get("mnist")


@pytest.mark.parametrize("name,final,image_root,image_input,steps", [
    ("core50", "dirmap_raw.csv", "R/core50_128x128", "R", (False, None, False, False)),
    ("toybox", "dirmap_balanced.csv", "I/frames", "I/frames", (True, "toybox", False, False)),
    ("ilab", "dirmap_distributed.csv", "I/images", "I/images", (False, "ilab", True, False)),
    ("class_folders", "dirmap_raw.csv", "R", "R", (False, None, False, True)),
])
def test_layout_records(name, final, image_root, image_input, steps):
    """The paths and steps the rules used to spell out per kind."""
    lay = layouts.get(name)
    assert lay.final_dirmap == final
    assert lay.image_root("R", "I") == image_root and lay.image_root_input("R", "I") == image_input
    assert (lay.frames, lay.balance, lay.distribute, lay.class_table) == steps
    assert lay.dirmap_source("R", "I") == ("I/frames" if lay.frames else "R")


def test_frame_selection_and_frames_per_session():
    dm = pd.DataFrame({"im_num": range(300)})
    assert layouts.get("core50").select_frames(dm, 20)["im_num"].tolist() == list(range(10, 300, 20))
    assert len(layouts.get("class_folders").select_frames(dm, 20)) == 300
    assert layouts.get("core50").default_frames_per_session(60) == 5.0
    assert layouts.get("ilab").default_frames_per_session() == 15
    assert layouts.get("class_folders").default_frames_per_session() is None
    with pytest.raises(InputError, match="sample_rate"):
        layouts.get("toybox").select_frames(dm, 0)


# ---------------------------------------------------------------------------------------------- dataset entries
MINE = {"layout": "class_folders", "n_class": 10, "scenarios": ["iid", "class_iid"], "tasks": {"n_class": 2}}


def test_only_the_keys_of_the_used_scenarios_are_required():
    assert layouts.dataset_problems("mine", MINE, ["class_iid"]) == []  # no test_sess: the test/ folder
    problems = layouts.dataset_problems("mine", MINE, ["iid", "class_iid"])
    assert problems == ["dataset mine (layout class_folders), scenario iid: tasks.task_size_iid is missing "
                        "(training images per iid task)"]
    toy = {"layout": "toybox", "n_class": 12, "scenarios": list(layouts.SCENARIOS), "tasks": {"n_class": 2},
           "frames": {"fps": 1, "size": 64}}
    problems = "\n".join(layouts.dataset_problems("toys", toy, ["instance"]))
    assert "dataset toys (layout toybox), scenario instance: tasks.n_instance is missing" in problems
    assert "scenario instance: tasks.test_sess is missing" in problems
    assert "`balance` is missing" in problems
    assert "task_size_iid" not in problems and "tasks.frames_per_session" not in problems  # Toybox: 15
    assert layouts.dataset_problems("toys", toy, []) == []  # not used: nothing required


def test_entry_errors():
    assert "`kind` was replaced by `layout`" in layouts.dataset_problems("old", {"kind": "cifar100"}, [])[0]
    bad = dict(MINE, scenarios=["class_instance"], tasks={"n_class": 2, "sample_rate": 10}, family="cifar10")
    problems = "\n".join(layouts.dataset_problems("mine", bad, ["class_instance"]))
    assert "scenario class_instance is not possible with this layout (possible: ['iid', 'class_iid'])" in problems
    assert "tasks.sample_rate applies to the ['core50'] layout(s) only" in problems
    assert "family 'cifar10' is not one of" in problems


def test_filelist_args_per_scenario():
    entry = _yaml(REPO / "params" / "datasets.yaml")["core50_demo"]
    assert layouts.filelist_args(entry, "class_iid") == [
        "--n-class", "2", "--test-sess", "3", "7", "10", "--sample-rate", "120", "--dataset-classes", "6"]
    assert layouts.filelist_args(entry, "instance") == [
        "--n-instance", "48", "--test-sess", "3", "7", "10", "--sample-rate", "120", "--frames-per-session", "3",
        "--dataset-classes", "6"]
    mine = dict(MINE, tasks={"n_class": 3, "uneven_last_task": True, "task_size_iid": 50})
    assert layouts.filelist_args(mine, "class_iid") == [
        "--n-class", "3", "--test-sess", "1", "--dataset-classes", "10", "--uneven-last-task"]
    assert layouts.filelist_args(mine, "iid") == ["--task-size-iid", "50", "--test-sess", "1",
                                                  "--dataset-classes", "10"]


# ---------------------------------------------------------------------------------------------- early checks
def _class_folder_dirmap(n_classes: int, train: int = 3, test: int = 2) -> pd.DataFrame:
    rows = [(f"c{c:02d}", 0, s, f"{'train' if s == 0 else 'test'}/c{c:02d}/{i}.png", i + 1)
            for c in range(n_classes) for s, n in ((0, train), (1, test)) for i in range(n)]
    return pd.DataFrame(rows, columns=["class", "object", "session", "im_path", "im_num"])


def test_dataset_classes_must_match():
    dm = _class_folder_dirmap(10)
    check_dataset_classes(dm, 10)
    with pytest.raises(InputError, match=r"mine\.csv: the dirmap holds 10 classes \['c00', .*'c09'\], but the "
                                         r"dataset's n_class is 8 \(the network would have too few outputs"):
        check_dataset_classes(dm, 8, "mine.csv")
    # CIFAR-100's numbers on a 10-class tree
    with pytest.raises(InputError, match=r"holds 10 classes .* n_class is 100 \(the numbers of another dataset"):
        check_dataset_classes(dm, 100, "mine.csv")


def test_classes_per_task_must_divide():
    dm = _class_folder_dirmap(10)
    train, _ = fl.train_test_split(dm, "class_folders", [1])
    fl.check_task_arguments(dm, train, "class_iid", 5, 10)
    fl.check_task_arguments(dm, train, "iid", 3, 10)  # iid does not cut by class
    with pytest.raises(InputError, match=r"mine\.csv: class_iid: 3 classes per task \(tasks\.n_class, --n-class\) "
                                         r"do not divide the 10 classes of the training split: the last of 4 tasks "
                                         r"would hold 1 class; choose one of \[1, 2, 5, 10\], or allow it"):
        fl.check_task_arguments(dm, train, "class_iid", 3, 10, source="mine.csv")
    fl.check_task_arguments(dm, train, "class_iid", 3, 10, uneven_last_task=True)


def _cli(module, *args):
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=120)


def test_filelists_stage_fails_before_writing(tmp_path):
    csv = tmp_path / "mine.csv"
    _class_folder_dirmap(10).to_csv(csv)
    common = ["--dataset", "mine", "--layout", "class_folders", "--dirmap", csv, "--scenario", "class_iid",
              "--runs", 0, "--fidelity", "reference", "--out", tmp_path / "out"]
    for extra, needle in ((["--n-class", 3, "--dataset-classes", 10], "3 classes per task"),
                          (["--n-class", 5, "--dataset-classes", 100], "n_class is 100"),
                          (["--n-class", 2, "--dataset-classes", 8], "n_class is 8")):
        proc = _cli("stages.filelists", *common, *extra)
        assert proc.returncode == 1 and proc.stderr.startswith("error:") and needle in proc.stderr, proc.stderr
        assert "mine.csv" in proc.stderr and not (tmp_path / "out").exists()
    proc = _cli("stages.filelists", *common, "--n-class", 3, "--dataset-classes", 10, "--uneven-last-task")
    assert proc.returncode == 0, proc.stderr
    run = tmp_path / "out" / "mine_task_filelists" / "class_iid" / "run0" / "stream"
    sizes = [len((run / f"train_task_{t:02d}_filelist.txt").read_text().splitlines()) for t in range(4)]
    assert sizes == [9, 9, 9, 3]  # 3 classes x 3 images, the last task one class
    proc = _cli("stages.filelists", *common[:-2], "--out", tmp_path / "o2", "--scenario", "instance")
    assert proc.returncode == 2 and "scenario instance is not possible with layout class_folders" in proc.stderr


def test_dirmap_stats_checks_the_dataset_classes(tmp_path):
    csv = tmp_path / "mine.csv"
    _class_folder_dirmap(10).to_csv(csv)
    proc = _cli("stages.dirmap_stats", "--dirmap", csv, "--out", tmp_path / "s.json", "--dataset-classes", 8)
    assert proc.returncode == 1 and "holds 10 classes" in proc.stderr and "n_class is 8" in proc.stderr
    assert not (tmp_path / "s.json").exists()
    proc = _cli("stages.dirmap_stats", "--dirmap", csv, "--out", tmp_path / "s.json", "--dataset-classes", 10)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("stage,args", [
    ("stages.dirmap", ["--root", "R", "--out", "o.csv"]),
    ("stages.sample", ["--dirmap", "d.csv", "--out", "o.csv", "--objects-per-class", 1, "--sessions-per-object", 1,
                       "--frames-per-session", 1]),
    ("stages.image_cache", ["--dirmap", "d.csv", "--image-root", "R", "--size", 8, "--out-prefix", "p"]),
])
def test_stage_layout_options(stage, args):
    """--layout takes the registry's names; --kind is a deprecated alias that also takes the old kind names."""
    help_ = _cli(stage, "--help").stdout
    assert "--layout" in help_ and "--kind" in help_ and "deprecated" in help_
    proc = _cli(stage, "--layout", "mnist", *args)
    assert proc.returncode == 2 and "unknown dataset layout 'mnist'" in proc.stderr
    proc = _cli(stage, "--layout", "toybox", "--kind", "toybox", *args)
    assert proc.returncode == 2 and "not allowed with" in proc.stderr
    if stage == "stages.sample":
        proc = _cli(stage, "--layout", "core50", *args)
        assert proc.returncode == 2 and "not possible here" in proc.stderr
