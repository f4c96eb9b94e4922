"""Workflow step: build a dataset's dirmap CSV (one row per image) from its raw folder."""
from __future__ import annotations

import argparse

from augmem.data import dirmap as dm
from augmem.io import InputError, check_outputs, write_csv

KINDS = ["core50", "toybox", "ilab2mlight", "cifar100"]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m stages.dirmap", description=__doc__)
    ap.add_argument("--kind", required=True, choices=KINDS, help="dataset")
    ap.add_argument("--root", required=True,
                    help="core50: folder holding core50_128x128/; toybox: frames folder; "
                         "ilab2mlight: folder holding train_img/; cifar100: folder holding train/ and test/")
    ap.add_argument("--out", required=True, help="dirmap CSV to write (with its index)")
    ap.add_argument("--classes-out", help="cifar100 only: class table CSV to write (class,label)")
    ap.add_argument("--toybox-classes", default=str(dm.TOYBOX_CLASSES_CSV), help="category -> class CSV")
    ap.add_argument("--toybox-sessions", default=str(dm.TOYBOX_SESSIONS_CSV), help="transformation -> session CSV")
    args = ap.parse_args(argv)
    if args.classes_out and args.kind != "cifar100":
        ap.error("--classes-out is only used with --kind cifar100")
    try:
        inputs = [args.root] + ([args.toybox_classes, args.toybox_sessions] if args.kind == "toybox" else [])
        check_outputs([args.out, args.classes_out if args.kind == "cifar100" else None], inputs=inputs)
        classes = None
        if args.kind == "core50":
            df = dm.core50_dirmap(args.root)
        elif args.kind == "toybox":
            df = dm.toybox_dirmap(args.root, args.toybox_classes, args.toybox_sessions)
        elif args.kind == "ilab2mlight":
            df = dm.ilab2mlight_dirmap(args.root)
        else:
            df, classes = dm.cifar100_dirmap(args.root)
    except InputError as e:
        raise SystemExit(f"error: {e}")
    write_csv(args.out, df)
    if classes is not None and args.classes_out:
        write_csv(args.classes_out, classes, index=False)
    print(f"{args.kind} dirmap: {len(df)} rows -> {args.out}")


if __name__ == "__main__":
    main()
