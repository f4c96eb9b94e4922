"""Per-task checkpoints so that a killed training job resumes from its last finished task.

``checkpoint.pt`` in the run's output folder holds a config fingerprint, the next task index, the agent's
``checkpoint_state()``, the RNG state and the partial metrics. It is written atomically after every finished task,
read with ``torch.load(weights_only=True)``, ignored (and later replaced) when its fingerprint differs from the
current configuration, and deleted once ``metrics.json`` is written.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable

import torch

from augmem.io import atomic_path

CHECKPOINT_NAME = "checkpoint.pt"


def file_digest(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fingerprint(config: dict[str, Any]) -> str:
    """A stable hash of a JSON-able configuration (hyperparameters, switches, inputs, seed, ...)."""
    text = json.dumps(config, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def checkpoint_path(out_dir: str | os.PathLike) -> Path:
    return Path(out_dir) / CHECKPOINT_NAME


def save_checkpoint(out_dir: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` (must contain ``fingerprint``) atomically to ``<out_dir>/checkpoint.pt``."""
    path = checkpoint_path(out_dir)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def load_checkpoint(out_dir: str | os.PathLike, expected_fingerprint: str,
                    log: Callable[[str], None] = print) -> dict[str, Any] | None:
    """The checkpoint in ``out_dir`` if it exists and matches ``expected_fingerprint``, else None (with a log line)."""
    path = checkpoint_path(out_dir)
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated/foreign file: start over rather than fail
        log(f"checkpoint {path} cannot be read ({exc}); starting over")
        return None
    if not isinstance(state, dict) or state.get("fingerprint") != expected_fingerprint:
        log(f"checkpoint {path} belongs to a different configuration; starting over")
        return None
    return state


def remove_checkpoint(out_dir: str | os.PathLike) -> None:
    path = checkpoint_path(out_dir)
    if path.exists():
        path.unlink()
