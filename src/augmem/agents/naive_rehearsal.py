"""Naive rehearsal (spec 6.3, 12.21), and the per-task image memory shared by the rehearsal baselines.

In the published code NaiveRehearsal's ``learn_stream`` is nested inside ``__init__`` (never bound), so the agent
trains exactly like NormalNN and ignores ``memory_size``. Switch ``rehearsal_as_finetune`` (reference) keeps that;
the corrected agent implements what the dead code describes: after each task a random reservoir of
``memory_size // task_count`` images per task, and training that alternates a stream batch and a replay batch.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch.utils.data import DataLoader, TensorDataset

from augmem.agents.base import CommonHP
from augmem.agents.hparams import hparam
from augmem.agents.normal_nn import NormalNN
from augmem.train.seeding import replay_random, throwaway_generator


def dataset_labels(dataset) -> list[int]:
    """Labels of a dataset without loading images where possible (``targets``/``labels``, TensorDataset, Subset)."""
    if isinstance(dataset, TensorDataset):
        return [int(v) for v in dataset.tensors[1].tolist()]
    if isinstance(dataset, torch.utils.data.Subset):
        base = dataset_labels(dataset.dataset)
        return [base[i] for i in dataset.indices]
    for attr in ("targets", "labels"):
        vals = getattr(dataset, attr, None)
        if vals is not None and len(vals) == len(dataset):
            return [int(v) for v in (vals.tolist() if torch.is_tensor(vals) else vals)]
    out: list[int] = []
    for _, y in DataLoader(dataset, batch_size=256, shuffle=False, generator=throwaway_generator()):
        out.extend(int(v) for v in y.tolist())
    return out


def take_items(dataset, indices) -> tuple[torch.Tensor, torch.Tensor]:
    """(stacked inputs, labels) of ``dataset[i]`` for the given indices, on the CPU."""
    xs, ys = [], []
    for i in indices:
        x, y = dataset[int(i)]
        xs.append(torch.as_tensor(x).detach().cpu())
        ys.append(int(y))
    if not xs:
        x0, _ = dataset[0]
        return torch.empty((0, *torch.as_tensor(x0).shape)), torch.empty(0, dtype=torch.long)
    return torch.stack(xs), torch.tensor(ys, dtype=torch.long)


def image_bytes(x: torch.Tensor) -> int:
    """Bytes of stored images counted as uint8 pixels (n * 3 * H * W), whatever dtype they are kept in."""
    return int(x.numel())


class TaskMemory:
    """Per-task stored images (the original's ``Storage`` list) with the reservoir rule of the rehearsal baselines.

    After task k (k = 1, 2, ...): m = min(|task data|, memory_size // k); every stored task is truncated to its first
    m items and m random items of the new task (``torch.randperm``; the original drew from the global RNG, here from
    the agent's replay generator, see :mod:`augmem.train.seeding`) are added. Empty tasks are skipped (the original
    would count them and shrink every stored task to 0 items).
    """

    def __init__(self, memory_size: int):
        self.memory_size = int(memory_size)
        self.task_count = 0
        self.x: list[torch.Tensor] = []
        self.y: list[torch.Tensor] = []

    def __len__(self) -> int:
        return int(sum(len(t) for t in self.y))

    def add_task(self, dataset, generator: torch.Generator | None = None) -> None:
        n = len(dataset)
        if n == 0:
            return
        self.task_count += 1
        m = min(n, self.memory_size // self.task_count)
        self.x = [t[:m] for t in self.x]
        self.y = [t[:m] for t in self.y]
        idx = torch.randperm(n, generator=generator)[:m]
        x, y = take_items(dataset, idx.tolist())
        self.x.append(x)
        self.y.append(y)

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All stored items in task order (the original's ConcatDataset order)."""
        return torch.cat(self.x), torch.cat(self.y)

    def n_bytes(self) -> int:
        return sum(image_bytes(t) for t in self.x)

    def state(self) -> dict[str, Any]:
        return {"task_count": int(self.task_count), "x": [t.clone() for t in self.x], "y": [t.clone() for t in self.y]}

    def load_state(self, state: dict[str, Any]) -> None:
        self.task_count = int(state["task_count"])
        self.x = [t.clone() for t in state["x"]]
        self.y = [t.clone() for t in state["y"]]


def cycle(loader):
    """Endless iteration over a loader (re-iterated, hence re-shuffled, when exhausted)."""
    while True:
        yielded = False
        for batch in loader:
            yielded = True
            yield batch
        if not yielded:
            return


@dataclasses.dataclass(frozen=True)
class ImageMemoryHP(CommonHP):
    memory_size: int = hparam(1200, "image memory budget, split over the tasks seen (memory_size // tasks per task)",
                              unit="images in total", min=0)


class ImageMemoryAgent(NormalNN):
    """Shared by the agents that keep a TaskMemory of images (naive rehearsal, GEM, A-GEM): budget and checkpoint
    (the memory and the agent's replay randomness)."""

    HP = ImageMemoryHP

    memory: TaskMemory

    def memory_bytes(self) -> dict[str, int]:
        return {"images": self.memory.n_bytes()}

    def extra_state(self) -> dict[str, Any]:
        return {"memory": self.memory.state(), "replay_rng": replay_random(self).state()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.memory.load_state(state["memory"])
        if "replay_rng" in state:
            replay_random(self).load_state(state["replay_rng"])

    def add_task_to_memory(self, dataset) -> None:
        """The reservoir step of the task that ``dataset`` holds, drawing from the agent's replay generator."""
        self.memory.add_task(dataset, replay_random(self).torch)


class NaiveRehearsal(ImageMemoryAgent):
    """Reference: NormalNN exactly. Corrected: replay of a task memory of ``memory_size`` images."""

    name = "NaiveRehearsal"

    def __init__(self, n_class, hp, switches, device="cpu"):
        super().__init__(n_class, hp, switches, device)
        self.memory = TaskMemory(self.hp["memory_size"])

    def learn_stream(self, loader, task: int, epoch: int, last_epoch: bool) -> None:
        if self.switches.rehearsal_as_finetune or len(self.memory) == 0:
            super().learn_stream(loader, task, epoch, last_epoch)
        else:
            # same number of replay batches as train batches: replay batch = ceil(|replay| / n_train_batches)
            n_train_batches = len(loader)
            mx, my = self.memory.tensors()
            if n_train_batches > 0:
                replay_batch = math.ceil(len(my) / n_train_batches)
                replay = cycle(DataLoader(TensorDataset(mx, my), batch_size=replay_batch, shuffle=True,
                                          generator=replay_random(self).torch))
                for x, y in loader:
                    self.update_model(x.to(self.device), y.to(self.device))
                    rx, ry = next(replay)
                    self.update_model(rx.to(self.device), ry.to(self.device))
        if last_epoch and not self.switches.rehearsal_as_finetune:
            self.add_task_to_memory(loader.dataset)
