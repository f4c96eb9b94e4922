"""Benchmark: evaluation images/s at 224x224 with the decoded-image cache vs decoding the PNG files at every
evaluation (what the loop does after every epoch without the cache).

Two figures per path: the input pipeline alone (the DataLoader of the loop's evaluation, batch 100, no workers:
what a GPU evaluation waits for) and a full evaluation pass of the lower-bound agent (SqueezeNet, CPU), where the
network's forward pass is added to the same input pipeline. Sources are 256x256 PNG files on disk.
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch

from augmem.agents import get_agent_class
from augmem.data.datasets import FilelistDataset, study_transform
from augmem.data.image_cache import CachedImageDataset, build_image_cache
from augmem.train.fidelity import train_switches
from augmem.train.loop import make_loader, predict_subset
from augmem.train.seeding import seed_everything
from benchmarks.common import figure, finish, parser, write_stream

SIZE = 224
TASKS = [[0, 1], [2, 3]]


def pipeline_rate(dataset, repeats: int = 2) -> float:
    """Images/s of iterating the evaluation loader (best of ``repeats`` passes)."""
    best = 0.0
    for _ in range(repeats):
        loader = make_loader(dataset, 100, 0, torch.device("cpu"))
        t = time.perf_counter()
        n = sum(len(y) for _, y in loader)
        best = max(best, n / (time.perf_counter() - t))
    return best


def main(argv=None) -> dict:
    args = parser(__doc__, "results/benchmarks/eval_decode_224.json").parse_args(argv)
    t0 = time.perf_counter()
    n_test = 25 if args.quick else 100  # per class, 4 classes
    n_eval_net = 40 if args.quick else 100  # images of the full evaluation pass
    figures, details = [], {"n_test_images": 4 * n_test, "n_full_eval_images": n_eval_net, "source_png": "256x256",
                            "image_size": SIZE}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        image_root, run_dir, dirmap = write_stream(tmp, TASKS, 1, n_test, src_size=256)
        tb = time.perf_counter()
        build_image_cache(dirmap, "toybox", image_root, SIZE, tmp / "images", log=lambda m: None)
        details["image_cache_build_s"] = round(time.perf_counter() - tb, 3)
        fl = run_dir / "stream" / "test_filelist.txt"
        datasets = {"pixels": FilelistDataset(fl, image_root, study_transform(SIZE)),
                    "decoded_cache": CachedImageDataset(fl, tmp / "images", image_size=SIZE)}
        rate = {k: pipeline_rate(ds) for k, ds in datasets.items()}
        for k, v in rate.items():
            figures.append(figure(f"eval_input_pipeline_224/{k}", v, "images/s"))
        figures.append(figure("eval_input_pipeline_224/speedup_decoded_cache_vs_pixels",
                              rate["decoded_cache"] / rate["pixels"], "x"))
        # a full evaluation pass of a network on the same inputs
        hp = {"weights": "none", "image_size": SIZE, "batch_size": 100}
        seed_everything(0)
        agent = get_agent_class("NormalNN")(4, hp, train_switches("reference"), "cpu")
        agent.set_active([0, 1, 2, 3])
        full = {}
        idx = list(range(n_eval_net))
        for k, ds in datasets.items():
            t = time.perf_counter()
            predict_subset(agent, ds, idx, 100, 0)
            full[k] = n_eval_net / (time.perf_counter() - t)
            figures.append(figure(f"eval_full_224/lower_bound/{k}", full[k], "images/s"))
        figures.append(figure("eval_full_224/lower_bound/speedup_decoded_cache_vs_pixels",
                              full["decoded_cache"] / full["pixels"], "x"))
        details["target_speedup"] = 3.0
    return finish(args.out, "eval_decode_224", __doc__.splitlines()[0], figures, details, t0)


if __name__ == "__main__":
    main(sys.argv[1:])
