"""Decoded-image cache: every image the task set-up can use, decoded and resized once into one memory-mapped array.

Training re-reads every task image once per epoch and the test set after every epoch; decoding and resizing PNG/JPEG
files dominates at small image sizes and on a GPU. The cache is ``<prefix>.u8`` (raw uint8 bytes, shape
N x size x size x 3, readable with :class:`numpy.memmap`) plus ``<prefix>.json`` (shape, dtype, size and the ordered
list of ``im_paths``, relative to the image root exactly as the filelists list them).

Pixels are produced by the first step of :func:`~augmem.data.datasets.study_transform` (PIL bilinear resize to
size x size of the RGB image), so :class:`CachedImageDataset` returns bit-for-bit the tensors that
:class:`~augmem.data.datasets.FilelistDataset` with the study transform returns.
"""
from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from augmem.data.datasets import IMAGENET_MEAN, IMAGENET_STD, _read_lines, open_rgb, study_transform
from augmem.data import layouts
from augmem.data.filelists import read_dirmap
from augmem.io import InputError, atomic_path, check_outputs, write_json

FORMAT = "augmem-image-cache"
VERSION = 1


def cache_files(prefix: str | os.PathLike, data_suffix: str) -> tuple[Path, Path]:
    """(data file, JSON file) of a cache prefix: ``<prefix><data_suffix>`` and ``<prefix>.json``."""
    prefix = str(prefix)
    return Path(prefix + data_suffix), Path(prefix + ".json")


def cached_im_paths(dirmap: pd.DataFrame, layout: str, sample_rate: int = 20) -> list[str]:
    """The ``im_path`` values the task set-up can use, in dirmap order without repeats.

    The rows the layout's task set-up keeps (:meth:`augmem.data.layouts.Layout.select_frames`, as
    :func:`augmem.data.filelists.train_test_split`, training and test sessions alike): CORe50 the frames
    ``arange(10, 300, sample_rate)``, the other layouts every dirmap row.
    """
    dirmap = layouts.get(layout).select_frames(dirmap, sample_rate)
    return list(dict.fromkeys(dirmap["im_path"].astype(str).tolist()))


def decode_image(path: str | os.PathLike, size: int, resize=None) -> np.ndarray:
    """An image file as a (size, size, 3) uint8 array, resized like the study transform; InputError if unreadable."""
    resize = resize or study_transform(size).transforms[0]
    arr = np.asarray(resize(open_rgb(path)), dtype=np.uint8)
    if arr.shape != (size, size, 3):
        raise InputError(f"{path}: decoded to shape {arr.shape}, expected {(size, size, 3)}")
    return arr


def build_image_cache(dirmap_csv: str | os.PathLike, layout: str, image_root: str | os.PathLike, size: int,
                      out_prefix: str | os.PathLike, sample_rate: int = 20, n_threads: int | None = None,
                      log=print) -> dict:
    """Decode every usable image of a dirmap into ``<out_prefix>.u8`` + ``<out_prefix>.json``; returns the JSON dict.

    Decoding runs on ``n_threads`` threads (default: the CPU count; PIL releases the GIL while decoding). Both files
    are written atomically, the JSON last. A missing or corrupt image is an InputError naming it. Both outputs are
    checked first (not overlapping the inputs, not a folder, writable: :func:`augmem.io.check_outputs`).
    """
    size = int(size)
    if size < 1:
        raise InputError(f"image size must be a positive integer, got {size}")
    image_root = Path(image_root)
    data_path, json_path = cache_files(out_prefix, ".u8")
    inputs = [dirmap_csv, image_root]
    check_outputs([data_path, json_path], inputs=inputs)
    if not image_root.is_dir():
        raise InputError(f"{image_root}: image root folder not found")
    lay = layouts.get(layout)
    paths = cached_im_paths(read_dirmap(dirmap_csv), lay, sample_rate)
    if not paths:
        raise InputError(f"{dirmap_csv}: no image of the task set-up to cache (layout {lay.name}, "
                         f"sample_rate {sample_rate})")
    shape = (len(paths), size, size, 3)
    resize = study_transform(size).transforms[0]
    n_threads = max(1, int(n_threads or os.cpu_count() or 1))
    with atomic_path(data_path, inputs=inputs) as tmp:
        arr = np.memmap(tmp, dtype=np.uint8, mode="w+", shape=shape)

        def fill(i: int) -> None:
            arr[i] = decode_image(image_root / paths[i], size, resize)

        with ThreadPoolExecutor(max_workers=n_threads) as pool:
            for done, _ in enumerate(pool.map(fill, range(len(paths))), start=1):
                if done % 10000 == 0:
                    log(f"decoded {done}/{len(paths)} images")
        arr.flush()
        del arr
    meta = {"format": FORMAT, "version": VERSION, "shape": list(shape), "dtype": "uint8", "size": size,
            "layout": lay.name, "sample_rate": int(sample_rate) if lay.sample_rate else None,
            "resize": "PIL bilinear to size x size of the RGB image (study_transform)",
            "dirmap": str(dirmap_csv), "image_root": str(image_root), "n_images": len(paths), "im_paths": paths}
    write_json(json_path, meta)
    log(f"wrote {data_path} ({len(paths)} images of {size}x{size}, {np.prod(shape) / 2**20:.1f} MiB) and {json_path}")
    return meta


def read_cache_meta(prefix: str | os.PathLike, data_suffix: str, fmt: str, itemsize: int) -> tuple[dict, Path]:
    """The JSON of a cache, checked against its data file (format, shape, size on disk); (meta, data path)."""
    data_path, json_path = cache_files(prefix, data_suffix)
    if not json_path.is_file():
        raise InputError(f"{json_path}: cache description not found")
    if not data_path.is_file():
        raise InputError(f"{data_path}: cache data file not found")
    try:
        meta = json.loads(json_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{json_path}: cannot be read as JSON ({exc})") from None
    found = meta.get("format") if isinstance(meta, dict) else None
    if found != fmt:
        raise InputError(f"{json_path}: not a {fmt} description (format {found!r})")
    shape, im_paths = meta.get("shape"), meta.get("im_paths")
    if not isinstance(shape, list) or not isinstance(im_paths, list) or not shape or shape[0] != len(im_paths):
        raise InputError(f"{json_path}: 'shape' and 'im_paths' are missing or disagree")
    want = int(np.prod(shape)) * itemsize
    got = data_path.stat().st_size
    if got != want:
        raise InputError(f"{data_path}: {got} bytes, expected {want} for shape {shape} (truncated or stale cache)")
    return meta, data_path


def normalise_uint8(batch: np.ndarray) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> contiguous (B, 3, H, W) float32: /255 then ImageNet normalisation, the same float
    operations as ``ToTensor`` + ``Normalize`` (so the values are identical)."""
    if not (batch.flags.writeable and batch.flags.c_contiguous and batch.dtype == np.uint8):
        batch = np.array(batch, dtype=np.uint8, order="C")  # a private, writable copy (memmaps are read-only)
    x = torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous().to(torch.float32)
    mean = torch.as_tensor(IMAGENET_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.as_tensor(IMAGENET_STD, dtype=torch.float32).view(1, 3, 1, 1)
    return x.div_(255).sub_(mean).div_(std)


class Batch(list):
    """The items of one batch (a list, as DataLoader's fetcher expects) that also carries them already stacked:
    ``collated = (inputs, labels)``; :func:`augmem.train.loop.collate` uses it instead of stacking the items again."""

    def __init__(self, x: torch.Tensor, labels: list[int]):
        super().__init__(zip(x.unbind(0), labels))
        self.collated = (x, torch.as_tensor(labels, dtype=torch.int64))


class _CachedFilelist(torch.utils.data.Dataset):
    """A filelist mapped onto the rows of a memory-mapped cache (opened lazily in each process)."""

    data_suffix = ""
    fmt = ""
    itemsize = 1
    np_dtype = np.uint8

    def __init__(self, filelist: str | os.PathLike, prefix: str | os.PathLike):
        self.filelist = Path(filelist)
        self.prefix = str(prefix)
        self.meta, self.data_path = read_cache_meta(prefix, self.data_suffix, self.fmt, self.itemsize)
        self.shape = tuple(int(v) for v in self.meta["shape"])
        row_of = {p: i for i, p in enumerate(self.meta["im_paths"])}
        lines = _read_lines(self.filelist)
        rows = []
        for lineno, rel, _ in lines:
            if rel not in row_of:
                raise InputError(f"{rel}: image not in the cache {self.data_path} (listed in {self.filelist}, "
                                 f"line {lineno}); rebuild the cache from the dirmap the filelists were made from")
            rows.append(row_of[rel])
        self.rows = np.asarray(rows, dtype=np.int64)
        self.paths = [rel for _, rel, _ in lines]
        self.targets = [lab for _, _, lab in lines]
        self._array = None

    def __getstate__(self):  # DataLoader workers re-open the memmap instead of receiving a copy of it
        state = dict(self.__dict__)
        state["_array"] = None
        return state

    @property
    def array(self) -> np.memmap:
        if self._array is None:
            self._array = np.memmap(self.data_path, dtype=self.np_dtype, mode="r", shape=self.shape)
        return self._array

    def __len__(self) -> int:
        return len(self.rows)

    def _convert(self, batch: np.ndarray) -> torch.Tensor:
        raise NotImplementedError

    def __getitem__(self, i: int):
        x = self._convert(np.array(self.array[self.rows[i] : self.rows[i] + 1]))[0]
        return x, self.targets[i]

    def __getitems__(self, indices: list[int]) -> Batch:
        """A whole batch in one read and one conversion (DataLoader uses this when it exists)."""
        rows = self.rows[np.asarray(indices, dtype=np.int64)]
        x = self._convert(self.array[rows])  # fancy indexing: one private copy of the rows
        return Batch(x, [self.targets[i] for i in indices])


class CachedImageDataset(_CachedFilelist):
    """The images of a filelist read from a decoded-image cache: items ``(normalised image tensor, label)``, equal to
    those of ``FilelistDataset(filelist, root, study_transform(size))``. A listed path absent from the cache is an
    InputError naming it; ``image_size`` (optional) must equal the cache's size."""

    data_suffix = ".u8"
    fmt = FORMAT
    itemsize = 1
    np_dtype = np.uint8

    def __init__(self, filelist: str | os.PathLike, cache_prefix: str | os.PathLike, image_size: int | None = None):
        super().__init__(filelist, cache_prefix)
        if image_size is not None and int(self.meta["size"]) != int(image_size):
            raise InputError(f"{self.data_path}: cached at {self.meta['size']}x{self.meta['size']}, "
                             f"the run uses image_size {image_size}")

    def _convert(self, batch: np.ndarray) -> torch.Tensor:
        return normalise_uint8(batch)

    def uint8_rows(self, indices) -> np.ndarray:
        """(n, H, W, 3) uint8 pixels of the given items (for the feature cache)."""
        return np.asarray(self.array[self.rows[np.asarray(indices, dtype=np.int64)]])
