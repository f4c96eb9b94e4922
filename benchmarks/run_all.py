"""Run every benchmark and write ``results/benchmarks/summary.json`` (``make bench``).

Each benchmark runs in its own process (``python -m benchmarks.<name> --out results/benchmarks/<name>.json``), so
its peak memory (``ru_maxrss`` of that process and its children, from ``wait4``) is its own. The summary is a list
of ``{"name", "value", "unit", "machine"}`` entries: every figure of every benchmark, plus ``<benchmark>/peak_rss``
(MiB) and ``<benchmark>/wall`` (s). About 2.5 minutes on 2 CPU cores.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from augmem.io import write_json
from benchmarks.bench_filelists import DEFAULT_DIRMAP as TOYBOX_DIRMAP
from benchmarks.common import REPO, figure, machine

BENCHMARKS = ["bench_agents", "bench_augmem_features", "bench_eval_decode", "bench_dataprep", "bench_dag",
              "bench_filelists"]


def run_one(module: str, out: Path, quick: bool) -> tuple[int, float, float]:
    """(exit code, wall seconds, peak RSS MiB) of one benchmark process."""
    cmd = [sys.executable, "-m", f"benchmarks.{module}", "--out", str(out)]
    if quick and module != "bench_filelists":
        cmd.append("--quick")
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, time.perf_counter() - t, usage.ru_maxrss / 1024


def figures_of(module: str, result: dict) -> list[dict]:
    if "figures" in result:
        return result["figures"]
    if module == "bench_filelists":  # its own format: seconds per fidelity and scenario
        return [figure(f"filelists_toybox_10runs/{fid}/{sc}", s, "s")
                for fid, per in result["seconds"].items() for sc, s in per.items()]
    return []


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", type=Path, default=REPO / "results" / "benchmarks")
    ap.add_argument("--only", nargs="+", choices=BENCHMARKS, help="run only these benchmarks")
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke test of the benchmarks)")
    args = ap.parse_args(argv)
    mach = machine()
    entries, failed = [], []
    for module in args.only or BENCHMARKS:
        name = module.removeprefix("bench_")
        out = args.out_dir / f"{name}.json"
        print(f"== {module}", flush=True)
        if module == "bench_filelists" and not TOYBOX_DIRMAP.is_file():
            print("   skipped: the published Toybox dirmap is not on this machine", flush=True)
            continue
        code, wall, rss = run_one(module, out, args.quick)
        if code != 0 or not out.is_file():
            failed.append(module)
            print(f"   FAILED (exit {code})", flush=True)
            continue
        result = json.loads(out.read_text())
        extra = [figure(f"{name}/peak_rss", rss, "MiB"), figure(f"{name}/wall", wall, "s")]
        entries += [{**f, "machine": mach} for f in figures_of(module, result) + extra]
    summary = args.out_dir / "summary.json"
    write_json(summary, entries)
    print(f"wrote {summary} ({len(entries)} entries)" + (f"; failed: {failed}" if failed else ""), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
