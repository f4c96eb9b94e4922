"""Benchmark: seconds of every data-preparation step of the embedded demo, run as the workflow runs them (the stage
functions with the workflow's arguments from params/datasets.yaml) on a temporary copy.

Steps per dataset: demo_data, extract_frames (Toybox), dirmap, sample (Toybox, iLab), distribute (iLab),
dirmap_stats, filelists (every scenario of the dataset, runs 0 and 1, stream + offline, reference fidelity) and
image_cache (the decoded-image cache at the demo's 64x64).
"""
from __future__ import annotations

import contextlib
import io
import sys
import tempfile
import time
from pathlib import Path

import yaml

from benchmarks.common import REPO, figure, finish, parser

DEMOS = ["core50_demo", "toybox_demo", "ilab2mlight_demo", "cifar100_demo"]
RUNS = ["0", "1"]


def timed(fn, argv: list[str]) -> float:
    t = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        fn(argv)
    return time.perf_counter() - t


def filelist_args(tasks: dict) -> list[str]:
    args = ["--task-size-iid", tasks["task_size_iid"], "--n-class", tasks["n_class"], "--n-instance",
            tasks["n_instance"], "--test-sess", *tasks["test_sess"]]
    if "sample_rate" in tasks:
        args += ["--sample-rate", tasks["sample_rate"]]
    if "frames_per_session" in tasks:
        args += ["--frames-per-session", tasks["frames_per_session"]]
    return [str(a) for a in args]


def prepare(ds: str, spec: dict, root: Path, jobs: int) -> dict[str, float]:
    from stages import (demo_data, dirmap, dirmap_stats, distribute, extract_frames, filelists, image_cache,
                        sample)

    from augmem.data import layouts

    # the layout's demo generator; its name is also the old kind name the stages still accept (--kind)
    kind = layouts.get(spec["layout"]).demo
    raw, interim = root / "raw" / ds, root / "interim" / ds
    interim.mkdir(parents=True, exist_ok=True)
    sec = {"demo_data": timed(demo_data.main, ["--kind", kind, "--out", str(raw), "--seed", "0",
                                               "--jobs", str(jobs)])}
    source = raw
    if kind == "toybox":
        fr = spec["frames"]
        sec["extract_frames"] = timed(extract_frames.main, ["--videos", str(raw), "--out", str(interim / "frames"),
                                                            "--fps", str(fr["fps"]), "--size", str(fr["size"]),
                                                            "--jobs", str(jobs)])
        source = interim / "frames"
    extra = ["--classes-out", str(interim / "classes.csv")] if kind == "cifar100" else []
    sec["dirmap"] = timed(dirmap.main, ["--kind", kind, "--root", str(source),
                                        "--out", str(interim / "dirmap_raw.csv"), *extra])
    final, image_root = interim / "dirmap_raw.csv", (raw / "core50_128x128" if kind == "core50" else raw)
    if kind in ("toybox", "ilab2mlight"):
        b = spec["balance"]
        out = interim / ("dirmap_balanced.csv" if kind == "toybox" else "dirmap_massed.csv")
        args = ["--kind", kind, "--dirmap", str(final), "--out", str(out),
                "--objects-per-class", str(b["objects_per_class"]), "--sessions-per-object",
                str(b["sessions_per_object"]), "--frames-per-session", str(b["frames_per_session"])]
        if kind == "ilab2mlight":
            args += ["--seed", str(b["seed"])]
        sec["sample"] = timed(sample.main, args)
        final, image_root = out, interim / "frames"
    if kind == "ilab2mlight":
        sec["distribute"] = timed(distribute.main, [
            "--dirmap", str(final), "--src", str(raw), "--out-root", str(interim / "images"),
            "--out-dirmap", str(interim / "dirmap_distributed.csv"),
            "--frames-per-session", str(spec["balance"]["frames_per_session"])])
        final, image_root = interim / "dirmap_distributed.csv", interim / "images"
    expect = [f"{k}={v}" for k, v in (spec.get("expected_stats") or {}).items()]
    fps = spec.get("balance", {}).get("frames_per_session", 15)
    sec["dirmap_stats"] = timed(dirmap_stats.main, ["--dirmap", str(final), "--out", str(interim / "stats.json"),
                                                    "--frames-per-session", str(fps), "--expect", *expect])
    t = 0.0
    for scenario in spec["scenarios"]:
        t += timed(filelists.main, ["--dataset", ds, "--kind", kind, "--dirmap", str(final), "--scenario", scenario,
                                    "--n-runs", "1", "--runs", *RUNS, "--mode", "both", "--fidelity", "reference",
                                    "--out", str(interim / "filelists"), *filelist_args(spec["tasks"])])
    sec["filelists"] = t
    size = int((spec.get("hp") or {}).get("image_size", 224))
    sec["image_cache"] = timed(image_cache.main, [
        "--kind", kind, "--dirmap", str(final), "--image-root", str(image_root), "--size", str(size),
        "--sample-rate", str(spec["tasks"].get("sample_rate", 20)), "--threads", str(jobs),
        "--out-prefix", str(interim / "cache" / f"images_{size}")])
    return sec


def main(argv=None) -> dict:
    args = parser(__doc__, "results/benchmarks/dataprep_demo.json").parse_args(argv)
    t0 = time.perf_counter()
    datasets = yaml.safe_load((REPO / "params" / "datasets.yaml").read_text())
    demos = DEMOS[:2] if args.quick else DEMOS
    figures, details = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for ds in demos:
            sec = prepare(ds, datasets[ds], Path(tmp), jobs=2)
            details[ds] = {k: round(v, 3) for k, v in sec.items()}
            for step, v in sec.items():
                figures.append(figure(f"dataprep/{step}/{ds}", v, "s"))
    steps = sorted({s for d in details.values() for s in d})
    for step in steps:
        figures.append(figure(f"dataprep/{step}/all_demos", sum(d.get(step, 0.0) for d in details.values()), "s"))
    return finish(args.out, "dataprep_demo", __doc__.splitlines()[0], figures, details, t0)


if __name__ == "__main__":
    main(sys.argv[1:])
