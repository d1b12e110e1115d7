"""Frames the right way up: videos whose container says to rotate them for display.

A phone films portrait video as landscape frames plus a display matrix ("rotate 90"). Players
turn the picture. decord 0.6 turns it too, through its own FFmpeg 4, but not always: a video 48
pixels high fails every frame once turned ("The size must exactly match"), and it reads the turn
only where its older FFmpeg finds one; PyAV, which writes annotated
videos and the browser's copies, does not turn at all, so those came out sideways with the labels
and skeletons of the upright frames drawn across them.

So harx turns frames itself, one way for both readers: a turned video is decoded by PyAV
(:mod:`extract.pyav_reader`, as fast as decord here, ``benchmarks/RESULTS.md``), which leaves
frames as stored, and they are turned with ``np.rot90``, the turn FFmpeg's players make (checked
against ``ffmpeg``'s own autorotation; where decord's own turn works, its frames and these are
equal to the last bit). Reading every frame with PyAV (:mod:`extract.stream`) turns them the same
way.

Only containers that can carry a display matrix are asked (MP4/MOV/3GP/M4V, Matroska/WebM); an
AVI, like every clip of KTH, UCF101 and HMDB51, costs nothing. A display matrix that also mirrors
the picture is turned, not mirrored.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .videofiles import TIMESTAMPED_CONTAINERS

__all__ = ["display_turns", "quarter_turns", "upright"]


def quarter_turns(rotation_deg: float | None) -> int:
    """Counterclockwise quarter turns (0-3) nearest to a display rotation in degrees (PyAV's
    ``VideoFrame.rotation``: counterclockwise, -180..180)."""
    return round((rotation_deg or 0) / 90) % 4


def upright(frames: np.ndarray, turns: int) -> np.ndarray:
    """``frames`` (N, H, W, C) or one frame (H, W, C) turned ``turns`` quarter turns counterclockwise,
    contiguous (the shared-memory ring and torch want it so)."""
    if not turns:
        return frames
    axes = (1, 2) if frames.ndim == 4 else (0, 1)
    # Each pixel's channels moved as one opaque item: 2.3x faster than moving bytes one by one
    # (0.047 s against 0.11 s for 32 frames of 910x512 here).
    frames = np.ascontiguousarray(frames)
    pixels = frames.view(np.dtype((np.void, frames.shape[-1] * frames.itemsize)))
    return np.ascontiguousarray(np.rot90(pixels, turns, axes=axes)).view(frames.dtype)


def display_turns(path: str | Path) -> int:
    """The quarter turns that show ``path``'s first video stream upright: 0 where its container
    cannot say, says nothing, or cannot be read (decoding will then say what is wrong)."""
    if Path(path).suffix.lower() not in TIMESTAMPED_CONTAINERS:
        return 0
    try:
        import av

        with av.open(str(path)) as container:
            if not container.streams.video:
                return 0
            for frame in container.decode(container.streams.best("video")):
                return quarter_turns(frame.rotation)   # the matrix rides on every decoded frame
    except Exception:  # noqa: BLE001 - any failure to read the matrix leaves the frames as they are
        return 0
    return 0
