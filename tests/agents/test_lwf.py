"""LwF (spec 14.5): both losses by hand, the growing head, the frozen teacher, the optimiser, quirk 32's backbone
hand-over, checkpoint/resume and end-to-end runs on the own network (32 px) and the study's SqueezeNet."""
from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from augmem.agents.external import Renormalize
from augmem.agents.lwf import GrowingHead, LwF, lwf_kd_loss, sigmoid_distillation_loss
from augmem.io import InputError
from augmem.models.resnet_cifar import N_PARAMS
from augmem.train.fidelity import train_switches
from augmem.train.loop import run_stream
from augmem.train.seeding import seed_everything

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def sig(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


def bce_logit(z: float, t: float) -> float:
    """-(t log sigma(z) + (1 - t) log(1 - sigma(z)))."""
    return -(t * math.log(sig(z)) + (1 - t) * math.log(1 - sig(z)))


# ------------------------------------------------------------------------------------------------------ losses
def test_sigmoid_distillation_loss_by_hand():
    z = torch.tensor([[1.0, -2.0, 0.5], [0.0, 1.5, -1.0]], dtype=torch.float64)
    y = torch.tensor([2, 1])
    # K_old = 1: column 0 gets sigmoid(teacher), columns 1, 2 the one-hot of y
    old = torch.tensor([[0.3], [-0.4]], dtype=torch.float64)
    targets = [[sig(0.3), 0.0, 1.0], [sig(-0.4), 1.0, 0.0]]
    expected = sum(bce_logit(float(z[b, j]), targets[b][j]) for b in range(2) for j in range(3)) / 6
    assert float(sigmoid_distillation_loss(z, y, old)) == pytest.approx(expected, rel=1e-12)
    # K_old = 2: columns 0, 1 from the teacher, only column 2 one-hot
    old2 = torch.tensor([[0.3, 2.0], [-0.4, -1.0]], dtype=torch.float64)
    y2 = torch.tensor([2, 2])
    targets2 = [[sig(0.3), sig(2.0), 1.0], [sig(-0.4), sig(-1.0), 1.0]]
    expected2 = sum(bce_logit(float(z[b, j]), targets2[b][j]) for b in range(2) for j in range(3)) / 6
    assert float(sigmoid_distillation_loss(z, y2, old2)) == pytest.approx(expected2, rel=1e-12)
    # no teacher (task 0): one-hot BCE over every column
    expected0 = sum(bce_logit(float(z[b, j]), float(j == int(y[b]))) for b in range(2) for j in range(3)) / 6
    assert float(sigmoid_distillation_loss(z, y, None)) == pytest.approx(expected0, rel=1e-12)


def np_log_softmax(v: np.ndarray) -> np.ndarray:
    v = v - v.max(axis=1, keepdims=True)
    return v - np.log(np.exp(v).sum(axis=1, keepdims=True))


def test_lwf_kd_loss_by_hand():
    z = np.array([[1.0, -2.0, 0.5], [0.0, 1.5, -1.0]])
    y = np.array([2, 1])
    old = np.array([[0.3, 2.0], [-0.4, -1.0]])  # K_old = 2
    ce = -np.mean([np_log_softmax(z)[b, y[b]] for b in range(2)])
    p_old = np.exp(np_log_softmax(old / 2.0))
    kd = -np.mean((p_old * np_log_softmax(z[:, :2] / 2.0)).sum(1))
    # by hand for row 0: softmax([0.15, 1.0]) = (0.2994, 0.7006); log_softmax([0.5, -1.0]) = (-0.2014, -1.7014)
    assert p_old[0] == pytest.approx([0.29943, 0.70057], abs=1e-5)
    zt, yt, ot = (torch.tensor(z), torch.tensor(y), torch.tensor(old))
    assert float(lwf_kd_loss(zt, yt, ot, 2.0, 1.0)) == pytest.approx(ce + kd, rel=1e-12)
    assert float(lwf_kd_loss(zt, yt, ot, 2.0, 0.5)) == pytest.approx(ce + 0.5 * kd, rel=1e-12)  # lambda_o
    assert float(lwf_kd_loss(zt, yt, None)) == pytest.approx(ce, rel=1e-12)  # task 0: plain CE
    # no T^2 factor, and T matters
    t1 = -np.mean((np.exp(np_log_softmax(old)) * np_log_softmax(z[:, :2])).sum(1))
    assert float(lwf_kd_loss(zt, yt, ot, 1.0, 1.0)) == pytest.approx(ce + t1, rel=1e-12)


def test_switch_selects_the_loss():
    z = torch.tensor([[1.0, -2.0, 0.5], [0.0, 1.5, -1.0]])
    y, old = torch.tensor([2, 1]), torch.tensor([[0.3, 2.0], [-0.4, -1.0]])
    ref, cor = make("reference"), make("corrected")
    over = make("reference", switch_overrides={"lwf_sigmoid_distillation": False})
    assert torch.equal(ref.loss(z, y, old), sigmoid_distillation_loss(z, y, old))
    assert torch.equal(cor.loss(z, y, old), lwf_kd_loss(z, y, old, 2.0, 1.0))
    assert torch.equal(over.loss(z, y, old), cor.loss(z, y, old))  # the one switch alone flips it
    assert not torch.allclose(ref.loss(z, y, old), cor.loss(z, y, old))


# ------------------------------------------------------------------------------------------------------ agent
class Tiny(LwF):
    """LwF with a small own front (8 x 8 inputs -> 512 features, with BatchNorm) for fast mechanics tests."""

    def build_own_network(self):
        front = nn.Sequential(Renormalize(), nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                              nn.Flatten(), nn.Linear(4 * 4 * 4, 512))
        return nn.Sequential(front, GrowingHead(512, 0))


def make(fidelity="reference", cls=Tiny, seed=0, switch_overrides=None, **hp):
    torch.manual_seed(seed)
    hp = {"batch_size": 4, "lr": 0.05, **hp}
    return cls(4, hp, train_switches(fidelity, switch_overrides))


def tasks(n_tasks=2, per_class=6, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for t in range(n_tasks):
        y = torch.tensor([2 * t + (i % 2) for i in range(2 * per_class)])
        x = torch.randn(len(y), 3, size, size, generator=g) + y.view(-1, 1, 1, 1).float()
        out.append(TensorDataset(x, y))
    return out


def learn(agent, ds, task, n_epoch=1):
    agent.set_active(list(range(2 * task + 2)))
    for e in range(n_epoch):
        agent.learn_stream(DataLoader(ds, batch_size=5), task, e, e == n_epoch - 1)


def test_hparams_defaults_and_optimizer_check():
    a = make()
    hp = LwF.check_hparams({})
    assert (hp["lr"], hp["momentum"], hp["weight_decay"], hp["batch_size"]) == (0.2, 0.9, 1e-5, 128)
    assert (hp["n_epoch_first_task"], hp["n_epoch"], hp["temperature"], hp["distill_weight"]) == (10, 1, 2.0, 1.0)
    assert hp["network"] == "own" and a.name == LwF.name == LwF.__name__ == "LwF"
    with pytest.raises(InputError, match="Nesterov SGD"):
        LwF.check_hparams({"optimizer": "Adam"})
    with pytest.raises(InputError, match="momentum"):
        LwF.check_hparams({"momentum": 0.0})  # Nesterov needs momentum


def test_sgd_settings_and_recreated_per_task():
    a = make()
    ds = tasks()
    learn(a, ds[0], 0, n_epoch=1)
    a.learn_stream(DataLoader(ds[0], batch_size=5), 0, 1, False)  # a second epoch of task 0 ...
    opt0 = a.optimizer
    (group,) = opt0.param_groups
    assert isinstance(opt0, torch.optim.SGD)
    assert group["nesterov"] is True and group["momentum"] == 0.9 and group["weight_decay"] == 1e-5
    assert group["lr"] == 0.05 and group["dampening"] == 0
    assert len(opt0.state) > 0  # ... kept its momentum buffers
    a.learn_stream(DataLoader(ds[0], batch_size=5), 0, 2, True)
    assert a.optimizer is opt0  # same task: same optimiser
    learn(a, ds[1], 1)
    assert a.optimizer is not opt0  # a new task: a new optimiser over the grown head
    head_params = {id(a.model[1].fc.weight), id(a.model[1].fc.bias)}
    assert head_params <= {id(p) for p in a.optimizer.param_groups[0]["params"]}
    assert a.model[1].fc.weight.shape == (4, 512)


def test_head_growth_copies_old_rows_and_inits_new_ones_from_the_global_rng():
    a = make()
    before = torch.get_rng_state()
    assert a.model[1].out_features == 0
    a.set_active([0, 1])
    torch.set_rng_state(before)
    ref2 = nn.Linear(512, 2)  # PyTorch's default init, same global RNG draws
    assert torch.equal(a.model[1].fc.weight, ref2.weight) and torch.equal(a.model[1].fc.bias, ref2.bias)
    learn(a, tasks()[0], 0)
    w_old, b_old = a.model[1].fc.weight.detach().clone(), a.model[1].fc.bias.detach().clone()
    state = torch.get_rng_state()
    a.set_active([0, 1, 2, 3])
    torch.set_rng_state(state)
    ref4 = nn.Linear(512, 4)
    w, b = a.model[1].fc.weight, a.model[1].fc.bias
    assert w.shape == (4, 512) and b.shape == (4,)
    assert torch.equal(w[:2], w_old) and torch.equal(b[:2], b_old)  # old rows copied exactly
    assert torch.equal(w[2:], ref4.weight[2:]) and torch.equal(b[2:], ref4.bias[2:])  # new rows: default init
    a.set_active([0, 1, 2, 3])  # same classes again: no growth, no draw
    assert torch.equal(a.model[1].fc.weight, w)
    with pytest.raises(ValueError, match="0..K-1"):
        make().set_active([1, 2])


def test_teacher_frozen_in_eval_mode_and_used_for_the_old_columns():
    a = make()
    ds = tasks()
    assert a.teacher is None and a.memory_bytes() == {"teacher_network": 0}
    seen = []
    orig_loss = a.loss
    a.loss = lambda z, y, old: (seen.append((z.shape, None if old is None else old.clone())), orig_loss(z, y, old))[1]
    learn(a, ds[0], 0)
    assert all(old is None for _, old in seen)  # task 0: no teacher
    t = a.teacher
    assert t is not None and a.teacher_classes == [0, 1]
    assert not t.training and not any(m.training for m in t.modules())
    assert not any(p.requires_grad for p in t.parameters())
    snap = copy.deepcopy(t.state_dict())
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, snap[k])  # a copy of the network after task 0
    x = ds[1].tensors[0][:5]
    a.model.eval()
    with torch.no_grad():
        assert torch.equal(t(x), a.model(x))  # eval mode: BatchNorm running statistics
    seen.clear()
    calls = []
    orig_tl = a.teacher_logits
    a.teacher_logits = lambda xb: (calls.append(xb.clone()), orig_tl(xb))[1]
    a.set_active([0, 1, 2, 3])
    a.learn_stream(DataLoader(ds[1], batch_size=5), 1, 0, False)
    assert a.teacher is t  # the same teacher throughout the task ...
    assert all(torch.equal(v, snap[k]) for k, v in t.state_dict().items())  # ... never trained
    assert [s for s, _ in seen] == [(4, 4)] * 3  # 12 images, batch 4: z over the K = 4 seen classes
    for (_, old), xb in zip(seen, calls):
        with torch.no_grad():
            assert torch.equal(old, t(xb)[:, :2])  # K_old = 2 teacher columns on the same batch
    a.learn_stream(DataLoader(ds[1], batch_size=5), 1, 1, True)
    assert a.teacher is not t and a.teacher_classes == [0, 1, 2, 3]  # after the task: the new teacher


def test_keep_best_restore_refreshes_the_teacher_of_the_ending_task():
    a = make()
    ds = tasks()
    a.set_active([0, 1])
    a.learn_stream(DataLoader(ds[0], batch_size=5), 0, 0, False)
    best = a.snapshot_weights()
    a.learn_stream(DataLoader(ds[0], batch_size=5), 0, 1, True)
    a.restore_weights(best)
    assert all(torch.equal(v, best[k]) for k, v in a.teacher.state_dict().items())


def test_drop_last_switch_counts_images():
    for fid, n in (("reference", 12), ("corrected", 14)):  # 14 images, batch 4: the last 2 dropped in reference
        a = make(fid)
        sizes = []
        orig = a.loss
        a.loss = lambda z, y, old, _o=orig: (sizes.append(len(y)), _o(z, y, old))[1]
        ds = TensorDataset(torch.randn(14, 3, 8, 8), torch.tensor([0, 1] * 7))
        learn(a, ds, 0)
        assert sum(sizes) == n


def test_study_network_keeps_c_columns_and_trains_only_the_active_ones():
    hp = {"network": "study", "image_size": 32, "weights": "none", "weight_decay": 0.0}
    a = make("corrected", cls=LwF, **hp)
    head = a.head
    assert isinstance(head, nn.Conv2d) and head.out_channels == 4
    before = head.weight.detach().clone()
    ds = TensorDataset(torch.randn(8, 3, 32, 32), torch.tensor([0, 1] * 4))
    learn(a, ds, 0)
    assert a.forward(ds.tensors[0][:2]).shape == (2, 4)  # all C outputs kept
    assert torch.equal(head.weight[2:], before[2:])  # unseen columns get no gradient
    assert not torch.equal(head.weight[:2], before[:2])
    assert set(a.predict(ds.tensors[0])["acc"].tolist()) <= {0, 1}
    assert "1.1.1.weight" not in a.backbone_state() and "0.0.weight" in a.backbone_state()


# ------------------------------------------------------------------------------------------------------ quirk 32
def test_backbone_state_reproduces_the_features_and_leaves_the_head_fresh():
    a = make(cls=LwF, batch_size=4)
    ds = TensorDataset(torch.randn(8, 3, 32, 32), torch.tensor([0, 1] * 4))
    learn(a, ds, 0)
    state = a.backbone_state()
    assert not any(k.startswith("1.") for k in state)  # no head
    assert sum(v.numel() for k, v in state.items() if "running" not in k and "num_batches" not in k) == N_PARAMS
    b = make(cls=LwF, seed=1, batch_size=4)
    b.set_active([0, 1])
    head = copy.deepcopy(b.model[1].state_dict())
    x = torch.randn(3, 3, 32, 32)
    a.model.eval()
    b.model.eval()
    with torch.no_grad():
        assert not torch.equal(a.model[0](x), b.model[0](x))
        b.load_backbone_state(state)
        assert torch.equal(a.model[0](x), b.model[0](x))  # weights and BatchNorm statistics carried over
    assert all(torch.equal(v, head[k]) for k, v in b.model[1].state_dict().items())  # head untouched
    assert b.teacher is None
    # as the train stage does it: right after construction, before the first task (empty head)
    c = make(cls=LwF, seed=2, batch_size=4)
    c.load_backbone_state(state)
    assert c.model[1].out_features == 0
    c.model.eval()
    with torch.no_grad():
        assert torch.equal(a.model[0](x), c.model[0](x))
    c.set_active([0, 1])
    assert c.model[1].out_features == 2
    state["0.1.conv1.weight"].add_(1.0)  # a clone: the source agent is not touched
    assert not torch.equal(a.model[0][1].conv1.weight, state["0.1.conv1.weight"])
    with pytest.raises(ValueError, match="does not fit"):
        b.load_backbone_state({"nonsense": torch.zeros(1)})


def test_memory_bytes_is_the_teacher_copy():
    a = make(cls=LwF, batch_size=4)
    learn(a, TensorDataset(torch.randn(8, 3, 32, 32), torch.tensor([0, 1] * 4)), 0)
    # fp32 parameters (ResNet + head 2 x 512 + 2) and BatchNorm statistics, 20 int64 batch counters
    assert a.memory_bytes() == {"teacher_network": 4 * (N_PARAMS + 2 * 512 + 2 + 9_600) + 8 * 20}


# ------------------------------------------------------------------------------------------------------ loop
META = {"dataset": "tiny", "kind": "tiny", "scenario": "class_iid", "agent": "lwf", "run": 0}
HP = {"lr": 0.05, "batch_size": 8, "n_epoch": 1, "n_epoch_first_task": 2, "n_workers": 0, "weights": "none"}


class Small32(LwF):
    """LwF with a small own front for 32 x 32 inputs (the loop's ``network: own`` size): fast loop tests."""

    def build_own_network(self):
        front = nn.Sequential(Renormalize(), nn.Conv2d(3, 4, 3, stride=4, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                              nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 512))
        return nn.Sequential(front, GrowingHead(512, 0))


def run_job(files, out, fidelity="reference", seed=0, cls=Small32, **kw):
    image_root, run_dir = files
    hp = {**HP, **kw.pop("hp", {})}
    switches = train_switches(fidelity)
    seed_everything(seed)
    agent = cls(4, hp, switches)
    res = run_stream(agent, run_dir, image_root, out, hp=agent.hp, switches=switches,
                     meta={**META, "fidelity": fidelity, "seed": seed}, seed=seed, log=lambda m: None, **kw)
    return res, agent


def metrics(out):
    m = json.loads((out / "metrics.json").read_text())
    return {k: v for k, v in m.items() if k != "timing"}


def test_run_stream_own_resnet(tiny_files, tmp_path):
    m, agent = run_job(tiny_files, tmp_path / "own", cls=LwF, hp={"n_epoch_first_task": 1})
    assert m["meta"]["image_size"] == 32 and m["hparams"]["network"] == "own"
    assert [t["active"] for t in m["tasks"]] == [[0, 1], [0, 1, 2, 3]]
    assert all(v is not None and 0 <= v <= 100 for v in m["test_all"]["acc"])
    assert m["memory_bytes"] == {"teacher_network": 4 * (N_PARAMS + 4 * 512 + 4 + 9_600) + 8 * 20}
    assert agent.model[1].out_features == 4 and agent.teacher_classes == [0, 1, 2, 3]


def test_run_stream_fidelities_differ_in_the_loss(tiny_files, tmp_path):
    res, losses = {}, {}
    for fid in ("reference", "corrected"):
        res[fid], agent = run_job(tiny_files, tmp_path / fid, fid)
        assert [t["n_epoch"] for t in res[fid]["tasks"]] == [2, 1]
        assert all(v is not None for v in res[fid]["test_all"]["acc"])
        losses[fid] = agent.last_loss
    assert res["reference"]["switches"]["lwf_sigmoid_distillation"] is True
    assert res["corrected"]["switches"]["lwf_sigmoid_distillation"] is False
    assert losses["reference"] != losses["corrected"]


def test_checkpoint_resume_identical(tiny_files, tmp_path):
    _, full = run_job(tiny_files, tmp_path / "full")
    out = tmp_path / "resumed"
    assert run_job(tiny_files, out, stop_after_task=0)[0] is None
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["agent"]["extra"]["teacher"] is not None and state["agent"]["extra"]["teacher_classes"] == [0, 1]
    _, resumed = run_job(tiny_files, out)
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    for k, v in full.teacher.state_dict().items():
        assert torch.equal(v, resumed.teacher.state_dict()[k]), k
    assert metrics(out) == metrics(tmp_path / "full")


def test_run_stream_study_network(tiny_files, tmp_path):
    m, agent = run_job(tiny_files, tmp_path / "study", "corrected", cls=LwF,
                       hp={"network": "study", "image_size": 32, "lr": 0.01})
    assert m["meta"]["image_size"] == 32 and m["hparams"]["network"] == "study"
    assert agent.forward(torch.zeros(1, 3, 32, 32)).shape == (1, 4)
    assert len(m["test_all"]["acc"]) == 2 and all(v is not None for v in m["test_all"]["acc"])
    assert 0 < m["memory_bytes"]["teacher_network"] < 4 * 1_000_000  # SqueezeNet 1.0 with 4 classes: ~3 MB
