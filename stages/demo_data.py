"""Stage: write the embedded demo data set of one kind (synthetic, deterministic, in the real raw layout).

    python -m stages.demo_data --kind toybox --out data/raw/toybox [--seed 0] [--jobs N] [--image-size N] ...

Prints the summary (counts, bytes) as JSON. See ``augmem.data.demo`` for the layouts and the built-in edge cases.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from augmem.data import demo
from augmem.io import InputError, check_outputs


def _ints(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from exc


def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m stages.demo_data", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kind", required=True, choices=sorted(demo.MAKERS), help="which dataset layout to write")
    p.add_argument("--out", required=True,
                   help="output folder (replaced atomically; only an earlier demo_data output or an empty folder)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--jobs", type=int, default=None, help="parallel workers (default: number of CPUs, at most 8)")
    p.add_argument("--image-size", type=int, default=None,
                   help="image side in pixels (default 64; 32 for cifar100)")

    g = p.add_argument_group("toybox")
    g.add_argument("--objects-per-category", type=int, default=3, help="objects NN=01.. per category (default 3)")
    g.add_argument("--fps", type=int, default=10, help="video frame rate (default 10)")
    g.add_argument("--seconds", type=int, default=6, help="video length in seconds (default 6)")
    g.add_argument("--short-seconds", type=int, default=4,
                   help="length of the one short video, horse_01 rxminus (default 4)")
    g.add_argument("--no-edge-cases", action="store_true",
                   help="toybox: no short and no missing video; ilab2mlight: no short session")

    g = p.add_argument_group("ilab2mlight")
    g.add_argument("--ilab-classes", type=_names, default=list(demo.ILAB_CLASSES),
                   help="comma-separated class names (default %(default)s; 'semi' is removed by the sampling)")
    g.add_argument("--instances-per-class", type=int, default=4, help="instances per class (default 4)")
    g.add_argument("--backgrounds-per-instance", type=int, default=5, help="backgrounds per instance (default 5)")
    g.add_argument("--cameras", type=int, default=2, help="cameras (default 2)")
    g.add_argument("--rotations", type=int, default=2, help="rotations (default 2)")
    g.add_argument("--lightings", type=int, default=2, help="lightings (default 2)")
    g.add_argument("--jpeg-quality", type=int, default=90, help="JPEG quality (default 90)")

    g = p.add_argument_group("core50")
    g.add_argument("--objects", type=int, default=30, help="objects 1..N, 5 per class (default 30)")
    g.add_argument("--sessions", type=int, default=11, help="sessions 1..N (default 11)")
    g.add_argument("--frames", type=_ints, default=list(demo.CORE50_FRAMES),
                   help="frame numbers kept by the sampling (default 10,70,130,190,250)")
    g.add_argument("--extra-frames", type=_ints, default=list(demo.CORE50_EXTRA_FRAMES),
                   help="extra frame numbers the sampling drops, some missing (default 0,40)")

    g = p.add_argument_group("cifar100")
    g.add_argument("--cifar-classes", type=_names, default=list(demo.CIFAR100_CLASSES),
                   help="comma-separated CIFAR-100 class names (default: 10 real ones)")
    g.add_argument("--train-per-class", type=int, default=50, help="train images per class (default 50)")
    g.add_argument("--test-per-class", type=int, default=10, help="test images per class (default 10)")
    return p


def run(args: argparse.Namespace) -> dict:
    common = {"seed": args.seed, "jobs": args.jobs}
    if args.image_size is not None:
        common["image_size"] = args.image_size
    if args.kind == "toybox":
        edges = {"short_video": None, "missing_video": None} if args.no_edge_cases else {}
        return demo.make_toybox(args.out, objects_per_category=args.objects_per_category, fps=args.fps,
                                seconds=args.seconds, short_seconds=args.short_seconds, **edges, **common)
    if args.kind == "ilab2mlight":
        edges = {"short_session": None} if args.no_edge_cases else {}
        return demo.make_ilab2mlight(args.out, classes=args.ilab_classes, instances_per_class=args.instances_per_class,
                                     backgrounds_per_instance=args.backgrounds_per_instance, cameras=args.cameras,
                                     rotations=args.rotations, lightings=args.lightings, quality=args.jpeg_quality,
                                     **edges, **common)
    if args.kind == "core50":
        return demo.make_core50(args.out, objects=args.objects, sessions=args.sessions, frames=args.frames,
                                extra_frames=args.extra_frames, **common)
    return demo.make_cifar100(args.out, classes=args.cifar_classes, train_per_class=args.train_per_class,
                              test_per_class=args.test_per_class, **common)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    t0 = time.perf_counter()
    try:
        check_outputs([args.out], stage=demo.STAGE, kind="dir")
        summary = run(args)
    except InputError as exc:
        hint = " (or pass --no-edge-cases)" if "edge case" in str(exc) else ""
        raise SystemExit(f"error: {exc}{hint}")
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    json.dump(summary, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
