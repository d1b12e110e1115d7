"""When each frame is shown, for videos whose frame rate varies.

Phones lower the frame rate in low light, browsers' and screen recorders' files follow the
capture clock, and some such files state a nominal rate (a WebM says 30 while it holds 15 frames
a second). Counting frames at the stated rate then puts `--fps` samples and timeline seconds in
the wrong place: in a test file that shows 30 frames in its first second and 10 a second after,
frame 30 is at 1.0 s, and at 2.0 s by count.

So where the container stores a time per frame (``videofiles.TIMESTAMPED_CONTAINERS``) and those
times stray from an even spacing by more than two frame intervals, harx samples and times the
video by them (:meth:`extract.sampling.Sampling.indices_at`, :func:`extract.sampling.sliding_windows_at`).
A constant-rate video keeps frame-number sampling, unchanged. AVI is never asked: it has no
times, and decord makes up wrong ones for AVIs with packed B-frames (most of UCF101).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .videofiles import TIMESTAMPED_CONTAINERS

__all__ = ["frame_times", "VARIES_BY_INTERVALS"]

VARIES_BY_INTERVALS = 2.0   # drift from even spacing, in frame intervals, that counts as varying
_LONGEST_GAP_S = 10.0       # a longer pause between two frames is taken for broken times


def frame_times(reader, path: str | Path) -> np.ndarray | None:
    """Each frame's start in seconds from the first frame, where the rate varies; ``None`` where
    it is constant, unknown or not to be trusted (frames are then counted at the stated rate).

    ``reader``: decord's ``VideoReader`` or :class:`extract.pyav_reader.PyAVReader`.
    """
    if Path(path).suffix.lower() not in TIMESTAMPED_CONTAINERS:
        return None
    n = len(reader)
    if n < 3:
        return None
    try:
        times = np.asarray(reader.get_frame_timestamp(np.arange(n)), dtype=np.float64)[:, 0]
    except Exception:  # noqa: BLE001 - no usable times: count frames
        return None
    times = times - times[0]
    steps = np.diff(times)
    if not np.isfinite(times).all() or (steps <= 0).any():
        return None                   # missing or unordered times say nothing about the rate
    stated = float(reader.get_avg_fps() or 0.0)
    if stated > 0 and not 0.25 < times[-1] / ((n - 1) / stated) < 4:
        return None                   # times far from any plausible length: garbage (AV_NOPTS...)
    if steps.max() > _LONGEST_GAP_S:
        return None
    # Even spacing measured from the ends, not a median step: times come rounded (float32 from
    # decord, whole milliseconds in Matroska), and a median of rounded steps drifts over a long
    # constant-rate video by far more than the rounding.
    interval = float(times[-1]) / (n - 1)
    drift = np.abs(times - np.arange(n) * interval).max()
    rounding = 0.001 + 4 * float(np.finfo(np.float32).eps) * float(times[-1])
    return times if drift > VARIES_BY_INTERVALS * interval + rounding else None
