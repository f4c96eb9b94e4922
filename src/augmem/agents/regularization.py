"""Shared base of the regularisation baselines L2, EWC, online EWC, SI and MAS (spec 6.2, 12.23).

Every regulariser keeps "slots" ``{slot: {"importance": Omega, "task_param": theta*}}`` and adds to the cross
entropy the penalty ``reg_coef * sum_slots sum_params sum_elements Omega * (theta - theta*)**2`` (no 1/2 factor, as
the original). Online variants (L2, online EWC, SI, MAS) keep one slot (slot 1, overwritten); EWC keeps one per task.

Fidelity (switch ``reg_importance_every_epoch``):

* reference: after every epoch the importance is recomputed. The online variants start from the *stored* slot-1
  importance object itself and add to it in place, so the stored importance already changes in epochs that are not
  the last of a task; a new slot (or the overwrite of slot 1) is written only after a task's last epoch.
* corrected: the importance is computed once, after the last epoch of each task; online variants add the new
  importance to a copy of the stored one, so the stored slot changes only at task ends.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

import dataclasses

from augmem.agents.base import CommonHP, n_params_bytes
from augmem.agents.hparams import hparam
from augmem.agents.normal_nn import NormalNN

ParamDict = dict[str, torch.Tensor]


@dataclasses.dataclass(frozen=True)
class RegularizedHP(CommonHP):
    reg_coef: float = hparam(1.0, "weight of the penalty sum Omega * (theta - theta*)^2", min=0)


class RegularizedAgent(NormalNN):
    """NormalNN plus a quadratic penalty anchored at stored parameters, weighted by a per-element importance."""

    name = "Regularized"
    HP = RegularizedHP
    online_reg = True  # True: one slot (slot 1) overwritten after each task; False: one slot per task

    def __init__(self, n_class, hp, switches, device="cpu"):
        super().__init__(n_class, hp, switches, device)
        # the trainable parameters, captured at construction (the original's ``self.params``)
        self.params: dict[str, torch.nn.Parameter] = {
            n: p for n, p in self.model.named_parameters() if p.requires_grad
        }
        self.regularization_terms: dict[int, dict[str, ParamDict]] = {}
        self.task_count = 0
        self.reg_coef = self.hp["reg_coef"]

    # ----------------------------------------------------------------------------------------------------- importance
    def zeros_like_params(self) -> ParamDict:
        return {n: torch.zeros_like(p.detach()) for n, p in self.params.items()}

    def param_snapshot(self) -> ParamDict:
        return {n: p.detach().clone() for n, p in self.params.items()}

    def importance_start(self) -> ParamDict:
        """The importance to accumulate into.

        Online variant with a stored slot: reference -> the stored slot-1 tensors themselves (so ``+=`` changes the
        stored importance, spec 6.2); corrected -> a copy. Otherwise fresh zeros.
        """
        if self.online_reg and self.regularization_terms:
            stored = self.regularization_terms[1]["importance"]
            if self.switches.reg_importance_every_epoch:
                return stored
            return {n: t.clone() for n, t in stored.items()}
        return self.zeros_like_params()

    def calculate_importance(self, loader) -> ParamDict:
        """Omega for the current parameters (subclasses)."""
        raise NotImplementedError

    def accumulate_gradient_importance(self, loader, batch_loss, term) -> ParamDict:
        """The gradient-based importances (EWC, MAS): over the batches of the training loader, in eval mode,
        ``Omega += term(grad, batch size, number of batches)`` for every parameter with a gradient of
        ``batch_loss(x)``; accumulated in place into :meth:`importance_start`'s tensors."""
        importance = self.importance_start()
        n_batches = len(loader)
        mode = self.model.training
        self.model.eval()
        for x, _ in loader:
            x = x.to(self.device)
            loss = batch_loss(x)
            self.model.zero_grad()
            loss.backward()
            for n, imp in importance.items():
                g = self.params[n].grad
                if g is not None:  # in place: for online EWC / MAS under reference this changes the stored slot
                    imp += term(g.detach(), len(x), n_batches)
        self.model.train(mode)
        return importance

    # ----------------------------------------------------------------------------------------------------- loss
    def reg_loss(self) -> torch.Tensor:
        """sum_slots sum_params sum_elements Omega * (theta - theta*)**2 (0 without slots)."""
        total = torch.zeros((), device=self.device)
        for term in self.regularization_terms.values():
            imp, anchor = term["importance"], term["task_param"]
            for n, p in self.params.items():
                total = total + (imp[n] * (p - anchor[n]) ** 2).sum()
        return total

    def criterion(self, logits: torch.Tensor, y: torch.Tensor, regularization: bool = True) -> torch.Tensor:
        loss = F.cross_entropy(logits[:, self.active_index], y)
        if regularization and self.regularization_terms:
            loss = loss + self.reg_coef * self.reg_loss()
        return loss

    # ----------------------------------------------------------------------------------------------------- protocol
    def learn_stream(self, loader, task: int, epoch: int, last_epoch: bool) -> None:
        # 1. the NormalNN pass (with the penalty in the loss)
        super().learn_stream(loader, task, epoch, last_epoch)
        if not (self.switches.reg_importance_every_epoch or last_epoch):
            return
        # 2. back up the weights; 3. importance (reference: every epoch; corrected: at the task's end)
        task_param = self.param_snapshot()
        importance = self.calculate_importance(loader)
        # 4. store only after a task's last epoch
        if last_epoch:
            self.task_count += 1
            slot = 1 if (self.online_reg and self.regularization_terms) else self.task_count
            self.regularization_terms[slot] = {"importance": importance, "task_param": task_param}

    def memory_bytes(self) -> dict[str, int]:
        imp = [t for term in self.regularization_terms.values() for t in term["importance"].values()]
        anc = [t for term in self.regularization_terms.values() for t in term["task_param"].values()]
        return {"importance": n_params_bytes(imp), "anchor_params": n_params_bytes(anc)}

    # ----------------------------------------------------------------------------------------------------- state
    def extra_state(self) -> dict[str, Any]:
        return {
            "task_count": int(self.task_count),
            "slots": [int(s) for s in self.regularization_terms],
            "importance": [{n: t.detach().clone() for n, t in term["importance"].items()}
                           for term in self.regularization_terms.values()],
            "task_param": [{n: t.detach().clone() for n, t in term["task_param"].items()}
                           for term in self.regularization_terms.values()],
        }

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.task_count = int(state["task_count"])
        self.regularization_terms = {
            int(s): {"importance": {n: t.to(self.device) for n, t in imp.items()},
                     "task_param": {n: t.to(self.device) for n, t in anc.items()}}
            for s, imp, anc in zip(state["slots"], state["importance"], state["task_param"])
        }
