"""CoPE (spec 14.4): the PPP loss by hand, the prototype momentum update, class-balanced replay sampling, the per-class
reservoir with dyn_mem, the Continuum-like stream, nearest-prototype prediction, memory, notes, checkpoint/resume and
short end-to-end runs on the own MLP (32 px) and the study's network."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from augmem.agents.cope import CoPE, ppp_loss
from augmem.agents.external import Renormalize
from augmem.data.cache_plan import initial_weights, input_image_size
from augmem.io import InputError
from augmem.train.fidelity import train_switches
from .jobs import metrics_without_timing, run_agent_job

pytestmark = pytest.mark.usefixtures("one_torch_thread")

D = 3  # inputs of the tiny linear model


class Tiny(CoPE):
    """CoPE on Flatten + Linear(D, d)."""

    def build_own_network(self):
        return nn.Sequential(nn.Flatten(), nn.Linear(D, self.embedding_dim))


def tiny(n_class=4, fidelity="reference", **hp):
    torch.manual_seed(0)
    return Tiny(n_class, {"batch_size": 4, "n_memories": 3, **hp}, train_switches(fidelity))


def real(n_class=4, fidelity="reference", **hp):
    torch.manual_seed(0)
    return CoPE(n_class, hp, train_switches(fidelity))


def marked(values, labels):
    """Inputs (k, D) whose first coordinate is a marker value (to recognise them in the memory)."""
    v = torch.as_tensor(values, dtype=torch.float32)
    return torch.stack([v, torch.full_like(v, 0.5), -v / 10], 1), torch.as_tensor(labels, dtype=torch.long)


# ------------------------------------------------------------------------------------------------ hyperparameters
def test_declared_defaults_and_networks():
    hp = CoPE.check_hparams({})
    assert (hp["batch_size"], hp["lr"], hp["momentum"], hp["weight_decay"], hp["n_epoch_first_task"],
            hp["n_epoch"], hp["n_iter"], hp["p_momentum"], hp["loss_T"], hp["dyn_mem"], hp["embedding_size"],
            hp["n_memories"], hp["own_backbone"], hp["network"]) == \
        (10, 1e-3, 0.0, 0.0, 10, 1, 1, 0.99, 1.0, True, None, 100, "mlp", "own")
    with pytest.raises(InputError, match="own_backbone"):
        CoPE.check_hparams({"own_backbone": "squeezenet"})
    with pytest.raises(InputError, match="p_momentum"):
        CoPE.check_hparams({"p_momentum": 1.5})
    plan = {"image_size": 64, "weights": "data/weights/demo.pth"}  # own: 32 px, random init; study: the job's
    assert input_image_size("CoPE", dict(plan, network="own")) == 32
    assert initial_weights("CoPE", dict(plan, network="own")) == "none"
    assert input_image_size("CoPE", dict(plan, network="study")) == 64
    assert initial_weights("CoPE", dict(plan, network="study")) == "data/weights/demo.pth"
    a = real()
    assert isinstance(a.optimizer, torch.optim.SGD)
    assert (a.optimizer.param_groups[0]["momentum"], a.optimizer.param_groups[0]["weight_decay"]) == (0.0, 0.0)
    assert [m.out_features for m in a.model.modules() if isinstance(m, nn.Linear)] == [100, 100, 4]
    assert isinstance(a.model[0][0], Renormalize) and a.d == 4
    b = real(own_backbone="resnet", embedding_size=7)
    assert isinstance(b.model[0][0], Renormalize)
    assert b.model[1].in_features == 160 and b.model[1].out_features == 7 and b.d == 7
    c = real(fidelity="corrected", network="study", image_size=32, weights="none", embedding_size=5)
    assert not c.own_network and not any(isinstance(m, Renormalize) for m in c.model.modules())
    c.model.eval()
    with torch.no_grad():
        f = c.embed(torch.randn(2, 3, 32, 32))
    assert f.shape == (2, 5)


def test_embedding_is_l2_normalised():
    a = real()
    with torch.no_grad():
        f = a.embed(torch.randn(5, 3, 32, 32))
    assert torch.allclose(f.norm(dim=1), torch.ones(5), atol=1e-6)


# ------------------------------------------------------------------------------------------------ the PPP loss
def unit(*angles):
    return np.stack([[math.cos(t), math.sin(t)] for t in angles])


def ppp_by_hand(f, y, P, plabels, T=1.0):
    """The PPP loss straight from spec 14.4 step 4 (loops, numpy)."""
    total = 0.0
    classes = sorted(set(y.tolist()))
    for c in classes:
        pc = P[plabels.index(c)]
        others = [P[k] for k, lab in enumerate(plabels) if lab != c]

        def q(u, x):
            e = math.exp(u @ x / T)
            return e / (e + sum(math.exp(p @ x / T) for p in others))

        Bc = [i for i in range(len(y)) if y[i] == c]
        Bk = [j for j in range(len(y)) if y[j] != c]
        for i in Bc:
            us = [f[m] for m in Bc if m != i] + [pc]
            total -= math.log(sum(q(u, f[i]) for u in us) / len(Bc))
        if len(classes) > 1:
            for j in Bk:
                for i in Bc:
                    total -= math.log(1 - 0.5 * (q(f[i], f[j]) + q(pc, f[j])))
    return total / len(y)


def test_ppp_loss_two_classes_by_hand():
    f = unit(0.1, 0.4, 1.9, 2.3)  # 2 + 2 unit embeddings in 2-D
    y = np.array([0, 0, 1, 1])
    P = unit(0.2, 2.0)
    want = ppp_by_hand(f, y, P, [0, 1])
    # the same numbers computed by hand for class 0, sample 0 (attractor) and pair (x_0, x_2) (repellor)
    e = lambda u, x: math.exp(u @ x)  # noqa: E731
    q01 = e(f[1], f[0]) / (e(f[1], f[0]) + e(P[1], f[0]))
    qp0 = e(P[0], f[0]) / (e(P[0], f[0]) + e(P[1], f[0]))
    assert ppp_by_hand(f[:1], y[:1], P, [0, 1]) == pytest.approx(-math.log(qp0))
    assert -math.log((q01 + qp0) / 2) > 0
    got = ppp_loss(torch.tensor(f, dtype=torch.float32), torch.tensor(y), torch.tensor(P, dtype=torch.float32),
                   [0, 1])
    assert float(got) == pytest.approx(want, rel=1e-5)
    # a third prototype (class 2, not in the batch) joins every denominator; prototypes may be in any row order
    P3 = np.concatenate([unit(2.0, -1.0), P[:1]])
    got3 = ppp_loss(torch.tensor(f, dtype=torch.float32), torch.tensor(y), torch.tensor(P3, dtype=torch.float32),
                    [1, 2, 0])
    assert float(got3) == pytest.approx(ppp_by_hand(f, y, P3, [1, 2, 0]), rel=1e-5)
    # temperature
    got_t = ppp_loss(torch.tensor(f, dtype=torch.float32), torch.tensor(y), torch.tensor(P, dtype=torch.float32),
                     [0, 1], T=0.5)
    assert float(got_t) == pytest.approx(ppp_by_hand(f, y, P, [0, 1], T=0.5), rel=1e-5)


def test_ppp_loss_single_class_batch_drops_the_repellor():
    f = unit(0.1, 0.4, 0.7)
    y = np.array([1, 1, 1])
    P = unit(0.2, 2.0)
    got = ppp_loss(torch.tensor(f, dtype=torch.float32), torch.tensor(y), torch.tensor(P, dtype=torch.float32), [0, 1])
    attract = 0.0
    for i in range(3):
        def q(u, x):
            return math.exp(u @ x) / (math.exp(u @ x) + math.exp(P[0] @ x))
        us = [f[m] for m in range(3) if m != i] + [P[1]]
        attract -= math.log(sum(q(u, f[i]) for u in us) / 3)
    assert float(got) == pytest.approx(attract / 3, rel=1e-5)


def test_ppp_gradients_attractor_detaches_u_repellor_does_not():
    """Attractor only (one class): x_i gets gradient only as the query; repellor: the pseudo-prototypes get one too."""
    f0 = torch.tensor(unit(0.1, 0.4), dtype=torch.float32)
    P = torch.tensor(unit(0.2, 2.0), dtype=torch.float32)
    f = f0.clone().requires_grad_(True)
    ppp_loss(f, torch.tensor([0, 0]), P, [0, 1]).backward()

    def manual(x0, x1):  # the attractor with u detached, summed over both queries
        out = 0.0
        for xi, u in ((x0, f0[1]), (x1, f0[0])):
            q = lambda v, x: torch.exp(v @ x) / (torch.exp(v @ x) + torch.exp(P[1] @ x))  # noqa: E731
            out = out - torch.log((q(u, xi) + q(P[0], xi)) / 2)
        return out / 2

    g = torch.autograd.functional.jacobian(lambda a: manual(a[0], a[1]), f0)
    assert torch.allclose(f.grad, g, atol=1e-6)
    # with a second class, the class-0 samples are pushed by the repellor terms as pseudo-prototypes as well
    f2 = torch.tensor(unit(0.1, 0.4, 1.9), dtype=torch.float32).requires_grad_(True)
    y2 = torch.tensor([0, 0, 1])
    ppp_loss(f2, y2, P, [0, 1]).backward()
    num = torch.autograd.functional.jacobian(
        lambda a: ppp_loss(a, y2, P, [0, 1]), torch.tensor(unit(0.1, 0.4, 1.9), dtype=torch.float32))
    assert torch.allclose(f2.grad, num, atol=1e-6)


# ------------------------------------------------------------------------------------------------ prototypes
def test_prototype_init_and_momentum_update_by_hand():
    a = tiny(n_class=3, p_momentum=0.9, embedding_size=2)
    gen = a.generator()
    state = gen.get_state()
    a.init_new_classes(torch.tensor([2, 0, 2]), gen)
    g = torch.Generator().set_state(state)
    want0, want2 = F.normalize(torch.rand(1, 2, generator=g), dim=1), F.normalize(torch.rand(1, 2, generator=g), dim=1)
    assert a.classes == [0, 2]  # ascending label order
    assert torch.allclose(a.protos, torch.cat([want0, want2]))
    a.protos = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    a.accumulate(torch.tensor([[0.0, 1.0], [1.0, 0.0]]), torch.tensor([0, 0]))  # replayed (pre-loss)
    assert a.p_cnt.tolist() == [2, 0]
    a.update_prototypes(torch.tensor([[0.6, 0.8]]), torch.tensor([0]))  # the new sample joins
    mean = (torch.tensor([0.0, 1.0]) + torch.tensor([1.0, 0.0]) + torch.tensor([0.6, 0.8])) / 3
    want = 0.9 * torch.tensor([1.0, 0.0]) + 0.1 * mean
    assert torch.allclose(a.protos[0], want / want.norm(), atol=1e-6)
    assert torch.equal(a.protos[1], torch.tensor([0.0, 1.0]))  # no sample of class 2: unchanged
    assert a.p_cnt.tolist() == [0, 0] and torch.equal(a.p_sum, torch.zeros(2, 2))


def test_observe_single_class_takes_no_step_then_learns():
    a = tiny(n_class=4, n_memories=10, batch_size=3)
    a.set_active([0, 1])
    W = a.model[1].weight.detach().clone()
    a.observe(*marked([1, 2, 3], [0, 0, 0]))
    assert torch.equal(a.model[1].weight, W) and a.last_loss is None  # one class known: no loss
    assert a.classes == [0] and len(a.mem_x[0]) == 3
    a.observe(*marked([4, 5, 6], [1, 0, 1]))
    assert not torch.equal(a.model[1].weight, W) and math.isfinite(a.last_loss)
    assert a.classes == [0, 1] and torch.allclose(a.protos.norm(dim=1), torch.ones(2))


# ------------------------------------------------------------------------------------------------ replay sampling
def filled(sizes, shape=(D,)):
    """An agent whose class memories hold ``sizes[k]`` marked samples of class k (marker 100 k + slot)."""
    a = tiny(n_class=len(sizes), n_memories=50, embedding_size=2)
    a.init_new_classes(torch.arange(len(sizes)), a.generator())
    for k, n in enumerate(sizes):
        a.mem_x[k] = torch.zeros((n,) + shape)
        a.mem_x[k][:, 0] = 100 * k + torch.arange(n, dtype=torch.float32)
        a.mem_f[k] = torch.zeros(n, 2)
        a.mem_age[k] = torch.ones(n)
    return a


def test_replay_sampling_is_class_balanced_without_replacement():
    a = filled([1, 20])
    gen = torch.Generator().manual_seed(0)
    hits = 0
    for _ in range(2000):
        x, y, idx = a.sample_replay(5, gen)
        assert len(y) == 5
        for k in (0, 1):
            sel = y == k
            assert torch.equal(x[sel, 0], 100 * k + idx[sel].float())  # the stored items of the class
            assert len(set(idx[sel].tolist())) == int(sel.sum())  # without replacement
        assert y.tolist() == sorted(y.tolist())  # class by class, creation order
        hits += int((y == 0).sum())
    assert hits / 2000 == pytest.approx(1 - 0.5 ** 5, abs=0.015)  # class 0 is drawn unless 5 draws all miss it
    b = filled([10, 10])
    counts = torch.zeros(11)
    for _ in range(2000):
        counts[int((b.sample_replay(10, gen)[1] == 0).sum())] += 1
    binom = torch.tensor([math.comb(10, k) / 1024 for k in range(11)])
    assert torch.allclose(counts / 2000, binom, atol=0.02)  # uniform class per draw: Binomial(10, 1/2)
    c = filled([2, 1, 0])
    x, y, idx = c.sample_replay(10, gen)  # fewer stored than asked: all of them
    assert sorted(zip(y.tolist(), idx.tolist())) == [(0, 0), (0, 1), (1, 0)]


# ------------------------------------------------------------------------------------------------ memory
def test_reservoir_queue_fill_and_replacement():
    a = tiny(n_class=2, n_memories=3, dyn_mem=False, embedding_size=2)
    gen = a.generator()
    a.init_new_classes(torch.tensor([0]), gen)
    f = torch.zeros(5, 2)
    x, y = marked([1, 2], [0, 0])
    a.update_memory(x, f[:2], y, gen)
    assert a.mem_x[0][:, 0].tolist() == [1, 2] and a.seen_cnt == [2]
    x, y = marked([3, 4], [0, 0])
    a.update_memory(x, f[:2], y, gen)  # not full: append both, keep the last qi_len = 3
    assert a.mem_x[0][:, 0].tolist() == [2, 3, 4] and a.seen_cnt == [4]
    state = gen.get_state()
    x, y = marked([5, 6, 7, 8, 9], [0] * 5)
    fx = torch.arange(10.0).view(5, 2)
    a.update_memory(x, fx, y, gen)
    r = torch.randint(9, (5,), generator=torch.Generator().set_state(state)).tolist()  # seen_c = 4 + 5
    want = [2.0, 3.0, 4.0]
    for i, slot in enumerate(r):
        if slot < 3:
            want[slot] = 5.0 + i
    assert a.mem_x[0][:, 0].tolist() == want and a.seen_cnt == [9] and len(a.mem_age[0]) == 3
    for j, v in enumerate(want):  # the stored embedding follows its input
        if v >= 5:
            assert torch.equal(a.mem_f[0][j], fx[int(v) - 5])


def test_dyn_mem_capacity_and_random_subset():
    a = tiny(n_class=4, n_memories=3, embedding_size=2)  # C n_memories = 12 slots in total
    gen = a.generator()
    x, y = marked(range(8), [0] * 8)
    a.init_new_classes(y, gen)
    a.update_memory(x, torch.zeros(8, 2), y, gen)  # qi_len 3 at creation -> last 3 kept; then 12 // 1 = 12
    assert a.qi_len == 12 and sorted(a.mem_x[0][:, 0].tolist()) == [5, 6, 7]
    x, y = marked(range(10, 20), [1] * 10)
    a.init_new_classes(y, gen)
    a.update_memory(x, torch.zeros(10, 2), y, gen)  # 10 <= 12 kept; then 12 // 2 = 6: a random subset each
    assert a.qi_len == 6 and len(a.mem_x[0]) == 3 and len(a.mem_x[1]) == 6
    assert set(a.mem_x[1][:, 0].tolist()) <= set(range(10, 20))
    before = [m.clone() for m in a.mem_x]
    state = gen.get_state()
    x, y = marked([30, 31], [2, 3])
    a.init_new_classes(y, gen)
    g = torch.Generator().set_state(state)
    torch.rand(1, 2, generator=g), torch.rand(1, 2, generator=g)  # the two new prototypes
    a.update_memory(x, torch.zeros(2, 2), y, gen)  # 12 // 4 = 3
    assert a.qi_len == 3 and [len(m) for m in a.mem_x] == [3, 3, 1, 1]
    perm0 = torch.randperm(3, generator=g)[:3]
    perm1 = torch.randperm(6, generator=g)[:3]
    assert torch.equal(a.mem_x[0], before[0][perm0]) and torch.equal(a.mem_x[1], before[1][perm1])
    assert len(a.mem_f[1]) == len(a.mem_age[1]) == 3
    total = sum(len(m) for m in a.mem_x)
    assert total <= 12 and a.memory_bytes()["buffer"] == total * (D * 4 + 4 * 2 + 4)


def test_replayed_samples_age_and_refresh():
    a = filled([2, 3])
    a.mem_age[0] = torch.tensor([5.0, 7.0])
    a.refresh_replayed(torch.tensor([[0.3, 0.4]]), torch.tensor([0]), torch.tensor([1]))
    assert a.mem_age[0].tolist() == [6.0, 1.0] and a.mem_age[1].tolist() == [2.0, 2.0, 2.0]
    assert a.mem_f[0][1].tolist() == pytest.approx([0.3, 0.4])


# ------------------------------------------------------------------------------------------------ stream
def test_stream_shuffled_per_epoch_batches_straddle_task0_epochs(monkeypatch):
    a = tiny(batch_size=3)
    seen = []
    monkeypatch.setattr(a, "observe", lambda x, y: seen.append(x[:, 0].tolist()))
    x, y = marked(range(7), [0, 1] * 3 + [0])
    loader = DataLoader(TensorDataset(x, y), batch_size=2)
    a.set_active([0, 1])
    g = torch.Generator().set_state(a.generator().get_state())
    a.learn_stream(loader, 0, 0, False)
    a.learn_stream(loader, 0, 1, True)
    order = torch.randperm(7, generator=g).tolist() + torch.randperm(7, generator=g).tolist()
    stream = [float(i) for i in order]
    assert seen == [stream[i:i + 3] for i in range(0, 14, 3)]  # 3, 3, 3 (straddles), 3, 2 (the task's end)
    assert a.pending_y.numel() == 0
    x1, y1 = marked(range(10, 14), [2, 3, 2, 3])
    a.set_active([0, 1, 2, 3])
    a.learn_stream(DataLoader(TensorDataset(x1, y1), batch_size=4), 1, 0, True)
    assert [len(b) for b in seen[5:]] == [3, 1] and sorted(sum(seen[5:], [])) == [10, 11, 12, 13]


# ------------------------------------------------------------------------------------------------ predict, memory
def test_predict_nearest_prototype_by_dot_product():
    a = tiny(n_class=4, embedding_size=2)
    a.model = nn.Sequential(nn.Flatten(), nn.Linear(D, 2, bias=False))
    with torch.no_grad():
        a.model[1].weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
    x = torch.tensor([[1.0, 0.1, 0.0], [0.1, 1.0, 0.0], [-1.0, -1.0, 0.0]])
    assert a.predict(x)["acc"].tolist() == [0, 0, 0]  # no class yet: class 0
    a.classes = [3, 1]  # creation order is not label order
    a.protos = F.normalize(torch.tensor([[0.0, 1.0], [1.0, 0.0]]), dim=1)
    assert a.predict(x)["acc"].tolist() == [1, 3, 1]  # a tie (-1, -1) goes to the lowest label
    a.classes, a.protos = [3, 1, 2], F.normalize(torch.tensor([[0.0, 1.0], [1.0, 0.0], [-1.0, -1.0]]), dim=1)
    assert a.predict(x)["acc"].tolist() == [1, 3, 2]


def test_memory_bytes_and_notes():
    a = real(n_class=4, n_memories=3, batch_size=4)
    assert a.memory_bytes() == {"buffer": 0, "prototypes": 0}
    a.set_active([0, 1])
    a.observe(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 0, 0]))
    assert a.memory_bytes() == {"buffer": 4 * (12_288 + 4 * 4 + 4), "prototypes": 2 * 4 * 4}
    assert "q27" in a.result_notes()[0] and "32 px" in a.result_notes()[0]
    b = real(n_class=4, fidelity="corrected", network="study", image_size=32, weights="none", embedding_size=6)
    assert b.result_notes() == []


# ------------------------------------------------------------------------------------------------ end to end
HP = {"batch_size": 6, "n_memories": 4, "n_epoch_first_task": 2, "n_epoch": 1, "n_workers": 0, "weights": "none",
      "image_size": 32, "lr": 0.01}


def run_job(files, out, hp, fidelity, **kw):
    return run_agent_job(CoPE, "cope", files, out, {**HP, **hp}, fidelity, **kw)


metrics = metrics_without_timing


def test_checkpoint_resume_identical(tiny_files, tmp_path):
    hp = {"batch_size": 5}  # 24 images per task: task 0's batches straddle its epochs
    _, full = run_job(tiny_files, tmp_path / "full", hp, "reference")
    out = tmp_path / "resumed"
    assert run_job(tiny_files, out, hp, "reference", stop_after_task=0)[0] is None
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["agent"]["extra"]["cope"]["classes"] and len(state["agent"]["extra"]["cope"]["mem_x"]) == 2
    _, resumed = run_job(tiny_files, out, hp, "reference")
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    assert full.classes == resumed.classes and full.qi_len == resumed.qi_len and full.seen_cnt == resumed.seen_cnt
    for k in ("protos", "p_sum", "p_cnt"):
        assert torch.equal(getattr(full, k), getattr(resumed, k)), k
    for k in ("mem_x", "mem_f", "mem_age"):
        assert all(torch.equal(u, v) for u, v in zip(getattr(full, k), getattr(resumed, k))), k
    assert torch.equal(full.generator().get_state(), resumed.generator().get_state())
    assert metrics(out) == metrics(tmp_path / "full")


def test_end_to_end_own_mlp_32px(tiny_files, tmp_path):
    m, agent = run_job(tiny_files, tmp_path / "own", {}, "reference")
    assert m["meta"]["image_size"] == 32 and m["primary_path"] == "acc"
    assert [t["n_epoch"] for t in m["tasks"]] == [2, 1]
    assert agent.classes and sorted(agent.classes) == [0, 1, 2, 3] and agent.qi_len == 4  # 16 // 4
    assert m["memory_bytes"] == {"buffer": 16 * (12_288 + 16 + 4), "prototypes": 4 * 16}
    assert len(m["test_all"]["acc"]) == 2 and all(0 <= v <= 100 for v in m["test_all"]["acc"])
    assert "q26" in agent.result_notes()[0]
    assert torch.allclose(agent.protos.norm(dim=1), torch.ones(4), atol=1e-5)


def test_end_to_end_study_network(tiny_files, tmp_path):
    m, agent = run_job(tiny_files, tmp_path / "study", {"network": "study", "batch_size": 12}, "corrected")
    assert m["meta"]["image_size"] == 32 and not agent.own_network
    assert agent.mem_x[0].shape[1:] == (3, 32, 32)
    assert m["memory_bytes"]["buffer"] == 16 * (3 * 32 * 32 * 4 + 16 + 4)
    assert len(m["test_all"]["acc"]) == 2 and all(0 <= v <= 100 for v in m["test_all"]["acc"])
    assert agent.result_notes() == []
