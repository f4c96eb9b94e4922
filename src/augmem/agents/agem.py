"""A-GEM, averaged gradient episodic memory (spec 6.3, 12.25).

After the last epoch of each task the memory keeps ``min(|task|, memory_size // task_count)`` random images of every
task seen (:class:`~augmem.agents.naive_rehearsal.TaskMemory`). Once a memory exists, every step computes a
reference gradient g_ref on the memory and the batch gradient g; when g . g_ref < 0 the update is
g - (g . g_ref / g_ref . g_ref) g_ref.

The published code's g_ref is the gradient of the *sum* of batch-mean CE losses over the whole memory loader
(batches of ``batch_size // 10 + 1``, not shuffled), recomputed at every step (slow; spec 12.25). That is what both
fidelities do unless a training switch ``agem_full_memory_reference`` exists and is False, in which case g_ref uses one
random memory batch of that size per step, as in the A-GEM paper. (The 64x64 input of the published A-GEM runs is the
``image_size`` hyperparameter, not this code.) The reservoir and the random memory batch draw from the agent's replay
generator (:func:`augmem.train.seeding.replay_random`), not from the global RNG.
"""
from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn

from augmem.agents.gem import grad_to_vector, vector_to_grad
from augmem.agents.naive_rehearsal import ImageMemoryAgent, TaskMemory
from augmem.train.seeding import replay_random

REF_CHUNK = 128  # memory items per forward pass when the memory batches can be merged (no BatchNorm)


def agem_project(g: torch.Tensor, g_ref: torch.Tensor) -> torch.Tensor:
    """g when g . g_ref >= 0, else g - (g . g_ref / g_ref . g_ref) g_ref (so that the result . g_ref = 0)."""
    dot = torch.dot(g, g_ref)
    if dot >= 0:
        return g
    return g - (dot / torch.dot(g_ref, g_ref)) * g_ref


class AGEM(ImageMemoryAgent):
    name = "AGEM"

    def __init__(self, n_class, hp, switches, device="cpu"):
        super().__init__(n_class, hp, switches, device)
        self.memory = TaskMemory(self.hp["memory_size"])
        self.memory_batch = self.hp["batch_size"] // 10 + 1
        self.full_memory_reference = bool(getattr(switches, "agem_full_memory_reference", True))
        self.params = {n: p for n, p in self.model.named_parameters() if p.requires_grad}
        self.n_projections = 0  # steps whose gradient was projected (diagnostics)

    def reference_gradient(self) -> torch.Tensor:
        """g_ref: gradient of sum over memory batches of the batch-mean CE (or of one random memory batch).

        Without BatchNorm layers the per-batch forward passes are independent, so the same sum is computed in large
        chunks with per-item weights 1 / |its memory batch| (much faster); with BatchNorm the memory batches are
        forwarded one by one, as the original.
        """
        mx, my = self.memory.tensors()
        self.model.zero_grad()
        if not self.full_memory_reference:
            idx = torch.randperm(len(my), generator=replay_random(self).torch)[: self.memory_batch]
            loss = self.criterion(self.forward(mx[idx].to(self.device)), my[idx].to(self.device))
            loss.backward()
            return grad_to_vector(self.params).detach().clone()
        b = self.memory_batch
        sizes = torch.tensor([min(b, len(my) - s) for s in range(0, len(my), b)], dtype=torch.float32)
        weights = (1.0 / sizes).repeat_interleave(sizes.long())  # 1 / size of each item's memory batch
        chunk = b if self._has_batchnorm() else max(b, REF_CHUNK - REF_CHUNK % b)
        for s in range(0, len(my), chunk):
            logits = self.forward(mx[s:s + chunk].to(self.device))
            ce = F.cross_entropy(logits[:, self.active_index], my[s:s + chunk].to(self.device), reduction="none")
            (ce * weights[s:s + chunk].to(self.device)).sum().backward()  # gradients add up over chunks
        return grad_to_vector(self.params).detach().clone()

    def _has_batchnorm(self) -> bool:
        return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in self.model.modules())

    def update_model(self, x: torch.Tensor, y: torch.Tensor) -> float:
        if len(self.memory) == 0:
            return super().update_model(x, y)
        self.model.train()
        g_ref = self.reference_gradient()
        logits = self.forward(x)
        loss = self.criterion(logits, y)
        self.optimizer.zero_grad()
        loss.backward()
        g = grad_to_vector(self.params)
        if torch.dot(g, g_ref) < 0:
            new = agem_project(g, g_ref)
            if not torch.isfinite(new).all():
                raise RuntimeError("A-GEM projection produced non-finite gradients")
            vector_to_grad(self.params, new)
            self.n_projections += 1
        self.optimizer.step()
        return float(loss.detach())

    def learn_stream(self, loader, task: int, epoch: int, last_epoch: bool) -> None:
        super().learn_stream(loader, task, epoch, last_epoch)
        if last_epoch:
            self.add_task_to_memory(loader.dataset)
