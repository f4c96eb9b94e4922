"""Stage: rank the points of one grid search cell and select the winner.

    python -m stages.gridsearch_summary --metrics results/gridsearch/D/F/S/A/<point>/run<r>/metrics.json ... \\
        --points 'lr=1e-4' 'lr=1e-3' --keys lr --selection corrected \\
        --out-summary .../summary.csv --out-plot .../summary_plot.png --out-selected .../selected.yaml

One cell = (dataset, fidelity, scenario, agent). Each run's point is read from its own hyperparameters (``--keys``);
every point of ``--points`` (grid order: ties go to the earlier one) must have runs. ``--selection corrected`` scores
the held-out validation split (``val_all``, mean over tasks and runs), ``reference`` the test accuracy after the
last task (the study's test-set selection). Writes summary.csv (every point ranked, score mean and SEM over runs,
per-task curve), the top-k figure and selected.yaml (augmem.results.gridsearch).
"""
from __future__ import annotations

import argparse
import sys

from augmem.io import InputError, check_outputs, write_csv, write_text
from augmem.results.aggregate import read_metrics
from augmem.results.gridsearch import (SELECTIONS, grid_runs, plot_top, selected_doc, selected_yaml,
                                       summarise_grid)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m stages.gridsearch_summary", description=__doc__.splitlines()[0])
    p.add_argument("--metrics", nargs="+", required=True, help="metrics.json of every run of every point")
    p.add_argument("--points", nargs="+", required=True, help="the grid's point ids, in grid order")
    p.add_argument("--keys", nargs="+", required=True, help="the searched hyperparameters")
    p.add_argument("--selection", required=True, choices=SELECTIONS)
    p.add_argument("--dataset", required=True)
    p.add_argument("--fidelity", required=True)
    p.add_argument("--scenario", required=True)
    p.add_argument("--agent", required=True)
    p.add_argument("--top", type=int, default=10, help="points drawn in the figure (default 10)")
    p.add_argument("--out-summary", required=True)
    p.add_argument("--out-plot", required=True)
    p.add_argument("--out-selected", required=True)
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    cell = {"dataset": args.dataset, "fidelity": args.fidelity, "scenario": args.scenario, "agent": args.agent}
    try:
        check_outputs([args.out_summary, args.out_plot, args.out_selected], inputs=args.metrics)
        loaded = []
        for path in args.metrics:
            m = read_metrics(path)
            meta = m.get("meta") or {}
            for key, want in cell.items():
                if str(meta.get(key)) != want:
                    raise InputError(f"{path}: meta.{key} is {meta.get(key)!r}, not this cell's {want!r}")
            loaded.append((path, m))
        summary = summarise_grid(grid_runs(loaded, args.keys, args.selection), args.points, args.selection)
        doc = selected_doc(summary, selection=args.selection, cell=cell)
    except InputError as e:
        raise SystemExit(f"error: {e}")
    write_csv(args.out_summary, summary, index=False)
    title = f"{args.agent}, {args.dataset} {args.scenario} ({args.fidelity}): selection {args.selection}"
    plot_top(summary, args.out_plot, top=args.top, title=title)
    write_text(args.out_selected, selected_yaml(doc))
    print(f"selected {doc['point']} (score {doc['score']}, {args.selection} selection) of {len(summary)} points")


if __name__ == "__main__":
    main(sys.argv[1:])
