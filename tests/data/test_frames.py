"""Frame extraction with a real (tiny) ffmpeg-generated video; a corrupt video must stop the step cleanly."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from augmem.data.ffmpeg_bin import ffmpeg_exe
from augmem.data.frames import extract_frames
from augmem.io import InputError

REPO = Path(__file__).resolve().parents[2]
OBJ = "cup_01_pivothead"


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    """A 3.5 s, 10 fps, 64x48 test-pattern mp4 (made once per module)."""
    out = tmp_path_factory.mktemp("video") / "clip.mp4"
    subprocess.run([ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-f", "lavfi",
                    "-i", "testsrc=size=64x48:rate=10", "-t", "3.5", "-pix_fmt", "yuv420p", str(out)], check=True)
    return out


def make_videos(root: Path, video: Path, transformations=("rxplus", "present")) -> Path:
    """``<root>/household/cup_01_pivothead/cup_01_pivothead_<t>.mp4`` for each transformation."""
    folder = root / "household" / OBJ
    folder.mkdir(parents=True)
    for t in transformations:
        shutil.copy(video, folder / f"{OBJ}_{t}.mp4")
    return root


def test_extract_one_fps_names_count_and_size(tmp_path, video):
    videos = make_videos(tmp_path / "raw videos", video)  # a space in the path: no shell is involved
    out = tmp_path / "frames out"
    counts = extract_frames(videos, out, fps=1, size=32, jobs=2)
    # 3.5 s at 1 fps: ffmpeg's fps filter (round to nearest) gives frames at t = 0, 1, 2, 3 -> 4 frames.
    assert counts == {f"household/{OBJ}/{OBJ}_present.mp4": 4, f"household/{OBJ}/{OBJ}_rxplus.mp4": 4}
    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert names == sorted(f"household/{OBJ}/{OBJ}_{t}_{k}.png" for t in ("present", "rxplus") for k in range(1, 5))
    with Image.open(out / "household" / OBJ / f"{OBJ}_rxplus_1.png") as im:
        assert im.size == (32, 32)  # resized to exactly size x size, aspect ratio not kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames out", "raw videos"]  # no temporaries left


def test_extract_every_frame_when_fps_zero(tmp_path, video):
    videos = make_videos(tmp_path / "v", video, transformations=("tx",))
    counts = extract_frames(videos, tmp_path / "f", fps=0, size=16)
    assert counts == {f"household/{OBJ}/{OBJ}_tx.mp4": 35}  # 3.5 s x 10 fps
    assert (tmp_path / "f" / "household" / OBJ / f"{OBJ}_tx_35.png").is_file()
    assert not (tmp_path / "f" / "household" / OBJ / f"{OBJ}_tx_36.png").exists()


def test_corrupt_video_raises_and_leaves_no_output(tmp_path, video):
    videos = make_videos(tmp_path / "v", video, transformations=("rxplus",))
    bad = videos / "household" / OBJ / f"{OBJ}_ryplus.mp4"
    bad.write_bytes(bytes(range(256)) * 40)
    out = tmp_path / "frames"
    with pytest.raises(InputError, match="cup_01_pivothead_ryplus.mp4"):
        extract_frames(videos, out, jobs=2)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v"]  # no temporary folder left behind either


def test_no_videos_is_an_input_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no videos found"):
        extract_frames(tmp_path / "empty", tmp_path / "out")


def test_stage_help_and_run(tmp_path, video):
    help_ = subprocess.run([sys.executable, "-m", "stages.extract_frames", "--help"], cwd=REPO,
                           capture_output=True, text=True)
    assert help_.returncode == 0 and "--fps" in help_.stdout
    videos = make_videos(tmp_path / "v", video, transformations=("hodgepodge",))
    run = subprocess.run([sys.executable, "-m", "stages.extract_frames", "--videos", str(videos),
                          "--out", str(tmp_path / "f"), "--size", "24", "--jobs", "1"], cwd=REPO,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in (tmp_path / "f" / "household" / OBJ).iterdir()) == \
        [f"{OBJ}_hodgepodge_{k}.png" for k in range(1, 5)]
    bad = subprocess.run([sys.executable, "-m", "stages.extract_frames", "--videos", str(tmp_path / "nope"),
                          "--out", str(tmp_path / "g")], cwd=REPO, capture_output=True, text=True)
    assert bad.returncode != 0 and bad.stderr.strip().startswith("error:") and "nope" in bad.stderr
