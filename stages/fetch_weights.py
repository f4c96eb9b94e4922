"""Fetch torchvision's ImageNet weights into a local state-dict file (needs a network once; jobs then run offline).

    python -m stages.fetch_weights --arch squeezenet1_0 --out data/weights/squeezenet1_0_imagenet.pth
"""
from __future__ import annotations

import argparse

import torch
from torchvision import models as tvm

from augmem.io import InputError, atomic_path, check_outputs

ARCHS = {
    "squeezenet1_0": (tvm.squeezenet1_0, tvm.SqueezeNet1_0_Weights.IMAGENET1K_V1),
    "mobilenet_v2": (tvm.mobilenet_v2, tvm.MobileNet_V2_Weights.IMAGENET1K_V1),
}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", choices=sorted(ARCHS), required=True)
    ap.add_argument("--out", required=True, help="state-dict file to write")
    args = ap.parse_args(argv)
    try:
        check_outputs([args.out])
    except InputError as e:
        raise SystemExit(f"error: {e}")
    ctor, weights = ARCHS[args.arch]
    try:
        model = ctor(weights=weights)
    except Exception as exc:  # no network, proxy, ...
        raise SystemExit(f"error: cannot fetch {args.arch} ImageNet weights ({exc}); download them on a machine with "
                         f"a network or place a state-dict file at {args.out}")
    with atomic_path(args.out) as tmp:
        torch.save(model.state_dict(), tmp)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
