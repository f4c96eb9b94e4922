"""File-access audit of the workflow stages (used by the tests to check that every rule declares what it touches).

When the environment variable ``AUGMEM_AUDIT_LOG`` names a file, :func:`install_from_env` (called by
``stages/__init__.py``, so by every ``python -m stages.<step>``) installs a ``sys.addaudithook`` hook that appends one
JSON line per file event to that file:

    {"job": [argv of the stage], "pid": 123, "event": "open", "path": "/abs/path", "write": false}

Events: ``open`` (``write`` true for any writing/creating mode or flag; a read has ``exists``, false when the path
was missing: a probe, not a read), ``rename`` (``os.rename``/``os.replace``,
with ``dst``), ``link``/``symlink`` (``dst`` is the new name), ``mkdir``, ``mkdtemp``, ``remove`` (``os.remove``/
``os.unlink``/``os.rmdir``/``shutil.rmtree``), ``listdir`` (``os.listdir``/``os.scandir``) and ``exec``
(``subprocess.Popen``, with ``args``: programs like ffmpeg read and write files the hook cannot see). Files that C code
opens without Python's ``open`` (torch.save's zip writer, ffmpeg) are seen only through what Python does with them
afterwards (the stages write through a temporary name and rename it: the rename is recorded).

``job`` is the stage's command line (``sys.orig_argv[1:]``, e.g. ``["-m", "stages.train", "--dataset", ...]``); worker
processes (forked or spawned) inherit it through ``AUGMEM_AUDIT_JOB``, so their events count for their stage. Each
event is written at once with one ``os.write`` on an ``O_APPEND`` descriptor (whole lines from concurrent processes,
nothing lost when a worker ends with ``os._exit``). Paths are absolute (``os.path.abspath``: relative to the process's
working directory at the time of the event, symbolic links not resolved). Files of the interpreter and its
installation (``sys.prefix``, ``sys.base_prefix``) and of /proc, /sys and /dev are not recorded.

Without the variable nothing is installed and the stages run exactly as before.
"""
from __future__ import annotations

import json
import os
import sys

ENV_LOG = "AUGMEM_AUDIT_LOG"
ENV_JOB = "AUGMEM_AUDIT_JOB"

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_PATH_EVENTS = {  # audit event -> (our name, index of the path argument, of the second path, of the dir_fd arguments)
    "open": ("open", 0, None, ()),
    "os.rename": ("rename", 0, 1, (2, 3)),
    "os.link": ("link", 0, 1, (2, 3)),
    "os.symlink": ("symlink", 0, 1, (2,)),
    "os.mkdir": ("mkdir", 0, None, (2,)),
    "tempfile.mkdtemp": ("mkdtemp", 0, None, ()),
    "os.remove": ("remove", 0, None, (1,)),
    "os.rmdir": ("remove", 0, None, (1,)),
    "shutil.rmtree": ("remove", 0, None, (1,)),
    "os.listdir": ("listdir", 0, None, ()),
    "os.scandir": ("listdir", 0, None, ()),
    "os.truncate": ("truncate", 0, None, ()),
}

_state: dict = {"fd": None, "job": None, "busy": False, "skip": (), "shutil": None}


def _path(p) -> str | None:
    """An absolute path for a path argument (str, bytes, path-like); None for file descriptors and the like."""
    if isinstance(p, int) or p is None:
        return None
    try:
        p = os.fsdecode(os.fspath(p))
    except TypeError:
        return None
    return os.path.abspath(p)


def _is_write(args) -> bool:
    mode = args[1] if len(args) > 1 else None
    flags = args[2] if len(args) > 2 else None
    if isinstance(mode, str) and any(c in mode for c in "wax+"):
        return True
    return isinstance(flags, int) and bool(flags & _WRITE_FLAGS)


def _record(entry: dict) -> None:
    entry = {"job": _state["job"], "pid": os.getpid(), **entry}
    os.write(_state["fd"], (json.dumps(entry) + "\n").encode())


def _hook(event: str, args) -> None:
    if _state["busy"] or (event not in _PATH_EVENTS and event != "subprocess.Popen"):
        return
    _state["busy"] = True
    try:
        if event == "subprocess.Popen":
            executable, argv = args[0], args[1]
            argv = [os.fsdecode(a) if isinstance(a, (str, bytes, os.PathLike)) else str(a)
                    for a in ([argv] if isinstance(argv, (str, bytes)) else (argv or []))]
            cwd = _path(args[2]) if len(args) > 2 and args[2] is not None else os.getcwd()
            _record({"event": "exec", "executable": None if executable is None else os.fsdecode(executable),
                     "args": argv, "cwd": cwd})
            return
        name, i, j, fds = _PATH_EVENTS[event]
        if any(len(args) > k and args[k] not in (None, -1) for k in fds):  # -1: no dir_fd given
            return  # a path relative to a directory descriptor (shutil.rmtree's internals): not resolvable here
        if event != "shutil.rmtree":
            caller = sys._getframe(1).f_code
            if caller.co_filename == _state["shutil"] and caller.co_name.startswith("_rmtree"):
                return  # inside shutil.rmtree, whose own event covers the whole tree
        path = _path(args[i]) if len(args) > i else None
        if path is None or path.startswith(_state["skip"]):
            return
        entry = {"event": name, "path": path}
        if name == "open":
            entry["write"] = _is_write(args)
        if name == "listdir" or (name == "open" and not entry["write"]):
            entry["exists"] = os.path.exists(path)  # probing a missing path (the import system, torch) reads nothing
        if j is not None:
            entry["dst"] = _path(args[j])
        _record(entry)
    except Exception:  # the audit must never break a stage
        pass
    finally:
        _state["busy"] = False


def install_from_env() -> bool:
    """Install the hook when AUGMEM_AUDIT_LOG is set (once per process); True when installed."""
    log = os.environ.get(ENV_LOG)
    if not log or _state["fd"] is not None:
        return False
    # opened before the hook exists: the log itself is never recorded
    _state["fd"] = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    job = os.environ.get(ENV_JOB)
    _state["job"] = json.loads(job) if job else list(getattr(sys, "orig_argv", sys.argv)[1:])
    os.environ[ENV_JOB] = json.dumps(_state["job"])  # worker processes count for this stage
    prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    _state["skip"] = tuple(p.rstrip("/") + "/" for p in prefixes if p) + ("/proc/", "/sys/", "/dev/")
    import shutil

    _state["shutil"] = shutil.__file__
    sys.addaudithook(_hook)
    return True


def read_log(path: str | os.PathLike) -> list[dict]:
    """The events of an audit log, in the order they were written."""
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


_FFMPEG_FLAGS = {"-y", "-n", "-nostdin", "-hide_banner", "-stats", "-nostats", "-version", "-encoders"}  # no value


def _ffmpeg_files(args: list[str]) -> tuple[list[str], list[str]]:
    """(read, written) files of an ffmpeg command line: the -i inputs, and the outputs (the words that are neither an
    option nor an option's value; every option but the few value-less flags takes one value)."""
    reads, outs, i = [], [], 1
    while i < len(args):
        a = args[i]
        if a.startswith("-") and a != "-":
            if a == "-i" and i + 1 < len(args) and args[i + 1] != "pipe:":
                reads.append(args[i + 1])
            i += 1 if a in _FFMPEG_FLAGS else 2
        else:
            if not a.startswith("pipe:"):
                outs.append(a)
            i += 1
    return reads, outs


def job_effects(events: list[dict]) -> dict[tuple, dict[str, set[str]]]:
    """What each job (``tuple(job)``) did to files, from its events in order: ``reads`` (files opened for reading and
    folders listed), ``writes`` (the final names of what it created or wrote and still exists: a file written under a
    temporary name counts under the name it was renamed to, one it removed again not at all), ``removed``
    (existing paths it removed or renamed away that it had not created itself) and ``created`` (every path it
    created or wrote at some point, temporary ones included). ffmpeg subprocesses count with their -i inputs and
    their output (a relative path resolved against the command's working directory)."""
    jobs: dict[tuple, dict[str, set[str]]] = {}
    for ev in events:
        j = jobs.setdefault(tuple(ev["job"]), {"reads": set(), "writes": set(), "removed": set(), "created": set()})
        kind, path = ev["event"], ev.get("path")
        written = j["writes"]
        before = set(written)

        def own(p):  # inside something this job created (a second removal, a file C code wrote in its temp dir)
            return any(_under(p, c) for c in j["created"])

        def drop(p):
            gone = {w for w in written if _under(w, p)}
            written.difference_update(gone)
            if not gone and not own(p):
                j["removed"].add(p)

        if kind == "exec":
            args = ev.get("args") or []
            if args and os.path.basename(args[0]).startswith("ffmpeg"):
                reads, outs = _ffmpeg_files(args)
                j["reads"].update(os.path.join(ev["cwd"], p) for p in reads)
                written.update(os.path.join(ev["cwd"], p) for p in outs)
        elif kind == "open" and ev["write"]:
            written.add(path)
        elif kind in ("open", "listdir"):
            if ev.get("exists", True):
                j["reads"].add(path)
        elif kind in ("mkdir", "mkdtemp", "truncate"):
            written.add(path)
        elif kind in ("link", "symlink"):
            written.add(ev["dst"])
            if kind == "link":
                j["reads"].add(path)
        elif kind == "rename":
            dst = ev["dst"]
            moved = {w for w in written if _under(w, path)}
            if _under(dst, path):
                continue
            drop(dst) if dst in written else None
            written.difference_update(moved)
            written.update(dst + w[len(path):] for w in moved)
            written.add(dst)
            if not moved and not own(path):
                j["removed"].add(path)
        elif kind == "remove":
            drop(path)
        j["created"].update(written - before)
    return jobs
