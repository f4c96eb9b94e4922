"""Dirmap statistics (spec 2.6) and their check; the published Toybox dirmap gives the section-13 numbers."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from augmem.data.stats import STAT_KEYS, check_stats, dirmap_stats
from augmem.io import InputError

REPO = Path(__file__).resolve().parents[2]
REF = Path("/work/shared/reference/dirmaps")
needs_ref = pytest.mark.skipif(not REF.is_dir(), reason="reference dirmaps not available")

TOYBOX_EXPECTED = {
    "n_images": 52200, "n_classes": 12, "images_per_class_min": 4350, "images_per_class_max": 4350,
    "images_per_session_mean": 15, "images_per_session_min": 15, "images_per_session_max": 15,
    "sessions_per_object_mean": 10, "sessions_per_object_min": 10, "sessions_per_object_max": 10,
    "sessions_per_class_mean": 290, "sessions_per_class_min": 290, "sessions_per_class_max": 290,
    "objects_per_class_min": 29, "objects_per_class_max": 29, "total_sessions": 3480, "sessions_after_filter": 3480,
}


@needs_ref
def test_published_toybox_numbers():
    stats = dirmap_stats(pd.read_csv(REF / "toybox_dirmap.csv"))
    assert stats == TOYBOX_EXPECTED
    check_stats(stats, TOYBOX_EXPECTED)


def test_small_dirmap_figures_and_threshold():
    rows = [(1, 1, 1, k) for k in range(1, 4)] + [(1, 1, 2, k) for k in range(1, 3)] + \
           [(1, 2, 1, k) for k in range(1, 4)] + [(2, 1, 1, k) for k in range(1, 5)]
    df = pd.DataFrame(rows, columns=["class", "object", "session", "im_num"])
    stats = dirmap_stats(df, frames_per_session=3)
    assert list(stats) == STAT_KEYS
    assert stats["images_per_class_min"] == 4 and stats["images_per_class_max"] == 8
    assert stats["images_per_session_mean"] == 3 and stats["images_per_session_min"] == 2
    assert stats["images_per_session_max"] == 4
    assert stats["sessions_per_object_mean"] == pytest.approx(4 / 3)
    assert (stats["sessions_per_object_min"], stats["sessions_per_object_max"]) == (1, 2)
    assert stats["sessions_per_class_mean"] == 2 and stats["sessions_per_class_min"] == 1
    assert stats["sessions_per_class_max"] == 3
    assert (stats["objects_per_class_min"], stats["objects_per_class_max"]) == (1, 2)
    assert stats["total_sessions"] == 4
    assert stats["sessions_after_filter"] == 3  # the 2-frame session is below the threshold
    assert dirmap_stats(df, frames_per_session=4)["sessions_after_filter"] == 1
    json.dumps(stats)  # plain Python numbers


def test_check_stats_lists_every_mismatch():
    stats = {"total_sessions": 3480, "images_per_session_mean": 15.0}
    check_stats(stats, {"total_sessions": 3480.0, "images_per_session_mean": 15})
    with pytest.raises(InputError) as err:
        check_stats(stats, {"total_sessions": 3136, "images_per_session_mean": 14, "bogus": 1})
    msg = str(err.value)
    assert "total_sessions: expected 3136, got 3480" in msg
    assert "images_per_session_mean: expected 14, got 15.0" in msg
    assert "bogus: unknown statistic" in msg


@needs_ref
def test_stats_stage(tmp_path):
    out = tmp_path / "stats.json"
    base = [sys.executable, "-m", "stages.dirmap_stats", "--dirmap", str(REF / "toybox_dirmap.csv"), "--out", str(out)]
    run = subprocess.run(base + ["--expect", "images_per_class_min=4350", "total_sessions=3480"], cwd=REPO,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert json.loads(out.read_text()) == TOYBOX_EXPECTED
    out.unlink()
    run = subprocess.run(base + ["--expect", "images_per_class_min=3360", "objects_per_class_max=28"], cwd=REPO,
                         capture_output=True, text=True)
    assert run.returncode == 1 and not out.exists()
    assert "images_per_class_min: expected 3360, got 4350" in run.stderr
    assert "objects_per_class_max: expected 28, got 29" in run.stderr
    run = subprocess.run(base + ["--expect", "oops"], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 1 and "KEY=NUMBER" in run.stderr
    help_ = subprocess.run([sys.executable, "-m", "stages.dirmap_stats", "--help"], cwd=REPO, capture_output=True,
                           text=True)
    assert help_.returncode == 0 and "--expect" in help_.stdout
