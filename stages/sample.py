"""Workflow step: balanced sampling of a dirmap whose layout has a balancing step (Toybox, iLab: spec 2.2 / 2.4)."""
from __future__ import annotations

import argparse

from augmem.data import layouts
from augmem.data.dirmap import read_dirmap
from augmem.io import InputError, check_outputs, write_csv


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m stages.sample", description=__doc__)
    layouts.add_layout_option(ap, allowed=[lay.name for lay in layouts.LAYOUTS.values() if lay.balance])
    ap.add_argument("--dirmap", required=True, help="unbalanced (toybox) or full (ilab) dirmap CSV")
    ap.add_argument("--out", required=True, help="balanced dirmap CSV to write (with its index)")
    ap.add_argument("--objects-per-class", type=int, required=True)
    ap.add_argument("--sessions-per-object", type=int, required=True)
    ap.add_argument("--frames-per-session", type=int, required=True)
    ap.add_argument("--seed", type=int, default=0, help="ilab: Python random seed (default 0)")
    args = ap.parse_args(argv)
    sizes = dict(objects_per_class=args.objects_per_class, sessions_per_object=args.sessions_per_object,
                 frames_per_session=args.frames_per_session)
    balancing = layouts.BALANCING[layouts.get(args.layout).balance]
    if balancing.seeded:
        sizes["seed"] = args.seed
    try:
        check_outputs([args.out], inputs=[args.dirmap])
        # Read without index_col: the old index becomes `Unnamed: 0` (Toybox: it takes part in drop_duplicates).
        out = balancing.fn(read_dirmap(args.dirmap, list(balancing.columns)), **sizes)
    except InputError as e:
        raise SystemExit(f"error: {e}")
    write_csv(args.out, out)
    print(f"{args.layout} balanced dirmap: {len(out)} rows -> {args.out}")


if __name__ == "__main__":
    main()
