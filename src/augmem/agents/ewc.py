"""EWC: diagonal Fisher importance with one slot per task (spec 6.2, 12.23)."""
from __future__ import annotations

from augmem.agents.regularization import ParamDict, RegularizedAgent


class EWC(RegularizedAgent):
    """Elastic weight consolidation as the original computes it.

    Fisher: over the batches of the *training* loader (same batches, eval mode), with the model's own prediction
    y_hat = argmax of logits[:, active] as the label (not the empirical Fisher), loss = CE(logits[:, active], y_hat),
    Omega += (dloss/dtheta)**2 * B_i / N_batches.
    """

    name = "EWC"
    online_reg = False

    def calculate_importance(self, loader) -> ParamDict:
        importance = self.importance_start()
        n_batches = len(loader)
        mode = self.model.training
        self.model.eval()
        for x, _ in loader:
            x = x.to(self.device)
            logits = self.forward(x)
            pred = logits[:, self.active_index].argmax(1)  # position within active = label (contiguous labels)
            loss = self.criterion(logits, pred, regularization=False)
            self.model.zero_grad()
            loss.backward()
            for n, imp in importance.items():
                g = self.params[n].grad
                if g is not None:  # in place: for online EWC under reference this changes the stored slot
                    imp += g.detach() ** 2 * len(x) / n_batches
        self.model.train(mode)
        return importance
