"""Seeding, randomness by owner, and RNG state capture.

One training job = one run, seeded from the run number (the original seeded once per process, spec 12.14, so its run
r depended on runs 0..r-1).

Randomness by owner. A job's random numbers come from separate sources, so that how often a job evaluates, whether
it visualises or holds out a validation split, and how many loader workers it uses cannot change what it trains:

* the global RNGs (torch CPU and CUDA, NumPy, Python ``random``), seeded by :func:`seed_everything`: weight
  initialisation and dropout, i.e. only training consumes them;
* one ``torch.Generator`` per owner, seeded with :func:`derive_seed` ``(seed, owner)``: ``train`` (the base seed every
  training DataLoader iterator draws), ``eval`` (test and validation loaders), ``viz`` (the visualisation loader);
* ``replay``: the agents' own draws (the rehearsal reservoir's and A-GEM's ``randperm``, the shuffled replay loaders
  of naive rehearsal and iCaRL, AugMem's replay ``randint``) come from the agent's :class:`OwnedRandom` (a
  ``torch.Generator`` and a Python ``random.Random``), seeded by the loop with ``derive_seed(seed, "replay")``
  (:func:`set_replay_seed`); an agent used without the loop draws from :data:`DEFAULT_REPLAY_SEED`.

A DataLoader iterator draws its base seed from its ``generator`` (or, without one, from the global torch RNG) even
when it neither shuffles nor starts workers; loaders whose draw is never used (no shuffling, no workers) get a
:func:`throwaway_generator`.

The captured states hold only tensors, lists, ints, floats, strs and None, so a checkpoint holding them can be read
back with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import hashlib
import os
import random
from typing import Any

import numpy as np
import torch

OWNERS = ("train", "eval", "replay", "viz")


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed Python ``random``, NumPy's global RNG and torch (CPU and CUDA); ask for deterministic kernels.

    ``deterministic`` turns on ``torch.use_deterministic_algorithms(warn_only=True)`` and cuDNN determinism (the
    original set neither; CPU kernels are deterministic anyway for a fixed thread count). An op without a
    deterministic implementation then only warns; the training loop records such warnings in metrics.json
    (``meta.deterministic``, ``meta.nondeterministic_ops``).
    """
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def derive_seed(seed: int, owner: str) -> int:
    """The seed of ``owner``'s random numbers in the job seeded with ``seed``: the first 8 bytes of
    SHA-256(``"augmem:<seed>:<owner>"``), big-endian, as a non-negative 63-bit int. Stable across processes, Python
    versions and machines (unlike ``hash()``), and unrelated between owners and between seeds."""
    digest = hashlib.sha256(f"augmem:{int(seed)}:{owner}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


DEFAULT_REPLAY_SEED = derive_seed(0, "replay")
"""The replay seed of an agent the loop did not seed (unit tests): that of a job with seed 0."""


def owner_generator(seed: int, owner: str) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``derive_seed(seed, owner)``."""
    return torch.Generator().manual_seed(derive_seed(seed, owner))


def throwaway_generator() -> torch.Generator:
    """A fresh generator for a DataLoader whose base-seed draw is never used (no shuffling, no workers), so that
    iterating it leaves every other RNG alone."""
    return torch.Generator()


def _python_state(rng: random.Random | None = None) -> list:
    version, internal, gauss_next = (rng or random).getstate()
    return [int(version), torch.tensor(internal, dtype=torch.int64), gauss_next]


def _set_python_state(state: list, rng: random.Random | None = None) -> None:
    version, internal, gauss_next = state
    values = internal.tolist() if torch.is_tensor(internal) else internal
    (rng or random).setstate((int(version), tuple(int(v) for v in values), gauss_next))


class OwnedRandom:
    """An owner's random numbers: ``torch`` (a CPU ``torch.Generator``) and ``python`` (a ``random.Random``), both
    seeded with one seed. :meth:`state` / :meth:`load_state` capture and restore both (weights_only-loadable)."""

    def __init__(self, seed: int = DEFAULT_REPLAY_SEED):
        self.reseed(seed)

    def reseed(self, seed: int) -> None:
        self.seed = int(seed)
        self.torch = torch.Generator().manual_seed(self.seed)
        self.python = random.Random(self.seed)

    def state(self) -> dict[str, Any]:
        return {"seed": self.seed, "torch": self.torch.get_state(), "python": _python_state(self.python)}

    def load_state(self, state: dict[str, Any]) -> None:
        self.seed = int(state["seed"])
        self.torch.set_state(state["torch"])
        _set_python_state(state["python"], self.python)


_REPLAY_ATTR = "_replay_random"


def replay_random(agent) -> OwnedRandom:
    """The agent's replay randomness (created with :data:`DEFAULT_REPLAY_SEED` on first use)."""
    rr = agent.__dict__.get(_REPLAY_ATTR)
    if rr is None:
        rr = OwnedRandom(DEFAULT_REPLAY_SEED)
        setattr(agent, _REPLAY_ATTR, rr)
    return rr


def set_replay_seed(agent, seed: int) -> None:
    """Seed the agent's replay randomness (the loop passes ``derive_seed(job_seed, "replay")``)."""
    replay_random(agent).reseed(seed)


def rng_state(generators: dict[str, torch.Generator] | None = None) -> dict[str, Any]:
    """The state of every global RNG the training uses, and of the given owner ``generators``, as weights_only-loadable
    objects."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": _python_state(),
        "numpy": [str(name), torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss),
                  float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    if generators:
        state["generators"] = {k: g.get_state() for k, g in generators.items()}
    return state


def set_rng_state(state: dict[str, Any], generators: dict[str, torch.Generator] | None = None) -> None:
    """Restore what :func:`rng_state` captured (owner generators into the given ``generators``, by name)."""
    _set_python_state(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((str(name), keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    for k, g in (generators or {}).items():
        if k in state.get("generators", {}):
            g.set_state(state["generators"][k])
