"""Training independent of evaluation and of the machine: randomness by owner (seeding.py), ``eval_every``, the
determinism report, the divergence stop, and a failing rerun that leaves a finished run's outputs in place."""
from __future__ import annotations

import json
import random
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import augmem.train.loop as loop
from augmem.agents import get_agent_class
from augmem.agents.icarl import ICaRL
from augmem.agents.naive_rehearsal import NaiveRehearsal
from augmem.agents.normal_nn import NormalNN
from augmem.io import InputError
from augmem.train.loop import TrainingDiverged
from augmem.train.seeding import DEFAULT_REPLAY_SEED, OwnedRandom, derive_seed, rng_state, seed_everything, set_rng_state

from .test_loop import _oracle, read_metrics, run_job, without_timing

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MULTI = {"n_epoch": 3, "n_epoch_first_task": None}  # several epochs per task


def recording(cls):
    """``cls`` whose instances keep the network weights after every epoch: ``trace`` = [(task, epoch, weights)]."""

    class Recording(cls):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.trace = []

        def learn_stream(self, loader, task, epoch, last_epoch):
            super().learn_stream(loader, task, epoch, last_epoch)
            self.trace.append((task, epoch, {k: v.detach().clone() for k, v in self.model.state_dict().items()}))

    Recording.__name__ = Recording.name = cls.name
    return Recording


def assert_same_training(a, b):
    assert [(t, e) for t, e, _ in a.trace] == [(t, e) for t, e, _ in b.trace]
    for (t, e, wa), (_, _, wb) in zip(a.trace, b.trace):
        for k in wa:
            assert torch.equal(wa[k], wb[k]), (t, e, k)
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k]), k


# (class, fidelity): dropout only; reservoir randperm + shuffled replay loader; shuffled replay + class means in eval
AGENTS = [(NormalNN, "reference"), (NaiveRehearsal, "corrected"), (ICaRL, "reference")]
AugMem = get_agent_class("AugMem")
MEMORY = {NaiveRehearsal: {"memory_size": 12}, ICaRL: {"memory_size": 12},
          AugMem: {"memory_Nslots": 10, "memory_Nfeat": 8, "memory_size": 20, "freeze_feature_extract": True,
                   "allow_small_map": True}}


def multi(cls, **extra):
    """Several epochs per task (and a memory for the agents that keep one)."""
    return {**MULTI, **MEMORY.get(cls, {}), **extra}
AGENT_IDS = ["NormalNN", "NaiveRehearsal-corrected", "iCaRL"]


# ------------------------------------------------------------------------------------------------ seeding
def test_derive_seed_is_stable_and_distinct():
    # pinned: a change of the hash would silently change every job's loader, replay and viz draws
    assert derive_seed(0, "replay") == DEFAULT_REPLAY_SEED == 1538677729812498949
    assert derive_seed(12, "replay") == 8406981594159636496
    seeds = {derive_seed(s, o) for s in range(3) for o in ("train", "eval", "replay", "viz")}
    assert len(seeds) == 12 and all(0 <= s < 2**63 for s in seeds)


def test_owned_random_and_generators_round_trip_weights_only(tmp_path):
    rr = OwnedRandom(5)
    rr.python.random(), torch.rand(3, generator=rr.torch)
    g = torch.Generator().manual_seed(9)
    torch.rand(2, generator=g)
    seed_everything(1)
    torch.save({"rr": rr.state(), "rng": rng_state({"eval": g})}, tmp_path / "s.pt")
    want = (rr.python.random(), torch.rand(3, generator=rr.torch), torch.rand(2, generator=g), random.random(),
            torch.rand(1))
    state = torch.load(tmp_path / "s.pt", weights_only=True)
    rr2, g2 = OwnedRandom(), torch.Generator()
    rr2.load_state(state["rr"])
    set_rng_state(state["rng"], {"eval": g2})
    got = (rr2.python.random(), torch.rand(3, generator=rr2.torch), torch.rand(2, generator=g2), random.random(),
           torch.rand(1))
    assert got[0] == want[0] and got[3] == want[3] and rr2.seed == 5
    assert all(torch.equal(x, y) for x, y in zip(got[1:3] + got[4:], want[1:3] + want[4:]))


# ------------------------------------------------------------------------------------------------ independence
@pytest.mark.parametrize("cls,fidelity", AGENTS + [(AugMem, "reference")], ids=AGENT_IDS + ["AugMem"])
def test_eval_every_task_trains_the_same_as_every_epoch(tiny_files, tmp_path, cls, fidelity):
    rec = recording(cls)
    _, a = run_job(rec, tiny_files, tmp_path / "epoch", hp=multi(cls), fidelity=fidelity)
    _, b = run_job(rec, tiny_files, tmp_path / "task", hp=multi(cls, eval_every="task"), fidelity=fidelity)
    assert_same_training(a, b)
    ma, mb = read_metrics(tmp_path / "epoch"), read_metrics(tmp_path / "task")
    assert [t["evaluated_epochs"] for t in ma["tasks"]] == [[0, 1, 2], [0, 1, 2]]
    assert [t["evaluated_epochs"] for t in mb["tasks"]] == [[2], [2]]
    assert [t["selected_epoch"] for t in mb["tasks"]] == [2, 2]
    for path in ma["paths"]:
        assert mb["epochs"]["test_all"][path] == [[v[-1]] for v in ma["epochs"]["test_all"][path]]
    for key in ("test_all", "test_first", "acc_matrix"):
        assert ma[key] == mb[key], key


@pytest.mark.parametrize("cls,fidelity", AGENTS[:2], ids=AGENT_IDS[:2])
def test_loader_workers_and_persistent_workers_train_the_same(tiny_files, tmp_path, cls, fidelity, monkeypatch):
    """n_workers 0 vs 2, the latter with persistent workers as on CUDA (one iterator per task instead of one per
    epoch): the same weights after every epoch."""
    rec = recording(cls)
    _, a = run_job(rec, tiny_files, tmp_path / "w0", hp=multi(cls), fidelity=fidelity)
    make = loop.make_loader
    monkeypatch.setattr(loop, "make_loader", lambda *args, **kw: make(*args, **{**kw, "persistent": True}))
    _, b = run_job(rec, tiny_files, tmp_path / "w2", hp=multi(cls, n_workers=2), fidelity=fidelity)
    assert_same_training(a, b)
    assert without_timing(read_metrics(tmp_path / "w0"))["acc_matrix"] == read_metrics(tmp_path / "w2")["acc_matrix"]


@pytest.mark.parametrize("cls,fidelity", AGENTS[:2], ids=AGENT_IDS[:2])
def test_visualize_on_off_trains_the_same(tiny_files, tmp_path, cls, fidelity):
    rec = recording(cls)
    _, a = run_job(rec, tiny_files, tmp_path / "plain", hp=multi(cls), fidelity=fidelity)
    _, b = run_job(rec, tiny_files, tmp_path / "viz", hp=multi(cls, visualize=True, viz_per_class=2),
                   fidelity=fidelity)
    assert_same_training(a, b)
    assert "task1_logits" in np.load(tmp_path / "viz" / "viz.npz").files


class PicksEpoch1(NormalNN):
    """NormalNN (dropout) whose evaluation is 100 % after epoch 1 of task 0 and 0 % after its other epochs, so that
    keep-best on the test set and on the validation split select the same epoch."""

    oracle: dict[bytes, int] = {}

    def learn_stream(self, loader, task, epoch, last_epoch):
        super().learn_stream(loader, task, epoch, last_epoch)
        self.at = (task, epoch)

    @torch.no_grad()
    def predict(self, x):
        if self.at[0] != 0:
            return super().predict(x)
        y = torch.tensor([self.oracle[xi.numpy().tobytes()] for xi in x])
        if self.at[1] == 1:
            return {"acc": y}
        return {"acc": torch.tensor([self.active[(self.active.index(int(v)) + 1) % len(self.active)] for v in y])}


def test_validation_split_on_off_trains_the_same(tiny_files, tmp_path):
    PicksEpoch1.oracle = _oracle(tiny_files)
    rec = recording(PicksEpoch1)
    hp = {"n_epoch_first_task": 3, "n_epoch": 2, "keep_best_task1_net": True}
    _, a = run_job(rec, tiny_files, tmp_path / "test", hp=hp)
    _, b = run_job(rec, tiny_files, tmp_path / "val", hp={**hp, "switch_overrides": {"keep_best_on_test": False}})
    ma, mb = read_metrics(tmp_path / "test"), read_metrics(tmp_path / "val")
    assert ma["val_all"] is None and mb["val_all"] is not None and mb["n_test"] == 18
    assert ma["tasks"][0]["selected_epoch"] == mb["tasks"][0]["selected_epoch"] == 1
    assert_same_training(a, b)


def test_eval_every_task_still_evaluates_keep_best_tasks(tiny_files, tmp_path):
    hp = {"n_epoch_first_task": 3, "n_epoch": 2, "keep_best_task1_net": True, "eval_every": "task"}
    run_job(NormalNN, tiny_files, tmp_path / "out", hp=hp)
    m = read_metrics(tmp_path / "out")
    assert [t["evaluated_epochs"] for t in m["tasks"]] == [[0, 1, 2], [1]]
    assert [len(v) for v in m["epochs"]["test_all"]["acc"]] == [3, 1]
    assert m["hparams"]["eval_every"] == "task"
    with pytest.raises(InputError, match="eval_every must be one of"):
        loop.run_stream(NormalNN(4, {"weights": "none"}, m_switches()), tiny_files[1], tiny_files[0],
                        tmp_path / "bad", hp={"eval_every": "never"}, switches=m_switches(), meta={}, seed=0,
                        log=lambda m: None)


def m_switches(fidelity="reference"):
    from augmem.train.fidelity import train_switches

    return train_switches(fidelity)


@pytest.mark.parametrize("cls,fidelity", AGENTS[1:], ids=AGENT_IDS[1:])
def test_replay_agents_resume_exactly(tiny_files, tmp_path, cls, fidelity):
    """The agent's replay randomness travels in the checkpoint: kill after task 0, resume, same weights."""
    _, full = run_job(cls, tiny_files, tmp_path / "full", hp=multi(cls), fidelity=fidelity)
    out = tmp_path / "resumed"
    run_job(cls, tiny_files, out, hp=multi(cls), fidelity=fidelity, stop_after_task=0)
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert set(state["rng"]["generators"]) == {"train", "eval", "viz"} and "replay_rng" in state["agent"]["extra"]
    _, resumed = run_job(cls, tiny_files, out, hp=multi(cls), fidelity=fidelity)
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    assert without_timing(read_metrics(out)) == without_timing(read_metrics(tmp_path / "full"))


# ------------------------------------------------------------------------------------------------ determinism report
NONDET = ("scatter_add_cuda_kernel does not have a deterministic implementation, but you set "
          "'torch.use_deterministic_algorithms(True, warn_only=True)'. You can file an issue at "
          "https://github.com/pytorch/pytorch/issues to help us prioritize adding deterministic support for this "
          "operation.")


class WarnsNondeterministic(NormalNN):
    """Warns as torch's warn_only does, in every step of task 0 (as an op called per batch would)."""

    def update_model(self, x, y):
        if getattr(self, "task_now", 0) == 0:
            warnings.warn(NONDET, UserWarning)
        return super().update_model(x, y)

    def learn_stream(self, loader, task, epoch, last_epoch):
        self.task_now = task
        super().learn_stream(loader, task, epoch, last_epoch)


def test_nondeterministic_op_is_reported_and_survives_resume(tiny_files, tmp_path):
    logs = []
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match="does not have a deterministic implementation"):  # still handed on
        run_job(WarnsNondeterministic, tiny_files, out, stop_after_task=0, logs=logs)
    assert sum("does not have a deterministic implementation" in line for line in logs) == 1  # logged once
    assert any(line.startswith("warning: UserWarning: scatter_add_cuda_kernel does not") for line in logs)
    run_job(WarnsNondeterministic, tiny_files, out)  # resumed in task 1, which warns nothing
    m = read_metrics(out)
    assert m["meta"]["deterministic"] is False and m["meta"]["nondeterministic_ops"] == ["scatter_add_cuda_kernel"]
    assert m["meta"]["device"] == "cpu"


def test_deterministic_false_when_deterministic_algorithms_are_off(tiny_files, tmp_path):
    torch.use_deterministic_algorithms(False)
    try:
        image_root, run_dir = tiny_files
        sw = m_switches()
        agent = NormalNN(4, {"weights": "none", "image_size": 32}, sw)
        m = loop.run_stream(agent, run_dir, image_root, tmp_path / "o", hp={"n_workers": 0, "image_size": 32,
                                                                           "batch_size": 8},
                            switches=sw, meta={}, seed=0, log=lambda s: None)
    finally:
        seed_everything(0)  # deterministic algorithms back on, as every other test expects
    assert m["meta"]["deterministic"] is False and m["meta"]["nondeterministic_ops"] == []


# ------------------------------------------------------------------------------------------------ divergence
class TinyLinear(NormalNN):
    """A linear classifier on 2x2-pooled pixels (no dropout): with a huge lr its weights overflow in a few steps."""

    def build_model(self):
        return nn.Sequential(nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten()), nn.Linear(12, self.n_class))


HUGE_LR = {"lr": 1e38, "n_epoch_first_task": None, "n_epoch": 2}


def test_reference_trains_on_after_divergence(tiny_files, tmp_path):
    logs = []
    metrics, agent = run_job(TinyLinear, tiny_files, tmp_path / "out", hp=HUGE_LR, logs=logs)
    assert not all(torch.isfinite(p).all() for p in agent.model.parameters())
    m = read_metrics(tmp_path / "out")
    assert m["switches"]["continue_after_divergence"] is True
    assert m["meta"]["diverged"]["task"] == 1 and m["meta"]["diverged"]["epoch"] == 1
    assert "non-finite weights" in m["meta"]["diverged"]["what"]
    assert len(m["test_all"]["acc"]) == 2  # accuracies of the broken network, as the original reports them
    assert sum("diverged in task 1/2, epoch 1/2" in line for line in logs) == 1


def test_corrected_stops_when_diverged(tiny_files, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(TrainingDiverged, match=r"^agent NormalNN diverged in task 1/2, epoch 1/2: non-finite "
                                               r"weights in \d tensor\(s\): 1\.(weight|bias)"):
        run_job(TinyLinear, tiny_files, out, hp=HUGE_LR, fidelity="corrected")
    assert not (out / "metrics.json").exists()


def test_corrected_stops_on_a_non_finite_loss(tiny_files, tmp_path):
    class NanLoss(TinyLinear):
        def learn_stream(self, loader, task, epoch, last_epoch):
            super().learn_stream(loader, task, epoch, last_epoch)
            self.last_loss = float("nan") if task == 1 else 0.5

    with pytest.raises(TrainingDiverged, match=r"in task 2/2, epoch 1/1: loss nan"):
        run_job(NanLoss, tiny_files, tmp_path / "out", hp={"n_epoch_first_task": None}, fidelity="corrected")
    run_job(NanLoss, tiny_files, tmp_path / "ref", hp={"n_epoch_first_task": None})
    assert read_metrics(tmp_path / "ref")["meta"]["diverged"] == {"task": 2, "epoch": 1, "what": "loss nan"}


# ------------------------------------------------------------------------------------------------ failing rerun
def test_failing_rerun_leaves_finished_outputs_in_place(tiny_files, tmp_path):
    out = tmp_path / "out"
    hp = {"visualize": True, "viz_per_class": 2}
    run_job(NormalNN, tiny_files, out, hp=hp)
    before = {name: (out / name).read_bytes() for name in ("metrics.json", "viz.npz")}

    class FailsInTask1(NormalNN):
        def learn_stream(self, loader, task, epoch, last_epoch):
            if task == 1:
                raise RuntimeError("boom in task 1")
            super().learn_stream(loader, task, epoch, last_epoch)

    with pytest.raises(RuntimeError, match="boom in task 1"):
        run_job(FailsInTask1, tiny_files, out, hp=hp)
    assert {name: (out / name).read_bytes() for name in before} == before
    assert json.loads(before["metrics.json"])["meta"]["impl"] == "NormalNN"
