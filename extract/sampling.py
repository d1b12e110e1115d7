"""Which frames of a video range to embed: all, every k-th, a target fps, or at most N.

Sampling is decided per sample from its frame range and the video's frame rate, and is the same
in stage one and in ``harx predict``. Nothing is dropped for being short: a 24-frame range with
``every=4`` still gives 6 frames, and a range shorter than ``max_frames`` gives all its frames.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np

from harx.features.errors import InvalidOptionError


@dataclass(frozen=True)
class Sampling:
    """Frame sampling policy. At most one of ``every``, ``target_fps`` may be set; ``max_frames``
    combines with either (applied last, evenly spread).

    Examples:
        A 95-frame range ``[0, 95)`` with ``every=4`` gives 24 frames (0, 4, ..., 92).
        At 25 fps with ``target_fps=5`` it gives 19 frames (0, 5, ..., 90).
        With ``max_frames=10`` it gives 10 frames evenly spread: 4, 14, 23, ..., 90 (segment centres).
    """

    every: int = 1
    target_fps: float | None = None
    max_frames: int | None = None

    def __post_init__(self) -> None:
        if self.every < 1:
            raise InvalidOptionError(f"--every must be >= 1, got {self.every}")
        if self.target_fps is not None and self.target_fps <= 0:
            raise InvalidOptionError(f"--fps must be > 0, got {self.target_fps}")
        if self.target_fps is not None and self.every != 1:
            raise InvalidOptionError("give either --every or --fps, not both")
        if self.max_frames is not None and self.max_frames < 1:
            raise InvalidOptionError(f"--max-frames must be >= 1, got {self.max_frames}")

    def indices(self, start: int, stop: int, fps: float | None) -> np.ndarray:
        """Source frame indices (sorted, unique) to embed from range ``[start, stop)``."""
        if stop <= start:
            return np.zeros(0, dtype=np.int64)
        if self.target_fps is not None and fps and fps > self.target_fps:
            step = fps / self.target_fps
            idx = start + np.floor(np.arange(0, stop - start, step)).astype(np.int64)
        else:
            idx = np.arange(start, stop, self.every, dtype=np.int64)
        return np.unique(self._at_most(idx))

    def _at_most(self, idx: np.ndarray) -> np.ndarray:
        """``idx`` cut to ``max_frames``: the centres of that many equal segments (symmetric, and
        deterministic)."""
        if self.max_frames is not None and len(idx) > self.max_frames:
            pos = ((np.arange(self.max_frames) + 0.5) * len(idx) / self.max_frames).astype(np.int64)
            idx = idx[pos]
        return idx

    def indices_at(self, start: int, stop: int, times: np.ndarray) -> np.ndarray:
        """As :meth:`indices`, for a video whose frame rate varies (``extract.timing``): ``--fps``
        takes the frame shown at each instant ``1 / fps`` apart, from each frame's start time in
        ``times`` (seconds); ``--every`` and ``--max-frames`` count frames as before. For evenly
        spaced times this gives what :meth:`indices` gives (checked on 12,672 ranges, rates and
        targets), except where an instant and a frame's start fall within float32 rounding of
        each other (78 of them: 13 microseconds apart at 47 s), where either frame is right."""
        if stop <= start:
            return np.zeros(0, dtype=np.int64)
        if self.target_fps is None:
            return self.indices(start, stop, None)
        shown = np.asarray(times[start:stop], dtype=np.float64)
        whole = np.asarray(times, dtype=np.float64)
        # the range ends where its last frame ends: at the next frame's start, or at the video's end
        end = whole[stop] if stop < len(whole) else video_end(whole)
        # a frame starting a hair after an instant still counts as shown at it: decord gives times
        # in float32 (0.2 s comes back as 0.20000000298)
        eps = float(np.finfo(np.float32).eps) * max(1.0, float(np.abs(whole).max()))
        instants = shown[0] + np.arange(0, end - shown[0] - eps, 1 / self.target_fps)
        return self._at_most(np.unique(start + np.searchsorted(shown, instants + eps, side="right") - 1))

    def describe(self) -> str:
        parts = [f"every {self.every} frame(s)" if self.target_fps is None else f"{self.target_fps:g} fps"]
        if self.max_frames is not None:
            parts.append(f"at most {self.max_frames} evenly spread")
        return ", ".join(parts)

    def to_json(self) -> str:
        fields = asdict(self)
        if self.target_fps is not None:   # --fps follows frame times where the rate varies (since
            fields["varying_rate"] = "frame times"   # session 10): not the caches made before
        return json.dumps(fields, sort_keys=True)

    @classmethod
    def from_settings(cls, fields: dict) -> "Sampling":
        """The sampling a cache's ``sampling`` attribute records."""
        return cls(**{k: fields[k] for k in ("every", "target_fps", "max_frames") if k in fields})

    @property
    def slug(self) -> str:
        """Short file-name part, e.g. ``every4`` or ``fps5-max32``."""
        s = f"every{self.every}" if self.target_fps is None else f"fps{self.target_fps:g}"
        return s + (f"-max{self.max_frames}" if self.max_frames else "")


def sliding_windows(n_frames: int, fps: float | None, window_s: float, stride_s: float) -> list[tuple[int, int]]:
    """Frame ranges ``[start, stop)`` of windows ``window_s`` long, ``stride_s`` apart, covering
    ``n_frames``: the last window ends at the last frame (so the tail is never left out), and a
    video shorter than one window is one window. ``fps`` unknown (0/None) counts as 25.

    Example: 100 frames at 25 fps, window 2 s, stride 1 s: [0, 50), [25, 75), [50, 100).
    """
    _check_window(window_s, stride_s)
    if n_frames <= 0:
        return []
    rate = fps if fps and fps > 0 else 25.0
    length = max(1, round(window_s * rate))
    if n_frames <= length:
        return [(0, n_frames)]
    step = max(1, round(stride_s * rate))
    starts = list(range(0, n_frames - length + 1, step))
    if starts[-1] + length < n_frames:
        starts.append(n_frames - length)
    return [(s, s + length) for s in starts]


def sliding_windows_at(times: np.ndarray, window_s: float, stride_s: float) -> list[tuple[int, int]]:
    """:func:`sliding_windows` for a video whose frame rate varies: windows ``window_s`` long and
    ``stride_s`` apart in the frames' own times (``times``: each frame's start in seconds), the
    last ending at the last frame; each holds the frames that start inside it."""
    _check_window(window_s, stride_s)
    times = np.asarray(times, dtype=np.float64)
    n = len(times)
    if n == 0:
        return []
    end = video_end(times)
    if end - times[0] <= window_s:
        return [(0, n)]
    windows = []
    for s in np.arange(times[0], end - window_s + 1e-9, stride_s):
        lo, hi = np.searchsorted(times, [s - 1e-9, s + window_s - 1e-9], side="left")
        if hi > lo:
            windows.append((int(lo), int(hi)))
    if windows[-1][1] < n:            # the tail: one more window ending at the last frame
        lo = int(np.searchsorted(times, end - window_s - 1e-9, side="left"))
        windows.append((min(lo, n - 1), n))
    return list(dict.fromkeys(windows))


def video_end(times: np.ndarray) -> float:
    """When a video whose frames start at ``times`` ends: one average interval after its last
    frame starts (as ``n / fps`` at the average rate, which is what ``harx predict`` reports)."""
    n = len(times)
    return float(times[-1]) + ((float(times[-1]) - float(times[0])) / (n - 1) if n > 1 else 0.0)


def _check_window(window_s: float, stride_s: float) -> None:
    if window_s <= 0 or stride_s <= 0:
        raise InvalidOptionError(f"window and stride must be > 0 s, got {window_s:g} and {stride_s:g}")
