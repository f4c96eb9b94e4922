"""Workflow step: balanced sampling of the Toybox or iLab dirmap (spec 2.2 / 2.4)."""
from __future__ import annotations

import argparse

from augmem.data.dirmap import ILAB_COLUMNS, DIRMAP_COLUMNS, read_dirmap
from augmem.data.sample import balance_ilab, balance_toybox
from augmem.io import InputError, check_outputs, write_csv


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m stages.sample", description=__doc__)
    ap.add_argument("--kind", required=True, choices=["toybox", "ilab2mlight"], help="dataset")
    ap.add_argument("--dirmap", required=True, help="unbalanced (toybox) or full (ilab2mlight) dirmap CSV")
    ap.add_argument("--out", required=True, help="balanced dirmap CSV to write (with its index)")
    ap.add_argument("--objects-per-class", type=int, required=True)
    ap.add_argument("--sessions-per-object", type=int, required=True)
    ap.add_argument("--frames-per-session", type=int, required=True)
    ap.add_argument("--seed", type=int, default=0, help="ilab2mlight: Python random seed (default 0)")
    args = ap.parse_args(argv)
    sizes = dict(objects_per_class=args.objects_per_class, sessions_per_object=args.sessions_per_object,
                 frames_per_session=args.frames_per_session)
    try:
        check_outputs([args.out], inputs=[args.dirmap])
        if args.kind == "toybox":
            # Read without index_col: the old index becomes `Unnamed: 0` and takes part in drop_duplicates.
            out = balance_toybox(read_dirmap(args.dirmap, DIRMAP_COLUMNS), **sizes)
        else:
            out = balance_ilab(read_dirmap(args.dirmap, ILAB_COLUMNS), seed=args.seed, **sizes)
    except InputError as e:
        raise SystemExit(f"error: {e}")
    write_csv(args.out, out)
    print(f"{args.kind} balanced dirmap: {len(out)} rows -> {args.out}")


if __name__ == "__main__":
    main()
