"""EWC (spec 6.2, 12.23): Fisher with predicted labels over the training loader in eval mode, scaled B_i/N_batches;
one slot per task; the penalty without 1/2."""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from augmem.agents.ewc import EWC

from .linear import linear_agent, two_label_data

HP = {"lr": 0.1, "momentum": 0.0, "weight_decay": 0.0, "reg_coef": 3.0}


def make(fidelity="reference"):
    return linear_agent(EWC, 3, HP, fidelity)


def data(seed, labels=(0, 1), n=5):
    return two_label_data(seed, n, 3, labels)


def run_task(agent, ds, task, active, n_epoch=1):
    agent.set_active(active)
    for e in range(n_epoch):
        agent.learn_stream(DataLoader(ds, batch_size=3), task, e, e == n_epoch - 1)


def hand_fisher(W, b, ds, active, batch=3):
    """Closed form for logits = x W^T + b: dCE/dW = (p - onehot(y_hat))^T x / B over the active rows."""
    x_all, _ = ds[:]
    n_batches = -(-len(x_all) // batch)
    FW, Fb = torch.zeros_like(W), torch.zeros_like(b)
    act = torch.tensor(active)
    for s in range(0, len(x_all), batch):
        x = x_all[s:s + batch].double()
        z = x @ W.double()[act].T + b.double()[act]
        p = torch.softmax(z, 1)
        onehot = torch.nn.functional.one_hot(z.argmax(1), len(active)).double()
        d = (p - onehot) / len(x)
        gW = torch.zeros_like(W, dtype=torch.float64)
        gb = torch.zeros_like(b, dtype=torch.float64)
        gW[act] = d.T @ x
        gb[act] = d.sum(0)
        FW += (gW ** 2 * len(x) / n_batches).float()
        Fb += (gb ** 2 * len(x) / n_batches).float()
    return FW, Fb


def test_fisher_matches_hand_computation():
    a = make()
    ds = data(1)
    run_task(a, ds, 0, [0, 1])
    term = a.regularization_terms[1]
    W, b = term["task_param"]["1.weight"], term["task_param"]["1.bias"]
    FW, Fb = hand_fisher(W, b, ds, [0, 1])
    assert torch.allclose(term["importance"]["1.weight"], FW, atol=1e-7, rtol=1e-5)
    assert torch.allclose(term["importance"]["1.bias"], Fb, atol=1e-7, rtol=1e-5)
    assert float(FW.abs().sum()) > 0
    assert torch.all(term["importance"]["1.weight"][2] == 0)  # inactive output node: no gradient, no importance


def test_one_slot_per_task_and_penalty_sums_slots():
    a = make()
    run_task(a, data(1), 0, [0, 1])
    run_task(a, data(2, (1, 2)), 1, [0, 1, 2])
    assert sorted(a.regularization_terms) == [1, 2]
    W, b = a.regularization_terms[2]["task_param"]["1.weight"], a.regularization_terms[2]["task_param"]["1.bias"]
    FW, _ = hand_fisher(W, b, data(2, (1, 2)), [0, 1, 2])
    assert torch.allclose(a.regularization_terms[2]["importance"]["1.weight"], FW, atol=1e-7, rtol=1e-5)
    expected = sum((t["importance"][n] * (p - t["task_param"][n]) ** 2).sum()
                   for t in a.regularization_terms.values() for n, p in a.params.items())
    assert torch.allclose(a.reg_loss(), expected)
    n_bytes = 2 * sum(p.numel() * 4 for p in a.params.values())
    assert a.memory_bytes() == {"importance": n_bytes, "anchor_params": n_bytes}


def test_penalty_zero_at_anchor_and_pulls_back():
    a = make()
    run_task(a, data(1), 0, [0, 1])
    assert float(a.reg_loss().detach()) == 0.0
    term = a.regularization_terms[1]
    with torch.no_grad():
        for p in a.params.values():
            p.add_(0.5)
    a.model.zero_grad()
    (HP["reg_coef"] * a.reg_loss()).backward()
    for n, p in a.params.items():
        diff = p.detach() - term["task_param"][n]
        assert torch.allclose(p.grad, 2 * HP["reg_coef"] * term["importance"][n] * diff)
        assert float((p.grad * diff).sum()) >= 0
    assert float((a.params["1.weight"].grad * 0.5).sum()) > 0


def test_reference_equals_corrected_for_per_task_ewc():
    """Per-task EWC has no in-place accumulation: recomputing the Fisher every epoch changes nothing."""
    ref, cor = make("reference"), make("corrected")
    for a in (ref, cor):
        run_task(a, data(1), 0, [0, 1], n_epoch=2)
        run_task(a, data(2, (1, 2)), 1, [0, 1, 2], n_epoch=2)
    for k, v in ref.model.state_dict().items():
        assert torch.equal(v, cor.model.state_dict()[k])
    for s in (1, 2):
        for n in ref.params:
            assert torch.equal(ref.regularization_terms[s]["importance"][n], cor.regularization_terms[s]["importance"][n])


def test_checkpoint_round_trip(tmp_path):
    a = make()
    run_task(a, data(1), 0, [0, 1])
    run_task(a, data(2, (1, 2)), 1, [0, 1, 2])
    torch.save(a.checkpoint_state(), tmp_path / "ck.pt")
    b = make()
    b.load_checkpoint_state(torch.load(tmp_path / "ck.pt", weights_only=True))
    assert b.task_count == 2 and sorted(b.regularization_terms) == [1, 2]
    assert torch.equal(a.reg_loss().detach(), b.reg_loss().detach())
    run_task(a, data(3, (0, 2)), 2, [0, 1, 2])
    run_task(b, data(3, (0, 2)), 2, [0, 1, 2])
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k])
