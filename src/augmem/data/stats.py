"""Summary figures of a dirmap (spec 2.6) and a check of them against expected values.

The original script only printed these; here they are returned as a dict (for a JSON file) and can be asserted.
"""
from __future__ import annotations

import math

import pandas as pd

from augmem.io import InputError

STAT_KEYS = [
    "n_images", "n_classes",
    "images_per_class_min", "images_per_class_max",
    "images_per_session_mean", "images_per_session_min", "images_per_session_max",
    "sessions_per_object_mean", "sessions_per_object_min", "sessions_per_object_max",
    "sessions_per_class_mean", "sessions_per_class_min", "sessions_per_class_max",
    "objects_per_class_min", "objects_per_class_max",
    "total_sessions", "sessions_after_filter",
]


def _num(x):
    """Plain Python number (int when integral) for JSON."""
    x = float(x)
    return int(x) if x.is_integer() else x


def dirmap_stats(df: pd.DataFrame, frames_per_session: int = 15) -> dict:
    """The figures of spec 2.6 for a dirmap with columns class, object, session, im_num.

    images per class; images per (class, object, session); distinct sessions per object; sessions per class (a
    session = one (class, object, session) group); distinct objects per class; total sessions; sessions whose max
    im_num is at least ``frames_per_session``.
    """
    missing = [c for c in ("class", "object", "session", "im_num") if c not in df.columns]
    if missing:
        raise InputError(f"dirmap lacks column(s) {missing}")
    if df.empty:
        raise InputError("dirmap is empty")
    per_class = df.groupby("class").size()
    per_session = df.groupby(["class", "object", "session"]).size()
    sess_per_obj = df.groupby(["class", "object"])["session"].nunique()
    sess_per_class = per_session.groupby(level="class").size()
    obj_per_class = df.groupby("class")["object"].nunique()
    max_im = df.groupby(["class", "object", "session"])["im_num"].max()
    stats = {
        "n_images": len(df),
        "n_classes": len(per_class),
        "images_per_class_min": per_class.min(), "images_per_class_max": per_class.max(),
        "images_per_session_mean": per_session.mean(), "images_per_session_min": per_session.min(),
        "images_per_session_max": per_session.max(),
        "sessions_per_object_mean": sess_per_obj.mean(), "sessions_per_object_min": sess_per_obj.min(),
        "sessions_per_object_max": sess_per_obj.max(),
        "sessions_per_class_mean": sess_per_class.mean(), "sessions_per_class_min": sess_per_class.min(),
        "sessions_per_class_max": sess_per_class.max(),
        "objects_per_class_min": obj_per_class.min(), "objects_per_class_max": obj_per_class.max(),
        "total_sessions": len(per_session),
        "sessions_after_filter": int((max_im >= frames_per_session).sum()),
    }
    return {k: _num(stats[k]) for k in STAT_KEYS}


def check_stats(stats: dict, expected: dict) -> None:
    """Raise InputError listing every key whose value differs from ``expected`` (or that is unknown)."""
    problems = []
    for key, want in expected.items():
        if key not in stats:
            problems.append(f"{key}: unknown statistic (known: {', '.join(STAT_KEYS)})")
            continue
        got = stats[key]
        if not math.isclose(float(got), float(want), rel_tol=1e-9, abs_tol=1e-9):
            problems.append(f"{key}: expected {float(want):g}, got {got}")
    if problems:
        raise InputError("dirmap statistics differ from the expected values: " + "; ".join(problems))


def check_dataset_classes(dirmap: pd.DataFrame, n_class: int, source: str = "dirmap") -> None:
    """InputError naming ``source`` and both numbers unless the dirmap holds exactly ``n_class`` classes (the
    dataset's ``n_class``: the network's outputs). More classes would give labels out of range when training
    starts; fewer are another dataset's numbers (e.g. CIFAR-100's 100 on a 10-class tree)."""
    found = pd.unique(dirmap["class"])
    n_class = int(n_class)
    if len(found) == n_class:
        return
    shown = sorted(found.tolist(), key=str)
    shown = f" {shown}" if len(shown) <= 20 else ""
    why = ("the network would have too few outputs for its labels" if len(found) > n_class
           else "the numbers of another dataset?")
    raise InputError(f"{source}: the dirmap holds {len(found)} classes{shown}, but the dataset's n_class is {n_class} "
                     f"({why}); set n_class: {len(found)} in the dataset entry")
