"""Stable SGD (spec 14.1): lr schedule, a new optimiser per epoch, task masking, the three output paths, both switches,
checkpoint/resume and short end-to-end runs on the own (32 px) and the study network."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from augmem.agents.stable_sgd import FILL, StableSGD
from augmem.io import InputError
from augmem.train.fidelity import train_switches
from .jobs import metrics_without_timing, run_agent_job

pytestmark = pytest.mark.usefixtures("one_torch_thread")

D = 3  # inputs of the tiny linear model


class Passthrough(nn.Module):
    """The identity, with a parameter for the optimiser."""

    def __init__(self):
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return x


def tiny(model: str = "linear", fidelity: str = "reference", n_class: int = 6, overrides=None, **hp):
    """StableSGD whose own network is Flatten + Linear(D, n_out) ("linear") or the identity ("identity": the inputs
    are the logits)."""

    class Tiny(StableSGD):
        def build_own_network(self):
            if model == "identity":
                return nn.Sequential(nn.Identity(), Passthrough())
            return nn.Sequential(nn.Flatten(), nn.Linear(D, self.n_out))

    torch.manual_seed(0)
    return Tiny(n_class, {"batch_size": 4, **hp}, train_switches(fidelity, overrides))


def real(fidelity="reference", n_class=6, overrides=None, **hp):
    torch.manual_seed(0)
    return StableSGD(n_class, {"batch_size": 4, **hp}, train_switches(fidelity, overrides))


def activate(agent, n_tasks: int, per_task: int = 2):
    for t in range(n_tasks):
        agent.set_active(list(range(per_task * (t + 1))))


# ------------------------------------------------------------------------------------------------ hyperparameters
def test_declared_defaults_are_the_adapted_codes():
    hp = StableSGD.check_hparams({})
    assert (hp["lr"], hp["lr_decay"], hp["batch_size"], hp["dropout"], hp["momentum"], hp["min_lr"]) == \
        (0.1, 0.85, 128, 0.1, 0.8, 5e-5)
    assert (hp["variant"], hp["network"], hp["weight_decay"], hp["optimizer"], hp["n_epoch"]) == \
        ("package", "own", 0.0, "SGD", 1)
    with pytest.raises(InputError, match="variant"):
        StableSGD.check_hparams({"variant": "both"})
    with pytest.raises(InputError, match="optimizer"):
        StableSGD.check_hparams({"optimizer": "Adam"})


# ------------------------------------------------------------------------------------------------ schedule
def test_lr_schedule_per_task_already_decayed_at_the_first_task():
    a = tiny(lr=0.1, lr_decay=0.85)
    assert [a.task_lr(t) for t in range(3)] == pytest.approx([0.085, 0.07225, 0.0614125], rel=1e-12)
    b = tiny(lr=0.015, lr_decay=0.85)  # Toybox's published settings
    assert b.task_lr(0) == pytest.approx(0.01275) and b.task_lr(5) == pytest.approx(0.015 * 0.85**6)
    c = tiny(lr=1e-4, lr_decay=0.5)  # the floor 5e-5
    assert [c.task_lr(t) for t in range(3)] == [5e-5, 5e-5, 5e-5]
    d = tiny(lr=1e-4, lr_decay=0.9, min_lr=1e-6)
    assert d.task_lr(1) == pytest.approx(1e-4 * 0.81)


def image_task(labels, n=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.tensor([labels[i % len(labels)] for i in range(n)])
    return TensorDataset(torch.randn(n, 3, 4, 4, generator=g), y)


class Images(StableSGD):
    """A linear model on 3 x 4 x 4 images (flip + crop augmentation of the own network works on them)."""

    def build_own_network(self):
        return nn.Sequential(nn.Flatten(), nn.Linear(48, self.n_out))


def test_new_sgd_every_epoch_momentum_reset_and_lr_of_the_task():
    torch.manual_seed(0)
    a = Images(4, {"batch_size": 3, "lr": 0.2, "lr_decay": 0.5, "momentum": 0.8}, train_switches("reference"))
    seen = []  # (task, epoch, optimiser, its state size before the step)
    orig = a.train_batch

    def spy(x, y, keep):
        seen.append((a.now, a.optimizer, len(a.optimizer.state)))
        return orig(x, y, keep)

    a.train_batch = spy
    for t, labels in enumerate(([0, 1], [2, 3])):
        a.set_active(list(range(2 * t + 2)))
        loader = DataLoader(image_task(labels, seed=t), batch_size=3)
        for e in range(2):
            a.now = (t, e)
            a.learn_stream(loader, t, e, e == 1)
    epochs = [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert [k for k, _, _ in seen] == [k for k in epochs for _ in range(3)]  # 10 images, batch 3, last dropped
    opts = [next(o for k, o, _ in seen if k == ep) for ep in epochs]
    assert all(opts[i] is not opts[j] for i in range(4) for j in range(i))  # one optimiser per epoch
    for ep, opt in zip(epochs, opts):
        sizes = [n for k, o, n in seen if k == ep]
        assert all(o is opt for k, o, _ in seen if k == ep)
        assert sizes[0] == 0 and all(n > 0 for n in sizes[1:])  # empty momentum buffer at each epoch start
        g = opt.param_groups[0]
        assert g["lr"] == pytest.approx(0.2 * 0.5 ** (ep[0] + 1))
        assert (g["momentum"], g["weight_decay"]) == (0.8, 0.0)


# ------------------------------------------------------------------------------------------------ masking
def head(agent):
    return agent.model[1]


def test_masked_loss_is_ce_over_the_block_and_masked_logits_get_no_gradient():
    a = tiny("linear", "reference", variant="toplevel")  # 100 outputs, blocks of 2
    activate(a, 2)
    assert a.train_block(1) == [2, 3]
    x = torch.tensor([[1.0, -2.0, 0.5], [0.3, 0.1, -1.0], [2.0, 1.0, 1.0], [-1.0, 0.5, 0.2]])
    y = torch.tensor([2, 3, 3, 2])
    W, b = head(a).weight.detach().clone(), head(a).bias.detach().clone()
    z = x @ W.T + b
    zb = z[:, [2, 3]]
    want = -torch.log_softmax(zb, 1)[torch.arange(4), y - 2].mean()
    loss = a.train_batch(x, y, a.keep_mask(a.train_block(1)))
    assert loss == pytest.approx(float(want), rel=1e-5)
    # gradient: (softmax over the block - one-hot) x / B on rows 2, 3; exactly 0 on every other row
    p = torch.softmax(zb, 1) - F.one_hot(y - 2, 2).float()
    gw = head(a).weight.grad
    assert torch.allclose(gw[[2, 3]], p.T @ x / 4, atol=1e-6)
    assert torch.allclose(head(a).bias.grad[[2, 3]], p.sum(0) / 4, atol=1e-6)
    others = [c for c in range(100) if c not in (2, 3)]
    assert torch.count_nonzero(gw[others]) == 0 and torch.count_nonzero(head(a).bias.grad[others]) == 0


def test_fill_is_on_the_data_only():
    z = torch.tensor([[1.0, 2.0, 3.0]], requires_grad=True)
    keep = torch.tensor([False, True, True])
    out = StableSGD.fill_outside(z, keep)
    assert out[0, 0] == FILL and torch.equal(out[0, 1:], z[0, 1:].detach())
    assert z[0, 0] == 1.0  # the input is untouched
    (out * torch.tensor([[5.0, 1.0, 1.0]])).sum().backward()
    assert torch.equal(z.grad, torch.tensor([[5.0, 1.0, 1.0]]))  # identity gradient through the fill


def test_package_blocks_of_5_miss_the_labels_of_2_class_tasks_in_reference():
    """Quirk 2: task 1's block is [5, 10) while its labels are 2, 3. The filled label logit still gets its gradient
    (-1 per image: the fill is on the data only), the block's logits their softmax."""
    a = tiny("linear", "reference", variant="package")
    activate(a, 2)
    assert a.train_block(1) == [5, 6, 7, 8, 9]
    x = torch.tensor([[1.0, -2.0, 0.5], [0.3, 0.1, -1.0]])
    y = torch.tensor([2, 3])
    W, b = head(a).weight.detach().clone(), head(a).bias.detach().clone()
    zb = (x @ W.T + b)[:, 5:10]
    loss = a.train_batch(x, y, a.keep_mask(a.train_block(1)))
    assert loss == pytest.approx(1e11 + float(torch.logsumexp(zb, 1).mean()), rel=1e-6)
    gw = head(a).weight.grad
    assert torch.allclose(gw[2], -x[0] / 2) and torch.allclose(gw[3], -x[1] / 2)
    assert torch.allclose(gw[5:10], torch.softmax(zb, 1).T @ x / 2, atol=1e-6)
    rest = [c for c in range(100) if c not in (2, 3, 5, 6, 7, 8, 9)]
    assert torch.count_nonzero(gw[rest]) == 0
    # corrected: the block is the task's classes (2, 3): an ordinary 2-way loss
    c = tiny("linear", "corrected", variant="package")
    activate(c, 2)
    assert c.train_block(1) == [2, 3] and head(c).out_features == 6
    assert c.train_batch(x, y, c.keep_mask(c.train_block(1))) < 10


# ------------------------------------------------------------------------------------------------ prediction paths
def logits_rows(n_out):
    z = torch.zeros(3, 10)
    # label 2 (task 1): global max at 5 (never seen in toplevel), seen max at 0, task-[2, 3] max at 3, in [5, 10) at 7
    z[0, 5], z[0, 0], z[0, 3], z[0, 2], z[0, 7] = 9.0, 5.0, 2.0, 1.0, 0.5
    # label 4 (task 2): max at 1 (seen, task 0), then 4 > 5
    z[1, 1], z[1, 4], z[1, 5] = 4.0, 3.0, 1.0
    # label 1 (task 0): max at 1
    z[2, 1], z[2, 0] = 2.0, 1.0
    return z[:, :n_out]


def test_three_paths_on_hand_made_logits_reference_toplevel():
    a = tiny("identity", "reference", variant="toplevel")  # 100 outputs, blocks of 2
    activate(a, 3)
    x = torch.zeros(3, 100)
    x[:, :6] = logits_rows(6)
    x[0, 50] = 20.0  # a never-used output of the 100
    y = torch.tensor([2, 4, 1])
    out = a.predict(x, y)
    assert list(out) == ["ti", "acc", "ci100"] and a.primary_path == "ti"
    assert out["ci100"].tolist() == [50, 1, 1]
    assert out["acc"].tolist() == [5, 1, 1]  # seen classes 0..5
    assert out["ti"].tolist() == [3, 4, 1]  # blocks [2, 4), [4, 6), [0, 2)


def test_three_paths_reference_package_blocks_of_5():
    a = tiny("identity", "reference", variant="package")
    activate(a, 3)
    x = torch.zeros(3, 100)
    x[:, :10] = logits_rows(10)
    out = a.predict(x, torch.tensor([2, 4, 1]))
    assert list(out) == ["ci100", "acc", "ti"]
    # ti: label 2 is task 1 -> block [5, 10): 5; label 4 is task 2 -> block [10, 15), all 0 -> first (10);
    # label 1 is task 0 -> block [0, 5): 1
    assert out["ti"].tolist() == [5, 10, 1]
    assert out["ci100"].tolist() == [5, 1, 1] and out["acc"].tolist() == [5, 1, 1]


def test_three_paths_corrected_c_outputs():
    a = tiny("identity", "corrected", variant="toplevel")
    activate(a, 2)  # seen 0..3 of 6
    z = logits_rows(6)
    out = a.predict(z[:1], torch.tensor([2]))
    assert list(out) == ["acc", "ci100", "ti"] and a.primary_path == "acc"
    assert out["ci100"].tolist() == [5]  # over all C outputs, class 5 never seen
    assert out["acc"].tolist() == [0]  # over the seen classes 0..3
    assert out["ti"].tolist() == [3]  # the image's task's classes [2, 3]


def test_predict_needs_labels_for_ti_and_evaluate_passes_them():
    a = tiny("identity", "reference", variant="toplevel")
    activate(a, 1)
    x = torch.zeros(2, 100)
    x[0, 1], x[1, 0] = 1.0, 1.0
    with pytest.raises(ValueError, match="needs the true labels"):
        a.predict(x)
    assert set(a.predict(x, paths=["acc", "ci100"])) == {"acc", "ci100"}
    with pytest.raises(ValueError, match="belong to no task"):
        a.predict(x, torch.tensor([1, 3]))
    acc = a.evaluate(DataLoader(TensorDataset(x, torch.tensor([1, 0])), batch_size=2))
    assert acc == {"ti": 100.0, "acc": 100.0, "ci100": 100.0}
    assert a.memory_bytes() == {}


# ------------------------------------------------------------------------------------------------ switches
def test_switch_fixed_blocks():
    on = real("reference", variant="package")
    off = real("reference", variant="package", overrides={"stable_sgd_fixed_blocks": False})
    assert head(on).out_features == 100 and head(off).out_features == 6
    for a in (on, off):
        activate(a, 2)
    assert (on.eval_block(0), on.train_block(1), on.eval_block(1)) == ([0, 1, 2, 3, 4], [5, 6, 7, 8, 9],
                                                                        [5, 6, 7, 8, 9])
    assert (off.eval_block(0), off.train_block(1), off.eval_block(1)) == ([0, 1], [2, 3], [2, 3])
    assert on.primary_path == off.primary_path == "ci100"  # nothing else changes
    top = real("reference", variant="toplevel")
    activate(top, 2)
    assert top.train_block(1) == [2, 3] and head(top).out_features == 100
    # the study network has C outputs: the block is the task's classes whatever the switch
    study = real("reference", variant="package", network="study", image_size=32)
    activate(study, 2)
    assert study.n_out == 6 and study.train_block(1) == [2, 3]
    with torch.no_grad():
        assert study.model.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 6)


def test_switch_variant_eval():
    for variant, ref_primary in (("package", "ci100"), ("toplevel", "ti")):
        on = tiny("identity", "reference", variant=variant)
        off = tiny("identity", "reference", variant=variant, overrides={"stable_sgd_variant_eval": False})
        assert on.primary_path == ref_primary and off.primary_path == "acc"
        assert set(on.output_paths()) == set(off.output_paths()) == {"acc", "ci100", "ti"}
        for a in (on, off):
            activate(a, 3)
        x = torch.zeros(3, 100)
        x[:, :10] = logits_rows(10)
        y = torch.tensor([2, 4, 1])
        p_on, p_off = on.predict(x, y), off.predict(x, y)
        assert list(p_on)[0] == ref_primary and list(p_off)[0] == "acc"
        assert all(torch.equal(p_on[k], p_off[k]) for k in p_on)  # the same predictions, another headline
    assert real("corrected", variant="toplevel").primary_path == "acc"


# ------------------------------------------------------------------------------------------------ end to end
HP = {"batch_size": 8, "n_epoch_first_task": 2, "n_epoch": 1, "n_workers": 0, "weights": "none", "image_size": 32}


def run_job(files, out, hp, fidelity, **kw):
    return run_agent_job(StableSGD, "stable_sgd", files, out, {**HP, **hp}, fidelity, **kw)


metrics = metrics_without_timing


def test_checkpoint_resume_identical(tiny_files, tmp_path):
    hp = {"variant": "toplevel", "lr": 0.05}
    _, full = run_job(tiny_files, tmp_path / "full", hp, "reference")
    out = tmp_path / "resumed"
    assert run_job(tiny_files, out, hp, "reference", stop_after_task=0)[0] is None
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["agent"]["extra"]["task_classes"] == [[0, 1]]
    _, resumed = run_job(tiny_files, out, hp, "reference")
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    assert metrics(out) == metrics(tmp_path / "full")


def test_end_to_end_own_network_32px(tiny_files, tmp_path):
    m, agent = run_job(tiny_files, tmp_path / "own", {"variant": "package"}, "reference")
    assert m["primary_path"] == "ci100" and m["paths"] == ["ci100", "acc", "ti"]
    assert m["meta"]["image_size"] == 32 and m["memory_bytes"] == {} and m["memory_bytes_total"] == 0
    assert head(agent).out_features == 100 and agent.task_classes == [[0, 1], [2, 3]]
    assert [t["n_epoch"] for t in m["tasks"]] == [2, 1]
    for p in m["paths"]:
        assert len(m["test_all"][p]) == 2 and all(0 <= v <= 100 for v in m["test_all"][p])
    assert all(math.isfinite(v) for v in agent.model.state_dict()["1.weight"].flatten().tolist())


def test_end_to_end_study_network(tiny_files, tmp_path):
    m, agent = run_job(tiny_files, tmp_path / "study", {"network": "study", "lr": 1e-3, "variant": "toplevel"},
                       "corrected")
    assert m["primary_path"] == "acc" and m["paths"] == ["acc", "ci100", "ti"]
    assert m["meta"]["image_size"] == 32 and agent.n_out == 4 and agent.own_network is False
    with torch.no_grad():
        assert agent.model.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 4)
    for p in m["paths"]:
        assert len(m["test_all"][p]) == 2 and all(0 <= v <= 100 for v in m["test_all"][p])


def test_result_notes_name_the_headline_protocol():
    """The results table footnotes a reference headline that is not the study's class-incremental accuracy (q1)."""
    assert "task-incremental" in tiny(variant="toplevel").result_notes()[0]
    assert "all 100 outputs" in tiny(variant="package").result_notes()[0]
    assert tiny(fidelity="corrected", variant="toplevel").result_notes() == []
