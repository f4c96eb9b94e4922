"""Stage: the results table (average accuracy, mean ± SEM (n)) as Markdown, CSV and LaTeX from summary.csv.

    python -m stages.table --summary results/tables/summary.csv --out-md results/table.md \\
        --out-csv results/table.csv --out-tex results/table.tex
"""
from __future__ import annotations

import argparse
import sys

from augmem.io import InputError, check_outputs, write_text
from augmem.results.aggregate import read_summary_csv
from augmem.results.table import build_table, to_csv_text, to_latex, to_markdown


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m stages.table",
        description="Results table: rows = agents, columns = dataset x scenario (x fidelity), cells = average "
        "accuracy over tasks, mean ± SEM (n runs), best per column marked.",
    )
    p.add_argument("--summary", required=True, help="summary.csv written by stages.aggregate")
    p.add_argument("--out-md", help="Markdown output")
    p.add_argument("--out-csv", help="CSV output (numbers: mean, sem, n, best per column)")
    p.add_argument("--out-tex", help="LaTeX output (booktabs)")
    return p


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not (args.out_md or args.out_csv or args.out_tex):
        parser.error("give at least one of --out-md, --out-csv, --out-tex")
    try:
        check_outputs([args.out_csv, args.out_tex, args.out_md], inputs=[args.summary])
        table = build_table(read_summary_csv(args.summary))
    except InputError as e:
        raise SystemExit(f"error: {e}")
    if args.out_csv:
        write_text(args.out_csv, to_csv_text(table))
    if args.out_tex:
        write_text(args.out_tex, to_latex(table))
    if args.out_md:
        write_text(args.out_md, to_markdown(table))


if __name__ == "__main__":
    main(sys.argv[1:])
