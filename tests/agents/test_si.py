"""SI (spec 6.2, 12.23): path integral w -= g_unreg * (actual optimiser step), Omega += w / (delta^2 + 0.1)."""
from __future__ import annotations

import torch

from augmem.agents.si import SI

from .linear import learn as learn_batches, linear_agent, two_label_data

LR, MOM, REG = 0.1, 0.9, 5.0
HP = {"lr": LR, "momentum": MOM, "weight_decay": 0.0, "reg_coef": REG}


def make(fidelity="reference"):
    return linear_agent(SI, 2, HP, fidelity)


def data(seed, n=4):
    return two_label_data(seed, n, 2)


def learn(agent, ds, task, epoch, last):
    learn_batches(agent, ds, task, epoch, last, batch=2)


def flat(a):
    return torch.cat([a.params["1.weight"].detach().reshape(-1), a.params["1.bias"].detach()]).double()


def ce_grad(theta, x, y):
    """Closed-form gradient of the mean CE of logits = x W^T + b, theta = [W (2x2) row-major, b (2)]."""
    W, b = theta[:4].reshape(2, 2), theta[4:]
    x = x.double()
    d = (torch.softmax(x @ W.T + b, 1) - torch.nn.functional.one_hot(y, 2).double()) / len(x)
    return torch.cat([(d.T @ x).reshape(-1), d.sum(0)])


def test_path_integral_two_steps_by_hand_then_penalised_task():
    a = make()
    a.set_active([0, 1])
    ds0, ds1 = data(1), data(2)
    th0 = flat(a)
    x, y = ds0[:]
    # task 0: two SGD-momentum steps without penalty
    g1 = ce_grad(th0, x[:2], y[:2]); buf = g1.clone(); th1 = th0 - LR * buf
    w = -g1 * (th1 - th0)
    g2 = ce_grad(th1, x[2:], y[2:]); buf = MOM * buf + g2; th2 = th1 - LR * buf
    w = w - g2 * (th2 - th1)
    omega = w / ((th2 - th0) ** 2 + 0.1)
    learn(a, ds0, 0, 0, True)
    assert torch.allclose(flat(a), th2, atol=1e-6)
    imp = a.regularization_terms[1]["importance"]
    got = torch.cat([imp["1.weight"].reshape(-1), imp["1.bias"]]).double()
    assert torch.allclose(got, omega, atol=1e-6, rtol=1e-4)
    assert all(float(t.abs().sum()) == 0 for t in a.w.values())  # w is zeroed after the importance
    assert float(a.reg_loss().detach()) == 0.0  # penalty zero at the anchor
    # task 1: the second step carries the penalty gradient; w uses the gradient *without* the penalty
    x, y = ds1[:]
    ga = ce_grad(th2, x[:2], y[:2]); buf = MOM * buf + ga; th3 = th2 - LR * buf
    w = -ga * (th3 - th2)
    gb = ce_grad(th3, x[2:], y[2:]); reg = REG * 2 * omega * (th3 - th2)
    buf = MOM * buf + gb + reg; th4 = th3 - LR * buf
    w_wrong = w - (gb + reg) * (th4 - th3)
    w = w - gb * (th4 - th3)
    omega2 = omega + w / ((th4 - th2) ** 2 + 0.1)
    learn(a, ds1, 1, 0, True)
    assert torch.allclose(flat(a), th4, atol=1e-6)
    imp = a.regularization_terms[1]["importance"]
    got = torch.cat([imp["1.weight"].reshape(-1), imp["1.bias"]]).double()
    assert torch.allclose(got, omega2, atol=1e-6, rtol=1e-4)
    assert not torch.allclose(omega + w_wrong / ((th4 - th2) ** 2 + 0.1), omega2, atol=1e-6, rtol=1e-4)


def test_penalty_pulls_back_toward_anchor():
    a = make()
    a.set_active([0, 1])
    learn(a, data(1), 0, 0, True)
    term = a.regularization_terms[1]
    with torch.no_grad():
        a.params["1.bias"].add_(torch.tensor([1.0, -1.0]))
    a.model.zero_grad()
    a.reg_loss().backward()
    diff = a.params["1.bias"].detach() - term["task_param"]["1.bias"]
    assert torch.allclose(a.params["1.bias"].grad, 2 * term["importance"]["1.bias"] * diff)
    assert float((a.params["1.bias"].grad * diff).sum()) > 0


def test_multi_epoch_first_task_keeps_only_last_epoch_w_in_reference():
    ref, cor = make("reference"), make("corrected")
    th_init = flat(ref)
    for a in (ref, cor):
        a.set_active([0, 1])
        learn(a, data(1), 0, 0, False)
    assert all(float(t.abs().sum()) == 0 for t in ref.w.values())  # zeroed after epoch 0
    w_e0 = torch.cat([cor.w["1.weight"].reshape(-1), cor.w["1.bias"]]).double().clone()
    assert float(w_e0.abs().sum()) > 0  # corrected keeps accumulating
    for a in (ref, cor):
        learn(a, data(1), 0, 1, True)
    assert torch.equal(flat(ref), flat(cor))  # no slot yet: same trajectory
    d2 = (flat(ref) - th_init) ** 2 + 0.1

    def omega(a):
        imp = a.regularization_terms[1]["importance"]
        return torch.cat([imp["1.weight"].reshape(-1), imp["1.bias"]]).double()

    assert torch.allclose(omega(cor) - omega(ref), w_e0 / d2, atol=1e-6, rtol=1e-4)


def test_in_place_accumulation_quirk_vs_corrected():
    mids = {}
    for fid in ("reference", "corrected"):
        a = make(fid)
        a.set_active([0, 1])
        learn(a, data(1), 0, 0, True)
        before = a.regularization_terms[1]["importance"]["1.weight"].clone()
        learn(a, data(2), 1, 0, False)
        mids[fid] = (before, a.regularization_terms[1]["importance"]["1.weight"].clone())
    before, mid = mids["reference"]
    assert not torch.equal(before, mid)  # the stored importance changed in a non-final epoch
    before, mid = mids["corrected"]
    assert torch.equal(before, mid)


def test_checkpoint_round_trip(tmp_path):
    a = make()
    a.set_active([0, 1])
    learn(a, data(1), 0, 0, True)
    torch.save(a.checkpoint_state(), tmp_path / "ck.pt")
    b = make()
    b.load_checkpoint_state(torch.load(tmp_path / "ck.pt", weights_only=True))
    for x in (a, b):
        learn(x, data(2), 1, 0, True)
    assert torch.equal(flat(a), flat(b))
    assert torch.equal(a.regularization_terms[1]["importance"]["1.weight"],
                       b.regularization_terms[1]["importance"]["1.weight"])
