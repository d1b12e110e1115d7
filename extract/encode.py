"""Writing H.264 MP4 files (PyAV/libx264): the demo data set, and videos written back by
``harx predict --annotate``.

The file is written under a temporary name beside ``path`` and renamed when complete, so an
interrupted write never leaves a half file under the final name. Even frame sizes are coded as
yuv420p (High profile: plays in every player and browser); H.264 4:2:0 cannot code an odd width
or height, so odd sizes are coded as yuv444p (High 4:4:4, which ffmpeg-based players such as VLC
and mpv play, but some hardware players do not) rather than changing the frame size.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import numpy as np

CODEC = "libx264"


def frame_rate(fps: float | Fraction | None) -> Fraction:
    """A container-friendly rational rate: 29.97002997 -> 30000/1001, 25.0 -> 25; unknown -> 25."""
    if not fps or fps <= 0:
        return Fraction(25)
    return Fraction(fps).limit_denominator(1001)


def pixel_format(width: int, height: int) -> str:
    return "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"


def write_h264(path: str | Path, frames: Iterable[np.ndarray], size: tuple[int, int], fps: float | Fraction, *,
               crf: int = 23, preset: str = "veryfast", threads: int | None = None) -> int:
    """Encode RGB uint8 ``(height, width, 3)`` frames of ``size`` = ``(width, height)`` into an MP4
    at ``path``; returns the number of frames written. Frames are consumed one at a time."""
    import av

    path = Path(path)
    width, height = size
    rate = frame_rate(fps)
    fmt = pixel_format(width, height)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.partial{path.suffix or '.mp4'}")
    options = {"preset": preset, "crf": str(crf)}
    if threads is not None:
        options["threads"] = str(threads)
    count = 0
    try:
        with av.open(str(tmp), "w", format="mp4", options={"movflags": "+faststart"}) as container:
            stream = container.add_stream(CODEC, rate=rate, options=options)
            stream.width, stream.height = width, height
            stream.pix_fmt = fmt
            for count, rgb in enumerate(frames, start=1):
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24").reformat(format=fmt)
                frame.pts, frame.time_base = count - 1, 1 / rate
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return count
