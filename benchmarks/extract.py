"""How fast `harx extract` runs on this machine, next to its parts and next to the tutorial loop.

    python benchmarks/extract.py [--videos N] [--backbone NAME] [--weights W] [--device D]
                                 [--precision P] [--batch-size B] [--folder DIR] [--sweep]

Run by hand (not in CI). It writes N KTH-like clips (160x120, 25 fps, MPEG-4 in AVI, 100..400
frames, a figure moving over a static textured background with sensor noise) into a temporary
folder, adds the videos under ``--folder`` if given, and measures on those same clips:

1. decode: harx's ``VideoDecoder`` (worker processes, the pipeline's sampling, job options and
   worker count; worker start-up counted), and raw in-process decord ``get_batch`` for reference;
2. backbone: the ``Backbone`` object the pipeline would build (same model, weights, precision,
   channels_last, batch size), ``backbone.embed(batch)`` in a loop on frames already decoded into
   memory, batched per video as the pipeline does (preprocess included: harx preprocesses on the
   batched tensors), timed in segments: one before the first harx run and one after each, so
   that load drifting on a shared machine meets both alike; also the model alone on already
   preprocessed tensors;
3. harx: ``run_extract`` on a ``folder`` dataset of the clips (a CSV manifest of links), fresh
   output file, in a child process, ``--rounds`` times (default 5), each time with ``--streams rgb``
   and with ``--streams rgb,motion`` (order alternating). ``two_stream_cost`` is the median of the
   rounds' one-stream frames/s over two-stream frames/s (goal: at most 2.05: the motion stream
   costs one more backbone pass and little else), ``two_stream_vs_two_backbone_passes`` the
   two-stream run against half the backbone's frames/s. Each one-stream run's frames/s is divided
   by the mean of the backbone segments just before and just after it, and ``harx_vs_backbone`` is
   the median of these ratios (all of them are in ``harx_vs_backbone_rounds``): on a shared
   machine one round's ratio moved by up to 20 % between rounds of one run (0.86 to 1.06).
   frames/s = ``summary.frames / summary.seconds`` (model
   loading and interpreter start-up excluded; harx starts its decoding workers while the model
   loads, so what is left of their start-up shows as decode wait). Peak RSS of the extraction process (its VmHWM)
   and of its process tree (decode workers included, sampled from /proc) for N videos and for
   10 x N videos (each clip linked 10 times under distinct names); the child also times where
   the run's wall time goes (decode wait, preprocess, model, HDF5 writes, finalize);
4. naive: the tutorial loop -- ``cv2.VideoCapture.read()`` one frame at a time, fp32, batch 1,
   the same backbone and weights as ``timm.create_model`` gives them (no BatchNorm folding, default
   memory format: what a tutorial runs) and the same preprocessing math applied per frame,
   ``model.eval()`` under ``torch.inference_mode()``; capped at the first ``--naive-frames`` frames (default 200) or
   ``--seconds``, whichever comes first;
5. pose (with the ``pose`` extra): the pose stream's BlazePose estimator over the same decoded
   frames, a fresh tracker per video as the pipeline runs it, for up to ``--seconds``
   (``pose_fps``, ``backbone_vs_pose``); use ``--folder`` with real clips of people: on clips
   without a person only the detector runs.

To keep the default run within about 5 minutes on an idle 2-core CPU, timed loops stop after
``--seconds`` (backbone, naive) and the 10 x N run samples ``--large-max-frames`` frames per
video (harx's own ``--max-frames`` sampling, default 16 = one full CPU batch; 0 embeds every
frame). The N-video harx run always embeds every frame. ``--sweep`` also times
``backbone.embed`` at batch sizes 4, 8, 16, 32; ``--threads`` sets torch's thread count for
every measurement, harx's child process included.

Prints a table, then as the last line one JSON object (``decode_fps``, ``backbone_fps``,
``harx_fps`` (rgb), ``two_stream_fps``, ``two_stream_cost``, ``naive_fps``, ``harx_vs_backbone``, ``harx_vs_naive``, ``rss_mb_small``,
``rss_mb_large`` and machine details). Other processes on the machine change every number;
the JSON records the load average before and after. Every loop runs under torch's own OpenMP
settings (spin-waiting threads), as harx does; the backbone loops, like harx, drop a thread while
other processes keep a core busy (``harx.runtime.CpuThreads``), the naive loop does not
(tutorial code does not).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


import numpy as np

KTH_CLASSES = ("boxing", "handclapping", "handwaving", "jogging", "running", "walking")
WIDTH, HEIGHT, FPS = 160, 120, 25
SWEEP_BATCHES = (4, 8, 16, 32)
LARGE_FACTOR = 10


# ----------------------------------------------------------------------------- test clips

def clip_lengths(n: int) -> list[int]:
    """``n`` frame counts spread evenly over 100..400, in a fixed shuffled order."""
    if n <= 1:
        return [250] * n
    lengths = [round(100 + 300 * k / (n - 1)) for k in range(n)]
    np.random.default_rng(0).shuffle(lengths)
    return lengths


def kth_like_frames(n_frames: int, label: str, seed: int):
    """Grey frames like KTH's: static textured background, a figure that walks or moves its arms,
    sensor noise on every frame. Yields RGB uint8 ``(120, 160, 3)``."""
    rng = np.random.default_rng(seed)
    yy = np.linspace(0, 1, HEIGHT)[:, None]
    background = 95 + 60 * yy + np.zeros((HEIGHT, WIDTH))
    texture = rng.normal(0, 12, (HEIGHT // 8, WIDTH // 8)).repeat(8, 0).repeat(8, 1)
    background = background + texture
    speed = {"walking": 1.0, "jogging": 2.0, "running": 3.0}.get(label, 0.0)
    body_w, body_h = 12, 44
    x0 = rng.integers(10, WIDTH - 30)
    for i in range(n_frames):
        image = background.copy()
        span = WIDTH - body_w - 4
        x = int(x0 + speed * i) % (2 * span)
        x = 2 + (x if x < span else 2 * span - x)  # walk back and forth
        top = HEIGHT - body_h - 14 + int(2 * math.sin(i * 0.5) * (speed > 0))
        image[top:top + body_h, x:x + body_w] = 45                       # body
        image[top - 9:top, x + 2:x + body_w - 2] = 70                    # head
        swing = int(10 * math.sin(i * (0.35 + 0.1 * speed)))
        arm_y = top + 8 + swing // 2
        reach = 10 if label in ("boxing", "handwaving", "handclapping") else 4
        image[max(0, arm_y - 2):arm_y + 3, max(0, x - reach):x] = 55      # arms
        image[max(0, arm_y - swing - 2):max(1, arm_y - swing + 3), x + body_w:x + body_w + reach] = 55
        image += rng.normal(0, 3, image.shape)
        grey = np.clip(image, 0, 255).astype(np.uint8)
        yield np.repeat(grey[:, :, None], 3, axis=2)


def write_clip(path: Path, frames) -> None:
    """MPEG-4 Part 2 in AVI, as KTH ships; PyAV (harx's test helper) or OpenCV as a fallback."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        from tests.videos import write_frames
    except ImportError:
        write_frames = None
    if write_frames is not None:
        write_frames(path, frames, fps=FPS, codec="mpeg4")
        return
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FMP4"), FPS, (WIDTH, HEIGHT))
    for rgb in frames:
        writer.write(np.ascontiguousarray(rgb[:, :, ::-1]))
    writer.release()


def make_clips(folder: Path, n: int) -> list[tuple[Path, str]]:
    clips = []
    for k, length in enumerate(clip_lengths(n)):
        label = KTH_CLASSES[k % len(KTH_CLASSES)]
        path = folder / label / f"person{k // len(KTH_CLASSES) + 1:02d}_{label}_d{k % 4 + 1}.avi"
        write_clip(path, kth_like_frames(length, label, seed=k))
        clips.append((path, label))
    return clips


def folder_clips(folder: Path) -> list[tuple[Path, str]]:
    from harx.extract.videofiles import is_video_file

    paths = sorted(p for p in Path(folder).expanduser().rglob("*") if p.is_file() and is_video_file(p))
    return [(p.absolute(), p.parent.name or "video") for p in paths]


def make_manifest(folder: Path, clips: list[tuple[Path, str]], copies: int) -> Path:
    """A manifest listing each clip ``copies`` times, as hard links (symlinks across file systems)
    with distinct names, so harx sees ``copies * len(clips)`` different videos."""
    rows = []
    for rep in range(copies):
        for k, (path, label) in enumerate(clips):
            link = folder / "videos" / f"r{rep:02d}" / label / f"{k:03d}_{path.name}"
            link.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, link)
            except OSError:
                os.symlink(Path(path).resolve(), link)
            rows.append((link.relative_to(folder).as_posix(), label))
    manifest = folder / "manifest.csv"
    with manifest.open("w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["path", "label"])
        out.writerows(rows)
    return manifest


# ----------------------------------------------------------------------------- 1. decode

def decode_jobs(clips, backbone, sampling):
    from harx.extract.decode import DecodeJob

    # as extract.pipeline._embed_videos builds them (run through extract.embedding.embed_videos)
    return [DecodeJob(key=k, path=str(path), ranges=(None,), sampling=sampling,
                      max_short_side=2 * backbone.resize_short) for k, (path, _) in enumerate(clips)]


def measure_harx_decode(jobs, workers: int, keep_bytes: int):
    """Every frame through harx's VideoDecoder; returns (frames, seconds, seconds after the first
    event, per-video frame arrays kept for the backbone measurement)."""
    from harx.extract.decode import Frames, VideoDecoder, VideoEnd

    kept, current, kept_bytes = [], [], 0
    frames, first = 0, None
    started = time.perf_counter()
    with VideoDecoder(num_workers=workers) as dec:
        for event in dec.decode(jobs):
            if first is None:
                first = time.perf_counter()
            if isinstance(event, Frames):
                frames += len(event.frames)
                if kept_bytes < keep_bytes:
                    current.append(event.frames)
                    kept_bytes += event.frames.nbytes
            elif isinstance(event, VideoEnd):
                if event.error:
                    print(f"  note: {event.job.path}: {event.error}", file=sys.stderr)
                if current:
                    kept.append(np.concatenate(current))
                current = []
        seconds = time.perf_counter() - started
    return frames, seconds, seconds - ((first or started) - started), kept


def measure_raw_decord(jobs, chunk: int = 32):
    """decord in this process, one thread, the same frame indices in the same chunks as harx's worker."""
    from decord import VideoReader, cpu

    frames = 0
    started = time.perf_counter()
    for job in jobs:
        vr = VideoReader(job.path, ctx=cpu(0), num_threads=1)
        idx = job.sampling.indices(0, len(vr), float(vr.get_avg_fps() or 0.0))
        for i in range(0, len(idx), chunk):
            frames += len(vr.get_batch(idx[i:i + chunk].tolist()).asnumpy())
        del vr
    return frames, time.perf_counter() - started


# ----------------------------------------------------------------------------- 2. backbone

def per_video_batches(videos: list[np.ndarray], batch: int, pad_multiple: int = 0) -> list[tuple[np.ndarray, int]]:
    """``(batch, real frames in it)`` within one video's frames, as the pipeline forms them
    (``extract.embedding.plan_batches``: padded on a GPU, where only real frames are counted)."""
    from harx.extract.embedding import pad_batch, plan_batches

    batches = []
    for v in videos:
        at = 0
        for take, padded in plan_batches(len(v), batch, pad_multiple):
            batches.append((pad_batch(v[at:at + take], padded), take))
            at += take
    return batches


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_embed(backbone, batches, seconds: float, warmup: int = 2):
    """``backbone.embed`` over ``batches`` in order, until they run out or ``seconds`` pass."""
    for b, _ in batches[:warmup]:
        backbone.embed(b)
    frames = 0
    from harx.runtime import CpuThreads

    with CpuThreads(enabled=backbone.device.type == "cpu") as threads:  # as harx runs it
        started = time.perf_counter()
        for b, n in batches:
            backbone.embed(b)
            frames += n
            threads.update()
            if time.perf_counter() - started >= seconds:
                break
        return frames, time.perf_counter() - started


def time_pose(videos, seconds: float):
    """The pose stream's estimator (:mod:`extract.pose`) over the same decoded frames, one video
    at a time as the pipeline runs it, until they run out or ``seconds`` pass: ``(frames, seconds,
    frames with a person)``; ``None`` without the pose extra."""
    import importlib.util

    if importlib.util.find_spec("mediapipe") is None:
        return None
    from harx.extract.pose import PoseEstimator

    frames = found = 0
    with PoseEstimator() as pose:
        pose.start_video()
        pose.estimate(videos[0][:2])                 # loads the detector before the clock starts
        started = time.perf_counter()
        for video in videos:
            pose.start_video()
            features, _ = pose.estimate(video)
            frames += len(video)
            found += int((~np.isnan(features).all(axis=(1, 2))).sum())
            if time.perf_counter() - started >= seconds:
                break
        return frames, time.perf_counter() - started, found


def time_model_only(backbone, batches, seconds: float, max_frames: int = 256):
    """Preprocess some batches first (timed apart), then the model alone on them (cycled)."""
    import torch

    from harx.runtime import CpuThreads

    tensors, n = [], 0
    with torch.inference_mode():
        started = time.perf_counter()
        for b, real in batches:
            tensors.append((backbone.preprocess(torch.from_numpy(b)), real))
            n += real
            if n >= max_frames:
                break
        sync(backbone.device)
        pre_s = time.perf_counter() - started

        def forward(x):
            if backbone.dtype is not None:
                with torch.autocast(device_type=backbone.device.type, dtype=backbone.dtype):
                    return backbone.model(x).float()
            return backbone.model(x)

        for x, _ in tensors[:2]:
            forward(x)
        sync(backbone.device)
        frames, k = 0, 0
        with CpuThreads(enabled=backbone.device.type == "cpu") as threads:
            started = time.perf_counter()
            while True:
                x, real = tensors[k % len(tensors)]
                forward(x)
                frames += real
                k += 1
                threads.update()
                if k >= 2 and time.perf_counter() - started >= seconds:
                    break
                if k >= 4 * len(tensors):
                    break
            sync(backbone.device)
            elapsed = time.perf_counter() - started
    return (n, pre_s), (frames, elapsed)


def sweep(backbone, videos, seconds: float) -> dict[int, float]:
    """frames/s of ``backbone.embed`` per batch size; two rounds in opposite orders, pooled."""
    from harx.extract.embedding import auto_pad_multiple

    pad = auto_pad_multiple(backbone.device)
    totals = {b: [0, 0.0] for b in SWEEP_BATCHES}
    for order in (SWEEP_BATCHES, SWEEP_BATCHES[::-1]):
        for b in order:
            frames, secs = time_embed(backbone, per_video_batches(videos, b, pad), seconds / 2)
            totals[b][0] += frames
            totals[b][1] += secs
    return {b: f / s for b, (f, s) in totals.items()}


# ----------------------------------------------------------------------------- 4. naive loop

def tutorial_model(backbone32):
    """The model as a tutorial runs it: ``timm.create_model`` with the same weights, classifier
    removed, eval mode, and nothing else (no BatchNorm folding, default memory format)."""
    import timm

    from harx.extract.backbones import _build_model

    model = _build_model(timm, backbone32.name, backbone32.weights)
    model.reset_classifier(0)
    return model.eval().to(backbone32.device)


def naive_loop(clips, backbone32, max_frames: int, seconds: float):
    """The tutorial loop: read a frame, preprocess it, run the fp32 model at batch 1; stops after
    ``max_frames`` frames or ``seconds``, whichever comes first."""
    import torch
    import torch.nn.functional as F

    try:
        import cv2
    except ImportError:
        cv2 = None
        print("  note: OpenCV (cv2) is not installed; the naive loop reads single frames with decord "
              "(vr[i]) instead of cv2.VideoCapture.read()", file=sys.stderr)
    model, device = tutorial_model(backbone32), backbone32.device
    mean = torch.tensor(backbone32.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(backbone32.std, device=device).view(1, 3, 1, 1)
    crop_h, crop_w = backbone32.input_size
    mode = backbone32.interpolation if backbone32.interpolation in ("bilinear", "bicubic") else "bilinear"

    def one(rgb: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(rgb).permute(2, 0, 1).float().div(255.0).unsqueeze(0).to(device)
        h, w = x.shape[-2:]
        scale = backbone32.resize_short / min(h, w)
        size = (max(crop_h, round(h * scale)), max(crop_w, round(w * scale)))
        x = F.interpolate(x, size=size, mode=mode, antialias=True, align_corners=False).clamp(0.0, 1.0)
        top, left = (size[0] - crop_h) // 2, (size[1] - crop_w) // 2
        x = (x[:, :, top:top + crop_h, left:left + crop_w] - mean) / std
        return model(x).cpu().numpy()[0]

    def frames_of(path):
        if cv2 is not None:
            cap = cv2.VideoCapture(str(path))
            try:
                while True:
                    ok, bgr = cap.read()
                    if not ok:
                        return
                    yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            finally:
                cap.release()
        else:
            from decord import VideoReader, cpu

            vr = VideoReader(str(path), ctx=cpu(0), num_threads=1)
            for i in range(len(vr)):
                yield vr[i].asnumpy()

    embeddings = []
    with torch.inference_mode():
        one(np.zeros((HEIGHT, WIDTH, 3), np.uint8))  # warm-up, as harx's start-up is excluded too
        started = time.perf_counter()
        for path, _ in clips:
            for rgb in frames_of(path):
                embeddings.append(one(rgb))
                if len(embeddings) >= max_frames or time.perf_counter() - started >= seconds:
                    break
            if len(embeddings) >= max_frames or time.perf_counter() - started >= seconds:
                break
        seconds = time.perf_counter() - started
    return len(embeddings), seconds, np.stack(embeddings), ("cv2" if cv2 is not None else "decord")


# ----------------------------------------------------------------------------- 3. harx extract

CHILD = r"""
import json, resource, sys, time
from collections import defaultdict
args = json.loads(sys.argv[1])
threads = args.pop("threads")
if threads:
    import torch
    torch.set_num_threads(threads)
from harx.extract import embedding, pipeline
from harx.extract.backbones import Backbone
from harx.extract.config import make_config
from harx.features.writer import FeatureWriter

T, C = defaultdict(float), defaultdict(int)

import torch
_set_num_threads = torch.set_num_threads
def _count_thread_changes(n):  # by harx.runtime.CpuThreads, when other processes take a core
    C["thread_changes"] += 1
    _set_num_threads(n)
torch.set_num_threads = _count_thread_changes

def timed(key, fn):
    def wrapper(*a, **k):
        t = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            T[key] += time.perf_counter() - t
            C[key] += 1
    return wrapper

# The pipeline calls embed_async (synchronous on a CPU, so its time is the batch's compute time).
Backbone.embed_async = timed("embed", Backbone.embed_async)
Backbone.preprocess = timed("preprocess", Backbone.preprocess)
for name in ("add_sample", "add_failure", "maybe_commit"):
    setattr(FeatureWriter, name, timed("write", getattr(FeatureWriter, name)))
FeatureWriter.open = timed("open", FeatureWriter.open)
FeatureWriter.finalize = timed("finalize", FeatureWriter.finalize)

class TimedDecoder(embedding.VideoDecoder):
    def decode(self, jobs):
        events = super().decode(jobs)
        while True:
            t = time.perf_counter()
            try:
                event = next(events)
            except StopIteration:
                T["decode_wait"] += time.perf_counter() - t
                return
            T["decode_wait"] += time.perf_counter() - t
            C["decode_events"] += 1
            yield event

TimedDecoder.close = timed("decoder_close", embedding.VideoDecoder.close)
embedding.VideoDecoder = pipeline.VideoDecoder = TimedDecoder

def vm_hwm_kb():
    # ru_maxrss is no use here: Linux carries the parent's RSS at fork into it across exec.
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None

cfg = make_config(**args)
r0 = resource.getrusage(resource.RUSAGE_SELF)
s = pipeline.run_extract(cfg)
r1 = resource.getrusage(resource.RUSAGE_SELF)
rc = resource.getrusage(resource.RUSAGE_CHILDREN)
import torch
print(json.dumps({"frames": s.frames, "seconds": s.seconds, "samples_new": s.samples_new,
                  "failed": len(s.failed), "precision": s.precision, "device": s.device, "file_bytes": s.file_bytes,
                  "hwm_kb": vm_hwm_kb(),
                  "cpu_s": (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime),
                  "workers_cpu_s": rc.ru_utime + rc.ru_stime,
                  "torch_threads": torch.get_num_threads(), "times": dict(T), "calls": dict(C)}))
"""


def _tree_rss_kb(root: int) -> tuple[int, int]:
    """RSS of ``root`` and of its descendants together, from /proc (0 where unreadable).

    Walks ``/proc/PID/task/*/children`` rather than every process, so that sampling every
    0.1 s costs the measured run next to nothing (a full /proc scan took 3 ms of CPU each time).
    """
    page_kb = os.sysconf("SC_PAGE_SIZE") // 1024

    def rss(pid: int) -> int:
        try:
            with open(f"/proc/{pid}/statm") as fh:
                return int(fh.read().split()[1]) * page_kb
        except (OSError, ValueError, IndexError):
            return 0

    def children(pid: int) -> list[int]:
        kids = []
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as fh:
                    kids += [int(k) for k in fh.read().split()]
        except (OSError, ValueError):
            pass
        return kids

    def cmdline(pid: int) -> bytes:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                return fh.read()
        except OSError:
            return b""

    # A child caught between fork and exec still shows its parent's command line and, sharing
    # the parent's pages, the parent's RSS: it is not memory of its own, so it is skipped.
    total, frontier = 0, [(root, k) for k in children(root)]
    while frontier:
        total += sum(rss(k) for parent, k in frontier if cmdline(k) != cmdline(parent))
        frontier = [(k, g) for _, k in frontier for g in children(k)]
    return rss(root), total


def run_harx(options: dict, home: Path, threads: int | None) -> dict:
    """``run_extract`` in a child process; its report plus the sampled peak RSS of its tree."""
    env = dict(os.environ, HARX_HOME=str(home))
    payload = json.dumps(dict(options, threads=threads), default=str)
    proc = subprocess.Popen([sys.executable, "-c", CHILD, payload], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    peak = {"tree": 0, "workers": 0}
    done = threading.Event()

    def sample():
        while not done.is_set() and os.path.isdir("/proc"):
            main_kb, workers_kb = _tree_rss_kb(proc.pid)
            peak["tree"] = max(peak["tree"], main_kb + workers_kb)
            peak["workers"] = max(peak["workers"], workers_kb)
            done.wait(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"harx extract child failed (exit {proc.returncode}):\n{err[-3000:]}")
    report = json.loads(out.strip().splitlines()[-1])
    report["tree_peak_kb"], report["workers_peak_kb"] = peak["tree"], peak["workers"]
    return report


# ----------------------------------------------------------------------------- reporting

def machine_info() -> dict:
    import torch

    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        model = platform.processor()
    ram_gb = None
    try:
        ram_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    versions = {}
    for name in ("decord", "cv2", "timm"):
        try:
            versions[name] = __import__(name).__version__
        except Exception:  # noqa: BLE001 - informative only
            versions[name] = None
    env = {k.lower(): os.environ[k] for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS")
           if k in os.environ}
    return {"cpu_count": os.cpu_count(), "cpu_model": model, "ram_gb": ram_gb, "python": platform.python_version(),
            "torch_version": torch.__version__, "torch_threads": torch.get_num_threads(),
            **{f"{k}_version": v for k, v in versions.items()}, **env}


def mb(kb: int | None) -> float | None:
    return None if not kb else round(kb / 1024, 1)


def fps(frames: float, seconds: float) -> float:
    return frames / seconds if seconds > 0 else 0.0


def breakdown(report: dict) -> dict:
    t = report["times"]
    pre = t.get("preprocess", 0.0)
    parts = {"decode_wait": t.get("decode_wait", 0.0), "preprocess": pre,
             "model": t.get("embed", 0.0) - pre, "hdf5_write": t.get("write", 0.0) + t.get("open", 0.0),
             "finalize": t.get("finalize", 0.0), "decoder_close": t.get("decoder_close", 0.0)}
    parts["other"] = report["seconds"] - sum(parts.values())
    return {k: round(v, 3) for k, v in parts.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", type=int, default=8, help="clips to generate (default 8)")
    p.add_argument("--backbone", default=None, help="timm model (default: harx's default backbone)")
    p.add_argument("--weights", default="auto")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto")
    p.add_argument("--batch-size", type=int, default=None, help="default: the pipeline's (8 on a CPU)")
    p.add_argument("--folder", type=Path, default=None, help="also measure every video under this folder")
    p.add_argument("--sweep", action="store_true", help="also time backbone.embed at batch 4, 8, 16, 32")
    p.add_argument("--seconds", type=float, default=25.0,
                   help="cap of the naive loop (default 25); each backbone segment and model-only get half")
    p.add_argument("--naive-frames", type=int, default=200, help="frames the naive loop embeds (default 200)")
    p.add_argument("--large-max-frames", type=int, default=16,
                   help="frames sampled per video in the 10 x N run (harx --max-frames; 0 = all; default 16)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads for every measurement, harx's included (default: torch's)")
    p.add_argument("--rounds", type=int, default=5,
                   help="harx runs, each between two backbone segments; the median ratio is reported (default 5)")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder and print its path")
    args = p.parse_args(argv)
    import importlib.util

    if importlib.util.find_spec("cv2") is None:   # the tutorials' loop, and the clips, need OpenCV
        print("error: benchmarks/extract.py needs OpenCV: .venv/bin/pip install -e '.[bench]'", file=sys.stderr)
        return 1
    if args.rounds < 1:
        p.error("--rounds must be at least 1")

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from harx.extract.backbones import DEFAULT_BACKBONE, create_backbone
    from harx.extract.embedding import auto_batch_size, auto_pad_multiple, auto_workers
    from harx.extract.sampling import Sampling

    backbone_name = args.backbone or DEFAULT_BACKBONE
    load_before = os.getloadavg()
    info = machine_info()
    tmp = Path(tempfile.mkdtemp(prefix="harx-bench-extract-"))
    rows: list[tuple[str, int, float, float, str]] = []
    result: dict = {}
    try:
        print(f"harx extract benchmark: {info['cpu_count']} CPU(s), {info['cpu_model']}, torch "
              f"{info['torch_version']}; load average {load_before[0]:.2f} {load_before[1]:.2f} "
              f"{load_before[2]:.2f}", flush=True)
        t = time.perf_counter()
        clips = make_clips(tmp / "clips", args.videos)
        if args.folder is not None:
            extra = folder_clips(args.folder)
            if not extra:
                print(f"  note: no videos found under {args.folder}", file=sys.stderr)
            clips += extra
        if not clips:
            p.error("no clips: give --videos >= 1 or a --folder with videos")
        print(f"  {len(clips)} clip(s) ready in {time.perf_counter() - t:.1f} s", flush=True)

        backbone = create_backbone(backbone_name, weights=args.weights, device=args.device,
                                   precision=args.precision)
        batch = auto_batch_size(backbone, args.batch_size)
        workers = auto_workers(backbone.device, None)
        sampling = Sampling()

        # 1. decode
        jobs = decode_jobs(clips, backbone, sampling)
        raw_frames, raw_s = measure_raw_decord(jobs)
        dec_frames, dec_s, dec_steady_s, videos = measure_harx_decode(jobs, workers, keep_bytes=1 << 30)
        rows.append(("decode: harx VideoDecoder (workers, start-up incl.)", dec_frames, dec_s, fps(dec_frames, dec_s),
                     f"{workers} worker(s); {fps(dec_frames, dec_steady_s):.0f} f/s after the first frame"))
        rows.append(("decode: raw decord in-process (reference)", raw_frames, raw_s, fps(raw_frames, raw_s),
                     "1 thread, get_batch in chunks of 32"))
        print(f"  decode done ({dec_frames} frames)", flush=True)

        # 2. backbone
        # Timed in segments of up to --seconds / 2: this one, then one right after each harx
        # round, so that load drifting on a shared machine meets both sides alike.
        batches = per_video_batches(videos, batch, auto_pad_multiple(backbone.device))
        segments = [time_embed(backbone, batches, args.seconds / 2)]
        (pre_frames, pre_s), (mo_frames, mo_s) = time_model_only(backbone, batches, args.seconds / 2)
        rows.append(("backbone: model only (preprocessed)", mo_frames, mo_s, fps(mo_frames, mo_s),
                     f"batch {batch}, {backbone.precision}"))
        rows.append(("backbone: preprocess only", pre_frames, pre_s, fps(pre_frames, pre_s),
                     "resize/crop/normalise, batched"))
        print(f"  backbone, first segment done ({fps(*segments[0]):.1f} f/s)", flush=True)
        sweep_fps = {}
        if args.sweep:
            sweep_fps = sweep(backbone, videos, args.seconds)
            best = max(sweep_fps, key=sweep_fps.get)
            for b, v in sweep_fps.items():
                rows.append((f"sweep: embed() batch {b}", 0, 0.0, v, "fastest" if b == best else ""))
            print("  sweep done: " + ", ".join(f"b{b} {v:.1f}" for b, v in sweep_fps.items()), flush=True)

        # 4. naive loop (fp32, batch 1)
        backbone32 = create_backbone(backbone_name, weights=args.weights, device=args.device, precision="fp32")
        nv_frames, nv_s, nv_emb, reader = naive_loop(clips, backbone32, args.naive_frames, args.seconds)
        ref = backbone.embed(videos[0][:min(len(nv_emb), len(videos[0]), 32)])
        cos = float(np.mean(np.sum(ref * nv_emb[:len(ref)], 1) /
                            (np.linalg.norm(ref, axis=1) * np.linalg.norm(nv_emb[:len(ref)], axis=1))))
        rows.append(("naive: per-frame read + fp32 batch 1", nv_frames, nv_s, fps(nv_frames, nv_s),
                     f"{reader} reader; first {args.naive_frames} frames or {args.seconds:g} s only"))
        del backbone32
        print(f"  naive done ({fps(nv_frames, nv_s):.1f} f/s; cosine to harx embeddings {cos:.4f})", flush=True)

        # 5. the pose stream's estimator on the same frames (the pose extra)
        posed = time_pose(videos, args.seconds)
        if posed is not None:
            rows.append(("pose: BlazePose (mediapipe), same frames", posed[0], posed[1], fps(posed[0], posed[1]),
                         f"a person found in {posed[2]} of {posed[0]} frames (a clip without one runs the "
                         "detector only: faster)"))
            print(f"  pose done ({fps(posed[0], posed[1]):.1f} f/s)", flush=True)

        # 3. harx extract, N videos, in --rounds fresh processes; each round is followed by
        # another backbone segment, so every harx run is compared with the backbone timed just
        # before and just after it, and the median of those ratios is reported.
        common = dict(dataset="folder", backbone=backbone_name, weights=args.weights, device=args.device,
                      precision=args.precision, batch_size=args.batch_size)
        small_root = str(make_manifest(tmp / "ds-small", clips, 1))
        runs, runs2 = [], []
        for r in range(args.rounds):
            # one stream and two streams (rgb, motion) in each round, their order alternating
            order = ("rgb", "rgb,motion") if r % 2 == 0 else ("rgb,motion", "rgb")
            for streams in order:
                report = run_harx(dict(common, root=small_root, out=str(tmp / f"small-{r}-{len(streams)}.h5"),
                                       streams=streams), tmp / "home", args.threads)
                (runs if streams == "rgb" else runs2).append(report)
            segments.append(time_embed(backbone, batches, args.seconds / 2))
            print(f"  harx round {r + 1}/{args.rounds} done (rgb {fps(runs[-1]['frames'], runs[-1]['seconds']):.1f} "
                  f"f/s, rgb+motion {fps(runs2[-1]['frames'], runs2[-1]['seconds']):.1f} f/s; backbone after it "
                  f"{fps(*segments[-1]):.1f} f/s)", flush=True)
        seg_fps = [fps(f, s) for f, s in segments]
        run_fps = [fps(run["frames"], run["seconds"]) for run in runs]
        run2_fps = [fps(run["frames"], run["seconds"]) for run in runs2]
        ratios = [h / ((seg_fps[r] + seg_fps[r + 1]) / 2) for r, h in enumerate(run_fps)]
        # a frame of two streams costs two backbone passes: the goal is <= 2.05 x one stream's cost
        costs = [one / two for one, two in zip(run_fps, run2_fps)]
        ratios2 = [2 * h / ((seg_fps[r] + seg_fps[r + 1]) / 2) for r, h in enumerate(run2_fps)]
        mid = sorted(range(len(runs)), key=lambda r: ratios[r])[len(runs) // 2]
        mid2 = sorted(range(len(runs2)), key=lambda r: costs[r])[len(runs2) // 2]
        small, harx_fps = runs[mid], run_fps[mid]
        bb_frames, bb_s = sum(f for f, _ in segments), sum(s for _, s in segments)
        rows.insert(2, ("backbone: embed() on decoded frames", bb_frames, bb_s, fps(bb_frames, bb_s),
                        f"batch {batch}, {backbone.precision}, preprocess incl.; segments " +
                        ", ".join(f"{v:.0f}" for v in seg_fps) + " f/s"))
        rows.insert(3, ("backbone: two passes (a frame and its motion image)", bb_frames, 2 * bb_s,
                        fps(bb_frames, 2 * bb_s), "half the line above: what two streams cost at best"))
        rows.append(("harx: run_extract, N videos, rgb (median round)", small["frames"], small["seconds"], harx_fps,
                     f"batch {batch}, {workers} worker(s), {small['precision']}; rounds " +
                     ", ".join(f"{v:.0f}" for v in run_fps) + " f/s"))
        rows.append(("harx: run_extract, N videos, rgb+motion (median)", runs2[mid2]["frames"], runs2[mid2]["seconds"],
                     run2_fps[mid2], "frames/s of rows with both streams; rounds " +
                     ", ".join(f"{v:.0f}" for v in run2_fps) + " f/s"))
        large_opts = dict(common, root=str(make_manifest(tmp / "ds-large", clips, LARGE_FACTOR)),
                          out=str(tmp / "large.h5"))
        if args.large_max_frames > 0:
            large_opts["max_frames"] = args.large_max_frames
        large = run_harx(large_opts, tmp / "home", args.threads)
        rows.append((f"harx: run_extract, {LARGE_FACTOR} x N videos", large["frames"], large["seconds"],
                     fps(large["frames"], large["seconds"]),
                     f"max {args.large_max_frames} frames/video" if args.large_max_frames > 0 else "all frames"))
        load_after = os.getloadavg()

        backbone_fps = fps(bb_frames, bb_s)
        naive_fps = fps(nv_frames, nv_s)
        result = {
            "decode_fps": round(fps(dec_frames, dec_s), 1),
            "backbone_fps": round(backbone_fps, 2),
            "harx_fps": round(harx_fps, 2),
            "naive_fps": round(naive_fps, 2),
            "harx_vs_backbone": round(ratios[mid], 3),
            "harx_vs_backbone_rounds": [round(v, 3) for v in ratios],
            "two_stream_fps": round(run2_fps[mid2], 2),
            "two_stream_cost": round(costs[mid2], 3),
            "two_stream_cost_rounds": [round(v, 3) for v in costs],
            "two_stream_vs_two_backbone_passes": round(sorted(ratios2)[len(ratios2) // 2], 3),
            "harx_vs_naive": round(harx_fps / naive_fps, 3) if naive_fps else None,
            "rss_mb_small": mb(max(run["hwm_kb"] for run in runs)),
            "rss_mb_large": mb(large["hwm_kb"]),
            "rss_tree_mb_small": mb(max(run["tree_peak_kb"] for run in runs)),
            "rss_tree_mb_large": mb(large["tree_peak_kb"]),
            "workers_rss_mb_small": mb(max(run["workers_peak_kb"] for run in runs)),
            "workers_rss_mb_large": mb(large["workers_peak_kb"]),
            "decode_fps_steady": round(fps(dec_frames, dec_steady_s), 1),
            "decode_raw_fps": round(fps(raw_frames, raw_s), 1),
            "model_only_fps": round(fps(mo_frames, mo_s), 2),
            "preprocess_fps": round(fps(pre_frames, pre_s), 1),
            "harx_large_fps": round(fps(large["frames"], large["seconds"]), 2),
            "harx_breakdown_s": breakdown(small),
            "harx_embed_share": round(small["times"].get("embed", 0.0) / small["seconds"], 3),
            "harx_torch_threads": small["torch_threads"], "harx_cpu_s": round(small["cpu_s"], 1),
            "harx_worker_cpu_s": round(small["workers_cpu_s"], 1),
            "harx_thread_changes": small["calls"].get("thread_changes", 0),
            "naive_vs_harx_cosine": round(cos, 4), "naive_reader": reader,
            "pose_fps": round(fps(posed[0], posed[1]), 2) if posed else None,
            "pose_frames_with_person": [posed[2], posed[0]] if posed else None,
            "backbone_vs_pose": round(backbone_fps / fps(posed[0], posed[1]), 3) if posed else None,
            "sweep_fps": {str(b): round(v, 2) for b, v in sweep_fps.items()},
            "sweep_best_batch": max(sweep_fps, key=sweep_fps.get) if sweep_fps else None,
            "videos": len(clips), "frames": dec_frames, "backbone_frames_timed": bb_frames,
            "naive_frames": nv_frames, "large_videos": LARGE_FACTOR * len(clips),
            "large_frames": large["frames"], "large_max_frames": args.large_max_frames or None,
            "backbone": backbone.name, "weights": backbone.weights, "device": str(backbone.device),
            "precision": backbone.precision, "batch_size": batch, "decode_workers": workers,
            **info, "load_before": [round(v, 2) for v in load_before],
            "load_after": [round(v, 2) for v in load_after],
        }
    finally:
        if args.keep:
            print(f"  kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    print()
    print(f"{'measurement':<52} {'frames':>7} {'seconds':>8} {'frames/s':>9}  notes")
    print("-" * 110)
    for name, frames, seconds, rate, note in rows:
        f = f"{frames:>7}" if frames else f"{'':>7}"
        s = f"{seconds:>8.2f}" if seconds else f"{'':>8}"
        print(f"{name:<52} {f} {s} {rate:>9.1f}  {note}")
    print("-" * 110)
    b = result["harx_breakdown_s"]
    print(f"harx N-video run, {small['seconds']:.1f} s: " + ", ".join(f"{k} {v:.1f} s" for k, v in b.items()) +
          f"; embed() is {result['harx_embed_share']:.1%} of the wall time; main process CPU {small['cpu_s']:.1f} s "
          f"({small['torch_threads']} torch threads, changed {small['calls'].get('thread_changes', 0)} time(s) "
          f"for other processes), decode workers CPU {small['workers_cpu_s']:.1f} s")
    print(f"two streams (rgb, motion) cost {result['two_stream_cost']} x one stream per frame (rounds "
          f"{', '.join(map(str, result['two_stream_cost_rounds']))}; goal <= 2.05); two-stream harx / two backbone "
          f"passes {result['two_stream_vs_two_backbone_passes']}")
    print(f"harx / backbone {result['harx_vs_backbone']} (median of rounds "
          f"{', '.join(map(str, result['harx_vs_backbone_rounds']))}), harx / naive {result['harx_vs_naive']}; peak RSS "
          f"(extraction process) {result['rss_mb_small']} MB for {len(clips)} videos, {result['rss_mb_large']} MB "
          f"for {LARGE_FACTOR * len(clips)}; with decode workers {result['rss_tree_mb_small']} / "
          f"{result['rss_tree_mb_large']} MB")
    print(f"load average before {load_before[0]:.2f}, after {result['load_after'][0]:.2f} "
          f"({info['cpu_count']} CPUs): other processes change these numbers")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    from harx.features.errors import HarxError

    try:
        sys.exit(main())
    except HarxError as err:  # a bad --device, --backbone, --weights...: one line, as harx says it
        sys.exit(f"benchmarks/extract.py: {err}")
