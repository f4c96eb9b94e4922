"""GSS-Greedy, gradient-based sample selection (spec 14.2; Aljundi et al., NeurIPS 2019), as the study's adapted code
runs it.

The stream is consumed online, in filelist order (no shuffling, no augmentation): :meth:`GSS.learn_stream` re-batches
the loop's loader (which yields the filelist order) into batches of ``batch_size`` consecutive images of one task and
hands each to :meth:`GSS.observe`. The loop calls ``learn_stream`` once per epoch; the adapted code lists task 0
``n_epochs`` times in a row as one long stream, so its batches can straddle two epochs of task 0 (quirk 11). Switch
``gss_epochs_straddle``: reference, an incomplete batch left at the end of an epoch is carried over and completed
with the first images of the next epoch of the same task (only the task's last epoch flushes it: a batch never
straddles two tasks); corrected, every epoch ends with its own (smaller) last batch.

``observe(x, y, t)`` per incoming batch (spec 14.2 steps 1-4):

1. the first ``min(|x|, n_mem - m)`` samples go into the ring buffer R (``n_memories`` slots, fill count m);
2. if the selection buffer B is non-empty, a random permutation pi of B, e = min(``n_constraints``, |B|), pointer 0;
3. ``n_iter`` times: one SGD step on CE(f(x), y); if B is non-empty one SGD step on CE over the buffer slice
   pi[q e : (q + 1) e] (q wraps to 0 once q e >= |B|);
4. when R is full (m = n_mem), in eval mode (BatchNorm on running statistics, quirk 17), the selection:

   * G = the flattened gradients of CE on up to n = ``memory_strength`` disjoint mini-batches of size e of a new
     random permutation of B (stopping when it is exhausted); c_batch = max_i cos(g_i, g_R), g_R the gradient of CE on
     all of R; cos without epsilon;
   * B full (|B| >= M = ``n_sampled_memories``) and c_batch < ``change_th``: per-sample gradients of R (vectorised,
     :func:`torch.func.vmap` of :func:`torch.func.grad`), c_j = max_i cos(g_i, g_j); buffer scores normalised
     s^ = (s - min s) / (max s - min s + 0.01); k distinct slots I drawn with probability proportional to s^ without
     replacement; for each pair (j, I_j) a categorical draw over [(c_j + 1) / 2, (s_I + 1) / 2] replaces slot I_j
     when its second entry is drawn, with score c_j and the task id. Switch ``gss_batch_scores_misaligned``
     (quirk 12): reference, the j-th sample **of the current batch x** enters (k = min(|x|, n_mem)); corrected, R[j]
     enters (k = n_mem);
   * B not full: B empty -> B <- R with scores 0.1; else G as above (c_batch unused), c_j per sample of R, and R is
     appended with scores c_j;
   * m <- 0.

Every random draw (permutations, the slot choice, the categorical draws) comes from the agent's own generator
(:meth:`~augmem.agents.external.ExternalAgent.generator`, checkpointed); B (inputs, labels, scores, task ids), R, m
and a carried partial batch are checkpoint state.

Networks (hp ``network``): ``own`` (reference) the adapted code's network at 32 x 32 chosen by hp ``own_backbone``
(:mod:`augmem.models.gss_nets`; the adapted code chose it by the data-file name, quirk 10: ``mlp`` for CORe50 and
iLab, ``resnet`` for Toybox, set per dataset family in params/agents.yaml) behind
:class:`~augmem.agents.external.Renormalize`, random init; ``study`` (corrected) the study's SqueezeNet 1.0 at
``image_size`` with ``weights`` for every dataset, the same GSS algorithm. B stores the network's input tensors.

The single head has all C outputs active in training (CE over all C) and at test: :meth:`GSS.predict` is the argmax
over all C outputs (the loop passes the test images of the seen classes). The adapted driver's evaluation quirks 13
(last test image of each task never scored) and 14 (stale last value) are **not reproduced**: the loop's evaluation
is the study's in both fidelities.

Deviations, only where the adapted code would crash or the spec is silent (never at the published settings, whose
batch size equals n_mem and whose M is a multiple of it): the appended part of R is cut at M, so |B| never exceeds
M; the slot draw falls back to uniform when fewer than k slots have a positive normalised score (all scores equal).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from augmem.agents.external import ExternalAgent, ExternalHP
from augmem.agents.hparams import hparam

INITIAL_SCORE = 0.1  # the score of the first R copied into an empty B
SCORE_SPAN_EPS = 0.01  # s^ = (s - min) / (max - min + 0.01)
PER_SAMPLE_CHUNK = 64  # samples per vmap chunk of the per-sample gradients (bounds memory: chunk x n_params floats)


@dataclasses.dataclass(frozen=True)
class GSSHP(ExternalHP):
    """GSS-Greedy's settings. Defaults: the CORe50 script's values (``other_models/GSS/trial_core50.sh``; spec 14.2
    "Published settings"); the values of the other datasets in params/agents.yaml."""

    optimizer: str = hparam("SGD", "GSS trains with plain SGD (no momentum, no weight decay)", choices=("SGD",))
    lr: float = hparam(1e-3, "SGD learning rate", gt=0)
    momentum: float = hparam(0.0, "SGD momentum (the adapted code: none)", min=0)
    weight_decay: float = hparam(0.0, "SGD weight decay (the adapted code: none)", min=0)
    batch_size: int = hparam(10, "images per incoming stream batch (and evaluation batch)", unit="images", min=1)
    own_backbone: str = hparam("mlp", "the own network (network: own): mlp (MLP 3072-100-100-C, the adapted code's "
                               "CORe50 and iLab) or resnet (ResNet-18 of width 20, its Toybox)",
                               choices=("mlp", "resnet"))
    n_memories: int = hparam(10, "n_mem, slots of the ring buffer R; the selection runs whenever R is full",
                             unit="images", min=1)
    n_sampled_memories: int = hparam(1000, "M, capacity of the selection buffer B", unit="images", min=1)
    n_constraints: int = hparam(10, "e, size of a buffer mini-batch (replay steps and gradient constraints)",
                                unit="images", min=1)
    memory_strength: int = hparam(10, "n, most buffer mini-batch gradients the similarity is computed against",
                                  min=1)
    n_iter: int = hparam(10, "SGD iterations per incoming batch (each: one step on the batch, one on the buffer)",
                         min=1)
    change_th: float = hparam(0.0, "a full buffer changes only when c_batch (max cosine) is below this threshold",
                              min=-1, max=1)


class GSS(ExternalAgent):
    name = "GSS"
    HP = GSSHP

    def __init__(self, n_class, hp, switches, device="cpu"):
        super().__init__(n_class, hp, switches, device)
        self.n_mem = int(self.hp["n_memories"])
        self.capacity = int(self.hp["n_sampled_memories"])
        self.last_loss = None
        empty = torch.empty(0, device=self.device)
        self.ring_x = empty  # R: (n_mem, *input shape), allocated at the first batch
        self.ring_y = torch.empty(0, dtype=torch.long, device=self.device)
        self.ring_count = 0  # m
        self.buf_x = empty  # B: inputs (|B|, *input shape)
        self.buf_y = torch.empty(0, dtype=torch.long, device=self.device)  # labels (int64)
        self.buf_s = torch.empty(0, dtype=torch.float32, device=self.device)  # scores in [-1, 1]
        self.buf_t = torch.empty(0, dtype=torch.int32, device=self.device)  # task ids
        self.pending_x = empty  # an incomplete batch carried over to the next epoch of the same task (quirk 11)
        self.pending_y = torch.empty(0, dtype=torch.long, device=self.device)

    # ------------------------------------------------------------------------------------------------ network
    def build_own_network(self) -> nn.Module:
        return self.build_gss_family_network()

    def trainable(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """CE over all C outputs (the single head, every output active), mean over the batch."""
        return F.cross_entropy(self.forward(x), y)

    def sgd_step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        loss = self.loss(x, y)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    # ------------------------------------------------------------------------------------------------ stream
    @property
    def straddle(self) -> bool:
        return bool(self.switches.gss_epochs_straddle)

    def learn_stream(self, loader, task: int, epoch: int, last_epoch: bool) -> None:
        bs = int(self.hp["batch_size"])
        px, py = self.pending_x, self.pending_y
        for x, y in loader:
            x, y = x.to(self.device), y.to(self.device).long()
            px = x if py.numel() == 0 else torch.cat([px, x])
            py = y if py.numel() == 0 else torch.cat([py, y])
            while py.numel() >= bs:
                self.observe(px[:bs], py[:bs], task)
                px, py = px[bs:], py[bs:]
        if py.numel() and (last_epoch or not self.straddle):
            self.observe(px, py, task)
            px, py = px[:0], py[:0]
        self.pending_x, self.pending_y = px, py

    def observe(self, x: torch.Tensor, y: torch.Tensor, t: int) -> None:
        """One incoming batch (spec 14.2 steps 1-4)."""
        gen = self.generator()
        if self.ring_x.numel() == 0:
            self.ring_x = torch.zeros((self.n_mem,) + tuple(x.shape[1:]), dtype=x.dtype, device=self.device)
            self.ring_y = torch.zeros(self.n_mem, dtype=torch.long, device=self.device)
        # 1. the ring buffer
        m = self.ring_count
        eff = min(len(y), self.n_mem - m)
        self.ring_x[m:m + eff] = x[:eff].detach()
        self.ring_y[m:m + eff] = y[:eff]
        self.ring_count = m + eff
        # 2.-3. n_iter steps on the batch, each followed by one on a buffer slice
        self.model.train()
        n_b = len(self.buf_y)
        e = min(int(self.hp["n_constraints"]), n_b)
        perm = torch.randperm(n_b, generator=gen).to(self.device) if n_b else None
        q = 0
        for _ in range(int(self.hp["n_iter"])):
            self.last_loss = self.sgd_step(x, y)
            if n_b:
                idx = perm[q * e:(q + 1) * e]
                self.sgd_step(self.buf_x[idx], self.buf_y[idx])
                q += 1
                if q * e >= n_b:
                    q = 0
        # 4. the selection
        if self.ring_count == self.n_mem:
            self.model.eval()
            self.select(x, y, t, gen)
            self.ring_count = 0
            self.model.train()

    # ------------------------------------------------------------------------------------------------ selection
    def flat_grad(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The flattened gradient of CE(f(x), y) over the trainable parameters (``named_parameters`` order)."""
        params = [p for _, p in self.trainable()]
        g = torch.autograd.grad(self.loss(x, y), params, allow_unused=True)
        return torch.cat([(gi if gi is not None else torch.zeros_like(p)).reshape(-1) for gi, p in zip(g, params)])

    def buffer_gradients(self, gen: torch.Generator) -> torch.Tensor:
        """G (n, P): gradients of CE on up to ``memory_strength`` disjoint mini-batches of size e of a new random
        permutation of B, stopping once the permutation is exhausted (``get_batch_sim``)."""
        n_b = len(self.buf_y)
        e = min(int(self.hp["n_constraints"]), n_b)
        perm = torch.randperm(n_b, generator=gen).to(self.device)
        grads = []
        for i in range(int(self.hp["memory_strength"])):
            idx = perm[i * e:(i + 1) * e]
            grads.append(self.flat_grad(self.buf_x[idx], self.buf_y[idx]))
            if (i + 1) * e >= n_b:
                break
        return torch.stack(grads)

    def per_sample_gradients(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """(k, P): the flattened gradient of CE on each single sample (x_j, y_j), vectorised with
        ``vmap(grad(...))`` over :func:`torch.func.functional_call`; call it in eval mode (BatchNorm on running
        statistics, no dropout: vmap refuses random operations)."""
        names = [n for n, _ in self.trainable()]
        params = {n: p.detach() for n, p in self.trainable()}
        others = {n: p.detach() for n, p in self.model.named_parameters() if not p.requires_grad}
        buffers = dict(self.model.named_buffers())
        model = self.model

        def one(p, xi, yi):
            out = functional_call(model, (p, others, buffers), (xi.unsqueeze(0),))
            return F.cross_entropy(out, yi.unsqueeze(0))

        per = vmap(grad(one), in_dims=(None, 0, 0), chunk_size=PER_SAMPLE_CHUNK)(params, x, y)
        return torch.cat([per[n].reshape(len(y), -1) for n in names], 1)

    @staticmethod
    def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """(k, n): cos(a_j, b_i) = a_j . b_i / (|a_j| |b_i|), without epsilon (the adapted code's)."""
        return (a @ b.T) / (a.norm(dim=1, keepdim=True) * b.norm(dim=1).unsqueeze(0))

    def sample_scores(self, x: torch.Tensor, y: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
        """c_j = max_i cos(g_i, g_j) per sample j of (x, y), computed in chunks of per-sample gradients."""
        out = []
        for s in range(0, len(y), PER_SAMPLE_CHUNK):
            g = self.per_sample_gradients(x[s:s + PER_SAMPLE_CHUNK], y[s:s + PER_SAMPLE_CHUNK])
            out.append(self.cosine(g, G).max(1).values)
        return torch.cat(out) if out else torch.empty(0, device=self.device)

    @staticmethod
    def normalised_scores(s: torch.Tensor) -> torch.Tensor:
        """s^ = (s - min s) / (max s - min s + 0.01)."""
        return (s - s.min()) / (s.max() - s.min() + SCORE_SPAN_EPS)

    @staticmethod
    def draw_slots(s: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
        """k distinct buffer slots drawn with probability proportional to s^ without replacement (uniform when fewer
        than k slots have a positive s^, where the adapted code's ``multinomial`` would fail)."""
        w = GSS.normalised_scores(s).detach().cpu().double()
        if int((w > 0).sum()) < k:
            w = torch.ones_like(w)
        return torch.multinomial(w, k, replacement=False, generator=gen)

    @staticmethod
    def draw_replacements(c: torch.Tensor, s_slots: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Per pair (j, I_j) one categorical draw over [(c_j + 1) / 2, (s_I + 1) / 2]: True where the second entry
        (replace the slot) is drawn, probability (s_I + 1) / (c_j + s_I + 2)."""
        probs = torch.stack([(c + 1) / 2, (s_slots + 1) / 2], 1).detach().cpu().double()
        return torch.multinomial(probs, 1, generator=gen)[:, 0] == 1

    def select(self, x: torch.Tensor, y: torch.Tensor, t: int, gen: torch.Generator) -> None:
        """Step 4 with R full (eval mode): replace in a full B, fill a B that is not full."""
        n_b = len(self.buf_y)
        rx, ry = self.ring_x, self.ring_y
        if n_b == 0:
            k = min(self.n_mem, self.capacity)
            self.append(rx[:k], ry[:k], torch.full((k,), INITIAL_SCORE, device=self.device), t)
            return
        G = self.buffer_gradients(gen)
        if n_b >= self.capacity:
            c_batch = float(self.cosine(self.flat_grad(rx, ry).unsqueeze(0), G).max())
            if not c_batch < float(self.hp["change_th"]):
                return
            c = self.sample_scores(rx, ry, G)
            misaligned = bool(self.switches.gss_batch_scores_misaligned)
            k = min(len(y) if misaligned else self.n_mem, self.n_mem, n_b)
            slots = self.draw_slots(self.buf_s, k, gen).to(self.device)
            replace = self.draw_replacements(c[:k], self.buf_s[slots], gen).to(self.device)
            j = torch.nonzero(replace).flatten()
            src_x, src_y = (x, y) if misaligned else (rx, ry)
            dst = slots[j]
            self.buf_x[dst] = src_x[j].detach().to(self.buf_x.dtype)
            self.buf_y[dst] = src_y[j]
            self.buf_s[dst] = c[j].detach().float()
            self.buf_t[dst] = int(t)
            return
        c = self.sample_scores(rx, ry, G)
        room = min(self.n_mem, self.capacity - n_b)
        self.append(rx[:room], ry[:room], c[:room], t)

    def append(self, x: torch.Tensor, y: torch.Tensor, s: torch.Tensor, t: int) -> None:
        x, y, s = x.detach().clone(), y.clone(), s.detach().float()
        tid = torch.full((len(y),), int(t), dtype=torch.int32, device=self.device)
        if len(self.buf_y) == 0:
            self.buf_x, self.buf_y, self.buf_s, self.buf_t = x, y, s, tid
        else:
            self.buf_x = torch.cat([self.buf_x, x])
            self.buf_y = torch.cat([self.buf_y, y])
            self.buf_s = torch.cat([self.buf_s, s])
            self.buf_t = torch.cat([self.buf_t, tid])

    # ------------------------------------------------------------------------------------------------ prediction
    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The argmax over all C outputs (the adapted code's evaluation; unseen classes included)."""
        self.model.eval()
        return {"acc": self.forward(x).argmax(1)}

    # ------------------------------------------------------------------------------------------------ memory, state
    def sample_bytes(self) -> int:
        """Bytes of one stored input (float32 at the network's input: 12,288 at 32 x 32 x 3)."""
        shape = tuple(self.ring_x.shape[1:]) if self.ring_x.numel() else tuple(self.buf_x.shape[1:])
        return math.prod(shape) * self.ring_x.element_size() if shape else 0

    def memory_bytes(self) -> dict[str, int]:
        """B: |B| x (input + 8 B label + 4 B score + 4 B task id) = 12,304 B per sample at 32 x 32; R: n_mem x
        (input + 8 B label) = 12,296 B per slot (spec 14.9)."""
        per = self.sample_bytes()
        if per == 0:
            return {"buffer": 0, "ring_buffer": 0}
        return {"buffer": len(self.buf_y) * (per + 8 + 4 + 4), "ring_buffer": self.n_mem * (per + 8)}

    def extra_state(self) -> dict[str, Any]:
        state = super().extra_state()
        state["gss"] = {
            "ring_x": self.ring_x.detach().cpu().clone(), "ring_y": self.ring_y.cpu().clone(),
            "ring_count": int(self.ring_count),
            "buf_x": self.buf_x.detach().cpu().clone(), "buf_y": self.buf_y.cpu().clone(),
            "buf_s": self.buf_s.detach().cpu().clone(), "buf_t": self.buf_t.cpu().clone(),
            "pending_x": self.pending_x.detach().cpu().clone(), "pending_y": self.pending_y.cpu().clone(),
        }
        return state

    def load_extra_state(self, state: dict[str, Any]) -> None:
        super().load_extra_state(state)
        g = state["gss"]
        for key in ("ring_x", "ring_y", "buf_x", "buf_y", "buf_s", "buf_t", "pending_x", "pending_y"):
            setattr(self, key, g[key].clone().to(self.device))
        self.ring_count = int(g["ring_count"])
