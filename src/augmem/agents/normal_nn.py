"""NormalNN: plain fine-tuning (the lower bound), and the same network trained offline (the upper bound). Spec 6.1."""
from __future__ import annotations

from augmem.agents.base import Agent


class NormalNN(Agent):
    """One SGD step per batch over the stream, CE over the active output nodes."""

    name = "NormalNN"

    def learn_stream(self, loader, task: int, epoch: int, last_epoch: bool) -> None:
        for x, y in loader:
            self.update_model(x.to(self.device), y.to(self.device))


class OfflineNN(NormalNN):
    """The upper bound: NormalNN on the offline filelists (task t = all data of tasks 0..t, shuffled)."""

    name = "Offline"
    offline = True
