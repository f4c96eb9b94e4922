"""Balanced sampling of the Toybox and iLab dirmaps (spec 2.2 and 2.4), reproducing the published outputs exactly.

Both functions end with a balance check: when the data cannot give the requested numbers, they raise InputError
("dataset too small for the requested balance") with the offending counts instead of writing an unbalanced set.
"""
from __future__ import annotations

import random

import pandas as pd

from augmem.data.dirmap import DIRMAP_COLUMNS, reindex_ilab
from augmem.io import InputError

_KEYS = ["class", "object", "session", "im_num"]


def mirror_pad(session: pd.DataFrame, frames_per_session: int) -> pd.DataFrame:
    """Pad one short session (frames 1..n, in im_num order) to 1,2,..,n,n-1,..,1 truncated to ``frames_per_session``.

    Spec 2.2 step 3: the session reversed without the row whose im_num equals n (the session length) is appended,
    im_num is renumbered 1..2n-1 and rows beyond ``frames_per_session`` are dropped. Rows keep all other columns
    (``Unnamed: 0`` and im_path included), so the first n rows are exact copies of the originals.
    """
    n = len(session)
    back = session.iloc[::-1]
    back = back[back["im_num"] != n]
    padded = pd.concat([session, back])
    padded = padded.assign(im_num=range(1, len(padded) + 1))
    return padded[padded["im_num"] <= frames_per_session]


def _too_small(what: str) -> InputError:
    return InputError(f"dataset too small for the requested balance: {what}")


def _check_balance(df: pd.DataFrame, n_objects: int, n_sessions: int, n_frames: int) -> None:
    """Every class has n_objects objects, every object n_sessions sessions, every session n_frames frames."""
    if df.empty:
        raise _too_small("no rows left after sampling")
    problems = []
    per_class = df.groupby("class")["object"].nunique()
    bad = per_class[per_class != n_objects]
    if len(bad):
        problems.append(f"objects per class should be {n_objects}, got " +
                        ", ".join(f"class {k}: {v}" for k, v in bad.items()))
    per_object = df.groupby(["class", "object"])["session"].nunique()
    bad = per_object[per_object != n_sessions]
    if len(bad):
        problems.append(f"sessions per object should be {n_sessions}, got {len(bad)} object(s) with "
                        f"{sorted(set(bad.tolist()))} (first: class {bad.index[0][0]} object {bad.index[0][1]})")
    per_session = df.groupby(["class", "object", "session"]).size()
    bad = per_session[per_session != n_frames]
    if len(bad):
        k = bad.index[0]
        problems.append(f"frames per session should be {n_frames}, got {len(bad)} session(s) with "
                        f"{sorted(set(bad.tolist()))} (first: class {k[0]} object {k[1]} session {k[2]})")
    if problems:
        raise _too_small("; ".join(problems))


def balance_toybox(unbalanced: pd.DataFrame, objects_per_class: int = 30, sessions_per_object: int = 10,
                   frames_per_session: int = 15) -> pd.DataFrame:
    """Balanced Toybox dirmap from the unbalanced one (spec 2.2; deterministic).

    ``unbalanced`` is the CSV read back *without* ``index_col`` (its ``Unnamed: 0`` column takes part in duplicate
    detection, as in the original). Steps: keep im_num 1..frames_per_session; mirror-pad short sessions; drop
    objects with fewer than sessions_per_object sessions; drop object number ``objects_per_class`` in classes that
    still have ``objects_per_class`` objects; renumber objects 1..K per class. Objects numbered above
    ``objects_per_class`` are ignored first (the original dirmap script only visited objects 01..30).

    Returns columns class, object, session, im_num, im_path with the *non-reset* index (write it with the index).
    The result must have objects_per_class-1 objects per class, sessions_per_object sessions per object and
    frames_per_session frames per session, else InputError.
    """
    missing = [c for c in DIRMAP_COLUMNS if c not in unbalanced.columns]
    if missing:
        raise InputError(f"Toybox dirmap lacks column(s) {missing}")
    df = unbalanced[unbalanced["object"] <= objects_per_class]
    df = df[(df["im_num"] >= 1) & (df["im_num"] <= frames_per_session)]

    # Mirror-pad short sessions, then drop the original rows that the padding repeats.
    df = df.sort_values(_KEYS, kind="stable")
    groups = df.groupby(["class", "object", "session"], sort=True)
    short = groups["im_num"].transform("max") < frames_per_session
    pads = [mirror_pad(g, frames_per_session) for _, g in df[short].groupby(["class", "object", "session"])]
    if pads:
        df = pd.concat([df, *pads])
    df = df.drop_duplicates()
    df = df.sort_values(_KEYS, kind="stable").reset_index(drop=True)

    # Objects with too few sessions go; then object number objects_per_class in classes that still have them all.
    n_sess = df.groupby(["class", "object"])["session"].transform("nunique")
    df = df[n_sess >= sessions_per_object]
    n_obj = df.groupby("class")["object"].transform("nunique")
    df = df[~((n_obj == objects_per_class) & (df["object"] == objects_per_class))]

    # Renumber objects 1..K within each class (ngroup over (class, object) minus the class minimum, plus 1).
    group_id = df.groupby(["class", "object"]).ngroup()
    df = df.assign(object=group_id - group_id.groupby(df["class"]).transform("min") + 1)
    out = df[DIRMAP_COLUMNS]
    _check_balance(out, objects_per_class - 1, sessions_per_object, frames_per_session)
    return out


def ilab_block_starts(massed: pd.DataFrame, frames_per_session: int, seed: int) -> pd.Series:
    """Start im_num of the random contiguous block of each (class, object, session) group (spec 2.4 step 6).

    ``random.seed(seed)``, then one ``random.randint(1, max_im_num - frames_per_session + 1)`` per group, in sorted
    group order. Returned per row (aligned with ``massed``).
    """
    random.seed(seed)
    keys = ["class", "object", "session"]
    max_im = massed.groupby(keys, sort=True)["im_num"].max()
    starts = pd.Series([random.randint(1, int(m) - frames_per_session + 1) for m in max_im.tolist()],
                       index=max_im.index, name="start")
    return massed[keys].join(starts, on=keys)["start"]


def balance_ilab(dirmap_all: pd.DataFrame, objects_per_class: int = 28, sessions_per_object: int = 8,
                 frames_per_session: int = 15, seed: int = 0) -> pd.DataFrame:
    """Balanced ("massed") iLab dirmap from the full one (spec 2.4).

    Remove class ``semi``; keep sessions with at least frames_per_session images; keep objects with at least
    sessions_per_object sessions; keep the first sessions_per_object sessions and first objects_per_class objects;
    pick a random contiguous block of frames_per_session images per session (CPython ``random`` seeded ``seed``,
    one draw per group in sorted order); re-index after each filter. Returns the re-indexed frame (write it with
    its index). Raises InputError when the result is not exactly balanced.
    """
    df = reindex_ilab(dirmap_all[dirmap_all["class"].astype(str) != "semi"])
    max_im = df.groupby(["class", "object", "session"])["im_num"].transform("max")
    df = reindex_ilab(df[max_im >= frames_per_session])
    max_sess = df.groupby(["class", "object"])["session"].transform("max")
    df = reindex_ilab(df[max_sess >= sessions_per_object])
    df = df[(df["session"] <= sessions_per_object) & (df["object"] <= objects_per_class)]
    if df.empty:
        raise _too_small("no session has enough images / no object has enough sessions")
    start = ilab_block_starts(df, frames_per_session, seed)
    df = df[(df["im_num"] >= start) & (df["im_num"] < start + frames_per_session)]
    out = reindex_ilab(df)
    _check_balance(out, objects_per_class, sessions_per_object, frames_per_session)
    return out
