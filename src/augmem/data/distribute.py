"""Spread the massed iLab images into ``<class>/obj_<o>/sess_<s>/`` folders (spec 2.5), in one O(N) pass.

The original copied each image through a shell ``cp`` and rewrote paths with a full-table mask per image (O(N^2),
about 12 h). Here all new paths are computed at once; files are hard-linked when possible (same file system),
otherwise copied. The output folder is built in a temporary sibling and renamed into place only when complete.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path, PurePosixPath

import pandas as pd

from augmem.data.dirmap import check_im_paths
from augmem.io import InputError, atomic_path

MASSED_COLUMNS = ["class", "object", "session", "im_num", "im_path"]
STAGE = "distribute"  # the name in the output folder's marker (augmem.io.MARKER)


def distributed_paths(massed: pd.DataFrame) -> pd.Series:
    """New relative path of every row: ``<class>/obj_<object>/sess_<session>/<file name>``."""
    names = massed["im_path"].map(lambda p: PurePosixPath(p).name)
    return (massed["class"].astype(str) + "/obj_" + massed["object"].astype(str) + "/sess_"
            + massed["session"].astype(str) + "/" + names)


def check_folder_sizes(massed: pd.DataFrame, frames_per_session: int) -> None:
    """Every (class, object, session) over all classes x all object values x all session values of the file holds
    exactly ``frames_per_session`` rows (the original's assertion, run before anything is written)."""
    counts = massed.groupby(["class", "object", "session"]).size()
    full = pd.MultiIndex.from_product([sorted(massed["class"].unique()), sorted(massed["object"].unique()),
                                       sorted(massed["session"].unique())], names=["class", "object", "session"])
    counts = counts.reindex(full, fill_value=0)
    bad = counts[counts != frames_per_session]
    if len(bad):
        examples = ", ".join(f"{c}/obj_{o}/sess_{s}: {n}" for (c, o, s), n in bad.head(5).items())
        raise InputError(f"{len(bad)} folder(s) would not hold exactly {frames_per_session} images ({examples})")


def _place(src: Path, dst: Path, link: str) -> str:
    """Hard-link (``link='auto'``) or copy ``src`` to ``dst``; return what was done."""
    if link == "auto":
        try:
            os.link(src, dst)
            return "link"
        except OSError:
            pass  # another file system (EXDEV), or links not allowed: copy instead
    shutil.copy2(src, dst)
    return "copy"


def distribute_ilab(massed: pd.DataFrame, src_root: str | os.PathLike, out_root: str | os.PathLike,
                    link: str = "auto", frames_per_session: int = 15) -> pd.DataFrame:
    """Place every image of the massed dirmap under ``out_root`` and return the rewritten dirmap.

    ``massed`` is the massed CSV read back without ``index_col`` (so it carries ``Unnamed: 0``). Source files are
    ``<src_root>/<im_path>``. The returned frame is ``massed.reset_index()`` with im_path rewritten, i.e. columns
    index, Unnamed: 0, class, object, session, im_num, im_path, instance, ...; write it with its index.
    ``link``: 'auto' (hard link, falling back to a copy) or 'copy'. ``out_root`` must not overlap ``src_root`` and
    may only replace an earlier output of this step (see :func:`augmem.io.atomic_path`).
    """
    if link not in ("auto", "copy"):
        raise ValueError(f"link must be 'auto' or 'copy', not {link!r}")
    missing = [c for c in MASSED_COLUMNS if c not in massed.columns]
    if missing:
        raise InputError(f"massed iLab dirmap lacks column(s) {missing}")
    if massed.empty:
        raise InputError("massed iLab dirmap is empty")
    check_im_paths(massed, "massed iLab dirmap")
    check_folder_sizes(massed, frames_per_session)

    src_root = Path(src_root)
    new_paths = distributed_paths(massed)
    dup = new_paths[new_paths.duplicated()]
    if len(dup):
        raise InputError(f"two images would land on the same path {dup.iloc[0]}")
    sources = [src_root / p for p in massed["im_path"]]
    for src in sources:
        if not src.is_file():
            raise InputError(f"{src}: source image not found")

    with atomic_path(out_root, inputs=[src_root], stage=STAGE, kind="dir") as tmp:
        tmp.mkdir()
        for folder in sorted(set(p.rsplit("/", 1)[0] for p in new_paths)):
            (tmp / folder).mkdir(parents=True)
        for src, rel in zip(sources, new_paths):
            _place(src, tmp / rel, link)

    out = massed.reset_index()
    out["im_path"] = new_paths.to_numpy()
    return out
