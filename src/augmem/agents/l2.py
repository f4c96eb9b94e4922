"""L2: the regulariser with importance 1 for every element and one online slot (spec 6.2)."""
from __future__ import annotations

import torch

from augmem.agents.regularization import ParamDict, RegularizedAgent


class L2(RegularizedAgent):
    """Penalty reg_coef * sum (theta - theta*)**2 anchored at the parameters after the last task (one slot)."""

    name = "L2"
    online_reg = True

    def calculate_importance(self, loader) -> ParamDict:
        return {n: torch.ones_like(p.detach()) for n, p in self.params.items()}
