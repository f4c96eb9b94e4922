"""Embedded demo data: small, deterministic, synthetic raw datasets in exactly the real on-disk layouts.

Each ``make_*`` function writes the whole raw tree of one dataset (spec section 1) atomically, so every later step
(frame extraction, dirmaps, balancing, distribution, filelists, training) runs on it unchanged. The folder also holds
the output marker ``.augmem-output.json`` (stage ``demo_data``, see :mod:`augmem.io`); an existing folder is only
replaced when it is empty or an earlier demo output:

* :func:`make_toybox`      ``<out>/<supercat>/<cat>_<NN>_pivothead/<cat>_<NN>_pivothead_<transformation>.mp4``
* :func:`make_ilab2mlight` ``<out>/train_img/<class>-i<inst>-b<bg>-c<cam>-r<rot>-l<light>-f2.jpg``
* :func:`make_core50`      ``<out>/core50_128x128/s<S>/o<O>/C_<SS>_<OO>_<FFF>.png``
* :func:`make_cifar100`    ``<out>/{train,test}/<class>/<NNNN>.png``

Every image is drawn by one renderer, :func:`render`: a class is a (shape, colour, texture) triple that, for up to 12
classes, differs from every other class in all three; an object of a class jitters hue, size and texture phase; the pose (translation,
in-plane rotation, anisotropic scale, where a negative scale mirrors as an out-of-plane rotation past 90 degrees
would) moves the object inside a session, and the background (a low-saturation gradient) changes a little between
sessions. So a small CNN trained on the demo does much better than chance, and "frames of one session" really are
views of one object under one transformation.

Determinism: each image or video gets its own ``numpy.random.Generator`` seeded from
``(seed, kind, identifiers...)``, so the output does not depend on thread scheduling or on ``jobs``. PNG/JPEG bytes are
identical between runs (same Pillow); the mp4 files are encoded with ``+bitexact`` flags and no metadata, and have
identical bytes with the same ffmpeg build (identical decoded frames in any case).
"""
from __future__ import annotations

import functools
import io
import math
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import ffmpeg
import numpy as np
from PIL import Image

from augmem.data.ffmpeg_bin import ffmpeg_exe
from augmem.io import InputError, atomic_path

STAGE = "demo_data"  # the name in each demo folder's output marker (augmem.io.MARKER)

# ---------------------------------------------------------------------------------------------------------------
# Renderer
# ---------------------------------------------------------------------------------------------------------------

#: Pose of the object: (tx, ty, angle, scale_x, scale_y). tx/ty in half-image units (0 = centre, +-1 = border; +ty
#: is up), angle in radians (counter-clockwise), scales multiply the object's nominal radius (a quarter of the image).
Pose = tuple[float, float, float, float, float]

SHAPES = ("disc", "square", "triangle", "star", "cross", "ring", "diamond", "hexagon", "crescent", "tee", "flower",
          "bar")
# Texture i goes with shape i (for the first 12 classes); rotation-symmetric shapes get asymmetric textures so that
# an in-plane rotation is visible (disc/halves, ring/grid).
TEXTURES = ("halves", "stripes", "plain", "checker", "rings", "grid", "dots", "waves", "spiral", "spots", "rays",
            "bands")
# Saturated, clearly different colours (RGB), see class_style.
PALETTE = np.array([
    (220, 40, 40),    # red
    (40, 170, 60),    # green
    (45, 85, 225),    # blue
    (235, 205, 35),   # yellow
    (205, 50, 200),   # magenta
    (35, 200, 215),   # cyan
    (245, 135, 25),   # orange
    (115, 45, 165),   # purple
    (160, 235, 70),   # lime
    (130, 75, 30),    # brown
    (250, 150, 185),  # pink
    (20, 105, 105),   # teal
], dtype=np.float32)

_KIND_CODE = {"toybox": 1, "ilab2mlight": 2, "core50": 3, "cifar100": 4}
_NOMINAL_RADIUS = 0.5   # object radius at scale 1, in half-image units (object spans half the image width)
_MIN_SCALE = 0.08       # |scale| is clamped to this so that a squash never divides by zero
_DARK = 0.45            # brightness of the texture's dark parts


@dataclass(frozen=True)
class ClassStyle:
    """What makes a class look like itself: shape, texture and base colour all differ between classes."""
    shape: str
    texture: str
    colour: tuple[float, float, float]


@dataclass(frozen=True)
class ObjectLook:
    """Per-object variation inside a class: colour jitter, size, texture frequency and phase."""
    colour: tuple[float, float, float]
    size: float
    freq: float
    phase: tuple[float, float]


@dataclass(frozen=True)
class Background:
    """A low-saturation linear gradient from ``c0`` to ``c1`` along ``direction`` (radians)."""
    c0: tuple[float, float, float]
    c1: tuple[float, float, float]
    direction: float


def class_style(class_idx: int) -> ClassStyle:
    """Style of class ``class_idx`` (0-based).

    Classes 0..11 differ pairwise in shape, texture and colour (disc/halves/red, square/stripes/green,
    triangle/plain/blue, ...). From class 12 on the shapes repeat with another texture and colour, so the
    (shape, texture, colour) triples stay distinct.
    """
    if class_idx < 0:
        raise ValueError(f"class_idx must be >= 0, got {class_idx}")
    k, n = int(class_idx), len(SHAPES)
    colour = PALETTE[(k + 2 * (k // n)) % len(PALETTE)]
    return ClassStyle(SHAPES[k % n], TEXTURES[(k + k // n) % len(TEXTURES)], tuple(float(c) for c in colour))


@functools.lru_cache(maxsize=4096)
def object_look(class_idx: int, object_idx: int, seed: int = 0) -> ObjectLook:
    """Deterministic look of one object of a class: a little colour, size and texture variation."""
    rng = np.random.default_rng([int(seed), 7919, int(class_idx), int(object_idx)])
    base = np.array(class_style(class_idx).colour)
    colour = np.clip(base * rng.uniform(0.88, 1.08) + rng.uniform(-14, 14, size=3), 0, 255)
    return ObjectLook(colour=tuple(float(c) for c in colour), size=float(rng.uniform(0.88, 1.1)),
                      freq=float(rng.uniform(0.9, 1.12)), phase=(float(rng.uniform(0, 2 * np.pi)),
                                                                 float(rng.uniform(0, 2 * np.pi))))


def random_background(rng: np.random.Generator, level: float | None = None) -> Background:
    """A random grey-ish gradient (saturation kept low so that the object colour dominates the class signal)."""
    lvl = float(rng.uniform(70, 175)) if level is None else float(level)
    c0 = np.clip(lvl + rng.uniform(-18, 18, size=3), 0, 255)
    c1 = np.clip(c0 + rng.uniform(-35, 35) + rng.uniform(-10, 10, size=3), 0, 255)
    return Background(tuple(float(c) for c in c0), tuple(float(c) for c in c1), float(rng.uniform(0, 2 * np.pi)))


def jitter_background(bg: Background, rng: np.random.Generator, amount: float = 12.0) -> Background:
    """``bg`` changed a little (used for sessions that share a scene)."""
    c0 = np.clip(np.array(bg.c0) + rng.uniform(-amount, amount, size=3), 0, 255)
    c1 = np.clip(np.array(bg.c1) + rng.uniform(-amount, amount, size=3), 0, 255)
    return Background(tuple(float(c) for c in c0), tuple(float(c) for c in c1),
                      float(bg.direction + rng.uniform(-0.3, 0.3)))


@functools.lru_cache(maxsize=16)
def _grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [-1, 1] (x right, y up) for an n x n canvas."""
    c = (np.arange(n, dtype=np.float32) + 0.5) / n * 2 - 1
    x, y = np.meshgrid(c, -c)
    return x, y


def _box_down(a: np.ndarray, ss: int) -> np.ndarray:
    """Average ``ss x ss`` blocks (strided sums; much faster than reshape().mean() on small arrays)."""
    acc = a[..., 0::ss, 0::ss].copy()
    for i in range(ss):
        for j in range(ss):
            if i or j:
                acc += a[..., i::ss, j::ss]
    return acc * np.float32(1.0 / (ss * ss))


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside-test of a shape of unit radius in object coordinates (float32 kept: Python-float constants only)."""
    r2 = u * u + v * v
    if shape == "disc":
        return r2 <= 1.0
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.82
    if shape == "triangle":  # equilateral, pointing up, inradius 0.6
        m = v >= -0.6
        for a in (math.pi / 6, 5 * math.pi / 6):
            m &= u * math.cos(a) + v * math.sin(a) <= 0.6
        return m
    if shape == "star":  # five sharp spikes
        theta = np.arctan2(v, u) - math.pi / 2
        t = theta * (5 / (2 * math.pi))
        d = np.abs(2 * (t - np.floor(t)) - 1)  # 1 on the spikes, 0 between them (floor: much faster than %)
        return np.sqrt(r2) <= 0.5 + 0.6 * d * d * np.sqrt(d)
    if shape == "cross":
        au, av = np.abs(u), np.abs(v)
        return ((au <= 0.32) & (av <= 1.0)) | ((av <= 0.32) & (au <= 1.0))
    if shape == "ring":
        return (r2 <= 1.0) & (r2 >= 0.5 ** 2)
    if shape == "diamond":
        return np.abs(u) + np.abs(v) <= 1.05
    if shape == "hexagon":
        m = np.abs(v) <= 0.85
        for a in (math.pi / 6, -math.pi / 6):
            m &= np.abs(u * math.cos(a) + v * math.sin(a)) <= 0.85
        return m
    if shape == "crescent":
        return (r2 <= 1.0) & ((u - 0.5) ** 2 + v * v >= 0.78 ** 2)
    if shape == "tee":
        return ((np.abs(u) <= 0.95) & (v >= 0.4) & (v <= 0.95)) | ((np.abs(u) <= 0.3) & (v >= -0.95) & (v < 0.4))
    if shape == "flower":  # eight round petals
        theta = np.arctan2(v, u)
        return np.sqrt(r2) <= 0.62 + 0.38 * np.abs(np.cos(4 * theta))
    if shape == "bar":
        return u * u + (v / 0.42) ** 2 <= 1.0
    raise ValueError(f"unknown shape {shape!r}")


def _texture_light(texture: str, u: np.ndarray, v: np.ndarray, look: ObjectLook) -> np.ndarray | float:
    """1 on light parts, ``_DARK`` on dark parts of the texture (in object coordinates, so it moves with it)."""
    p0, p1 = look.phase
    f = look.freq
    if texture == "plain":
        return 1.0
    if texture == "stripes":
        dark = np.sin(7.0 * f * (u + 0.35 * v) + p0) > 0.2
    elif texture == "dots":
        dark = np.sin(8.0 * f * u + p0) * np.sin(8.0 * f * v + p1) > 0.45
    elif texture == "checker":
        dark = np.sin(5.0 * f * u + p0) * np.sin(5.0 * f * v + p1) > 0
    elif texture == "rings":
        dark = np.sin(11.0 * f * np.sqrt(u * u + v * v) + p0) > 0.3
    elif texture == "grid":
        dark = (np.abs(np.sin(6.0 * f * u + p0)) < 0.3) | (np.abs(np.sin(6.0 * f * v + p1)) < 0.3)
    elif texture == "halves":
        dark = u + 0.3 * math.sin(p0) * v > 0.15 * math.sin(p1)
    elif texture == "waves":
        dark = np.sin(7.0 * f * v + 2.2 * np.sin(5.0 * f * u + p0)) > 0
    elif texture == "spiral":
        dark = np.sin(3.0 * np.arctan2(v, u) + 9.0 * f * np.sqrt(u * u + v * v) + p0) > 0
    elif texture == "spots":
        dark = np.sin(4.5 * f * u + p0) * np.sin(4.5 * f * v + p1) > 0.6
    elif texture == "rays":
        dark = np.sin(6.0 * np.arctan2(v, u) + p0) > 0.3
    elif texture == "bands":
        dark = np.sin(3.2 * f * u + p0) > 0.35
    else:
        raise ValueError(f"unknown texture {texture!r}")
    return np.where(dark, np.float32(_DARK), np.float32(1.0))


def render(class_idx: int | None, object_idx: int, pose: Pose, size: int, rng: np.random.Generator, *,
           background: Background | None = None, light: float = 1.0, seed: int = 0, noise: float = 2.5,
           supersample: int = 2) -> np.ndarray:
    """Draw one object of one class in a pose on a background; return a ``size x size x 3`` uint8 RGB image.

    ``class_idx=None`` draws the background only (e.g. Toybox "absent" videos). ``pose`` = (tx, ty, angle, scale_x,
    scale_y), see :data:`Pose`; a negative scale mirrors the object (its back is seen), |scale| is clamped to 0.08.
    ``background`` defaults to a random one drawn from ``rng``; ``light`` multiplies the whole image (lighting);
    ``seed`` selects the object looks; ``rng`` also draws the per-pixel sensor noise (uniform, std ``noise``). The
    object is drawn at ``supersample`` x resolution and box-filtered down (anti-aliasing).
    """
    if background is None:
        background = random_background(rng)
    return render_frames(class_idx, object_idx, [pose], size, rng, background=background, light=light, seed=seed,
                         noise=noise, supersample=supersample)[0]


def render_frames(class_idx: int | None, object_idx: int, poses: Sequence[Pose], size: int,
                  rng: np.random.Generator, *, background: Background, light: float = 1.0, seed: int = 0,
                  noise: float = 2.5, supersample: int = 2) -> np.ndarray:
    """:func:`render` for many poses of one object on one background at once (N x size x size x 3 uint8).

    Vectorised over the frames, which is several times faster than one call per frame (and lets numpy release the
    GIL, so video jobs run in parallel threads). Frame i equals ``render(..., poses[i], ...)`` drawn with the same
    noise stream only for N = 1; the noise of the whole batch is drawn in one call.
    """
    size = int(size)
    if size < 4:
        raise ValueError(f"image size must be >= 4, got {size}")
    ss = max(1, int(supersample))
    bg = background
    n_frames = len(poses)

    # background gradient (smooth, so drawn once at the output resolution)
    x, y = _grid(size)
    g = (x * math.cos(bg.direction) + y * math.sin(bg.direction) + 1.0) * 0.5
    c0 = np.asarray(bg.c0, dtype=np.float32)
    c1 = np.asarray(bg.c1, dtype=np.float32)
    img = np.broadcast_to(c0 + (c1 - c0) * g[..., None], (n_frames, size, size, 3))

    if class_idx is not None and n_frames:
        # object coverage and shading at ss x resolution (one channel), box-filtered down, then composited
        style = class_style(class_idx)
        look = object_look(class_idx, object_idx, seed)
        p = np.asarray(poses, dtype=np.float64).reshape(n_frames, 5)
        sx = np.copysign(np.maximum(np.abs(p[:, 3]), _MIN_SCALE), np.where(p[:, 3] == 0, 1.0, p[:, 3]))
        sy = np.copysign(np.maximum(np.abs(p[:, 4]), _MIN_SCALE), np.where(p[:, 4] == 0, 1.0, p[:, 4]))
        radius = _NOMINAL_RADIUS * look.size

        def col(a: np.ndarray) -> np.ndarray:  # per-frame scalar -> broadcastable float32 (N, 1, 1)
            return a.astype(np.float32)[:, None, None]

        x, y = _grid(size * ss)
        dx, dy = x - col(p[:, 0]), y - col(p[:, 1])
        ca, sa = col(np.cos(p[:, 2])), col(np.sin(p[:, 2]))
        u = (ca * dx + sa * dy) * col(1.0 / (radius * sx))
        v = (ca * dy - sa * dx) * col(1.0 / (radius * sy))
        mask = _shape_mask(style.shape, u, v)
        # texture times a little radial shading, so that the object looks solid
        shade = _texture_light(style.texture, u, v, look) * (np.float32(1.08) - np.float32(0.16) *
                                                              np.minimum(u * u + v * v, np.float32(1.0)))
        shade = np.where(mask, shade, np.float32(0.0))
        alpha = mask.astype(np.float32)
        if ss > 1:
            alpha, shade = _box_down(alpha, ss), _box_down(shade, ss)
        colour = np.asarray(look.colour, dtype=np.float32)
        img = img * (np.float32(1.0) - alpha)[..., None] + colour * shade[..., None]

    img = img * np.float32(light)
    if noise > 0:
        # uniform noise with standard deviation ``noise`` (much cheaper to draw than Gaussian noise)
        img = img + (rng.random(img.shape, dtype=np.float32) - np.float32(0.5)) * np.float32(noise * math.sqrt(12))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------------------

def _rng(seed: int, kind: str, *ids: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), _KIND_CODE[kind], *(int(i) for i in ids)])


def _check_seed(seed: int) -> int:
    if int(seed) < 0:
        raise InputError(f"seed must be >= 0, got {seed}")
    return int(seed)


def _check_positive(**values: int) -> None:
    for name, val in values.items():
        if int(val) < 1:
            raise InputError(f"{name} must be >= 1, got {val}")


def _run_parallel(tasks: Sequence[Callable[[], object]], jobs: int) -> list:
    """Run independent thunks, ``jobs`` at a time (results in input order; the first error is re-raised)."""
    if jobs <= 1 or len(tasks) <= 1:
        return [t() for t in tasks]
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(lambda t: t(), tasks))


def _save_png(path: Path, img: np.ndarray) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path, format="PNG", optimize=False, compress_level=6)
    return path.stat().st_size


def _save_jpeg(path: Path, img: np.ndarray, quality: int = 90) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path, format="JPEG", quality=quality, optimize=False)
    return path.stat().st_size


def _default_jobs(jobs: int | None) -> int:
    """``jobs`` if given, else the number of CPUs (at most 8)."""
    return max(1, int(jobs)) if jobs else max(1, min(8, os.cpu_count() or 1))


@functools.lru_cache(maxsize=1)
def _video_codec() -> str:
    """libx264 when the ffmpeg build has it, else mpeg4."""
    try:
        res = subprocess.run([ffmpeg_exe(), "-hide_banner", "-encoders"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):  # pragma: no cover - fall back to the always-present encoder
        return "mpeg4"
    return "libx264" if " libx264 " in res.stdout else "mpeg4"


def encode_video(path: str | Path, frames: np.ndarray, fps: int) -> None:
    """Encode ``frames`` (N x H x W x 3 uint8) as an mp4 through ffmpeg, piping raw RGB; bit-exact, no metadata."""
    frames = np.ascontiguousarray(frames, dtype=np.uint8)
    n, h, w, _ = frames.shape
    codec = _video_codec()
    extra = {"crf": 18, "preset": "veryfast", "threads": 1} if codec == "libx264" else {"q:v": 2, "threads": 1}
    stream = (
        ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{w}x{h}", framerate=fps)
        .output(str(path), vcodec=codec, pix_fmt="yuv420p", r=fps, map_metadata=-1, fflags="+bitexact",
                **{"flags:v": "+bitexact"}, **extra)
        .global_args("-nostdin")
        .overwrite_output()
    )
    try:
        stream.run(cmd=ffmpeg_exe(), input=frames.tobytes(), quiet=True)
    except ffmpeg.Error as exc:
        msg = (exc.stderr or b"").decode(errors="replace").strip().splitlines()
        raise RuntimeError(f"{path}: ffmpeg encoding failed: {msg[-1] if msg else exc}") from exc


def mp4_frame_count(path: str | Path) -> int:
    """Number of video samples (frames) recorded in an mp4 file's sample-size table (``moov/trak/.../stsz``).

    A cheap check that needs no decoder process; the first track with an ``stsz`` box is taken (the demo videos
    have one video track only). Raises InputError when the file has no such table.
    """
    path = Path(path)
    data = path.read_bytes()
    containers = {b"moov", b"trak", b"mdia", b"minf", b"stbl"}

    def walk(start: int, end: int) -> int | None:
        pos = start
        while pos + 8 <= end:
            size = int.from_bytes(data[pos:pos + 4], "big")
            kind = data[pos + 4:pos + 8]
            header = 8
            if size == 1:
                size, header = int.from_bytes(data[pos + 8:pos + 16], "big"), 16
            elif size == 0:
                size = end - pos
            if size < header:
                return None
            if kind == b"stsz":  # version/flags(4) sample_size(4) sample_count(4)
                return int.from_bytes(data[pos + header + 8:pos + header + 12], "big")
            if kind in containers:
                found = walk(pos + header, pos + size)
                if found is not None:
                    return found
            pos += size
        return None

    count = walk(0, len(data))
    if count is None:
        raise InputError(f"{path}: no mp4 sample-size table (stsz) found")
    return count


def read_video_frames(path: str | Path, size: tuple[int, int] | None = None, fps: float | None = None) -> np.ndarray:
    """Decode a video to an N x H x W x 3 uint8 array (ffmpeg to a rawvideo pipe; ffprobe is not needed).

    ``size`` = (width, height) rescales as ffmpeg ``-s`` does; ``fps`` resamples as ``-vf fps=<fps>`` does (used to
    check how many frames the 1-fps extraction step will see).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: video not found")
    cmd = [ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-i", str(path)]
    if size is not None:
        cmd += ["-s", f"{size[0]}x{size[1]}"]
    if fps is not None:
        cmd += ["-vf", f"fps={fps}"]
    cmd += ["-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:"]
    res = subprocess.run(cmd, capture_output=True)
    if res.returncode != 0:
        raise InputError(f"{path}: cannot be decoded: {res.stderr.decode(errors='replace').strip()[-300:]}")
    if size is None:
        probe = subprocess.run([ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-i", str(path), "-frames:v", "1",
                                "-f", "image2pipe", "-vcodec", "png", "pipe:"], capture_output=True)
        w, h = Image.open(io.BytesIO(probe.stdout)).size
    else:
        w, h = size
    frame_bytes = w * h * 3
    if len(res.stdout) % frame_bytes:
        raise InputError(f"{path}: decoded {len(res.stdout)} bytes, not a whole number of {w}x{h} RGB frames")
    return np.frombuffer(res.stdout, dtype=np.uint8).reshape(-1, h, w, 3)


# ---------------------------------------------------------------------------------------------------------------
# Toybox
# ---------------------------------------------------------------------------------------------------------------

#: Default demo categories per supercategory folder (``household`` singular, as in the published dirmap).
TOYBOX_CATEGORIES: dict[str, list[str]] = {
    "household": ["cup", "ball"],
    "animals": ["duck", "horse"],
    "vehicles": ["car", "airplane"],
}
#: The 10 session transformations (toybox_sessions.csv order) and the two that later steps ignore.
TOYBOX_SESSIONS = ("rxplus", "ryplus", "rzplus", "rxminus", "ryminus", "rzminus", "tx", "ty", "tz", "hodgepodge")
TOYBOX_EXTRA = ("present", "absent")
#: Edge cases of the default demo: (category, object number, transformation).
TOYBOX_SHORT_VIDEO = ("horse", 1, "rxminus")
TOYBOX_MISSING_VIDEO = ("car", 2, "ty")


def toybox_pose(transformation: str, t: float, base: Pose, wobble: tuple[float, float]) -> Pose:
    """Object pose at progress ``t`` (seconds / nominal duration, 0..1) of a Toybox transformation video.

    rx* squash vertically (scale_y = cos of a rotation about x, which mirrors past 90 degrees) with a small vertical
    drift, ry* the same horizontally, rz* rotate in the image plane, tx/ty translate, tz scales, hodgepodge does all
    at once; ``plus``/``minus`` run in opposite directions. ``present`` barely moves; ``absent`` has no object.
    ``base`` is the object's resting pose, ``wobble`` = (angle amplitude, phase) of its small per-object motions.
    """
    tx0, ty0, a0, sx0, sy0 = base
    wob_a, wob_p = wobble
    tx, ty, a, sx, sy = tx0, ty0, a0, sx0, sy0
    sign = -1.0 if transformation.endswith("minus") else 1.0
    theta = 1.25 * np.pi * t  # out-of-plane angle: 0 -> 225 degrees
    if transformation in ("rxplus", "rxminus"):
        sy = sy0 * math.cos(theta)
        ty = ty0 + sign * 0.25 * math.sin(theta)
    elif transformation in ("ryplus", "ryminus"):
        sx = sx0 * math.cos(theta)
        tx = tx0 + sign * 0.25 * math.sin(theta)
    elif transformation in ("rzplus", "rzminus"):
        a = a0 + sign * 1.6 * np.pi * t
    elif transformation == "tx":
        tx = -0.45 + 0.9 * t
    elif transformation == "ty":
        ty = 0.45 - 0.9 * t
    elif transformation == "tz":
        s = 0.55 + 0.85 * t
        sx, sy = sx0 * s, sy0 * s
    elif transformation == "hodgepodge":
        a = a0 + 1.2 * np.pi * t
        tx = tx0 + 0.35 * math.sin(2 * np.pi * t + wob_p)
        ty = ty0 + 0.3 * math.cos(1.5 * np.pi * t + wob_p)
        s = 0.75 + 0.45 * t
        sx = sx0 * s * math.cos(0.9 * np.pi * t)
        sy = sy0 * s
    elif transformation == "present":
        a = a0 + wob_a * math.sin(2 * np.pi * t)
        tx = tx0 + 0.03 * math.sin(4 * np.pi * t + wob_p)
    elif transformation == "absent":
        pass
    else:
        raise ValueError(f"unknown Toybox transformation {transformation!r}")
    return (tx, ty, a, sx, sy)


def _toybox_video_frames(seed: int, class_idx: int, obj: int, transformation: str, n_frames: int, nominal: int,
                         size: int) -> np.ndarray:
    """The frames of one video; ``nominal`` = frames of a full-length video (a short video stops early)."""
    t_idx = (TOYBOX_SESSIONS + TOYBOX_EXTRA).index(transformation)
    obj_rng = _rng(seed, "toybox", class_idx, obj)
    base_bg = random_background(obj_rng)
    base = (float(obj_rng.uniform(-0.1, 0.1)), float(obj_rng.uniform(-0.1, 0.1)), float(obj_rng.uniform(-0.4, 0.4)),
            1.0, 1.0)
    wob = (float(obj_rng.uniform(0.05, 0.15)), float(obj_rng.uniform(0, 2 * np.pi)))
    rng = _rng(seed, "toybox", class_idx, obj, t_idx)
    bg = jitter_background(base_bg, rng)  # each session's scene differs a little
    poses = [toybox_pose(transformation, i / nominal, base, wob) for i in range(n_frames)]
    cls = None if transformation == "absent" else class_idx
    chunk = 10  # small batches: cache friendly, and large enough for numpy to release the GIL
    return np.concatenate([render_frames(cls, obj - 1, poses[i:i + chunk], size, rng, background=bg, seed=seed)
                           for i in range(0, n_frames, chunk)])


def make_toybox(out: str | Path, seed: int = 0, *, categories: dict[str, list[str]] | None = None,
                objects_per_category: int = 3, image_size: int = 64, fps: int = 10, seconds: int = 6,
                short_video: tuple[str, int, str] | None = TOYBOX_SHORT_VIDEO, short_seconds: int = 4,
                missing_video: tuple[str, int, str] | None = TOYBOX_MISSING_VIDEO, jobs: int | None = None,
                verify: bool = True) -> dict:
    """Write a synthetic raw Toybox tree at ``out`` (atomically) and return a summary of counts.

    Layout: ``<out>/<supercat>/<cat>_<NN>_pivothead/<cat>_<NN>_pivothead_<transformation>.mp4``, one video per object
    for each of the 10 session transformations plus ``present`` and ``absent`` (which later steps ignore). Videos are
    ``image_size`` square, ``fps`` frames/s, ``seconds`` long, so that 1-fps extraction gives ``seconds`` frames.
    Class ``k`` (position in the category listing, supercategories in the given order) is drawn with style ``k``.

    Deterministic edge cases for the balancing step (both skipped when None):

    * ``short_video`` (default horse_01 rxminus) is only ``short_seconds`` (4) long: 1-fps extraction gives 4 frames,
      so a 5-frame balance pads it by mirroring to frames 1,2,3,4,3.
    * ``missing_video`` (default car_02 ty) is not written: that object has 9 sessions and is dropped, so with
      objects_per_class=3 the car class keeps 2 objects (01, 03) while every other class drops object 03.

    ``verify`` checks every written video's frame count in its mp4 sample table (:func:`mp4_frame_count`; the
    tests also decode them). ``jobs`` videos are encoded in parallel.
    """
    seed = _check_seed(seed)
    cats = {k: list(v) for k, v in (categories or TOYBOX_CATEGORIES).items()}
    _check_positive(objects_per_category=objects_per_category, image_size=image_size, fps=fps, seconds=seconds,
                    short_seconds=short_seconds)
    if image_size % 2:
        raise InputError(f"image_size must be even for yuv420p video, got {image_size}")
    all_cats = [c for cs in cats.values() for c in cs]
    if len(set(all_cats)) != len(all_cats) or not all_cats:
        raise InputError(f"categories must be non-empty and unique, got {cats}")
    for name, edge in (("short_video", short_video), ("missing_video", missing_video)):
        if edge is not None:
            cat, num, trans = edge
            if cat not in all_cats or not 1 <= int(num) <= objects_per_category or trans not in TOYBOX_SESSIONS:
                raise InputError(f"{name}={edge} does not name a generated category/object/session transformation "
                                 f"(pass {name}=None to leave this edge case out)")
    jobs = _default_jobs(jobs)
    out = Path(out)

    specs = []  # (relative path, class_idx, object number, transformation, n_frames)
    class_idx = 0
    for supercat, cs in cats.items():
        for cat in cs:
            for obj in range(1, objects_per_category + 1):
                folder = f"{supercat}/{cat}_{obj:02d}_pivothead"
                for trans in TOYBOX_SESSIONS + TOYBOX_EXTRA:
                    key = (cat, obj, trans)
                    if missing_video is not None and key == (missing_video[0], int(missing_video[1]), missing_video[2]):
                        continue
                    secs = seconds
                    if short_video is not None and key == (short_video[0], int(short_video[1]), short_video[2]):
                        secs = short_seconds
                    rel = f"{folder}/{cat}_{obj:02d}_pivothead_{trans}.mp4"
                    specs.append((rel, class_idx, obj, trans, secs * fps))
            class_idx += 1

    with atomic_path(out, stage=STAGE, kind="dir") as tmp:
        tmp.mkdir(parents=True)

        def job(spec):
            rel, cidx, obj, trans, n = spec
            path = tmp / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            frames = _toybox_video_frames(seed, cidx, obj, trans, n, seconds * fps, image_size)
            encode_video(path, frames, fps)
            if verify:
                got = mp4_frame_count(path)
                if got != n:
                    raise RuntimeError(f"{rel}: decodes to {got} frames, expected {n}")
            return path.stat().st_size

        sizes = _run_parallel([functools.partial(job, s) for s in specs], jobs)

    return {
        "kind": "toybox", "out": str(out), "classes": class_idx, "objects": class_idx * objects_per_category,
        "videos": len(specs), "session_videos": sum(s[3] in TOYBOX_SESSIONS for s in specs),
        "frames": int(sum(s[4] for s in specs)), "bytes": int(sum(sizes)),
        "short_video": list(short_video) if short_video else None,
        "missing_video": list(missing_video) if missing_video else None,
    }


# ---------------------------------------------------------------------------------------------------------------
# iLab-2M-Light
# ---------------------------------------------------------------------------------------------------------------

ILAB_CLASSES = ("boat", "bus", "car", "f1car", "heli", "plane", "semi")
ILAB_TAIL = "f2"  # the trailing field after the lighting (real iLab names end in a focus field, e.g. "-f2")
#: Edge case of the default demo: (class, instance position 0-based, background position 0-based, images kept).
ILAB_SHORT_SESSION = ("bus", 1, 2, 3)


def ilab_filename(cls: str, instance: int, background: int, camera: int, rotation: int, lighting: int) -> str:
    """``<class>-i<inst:04d>-b<bg:04d>-c<cam:02d>-r<rot:02d>-l<light>-f2.jpg`` (zero-padded like the real data)."""
    return f"{cls}-i{instance:04d}-b{background:04d}-c{camera:02d}-r{rotation:02d}-l{lighting}-{ILAB_TAIL}.jpg"


def _sparse_ids(rng: np.random.Generator, n: int, first_max: int = 4, gap_min: int = 2, gap_max: int = 6) -> list[int]:
    """``n`` increasing ids with gaps >= 2 (never contiguous), starting at 1..first_max."""
    start = int(rng.integers(1, first_max + 1))
    gaps = rng.integers(gap_min, gap_max + 1, size=max(0, n - 1))
    return [start + int(g) for g in np.concatenate([[0], np.cumsum(gaps)])]


def make_ilab2mlight(out: str | Path, seed: int = 0, *, classes: Sequence[str] = ILAB_CLASSES,
                     instances_per_class: int = 4, backgrounds_per_instance: int = 5, cameras: int = 2,
                     rotations: int = 2, lightings: int = 2, image_size: int = 64, quality: int = 90,
                     short_session: tuple[str, int, int, int] | None = ILAB_SHORT_SESSION,
                     jobs: int | None = None) -> dict:
    """Write a synthetic raw iLab-2M-Light tree at ``out`` (atomically) and return a summary of counts.

    All images are massed in ``<out>/train_img/`` as ``<class>-i<inst>-b<bg>-c<cam>-r<rot>-l<light>-f2.jpg``
    (see :func:`ilab_filename`; the ``-f2`` tail is the extra hyphen field the parser needs). Instance ids are
    sparse per class (gaps >= 2, so the dirmap must re-index them) and background ids sparse per instance. Every
    (instance, background) has cameras x rotations x lightings images: the camera changes the elevation (vertical
    squash) and tilt, the rotation turns the object (in-plane angle and horizontal squash), the lighting the
    brightness. The background id selects the scene (same id, same scene, slightly varied per instance).

    Edge case (skipped when None): ``short_session`` = (class, instance position, background position, n) keeps
    only the first ``n`` images of that session (default: bus, 2nd instance, 3rd background, 3 images), so a
    5-images-per-session filter drops it and that object keeps 4 sessions. ``semi`` is in the default classes
    because the sampling step removes it.
    """
    seed = _check_seed(seed)
    _check_positive(instances_per_class=instances_per_class, backgrounds_per_instance=backgrounds_per_instance,
                    cameras=cameras, rotations=rotations, lightings=lightings, image_size=image_size)
    classes = list(classes)
    if not classes or len(set(classes)) != len(classes) or any("-" in c or not c for c in classes):
        raise InputError(f"classes must be unique non-empty names without '-', got {classes}")
    if short_session is not None:
        c, ip, bp, keep = short_session
        if c not in classes or not 0 <= ip < instances_per_class or not 0 <= bp < backgrounds_per_instance \
                or not 0 <= keep < cameras * rotations * lightings:
            raise InputError(f"short_session={short_session} does not name a generated session and a smaller "
                             "image count (pass short_session=None to leave this edge case out)")
    jobs = _default_jobs(jobs)
    out = Path(out)

    specs = []  # (file name, class_idx, object_idx, bg id, cam pos, rot pos, light pos, (c, i, b) ids)
    n_sessions = 0
    for ci, cls in enumerate(classes):
        crng = _rng(seed, "ilab2mlight", ci)
        inst_ids = _sparse_ids(crng, instances_per_class)
        for ip, inst in enumerate(inst_ids):
            bg_ids = _sparse_ids(_rng(seed, "ilab2mlight", ci, inst), backgrounds_per_instance, 6, 2, 9)
            for bp, bg_id in enumerate(bg_ids):
                n_sessions += 1
                combos = [(c, r, li) for c in range(cameras) for r in range(rotations) for li in range(lightings)]
                if short_session is not None and (cls, ip, bp) == tuple(short_session[:3]):
                    combos = combos[: short_session[3]]
                for c, r, li in combos:
                    name = ilab_filename(cls, inst, bg_id, c, r + 1, li)
                    specs.append((name, ci, ip, inst, bg_id, c, r, li))

    with atomic_path(out, stage=STAGE, kind="dir") as tmp:
        folder = tmp / "train_img"
        folder.mkdir(parents=True)

        def job(spec):
            name, ci, ip, inst, bg_id, c, r, li = spec
            scene = random_background(_rng(seed, "ilab2mlight", 1_000_000, bg_id))
            rng = _rng(seed, "ilab2mlight", ci, inst, bg_id, c, r, li)
            bg = jitter_background(scene, _rng(seed, "ilab2mlight", ci, inst, bg_id), amount=8.0)
            elev = 0.25 + 0.9 * c / max(1, cameras - 1) if cameras > 1 else 0.5      # radians above the table
            turn = 2 * np.pi * r / rotations + np.pi / 6                             # turntable angle
            pos = _rng(seed, "ilab2mlight", ci, inst, bg_id, 99)
            # the turn shows as tilt plus horizontal squash (mirrored when the back faces the camera)
            sx = math.copysign(0.5 + 0.5 * abs(math.cos(turn)), math.cos(turn))
            pose = (float(pos.uniform(-0.12, 0.12)), float(pos.uniform(-0.12, 0.12)),
                    0.35 * math.sin(turn) + 0.15 * c, sx, math.cos(elev))
            light = 0.75 + 0.45 * li / max(1, lightings - 1) if lightings > 1 else 1.0
            img = render(ci, ip, pose, image_size, rng, background=bg, light=light, seed=seed)
            return _save_jpeg(folder / name, img, quality)

        sizes = _run_parallel([functools.partial(job, s) for s in specs], jobs)

    return {"kind": "ilab2mlight", "out": str(out), "classes": len(classes),
            "objects": len(classes) * instances_per_class, "sessions": n_sessions, "images": len(specs),
            "bytes": int(sum(sizes)), "short_session": list(short_session) if short_session else None}


# ---------------------------------------------------------------------------------------------------------------
# CORe50
# ---------------------------------------------------------------------------------------------------------------

CORE50_FRAMES = (10, 70, 130, 190, 250)
CORE50_EXTRA_FRAMES = (0, 40)


def core50_missing(session: int, obj: int, frame: int) -> bool:
    """The "some frames missing" rule of the demo: extra frame 0 is missing when (obj + session) % 4 == 0 and extra
    frame 40 when (obj + 2 * session) % 5 == 0. Only extra frames (dropped by the sampling anyway) go missing."""
    if frame == 0:
        return (obj + session) % 4 == 0
    if frame == 40:
        return (obj + 2 * session) % 5 == 0
    return False


def make_core50(out: str | Path, seed: int = 0, *, objects: int = 30, sessions: int = 11,
                frames: Sequence[int] = CORE50_FRAMES, extra_frames: Sequence[int] = CORE50_EXTRA_FRAMES,
                objects_per_class: int = 5, image_size: int = 64, jobs: int | None = None) -> dict:
    """Write a synthetic raw CORe50 tree at ``out`` (atomically) and return a summary of counts.

    Layout ``<out>/core50_128x128/s<S>/o<O>/C_<SS>_<OO>_<FFF>.png`` (the folder keeps its real name although the demo
    images are ``image_size`` pixels). Objects 1..``objects``, class = ceil(O / objects_per_class); sessions
    1..``sessions`` differ in background and object position/size; within a session the object moves smoothly with
    the frame number (0..299). Written frames: ``frames`` plus ``extra_frames`` (which a sample rate of 60 drops),
    where some extra frames are missing (:func:`core50_missing`).
    """
    seed = _check_seed(seed)
    _check_positive(objects=objects, sessions=sessions, objects_per_class=objects_per_class, image_size=image_size)
    if objects > 99 or sessions > 99:
        raise InputError("objects and sessions must be <= 99 (two-digit file name fields)")
    all_frames = sorted(set(int(f) for f in frames) | set(int(f) for f in extra_frames))
    if not frames or any(not 0 <= f <= 299 for f in all_frames):
        raise InputError(f"frame numbers must be in 0..299 and frames non-empty, got {frames} / {extra_frames}")
    keep = set(int(f) for f in frames)
    jobs = _default_jobs(jobs)
    out = Path(out)

    specs = []
    for s in range(1, sessions + 1):
        for o in range(1, objects + 1):
            for f in all_frames:
                if f not in keep and core50_missing(s, o, f):
                    continue
                specs.append((s, o, f))

    with atomic_path(out, stage=STAGE, kind="dir") as tmp:
        root = tmp / "core50_128x128"
        root.mkdir(parents=True)

        def job(spec):
            s, o, f = spec
            cls = (o - 1) // objects_per_class
            srng = _rng(seed, "core50", s, o)
            bg = random_background(_rng(seed, "core50", s, 0))  # the session's scene
            bg = jitter_background(bg, srng, amount=6.0)
            cx, cy = float(srng.uniform(-0.2, 0.2)), float(srng.uniform(-0.2, 0.2))
            a0, sc = float(srng.uniform(-np.pi, np.pi)), float(srng.uniform(0.8, 1.15))
            ph, amp = float(srng.uniform(0, 2 * np.pi)), float(srng.uniform(0.12, 0.25))
            t = f / 300.0
            pose = (cx + amp * math.sin(2 * np.pi * t + ph), cy + 0.6 * amp * math.cos(2 * np.pi * t + ph),
                    a0 + 1.5 * np.pi * t, sc * (0.75 + 0.25 * math.cos(3 * t + ph)), sc)
            img = render(cls, (o - 1) % objects_per_class, pose, image_size, _rng(seed, "core50", s, o, f),
                         background=bg, seed=seed)
            return _save_png(root / f"s{s}" / f"o{o}" / f"C_{s:02d}_{o:02d}_{f:03d}.png", img)

        sizes = _run_parallel([functools.partial(job, sp) for sp in specs], jobs)

    return {"kind": "core50", "out": str(out), "classes": math.ceil(objects / objects_per_class), "objects": objects,
            "sessions": sessions, "images": len(specs), "images_kept_by_sampling": sessions * objects * len(keep),
            "bytes": int(sum(sizes))}


# ---------------------------------------------------------------------------------------------------------------
# CIFAR-100
# ---------------------------------------------------------------------------------------------------------------

CIFAR100_CLASSES = ("apple", "bicycle", "cloud", "dolphin", "keyboard", "maple_tree", "orange", "rocket", "tulip",
                    "whale")


def make_cifar100(out: str | Path, seed: int = 0, *, classes: Sequence[str] = CIFAR100_CLASSES,
                  train_per_class: int = 50, test_per_class: int = 10, image_size: int = 32,
                  jobs: int | None = None) -> dict:
    """Write a synthetic CIFAR-100 tree (cifar2png layout) at ``out`` (atomically) and return a summary of counts.

    ``<out>/train/<class>/<NNNN>.png`` (0001..train_per_class) and ``<out>/test/<class>/<NNNN>.png``. Labels are the
    sorted class positions, and class ``k`` in sorted order is drawn with style ``k``; every image is its own object
    (random look jitter) in a random pose on a random background.
    """
    seed = _check_seed(seed)
    _check_positive(train_per_class=train_per_class, test_per_class=test_per_class, image_size=image_size)
    classes = sorted(classes)
    if not classes or len(set(classes)) != len(classes) or any(not c or "/" in c for c in classes):
        raise InputError(f"classes must be unique non-empty names, got {classes}")
    if max(train_per_class, test_per_class) > 9999:
        raise InputError("at most 9999 images per class and split (four-digit file names)")
    jobs = _default_jobs(jobs)
    out = Path(out)
    specs = [(split, si, ci, cls, i) for si, (split, n) in enumerate((("train", train_per_class),
                                                                       ("test", test_per_class)))
             for ci, cls in enumerate(classes) for i in range(1, n + 1)]

    with atomic_path(out, stage=STAGE, kind="dir") as tmp:
        tmp.mkdir(parents=True)

        def job(spec):
            split, si, ci, cls, i = spec
            rng = _rng(seed, "cifar100", si, ci, i)
            pose = (float(rng.uniform(-0.25, 0.25)), float(rng.uniform(-0.25, 0.25)), float(rng.uniform(-np.pi, np.pi)),
                    float(rng.uniform(0.8, 1.3)), float(rng.uniform(0.8, 1.3)))
            img = render(ci, 1000 * si + i, pose, image_size, rng, seed=seed, light=float(rng.uniform(0.85, 1.1)))
            return _save_png(tmp / split / cls / f"{i:04d}.png", img)

        sizes = _run_parallel([functools.partial(job, s) for s in specs], jobs)

    return {"kind": "cifar100", "out": str(out), "classes": len(classes), "train_images": len(classes) * train_per_class,
            "test_images": len(classes) * test_per_class, "images": len(specs), "bytes": int(sum(sizes))}


MAKERS = {"toybox": make_toybox, "ilab2mlight": make_ilab2mlight, "core50": make_core50, "cifar100": make_cifar100}
