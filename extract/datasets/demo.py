"""The built-in demo: a small KTH-shaped dataset rendered here with a real encoder, no download.

Shape. 6 classes x 9 persons (``p01``..``p09``) x 3 scenarios, one clip each by default
(``clips_per_combo``), 32-60 frames per clip (ragged on purpose), 160x120 at 25 fps: 162 videos,
about 8,000 frames, written as ``ROOT/<class>/<person>_<class>_<scenario>.mp4`` plus
``manifest.csv`` (``path,label,group,split,scenario,frames``). Persons differ in size, colours
and position; scenarios are ``plain`` (flat background), ``texture`` (striped background) and
``zoom`` (the camera closer: the figure 1.4x larger). The split is by person, like KTH's:
train p01-p05, val p06-p07, test p08-p09; no person is in two splits.

Classes. ``box`` (both arms punching to one side) and ``wave`` (arms raised in a waving V) have
a pose of their own, so one frame tells them apart. The two other pairs differ *only in motion*:

* ``rise`` / ``fall`` (order only): the same figure, T-pose, moving up / down over the same
  span. A ``fall`` clip is the matching ``rise`` clip played backwards, frame for frame (before
  the per-frame noise): the two hold the same set of frames, so a frame-level classifier sees
  identical inputs and cannot beat chance between them; only temporal order separates them.
* ``walk`` / ``run`` (speed only): the same figure going back and forth across the same span,
  legs striding as a function of position. ``walk`` makes one round trip per clip, ``run`` k
  round trips (k ~ clip length / 12, coprime with it), so both visit exactly the same positions
  (hence poses), in a different order: again the same set of frames; only speed differs.

Frame voting can therefore expect at most 4/6 (box and wave right, a coin flip within each
pair), while a head that sees order and speed can reach 6/6. Length, background, person and
placement are drawn per (person, scenario, clip) and shared by all six classes, so none of them
leaks the label either; the sensor noise and the coding errors differ per clip, not per class.

Codec: H.264 (``libx264``, ``veryfast``, CRF 23, yuv420p) in MP4, because it is what phone and
web videos and re-encoded datasets mostly are: it has B-frames (decode order != display order)
and the MP4 index decord seeks with, so the demo exercises the decoder like real data does.
MPEG-4 part 2 in AVI would encode ~2x faster but is the less common case today. Rendering and
encoding take about 1.2 ms a frame on one core (~10 s for the whole demo). The rendered frames
are identical for a given seed; the encoded files decode to within a few grey levels of each
other but are not always byte-identical (x264 through PyAV occasionally codes a clip slightly
differently, a few files per render), so nothing should key on the files' hashes.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harx.features.errors import DatasetFormatError, InvalidOptionError
from harx.features.paths import harx_home

from . import register_dataset
from ..encode import CODEC, write_h264
from .base import DatasetIndex
from .folder import MANIFEST_NAME, index_manifest, read_manifest

DEMO_VERSION = 1  # bump whenever the rendered pixels change, so old renders are replaced
MARKER_NAME = "DEMO_VERSION.json"
CLASSES = ("box", "fall", "rise", "run", "walk", "wave")
PERSONS = tuple(f"p{i:02d}" for i in range(1, 10))
SCENARIOS = ("plain", "texture", "zoom")
PERSON_SPLIT = {**dict.fromkeys(PERSONS[:5], "train"), **dict.fromkeys(PERSONS[5:7], "val"),
                **dict.fromkeys(PERSONS[7:], "test")}
MOTION_ONLY_PAIRS = (("rise", "fall"), ("walk", "run"))
ZOOM = 1.4
RUN_PERIOD = 12  # frames per round trip for run; walk makes one round trip per clip
NOISE_SIGMA = 4.0
NOISE_BANK = 16
SPLIT_PROTOCOL = ("by person, fixed: train p01-p05, val p06-p07, test p08-p09 (KTH-style; no "
                  "person appears in two splits)")


# ----------------------------------------------------------------------------- geometry

@dataclass(frozen=True)
class _Clip:
    """Everything one (person, scenario, clip) shares across the six classes."""

    n_frames: int
    background: np.ndarray  # H x W x 3 float32
    scale: float  # figure size in pixels per model unit
    body: np.ndarray  # RGB float32
    head: np.ndarray
    x_home: float  # hip x for the standing classes, pixels
    y_home: float  # hip y, pixels
    x_span: tuple[float, float]  # walk/run
    y_span: tuple[float, float]  # rise/fall: (bottom, top)
    phase: float  # walk/run start phase; box/wave oscillation phase
    period: float  # box/wave oscillation period, frames
    side: int  # box punches to the right (+1) or left (-1)
    run_k: int  # run round trips per clip, coprime with n_frames


@dataclass(frozen=True)
class _Pose:
    """Hip position in pixels; feet x offsets and hand offsets from the shoulder in model units."""

    x: float
    y: float
    feet: tuple[float, float]
    hands: tuple[tuple[float, float], tuple[float, float]]


def _coprime_near(target: int, n: int) -> int:
    """The integer >= 2 nearest ``target`` that shares no factor with ``n``."""
    for delta in range(n):
        for k in (target + delta, target - delta):
            if k >= 2 and math.gcd(k, n) == 1:
                return k
    return 1


def _person_look(seed: int, index: int) -> dict:
    """Size, colours and placement of one person; fixed for all their clips."""
    rng = np.random.default_rng([seed, 1000 + index])
    hue = rng.uniform(0, 2 * math.pi)
    body = 70 + 55 * np.cos(hue + np.array([0.0, 2.1, 4.2]))
    return {"scale": float(rng.uniform(0.8, 1.15)), "body": body.astype(np.float32),
            "head": rng.uniform(60, 130, 3).astype(np.float32),
            "x_home": float(rng.uniform(0.35, 0.65)), "y_offset": float(rng.uniform(-4, 4))}


def _background(rng: np.random.Generator, scenario: str, size: tuple[int, int]) -> np.ndarray:
    """A light flat colour; ``texture`` adds two sine gratings of random angle and pitch."""
    width, height = size
    image = np.empty((height, width, 3), np.float32)
    image[:] = rng.uniform(150, 215, 3)
    if scenario == "texture":
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        for amplitude in (26.0, 12.0):
            angle, pitch = rng.uniform(0, math.pi), rng.uniform(7, 22)
            wave = np.sin(2 * math.pi * (xx * math.cos(angle) + yy * math.sin(angle)) / pitch)
            image += (amplitude * wave)[..., None] * rng.uniform(0.5, 1.0, 3).astype(np.float32)
    return image


def _clip(seed: int, person: int, scenario: int, clip: int, frames: tuple[int, int],
          size: tuple[int, int]) -> _Clip:
    """Draw the shared parameters of one (person, scenario, clip) from its own stream."""
    width, height = size
    unit = height / 120
    look = _person_look(seed, person)
    rng = np.random.default_rng([seed, person, scenario, clip])
    n = int(rng.integers(frames[0], frames[1] + 1))
    name = SCENARIOS[scenario]
    scale = look["scale"] * unit * (ZOOM if name == "zoom" else 1.0)
    y_home = (75 + look["y_offset"]) * unit
    return _Clip(
        n_frames=n, background=_background(rng, name, size), scale=scale,
        body=look["body"], head=look["head"],
        x_home=look["x_home"] * width + rng.uniform(-6, 6) * unit, y_home=y_home,
        x_span=(0.18 * width, 0.82 * width), y_span=(y_home + 14 * unit, y_home - 26 * unit),
        phase=float(rng.uniform(0, 1)), period=float(rng.uniform(8, 14)),
        side=int(rng.choice([-1, 1])), run_k=_coprime_near(round(n / RUN_PERIOD), n))


def _pose(label: str, t: int, c: _Clip) -> _Pose:
    """The figure at frame ``t`` of a clip of class ``label``."""
    n = c.n_frames
    if label in ("walk", "run"):
        k = 1 if label == "walk" else c.run_k
        u = (c.phase + k * t / n) % 1.0
        x = c.x_span[0] + (c.x_span[1] - c.x_span[0]) * (1 - abs(2 * u - 1))
        stride = 8 * math.sin(2 * math.pi * x / (36 * c.scale))
        return _Pose(x, c.y_home, (-stride, stride),
                     ((0.6 * stride - 3, 15), (-0.6 * stride + 3, 15)))
    if label in ("rise", "fall"):
        u = t / (n - 1) if label == "rise" else 1 - t / (n - 1)
        y = c.y_span[0] + (c.y_span[1] - c.y_span[0]) * u
        return _Pose(c.x_home, y, (-2, 2), ((-16, 0), (16, 0)))
    swing = 0.5 + 0.5 * math.sin(2 * math.pi * t / c.period + 2 * math.pi * c.phase)
    if label == "box":
        other = 1 - swing
        return _Pose(c.x_home, c.y_home, (-7, 7),
                     ((c.side * (5 + 11 * swing), -1), (c.side * (5 + 11 * other), 2)))
    if label == "wave":
        dx, dy = 15 * math.sin(0.35 + 0.5 * swing), -15 * math.cos(0.35 + 0.5 * swing)
        return _Pose(c.x_home, c.y_home, (-4, 4), ((-dx, dy), (dx, dy)))
    raise ValueError(f"unknown demo class {label!r}")


def _capsule(image: np.ndarray, p0: tuple[float, float], p1: tuple[float, float], radius: float,
             colour: np.ndarray) -> None:
    """Paint a thick anti-aliased segment (a disc when ``p0 == p1``) in place."""
    height, width = image.shape[:2]
    x0, y0 = p0
    x1, y1 = p1
    left, right = max(int(min(x0, x1) - radius - 1), 0), min(int(max(x0, x1) + radius + 2), width)
    top, bottom = max(int(min(y0, y1) - radius - 1), 0), min(int(max(y0, y1) + radius + 2), height)
    if left >= right or top >= bottom:
        return
    xx = np.arange(left, right, dtype=np.float32)[None, :] - x0
    yy = np.arange(top, bottom, dtype=np.float32)[:, None] - y0
    dx, dy = x1 - x0, y1 - y0
    length2 = dx * dx + dy * dy
    if length2 > 0:
        along = np.minimum(np.maximum((xx * dx + yy * dy) / length2, 0.0), 1.0)
        xx, yy = xx - along * dx, yy - along * dy
    alpha = np.minimum(np.maximum(radius + 0.5 - np.sqrt(xx * xx + yy * yy), 0.0), 1.0)
    patch = image[top:bottom, left:right]
    patch += alpha[..., None] * (colour - patch)


def _draw(image: np.ndarray, pose: _Pose, c: _Clip) -> None:
    """A stick figure: legs, torso, arms, head."""
    s = c.scale
    hip = (pose.x, pose.y)
    shoulder = (pose.x, pose.y - 18 * s)
    for foot in pose.feet:
        _capsule(image, hip, (pose.x + foot * s, pose.y + 22 * s), 2.3 * s, c.body)
    _capsule(image, hip, (pose.x, pose.y - 20 * s), 4.5 * s, c.body)
    for dx, dy in pose.hands:
        _capsule(image, shoulder, (shoulder[0] + dx * s, shoulder[1] + dy * s), 2.0 * s, c.body)
    head = (pose.x, pose.y - 27 * s)
    _capsule(image, head, head, 5.5 * s, c.head)


def source_frame(label: str, t: int, n_frames: int, run_k: int) -> tuple[str, int]:
    """Which frame of which class frame ``t`` of ``label`` shows, for the motion-only pairs.

    ``fall`` is ``rise`` backwards; ``run`` visits ``walk``'s positions ``k`` times faster:
    position ``(phase + k t / n) mod 1`` equals walk's at frame ``k t mod n``. Rendering them as
    permutations of the same frames makes the frame sets identical by construction.
    """
    if label == "fall":
        return "rise", n_frames - 1 - t
    if label == "run":
        return "walk", (run_k * t) % n_frames
    return label, t


class _FrameCache:
    """Clean (noise-free) frames of one clip, drawn once and shared by the paired classes."""

    def __init__(self, clip: _Clip):
        self.clip = clip
        self.frames: dict[tuple[str, int], np.ndarray] = {}

    def get(self, label: str, t: int) -> np.ndarray:
        key = source_frame(label, t, self.clip.n_frames, self.clip.run_k)
        if key not in self.frames:
            image = self.clip.background.copy()
            _draw(image, _pose(key[0], key[1], self.clip), self.clip)
            self.frames[key] = np.clip(image + 0.5, 0, 255).astype(np.uint8)
        return self.frames[key]


def _frames(label: str, cache: _FrameCache, rng: np.random.Generator,
            noise: np.ndarray) -> Iterator[np.ndarray]:
    """The clip's RGB frames, each with noise from the bank so the encoder has real work."""
    for t in range(cache.clip.n_frames):
        image = cache.get(label, t) + noise[rng.integers(len(noise))]
        yield np.clip(image, 0, 255).astype(np.uint8)


def _file_name(person: str, label: str, scenario: str, clip: int, clips_per_combo: int) -> str:
    suffix = "" if clips_per_combo == 1 else f"_{clip + 1}"
    return f"{person}_{label}_{scenario}{suffix}.mp4"


def _render_combo(folder: Path, params: dict, person: int, scenario: int, clip_index: int,
                  noise: np.ndarray) -> list[list]:
    """The six class videos of one (person, scenario, clip); their manifest rows."""
    seed, size, fps = params["seed"], tuple(params["size"]), params["fps"]
    clip = _clip(seed, person, scenario, clip_index, tuple(params["frames"]), size)
    cache = _FrameCache(clip)
    name, where = PERSONS[person], SCENARIOS[scenario]
    rows = []
    for c, label in enumerate(CLASSES):
        rel = f"{label}/{_file_name(name, label, where, clip_index, params['clips_per_combo'])}"
        rng = np.random.default_rng([seed, person, scenario, clip_index, 100 + c])
        n = write_h264(folder / rel, _frames(label, cache, rng, noise), size, fps, crf=23, threads=1)
        rows.append([rel, label, name, PERSON_SPLIT[name], where, n])
    return rows


def _render_into(folder: Path, params: dict) -> dict:
    """Render every clip and the manifest into ``folder``; the marker goes last."""
    started = time.perf_counter()
    width, height = params["size"]
    noise = np.random.default_rng([params["seed"], 7]).normal(  # a bank: cheaper than per frame
        0, NOISE_SIGMA, (NOISE_BANK, height, width, 3)).astype(np.float32)
    for label in CLASSES:
        (folder / label).mkdir()
    rows = []
    for person in range(len(PERSONS)):
        for scenario in range(len(SCENARIOS)):
            for clip_index in range(params["clips_per_combo"]):
                rows += _render_combo(folder, params, person, scenario, clip_index, noise)
    with (folder / MANIFEST_NAME).open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["path", "label", "group", "split", "scenario", "frames"])
        writer.writerows(rows)
    marker = {"format": "harx-demo", "version": DEMO_VERSION, "params": params,
              "videos": len(rows), "frames": sum(row[-1] for row in rows),
              "render_seconds": round(time.perf_counter() - started, 2)}
    (folder / MARKER_NAME).write_text(json.dumps(marker, indent=1) + "\n", encoding="utf-8")
    return marker


# ----------------------------------------------------------------------------- idempotent render

def _params(seed: int, clips_per_combo: int, frames: tuple[int, int], size: tuple[int, int],
            fps: int) -> dict:
    """Check the options and return them as the JSON the marker stores."""
    if not isinstance(seed, int) or seed < 0:
        raise InvalidOptionError(f"demo seed must be an integer >= 0; got {seed!r}")
    if clips_per_combo < 1:
        raise InvalidOptionError(f"clips_per_combo must be >= 1; got {clips_per_combo}")
    lo, hi = frames
    if not 8 <= lo <= hi:
        raise InvalidOptionError(f"frames must be (lo, hi) with 8 <= lo <= hi; got {frames}")
    width, height = size
    if width < 64 or height < 48 or width % 2 or height % 2:
        raise InvalidOptionError(f"size must be even and at least 64x48; got {width}x{height}")
    if fps < 1:
        raise InvalidOptionError(f"fps must be >= 1; got {fps}")
    return {"seed": seed, "clips_per_combo": clips_per_combo, "frames": [lo, hi],
            "size": [width, height], "fps": fps, "codec": CODEC}


def read_marker(root: Path) -> dict | None:
    """The render's marker, or ``None`` when absent or unreadable."""
    try:
        marker = json.loads((Path(root) / MARKER_NAME).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return marker if isinstance(marker, dict) else None


def _is_complete(root: Path, params: dict) -> bool:
    """A finished render of these parameters whose videos are all still there."""
    marker = read_marker(root)
    if not marker or marker.get("version") != DEMO_VERSION or marker.get("params") != params:
        return False
    try:
        rows = read_manifest(root / MANIFEST_NAME)
    except (DatasetFormatError, FileNotFoundError):
        return False
    return len(rows) == marker.get("videos") and all(row.path.is_file() for row in rows)


def _check_replaceable(root: Path) -> None:
    """Never overwrite a folder that is not an earlier demo render."""
    if root.exists() and not root.is_dir():
        raise InvalidOptionError(f"demo root {root} is a file; pass a folder path")
    if root.is_dir() and any(root.iterdir()) and not (root / MARKER_NAME).exists():
        raise InvalidOptionError(
            f"demo root {root} is not empty and holds no {MARKER_NAME}, so it is not a harx demo "
            "render; pass a new or empty folder")


def _swap_in(new: Path, root: Path, params: dict) -> None:
    """Put the finished render at ``root`` by rename, moving an older render out of the way."""
    old = None
    if root.is_dir():
        if any(root.iterdir()):
            old = root.with_name(f".{root.name}.old-{os.getpid()}-{time.time_ns()}")
            os.rename(root, old)
        else:
            root.rmdir()
    try:
        os.rename(new, root)
    except OSError:
        if _is_complete(root, params):  # a concurrent render got there first
            return
        if old is not None and not root.exists():
            os.rename(old, root)  # put the previous render back rather than lose it
            old = None
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _remove_stale(root: Path, max_age_s: float = 3600) -> None:
    """Delete temp folders that a killed render (no chance to clean up) left beside ``root``."""
    if not root.parent.is_dir():
        return
    now = time.time()
    for path in root.parent.glob(f".{root.name}.*-*"):
        try:
            stale = path.is_dir() and now - path.stat().st_mtime > max_age_s
        except OSError:
            continue
        if stale:
            shutil.rmtree(path, ignore_errors=True)


def render_demo(root: str | Path, *, seed: int = 0, clips_per_combo: int = 1,
                frames: tuple[int, int] = (32, 60), size: tuple[int, int] = (160, 120),
                fps: int = 25) -> Path:
    """Render the demo dataset at ``root`` unless an identical render is already there.

    Renders into a hidden sibling folder and renames it into place when complete, so an
    interrupted render never leaves a folder that looks finished. Returns ``root``.

    Raises:
        InvalidOptionError: bad parameters, or ``root`` is a non-empty folder that is not a demo.
    """
    root = Path(root).expanduser().absolute()
    params = _params(seed, clips_per_combo, tuple(frames), tuple(size), fps)
    if _is_complete(root, params):
        return root
    _check_replaceable(root)
    _remove_stale(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        _render_into(work, params)
        _swap_in(work, root, params)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return root


def default_demo_root(seed: int = 0) -> Path:
    """``$HARX_HOME/demo``; other seeds get their own folder so they do not replace it."""
    return harx_home() / ("demo" if seed == 0 else f"demo-seed{seed}")


@register_dataset(settings=("seed", "manifest"))
def demo(root: Path | None = None, *, seed: int = 0) -> DatasetIndex:
    """The built-in demo dataset, rendered on first use (a few seconds), then reused."""
    root = default_demo_root(seed) if root is None else Path(root).expanduser().absolute()
    render_demo(root, seed=seed)
    index = index_manifest(root / MANIFEST_NAME, name="demo", root=root, seed=seed)
    marker = read_marker(root) or {}
    index.split_protocol = SPLIT_PROTOCOL
    index.options = {"seed": seed, "source": "demo", "manifest": str(root / MANIFEST_NAME),
                     "render": marker.get("params", {}), "demo_version": DEMO_VERSION,
                     "motion_only_pairs": [list(pair) for pair in MOTION_ONLY_PAIRS],
                     "notes": index.options.get("notes", [])}
    return index


__all__ = ["CLASSES", "DEMO_VERSION", "MOTION_ONLY_PAIRS", "PERSONS", "PERSON_SPLIT", "SCENARIOS",
           "default_demo_root", "demo", "read_marker", "render_demo", "source_frame"]
