"""The CUDA path (skipped without a GPU): every agent of the study trains through the loop on CUDA, with and without
bf16 autocast and channels_last; AugMem's fused memory read agrees with autograd on the GPU; a CUDA run's accuracies
stay close to the CPU run's. `benchmarks/gpu_check.sh` runs this file on a GPU machine."""
from __future__ import annotations

import json
import math

import pytest
import torch

import augmem.agents.augmem as augmem_module
from augmem.agents import get_agent_class
from augmem.agents.augmem import MemoryRead
from conftest import add_offline_filelists  # tests/conftest.py (tests/ is on sys.path)

from agents.test_augmem import published_attention_of_keys  # the published formula, tests/agents

from .test_loop import run_job

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

AUGMEM_HP = {"n_epoch_first_task": None, "memory_Nslots": 10, "memory_Nfeat": 8, "memory_size": 20,
             "freeze_feature_extract": True, "replay_coef": 5, "reg_coef": 1000, "mem_sparse": 5,
             "allow_small_map": True}
IMPLS = ["NormalNN", "Offline", "L2", "EWC", "EWCOnline", "SI", "MAS", "NaiveRehearsal", "GEM", "AGEM", "iCaRL",
         "AugMem"]


def run(impl, files, out, device, fidelity="reference", **hp_extra):
    """test_loop's job on ``device``, with loader workers (pinned memory and persistent workers on CUDA)."""
    if impl == "Offline" and not (files[1] / "offline").exists():
        add_offline_filelists(files[1])
    hp = {"n_workers": 2, **(AUGMEM_HP if impl == "AugMem" else {"memory_size": 12, "reg_coef": 1.0}), **hp_extra}
    run_job(get_agent_class(impl), files, out, hp=hp, fidelity=fidelity, device=device)
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("fast", [False, True], ids=["fp32", "amp+channels_last"])
def test_every_agent_trains_on_cuda(impl, fast, tiny_files, tmp_path):
    extra = {"amp": True, "channels_last": True} if fast else {}
    fidelity = "corrected" if impl in ("GEM", "NaiveRehearsal") else "reference"  # the real algorithms
    m = run(impl, tiny_files, tmp_path / "out", "cuda", fidelity, **extra)
    assert m["meta"]["device"].startswith("cuda")
    for path, accs in m["test_all"].items():
        assert len(accs) == 2 and all(0.0 <= a <= 100.0 for a in accs if not math.isnan(a)), (path, accs)


def test_cuda_accuracy_close_to_cpu(tiny_files, tmp_path):
    """fp32 on CUDA computes what the CPU computes, up to kernel rounding (and cuDNN's algorithm choice)."""
    a = run("NormalNN", tiny_files, tmp_path / "cpu", "cpu")
    b = run("NormalNN", tiny_files, tmp_path / "cuda", "cuda")
    for x, y in zip(a["test_all"]["acc"], b["test_all"]["acc"]):
        assert abs(x - y) <= 15.0, (a["test_all"], b["test_all"])


@pytest.mark.parametrize("rows", [1 << 17, 1024])
def test_memory_read_backward_on_cuda(rows, monkeypatch):
    monkeypatch.setattr(augmem_module, "ATTEND_ROWS_CUDA", rows)  # 1024: five chunks of keys
    torch.manual_seed(0)
    keys = torch.randn(5000, 8, dtype=torch.float64, device="cuda", requires_grad=True)
    mem = torch.randn(100, 8, dtype=torch.float64, device="cuda", requires_grad=True)
    w = torch.randn(5000, 8, dtype=torch.float64, device="cuda")
    ref = published_attention_of_keys(keys, mem, 5.0).matmul(mem)
    (ref * w).sum().backward()
    g_keys, g_mem = keys.grad.clone(), mem.grad.clone()
    keys.grad = mem.grad = None
    (MemoryRead.apply(keys, mem, 5.0) * w).sum().backward()
    assert torch.allclose(keys.grad, g_keys, rtol=1e-9, atol=1e-11)
    assert torch.allclose(mem.grad, g_mem, rtol=1e-9, atol=1e-11)


def test_cuda_determinism_report(tiny_files, tmp_path):
    """On CUDA, metrics.json names the GPU and says whether the run was deterministic: deterministic exactly when no
    op warned (deterministic algorithms and cuDNN determinism are on after seed_everything)."""
    m = run("NormalNN", tiny_files, tmp_path / "out", "cuda")
    meta = m["meta"]
    assert meta["device_name"] == torch.cuda.get_device_name(0)
    assert isinstance(meta["nondeterministic_ops"], list)
    assert meta["deterministic"] is (not meta["nondeterministic_ops"])
