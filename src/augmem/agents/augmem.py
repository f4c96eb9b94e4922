"""AugMem: the Augmented Memory network (spec 6.4, quirks 12.24).

A frozen front ``E`` turns an image into a feature map ``e`` (B x c x h x w). Every location's channels are split into
G = c / F groups of F consecutive channels; each group (a *key*) reads a memory ``M`` (S slots x F features) by content
attention (softmax over slots of beta * <key, M_s>). The read map ``r`` has the shape of ``e``; the shared back ``H``
gives two outputs, ``direct = H(e)`` and ``out = H(r)`` (the "mem" path).

Continual learning: after every epoch the agent stores, for a few training samples per class, the index of the top
slot at every location and group (a compact *hypothesis* of the sample) plus its direct logits. In later tasks it
replays old classes by rebuilding reads from those indices, and a regulariser keeps memory slots that stored samples
point to close to a reference copy ``M_bar``.

Each quirk of the published code that changes results is a :class:`~augmem.train.fidelity.TrainSwitches` switch
(``augmem_*`` and ``herding_frobenius_norm``); ``reference`` reproduces the code, ``corrected`` fixes it.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from augmem.agents.base import Agent, CommonHP, n_params_bytes
from augmem.agents.hparams import hparam
from augmem.io import InputError
from augmem.models import build_backbone
from augmem.models.backbones import canonical_name
from augmem.train.fidelity import TrainSwitches
from augmem.train.seeding import replay_random

# CLI defaults of experiment_aug.py (spec 5.4); the run scripts override most of them (spec 8.2, 8.3).


@dataclasses.dataclass(frozen=True)
class AugMemHP(CommonHP):
    """experiment_aug.py's hyperparameters (defaults: its CLI, spec 5.4; published values: params/agents.yaml)."""

    memory_Nslots: int = hparam(100, "S, slots of the memory matrix M", unit="slots", min=1)
    memory_Nfeat: int = hparam(512, "F, features per slot; the front's channels split into c / F keys per location",
                               unit="features", min=1)
    memory_topK: int = hparam(1, "K, most attended slots stored per key", unit="slots per key", min=1)
    memory_size: int = hparam(1200, "hypothesis storage over all active classes (floor(memory_size / |active|) per "
                              "class); one hypothesis = the top-K slot indices of every key of one image + its logits",
                              unit="hypotheses in total", min=0)
    mem_sparse: float = hparam(5.0, "beta, sharpness of the attention softmax(beta <k, M_s>)", min=0)
    logit_coef: float = hparam(1.0, "weight of the logit distillation (BCE) terms", min=0)
    reg_coef: float = hparam(1.0, "weight of the memory-usage regulariser sum_s u_s ||M_s - M_bar_s||^2", min=0)
    replay_coef: float = hparam(1.0, "weight of the replay loss", min=0)
    replay_times: int = hparam(1, "replay steps after every main step of tasks >= 1", min=0)
    herding_mode: bool = hparam(False, "choose stored hypotheses by herding (ablation) instead of the latest ones")
    freeze_memory: bool = hparam(False, "keep M fixed (no gradient)")
    best_net_direct: bool = hparam(False, "keep-best selects on the direct path instead of the memory path")
    health_check: bool = hparam(True, "after every task, compute the memory's health figures on the test set "
                                "(metrics.json `health`; README, AugMem health)")
    allow_small_map: bool = hparam(False, "run even when image_size gives the front a map smaller than 2x2 "
                                   "(too few keys to carry hypotheses; the job stops otherwise)")

HARDCODED_LR = 0.001  # spec 6.4 step 4
GRAD_CLAMP = 10.0  # elementwise gradient clamp to [-10, 10]
STORE_EVERY = 5  # every 5th sample of a class within a batch is stored


# Keys per chunk of the attention. The attention is N x S (N = B*h*w*G keys, about 11,000 per 224x224 image; S slots);
# computed whole, each of its element-wise passes streams ~90 MB (batch 21) through memory, which is what a CPU step
# waits for. In chunks of 4,096 keys (1.6 MB at S = 100) every pass stays in cache: the same values per key, 3-4x
# faster on the 2-core CPU. A GPU prefers big kernels, so it gets chunks of 2**17 keys.
ATTEND_ROWS_CPU = 4096
ATTEND_ROWS_CUDA = 1 << 17


def _chunk_rows(t: torch.Tensor) -> int:
    return ATTEND_ROWS_CUDA if t.is_cuda else ATTEND_ROWS_CPU


def _softmax_rows(keys: torch.Tensor, memory: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """a = softmax(beta * K M^T) over slots and s = sum a + 1e-16 (the sharpening denominator, gamma = 1)."""
    a = F.softmax(beta * keys.matmul(memory.t()), dim=1)
    return a, a.sum(dim=1, keepdim=True).add_(1e-16)


@torch.no_grad()
def attend(keys: torch.Tensor, memory: torch.Tensor, beta: float, top_k: int = 0, with_read: bool = True,
           argsort_ties: bool = False) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Read vectors (N, F) of flat keys (N, F) from the memory (S, F) (None without ``with_read``), and the indices
    (N, top_k) of each key's ``top_k`` most attended slots (most attended first; None for top_k = 0), computed chunk
    by chunk.

    Per key: p = sharpen(softmax(beta * <k, M_s>)), read = sum_s p_s M_s (spec 6.4 steps 3-5). No autograd: the
    training forward goes through :class:`MemoryRead`, which calls this for its values.

    ``argsort_ties`` picks the slots with the published ``torch.argsort(att, descending=True)[..., :K]`` instead of
    ``topk``: the two order tied attention values differently (switch ``augmem_argsort_slot_ties``). Sorting is per
    key, so chunking the keys does not change the order.
    """
    n = keys.shape[0]
    read = keys.new_empty(n, memory.shape[1]) if with_read else None
    top = torch.empty(n, top_k, dtype=torch.long, device=keys.device) if top_k else None
    rows = _chunk_rows(keys)
    for i in range(0, n, rows):
        a, s = _softmax_rows(keys[i:i + rows], memory, beta)
        p = a.div_(s)
        if top is not None:
            top[i:i + rows] = _top_slots(p, top_k, argsort_ties)
        if read is not None:
            read[i:i + rows] = p.matmul(memory)
    return read, top


def _top_slots(p: torch.Tensor, top_k: int, argsort_ties: bool) -> torch.Tensor:
    if argsort_ties:
        return torch.argsort(p, dim=1, descending=True)[:, :top_k]
    return p.topk(top_k, dim=1, largest=True, sorted=True).indices


@torch.no_grad()
def attention_top1(keys: torch.Tensor, memory: torch.Tensor, beta: float, argsort_ties: bool = False
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(most attended slot (N,), its attention (N,)) of each flat key, chunk by chunk, with the same slot choice as
    :func:`attend` (so the codes are those the storage keeps)."""
    n = keys.shape[0]
    idx = torch.empty(n, dtype=torch.long, device=keys.device)
    att = keys.new_empty(n)
    rows = _chunk_rows(keys)
    for i in range(0, n, rows):
        a, s = _softmax_rows(keys[i:i + rows], memory, beta)
        p = a.div_(s)
        idx[i:i + rows] = _top_slots(p, 1, argsort_ties)[:, 0]
        att[i:i + rows] = p.max(dim=1).values
    return idx, att


class MemoryRead(torch.autograd.Function):
    """read = sharpen(softmax(beta * K M^T)) M for flat keys K (N, F) and memory M (S, F),
    sharpen(a) = a / (sum a + eps).

    The forward is :func:`attend` (chunked). The backward is written out and chunked too: autograd would keep the
    N x S attention and make a dozen full passes over it (division, its broadcast-sum backward, softmax backward).
    Each chunk's attention is recomputed instead of stored (cheap next to streaming it from memory). With p = a / s
    and s = sum a + eps:
        g_p = g_r M^T;  g_a = (g_p - <g_p, p>) / s;  g_z = beta * a * (g_a - <g_a, a>)
        g_K = g_z M;  g_M = p^T g_r + g_z^T K
    """

    @staticmethod
    def forward(ctx, keys: torch.Tensor, memory: torch.Tensor, beta: float) -> torch.Tensor:
        ctx.save_for_backward(keys, memory)
        ctx.beta = beta
        return attend(keys, memory, beta)[0]

    @staticmethod
    def backward(ctx, g_read: torch.Tensor):
        keys, memory = ctx.saved_tensors
        need_keys, need_mem = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        beta = ctx.beta
        g_keys = torch.empty_like(keys) if need_keys else None
        g_mem = torch.zeros_like(memory) if need_mem else None
        rows = _chunk_rows(keys)
        for i in range(0, keys.shape[0], rows):
            k, g_r = keys[i:i + rows], g_read[i:i + rows]
            a, s = _softmax_rows(k, memory, beta)
            if need_mem:
                g_mem.addmm_(a.t(), g_r / s)  # p^T g_r
            g = g_r.matmul(memory.t())  # g_p, then updated in place
            g.sub_((g * a).sum(dim=1, keepdim=True).div_(s)).div_(s)  # g_a (<g_p, p> = <g_p, a> / s)
            g.sub_((g * a).sum(dim=1, keepdim=True)).mul_(a)  # g_z / beta
            if need_keys:
                g_keys[i:i + rows] = g.matmul(memory).mul_(beta)
            if need_mem:
                g_mem.addmm_(g.t(), k, alpha=beta)
        return g_keys, g_mem, None


class MemNet(nn.Module):
    """Front ``E``, back ``H`` and the memory ``M`` (``mem_net.Net``).

    Indexing ``net[0]`` / ``net[1]`` gives the front / back, like the baselines' ``Sequential(front, back)``.
    """

    def __init__(self, front: nn.Module, back: nn.Module, channels: int, n_slots: int, n_feat: int, beta: float):
        super().__init__()
        if n_feat <= 0 or channels % n_feat != 0:
            raise InputError(
                f"memory_Nfeat={n_feat} must divide the {channels} channels of the backbone cut "
                f"(the keys are {channels}/memory_Nfeat groups of memory_Nfeat consecutive channels)"
            )
        self.front = front
        self.back = back
        self.channels = int(channels)
        self.n_slots = int(n_slots)
        self.n_feat = int(n_feat)
        self.n_groups = self.channels // self.n_feat
        self.beta = float(beta)
        self.memory = nn.Parameter(torch.randn(n_slots, n_feat))  # N(0, 1), created after the backbone (RNG order)
        self.argsort_ties = False  # the published argsort tie order for the top slots (set by the agent's switch)

    def __getitem__(self, i: int) -> nn.Module:
        return (self.front, self.back)[i]

    def read_map(self, e: torch.Tensor, top_k: int = 0, with_read: bool = True
                 ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Read map (B, c, h, w) of the feature map ``e`` (B, c, h, w) (None without ``with_read``), and the
        (B, h, w, G, top_k) indices of the most attended slots of every key (None for top_k = 0).

        Every location's channels split into G groups of F consecutive channels (channel = g * F + f); each group is
        a key that reads the memory; the reads are reassembled in the same channel order. With gradients on, the
        read goes through :class:`MemoryRead`.
        """
        b, c, h, w = e.shape
        if c != self.channels:
            raise ValueError(f"feature map has {c} channels, the memory network expects {self.channels}")
        keys = e.permute(0, 2, 3, 1).reshape(-1, self.n_feat)  # (B*h*w*G, F) in (b, i, j, g) order
        if with_read and torch.is_grad_enabled() and (e.requires_grad or self.memory.requires_grad):
            read = MemoryRead.apply(keys, self.memory, self.beta)
            top = (attend(keys, self.memory, self.beta, top_k, with_read=False, argsort_ties=self.argsort_ties)[1]
                   if top_k else None)
        else:
            read, top = attend(keys, self.memory, self.beta, top_k, with_read, argsort_ties=self.argsort_ties)
        if read is not None:
            read = read.reshape(b, h, w, c).permute(0, 3, 1, 2)
        return read, (top.reshape(b, h, w, self.n_groups, top_k) if top is not None else None)

    def forward(self, e: torch.Tensor, top_k: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(direct, out, top slots or None) from front features ``e``; dropout in H is drawn independently for
        the two calls."""
        read, top = self.read_map(e, top_k)
        direct = self.back(e)
        out = self.back(read)
        return direct, out, top

    def forward_attonly(self, read_flat: torch.Tensor, spatial: tuple[int, int]) -> torch.Tensor:
        """H applied to flat read vectors laid out (h, w, c) per sample, as the stored-index replay builds them."""
        h, w = spatial
        return self.back(read_flat.reshape(-1, h, w, self.channels).permute(0, 3, 1, 2))


class AugMemAgent(Agent):
    """The AugMem agent: memory-read and direct output paths, index storage, replay and memory regulariser.

    Storage is a dict class -> (slot indices n x L as int16 when S <= 32767 else int32, direct logits n x C float32),
    with L = h*w*G*K in (i, j, g, k) order. The original kept one float row [indices | logits] per sample; indices
    are small integers, so the compact form gives identical results with a fraction of the bytes.
    """

    name = "AugMem"
    HP = AugMemHP
    primary_path = "mem"
    uses_front_features = True

    def __init__(self, n_class: int, hp: dict[str, Any], switches: TrainSwitches, device: str | torch.device = "cpu"):
        super().__init__(n_class, hp, switches, device)
        hp = self.hp
        self.n_slots = hp["memory_Nslots"]
        self.n_feat = hp["memory_Nfeat"]
        self.top_k = hp["memory_topK"]
        self.capacity = hp["memory_size"]
        self.mem_bar = self.mem_bar.to(self.device)
        self.used = torch.zeros(self.n_slots, device=self.device)  # ListUsedMem u, never reset
        self.index_dtype = torch.int16 if self.n_slots <= 32767 else torch.int32
        self.storage_idx: dict[int, torch.Tensor] = {}
        self.storage_logits: dict[int, torch.Tensor] = {}
        self._flat_cache: tuple | None = None
        self.spatial: tuple[int, int] | None = None  # (h, w) of the front feature map, known after a forward
        self.task = -1  # task index of the current learn_stream calls
        self.reg_ref_valid = bool(switches.augmem_reg_ref_every_step)  # corrected: no reference during task 0
        # The frozen front can be replaced by a cached feature map only if it is a fixed function in train mode:
        # SqueezeNet's front has no BatchNorm/dropout; MobileNetV2's BatchNorm keeps updating its running stats
        # in train mode (as in the original), and an unfrozen front trains.
        backbone = canonical_name(hp["backbone"])
        self.uses_front_features = bool(hp["freeze_feature_extract"]) and backbone == "squeezenet"
        self.step_log: list[dict[str, torch.Tensor]] = []  # per main/replay step of the last learn_stream (detached)
        self.n_main_steps = 0
        self.n_replay_steps = 0
        self.check_map_size()

    @classmethod
    def extra_checks(cls, hp: dict[str, Any]) -> list[tuple[str, str]]:
        out = super().extra_checks(hp)
        if hp["memory_topK"] > hp["memory_Nslots"]:
            out.append(("memory_topK", f"{hp['memory_topK']} exceeds memory_Nslots = {hp['memory_Nslots']}"))
        return out

    # ----------------------------------------------------------------------------------------------------- building
    def build_model(self) -> MemNet:
        """RNG order as published: the agent's M_bar = randn(S, F), then the backbone, then the memory M."""
        s, f = int(self.hp["memory_Nslots"]), int(self.hp["memory_Nfeat"])
        self.mem_bar = torch.randn(s, f)
        bb = build_backbone(self.hp["backbone"], self.n_class, self.hp["weights"],
                            head_bias_init=self.hp["head_bias_init"])
        if self.hp["freeze_feature_extract"]:
            for p in bb.front.parameters():
                p.requires_grad_(False)
        net = MemNet(bb.front, bb.back, bb.channels, s, f, float(self.hp["mem_sparse"]))
        net.argsort_ties = self.switches.augmem_argsort_slot_ties
        return net

    # ----------------------------------------------------------------------------------------------------- forward
    def front_forward(self, x: torch.Tensor) -> torch.Tensor:
        if getattr(self, "_inputs_are_features", False):
            return x
        return self.model.front(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Direct-path logits over all C classes (what viz.npz stores as ``logits``)."""
        return self.model.back(self.front_forward(x))

    def forward_all(self, x: torch.Tensor, top_k: int = 0
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """(direct, out, top slots (B, h, w, G, top_k) or None, e) for an input batch (images or cached front
        features)."""
        e = self.front_forward(x)
        self.spatial = (int(e.shape[2]), int(e.shape[3]))
        direct, out, top = self.model(e, top_k)
        return direct, out, top, e

    def forward_attonly(self, read_flat: torch.Tensor) -> torch.Tensor:
        """Logits of H on flat (h, w, c)-ordered read vectors."""
        if self.spatial is None:
            raise RuntimeError("the spatial size of the feature map is unknown before the first forward pass")
        return self.model.forward_attonly(read_flat, self.spatial)

    # ----------------------------------------------------------------------------------------------------- modes
    def _train_mode(self) -> None:
        """``trainOverallOn``: everything in train mode (also the frozen front, as published), M trainable."""
        self.model.train()
        self.model.memory.requires_grad_(not self.hp["freeze_memory"])

    def _zero_grad(self) -> None:
        # torch 1.7 zeroed gradients in place; a zero gradient still lets momentum / weight decay move a parameter.
        self.optimizer.zero_grad(set_to_none=not self.switches.augmem_torch17_zero_grad)

    def _clamp_and_step(self) -> None:
        for p in self.model.parameters():
            if p.grad is not None:
                p.grad.clamp_(-GRAD_CLAMP, GRAD_CLAMP)
        self.optimizer.step()

    # ----------------------------------------------------------------------------------------------------- losses
    def _bce(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """BCE(input = sigmoid(student), target = sigmoid(teacher) detached), both over the active nodes."""
        a = self.active_index
        return F.binary_cross_entropy(torch.sigmoid(student[:, a]), torch.sigmoid(teacher[:, a]).detach())

    def regulariser(self) -> torch.Tensor:
        """sum_s u_s ||M_s - M_bar_s||^2 (unweighted); zero without a reference (corrected fidelity, task 0)."""
        if not self.reg_ref_valid:
            return torch.zeros((), device=self.device)
        diff = (self.model.memory - self.mem_bar) ** 2
        return self.used.view(1, -1).matmul(diff).sum()

    def main_loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """L_main of spec 6.4 and its weighted terms."""
        direct, out, _, _ = self.forward_all(x)
        a = self.active_index
        terms = {
            "ce_out": F.cross_entropy(out[:, a], y),
            "ce_direct": F.cross_entropy(direct[:, a], y),
        }
        if self.switches.augmem_bce_direct_student:
            bce = self._bce(direct, out)  # published: the direct path is distilled towards the memory path
        else:
            bce = self._bce(out, direct)
        terms["bce"] = float(self.hp["logit_coef"]) * bce
        terms["reg"] = float(self.hp["reg_coef"]) * self.regulariser()
        return sum(terms.values()), terms

    def main_step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self._zero_grad()
        loss, terms = self.main_loss(x, y)
        loss.backward()
        self._clamp_and_step()
        if self.switches.augmem_reg_ref_every_step:
            self.mem_bar = self.model.memory.detach().clone()
        self.n_main_steps += 1
        self.step_log.append({"kind": "main", **{k: v.detach() for k, v in terms.items()}})

    # ----------------------------------------------------------------------------------------------------- replay
    def _flat_storage(self):
        """All stored rows concatenated (classes ascending), with each class's offset and size; cached."""
        if self._flat_cache is None:
            classes = sorted(c for c, t in self.storage_idx.items() if t.shape[0] > 0)
            if classes:
                idx = torch.cat([self.storage_idx[c] for c in classes])
                logits = torch.cat([self.storage_logits[c] for c in classes])
            else:
                idx = logits = None
            sizes = [int(self.storage_idx[c].shape[0]) for c in classes]
            offsets = [0] + list(torch.tensor(sizes).cumsum(0)[:-1].tolist()) if sizes else []
            self._flat_cache = (idx, logits, dict(zip(classes, offsets)), dict(zip(classes, sizes)))
        return self._flat_cache

    def _invalidate_storage_cache(self) -> None:
        self._flat_cache = None

    def replay_source(self) -> torch.Tensor:
        """The memory replayed reads are rebuilt from: M_bar as published (= M after the last main step);
        with the corrected reference M_bar (end of the previous task) the current M, detached."""
        if self.switches.augmem_reg_ref_every_step:
            return self.mem_bar
        return self.model.memory.detach()

    def reconstruct_read(self, idx: torch.Tensor) -> torch.Tensor:
        """Flat read vectors (n, h*w*c) from stored slot indices (n, L) in (i, j, g, k) order.

        K = 1: the stored slot of every key (the published reconstruction). K > 1, corrected: the mean of the K
        stored slots. K > 1, published switch: the top-1 slot only; the published code itself reshaped the
        K-times-longer vector into K times more samples and then failed on the label count in the CE, so there is
        no run of it to reproduce.
        """
        n = idx.shape[0]
        mem = self.replay_source()
        h, w = self.spatial
        idx = idx.long().reshape(n, h, w, self.model.n_groups, self.top_k)
        if self.top_k == 1 or self.switches.augmem_top1_only_replay:
            vec = mem[idx[..., 0]]  # (n, h, w, G, F): the top-1 slot of every key
        else:
            vec = mem[idx].mean(dim=4)  # corrected K > 1: the mean of the K stored slots
        return vec.reshape(n, -1)

    def replay_batch(self, y: torch.Tensor):
        """(flat reads, labels, stored logits) of one class-balanced replay batch for the labels ``y``, or None.

        R = active classes (ascending) absent from ``y`` with storage; reps = ceil(|y| / |R|); for each rep and each
        class of R one stored row drawn uniformly with ``randint`` (the published draw order). The published code
        drew from Python's global ``random``; here the draws come from the agent's own ``random.Random``
        (:func:`augmem.train.seeding.replay_random`, seeded by the loop from the job seed, saved in the checkpoint).
        """
        idx_all, logits_all, offsets, sizes = self._flat_storage()
        present = set(y.tolist())
        classes = [c for c in self.active if c not in present and c in offsets]
        if not classes:
            return None
        reps = math.ceil(len(y) / len(classes))
        randint = replay_random(self).python.randint
        draws = [offsets[c] + randint(0, sizes[c] - 1) for _ in range(reps) for c in classes]
        rows = torch.as_tensor(draws, dtype=torch.long, device=idx_all.device)
        labels = torch.as_tensor(classes * reps, dtype=torch.long, device=self.device)
        return self.reconstruct_read(idx_all[rows]), labels, logits_all[rows]

    def replay_loss(self, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]] | None:
        batch = self.replay_batch(y)
        if batch is None:
            return None
        read, labels, stored = batch
        o = self.forward_attonly(read)
        a = self.active_index
        ce = F.cross_entropy(o[:, a], labels)
        if self.switches.augmem_bce_direct_student:
            bce = self._bce(stored, o)  # published argument order: a constant input, hence no gradient
        else:
            bce = self._bce(o, stored)  # the replay output is distilled towards the stored logits
        coef = float(self.hp["replay_coef"])
        terms = {"replay_ce": coef * ce, "replay_bce": coef * float(self.hp["logit_coef"]) * bce}
        return terms["replay_ce"] + terms["replay_bce"], terms

    def replay_step(self, y: torch.Tensor) -> bool:
        """One replay step (``criterion_replay``); False when there is nothing to replay."""
        res = self.replay_loss(y)
        if res is None:
            return False
        loss, terms = res
        self._zero_grad()
        loss.backward()
        self._clamp_and_step()
        self.n_replay_steps += 1
        self.step_log.append({"kind": "replay", **{k: v.detach() for k, v in terms.items()}})
        return True

    # ----------------------------------------------------------------------------------------------------- training
    def learn_stream(self, loader, task: int, epoch: int, last_epoch: bool) -> None:
        """One epoch over the stream (spec 6.4): main step (+ replay for task > 0) per batch, storage update after."""
        if not self.active:
            raise ValueError("set_active() must be called before learn_stream()")
        if task != self.task:
            self.task = int(task)
            if not self.switches.augmem_reg_ref_every_step:
                # corrected: the regulariser protects the memory as it was at the end of the previous task
                self.mem_bar = self.model.memory.detach().clone()
                self.reg_ref_valid = self.task > 0
        self.step_log = []
        self.n_main_steps = self.n_replay_steps = 0
        self._train_mode()
        for x, y in loader:
            x, y = x.to(self.device), y.to(self.device)
            self.main_step(x, y)
            if task > 0:
                for _ in range(int(self.hp["replay_times"])):
                    self.replay_step(y)
        if self.hp["herding_mode"]:
            self.update_storage_herding(loader)
        else:
            self.update_storage(loader)
        if task != 0 and self.switches.augmem_hardcoded_lr:
            for g in self.optimizer.param_groups:
                g["lr"] = HARDCODED_LR
        self._train_mode()

    # ----------------------------------------------------------------------------------------------------- storage
    def _per_class(self) -> int:
        return self.capacity // len(self.active)

    @torch.no_grad()
    def _eval_batches(self, loader, with_read: bool = False, select=None):
        """Yield (labels, top-K indices (B, L), direct logits (B, C), read (B, c, h, w) or None) in eval mode.

        The memory path H(read) is not needed here (eval mode: no dropout, so skipping it changes nothing).
        ``select(y)`` (optional) gives the rows of a batch that are needed; only those go through the network (in
        eval mode a sample's outputs do not depend on the rest of its batch) and only those are yielded."""
        self.model.eval()
        for x, y in loader:
            if select is not None:
                rows = select(y.to(self.device))
                if rows.numel() == 0:
                    continue
                x, y = x[rows.to(x.device)], y[rows.to(y.device)]
            x, y = x.to(self.device), y.to(self.device)
            e = self.front_forward(x)
            self.spatial = (int(e.shape[2]), int(e.shape[3]))
            read, top = self.model.read_map(e, self.top_k, with_read=with_read)
            direct = self.model.back(e)
            idx = top.reshape(x.shape[0], -1).to(self.index_dtype)
            yield y, idx, direct.float(), read

    def _after_storage_update(self) -> None:
        """Cumulative used-slot list, M_bar refresh (published), cache invalidation."""
        self._invalidate_storage_cache()
        stored = [t.reshape(-1) for t in self.storage_idx.values() if t.numel()]
        if stored:
            self.used[torch.cat(stored).long()] = 1.0
        if self.switches.augmem_reg_ref_every_step:
            self.mem_bar = self.model.memory.detach().clone()

    def _trim_all(self, per_class: int, keep_last: bool) -> None:
        for c in list(self.storage_idx):
            n = self.storage_idx[c].shape[0]
            sl = slice(max(n - per_class, 0), n) if keep_last else slice(0, per_class)
            self.storage_idx[c] = self.storage_idx[c][sl]
            self.storage_logits[c] = self.storage_logits[c][sl]

    def update_storage(self, loader) -> None:
        """``updateStorage_epoch``: per class in A, every 5th of its samples within each batch, FIFO keep-last."""
        per_class = self._per_class()
        classes = self.active_index
        new_idx: dict[int, list[torch.Tensor]] = {c: [] for c in self.active}
        new_log: dict[int, list[torch.Tensor]] = {c: [] for c in self.active}

        def stored_rows(y: torch.Tensor) -> torch.Tensor:
            """Rows of a batch that are stored: every 5th sample of each active class (positions 0, 5, ...)."""
            member = y.view(-1, 1) == classes.view(1, -1)  # (B, |A|)
            rank = member.long().cumsum(0) - 1  # position of each sample among its class's samples in this batch
            return (member & (rank % STORE_EVERY == 0)).any(1).nonzero().squeeze(1)

        # only the stored rows (about a fifth of the stream) go through the network
        for y, idx, direct, _ in self._eval_batches(loader, select=stored_rows):
            keep = y.view(-1, 1) == classes.view(1, -1)  # every yielded row is stored, under its own class
            for j, c in enumerate(self.active):
                rows = keep[:, j].nonzero().squeeze(1)
                if rows.numel() == 0:
                    continue
                kept_i = torch.cat(new_idx[c] + [idx[rows]])
                kept_l = torch.cat(new_log[c] + [direct[rows]])
                start = max(kept_i.shape[0] - per_class, 0)
                new_idx[c], new_log[c] = [kept_i[start:]], [kept_l[start:]]
        for c in self.active:
            if new_idx[c] and new_idx[c][0].shape[0] > 0:
                self.storage_idx[c], self.storage_logits[c] = new_idx[c][0], new_log[c][0]
        if not self.switches.augmem_untrimmed_storage:
            self._trim_all(per_class, keep_last=True)
        self._after_storage_update()

    def update_storage_herding(self, loader) -> None:
        """``update_HERDING_Storage_epoch``: herding (no repeats) on L2-normalised read vectors of every sample."""
        per_class = self._per_class()
        ys, idxs, logits, reads = [], [], [], []
        for y, idx, direct, read in self._eval_batches(loader, with_read=True):
            ys.append(y)
            idxs.append(idx)
            logits.append(direct)
            reads.append(read.reshape(read.shape[0], -1).float())
        if not ys:
            return
        y, idx, logit, feat = torch.cat(ys), torch.cat(idxs), torch.cat(logits), torch.cat(reads)
        feat = feat / feat.norm(dim=1, keepdim=True)
        for c in torch.unique(y).tolist():  # ascending
            rows = (y == c).nonzero().squeeze(1)
            chosen = herding_select(feat[rows], per_class, self.switches.herding_frobenius_norm)
            if chosen.numel():
                self.storage_idx[c] = idx[rows[chosen]]
                self.storage_logits[c] = logit[rows[chosen]]
        # every active class is truncated to per_class (the published code raises KeyError for an active class
        # without storage; such classes are skipped here)
        self._trim_all(per_class, keep_last=False)
        self._after_storage_update()

    # ----------------------------------------------------------------------------------------------------- inference
    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        self.model.eval()
        direct, out, _, _ = self.forward_all(x.to(self.device))
        a = self.active_index
        return {"mem": self.pick_labels(out[:, a]), "direct": self.pick_labels(direct[:, a])}

    def output_paths(self) -> list[str]:
        return ["mem", "direct"]

    # ----------------------------------------------------------------------------------------------------- health
    def front_map(self, image_size: int) -> tuple[int, int]:
        """(h, w) of the front's output for a square image of ``image_size`` pixels."""
        front = self.model.front
        was_training = front.training
        front.eval()
        with torch.no_grad():
            e = front(torch.zeros(1, 3, image_size, image_size, device=self.device))
        front.train(was_training)
        return int(e.shape[2]), int(e.shape[3])

    def check_map_size(self) -> None:
        """Stop early when the image size gives a front map that cannot carry hypotheses (smaller than 2x2), naming
        the smallest image size that gives a usable map for this backbone and cut (hp allow_small_map overrides)."""
        from augmem.agents.augmem_health import MIN_MAP_LOCATIONS

        size = self.hp["image_size"]
        h, w = self.front_map(size)
        if h * w >= MIN_MAP_LOCATIONS or self.hp["allow_small_map"]:
            return
        smallest = next((s for s in range(size + 1, 1025) if (lambda m: m[0] * m[1])(self.front_map(s))
                         >= MIN_MAP_LOCATIONS), None)
        g = self.model.n_groups
        raise InputError(
            f"AugMem: image_size {size} gives the {self.hp['backbone']} front a {h}x{w} map at its cut ({h * w * g} "
            f"keys per image): too few keys to carry hypotheses (every image gets the same few slots and replay "
            f"overwrites the new classes); the smallest image size with a usable (>= 2x2) map is {smallest} px. "
            f"Set allow_small_map: true to run anyway.")

    @torch.no_grad()
    def task_health(self, loader, new_labels: list[int], old_labels: list[int]) -> dict[str, Any] | None:
        """The memory's health figures on ``loader`` (test images of the seen classes) after a task
        (:mod:`augmem.agents.augmem_health`); None when hp health_check is off."""
        from augmem.agents.augmem_health import HealthAccumulator

        if not self.hp["health_check"]:
            return None
        self.model.eval()
        acc = HealthAccumulator(self.n_slots)
        for x, y in loader:
            e = self.front_forward(x.to(self.device))
            b, c, h, w = e.shape
            keys = e.permute(0, 2, 3, 1).reshape(-1, self.n_feat)
            idx, att = attention_top1(keys, self.model.memory, self.model.beta, self.model.argsort_ties)
            acc.add(idx.reshape(b, h, w, -1), att, y)
        return acc.summarise(new_labels, old_labels)

    @torch.no_grad()
    def visualization(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"top_slots": (n, h, w, G) int32}: the most attended slot of every location and group."""
        self.model.eval()
        _, _, top, _ = self.forward_all(x.to(self.device), top_k=1)
        return {"top_slots": top[..., 0].to(torch.int32).cpu()}

    def memory_matrix(self) -> torch.Tensor:
        return self.model.memory.detach().float().cpu().clone()

    def slot_usage(self) -> torch.Tensor:
        """(C, S) int64: how many stored indices (all samples, locations, groups) of each class point to each slot."""
        usage = torch.zeros(self.n_class, self.n_slots, dtype=torch.int64)
        for c, t in self.storage_idx.items():
            if t.numel():
                usage[c] = torch.bincount(t.reshape(-1).long().cpu(), minlength=self.n_slots)
        return usage

    def memory_bytes(self) -> dict[str, int]:
        return {
            "slot_indices": n_params_bytes(self.storage_idx.values()),
            "logits": n_params_bytes(self.storage_logits.values()),
            "memory_matrix": self.n_slots * self.n_feat * 4,
        }

    # ----------------------------------------------------------------------------------------------------- state
    def snapshot_weights(self) -> dict[str, torch.Tensor]:
        """Keep-best restores the network only (``agent.net.model``): not the memory M (spec 5.1, 12.12)."""
        return {k: v.detach().clone() for k, v in self.model.state_dict().items() if k != "memory"}

    def restore_weights(self, weights: dict[str, torch.Tensor]) -> None:
        missing, unexpected = self.model.load_state_dict(weights, strict=False)
        if unexpected or set(missing) - {"memory"}:
            raise ValueError(f"weights do not match the AugMem network (missing {missing}, unexpected {unexpected})")

    def extra_state(self) -> dict[str, Any]:
        classes = sorted(self.storage_idx)
        return {
            "mem_bar": self.mem_bar.detach().cpu().clone(),
            "used": self.used.detach().cpu().clone(),
            "storage_classes": classes,
            "storage_idx": [self.storage_idx[c].cpu().clone() for c in classes],
            "storage_logits": [self.storage_logits[c].cpu().clone() for c in classes],
            "lr": [float(g["lr"]) for g in self.optimizer.param_groups],
            "task": int(self.task),
            "reg_ref_valid": bool(self.reg_ref_valid),
            "spatial": list(self.spatial) if self.spatial is not None else [],
            "replay_rng": replay_random(self).state(),
        }

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.mem_bar = state["mem_bar"].to(self.device).clone()
        self.used = state["used"].to(self.device).clone()
        classes = [int(c) for c in state["storage_classes"]]
        self.storage_idx = {c: t.to(self.device).clone() for c, t in zip(classes, state["storage_idx"])}
        self.storage_logits = {c: t.to(self.device).clone() for c, t in zip(classes, state["storage_logits"])}
        for g, lr in zip(self.optimizer.param_groups, state["lr"]):
            g["lr"] = float(lr)
        self.task = int(state["task"])
        self.reg_ref_valid = bool(state["reg_ref_valid"])
        self.spatial = tuple(int(v) for v in state["spatial"]) if state["spatial"] else None
        if "replay_rng" in state:
            replay_random(self).load_state(state["replay_rng"])
        self._invalidate_storage_cache()


def herding_select(feat: torch.Tensor, n: int, frobenius: bool) -> torch.Tensor:
    """Herding without repeats (AugMem's variant): indices of up to ``n`` rows of ``feat`` in selection order.

    The class mean mu is L2-normalised; at step k every candidate mean (phi_i + sum of selected)/(k + 1) is
    normalised — published: by the Frobenius norm of the whole candidate matrix (``frobenius``); corrected: each row
    by its own norm — and the closest candidate to mu not chosen yet is taken.
    """
    m = feat.shape[0]
    mu = feat.mean(0)
    mu = mu / mu.norm()
    chosen: list[int] = []
    taken = torch.zeros(m, dtype=torch.bool, device=feat.device)
    total = torch.zeros_like(mu)
    for k in range(min(n, m)):
        cand = (feat + total) / (k + 1)
        cand = cand / (cand.norm() if frobenius else cand.norm(dim=1, keepdim=True))
        dist = (mu - cand).norm(dim=1).masked_fill(taken, math.inf)
        i = int(dist.argmin())
        chosen.append(i)
        taken[i] = True
        total = total + feat[i]
    return torch.as_tensor(chosen, dtype=torch.long, device=feat.device)
