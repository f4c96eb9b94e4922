"""Decoded-image cache: exact pixel equality with the file path, the CORe50 frame selection, atomic and deterministic
output, bad inputs, and the stage CLI."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from augmem.data.datasets import FilelistDataset, study_transform
from augmem.data.image_cache import CachedImageDataset, build_image_cache, cached_im_paths, decode_image
from augmem.io import InputError

REPO = Path(__file__).resolve().parents[2]


def write_dirmap(image_root: Path, path: Path, kind_rows=None) -> Path:
    """A dirmap listing every PNG under image_root (one session per image folder, im_num in file order)."""
    paths = sorted(str(p.relative_to(image_root)) for p in image_root.rglob("*.png"))
    df = kind_rows if kind_rows is not None else pd.DataFrame({
        "class": 1, "object": 1, "session": 1, "im_num": range(len(paths)), "im_path": paths})
    df.to_csv(path)
    return path


@pytest.fixture
def tiny_cache(tiny_files, tmp_path):
    image_root, run_dir = tiny_files
    dirmap = write_dirmap(image_root, tmp_path / "dirmap.csv")
    return image_root, run_dir, dirmap


def silent(_msg):
    pass


@pytest.mark.parametrize("size", [32, 24, 45])
def test_cached_items_equal_filelist_items(tiny_cache, tmp_path, size):
    """Same tensors (bit for bit) and labels as FilelistDataset + study_transform, also when resizing."""
    image_root, run_dir, dirmap = tiny_cache
    meta = build_image_cache(dirmap, "toybox", image_root, size, tmp_path / "c" / "img", n_threads=3, log=silent)
    assert meta["shape"] == [72, size, size, 3] and meta["dtype"] == "uint8" and meta["size"] == size
    assert (tmp_path / "c" / "img.u8").stat().st_size == 72 * size * size * 3
    for name in ("test_filelist.txt", "train_task_01_filelist.txt"):
        fl = run_dir / "stream" / name
        ref = FilelistDataset(fl, image_root, study_transform(size))
        cached = CachedImageDataset(fl, tmp_path / "c" / "img", image_size=size)
        assert len(cached) == len(ref) and cached.targets == ref.targets and cached.paths == ref.paths
        for i in range(len(ref)):
            x_ref, y_ref = ref[i]
            x, y = cached[i]
            assert y == y_ref and x.dtype == torch.float32 and x.shape == (3, size, size)
            assert torch.equal(x, x_ref), (name, i)
        # the batched read (DataLoader's __getitems__) gives the same items
        batch = cached.__getitems__([5, 0, 3])
        assert all(torch.equal(b[0], cached[i][0]) and b[1] == cached[i][1] for b, i in zip(batch, [5, 0, 3]))


def test_loader_with_workers_and_subset(tiny_cache, tmp_path):
    image_root, run_dir, dirmap = tiny_cache
    build_image_cache(dirmap, "toybox", image_root, 32, tmp_path / "img", log=silent)
    fl = run_dir / "stream" / "test_filelist.txt"
    ds = CachedImageDataset(fl, tmp_path / "img")
    _ = ds[0]  # opens the memmap in this process; workers must re-open theirs
    sub = torch.utils.data.Subset(ds, [1, 4, 7, 20])
    ref = torch.stack([ds[i][0] for i in [1, 4, 7, 20]])
    for workers in (0, 1):
        (x, y), = list(torch.utils.data.DataLoader(sub, batch_size=4, num_workers=workers))
        assert torch.equal(x, ref) and y.tolist() == [ds.targets[i] for i in [1, 4, 7, 20]]


def test_core50_caches_only_the_sampled_frames(tmp_path):
    root = tmp_path / "root"
    rows = []
    for sess in (1, 3):
        for num in range(0, 300, 5):
            rel = f"s{sess}/o1/C_{sess:02d}_01_{num:03d}.png"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            rows.append({"class": 1, "object": 1, "session": sess, "im_num": num, "im_path": rel})
    df = pd.DataFrame(rows)
    keep = [r["im_path"] for r in rows if r["im_num"] in range(10, 300, 60)]
    assert cached_im_paths(df, "core50", 60) == keep and len(keep) == 10
    assert cached_im_paths(df, "toybox") == df["im_path"].tolist()
    for rel in keep:  # only the sampled frames exist: the others must not be read
        Image.fromarray(np.full((8, 8, 3), 7, np.uint8)).save(root / rel)
    dirmap = tmp_path / "dirmap.csv"
    df.to_csv(dirmap)
    meta = build_image_cache(dirmap, "core50", root, 4, tmp_path / "img", sample_rate=60, log=silent)
    assert meta["im_paths"] == keep and meta["sample_rate"] == 60 and meta["shape"] == [10, 4, 4, 3]
    arr = np.memmap(tmp_path / "img.u8", dtype=np.uint8, mode="r", shape=(10, 4, 4, 3))
    assert (arr == 7).all()


def test_deterministic_and_thread_independent(tiny_cache, tmp_path):
    image_root, _, dirmap = tiny_cache
    build_image_cache(dirmap, "toybox", image_root, 20, tmp_path / "a", n_threads=1, log=silent)
    build_image_cache(dirmap, "toybox", image_root, 20, tmp_path / "b", n_threads=4, log=silent)
    assert (tmp_path / "a.u8").read_bytes() == (tmp_path / "b.u8").read_bytes()
    a, b = json.loads((tmp_path / "a.json").read_text()), json.loads((tmp_path / "b.json").read_text())
    assert a["im_paths"] == b["im_paths"] and a["shape"] == b["shape"]
    # pixels are exactly the study transform's resize of each file
    first = decode_image(image_root / a["im_paths"][0], 20)
    arr = np.memmap(tmp_path / "a.u8", dtype=np.uint8, mode="r", shape=tuple(a["shape"]))
    assert np.array_equal(arr[0], first)


def test_missing_and_corrupt_images_name_the_file(tiny_cache, tmp_path):
    image_root, _, dirmap = tiny_cache
    victim = image_root / "test" / "c2" / "013.png"
    victim.unlink()
    with pytest.raises(InputError, match=r"test/c2/013\.png: image not found"):
        build_image_cache(dirmap, "toybox", image_root, 16, tmp_path / "out" / "img", log=silent)
    victim.write_bytes(b"not a png")
    with pytest.raises(InputError, match=r"test/c2/013\.png: cannot read image"):
        build_image_cache(dirmap, "toybox", image_root, 16, tmp_path / "out" / "img", log=silent)
    # nothing that looks complete is left behind
    assert not (tmp_path / "out" / "img.u8").exists() and not (tmp_path / "out" / "img.json").exists()
    assert [p.name for p in (tmp_path / "out").iterdir()] == []


def test_reader_rejects_what_does_not_fit(tiny_cache, tmp_path):
    image_root, run_dir, dirmap = tiny_cache
    build_image_cache(dirmap, "toybox", image_root, 16, tmp_path / "img", log=silent)
    fl = run_dir / "stream" / "test_filelist.txt"
    with pytest.raises(InputError, match=r"cached at 16x16, the run uses image_size 32"):
        CachedImageDataset(fl, tmp_path / "img", image_size=32)
    # a filelist path absent from the cache: named, with the filelist and line
    odd = tmp_path / "odd.txt"
    odd.write_text("test/c0/000.png 0\ntest/c9/nope.png 1\n")
    with pytest.raises(InputError, match=r"test/c9/nope\.png: image not in the cache .*odd\.txt, line 2\)"):
        CachedImageDataset(odd, tmp_path / "img")
    # a truncated data file and a missing description
    data = (tmp_path / "img.u8").read_bytes()
    (tmp_path / "img.u8").write_bytes(data[:-1])
    with pytest.raises(InputError, match=r"img\.u8: \d+ bytes, expected \d+"):
        CachedImageDataset(fl, tmp_path / "img")
    with pytest.raises(InputError, match=r"nothere\.json: cache description not found"):
        CachedImageDataset(fl, tmp_path / "nothere")


def test_stage_cli(tiny_cache, tmp_path):
    image_root, _, dirmap = tiny_cache
    res = subprocess.run([sys.executable, "-m", "stages.image_cache", "--help"], capture_output=True, text=True,
                         cwd=REPO)
    assert res.returncode == 0 and "--out-prefix" in res.stdout and "--sample-rate" in res.stdout
    from stages import image_cache as stage

    assert stage.main(["--layout", "toybox", "--dirmap", str(dirmap), "--image-root", str(image_root), "--size", "8",
                       "--out-prefix", str(tmp_path / "s" / "images_8"), "--threads", "2"]) == 0
    assert json.loads((tmp_path / "s" / "images_8.json").read_text())["shape"] == [72, 8, 8, 3]
    with pytest.raises(SystemExit, match=r"^error: .*nowhere: image root folder not found"):
        stage.main(["--layout", "toybox", "--dirmap", str(dirmap), "--image-root", str(tmp_path / "nowhere"),
                    "--size", "8", "--out-prefix", str(tmp_path / "s" / "x")])
