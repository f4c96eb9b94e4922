"""One training job of an agent on the tiny on-disk stream (tests/conftest.py ``tiny_files``), through the loop:
what the external baselines' end-to-end and checkpoint/resume tests share."""
from __future__ import annotations

import json
from pathlib import Path

from augmem.train.fidelity import train_switches
from augmem.train.loop import run_stream
from augmem.train.seeding import seed_everything


def run_agent_job(cls, name: str, files, out: Path, hp: dict, fidelity: str, n_class: int = 4, **kw):
    """(metrics, agent) of ``cls`` trained on ``files`` = (image root, run folder) into ``out`` (seed 0)."""
    image_root, run_dir = files
    switches = train_switches(fidelity)
    seed_everything(0)
    agent = cls(n_class, hp, switches)
    meta = {"dataset": "tiny", "kind": "tiny", "scenario": "class_iid", "agent": name, "run": 0,
            "fidelity": fidelity, "seed": 0}
    return run_stream(agent, run_dir, image_root, out, hp=agent.hp, switches=switches, meta=meta, seed=0,
                      log=lambda m: None, **kw), agent


def metrics_without_timing(out: Path) -> dict:
    m = json.loads((out / "metrics.json").read_text())
    m.pop("timing")
    return m
