"""Pre-train a backbone on a dataset's images and save a torchvision-layout state dict (the demo's weights).

    python -m stages.pretrain --arch squeezenet1_0 --dirmap data/interim/toybox_demo/dirmap_balanced.csv \
        --image-root data/interim/toybox_demo/frames --image-size 64 --epochs 15 --out data/weights/squeezenet1_0_demo.pth
"""
from __future__ import annotations

import argparse

import torch

from augmem.io import InputError, atomic_path, check_outputs, read_csv_checked
from augmem.models.pretrain import ARCHS, load_images, pretrain


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", choices=sorted(ARCHS), default="squeezenet1_0")
    ap.add_argument("--dirmap", required=True, help="dirmap CSV (class, im_path columns)")
    ap.add_argument("--image-root", required=True, help="folder the dirmap's im_path values are relative to")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--lr", type=float, default=0.001)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--out", required=True, help="state-dict file to write")
    args = ap.parse_args(argv)
    inputs = [args.dirmap, args.image_root]
    try:
        check_outputs([args.out], inputs=inputs)
    except InputError as e:
        raise SystemExit(f"error: {e}")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        dirmap = read_csv_checked(args.dirmap, ["class", "im_path"])
        x, y = load_images(dirmap, args.image_root, args.image_size)
    except InputError as e:
        raise SystemExit(f"error: {e}")
    state = pretrain(args.arch, x, y, args.epochs, args.lr, args.batch_size, args.seed)
    with atomic_path(args.out, inputs=inputs) as tmp:
        torch.save(state, tmp)
    print(f"wrote {args.out} ({len(y)} images, {int(y.max()) + 1} classes)")


if __name__ == "__main__":
    main()
