"""Task filelists: split a dirmap into train/test and cut the training stream into tasks (spec section 3).

Pure functions on DataFrames. ``reference`` fidelity reproduces the original ``task_setup.py`` byte for byte: it makes
the same random calls in the same order (a ``RandomState(run)`` used exactly like the original's
``np.random.seed(run)`` + ``np.random.shuffle``, including the in-place shuffle of the offline prefix view, and
pandas' ``sample(frac=1, random_state=run)``) and keeps its quirks (spec 12.2, 12.3). ``corrected`` fixes the quirks
named in :mod:`augmem.data.fidelity` and keeps everything else, labels by first appearance included.

Row selection works on positional index arrays into ``train``; rows are grouped into instances once per frame
instead of filtering the whole frame per instance, so all runs of a dataset take seconds.
"""
from __future__ import annotations

import csv
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from augmem.data import layouts
from augmem.data.fidelity import DataSwitches, data_switches
from augmem.data.layouts import CORE50_FIRST_FRAME, CORE50_FRAMES, SCENARIOS  # noqa: F401 (re-exported)
from augmem.data.stats import check_dataset_classes
from augmem.io import InputError, atomic_path, check_outputs, read_csv_checked

REQUIRED_COLUMNS = ["class", "object", "session", "im_num", "im_path"]
STAGE = "filelists"  # the name in each run folder's output marker (augmem.io.MARKER)

_WHITESPACE = re.compile(r"\s")


@dataclass
class RunFilelists:
    """One run folder's content: per-task frames (with ``task`` and ``label``), labelled test frame, train_all."""

    tasks: list[pd.DataFrame]
    test: pd.DataFrame
    train_all: pd.DataFrame


# --------------------------------------------------------------------------------------------------------------------
# Input


def validate_dirmap(dirmap: pd.DataFrame, source: str = "dirmap") -> pd.DataFrame:
    """Check a dirmap read without index_col; raise InputError naming ``source`` and the row when it is unusable.

    Rows are numbered from 0 (data rows); the CSV line is row + 2 (one header line).
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in dirmap.columns]
    if missing:
        raise InputError(f"{source}: missing column(s) {missing}; found {list(dirmap.columns)}")
    for col in ("task", "label"):
        if col in dirmap.columns:
            raise InputError(f"{source}: column {col!r} is reserved for the task filelists")
    if dirmap.empty:
        raise InputError(f"{source}: no rows")
    for col in REQUIRED_COLUMNS:
        na = dirmap[col].isna().to_numpy()
        if na.any():
            i = int(np.flatnonzero(na)[0])
            raise InputError(f"{source}: row {i} (line {i + 2}): empty {col!r}")
    for col in ("object", "session", "im_num"):
        if not pd.api.types.is_integer_dtype(dirmap[col]):
            bad = pd.to_numeric(dirmap[col], errors="coerce")
            bad = bad.isna() | (bad % 1 != 0)
            i = int(np.flatnonzero(bad.to_numpy())[0]) if bad.any() else 0
            raise InputError(
                f"{source}: row {i} (line {i + 2}): column {col!r} must hold integers, got {dirmap[col].iloc[i]!r}"
            )
    for i, path in enumerate(dirmap["im_path"].astype(str).tolist()):
        problem = _path_problem(path)
        if problem:
            raise InputError(f"{source}: row {i} (line {i + 2}): im_path {path!r} {problem}")
    return dirmap


def _path_problem(path: str) -> str | None:
    """Why an im_path cannot go into a filelist (None if it can): paths are relative to the image root."""
    if not path:
        return "is empty"
    if path.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", path):
        return "is absolute; im_path must be relative to the image root"
    if ".." in re.split(r"[/\\]", path):
        return "contains '..'; im_path must stay inside the image root"
    if _WHITESPACE.search(path):
        return "contains whitespace; filelist lines are split on whitespace"
    return None


def read_dirmap(path: str | os.PathLike) -> pd.DataFrame:
    """Read a dirmap CSV as the original did (no index_col: the old index becomes column ``Unnamed: 0``).

    Column names follow the original's pandas (1.1): see :func:`original_column_names`.
    """
    dirmap = read_csv_checked(path, REQUIRED_COLUMNS)
    names = original_column_names(path)
    if names is not None and len(names) == dirmap.shape[1]:
        dirmap.columns = names
    return validate_dirmap(dirmap, str(path))


def original_column_names(path: str | os.PathLike) -> list[str] | None:
    """Header names as pandas 1.1 gave them: an empty field i becomes ``Unnamed: i``, then repeated names get
    ``.1``, ``.2``, ... in column order.

    Modern pandas renames the unnamed column first, so for the iLab dirmap (header ``,Unnamed: 0,class,...``) it
    yields ``Unnamed: 0.1, Unnamed: 0`` where the original had ``Unnamed: 0, Unnamed: 0.1``: the same columns in
    the same order, but a different ``train_all.txt`` header. None if the header cannot be read.
    """
    try:
        with open(path, newline="") as fh:
            header = next(csv.reader(fh), None)
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    if not header:
        return None
    names: list[str] = []
    counts: dict[str, int] = {}
    for i, name in enumerate(header):
        name = name or f"Unnamed: {i}"
        count = counts.get(name, 0)
        while count > 0:
            counts[name] = count + 1
            name = f"{name}.{count}"
            count = counts.get(name, 0)
        names.append(name)
        counts[name] = count + 1
    return names


def train_test_split(
    dirmap: pd.DataFrame, layout: str, test_sess: Iterable[int], sample_rate: int = 20, source: str = "dirmap"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a dirmap into (train, test) by session, both in dirmap order with a fresh index (spec 3.1).

    ``layout`` is a name of :mod:`augmem.data.layouts` (or an old kind name). The CORe50 layout keeps only frames
    ``arange(10, 300, sample_rate)`` (10, 30, ..., 290 for the default 20).
    """
    dirmap = layouts.get(layout).select_frames(dirmap, sample_rate)
    test_sess = list(test_sess)
    in_test = dirmap["session"].isin(test_sess)
    train = dirmap[~in_test].reset_index(drop=True)
    test = dirmap[in_test].reset_index(drop=True)
    sessions = sorted(pd.unique(dirmap["session"]).tolist())
    if train.empty:
        raise InputError(
            f"{source}: empty training split: every row has a test session {test_sess} (sessions {sessions})"
        )
    if test.empty:
        raise InputError(
            f"{source}: empty test split: none of the test sessions {test_sess} occurs (sessions {sessions})"
        )
    return train, test


def default_frames_per_session(layout: str, sample_rate: int = 20, override: int | None = None) -> float:
    """Frames per session used by the instance scenario: ``override``, else the layout's (CORe50 300/sample_rate,
    the original's float; Toybox/iLab 15 after balancing, spec 2.2, 2.4)."""
    if override is not None:
        if int(override) < 1:
            raise InputError(f"frames_per_session must be a positive integer, got {override!r}")
        return int(override)
    lay = layouts.get(layout)
    fps = lay.default_frames_per_session(sample_rate)
    if fps is None:
        raise InputError(
            f"the instance scenario needs the frames per session, unknown for dataset layout {lay.name!r}; "
            "give frames_per_session explicitly"
        )
    return fps


def check_task_arguments(
    dirmap: pd.DataFrame,
    train: pd.DataFrame,
    scenario: str,
    n_class: int,
    dataset_classes: int | None = None,
    uneven_last_task: bool = False,
    source: str = "dirmap",
) -> None:
    """Fail before any file is written when the task arguments do not fit the data (InputError naming ``source``
    and the numbers):

    * ``dataset_classes`` (the dataset's ``n_class``: the network's outputs) must equal the number of classes in
      the dirmap (more classes: labels out of range in training; fewer: another dataset's numbers);
    * in the class scenarios, ``n_class`` classes per task must divide the classes of the training split, unless
      ``uneven_last_task`` (then the last task holds the remainder).
    """
    if dataset_classes is not None:
        check_dataset_classes(dirmap, dataset_classes, source)
    if scenario in layouts.CLASS_SCENARIOS and not uneven_last_task:
        n_train = len(pd.unique(train["class"]))
        per_task = int(n_class)
        if n_train % per_task:
            divisors = [d for d in range(1, n_train + 1) if n_train % d == 0]
            last = n_train % per_task
            raise InputError(
                f"{source}: {scenario}: {per_task} classes per task (tasks.n_class, --n-class) do not divide the "
                f"{n_train} classes of the training split: the last of {math.ceil(n_train / per_task)} tasks would "
                f"hold {last} class{'es' if last != 1 else ''}; choose one of {divisors}, or allow it explicitly "
                f"with tasks.uneven_last_task: true (--uneven-last-task)"
            )


# --------------------------------------------------------------------------------------------------------------------
# Task generation


def make_run(
    train: pd.DataFrame,
    test: pd.DataFrame,
    scenario: str,
    run: int,
    offline: bool,
    fidelity: str | DataSwitches,
    task_size_iid: int = 1200,
    n_class: int = 2,
    n_instance: int = 80,
    frames_per_session: float | None = None,
) -> RunFilelists:
    """Build one run's tasks (spec 3.2), label them by first appearance (3.3) and label the test rows.

    ``frames_per_session`` is needed by the instance scenario only (see :func:`default_frames_per_session`).
    ``fidelity`` is 'reference', 'corrected' or a :class:`DataSwitches` bundle.
    """
    sw = fidelity if isinstance(fidelity, DataSwitches) else data_switches(fidelity)
    for name, value in (("task_size_iid", task_size_iid), ("n_class", n_class), ("n_instance", n_instance)):
        if int(value) < 1:
            raise InputError(f"{name} must be a positive integer, got {value!r}")
    if scenario == "iid":
        tasks = _iid_tasks(train, run, offline, int(task_size_iid), sw)
    elif scenario == "class_iid":
        tasks = _class_iid_tasks(train, run, offline, int(n_class))
    elif scenario == "instance":
        if frames_per_session is None:
            raise InputError("the instance scenario needs frames_per_session")
        tasks = _instance_tasks(train, run, offline, int(n_instance), frames_per_session, sw)
    elif scenario == "class_instance":
        tasks = _class_instance_tasks(train, run, offline, int(n_class), sw)
    else:
        raise InputError(f"unknown scenario {scenario!r}; expected one of {list(SCENARIOS)}")

    iid = scenario == "iid"
    frames = []
    for t, task in enumerate(tasks):
        task = task.copy()
        # The original's iid task column comes out as float ("0.0") and its iid index is not reset (spec 3.4).
        task["task"] = float(t) if iid else t
        frames.append(task)
    train_all = pd.concat(frames, ignore_index=not iid)

    # Labels: classes in order of first appearance in the concatenated stream (spec 3.3).
    classes = pd.Index(pd.unique(train_all["class"]))
    train_all["label"] = classes.get_indexer(train_all["class"])
    test = test.copy()
    test_labels = classes.get_indexer(test["class"])
    if (test_labels < 0).any():
        absent = sorted(set(test.loc[test_labels < 0, "class"].tolist()), key=str)
        raise InputError(
            f"test rows of class(es) {absent} have no label: these classes are absent from the training split"
        )
    test["label"] = test_labels

    bounds = np.cumsum([0] + [len(task) for task in frames])
    out_tasks = [train_all.iloc[bounds[t] : bounds[t + 1]] for t in range(len(frames))]
    return RunFilelists(tasks=out_tasks, test=test, train_all=train_all)


def _iid_tasks(train: pd.DataFrame, run: int, offline: bool, size: int, sw: DataSwitches) -> list[pd.DataFrame]:
    """iid: pandas shuffle with seed = run, cut into tasks of ``size`` rows (the original's ``.loc`` is inclusive)."""
    shuffled = train.sample(frac=1, random_state=run).reset_index(drop=True)
    n_task = math.ceil(len(shuffled) / size)
    extra = 1 if sw.inclusive_iid_slices else 0  # .loc[a:b] == iloc[a:b+1] on a fresh RangeIndex
    tasks = []
    for t in range(n_task):
        if offline:
            tasks.append(shuffled.iloc[: (t + 1) * size + extra].sample(frac=1, random_state=run))
        else:
            tasks.append(shuffled.iloc[t * size : (t + 1) * size + extra])
    return tasks


def _shuffled_classes(train: pd.DataFrame, rng: np.random.RandomState) -> np.ndarray:
    """Distinct classes in order of first appearance, shuffled in place (the original's np.random.shuffle)."""
    classes = np.asarray(pd.unique(train["class"]))  # a fresh array (ints, or objects for string classes)
    if classes.dtype.kind not in "iuf":
        classes = classes.astype(object)
    rng.shuffle(classes)
    return classes


def _task_slice(arr: np.ndarray, t: int, n: int, offline: bool, rng: np.random.RandomState) -> np.ndarray:
    """Stream: ``arr[t*n:(t+1)*n]``. Offline: the prefix ``arr[:(t+1)*n]``, shuffled in place as a view (spec 12.4):
    the master array's prefix is reordered and the RNG is consumed, exactly like the original."""
    if offline:
        view = arr[: (t + 1) * n]
        rng.shuffle(view)
        return view
    return arr[t * n : (t + 1) * n]


def _class_iid_tasks(train: pd.DataFrame, run: int, offline: bool, n_class: int) -> list[pd.DataFrame]:
    """class_iid: shuffled classes, ``n_class`` per task; each task's rows pandas-shuffled with seed = run."""
    rng = np.random.RandomState(run)
    classes = _shuffled_classes(train, rng)
    tasks = []
    for t in range(math.ceil(len(classes) / n_class)):
        chosen = _task_slice(classes, t, n_class, offline, rng)
        tasks.append(train[train["class"].isin(list(chosen))].sample(frac=1, random_state=run))
    return tasks


def _instance_key(sw: DataSwitches) -> list[str]:
    return ["object", "session"] if sw.instance_key_without_class else ["class", "object", "session"]


class _Instances:
    """Instances of a frame: distinct keys in ``np.unique(..., axis=0)`` order (lexicographic) and, per instance,
    the positions of its rows sorted by frame (``im_num``), computed once."""

    def __init__(self, frame: pd.DataFrame, sw: DataSwitches):
        key = _instance_key(sw)
        codes = frame.groupby(key, sort=True).ngroup().to_numpy()
        self.n = int(codes.max()) + 1 if len(codes) else 0
        im_num = frame["im_num"].to_numpy()
        if sw.unstable_instance_sort:
            # The original: the instance's rows in frame order, then sort_values('im_num') (pandas' default
            # quicksort, i.e. numpy's unstable argsort: tie order depends on the numpy build).
            by_instance = np.argsort(codes, kind="stable")
            bounds = np.searchsorted(codes[by_instance], np.arange(self.n + 1))
            order = by_instance.copy()
            for g in range(self.n):
                rows = by_instance[bounds[g] : bounds[g + 1]]
                order[bounds[g] : bounds[g + 1]] = rows[np.argsort(im_num[rows], kind="quicksort")]
        else:
            # Stable sort on the full key (class, object, session, im_num), instance first.
            class_code = pd.factorize(frame["class"], sort=True)[0]
            order = np.lexsort((im_num, frame["session"].to_numpy(), frame["object"].to_numpy(), class_code, codes))
            bounds = np.searchsorted(codes[order], np.arange(self.n + 1))
        self.order = order
        self.bounds = bounds

    def rows(self, instances: np.ndarray) -> np.ndarray:
        """Positions of the rows of ``instances`` (instance numbers), instance after instance."""
        parts = [self.order[self.bounds[g] : self.bounds[g + 1]] for g in instances]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.intp)


def _instance_tasks(
    train: pd.DataFrame, run: int, offline: bool, n_instance: int, frames_per_session: float, sw: DataSwitches
) -> list[pd.DataFrame]:
    """instance: shuffled instances, ``n_instance`` per task; ceil(N_train / (n_instance * frames)) tasks.

    Shuffling the instance numbers 0..n-1 draws exactly what shuffling the rows of the ``np.unique`` array did.
    """
    rng = np.random.RandomState(run)
    inst = _Instances(train, sw)
    perm = np.arange(inst.n)
    rng.shuffle(perm)
    n_task = math.ceil(len(train) / (n_instance * frames_per_session))
    tasks = []
    for t in range(n_task):
        chosen = _task_slice(perm, t, n_instance, offline, rng)
        tasks.append(train.iloc[inst.rows(chosen)])
    return tasks


def _class_instance_tasks(
    train: pd.DataFrame, run: int, offline: bool, n_class: int, sw: DataSwitches
) -> list[pd.DataFrame]:
    """class_instance: class tasks as in class_iid; inside a task, its instances shuffled, frames in order.

    RNG order per task: (offline) class-prefix shuffle, then instance shuffle.
    """
    rng = np.random.RandomState(run)
    classes = _shuffled_classes(train, rng)
    tasks = []
    for t in range(math.ceil(len(classes) / n_class)):
        chosen = _task_slice(classes, t, n_class, offline, rng)
        positions = np.flatnonzero(train["class"].isin(list(chosen)).to_numpy())
        sub = train.iloc[positions]
        inst = _Instances(sub, sw)
        perm = np.arange(inst.n)
        rng.shuffle(perm)
        tasks.append(train.iloc[positions[inst.rows(perm)]])
    return tasks


# --------------------------------------------------------------------------------------------------------------------
# Output


def filelist_text(frame: pd.DataFrame) -> str:
    """Lines ``<im_path> <label>``, no header (the format of ``train_task_XX_filelist.txt`` / ``test_filelist.txt``)."""
    return "".join(f"{p} {y}\n" for p, y in zip(frame["im_path"].tolist(), frame["label"].tolist()))


def write_run(out_dir: str | os.PathLike, result: RunFilelists, inputs: Iterable[str | os.PathLike] = ()) -> Path:
    """Write one run folder atomically (spec 3.4): train_task_XX_filelist.txt, test_filelist.txt, train_all.txt.

    The folder also gets the output marker (:data:`augmem.io.MARKER`); it must not overlap ``inputs`` and may only
    replace an earlier run folder of this step.
    """
    out_dir = Path(out_dir)
    with atomic_path(out_dir, inputs=inputs, stage=STAGE, kind="dir") as tmp:
        tmp.mkdir()
        for t, task in enumerate(result.tasks):
            (tmp / f"train_task_{t:02d}_filelist.txt").write_text(filelist_text(task))
        (tmp / "test_filelist.txt").write_text(filelist_text(result.test))
        result.train_all.to_csv(tmp / "train_all.txt")
    return out_dir


def run_dir(out: str | os.PathLike, dataset: str, scenario: str, run: int, offline: bool) -> Path:
    """``<out>/<dataset>_task_filelists/<scenario>/run<r>/<stream|offline>`` (the original layout)."""
    return Path(out) / f"{dataset}_task_filelists" / scenario / f"run{run}" / ("offline" if offline else "stream")


def write_filelists(
    out: str | os.PathLike,
    dataset: str,
    train: pd.DataFrame,
    test: pd.DataFrame,
    scenario: str,
    runs: Sequence[int],
    modes: Sequence[bool],
    fidelity: str | DataSwitches,
    inputs: Iterable[str | os.PathLike] = (),
    **params,
) -> list[Path]:
    """Generate and write every (run, mode) folder; ``modes`` holds offline flags. Returns the folders written.

    Every folder is checked (overlap with ``inputs``, ownership, writability: :func:`augmem.io.check_outputs`)
    before the first one is generated.
    """
    folders = {(run, offline): run_dir(out, dataset, scenario, run, offline) for run in runs for offline in modes}
    check_outputs(folders.values(), inputs=inputs, stage=STAGE, kind="dir")
    written = []
    for run in runs:
        for offline in modes:
            result = make_run(train, test, scenario, run, offline, fidelity, **params)
            written.append(write_run(folders[(run, offline)], result, inputs))
    return written
