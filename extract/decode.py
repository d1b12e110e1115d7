"""Decoding videos with decord so that a bad file costs a bounded time and never hangs the run.

decord's ``get_batch`` can hang forever in native code, holding the GIL, when a container
over-reports its frame count (dmlc/decord#373; KTH's ``person01_boxing_d4``). A Python timeout
cannot interrupt that, so decoding runs in worker processes that the main process kills when
they stay silent for ``timeout_s``. Frames stream back in chunks (bounded bytes), so a long or
1080p video never sits in memory whole, and a failure keeps every frame decoded before it.

Frames cross through a ring of shared-memory slots (one per worker, a memfd both processes
map): the worker decodes up to ``slots`` chunks ahead and the consumer copies a chunk out in one
memcpy and hands the slot back. Through a pipe, a 1.8 MB chunk took 2-3 ms of the consumer's
time, since the worker could only write the next part once the consumer had read the last; a
chunk larger than a slot (one frame over ``chunk_bytes``) still takes the pipe.

The counts harx trusts are the frames that decode, not ``len(VideoReader)``: each sample's
range is clamped to what was actually decoded, and the clamp is reported. After a hang, the
lost chunk is retried one frame at a time (one more deadline at most) so the clamp is exact.
Workers are recycled every ``max_jobs_per_worker`` videos against decord's memory growth on
long runs (dmlc/decord#1, #157).

Events yielded by :meth:`VideoDecoder.decode`, in job order:
    ``VideoStart(job, info)``: the video opened; ``info`` has fps, frame count, sample indices.
    ``Frames(job, pos, frames)``: ``frames`` (uint8, NHWC) are ``info.union[pos:pos+len]``; with
    several ``job.images`` (say the frame and its motion image), 3 channels per image.
    ``VideoEnd(job, n_decoded, error)``: ``n_decoded`` union frames arrived; ``error`` says why
    decoding stopped early, or is ``None``.
"""

from __future__ import annotations

import mmap
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from .motion import difference_images, partners
from .orientation import display_turns, upright
from .pyav_reader import PyAVReader
from .sampling import Sampling, sliding_windows, sliding_windows_at, video_end
from .timing import frame_times

RGB_ONLY = (("rgb", "rgb", 0, 1.0),)


@dataclass(frozen=True)
class DecodeJob:
    """One video to decode, with the frame range of each of its samples (``None`` = whole)."""

    key: int
    path: str
    ranges: tuple[tuple[int, int] | None, ...]
    sampling: Sampling
    max_short_side: int | None = None  # decode smaller than this in ffmpeg: cheaper, less memory
    windows: tuple[float, float] | None = None  # (window_s, stride_s): ranges = sliding windows,
                                                # planned once the video's fps and length are known
    images: tuple[tuple[str, str, int, float], ...] = ()  # (stream, input, gap, amp) of each image made
                                       # per frame (extract.streams.decode_images); () = the frame alone.
                                       # Frames then carry 3 channels per image, side by side.
    start_pos: int = 0                 # internal: a retry decodes only union[start_pos:stop_pos]
    stop_pos: int | None = None
    chunk_frames: int | None = None


@dataclass
class VideoInfo:
    """What the decoder learned when it opened the video."""

    fps: float
    n_reported: int                   # the container's frame count (not trusted)
    size: tuple[int, int]             # (height, width) of decoded frames
    source_size: tuple[int, int]      # (height, width) in the file
    ranges: list[tuple[int, int]]     # each sample's range, clamped to n_reported
    indices: list[np.ndarray]         # each sample's sampled source frame numbers
    union: np.ndarray                 # sorted union of all samples' indices: the decode order
    times: np.ndarray | None = None   # each frame's start (s) where the rate varies (extract.timing)
    turns: int = 0                    # quarter turns counterclockwise that showed it upright
    reader: str = "decord"            # or "pyav" (extract.pyav_reader): turned, or decord could not open it

    def decoding(self) -> dict:
        """How it was read, for summaries and ``harx predict --json``."""
        return {"decoder": self.reader, "turned_clockwise_deg": (4 - self.turns) % 4 * 90,
                "variable_frame_rate": self.times is not None}

    def seconds(self, frame: int) -> float:
        """When frame ``frame`` starts (``n_reported``: when the video ends), in seconds."""
        if self.times is not None:
            return float(self.times[frame]) if frame < len(self.times) else video_end(self.times)
        return frame / (self.fps if self.fps > 0 else 25.0)


@dataclass
class VideoStart:
    job: DecodeJob
    info: VideoInfo


@dataclass
class Frames:
    job: DecodeJob
    pos: int
    frames: np.ndarray


@dataclass
class VideoEnd:
    job: DecodeJob
    n_decoded: int
    error: str | None


# ---------------------------------------------------------------------------------------------
# worker side (runs in a spawned process: imports numpy and decord; PyAV where a file needs it)

def _open_reader(path: str, threads: int, max_short_side: int | None, pyav: bool = False):
    """A reader of ``path``, scaled down to ``max_short_side``, with the decoded and the file's
    (height, width): decord's, or PyAV's where decord cannot open the file or ``pyav`` asks
    (:mod:`extract.pyav_reader`)."""
    from decord import VideoReader, cpu

    vr, decord_err = None, None
    if not pyav:
        try:
            vr = VideoReader(path, ctx=cpu(0), num_threads=threads)
            h, w = vr[0].shape[:2]
        except Exception as err:  # noqa: BLE001 - decord's reason is kept if PyAV cannot open it either
            vr, decord_err = None, err
    if vr is None:
        try:
            vr = PyAVReader(path, num_threads=threads)
            h, w = vr[0].shape[:2]
        except Exception as pyav_err:  # noqa: BLE001
            # decord's reason, unless it only says that its FFmpeg lacks the codec
            keep = decord_err is not None and "wanted index" not in str(decord_err)
            raise (decord_err if keep else pyav_err) from None
    size = (h, w)
    if max_short_side and min(h, w) > max_short_side:
        scale = max_short_side / min(h, w)
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        if isinstance(vr, PyAVReader):
            vr.scale_to(size)                  # PyAV scales each frame as it converts it
        else:
            vr = _reopen_reader(path, threads, size, (h, w))
    return vr, size, (h, w)


def _reopen_reader(path: str, threads: int, size: tuple[int, int], source_size: tuple[int, int]):
    """A decord reader of ``path`` decoding at ``size`` (FFmpeg scales when it differs from the source)."""
    from decord import VideoReader, cpu

    if size == source_size:
        return VideoReader(path, ctx=cpu(0), num_threads=threads)
    return VideoReader(path, ctx=cpu(0), width=size[1], height=size[0], num_threads=threads)


def _resident_mb() -> float | None:
    """This process's resident memory (Linux /proc), or None where it cannot be read cheaply."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return None


class _MemoryGuard:
    """Bounds decord's read-ahead. While its caller is busy (here: blocked sending frames to a
    slower consumer), decord keeps decoding in a background thread and holds every frame it
    decodes, so a long 1080p video ends up decoded whole in memory (dmlc/decord#157, #208;
    measured: 4.4 GB for 900 frames). Past ``budget_mb`` above the resident memory after opening,
    the reader is replaced by a fresh one, which reads on from the same position (one seek; the
    frames are the same). Without /proc, it replaces the reader every ``budget_mb`` of frames."""

    def __init__(self, budget_mb: float, frame_bytes: int):
        self.budget_mb = budget_mb
        self.base = _resident_mb()
        self.frames_per_budget = max(1, int(budget_mb * 2**20 // max(1, frame_bytes)))
        self.since = 0

    def over(self, frames_read: int, min_frames: int) -> bool:
        """After sending ``frames_read`` more frames; ``min_frames`` must pass between two reopens
        (the old reader's memory is freed by its thread a little later, not at once)."""
        self.since += frames_read
        if self.since < min_frames:
            return False
        now = _resident_mb()
        if now is None or self.base is None:
            return self.since >= self.frames_per_budget
        return now - self.base > self.budget_mb

    def reset(self) -> None:
        self.since = 0


def _plan(job: DecodeJob, n_reported: int, fps: float, times: np.ndarray | None = None) -> tuple[list, list, np.ndarray]:
    ranges, indices = [], []
    if job.windows is None:
        wanted = job.ranges
    elif times is None:
        wanted = sliding_windows(n_reported, fps, *job.windows)
    else:
        wanted = sliding_windows_at(times, *job.windows)
    for r in wanted:
        start, stop = (0, n_reported) if r is None else (max(0, r[0]), min(r[1], n_reported))
        ranges.append((start, max(start, stop)))
        indices.append(job.sampling.indices(start, stop, fps) if times is None else
                       job.sampling.indices_at(start, max(start, stop), times))
    union = np.unique(np.concatenate(indices)) if indices else np.zeros(0, np.int64)
    return ranges, indices, union


def _decode_job(conn, job: DecodeJob, threads: int, chunk_bytes: int, chunk_frames: int,
                ring: "_WorkerRing | None" = None) -> None:
    # Any exception decord raises on a file is data about that file (corrupt, truncated, not a
    # video), reported back as the video's error; it must never end the worker or the run.
    if _injected_hang(job.path) == -1:
        time.sleep(1e9)  # tests only: a file whose opening hangs (see _injected_hang)
    # A turned video is read with PyAV, which leaves frames as stored; they are turned on the way
    # out (see extract.orientation). A probe only opens the file: no turn or frame times asked.
    probe = not job.ranges and job.windows is None
    turns = 0 if probe else display_turns(job.path)
    try:
        vr, coded, coded_source = _open_reader(job.path, threads, job.max_short_side, pyav=bool(turns))
        fps = float(vr.get_avg_fps() or 0.0)
        n_reported = len(vr)
    except Exception as err:  # noqa: BLE001 - see above
        conn.send(("error", job.start_pos, f"cannot open video: {_short(err)}"))
        conn.send(("done", job.start_pos))
        return
    shown = (lambda hw: hw[::-1]) if turns % 2 else (lambda hw: hw)
    times = None if probe else frame_times(vr, job.path)
    if times is not None:             # the stated rate says little: the frames' own average
        fps = (n_reported - 1) / float(times[-1])
    try:
        ranges, indices, union = _plan(job, n_reported, fps, times)
    except Exception as err:  # noqa: BLE001 - see above
        conn.send(("error", job.start_pos, f"cannot plan the frames to read: {_short(err)}"))
        conn.send(("done", job.start_pos))
        return
    reader = "pyav" if isinstance(vr, PyAVReader) else "decord"
    conn.send(("meta", VideoInfo(fps, n_reported, shown(coded), shown(coded_source), ranges, indices, union, times,
                                 turns, reader)))

    def send(pos: int, frames: np.ndarray) -> None:
        frames = upright(frames, turns)
        if ring is None or not ring.put(conn, pos, frames):
            _send_frames(conn, pos, frames)

    images = job.images or RGB_ONLY
    per_frame = max(1, coded[0] * coded[1] * 3 * len(images))
    step = job.chunk_frames or max(1, min(chunk_frames, chunk_bytes // per_frame))
    recent: dict[int, np.ndarray] = {}   # the last frames read: the next chunk's motion partners
    pos, stop = job.start_pos, len(union) if job.stop_pos is None else min(job.stop_pos, len(union))
    hang_at = _injected_hang(job.path)
    guard = _MemoryGuard(_DECODE_BUDGET_MB, per_frame)
    while pos < stop:
        chunk = union[pos:min(stop, pos + step)]
        if hang_at is not None and chunk[-1] >= hang_at:
            time.sleep(1e9)  # simulate decord#373 (tests only): never returns, like the real hang
        try:
            frames = _read_images(vr, chunk, images, n_reported, recent)
        except Exception as err:  # noqa: BLE001 - see above
            # A truncated file fails the whole chunk; keep the frames before the bad one.
            frames, failed_at = _frame_by_frame(vr, chunk, images, n_reported, recent)
            if failed_at is not None:
                if len(frames):
                    send(pos, frames)
                    pos += len(frames)
                conn.send(("error", pos, f"decoding stopped at frame {failed_at}: {_short(err)}"))
                break
        if len(frames) != len(chunk):
            conn.send(("error", pos, f"decoder returned {len(frames)} frames for {len(chunk)} requested"))
            break
        send(pos, frames)
        pos += len(chunk)
        # (PyAV decodes only when asked: no read-ahead to bound, and a reopen would read the
        # whole file again for its index)
        if pos < stop and not isinstance(vr, PyAVReader) and guard.over(len(chunk), min_frames=2 * step):
            del frames, vr
            recent.clear()
            try:
                vr = _reopen_reader(job.path, threads, coded, coded_source)
            except Exception as err:  # noqa: BLE001 - see above
                conn.send(("error", pos, f"cannot reopen the video at frame {int(union[pos])}: {_short(err)}"))
                break
            guard.reset()
    conn.send(("done", pos))


def _read_images(vr, chunk: np.ndarray, images, n_reported: int, recent: dict[int, np.ndarray]) -> np.ndarray:
    """The images of source frames ``chunk``: ``(len(chunk), H, W, 3 * len(images))`` uint8.

    A motion image needs its partner frame (:func:`extract.motion.partners`), decoded with the
    chunk in one sorted request; the partners the next chunk will need from this one are kept in
    ``recent``, so that reading goes on forwards (a seek back costs a keyframe's worth of decoding
    in a compressed video)."""
    if images == RGB_ONLY:
        return vr.get_batch(chunk.tolist()).asnumpy()
    pairs = {gap: partners(chunk, gap, n_reported) for _, kind, gap, _ in images if kind == "motion"}
    wanted = np.unique(np.concatenate([chunk, *pairs.values()]))
    fresh = [int(i) for i in wanted if int(i) not in recent]
    got = dict(recent)
    if fresh:
        got.update(zip(fresh, vr.get_batch(fresh).asnumpy()))

    def at(indices: np.ndarray) -> np.ndarray:
        return np.stack([got[int(i)] for i in indices])

    frames = at(chunk)
    out = [frames if kind == "rgb" else difference_images(frames, at(pairs[gap]), amp)
           for _, kind, gap, amp in images]
    keep = max(pairs, default=0)      # the next frames' partners are among the last `keep` frames read
    latest = sorted(got)[len(got) - keep:] if keep else []
    recent.clear()
    recent.update({i: got[i] for i in latest})
    return out[0] if len(out) == 1 else np.concatenate(out, axis=-1)


def _frame_by_frame(vr, chunk: np.ndarray, images=RGB_ONLY, n_reported: int = 0,
                    recent: dict | None = None) -> tuple[np.ndarray, int | None]:
    """The frames of a failed chunk that decode one at a time, up to the first that does not,
    and that frame's number (``None`` when all do). On a truncated MJPEG AVI, a 31-frame chunk
    fails as a whole while its first 10 frames decode singly: without this the video kept none."""
    frames = []
    recent = {} if recent is None else recent
    for index in chunk.tolist():
        try:
            frames.append(_read_images(vr, np.array([index]), images, n_reported, recent)[0])
        except Exception:  # noqa: BLE001 - the caller reports the chunk's error
            return (np.stack(frames) if frames else np.zeros((0,), np.uint8)), index
    return np.stack(frames), None


# Resident memory a worker may gain over what it had after opening a video; see _MemoryGuard.
_DECODE_BUDGET_MB = float(os.environ.get("HARX_DECODE_BUDGET_MB", "512"))


def _injected_hang(path: str) -> int | None:
    """Fault injection for tests: ``HARX_FAULT_HANG="name:frame"`` makes the worker hang, as decord
    does on an over-reported frame count, when asked for frame >= ``frame`` of a file whose path
    contains ``name``. The real hang cannot be produced on demand, but the deadline must be tested.
    ``"name:open"`` (returned as -1) hangs while opening the file, as a probe would meet it."""
    spec = os.environ.get("HARX_FAULT_HANG", "")
    name, _, frame = spec.rpartition(":")
    if name and name in path and frame == "open":
        return -1
    return int(frame) if name and name in path and frame.isdigit() else None


def _short(err: BaseException) -> str:
    text = " ".join(str(err).split())
    # decord prefixes messages with a timestamp and a source location ("[12:00:00] x.cc:486: ")
    if "] " in text and text.startswith("["):
        text = text.split("] ", 2)[-1]
    text = re.sub(r"^\S+\.(?:cc|cpp|h):\d+:\s*(?:Error:\s*)?", "", text)
    return (text[:200] + "...") if len(text) > 200 else (text or type(err).__name__)


def _widen_pipe(fd: int) -> None:
    """Grow a pipe from 64 KiB to up to 1 MiB (Linux), so a chunk of frames crosses in a few
    writes instead of dozens, each waiting for the other process to be scheduled."""
    try:
        import fcntl

        with open("/proc/sys/fs/pipe-max-size") as fh:
            limit = int(fh.read())
        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), min(limit, 1 << 20))
    except (OSError, ValueError, ImportError):
        pass  # not Linux, or not allowed: the default pipe works, a little slower


def _send_frames(conn: Connection, pos: int, frames: np.ndarray) -> None:
    """A chunk as a small header, then its raw pixels: no pickling, and the reader receives them
    straight into their array (one copy fewer on each side; pickled, a 32-frame KTH chunk took
    5-7 ms of the consumer's time, 3 % of an extraction run)."""
    frames = np.ascontiguousarray(frames, dtype=np.uint8)
    conn.send(("frames", pos, frames.shape))
    conn.send_bytes(frames.reshape(-1))


class _WorkerRing:
    """The worker's side of the frame ring: ``slots`` slots of ``slot_bytes`` in a shared file;
    a slot is taken by reading its number from ``free_fd`` (blocking while the consumer holds
    them all) and announced with a ``("slot", pos, shape, slot)`` message."""

    def __init__(self, fd: int, free_fd: int, slot_bytes: int, slots: int):
        self.buffer = mmap.mmap(fd, slot_bytes * slots)
        os.close(fd)
        self.free_fd, self.slot_bytes = free_fd, slot_bytes

    def put(self, conn: Connection, pos: int, frames: np.ndarray) -> bool:
        """Write ``frames`` into a free slot and announce it; ``False`` if they do not fit one."""
        if frames.nbytes > self.slot_bytes:
            return False
        token = os.read(self.free_fd, 1)
        if not token:
            raise SystemExit(0)  # the consumer is gone (closed or killed): nothing to decode for
        slot = token[0]
        view = np.frombuffer(self.buffer, np.uint8, frames.nbytes, slot * self.slot_bytes)
        view[:] = frames.reshape(-1)
        conn.send(("slot", pos, frames.shape, slot))
        return True


def _worker_main(conn_in: Connection, conn_out: Connection, threads: int, chunk_bytes: int,
                 chunk_frames: int, ring: _WorkerRing | None = None) -> None:
    while True:
        try:
            job = conn_in.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        _decode_job(conn_out, job, threads, chunk_bytes, chunk_frames, ring)


# ---------------------------------------------------------------------------------------------
# main side

class _Ring:
    """The consumer's side of a worker's frame ring (see the module docstring): ``slots`` slots
    of ``slot_bytes`` in an anonymous shared file (a memfd on Linux, an unlinked temporary file
    elsewhere), and the pipe that hands slots back to the worker."""

    def __init__(self, slot_bytes: int, slots: int):
        try:
            if hasattr(os, "memfd_create"):
                self.fd = os.memfd_create("harx-frames", 0)
            else:
                with tempfile.TemporaryFile() as handle:  # unlinked already; our copy of the fd keeps it
                    self.fd = os.dup(handle.fileno())
            os.ftruncate(self.fd, slot_bytes * slots)
            self.buffer = mmap.mmap(self.fd, slot_bytes * slots)
        except OSError:
            self.close()
            raise
        self.slot_bytes = slot_bytes
        self.free_r, self.free_w = os.pipe()
        os.write(self.free_w, bytes(range(slots)))  # every slot starts free

    def take(self, shape: tuple, slot: int) -> np.ndarray:
        """A copy of the frames in ``slot``; the slot goes back to the worker at once."""
        frames = np.frombuffer(self.buffer, np.uint8, int(np.prod(shape)), slot * self.slot_bytes)
        frames = frames.reshape(shape).copy()
        os.write(self.free_w, bytes([slot]))
        return frames

    def worker_fds(self) -> tuple[int, int]:
        return self.fd, self.free_r

    def close_worker_side(self) -> None:
        """After the worker started: it holds its own copies of the shared file and the pipe's read end."""
        for name in ("fd", "free_r"):
            fd = getattr(self, name, None)
            if fd is not None:
                os.close(fd)
                setattr(self, name, None)

    def close(self) -> None:
        self.close_worker_side()
        if getattr(self, "free_w", None) is not None:
            os.close(self.free_w)
            self.free_w = None
        if getattr(self, "buffer", None) is not None:
            self.buffer.close()
            self.buffer = None


@dataclass
class _Worker:
    process: subprocess.Popen
    to_worker: Connection
    from_worker: Connection
    ring: _Ring | None = None
    pending: deque = field(default_factory=deque)  # jobs sent and not yet fully read
    started: int = 0

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
        self.to_worker.close()
        self.from_worker.close()
        if self.ring is not None:
            self.ring.close()


class VideoDecoder:
    """A pool of decoding processes with a deadline; results come back in job order.

    Args:
        num_workers: decoding processes (they run ahead of the consumer by ``prefetch`` videos).
        timeout_s: a worker silent for this long is killed; the video keeps what it delivered.
        threads: decord threads per worker (0 = decord's choice).
        chunk_bytes / chunk_frames: the largest chunk of frames sent at once.
        ring_slots: shared-memory slots per worker, each ``chunk_bytes`` of address space (touched
            only as far as chunks fill them); 0 sends every chunk through the pipe.
    """

    def __init__(self, num_workers: int = 1, timeout_s: float = 30.0, threads: int = 1,
                 chunk_bytes: int = 32 << 20, chunk_frames: int = 32, prefetch: int = 2,
                 max_jobs_per_worker: int = 200, ring_slots: int = 3):
        self.num_workers = max(1, num_workers)
        self.timeout_s = timeout_s
        self.threads = threads
        self.chunk_bytes = chunk_bytes
        self.chunk_frames = chunk_frames
        self.prefetch = max(1, prefetch)
        self.max_jobs_per_worker = max_jobs_per_worker
        self.ring_slots = max(0, min(255, ring_slots))
        self._workers: list[_Worker | None] = [None] * self.num_workers

    def __enter__(self) -> "VideoDecoder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for i, w in enumerate(self._workers):
            if w is not None:
                try:
                    w.to_worker.send(None)
                    w.process.wait(timeout=1.0)
                except (OSError, subprocess.TimeoutExpired):
                    pass
                w.kill()
                self._workers[i] = None

    def _start(self, i: int) -> _Worker:
        """A fresh worker: a new interpreter (not a fork of this torch-holding process, and not
        multiprocessing's spawn, which re-imports the caller's main script), talking over pipes."""
        down_r, down_w = os.pipe()
        up_r, up_w = os.pipe()
        _widen_pipe(up_w)
        root = str(Path(__file__).resolve().parents[1])
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
                   HARX_DECODE_PARENT=str(os.getpid()))
        ring = None
        if self.ring_slots:
            try:
                ring = _Ring(self.chunk_bytes, self.ring_slots)
            except OSError:
                ring = None  # no shared memory here: every chunk takes the pipe
        ring_fds = ring.worker_fds() if ring is not None else ()
        args = [sys.executable, "-m", "harx.extract.decode", str(down_r), str(up_w), str(self.threads),
                str(self.chunk_bytes), str(self.chunk_frames)]
        if ring is not None:
            args += [*map(str, ring_fds), str(self.ring_slots)]
        # ffmpeg's own complaints about a bad file go nowhere (the error reaches the summary);
        # HARX_DEBUG=1 lets them through.
        quiet = None if os.environ.get("HARX_DEBUG") else subprocess.DEVNULL
        try:
            process = subprocess.Popen(args, pass_fds=(down_r, up_w, *ring_fds),
                                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=quiet, env=env)
        except OSError:
            if ring is not None:
                ring.close()
            raise
        finally:
            os.close(down_r)
            os.close(up_w)
        if ring is not None:
            ring.close_worker_side()
        w = _Worker(process, Connection(down_w, readable=False), Connection(up_r, writable=False), ring)
        self._workers[i] = w
        return w

    def start(self) -> "VideoDecoder":
        """Start every worker now rather than at the first job, so that their interpreters start
        while the caller does something else (builds the model: 0.5 s less wait per run)."""
        for i, w in enumerate(self._workers):
            if w is None:
                self._start(i)
        return self

    def _send(self, i: int, job: DecodeJob) -> None:
        w = self._workers[i] or self._start(i)
        w.to_worker.send(job)
        w.pending.append(job)
        w.started += 1

    def _replace(self, i: int, keep_current: bool, retry: DecodeJob | None = None) -> None:
        """Kill worker ``i`` and start a fresh one that gets ``retry`` (if any), then every queued job.

        ``keep_current``: ``pending[0]`` is the job being read now; it stays first in the queue
        (it is popped when fully read) but is not sent again.
        """
        old = self._workers[i]
        pending = list(old.pending)
        old.kill()
        self._workers[i] = None
        w = self._start(i)
        if keep_current and pending:
            w.pending.append(pending.pop(0))
        if retry is not None:
            w.to_worker.send(retry)
        for job in pending:
            self._send(i, job)

    def _recv(self, i: int):
        """The worker's next message (a ``frames`` one with its pixels read in), ``None`` past
        the deadline, ``("crash",)`` when the worker is gone."""
        w = self._workers[i]
        if not w.from_worker.poll(self.timeout_s):
            return None
        try:
            msg = w.from_worker.recv()
            if msg[0] == "slot":
                return ("frames", msg[1], w.ring.take(msg[2], msg[3]))
            if msg[0] != "frames":
                return msg
            frames = np.empty(msg[2], dtype=np.uint8)
            if not w.from_worker.poll(self.timeout_s):
                return None
            w.from_worker.recv_bytes_into(frames.reshape(-1))
            return ("frames", msg[1], frames)
        except (EOFError, OSError):
            return ("crash",)

    def decode(self, jobs: Iterable[DecodeJob]) -> Iterator[VideoStart | Frames | VideoEnd]:
        jobs = list(jobs)
        sent = 0
        for k, job in enumerate(jobs):
            while sent < len(jobs) and sent < k + self.num_workers * self.prefetch:
                self._send(sent % self.num_workers, jobs[sent])
                sent += 1
            i = k % self.num_workers
            yield from self._read_job(i, job)
            w = self._workers[i]
            w.pending.popleft()
            if w.started >= self.max_jobs_per_worker:
                self._replace(i, keep_current=False)  # recycle against decord's memory growth

    def _read_job(self, i: int, job: DecodeJob) -> Iterator[VideoStart | Frames | VideoEnd]:
        info: VideoInfo | None = None
        pos, error = 0, None
        while True:
            msg = self._recv(i)
            if msg is None or msg[0] == "crash":
                what = (f"decoder hung for more than {self.timeout_s:g} s" if msg is None
                        else "decoder process crashed")
                retry = None
                if info is not None and pos < len(info.union):
                    retry = replace(job, start_pos=pos, stop_pos=pos + self.chunk_frames, chunk_frames=1)
                self._replace(i, keep_current=True, retry=retry)
                if retry is not None:
                    for event in self._read_retry(i, job):
                        yield event
                        pos = event.pos + len(event.frames)
                at = f" at frame {int(info.union[pos])}" if info is not None and pos < len(info.union) else ""
                error = f"{what}{at}; kept the {pos} frame(s) decoded before it"
                break
            kind = msg[0]
            if kind == "meta":
                info = msg[1]
                yield VideoStart(job, info)
            elif kind == "frames":
                _, at, frames = msg
                yield Frames(job, at, frames)
                pos = at + len(frames)
            elif kind == "error":
                error = msg[2]
            elif kind == "done":
                break
        yield VideoEnd(job, pos, error)

    def _read_retry(self, i: int, job: DecodeJob) -> Iterator[Frames]:
        """Frames of a frame-by-frame retry, up to its first failure (one more deadline at most)."""
        while True:
            msg = self._recv(i)
            if msg is None or msg[0] == "crash":
                self._replace(i, keep_current=True)
                return
            if msg[0] == "frames":
                yield Frames(job, msg[1], msg[2])
            elif msg[0] == "done":
                return


def _exit_with_parent(parent_pid: int, interval_s: float = 0.5) -> None:
    """End this worker when the process that started it is gone.

    After ``kill -9`` of harx, a worker stuck in a hung decord call (or waiting on a pipe nobody
    reads) would otherwise live on, orphaned, for ever. A daemon thread compares the parent's pid
    every ``interval_s`` (decord's calls release the GIL, so it runs even while the main thread
    hangs); a parent that died before this started is caught by the first comparison.
    """
    import threading

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(interval_s)
        os._exit(0)

    threading.Thread(target=watch, name="harx-parent-watch", daemon=True).start()


if __name__ == "__main__":  # a decoding worker started by VideoDecoder._start
    # Run the imported module's function so pickled classes are named extract.decode.*, not __main__.*
    from harx.extract.decode import _worker_main as worker_main, _WorkerRing as WorkerRing

    if os.environ.get("HARX_DECODE_PARENT", "").isdigit():
        _exit_with_parent(int(os.environ["HARX_DECODE_PARENT"]))
    # down_fd up_fd threads chunk_bytes chunk_frames [ring_fd free_fd slots]
    numbers = [int(a) for a in sys.argv[1:]]
    shared = WorkerRing(numbers[5], numbers[6], numbers[3], numbers[7]) if len(numbers) == 8 else None
    worker_main(Connection(numbers[0], writable=False), Connection(numbers[1], readable=False),
                *numbers[2:5], shared)
