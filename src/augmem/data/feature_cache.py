"""Frozen-feature cache: the output of a frozen backbone front ``E`` for every cached image, computed once.

AugMem with ``freeze_feature_extract`` and SqueezeNet never changes ``E`` (SqueezeNet's front has no BatchNorm or
dropout, so train and eval mode compute the same function). Its features can therefore be computed once per
(dataset, backbone, weights, image size) from the decoded-image cache and read back instead of running ``E`` at
every step: ``<prefix>.f16`` (float16, N x C x h x w, raw bytes for :class:`numpy.memmap`, rows in the image cache's
order) plus ``<prefix>.json``.

The features must come from the same weights the agent loads. With ``weights: none`` the front is a random init
drawn from the job's seed, so it cannot be shared: such runs use pixels (or the decoded-image cache). The JSON holds
a digest of the front's parameters; a training run compares it with its own front and refuses a mismatching cache.

Building costs about one front pass per image. The front's activations at 224 px are hundreds of MB per batch (the
first convolution's output alone is 292 MB at batch 64); glibc serves every block over 32 MB with a fresh ``mmap``
and unmaps it on ``free``, so each batch page-faulted about 3 GB of fresh zeroed pages (810 images: 10.8 million
page faults, 22 s of system time, as much as the convolutions themselves). :func:`reused_heap` keeps those blocks
in the heap for the duration of the build, so later batches reuse the same, already mapped, memory. The values do
not depend on it: rows are computed in the same fixed batches as before and written in order.
"""
from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import sys
import time
from typing import Iterator

import numpy as np
import torch
from torch import nn

from augmem.data.cache_plan import (cache_input_files, cache_prefixes, cache_stage_args, feature_cache_reason,
                                    weights_by_key, weights_key)
from augmem.data.image_cache import (CachedImageDataset, _CachedFilelist, cache_files, normalise_uint8,
                                     read_cache_meta)
from augmem.data.image_cache import FORMAT as IMAGE_FORMAT
from augmem.io import InputError, atomic_path, check_outputs, write_json
from augmem.models import build_backbone
from augmem.models.backbones import canonical_name

FORMAT = "augmem-feature-cache"
VERSION = 1


# ------------------------------------------------------------------------------------------------- the front
def assert_cacheable_front(front: nn.Module) -> None:
    """A cacheable front computes the same function in train and eval mode: no BatchNorm, no dropout."""
    bad = [type(m).__name__ for m in front.modules()
           if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd))]
    if bad:
        raise InputError(f"the backbone front holds {sorted(set(bad))}: its output depends on the mode, not cacheable")


def front_digest(front: nn.Module) -> str:
    """SHA-256 of the front's parameters and buffers (names, shapes and float32 values)."""
    h = hashlib.sha256()
    for name, t in sorted(front.state_dict().items()):
        t = t.detach().to("cpu", torch.float32).contiguous()
        h.update(f"{name}:{tuple(t.shape)};".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def build_front(backbone: str, weights: str) -> nn.Module:
    """The frozen front the agent builds for these weights (the global RNG is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        front = build_backbone(backbone, 2, weights).front
    front.eval()
    for p in front.parameters():
        p.requires_grad_(False)
    return front


# ------------------------------------------------------------------------------------------------- building
def open_image_cache(prefix: str | os.PathLike) -> tuple[dict, np.memmap]:
    meta, data_path = read_cache_meta(prefix, ".u8", IMAGE_FORMAT, 1)
    return meta, np.memmap(data_path, dtype=np.uint8, mode="r", shape=tuple(meta["shape"]))


# glibc mallopt parameters and their documented defaults (malloc.h; mallopt(3))
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_DEFAULT_TRIM_THRESHOLD, _DEFAULT_MMAP_MAX = 128 * 1024, 65536


def _glibc():
    """The process's C library if it is glibc with ``mallopt`` and ``malloc_trim``, else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 (glibc only)
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):
        return None
    return libc


@contextlib.contextmanager
def reused_heap() -> Iterator[bool]:
    """Inside the block, glibc keeps freed memory for reuse instead of returning it to the kernel; yields whether
    that applies (glibc only, elsewhere a no-op).

    Without it every block over ``M_MMAP_THRESHOLD`` (at most 32 MB) is a fresh ``mmap`` whose pages fault in zeroed
    on first touch and go back on ``free`` (and the heap top over ``M_TRIM_THRESHOLD`` is trimmed), so a loop that
    allocates and frees the same large activations every batch spends as much system time faulting pages as it
    spends computing. Inside the block large blocks come from the heap (``M_MMAP_MAX`` 0) and the heap is not
    trimmed; afterwards both parameters are set back to glibc's defaults (which, as any explicit setting does, turns
    off glibc's dynamic adjustment of the thresholds) and the free heap is returned to the kernel
    (``malloc_trim``). Process-wide: meant for a build that runs alone, as the stage does.
    """
    libc = _glibc()
    if libc is None:
        yield False
        return
    ok = bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    try:
        yield ok
    finally:
        libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
        libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
        libc.malloc_trim(0)


def iter_features(front: nn.Module, images: np.ndarray, batch_size: int = 64, device: str | torch.device = "cpu",
                  log=print) -> Iterator[tuple[int, np.ndarray]]:
    """``(start, float16(E(normalise(images[start:start + batch_size]))))`` for consecutive fixed batches (the
    deterministic order and batch composition of the cache); InputError on non-finite values or float16 overflow."""
    device = torch.device(device)
    front = front.to(device).eval()
    n = images.shape[0]
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            x = normalise_uint8(np.asarray(images[start : start + batch_size])).to(device)
            e = front(x).float()
            e16 = e.to(torch.float16)
            if not torch.isfinite(e16).all():  # one check: a non-finite float32 value stays non-finite in float16
                end = start + len(x) - 1
                if not torch.isfinite(e).all():
                    raise InputError(f"non-finite front features for cache rows {start}..{end}")
                raise InputError(f"front features of rows {start}..{end} overflow float16 (|e| > 65504)")
            yield start, e16.cpu().numpy()
            if (start // batch_size + 1) % 100 == 0:
                log(f"features: {start + len(x)}/{n} images")


def compute_features(front: nn.Module, images: np.ndarray, out: np.ndarray, batch_size: int = 64,
                     device: str | torch.device = "cpu", log=print) -> None:
    """``out[i] = float16(E(normalise(images[i])))`` for every row, in fixed batches (deterministic order)."""
    for start, e16 in iter_features(front, images, batch_size=batch_size, device=device, log=log):
        out[start : start + len(e16)] = e16


def write_features(front: nn.Module, images: np.ndarray, path: str | os.PathLike, shape: tuple[int, ...],
                   batch_size: int = 64, device: str | torch.device = "cpu", log=print) -> None:
    """The bytes of :func:`compute_features`'s array (C order, float16) written to ``path`` batch after batch with
    plain sequential writes (no memory map of the output); InputError unless they make exactly ``shape``."""
    want = int(np.prod(shape)) * 2
    with open(path, "wb") as f:
        for start, e16 in iter_features(front, images, batch_size=batch_size, device=device, log=log):
            if e16.shape[1:] != tuple(shape[1:]):
                raise InputError(f"front features of rows {start}.. have shape {e16.shape[1:]}, "
                                 f"expected {tuple(shape[1:])}")
            f.write(np.ascontiguousarray(e16).data)
        if f.tell() != want:
            raise InputError(f"{path}: {f.tell()} bytes of features written, expected {want} for shape {shape}")


def build_feature_cache(image_cache_prefix: str | os.PathLike, backbone: str, weights: str,
                        out_prefix: str | os.PathLike, batch_size: int = 64, device: str | torch.device = "cpu",
                        log=print) -> dict:
    """Compute ``E(x)`` of every image of a decoded-image cache into ``<out_prefix>.f16`` + ``<out_prefix>.json``.

    ``weights`` as the agent gets it ('imagenet' or a state-dict file); 'none' is refused (see module docstring).
    Batched, ``torch.inference_mode``, eval mode, inside :func:`reused_heap`; both files written atomically, the
    JSON last. Both outputs are checked first (not overlapping the inputs, not a folder, writable:
    :func:`augmem.io.check_outputs`).
    """
    key = weights_key(weights)
    if key is None:
        raise InputError("weights 'none' (random init) cannot be cached: the front depends on each job's seed")
    data_path, json_path = cache_files(out_prefix, ".f16")
    inputs = [*cache_files(image_cache_prefix, ".u8"), None if key == "imagenet" else weights]
    check_outputs([data_path, json_path], inputs=inputs)
    name = canonical_name(backbone)
    img_meta, images = open_image_cache(image_cache_prefix)
    front = build_front(name, weights)
    assert_cacheable_front(front)
    n, size = int(img_meta["shape"][0]), int(img_meta["size"])
    t0 = time.perf_counter()
    cudnn_det = torch.backends.cudnn.deterministic
    torch.backends.cudnn.deterministic = True
    try:
        with reused_heap():
            with torch.inference_mode():
                probe = front.to(device)(normalise_uint8(np.asarray(images[:1])).to(device))
            shape = (n, *[int(v) for v in probe.shape[1:]])
            del probe
            with atomic_path(data_path, inputs=inputs) as tmp:
                write_features(front, images, tmp, shape, batch_size=batch_size, device=device, log=log)
    finally:
        torch.backends.cudnn.deterministic = cudnn_det
    meta = {"format": FORMAT, "version": VERSION, "shape": list(shape), "dtype": "float16", "size": size,
            "backbone": name, "weights": str(weights), "weights_key": key, "front_digest": front_digest(front),
            "image_cache": str(image_cache_prefix), "batch_size": int(batch_size), "torch": torch.__version__,
            "n_images": n, "im_paths": list(img_meta["im_paths"])}
    write_json(json_path, meta)
    sec = time.perf_counter() - t0
    log(f"wrote {data_path} ({n} x {tuple(shape[1:])} float16, {np.prod(shape) * 2 / 2**20:.1f} MiB) and {json_path} "
        f"in {sec:.1f} s ({n / max(sec, 1e-9):.1f} images/s, {torch.get_num_threads()} torch threads)")
    return meta


# ------------------------------------------------------------------------------------------------- reading
class CachedFeatureDataset(_CachedFilelist):
    """The front features of a filelist's images: items ``(float32 tensor C x h x w, label)``.

    ``pixel_dataset`` (optional, same filelist) supplies the images themselves where a consumer needs them (the
    images shown in viz.npz): :meth:`pixel_item`.
    """

    data_suffix = ".f16"
    fmt = FORMAT
    itemsize = 2
    np_dtype = np.float16

    def __init__(self, filelist: str | os.PathLike, prefix: str | os.PathLike, pixel_dataset=None):
        super().__init__(filelist, prefix)
        self.pixel_dataset = pixel_dataset
        if pixel_dataset is not None and list(getattr(pixel_dataset, "paths", self.paths)) != self.paths:
            raise InputError(f"{filelist}: the pixel dataset lists other images than the feature dataset")

    def _convert(self, batch: np.ndarray) -> torch.Tensor:
        if not (batch.flags.writeable and batch.flags.c_contiguous):
            batch = np.array(batch, order="C")  # a private, writable copy (memmaps are read-only)
        return torch.from_numpy(batch).to(torch.float32)

    def pixel_item(self, i: int) -> torch.Tensor | None:
        """The normalised image of item ``i`` (None without a pixel dataset)."""
        return None if self.pixel_dataset is None else self.pixel_dataset[i][0]

    def check_matches(self, front: nn.Module, image_size: int) -> None:
        """InputError unless the cache was computed by this front (same parameters) at this image size."""
        if int(self.meta.get("size", -1)) != int(image_size):
            raise InputError(f"{self.data_path}: features of {self.meta.get('size')}x{self.meta.get('size')} images, "
                             f"the run uses image_size {image_size}")
        if self.meta.get("front_digest") != front_digest(front):
            raise InputError(f"{self.data_path}: computed with other front weights ({self.meta.get('weights')}) than "
                             "the agent's; rebuild the feature cache with the agent's weights")


__all__ = ["CachedFeatureDataset", "CachedImageDataset", "assert_cacheable_front", "build_feature_cache",
           "cache_input_files", "cache_prefixes", "cache_stage_args", "feature_cache_reason", "front_digest",
           "weights_by_key", "weights_key"]  # the naming helpers live in augmem.data.cache_plan (torch-free)
