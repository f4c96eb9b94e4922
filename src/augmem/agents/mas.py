"""MAS: memory-aware synapses importance, one online slot (spec 6.2, 12.23)."""
from __future__ import annotations

from augmem.agents.regularization import ParamDict, RegularizedAgent


class MAS(RegularizedAgent):
    """Omega += |d mean(logits[:, active]**2) / dtheta| / N_batches over the training loader in eval mode,
    accumulated into the stored Omega when a slot exists (reference: in place, every epoch)."""

    name = "MAS"
    online_reg = True

    def calculate_importance(self, loader) -> ParamDict:
        def batch_loss(x):
            return self.forward(x)[:, self.active_index].pow(2).mean()

        return self.accumulate_gradient_importance(loader, batch_loss, lambda g, b, n: g.abs() / n)
