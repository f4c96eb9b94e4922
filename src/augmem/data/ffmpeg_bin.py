"""Locate the ffmpeg executable: PATH first, then the binary shipped by the ``imageio-ffmpeg`` package."""
from __future__ import annotations

import functools
import shutil


@functools.lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    exe = shutil.which("ffmpeg")
    if exe:
        return exe
    try:
        import imageio_ffmpeg
    except ImportError as exc:  # pragma: no cover - dependency is declared in pyproject
        raise RuntimeError("ffmpeg not found on PATH and the imageio-ffmpeg package is not installed") from exc
    return imageio_ffmpeg.get_ffmpeg_exe()
