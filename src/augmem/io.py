"""Atomic file output, output guards and small I/O helpers shared by every stage.

Every stage writes through these helpers so that a killed job never leaves a file (or folder) that looks complete:
data goes to a temporary sibling first and is renamed into place only when it is whole.

They also make sure a stage never deletes what it did not create:

* :func:`check_outputs` (called at the top of every stage, before any compute) refuses an output that is, contains
  or lies inside one of the stage's inputs, an existing output that is not this stage's own (a folder where a file
  is expected, a file where a folder is expected, a non-empty folder without this stage's :data:`MARKER`), and an
  output location that cannot be written (probed by creating and removing a file).
* :func:`atomic_path` repeats the overlap and ownership checks (keyword arguments ``inputs``, ``stage``, ``kind``),
  writes :data:`MARKER` into every folder output, replaces the old output only once the new one is complete, and
  first removes the temporaries of killed earlier runs (:func:`clean_stale_temporaries`).

All refusals raise :class:`OutputError`, a subclass of :class:`InputError`, so stages report them as
``error: <path>: <why>`` without touching anything.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

import pandas as pd

#: Name of the marker file inside every folder output (JSON ``{"format": "augmem-output", "stage": <stage>}``). A
#: dot file, so the dataset and filelist readers never see it (they glob for images and task files); its content is
#: fixed per stage, so an output folder's bytes (and DVC hashes) stay deterministic.
MARKER = ".augmem-output.json"
MARKER_FORMAT = "augmem-output"

KINDS = ("file", "dir")
PathLike = str | os.PathLike


class InputError(ValueError):
    """Bad user input (a file, a row, a parameter). The message names the file/row and what is wrong."""


class OutputError(InputError):
    """An output a stage must not or cannot write: it overlaps an input, an existing path there is not this stage's
    own output, or its location is not writable. The message names the path and the reason."""


# ------------------------------------------------------------------------------------------------ output guards
def _lexical(path: PathLike) -> Path:
    """Absolute, normalised path whose parent folders are resolved but whose last component is kept as named (an
    output path that is a symbolic link is replaced, not followed)."""
    p = Path(os.path.abspath(path))
    return p if p.parent == p else p.parent.resolve() / p.name


def _forms(path: PathLike) -> set[Path]:
    return {_lexical(path), Path(os.path.abspath(path)).resolve()}


def _inside(a: Path, b: Path) -> bool:
    """``a`` is ``b`` or lies inside it."""
    return a == b or b in a.parents


def check_no_overlap(output: PathLike, inputs: Iterable[PathLike | None] = ()) -> None:
    """OutputError when ``output`` is, contains or lies inside one of ``inputs`` (``None`` entries are skipped).

    Paths are compared absolute, both as named and with symbolic links resolved, so ``out -> R`` overlaps ``R``.
    """
    outs = _forms(output)
    for inp in inputs:
        if inp is None or str(inp) == "":
            continue
        for o in outs:
            for i in _forms(inp):
                if o == i:
                    how = "is"
                elif _inside(i, o):
                    how = "contains"
                elif _inside(o, i):
                    how = "lies inside"
                else:
                    continue
                raise OutputError(f"{output}: the output {how} the input {inp}; writing it would replace or change "
                                  "the stage's own input, refusing (choose an output path outside the inputs)")


def marker_text(stage: str) -> str:
    """The content of :data:`MARKER` for ``stage`` (deterministic)."""
    return json.dumps({"format": MARKER_FORMAT, "stage": stage}, sort_keys=True) + "\n"


def output_owner(folder: PathLike) -> str | None:
    """The stage named by ``folder``'s :data:`MARKER`, or None (no marker, or one that cannot be read)."""
    try:
        data = json.loads((Path(folder) / MARKER).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if isinstance(data, dict) and data.get("format") == MARKER_FORMAT and isinstance(data.get("stage"), str):
        return data["stage"]
    return None


def _check_kind(kind: str, stage: str | None) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    if kind == "dir" and not stage:
        raise ValueError("a folder output needs the name of the stage that writes it (stage=...)")


def check_replaceable(path: PathLike, *, stage: str | None = None, kind: str = "file") -> None:
    """OutputError unless whatever exists at ``path`` may be replaced by this stage's output of this ``kind``.

    Nothing there: fine. ``kind='file'``: an existing file (or link to one) is replaced; a folder is refused.
    ``kind='dir'``: an existing file is refused; a folder is accepted when it is empty or carries the
    :data:`MARKER` of the same ``stage``, and refused otherwise.
    """
    _check_kind(kind, stage)
    p = Path(path)
    if not (p.exists() or p.is_symlink()):
        return
    advice = "remove or move it yourself if it is really meant to be replaced, or choose another output path"
    if kind == "file":
        if p.is_dir():
            raise OutputError(f"{path}: is a folder, but the stage writes a file there; refusing to replace a folder "
                              f"({advice})")
        return
    if not p.is_dir():
        raise OutputError(f"{path}: is a file, but stage {stage!r} writes a folder there; refusing to replace it "
                          f"({advice})")
    owner = output_owner(p)
    if owner == stage:
        return
    if owner is not None:
        raise OutputError(f"{path}: folder written by stage {owner!r}, not by {stage!r}; refusing to replace it "
                          f"({advice})")
    try:
        empty = not any(p.iterdir())
    except OSError as exc:
        raise OutputError(f"{path}: existing folder cannot be listed ({exc.strerror or exc})") from None
    if not empty:
        raise OutputError(f"{path}: existing folder without the {MARKER} marker of stage {stage!r}, so not an output "
                          f"of this stage; refusing to replace it ({advice})")


def check_writable(path: PathLike) -> None:
    """Probe that ``path`` can be written: create and remove a file in its parent folder, or, when parent folders
    are missing, in the nearest existing one (the writer creates the missing ones inside it).

    OutputError naming ``path`` when not (permission denied, read-only file system, a parent that is a file, ...).
    Call it before any compute, so an unwritable output fails at once instead of after the work. Nothing is left
    behind: missing parents are not created here, so a stage that stops later on bad input leaves no empty folders
    (and never races a concurrent job that creates or cleans the same folders).
    """
    p = Path(path)
    parent = Path(os.path.abspath(p)).parent
    existing = next((f for f in (parent, *parent.parents) if f.exists() or f.is_symlink()), None)
    if existing is None or not existing.is_dir():
        raise OutputError(f"{path}: output location is not writable: {existing} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".probe", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        raise OutputError(f"{path}: output location is not writable: {exc.strerror or exc}{where}") from None


def check_output(path: PathLike, *, inputs: Iterable[PathLike | None] = (), stage: str | None = None,
                 kind: str = "file") -> None:
    """All output guards for one output: :func:`check_no_overlap`, :func:`check_replaceable` (a file output
    named with a trailing ``/`` is refused too), then :func:`check_writable`."""
    check_outputs([path], inputs=inputs, stage=stage, kind=kind)


def check_outputs(paths: Iterable[PathLike | None], *, inputs: Iterable[PathLike | None] = (),
                  stage: str | None = None, kind: str = "file") -> None:
    """:func:`check_output` for several outputs of one kind (``None`` entries are skipped). Every output is checked
    for overlap and ownership before anything is created, so a refusal leaves the file system untouched."""
    paths = [p for p in paths if p is not None]
    inputs = list(inputs)
    for p in paths:
        check_no_overlap(p, inputs)
        check_replaceable(p, stage=stage, kind=kind)
        if kind == "file" and str(p).endswith(("/", os.sep)):
            raise OutputError(f"{p}: ends with a path separator, so it names a folder, but the stage writes a file "
                              "there (give the file's path)")
    for p in paths:
        check_writable(p)


# ------------------------------------------------------------------------------------------------ temporaries
def _host() -> str:
    """This host's name as it appears in temporaries' names (letters, digits and '-')."""
    return re.sub(r"[^A-Za-z0-9-]+", "-", socket.gethostname()).strip("-") or "host"


def _pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host (True when that cannot be told)."""
    if pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, owned by someone else
        return True
    return True


def temporary_prefix(path: PathLike) -> str:
    """Name prefix of :func:`atomic_path`'s temporaries for ``path``: ``.<name>.<host>.<pid>.`` (then a random part
    and ``.tmp``)."""
    return f".{Path(path).name}.{_host()}.{os.getpid()}."


def clean_stale_temporaries(path: PathLike) -> list[Path]:
    """Remove the temporaries that killed :func:`atomic_path` calls left next to ``path``; return what was removed.

    Only provably stale ones go: named ``.<name>.<host>.<pid>.<random>.tmp`` with this host's name and the PID of a
    process that no longer exists. Temporaries of other hosts (a shared file system) or of live processes are kept.
    """
    path = Path(os.path.abspath(path))
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.[A-Za-z0-9_]+\.tmp")
    host = _host()
    removed = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    for entry in entries:
        m = pattern.fullmatch(entry.name)
        if not m or m["host"] != host or _pid_alive(int(m["pid"])):
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(Path(entry.path))
    return removed


# ------------------------------------------------------------------------------------------------ atomic output
@contextlib.contextmanager
def atomic_path(path: PathLike, *, inputs: Iterable[PathLike | None] = (), stage: str | None = None,
                kind: str = "file") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` when the block ends without error.

    The caller creates a file (``kind='file'``, the default) or a folder (``kind='dir'``; ``stage`` is required and
    its :data:`MARKER` is written into the folder at the end; a folder the caller did not create is made empty) at
    the yielded path. Before yielding, the output is checked against ``inputs`` (:func:`check_no_overlap`) and
    against what exists at ``path`` (:func:`check_replaceable`: a stage only replaces its own earlier output), and
    stale temporaries of killed runs for this output are removed (:func:`clean_stale_temporaries`). An existing
    ``path`` is moved aside only when the new output is complete, and deleted after the new one is in place. On
    error the temporary is removed and ``path`` is left untouched.
    """
    _check_kind(kind, stage)
    given = path
    inputs = list(inputs)
    check_no_overlap(given, inputs)
    check_replaceable(given, stage=stage, kind=kind)
    path = Path(os.path.abspath(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temporaries(path)
    tmp = Path(tempfile.mkdtemp(prefix=temporary_prefix(path), suffix=".tmp", dir=path.parent))
    target = tmp / "out"
    try:
        yield target
        if kind == "dir":
            if target.is_symlink() or (target.exists() and not target.is_dir()):
                raise ValueError(f"{given}: a folder output was expected, the stage wrote a file")
            target.mkdir(exist_ok=True)
            (target / MARKER).write_text(marker_text(stage))
        check_replaceable(given, stage=stage, kind=kind)  # again: something may have appeared in the meantime
        old = tmp / "old"
        if kind == "dir" and (path.exists() or path.is_symlink()):
            os.replace(path, old)  # moved aside; deleted with the temporary once the new output is in place
        try:
            os.replace(target, path)
        except BaseException:
            if old.exists() or old.is_symlink():
                with contextlib.suppress(OSError):
                    os.replace(old, path)
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text(path: PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: PathLike, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_csv(path: PathLike, df: pd.DataFrame, **kwargs) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, **kwargs)


def read_csv_checked(path: PathLike, required: list[str], **kwargs) -> pd.DataFrame:
    """Read a CSV and fail with a message naming the file when it is missing or lacks required columns."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        df = pd.read_csv(path, **kwargs)
    except Exception as exc:  # pandas raises many kinds; name the file
        raise InputError(f"{path}: cannot be read as CSV ({exc})") from exc
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {missing}; found {list(df.columns)}")
    return df
