"""Stage: every figure the aggregated tables and viz files allow, PNG (150 dpi) + PDF, with an index.json.

    python -m stages.figures --runs results/tables/runs.csv --summary results/tables/summary.csv \\
        --per-task results/tables/per_task.csv [--viz results/.../run0/viz.npz ...] --out-dir results/figures

index.json (written last) lists each figure: {"figures": [{"stem", "files": [png, pdf], "caption"}]}.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from augmem.io import InputError, check_no_overlap, check_outputs, write_json
from augmem.results.aggregate import read_per_task_csv, read_runs_csv, read_summary_csv
from augmem.results.figures import render_all
from stages.aggregate import read_list


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m stages.figures",
        description="Accuracy curves, first-task curves, average-accuracy bars, ablation bars and, from viz.npz "
        "files, memory / slot usage / t-SNE / confusion / hypothesis figures.",
    )
    p.add_argument("--runs", help="runs.csv (adds single-run dots to the ablation figures)")
    p.add_argument("--summary", required=True, help="summary.csv written by stages.aggregate")
    p.add_argument("--per-task", required=True, help="per_task.csv written by stages.aggregate")
    p.add_argument("--viz", nargs="*", default=[], metavar="V", help="viz.npz files of chosen runs")
    p.add_argument("--viz-list", metavar="FILE", help="file with one viz.npz path per line")
    p.add_argument("--viz-from-metrics", nargs="*", default=[], metavar="M",
                   help="metrics.json files: the viz.npz next to each one is used when it exists")
    p.add_argument("--out-dir", required=True, metavar="DIR", help="figure folder; index.json is written last")
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    out = Path(args.out_dir)
    try:
        viz = list(args.viz) + (read_list(args.viz_list) if args.viz_list else [])
        viz += [str(Path(m).with_name("viz.npz")) for m in args.viz_from_metrics if Path(m).with_name("viz.npz").is_file()]
        # the figure folder must not be or hold an input (it is written into, file by file), and must be writable
        inputs = [args.runs, args.summary, args.per_task, args.viz_list, *viz, *args.viz_from_metrics]
        check_no_overlap(out, inputs)
        check_outputs([out / "index.json"], inputs=inputs)
        runs = read_runs_csv(args.runs) if args.runs else None
        summary = read_summary_csv(args.summary)
        per_task = read_per_task_csv(args.per_task)
        entries = render_all(summary, per_task, out, runs=runs, viz_paths=viz)
    except InputError as e:
        raise SystemExit(f"error: {e}")
    write_json(out / "index.json", {"figures": entries})
    print(f"wrote {len(entries)} figures (PNG + PDF) -> {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
