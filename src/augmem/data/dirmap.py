"""Dirmaps: one row per image with its class, object, session and frame number (spec sections 1 and 2).

Every builder walks a raw dataset folder and returns a DataFrame; nothing here opens an image. ``im_path`` is always
a relative POSIX path inside the walked root. The column order and sort order are those of the published CSVs, which
the stages write *with* their index (the index becomes the ``Unnamed: 0`` column downstream).
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path, PurePosixPath, PureWindowsPath

import pandas as pd

from augmem.io import InputError, read_csv_checked

# Defaults shipped in the repository (copies of the published maps): <repo>/params for the editable install,
# else ./params (the stages run from the repository root).
PARAMS_DIR = Path(__file__).resolve().parents[3] / "params"
if not PARAMS_DIR.is_dir():  # pragma: no cover - non-editable install
    PARAMS_DIR = Path("params")
TOYBOX_CLASSES_CSV = PARAMS_DIR / "toybox_classes.csv"
TOYBOX_SESSIONS_CSV = PARAMS_DIR / "toybox_sessions.csv"
ILAB_CLASSES_CSV = PARAMS_DIR / "ilab2mlight_classes.csv"

DIRMAP_COLUMNS = ["class", "object", "session", "im_num", "im_path"]
ILAB_COLUMNS = ["class", "object", "session", "im_num", "im_path",
                "instance", "background", "camera", "rotation", "lighting"]


# ----------------------------------------------------------------------------------------------- path safety
def unsafe_im_path(value) -> str | None:
    """Why ``value`` is not a safe relative image path (None when it is fine)."""
    if not isinstance(value, str) or value == "":
        return "im_path is empty"
    if "\\" in value or PurePosixPath(value).is_absolute() or PureWindowsPath(value).anchor:
        return f"im_path {value!r} is not a relative POSIX path"
    if ".." in PurePosixPath(value).parts:
        return f"im_path {value!r} escapes the image root ('..')"
    return None


def check_im_paths(df: pd.DataFrame, source: str | os.PathLike) -> None:
    """Raise InputError naming ``source`` and the CSV line of the first unsafe ``im_path`` value."""
    for pos, value in enumerate(df["im_path"].tolist()):
        why = unsafe_im_path(value)
        if why:
            raise InputError(f"{source}: line {pos + 2} (row {df.index[pos]}): {why}")


def read_dirmap(path: str | os.PathLike, required: list[str] | None = None, **kwargs) -> pd.DataFrame:
    """Read a dirmap CSV (kwargs go to ``pd.read_csv``), check its columns and that every im_path is safe."""
    required = list(DIRMAP_COLUMNS if required is None else required)
    df = read_csv_checked(path, required, **kwargs)
    if "im_path" in df.columns:
        check_im_paths(df, path)
    return df


def _sort(df: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Stable sort and reset the index (ties keep their input order, which the builders make deterministic)."""
    return df.sort_values(by, kind="stable").reset_index(drop=True)


def _read_map(path: str | os.PathLike, key: str, value: str) -> dict[str, int]:
    df = read_csv_checked(path, [key, value])
    if df[key].duplicated().any():
        raise InputError(f"{path}: duplicate {key} value(s) {sorted(df.loc[df[key].duplicated(), key])}")
    try:
        values = [int(v) for v in df[value]]
    except (TypeError, ValueError) as exc:
        raise InputError(f"{path}: column {value} must hold integers ({exc})") from exc
    return dict(zip(df[key].astype(str), values))


# ------------------------------------------------------------------------------------------------------ CORe50
_CORE50_NAME = re.compile(r"C_(\d{2})_(\d{2})_(\d{3})\.png")
_CORE50_SESSION = re.compile(r"s(\d+)")
_CORE50_OBJECT = re.compile(r"o(\d+)")


def core50_dirmap(root: str | os.PathLike) -> pd.DataFrame:
    """Dirmap of ``<root>/core50_128x128/s*/o*/C_<SS>_<OO>_<FFF>.png`` (spec 1.1, quirk 8).

    class = ceil(object / 5); im_num = FFF; im_path relative to ``core50_128x128``. The file name must agree with
    its folders. Sorted by class, object, session, im_num; index reset.
    """
    base = Path(root) / "core50_128x128"
    if not base.is_dir():
        raise InputError(f"{base}: CORe50 folder not found")
    rows = []
    for f in sorted(base.glob("s*/o*/*.png")):
        sdir, odir = f.parent.parent.name, f.parent.name
        ms, mo, mf = _CORE50_SESSION.fullmatch(sdir), _CORE50_OBJECT.fullmatch(odir), _CORE50_NAME.fullmatch(f.name)
        if not (ms and mo and mf):
            raise InputError(f"{f}: not a CORe50 frame (expected s<S>/o<O>/C_<SS>_<OO>_<FFF>.png)")
        session, obj = int(ms.group(1)), int(mo.group(1))
        if (int(mf.group(1)), int(mf.group(2))) != (session, obj):
            raise InputError(f"{f}: file name says session {int(mf.group(1))} object {int(mf.group(2))}, "
                             f"folders say session {session} object {obj}")
        if obj < 1:
            raise InputError(f"{f}: object number must be at least 1")
        rows.append((math.ceil(obj / 5), obj, session, int(mf.group(3)), f"{sdir}/{odir}/{f.name}"))
    if not rows:
        raise InputError(f"{base}: no frames found (expected s*/o*/C_*.png)")
    return _sort(pd.DataFrame(rows, columns=DIRMAP_COLUMNS), ["class", "object", "session", "im_num"])


# ------------------------------------------------------------------------------------------------------ Toybox
_TOYBOX_FOLDER = re.compile(r"(?P<category>.+)_(?P<object>\d+)_pivothead")


def toybox_dirmap(frames_root: str | os.PathLike,
                  classes_csv: str | os.PathLike = TOYBOX_CLASSES_CSV,
                  sessions_csv: str | os.PathLike = TOYBOX_SESSIONS_CSV) -> pd.DataFrame:
    """Unbalanced Toybox dirmap of ``<frames_root>/<supercat>/<category>_<NN>_pivothead/*.png`` (spec 2.1 steps 3-4).

    A frame ``<folder>_<transformation>_<k>.png`` becomes {class (from the category), object = NN, session (from the
    transformation), im_num = k, im_path relative to frames_root}. Frames of transformations not in ``sessions_csv``
    (present, absent) are skipped. The supercategory folder is whatever is on disk. Sorted by class, object,
    session, im_num; index reset.

    As in the original, only the last two ``_`` tokens of a frame name are parsed; the rest of the name is not
    checked against the folder. The published data rely on this: the folder ``cup_21_pivothead`` holds frames named
    ``truck_21_pivothead_<transformation>_<k>.png`` and they count as cup object 21.
    """
    root = Path(frames_root)
    if not root.is_dir():
        raise InputError(f"{root}: frames folder not found")
    classes = _read_map(classes_csv, "class", "index")
    sessions = _read_map(sessions_csv, "transformation", "session_index")
    rows = []
    for f in sorted(root.glob("*/*/*.png")):
        folder = f.parent.name
        mfold = _TOYBOX_FOLDER.fullmatch(folder)
        if not mfold:
            raise InputError(f"{f.parent}: not a Toybox object folder (expected <category>_<NN>_pivothead)")
        category = mfold.group("category")
        if category not in classes:
            raise InputError(f"{f.parent}: category {category!r} is not in {classes_csv}")
        tokens = f.stem.split("_")
        if len(tokens) < 2 or not tokens[-2] or not tokens[-1].isdigit():
            raise InputError(f"{f}: not a Toybox frame (expected <video stem>_<transformation>_<k>.png)")
        transformation = tokens[-2]
        if transformation not in sessions:
            continue
        rows.append((classes[category], int(mfold.group("object")), sessions[transformation], int(tokens[-1]),
                     f.relative_to(root).as_posix()))
    if not rows:
        raise InputError(f"{root}: no Toybox frames of a known transformation found")
    return _sort(pd.DataFrame(rows, columns=DIRMAP_COLUMNS), ["class", "object", "session", "im_num"])


# -------------------------------------------------------------------------------------------------------- iLab
_ILAB_NAME = re.compile(r"(?P<cls>[^-]+)-i(?P<instance>\d+)-b(?P<background>\d+)-c(?P<camera>\d+)"
                        r"-r(?P<rotation>\d+)-l(?P<lighting>\d+)-[^/]*\.jpg")


def parse_ilab_name(name: str) -> dict:
    """Fields of ``<class>-i<inst>-b<bg>-c<cam>-r<rot>-l<light>-<more>.jpg`` (spec 1.3; a field after -l is required,
    as in the original parser). Raises ValueError when the name does not parse."""
    m = _ILAB_NAME.fullmatch(name)
    if not m:
        raise ValueError(name)
    out = {"class": m.group("cls")}
    for key in ("instance", "background", "camera", "rotation", "lighting"):
        out[key] = int(m.group(key))
    return out


def reindex_ilab(df: pd.DataFrame) -> pd.DataFrame:
    """The iLab re-index helper (spec 2.3): sort, dense object/session ranks, running im_num, fixed column order.

    object = rank of the instance within its class; session = rank of the background within (class, instance);
    im_num = 1-based count within (class, object, session) in (camera, rotation, lighting) order. Other columns
    (such as ``Unnamed: 0``) are dropped; the index is reset.
    """
    need = ["class", "instance", "background", "camera", "rotation", "lighting", "im_path"]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise InputError(f"iLab dirmap lacks column(s) {missing}")
    out = _sort(df[need].copy(), ["class", "instance", "background", "camera", "rotation", "lighting"])
    out["object"] = out.groupby("class")["instance"].rank(method="dense").astype("int64")
    out["session"] = out.groupby(["class", "instance"])["background"].rank(method="dense").astype("int64")
    out["im_num"] = out.groupby(["class", "object", "session"]).cumcount() + 1
    return out[ILAB_COLUMNS].reset_index(drop=True)


def ilab2mlight_dirmap(root: str | os.PathLike) -> pd.DataFrame:
    """Dirmap of every ``<root>/train_img/*.jpg`` (spec 2.3), re-indexed by :func:`reindex_ilab`.

    ``class`` stays the file-name prefix (the published script never applies the class-index CSV).
    """
    base = Path(root) / "train_img"
    if not base.is_dir():
        raise InputError(f"{base}: iLab image folder not found")
    rows = []
    for f in sorted(base.glob("*.jpg")):
        try:
            fields = parse_ilab_name(f.name)
        except ValueError:
            raise InputError(f"{f}: iLab file name does not parse "
                             "(expected <class>-i<inst>-b<bg>-c<cam>-r<rot>-l<light>-<more>.jpg)") from None
        fields["im_path"] = f"train_img/{f.name}"
        rows.append(fields)
    if not rows:
        raise InputError(f"{base}: no .jpg images found")
    return reindex_ilab(pd.DataFrame(rows))


# ------------------------------------------------------------------------------------------ class folders (CIFAR-100)
def class_folders_dirmap(root: str | os.PathLike) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Dirmap and class table of a class-folder tree ``<root>/{train,test}/<class>/*.png`` (layout ``class_folders``:
    the cifar2png layout of CIFAR-100, spec 2.7, or any user's own tree with any number of classes).

    Returns (dirmap with columns class, object, session, im_path, im_num; classes with columns class, label).
    session 0 = train, 1 = test; object = 0; sorted by class, object, session, im_path; im_num = 1-based count
    within (class, object, session). Labels are the sorted position of the train class folders.
    """
    root = Path(root)
    train = root / "train"
    if not train.is_dir():
        raise InputError(f"{train}: train folder of the class-folder tree not found "
                         "(expected <root>/train/<class>/*.png and <root>/test/<class>/*.png)")
    names = sorted(p.name for p in train.iterdir() if p.is_dir())
    if not names:
        raise InputError(f"{train}: no class folders found")
    classes = pd.DataFrame({"class": names, "label": range(len(names))})
    rows = []
    for session, split in enumerate(["train", "test"]):
        split_dir = root / split
        if not split_dir.is_dir():
            raise InputError(f"{split_dir}: {split} folder of the class-folder tree not found")
        for f in sorted(split_dir.glob("*/*.png")):
            if f.parent.name not in names:
                raise InputError(f"{f}: class {f.parent.name!r} has no folder under {train}")
            rows.append((f.parent.name, 0, session, f"{split}/{f.parent.name}/{f.name}"))
    if not rows:
        raise InputError(f"{root}: no PNG images found under train/<class>/ and test/<class>/")
    df = _sort(pd.DataFrame(rows, columns=["class", "object", "session", "im_path"]),
               ["class", "object", "session", "im_path"])
    df["im_num"] = df.groupby(["class", "object", "session"]).cumcount() + 1
    return df, classes


cifar100_dirmap = class_folders_dirmap  # the CIFAR-100 name of the same reader
