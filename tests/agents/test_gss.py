"""GSS-Greedy (spec 14.2): the online re-batching (q11), observe's ring buffer and SGD steps, the selection maths
(cosines, scores, the slot and replacement draws), per-sample gradients (vectorised == loop), the buffer bound, the
quirk-12 switch, prediction over all outputs, memory, checkpoint/resume and short end-to-end runs."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from augmem.agents.external import Renormalize
from augmem.agents.gss import GSS, INITIAL_SCORE
from augmem.io import InputError
from augmem.train.fidelity import train_switches
from .jobs import metrics_without_timing, run_agent_job

pytestmark = pytest.mark.usefixtures("one_torch_thread")

D = 3  # inputs of the tiny linear model
SMALL = {"batch_size": 3, "n_memories": 3, "n_sampled_memories": 6, "n_constraints": 2, "memory_strength": 2,
         "n_iter": 1, "lr": 0.01}


class Tiny(GSS):
    """GSS on Flatten + Linear(D, C)."""

    def build_own_network(self):
        return nn.Sequential(nn.Flatten(), nn.Linear(D, self.n_class))


def tiny(fidelity="reference", n_class=4, overrides=None, **hp):
    torch.manual_seed(0)
    return Tiny(n_class, {**SMALL, **hp}, train_switches(fidelity, overrides))


def real(fidelity="reference", n_class=4, **hp):
    torch.manual_seed(0)
    return GSS(n_class, {**SMALL, **hp}, train_switches(fidelity))


def marked(values, labels=None):
    """Inputs (k, D) whose first coordinate is the marker value (to recognise them in the buffer)."""
    v = torch.as_tensor(values, dtype=torch.float32)
    x = torch.stack([v, torch.full_like(v, 0.5), -v / 10], 1)
    y = torch.as_tensor(labels if labels is not None else [int(i) % 2 for i in range(len(v))])
    return x, y


# ------------------------------------------------------------------------------------------------ hyperparameters
def test_declared_defaults_and_switches():
    hp = GSS.check_hparams({})
    assert (hp["batch_size"], hp["n_memories"], hp["n_sampled_memories"], hp["n_constraints"],
            hp["memory_strength"], hp["n_iter"], hp["lr"], hp["change_th"]) == (10, 10, 1000, 10, 10, 10, 1e-3, 0.0)
    assert (hp["optimizer"], hp["momentum"], hp["weight_decay"], hp["own_backbone"], hp["network"]) == \
        ("SGD", 0.0, 0.0, "mlp", "own")
    with pytest.raises(InputError, match="own_backbone"):
        GSS.check_hparams({"own_backbone": "squeezenet"})
    with pytest.raises(InputError, match="n_memories"):
        GSS.check_hparams({"n_memories": 0})
    ref, cor = train_switches("reference"), train_switches("corrected")
    assert ref.gss_epochs_straddle and ref.gss_batch_scores_misaligned
    assert not cor.gss_epochs_straddle and not cor.gss_batch_scores_misaligned
    a = real()
    opt = a.optimizer
    assert isinstance(opt, torch.optim.SGD)
    assert (opt.param_groups[0]["momentum"], opt.param_groups[0]["weight_decay"]) == (0.0, 0.0)


def test_own_backbone_choice_and_study_network():
    a = real(own_backbone="mlp")
    assert [m.out_features for m in a.model.modules() if isinstance(m, nn.Linear)] == [100, 100, 4]
    b = real(own_backbone="resnet")
    assert b.model[1].in_features == 160 and b.model[1].out_features == 4
    assert isinstance(a.model[0][0], Renormalize) and isinstance(b.model[0][0], Renormalize)
    c = real("corrected", network="study", image_size=32, weights="none")
    assert not c.own_network and not any(isinstance(m, Renormalize) for m in c.model.modules())
    with torch.no_grad():
        assert c.model.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 4)


# ------------------------------------------------------------------------------------------------ stream (q11)
def record_batches(agent, monkeypatch):
    seen = []
    monkeypatch.setattr(agent, "observe", lambda x, y, t: seen.append((t, x[:, 0].tolist())))
    return seen


@pytest.mark.parametrize("fidelity", ["reference", "corrected"])
def test_rebatching_in_filelist_order_and_epoch_straddle(fidelity, monkeypatch):
    a = tiny(fidelity, batch_size=3)
    seen = record_batches(a, monkeypatch)
    x, y = marked(range(7))
    loader = DataLoader(TensorDataset(x, y), batch_size=2)  # the loop's batches need not be the agent's
    a.set_active([0, 1])
    a.learn_stream(loader, 0, 0, False)
    a.learn_stream(loader, 0, 1, True)
    x1, y1 = marked(range(10, 14), [2, 3, 2, 3])
    a.set_active([0, 1, 2, 3])
    a.learn_stream(DataLoader(TensorDataset(x1, y1), batch_size=3), 1, 0, True)
    if fidelity == "reference":  # task 0 as one stream of 14 images: batches straddle the two epochs
        want0 = [[0, 1, 2], [3, 4, 5], [6, 0, 1], [2, 3, 4], [5, 6]]
    else:  # every epoch ends with its own last batch
        want0 = [[0, 1, 2], [3, 4, 5], [6], [0, 1, 2], [3, 4, 5], [6]]
    assert seen == [(0, b) for b in want0] + [(1, [10, 11, 12]), (1, [13])]  # never across tasks
    assert a.pending_y.numel() == 0


def test_carried_partial_batch_is_checkpoint_state(monkeypatch):
    a = tiny("reference", batch_size=3)
    seen = record_batches(a, monkeypatch)
    x, y = marked(range(4))
    a.set_active([0, 1])
    a.learn_stream(DataLoader(TensorDataset(x, y), batch_size=4), 0, 0, False)
    assert seen == [(0, [0, 1, 2])] and a.pending_x[:, 0].tolist() == [3]
    state = a.checkpoint_state()
    b = tiny("reference", batch_size=3)
    seen_b = record_batches(b, monkeypatch)
    b.load_checkpoint_state(state)
    b.learn_stream(DataLoader(TensorDataset(x, y), batch_size=4), 0, 1, True)
    assert seen_b == [(0, [3, 0, 1]), (0, [2, 3])]


# ------------------------------------------------------------------------------------------------ observe
def test_ring_buffer_fill_selection_and_reset():
    a = tiny(n_memories=4, batch_size=3)
    a.set_active([0, 1])
    x1, y1 = marked([1, 2, 3])
    a.observe(x1, y1, 0)
    assert a.ring_count == 3 and len(a.buf_y) == 0
    assert torch.equal(a.ring_x[:3], x1) and a.ring_y[:3].tolist() == y1.tolist()
    x2, y2 = marked([4, 5, 6], [1, 1, 0])
    a.observe(x2, y2, 0)  # only x2[0] fits; R is full -> B <- R with scores 0.1; m <- 0
    assert a.ring_count == 0
    assert a.buf_x[:, 0].tolist() == [1, 2, 3, 4] and a.buf_y.tolist() == [0, 1, 0, 1]
    assert torch.allclose(a.buf_s, torch.full((4,), INITIAL_SCORE)) and a.buf_t.tolist() == [0] * 4
    x3, y3 = marked([7, 8], [0, 1])
    a.observe(x3, y3, 1)
    assert a.ring_count == 2 and a.ring_x[:2, 0].tolist() == [7, 8]
    assert a.ring_x[2:, 0].tolist() == [3, 4]  # stale slots stay until overwritten
    assert a.model.training


def test_sgd_steps_on_the_batch_and_cyclic_buffer_slices(monkeypatch):
    a = tiny(n_iter=4, n_constraints=2, n_memories=10)
    a.set_active([0, 1])
    a.append(*marked([10, 11, 12, 13, 14]), torch.zeros(5), 0)
    calls = []
    monkeypatch.setattr(a, "sgd_step", lambda x, y: calls.append(x[:, 0].tolist()) or 0.0)
    gen_state = a.generator().get_state()
    x, y = marked([1, 2, 3])
    a.observe(x, y, 0)
    perm = torch.randperm(5, generator=torch.Generator().set_state(gen_state))
    mem = [10 + int(i) for i in perm]
    # e = min(2, 5) = 2; slices [0:2], [2:4], [4:5] (q = 3: 6 >= 5 -> q = 0), [0:2]
    assert calls == [[1, 2, 3], mem[0:2], [1, 2, 3], mem[2:4], [1, 2, 3], mem[4:5], [1, 2, 3], mem[0:2]]


def test_sgd_step_is_plain_sgd_on_ce_over_all_outputs():
    a = tiny(lr=0.5)
    a.set_active([0, 1])  # the loss still covers all 4 outputs
    lin = a.model[1]
    W, b = lin.weight.detach().clone(), lin.bias.detach().clone()
    x, y = marked([1, 2])
    p = torch.softmax(x @ W.T + b, 1) - F.one_hot(y, 4).float()
    a.sgd_step(x, y)
    assert torch.allclose(lin.weight.detach(), W - 0.5 * p.T @ x / 2, atol=1e-6)
    assert torch.allclose(lin.bias.detach(), b - 0.5 * p.mean(0), atol=1e-6)


# ------------------------------------------------------------------------------------------------ selection maths
def test_cosine_and_normalised_scores_by_hand():
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0], [-2.0, 0.0]])
    b = torch.tensor([[0.0, 3.0], [2.0, 0.0]])
    r = 1 / math.sqrt(2)
    assert torch.allclose(GSS.cosine(a, b), torch.tensor([[0.0, 1.0], [r, r], [0.0, -1.0]]))
    s = torch.tensor([-0.5, 0.5, 0.0, 0.25])
    assert torch.allclose(GSS.normalised_scores(s), torch.tensor([0.0, 1.0, 0.5, 0.75]) / 1.01)


def linear_grads(agent, x, y):
    """Per-sample gradient of CE for Linear(D, C) by hand: dW = (p - onehot) x^T, db = p - onehot."""
    lin = agent.model[1]
    p = torch.softmax(x @ lin.weight.detach().T + lin.bias.detach(), 1) - F.one_hot(y, agent.n_class).float()
    return torch.cat([(p.unsqueeze(2) * x.unsqueeze(1)).reshape(len(y), -1), p], 1)


def test_per_sample_scores_are_max_cosines_to_hand_made_gradients(monkeypatch):
    a = tiny(n_memories=3, n_sampled_memories=10)
    a.set_active([0, 1])
    a.append(*marked([9, 8, 7]), torch.full((3,), 0.1), 0)  # B non-empty, not full
    G = torch.randn(2, 4 * D + 4, generator=torch.Generator().manual_seed(1))
    monkeypatch.setattr(a, "buffer_gradients", lambda gen: G)
    x, y = marked([1, -2, 3], [0, 1, 1])
    a.observe(x, y, 2)
    g = linear_grads(a, x, y)  # R == x here; weights as at the selection (after the steps)
    cos = (g @ G.T) / (g.norm(dim=1, keepdim=True) * G.norm(dim=1))
    assert torch.allclose(a.buf_s[3:], cos.max(1).values, atol=1e-5)
    assert a.buf_x[3:, 0].tolist() == [1, -2, 3] and a.buf_t.tolist() == [0, 0, 0, 2, 2, 2]


def test_buffer_gradients_are_disjoint_minibatches_of_a_new_permutation():
    a = tiny(n_constraints=2, memory_strength=5)
    a.set_active([0, 1])
    a.append(*marked([1, 2, 3, 4, 5], [0, 1, 1, 0, 1]), torch.zeros(5), 0)
    a.model.eval()
    gen = a.generator()
    state = gen.get_state()
    G = a.buffer_gradients(gen)
    perm = torch.randperm(5, generator=torch.Generator().set_state(state))
    assert G.shape == (3, 4 * D + 4)  # [0:2], [2:4], [4:5]: the permutation is exhausted before n = 5
    for i, sl in enumerate([perm[0:2], perm[2:4], perm[4:5]]):
        want = linear_grads(a, a.buf_x[sl], a.buf_y[sl]).mean(0)
        assert torch.allclose(G[i], want, atol=1e-6)
    b = tiny(n_constraints=2, memory_strength=2)
    b.append(*marked([1, 2, 3, 4, 5]), torch.zeros(5), 0)
    assert b.buffer_gradients(b.generator()).shape[0] == 2  # at most memory_strength


@pytest.mark.parametrize("backbone", ["mlp", "resnet"])
def test_vectorised_per_sample_gradients_equal_the_loop(backbone):
    a = real(own_backbone=backbone, freeze_feature_extract=False)
    a.set_active([0, 1, 2, 3])
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 3, 1, 1])
    if backbone == "resnet":  # non-trivial running statistics: eval-mode BatchNorm must use them
        a.model.train()
        with torch.no_grad():
            a.model(torch.randn(8, 3, 32, 32) * 2 + 1)
    a.model.eval()
    vec = a.per_sample_gradients(x, y)
    loop = torch.stack([a.flat_grad(x[i:i + 1], y[i:i + 1]) for i in range(4)])
    assert vec.shape == loop.shape == (4, sum(p.numel() for p in a.model.parameters()))
    assert torch.allclose(vec, loop, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(vec[0], vec[1])


def test_per_sample_gradients_with_a_frozen_front():
    a = real(own_backbone="mlp", freeze_feature_extract=True)
    a.model.eval()
    x, y = torch.randn(3, 3, 32, 32), torch.tensor([1, 0, 2])
    vec = a.per_sample_gradients(x, y)
    assert vec.shape == (3, 100 * 4 + 4)
    loop = torch.stack([a.flat_grad(x[i:i + 1], y[i:i + 1]) for i in range(3)])
    assert torch.allclose(vec, loop, atol=1e-6)


def test_replacement_draw_probabilities():
    gen = torch.Generator().manual_seed(0)
    n = 20000
    for c, s in ((0.5, -0.5), (-0.8, 0.6), (0.0, 0.0)):
        hits = GSS.draw_replacements(torch.full((n,), c), torch.full((n,), s), gen)
        want = (s + 1) / (c + s + 2)  # the second entry: replace the slot
        assert float(hits.float().mean()) == pytest.approx(want, abs=0.015)
    # certain outcomes: c = -1 always replaces, s = -1 never does
    assert GSS.draw_replacements(torch.full((50,), -1.0), torch.full((50,), 0.3), gen).all()
    assert not GSS.draw_replacements(torch.full((50,), 0.3), torch.full((50,), -1.0), gen).any()


def test_slot_draw_proportional_to_normalised_scores_without_replacement():
    gen = torch.Generator().manual_seed(0)
    s = torch.tensor([0.0, 1.0, 0.5, 0.25])
    counts = torch.zeros(4)
    for _ in range(3000):
        counts[GSS.draw_slots(s, 1, gen)] += 1
    w = GSS.normalised_scores(s)
    assert counts[0] == 0  # the lowest score has weight 0
    assert torch.allclose(counts / counts.sum(), w / w.sum(), atol=0.03)
    for _ in range(20):
        assert sorted(GSS.draw_slots(s, 3, gen).tolist()) == [1, 2, 3]  # distinct, never slot 0
    # all scores equal: s^ = 0 everywhere, where the adapted code's multinomial fails; the draw is uniform
    assert sorted(GSS.draw_slots(torch.full((4,), 0.1), 4, gen).tolist()) == [0, 1, 2, 3]


# ------------------------------------------------------------------------------------------------ the full buffer
def full_agent(fidelity, **hp):
    """B full (M = 4, scores 0.1..0.4), R (n_mem = 2) holding one carried-over sample (marker 100)."""
    a = tiny(fidelity, n_memories=2, n_sampled_memories=4, batch_size=3, **hp)
    a.set_active([0, 1, 2, 3])
    a.append(*marked([-1, -2, -3, -4], [0, 0, 0, 0]), torch.tensor([0.1, 0.2, 0.3, 0.4]), 0)
    a.ring_x = torch.zeros(2, D)
    a.ring_y = torch.zeros(2, dtype=torch.long)
    xr, yr = marked([100], [3])
    a.ring_x[0], a.ring_y[0] = xr[0], yr[0]
    a.ring_count = 1
    return a


def test_quirk12_switch_flips_which_samples_enter(monkeypatch):
    ks = []
    monkeypatch.setattr(GSS, "draw_slots", staticmethod(lambda s, k, gen: ks.append(k) or torch.tensor([2, 0])[:k]))
    monkeypatch.setattr(GSS, "draw_replacements", staticmethod(lambda c, s, gen: torch.ones(len(c), dtype=torch.bool)))
    scores = {}
    for fidelity in ("reference", "corrected"):
        a = full_agent(fidelity, change_th=1.0)  # cos < 1: the full buffer always changes
        x, y = marked([1, 2, 3], [1, 2, 1])
        a.observe(x, y, 1)  # R = [marker 100 (carried over), x[0]]; |x| = 3 > n_mem = 2: k = 2 pairs
        assert a.ring_count == 0 and len(a.buf_y) == 4
        if fidelity == "reference":  # the batch's samples x[0], x[1] (with R's scores)
            assert a.buf_x[:, 0].tolist() == [2, -2, 1, -4] and a.buf_y.tolist() == [2, 0, 1, 0]
        else:  # R's samples: the carried-over 100 and x[0]
            assert a.buf_x[:, 0].tolist() == [1, -2, 100, -4] and a.buf_y.tolist() == [1, 0, 3, 0]
        assert a.buf_t.tolist() == [1, 0, 1, 0]
        assert a.buf_s[[1, 3]].tolist() == pytest.approx([0.2, 0.4])  # untouched slots keep their scores
        scores[fidelity] = a.buf_s[[2, 0]]
        assert torch.all(scores[fidelity].abs() <= 1)
    assert ks == [2, 2]
    assert torch.allclose(scores["reference"], scores["corrected"])  # c_0, c_1 of R in both


def test_full_buffer_unchanged_unless_the_batch_gradient_is_dissimilar():
    a = full_agent("reference", change_th=-1.0)  # c_batch < -1 is impossible
    before = a.buf_x.clone(), a.buf_s.clone()
    a.observe(*marked([1, 2, 3], [1, 2, 1]), 1)
    assert torch.equal(a.buf_x, before[0]) and torch.equal(a.buf_s, before[1]) and a.ring_count == 0


def test_buffer_never_exceeds_capacity():
    a = tiny(n_memories=3, n_sampled_memories=7, batch_size=3, change_th=1.0)
    a.set_active([0, 1])
    g = torch.Generator().manual_seed(0)
    sizes = []
    for i in range(12):
        a.observe(torch.randn(3, D, generator=g), torch.randint(0, 2, (3,), generator=g), 0)
        sizes.append(len(a.buf_y))
        assert len(a.buf_x) == len(a.buf_s) == len(a.buf_t) == len(a.buf_y)
    assert sizes[:3] == [3, 6, 7] and max(sizes) == 7  # 3 (scores 0.1), +3, +1 (cut at M), then replacements
    assert a.memory_bytes()["buffer"] == 7 * (D * 4 + 16)


# ------------------------------------------------------------------------------------------------ predict, memory
def test_predict_is_the_argmax_over_all_outputs():
    a = tiny()
    a.set_active([0, 1])
    with torch.no_grad():
        a.model[1].weight.copy_(torch.eye(4, D))
        a.model[1].bias.zero_()
    x = torch.tensor([[0.0, 0.0, 5.0], [3.0, 1.0, 0.0]])
    assert a.predict(x)["acc"].tolist() == [2, 0]  # class 2 is not active yet, still predicted


def test_memory_bytes_as_the_adapted_code_stores_them():
    a = real(n_memories=3, n_sampled_memories=5)
    assert a.memory_bytes() == {"buffer": 0, "ring_buffer": 0}
    a.set_active([0, 1])
    a.observe(torch.randn(3, 3, 32, 32), torch.tensor([0, 1, 0]), 0)
    assert a.memory_bytes() == {"buffer": 3 * 12_304, "ring_buffer": 3 * 12_296}


# ------------------------------------------------------------------------------------------------ end to end
HP = {"batch_size": 6, "n_memories": 6, "n_sampled_memories": 12, "n_constraints": 4, "memory_strength": 2,
      "n_iter": 2, "lr": 0.01, "n_epoch_first_task": 2, "n_epoch": 1, "n_workers": 0, "weights": "none",
      "image_size": 32}


def run_job(files, out, hp, fidelity, **kw):
    return run_agent_job(GSS, "gss", files, out, {**HP, **hp}, fidelity, **kw)


metrics = metrics_without_timing


def test_checkpoint_resume_identical(tiny_files, tmp_path):
    hp = {"batch_size": 5, "n_memories": 4}  # 24 images per task: a batch straddles task 0's epochs
    _, full = run_job(tiny_files, tmp_path / "full", hp, "reference")
    out = tmp_path / "resumed"
    assert run_job(tiny_files, out, hp, "reference", stop_after_task=0)[0] is None
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert len(state["agent"]["extra"]["gss"]["buf_y"]) == 12
    _, resumed = run_job(tiny_files, out, hp, "reference")
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    for k in ("buf_x", "buf_y", "buf_s", "buf_t", "ring_x", "ring_y"):
        assert torch.equal(getattr(full, k), getattr(resumed, k)), k
    assert full.ring_count == resumed.ring_count
    assert metrics(out) == metrics(tmp_path / "full")


@pytest.mark.parametrize("backbone", ["mlp", "resnet"])
def test_end_to_end_own_network_32px(backbone, tiny_files, tmp_path):
    hp = {"own_backbone": backbone}
    if backbone == "resnet":
        hp.update(batch_size=12, n_memories=12, n_iter=1)
    m, agent = run_job(tiny_files, tmp_path / backbone, hp, "reference")
    assert m["meta"]["image_size"] == 32 and m["primary_path"] == "acc"
    assert [t["n_epoch"] for t in m["tasks"]] == [2, 1]
    assert m["memory_bytes"] == {"buffer": 12 * 12_304, "ring_buffer": hp.get("n_memories", 6) * 12_296}
    assert len(agent.buf_y) == 12 and set(agent.buf_t.tolist()) <= {0, 1}
    assert len(m["test_all"]["acc"]) == 2 and all(0 <= v <= 100 for v in m["test_all"]["acc"])
    assert all(math.isfinite(v) for v in agent.model[1].weight.flatten().tolist())


def test_end_to_end_study_network(tiny_files, tmp_path):
    m, agent = run_job(tiny_files, tmp_path / "study", {"network": "study", "batch_size": 12, "n_memories": 12,
                                                         "n_iter": 1}, "corrected")
    assert m["meta"]["image_size"] == 32 and not agent.own_network
    assert agent.buf_x.shape[1:] == (3, 32, 32)
    assert m["memory_bytes"]["buffer"] == 12 * (3 * 32 * 32 * 4 + 16)
    assert len(m["test_all"]["acc"]) == 2 and all(0 <= v <= 100 for v in m["test_all"]["acc"])
    agent.model.eval()  # SqueezeNet (in-place ReLUs, dropout off in eval mode): vectorised == the loop
    x, y = agent.buf_x[:3], agent.buf_y[:3]
    loop = torch.stack([agent.flat_grad(x[i:i + 1], y[i:i + 1]) for i in range(3)])
    assert torch.allclose(agent.per_sample_gradients(x, y), loop, atol=1e-5, rtol=1e-4)
