"""AugMem health: is the memory carrying hypotheses, or has it collapsed? (README, "AugMem health")

After every task the loop asks AugMem for these figures on the test images of the classes seen so far:

* ``map`` (h, w) and ``keys_per_image`` = h * w * G at the cut (G = channels / memory_Nfeat);
* ``max_attention_mean`` / ``max_attention_std``: the attention of each key's most attended slot, over all keys;
  ``uniform_key_fraction``: the share of keys whose most attended slot gets less than ``UNIFORM_RATIO / S`` (such a
  key reads about the mean slot; all-zero post-ReLU key groups attend every slot exactly equally);
* ``slots_used``: distinct most-attended slots over all keys and images; ``slots_per_class``: the same per class;
* ``distinct_codes``: distinct slot codes (an image's code = the most attended slot of each of its keys, the
  hypothesis AugMem stores) among ``n_images`` images;
* ``shared_code_fraction``: the fraction of the newest task's test images whose code equals the code of some test
  image of an earlier task's class (None after the first task).

Two collapsed regimes were measured (issue "AugMem health"); :func:`verdict` names them:

* **shared codes**: too few keys (a 1x1 map at 32 px: 4 keys per image) from a front whose keys are all alike, so the
  attention is nearly one-hot on a handful of slots and almost every new image gets an old class's exact code
  (99-100 %, against 0-14 % at 64 px where AugMem beats fine-tuning). Replay then trains the shared back layers to
  map those very reads to old labels. Threshold: ``shared_code_fraction >= SHARED_CODES``.
* **uniform reads**: a weak front (small key norms) makes the attention nearly uniform (max attention 0.003-0.006 over
  1,000 slots), so every read is about the mean slot. Threshold: ``max_attention_mean < UNIFORM_RATIO / S`` or
  ``uniform_key_fraction >= UNIFORM_KEYS`` (most keys read the mean slot).

A verdict is a warning, not an error: the run is valid, its memory path just does not do what the paper is about.
"""
from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch

SHARED_CODES = 0.5  # fraction of the newest task's test images with an old class's exact code
UNIFORM_RATIO = 10.0  # mean max attention below 10x the uniform share 1/S (the weak front: 3-6x): reads ~ the mean slot
UNIFORM_KEYS = 0.9  # share of (nearly) uniform keys above which the reads carry no hypothesis
MIN_MAP_LOCATIONS = 4  # a front map smaller than 2x2 cannot carry hypotheses (the 1x1 case collapses)


def uniform_threshold(n_slots: int) -> float:
    """Max attention below which a key reads about the mean slot: UNIFORM_RATIO / S (at most 0.5 for tiny S)."""
    return min(UNIFORM_RATIO / max(int(n_slots), 1), 0.5)


def _code_hash(row: np.ndarray) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(row, dtype=np.int32).tobytes(), digest_size=12).digest()


class HealthAccumulator:
    """Collects, batch by batch, what :func:`summarise` needs (code hashes, not codes: a 224 px code has 10,816
    slots per image)."""

    def __init__(self, n_slots: int):
        self.n_slots = int(n_slots)
        self.labels: list[int] = []
        self.codes: list[bytes] = []
        self.slot_count = torch.zeros(self.n_slots, dtype=torch.int64)
        self.per_class: dict[int, torch.Tensor] = {}
        self.att_sum = 0.0
        self.att_sq = 0.0
        self.att_n = 0
        self.att_uniform = 0
        self.map: tuple[int, int] | None = None
        self.keys_per_image = 0

    def add(self, top1: torch.Tensor, max_att: torch.Tensor, y: torch.Tensor) -> None:
        """``top1`` (B, h, w, G) most attended slot per key, ``max_att`` its attention, ``y`` (B,) labels."""
        b, h, w, g = top1.shape
        self.map, self.keys_per_image = (h, w), h * w * g
        flat = top1.reshape(b, -1).cpu()
        att = max_att.double().cpu()
        self.att_sum += float(att.sum())
        self.att_sq += float((att * att).sum())
        self.att_n += att.numel()
        self.att_uniform += int((att < uniform_threshold(self.n_slots)).sum())
        self.slot_count += torch.bincount(flat.reshape(-1), minlength=self.n_slots)
        rows = flat.numpy()
        for k, lab in enumerate(torch.as_tensor(y).tolist()):
            self.labels.append(int(lab))
            self.codes.append(_code_hash(rows[k]))
            used = self.per_class.setdefault(int(lab), torch.zeros(self.n_slots, dtype=torch.bool))
            used[flat[k]] = True

    def summarise(self, new_labels: list[int], old_labels: list[int]) -> dict[str, Any]:
        mean = self.att_sum / self.att_n if self.att_n else float("nan")
        var = max(self.att_sq / self.att_n - mean * mean, 0.0) if self.att_n else float("nan")
        new, old = set(new_labels), set(old_labels)
        old_codes = {c for c, lab in zip(self.codes, self.labels) if lab in old}
        newest = [c for c, lab in zip(self.codes, self.labels) if lab in new]
        shared = (sum(c in old_codes for c in newest) / len(newest)) if (old and newest) else None
        return {
            "map": list(self.map) if self.map else None,
            "keys_per_image": int(self.keys_per_image),
            "n_images": len(self.labels),
            "max_attention_mean": mean,
            "max_attention_std": var ** 0.5,
            "uniform_key_fraction": self.att_uniform / self.att_n if self.att_n else float("nan"),
            "slots_used": int((self.slot_count > 0).sum()),
            "n_slots": self.n_slots,
            "slots_per_class": {str(c): int(v.sum()) for c, v in sorted(self.per_class.items())},
            "distinct_codes": len(set(self.codes)),
            "shared_code_fraction": shared,
        }


def verdict(health: list[dict[str, Any]]) -> dict[str, Any]:
    """{"healthy": bool, "regimes": [...], "message": str} over a run's per-task health figures."""
    regimes, notes = [], []
    shared = [(t, h["shared_code_fraction"]) for t, h in enumerate(health) if h.get("shared_code_fraction") is not None]
    worst = max(shared, key=lambda x: x[1]) if shared else None
    if worst is not None and worst[1] >= SHARED_CODES:
        regimes.append("shared_codes")
        notes.append(f"{100 * worst[1]:.0f} % of task {worst[0] + 1}'s test images have an earlier class's exact slot "
                     f"code (threshold {100 * SHARED_CODES:.0f} %): too few or too similar keys "
                     f"({health[worst[0]]['keys_per_image']} keys per image, map {health[worst[0]]['map']})")
    uniform = [(t, h) for t, h in enumerate(health)
               if h.get("max_attention_mean") is not None and h["n_slots"]
               and (h["max_attention_mean"] < uniform_threshold(h["n_slots"])
                    or (h.get("uniform_key_fraction") or 0.0) >= UNIFORM_KEYS)]
    if uniform:
        t, h = uniform[-1]
        regimes.append("uniform_reads")
        notes.append(f"after task {t + 1} the mean max attention is {h['max_attention_mean']:.4f} and "
                     f"{100 * h['uniform_key_fraction']:.0f} % of the keys attend every slot about equally (max below "
                     f"{UNIFORM_RATIO:g} / {h['n_slots']} slots): reads are about the mean slot (weak front)")
    healthy = not regimes
    msg = ("AugMem memory healthy" if healthy else "AugMem memory collapsed: " + "; ".join(notes))
    return {"healthy": healthy, "regimes": regimes, "message": msg}
