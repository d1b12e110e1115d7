"""Random access to frames through PyAV, for videos decord cannot open (AV1 above all).

decord 0.6 wheels carry FFmpeg 4, which has no AV1 decoder: every AV1 file (what YouTube serves
first to downloaders, what newer phones and screen recorders write) failed with "cannot find video
stream with wanted index: -1". PyAV's FFmpeg decodes it (libdav1d). The decoding workers open a
file with decord first and, where decord cannot open it, with :class:`PyAVReader`; videos with a
display turn always with it (:mod:`extract.orientation`). It offers the part of decord's
``VideoReader`` they use: ``len``, ``get_avg_fps``, ``get_frame_timestamp``, ``vr[i]`` and
``get_batch(indices).asnumpy()``, at the file's size or a given one.

Frame ``i`` is the ``i``-th frame in presentation order, as in decord: the reader demuxes the file
once on opening (no decoding), leaves out packets an edit list discards (a trimmed MP4's lead-in,
never shown), and sorts the packets' timestamps, so a frame found after a seek knows its number.
Reading forwards decodes on; a step back, or far ahead, seeks to the keyframe shown at or before
the frame wanted, and where that lands past it (an open GOP, whose frames shown just before a
keyframe are decoded after it; MPEG-TS, which seeks by byte position) tries the keyframes before,
then the start. Where timestamps are missing or repeat, frames are counted as they come and a step
back decodes from the start. Frames come out as the file stores them; turning them upright is
:mod:`extract.orientation`'s job, as for decord.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator

import numpy as np

__all__ = ["PyAVReader", "open_video"]

_SEEK_AHEAD = 250   # frames: further ahead than this, seeking beats decoding every frame between
_KEYFRAMES_BACK = 3  # keyframes tried before the one at the frame wanted, then the start


def open_video(path: str, threads: int = 0):
    """``(container, stream)``: ``path`` opened with PyAV, at the video stream FFmpeg ranks best
    (as decord takes it: never a cover picture stored first), decoded with ``threads`` threads
    (0: FFmpeg's choice).

    Raises:
        av.FFmpegError, OSError: the file does not open. ValueError: it has no video stream.
    """
    import av

    container = av.open(str(path))
    if not container.streams.video:
        container.close()
        raise ValueError("no video stream")
    stream = container.streams.best("video")
    stream.thread_type = "AUTO"
    if threads:
        stream.thread_count = threads
    return container, stream


class _Batch:
    def __init__(self, frames: np.ndarray):
        self._frames = frames

    def asnumpy(self) -> np.ndarray:
        return self._frames


class PyAVReader:
    """``PyAVReader(path, width=-1, height=-1, num_threads=0)``: decord's ``VideoReader`` arguments.

    Raises:
        av.FFmpegError, OSError, ValueError: the file does not open, has no video stream, or no
            frame decodes.
    """

    def __init__(self, path: str, width: int = -1, height: int = -1, num_threads: int = 0):
        import av

        self._path, self._threads = str(path), num_threads
        self._container, self._stream = open_video(self._path, num_threads)
        ctx = self._stream.codec_context
        self._size = (int(width) if width > 0 else int(ctx.width), int(height) if height > 0 else int(ctx.height))
        packets = []                   # (pts, keyframe) of every frame the decoder will show
        try:
            for packet in self._container.demux(self._stream):
                if packet.dts is None and packet.pts is None:   # the demuxer's flush packet
                    continue
                if packet.is_discard:      # before a trimmed file's edit-list start: never shown
                    continue
                packets.append((packet.pts, packet.is_keyframe))
        except av.FFmpegError:
            pass                       # a damaged or cut file: the frames up to the damage count
        pts = [p for p, _ in packets]
        # Numbering frames by timestamp needs one distinct timestamp per frame; otherwise frames
        # are counted as they come, and a step back decodes from the start again.
        self._seekable = bool(pts) and None not in pts and len(set(pts)) == len(pts)
        self._pts = sorted(pts) if self._seekable else []
        self._keys = sorted(p for p, key in packets if key) if self._seekable else []
        self._index_of = {p: i for i, p in enumerate(self._pts)}
        self._count = len(pts)
        rate = self._stream.average_rate or self._stream.guessed_rate
        self._fps = float(rate) if rate else 0.0
        self._frames: Iterator            # frames in presentation order, from where the decoder is
        self._next: int                   # the number of the frame it gives next (-1: unknown)
        self._restart()
        if self._count == 0:
            raise ValueError("no video frames")

    # -- decord's interface --------------------------------------------------------------------
    def __len__(self) -> int:
        return self._count

    def get_avg_fps(self) -> float:
        return self._fps

    def __getitem__(self, index: int) -> np.ndarray:
        return self.get_batch([index]).asnumpy()[0]

    def get_batch(self, indices) -> _Batch:
        indices = [int(i) for i in indices]
        got: dict[int, np.ndarray] = {}
        for index in sorted(set(indices)):
            if not 0 <= index < self._count:
                raise IndexError(f"frame {index} out of range (0..{self._count - 1})")
            got[index] = self._frame(index)
        width, height = self._size
        out = np.empty((len(indices), height, width, 3), np.uint8)
        for k, index in enumerate(indices):
            out[k] = got[index]
        return _Batch(out)

    def get_frame_timestamp(self, indices) -> np.ndarray:
        """``(len(indices), 2)``: each frame's start and end in seconds, as decord gives them."""
        if not self._seekable:
            raise ValueError("the frames carry no distinct timestamps")
        base = float(self._stream.time_base)
        starts = (np.asarray(self._pts, dtype=np.float64) - self._pts[0]) * base
        step = float(np.median(np.diff(starts))) if len(starts) > 1 else (1 / self._fps if self._fps else 0.0)
        ends = np.append(starts[1:], starts[-1] + step)
        indices = np.asarray(indices, dtype=np.int64)
        return np.stack([starts[indices], ends[indices]], axis=1)

    def scale_to(self, size: tuple[int, int]) -> None:
        """Give frames at ``size`` (height, width) from now on."""
        self._size = (int(size[1]), int(size[0]))

    # -- inside --------------------------------------------------------------------------------
    def _frame(self, index: int) -> np.ndarray:
        """Frame ``index``: decoding on, or from a keyframe before it, or from the start."""
        behind, far = index < self._next, index - self._next > _SEEK_AHEAD
        if self._seekable and (behind or far or self._next < 0):
            # Seek to the last keyframe shown at or before the frame. In an open GOP the frames
            # shown just before a keyframe are decoded after it, from the GOP before, and a seek
            # by timestamp can land past them: then one keyframe earlier, and so on.
            k = bisect.bisect_right(self._keys, self._pts[index]) - 1
            for key in reversed(self._keys[max(0, k - _KEYFRAMES_BACK):k + 1]):
                self._container.seek(int(key), stream=self._stream, backward=True, any_frame=False)
                self._frames, self._next = self._container.decode(self._stream), -1
                frame, overshot = self._decode_up_to(index)
                if frame is not None:
                    return frame
                if not overshot:
                    break
            self._restart()
        elif behind:
            self._restart()
        frame, _ = self._decode_up_to(index)
        if frame is None:
            raise ValueError(f"frame {index} does not decode")
        return frame

    def _restart(self) -> None:
        """Decode from the first frame again: the file opened anew (a seek to the start is not to
        be trusted without timestamps, and the index was read to the end)."""
        self._container.close()
        self._container, self._stream = open_video(self._path, self._threads)
        self._frames, self._next = self._container.decode(self._stream), 0

    def _decode_up_to(self, index: int) -> tuple[np.ndarray | None, bool]:
        """``(frame index, False)``, or ``(None, overshot)``: a later frame came first (a seek
        that landed past it), or the frames ran out (a damaged file)."""
        for frame in self._frames:
            number = self._index_of.get(frame.pts) if self._seekable else None
            if number is None:
                if self._next < 0:               # after a seek, a frame without a known timestamp
                    continue
                number = self._next
            self._next = number + 1
            if number == index:
                width, height = self._size
                return frame.to_ndarray(width=width, height=height, format="rgb24"), False
            if number > index:
                return None, True
        return None, False

    def close(self) -> None:
        self._container.close()

    def __del__(self) -> None:
        try:
            self._container.close()
        except Exception:  # noqa: BLE001 - closing at interpreter exit
            pass
