"""BiC (spec 14.3): stage-1 loss, bias layers, stage 2, exemplars, training set, teacher, resume, end-to-end."""
from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from augmem.agents.bic import BiC
from augmem.data.cache_plan import OWN_NETWORKS
from augmem.train.fidelity import train_switches
from augmem.train.loop import run_stream
from augmem.train.seeding import seed_everything

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------------------------------------------ helpers
def tiny(fidelity="reference", n_class=10, d_in=10, model=None, **hp_over):
    """BiC on a Flatten + Linear(d_in, n_class) network (or ``model``), study inputs (no augmentation)."""
    switch_over = hp_over.pop("switches", None)

    class Tiny(BiC):
        def build_model(self):
            return model if model is not None else nn.Sequential(nn.Flatten(), nn.Linear(d_in, n_class))

    torch.manual_seed(0)
    hp = {"network": "study", "weights": "none", "lr": 0.05, "momentum": 0.0, "weight_decay": 0.0,
          "batch_size": 4, **hp_over}
    return Tiny(n_class, hp, train_switches(fidelity, switch_over))


def set_linear(lin: nn.Linear, scale: float) -> None:
    with torch.no_grad():
        lin.weight.copy_(scale * torch.eye(lin.out_features, lin.in_features))
        lin.bias.zero_()


def task_data(labels, per_class=6, d_in=10, seed=0):
    """Images of the given labels, interleaved (label order repeats), separable."""
    g = torch.Generator().manual_seed(seed)
    y = torch.tensor([labels[i % len(labels)] for i in range(per_class * len(labels))])
    x = torch.randn(len(y), d_in, generator=g) * 0.3
    x[torch.arange(len(y)), y] += 2.0
    return TensorDataset(x, y)


def run_tasks(agent, tasks, n_epoch=1, start=0, batch=4):
    for t, ds in enumerate(tasks, start=start):
        agent.set_active(sorted(set(agent.active) | set(ds.tensors[1].tolist())))
        for e in range(n_epoch):
            agent.learn_stream(DataLoader(ds, batch_size=batch), t, e, e == n_epoch - 1)


# pure-Python references for the hand computations
def log_softmax(row):
    m = max(row)
    lse = m + math.log(sum(math.exp(v - m) for v in row))
    return [v - lse for v in row]


def softmax(row):
    return [math.exp(v) for v in log_softmax(row)]


def hand_loss(z, zt, y, seen, cols, alpha, T):
    """T^2 * KD + (1 - alpha) * CE over python lists (z, zt: rows of all C logits after the bias layers)."""
    n = len(z)
    ce = -sum(log_softmax([r[c] for c in seen])[seen.index(lab)] for r, lab in zip(z, y)) / n
    kd = 0.0
    for r, rt in zip(z, zt):
        p = softmax([rt[c] / T for c in cols])
        lq = log_softmax([r[c] / T for c in cols])
        kd -= sum(pi * li for pi, li in zip(p, lq))
    return T * T * kd / n + (1 - alpha) * ce


def apply_bias(row, pairs):
    """pairs: [(columns, alpha, beta)]."""
    row = list(row)
    for cols, a, b in pairs:
        for c in cols:
            row[c] = a * row[c] + b
    return row


# ------------------------------------------------------------------------------------------------------ network
def test_own_network_is_the_study_squeezenet_behind_renormalize():
    assert OWN_NETWORKS["BiC"] == (32, True) and BiC.name == "BiC"
    assert "cls_num = classes-per-task" in BiC.reference_note
    torch.manual_seed(0)
    own = BiC(6, {"weights": "none", "network": "own"}, train_switches("reference"))
    torch.manual_seed(0)
    study = BiC(6, {"weights": "none", "network": "study"}, train_switches("corrected"))
    from augmem.agents.external import Renormalize

    assert isinstance(own.model[0][0], Renormalize)
    head = own.model[1][1][1]
    assert isinstance(head, nn.Conv2d) and head.in_channels == 512 and head.out_channels == 6
    assert head.kernel_size == (3, 3) and head.padding == (1, 1)
    # same weights (same seed), the own network only renormalises its input first
    x = torch.randn(2, 3, 32, 32)
    own.model.eval()
    study.model.eval()
    with torch.no_grad():
        assert torch.allclose(own.model(x), study.model(own.model[0][0](x)), atol=1e-5)
        assert own.model(x).shape == (2, 6) and (own.model(x) >= 0).all()  # post-ReLU, pooled


def test_hp_defaults_are_the_adapted_codes():
    a = BiC(4, {"weights": "none"}, train_switches("reference"))
    hp = a.hp
    assert (hp["optimizer"], hp["lr"], hp["momentum"], hp["weight_decay"]) == ("SGD", 0.001, 0.9, 0.0002)
    assert (hp["batch_size"], hp["n_epoch_first_task"], hp["n_epoch"]) == (128, 15, 1)
    assert hp["network"] == "own" and a.own_network
    assert a.temperature == 5.0
    assert BiC(4, {"weights": "none"}, train_switches("corrected")).temperature == 2.0
    assert BiC(4, {"weights": "none", "temperature": 3}, train_switches("reference")).temperature == 3.0
    from augmem.io import InputError

    with pytest.raises(InputError, match="keep_best_task1_net"):
        BiC(4, {"weights": "none", "keep_best_task1_net": True, "n_epoch_first_task": 2}, train_switches("reference"))


# ------------------------------------------------------------------------------------------------------ bias layers
def test_bias_forward_by_hand_fixed_blocks_vs_per_task():
    z = torch.arange(12, dtype=torch.float32).view(1, 12) + 1.0
    ref = tiny("reference", n_class=12, d_in=12)
    cor = tiny("corrected", n_class=12, d_in=12)
    for a in (ref, cor):
        for t in range(3):
            a.set_active(list(range(2 * t + 2)))
    assert len(ref.bias_layers) == 3  # ceil(12 / 5)
    assert len(cor.bias_layers) == 3  # one pair per task so far
    for a in (ref, cor):
        with torch.no_grad():
            a.bias_layers[1].alpha.fill_(3.0)
            a.bias_layers[1].beta.fill_(-1.0)
            a.bias_layers[2].alpha.fill_(0.5)
    row = z[0].tolist()
    # reference: layer 1 -> columns 5..9, layer 2 -> columns 10..11
    want_ref = apply_bias(row, [(range(5, 10), 3.0, -1.0), (range(10, 12), 0.5, 0.0)])
    # corrected: pair 1 -> task 1's classes {2, 3}, pair 2 -> task 2's {4, 5}
    want_cor = apply_bias(row, [([2, 3], 3.0, -1.0), ([4, 5], 0.5, 0.0)])
    assert ref.bias_forward(z)[0].tolist() == pytest.approx(want_ref)
    assert cor.bias_forward(z)[0].tolist() == pytest.approx(want_cor)
    assert ref.layer_columns(1) == [5, 6, 7, 8, 9] and cor.layer_columns(1) == [2, 3]
    # predictions pass the bias layers
    x = torch.eye(12)[:1] * 5
    set_linear(cor.model[1], 1.0)
    assert cor.forward(x)[0].tolist() == pytest.approx(apply_bias((x[0]).tolist(), [([2, 3], 3.0, -1.0),
                                                                                      ([4, 5], 0.5, 0.0)]))


# ------------------------------------------------------------------------------------------------------ stage 1
def two_task_agent(fidelity, n_class, old, new, bias_pair0=(2.0, 0.5), **over):
    """An agent that has seen ``old`` classes (task 0) and now learns ``new`` (task 1), with a known teacher:
    model z = x (identity), teacher z = 2x, bias layer 0 = bias_pair0."""
    a = tiny(fidelity, n_class=n_class, d_in=n_class, **over)
    a.set_active(old)
    a.set_active(old + new)
    a.prev_active = list(old)
    set_linear(a.model[1], 1.0)
    a.teacher = copy.deepcopy(a.model)
    set_linear(a.teacher[1], 2.0)
    with torch.no_grad():
        a.bias_layers[0].alpha.fill_(bias_pair0[0])
        a.bias_layers[0].beta.fill_(bias_pair0[1])
    return a


def test_stage1_loss_by_hand_s4_two_old_reference_vs_corrected():
    x = torch.tensor([[0.3, -0.2, 1.0, 0.4, 0.1, 0.7, 0.0, -0.5, 0.2, 0.9],
                      [1.1, 0.5, -0.3, 0.0, 0.8, -0.1, 0.6, 0.2, -0.4, 0.3]])
    y = torch.tensor([2, 3])
    seen = [0, 1, 2, 3]
    got = {}
    for fid in ("reference", "corrected"):
        a = two_task_agent(fid, 10, [0, 1], [2, 3])
        got[fid] = float(a.stage1_loss(x, y).detach())
    rows, trows = x.tolist(), (2 * x).tolist()
    # reference: block layer 0 = columns 0..4; T = 5; alpha = (4 - 5) / 4 -> 1 - alpha = 1.25; distil [:S-2] = {0, 1}
    ref_pairs = [(range(0, 5), 2.0, 0.5)]
    want_ref = hand_loss([apply_bias(r, ref_pairs) for r in rows], [apply_bias(r, ref_pairs) for r in trows],
                         y.tolist(), seen, [0, 1], alpha=-0.25, T=5.0)
    # corrected: pair 0 = task 0's classes {0, 1}; T = 2; alpha = 2 / 4; distil the 2 old classes
    cor_pairs = [([0, 1], 2.0, 0.5)]
    want_cor = hand_loss([apply_bias(r, cor_pairs) for r in rows], [apply_bias(r, cor_pairs) for r in trows],
                         y.tolist(), seen, [0, 1], alpha=0.5, T=2.0)
    assert got["reference"] == pytest.approx(want_ref, rel=1e-5)
    assert got["corrected"] == pytest.approx(want_cor, rel=1e-5)
    assert want_ref != pytest.approx(want_cor, rel=1e-3)


def test_alpha_slice_switch_alone_on_3_class_tasks():
    """S = 6, S_old = 3: reference alpha = 1/6 and distils columns 0..3 (one untrained new class); corrected
    alpha = 1/2 over columns 0..2. Same temperature and bias layout (only the switch flips)."""
    x = torch.tensor([[0.3, -0.2, 1.0, 0.4, 0.1, 0.7], [1.1, 0.5, -0.3, 0.0, 0.8, -0.1]])
    y = torch.tensor([3, 5])
    got = {}
    for on in (True, False):
        a = two_task_agent("reference", 6, [0, 1, 2], [3, 4, 5], bias_pair0=(1.0, 0.0), temperature=2.0,
                           switches={"bic_hardcoded_alpha_slice": on})
        assert a.distill_columns()[1] == pytest.approx(1 / 6 if on else 0.5)
        assert a.distill_columns()[0].tolist() == ([0, 1, 2, 3] if on else [0, 1, 2])
        got[on] = float(a.stage1_loss(x, y).detach())
    rows, trows = x.tolist(), (2 * x).tolist()
    seen = list(range(6))
    assert got[True] == pytest.approx(hand_loss(rows, trows, y.tolist(), seen, [0, 1, 2, 3], 1 / 6, 2.0), rel=1e-5)
    assert got[False] == pytest.approx(hand_loss(rows, trows, y.tolist(), seen, [0, 1, 2], 0.5, 2.0), rel=1e-5)


def test_first_task_loss_is_plain_ce():
    a = tiny("reference", n_class=10)
    a.set_active([0, 1])
    x = torch.randn(3, 10, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 1])
    with torch.no_grad():
        assert float(a.stage1_loss(x, y)) == pytest.approx(float(nn.functional.cross_entropy(a.model(x)[:, :2], y)))


def test_teacher_mode_and_temperature_per_switch():
    """Reference: the teacher runs in train mode (dropout active) and T = 5; corrected: eval mode, T = 2."""
    for fid, want_mode, want_t in (("reference", True, 5.0), ("corrected", False, 2.0)):
        model = nn.Sequential(nn.Flatten(), nn.Sequential(nn.Dropout(0.5), nn.Linear(10, 10)))
        a = tiny(fid, model=model)
        tasks = [task_data([0, 1]), task_data([2, 3], seed=1)]
        run_tasks(a, tasks[:1])
        assert a.teacher is not None
        modes = []
        a.teacher.register_forward_pre_hook(lambda m, inp: modes.append(m.training))
        run_tasks(a, tasks[1:], start=1)
        assert modes and set(modes) == {want_mode}
        assert a.temperature == want_t
    # the teacher's dropout makes its targets random in reference: two calls on the same batch differ
    a = tiny("reference", model=nn.Sequential(nn.Flatten(), nn.Sequential(nn.Dropout(0.5), nn.Linear(10, 10))))
    a.set_active([0, 1])
    a.set_active([0, 1, 2, 3])
    a.teacher = copy.deepcopy(a.model)
    x, y = torch.randn(4, 10), torch.tensor([2, 3, 2, 3])
    a.model.eval()  # only the teacher may be random here
    with torch.no_grad():
        assert float(a.stage1_loss(x, y)) != float(a.stage1_loss(x, y))


def test_optimizer_recreated_per_task_and_step_lr():
    a = tiny("reference", lr=0.1)
    ds = task_data([0, 1], per_class=2)
    a.set_active([0, 1])
    lrs, opts = [], []
    for e in (0, 1, 68, 69, 70):  # StepLR(70, 0.1) stepped at every epoch start (epoch e runs at step e + 1)
        a.learn_stream(DataLoader(ds, batch_size=4), 0, e, False)
        lrs.append(a.optimizer.param_groups[0]["lr"])
        opts.append(a.optimizer)
    assert lrs == pytest.approx([0.1, 0.1, 0.1, 0.01, 0.01])
    assert all(o is opts[0] for o in opts)  # one optimiser within a task
    a.learn_stream(DataLoader(ds, batch_size=4), 0, 71, True)
    a.set_active([0, 1, 2, 3])
    a.learn_stream(DataLoader(task_data([2, 3], per_class=2), batch_size=4), 1, 0, True)
    assert a.optimizer is not opts[0] and a.optimizer.param_groups[0]["lr"] == pytest.approx(0.1)
    assert a.optimizer.param_groups[0]["weight_decay"] == 0.0 and isinstance(a.optimizer, torch.optim.SGD)


@pytest.mark.parametrize("network", ["own", "study"])
def test_flip_crop_augmentation_only_on_the_own_network(tiny_stream, network):
    tasks, _ = tiny_stream
    torch.manual_seed(0)
    a = BiC(4, {"weights": "none", "network": network, "batch_size": 8}, train_switches("reference"))
    seen = []
    orig = a.stage1_step
    a.stage1_step = lambda x, y, _o=orig: (seen.append(x.clone()), _o(x, y))[1]
    a.set_active([0, 1])
    a.learn_stream(DataLoader(tasks[0], batch_size=8), 0, 0, False)
    x = torch.cat(seen)
    raw = tasks[0].tensors[0]
    found = [any(torch.equal(row, r) for r in raw) for row in x]
    assert len(x) == 48  # the task twice
    if network == "study":
        assert all(found)
    else:
        assert sum(found) < len(x) // 2  # most images flipped and / or shifted


# ------------------------------------------------------------------------------------------------------ stage 2
def test_stage2_updates_only_the_intended_pair():
    """Corrected: stage 2 of task 1 moves pair 1 (task 1's classes) only; reference: layer 1 (columns 5..9) which
    the 2-class task 1 (seen columns 0..3) never reaches: nothing moves. The network never moves in stage 2."""
    tasks = [task_data([0, 1]), task_data([2, 3], seed=1)]
    moved = {}
    for fid in ("reference", "corrected"):
        a = tiny(fid, memory_size=8, val_fraction=0.25)
        run_tasks(a, tasks[:1])
        snaps = {}
        orig = a.stage2

        def spy(k, epochs, batch, _a=a, _o=orig):
            snaps["model"] = copy.deepcopy(_a.model.state_dict())
            snaps["bias"] = [(float(l.alpha.detach()), float(l.beta.detach())) for l in _a.bias_layers]
            snaps["args"] = (k, epochs, batch)
            _o(k, epochs, batch)

        a.stage2 = spy
        run_tasks(a, tasks[1:], start=1)
        for name, v in a.model.state_dict().items():
            assert torch.equal(v, snaps["model"][name]), name
        after = [(float(l.alpha.detach()), float(l.beta.detach())) for l in a.bias_layers]
        moved[fid] = [k for k, (b, c) in enumerate(zip(snaps["bias"], after)) if b != c]
        moved[fid + "_args"] = snaps["args"]
        assert snaps["bias"] == [(1.0, 0.0)] * len(after)  # nothing trained before stage 2
    assert moved["reference_args"] == (1, 1, 1)  # layer = task index, one epoch, batch 1
    assert moved["reference"] == []  # quirk 20: the layer of task 1 covers columns 5..9
    assert moved["corrected_args"] == (1, 1, 100)  # the task's pair, as many epochs as the network, batch 100
    assert moved["corrected"] == [1]


def test_stage2_layer_is_the_task_index_in_reference_and_skipped_without_new_classes_in_corrected():
    """A task that adds no class (instance-like): reference still trains layer i = task index; corrected has no new
    pair to fit (its pairs belong to the tasks that added classes: task 2's is pair 1)."""
    tasks = [task_data([0, 1]), task_data([0, 1], seed=1), task_data([2, 3], seed=2)]
    for fid, want in (("reference", [1, 2]), ("corrected", [1])):
        a = tiny(fid, memory_size=8, val_fraction=0.25)
        calls = []
        orig = a.stage2
        a.stage2 = lambda k, epochs, batch, _o=orig: (calls.append(k), _o(k, epochs, batch))[1]
        run_tasks(a, tasks)
        assert calls == want, fid
        if fid == "corrected":
            assert len(a.bias_layers) == 2 and a.layer_columns(1) == [2, 3]


def test_reference_stage2_moves_layer_i_on_5_class_tasks():
    """On CIFAR-like 5-class tasks the fixed block of task 1 is its own classes: layer 1 moves, layer 0 does not."""
    a = tiny("reference", n_class=10)
    tasks = [task_data([0, 1, 2, 3, 4], per_class=2), task_data([5, 6, 7, 8, 9], per_class=2, seed=1)]
    run_tasks(a, tasks)
    (a0, b0), (a1, b1) = [(float(l.alpha.detach()), float(l.beta.detach())) for l in a.bias_layers]
    assert (a0, b0) == (1.0, 0.0) and (a1, b1) != (1.0, 0.0)


def test_stage2_steps_reference_one_per_validation_exemplar():
    a = tiny("reference")
    tasks = [task_data([0, 1]), task_data([2, 3], seed=1)]
    run_tasks(a, tasks[:1])
    steps = []
    orig = torch.optim.Adam.step

    def counting(self, *args, **kw):
        steps.append(sum(p.numel() for g in self.param_groups for p in g["params"]))
        return orig(self, *args, **kw)

    torch.optim.Adam.step = counting
    try:
        run_tasks(a, tasks[1:], start=1)
    finally:
        torch.optim.Adam.step = orig
    assert steps == [2] * 4  # 4 seen classes -> 4 exemplars, batch 1; the optimiser holds one (alpha, beta) pair


# ------------------------------------------------------------------------------------------------------ exemplars
def test_reference_exemplars_first_image_per_class_val_is_train():
    a = tiny("reference")
    ds0 = task_data([1, 0])  # filelist order: label 1 first
    ds1 = task_data([3, 2], seed=1)
    run_tasks(a, [ds0])
    x0, y0 = ds0.tensors
    assert list(a.mem_train) == [0, 1]
    assert torch.equal(a.mem_train[1], x0[:1]) and torch.equal(a.mem_train[0], x0[1:2])
    assert a.mem_val is a.mem_train  # the validation exemplar is the same image
    run_tasks(a, [ds1], start=1)
    x1, _ = ds1.tensors
    assert a.exemplar_counts() == {c: (1, 1) for c in range(4)}
    assert torch.equal(a.mem_train[3], x1[:1]) and torch.equal(a.mem_train[2], x1[1:2])
    assert torch.equal(a.mem_train[1], x0[:1])  # old classes keep their first image
    mb = a.memory_bytes()
    assert mb["images"] == 4 * 10  # one stored input per class (a 3x32x32 input: 3,072 B)
    assert mb["teacher_network"] == (10 * 10 + 10) * 4 and mb["bias_layers"] == 2 * 2 * 4


def test_reference_memory_bytes_3072_per_class_at_32px(tiny_stream):
    tasks, _ = tiny_stream
    torch.manual_seed(0)
    a = BiC(4, {"weights": "none", "network": "own", "batch_size": 8}, train_switches("reference"))
    a.set_active([0, 1])
    a.learn_stream(DataLoader(tasks[0], batch_size=8), 0, 0, True)
    assert a.memory_bytes()["images"] == 2 * 3072


def test_training_set_is_exemplars_plus_the_task_twice():
    a = tiny("reference", batch_size=5, switches={"external_drop_last": False})
    tasks = [task_data([0, 1]), task_data([2, 3], seed=1)]  # 12 images per task
    seen_labels = []
    orig = a.stage1_step
    a.stage1_step = lambda x, y, _o=orig: (seen_labels.append(y.clone()), _o(x, y))[1]
    run_tasks(a, tasks[:1])
    y0 = torch.cat(seen_labels)
    assert len(y0) == 24 and sorted(y0.tolist()) == sorted(tasks[0].tensors[1].tolist() * 2)
    seen_labels.clear()
    run_tasks(a, tasks[1:], start=1)
    y1 = torch.cat(seen_labels)
    # previous classes' exemplars (1 each) + task 1 twice
    assert sorted(y1.tolist()) == sorted([0, 1] + tasks[1].tensors[1].tolist() * 2)
    mem, idx = a.training_parts(tasks[1])
    assert idx == list(range(12)) * 2 and mem[1].tolist() == [0, 1, 2, 3]  # after the update: all 4 classes
    # drop_last (reference): 26 items, batch 5 -> 5 full batches
    b = tiny("reference", batch_size=5)
    run_tasks(b, tasks[:1])
    sizes = []
    orig_b = b.stage1_step
    b.stage1_step = lambda x, y, _o=orig_b: (sizes.append(len(y)), _o(x, y))[1]
    run_tasks(b, tasks[1:], start=1)
    assert sizes == [5] * 5


def test_corrected_split_memory_and_training_set():
    """Corrected: each class holds out round(0.25 * 6) = 2 images; memory 8 over the seen classes, split into
    training and validation parts; stage 1 sees memory training parts + the task minus its held-out part."""
    a = tiny("corrected", batch_size=5, memory_size=8, val_fraction=0.25, switches={"external_drop_last": False})
    tasks = [task_data([0, 1]), task_data([2, 3], seed=1)]
    labels = []
    orig = a.stage1_step
    a.stage1_step = lambda x, y, _o=orig: (labels.append(y.clone()), _o(x, y))[1]
    run_tasks(a, tasks[:1])
    assert sorted(torch.cat(labels).tolist()) == [0] * 4 + [1] * 4  # 6 - 2 held out per class
    # quota 8 // 2 = 4 per class: validation max(1, round(0.25 * 4)) = 1, training 3
    assert a.exemplar_counts() == {0: (3, 1), 1: (3, 1)}
    for c in (0, 1):  # herding picks distinct images
        assert len(torch.unique(a.mem_train[c], dim=0)) == 3
    x0 = tasks[0].tensors[0]
    labels.clear()
    run_tasks(a, tasks[1:], start=1)
    # memory training parts (3 per old class, stored after task 0) + 4 + 4 new images
    assert sorted(torch.cat(labels).tolist()) == [0] * 3 + [1] * 3 + [2] * 4 + [3] * 4
    # then quota 8 // 4 = 2 per class: validation max(1, round(0.5)) = 1, training 1 (old classes trimmed)
    assert a.exemplar_counts() == {c: (1, 1) for c in range(4)}
    assert a.memory_bytes()["images"] == 8 * 10
    # train and validation exemplars of a class are distinct images of that class
    for c in range(2):
        assert not torch.equal(a.mem_train[c], a.mem_val[c])
        for part in (a.mem_train[c], a.mem_val[c]):
            assert any(torch.equal(part[0], row) for row in x0[tasks[0].tensors[1] == c])


def test_corrected_herding_distinct_picks_on_penultimate_features():
    """The linear test network's penultimate features are its inputs. phi = (1, 0), (0, 1), (2, 1) / sqrt5: herding
    with per-candidate normalisation picks 2, then 1 (repeats would pick 2 again: tests/agents/test_icarl.py)."""
    a = tiny("corrected", n_class=2, d_in=2)
    ds = TensorDataset(torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 1.0]]), torch.tensor([0, 0, 0]))
    assert a.herd(ds, [0, 1, 2], 3).tolist() == [[2.0, 1.0], [0.0, 1.0], [1.0, 0.0]]
    assert sorted(a.herd(ds, [0, 2], 5).tolist()) == [[1.0, 0.0], [2.0, 1.0]]  # at most the pool
    assert a.herd(ds, [0, 1], 0).shape == (0, 2)


def test_corrected_held_out_images_are_never_trained_on():
    a = tiny("corrected", batch_size=4, memory_size=40, val_fraction=0.25, switches={"external_drop_last": False})
    ds = task_data([0, 1])
    trained = []
    orig = a.stage1_step
    a.stage1_step = lambda x, y, _o=orig: (trained.append(x.clone()), _o(x, y))[1]
    a.set_active([0, 1])
    a.learn_stream(DataLoader(ds, batch_size=4), 0, 0, False)
    train_idx, held = a._split
    assert len(held) == 4 and sorted(train_idx + held) == list(range(12))
    x = torch.cat(trained)
    for i in held:
        assert not any(torch.equal(ds.tensors[0][i], row) for row in x)
    a.learn_stream(DataLoader(ds, batch_size=4), 0, 1, True)
    for c in (0, 1):  # validation exemplars come from the held-out images
        for row in a.mem_val[c]:
            assert any(torch.equal(ds.tensors[0][i], row) for i in held)


# ------------------------------------------------------------------------------------------------------ loop
def job(files, out, fidelity="reference", network="own", **kw):
    image_root, run_dir = files
    hp = {"weights": "none", "network": network, "image_size": 40, "batch_size": 8, "n_epoch_first_task": 2,
          "n_workers": 0, "memory_size": 8, "val_fraction": 0.25}
    switches = train_switches(fidelity)
    seed_everything(0)
    agent = BiC(4, hp, switches)
    shapes = []
    agent.model.register_forward_pre_hook(lambda m, inp: shapes.append(tuple(inp[0].shape[1:])))
    run_stream(agent, run_dir, image_root, out, hp=agent.hp, switches=switches,
               meta={"fidelity": fidelity}, seed=0, log=lambda m: None, **kw)
    return agent, shapes


def read(out):
    m = json.loads((out / "metrics.json").read_text())
    return {k: v for k, v in m.items() if k != "timing"}


@pytest.mark.parametrize("network,size", [("own", 32), ("study", 40)])
def test_run_stream_end_to_end(tiny_files, tmp_path, network, size):
    agent, shapes = job(tiny_files, tmp_path / "out", fidelity="reference", network=network)
    m = read(tmp_path / "out")
    assert set(shapes) == {(3, size, size)}
    assert m["meta"]["image_size"] == size
    assert [t["n_epoch"] for t in m["tasks"]] == [2, 1]
    assert len(m["test_all"]["acc"]) == 2 and all(0 <= v <= 100 for v in m["test_all"]["acc"])
    assert m["memory_bytes"]["images"] == 4 * 3 * size * size  # one image per seen class
    assert agent.teacher is not None and len(agent.mem_train) == 4


@pytest.mark.parametrize("fid", ["reference", "corrected"])
def test_checkpoint_resume_identical(tiny_files, tmp_path, fid):
    if True:
        full, _ = job(tiny_files, tmp_path / f"full_{fid}", fidelity=fid)
        out = tmp_path / f"resumed_{fid}"
        job(tiny_files, out, fidelity=fid, stop_after_task=0)
        assert not (out / "metrics.json").exists()
        resumed, _ = job(tiny_files, out, fidelity=fid)
        assert read(out) == read(tmp_path / f"full_{fid}")
        for k, v in full.model.state_dict().items():
            assert torch.equal(v, resumed.model.state_dict()[k]), k
        for la, lb in zip(full.bias_layers, resumed.bias_layers):
            assert torch.equal(la.alpha, lb.alpha) and torch.equal(la.beta, lb.beta)
        assert all(torch.equal(full.mem_val[c], resumed.mem_val[c]) for c in full.mem_val)


def test_result_note_names_the_runnable_variant_off_cifar100():
    """Reference BiC crashes at HEAD on every dataset but CIFAR-100 (q18): the results table footnotes its cells."""
    assert tiny("reference", n_class=10).result_notes() == [BiC.reference_note]
    assert "q18" in BiC.reference_note
    assert tiny("reference", n_class=100).result_notes() == []
    assert tiny("corrected", n_class=10).result_notes() == []
