"""REMIND (spec 14.6): networks, product-quantised buffer, stream step, schedule, switches q36-q38, end to end."""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torchvision import models as tvm

from augmem.agents import remind as remind_mod
from augmem.agents.remind import (REMIND, FrozenEval, crop_params, mixup_loss, random_resized_crop,
                                  sample_beta)
from augmem.io import InputError
from augmem.models.resnet18_split import remind_resnet18
from augmem.train.fidelity import train_switches
from .jobs import metrics_without_timing, run_agent_job

# a tiny, easily separable set-up: G = 2 x 2 average pool of a 3-channel image (d = 3), PQ of 3 codebooks (one per
# channel) of 4 centroids, F = 1x1 conv + pool + linear
TOY_HP = {"pq_codebooks": 3, "pq_centroids": 4, "pq_iterations": 10, "replay_samples": 5, "batch_size": 8,
          "start_lr": 0.1, "end_lr": 0.001, "lr_step": 4, "lr_images_per_class": 26, "base_init_epochs": 5,
          "base_init_lr": 0.05, "n_workers": 0}


class ToyREMIND(REMIND):
    @classmethod
    def extra_checks(cls, hp):  # G has 3 channels, not ResNet-18's 512
        return [p for p in super().extra_checks(hp) if p[0] != "pq_codebooks"]

    def own_split(self):
        g = nn.Sequential(nn.AdaptiveAvgPool2d(2))
        f = nn.Sequential(nn.Conv2d(3, 16, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 6))
        return g, f


def toy(fidelity="reference", overrides=None, n_class=6, **hp):
    torch.manual_seed(0)
    return ToyREMIND(n_class, {**TOY_HP, **hp}, train_switches(fidelity, overrides))


# complementary colour pairs per task: every channel takes both levels in task 0, so the PQ trained on task 0 also
# reconstructs the later classes (their differences survive quantisation)
COLOURS = [(0.9, 0.1, 0.1), (0.1, 0.9, 0.9), (0.1, 0.9, 0.1), (0.9, 0.1, 0.9), (0.1, 0.1, 0.9), (0.9, 0.9, 0.1)]


def colour_task(labels, n, seed):
    g = torch.Generator().manual_seed(seed)
    xs, ys = [], []
    for i in range(n):
        for lab in labels:  # classes interleaved in filelist order
            xs.append(torch.tensor(COLOURS[lab]).view(3, 1, 1) + 0.05 * torch.randn(3, 4, 4, generator=g))
            ys.append(lab)
    return TensorDataset(torch.stack(xs), torch.tensor(ys))


def loader(ds, bs=8):
    return DataLoader(ds, batch_size=bs, shuffle=False)


def run_toy(agent, tasks, tests):
    """Manual loop: per task set_active, one learn_stream, per-class accuracies over all tests."""
    active, accs = [], []
    for t, ds in enumerate(tasks):
        active = sorted(set(active) | set(ds.tensors[1].tolist()))
        agent.set_active(active)
        agent.learn_stream(loader(ds), task=t, epoch=0, last_epoch=True)
        accs.append({lab: 100.0 * float((agent.predict(x)["acc"] == lab).float().mean()) for lab, x in tests.items()})
    return accs


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Tiny per-sample steps: one torch thread is an order of magnitude faster than two on a shared machine."""


# ------------------------------------------------------------------------------------------------ declaration, nets
def test_declared_defaults_are_the_published_settings():
    hp = REMIND.check_hparams({})
    assert (hp["pq_codebooks"], hp["pq_centroids"], hp["replay_samples"], hp["mixup"], hp["mixup_alpha"]) == \
        (32, 256, 50, True, 0.1)
    assert (hp["start_lr"], hp["end_lr"], hp["lr_step"], hp["random_resized_crops"]) == (0.1, 0.001, 100, True)
    assert (hp["momentum"], hp["weight_decay"], hp["network"], hp["image_size"]) == (0.9, 1e-5, "own", 224)
    with pytest.raises(InputError):
        REMIND.check_hparams({"pq_codebooks": 30})


def test_resnet18_split_shapes():
    torch.manual_seed(0)
    g, f = remind_resnet18(5, "none")
    with torch.no_grad():
        maps = g.eval()(torch.randn(1, 3, 224, 224))
        assert maps.shape == (1, 512, 7, 7)
        assert f.eval()(maps).shape == (1, 5)
        assert g(torch.randn(2, 3, 64, 64)).shape == (2, 512, 2, 2)
    assert isinstance(g[-1], tvm.resnet.BasicBlock) and g[-1].downsample is not None  # layer4.0
    assert isinstance(f[0], tvm.resnet.BasicBlock) and f[0].downsample is None  # layer4.1


def test_weights_file_safe_load(tmp_path):
    torch.manual_seed(1)
    full = tvm.resnet18(num_classes=1000)
    path = tmp_path / "r18.pth"
    torch.save({"state_dict": full.state_dict()}, path)
    g, f = remind_resnet18(4, str(path))
    assert torch.equal(g[0].weight, full.conv1.weight) and torch.equal(g[-1].bn2.running_mean,
                                                                      full.layer4[0].bn2.running_mean)
    assert torch.equal(f[0].conv2.weight, full.layer4[1].conv2.weight)
    assert f[3].weight.shape == (4, 512)  # head of another shape: skipped (random), as safe_load_dict
    head4 = tvm.resnet18(num_classes=4)
    torch.save({"module." + k: v for k, v in head4.state_dict().items()}, path)
    _, f = remind_resnet18(4, str(path))
    assert torch.equal(f[3].weight, head4.fc.weight)  # same shape: loaded (quirk 39)
    torch.save({k: v for k, v in head4.state_dict().items() if not k.startswith("layer4.1")}, path)
    with pytest.raises(InputError, match="missing"):
        remind_resnet18(4, str(path))
    with pytest.raises(InputError, match="not found"):
        remind_resnet18(4, str(tmp_path / "absent.pth"))


def test_g_frozen_in_eval_mode_and_only_f_trained():
    agent = REMIND(4, {"weights": "none", "pq_codebooks": 8}, train_switches("reference"))
    agent.model.train()
    g = agent.model[0]
    assert isinstance(g, FrozenEval) and not g.training and not any(m.training for m in g.modules())
    assert agent.model[1].training
    assert not any(p.requires_grad for p in g.parameters())
    opt_params = {id(p) for group in agent.optimizer.param_groups for p in group["params"]}
    assert opt_params == {id(p) for p in agent.model[1].parameters()}
    group = agent.optimizer.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.1, 0.9, 1e-5)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        a = agent.front_forward(x)
        agent.model.train()
        b = agent.front_forward(x)
    assert torch.equal(a, b)  # a pure function of the input (BatchNorm statistics untouched)


def test_study_network_is_the_split_squeezenet():
    agent = REMIND(4, {"network": "study", "weights": "none", "pq_codebooks": 8}, train_switches("corrected"))
    assert isinstance(agent.model[0], FrozenEval)
    with torch.no_grad():
        assert agent.front_forward(torch.randn(1, 3, 64, 64)).shape[1] == 512


# ------------------------------------------------------------------------------------------------ random draws
def test_beta_sampler_statistics_and_generator_only():
    gen = torch.Generator().manual_seed(7)
    state = torch.get_rng_state()
    draws = torch.tensor([sample_beta(0.1, 0.1, gen) for _ in range(4000)], dtype=torch.float64)
    assert torch.equal(state, torch.get_rng_state())  # only the generator was used
    assert ((draws >= 0) & (draws <= 1)).all()
    # Beta(0.1, 0.1): mean 1/2, variance 1/(4 * 1.2) = 0.2083; U-shaped: P(X < 0.01) = I_0.01(0.1, 0.1) = 0.3158
    assert abs(float(draws.mean()) - 0.5) < 0.03
    assert abs(float(draws.var()) - 0.2083) < 0.015
    assert abs(float((draws < 0.01).double().mean()) - 0.3158) < 0.03
    d25 = torch.tensor([sample_beta(2.0, 5.0, gen) for _ in range(4000)], dtype=torch.float64)
    assert abs(float(d25.mean()) - 2 / 7) < 0.01 and abs(float(d25.var()) - 10 / (49 * 8)) < 0.004
    again = torch.Generator().manual_seed(7)
    assert sample_beta(0.1, 0.1, again) == float(draws[0])
    scipy_stats = pytest.importorskip("scipy.stats")
    assert scipy_stats.kstest(draws.numpy(), scipy_stats.beta(0.1, 0.1).cdf).pvalue > 0.01


def test_random_resized_crop_params_and_resize():
    gen = torch.Generator().manual_seed(0)
    for _ in range(300):
        top, left, h, w = crop_params(7, 7, gen)
        assert 0 < h <= 7 and 0 < w <= 7 and top + h <= 7 and left + w <= 7
        assert h * w >= 1 and 0.5 <= w / h <= 2.0
    x = torch.randn(5, 4, 7, 7)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    out = random_resized_crop(x, g1)
    for k in range(5):
        top, left, h, w = crop_params(7, 7, g2)
        hand = F.interpolate(x[k:k + 1, :, top:top + h, left:left + w], size=(7, 7), mode="bilinear",
                             align_corners=False)
        assert torch.allclose(out[k:k + 1], hand)
    const = torch.full((2, 3, 7, 7), 2.5)
    assert torch.allclose(random_resized_crop(const, gen), const)
    assert random_resized_crop(torch.randn(2, 3, 1, 1), gen).shape == (2, 3, 1, 1)


# ------------------------------------------------------------------------------------------------ buffer, q36
def test_buffer_overwrite_task_local_keys_q36():
    t0, t1 = colour_task([0, 1], 5, 0), colour_task([2, 3], 3, 1)  # 10 and 6 images
    ref = toy("reference")
    run_toy(ref, [t0, t1], {})
    # base init (10) + task 0 again (10, same keys) + task 1 (6, keys 0..5 overwrite task 0's)
    assert len(ref.slot_keys) == 10 and len(ref.replay) == 26
    assert ref.labels[:6].tolist() == t1.tensors[1].tolist()
    assert ref.labels[6:10].tolist() == t0.tensors[1][6:].tolist()
    assert ref.memory_bytes() == {"pq_codes": 10 * (2 * 2 * 3 + 8), "codebooks": 3 * 4 * 1 * 4}
    cor = toy("corrected")
    run_toy(cor, [t0, t1], {})
    assert cor.slot_keys == [(0, i) for i in range(10)] + [(1, i) for i in range(6)]
    assert cor.replay == list(range(16))  # task 0 is not streamed again (q38 corrected)
    assert cor.labels[:16].tolist() == t0.tensors[1].tolist() + t1.tensors[1].tolist()
    # the stored codes are the sample's own
    assert torch.equal(cor.codes[10:16], cor.pq.encode_maps(cor.front_forward(t1.tensors[0])))
    mixed = toy("corrected", {"remind_base_init_twice": True})
    run_toy(mixed, [t0, t1], {})
    assert len(mixed.slot_keys) == 16 and len(mixed.replay) == 26


# ------------------------------------------------------------------------------------------------ schedule, q37
def record_lrs(agent, monkeypatch):
    lrs = []
    real = agent.replay_step

    def spy(new, y):
        lrs.append(agent.optimizer.param_groups[0]["lr"])
        return real(new, y)

    monkeypatch.setattr(agent, "replay_step", spy)
    return lrs


def test_gamma_of_the_published_schedule():
    agent = REMIND(4, {"weights": "none", "pq_codebooks": 8}, train_switches("reference"))
    assert agent.gamma == pytest.approx(0.7017, abs=1e-4)
    assert 0.1 * agent.gamma ** 25 == pytest.approx(1.4e-5, rel=0.05)  # CIFAR: 2,500 images of task 0


def test_lr_after_k_samples_chained_and_per_class(monkeypatch):
    ds = TensorDataset(torch.rand(9, 3, 4, 4), torch.tensor([0, 0, 1, 1, 0, 1, 0, 0, 1]))
    base = TensorDataset(torch.rand(4, 3, 4, 4), torch.tensor([0, 1, 0, 1]))
    out = {}
    for fidelity in ("reference", "corrected"):
        agent = toy(fidelity, {"remind_base_init_twice": False}, lr_step=2, lr_images_per_class=4,
                    base_init_epochs=1)
        agent.set_active([0, 1])
        agent.learn_stream(loader(base), task=0, epoch=0, last_epoch=True)  # base init only
        lrs = record_lrs(agent, monkeypatch)
        agent.learn_stream(loader(ds), task=1, epoch=0, last_epoch=True)
        out[fidelity] = lrs
    g = math.exp(2 * math.log(0.01) / 4)  # 0.1 per 2 samples of a class
    # chained: the 2nd sample of class 0 (k=2), the 2nd of class 1 (k=4), the 4th of class 0 (k=7) decay the global lr
    assert out["reference"] == pytest.approx([0.1, 0.1, 0.1 * g, 0.1 * g, 0.1 * g ** 2, 0.1 * g ** 2, 0.1 * g ** 2,
                                              0.1 * g ** 3, 0.1 * g ** 3])
    # per class: 0.1 * g^floor(n_y / 2) with n_y the samples of y before this one
    assert out["corrected"] == pytest.approx([0.1, 0.1, 0.1, 0.1, 0.1 * g, 0.1 * g, 0.1 * g, 0.1 * g ** 2,
                                              0.1 * g])


# ------------------------------------------------------------------------------------------------ the stream step
def test_mixup_step_by_hand(monkeypatch):
    agent = toy("corrected", random_resized_crops=False, base_init_epochs=0, replay_samples=2)
    base = colour_task([0, 1], 4, 0)
    agent.set_active([0, 1])
    agent.learn_stream(loader(base), task=0, epoch=0, last_epoch=True)
    monkeypatch.setattr(remind_mod, "sample_beta", lambda a, b, gen: 0.3)
    monkeypatch.setattr(agent, "draw_positions", lambda n: [5, 2, 7, 0])
    seen = {}
    agent.f_net.register_forward_pre_hook(lambda mod, args: seen.setdefault("x", args[0].detach().clone()))
    f_before = copy.deepcopy(agent.f_net)
    new = torch.tensor(COLOURS[2]).view(1, 3, 1, 1).expand(1, 3, 4, 4).clone()
    agent.set_active([0, 1, 2, 3])
    agent.stream_sample(agent.front_forward(new), 2, agent.key(1, 0))
    dec = agent.pq.decode_maps(agent.codes[:8])
    slots, labels = [5, 2, 7, 0], agent.labels
    xq = agent.quantise(agent.front_forward(new))
    hand_x = torch.cat([xq, 0.3 * dec[[5, 2]] + 0.7 * dec[[7, 0]]])
    assert torch.allclose(seen["x"], hand_x)
    with torch.no_grad():
        logits = f_before(hand_x)
    ya, yb = [2, int(labels[5]), int(labels[2])], [2, int(labels[7]), int(labels[0])]
    logp = logits.log_softmax(1)
    hand = sum(-(0.3 * logp[i, ya[i]] + 0.7 * logp[i, yb[i]]) for i in range(3)) / 3
    assert agent.last_loss == pytest.approx(float(hand), rel=1e-5)
    assert float(mixup_loss(logits, torch.tensor(ya), torch.tensor(yb), 0.3)) == pytest.approx(float(hand), rel=1e-5)
    assert agent.class_counts[2] == 1 and agent.replay[-1] == 8 and int(agent.labels[8]) == 2
    assert not torch.equal(f_before[0].weight, agent.f_net[0].weight)


def test_predict_quantises_and_takes_the_argmax_over_all_outputs():
    agent = toy("corrected", base_init_epochs=0)
    agent.set_active([0, 1])
    agent.learn_stream(loader(colour_task([0, 1], 4, 0)), task=0, epoch=0, last_epoch=True)
    with torch.no_grad():
        agent.f_net[4].bias[5] = 1e3  # class 5: never active
    x = colour_task([0, 1], 2, 1).tensors[0]
    assert agent.predict(x)["acc"].tolist() == [5, 5, 5, 5]
    with torch.no_grad():
        agent.f_net[4].bias[5] = 0
        want = agent.f_net(agent.quantise(agent.front_forward(x))).argmax(1)
    assert torch.equal(agent.predict(x)["acc"], want)


# ------------------------------------------------------------------------------------------------ the CSV signature
def test_reference_never_recognises_new_classes_corrected_does():
    """Spec 14.6: the shipped CIFAR-100 CSVs have acc_seen(t) = acc_first(t) * n_first / n_seen (quirks 36-37);
    corrected REMIND learns the later classes of the same easy stream."""
    tasks = [colour_task(p, 20, s) for p, s in (([0, 1], 0), ([2, 3], 1), ([4, 5], 2))]
    tests = {lab: colour_task([lab], 10, 10 + lab).tensors[0] for lab in range(6)}
    ref = run_toy(toy("reference"), tasks, tests)
    cor = run_toy(toy("corrected"), tasks, tests)
    for t in (1, 2):
        new = [lab for lab in range(2, 2 * t + 2)]
        first = (ref[t][0] + ref[t][1]) / 2
        seen = sum(ref[t][lab] for lab in range(2 * t + 2)) / (2 * t + 2)
        assert first >= 90, ref
        assert all(ref[t][lab] == 0 for lab in new), ref
        assert seen == pytest.approx(first * 2 / (2 * t + 2))
        assert min(cor[t][lab] for lab in range(2 * t + 2)) >= 80, cor


# ------------------------------------------------------------------------------------------------ end to end
E2E_HP = {"batch_size": 8, "n_workers": 0, "weights": "none", "image_size": 32, "pq_codebooks": 8,
          "pq_centroids": 8, "pq_iterations": 5, "replay_samples": 4, "base_init_epochs": 2}


def run_job(files, out, hp, fidelity, **kw):
    return run_agent_job(REMIND, "remind", files, out, {**E2E_HP, **hp}, fidelity, **kw)


metrics = metrics_without_timing


def test_checkpoint_resume_identical(tiny_files, tmp_path):
    hp = {"network": "study", "head_bias_init": 1.0}  # the study's SqueezeNet: fast, and its dropout draws globally
    _, full = run_job(tiny_files, tmp_path / "full", hp, "reference")
    out = tmp_path / "resumed"
    assert run_job(tiny_files, out, hp, "reference", stop_after_task=0)[0] is None
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    st = state["agent"]["extra"]["remind"]
    assert st["pq"]["codebooks"].shape == (8, 8, 64) and st["codes"].dtype == torch.uint8
    assert len(st["replay"]) == 48 and st["codes"].shape == (24, 1, 1, 8)
    _, resumed = run_job(tiny_files, out, hp, "reference")
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    assert torch.equal(full.pq.codebooks, resumed.pq.codebooks) and full.replay == resumed.replay
    assert torch.equal(full.codes[:24], resumed.codes[:24]) and full.global_lr == resumed.global_lr
    assert metrics(out) == metrics(tmp_path / "full")


def test_end_to_end_own_network(tiny_files, tmp_path):
    m, agent = run_job(tiny_files, tmp_path / "own", {}, "corrected")
    assert m["meta"]["image_size"] == 32 and m["paths"] == ["acc"]
    # 32 px: layer4.0's map is 1 x 1; 24 + 24 distinct entries of 8 codes + 8 B label; 8 x 8 x 64 float32 codebooks
    assert m["memory_bytes"] == {"pq_codes": 48 * (8 + 8), "codebooks": 8 * 8 * 64 * 4}
    assert [t["n_epoch"] for t in m["tasks"]] == [1, 1] and agent.task_classes == [[0, 1], [2, 3]]
    assert len(m["test_all"]["acc"]) == 2 and all(0 <= v <= 100 for v in m["test_all"]["acc"])
    assert agent.class_counts == [0, 0, 12, 12]  # corrected: task 0 is not streamed


def test_end_to_end_study_network(tiny_files, tmp_path):
    m, agent = run_job(tiny_files, tmp_path / "study", {"network": "study", "head_bias_init": 1.0}, "reference")
    assert agent.own_network is False and agent.pq.d == 512
    assert m["memory_bytes"]["codebooks"] == 8 * 8 * 64 * 4
    assert agent.class_counts == [12, 12, 12, 12]  # reference: task 0 streamed after the base init
    assert len(m["test_all"]["acc"]) == 2 and all(0 <= v <= 100 for v in m["test_all"]["acc"])
