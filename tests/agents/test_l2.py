"""L2 baseline (spec 6.2): importance 1, one online slot, penalty reg_coef * sum (theta - theta*)^2 without 1/2."""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from augmem.agents.l2 import L2

from .linear import linear_agent, two_label_data

HP = {"lr": 0.1, "momentum": 0.0, "weight_decay": 0.0, "reg_coef": 2.0, "batch_size": 3}


def make(fidelity="reference", **hp):
    return linear_agent(L2, 3, {**HP, **hp}, fidelity)


def data(seed, labels=(0, 1)):
    return two_label_data(seed, 6, 3, labels)


def run_task(agent, ds, task, active, n_epoch=1):
    agent.set_active(active)
    for e in range(n_epoch):
        agent.learn_stream(DataLoader(ds, batch_size=3), task, e, e == n_epoch - 1)


def test_importance_is_one_and_one_online_slot():
    a = make()
    assert a.regularization_terms == {}
    run_task(a, data(1), 0, [0, 1])
    assert list(a.regularization_terms) == [1]
    for n, p in a.params.items():
        assert torch.equal(a.regularization_terms[1]["importance"][n], torch.ones_like(p))
        assert torch.equal(a.regularization_terms[1]["task_param"][n], p.detach())
    run_task(a, data(2, (1, 2)), 1, [0, 1, 2])
    assert list(a.regularization_terms) == [1]  # online: slot 1 overwritten
    for n, p in a.params.items():
        assert torch.equal(a.regularization_terms[1]["task_param"][n], p.detach())
    n_bytes = sum(p.numel() * 4 for p in a.params.values())
    assert a.memory_bytes() == {"importance": n_bytes, "anchor_params": n_bytes}


def test_penalty_zero_at_anchor_and_pulls_back():
    a = make()
    run_task(a, data(1), 0, [0, 1])
    assert float(a.reg_loss().detach()) == 0.0
    anchor = {n: t.clone() for n, t in a.regularization_terms[1]["task_param"].items()}
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in a.params.values():
            p.add_(torch.randn(p.shape, generator=g))
    x, y = data(3)[:]
    logits = a.forward(x)
    ce = torch.nn.functional.cross_entropy(logits[:, a.active_index], y)
    total = a.criterion(logits, y)
    expected_pen = sum(((p - anchor[n]) ** 2).sum() for n, p in a.params.items())
    assert torch.allclose(total - ce, HP["reg_coef"] * expected_pen)  # no 1/2 factor
    a.model.zero_grad()
    a.reg_loss().backward()
    for n, p in a.params.items():
        diff = p.detach() - anchor[n]
        assert torch.allclose(p.grad, 2 * diff)  # d/dtheta of Omega (theta - theta*)^2 with Omega = 1
        assert float((p.grad * diff).sum()) > 0  # a descent step moves theta back toward theta*


def test_reference_and_corrected_agree_for_l2():
    ref, cor = make("reference"), make("corrected")
    for a in (ref, cor):
        run_task(a, data(1), 0, [0, 1], n_epoch=2)
        run_task(a, data(2, (1, 2)), 1, [0, 1, 2], n_epoch=2)
    for k, v in ref.model.state_dict().items():
        assert torch.equal(v, cor.model.state_dict()[k])


def test_checkpoint_round_trip(tmp_path):
    a = make()
    run_task(a, data(1), 0, [0, 1])
    torch.save(a.checkpoint_state(), tmp_path / "ck.pt")
    b = make()
    b.load_checkpoint_state(torch.load(tmp_path / "ck.pt", weights_only=True))
    assert b.task_count == a.task_count == 1
    for n in a.params:
        assert torch.equal(b.regularization_terms[1]["task_param"][n], a.regularization_terms[1]["task_param"][n])
        assert torch.equal(b.regularization_terms[1]["importance"][n], a.regularization_terms[1]["importance"][n])
    # the same next task gives the same weights
    run_task(a, data(2, (1, 2)), 1, [0, 1, 2])
    run_task(b, data(2, (1, 2)), 1, [0, 1, 2])
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k])
