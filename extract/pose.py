"""The ``pose`` stream: body keypoints per frame, from MediaPipe's BlazePose ("pose detection + LSTM").

Bazarevsky et al., "BlazePose: on-device real-time body pose tracking", CVPR workshops 2020: a
person detector, then a landmark model that tracks the person from frame to frame, 33 keypoints
each with ``x, y`` (image), ``z`` (depth, at the scale of ``x``) and a visibility in 0..1.

Why this estimator: its weights ship inside a package, as harx's ImageNet weights do. The wheels of
``mediapipe`` up to 0.10.21 hold ``pose_detection.tflite`` and ``pose_landmark_full.tflite``
(``mediapipe.solutions.pose`` with ``model_complexity=1``; the lite and heavy models, and every
model of later releases, are downloaded at run time and cannot work offline). Install it with
``pip install 'harx[pose]'``. Measured on real KTH clips (``benchmarks/RESULTS.md``, "Pose
stream"): about 60-100 frames/s on one 2-core CPU at 160x120.

What is stored, shape ``(33, 4)`` per frame: each keypoint's ``(x, y, z, visibility)``, with
``x, y, z`` **normalised to the person**: the origin is the midpoint of the hips and the unit the
torso length (mid-hips to mid-shoulders, in pixels), so the stream does not depend on where the
person stands or how far the camera is (the spec records this). A frame where no person is found
holds NaN in every value (missing, never a pose of zeros); stage two reads such a frame as every
keypoint unseen, visibility 0 at the body's centre (``features.reader``, ``temporal.predict``).

One estimator per video, reset at each video's start: the tracker follows one person through
consecutive sampled frames, and a video's keypoints do not depend on the videos before it.
"""

from __future__ import annotations

import os
import re

import numpy as np

from harx.features.errors import HarxError

N_KEYPOINTS = 33
VALUES = ("x", "y", "z", "visibility")
FEATURE_SHAPE = (N_KEYPOINTS, len(VALUES))
MEDIAPIPE_VERSION = "0.10.21"
MIN_CONFIDENCE = 0.5
LEFT_SHOULDER, RIGHT_SHOULDER, LEFT_HIP, RIGHT_HIP = 11, 12, 23, 24
#: pairs of keypoints joined when a skeleton is drawn (BlazePose's topology, arms, legs, torso)
SKELETON = ((11, 12), (11, 13), (13, 15), (12, 14), (14, 16), (11, 23), (12, 24), (23, 24), (23, 25), (25, 27),
            (27, 31), (24, 26), (26, 28), (28, 32), (0, 11), (0, 12))
NORMALISATION = "origin: midpoint of the hips; unit: torso length (mid-hips to mid-shoulders, pixels)"

POSE_EXTRA = "pip install 'harx[pose]'"


def pose_spec() -> dict:
    """The pose stream's settings (its ``spec``): what decides its numbers."""
    return {"input": "pose", "estimator": "mediapipe BlazePose full (model_complexity=1)",
            "mediapipe": MEDIAPIPE_VERSION, "min_detection_confidence": MIN_CONFIDENCE,
            "min_tracking_confidence": MIN_CONFIDENCE, "values": list(VALUES), "normalisation": NORMALISATION,
            "missing": "nan"}


def check_pose_extra() -> None:
    """Fail in one line, before any work, when the pose extra is missing or another mediapipe is
    installed (reads the installed version; imports nothing)."""
    from importlib import metadata

    try:
        version = metadata.version("mediapipe")
    except metadata.PackageNotFoundError:
        raise HarxError(f"--streams pose needs MediaPipe {MEDIAPIPE_VERSION} (its wheels hold the pose models), "
                        f"which is not installed: {POSE_EXTRA}") from None
    if version != MEDIAPIPE_VERSION:
        raise HarxError(f"--streams pose needs mediapipe {MEDIAPIPE_VERSION}, found {version} (later releases "
                        f"download their pose models at run time, which fails offline): {POSE_EXTRA}")


def require_mediapipe():
    """The ``mediapipe`` module with the packaged pose models, or one line naming the extra."""
    check_pose_extra()
    try:
        import mediapipe as mp

        return mp.solutions.pose
    except (ImportError, AttributeError) as err:
        raise HarxError(f"mediapipe {MEDIAPIPE_VERSION} is installed but its pose solution does not load ({err}); "
                        f"reinstall it: {POSE_EXTRA}") from None


def normalise(landmarks: np.ndarray, width: int, height: int) -> np.ndarray:
    """``(33, 4)`` image-normalised ``x, y, z, visibility`` -> person-normalised (module docstring)."""
    px = landmarks[:, 0] * width
    py = landmarks[:, 1] * height
    pz = landmarks[:, 2] * width
    cx, cy = (px[LEFT_HIP] + px[RIGHT_HIP]) / 2, (py[LEFT_HIP] + py[RIGHT_HIP]) / 2
    sx, sy = (px[LEFT_SHOULDER] + px[RIGHT_SHOULDER]) / 2, (py[LEFT_SHOULDER] + py[RIGHT_SHOULDER]) / 2
    scale = float(np.hypot(sx - cx, sy - cy))
    if scale < 1e-3:                      # a degenerate torso: the body's extent instead
        scale = float(max(np.ptp(px), np.ptp(py))) or 1.0
    return np.stack([(px - cx) / scale, (py - cy) / scale, pz / scale, landmarks[:, 3]], axis=1).astype(np.float32)


class PoseEstimator:
    """BlazePose over the frames of one video at a time (:meth:`start_video` between videos)."""

    def __init__(self):
        check_pose_extra()
        self._pose = None
        self._logs = _LOG_FILTER
        self._logs.start()                # before MediaPipe loads: its import logs too
        try:
            self._solutions = require_mediapipe()
        except BaseException:
            self._logs.stop()
            raise
        import atexit

        atexit.register(self.shutdown)   # before exit: the graph closed (it logs), then stderr restored

    def start_video(self) -> None:
        """Forget the person tracked in the previous video."""
        self.close()
        self._pose = self._solutions.Pose(static_image_mode=False, model_complexity=1, smooth_landmarks=True,
                                          enable_segmentation=False, min_detection_confidence=MIN_CONFIDENCE,
                                          min_tracking_confidence=MIN_CONFIDENCE)

    def estimate(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(N, H, W, 3)`` uint8 RGB frames, in order -> the stream's ``(N, 33, 4)`` person-normalised
        keypoints and, for drawing, ``(N, 33, 3)`` image ones (``x / width``, ``y / height``,
        visibility); float32, NaN where no person was found."""
        if self._pose is None:
            self.start_video()
        out = np.full((len(frames), *FEATURE_SHAPE), np.nan, dtype=np.float32)
        image = np.full((len(frames), N_KEYPOINTS, 3), np.nan, dtype=np.float32)
        height, width = frames.shape[1:3]
        for i, frame in enumerate(frames):
            result = self._pose.process(np.ascontiguousarray(frame))
            if result.pose_landmarks is not None:
                raw = np.array([[p.x, p.y, p.z, p.visibility] for p in result.pose_landmarks.landmark], np.float32)
                out[i] = normalise(raw, width, height)
                image[i] = raw[:, [0, 1, 3]]
        return out, image

    def close(self) -> None:
        if self._pose is not None:
            self._pose.close()
            self._pose = None

    def __enter__(self) -> "PoseEstimator":
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

    def shutdown(self) -> None:
        """Close the graph, then give file descriptor 2 back (what it printed is passed on). Once."""
        import atexit

        atexit.unregister(self.shutdown)
        if self._logs is None:
            return
        self.close()
        self._logs.stop()
        self._logs = None


#: what MediaPipe's native side prints: absl/glog lines (``W0000 00:00:1796583509.121907   29550
#: file.cc:114] ...``) and TFLite's delegate notice
_NATIVE_LOG = re.compile(rb"^([IWE]\d{4} \d\d:\d\d:[\d.]+ +\d+ \S+:\d+\]|INFO: Created TensorFlow Lite"
                         rb"|WARNING: All log messages before absl::InitializeLog)")


class _NativeLogFilter:
    """While MediaPipe runs, file descriptor 2 goes through a pipe and a thread passes every line
    on to the real stderr except MediaPipe's native log lines. They come from its graph threads at
    any moment (models load lazily, at the first person found), so hiding stderr around calls
    cannot catch them all. Python's own ``sys.stderr`` is pointed at the real terminal meanwhile,
    so harx's messages, tracebacks and progress display (which redraws only on a terminal) go
    there directly. One per process, shared under a lock by the estimators alive at a time
    (``harx serve`` runs several, in several threads): the last to stop restores it all."""

    def __init__(self):
        import threading

        self._lock = threading.Lock()
        self._saved: int | None = None
        self._users = 0

    def start(self) -> None:
        import sys
        import threading

        with self._lock:
            self._users += 1
            if self._saved is not None:
                return
            try:
                read_fd, write_fd = os.pipe()
                saved = os.dup(2)
            except OSError:
                return
            sys.stderr.flush()
            self._python_stderr = sys.stderr
            try:
                terminal = os.fdopen(os.dup(saved), "w", buffering=1, encoding=getattr(sys.stderr, "encoding", None)
                                     or "utf-8", errors="backslashreplace")
            except OSError:
                terminal = None
            os.dup2(write_fd, 2)
            os.close(write_fd)
            self._saved = saved
            if terminal is not None:
                sys.stderr = terminal
            self._terminal = terminal
            self._thread = threading.Thread(target=self._pass_on, args=(read_fd, saved), daemon=True,
                                            name="harx-mediapipe-log-filter")
            self._thread.start()

    @staticmethod
    def _pass_on(read_fd: int, out_fd: int) -> None:
        def write(data: bytes) -> None:
            try:
                os.write(out_fd, data)
            except OSError:
                pass

        rest = b""
        with os.fdopen(read_fd, "rb", buffering=0) as pipe:
            while chunk := pipe.read(65536):
                *lines, rest = (rest + chunk).split(b"\n")
                keep = b"".join(line + b"\n" for line in lines if not _NATIVE_LOG.match(line))
                # an unfinished line waits for its end only when it may be a native log line
                # (they start with I, W or E); anything else goes now
                if rest and not (rest[:1] in (b"I", b"W", b"E") and len(rest) < 512):
                    keep, rest = keep + rest, b""
                if keep:
                    write(keep)
        if rest and not _NATIVE_LOG.match(rest):
            write(rest)

    def stop(self) -> None:
        import sys

        with self._lock:
            self._users = max(0, self._users - 1)
            if self._saved is None or self._users:
                return
            if self._terminal is not None and sys.stderr is self._terminal:
                sys.stderr = self._python_stderr
                self._terminal.flush()
                self._terminal.close()
            os.dup2(self._saved, 2)      # the pipe's last writer is gone: the thread drains and ends
            self._thread.join(timeout=5)
            if not self._thread.is_alive():  # else it may still write to the saved descriptor: keep it open
                os.close(self._saved)
            self._saved = None


_LOG_FILTER = _NativeLogFilter()
