"""Regularisation agents on a single linear layer, where importances and penalties have closed forms."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from augmem.train.fidelity import train_switches


def linear_agent(cls, width: int, hp: dict, fidelity: str = "reference"):
    """An instance of the agent class ``cls`` whose model is Flatten + Linear(width, width), seeded with 0."""
    tiny = type(f"Tiny{cls.__name__}", (cls,), {
        "build_model": lambda self: nn.Sequential(nn.Flatten(), nn.Linear(width, width)),
    })
    torch.manual_seed(0)
    return tiny(width, dict(hp), train_switches(fidelity))


def two_label_data(seed: int, n: int, width: int, labels=(0, 1)) -> TensorDataset:
    """n random inputs, labels alternating between the two given."""
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, width, generator=g), torch.tensor([labels[i % 2] for i in range(n)]))


def learn(agent, ds, task: int, epoch: int, last: bool, batch: int = 3) -> None:
    agent.learn_stream(DataLoader(ds, batch_size=batch), task, epoch, last)
