"""Benchmark: building the frozen-front feature cache at 224 px (images/s, user and system CPU seconds) before and
after the build reuses its heap, against the bound of the SqueezeNet front's forward pass alone.

The input: N synthetic 256x256 PNGs (default 810, the size of a demo cache) decoded into a 224 px image cache first
(not timed). Each variant runs in a fresh Python process (glibc's malloc state is per process), and only its timed
region counts (``getrusage`` before and after; imports, weights loading and the image-cache open are outside):

- ``before``: the build's loop as it was before the fix (:func:`legacy_compute`, copied here: ``torch.no_grad``, the
  output a memory map filled batch by batch, glibc's default allocator): each batch's activations (hundreds of MB
  at 224 px) are fresh ``mmap`` blocks, page-faulted in and unmapped again.
- ``after``: :func:`augmem.data.feature_cache.build_feature_cache` (the stage's function: sequential writes, inside
  :func:`~augmem.data.feature_cache.reused_heap`).
- ``front_only``: the front's forward pass on already normalised batches, the same batches, nothing written; with
  the heap reused (the bound) and with glibc's defaults (what a bare forward pass costs without the fix).

The ``before`` and ``after`` caches are compared byte for byte. Each run also reports the CPU seconds other processes
used meanwhile (``/proc/stat``): on a shared machine only runs where that is near 0 give the build's own wall time.
Both builds use the same batch size and torch threads (``--threads``; the workflow passes the train config's
``threads``, 1 by default, to the stage).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import REPO, figure, finish, parser, write_stream

SIZE = 224
VARIANTS = ["before", "after", "front_only_reused_heap", "front_only_default_heap"]


# ----------------------------------------------------------------------------------------------- child processes
def busy_cpu_s() -> float | None:
    """CPU seconds the whole machine has been busy (all processes; Linux ``/proc/stat``), None elsewhere."""
    try:
        f = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = f[3] + (f[4] if len(f) > 4 else 0)
    return (sum(f[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def legacy_compute(front, images, out, batch_size: int = 64) -> None:
    """The loop of ``augmem.data.feature_cache.compute_features`` before the fix, verbatim but for the log line."""
    import torch

    from augmem.data.image_cache import normalise_uint8
    from augmem.io import InputError

    n = images.shape[0]
    with torch.no_grad():
        for start in range(0, n, batch_size):
            x = normalise_uint8(np.asarray(images[start : start + batch_size]))
            e = front(x).float()
            if not torch.isfinite(e).all():
                raise InputError(f"non-finite front features for cache rows {start}..{start + len(x) - 1}")
            e16 = e.to(torch.float16)
            if not torch.isfinite(e16).all():
                raise InputError(f"front features of rows {start}..{start + len(x) - 1} overflow float16")
            out[start : start + len(x)] = e16.cpu().numpy()


def child(variant: str, image_cache: str, weights: str, out_prefix: str, batch_size: int) -> dict:
    """Run one variant in this (fresh) process; seconds of its timed region: wall, user, system, minor faults."""
    import torch

    from augmem.data.feature_cache import build_feature_cache, build_front, open_image_cache, reused_heap
    from augmem.data.image_cache import normalise_uint8

    front = build_front("squeezenet", weights)
    _, images = open_image_cache(image_cache)
    n = len(images)
    if variant.startswith("front_only"):
        xs = [normalise_uint8(np.array(images[s : s + batch_size])) for s in range(0, n, batch_size)]
    r0, t0, b0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter(), busy_cpu_s()
    if variant == "before":
        with torch.no_grad():
            shape = (n, *front(normalise_uint8(np.array(images[:1]))).shape[1:])
        out = np.memmap(out_prefix + ".f16", dtype=np.float16, mode="w+", shape=shape)
        legacy_compute(front, images, out, batch_size=batch_size)
        out.flush()
        del out
    elif variant == "after":
        build_feature_cache(image_cache, "squeezenet", weights, out_prefix, batch_size=batch_size, log=lambda m: None)
    elif variant in ("front_only_reused_heap", "front_only_default_heap"):
        heap = reused_heap() if variant == "front_only_reused_heap" else _nothing()
        with heap, torch.inference_mode():
            for x in xs:
                front(x)
    else:
        raise SystemExit(f"unknown variant {variant}")
    t, r, b1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF), busy_cpu_s()
    user, sys_ = r.ru_utime - r0.ru_utime, r.ru_stime - r0.ru_stime
    # other processes' CPU use meanwhile: the wall time is only the build's own when this is near 0
    other = None if b0 is None else max(0.0, b1 - b0 - user - sys_)
    return {"variant": variant, "n_images": n, "wall_s": t, "user_s": user, "sys_s": sys_,
            "minor_faults": r.ru_minflt - r0.ru_minflt, "torch_threads": torch.get_num_threads(),
            "other_processes_cpu_s": other}


class _nothing:
    def __enter__(self):
        return False

    def __exit__(self, *exc):
        return False


def run_child(variant: str, image_cache: Path, weights: Path, out_prefix: Path, batch_size: int,
              threads: int | None) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.bench_feature_cache", "--child", variant, "--image-cache",
           str(image_cache), "--weights", str(weights), "--out-prefix", str(out_prefix), "--batch-size",
           str(batch_size)]
    env = dict(os.environ)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"{variant} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------------- driver
def main(argv=None) -> dict:
    p = parser(__doc__, "results/benchmarks/feature_cache_224.json")
    p.add_argument("--n", type=int, default=None, help="images in the cache (default 810; 64 with --quick)")
    p.add_argument("--batch-size", type=int, default=64, help="the build's batch size (the stage's default 64)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=VARIANTS)
    p.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    p.add_argument("--image-cache", help=argparse.SUPPRESS)
    p.add_argument("--weights", help=argparse.SUPPRESS)
    p.add_argument("--out-prefix", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.image_cache, args.weights, args.out_prefix, args.batch_size)))
        return {}
    import torch
    from torchvision import models

    from augmem.data.image_cache import build_image_cache

    t0 = time.perf_counter()
    n = args.n or (64 if args.quick else 810)
    figures, details = [], {"n_images": n, "image_size": SIZE, "source_png": "256x256", "batch_size": args.batch_size,
                            "threads": args.threads or "torch default"}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        _, _, dirmap = write_stream(tmp, [[0]], n, 0, src_size=256)
        build_image_cache(dirmap, "toybox", tmp / "images", SIZE, tmp / "img", log=lambda m: None)
        weights = tmp / "squeezenet_local.pth"
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            torch.save(models.squeezenet1_0(weights=None).state_dict(), weights)
        runs = {}
        for variant in args.variants:
            r = run_child(variant, tmp / "img", weights, tmp / variant, args.batch_size, args.threads)
            runs[variant] = r
            print(f"{variant:24s} {r['wall_s']:7.2f} s wall  {n / r['wall_s']:6.1f} images/s  user {r['user_s']:6.2f} s"
                  f"  sys {r['sys_s']:6.2f} s  {r['minor_faults']:>9d} minor faults  {r['torch_threads']} threads"
                  f"  (other processes {r['other_processes_cpu_s'] or 0:.1f} CPU s meanwhile)", flush=True)
            figures += [figure(f"feature_cache_build_224/{variant}/rate", n / r["wall_s"], "images/s"),
                        figure(f"feature_cache_build_224/{variant}/wall", r["wall_s"], "s"),
                        figure(f"feature_cache_build_224/{variant}/user", r["user_s"], "s"),
                        figure(f"feature_cache_build_224/{variant}/sys", r["sys_s"], "s")]
        if {"before", "after"} <= runs.keys():
            same = (tmp / "before.f16").read_bytes() == (tmp / "after.f16").read_bytes()
            details["before_after_bytes_identical"] = same
            if not same:
                raise SystemExit("the caches built before and after differ")
            figures.append(figure("feature_cache_build_224/speedup_after_vs_before",
                                  runs["before"]["wall_s"] / runs["after"]["wall_s"], "x"))
        if {"after", "front_only_reused_heap"} <= runs.keys():
            figures.append(figure("feature_cache_build_224/after_over_front_only",
                                  runs["after"]["wall_s"] / runs["front_only_reused_heap"]["wall_s"], "x"))
        details["runs"] = {k: {m: round(v, 3) if isinstance(v, float) else v for m, v in r.items()}
                           for k, r in runs.items()}
    return finish(args.out, "feature_cache_224", __doc__.splitlines()[0], figures, details, t0)


if __name__ == "__main__":
    main(sys.argv[1:])
