"""Toybox frame extraction with ffmpeg (spec 2.1 steps 1-2), parallel over videos, atomic on the output folder.

Input ``<videos_root>/<supercat>/<object folder>/<video>.mp4``; output
``<out_root>/<supercat>/<object folder>/<video stem>_<k>.png`` with k = 1, 2, ... (ffmpeg's ``%d``), sampled at
``fps`` frames per second (every frame when fps is None or 0) and resized to exactly size x size, as
``ffmpeg -i <video> -s 224x224 -vf fps=1 <stem>_%d.png`` did. ffmpeg is run with an argument list (ffmpeg-python),
never through a shell. Every video is extracted, whatever its transformation; the dirmap filters later.
"""
from __future__ import annotations

import concurrent.futures as cf
import os
import re
from pathlib import Path

import ffmpeg

from augmem.data.ffmpeg_bin import ffmpeg_exe
from augmem.io import InputError, atomic_path

STDERR_TAIL_LINES = 8
STAGE = "extract_frames"  # the name in the frames folder's output marker (augmem.io.MARKER)


def find_videos(videos_root: str | os.PathLike) -> list[Path]:
    """All ``<supercat>/<object folder>/*.mp4`` under videos_root, sorted."""
    root = Path(videos_root)
    if not root.is_dir():
        raise InputError(f"{root}: videos folder not found")
    videos = sorted(p for p in root.glob("*/*/*.mp4") if p.is_file())
    if not videos:
        raise InputError(f"{root}: no videos found (expected <supercat>/<object folder>/*.mp4)")
    return videos


def _tail(stderr: bytes | None) -> str:
    lines = (stderr or b"").decode("utf-8", "replace").strip().splitlines()
    return " | ".join(lines[-STDERR_TAIL_LINES:]) or "(no ffmpeg output)"


def extract_video(video: Path, out_dir: Path, fps: float | None = 1, size: int = 224) -> int:
    """Extract one video's frames into ``out_dir`` as ``<stem>_%d.png``; return the number of frames written."""
    stream = ffmpeg.input(str(video))
    if fps:
        stream = stream.filter("fps", fps=fps)
    pattern = out_dir / (video.stem.replace("%", "%%") + "_%d.png")
    cmd = (stream.output(str(pattern), s=f"{size}x{size}")
           .global_args("-nostdin", "-hide_banner", "-loglevel", "error")
           .overwrite_output())
    try:
        cmd.run(cmd=ffmpeg_exe(), capture_stdout=True, capture_stderr=True)
    except ffmpeg.Error as exc:
        raise InputError(f"{video}: ffmpeg could not decode the video: {_tail(exc.stderr)}") from None
    frame_name = re.compile(re.escape(video.stem) + r"_\d+\.png")
    n = sum(1 for name in os.listdir(out_dir) if frame_name.fullmatch(name))
    if n == 0:
        raise InputError(f"{video}: ffmpeg wrote no frames")
    return n


def extract_frames(videos_root: str | os.PathLike, out_root: str | os.PathLike, fps: float | None = 1,
                   size: int = 224, jobs: int = 1) -> dict[str, int]:
    """Extract every video under ``videos_root`` into ``out_root`` (replaced atomically when all succeed).

    Runs ``jobs`` ffmpeg processes at a time. The first failure stops the step (pending videos are cancelled) with
    an InputError naming the video; nothing is left at ``out_root``. ``out_root`` must not overlap ``videos_root``
    and may only replace an earlier frames folder (see :func:`augmem.io.atomic_path`). Returns {video path relative
    to videos_root: number of frames}.
    """
    if size < 1:
        raise InputError(f"size must be a positive number of pixels, not {size}")
    if fps is not None and fps < 0:
        raise InputError(f"fps must be positive (or 0 for every frame), not {fps}")
    root = Path(videos_root)
    videos = find_videos(root)
    counts: dict[str, int] = {}
    with atomic_path(out_root, inputs=[root], stage=STAGE, kind="dir") as tmp:
        targets = []
        for video in videos:
            rel = video.parent.relative_to(root)
            (tmp / rel).mkdir(parents=True, exist_ok=True)
            targets.append((video, tmp / rel))
        errors: dict[Path, BaseException] = {}
        with cf.ThreadPoolExecutor(max_workers=max(1, int(jobs))) as pool:
            futures = {pool.submit(extract_video, v, d, fps, size): v for v, d in targets}
            for fut in cf.as_completed(futures):
                video = futures[fut]
                try:
                    counts[video.relative_to(root).as_posix()] = fut.result()
                except cf.CancelledError:
                    continue
                except BaseException as exc:  # noqa: BLE001 - re-raised below
                    errors[video] = exc
                    for other in futures:
                        other.cancel()
        if errors:
            raise errors[min(errors)]  # the first failing video in sorted order, whichever finished first
    return dict(sorted(counts.items()))
