"""Benchmark: AugMem training (and evaluation) images/s at 224x224 on the pixel path (PNG decoding + frozen front at
every step) vs the frozen-feature cache, plus the one-off cost of building the caches.

The stream: 2 tasks x 2 classes, 256x256 PNG sources, AugMem with the published CORe50 hyperparameters (batch 21,
frozen SqueezeNet front), one epoch per task, weights from a local state-dict file (random init, saved here: the
speed does not depend on the values), DataLoader without workers (CPU).
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch
from torchvision import models

from augmem.agents import get_agent_class
from augmem.data.datasets import FilelistDataset, study_transform
from augmem.data.feature_cache import build_feature_cache
from augmem.data.image_cache import build_image_cache
from augmem.train.fidelity import train_switches
from augmem.train.hparams import load_params, resolve_hparams
from augmem.train.loop import run_stream
from augmem.train.seeding import seed_everything
from benchmarks.common import REPO, figure, finish, parser, rates, write_stream

TASKS = [[0, 1], [2, 3]]
SIZE = 224


def breakdown(impl: str, hp: dict, filelist: Path, image_root: Path, device: str = "cpu") -> dict[str, float]:
    """Milliseconds per image (best of 3, one batch) of what the pixel path adds and of what both paths share:
    decoding + resizing, the frozen front, AugMem's training step on front features and, within that step, the
    memory read (attention over the slots for every key, forward and backward)."""
    ds = FilelistDataset(filelist, image_root, study_transform(SIZE))
    b = int(hp["batch_size"])
    best = {"decode_resize": [], "front_forward": [], "augmem_main_step_on_features": [],
            "memory_read_forward_backward": []}
    seed_everything(0)
    agent = get_agent_class(impl)(4, hp, train_switches("reference"), device)
    agent.set_active([0, 1])
    y = torch.as_tensor(ds.targets[:b]).to(device)
    sync = torch.cuda.synchronize if str(device).startswith("cuda") else (lambda: None)
    for _ in range(3):
        t = time.perf_counter()
        x = torch.stack([ds[i][0] for i in range(b)])
        best["decode_resize"].append(time.perf_counter() - t)
        x = x.to(device)
        with torch.no_grad():
            sync()
            t = time.perf_counter()
            e = agent.model.front(x)
            sync()
            best["front_forward"].append(time.perf_counter() - t)
        agent.set_inputs_are_features(True)
        agent._train_mode()
        t = time.perf_counter()
        agent.main_step(e, y)
        sync()
        best["augmem_main_step_on_features"].append(time.perf_counter() - t)
        t = time.perf_counter()
        read, _ = agent.model.read_map(e)
        read.sum().backward()
        sync()
        best["memory_read_forward_backward"].append(time.perf_counter() - t)
        agent.set_inputs_are_features(False)
    return {k: round(1000 * min(v) / b, 3) for k, v in best.items()}


def main(argv=None) -> dict:
    p = parser(__doc__, "results/benchmarks/augmem_features_224.json")
    p.add_argument("--device", default="cpu", help="cpu or cuda (a GPU run also reports peak GPU memory)")
    p.add_argument("--n-train", type=int, default=None,
                   help="training images per class and task (default 42; more for a GPU-sized stream)")
    p.add_argument("--workers", type=int, default=0, help="data-loader workers (0 on the 2-core CPU)")
    p.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA only)")
    p.add_argument("--channels-last", action="store_true", help="channels_last memory format (CUDA only)")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    n_train, n_test = (11, 5) if args.quick else (42, 21)
    if args.n_train:
        n_train, n_test = args.n_train, max(args.n_train // 2, 1)
    cuda = str(args.device).startswith("cuda")
    params = load_params(REPO / "params")
    impl, hp = resolve_hparams(params, "core50", "augmem", "class_iid")
    hp = {**hp, "n_workers": args.workers, "amp": args.amp, "channels_last": args.channels_last, "visualize": False,
          "n_epoch": 1, "n_epoch_first_task": None, "image_size": SIZE}
    details = {"n_train_per_class_per_task": n_train, "n_test_per_class": n_test, "tasks": TASKS,
               "source_png": "256x256", "image_size": SIZE, "batch_size": hp["batch_size"]}
    figures = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        image_root, run_dir, dirmap = write_stream(tmp, TASKS, n_train, n_test, src_size=256)
        weights = tmp / "squeezenet_local.pth"
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            torch.save(models.squeezenet1_0(weights=None).state_dict(), weights)
        hp["weights"] = str(weights)
        n_images = len(TASKS) * 2 * n_train + 4 * n_test
        tb = time.perf_counter()
        build_image_cache(dirmap, "toybox", image_root, SIZE, tmp / "images", log=lambda m: None)
        t_img = time.perf_counter() - tb
        tb = time.perf_counter()
        build_feature_cache(tmp / "images", "squeezenet", str(weights), tmp / "features", device=args.device,
                            log=lambda m: None)
        t_feat = time.perf_counter() - tb
        details.update(n_cached_images=n_images, image_cache_build_s=round(t_img, 3),
                       feature_cache_build_s=round(t_feat, 3))
        figures.append(figure("cache_build_224/images", n_images / t_img, "images/s"))
        figures.append(figure("cache_build_224/front_features", n_images / t_feat, "images/s"))
        res = {}
        for path, caches in (("pixels", {}),
                             ("front_features", {"image_cache": tmp / "images", "feature_cache": tmp / "features"})):
            switches = train_switches("reference")
            seed_everything(0)
            agent = get_agent_class(impl)(4, hp, switches, args.device)
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            m = run_stream(agent, run_dir, image_root, tmp / path, hp=hp, switches=switches, meta={}, seed=0,
                           log=lambda msg: None, **caches)
            assert m["meta"]["inputs"] == path, m["meta"]["inputs"]
            train_ips, eval_ips = rates(m, n_test)
            res[path] = {"train_images_per_s": train_ips, "eval_images_per_s": eval_ips, "test_all": m["test_all"]}
            figures.append(figure(f"augmem_train_224/{path}", train_ips, "images/s"))
            figures.append(figure(f"augmem_eval_224/{path}", eval_ips, "images/s"))
            if cuda:
                gib = torch.cuda.max_memory_allocated() / 2**30
                res[path]["gpu_peak_gib"] = gib
                figures.append(figure(f"augmem_224/{path}/gpu_peak_memory", gib, "GiB"))
        speedup = res["front_features"]["train_images_per_s"] / res["pixels"]["train_images_per_s"]
        figures.append(figure("augmem_train_224/speedup_front_features_vs_pixels", speedup, "x"))
        figures.append(figure("augmem_eval_224/speedup_front_features_vs_pixels",
                              res["front_features"]["eval_images_per_s"] / res["pixels"]["eval_images_per_s"], "x"))
        ms = breakdown(impl, hp, run_dir / "stream" / "train_task_00_filelist.txt", image_root, args.device)
        details["per_image_ms"] = ms
        # What the cache can save at most: decoding and the front, not AugMem's own step
        bound = (ms["decode_resize"] + ms["front_forward"] + ms["augmem_main_step_on_features"]) / ms[
            "augmem_main_step_on_features"]
        figures.append(figure("augmem_train_224/speedup_bound_decode_and_front_free", bound, "x"))
        for k, v in ms.items():
            figures.append(figure(f"augmem_224_per_image/{k}", v, "ms"))
        details["runs"] = res
        details["target_train_speedup"] = 10.0
    return finish(args.out, "augmem_features_224", __doc__.splitlines()[0], figures, details, t0)


if __name__ == "__main__":
    main(sys.argv[1:])
