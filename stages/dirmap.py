"""Workflow step: build a dataset's dirmap CSV (one row per image) from its raw folder, read as its layout says
(augmem.data.layouts)."""
from __future__ import annotations

import argparse

from augmem.data import layouts
from augmem.io import InputError, check_outputs, write_csv


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m stages.dirmap", description=__doc__)
    layouts.add_layout_option(ap)
    roots = [f"{lay.name}: " + ("the extracted frames" if lay.frames else f"the raw root, holding {lay.raw_tree}")
             for lay in layouts.LAYOUTS.values()]
    ap.add_argument("--root", required=True, help="the folder to index: " + "; ".join(roots))
    ap.add_argument("--out", required=True, help="dirmap CSV to write (with its index)")
    ap.add_argument("--classes-out", help="layouts with a class table (" + ", ".join(
        lay.name for lay in layouts.LAYOUTS.values() if lay.class_table) + "): class table CSV to write (class,label)")
    maps = {m.option: m for lay in layouts.LAYOUTS.values() for m in lay.dirmap_maps}
    for m in maps.values():
        ap.add_argument(m.option, default=m.default, help=f"{m.help} (layouts " + ", ".join(
            lay.name for lay in layouts.LAYOUTS.values() if m in lay.dirmap_maps) + ")")
    args = ap.parse_args(argv)
    lay = layouts.get(args.layout)
    if args.classes_out and not lay.class_table:
        ap.error(f"--classes-out is only used with a layout that has a class table, not {lay.name}")
    try:
        files = {m.name: getattr(args, m.option.lstrip("-").replace("-", "_")) for m in lay.dirmap_maps}
        inputs = [args.root, *files.values()]
        check_outputs([args.out, args.classes_out if lay.class_table else None], inputs=inputs)
        df, classes = lay.read(args.root, **files)
    except InputError as e:
        raise SystemExit(f"error: {e}")
    write_csv(args.out, df)
    if classes is not None and args.classes_out:
        write_csv(args.classes_out, classes, index=False)
    print(f"{lay.name} dirmap: {len(df)} rows -> {args.out}")


if __name__ == "__main__":
    main()
