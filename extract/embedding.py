"""Decode videos and embed their frames, one finished video at a time: the core of stage one,
shared by ``harx extract`` and ``harx predict`` so both embed a video the same way.

Batches are formed within one video's frame stream only, so a video's embeddings do not depend
on which videos came before it (a resumed cache equals an uninterrupted one, and a predicted
video matches its cached twin); :func:`plan_batches` sizes them (even sizes on a CPU, a padded
last batch on a GPU) so that a whole data set runs in a few tensor shapes. On a GPU one batch stays queued on the device while the next is
assembled (see :meth:`~extract.backbones.Backbone.embed_async`). Frames arrive from the decoding
workers in bounded chunks and are embedded as soon as a batch is full: memory holds one video's
embeddings, never its frames.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from .backbones import CPU_BATCH_SIZE, Backbone, PendingEmbeddings
from .decode import RGB_ONLY, DecodeJob, Frames, VideoDecoder, VideoEnd, VideoInfo, VideoStart
from .pose import FEATURE_SHAPE as POSE_SHAPE
from .pose import PoseEstimator
from .streams import MAP_SUFFIX
from harx.runtime import CpuThreads

POSE = "pose"   # the image that goes to the pose estimator, not the backbone


@dataclass
class EmbeddedVideo:
    """One decoded and embedded video. ``features[stream][i]`` belongs to source frame
    ``info.union[i]``, for each stream of ``job.images`` (``rgb`` alone by default); ``info`` is
    ``None`` when the video did not open (``error`` says why)."""

    job: DecodeJob
    info: VideoInfo | None
    features: dict[str, np.ndarray] | None   # stream -> (n_decoded, embed_dim); map streams (n_decoded, C, S, S)
    error: str | None
    #: with the pose stream: each decoded frame's keypoints in the image, (n_decoded, 33, 3) x / width,
    #: y / height, visibility (NaN: no person), for drawing them
    keypoints: np.ndarray | None = None
    #: model time of each image (``rgb``, ``motion``, ``pose``): submitting its batches and
    #: collecting their results, decoding excluded (what ``stage_one_cost`` in a cache sums)
    seconds: dict = field(default_factory=dict)

    @property
    def embeddings(self) -> np.ndarray | None:
        """The first stream's features (the frames', unless the job asked for other images)."""
        return None if self.features is None else next(iter(self.features.values()))

    @property
    def n_decoded(self) -> int:
        return 0 if self.features is None else len(self.embeddings)

    @property
    def stopped_at(self) -> int | None:
        """The first sampled source frame that did not decode (a truncated file, a hang), or
        ``None`` when every one did."""
        n = self.n_decoded
        return int(self.info.union[n]) if self.info is not None and n < len(self.info.union) else None

    def range_rows(self, k: int) -> tuple[int, int, np.ndarray, np.ndarray]:
        """Range ``k`` (a sample's, or a window's) clamped to the frames that decoded: its
        ``start``, ``stop``, the sampled source frames in it that decoded, and their rows in
        ``embeddings``."""
        start, stop = self.info.ranges[k]
        if self.stopped_at is not None:
            stop = max(start, min(stop, self.stopped_at))
        frames = self.info.indices[k]
        rows = np.searchsorted(self.info.union, frames)
        keep = rows < self.n_decoded
        return start, stop, frames[keep], rows[keep]


def auto_batch_size(backbone: Backbone, batch_size: int | None) -> int:
    """Frames per forward pass, chosen by measurement (``benchmarks/extract.py --sweep``, numbers
    in ``benchmarks/RESULTS.md``): small on a CPU, where larger batches spill the caches; large on
    a GPU, which needs many frames in flight to be busy."""
    if batch_size is not None:
        return max(1, batch_size)
    return CPU_BATCH_SIZE if backbone.device.type == "cpu" else 128


# On a GPU a video's last batch is padded up to a multiple of this: cudnn.benchmark tunes its
# kernels again for every new input shape, so a batch of any size from 1 to 128 would re-tune on
# most videos of a data set; padded, there are four shapes (32, 64, 96, 128).
GPU_PAD_MULTIPLE = 32


def plan_batches(n_frames: int, batch: int, pad_multiple: int = 0) -> list[tuple[int, int]]:
    """``(frames, padded size)`` of each batch of one ``n_frames`` video.

    Without padding (a CPU) the sizes are as even as ``batch`` allows (250 frames at 8:
    26 x 8 + 6 x 7, not 31 x 8 + 2), so every video longer than ``batch * (batch - 1)`` frames
    runs in the same two shapes and none ends in a batch of 1 or 2, which costs about twice as much
    per frame (and oneDNN builds its kernels again for each new shape, most expensively with AMX).
    With ``pad_multiple`` (a GPU) batches are full and the last is padded up to a
    multiple of it (capped at ``batch``).
    """
    if n_frames <= 0:
        return []
    count = -(-n_frames // batch)
    if pad_multiple <= 0:
        small, extra = divmod(n_frames, count)
        return [(small + 1, small + 1)] * extra + [(small, small)] * (count - extra)
    last = n_frames - (count - 1) * batch
    padded = min(batch, -(-last // pad_multiple) * pad_multiple)
    return [(batch, batch)] * (count - 1) + [(last, padded)]


def auto_pad_multiple(device: torch.device, pad_multiple: int | None = None) -> int:
    """:data:`GPU_PAD_MULTIPLE` on a CUDA device, 0 (no padding) elsewhere, unless given."""
    if pad_multiple is not None:
        return max(0, pad_multiple)
    return GPU_PAD_MULTIPLE if device.type == "cuda" else 0


def pad_batch(frames: np.ndarray, size: int) -> np.ndarray:
    """``frames`` followed by copies of its last frame up to ``size``: padding from the video
    itself, so nothing of another video enters its batch."""
    if len(frames) >= size:
        return frames
    return np.concatenate([frames, np.repeat(frames[-1:], size - len(frames), axis=0)])


def auto_workers(device: torch.device, num_workers: int | None) -> int:
    """Decoding processes: one on a CPU (the backbone needs the cores), up to 8 beside a GPU."""
    if num_workers is not None:
        return max(1, num_workers)
    return 1 if device.type == "cpu" else max(1, min(8, (os.cpu_count() or 2) - 1))


def embed_videos(backbone: Backbone, jobs: Iterable[DecodeJob], *, batch_size: int | None = None,
                 num_workers: int | None = None, timeout_s: float = 30.0,
                 dtype: np.dtype = np.float32, decoder: VideoDecoder | None = None,
                 pad_multiple: int | None = None) -> Iterator[EmbeddedVideo]:
    """Yield each job's :class:`EmbeddedVideo`, in job order, as soon as it is finished.

    Each image a job asks for (``job.images``: the frame, its motion image) is embedded in its own
    batches of the same plan, so a stream's features do not depend on which others ran beside it.
    The ``pose`` image goes to a pose estimator instead (:mod:`extract.pose`), one per video.

    A video that stops decoding early (truncated, hung) keeps the frames decoded before that.
    ``decoder``: one the caller started (and closes) earlier; by default one is made here from
    ``num_workers`` and ``timeout_s``. Batches follow :func:`plan_batches`; ``pad_multiple``
    defaults to :data:`GPU_PAD_MULTIPLE` on a GPU and 0 (no padding) elsewhere.
    """
    batch = auto_batch_size(backbone, batch_size)
    pad_multiple = auto_pad_multiple(backbone.device, pad_multiple)
    jobs = list(jobs)
    if decoder is None:
        decoder = VideoDecoder(num_workers=auto_workers(backbone.device, num_workers), timeout_s=timeout_s)
        owned = decoder
    else:
        owned = contextlib.nullcontext()
    with owned, CpuThreads(enabled=backbone.device.type == "cpu") as threads, contextlib.ExitStack() as stack:
        pose = None            # the pose estimator, made when a video first asks for the pose stream
        keypoints: np.ndarray | None = None
        info: VideoInfo | None = None
        emb: dict[str, np.ndarray] | None = None
        names: list[str] = []
        pending: list[np.ndarray] = []
        pending_n = written = 0
        plan: deque[tuple[int, int]] = deque()  # this video's batches still to run

        inflight: list[tuple[str, int, int, PendingEmbeddings]] = []  # queued on the device, oldest first

        def collect(keep: int) -> None:
            while len(inflight) > keep:
                name, at, n, queued = inflight.pop(0)
                t = time.perf_counter()
                emb[name][at:at + n] = queued.result()[:n]
                if backbone.map_shape:
                    emb[name + MAP_SUFFIX][at:at + n] = queued.maps()[:n]
                seconds[name] += time.perf_counter() - t

        def flush(final: bool) -> None:
            nonlocal pending, pending_n, written
            while plan and (pending_n >= plan[0][0] or (final and pending_n)):
                frames = np.concatenate(pending) if len(pending) > 1 else pending[0]
                take, padded = plan.popleft()
                take = min(take, pending_n)  # less only where decoding stopped early
                for k, name in enumerate(names):
                    images = frames[:take] if len(names) == 1 else np.ascontiguousarray(frames[:take, ..., 3 * k:3 * k + 3])
                    t = time.perf_counter()
                    if name == POSE:     # another model, on the CPU, in frame order: done here and now
                        emb[name][written:written + take], keypoints[written:written + take] = pose.estimate(images)
                        seconds[name] += time.perf_counter() - t
                        continue
                    inflight.append((name, written, take, backbone.embed_async(pad_batch(images, padded))))
                    seconds[name] += time.perf_counter() - t
                    threads.update()
                    collect(keep=len(names))  # one batch per stream stays queued while the next is prepared
                written += take
                rest = frames[take:]
                pending, pending_n = ([rest] if len(rest) else []), len(rest)
            if final:
                collect(keep=0)

        for event in decoder.decode(jobs):
            if isinstance(event, VideoStart):
                info = event.info
                names = [image[0] for image in (event.job.images or RGB_ONLY)]
                seconds = dict.fromkeys(names, 0.0)
                emb = {name: np.empty((len(info.union), backbone.embed_dim), dtype=dtype) for name in names
                       if name != POSE}
                if backbone.map_shape:     # float16 as cached: a long video's maps are large
                    emb.update({name + MAP_SUFFIX: np.empty((len(info.union), *backbone.map_shape), np.float16)
                                for name in names if name != POSE})
                if POSE in names:
                    if pose is None:
                        pose = stack.enter_context(PoseEstimator())
                    pose.start_video()
                    emb[POSE] = np.full((len(info.union), *POSE_SHAPE), np.nan, dtype=dtype)
                    keypoints = np.full((len(info.union), POSE_SHAPE[0], 3), np.nan, dtype=np.float32)
                else:
                    keypoints = None
                pending, pending_n, written = [], 0, 0
                plan = deque(plan_batches(len(info.union), batch, pad_multiple))
            elif isinstance(event, Frames):
                pending.append(event.frames)
                pending_n += len(event.frames)
                flush(final=False)
            elif isinstance(event, VideoEnd):
                if info is not None:
                    flush(final=True)
                yield EmbeddedVideo(event.job, info,
                                    None if emb is None else {k: v[:event.n_decoded] for k, v in emb.items()},
                                    event.error, None if keypoints is None else keypoints[:event.n_decoded],
                                    dict(seconds) if emb is not None else {})
                info, emb = None, None
