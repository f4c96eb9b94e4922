"""The registry of dataset layouts: one record per on-disk layout, everything the data steps need to know about it.

A dataset entry (``params/datasets.yaml`` or a config file's ``define_datasets``) names its ``layout`` (how its raw
files lie on disk and which preparation steps it needs) and, separately, an optional hyperparameter ``family``
(which published per-dataset hyperparameters of ``params/agents.yaml`` apply; absent = none, only the agents' own
values). The workflow rules (``workflow/rules/*.smk``), the stages' ``--layout`` options and the schemas' enums all
read this registry; nothing else lists the layouts.

=================  ================================================  ==============================================
layout             raw root holds                                    steps before the task filelists
=================  ================================================  ==============================================
``core50``         ``core50_128x128/s<S>/o<O>/C_<SS>_<OO>_<FFF>.png``  dirmap (frames sampled by ``sample_rate``)
``toybox``         ``<supercat>/<category>_<NN>_pivothead/*.mp4``       frame extraction, dirmap, balancing
``ilab``           ``train_img/*.jpg`` (iLab-2M-Light names)           dirmap, balancing, distribution into folders
``class_folders``  ``train/<class>/*.png`` and ``test/<class>/*.png``   dirmap (+ class table); test split = ``test/``
=================  ================================================  ==============================================

Usage: ``get(name)`` (a layout name, or an old ``kind`` name as a deprecated alias) returns the :class:`Layout`;
:func:`dataset_problems` lists what a dataset entry lacks for the scenarios it is used in; :func:`filelist_args` is
the task set-up's command-line arguments of one (dataset, scenario).
"""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from augmem.data import dirmap as dm
from augmem.data import sample as smp
from augmem.io import InputError

SCENARIOS = ("iid", "class_iid", "instance", "class_instance")
CLASS_SCENARIOS = ("class_iid", "class_instance")

#: Hyperparameter families: the datasets whose published hyperparameters ``params/agents.yaml`` holds
#: (``overrides`` entries match on ``family``). A dataset without a family gets the agents' own values.
FAMILIES = ("core50", "toybox", "ilab2mlight", "cifar100")

# CORe50: keep frames first_frame, first_frame + sample_rate, ... below 300 (frames before 10 are sometimes missing).
CORE50_FIRST_FRAME = 10
CORE50_FRAMES = 300


@dataclass(frozen=True)
class Balancing:
    """A balanced-sampling step (stage ``sample``): the function, the dirmap columns it reads, its output file."""

    name: str
    output: str  # file name in the dataset's interim folder
    columns: tuple[str, ...]
    fn: Callable[..., pd.DataFrame]
    seeded: bool  # takes ``seed`` (balance.seed in the dataset entry, default 0)


BALANCING = {
    "toybox": Balancing("toybox", "dirmap_balanced.csv", tuple(dm.DIRMAP_COLUMNS), smp.balance_toybox, False),
    "ilab": Balancing("ilab", "dirmap_massed.csv", tuple(dm.ILAB_COLUMNS), smp.balance_ilab, True),
}


@dataclass(frozen=True)
class DirmapMap:
    """An extra file the dirmap reader needs (a table shipped in params/), with its stage option."""

    name: str  # the rule's input name and the reader's keyword
    option: str  # stages.dirmap option
    file: str  # the shipped table's file name in params/
    help: str

    @property
    def rule_input(self) -> str:
        """The shipped table relative to the repository root (the workflow's declared input)."""
        return f"params/{self.file}"

    @property
    def default(self) -> str:
        """The shipped table (the stage option's default, wherever the stage runs from)."""
        return str(dm.PARAMS_DIR / self.file)


def _read_core50(root, **_):
    return dm.core50_dirmap(root), None


def _read_toybox(root, classes=dm.TOYBOX_CLASSES_CSV, sessions=dm.TOYBOX_SESSIONS_CSV, **_):
    return dm.toybox_dirmap(root, classes, sessions), None


def _read_ilab(root, **_):
    return dm.ilab2mlight_dirmap(root), None


def _read_class_folders(root, **_):
    return dm.class_folders_dirmap(root)


@dataclass(frozen=True)
class Layout:
    """One on-disk dataset layout. Paths are relative: ``raw`` is the dataset's raw root (the user's ``roots``
    entry, or the generated demo folder), ``interim`` its folder ``data/interim/<dataset>``."""

    name: str
    summary: str
    raw_tree: str  # what the raw root holds (help texts, errors)
    read: Callable[..., tuple[pd.DataFrame, pd.DataFrame | None]]  # (root, **maps) -> (dirmap, class table or None)
    aliases: tuple[str, ...] = ()  # the old `kind` names (deprecated CLI `--kind`)
    demo: str | None = None  # augmem.data.demo.MAKERS key of the synthetic demo in this layout
    dirmap_maps: tuple[DirmapMap, ...] = ()
    class_table: bool = False  # the dirmap step also writes classes.csv (class name, label)
    frames: bool = False  # videos: frames are extracted into <interim>/frames and indexed from there
    balance: str | None = None  # key of BALANCING
    distribute: bool = False  # balanced images are linked into <interim>/images/<class>/obj_<o>/sess_<s>/
    raw_image_subdir: str | None = ""  # image root = <raw>/<this> ("" = the raw root); None: produced (interim)
    interim_image_dir: str | None = None  # image root = <interim>/<this> when the images are produced
    sample_rate: bool = False  # CORe50: frames im_num in arange(10, 300, sample_rate) are used (task key)
    frames_per_session: int | None = None  # the instance scenario's frames per session (None: give it)
    test_by_session: bool = True  # the test split is a list of sessions (tasks.test_sess); else fixed
    default_test_sess: tuple[int, ...] | None = None  # test sessions when none are given (stage CLI; fixed splits)
    scenarios: tuple[str, ...] = SCENARIOS
    task_keys: tuple[str, ...] = field(default=())  # layout-specific task arguments

    # ---------------------------------------------------------------- paths and steps
    @property
    def final_dirmap(self) -> str:
        """File name (in the interim folder) of the dirmap the task set-up reads."""
        if self.distribute:
            return "dirmap_distributed.csv"
        if self.balance:
            return BALANCING[self.balance].output
        return "dirmap_raw.csv"

    @property
    def images_in_raw(self) -> bool:
        """The filelists' image root lies in the raw root (else it is produced in the interim folder)."""
        return self.raw_image_subdir is not None

    def dirmap_source(self, raw: str, interim: str) -> str:
        """The folder the dirmap step indexes: the extracted frames, or the raw root."""
        return f"{interim}/frames" if self.frames else raw

    def image_root(self, raw: str, interim: str) -> str:
        """The folder the task filelists' image paths are relative to (the original DATAROOT)."""
        if self.raw_image_subdir is None:
            return f"{interim}/{self.interim_image_dir}"
        return f"{raw}/{self.raw_image_subdir}" if self.raw_image_subdir else raw

    def image_root_input(self, raw: str, interim: str) -> str:
        """What a job reading the images depends on: the raw root, or the produced image folder."""
        return raw if self.images_in_raw else self.image_root(raw, interim)

    # ---------------------------------------------------------------- task set-up
    def select_frames(self, dirmap: pd.DataFrame, sample_rate: int = 20) -> pd.DataFrame:
        """The rows the task set-up uses: CORe50 keeps ``im_num`` in ``arange(10, 300, sample_rate)``, others all."""
        if int(sample_rate) < 1:
            raise InputError(f"sample_rate must be a positive integer, got {sample_rate!r}")
        if not self.sample_rate:
            return dirmap
        return dirmap[dirmap["im_num"].isin(np.arange(CORE50_FIRST_FRAME, CORE50_FRAMES, int(sample_rate)))]

    def default_frames_per_session(self, sample_rate: int = 20) -> float | None:
        """Frames per session of the instance scenario: CORe50 300/sample_rate (the original's float), else the
        layout's constant (None: unknown, must be given)."""
        if self.sample_rate:
            return CORE50_FRAMES / sample_rate
        return self.frames_per_session


LAYOUTS: dict[str, Layout] = {lay.name: lay for lay in (
    Layout(
        "core50", "CORe50 128x128 frames", "core50_128x128/s<S>/o<O>/C_<SS>_<OO>_<FFF>.png",
        _read_core50, aliases=("core50",), demo="core50", raw_image_subdir="core50_128x128", sample_rate=True,
        default_test_sess=(3, 7, 10), task_keys=("sample_rate",),
    ),
    Layout(
        "toybox", "Toybox videos (frames extracted, sessions balanced)",
        "<supercat>/<category>_<NN>_pivothead/<category>_<NN>_pivothead_<transformation>.mp4",
        _read_toybox, aliases=("toybox",), demo="toybox",
        dirmap_maps=(DirmapMap("classes", "--toybox-classes", "toybox_classes.csv", "category -> class CSV"),
                     DirmapMap("sessions", "--toybox-sessions", "toybox_sessions.csv",
                               "transformation -> session CSV")),
        frames=True, balance="toybox", raw_image_subdir=None, interim_image_dir="frames", frames_per_session=15,
    ),
    Layout(
        "ilab", "iLab-2M-Light images (balanced, distributed into class/object/session folders)",
        "train_img/<class>-i<inst>-b<bg>-c<cam>-r<rot>-l<light>-<more>.jpg",
        _read_ilab, aliases=("ilab2mlight",), demo="ilab2mlight", balance="ilab", distribute=True,
        raw_image_subdir=None, interim_image_dir="images", frames_per_session=15,
    ),
    Layout(
        "class_folders", "one folder of PNG images per class, train/ and test/ (the cifar2png CIFAR-100 layout)",
        "train/<class>/*.png and test/<class>/*.png",
        _read_class_folders, aliases=("cifar100",), demo="cifar100", class_table=True,
        test_by_session=False, default_test_sess=(1,), scenarios=("iid", "class_iid"),
    ),
)}

_ALIASES = {alias: lay.name for lay in LAYOUTS.values() for alias in lay.aliases}


def names() -> list[str]:
    return list(LAYOUTS)


def get(name: str | Layout) -> Layout:
    """The layout of this name (or of an old ``kind`` name); InputError naming the valid ones."""
    if isinstance(name, Layout):
        return name
    key = _ALIASES.get(name, name) if name not in LAYOUTS else name
    try:
        return LAYOUTS[key]
    except (KeyError, TypeError):
        raise InputError(f"unknown dataset layout {name!r}; expected one of {names()} "
                         f"(old kind names {sorted(_ALIASES)} are accepted too)") from None


def resolve_name(name: str) -> str:
    """argparse ``type``: a layout name (or old kind name) -> the layout name."""
    try:
        return get(name).name
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_layout_option(parser: argparse.ArgumentParser, required: bool = True,
                      allowed: Sequence[str] | None = None, help: str = "dataset layout") -> None:
    """``--layout NAME`` (one of ``allowed``, default all layouts) and its deprecated alias ``--kind`` (which also
    takes the old kind names core50 / toybox / ilab2mlight / cifar100); both store ``args.layout``."""
    allowed = list(allowed or names())

    def checked(text: str) -> str:
        name = resolve_name(text)
        if name not in allowed:
            raise argparse.ArgumentTypeError(f"layout {name!r} is not possible here; expected one of {allowed}")
        return name

    group = parser.add_mutually_exclusive_group(required=required)
    group.add_argument("--layout", type=checked, metavar="LAYOUT", help=f"{help}: one of {allowed}")
    old = sorted(a for a, n in _ALIASES.items() if n in allowed)
    group.add_argument("--kind", dest="layout", type=checked, metavar="KIND",
                       help=f"deprecated alias of --layout (also takes the old kind names {old})")


# ------------------------------------------------------------------------------------------------ dataset entries
#: Task arguments (a dataset entry's ``tasks``): meaning, and the scenarios that read it (None: every scenario).
TASK_KEYS: dict[str, tuple[str, tuple[str, ...] | None]] = {
    "task_size_iid": ("training images per iid task", ("iid",)),
    "n_class": ("classes per task", CLASS_SCENARIOS),
    "n_instance": ("instances (object sessions) per instance task", ("instance",)),
    "frames_per_session": ("frames per session, for the number of instance tasks", ("instance",)),
    "test_sess": ("the sessions that form the test split", None),
    "sample_rate": ("CORe50 frame step: frames 10, 10+N, ... below 300 are used", None),
    "uneven_last_task": ("allow classes per task that do not divide the classes (a smaller last task)",
                         CLASS_SCENARIOS),
}


def test_sessions(entry: Mapping[str, Any]) -> list[int]:
    """The test sessions of a dataset entry: ``tasks.test_sess``; a layout whose test split is not by session
    (class folders: the ``test/`` folder, session 1) has a fixed default."""
    lay = get(entry["layout"])
    given = (entry.get("tasks") or {}).get("test_sess")
    if given is not None:
        return [int(s) for s in given]
    if lay.test_by_session or lay.default_test_sess is None:
        raise InputError(f"layout {lay.name}: tasks.test_sess is required")
    return list(lay.default_test_sess)


def dataset_problems(name: str, entry: Mapping[str, Any], scenarios: Sequence[str]) -> list[str]:
    """What dataset ``name``'s entry lacks (or has wrong) for the ``scenarios`` it is used in: one message per
    problem, naming the dataset, the scenario and the key. Empty when it is fine."""
    where = f"dataset {name}"
    if "kind" in entry:
        return [f"{where}: `kind` was replaced by `layout` (the on-disk layout: {names()}) and `family` (optional: "
                f"whose published hyperparameters apply, one of {list(FAMILIES)}; absent = the agents' own values)"]
    try:
        lay = get(entry.get("layout"))
    except InputError as exc:
        return [f"{where}: {exc}"]
    where = f"dataset {name} (layout {lay.name})"
    problems = []
    family = entry.get("family")
    if family is not None and family not in FAMILIES:
        problems.append(f"{where}: family {family!r} is not one of {list(FAMILIES)} (leave it out for none)")
    for sc in entry.get("scenarios") or []:
        if sc not in lay.scenarios:
            problems.append(f"{where}: scenario {sc} is not possible with this layout "
                            f"(possible: {list(lay.scenarios)})")
    tasks = entry.get("tasks") or {}
    for key in tasks:
        owners = [n for n, other in LAYOUTS.items() if key in other.task_keys]
        if owners and lay.name not in owners:
            problems.append(f"{where}: tasks.{key} applies to the {owners} layout(s) only")
    for sc in scenarios:
        if sc not in lay.scenarios:
            continue
        need = [k for k, (_, used) in TASK_KEYS.items() if used is not None and sc in used
                and k not in ("uneven_last_task", "frames_per_session")]
        if lay.test_by_session:
            need.append("test_sess")
        if sc == "instance" and lay.default_frames_per_session() is None:
            need.append("frames_per_session")
        for key in need:
            if key not in tasks:
                problems.append(f"{where}, scenario {sc}: tasks.{key} is missing ({TASK_KEYS[key][0]})")
    if scenarios:
        if lay.frames and not entry.get("frames"):
            problems.append(f"{where}: `frames` is missing ({{fps, size}} of the frame extraction)")
        if lay.balance and not entry.get("balance"):
            problems.append(f"{where}: `balance` is missing ({{objects_per_class, sessions_per_object, "
                            f"frames_per_session}} of the balanced sampling)")
    return problems


def filelist_args(entry: Mapping[str, Any], scenario: str) -> list[str]:
    """``stages.filelists`` arguments of one dataset entry and scenario: the task arguments that scenario reads,
    the test sessions, the layout's own arguments, and what the early checks need (the dataset's ``n_class``)."""
    lay = get(entry["layout"])
    t = entry.get("tasks") or {}
    args: list[Any] = []
    if scenario == "iid":
        args += ["--task-size-iid", t["task_size_iid"]]
    if scenario in CLASS_SCENARIOS:
        args += ["--n-class", t["n_class"]]
    if scenario == "instance":
        args += ["--n-instance", t["n_instance"]]
    args += ["--test-sess", *test_sessions(entry)]
    if lay.sample_rate and "sample_rate" in t:
        args += ["--sample-rate", t["sample_rate"]]
    if scenario == "instance" and "frames_per_session" in t:
        args += ["--frames-per-session", t["frames_per_session"]]
    args += ["--dataset-classes", entry["n_class"]]
    if scenario in CLASS_SCENARIOS and t.get("uneven_last_task"):
        args.append("--uneven-last-task")
    return [str(a) for a in args]


def read(layout: str | Layout, root: str | os.PathLike, **maps) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The dirmap (and class table, for layouts that have one) of a raw tree in this layout."""
    return get(layout).read(root, **maps)
