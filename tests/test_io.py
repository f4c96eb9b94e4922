"""The output guards of augmem.io: overlap with inputs, ownership of an existing output, marker, stale temporaries,
writability probe, and the atomic replacement itself."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from augmem import io
from augmem.io import (MARKER, InputError, OutputError, atomic_path, check_no_overlap, check_outputs,
                       check_replaceable, check_writable, clean_stale_temporaries, output_owner, write_text)


def _dead_pid() -> int:
    """The PID of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _tree(root):
    return sorted((p.relative_to(root).as_posix(), p.read_bytes() if p.is_file() else None) for p in root.rglob("*"))


# ------------------------------------------------------------------------------------------------ overlap
@pytest.mark.parametrize("out, how", [("R", "is"), ("R/sub", "lies inside"), ("R/sub/x.csv", "lies inside"),
                                      (".", "contains"), ("R/../R", "is")])
def test_overlap_is_refused(tmp_path, monkeypatch, out, how):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "R").mkdir()
    with pytest.raises(OutputError, match=f"the output {how} the input R"):
        check_no_overlap(out, ["R"])


def test_overlap_through_symlinks_and_disjoint_paths(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(OutputError, match="lies inside"):
        check_no_overlap(tmp_path / "link" / "out", [real])
    with pytest.raises(OutputError, match="is the input"):
        check_no_overlap(tmp_path / "link", [real])  # the link resolves to the input
    check_no_overlap(tmp_path / "real2", [real, None, tmp_path / "real.csv"])  # a common prefix is no overlap
    check_no_overlap(tmp_path / "out.csv", [])
    assert issubclass(OutputError, InputError)  # stages report it like bad input: "error: ..."


# ------------------------------------------------------------------------------------------------ ownership
def test_replaceable_files_and_folders(tmp_path):
    folder = tmp_path / "folder"
    (folder / "data").mkdir(parents=True)
    afile = tmp_path / "a.csv"
    afile.write_text("x")
    check_replaceable(tmp_path / "missing.csv")
    check_replaceable(afile)  # a file where a file is expected
    with pytest.raises(OutputError, match=r"folder.*is a folder, but the stage writes a file"):
        check_replaceable(folder)
    with pytest.raises(OutputError, match=r"a\.csv: is a file, but stage 's' writes a folder"):
        check_replaceable(afile, stage="s", kind="dir")
    with pytest.raises(OutputError, match=f"without the {MARKER} marker of stage 's'"):
        check_replaceable(folder, stage="s", kind="dir")
    (tmp_path / "empty").mkdir()
    check_replaceable(tmp_path / "empty", stage="s", kind="dir")  # an empty folder may be used
    (folder / MARKER).write_text(io.marker_text("other"))
    with pytest.raises(OutputError, match="written by stage 'other', not by 's'"):
        check_replaceable(folder, stage="s", kind="dir")
    (folder / MARKER).write_text(io.marker_text("s"))
    check_replaceable(folder, stage="s", kind="dir")
    (folder / MARKER).write_text("not json")
    assert output_owner(folder) is None
    with pytest.raises(ValueError, match="stage"):
        check_replaceable(folder, kind="dir")
    with pytest.raises(ValueError, match="kind"):
        check_replaceable(folder, stage="s", kind="folder")


def test_atomic_folder_output_gets_marker_and_replaces_only_its_own(tmp_path):
    out = tmp_path / "out"
    with atomic_path(out, stage="s", kind="dir") as tmp:
        tmp.mkdir()
        (tmp / "a.txt").write_text("1")
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "a.txt"]
    assert json.loads((out / MARKER).read_text()) == {"format": "augmem-output", "stage": "s"}
    assert (out / MARKER).read_text() == io.marker_text("s")  # deterministic bytes (DVC hashes, comparisons)
    with atomic_path(out, stage="s", kind="dir") as tmp:  # its own earlier output: replaced
        tmp.mkdir()
        (tmp / "b.txt").write_text("2")
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "b.txt"]
    with pytest.raises(OutputError, match="written by stage 's', not by 't'"):
        with atomic_path(out, stage="t", kind="dir") as tmp:
            pytest.fail("the block must not run")
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "b.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary left behind


def test_atomic_path_keeps_the_old_call_and_refuses_a_folder_at_a_file_path(tmp_path):
    f = tmp_path / "x.json"
    write_text(f, "1")
    write_text(f, "2")  # atomic_path(path): replacing a file still works
    assert f.read_text() == "2"
    d = tmp_path / "d"
    (d / "keep").mkdir(parents=True)
    with pytest.raises(OutputError, match="is a folder"):
        write_text(d, "x")
    assert (d / "keep").is_dir()
    with pytest.raises(OutputError, match="lies inside the input"):
        with atomic_path(d / "keep" / "y.txt", inputs=[d]) as tmp:
            pytest.fail("the block must not run")


def test_folder_appearing_during_the_block_is_not_replaced(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(OutputError, match="without the .* marker"):
        with atomic_path(out, stage="s", kind="dir") as tmp:
            tmp.mkdir()
            (out / "foreign").mkdir(parents=True)  # someone else's folder appears meanwhile
    assert [p.name for p in out.iterdir()] == ["foreign"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_error_in_block_leaves_old_output(tmp_path):
    out = tmp_path / "out"
    with atomic_path(out, stage="s", kind="dir") as tmp:
        tmp.mkdir()
        (tmp / "a.txt").write_text("old")
    before = _tree(out)
    with pytest.raises(RuntimeError):
        with atomic_path(out, stage="s", kind="dir") as tmp:
            tmp.mkdir()
            raise RuntimeError("boom")
    assert _tree(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


# ------------------------------------------------------------------------------------------------ temporaries
def test_stale_temporary_removed_live_and_foreign_kept(tmp_path):
    out = tmp_path / "frames"
    host = io._host()
    dead = tmp_path / f".frames.{host}.{_dead_pid()}.abc123_x.tmp"
    live = tmp_path / f".frames.{host}.{os.getppid()}.def456.tmp"
    other_host = tmp_path / f".frames.{host}x-other.{_dead_pid()}.ghi789.tmp"
    other_output = tmp_path / f".frames2.{host}.{_dead_pid()}.jkl012.tmp"
    legacy = tmp_path / ".frames.q1w2e3r4.tmp"  # the old naming: no host/PID, cannot be proven stale
    for d in (dead, live, other_host, other_output, legacy):
        (d / "out").mkdir(parents=True)
    assert clean_stale_temporaries(out) == [dead]
    assert not dead.exists() and all(d.exists() for d in (live, other_host, other_output, legacy))
    dead2 = tmp_path / f".frames.{host}.{_dead_pid()}.mno345.tmp"
    (dead2 / "out" / "x").mkdir(parents=True)
    with atomic_path(out, stage="s", kind="dir") as tmp:  # the next run of the output cleans up
        assert tmp.parent.name.startswith(f".frames.{host}.{os.getpid()}.") and tmp.parent.name.endswith(".tmp")
        tmp.mkdir()
    assert not dead2.exists() and live.exists()


def test_pid_alive():
    assert io._pid_alive(os.getpid())
    assert not io._pid_alive(_dead_pid())


# ------------------------------------------------------------------------------------------------ writability
def test_check_writable_leaves_nothing(tmp_path):
    (tmp_path / "a").mkdir()
    check_writable(tmp_path / "a" / "out.csv")
    check_writable(tmp_path / "a" / "b" / "c" / "out.csv")  # missing parents: probed in the nearest existing one
    assert [p.name for p in tmp_path.iterdir()] == ["a"] and not list((tmp_path / "a").iterdir())


def test_check_writable_parent_is_a_file(tmp_path):
    (tmp_path / "blocker").write_text("x")
    with pytest.raises(OutputError, match=r"out\.csv: output location is not writable: .*blocker is a file"):
        check_writable(tmp_path / "blocker" / "sub" / "out.csv")
    with pytest.raises(OutputError, match="not writable"):
        check_outputs([tmp_path / "ok.csv", tmp_path / "blocker" / "out.csv"])
    assert (tmp_path / "blocker").read_text() == "x"


def test_check_writable_read_only_folder(read_only_dir):
    with pytest.raises(OutputError, match=r"out\.csv: output location is not writable: Permission denied"):
        check_writable(read_only_dir / "out.csv")


def test_check_outputs_refuses_before_creating_anything(tmp_path):
    (tmp_path / "in").mkdir()
    with pytest.raises(OutputError, match="lies inside the input"):
        check_outputs([tmp_path / "new" / "a.csv", tmp_path / "in" / "b.csv"], inputs=[tmp_path / "in"])
    assert not (tmp_path / "new").exists()  # the first output's parent was not created
    with pytest.raises(OutputError, match="ends with a path separator"):
        check_outputs([str(tmp_path / "nofile") + "/"])
    check_outputs([None, tmp_path / "c" / "d.csv"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]
