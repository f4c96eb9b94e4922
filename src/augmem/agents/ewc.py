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
        def batch_loss(x):
            logits = self.forward(x)
            pred = logits[:, self.active_index].argmax(1)  # position within active = label (contiguous labels)
            return self.criterion(logits, pred, regularization=False)

        return self.accumulate_gradient_importance(loader, batch_loss, lambda g, b, n: g ** 2 * b / n)
