"""Stage: aggregate per-run metrics.json files into results/tables/{runs,summary,per_task}.csv.

    python -m stages.aggregate --metrics results/core50_demo/reference/class_iid/augmem/run0/metrics.json ... \\
        [--metrics-list FILE] [--benchmarks B.tsv ...] [--published-dir DIR] [--run-filter none|published] \\
        --out-dir results/tables

Every listed metrics file must exist and be complete: a requested run without a result fails the stage. Cells whose
AugMem memory collapsed in some run (metrics.json ``health_verdict``) get a WARNING line in the output.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from augmem.io import InputError, check_outputs, write_csv, write_json
from augmem.results import aggregate as agg


def read_list(path: str) -> list[str]:
    """Paths from a file with one path per line (blank lines and lines starting with # are ignored)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: list file not found")
    return [line.strip() for line in p.read_text().splitlines() if line.strip() and not line.startswith("#")]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m stages.aggregate",
        description="Aggregate per-run metrics.json files into tidy runs, per-cell summary and per-task tables "
        "(mean, SEM, n over runs; forgetting, BWT, memory, wall time).",
    )
    p.add_argument("--metrics", nargs="*", default=[], metavar="M", help="metrics.json files, one per run")
    p.add_argument("--metrics-list", metavar="FILE", help="file with one metrics.json path per line (for long lists)")
    p.add_argument("--benchmarks", nargs="*", default=[], metavar="B",
                   help="Snakemake benchmark TSVs at .../<dataset>/<fidelity>/<scenario>/<agent>/run<r>[.tsv|/file]")
    p.add_argument("--benchmarks-list", metavar="FILE", help="file with one benchmark TSV path per line")
    p.add_argument("--published-dir", metavar="DIR",
                   help="folder of the published per-run CSVs (AAN/REMIND); adds imported rows for the datasets "
                   "named like the published ones (core50, toybox, ilab2mlight, cifar100)")
    p.add_argument("--run-filter", choices=agg.RUN_FILTERS, default="none",
                   help="'published': keep runs with task-0 accuracy > 80 %% (core50) / > 95 %% (toybox, "
                   "ilab2mlight), as the paper's figures (default: none)")
    p.add_argument("--out-dir", required=True, metavar="DIR", help="writes runs.csv, summary.csv, per_task.csv here")
    p.add_argument("--metrics-out", metavar="JSON",
                   help="compact summary for `dvc metrics show`: average/final accuracy per cell")
    p.add_argument("--plot-out", metavar="CSV",
                   help="per-task accuracy curves (primary path) for `dvc plots show`: columns curve, task, accuracy")
    return p


def dvc_metrics(summary: pd.DataFrame) -> dict:
    """{dataset: {fidelity: {scenario: {agent: {avg, avg_sem, final, n_runs}}}}} (numbers rounded to 0.01)."""
    out: dict = {}
    for r in summary.itertuples(index=False):
        cell = {"avg": r.avg_mean, "avg_sem": r.avg_sem, "final": r.final_mean, "n_runs": int(r.n_runs)}
        cell = {k: (None if isinstance(v, float) and v != v else (round(v, 2) if isinstance(v, float) else v))
                for k, v in cell.items()}
        out.setdefault(r.dataset, {}).setdefault(r.fidelity, {}).setdefault(r.scenario, {})[r.agent] = cell
    return out


def dvc_plot(per_task: pd.DataFrame) -> pd.DataFrame:
    """Long table of the primary-path curves: one row per (curve, task)."""
    pt = per_task[per_task["primary"].astype(bool)]
    curve = pt["dataset"] + "/" + pt["fidelity"] + "/" + pt["scenario"] + "/" + pt["agent"]
    return pd.DataFrame({"curve": curve, "task": pt["task"].astype(int), "accuracy": pt["acc_all_mean"].round(3)})


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        metrics = list(args.metrics) + (read_list(args.metrics_list) if args.metrics_list else [])
        benchmarks = list(args.benchmarks) + (read_list(args.benchmarks_list) if args.benchmarks_list else [])
        if not metrics:
            raise InputError("no metrics files given (--metrics or --metrics-list)")
        out = Path(args.out_dir)
        inputs = [*metrics, *benchmarks, args.metrics_list, args.benchmarks_list, args.published_dir]
        check_outputs([out / "runs.csv", out / "per_task.csv", out / "summary.csv", args.metrics_out, args.plot_out],
                      inputs=inputs)
        runs = agg.load_runs(metrics)
        if args.published_dir:
            imported = agg.load_imported(args.published_dir, runs["dataset"].unique())
            if not imported.empty:
                runs = agg.sort_runs(pd.concat([runs, imported], ignore_index=True))
        bench = agg.load_benchmarks(benchmarks) if benchmarks else None
        summary = agg.summarise(runs, args.run_filter, benchmarks=bench)
        per_task = agg.per_task(runs, args.run_filter)
    except InputError as e:
        raise SystemExit(f"error: {e}")
    write_csv(out / "runs.csv", runs, index=False)
    write_csv(out / "per_task.csv", per_task, index=False)
    write_csv(out / "summary.csv", summary, index=False)
    if args.metrics_out:
        write_json(args.metrics_out, dvc_metrics(summary))
    if args.plot_out:
        write_csv(args.plot_out, dvc_plot(per_task), index=False)
    n_runs = runs.drop_duplicates(agg.RUN_KEY).shape[0]
    print(f"aggregated {n_runs} runs into {len(summary)} cells (run filter: {args.run_filter}) -> {out}")
    for line in agg.collapse_warnings(summary):  # AugMem cells whose memory collapsed (metrics.json health)
        print(line)


if __name__ == "__main__":
    main(sys.argv[1:])
