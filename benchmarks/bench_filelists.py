"""Benchmark: write all Toybox task filelists (10 runs, stream + offline) per scenario and fidelity.

Run by hand from the repository root: ``python -m benchmarks.bench_filelists [--dirmap CSV] [--out JSON]``.
Uses the published Toybox dirmap and the original Toybox setup (task_size_iid 6090, n_instance 406, test sessions
3 6 9). Prints seconds per scenario and writes them to ``results/benchmarks/filelists.json``.
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from augmem.data import filelists as fl
from augmem.io import write_json

DEFAULT_DIRMAP = Path("/work/shared/reference/dirmaps/toybox_dirmap.csv")
TOYBOX = dict(task_size_iid=6090, n_class=2, n_instance=406)
TEST_SESS = [3, 6, 9]
N_RUNS = 10


def run(dirmap_path: Path, fidelities: list[str]) -> dict:
    t0 = time.perf_counter()
    dirmap = fl.read_dirmap(dirmap_path)
    train, test = fl.train_test_split(dirmap, "toybox", TEST_SESS, source=str(dirmap_path))
    read_s = time.perf_counter() - t0
    seconds: dict[str, dict[str, float]] = {}
    cpu_seconds: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for fidelity in fidelities:
            seconds[fidelity], cpu_seconds[fidelity] = {}, {}
            for scenario in fl.SCENARIOS:
                fps = fl.default_frames_per_session("toybox") if scenario == "instance" else None
                t0, c0 = time.perf_counter(), time.process_time()
                written = fl.write_filelists(
                    Path(tmp) / fidelity, "toybox", train, test, scenario, range(N_RUNS), [False, True], fidelity,
                    frames_per_session=fps, **TOYBOX,
                )
                seconds[fidelity][scenario] = round(time.perf_counter() - t0, 3)
                cpu_seconds[fidelity][scenario] = round(time.process_time() - c0, 3)
                assert len(written) == 2 * N_RUNS
                print(f"{fidelity:10s} {scenario:15s} {seconds[fidelity][scenario]:7.2f} s wall "
                      f"{cpu_seconds[fidelity][scenario]:7.2f} s cpu ({N_RUNS} runs x stream+offline)", flush=True)
    return {
        "what": f"write all Toybox task filelists: {N_RUNS} runs x (stream + offline) per scenario",
        "dirmap": str(dirmap_path),
        "read_and_split_s": round(read_s, 3),
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "machine": {"python": platform.python_version(), "numpy": np.__version__, "pandas": pd.__version__,
                    "cpus": os.cpu_count(), "processor": platform.machine(),
                    "load_average_1min_at_end": round(os.getloadavg()[0], 2)},
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dirmap", type=Path, default=DEFAULT_DIRMAP, help="Toybox dirmap CSV")
    p.add_argument("--out", type=Path, default=Path("results/benchmarks/filelists.json"))
    p.add_argument("--fidelity", nargs="+", default=["reference", "corrected"], choices=["reference", "corrected"])
    args = p.parse_args(argv)
    if not args.dirmap.is_file():
        raise SystemExit(f"error: {args.dirmap}: file not found")
    figures = run(args.dirmap, args.fidelity)
    print(f"read + split: {figures['read_and_split_s']:.2f} s")
    write_json(args.out, figures)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
