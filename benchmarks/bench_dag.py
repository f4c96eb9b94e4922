"""Benchmark: time to build the DAG of the full real-size configuration (``snakemake -n --configfile
params/paper.yaml``: 4 datasets, both fidelities, 10 runs, 20 agents incl. ablations), and of the same with the
full published grid search feeding the main jobs (``hparams: selected``, ``gridsearch.enabled``), with empty stand-in
raw-data roots in a temporary copy of the workflow (Snakefile, workflow/, params/, profiles/, data/published/)."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import REPO, figure, finish, parser

ROOTS = ["core50", "toybox", "ilab2mlight", "cifar100"]


def job_stats(text: str) -> dict[str, int]:
    """Job counts per rule from the last 'Job stats' table of a dry run."""
    counts: dict[str, int] = {}
    block = text.rsplit("Job stats:", 1)[-1]
    for line in block.splitlines()[3:]:
        m = re.match(r"^(\S+)\s+(\d+)$", line.strip())
        if not m:
            break
        counts[m.group(1)] = int(m.group(2))
    return counts


def dry_run(workdir: Path, configfile: str | list[str], roots: dict[str, str]) -> tuple[float, dict[str, int], float,
                                                                                        str]:
    """(seconds, job counts, peak RSS MiB of snakemake, output) of one dry run (one or several config files)."""
    configfiles = [configfile] if isinstance(configfile, str) else list(configfile)
    snakemake = str(Path(sys.executable).parent / "snakemake")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    cmd = [snakemake, "-n", "--cores", "1", "--configfile", *configfiles, "--config", f"roots={json.dumps(roots)}",
           "--quiet", "rules"]
    t = time.perf_counter()
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - t
        log.seek(0)
        out = log.read()
    if proc.returncode != 0:
        raise RuntimeError(f"snakemake -n failed ({proc.returncode}):\n{out[-4000:]}")
    return seconds, job_stats(out), round(usage.ru_maxrss / 1024, 1), out


def main(argv=None) -> dict:
    args = parser(__doc__, "results/benchmarks/dag_paper.json").parse_args(argv)
    t0 = time.perf_counter()
    figures, details = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        work = tmp / "workflow_copy"
        work.mkdir()
        shutil.copy2(REPO / "Snakefile", work / "Snakefile")
        for folder in ("workflow", "params", "profiles", "data/published"):  # data/published: aggregate's input
            shutil.copytree(REPO / folder, work / folder)
        roots = {}
        for name in ROOTS:
            (tmp / "roots" / name).mkdir(parents=True)
            roots[name] = str(tmp / "roots" / name)
        # the full published grid search on the paper's configuration, feeding the main jobs (README "Grid search")
        (work / "gridsearch_paper.yaml").write_text("hparams: selected\ngridsearch: {enabled: true}\n")
        configs = [("paper", "params/paper.yaml"),
                   ("paper_gridsearch", ["params/paper.yaml", "gridsearch_paper.yaml"])] if not args.quick else []
        configs.append(("default_demo", "params/default.yaml"))
        for label, configfile in configs:
            seconds, jobs, rss, _ = dry_run(work, configfile, roots)
            details[label] = {"seconds": round(seconds, 3), "jobs": jobs, "snakemake_peak_rss_mb": rss}
            figures.append(figure(f"dag_build/{label}", seconds, "s"))
            figures.append(figure(f"dag_build/{label}/jobs", jobs.get("total", 0), "jobs"))
            figures.append(figure(f"dag_build/{label}/train_jobs", jobs.get("train", 0), "jobs"))
            if jobs.get("gridsearch_train"):
                figures.append(figure(f"dag_build/{label}/gridsearch_train_jobs", jobs["gridsearch_train"], "jobs"))
            figures.append(figure(f"dag_build/{label}/snakemake_peak_rss", rss, "MiB"))
    return finish(args.out, "dag_paper", __doc__.splitlines()[0], figures, details, t0)


if __name__ == "__main__":
    main(sys.argv[1:])
