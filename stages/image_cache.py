"""Workflow step: decode and resize every image the task set-up can use into one memory-mapped uint8 array.

Writes ``<out-prefix>.u8`` (N x size x size x 3) and ``<out-prefix>.json`` (shape, size, ordered im_paths); see
:mod:`augmem.data.image_cache`. Example (the demo's CORe50 at 64 x 64):

    python -m stages.image_cache --layout core50 --dirmap data/interim/core50_demo/dirmap_raw.csv \\
        --image-root data/raw/core50_demo/core50_128x128 --size 64 --sample-rate 60 \\
        --out-prefix data/interim/core50_demo/cache/images_64
"""
from __future__ import annotations

import argparse
import sys

from augmem.data import layouts
from augmem.data.image_cache import build_image_cache, cache_files
from augmem.io import InputError, check_outputs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m stages.image_cache", description=__doc__.splitlines()[0],
                                 epilog="\n".join(__doc__.splitlines()[2:]),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    layouts.add_layout_option(ap, help="dataset layout (CORe50 keeps the sampled frames)")
    ap.add_argument("--dirmap", required=True, help="the dirmap CSV the task filelists are made from")
    ap.add_argument("--image-root", required=True, help="folder the dirmap's im_path values are relative to")
    ap.add_argument("--size", required=True, type=int, help="image size (the run's image_size)")
    ap.add_argument("--sample-rate", type=int, default=20, help="CORe50 frame step (default 20)")
    ap.add_argument("--threads", type=int, default=None, help="decoding threads (default: CPU count)")
    ap.add_argument("--out-prefix", required=True, help="writes <prefix>.u8 and <prefix>.json")
    args = ap.parse_args(argv)
    try:
        check_outputs(cache_files(args.out_prefix, ".u8"), inputs=[args.dirmap, args.image_root])
        build_image_cache(args.dirmap, args.layout, args.image_root, args.size, args.out_prefix,
                          sample_rate=args.sample_rate, n_threads=args.threads, log=lambda m: print(m, flush=True))
    except InputError as e:
        raise SystemExit(f"error: {e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
