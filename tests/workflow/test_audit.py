"""The file-access audit (augmem.audit) behind test_file_access: what a stage process records, and how the events
become each job's reads, final writes and removals."""
from __future__ import annotations

import os
import subprocess
import sys

from augmem.audit import job_effects, read_log

from .helpers import REPO

SCRIPT = r"""
import multiprocessing, os, shutil, subprocess, sys
import stages  # installs the hook (AUGMEM_AUDIT_LOG is set)
from augmem.io import write_json
d = sys.argv[1]
open(os.path.join(d, "in.txt")).read()                                     # a read
write_json(os.path.join(d, "out", "result.json"), {"a": 1})                # temporary name, renamed into place
os.makedirs(os.path.join(d, "scratch", "x"))
open(os.path.join(d, "scratch", "x", "f"), "w").close()
shutil.rmtree(os.path.join(d, "scratch"))                                  # created and removed again: no write
os.remove(os.path.join(d, "old.txt"))                                      # an existing file removed
try:
    open(os.path.join(d, "missing.txt"))                                   # a probe: not a read
except FileNotFoundError:
    pass
ctx = multiprocessing.get_context("fork")
p = ctx.Process(target=lambda: open(os.path.join(d, "child.txt"), "w").close())
p.start(); p.join()                                                        # a worker's write counts for the stage
subprocess.run(["true", "-i", "video.mp4"], cwd=d, check=True)              # recorded with its arguments
os.listdir(d)
"""


def test_audit_records_a_stage_and_its_worker(tmp_path):
    d = tmp_path / "work"
    d.mkdir()
    (d / "in.txt").write_text("x")
    (d / "old.txt").write_text("x")
    log = tmp_path / "audit.jsonl"
    env = dict(os.environ, AUGMEM_AUDIT_LOG=str(log))
    env.pop("AUGMEM_AUDIT_JOB", None)
    subprocess.run([sys.executable, "-c", SCRIPT, str(d)], cwd=REPO, env=env, check=True, timeout=120)
    events = read_log(log)
    assert len({e["pid"] for e in events}) == 2, "the forked worker's events are missing"
    assert all(e["job"][0] == "-c" and e["job"][-1] == str(d) for e in events)
    (effects,) = job_effects(events).values()
    inside = lambda paths: {os.path.relpath(p, d) for p in paths if p.startswith(str(d) + "/")}  # noqa: E731
    assert inside(effects["writes"]) == {"out", "out/result.json", "child.txt"}
    assert inside(effects["removed"]) == {"old.txt"}
    assert "in.txt" in inside(effects["reads"]) and "missing.txt" not in inside(effects["reads"])
    assert str(d) in effects["reads"]  # the listing
    (run,) = [e for e in events if e["event"] == "exec"]
    assert run["args"] == ["true", "-i", "video.mp4"] and run["cwd"] == str(d)
    assert {"scratch", "scratch/x/f", "out/result.json"} <= inside(effects["created"])


def test_ffmpeg_commands_count_with_their_files():
    events = [
        {"job": ["-m", "stages.x"], "pid": 1, "event": "mkdtemp", "path": "/w/.frames.tmp"},
        {"job": ["-m", "stages.x"], "pid": 1, "event": "exec", "executable": None, "cwd": "/w",
         "args": ["/opt/bin/ffmpeg", "-i", "raw/v.mp4", "-s", "64x64", "/w/.frames.tmp/out/v_%d.png", "-nostdin",
                  "-loglevel", "error", "-map_metadata", "-1", "-y"]},
        {"job": ["-m", "stages.x"], "pid": 1, "event": "exec", "executable": None, "cwd": "/w",
         "args": ["/opt/bin/ffmpeg", "-hide_banner", "-encoders"]},
        {"job": ["-m", "stages.x"], "pid": 1, "event": "rename", "path": "/w/.frames.tmp/out", "dst": "/w/frames"},
        {"job": ["-m", "stages.x"], "pid": 1, "event": "remove", "path": "/w/.frames.tmp"},
    ]
    (effects,) = job_effects(events).values()
    assert effects["reads"] == {"/w/raw/v.mp4"}
    assert effects["writes"] == {"/w/frames", "/w/frames/v_%d.png"}
    assert effects["removed"] == set()


def test_without_the_variable_nothing_is_installed():
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUGMEM_AUDIT")}
    out = subprocess.run([sys.executable, "-c", "import stages, augmem.audit as a; print(a._state['fd'] is None)"],
                         cwd=REPO, env=env, check=True, capture_output=True, text=True, timeout=120).stdout
    assert out.strip() == "True"
