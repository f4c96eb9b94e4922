"""GEM (spec 6.3, 12.21): reference = NormalNN exactly (memory never filled); corrected = per-task memories and the
GEM dual QP (quadprog) whenever a memory gradient conflicts with the batch gradient."""
from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import augmem.agents.gem as gem_mod
from augmem.agents.gem import GEM, gem_project
from augmem.agents.normal_nn import NormalNN
from augmem.train.fidelity import train_switches


def brute_force_projection(g, G):
    """argmin ||z - g|| s.t. G z >= 0, by enumerating active sets (exact KKT solutions), float64."""
    best = None
    t = G.shape[0]
    for r in range(t + 1):
        for S in itertools.combinations(range(t), r):
            S = list(S)
            if S:
                GS = G[S]
                v = -torch.linalg.solve(GS @ GS.T, GS @ g)
                if (v < -1e-12).any():
                    continue
                z = g + GS.T @ v
            else:
                z = g.clone()
            if (G @ z < -1e-9).any():
                continue
            if best is None or (z - g).norm() < (best - g).norm():
                best = z
    return best


@pytest.mark.parametrize("seed", range(6))
def test_projection_is_the_closest_vector_with_nonnegative_dots(seed):
    gen = torch.Generator().manual_seed(seed)
    G = torch.randn(3, 6, generator=gen, dtype=torch.float64)
    g = torch.randn(6, generator=gen, dtype=torch.float64)
    g = g - 2.0 * G[0] * (g @ G[0]).abs() / (G[0] @ G[0])  # make sure at least one constraint is violated
    assert (G @ g < 0).any()
    z = gem_project(g, G, margin=0.0, eps=1e-10)
    assert (G @ z >= -1e-7).all()  # non-negative dot product with every memory gradient
    ref = brute_force_projection(g, G)
    assert torch.allclose(z, ref, atol=1e-6)
    # KKT of the dual: z = g + G^T v with v >= 0 and complementary slackness
    v = torch.linalg.lstsq(G.T, z - g).solution
    assert (v >= -1e-7).all()
    assert torch.allclose(v * (G @ z), torch.zeros(3, dtype=torch.float64), atol=1e-6)
    # the published eps = 1e-3 is a small perturbation of the exact projection
    z3 = gem_project(g, G, margin=0.0)
    assert (z3 - ref).norm() <= 1e-2 * max(1.0, ref.norm())


def test_margin_bounds_the_dual_variables():
    G = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    g = torch.tensor([-1.0, 2.0, 0.0], dtype=torch.float64)
    z = gem_project(g, G, margin=0.0, eps=1e-12)
    assert torch.allclose(z, torch.tensor([0.0, 2.0, 0.0], dtype=torch.float64), atol=1e-9)
    z = gem_project(g, G, margin=0.5, eps=1e-12)  # v >= 0.5 although v = 1 would suffice -> v = 1
    assert torch.allclose(z, torch.tensor([0.0, 2.0, 0.0], dtype=torch.float64), atol=1e-9)
    z = gem_project(g, G, margin=3.0, eps=1e-12)  # v = 3 > 1: pushed beyond the constraint
    assert torch.allclose(z, torch.tensor([2.0, 2.0, 0.0], dtype=torch.float64), atol=1e-9)


def test_qp_failures_raise_runtime_error():
    with pytest.raises(RuntimeError, match="at task 2, step 5"):
        gem_project(torch.tensor([float("nan"), 1.0]), torch.eye(2), 0.0, context=" at task 2, step 5")
    with pytest.raises(RuntimeError, match="failed"):  # singular P (duplicate memory gradients, eps 0)
        gem_project(torch.tensor([-1.0, 0.0]), torch.tensor([[1.0, 0.0], [1.0, 0.0]]), 0.0, eps=0.0)


# ----------------------------------------------------------------------------------------------------------- agent
HP = {"lr": 0.5, "momentum": 0.0, "weight_decay": 0.0, "memory_size": 10, "reg_coef": 0.0}


def linear():
    return nn.Sequential(nn.Flatten(), nn.Linear(3, 2))


class TinyGEM(GEM):
    def build_model(self):
        return linear()


class TinyNormal(NormalNN):
    def build_model(self):
        return linear()


def conflicting_tasks():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(12, 3, generator=g)
    y = torch.tensor([i % 2 for i in range(12)])
    return [TensorDataset(x, y), TensorDataset(x.clone(), 1 - y)]  # task 1 swaps the labels: gradients conflict


def run(agent, tasks, n_epoch=1):
    agent.set_active([0, 1])
    for t, ds in enumerate(tasks):
        for e in range(n_epoch):
            agent.learn_stream(DataLoader(ds, batch_size=4), t, e, e == n_epoch - 1)


def test_reference_trains_exactly_like_normal_nn(tiny_stream):
    tasks, _ = tiny_stream

    class ConvNormal(NormalNN):
        def build_model(self):
            return nn.Sequential(nn.Sequential(nn.Conv2d(3, 4, 3, stride=4), nn.ReLU()),
                                 nn.Sequential(nn.Dropout(0.5), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 4)))

    class ConvGEM(GEM):
        build_model = ConvNormal.build_model

    hp = {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4, "memory_size": 10}
    states = []
    for cls in (ConvNormal, ConvGEM):
        torch.manual_seed(7)
        own = {k: v for k, v in hp.items() if k != "memory_size" or cls is ConvGEM}  # NormalNN has no memory
        a = cls(4, own, train_switches("reference"))
        active = []
        for t, ds in enumerate(tasks):
            active = sorted(set(active) | set(ds.tensors[1].tolist()))
            a.set_active(active)
            for e in range(2):
                a.learn_stream(DataLoader(ds, batch_size=8), t, e, e == 1)
        states.append(a.model.state_dict())
    for k, v in states[0].items():
        assert torch.equal(v, states[1][k]), k
    assert a.memory_bytes() == {"images": 0}


def test_corrected_projects_conflicting_gradients(monkeypatch):
    tasks = conflicting_tasks()
    torch.manual_seed(0)
    a = TinyGEM(2, dict(HP), train_switches("corrected"))
    run(a, tasks[:1])
    assert [len(y) for y in a.memory.y] == [10]
    calls = []
    real = gem_mod.gem_project

    def spy(g, G, margin, eps=1e-3, context=""):
        out = real(g, G, margin, eps, context)
        calls.append((g.clone(), G.clone(), out.clone()))
        return out

    monkeypatch.setattr(gem_mod, "gem_project", spy)
    before = a.params["1.weight"].detach().clone(), a.params["1.bias"].detach().clone()
    # the memory gradient is the mean CE over the stored items (closed form for the linear model)
    mx, my = a.memory.tensors()
    W, b = before
    d = (torch.softmax(mx.double() @ W.double().T + b.double(), 1) - nn.functional.one_hot(my, 2).double()) / len(my)
    expected_mem = torch.cat([(d.T @ mx.double()).reshape(-1), d.sum(0)])
    assert torch.allclose(a.memory_gradients()[0].double(), expected_mem, atol=1e-6)
    a.learn_stream(DataLoader(tasks[1], batch_size=4), 1, 0, True)
    assert a.n_projections == len(calls) > 0
    g, G, z = calls[0]
    assert (G @ g < 0).any()
    # KKT of the regularised dual: G z = lambda - eps v with lambda >= 0, so G z >= -eps v (0 in the eps -> 0 limit)
    v = torch.linalg.lstsq(G.double().T, (z - g).double().unsqueeze(1)).solution.squeeze(1)
    assert (v >= 0).all()
    assert (G.double() @ z.double() >= -1e-3 * v - 1e-6).all()
    # with one memory the projection has a closed form
    G1 = G[0].double()
    closed = g.double() - (g.double() @ G1) / (G1 @ G1 + 1e-3) * G1
    assert torch.allclose(z.double(), closed, atol=1e-5)
    # memory: memory_size // tasks per task
    assert [len(y) for y in a.memory.y] == [5, 5]
    assert a.memory_bytes() == {"images": 10 * 3}


def test_first_step_update_equals_projected_gradient():
    tasks = conflicting_tasks()
    torch.manual_seed(0)
    a = TinyGEM(2, dict(HP), train_switches("corrected"))
    run(a, tasks[:1])
    x, y = tasks[1][:4]
    before = torch.cat([p.detach().reshape(-1).clone() for p in a.params.values()])
    G = a.memory_gradients()
    a.update_model(x, y)
    after = torch.cat([p.detach().reshape(-1) for p in a.params.values()])
    applied = (before - after) / HP["lr"]
    x_all = tasks[1].tensors[0][:4]
    W, b = before[:6].reshape(2, 3).double(), before[6:].double()
    d = (torch.softmax(x_all.double() @ W.T + b, 1) - nn.functional.one_hot(y, 2).double()) / 4
    g = torch.cat([(d.T @ x_all.double()).reshape(-1), d.sum(0)])
    G1 = G[0].double()
    assert float(g @ G1) < 0  # the batch gradient conflicts with the memory
    expected = g - (g @ G1) / (G1 @ G1 + 1e-3) * G1  # the QP solution for one memory (eps = 1e-3)
    assert torch.allclose(applied.double(), expected, atol=1e-5)
    assert float(applied.double() @ G1) > float(g @ G1)  # the conflict is (almost) removed
    assert a.n_projections == 1


def test_failed_qp_names_task_and_step(monkeypatch):
    import quadprog

    tasks = conflicting_tasks()
    torch.manual_seed(0)
    a = TinyGEM(2, dict(HP), train_switches("corrected"))
    run(a, tasks[:1])

    def boom(*args, **kwargs):
        raise ValueError("constraints are inconsistent, no solution")

    monkeypatch.setattr(quadprog, "solve_qp", boom)
    with pytest.raises(RuntimeError, match=r"task 1, step \d+"):
        a.learn_stream(DataLoader(tasks[1], batch_size=4), 1, 0, True)
    assert all(torch.isfinite(p).all() for p in a.params.values())


def test_checkpoint_round_trip(tmp_path):
    tasks = conflicting_tasks()
    torch.manual_seed(0)
    a = TinyGEM(2, dict(HP), train_switches("corrected"))
    run(a, tasks[:1])
    torch.save(a.checkpoint_state(), tmp_path / "ck.pt")
    b = TinyGEM(2, dict(HP), train_switches("corrected"))
    b.load_checkpoint_state(torch.load(tmp_path / "ck.pt", weights_only=True))
    torch.manual_seed(1)
    a.learn_stream(DataLoader(tasks[1], batch_size=4), 1, 0, True)
    torch.manual_seed(1)
    b.learn_stream(DataLoader(tasks[1], batch_size=4), 1, 0, True)
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k])
    assert torch.equal(torch.cat(a.memory.x), torch.cat(b.memory.x))
