"""AugMem health (agents/augmem_health.py): the figures, both collapsed regimes and a healthy memory, and the early
stop on a front map too small to carry hypotheses."""
from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from augmem.agents.augmem import AugMemAgent
from augmem.agents.augmem_health import SHARED_CODES, UNIFORM_RATIO, HealthAccumulator, verdict
from augmem.io import InputError
from augmem.train.fidelity import train_switches

pytestmark = pytest.mark.usefixtures("one_torch_thread")

HP = dict(backbone="squeezenet", weights="none", image_size=64, memory_Nslots=100, memory_Nfeat=8, memory_size=20,
          mem_sparse=5, freeze_feature_extract=True)


def agent(**hp) -> AugMemAgent:
    torch.manual_seed(0)
    a = AugMemAgent(4, {**HP, **hp}, train_switches("reference"))
    a.set_inputs_are_features(True)  # the tests feed front features (B, 512, h, w) they control
    return a


def features(kind: str, n_per_class=6, size=3, seed=0):
    """Front features of 4 classes: 'shared' (every image the same key pattern, scaled), 'weak' (tiny keys),
    'healthy' (each class its own strong key direction per location, plus noise)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(4).repeat_interleave(n_per_class)
    if kind == "shared":
        base = torch.rand(1, 512, size, size, generator=g) * 4
        x = base * (1 + 0.01 * torch.rand(len(y), 1, 1, 1, generator=g))
    elif kind == "weak":
        x = torch.rand(len(y), 512, size, size, generator=g) * 1e-3
    else:
        dirs = torch.randn(4, 512, size, size, generator=g) * 3
        x = dirs[y] + 0.05 * torch.randn(len(y), 512, size, size, generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=7)


def test_shared_codes_regime():
    h = agent().task_health(features("shared"), new_labels=[2, 3], old_labels=[0, 1])
    assert h["map"] == [3, 3] and h["keys_per_image"] == 3 * 3 * 64 and h["n_images"] == 24
    assert h["shared_code_fraction"] >= SHARED_CODES and h["distinct_codes"] <= 2
    v = verdict([h])
    assert not v["healthy"] and v["regimes"] == ["shared_codes"] and "exact slot code" in v["message"]


def test_uniform_reads_regime():
    h = agent(memory_Nslots=1000).task_health(features("weak"), new_labels=[2, 3], old_labels=[0, 1])
    assert h["max_attention_mean"] < UNIFORM_RATIO / 1000 and h["uniform_key_fraction"] == 1.0
    v = verdict([h])
    assert not v["healthy"] and "uniform_reads" in v["regimes"] and "mean slot" in v["message"]


def test_healthy_memory():
    a = agent()
    first = a.task_health(features("healthy"), new_labels=[0, 1], old_labels=[])
    assert first["shared_code_fraction"] is None  # nothing old after the first task
    h = a.task_health(features("healthy"), new_labels=[2, 3], old_labels=[0, 1])
    assert h["shared_code_fraction"] == 0.0 and h["distinct_codes"] >= 4
    assert h["max_attention_mean"] > UNIFORM_RATIO / 100 and h["uniform_key_fraction"] < 0.5
    assert set(h["slots_per_class"]) == {"0", "1", "2", "3"} and h["slots_used"] > 4
    assert verdict([first, h]) == {"healthy": True, "regimes": [], "message": "AugMem memory healthy"}


def test_accumulator_counts():
    acc = HealthAccumulator(5)
    top1 = torch.tensor([[[[0, 1]]], [[[0, 1]]], [[[2, 3]]]])  # (B=3, h=1, w=1, G=2)
    acc.add(top1, torch.tensor([0.5, 0.5, 1.0, 1.0, 0.2, 0.2]), torch.tensor([0, 1, 1]))
    h = acc.summarise(new_labels=[1], old_labels=[0])
    assert h["slots_used"] == 4 and h["distinct_codes"] == 2 and h["slots_per_class"] == {"0": 2, "1": 4}
    assert h["shared_code_fraction"] == 0.5  # label 1's images: one has class 0's code, one not
    assert h["max_attention_mean"] == pytest.approx(0.5667, abs=1e-4)
    assert h["uniform_key_fraction"] == pytest.approx(1 / 3)  # 5 slots: threshold min(10 / 5, 0.5): the two 0.2s


def test_health_check_off():
    assert agent(health_check=False).task_health(features("healthy"), [0, 1], []) is None


def test_too_small_map_stops_early_with_the_smallest_usable_size():
    with pytest.raises(InputError) as exc:
        AugMemAgent(4, {**HP, "image_size": 32}, train_switches("reference"))
    msg = str(exc.value)
    assert "image_size 32" in msg and "1x1 map" in msg and "allow_small_map" in msg
    smallest = int(msg.split("usable (>= 2x2) map is ")[1].split(" px")[0])
    ok = AugMemAgent(4, {**HP, "image_size": smallest}, train_switches("reference"))
    assert ok.front_map(smallest)[0] * ok.front_map(smallest)[1] >= 4 and ok.front_map(smallest - 1) < (2, 2)
    AugMemAgent(4, {**HP, "image_size": 32, "allow_small_map": True}, train_switches("reference"))  # override
