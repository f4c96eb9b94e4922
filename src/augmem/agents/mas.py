"""MAS: memory-aware synapses importance, one online slot (spec 6.2, 12.23)."""
from __future__ import annotations

from augmem.agents.regularization import ParamDict, RegularizedAgent


class MAS(RegularizedAgent):
    """Omega += |d mean(logits[:, active]**2) / dtheta| / N_batches over the training loader in eval mode,
    accumulated into the stored Omega when a slot exists (reference: in place, every epoch)."""

    name = "MAS"
    online_reg = True

    def calculate_importance(self, loader) -> ParamDict:
        importance = self.importance_start()
        n_batches = len(loader)
        mode = self.model.training
        self.model.eval()
        for x, _ in loader:
            x = x.to(self.device)
            out = self.forward(x)[:, self.active_index]
            loss = out.pow(2).mean()
            self.model.zero_grad()
            loss.backward()
            for n, imp in importance.items():
                g = self.params[n].grad
                if g is not None:
                    imp += g.detach().abs() / n_batches
        self.model.train(mode)
        return importance
