"""Workflow step: summary statistics of a dirmap (spec 2.6), optionally checked against expected values."""
from __future__ import annotations

import argparse

from augmem.data.dirmap import read_dirmap
from augmem.data.stats import check_dataset_classes, check_stats, dirmap_stats
from augmem.io import InputError, check_outputs, write_json


def parse_expect(items: list[str]) -> dict[str, float]:
    """``KEY=VALUE`` strings -> {key: number}."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        try:
            if not sep or not key:
                raise ValueError
            out[key.strip()] = float(value)
        except ValueError:
            raise InputError(f"--expect {item!r}: expected KEY=NUMBER") from None
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m stages.dirmap_stats", description=__doc__)
    ap.add_argument("--dirmap", required=True, help="dirmap CSV")
    ap.add_argument("--out", required=True, help="JSON file with the statistics (written only if all checks pass)")
    ap.add_argument("--expect", nargs="*", default=[], metavar="KEY=VALUE",
                    help="expected values, e.g. images_per_class_min=4350 total_sessions=3480")
    ap.add_argument("--frames-per-session", type=int, default=15,
                    help="threshold of the 'sessions after filter' count (default 15)")
    ap.add_argument("--dataset-classes", type=int, metavar="N",
                    help="the dataset's n_class (the network's outputs): the dirmap must hold exactly N classes")
    args = ap.parse_args(argv)
    try:
        check_outputs([args.out], inputs=[args.dirmap])
        expected = parse_expect(args.expect)
        dirmap = read_dirmap(args.dirmap, ["class", "object", "session", "im_num"])
        if args.dataset_classes is not None:
            check_dataset_classes(dirmap, args.dataset_classes, source=args.dirmap)
        stats = dirmap_stats(dirmap, frames_per_session=args.frames_per_session)
        check_stats(stats, expected)
    except InputError as e:
        raise SystemExit(f"error: {e}")
    write_json(args.out, stats)
    print(" ".join(f"{k}={v}" for k, v in stats.items()))


if __name__ == "__main__":
    main()
