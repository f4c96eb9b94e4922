"""AugMem agent (spec 6.4, 12.24): network maths, storage, replay, ablations, fidelity switches, checkpoints, learning.

Slow per-sample transcriptions of the published loops live here (``slow_*``) and the vectorised agent is checked
against them. CPU only, random-init backbones, tiny inputs: 32x32 fixture images give a 1x1 SqueezeNet feature map,
64x64 random tensors a 3x3 one.
"""
from __future__ import annotations

import io
import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from augmem.agents import get_agent_class
import augmem.agents.augmem as augmem_module
from augmem.agents.augmem import AugMemAgent, MemoryRead, attend, herding_select
from augmem.io import InputError
from augmem.train.fidelity import train_switches

BASE_HP = dict(
    backbone="squeezenet", weights="none", image_size=32, lr=0.01, momentum=0.9, weight_decay=1e-4,
    memory_Nslots=10, memory_Nfeat=8, memory_size=6, mem_sparse=5, memory_topK=1,
    reg_coef=1000, replay_coef=5, replay_times=1, logit_coef=1, freeze_feature_extract=True,
    allow_small_map=True,  # 32x32 fixture images give a 1x1 map (AugMem stops on that unless allowed)
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_agent(fidelity="reference", n_class=4, seed=0, overrides=None, **hp) -> AugMemAgent:
    torch.manual_seed(seed)
    random.seed(seed)
    return AugMemAgent(n_class, {**BASE_HP, **hp}, train_switches(fidelity, overrides))


def loader(ds, bs=12):
    return DataLoader(ds, batch_size=bs, shuffle=False)


def permuted(ds: TensorDataset, seed=0) -> TensorDataset:
    """The same samples in an irregular class order (so within-batch class positions vary)."""
    perm = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))
    return TensorDataset(*(t[perm] for t in ds.tensors))


def random_images(n, size=64, n_class=2, seed=0, first_label=0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, size, size, generator=g)
    y = first_label + torch.randint(0, n_class, (n,), generator=g)
    return TensorDataset(x, y)


def train_two_tasks(agent, tasks, bs=12, epochs=(1, 1)):
    for t, n_ep in enumerate(epochs):
        agent.set_active(sorted({0, 1} | ({2, 3} if t else set())))
        for e in range(n_ep):
            agent.learn_stream(loader(tasks[t], bs), task=t, epoch=e, last_epoch=e == n_ep - 1)


# ------------------------------------------------------------------------------------------- slow transcriptions
def published_attention_of_keys(keys, memory, beta):
    """``mem_net.Net`` attention of keys (..., F) over the slots of ``memory`` (S, F): softmax, then sharpening."""
    att = F.softmax(beta * keys.matmul(memory.t()), dim=-1)
    return att / (att.sum(dim=-1, keepdim=True) + 1e-16)


def published_attention(model, e):
    """``mem_net.Net`` attention, transcribed: the whole (B, h, w, G, S) tensor."""
    b, c, h, w = e.shape
    keys = e.permute(0, 2, 3, 1).reshape(b, h, w, model.n_groups, model.n_feat)
    return published_attention_of_keys(keys, model.memory, model.beta)


def published_read(model, att):
    """``mem_net.Net`` read: sum_s a_s M_s per key, reassembled to (B, c, h, w) in (g, f) channel order."""
    b, h, w = att.shape[:3]
    return att.matmul(model.memory).reshape(b, h, w, model.channels).permute(0, 3, 1, 2)


def slow_update_storage(agent, dl, old_storage, old_used):
    """``updateStorage_epoch`` transcribed literally: float rows [indices | logits], per-sample Python loops."""
    agent.model.eval()
    active = agent.active
    per_class = math.floor(agent.capacity / len(active))
    att_read_dict = {cls: [] for cls in active}
    for inputs, target in dl:
        with torch.no_grad():
            direct, _, _, e = agent.forward_all(inputs)
            att = published_attention(agent.model, e)
        b, _, h, w = e.shape
        att = att.view(-1, h, w, agent.model.n_groups, agent.n_slots)
        ind = torch.argsort(att, dim=4, descending=True)[:, :, :, :, 0 : agent.top_k].reshape(b, -1)
        for cls in active:
            all_rows = [torch.cat((ind[i].float(), direct[i]), 0) for i in range(b) if target[i] == cls]
            att_read_dict[cls] = att_read_dict[cls] + all_rows[0::5]
            now = len(att_read_dict[cls])
            if now > per_class:
                att_read_dict[cls] = att_read_dict[cls][now - per_class :]
    storage = dict(old_storage)
    for cls in active:
        if len(att_read_dict[cls]) != 0:
            storage[cls] = torch.stack(att_read_dict[cls], dim=0)
    used = old_used.clone()
    for cls in storage:
        for row in storage[cls][:, : -agent.n_class].long():
            for v in row:
                used[int(v)] = 1
    return storage, used


def float_storage(agent):
    """The agent's storage in the published float-row form."""
    return {c: torch.cat((agent.storage_idx[c].float(), agent.storage_logits[c]), 1) for c in agent.storage_idx}


def slow_replay_batch(agent, target, storage, mem_bar, spatial):
    """``criterion_replay`` up to the forward pass, transcribed literally (K = 1)."""
    labelslist = target.tolist()
    replay_labels = [c for c in agent.active if c not in labelslist and c in storage.keys()]
    n_rep = len(replay_labels)
    if n_rep == 0:
        return None
    replaytimes = math.ceil(len(labelslist) / n_rep)
    rows = []
    for _ in range(replaytimes):
        rows += [storage[c][random.randint(0, storage[c].size(0) - 1)] for c in replay_labels[0:n_rep]]
        replay_labels += replay_labels[0:n_rep]
    replay_labels = replay_labels[0:-n_rep]
    st = torch.stack(rows)
    h, w = spatial
    ind = st[:, : agent.model.n_groups * h * w * agent.top_k].long()
    logits = st[:, -agent.n_class :]
    recon = torch.stack([mem_bar[ind[i, :], :] for i in range(len(replay_labels))])
    return recon.view(len(replay_labels), -1), torch.LongTensor(replay_labels), logits


def slow_herding(agent, dl, old_storage, frobenius=True):
    """``update_HERDING_Storage_epoch`` transcribed (numpy, per-sample feature rows, herding without repeats)."""
    agent.model.eval()
    per_class = math.floor(agent.capacity / len(agent.active))
    features = []
    for inputs, target in dl:
        with torch.no_grad():
            direct, _, _, e = agent.forward_all(inputs)
            att = published_attention(agent.model, e)
            read = published_read(agent.model, att)
        b = inputs.shape[0]
        ind = torch.argsort(att, dim=4, descending=True)[..., 0 : agent.top_k].reshape(b, -1)
        read = read.reshape(b, -1)
        for i in range(b):
            features.append(torch.cat((read[i], ind[i].float(), direct[i], target[i].float().view(1))).unsqueeze(0))
    features = torch.cat(features, 0)
    d = read.shape[1]
    for i in range(features.shape[0]):
        features[i, :d] = features[i, :d] / features[i, :d].norm()
    features = features.numpy()
    labels = features[:, -1]
    storage = dict(old_storage)
    for ucls in np.unique(labels):
        cls_ind = np.where(labels == ucls)[0]
        mu = features[cls_ind, :d].mean(0)
        mu = mu / np.linalg.norm(mu)
        chosen, ex_feats, ex_rows = [], [], []
        for k in range(per_class):
            s = np.sum(ex_feats, axis=0)
            phi = features[cls_ind, :d]
            mu_p = (1.0 / (k + 1)) * (phi + s)
            mu_p = mu_p / (np.linalg.norm(mu_p) if frobenius else np.linalg.norm(mu_p, axis=1, keepdims=True))
            diff = np.sqrt(np.sum((mu - mu_p) ** 2, axis=1))
            for j in np.argsort(diff):
                if j not in chosen:
                    chosen.append(j)
                    ex_rows.append(torch.tensor(features[cls_ind[j], d:-1]))
                    ex_feats.append(features[cls_ind[j], :d])
                    break
        storage[int(ucls)] = torch.stack(ex_rows)
    for cls in agent.active:
        storage[cls] = storage[cls][:per_class]
    return storage


def assert_storage_equal(agent, storage):
    assert sorted(agent.storage_idx) == sorted(storage)
    for c, rows in storage.items():
        assert torch.equal(agent.storage_idx[c].long(), rows[:, : -agent.n_class].long()), c
        assert torch.allclose(agent.storage_logits[c], rows[:, -agent.n_class :]), c


# ------------------------------------------------------------------------------------------- network
@pytest.mark.parametrize("size,beta", [(32, 5.0), (64, 1.0)])
def test_read_is_attention_weighted_sum(size, beta):
    agent = make_agent(mem_sparse=beta)
    x = torch.randn(3, 3, size, size)
    agent.model.eval()
    with torch.no_grad():
        e = agent.model.front(x)
        att = published_attention(agent.model, e)
        read, top = agent.model.read_map(e, top_k=3)
        direct, out, top2 = agent.model(e, top_k=3)
        no_read, top3 = agent.model.read_map(e, top_k=3, with_read=False)
    b, c, h, w = e.shape
    assert (h, w) == ((1, 1) if size == 32 else (3, 3))
    g, f, s = c // 8, 8, 10
    assert att.shape == (b, h, w, g, s)
    assert torch.allclose(att.sum(-1), torch.ones(b, h, w, g), atol=1e-5)  # attention rows sum to 1
    mem = agent.model.memory.detach()
    keys = e.permute(0, 2, 3, 1).reshape(b, h, w, g, f)
    att_ref = torch.softmax(beta * torch.einsum("bijgf,sf->bijgs", keys, mem), dim=-1)
    assert torch.allclose(att, att_ref, atol=1e-6)
    read5 = torch.einsum("bijgs,sf->bijgf", att_ref, mem)
    for gi, fi in [(0, 0), (0, 7), (3, 2), (g - 1, f - 1)]:  # channel index = g * F + f
        assert torch.allclose(read[:, gi * f + fi], read5[:, :, :, gi, fi], atol=1e-5)
    assert torch.allclose(direct, agent.model.back(e))
    assert torch.allclose(out, agent.model.back(read), atol=1e-5)
    assert torch.equal(read, published_read(agent.model, att))  # the chunked read computes the same values
    assert torch.equal(top, att.topk(3, dim=4).indices) and torch.equal(top2, top)  # most attended first
    assert no_read is None and torch.equal(top3, top)
    # forward_attonly on the (h, w, c)-flattened read gives the memory path
    agent.spatial = (h, w)
    flat = read5.reshape(b, -1)
    assert torch.allclose(agent.forward_attonly(flat), out, atol=1e-5)


@pytest.mark.parametrize("beta,rows", [(5.0, 4096), (0.5, 4096), (5.0, 64)])
def test_memory_read_function_matches_autograd(beta, rows, monkeypatch):
    """The hand-written, chunked backward of the fused read equals autograd's on the published formula; the forward
    is bit-identical to it. rows = 64: five chunks of keys, the last one short."""
    monkeypatch.setattr(augmem_module, "ATTEND_ROWS_CPU", rows)
    torch.manual_seed(0)
    keys = torch.randn(300, 8, dtype=torch.float64, requires_grad=True)
    mem = torch.randn(10, 8, dtype=torch.float64, requires_grad=True)
    w = torch.randn(300, 8, dtype=torch.float64)

    def published(k, m):
        return published_attention_of_keys(k, m, beta).matmul(m)

    ref = published(keys, mem)
    (ref * w).sum().backward()
    g_keys, g_mem = keys.grad.clone(), mem.grad.clone()
    keys.grad = mem.grad = None
    fused = MemoryRead.apply(keys, mem, beta)
    assert torch.equal(fused, ref)
    (fused * w).sum().backward()
    assert torch.allclose(keys.grad, g_keys, rtol=1e-10, atol=1e-12)
    assert torch.allclose(mem.grad, g_mem, rtol=1e-10, atol=1e-12)
    assert torch.autograd.gradcheck(lambda k, m: MemoryRead.apply(k, m, beta), (keys.detach().requires_grad_(),
                                                                                 mem.detach().requires_grad_()))
    # only the gradient that is needed: frozen keys (the frozen front) or a frozen memory
    g_mem_only = torch.autograd.grad((MemoryRead.apply(keys.detach(), mem, beta) * w).sum(), mem)[0]
    assert torch.allclose(g_mem_only, g_mem, rtol=1e-10, atol=1e-12)
    g_keys_only = torch.autograd.grad((MemoryRead.apply(keys, mem.detach(), beta) * w).sum(), keys)[0]
    assert torch.allclose(g_keys_only, g_keys, rtol=1e-10, atol=1e-12)
    # top-k slots per key, chunk by chunk, as the whole attention ranks them
    with torch.no_grad():
        att = published_attention_of_keys(keys, mem, beta)
        read, top = attend(keys, mem, beta, top_k=2)
        no_read, top_only = attend(keys, mem, beta, top_k=2, with_read=False)
    assert torch.equal(read, ref.detach()) and torch.equal(top, att.topk(2).indices)
    assert no_read is None and torch.equal(top_only, top)


def test_training_forward_uses_fused_read_with_same_values():
    agent = make_agent()
    torch.manual_seed(1)
    e = torch.randn(4, 512, 3, 3).relu()
    agent.model.eval()  # no dropout: both paths are deterministic
    with torch.no_grad():
        direct0, out0, top0 = agent.model(e, top_k=1)
    direct1, out1, top1 = agent.model(e, top_k=1)  # gradients on: the fused read
    assert agent.model(e)[2] is None  # no top slots unless asked for
    assert torch.equal(top0, top1) and top0.shape == (4, 3, 3, 64, 1)
    assert torch.equal(direct0, direct1.detach()) and torch.equal(out0, out1.detach())
    out1.sum().backward()
    assert agent.model.memory.grad is not None and agent.model.memory.grad.abs().sum() > 0


def test_rng_order_and_feature_split_errors():
    torch.manual_seed(0)
    mem_bar = torch.randn(10, 8)
    agent = make_agent()
    assert torch.equal(agent.mem_bar, mem_bar)  # M_bar is drawn first
    torch.manual_seed(0)
    torch.randn(10, 8)
    from augmem.models import build_backbone

    build_backbone("squeezenet", 4, "none")
    assert torch.equal(agent.model.memory.detach(), torch.randn(10, 8))  # then backbone, then M
    with pytest.raises(InputError, match="memory_Nfeat=7 must divide the 512"):
        make_agent(memory_Nfeat=7)
    with pytest.raises(InputError, match="memory_Nfeat=5 must divide the 64"):
        make_agent(backbone="mobilenet", memory_Nfeat=5)
    assert get_agent_class("AugMem") is AugMemAgent
    assert agent.output_paths() == ["mem", "direct"] and agent.primary_path == "mem"


def test_mobilenet_backbone():
    agent = make_agent(backbone="mobilenet", memory_Nfeat=8, memory_size=4)
    assert agent.model.n_groups == 8 and not agent.uses_front_features  # BatchNorm in the front: no cache
    ds = random_images(12, size=64)
    agent.set_active([0, 1])
    agent.learn_stream(loader(ds, 6), task=0, epoch=0, last_epoch=True)
    assert agent.spatial == (4, 4)
    for c in (0, 1):
        assert agent.storage_idx[c].shape[1] == 4 * 4 * 8
    viz = agent.visualization(ds.tensors[0][:2])
    assert viz["top_slots"].shape == (2, 4, 4, 8)


# ------------------------------------------------------------------------------------------- storage
@pytest.mark.parametrize("size,k", [(32, 1), (64, 2)])
def test_vectorised_storage_matches_slow_transcription(tiny_stream, size, k):
    tasks, _ = tiny_stream
    agent = make_agent(memory_topK=k, memory_size=6)
    ds0 = permuted(tasks[0]) if size == 32 else random_images(30, seed=1)
    ds1 = permuted(tasks[1], 1) if size == 32 else random_images(30, seed=2, first_label=2)
    for t, ds in enumerate([ds0, ds1]):
        agent.set_active([0, 1, 2, 3][: 2 * (t + 1)])
        old = float_storage(agent)
        old_used = agent.used.clone()
        dl = loader(ds, 11)
        agent.update_storage(dl)
        storage, used = slow_update_storage(agent, dl, old, old_used)
        assert_storage_equal(agent, storage)
        assert torch.equal(agent.used, used)
    # stored hypotheses are the top-k slots at every location (and group), most attended first
    h, w = agent.spatial
    assert agent.storage_idx[0].shape[1] == h * w * agent.model.n_groups * k
    assert agent.storage_idx[0].dtype == torch.int16


def test_storage_sizes_and_top_slots(tiny_stream):
    tasks, _ = tiny_stream
    agent = make_agent(memory_size=4, memory_Nslots=300)
    agent.set_active([0, 1])
    agent.update_storage(loader(tasks[0], 24))
    # 12 samples per class in one batch: positions 0, 5, 10 -> 3 kept, FIFO keeps the last floor(4/2) = 2
    assert {c: len(t) for c, t in agent.storage_idx.items()} == {0: 2, 1: 2}
    x, y = tasks[0].tensors
    agent.model.eval()
    with torch.no_grad():
        direct, _, _, e = agent.forward_all(x)
        att = published_attention(agent.model, e)
    cls0 = (y == 0).nonzero().squeeze(1)
    expected = cls0[[5, 10]]  # the kept samples, most recent last
    assert torch.equal(agent.storage_idx[0].long(), att.argmax(-1).reshape(len(x), -1)[expected])
    assert torch.allclose(agent.storage_logits[0], direct[expected])
    # used-slot list = union of stored indices
    union = torch.unique(torch.cat([t.reshape(-1).long() for t in agent.storage_idx.values()]))
    assert 0 < len(union) < 300
    assert torch.equal(agent.used.nonzero().squeeze(1), union)
    mb = agent.memory_bytes()
    assert mb == {"slot_indices": 4 * 64 * 2, "logits": 4 * 4 * 4, "memory_matrix": 300 * 8 * 4}
    usage = agent.slot_usage()
    assert usage.shape == (4, 300) and usage[0].sum() == 2 * 64 and usage[2].sum() == 0
    assert torch.equal(usage[0], torch.bincount(agent.storage_idx[0].reshape(-1).long(), minlength=300))


@pytest.mark.parametrize("fidelity", ["reference", "corrected"])
def test_absent_classes_untrimmed_in_reference_only(tiny_stream, fidelity):
    tasks, _ = tiny_stream
    agent = make_agent(fidelity, memory_size=4)
    agent.set_active([0, 1])
    agent.update_storage(loader(tasks[0], 24))
    agent.set_active([0, 1, 2, 3])
    agent.update_storage(loader(tasks[1], 24))
    sizes = {c: len(t) for c, t in agent.storage_idx.items()}
    if fidelity == "reference":
        assert sizes == {0: 2, 1: 2, 2: 1, 3: 1}  # old classes keep floor(4/2); total 6 > memory_size
    else:
        assert sizes == {0: 1, 1: 1, 2: 1, 3: 1}  # every class trimmed to floor(4/4)
    # used slots are cumulative: they still include the slots of trimmed entries
    assert agent.used.sum() >= len(torch.unique(torch.cat([t.reshape(-1).long() for t in agent.storage_idx.values()])))


@pytest.mark.parametrize("frobenius", [True, False])
def test_herding_storage_matches_slow_transcription(frobenius):
    overrides = {"herding_frobenius_norm": frobenius}
    agent = make_agent(overrides=overrides, herding_mode=True, memory_size=8)
    ds = random_images(20, size=64, seed=3)
    agent.set_active([0, 1])
    old = float_storage(agent)
    dl = loader(ds, 7)
    agent.update_storage_herding(dl)
    storage = slow_herding(agent, dl, old, frobenius)
    assert_storage_equal(agent, storage)
    assert all(len(t) == 4 for t in agent.storage_idx.values())
    # no repeats
    feat = torch.nn.functional.normalize(torch.randn(6, 5), dim=1)
    assert sorted(herding_select(feat, 10, frobenius).tolist()) == list(range(6))
    # learn_stream uses herding when herding_mode is on
    agent2 = make_agent(overrides=overrides, herding_mode=True, memory_size=8)
    agent2.set_active([0, 1])
    agent2.learn_stream(dl, task=0, epoch=0, last_epoch=True)
    assert all(len(t) == 4 for t in agent2.storage_idx.values())  # the default path would keep every 5th: <= 2


# ------------------------------------------------------------------------------------------- replay
def test_replay_batch_matches_slow_transcription(tiny_stream):
    tasks, _ = tiny_stream
    agent = make_agent(memory_size=8)
    agent.set_active([0, 1])
    agent.update_storage(loader(permuted(tasks[0]), 12))
    agent.set_active([0, 1, 2, 3])
    y = tasks[1].tensors[1][:21]
    from augmem.train.seeding import replay_random

    replay_random(agent).python.seed(5)  # the agent draws from its own random.Random, the transcription from random
    read, labels, logits = agent.replay_batch(y)
    random.seed(5)
    s_read, s_labels, s_logits = slow_replay_batch(agent, y, float_storage(agent), agent.mem_bar, agent.spatial)
    assert len(labels) == 22  # |R| * ceil(21 / |R|) with R = [0, 1]
    assert torch.equal(labels, s_labels)
    assert torch.bincount(labels).tolist() == [11, 11]
    assert torch.equal(read, s_read)
    assert torch.allclose(logits, s_logits)
    # nothing to replay when every active class with storage is in the batch
    assert agent.replay_batch(torch.tensor([0, 1, 2, 3])) is None


def test_replay_batch_size_formula():
    agent = make_agent(n_class=10)
    agent.spatial = (1, 1)
    agent.set_active(list(range(10)))
    for c in range(8):
        agent.storage_idx[c] = torch.randint(0, 10, (3, 64), dtype=torch.int16)
        agent.storage_logits[c] = torch.randn(3, 10)
    agent._invalidate_storage_cache()
    y = torch.tensor([8, 9] * 10 + [8])  # B = 21, classes 0..7 replayed
    _, labels, _ = agent.replay_batch(y)
    assert len(labels) == 24 and torch.bincount(labels).tolist() == [3] * 8


@pytest.mark.parametrize("top1_quirk", [True, False])
def test_topk_replay_reconstruction(top1_quirk):
    agent = make_agent(memory_topK=2, overrides={"augmem_top1_only_replay": top1_quirk})
    agent.spatial = (1, 1)
    idx = torch.randint(0, 10, (3, 64 * 2))
    read = agent.reconstruct_read(idx)
    pairs = agent.mem_bar[idx.view(3, 64, 2)]  # (n, G, K, F)
    expected = pairs[:, :, 0] if top1_quirk else pairs.mean(2)
    assert torch.allclose(read, expected.reshape(3, -1))


# ------------------------------------------------------------------------------------------- ablations
def _task1_log(tasks, **hp):
    agent = make_agent(memory_size=8, **hp)
    train_two_tasks(agent, tasks)
    return agent


def test_ablation_switches(tiny_stream):
    tasks, _ = tiny_stream
    base = _task1_log(tasks)
    n_batches = math.ceil(len(tasks[1]) / 12)
    assert base.n_main_steps == n_batches and base.n_replay_steps == n_batches
    main = [s for s in base.step_log if s["kind"] == "main"]
    replay = [s for s in base.step_log if s["kind"] == "replay"]
    # reference: M moves during replay steps (torch-1.7 momentum), so the next step's regulariser is non-zero
    assert max(float(s["reg"]) for s in main) > 0
    assert all(float(s["bce"]) > 0 for s in main) and all(float(s["replay_bce"]) > 0 for s in replay)

    no_reg = _task1_log(tasks, reg_coef=0)
    assert all(float(s["reg"]) == 0 for s in no_reg.step_log if s["kind"] == "main")
    no_replay = _task1_log(tasks, replay_coef=0, replay_times=0)
    assert no_replay.n_replay_steps == 0 and all(s["kind"] == "main" for s in no_replay.step_log)
    twice = _task1_log(tasks, replay_times=2)
    assert twice.n_replay_steps == 2 * n_batches
    no_logits = _task1_log(tasks, logit_coef=0)
    assert all(float(s.get("bce", 0)) == 0 and float(s.get("replay_bce", 0)) == 0 for s in no_logits.step_log)


def test_regulariser_formula():
    agent = make_agent(reg_coef=1000)
    agent.used = torch.zeros(10)
    agent.used[[1, 4]] = 1
    agent.mem_bar = agent.model.memory.detach() + torch.arange(10.0).view(10, 1) * 0.1
    expected = sum(((agent.model.memory[s] - agent.mem_bar[s]) ** 2).sum() for s in (1, 4))
    assert torch.allclose(agent.regulariser(), expected)
    assert float(agent.regulariser().detach()) > 0


# ------------------------------------------------------------------------------------------- fidelity switches
def test_hardcoded_lr(tiny_stream):
    tasks, _ = tiny_stream
    for fidelity, lr_after in [("reference", 0.001), ("corrected", 0.01)]:
        agent = make_agent(fidelity, lr=0.01)
        agent.set_active([0, 1])
        agent.learn_stream(loader(tasks[0], 24), task=0, epoch=0, last_epoch=True)
        assert agent.optimizer.param_groups[0]["lr"] == 0.01
        agent.set_active([0, 1, 2, 3])
        agent.learn_stream(loader(tasks[1], 24), task=1, epoch=0, last_epoch=True)
        assert agent.optimizer.param_groups[0]["lr"] == lr_after


def test_mem_bar_reference(tiny_stream):
    tasks, _ = tiny_stream
    ref = make_agent("reference")
    ref.set_active([0, 1])
    x, y = tasks[0].tensors
    ref._train_mode()
    ref.main_step(x[:12], y[:12])
    assert torch.equal(ref.mem_bar, ref.model.memory.detach())  # refreshed after every main step

    cor = make_agent("corrected")
    cor.set_active([0, 1])
    for e in range(2):  # from the second epoch on some slots are marked used
        cor.learn_stream(loader(tasks[0], 12), task=0, epoch=e, last_epoch=e == 1)
        assert all(float(s["reg"]) == 0 for s in cor.step_log)  # no previous task: no reference
    assert cor.used.sum() > 0
    end_of_task0 = cor.model.memory.detach().clone()
    cor.set_active([0, 1, 2, 3])
    cor.learn_stream(loader(tasks[1], 12), task=1, epoch=0, last_epoch=True)
    assert torch.equal(cor.mem_bar, end_of_task0)  # M_bar = memory at the end of the previous task
    assert not torch.equal(cor.model.memory.detach(), end_of_task0)
    assert float(cor.step_log[-2 if cor.step_log[-1]["kind"] == "replay" else -1]["reg"]) > 0


@pytest.mark.parametrize("torch17", [True, False])
def test_torch17_zero_grad_moves_memory_in_replay(tiny_stream, torch17):
    tasks, _ = tiny_stream
    agent = make_agent("reference", overrides={"augmem_torch17_zero_grad": torch17}, memory_size=8)
    agent.set_active([0, 1])
    agent.update_storage(loader(tasks[0], 12))
    agent.set_active([0, 1, 2, 3])
    agent._train_mode()
    x, y = tasks[1].tensors
    agent.main_step(x[:12], y[:12])
    before = agent.model.memory.detach().clone()
    back_before = [p.detach().clone() for p in agent.model.back.parameters()]
    assert agent.replay_step(y[:12])
    moved = not torch.equal(agent.model.memory.detach(), before)
    assert moved == torch17  # replay loss never depends on M: only momentum / weight decay can move it
    assert any(not torch.equal(a, p) for a, p in zip(back_before, agent.model.back.parameters()))


@pytest.mark.parametrize("fidelity", ["reference", "corrected"])
def test_bce_direction(tiny_stream, fidelity):
    tasks, _ = tiny_stream
    agent = make_agent(fidelity, memory_size=8)
    agent.set_active([0, 1])
    agent.update_storage(loader(tasks[0], 12))
    agent.set_active([0, 1, 2, 3])
    agent.model.eval()  # no dropout: deterministic comparison
    x, y = tasks[1].tensors[0][:12], tasks[1].tensors[1][:12]
    # replay distillation term
    random.seed(1)
    _, terms = agent.replay_loss(y)
    back = [p for p in agent.model.back.parameters() if p.requires_grad]
    if fidelity == "reference":
        assert not terms["replay_bce"].requires_grad and float(terms["replay_bce"]) > 0  # constant input: no gradient
    else:
        grads = torch.autograd.grad(terms["replay_bce"], back, allow_unused=True)
        assert any(g is not None and g.abs().sum() > 0 for g in grads)
    # main distillation term: reference distils direct -> memory (M gets no gradient from it)
    _, terms = agent.main_loss(x, y)
    (g_mem,) = torch.autograd.grad(terms["bce"], [agent.model.memory], allow_unused=True)
    if fidelity == "reference":
        assert g_mem is None or float(g_mem.abs().sum()) == 0
    else:
        assert g_mem is not None and float(g_mem.abs().sum()) > 0


# ------------------------------------------------------------------------------------------- state, inference, learning
def test_checkpoint_round_trip(tiny_stream):
    tasks, _ = tiny_stream
    a = make_agent(memory_size=8)
    train_two_tasks(a, tasks, epochs=(1, 0))
    buf = io.BytesIO()
    torch.save(a.checkpoint_state(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    b = make_agent(memory_size=8, seed=123)
    b.load_checkpoint_state(state)
    for agent in (a, b):
        torch.manual_seed(7)
        random.seed(7)
        agent.set_active([0, 1, 2, 3])
        agent.learn_stream(loader(tasks[1], 12), task=1, epoch=0, last_epoch=True)
    for (k, va), vb in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(va, vb), k
    assert torch.equal(a.mem_bar, b.mem_bar) and torch.equal(a.used, b.used)
    assert sorted(a.storage_idx) == sorted(b.storage_idx)
    for c in a.storage_idx:
        assert torch.equal(a.storage_idx[c], b.storage_idx[c])
        assert torch.equal(a.storage_logits[c], b.storage_logits[c])
    assert a.optimizer.param_groups[0]["lr"] == b.optimizer.param_groups[0]["lr"] == 0.001
    # keep-best snapshots restore the network but not the memory (as published)
    snap = a.snapshot_weights()
    assert "memory" not in snap
    mem = a.model.memory.detach().clone()
    a.restore_weights(snap)
    assert torch.equal(a.model.memory.detach(), mem)


def test_predict_evaluate_visualization(tiny_stream):
    tasks, test = tiny_stream
    agent = make_agent()
    agent.set_active([0, 1])
    x = test.tensors[0][:5]
    pred = agent.predict(x)
    assert set(pred) == {"mem", "direct"} and all(p.shape == (5,) for p in pred.values())
    assert all(set(p.tolist()) <= {0, 1} for p in pred.values())
    acc = agent.evaluate(loader(TensorDataset(*test[:12]), 6))
    assert set(acc) == {"mem", "direct"}
    viz = agent.visualization(torch.randn(2, 3, 64, 64))
    assert viz["top_slots"].shape == (2, 3, 3, 64) and viz["top_slots"].dtype == torch.int32
    assert int(viz["top_slots"].max()) < 10
    assert agent.memory_matrix().shape == (10, 8)
    assert agent.forward(x).shape == (5, 4)  # direct logits over all classes


def test_learns_tiny_stream(tiny_stream):
    """Task 0 of the tiny stream, upsampled to 64x64 (a 1x1 feature map of a random-init SqueezeNet does not train)."""
    tasks, test = tiny_stream

    def up(ds):
        x, y = ds.tensors
        return TensorDataset(F.interpolate(x, size=64, mode="bilinear", align_corners=False), y)

    agent = make_agent(lr=0.001, weight_decay=0, memory_size=8)
    tx, ty = test.tensors
    test0 = up(TensorDataset(tx[ty < 2], ty[ty < 2]))
    agent.set_active([0, 1])
    for e in range(5):
        agent.learn_stream(loader(up(tasks[0]), 4), task=0, epoch=e, last_epoch=e == 4)
    acc = agent.evaluate(loader(test0, 12))
    assert acc["mem"] >= 80.0, acc


# ------------------------------------------------------------------------------------------- tie order (spec 6.4)
def _features_with_exact_ties(n=10, size=3, seed=0):
    """Front features (n, 512, size, size) in which a third of the 8-channel key groups are all zero: such a key
    attends every slot equally (an exact S-way tie), as the all-zero ReLU groups of real feature maps do."""
    g = torch.Generator().manual_seed(seed)
    e = torch.rand(n, 512, size, size, generator=g)
    keys = e.view(n, 64, 8, size, size)
    keys[:, ::3] = 0.0
    y = torch.arange(n) % 2
    return TensorDataset(e, y)


def _topk_update_storage(agent, dl, old_storage, old_used, monkeypatch):
    """The slow transcription with ``topk`` in place of the published argsort."""
    real_argsort = torch.argsort

    def argsort_by_topk(t, dim=-1, descending=False):
        assert descending and dim == 4
        return t.topk(agent.top_k, dim=dim, largest=True, sorted=True).indices  # topk's tie order depends on k

    monkeypatch.setattr(torch, "argsort", argsort_by_topk)
    try:
        return slow_update_storage(agent, dl, old_storage, old_used)
    finally:
        monkeypatch.setattr(torch, "argsort", real_argsort)


@pytest.mark.parametrize("fidelity", ["reference", "corrected"])
def test_stored_slots_follow_published_argsort_tie_order(fidelity, monkeypatch):
    """Reference stores the slots ``torch.argsort(att, descending=True)[..., :K]`` picks, also for exactly tied
    attention (all-zero keys); corrected uses topk, whose tie order differs. Keys are fed as cached front features."""
    agent = make_agent(fidelity, memory_topK=2, memory_size=10, memory_Nslots=100)
    agent.set_inputs_are_features(True)
    agent.set_active([0, 1])
    ds = _features_with_exact_ties()
    dl = loader(ds, 10)
    old, old_used = float_storage(agent), agent.used.clone()
    agent.update_storage(dl)
    published, used_published = slow_update_storage(agent, dl, old, old_used)
    by_topk, used_topk = _topk_update_storage(agent, dl, old, old_used, monkeypatch)
    # the tie is real and the two orders differ on it (else this test would not tell them apart)
    assert not torch.equal(published[0][:, :-agent.n_class], by_topk[0][:, :-agent.n_class])
    expected, used = (published, used_published) if fidelity == "reference" else (by_topk, used_topk)
    assert_storage_equal(agent, expected)
    assert torch.equal(agent.used, used)


def test_attend_argsort_order_is_independent_of_chunking(monkeypatch):
    """Sorting is per key: chunked argsort equals one argsort over the whole (B, h, w, G, S) attention."""
    ds = _features_with_exact_ties(n=6, size=5)
    agent = make_agent(memory_Nslots=100)
    e = ds.tensors[0]
    att = published_attention(agent.model, e)
    whole = torch.argsort(att, dim=4, descending=True)[..., :3].reshape(-1, 3)
    keys = e.permute(0, 2, 3, 1).reshape(-1, 8)
    monkeypatch.setattr(augmem_module, "ATTEND_ROWS_CPU", 7)
    _, top = attend(keys, agent.model.memory.detach(), agent.model.beta, 3, with_read=False, argsort_ties=True)
    assert torch.equal(top, whole)
