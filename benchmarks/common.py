"""Shared helpers of the benchmarks: machine description, peak memory, result files, a synthetic image stream on disk.

Every benchmark module has ``main(argv)`` with ``--out JSON`` and writes one JSON:
``{"benchmark", "what", "figures": [{"name", "value", "unit"}], "details": {...}, "peak_rss_mb", "wall_s",
"machine"}``; :mod:`benchmarks.run_all` collects the figures into ``results/benchmarks/summary.json``.
"""
from __future__ import annotations

import argparse
import os
import platform
import resource
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from augmem.io import write_json

REPO = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    import torch

    cuda = torch.cuda.is_available()
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "device": torch.cuda.get_device_name(0) if cuda else "cpu", "python": platform.python_version()}


def peak_rss_mb() -> float:
    """Peak resident memory (MiB) of this process and of its waited-for children, whichever is larger."""
    kb = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return round(kb / 1024, 1)


def figure(name: str, value: float, unit: str) -> dict:
    return {"name": name, "value": round(float(value), 3), "unit": unit}


def parser(doc: str, default_out: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path(default_out), help=f"result JSON (default {default_out})")
    p.add_argument("--quick", action="store_true", help="smaller sizes (a smoke test of the benchmark itself)")
    return p


def finish(out: Path, benchmark: str, what: str, figures: list[dict], details: dict, t0: float) -> dict:
    result = {"benchmark": benchmark, "what": what, "figures": figures, "details": details,
              "peak_rss_mb": peak_rss_mb(), "wall_s": round(time.perf_counter() - t0, 2), "machine": machine()}
    write_json(out, result)
    for f in figures:
        print(f"{f['name']:60s} {f['value']:>12.3f} {f['unit']}", flush=True)
    print(f"wrote {out} (peak RSS {result['peak_rss_mb']} MiB, {result['wall_s']} s)", flush=True)
    return result


def synthetic_image(label: int, rng: np.random.Generator, size: int) -> np.ndarray:
    """A learnable RGB image: a class-coloured bar at a class-dependent height over a smooth random background
    with pixel noise (so that PNG decoding costs what it costs for photos of that size)."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    phase = rng.uniform(0, 2 * np.pi, 3)
    bg = np.stack([0.5 + 0.25 * np.sin(2 * np.pi * (xx + yy) + p) for p in phase], axis=-1)
    img = bg * 255 + rng.normal(0, 12, (size, size, 3))
    colours = [(230, 40, 40), (40, 230, 40), (40, 40, 230), (230, 230, 40), (40, 230, 230), (230, 40, 230)]
    h = max(1, size // 8)
    r0 = (label % 6) * size // 7 + int(rng.integers(0, max(1, size // 16)))
    img[r0 : r0 + h, size // 8 : size - size // 8] = colours[label % len(colours)]
    return np.clip(img, 0, 255).astype(np.uint8)


def write_stream(root: Path, tasks: list[list[int]], n_train: int, n_test: int, src_size: int, seed: int = 0):
    """PNG images + one run's filelists (stream/ and offline/, original layout) + a dirmap of every image.

    ``n_train`` images per class per task, ``n_test`` per class. Returns (image_root, run_dir, dirmap_csv)."""
    rng = np.random.default_rng(seed)
    image_root, run_dir = root / "images", root / "run0"
    listed = []

    def save(rel: str, label: int) -> None:
        (image_root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(synthetic_image(label, rng, src_size)).save(image_root / rel)
        listed.append(rel)

    per_task = []
    for t, labels in enumerate(tasks):
        lines = []
        for i in range(n_train):
            for lab in labels:
                rel = f"train/c{lab}/t{t}_{i:04d}.png"
                save(rel, lab)
                lines.append((rel, lab))
        per_task.append(lines)
    test = []
    for lab in sorted({lab for labels in tasks for lab in labels}):
        for i in range(n_test):
            rel = f"test/c{lab}/{i:04d}.png"
            save(rel, lab)
            test.append((rel, lab))
    for mode in ("stream", "offline"):
        folder = run_dir / mode
        folder.mkdir(parents=True, exist_ok=True)
        rows = []
        for t in range(len(tasks)):
            lines = per_task[t] if mode == "stream" else [x for k in range(t + 1) for x in per_task[k]]
            (folder / f"train_task_{t:02d}_filelist.txt").write_text("".join(f"{p} {y}\n" for p, y in lines))
            rows += [{"task": t, "label": y} for _, y in lines]
        (folder / "test_filelist.txt").write_text("".join(f"{p} {y}\n" for p, y in test))
        pd.DataFrame(rows).to_csv(folder / "train_all.txt")
    dirmap = root / "dirmap.csv"
    pd.DataFrame({"class": 1, "object": 1, "session": 1, "im_num": range(len(listed)),
                  "im_path": listed}).to_csv(dirmap)
    return image_root, run_dir, dirmap


def evaluated_images(metrics: dict, n_test_per_class: int) -> int:
    """Images evaluated over a run: per task and epoch, the test images of the active classes."""
    return sum(n_test_per_class * len(t["active"]) * max(int(t["n_epoch"]), 1) for t in metrics["tasks"])


def rates(metrics: dict, n_test_per_class: int) -> tuple[float, float]:
    """(training images/s, evaluation images/s) of one run's metrics."""
    n_train = sum(int(t["n_train"]) * int(t["n_epoch"]) for t in metrics["tasks"])
    train_s = sum(metrics["timing"]["train_s"])
    eval_s = sum(metrics["timing"]["eval_s"])
    return n_train / train_s, evaluated_images(metrics, n_test_per_class) / eval_s
