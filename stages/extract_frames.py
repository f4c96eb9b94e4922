"""Workflow step: extract Toybox video frames (1 fps, size x size PNGs) into a frames folder."""
from __future__ import annotations

import argparse
import os

from augmem.data.frames import STAGE, extract_frames
from augmem.io import InputError, check_outputs


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m stages.extract_frames", description=__doc__)
    ap.add_argument("--videos", required=True, help="Toybox video root: <supercat>/<object folder>/*.mp4")
    ap.add_argument("--out", required=True,
                    help="frames folder to create (replaced atomically; only an earlier frames output or empty folder)")
    ap.add_argument("--fps", type=float, default=1.0, help="frames per second to keep; 0 = every frame (default 1)")
    ap.add_argument("--size", type=int, default=224, help="output width and height in pixels (default 224)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallel ffmpeg processes")
    args = ap.parse_args(argv)
    try:
        check_outputs([args.out], inputs=[args.videos], stage=STAGE, kind="dir")
        counts = extract_frames(args.videos, args.out, fps=args.fps or None, size=args.size, jobs=args.jobs)
    except InputError as e:
        raise SystemExit(f"error: {e}")
    print(f"extracted {sum(counts.values())} frames from {len(counts)} videos into {args.out}")


if __name__ == "__main__":
    main()
