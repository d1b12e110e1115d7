"""Tiny real videos for tests, written with PyAV's encoders (no fixtures on disk).

``write_video`` makes deterministic content from a seed: a seeded background, a square that
moves with the frame index (so consecutive frames differ), and the frame index stamped as
black/white blocks along the top edge. The stamp survives lossy coding, so decoding tests can
ask :func:`read_frame_index` which frame a decoder actually returned (seek accuracy, dropped or
duplicated frames).
"""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

# codec -> (pixel format it encodes, container options)
CODECS = {
    "libx264": ("yuv420p", {"preset": "ultrafast", "crf": "18"}),
    "mpeg4": ("yuv420p", {"qscale": "3"}),
    "mjpeg": ("yuvj420p", {"qscale": "3"}),
    "libsvtav1": ("yuv420p", {"preset": "11", "crf": "20"}),   # AV1: decord cannot open it
    "libvpx-vp9": ("yuv420p", {"deadline": "realtime", "cpu-used": "8", "crf": "20", "b": "0"}),
}
STAMP_HEIGHT = 8
PATTERNS = ("square", "noise", "static")


def stamp_bits(n_frames: int) -> int:
    """Index bits a video of ``n_frames`` needs in its stamp (at least 8, so 256 frames)."""
    return max(8, int(n_frames - 1).bit_length())


def stamp_index(image: np.ndarray, index: int, bits: int) -> None:
    """Write ``index`` in binary as ``bits`` black/white blocks across the top rows."""
    width = image.shape[1]
    block = width // bits
    if block < 4:
        raise ValueError(f"a {width}-pixel-wide frame cannot hold {bits} stamp bits; use a wider "
                         "frame or stamp=False")
    for bit in range(bits):
        on = (index >> (bits - 1 - bit)) & 1
        image[:STAMP_HEIGHT, bit * block:(bit + 1) * block] = 255 if on else 0


def read_frame_index(frame: np.ndarray, bits: int) -> int:
    """The index :func:`stamp_index` wrote into a decoded frame (HxWx3 or HxW uint8)."""
    gray = frame if frame.ndim == 2 else frame.mean(axis=2)
    block = gray.shape[1] // bits
    value = 0
    for bit in range(bits):
        cell = gray[2:STAMP_HEIGHT - 2, bit * block + 1:(bit + 1) * block - 1]
        value = (value << 1) | int(cell.mean() > 128)
    return value


def make_frames(n_frames: int, size: tuple[int, int] = (64, 48), *, seed: int = 0,
                pattern: str = "square", stamp: bool = True) -> list[np.ndarray]:
    """The RGB frames :func:`write_video` encodes (useful to compare with what decodes)."""
    if pattern not in PATTERNS:
        raise ValueError(f"unknown pattern {pattern!r}; choose one of {', '.join(PATTERNS)}")
    width, height = size
    rng = np.random.default_rng(seed)
    background = rng.integers(40, 200, (height, width, 3)).astype(np.uint8)
    colour = rng.integers(0, 256, 3).astype(np.uint8)
    side = max(4, min(width, height) // 4)
    bits = stamp_bits(n_frames)
    frames = []
    for i in range(n_frames):
        if pattern == "noise":
            image = rng.integers(0, 256, (height, width, 3)).astype(np.uint8)
        else:
            image = background.copy()
        if pattern != "static":
            x = (3 * i) % max(1, width - side)
            y = STAMP_HEIGHT + (2 * i) % max(1, height - side - STAMP_HEIGHT)
            image[y:y + side, x:x + side] = colour
        if stamp:
            stamp_index(image, i, bits)
        frames.append(image)
    return frames


def write_frames(path: str | Path, frames: Iterable[np.ndarray], *, fps: float = 25,
                 codec: str = "libx264", rotation: int = 0, times_ms: list[int] | None = None) -> Path:
    """Encode RGB uint8 frames (all one even size) to ``path``; the container follows its suffix.
    ``rotation``: a display matrix telling players to turn the picture that many degrees
    counterclockwise (a phone's portrait video is landscape frames and -90). ``times_ms``: each
    frame's time in milliseconds, for a variable frame rate (``fps`` is then only the stated one)."""
    path = Path(path)
    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}; choose one of {', '.join(CODECS)}")
    pix_fmt, options = CODECS[codec]
    rate = Fraction(fps).limit_denominator(1001)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate, options=dict(options))
        stream.pix_fmt = pix_fmt
        for i, rgb in enumerate(frames):
            if i == 0:
                stream.height, stream.width = rgb.shape[:2]
                if rotation:
                    stream.set_display_rotation(rotation)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame = frame.reformat(format=pix_fmt)
            if times_ms is None:
                frame.pts, frame.time_base = i, 1 / rate
            else:
                if i == 0:
                    stream.codec_context.time_base = Fraction(1, 1000)
                frame.pts, frame.time_base = times_ms[i], Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def write_video(path: str | Path, n_frames: int = 12, size: tuple[int, int] = (64, 48), *,
                fps: float = 25, codec: str = "libx264", pattern: str = "square", seed: int = 0,
                stamp: bool = True, rotation: int = 0) -> Path:
    """Write a real encoded video of ``n_frames`` frames of ``size`` (W, H), both even.

    Patterns: ``square`` (moving square on a seeded background), ``noise`` (fresh noise every
    frame, expensive to code), ``static`` (background only; with the stamp, frames still differ).
    """
    width, height = size
    if width % 2 or height % 2:
        raise ValueError(f"size must be even for 4:2:0 codecs; got {width}x{height}")
    frames = make_frames(n_frames, size, seed=seed, pattern=pattern, stamp=stamp)
    return write_frames(path, frames, fps=fps, codec=codec, rotation=rotation)


__all__ = ["CODECS", "PATTERNS", "make_frames", "read_frame_index", "stamp_bits", "write_frames",
           "write_video"]
