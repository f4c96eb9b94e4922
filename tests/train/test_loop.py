"""The stream loop (spec 5.1), its outputs (metrics contract), keep-best, determinism, resume, and the train stage."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from augmem.agents.normal_nn import NormalNN, OfflineNN
from augmem.data.datasets import FilelistDataset, study_transform
from augmem.io import InputError
from augmem.train.fidelity import train_switches
from augmem.train.loop import active_nodes, run_stream, split_test
from augmem.train.seeding import rng_state, seed_everything, set_rng_state
from conftest import add_offline_filelists  # tests/conftest.py (tests/ is on sys.path)

HP = {"optimizer": "SGD", "lr": 0.01, "momentum": 0.9, "weight_decay": 0.0, "batch_size": 8, "n_epoch": 1,
      "n_epoch_first_task": 2, "weights": "none", "image_size": 32, "n_workers": 0}
META = {"dataset": "tiny", "kind": "tiny", "scenario": "class_iid", "agent": "lower_bound", "run": 0,
        "fidelity": "reference"}
CONTRACT_KEYS = {"meta", "hparams", "switches", "primary_path", "paths", "tasks", "test_all", "test_first",
                 "val_all", "acc_matrix", "epochs", "timing", "memory_bytes", "memory_bytes_total", "n_test"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def run_job(cls, files, out, hp=None, fidelity="reference", seed=0, logs=None, device="cpu", **kw):
    """One job as the stage runs it: seed, build the agent, run the stream."""
    image_root, run_dir = files
    hp = {**HP, **(hp or {})}
    switches = train_switches(fidelity, hp.get("switch_overrides"))
    seed_everything(seed)
    agent = cls(4, hp, switches, device)
    log = (logs.append if logs is not None else (lambda m: None))
    return run_stream(agent, run_dir, image_root, out, hp=hp, switches=switches, meta={**META, "seed": seed},
                      seed=seed, log=log, **kw), agent


def read_metrics(out: Path) -> dict:
    text = (out / "metrics.json").read_text()
    return json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c} in metrics.json"))


def without_timing(m: dict) -> dict:
    return {k: v for k, v in m.items() if k != "timing"}


# ------------------------------------------------------------------------------------------------ helpers
def test_active_nodes_sorted_union():
    assert active_nodes([[3, 1], [0, 3], [2]]) == [[1, 3], [0, 1, 3], [0, 1, 2, 3]]


def test_split_test_seeded_disjoint_ordered():
    test, val = split_test(24, seed=5)
    assert len(val) == 6 and len(test) == 18 and sorted(test + val) == list(range(24))
    assert test == sorted(test) and val == sorted(val)
    assert split_test(24, seed=5) == (test, val) and split_test(24, seed=6) != (test, val)


def test_rng_state_round_trip_weights_only(tmp_path):
    import random

    seed_everything(3)
    state = rng_state()
    torch.save(state, tmp_path / "s.pt")
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(torch.load(tmp_path / "s.pt", weights_only=True))
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a


# ------------------------------------------------------------------------------------------------ contract
def test_metrics_contract_normal_nn(tiny_files, tmp_path):
    logs = []
    out = tmp_path / "out"
    metrics, _ = run_job(NormalNN, tiny_files, out, logs=logs)
    m = read_metrics(out)
    assert m == json.loads(json.dumps(metrics))
    assert set(m) == CONTRACT_KEYS
    assert m["meta"]["seed"] == 0 and m["meta"]["device"] == "cpu" and m["meta"]["image_size"] == 32
    assert m["meta"]["inputs"] == "pixels" and m["meta"]["torch"] == torch.__version__
    assert m["hparams"]["lr"] == 0.01 and m["switches"]["keep_best_on_test"] is True
    assert m["primary_path"] == "acc" and m["paths"] == ["acc"]
    assert [t["labels"] for t in m["tasks"]] == [[0, 1], [2, 3]]
    assert [t["active"] for t in m["tasks"]] == [[0, 1], [0, 1, 2, 3]]
    assert [t["n_train"] for t in m["tasks"]] == [24, 24]
    assert [t["n_epoch"] for t in m["tasks"]] == [2, 1]  # n_epoch_first_task for task 0
    assert [t["selected_epoch"] for t in m["tasks"]] == [1, 0]  # no keep-best: the last epoch
    assert m["val_all"] is None and m["n_test"] == 24
    for key in ("test_all", "test_first"):
        assert set(m[key]) == {"acc"} and len(m[key]["acc"]) == 2
        assert all(0.0 <= v <= 100.0 for v in m[key]["acc"])
    assert [len(e) for e in m["epochs"]["test_all"]["acc"]] == [2, 1]
    assert m["epochs"]["test_all"]["acc"][0][-1] == m["test_all"]["acc"][0]
    # accuracy matrix: lower triangle filled, upper triangle null; column 0 is test_first; each row averages to
    # test_all because every task has the same number of test images (12)
    am = m["acc_matrix"]["acc"]
    assert am[0][1] is None and am[0][0] is not None and am[1][0] is not None and am[1][1] is not None
    assert [row[0] for row in am] == m["test_first"]["acc"]
    assert am[0][0] == m["test_all"]["acc"][0]
    assert math.isclose((am[1][0] + am[1][1]) / 2, m["test_all"]["acc"][1])
    t = m["timing"]
    assert len(t["train_s"]) == len(t["eval_s"]) == len(t["train_images_per_s"]) == 2 and t["total_s"] > 0
    assert m["memory_bytes"] == {} and m["memory_bytes_total"] == 0
    assert not (out / "checkpoint.pt").exists()
    assert np.load(out / "viz.npz").files == ["meta_json"]  # always written; visualize off: meta_json only
    assert any(line.startswith("task 2/2 epoch 1/1: 24 images, ") and "test_all acc=" in line for line in logs)
    # every epoch evaluated (eval_every defaults to epoch); a deterministic CPU run that did not diverge
    assert [t["evaluated_epochs"] for t in m["tasks"]] == [[0, 1], [0]]
    assert m["meta"]["deterministic"] is True and m["meta"]["nondeterministic_ops"] == []
    assert m["meta"]["diverged"] is None and "device_name" not in m["meta"]


def test_upper_bound_sees_all_data_so_far(tiny_files, tmp_path):
    """Offline agents read offline/: task t = all data of tasks 0..t (written here by concatenating task files)."""
    image_root, run_dir = tiny_files
    lines0, lines1 = add_offline_filelists(run_dir)

    seen = []

    def spy(self, loader, task, epoch, last_epoch):
        labels = [int(v) for _, y in loader for v in y]
        seen.append((task, epoch, len(labels), sorted(set(labels))))
        NormalNN.learn_stream(self, loader, task, epoch, last_epoch)

    class Spy(OfflineNN):
        learn_stream = spy

    out = tmp_path / "ub"
    metrics, _ = run_job(Spy, tiny_files, out, hp={"n_epoch_first_task": None})
    assert seen == [(0, 0, 24, [0, 1]), (1, 0, 48, [0, 1, 2, 3])]
    assert [t["n_train"] for t in metrics["tasks"]] == [24, 48]
    assert [t["active"] for t in metrics["tasks"]] == [[0, 1], [0, 1, 2, 3]]
    # the stream agent, by contrast, sees only the new task's data
    seen.clear()

    class StreamSpy(NormalNN):
        learn_stream = spy

    run_job(StreamSpy, tiny_files, tmp_path / "lb", hp={"n_epoch_first_task": None})
    assert [s[2] for s in seen] == [24, 24]


def test_empty_task_file_is_evaluated_not_trained(tiny_files, tmp_path):
    """Instance-scenario quirk: trailing task files are empty; they are evaluated but not trained on."""
    image_root, run_dir = tiny_files
    (run_dir / "stream" / "train_task_02_filelist.txt").write_text("")
    calls = []

    class Spy(NormalNN):
        def learn_stream(self, loader, task, epoch, last_epoch):
            calls.append(task)
            super().learn_stream(loader, task, epoch, last_epoch)

    out = tmp_path / "out"
    run_job(Spy, tiny_files, out)
    m = read_metrics(out)
    assert calls == [0, 0, 1]
    assert m["tasks"][2] == {"task": 2, "labels": [], "active": [0, 1, 2, 3], "n_train": 0, "n_epoch": 0,
                             "selected_epoch": None, "evaluated_epochs": [0]}
    assert m["test_all"]["acc"][2] == m["test_all"]["acc"][1]  # nothing changed
    assert m["acc_matrix"]["acc"][2][2] is None  # no classes in task 2: NaN -> null
    assert m["timing"]["train_images_per_s"][2] is None and len(m["epochs"]["test_all"]["acc"][2]) == 1


# ------------------------------------------------------------------------------------------------ keep-best
class Scripted(NormalNN):
    """An agent whose test accuracy per (task, epoch) is scripted; the 'quality' lives in the network's buffers so
    that keep-best's snapshot/restore carries it, exactly like real weights."""

    script: dict[int, list[float]] = {}
    oracle: dict[bytes, int] = {}

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.model.register_buffer("quality", torch.zeros(()))
        self.quality_at_start: list[tuple[int, int, float]] = []

    def learn_stream(self, loader, task, epoch, last_epoch):
        self.quality_at_start.append((task, epoch, float(self.model.quality)))
        self.model.quality.fill_(self.script[task][epoch])

    @torch.no_grad()
    def predict(self, x):
        y = torch.tensor([self.oracle[xi.numpy().tobytes()] for xi in x])
        n_ok = round(float(self.model.quality) * len(y))
        wrong = torch.tensor([self.active[(self.active.index(int(v)) + 1) % len(self.active)] for v in y])
        return {"acc": torch.where(torch.arange(len(y)) < n_ok, y, wrong)}


def _oracle(files):
    image_root, run_dir = files
    ds = FilelistDataset(run_dir / "stream" / "test_filelist.txt", image_root, study_transform(32))
    return {ds[i][0].numpy().tobytes(): ds[i][1] for i in range(len(ds))}


@pytest.mark.parametrize("all_tasks", [False, True])
def test_keep_best_on_test_picks_best_epoch(tiny_files, tmp_path, all_tasks):
    Scripted.oracle = _oracle(tiny_files)
    Scripted.script = {0: [0.5, 1.0, 0.75, 0.25], 1: [0.5, 0.25]}
    hp = {"n_epoch_first_task": 4, "n_epoch": 2, "batch_size": 100, "keep_best_task1_net": True,
          "keep_best_net_all_tasks": all_tasks}
    out = tmp_path / "out"
    metrics, agent = run_job(Scripted, tiny_files, out, hp=hp)
    m = read_metrics(out)
    assert m["epochs"]["test_all"]["acc"] == [[50.0, 100.0, 75.0, 25.0], [50.0, 25.0]]
    assert m["tasks"][0]["selected_epoch"] == 1 and m["test_all"]["acc"][0] == 100.0
    assert m["acc_matrix"]["acc"][0] == [100.0, None]
    # the best weights were restored before task 1 started
    assert agent.quality_at_start[4] == (1, 0, 1.0)
    if all_tasks:
        assert m["tasks"][1]["selected_epoch"] == 0 and m["test_all"]["acc"][1] == 50.0
        assert float(agent.model.quality) == 0.5
    else:
        assert m["tasks"][1]["selected_epoch"] == 1 and m["test_all"]["acc"][1] == 25.0
    assert m["val_all"] is None and m["n_test"] == 24


def test_keep_best_needs_n_epoch_first_task_above_one(tiny_files, tmp_path):
    Scripted.oracle = _oracle(tiny_files)
    Scripted.script = {0: [1.0, 0.5], 1: [1.0, 0.5]}
    hp = {"n_epoch_first_task": None, "n_epoch": 2, "batch_size": 100, "keep_best_net_all_tasks": True}
    _, agent = run_job(Scripted, tiny_files, tmp_path / "out", hp=hp)
    m = read_metrics(tmp_path / "out")
    assert [t["selected_epoch"] for t in m["tasks"]] == [1, 1] and m["test_all"]["acc"] == [50.0, 50.0]


def test_keep_best_on_validation_split(tiny_files, tmp_path):
    """Corrected fidelity: selection on a seeded 25 % validation split; test numbers use the other 75 %."""
    Scripted.oracle = _oracle(tiny_files)
    Scripted.script = {0: [0.5, 1.0, 0.25], 1: [0.5]}
    hp = {"n_epoch_first_task": 3, "n_epoch": 1, "batch_size": 100, "keep_best_task1_net": True}
    out = tmp_path / "out"
    run_job(Scripted, tiny_files, out, hp=hp, fidelity="corrected", seed=4)
    m = read_metrics(out)
    assert m["switches"]["keep_best_on_test"] is False
    assert m["n_test"] == 18 and m["val_all"] is not None and len(m["val_all"]["acc"]) == 2
    val_epochs = m["epochs"]["val_all"]["acc"][0]
    assert len(val_epochs) == 3 and m["tasks"][0]["selected_epoch"] == int(np.argmax(val_epochs)) == 1
    assert m["val_all"]["acc"][0] == val_epochs[1]
    assert m["test_all"]["acc"][0] == m["epochs"]["test_all"]["acc"][0][1]
    _, val_idx = split_test(24, seed=4)
    test_labels = [int(line.split()[-1]) for line in
                   (tiny_files[1] / "stream" / "test_filelist.txt").read_text().splitlines()]
    n_val_active = sum(test_labels[i] in (0, 1) for i in val_idx)
    assert round(val_epochs[0] / 100 * n_val_active) == round(0.5 * n_val_active)


# ------------------------------------------------------------------------------------------------ determinism/resume
def test_same_job_twice_is_identical(tiny_files, tmp_path):
    run_job(NormalNN, tiny_files, tmp_path / "a")
    run_job(NormalNN, tiny_files, tmp_path / "b")
    assert without_timing(read_metrics(tmp_path / "a")) == without_timing(read_metrics(tmp_path / "b"))


def test_resume_after_kill_gives_identical_metrics(tiny_files, tmp_path):
    hp = {"n_epoch": 2}
    run_job(NormalNN, tiny_files, tmp_path / "full", hp=hp)
    out = tmp_path / "resumed"
    logs = []
    res, _ = run_job(NormalNN, tiny_files, out, hp=hp, stop_after_task=0, logs=logs)
    assert res is None and (out / "checkpoint.pt").exists() and not (out / "metrics.json").exists()
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["next_task"] == 1 and len(state["partial"]["tasks"]) == 1
    logs.clear()
    run_job(NormalNN, tiny_files, out, hp=hp, logs=logs)
    assert any(line.startswith("resuming from") for line in logs)
    assert not any(line.startswith("task 1/2") for line in logs)  # task 0 was not trained again
    assert without_timing(read_metrics(out)) == without_timing(read_metrics(tmp_path / "full"))
    assert not (out / "checkpoint.pt").exists()


def test_checkpoint_of_other_config_is_ignored(tiny_files, tmp_path):
    out = tmp_path / "out"
    run_job(NormalNN, tiny_files, out, stop_after_task=0)
    logs = []
    run_job(NormalNN, tiny_files, out, hp={"lr": 0.02}, logs=logs)
    assert any("different configuration; starting over" in line for line in logs)
    assert any(line.startswith("task 1/2 epoch 1/2") for line in logs)
    run_job(NormalNN, tiny_files, tmp_path / "ref", hp={"lr": 0.02})
    assert without_timing(read_metrics(out)) == without_timing(read_metrics(tmp_path / "ref"))


# ------------------------------------------------------------------------------------------------ viz / AugMem
def test_viz_npz_normal_nn(tiny_files, tmp_path):
    out = tmp_path / "out"
    run_job(NormalNN, tiny_files, out, hp={"visualize": True, "viz_per_class": 2})
    z = np.load(out / "viz.npz")
    assert z["task0_labels"].tolist() == [0, 0, 1, 1] and z["task1_labels"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert z["task1_logits"].shape == (8, 4) and z["task1_logits"].dtype == np.float32
    assert z["task1_pred"].shape == (8,) and set(z["task0_pred"].tolist()) <= {0, 1}
    assert z["task0_confusion"].shape == (2, 2) and z["task0_confusion"].sum() == 12
    assert z["task1_confusion"].shape == (4, 4) and z["task1_confusion"].sum() == 24
    assert z["task1_confusion"].sum(1).tolist() == [6, 6, 6, 6]
    m = read_metrics(out)
    assert np.trace(z["task1_confusion"]) / 24 * 100 == pytest.approx(m["test_all"]["acc"][1])
    meta = json.loads(str(z["meta_json"]))
    assert meta["n_tasks"] == 2 and meta["tasks"] == [[0, 1], [2, 3]]
    assert not any(k.endswith(("_memory", "_top_slots", "_images", "_slot_usage")) for k in z.files)


def test_visualize_does_not_change_training(tiny_files, tmp_path):
    """The visualisation pass leaves the RNG alone: with and without it the same numbers (dropout draws follow)."""
    hp = {"n_epoch": 2}
    run_job(NormalNN, tiny_files, tmp_path / "plain", hp=hp)
    run_job(NormalNN, tiny_files, tmp_path / "viz", hp={**hp, "visualize": True, "viz_per_class": 2})
    a, b = read_metrics(tmp_path / "plain"), read_metrics(tmp_path / "viz")
    for key in ("test_all", "test_first", "acc_matrix", "epochs"):
        assert a[key] == b[key], key


def test_augmem_through_the_loop_with_resume(tiny_files, tmp_path):
    from augmem.agents import get_agent_class

    cls = get_agent_class("AugMem")
    hp = {"n_epoch_first_task": None, "memory_Nslots": 10, "memory_Nfeat": 8, "memory_size": 20,
          "freeze_feature_extract": True, "visualize": True, "viz_per_class": 3, "viz_images_per_class": 2,
          "allow_small_map": True}  # 32 px: a 1x1 map
    run_job(cls, tiny_files, tmp_path / "full", hp=hp)
    m = read_metrics(tmp_path / "full")
    assert m["primary_path"] == "mem" and m["paths"] == ["mem", "direct"]
    assert set(m["test_all"]) == {"mem", "direct"} and len(m["acc_matrix"]["direct"]) == 2
    assert m["memory_bytes_total"] > 0
    z = np.load(tmp_path / "full" / "viz.npz")
    assert z["task1_memory"].shape == (10, 8) and z["task1_memory"].dtype == np.float32
    assert z["task1_top_slots"].shape[0] == 12 and z["task1_top_slots"].shape[-1] == 64  # G = 512 / 8
    assert z["task1_images"].dtype == np.uint8 and z["task1_images"].shape == (8, 3, 32, 32)
    assert z["task1_image_index"].tolist() == [0, 1, 3, 4, 6, 7, 9, 10]
    assert z["task1_slot_usage"].shape == (4, 10)
    # resume: AugMem replays with Python's random, so this also checks the RNG state round trip
    out = tmp_path / "resumed"
    run_job(cls, tiny_files, out, hp=hp, stop_after_task=0)
    run_job(cls, tiny_files, out, hp=hp)
    assert without_timing(read_metrics(out)) == without_timing(m)
    z2 = np.load(out / "viz.npz")
    assert all(np.array_equal(z[k], z2[k]) for k in z.files)


# ------------------------------------------------------------------------------------------------ stage
def _stage_args(files, out, hp, *extra):
    image_root, run_dir = files
    return ["--dataset", "tiny", "--scenario", "class_iid", "--agent", "lower_bound", "--run", "2",
            "--fidelity", "reference", "--filelists", str(run_dir), "--image-root", str(image_root),
            "--out", str(out), "--threads", "1", "--device", "cpu", "--seed-base", "10",
            "--hparams", json.dumps({"impl": "NormalNN", "n_class": 4, "kind": "tiny", **hp}), *extra]


def test_stage_help():
    res = subprocess.run([sys.executable, "-m", "stages.train", "--help"], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert res.returncode == 0 and "--filelists" in res.stdout and "--hparams" in res.stdout


def test_stage_runs_and_resumes(tiny_files, tmp_path):
    from stages import train as stage

    hp = {**HP, "n_epoch_first_task": None}
    assert stage.main(_stage_args(tiny_files, tmp_path / "full", hp)) == 0
    m = read_metrics(tmp_path / "full")
    assert m["meta"]["seed"] == 12 and m["meta"]["run"] == 2 and m["meta"]["impl"] == "NormalNN"
    assert m["meta"]["kind"] == "tiny" and m["meta"]["n_class"] == 4 and "impl" not in m["hparams"]
    out = tmp_path / "resumed"
    assert stage.main(_stage_args(tiny_files, out, hp, "--stop-after-task", "0")) == 0
    assert (out / "checkpoint.pt").exists() and not (out / "metrics.json").exists()
    assert stage.main(_stage_args(tiny_files, out, hp)) == 0
    assert without_timing(read_metrics(out)) == without_timing(m)


def test_stage_bad_inputs(tiny_files, tmp_path):
    from stages import train as stage

    image_root, _ = tiny_files
    with pytest.raises(SystemExit, match=r"^error: --hparams: not valid JSON"):
        stage.main(_stage_args(tiny_files, tmp_path / "o", {})[:-1] + ["{nope"])
    with pytest.raises(SystemExit, match=r"^error: --hparams: unknown agent implementation 'Nope'"):
        stage.main(_stage_args(tiny_files, tmp_path / "o", {"impl": "Nope"}))
    (image_root / "test/c1/007.png").unlink()
    with pytest.raises(SystemExit, match=r"^error: 1 listed image\(s\) missing .*007\.png \(listed in "
                                         r".*test_filelist\.txt, line 8\)"):
        stage.main(_stage_args(tiny_files, tmp_path / "o", HP))
    assert not (tmp_path / "o" / "metrics.json").exists()


def test_loop_rejects_bad_epochs(tiny_files, tmp_path):
    with pytest.raises(InputError, match="n_epoch"):
        run_job(NormalNN, tiny_files, tmp_path / "o", hp={"n_epoch": 0})


def test_loader_workers_give_the_same_numbers(tiny_files, tmp_path):
    run_job(NormalNN, tiny_files, tmp_path / "w0", hp={"n_epoch_first_task": None})
    run_job(NormalNN, tiny_files, tmp_path / "w1", hp={"n_epoch_first_task": None, "n_workers": 1})
    a, b = read_metrics(tmp_path / "w0"), read_metrics(tmp_path / "w1")
    assert without_timing(a)["test_all"] == without_timing(b)["test_all"]
    assert a["acc_matrix"] == b["acc_matrix"] and a["hparams"]["n_workers"] != b["hparams"]["n_workers"]


def test_stage_corrupt_image_in_worker_is_one_line(tiny_files, tmp_path):
    from stages import train as stage

    image_root, _ = tiny_files
    (image_root / "train/c1/t0_003.png").write_bytes(b"garbage")
    with pytest.raises(SystemExit) as exc:
        stage.main(_stage_args(tiny_files, tmp_path / "o", {**HP, "n_workers": 1}))
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith("error: ") and "t0_003.png: cannot read image (listed in " in msg
    assert "train_task_00_filelist.txt, line 4)" in msg


def test_stage_with_params_dir(tiny_files, tmp_path):
    """Without --hparams the stage resolves (impl, hp) from a params folder and n_class/family/layout from its
    datasets."""
    import yaml

    from stages import train as stage

    params = tmp_path / "params"
    params.mkdir()
    (params / "default.yaml").write_text(yaml.safe_dump({}))
    (params / "datasets.yaml").write_text(yaml.safe_dump({"tiny": {"layout": "class_folders", "family": "tinyfam", "n_class": 4, "hp": {
        "image_size": 32, "weights": "none", "n_workers": 0}, "scenarios": ["class_iid"]}}))
    (params / "agents.yaml").write_text(yaml.safe_dump({"all_agents": {**HP, "n_epoch_first_task": None},
                                                        "agents": {"lower_bound": {"impl": "NormalNN",
                                                                                   "hp": {"lr": 0.005}}}}))
    args = _stage_args(tiny_files, tmp_path / "out", {})
    args = args[: args.index("--hparams")] + ["--params-dir", str(params)]
    assert stage.main(args) == 0
    m = read_metrics(tmp_path / "out")
    assert m["meta"]["kind"] == m["meta"]["family"] == "tinyfam" and m["meta"]["layout"] == "class_folders"
    assert m["hparams"]["lr"] == 0.005 and m["meta"]["impl"] == "NormalNN"
    bad = args[: args.index("--agent") + 1] + ["nope"] + args[args.index("--agent") + 2:]
    with pytest.raises(SystemExit, match=r"^error: .*unknown agent 'nope'"):
        stage.main(bad)
    # a scenario the dataset does not have, a bogus one, a bad value in a --config file: errors before training
    other = args[: args.index("--scenario") + 1] + ["iid"] + args[args.index("--scenario") + 2:]
    with pytest.raises(SystemExit, match=r"^error: dataset tiny: scenario iid is not among its scenarios"):
        stage.main(other)
    bogus = args[: args.index("--scenario") + 1] + ["bogus"] + args[args.index("--scenario") + 2:]
    with pytest.raises(SystemExit):
        stage.main(bogus)
    cfg = tmp_path / "mine.yaml"
    cfg.write_text(yaml.safe_dump({"hparam_overrides": {"lower_bound": {"batch_size": 0, "lr": "1e-4"}}}))
    with pytest.raises(SystemExit, match=r"^error: agent lower_bound \(NormalNN\): batch_size = 0 \(from config: "
                                         r"hparam_overrides.lower_bound\): must be >= 1, not 0; lr = '1e-4'"):
        stage.main(args + ["--config", str(cfg)])
    assert not (tmp_path / "out2").exists()
