"""GEM, gradient episodic memory (spec 6.3, 12.21).

In the published code GEM's task memory is never filled, so it trains exactly like NormalNN (switch
``gem_as_finetune``, reference). The corrected agent is the intended algorithm: per-task memories (the reservoir of
:class:`~augmem.agents.naive_rehearsal.TaskMemory`: ``memory_size // tasks seen`` images per task, taken at a task's
end); at every step the gradient g_k of the loss on each past task's memory; when any g . g_k < 0 the GEM dual QP
(solved with ``quadprog``) gives the update g~ = v^T G + g.
"""
from __future__ import annotations


import numpy as np
import torch

import dataclasses

from augmem.agents.hparams import hparam
from augmem.agents.naive_rehearsal import ImageMemoryAgent, ImageMemoryHP, TaskMemory

MEMORY_CHUNK = 100  # images per forward pass when computing a memory gradient (memory-bound, not a hyperparameter)


def grad_to_vector(params: dict[str, torch.nn.Parameter]) -> torch.Tensor:
    """All gradients as one flat vector (zeros where a parameter has no gradient)."""
    return torch.cat([
        (p.grad.reshape(-1) if p.grad is not None else torch.zeros_like(p).reshape(-1)) for p in params.values()
    ])


def vector_to_grad(params: dict[str, torch.nn.Parameter], vec: torch.Tensor) -> None:
    """Write a flat vector back into ``.grad`` (parameters without a gradient are skipped, as the original)."""
    pointer = 0
    for p in params.values():
        n = p.numel()
        if p.grad is not None:
            p.grad.copy_(vec[pointer:pointer + n].view_as(p))
        pointer += n


def gem_project(gradient: torch.Tensor, memories: torch.Tensor, margin: float, eps: float = 1e-3,
                context: str = "") -> torch.Tensor:
    """Solve the GEM dual QP and return the projected gradient g~ = v^T G + g.

    minimise 1/2 v^T P v + (G g)^T v  subject to  v >= margin,  with P = G G^T (symmetrised) + eps I,
    where G (t x p) holds the memory gradients and g the proposed gradient. With margin 0 and eps -> 0, g~ is the
    vector closest to g whose dot product with every memory gradient is >= 0. Raises RuntimeError (naming
    ``context``) when the QP fails or the result is not finite.
    """
    import quadprog

    G = memories.detach().cpu().double().numpy()
    g = gradient.detach().cpu().double().numpy()
    t = G.shape[0]
    P = G @ G.T
    P = 0.5 * (P + P.T) + eps * np.eye(t)
    q = -(G @ g)
    if not (np.isfinite(P).all() and np.isfinite(q).all()):
        raise RuntimeError(f"GEM QP{context}: gradients are not finite")
    try:
        v = quadprog.solve_qp(P, q, np.eye(t), np.zeros(t) + margin)[0]
    except ValueError as exc:
        raise RuntimeError(f"GEM QP{context} failed: {exc}") from exc
    x = v @ G + g
    if not np.isfinite(x).all():
        raise RuntimeError(f"GEM QP{context}: projected gradient is not finite")
    return torch.as_tensor(x, dtype=gradient.dtype, device=gradient.device)


@dataclasses.dataclass(frozen=True)
class GEMHP(ImageMemoryHP):
    reg_coef: float = hparam(1.0, "margin of GEM's dual QP (v >= margin; the original passes reg_coef)", min=0)


class GEM(ImageMemoryAgent):
    """Reference: NormalNN exactly. Corrected: GEM projection over per-task memories (margin = reg_coef)."""

    HP = GEMHP

    name = "GEM"

    def __init__(self, n_class, hp, switches, device="cpu"):
        super().__init__(n_class, hp, switches, device)
        import quadprog  # noqa: F401  (the original imports it at construction; fail early when missing)

        self.memory = TaskMemory(self.hp["memory_size"])
        self.margin = self.hp["reg_coef"]
        self.params = {n: p for n, p in self.model.named_parameters() if p.requires_grad}
        self._where = (0, 0)  # (task, step) for error messages
        self.n_projections = 0  # steps whose gradient was projected (diagnostics)

    def memory_gradients(self) -> torch.Tensor:
        """(tasks x params): gradient of the mean CE over each stored task's memory (current active nodes)."""
        grads = []
        for mx, my in zip(self.memory.x, self.memory.y):
            self.model.zero_grad()
            n = len(my)
            for s in range(0, n, MEMORY_CHUNK):
                xb, yb = mx[s:s + MEMORY_CHUNK].to(self.device), my[s:s + MEMORY_CHUNK].to(self.device)
                loss = self.criterion(self.forward(xb), yb) * (len(yb) / n)
                loss.backward()
            grads.append(grad_to_vector(self.params).detach().clone())
        return torch.stack(grads)

    def update_model(self, x: torch.Tensor, y: torch.Tensor) -> float:
        if self.switches.gem_as_finetune or len(self.memory) == 0:
            return super().update_model(x, y)
        self.model.train()
        mem_grads = self.memory_gradients()
        logits = self.forward(x)
        loss = self.criterion(logits, y)
        self.optimizer.zero_grad()
        loss.backward()
        g = grad_to_vector(self.params)
        if bool((mem_grads @ g < 0).any()):
            task, step = self._where
            new = gem_project(g, mem_grads, self.margin, context=f" at task {task}, step {step}")
            vector_to_grad(self.params, new)
            self.n_projections += 1
        self.optimizer.step()
        return float(loss.detach())

    def learn_stream(self, loader, task: int, epoch: int, last_epoch: bool) -> None:
        for step, (x, y) in enumerate(loader):
            self._where = (task, step)
            self.update_model(x.to(self.device), y.to(self.device))
        if last_epoch and not self.switches.gem_as_finetune:
            self.add_task_to_memory(loader.dataset)
