"""CoPE, Continual Prototype Evolution (spec 14.4; De Lange & Tuytelaars, ICCV 2021), as the study's adapted code
(``other_models/COPE/``, the authors' upstream code practically unchanged) runs it.

**Settings.** The adapted code has no run script, no results and no settings (its README only says "run a .sh
file"): the published CoPE curves came from unknown settings, and the numbers below are ``main.py``'s defaults
(spec 14.4 table), except where those defaults cannot have produced a curve (quirk 27):

* ``n_memories`` (per class; total capacity C x n_memories with ``dyn_mem``): main.py's default 0 disables replay.
  Declared default **100 per class**: the CoPE paper's per-class memory of its balanced Split-CIFAR10 benchmark
  (upstream ``main_CIFAR10.sh``: ``n_memories=100``, 1k in total at 10 classes; on CORe50's 10 classes the same
  1,000 samples as GSS's buffer). params/agents.yaml keeps it for 10-14 classes and sets 50 for CIFAR-100 (5k in
  total: the memory of the paper's Split-CIFAR100 baselines; the upstream CoPE line's 500 per class would hold the
  whole training set). A choice, reported (quirk 27).
* ``tasks_to_preserve`` (default 1: training stops after the second task): every task is trained (T - 1).
* everything else is main.py's default: batch 10, SGD lr 1e-3 (momentum 0, weight decay 0), n_iter 1, p_momentum
  0.99, loss_T 1, embedding size C, dyn_mem on, task 0 for ``n_epoch_first_task`` = 10 epochs (``--n_epochs``) and 1
  epoch on later tasks (the adaptation's rule). The CoPE paper's own tuned values (e.g. Split-CIFAR10: lr 5e-3,
  loss_T 0.1, 256-d embeddings) are not used: the spec's reference is the adapted code's defaults.

**Stream** (``Continuum``, spec 14.4): each task's samples in a random permutation, task 0 listed
``n_epoch_first_task`` times in a row (each epoch a fresh permutation), later tasks once; batches of ``batch_size``
consecutive samples of one task. The loop calls :meth:`CoPE.learn_stream` once per epoch: each call draws a fresh
permutation of the task's images from the agent's generator (:meth:`~augmem.agents.external.ExternalAgent.generator`)
and re-batches them; as in the Continuum's one long list, an incomplete batch at the end of an epoch of task 0 is
completed with the first samples of the next epoch, and only the task's last epoch ends with a smaller batch (never
across tasks). No augmentation and no drop_last (the Continuum has neither): switch ``external_drop_last`` does not
apply to CoPE.

``observe(x, y)`` per batch, ``n_iter`` times (spec 14.4 steps 1-5; ``model/prototypical/*.py``):

1. **replay**: up to |x| samples from the class memories (fewer if they hold fewer): per draw a class uniformly among
   the classes with samples left, then per class (creation order) a random subset without replacement;
   x_ext = [x; x_s];
2. f_ext = f(x_ext), f(x) = net(x) / ||net(x)||; a class of y_ext without a prototype gets
   p = normalize(U(0,1)^d) (ascending label order, drawn from the agent's generator);
3. the replayed embeddings are added to their class's accumulator (sum, count; ``batch_momentum_incr``); every
   stored sample's age grows by 1, the replayed ones get age 1 and their stored embedding refreshed;
4. with more than one class known: the PPP loss (:func:`ppp_loss`) on (f_ext, y_ext), backward, one optimiser step;
5. on the last iteration only: the new samples' embeddings (computed before the step) join the accumulators and every
   class with a count > 0 gets p <- normalize(p_momentum p + (1 - p_momentum) mean) (accumulators reset); then the
   per-class reservoir takes the new samples of each class (ascending labels): an empty or not full queue appends
   them all and keeps its last ``qi_len`` items (upstream's ``[-qi_len:]``), a full queue replaces slot r ~
   U{0..seen_c - 1} when r < qi_len (seen_c counts the whole batch first); with ``dyn_mem``
   qi_len = floor(C n_memories / #known classes) for every class, and whenever it changes every class keeps a
   random subset ``randperm(n)[:qi_len]`` (upstream also reorders a queue that fits).

**Prediction**: argmax_c <p_c, f(x)> over the classes with a prototype (class-incremental over the seen classes),
ties to the lowest label; before any class exists, class 0 (upstream's uniform output). :meth:`CoPE.predict` returns
the labels directly.

**Networks** (hp ``network``): ``own`` (reference) the adapted code's network at 32 x 32 (Resize(32)) behind
:class:`~augmem.agents.external.Renormalize` (ImageNet -> CIFAR normalisation), random init, chosen by hp
``own_backbone`` (the adapted code chose it by the data-file string, quirk 31: the default ``split_mnist.pt`` gives
the MLP 3072-100-100-d; ``resnet`` is the width-20 ResNet-18, both :mod:`augmem.models.gss_nets`, CoPE's
``model/common.py`` being GSS's), with d = ``embedding_size`` outputs (default C). ``study`` (corrected) the study's
backbone at ``image_size`` from ``weights`` whose head outputs d values, normalised as the embedding (SqueezeNet's head
ends in a ReLU, so its embeddings are non-negative). The memory stores the network's input tensors (float32).

**Quirks.** 26: CORe50's Resize(128) gives 49,152 inputs, which the adapted code rejects: reference runs CORe50 at
32 px like the other datasets (:meth:`CoPE.result_notes` says so). 27: the settings above are this project's choice.
28 (``n_epochs`` leaks across the seeds of one process): every job runs one seed in its own process, so task 0 always
gets ``n_epoch_first_task`` epochs; not reproduced. 29 (the final summary crashes), 30 (the cache-name typo) change no
number; 31 is hp ``own_backbone``. The driver's evaluation (quirk 13, last test image of each task never scored) is not
reproduced: the loop's evaluation is the study's in both fidelities. No fidelity switch of its own: nothing here is a
number-changing bug with a corrected alternative beyond hp ``network``.

Every random draw but the weight initialisation (global torch RNG, seeded per job) comes from the agent's own
generator; prototypes, accumulators, the memories, the reservoir counts, qi_len and a carried partial batch are
checkpoint state.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from augmem.agents.external import ExternalAgent, ExternalHP
from augmem.agents.hparams import hparam

AGE_BYTES = 4  # upstream's update_age: one float32 per stored sample


@dataclasses.dataclass(frozen=True)
class CoPEHP(ExternalHP):
    """CoPE's settings: ``other_models/COPE/main.py`` defaults (spec 14.4; there is no run script) except
    ``n_memories`` (quirk 27: the default 0 disables replay; the CoPE paper's per-class memory)."""

    optimizer: str = hparam("SGD", "optimiser (main.py --opt: sgd, or adam)", choices=("SGD", "Adam"))
    lr: float = hparam(1e-3, "learning rate (main.py default)", gt=0)
    momentum: float = hparam(0.0, "SGD momentum (main.py default: none)", min=0)
    weight_decay: float = hparam(0.0, "weight decay (main.py default: none)", min=0)
    batch_size: int = hparam(10, "images per incoming stream batch (and evaluation batch)", unit="images", min=1)
    n_epoch: int = hparam(1, "epochs of every later task (the adaptation sets n_epochs to 1 after task 0)",
                          unit="epochs", min=1)
    n_epoch_first_task: int | None = hparam(10, "epochs of task 0 (main.py --n_epochs; the Continuum lists task 0 "
                                            "that many times in a row)", unit="epochs", min=1)
    own_backbone: str = hparam("mlp", "the own network (network: own): mlp (MLP 3072-100-100-d, main.py's default "
                               "data file) or resnet (ResNet-18 of width 20, 'cifar10' in the data file; quirk 31)",
                               choices=("mlp", "resnet"))
    embedding_size: int | None = hparam(None, "d, the embedding (network output) size (main.py --n_outputs; null: C)",
                                        min=1)
    n_memories: int = hparam(100, "exemplars per class; the total capacity is C x n_memories (main.py default 0 "
                             "disables replay, quirk 27; 100: the CoPE paper's Split-CIFAR10 memory)",
                             unit="images", min=0)
    n_iter: int = hparam(1, "update iterations per incoming batch (each with its own replay draw)", min=1)
    p_momentum: float = hparam(0.99, "prototype momentum: p <- normalize(m p + (1 - m) batch mean)", min=0, max=1)
    loss_T: float = hparam(1.0, "temperature of the PPP loss", gt=0)
    dyn_mem: bool = hparam(True, "dynamic memory: every class gets floor(C n_memories / #seen classes) slots")


# ---------------------------------------------------------------------------------------------------------- the loss
def ppp_loss(f: torch.Tensor, y: torch.Tensor, protos: torch.Tensor, proto_labels: list[int],
             T: float = 1.0) -> torch.Tensor:
    """The pseudo-prototypical proxy loss (``model/prototypical/loss_scheme.py``, spec 14.4 step 4).

    ``f`` (n, d) are the batch embeddings, ``protos`` (K, d) the prototypes of the classes ``proto_labels`` (every
    class of ``y`` among them; detached here). With P_{not c} the other prototypes and
    q(u, x) = e^{<u,x>/T} / (e^{<u,x>/T} + sum_{p in P_{not c}} e^{<p,x>/T}), per class c of the batch:
    attractor P+_i = (1/n_c) sum_{u in (B_c minus i) + {p_c}} q(u, x_i) (u detached), L+ = -sum_i log P+_i;
    repellor P-_ij = (q(x_i, x_j) + q(p_c, x_j)) / 2 for j of another class and each pseudo-prototype i of c (x_i not
    detached), L- = -sum_ij log(1 - P-_ij), dropped when the batch holds one class. Returns sum_c (L+ + L-) / n."""
    protos = protos.detach()
    classes = torch.unique(y).tolist()
    neg = len(classes) > 1
    loss = f.new_zeros(())
    for c in classes:
        k = proto_labels.index(int(c))
        pc = protos[k:k + 1]
        pk = torch.cat([protos[:k], protos[k + 1:]])
        xc, xk = f[y == c], f[y != c]
        n_c = xc.shape[0]
        # attractor: rows (B_c; p_c) detached, columns x_i; the diagonal (u = x_i) left out
        num = torch.exp(torch.cat([xc, pc]).detach() @ xc.T / T)  # (n_c + 1, n_c)
        num = num.masked_fill(torch.eye(n_c + 1, n_c, dtype=torch.bool, device=f.device), 0)
        den = torch.exp(pk @ xc.T / T).sum(0)  # (n_c,)
        p_pos = (num / (num + den)).sum(0) / n_c
        loss = loss - torch.log(p_pos).sum()
        if neg:
            num = torch.exp(torch.cat([xc, pc]) @ xk.T / T)  # (n_c + 1, n_k): pseudo-prototypes and p_c
            den = torch.exp(pk @ xk.T / T).sum(0)  # (n_k,)
            q = num / (num + den)
            p_neg = (q[:-1] + q[-1:]) / 2
            loss = loss - torch.log(1 - p_neg).sum()
    return loss / f.shape[0]


class CoPE(ExternalAgent):
    name = "CoPE"
    HP = CoPEHP

    def __init__(self, n_class, hp, switches, device="cpu"):
        super().__init__(n_class, hp, switches, device)
        self.last_loss = None
        self.d = self.embedding_dim
        self.total_memories = self.n_class * int(self.hp["n_memories"])  # upstream n_total_memories
        self.qi_len = int(self.hp["n_memories"])  # upstream net.n_memories: the per-class capacity now
        self.classes: list[int] = []  # classes with a ClassMemory, in creation order
        self.protos = torch.empty(0, self.d, device=self.device)  # (K, d), rows in self.classes order
        self.p_sum = torch.empty(0, self.d, device=self.device)  # batch_momentum_incr accumulators
        self.p_cnt = torch.empty(0, dtype=torch.long, device=self.device)
        self.mem_x: list[torch.Tensor] = []  # per class: stored inputs (n, *input shape)
        self.mem_f: list[torch.Tensor] = []  # per class: stored embeddings (n, d)
        self.mem_age: list[torch.Tensor] = []  # per class: ages (n,) float32
        self.seen_cnt: list[int] = []  # per class: new samples offered to the reservoir
        self.pending_x = torch.empty(0, device=self.device)  # a partial batch carried to the next epoch of task 0
        self.pending_y = torch.empty(0, dtype=torch.long, device=self.device)

    # ------------------------------------------------------------------------------------------------ network
    @property
    def embedding_dim(self) -> int:
        d = self.hp["embedding_size"]
        return int(self.n_class if d is None else d)

    def output_size(self) -> int:
        return self.embedding_dim

    def build_own_network(self) -> nn.Module:
        return self.build_gss_family_network()

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """f(x) = net(x) / ||net(x)||_2."""
        return F.normalize(self.forward(x), p=2, dim=1)

    # ------------------------------------------------------------------------------------------------ stream
    def learn_stream(self, loader, task: int, epoch: int, last_epoch: bool) -> None:
        bs = int(self.hp["batch_size"])
        gen = self.generator()
        dataset = loader.dataset
        order = torch.randperm(len(dataset), generator=gen).tolist()
        shuffled = torch.utils.data.DataLoader(
            torch.utils.data.Subset(dataset, order), batch_size=bs, shuffle=False, num_workers=loader.num_workers,
            collate_fn=loader.collate_fn, pin_memory=loader.pin_memory)
        px, py = self.pending_x, self.pending_y
        for x, y in shuffled:
            x, y = x.to(self.device), y.to(self.device).long()
            px = x if py.numel() == 0 else torch.cat([px, x])
            py = y if py.numel() == 0 else torch.cat([py, y])
            while py.numel() >= bs:
                self.observe(px[:bs], py[:bs])
                px, py = px[bs:], py[bs:]
        if py.numel() and last_epoch:
            self.observe(px, py)
            px, py = px[:0], py[:0]
        self.pending_x, self.pending_y = px, py

    # ------------------------------------------------------------------------------------------------ observe
    def observe(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """One incoming batch, ``n_iter`` iterations (spec 14.4 steps 1-5)."""
        gen = self.generator()
        n_new = len(y)
        self.model.train()
        n_iter = int(self.hp["n_iter"])
        for it in range(n_iter):
            if self.qi_len > 0:
                x_s, y_s, idx_s = self.sample_replay(n_new, gen)
            else:
                x_s, y_s, idx_s = x[:0], y[:0], y[:0]
            x_ext, y_ext = torch.cat([x, x_s.to(x.dtype)]), torch.cat([y, y_s])
            self.optimizer.zero_grad()
            f = self.embed(x_ext)
            self.init_new_classes(y_ext, gen)
            f_d = f.detach()
            self.accumulate(f_d[n_new:], y_s)
            self.refresh_replayed(f_d[n_new:], y_s, idx_s)
            if len(self.classes) > 1:
                loss = ppp_loss(f, y_ext, self.protos, self.classes, float(self.hp["loss_T"]))
                loss.backward()
                self.optimizer.step()
                self.last_loss = float(loss.detach())
            if it == n_iter - 1:
                self.update_prototypes(f_d[:n_new], y)
                self.update_memory(x.detach(), f_d[:n_new], y, gen)

    def index(self, c: int) -> int:
        return self.classes.index(int(c))

    def init_new_classes(self, y: torch.Tensor, gen: torch.Generator) -> None:
        """A ClassMemory for every new label of ``y`` (ascending): prototype normalize(U(0,1)^d), empty queue."""
        for c in torch.unique(y).tolist():
            if c in self.classes:
                continue
            p = F.normalize(torch.rand(1, self.d, generator=gen), p=2, dim=1).to(self.device)
            self.classes.append(int(c))
            self.protos = torch.cat([self.protos, p])
            self.p_sum = torch.cat([self.p_sum, torch.zeros(1, self.d, device=self.device)])
            self.p_cnt = torch.cat([self.p_cnt, torch.zeros(1, dtype=torch.long, device=self.device)])
            self.mem_x.append(torch.empty(0, device=self.device))
            self.mem_f.append(torch.empty(0, self.d, device=self.device))
            self.mem_age.append(torch.empty(0, device=self.device))
            self.seen_cnt.append(0)

    def sample_replay(self, n: int, gen: torch.Generator):
        """Step 1 (``sample_scheme.py``): min(n, stored) samples; per draw a class uniformly among those with samples
        left, then per class (creation order) ``randperm(n_c)[:count]``. Returns (x_s, y_s, slot indices)."""
        avail = [len(m) for m in self.mem_x]
        counts = [0] * len(self.classes)
        for _ in range(min(n, sum(avail))):
            free = [k for k in range(len(self.classes)) if counts[k] < avail[k]]
            counts[free[int(torch.randint(len(free), (1,), generator=gen))]] += 1
        xs, ys, idxs = [], [], []
        for k, cnt in enumerate(counts):
            if cnt > 0:
                idx = torch.randperm(avail[k], generator=gen)[:cnt].to(self.device)
                xs.append(self.mem_x[k][idx])
                ys.append(torch.full((cnt,), self.classes[k], dtype=torch.long, device=self.device))
                idxs.append(idx)
        if not xs:
            return (torch.empty(0, device=self.device), torch.empty(0, dtype=torch.long, device=self.device),
                    torch.empty(0, dtype=torch.long, device=self.device))
        return torch.cat(xs), torch.cat(ys), torch.cat(idxs)

    @torch.no_grad()
    def accumulate(self, f: torch.Tensor, y: torch.Tensor) -> None:
        """Add embeddings to their class's accumulator (sum, count)."""
        for c in torch.unique(y).tolist():
            k = self.index(c)
            sel = y == c
            self.p_sum[k] += f[sel].sum(0)
            self.p_cnt[k] += int(sel.sum())

    @torch.no_grad()
    def refresh_replayed(self, f_s: torch.Tensor, y_s: torch.Tensor, idx_s: torch.Tensor) -> None:
        """``update_f_mem``: every stored sample ages by 1; a replayed one gets age 1 and its embedding refreshed."""
        for k in range(len(self.classes)):
            self.mem_age[k] += 1
        for i in range(len(y_s)):
            k = self.index(int(y_s[i]))
            j = int(idx_s[i])
            self.mem_age[k][j] = 1
            self.mem_f[k][j] = f_s[i]

    @torch.no_grad()
    def update_prototypes(self, f_new: torch.Tensor, y_new: torch.Tensor) -> None:
        """Step 5: the new samples join the accumulators; p <- normalize(m p + (1 - m) mean) where count > 0."""
        self.accumulate(f_new, y_new)
        m = float(self.hp["p_momentum"])
        for k in range(len(self.classes)):
            if int(self.p_cnt[k]) > 0:
                mean = self.p_sum[k] / int(self.p_cnt[k])
                self.protos[k] = F.normalize((m * self.protos[k] + (1 - m) * mean).unsqueeze(0), p=2, dim=1)[0]
                self.p_sum[k].zero_()
                self.p_cnt[k] = 0

    @torch.no_grad()
    def update_memory(self, x_new: torch.Tensor, f_new: torch.Tensor, y_new: torch.Tensor,
                      gen: torch.Generator) -> None:
        """Step 5: the per-class reservoir (``mem_scheme.py``), then the dyn_mem capacity."""
        if self.qi_len > 0:
            for c in torch.unique(y_new).tolist():
                k = self.index(c)
                sel = y_new == c
                xc, fc = x_new[sel], f_new[sel]
                n = len(xc)
                self.seen_cnt[k] += n
                if len(self.mem_x[k]) < self.qi_len:  # empty or not full: append all, keep the last qi_len
                    mx = xc.clone() if len(self.mem_x[k]) == 0 else torch.cat([self.mem_x[k], xc])
                    self.mem_x[k] = mx[-self.qi_len:]
                    self.mem_f[k] = torch.cat([self.mem_f[k], fc])[-self.qi_len:]
                    self.mem_age[k] = torch.cat([self.mem_age[k], torch.ones(n, device=self.device)])[-self.qi_len:]
                else:  # reservoir: slot r ~ U{0..seen_c - 1}, replaced when r < qi_len (later items win)
                    r = torch.randint(self.seen_cnt[k], (n,), generator=gen).tolist()
                    for i, slot in enumerate(r):
                        if slot < self.qi_len:
                            self.mem_x[k][slot] = xc[i]
                            self.mem_f[k][slot] = fc[i]
                            self.mem_age[k][slot] = 1
                    self.mem_x[k] = self.mem_x[k][-self.qi_len:]
                    self.mem_f[k] = self.mem_f[k][-self.qi_len:]
                    self.mem_age[k] = self.mem_age[k][-self.qi_len:]
        if self.hp["dyn_mem"] and self.classes:
            self.resize_memory(self.total_memories // len(self.classes), gen)

    @torch.no_grad()
    def resize_memory(self, n_mem: int, gen: torch.Generator) -> None:
        """``update_mem_sizes``: when the per-class capacity changes, every class keeps ``randperm(n)[:n_mem]``."""
        if n_mem == self.qi_len:
            return
        self.qi_len = n_mem
        for k in range(len(self.classes)):
            idx = torch.randperm(len(self.mem_x[k]), generator=gen)[:n_mem].to(self.device)
            self.mem_x[k] = self.mem_x[k][idx]
            self.mem_f[k] = self.mem_f[k][idx]
            self.mem_age[k] = self.mem_age[k][idx]

    # ------------------------------------------------------------------------------------------------ prediction
    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """argmax_c <p_c, f(x)> over the classes with a prototype (ties: the lowest label); class 0 before any."""
        if not self.classes:
            return {"acc": torch.zeros(len(x), dtype=torch.long, device=self.device)}
        self.model.eval()
        order = sorted(range(len(self.classes)), key=lambda k: self.classes[k])
        labels = torch.as_tensor([self.classes[k] for k in order], dtype=torch.long, device=self.device)
        scores = self.embed(x) @ self.protos[order].T
        return {"acc": labels[scores.argmax(1)]}

    # ------------------------------------------------------------------------------------------------ memory, notes
    def memory_bytes(self) -> dict[str, int]:
        """Per stored sample the input as stored (float32: 12,288 B at 32 x 32 x 3) + the embedding (4 d B) + the age
        (4 B); per known class its prototype (4 d B) (spec 14.4, 14.9)."""
        buffer = 0
        for mx in self.mem_x:
            if len(mx):
                buffer += len(mx) * (math.prod(mx.shape[1:]) * mx.element_size() + 4 * self.d + AGE_BYTES)
        return {"buffer": buffer, "prototypes": 4 * self.d * len(self.classes)}

    def result_notes(self) -> list[str]:
        """The results table's note on the adapted code's run (network: own): the settings are this project's
        choice (no published script, q27) and CORe50 runs at 32 px (q26)."""
        if not self.own_network:
            return []
        return [f"reference CoPE: the adapted code publishes no run script or settings; main.py's defaults with "
                f"n_memories = {int(self.hp['n_memories'])} per class (the default 0 disables replay) and every "
                f"task trained are this project's choice (spec 14.4 q27); on CORe50 the input is 32 px, as on the "
                f"other datasets, because the adapted Resize(128) crashes (q26)"]

    # ------------------------------------------------------------------------------------------------ state
    def extra_state(self) -> dict[str, Any]:
        state = super().extra_state()
        state["cope"] = {
            "classes": list(self.classes), "qi_len": int(self.qi_len),
            "protos": self.protos.detach().cpu().clone(), "p_sum": self.p_sum.detach().cpu().clone(),
            "p_cnt": self.p_cnt.cpu().clone(),
            "mem_x": [t.detach().cpu().clone() for t in self.mem_x],
            "mem_f": [t.detach().cpu().clone() for t in self.mem_f],
            "mem_age": [t.detach().cpu().clone() for t in self.mem_age],
            "seen_cnt": [int(s) for s in self.seen_cnt],
            "pending_x": self.pending_x.detach().cpu().clone(), "pending_y": self.pending_y.cpu().clone(),
        }
        return state

    def load_extra_state(self, state: dict[str, Any]) -> None:
        super().load_extra_state(state)
        s = state["cope"]
        self.classes = [int(c) for c in s["classes"]]
        self.qi_len = int(s["qi_len"])
        for key in ("protos", "p_sum", "p_cnt", "pending_x", "pending_y"):
            setattr(self, key, s[key].clone().to(self.device))
        for key in ("mem_x", "mem_f", "mem_age"):
            setattr(self, key, [t.clone().to(self.device) for t in s[key]])
        self.seen_cnt = [int(v) for v in s["seen_cnt"]]
