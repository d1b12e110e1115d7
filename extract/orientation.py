"""Frames the right way up: videos whose container says to rotate them for display.

A phone films portrait video as landscape frames plus a display matrix ("rotate 90"). Players
turn the picture. decord 0.6 turns it too, through its own FFmpeg 4, but not always: a video 48
pixels high fails every frame once turned ("The size must exactly match"), and it reads the turn
only where its older FFmpeg finds one; PyAV, which writes annotated
videos and the browser's copies, does not turn at all, so those came out sideways with the labels
and skeletons of the upright frames drawn across them.

So harx turns frames itself, one way for both readers. For decord, a turned video's video stream
is first copied, packets unchanged, into a scratch file whose display matrix says "no turn" (a
remux: no decoding, a small fraction of decoding the video; ``benchmarks/RESULTS.md``), decord
decodes that as it decodes any file (same frames, same frame numbers), and the frames are turned
here with ``np.rot90``, the turn FFmpeg's players make (checked against ``ffmpeg``'s own
autorotation; where decord's turn works, its frames and these are equal to the last bit).
Reading every frame with PyAV (:mod:`extract.stream`) turns them the same way.

Only containers that can carry a display matrix are asked (MP4/MOV/3GP/M4V, Matroska/WebM); an
AVI, like every clip of KTH, UCF101 and HMDB51, costs nothing. A display matrix that also mirrors
the picture is turned, not mirrored.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["ROTATING_SUFFIXES", "copy_unturned", "display_turns", "quarter_turns", "upright"]

ROTATING_SUFFIXES = frozenset({".mp4", ".mov", ".m4v", ".3gp", ".3g2", ".mkv", ".webm"})


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
    return np.ascontiguousarray(np.rot90(frames, turns, axes=axes))


def display_turns(path: str | Path) -> int:
    """The quarter turns that show ``path``'s first video stream upright: 0 where its container
    cannot say, says nothing, or cannot be read (decoding will then say what is wrong)."""
    if Path(path).suffix.lower() not in ROTATING_SUFFIXES:
        return 0
    try:
        import av

        with av.open(str(path)) as container:
            if not container.streams.video:
                return 0
            for frame in container.decode(container.streams.video[0]):
                return quarter_turns(frame.rotation)   # the matrix rides on every decoded frame
    except Exception:  # noqa: BLE001 - any failure to read the matrix leaves the frames as they are
        return 0
    return 0


def copy_unturned(path: str | Path, scratch: Path) -> Path:
    """A copy of ``path``'s first video stream, packets unchanged, whose display matrix says "no
    turn", in ``scratch`` (same container family and suffix). The caller deletes it.

    Raises:
        OSError, av.FFmpegError: the copy cannot be written or the file cannot be read.
    """
    import av

    path = Path(path)
    fd, name = tempfile.mkstemp(prefix="harx-upright-", suffix=path.suffix.lower(), dir=scratch)
    os.close(fd)
    out_path = Path(name)
    try:
        with av.open(str(path)) as source:
            stream = source.streams.video[0]
            muxer = source.format.name.split(",")[0]        # "mov,mp4,m4a,..." -> "mov"
            with av.open(str(out_path), "w", format=muxer) as out:
                copy = out.add_stream_from_template(stream)
                copy.set_display_rotation(0)
                for packet in source.demux(stream):
                    if packet.dts is None:                   # the demuxer's empty flush packet
                        continue
                    packet.stream = copy
                    out.mux(packet)
    except BaseException:
        out_path.unlink(missing_ok=True)
        raise
    return out_path
