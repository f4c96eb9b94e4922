"""SI: synaptic intelligence, path-integral importance with damping xi = 0.1, one online slot (spec 6.2, 12.23)."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from augmem.agents.base import n_params_bytes
from augmem.agents.regularization import ParamDict, RegularizedAgent


class SI(RegularizedAgent):
    """Per step: w -= g_unreg * (theta_new - theta_old), where g_unreg is the gradient of the loss without the
    penalty and theta_new - theta_old is the actual optimiser step (momentum and weight decay included).

    Importance: Omega (stored slot, or zeros before the first slot) += w / ((theta - prev)**2 + xi) with prev the
    stored anchor (or the initial parameters), then w is zeroed. Reference computes this after every epoch, so for a
    multi-epoch first task only the last epoch's w survives; corrected computes it once per task (w of all epochs).
    """

    name = "SI"
    online_reg = True
    damping_factor = 0.1

    def __init__(self, n_class, hp, switches, device="cpu"):
        super().__init__(n_class, hp, switches, device)
        self.w: ParamDict = self.zeros_like_params()
        self.initial_params: ParamDict = self.param_snapshot()

    def update_model(self, x: torch.Tensor, y: torch.Tensor) -> float:
        self.model.train()
        old = self.param_snapshot()
        logits = self.forward(x)
        # gradient without the penalty
        loss = F.cross_entropy(logits[:, self.active_index], y)
        self.optimizer.zero_grad()
        loss.backward(retain_graph=True)
        unreg = {n: p.grad.detach().clone() for n, p in self.params.items() if p.grad is not None}
        # normal step with the penalty
        loss = self.criterion(logits, y, regularization=True)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        with torch.no_grad():
            for n, p in self.params.items():
                if n in unreg:
                    self.w[n] -= unreg[n] * (p.detach() - old[n])
        return float(loss.detach())

    def calculate_importance(self, loader) -> ParamDict:
        if self.regularization_terms:
            importance = self.importance_start()
            prev = self.regularization_terms[1]["task_param"]
        else:
            importance = self.zeros_like_params()
            prev = self.initial_params
        for n, imp in importance.items():
            delta = self.params[n].detach() - prev[n]
            imp += self.w[n] / (delta ** 2 + self.damping_factor)
            self.w[n].zero_()
        return importance

    def memory_bytes(self) -> dict[str, int]:
        out = super().memory_bytes()
        out["path_integral"] = n_params_bytes(list(self.w.values()) + list(self.initial_params.values()))
        return out

    def extra_state(self) -> dict[str, Any]:
        state = super().extra_state()
        state["w"] = {n: t.clone() for n, t in self.w.items()}
        state["initial_params"] = {n: t.clone() for n, t in self.initial_params.items()}
        return state

    def load_extra_state(self, state: dict[str, Any]) -> None:
        super().load_extra_state(state)
        self.w = {n: t.to(self.device).clone() for n, t in state["w"].items()}
        self.initial_params = {n: t.to(self.device).clone() for n, t in state["initial_params"].items()}
