"""Benchmark: training and evaluation images/s of every agent on a small synthetic stream at 64x64, reading the
PNG files (pixel path, decoded every epoch) vs the decoded-image cache.

The stream: 2 tasks x 2 classes, 128x128 PNG sources (like CORe50's), resized to 64x64. Each agent runs with its
published hyperparameters for the CORe50-like demo (params/), one epoch per task, no visualisation, random-init
weights, DataLoader without workers (CPU), through the real loop (``run_stream``); the rates come from the loop's
own timings (``timing.train_s``, ``eval_s``).
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch

from augmem.agents import get_agent_class
from augmem.data.image_cache import build_image_cache
from augmem.train.fidelity import train_switches
from augmem.train.hparams import load_params, resolve_hparams
from augmem.train.loop import run_stream
from augmem.train.seeding import seed_everything
from benchmarks.common import REPO, figure, finish, parser, rates, write_stream

TASKS = [[0, 1], [2, 3]]
OVERRIDES = {"n_workers": 0, "visualize": False, "n_epoch": 1, "n_epoch_first_task": None, "weights": "none",
             "image_size": 64, "keep_best_task1_net": False, "keep_best_net_all_tasks": False}


def run_agent(agent_name: str, params: dict, stream, out: Path, image_cache: Path | None, n_test: int) -> dict:
    image_root, run_dir = stream
    impl, hp = resolve_hparams(params, "core50_demo", agent_name, "class_iid")
    hp = {**hp, **OVERRIDES}
    switches = train_switches("reference", hp.get("switch_overrides"))
    seed_everything(0)
    agent = get_agent_class(impl)(4, hp, switches, "cpu")
    m = run_stream(agent, run_dir, image_root, out, hp=hp, switches=switches, meta={"agent": agent_name}, seed=0,
                   image_cache=image_cache, log=lambda msg: None)
    train_ips, eval_ips = rates(m, n_test)
    return {"impl": impl, "inputs": m["meta"]["inputs"], "train_images_per_s": train_ips,
            "eval_images_per_s": eval_ips, "test_all": m["test_all"], "batch_size": hp["batch_size"]}


def main(argv=None) -> dict:
    args = parser(__doc__, "results/benchmarks/agents_64.json").parse_args(argv)
    t0 = time.perf_counter()
    n_train, n_test = (10, 10) if args.quick else (30, 30)
    params = load_params(REPO / "params")
    agents = params["default"]["train"]["agents"]
    figures, details = [], {"n_train_per_class_per_task": n_train, "n_test_per_class": n_test, "tasks": TASKS,
                            "source_png": "128x128", "image_size": 64, "agents": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        image_root, run_dir, dirmap = write_stream(tmp, TASKS, n_train, n_test, src_size=128)
        tb = time.perf_counter()
        build_image_cache(dirmap, "toybox", image_root, 64, tmp / "images_64", log=lambda m: None)
        details["image_cache_build_s"] = round(time.perf_counter() - tb, 3)
        for name in agents:
            res = {}
            for path, cache in (("pixels", None), ("decoded_cache", tmp / "images_64")):
                res[path] = run_agent(name, params, (image_root, run_dir), tmp / f"{name}_{path}", cache, n_test)
                print(f"{name:16s} {path:14s} train {res[path]['train_images_per_s']:8.1f} img/s   "
                      f"eval {res[path]['eval_images_per_s']:8.1f} img/s", flush=True)
            same = res["pixels"]["test_all"] == res["decoded_cache"]["test_all"]
            details["agents"][name] = {**res, "identical_accuracies": same}
            for path in ("pixels", "decoded_cache"):
                figures.append(figure(f"train_64/{name}/{path}", res[path]["train_images_per_s"], "images/s"))
                figures.append(figure(f"eval_64/{name}/{path}", res[path]["eval_images_per_s"], "images/s"))
    return finish(args.out, "agents_64", __doc__.splitlines()[0], figures, details, t0)


if __name__ == "__main__":
    main(sys.argv[1:])
