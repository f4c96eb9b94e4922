"""Online EWC (spec 6.2, 12.23): one slot whose Fisher accumulates; reference adds in place into the stored
importance every epoch, corrected once per task on a copy."""
from __future__ import annotations

import torch

from augmem.agents.ewc_online import EWCOnline

from .linear import learn, linear_agent, two_label_data

HP = {"lr": 0.1, "momentum": 0.0, "weight_decay": 0.0, "reg_coef": 3.0}


def make(fidelity="reference"):
    return linear_agent(EWCOnline, 3, HP, fidelity)


def data(seed, labels=(0, 1), n=5):
    return two_label_data(seed, n, 3, labels)


def hand_fisher_w(W, b, ds, active, batch=3):
    """Fisher of the weight matrix, closed form (predicted labels, B_i / N_batches scaling)."""
    x_all, _ = ds[:]
    n_batches = -(-len(x_all) // batch)
    act = torch.tensor(active)
    FW = torch.zeros_like(W, dtype=torch.float64)
    for s in range(0, len(x_all), batch):
        x = x_all[s:s + batch].double()
        z = x @ W.double()[act].T + b.double()[act]
        d = (torch.softmax(z, 1) - torch.nn.functional.one_hot(z.argmax(1), len(active)).double()) / len(x)
        gW = torch.zeros_like(FW)
        gW[act] = d.T @ x
        FW += gW ** 2 * len(x) / n_batches
    return FW.float()


def weights(a):
    return a.params["1.weight"].detach().clone(), a.params["1.bias"].detach().clone()


def test_single_slot_accumulates_fisher():
    a = make("corrected")
    a.set_active([0, 1])
    learn(a, data(1), 0, 0, True)
    F0 = a.regularization_terms[1]["importance"]["1.weight"].clone()
    assert torch.allclose(F0, hand_fisher_w(*weights(a), data(1), [0, 1]), atol=1e-7, rtol=1e-5)
    a.set_active([0, 1, 2])
    learn(a, data(2, (1, 2)), 1, 0, True)
    assert list(a.regularization_terms) == [1]
    F1 = hand_fisher_w(*weights(a), data(2, (1, 2)), [0, 1, 2])
    assert torch.allclose(a.regularization_terms[1]["importance"]["1.weight"], F0 + F1, atol=1e-6, rtol=1e-5)
    assert torch.equal(a.regularization_terms[1]["task_param"]["1.weight"], a.params["1.weight"].detach())


def test_in_place_accumulation_quirk_vs_corrected():
    results = {}
    for fid in ("reference", "corrected"):
        a = make(fid)
        a.set_active([0, 1])
        learn(a, data(1), 0, 0, True)
        stored = a.regularization_terms[1]["importance"]["1.weight"]
        F0 = stored.clone()
        a.set_active([0, 1, 2])
        learn(a, data(2, (1, 2)), 1, 0, False)  # epoch 0 of task 1 (not the last)
        Fe0 = hand_fisher_w(*weights(a), data(2, (1, 2)), [0, 1, 2])
        after_e0 = a.regularization_terms[1]["importance"]["1.weight"].clone()
        learn(a, data(2, (1, 2)), 1, 1, True)
        Fe1 = hand_fisher_w(*weights(a), data(2, (1, 2)), [0, 1, 2])
        final = a.regularization_terms[1]["importance"]["1.weight"]
        results[fid] = (F0, Fe0, Fe1, after_e0, final, stored)
    F0, Fe0, Fe1, after_e0, final, stored = results["reference"]
    assert torch.allclose(after_e0, F0 + Fe0, atol=1e-6, rtol=1e-5)  # the stored slot changed mid-task
    assert torch.allclose(final, F0 + Fe0 + Fe1, atol=1e-6, rtol=1e-5)
    assert final is stored  # the same tensor object, updated in place
    F0, Fe0, Fe1, after_e0, final, stored = results["corrected"]
    assert torch.equal(after_e0, F0)  # untouched until the task's end
    assert torch.allclose(final, F0 + Fe1, atol=1e-6, rtol=1e-5)
    assert torch.equal(stored, F0)  # the old tensor was not modified
    assert float((Fe0 - 0).abs().sum()) > 0


def test_penalty_zero_at_anchor_and_pulls_back():
    a = make()
    a.set_active([0, 1])
    learn(a, data(1), 0, 0, True)
    assert float(a.reg_loss().detach()) == 0.0
    with torch.no_grad():
        a.params["1.weight"].add_(1.0)
    a.model.zero_grad()
    a.reg_loss().backward()
    term = a.regularization_terms[1]
    diff = a.params["1.weight"].detach() - term["task_param"]["1.weight"]
    assert torch.allclose(a.params["1.weight"].grad, 2 * term["importance"]["1.weight"] * diff)
    assert float((a.params["1.weight"].grad * diff).sum()) > 0


def test_checkpoint_round_trip(tmp_path):
    a = make()
    a.set_active([0, 1])
    learn(a, data(1), 0, 0, True)
    torch.save(a.checkpoint_state(), tmp_path / "ck.pt")
    b = make()
    b.load_checkpoint_state(torch.load(tmp_path / "ck.pt", weights_only=True))
    for x in (a, b):
        x.set_active([0, 1, 2])
        learn(x, data(2, (1, 2)), 1, 0, True)
    assert torch.equal(a.regularization_terms[1]["importance"]["1.weight"],
                       b.regularization_terms[1]["importance"]["1.weight"])
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k])
