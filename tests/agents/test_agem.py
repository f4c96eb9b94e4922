"""A-GEM (spec 6.3, 12.25, 13): memory after each task's last epoch, reference gradient over the whole memory
loader (batches of batch_size // 10 + 1, not shuffled) at every step, projection when g . g_ref < 0."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from augmem.agents.agem import AGEM, agem_project
from augmem.train.fidelity import train_switches
from augmem.train.seeding import replay_random

HP = {"lr": 0.5, "momentum": 0.0, "weight_decay": 0.0, "memory_size": 10, "batch_size": 21}


class TinyAGEM(AGEM):
    def build_model(self):
        return nn.Sequential(nn.Flatten(), nn.Linear(3, 2))


def make(fidelity="reference"):
    torch.manual_seed(0)
    return TinyAGEM(2, dict(HP), train_switches(fidelity))


def conflicting_tasks():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(12, 3, generator=g)
    y = torch.tensor([i % 2 for i in range(12)])
    return [TensorDataset(x, y), TensorDataset(x.clone(), 1 - y)]


def flat_params(a):
    return torch.cat([p.detach().reshape(-1).clone() for p in a.params.values()])


def ce_grad(theta, x, y):
    W, b = theta[:6].reshape(2, 3).double(), theta[6:].double()
    d = (torch.softmax(x.double() @ W.T + b, 1) - nn.functional.one_hot(y, 2).double()) / len(y)
    return torch.cat([(d.T @ x.double()).reshape(-1), d.sum(0)])


def test_projection_formula():
    g_ref = torch.tensor([1.0, 2.0, -1.0])
    g = torch.tensor([-3.0, 0.5, 1.0])
    assert float(g @ g_ref) < 0
    out = agem_project(g, g_ref)
    expected = g - (g @ g_ref) / (g_ref @ g_ref) * g_ref
    assert torch.allclose(out, expected)
    assert abs(float(out @ g_ref)) < 1e-6  # projected onto the half-space boundary: dot >= 0 (= 0)
    g_ok = torch.tensor([1.0, 0.0, 0.0])
    assert torch.equal(agem_project(g_ok, g_ref), g_ok)  # no conflict: unchanged


def test_memory_batch_and_memory_budget():
    a = make()
    assert a.memory_batch == 21 // 10 + 1 == 3  # spec 13
    tasks = conflicting_tasks()
    a.set_active([0, 1])
    a.learn_stream(DataLoader(tasks[0], batch_size=4), 0, 0, False)
    assert len(a.memory) == 0  # only after the last epoch of a task
    a.learn_stream(DataLoader(tasks[0], batch_size=4), 0, 1, True)
    assert [len(y) for y in a.memory.y] == [10]
    a.learn_stream(DataLoader(tasks[1], batch_size=4), 1, 0, True)
    assert [len(y) for y in a.memory.y] == [5, 5]
    assert a.memory_bytes() == {"images": 10 * 3}


def test_reference_gradient_is_the_sum_over_memory_batches():
    a = make()
    tasks = conflicting_tasks()
    a.set_active([0, 1])
    a.learn_stream(DataLoader(tasks[0], batch_size=4), 0, 0, True)
    mx, my = a.memory.tensors()
    theta = flat_params(a)
    expected = sum(ce_grad(theta, mx[s:s + 3], my[s:s + 3]) for s in range(0, len(my), 3))  # 3, 3, 3, 1
    assert torch.allclose(a.reference_gradient().double(), expected, atol=1e-6)


def test_step_applies_the_projected_gradient():
    a = make()
    tasks = conflicting_tasks()
    a.set_active([0, 1])
    a.learn_stream(DataLoader(tasks[0], batch_size=4), 0, 0, True)
    mx, my = a.memory.tensors()
    x, y = tasks[1][:4]
    theta = flat_params(a)
    g_ref = sum(ce_grad(theta, mx[s:s + 3], my[s:s + 3]) for s in range(0, len(my), 3))
    g = ce_grad(theta, x, y)
    assert float(g @ g_ref) < 0
    a.update_model(x, y)
    applied = (theta - flat_params(a)).double() / HP["lr"]
    expected = g - (g @ g_ref) / (g_ref @ g_ref) * g_ref
    assert torch.allclose(applied, expected, atol=1e-5)
    assert float(applied @ g_ref) >= -1e-6
    assert a.n_projections == 1


def test_checkpoint_round_trip(tmp_path):
    a = make()
    tasks = conflicting_tasks()
    a.set_active([0, 1])
    a.learn_stream(DataLoader(tasks[0], batch_size=4), 0, 0, True)
    torch.save(a.checkpoint_state(), tmp_path / "ck.pt")
    b = make()
    b.load_checkpoint_state(torch.load(tmp_path / "ck.pt", weights_only=True))
    for x in (a, b):
        torch.manual_seed(3)
        x.learn_stream(DataLoader(tasks[1], batch_size=4), 1, 0, True)
    assert torch.equal(flat_params(a), flat_params(b))
    assert torch.equal(torch.cat(a.memory.x), torch.cat(b.memory.x))


def test_merged_chunks_equal_batch_by_batch_reference_gradient():
    a = make()
    tasks = conflicting_tasks()
    a.set_active([0, 1])
    a.learn_stream(DataLoader(tasks[0], batch_size=4), 0, 0, True)
    merged = a.reference_gradient()
    a._has_batchnorm = lambda: True  # forces one forward pass per memory batch of 3, as the original
    batchwise = a.reference_gradient()
    assert torch.allclose(merged, batchwise, atol=1e-7)


def test_random_memory_batch_draws_from_the_replay_rng():
    """Corrected g_ref (one random memory batch) draws from the agent's replay generator, not the global RNG."""
    a = make("corrected")
    tasks = conflicting_tasks()
    a.set_active([0, 1])
    a.learn_stream(DataLoader(tasks[0], batch_size=4), 0, 0, True)
    state = replay_random(a).state()
    before = torch.get_rng_state()
    g1 = a.reference_gradient()
    assert torch.equal(torch.get_rng_state(), before)
    replay_random(a).load_state(state)
    torch.rand(3)
    assert torch.equal(a.reference_gradient(), g1)
