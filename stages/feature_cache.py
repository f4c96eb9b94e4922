"""Workflow step: compute a frozen backbone front's features of every cached image once (float16 memmap).

Reads a decoded-image cache (``stages.image_cache``) and writes ``<out-prefix>.f16`` (N x C x h x w) and
``<out-prefix>.json``; see :mod:`augmem.data.feature_cache`. ``--weights`` must be what the agents load ('imagenet'
or a state-dict file); 'none' (random init, seeded per job) cannot be cached. Example:

    python -m stages.feature_cache --image-cache data/interim/core50_demo/cache/images_64 --backbone squeezenet \\
        --weights data/weights/squeezenet1_0_demo.pth \\
        --out-prefix data/interim/core50_demo/cache/features_squeezenet_squeezenet1_0_demo_64
"""
from __future__ import annotations

import argparse
import sys

import torch

from augmem.data.feature_cache import build_feature_cache
from augmem.data.image_cache import cache_files
from augmem.io import InputError, check_outputs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m stages.feature_cache", description=__doc__.splitlines()[0],
                                 epilog="\n".join(__doc__.splitlines()[2:]),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image-cache", required=True, metavar="PREFIX", help="decoded-image cache prefix")
    ap.add_argument("--backbone", default="squeezenet", help="backbone (only SqueezeNet's front is cacheable)")
    ap.add_argument("--weights", required=True, help="'imagenet' or a state-dict file (as the agents get it)")
    ap.add_argument("--out-prefix", required=True, help="writes <prefix>.f16 and <prefix>.json")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = ap.parse_args(argv)
    try:
        inputs = [*cache_files(args.image_cache, ".u8"), None if args.weights in ("imagenet", "none") else args.weights]
        check_outputs(cache_files(args.out_prefix, ".f16"), inputs=inputs)
    except InputError as e:
        raise SystemExit(f"error: {e}")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        if args.device == "cuda" and not torch.cuda.is_available():
            raise InputError("--device cuda: no CUDA device available")
        device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
        build_feature_cache(args.image_cache, args.backbone, args.weights, args.out_prefix,
                            batch_size=args.batch_size, device=device, log=lambda m: print(m, flush=True))
    except InputError as e:
        raise SystemExit(f"error: {e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
