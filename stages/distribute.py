"""Workflow step: distribute the massed iLab images into <class>/obj_<o>/sess_<s>/ folders (spec 2.5)."""
from __future__ import annotations

import argparse

from augmem.data.dirmap import read_dirmap
from augmem.data.distribute import MASSED_COLUMNS, STAGE, distribute_ilab
from augmem.io import InputError, check_outputs, write_csv


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m stages.distribute", description=__doc__)
    ap.add_argument("--dirmap", required=True, help="massed (balanced) iLab dirmap CSV")
    ap.add_argument("--src", required=True, help="folder the massed im_path values are relative to")
    ap.add_argument("--out-root", required=True, help="folder to create with the distributed images")
    ap.add_argument("--out-dirmap", required=True, help="rewritten dirmap CSV to write")
    ap.add_argument("--frames-per-session", type=int, default=15, help="images each folder must hold (default 15)")
    ap.add_argument("--copy", action="store_true", help="always copy (default: hard link when possible)")
    args = ap.parse_args(argv)
    try:
        inputs = [args.src, args.dirmap]
        check_outputs([args.out_root], inputs=inputs, stage=STAGE, kind="dir")
        check_outputs([args.out_dirmap], inputs=inputs + [args.out_root])
        # Read without index_col, as the original: `Unnamed: 0` is carried into the output.
        massed = read_dirmap(args.dirmap, MASSED_COLUMNS)
        out = distribute_ilab(massed, args.src, args.out_root, link="copy" if args.copy else "auto",
                              frames_per_session=args.frames_per_session)
    except InputError as e:
        raise SystemExit(f"error: {e}")
    write_csv(args.out_dirmap, out)
    print(f"distributed {len(out)} images into {args.out_root}")


if __name__ == "__main__":
    main()
