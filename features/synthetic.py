"""Synthetic feature caches: real harx caches of made-up frame embeddings, for tests and benchmarks.

:func:`make_synthetic_cache` writes a schema-1 cache through :class:`~features.writer.FeatureWriter`
(the same path stage one takes), so everything stage two does on it, it does on a real cache.
No video is decoded and no CNN runs: each frame's embedding is drawn from a class-dependent model
of a figure moving along a path, in the manner of the built-in ``demo`` dataset.

The frame model. A *path* is a smooth curve ``f(p)``, ``p`` in [0, 1], in embedding space (a few
random Fourier directions). A frame is ``f(p(t)) + person offset + noise``, where the person
offset is shared by all samples of one group and the noise is i.i.d. per frame. Classes differ
in which curve they use and in how ``p`` moves over time:

* appearance classes (``box``, ``wave``, ``pose2``, ...) each have a curve of their own, so one
  frame tells them apart;
* ``rise`` / ``fall`` (order only) share one curve; ``p`` goes up (from 0-0.15 to 0.85-1) over
  each ``rise`` sample, and a ``fall`` sample is a ``rise`` sample played backwards: the same set
  of frames, in reverse order;
* ``walk`` / ``run`` (speed only) share another curve; ``p`` goes back and forth along it, one
  round trip every 48-72 frames for ``walk`` and every 12-18 for ``run``, from a random phase:
  both visit the same positions equally often, so only speed separates them.

A per-frame classifier therefore cannot beat chance within a motion-only pair (``rise``/``fall``,
``walk``/``run``), while a temporal head can. With ``n_classes=6`` and ``motion_only=True`` the
classes are ``box, fall, rise, run, walk, wave``: at most 4/6 are reachable by frame voting.

Example: ``make_synthetic_cache(p, n_samples=2391, mean_frames=95, min_frames=24, max_frames=400,
embed_dim=1280, unit="subsequence")`` gives a KTH-sized cache (2,391 subsequences of about 4 per
video, about 227,000 frames, 580 MB of float16), split by person like KTH.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .errors import InvalidOptionError
from .writer import FeatureWriter

__all__ = ["make_synthetic_cache", "synthetic_class_names", "MOTION_ONLY_PAIRS"]

MOTION_ONLY_PAIRS = (("rise", "fall"), ("walk", "run"))
_MOTION_ORDER = ("rise", "fall", "walk", "run")
_APPEARANCE = ("box", "wave")
_WALK_PERIOD = (48, 72)   # frames per round trip
_RUN_PERIOD = (12, 18)
_HARMONICS = 3


def synthetic_class_names(n_classes: int, motion_only: bool = True) -> list[str]:
    """The class names (sorted, i.e. in label-index order) for ``n_classes`` classes.

    With ``motion_only`` the motion-only pairs come first (``rise``/``fall``, then ``walk``/``run``
    when ``n_classes >= 4``), then appearance classes (``box``, ``wave``, ``pose2``, ...): 3 classes
    are ``box, fall, rise``. Without ``motion_only``, all classes are appearance classes.
    """
    if n_classes < 2:
        raise InvalidOptionError(f"n_classes must be >= 2, got {n_classes}")
    motion = list(_MOTION_ORDER[: 2 * min(2, n_classes // 2)]) if motion_only else []    # whole pairs
    appearance = [*_APPEARANCE, *(f"pose{k}" for k in range(len(_APPEARANCE), n_classes + len(_APPEARANCE)))]
    names = motion + appearance[: n_classes - len(motion)]
    return sorted(names)


def _lengths(rng: np.random.Generator, n: int, mean: float, lo: int, hi: int) -> np.ndarray:
    """Log-normal frame counts clipped to [lo, hi], scaled so that their mean is ``mean``."""
    z = rng.standard_normal(n)
    sigma = 0.55
    scale = max(mean, 1.0) * math.exp(-sigma ** 2 / 2)
    for _ in range(30):                 # clipping moves the mean: correct the scale until it holds
        counts = np.clip(np.round(scale * np.exp(sigma * z)), lo, hi)
        if counts.mean() <= 0 or abs(counts.mean() - mean) < 0.05:
            break
        scale *= mean / counts.mean()
    return counts.astype(np.int64)


def _trajectory(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Positions ``p(t)`` in [0, 1] for ``n`` frames of one motion kind."""
    t = np.arange(n, dtype=np.float64)
    if kind in ("rise", "fall"):
        a, b = rng.uniform(0.0, 0.15), rng.uniform(0.85, 1.0)
        p = a + (b - a) * t / max(n - 1, 1)
        return p if kind == "rise" else p[::-1].copy()
    if kind in ("walk", "run"):
        lo, hi = _WALK_PERIOD if kind == "walk" else _RUN_PERIOD
        period = rng.uniform(lo, hi)
        phase = rng.uniform(0.0, 1.0)
        x = (t / period + phase) % 1.0
        return 1.0 - np.abs(2.0 * x - 1.0)           # triangle wave: there and back again
    # appearance classes move too (so motion alone does not name them), at a random speed
    period = rng.uniform(12, 72)
    x = (t / period + rng.uniform(0.0, 1.0)) % 1.0
    return 1.0 - np.abs(2.0 * x - 1.0)


class _Curves:
    """Smooth curves in embedding space: ``f(p) = c + sum_k A_k cos(k pi p) + B_k sin(k pi p)``."""

    def __init__(self, rng: np.random.Generator, embed_dim: int, names: Sequence[str], separation: float):
        def rand_dirs(k: int) -> np.ndarray:
            v = rng.standard_normal((k, embed_dim))
            return v / np.linalg.norm(v, axis=1, keepdims=True)

        self.params: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        shared: dict[str, tuple] = {}
        for name in names:
            key = "order" if name in ("rise", "fall") else "speed" if name in ("walk", "run") else name
            if key not in shared:
                scale = 1.0 / np.arange(1, _HARMONICS + 1)[:, None]
                shared[key] = (separation * rand_dirs(1)[0], rand_dirs(_HARMONICS) * scale,
                               rand_dirs(_HARMONICS) * scale)
            self.params[name] = shared[key]

    def __call__(self, name: str, p: np.ndarray) -> np.ndarray:
        c, a, b = self.params[name]
        k = np.arange(1, _HARMONICS + 1)[None, :] * np.pi * p[:, None]
        return (c[None, :] + np.cos(k) @ a + np.sin(k) @ b).astype(np.float32)


def make_synthetic_cache(
    path: str | Path,
    *,
    n_samples: int = 180,
    mean_frames: float = 40,
    min_frames: int = 8,
    max_frames: int = 400,
    embed_dim: int = 64,
    n_classes: int = 6,
    seed: int = 0,
    unit: str = "video",
    motion_only: bool = True,
    groups: bool = True,
    n_groups: int | None = None,
    split_fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
    subsequences_per_video: int = 4,
    noise: float = 1.2,
    separation: float = 1.0,
    lengths: Sequence[int] | None = None,
    backbone: str = "synthetic",
    dataset: str = "synthetic",
    dtype: str = "float16",
    overwrite: bool = True,
) -> Path:
    """Write a synthetic harx feature cache to ``path`` and return ``path``.

    Parameters
    ----------
    n_samples : int
        Samples in the cache, spread evenly over classes and groups (videos or subsequences).
    mean_frames, min_frames, max_frames : frame counts per sample: log-normal with this mean,
        clipped to ``[min_frames, max_frames]``.
    embed_dim : int
        Width of each frame embedding.
    n_classes : int
        Classes; see :func:`synthetic_class_names` for which.
    unit : "video" | "subsequence"
        ``subsequence``: samples are consecutive pieces of longer videos (about
        ``subsequences_per_video`` each, sharing ``video_id``), as in KTH.
    motion_only : bool
        Include the motion-only classes (``rise``/``fall``, ``walk``/``run``).
    groups, n_groups, split_fractions :
        With ``groups``, samples belong to persons ``p01``...; whole persons go to train, val and
        test in ``split_fractions`` (no person in two splits). Without, the split is per sample.
    noise, separation :
        Expected norm of each frame's i.i.d. Gaussian noise vector (the same difficulty at any
        ``embed_dim``: the curves are built from unit-norm directions), and distance between the
        class curves. At ``noise=1.2`` a temporal head still reads speed; at 4 it no longer does.
    lengths : sequence of int, optional
        Exact frame counts, used in turn for sample 0, 1, ... (cycled); overrides the
        log-normal draw. E.g. ``lengths=[1, 3, 1000]`` puts 1-frame and 1000-frame samples in.
    backbone, dataset : names written into the cache's attributes (a different ``backbone``
        makes a cache that runs trained on this one must refuse).

    Raises
    ------
    InvalidOptionError
        A parameter out of range.
    """
    path = Path(path)
    if unit not in ("video", "subsequence"):
        raise InvalidOptionError(f"unit must be 'video' or 'subsequence', got {unit!r}")
    if n_samples < 1 or embed_dim < 1 or min_frames < 1 or max_frames < min_frames:
        raise InvalidOptionError(f"need n_samples >= 1, embed_dim >= 1, 1 <= min_frames <= max_frames; got "
                                 f"{n_samples}, {embed_dim}, {min_frames}, {max_frames}")
    if len(split_fractions) != 3 or min(split_fractions) < 0 or sum(split_fractions) <= 0:
        raise InvalidOptionError(f"split_fractions must be 3 non-negative numbers, got {split_fractions}")
    rng = np.random.default_rng(seed)
    names = synthetic_class_names(n_classes, motion_only)
    curves = _Curves(rng, embed_dim, names, separation)
    per_video = subsequences_per_video if unit == "subsequence" else 1
    n_videos = math.ceil(n_samples / per_video)
    if n_groups is None:
        n_groups = max(5, min(25, n_videos // len(names))) if groups else 1
    group_names = [f"p{g + 1:02d}" for g in range(n_groups)]
    fr = np.asarray(split_fractions, dtype=float) / sum(split_fractions)
    n_val = max(int(fr[1] > 0), round(fr[1] * n_groups))     # every split asked for gets a person
    n_test = max(int(fr[2] > 0), round(fr[2] * n_groups))
    if groups and n_groups - n_val - n_test < 1:
        raise InvalidOptionError(f"{n_groups} persons cannot make train, val and test splits of "
                                 f"{list(split_fractions)}; use more n_groups")
    bounds = np.array([n_groups - n_val - n_test, n_groups - n_test, n_groups])
    group_split = {g: ("train" if i < bounds[0] else "val" if i < bounds[1] else "test")
                   for i, g in enumerate(group_names)}
    person_offset = {}
    for g in group_names:                       # each person looks a little different
        d = rng.standard_normal(embed_dim).astype(np.float32)
        person_offset[g] = 0.5 * d / np.linalg.norm(d)

    # The sample plan: video v has class v % C and person (v // C) % G, so classes and persons
    # are balanced; each video is cut into `per_video` consecutive subsequences.
    if lengths is not None:
        frame_counts = np.array([int(lengths[i % len(lengths)]) for i in range(n_samples)], dtype=np.int64)
        if frame_counts.min() < 1:
            raise InvalidOptionError("lengths must all be >= 1")
    else:
        frame_counts = _lengths(rng, n_samples, mean_frames, min_frames, max_frames)
    settings = {
        "dataset": dataset, "root": f"synthetic:{dataset}", "unit": unit,
        "dataset_options": {"n_samples": n_samples, "mean_frames": mean_frames, "min_frames": min_frames,
                            "max_frames": max_frames, "n_classes": n_classes, "seed": seed,
                            "motion_only": motion_only, "groups": groups, "n_groups": n_groups,
                            "split_fractions": list(map(float, split_fractions)),
                            "subsequences_per_video": per_video, "noise": noise, "separation": separation,
                            "lengths": None if lengths is None else [int(x) for x in lengths]},
        "class_names": names,
        "split_protocol": (f"by person: {int(bounds[0])} train, {int(bounds[1] - bounds[0])} val, "
                           f"{int(n_groups - bounds[1])} test persons of {n_groups} (no person in two splits)"
                           if groups else "per video, round-robin within each class (60/20/20)"),
        "backbone": backbone, "weights": "none", "weights_sha256": "", "embed_dim": embed_dim,
        "dtype": dtype, "preprocess": {"synthetic": True}, "sampling": {"every": 1},
        "sampling_description": "every frame (synthetic embeddings, no video decoded)",
        "precision": "fp32", "device": "cpu", "missing": [],
        "versions": {"numpy": np.__version__},
    }
    order: list[str] = []
    with FeatureWriter(path, settings, overwrite=overwrite) as writer:
        i = 0
        v = 0
        while i < n_samples:
            label_index = v % len(names)
            label = names[label_index]
            group = group_names[(v // len(names)) % n_groups]
            if groups:
                split = group_split[group]
            else:
                k = v // len(names)
                split = ("train", "train", "train", "val", "test")[k % 5]
            counts = frame_counts[i:i + per_video]
            gaps = rng.integers(0, 10, size=len(counts))
            total = int(counts.sum() + gaps.sum())
            p = _trajectory(label, total, rng)
            if label in ("rise", "fall"):
                # each subsequence is one whole rise (or fall), as each KTH subsequence holds whole
                # repetitions of its action; periodic motions simply run on through the video
                pos = 0
                for n, gap in zip(counts, gaps):
                    pos += int(gap)
                    p[pos:pos + int(n)] = _trajectory(label, int(n), rng)
                    pos += int(n)
            video_x = curves(label, p) + person_offset[group][None, :]
            video_x += rng.standard_normal(video_x.shape, dtype=np.float32) * np.float32(noise / math.sqrt(embed_dim))
            video_id = f"{group}_{label}_v{v // (len(names) * n_groups) + 1:02d}" if groups else f"{label}_v{v:04d}"
            pos = 0
            for j, (n, gap) in enumerate(zip(counts, gaps)):
                pos += int(gap)
                n = int(n)
                sid = f"{video_id}#{j + 1}" if unit == "subsequence" else video_id
                meta = {
                    "sample_id": sid, "video_id": video_id, "path": f"{label}/{video_id}.avi", "label": label,
                    "label_index": label_index, "split": split, "group": group if groups else "",
                    "scenario": "", "note": "", "range_start": pos, "range_stop": pos + n,
                    "annotated_start": pos if unit == "subsequence" else -1,
                    "annotated_stop": pos + n if unit == "subsequence" else -1, "fps": 25.0,
                }
                writer.add_sample(meta, video_x[pos:pos + n], np.arange(pos, pos + n, dtype=np.int32))
                order.append(sid)
                pos += n
                i += 1
                if i >= n_samples:
                    break
            writer.maybe_commit()
            v += 1
        writer.finalize(order=order)
    return path
