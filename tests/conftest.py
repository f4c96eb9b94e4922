"""Shared fixtures: a tiny, learnable, class-incremental image stream in memory and on disk (original file layout)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

N_CLASS = 4
TASKS = [[0, 1], [2, 3]]  # labels per task (class_iid-like: 2 classes per task)
SIZE = 32


def _image(label: int, i: int, rng: np.random.Generator) -> np.ndarray:
    """A 32x32 RGB image whose colour and bar position depend on the label (learnable), with noise."""
    img = rng.integers(0, 40, size=(SIZE, SIZE, 3)).astype(np.uint8)
    colour = np.array([[230, 40, 40], [40, 230, 40], [40, 40, 230], [230, 230, 40]][label], dtype=np.uint8)
    off = int(rng.integers(0, 4))
    r0 = 4 + 6 * label + off
    img[r0 : r0 + 5, 4:28] = colour
    return img


def tiny_arrays(n_train: int = 12, n_test: int = 6, seed: int = 0):
    """(train per task: list of (images uint8 NxHxWx3, labels)), (test images, labels)."""
    rng = np.random.default_rng(seed)
    train = []
    for labels in TASKS:
        ims, ys = [], []
        for i in range(n_train):
            for lab in labels:
                ims.append(_image(lab, i, rng))
                ys.append(lab)
        train.append((np.stack(ims), np.array(ys)))
    ims, ys = [], []
    for lab in range(N_CLASS):
        for i in range(n_test):
            ims.append(_image(lab, i, rng))
            ys.append(lab)
    return train, (np.stack(ims), np.array(ys))


def to_tensor(ims: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(ims).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return (x - mean) / std


@pytest.fixture
def tiny_stream():
    """In-memory tasks: list of TensorDatasets (one per task) and a test TensorDataset; N_CLASS classes."""
    train, (tx, ty) = tiny_arrays()
    tasks = [torch.utils.data.TensorDataset(to_tensor(x), torch.as_tensor(y)) for x, y in train]
    test = torch.utils.data.TensorDataset(to_tensor(tx), torch.as_tensor(ty))
    return tasks, test


@pytest.fixture
def one_torch_thread():
    """Torch on one thread for the test (the numbers some tests compare depend on the thread count)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def add_offline_filelists(run_dir: Path) -> tuple[list[str], list[str]]:
    """Write ``offline/`` next to the tiny stream (task t = all data of tasks 0..t, as the offline filelists are);
    returns the lines of the two stream task files."""
    stream, offline = run_dir / "stream", run_dir / "offline"
    offline.mkdir()
    lines0 = (stream / "train_task_00_filelist.txt").read_text().splitlines()
    lines1 = (stream / "train_task_01_filelist.txt").read_text().splitlines()
    (offline / "train_task_00_filelist.txt").write_text("\n".join(lines0) + "\n")
    (offline / "train_task_01_filelist.txt").write_text("\n".join(lines0 + lines1) + "\n")
    shutil.copy(stream / "test_filelist.txt", offline / "test_filelist.txt")
    rows = [{"task": t, "label": int(line.split()[-1])} for t, ls in [(0, lines0), (1, lines0 + lines1)] for line in ls]
    pd.DataFrame(rows).to_csv(offline / "train_all.txt")
    return lines0, lines1


def write_tiny_filelists(root: Path) -> tuple[Path, Path]:
    """Write PNGs under root/images and one run's filelists under root/filelists/tiny_task_filelists/class_iid/run0/stream.

    Returns (image_root, run_dir) where run_dir holds ``stream/`` (the layout the training stage reads).
    """
    train, (tx, ty) = tiny_arrays()
    image_root = root / "images"
    run_dir = root / "filelists" / "tiny_task_filelists" / "class_iid" / "run0"
    stream = run_dir / "stream"
    stream.mkdir(parents=True)
    rows = []
    for t, (ims, ys) in enumerate(train):
        lines = []
        for i, (im, y) in enumerate(zip(ims, ys)):
            rel = f"train/c{y}/t{t}_{i:03d}.png"
            (image_root / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(im).save(image_root / rel)
            lines.append(f"{rel} {y}")
            rows.append({"class": int(y) + 1, "object": 1, "session": 1, "im_num": i, "im_path": rel, "task": t, "label": int(y)})
        (stream / f"train_task_{t:02d}_filelist.txt").write_text("\n".join(lines) + "\n")
    lines = []
    for i, (im, y) in enumerate(zip(tx, ty)):
        rel = f"test/c{y}/{i:03d}.png"
        (image_root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(im).save(image_root / rel)
        lines.append(f"{rel} {y}")
    (stream / "test_filelist.txt").write_text("\n".join(lines) + "\n")
    pd.DataFrame(rows).to_csv(stream / "train_all.txt")
    return image_root, run_dir


@pytest.fixture
def tiny_files(tmp_path):
    """(image_root, run_dir) of a tiny stream on disk in the original filelist format."""
    return write_tiny_filelists(tmp_path)


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder nobody but root may write into (skipped as root: root writes into read-only folders)."""
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        pytest.skip("root can write into read-only folders")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    yield ro
    ro.chmod(0o755)
