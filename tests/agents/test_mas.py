"""MAS (spec 6.2, 12.23): Omega += |d mean(logits[:, active]^2)/dtheta| / N_batches (eval mode, training loader),
one online slot, in-place accumulation under reference."""
from __future__ import annotations

import torch

from augmem.agents.mas import MAS

from .linear import learn, linear_agent, two_label_data

HP = {"lr": 0.1, "momentum": 0.0, "weight_decay": 0.0, "reg_coef": 1.0}


def make(fidelity="reference"):
    return linear_agent(MAS, 3, HP, fidelity)


def data(seed, labels=(0, 1), n=5):
    return two_label_data(seed, n, 3, labels)


def hand_mas(W, b, ds, active, batch=3):
    """Closed form for z = x W_A^T + b_A: d mean(z^2)/dW_k = 2 sum_i z_ik x_i / (B K)."""
    x_all, _ = ds[:]
    n_batches = -(-len(x_all) // batch)
    act = torch.tensor(active)
    OW = torch.zeros_like(W, dtype=torch.float64)
    Ob = torch.zeros_like(b, dtype=torch.float64)
    for s in range(0, len(x_all), batch):
        x = x_all[s:s + batch].double()
        z = x @ W.double()[act].T + b.double()[act]
        scale = 2.0 / (z.shape[0] * z.shape[1])
        gW = torch.zeros_like(OW)
        gb = torch.zeros_like(Ob)
        gW[act] = scale * z.T @ x
        gb[act] = scale * z.sum(0)
        OW += gW.abs() / n_batches
        Ob += gb.abs() / n_batches
    return OW.float(), Ob.float()


def weights(a):
    return a.params["1.weight"].detach().clone(), a.params["1.bias"].detach().clone()


def test_importance_matches_hand_computation():
    a = make()
    a.set_active([0, 1])
    learn(a, data(1), 0, 0, True)
    OW, Ob = hand_mas(*weights(a), data(1), [0, 1])
    imp = a.regularization_terms[1]["importance"]
    assert torch.allclose(imp["1.weight"], OW, atol=1e-7, rtol=1e-5)
    assert torch.allclose(imp["1.bias"], Ob, atol=1e-7, rtol=1e-5)
    assert torch.all(imp["1.weight"][2] == 0) and float(OW.sum()) > 0
    # task 1: accumulated into the single slot
    a.set_active([0, 1, 2])
    learn(a, data(2, (1, 2)), 1, 0, True)
    OW1, _ = hand_mas(*weights(a), data(2, (1, 2)), [0, 1, 2])
    assert list(a.regularization_terms) == [1]
    assert torch.allclose(a.regularization_terms[1]["importance"]["1.weight"], OW + OW1, atol=1e-6, rtol=1e-5)


def test_in_place_accumulation_quirk_vs_corrected():
    out = {}
    for fid in ("reference", "corrected"):
        a = make(fid)
        a.set_active([0, 1])
        learn(a, data(1), 0, 0, True)
        O0 = a.regularization_terms[1]["importance"]["1.weight"].clone()
        a.set_active([0, 1, 2])
        learn(a, data(2, (1, 2)), 1, 0, False)
        Oe0, _ = hand_mas(*weights(a), data(2, (1, 2)), [0, 1, 2])
        mid = a.regularization_terms[1]["importance"]["1.weight"].clone()
        learn(a, data(2, (1, 2)), 1, 1, True)
        Oe1, _ = hand_mas(*weights(a), data(2, (1, 2)), [0, 1, 2])
        out[fid] = (O0, Oe0, Oe1, mid, a.regularization_terms[1]["importance"]["1.weight"].clone())
    O0, Oe0, Oe1, mid, final = out["reference"]
    assert torch.allclose(mid, O0 + Oe0, atol=1e-6, rtol=1e-5)
    assert torch.allclose(final, O0 + Oe0 + Oe1, atol=1e-6, rtol=1e-5)
    O0, Oe0, Oe1, mid, final = out["corrected"]
    assert torch.equal(mid, O0)
    assert torch.allclose(final, O0 + Oe1, atol=1e-6, rtol=1e-5)


def test_penalty_zero_at_anchor_and_pulls_back():
    a = make()
    a.set_active([0, 1])
    learn(a, data(1), 0, 0, True)
    assert float(a.reg_loss().detach()) == 0.0
    term = a.regularization_terms[1]
    with torch.no_grad():
        a.params["1.weight"].sub_(0.7)
    a.model.zero_grad()
    a.reg_loss().backward()
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
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k])
    assert torch.equal(a.regularization_terms[1]["importance"]["1.weight"],
                       b.regularization_terms[1]["importance"]["1.weight"])
