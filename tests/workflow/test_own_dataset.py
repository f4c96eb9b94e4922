"""Bring your own dataset: a class-folder tree of 10 classes declared in a config file outside params/
(`define_datasets` + `roots`, layout class_folders, no family) is indexed, checked and cut into task filelists by
`snakemake --configfile mine.yaml data`; its jobs get the agents' own hyperparameters, not CIFAR-100's; task
arguments that do not fit stop the workflow early, naming the file and the numbers (README, "Bring your own
dataset")."""
from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from .helpers import copy_repo, dry_run_jobs, snakemake

CLASSES = [f"shape{c}" for c in range(10)]
TRAIN, TEST = 4, 2  # images per class


def make_tree(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for split, n in (("train", TRAIN), ("test", TEST)):
        for c, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                img = rng.integers(0, 60, size=(8, 8, 3), dtype=np.uint8)
                img[:, c % 8] = 200
                Image.fromarray(img).save(folder / f"{i:04d}.png")
    return root


def config(root: Path, n_class: int = 10, **tasks) -> dict:
    """The user's config file: their dataset (n_class classes; `tasks` over 2 classes per task, iid tasks of 10)."""
    return {
        "datasets": ["mine"], "scenarios": ["iid", "class_iid"], "fidelities": ["reference"], "runs": 1,
        "roots": {"mine": str(root)},
        "define_datasets": {"mine": {
            "layout": "class_folders", "n_class": n_class, "scenarios": ["iid", "class_iid"],
            "tasks": {"task_size_iid": 10, "n_class": 2, **tasks},
            "expected_stats": {"n_images": 60, "n_classes": 10, "images_per_class_min": 6},
            "hp": {"image_size": 32, "weights": "none", "n_workers": 0},
        }},
        "train": {"datasets": [], "scenarios": ["class_iid"], "agents": ["augmem"], "runs": 1, "device": "cpu",
                  "threads": 1, "seed_base": 0},
    }


def write(path: Path, cfg: dict) -> str:
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_own_class_folder_dataset(tmp_path):
    work = copy_repo(tmp_path / "repo")
    raw = make_tree(tmp_path / "my photos")  # outside the repository, a space in the path
    mine = write(tmp_path / "mine.yaml", config(raw))
    snakemake(work, "data", "--configfile", mine)
    interim = work / "data" / "interim" / "mine"
    assert (interim / "classes.csv").read_text().splitlines()[1:] == [f"{c},{i}" for i, c in enumerate(CLASSES)]
    stats = json.loads((interim / "dirmap_stats.json").read_text())
    assert stats["n_classes"] == 10 and stats["n_images"] == 60
    run = interim / "filelists" / "reference" / "mine_task_filelists" / "class_iid" / "run0" / "stream"
    tasks = sorted(run.glob("train_task_*_filelist.txt"))
    assert len(tasks) == 5 and all(len(t.read_text().splitlines()) == 2 * TRAIN for t in tasks)
    assert len((run / "test_filelist.txt").read_text().splitlines()) == 10 * TEST
    iid = run.parents[2] / "iid" / "run0" / "stream"
    assert len(list(iid.glob("train_task_*_filelist.txt"))) == 4  # 40 images, 10 per task (+1: inclusive slices)
    assert not list(params_dir_changes(work))  # nothing under params/ was edited

    # the job's resolved hyperparameters: the agents' own values (no family), not CIFAR-100's
    cfg = config(raw)
    cfg["train"]["datasets"] = ["mine"]
    target = "results/mine/reference/class_iid/augmem/run0/metrics.json"
    proc = snakemake(work, target, "-n", "-p", "--configfile", write(tmp_path / "train.yaml", cfg))
    job = next(j for j in dry_run_jobs(proc) if j["rule"] == "train")
    words = shlex.split(job["shell"])
    hp = json.loads(words[words.index("--hparams") + 1])
    agents = yaml.safe_load((work / "params" / "agents.yaml").read_text())["agents"]["augmem"]["hp"]
    assert hp["family"] is None and hp["layout"] == "class_folders" and hp["n_class"] == 10
    for key in ("memory_Nslots", "memory_Nfeat", "memory_size", "mem_sparse"):
        assert hp[key] == agents[key], key  # CIFAR-100's would be 1000, 128, 2000, 1
    assert hp["image_size"] == 32 and hp["keep_best_task1_net"] is False

    # task arguments that do not fit stop the workflow early, naming the file and the numbers
    dirmap = "data/interim/mine/dirmap_raw.csv"
    for n_class, per_task, step, needles in (
        (8, 2, "dirmap_stats", [dirmap, "holds 10 classes", "n_class is 8"]),
        (100, 5, "dirmap_stats", [dirmap, "holds 10 classes", "n_class is 100"]),  # CIFAR-100's numbers
        (10, 3, "filelists", [dirmap, "class_iid: 3 classes per task", "do not divide the 10 classes",
                              "uneven_last_task"]),
    ):
        cfg = config(raw, n_class=n_class)
        cfg["define_datasets"]["mine"]["tasks"]["n_class"] = per_task
        proc = snakemake(work, "data", "--configfile", write(tmp_path / "bad.yaml", cfg), check=False)
        assert proc.returncode != 0
        text = "\n".join(p.read_text() for p in sorted((work / "logs" / step).rglob("*.log")))
        assert all(n in text for n in needles), (bad, text[-2000:], proc.stderr[-2000:])
    cfg = config(raw, uneven_last_task=True)
    cfg["define_datasets"]["mine"]["tasks"]["n_class"] = 3
    snakemake(work, "data", "--configfile", write(tmp_path / "uneven.yaml", cfg))
    sizes = [len(p.read_text().splitlines()) for p in sorted(run.glob("train_task_*_filelist.txt"))]
    assert sizes == [3 * TRAIN] * 3 + [TRAIN]

    # a key the chosen scenarios need is missing: the workflow does not start
    cfg = config(raw)
    del cfg["define_datasets"]["mine"]["tasks"]["task_size_iid"]
    proc = snakemake(work, "data", "-n", "--configfile", write(tmp_path / "missing.yaml", cfg), check=False)
    assert proc.returncode != 0
    assert "dataset mine (layout class_folders), scenario iid: tasks.task_size_iid is missing" in \
        proc.stdout + proc.stderr
    cfg["scenarios"] = ["class_iid"]  # not needed without iid
    snakemake(work, "data", "-n", "--configfile", write(tmp_path / "missing.yaml", cfg))


def params_dir_changes(work: Path):
    from .helpers import REPO

    for p in sorted((work / "params").iterdir()):
        if p.read_bytes() != (REPO / "params" / p.name).read_bytes():
            yield p
