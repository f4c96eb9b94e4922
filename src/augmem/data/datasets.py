"""Task filelists as image datasets (spec 4), the study's transform, and a pre-flight check of a run's filelists.

A filelist line is ``<relative image path> <int label>``. Unlike the original (which split on any whitespace), the
line is split on its LAST whitespace run, so image paths containing spaces work. Images are opened relative to an
image root as RGB PIL images; a missing or unreadable image is an :class:`InputError` naming the image, the filelist
and its line.
"""
from __future__ import annotations

import math
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from torchvision import transforms

from augmem.io import InputError, read_csv_checked

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TASK_FILE_RE = re.compile(r"^train_task_(\d+)_filelist\.txt$")


def _read_lines(path: str | os.PathLike) -> list[tuple[int, str, int]]:
    """(line number, relative path, label) for every non-blank line of a filelist."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: filelist not found")
    out = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            text = line.strip()
            if not text:
                continue
            parts = text.rsplit(None, 1)
            if len(parts) != 2:
                raise InputError(f"{path}, line {lineno}: expected '<image path> <int label>', got {text!r}")
            rel, lab = parts
            try:
                label = int(lab)
            except ValueError:
                raise InputError(f"{path}, line {lineno}: label {lab!r} is not an integer") from None
            out.append((lineno, rel, label))
    return out


def read_filelist(path: str | os.PathLike) -> list[tuple[str, int]]:
    """The (relative image path, label) pairs of a filelist, in file order (the stream order)."""
    return [(rel, lab) for _, rel, lab in _read_lines(path)]


def study_transform(image_size: int = 224) -> transforms.Compose:
    """Resize([s, s]) (PIL bilinear), ToTensor, ImageNet Normalize: every experiment's transform (no augmentation)."""
    s = int(image_size)
    return transforms.Compose([
        transforms.Resize([s, s], interpolation=transforms.InterpolationMode.BILINEAR),
        transforms.ToTensor(),
        transforms.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD),
    ])


def open_rgb(path: str | os.PathLike, where: str | None = None) -> Image.Image:
    """An image file as an RGB PIL image; InputError naming the file (and ``where`` it is listed) if it is missing
    or unreadable."""
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except FileNotFoundError:
        raise InputError(f"{path}: image not found" + (f" ({where})" if where else "")) from None
    except OSError as exc:  # PIL.UnidentifiedImageError and truncated files are OSErrors
        raise InputError(f"{path}: cannot read image " + (f"({where}): {exc}" if where else f"({exc})")) from None


class FilelistDataset(torch.utils.data.Dataset):
    """Images of one filelist, loaded as RGB from ``image_root / path``; items are ``(transform(image), label)``."""

    def __init__(self, filelist: str | os.PathLike, image_root: str | os.PathLike, transform=None):
        self.filelist = Path(filelist)
        self.image_root = Path(image_root)
        self.transform = transform
        self._lines = _read_lines(self.filelist)
        self.paths = [rel for _, rel, _ in self._lines]
        self.targets = [lab for _, _, lab in self._lines]

    def __len__(self) -> int:
        return len(self._lines)

    def __getitem__(self, i: int):
        lineno, rel, label = self._lines[i]
        img = open_rgb(self.image_root / rel, where=f"listed in {self.filelist}, line {lineno}")
        if self.transform is not None:
            img = self.transform(img)
        return img, label


@dataclass
class RunFiles:
    """What :func:`check_filelists` found in ``<run_dir>/<mode>/``."""

    folder: Path
    tasks: list[int]  # 0..T-1, one per task file
    task_files: dict[int, Path]
    test_file: Path
    train: dict[int, list[tuple[str, int]]] = field(default_factory=dict)
    test: list[tuple[str, int]] = field(default_factory=list)


def _task_column(df, path: Path) -> list[int]:
    out = []
    for i, v in enumerate(df["task"].tolist()):
        try:
            f = float(v)
        except (TypeError, ValueError):
            f = float("nan")
        if not math.isfinite(f) or f != int(f) or f < 0:
            raise InputError(f"{path}, data row {i + 1}: task {v!r} is not a non-negative integer")
        out.append(int(f))
    return out


def check_filelists(run_dir: str | os.PathLike, mode: str, n_class: int,
                    image_root: str | os.PathLike | None = None) -> RunFiles:
    """Check one run's filelists before training and return them parsed.

    Reads ``<run_dir>/<mode>/train_all.txt`` (CSV with index; only ``task`` (int or float "0.0") and ``label`` are
    used), every ``train_task_XX_filelist.txt`` and ``test_filelist.txt``. Checks: labels in [0, n_class); task files
    numbered 0..T-1 without gaps; every task of train_all has its file, with the same number of rows per label; a task
    file absent from train_all must be empty (the Toybox/iLab instance quirk, spec 12.3, leaves tasks 1.. empty); and,
    when ``image_root`` is given, that every listed image exists (the first missing one and the count are reported).
    """
    if mode not in ("stream", "offline"):
        raise InputError(f"mode must be 'stream' or 'offline', got {mode!r}")
    folder = Path(run_dir) / mode
    if not folder.is_dir():
        raise InputError(f"{folder}: filelist folder not found")
    all_path = folder / "train_all.txt"
    df = read_csv_checked(all_path, ["task", "label"], index_col=0)
    tasks_col = _task_column(df, all_path)
    labels_col = df["label"].tolist()
    expected: dict[int, Counter] = {}
    for i, (t, lab) in enumerate(zip(tasks_col, labels_col)):
        try:
            lab = int(lab)
        except (TypeError, ValueError):
            raise InputError(f"{all_path}, data row {i + 1}: label {lab!r} is not an integer") from None
        if not 0 <= lab < n_class:
            raise InputError(f"{all_path}, data row {i + 1}: label {lab} outside [0, {n_class})")
        expected.setdefault(t, Counter())[lab] += 1

    task_files: dict[int, Path] = {}
    for p in sorted(folder.iterdir()):
        m = TASK_FILE_RE.match(p.name)
        if m:
            task_files[int(m.group(1))] = p
    if not task_files:
        raise InputError(f"{folder}: no train_task_XX_filelist.txt files")
    n_task = max(task_files) + 1
    gaps = sorted(set(range(n_task)) - set(task_files))
    if gaps:
        raise InputError(f"{folder}: task file(s) missing for task(s) {gaps} (found {sorted(task_files)})")
    extra = sorted(set(expected) - set(task_files))
    if extra:
        raise InputError(f"{all_path}: task(s) {extra} have no train_task_XX_filelist.txt in {folder}")

    train: dict[int, list[tuple[str, int]]] = {}
    listed: list[tuple[Path, list[tuple[int, str, int]]]] = []
    for t in range(n_task):
        lines = _read_lines(task_files[t])
        for lineno, _, lab in lines:
            if not 0 <= lab < n_class:
                raise InputError(f"{task_files[t]}, line {lineno}: label {lab} outside [0, {n_class})")
        got = Counter(lab for _, _, lab in lines)
        want = expected.get(t, Counter())
        if got != want:
            raise InputError(
                f"{task_files[t]}: disagrees with {all_path} for task {t}: {len(lines)} rows with label counts "
                f"{dict(sorted(got.items()))} in the task file, {sum(want.values())} rows with "
                f"{dict(sorted(want.items()))} in train_all"
            )
        train[t] = [(rel, lab) for _, rel, lab in lines]
        listed.append((task_files[t], lines))

    test_file = folder / "test_filelist.txt"
    test_lines = _read_lines(test_file)
    for lineno, _, lab in test_lines:
        if not 0 <= lab < n_class:
            raise InputError(f"{test_file}, line {lineno}: label {lab} outside [0, {n_class})")
    if not test_lines:
        raise InputError(f"{test_file}: empty test filelist")
    listed.append((test_file, test_lines))

    if image_root is not None:
        root = Path(image_root)
        if not root.is_dir():
            raise InputError(f"{root}: image root folder not found")
        first, n_missing = None, 0
        for path, lines in listed:
            for lineno, rel, _ in lines:
                if not os.path.exists(root / rel):
                    n_missing += 1
                    if first is None:
                        first = f"{root / rel} (listed in {path}, line {lineno})"
        if n_missing:
            raise InputError(f"{n_missing} listed image(s) missing under {root}; first: {first}")

    return RunFiles(folder=folder, tasks=list(range(n_task)), task_files=task_files, test_file=test_file,
                    train=train, test=[(rel, lab) for _, rel, lab in test_lines])
