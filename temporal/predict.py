"""Classify new videos with a finished run: what ``harx predict`` does.

``Predictor(run_dir)`` loads the run's head (``best.pt``) and rebuilds the backbone the run's cache
was extracted with: the backbone name, weight source, preprocessing and sampling recorded in the
run's ``config.json`` (or, for older runs, read from the cache). The weights are checked by
SHA-256 and the preprocessing by value, so a video is embedded exactly as stage one embedded the
training videos, or not at all.

Each video is cut into sliding **windows** (``window_s`` long, ``stride_s`` apart; by default
the median duration of a training sample and half of it, so the head sees inputs like those it
was trained on). Stage one's sampling applies per window, as it applied per training sample.
The head scores every window: that is the video's **timeline**. The video's label is the mean of
its windows' probabilities (a video no longer than one window is one window: the whole video).
Every probability is calibrated with the temperature the run fitted on its val split
(:mod:`temporal.calibration`), as the run's ``predictions.csv`` is.
For frame-level heads (``vote``) every sampled frame is also classified on its own: the
per-frame labels.

Each video is also scored against the run's training videos (:mod:`temporal.familiarity`, from
its ``familiarity.npz``): a video farther from them than the run's threshold (chosen on val) is
``unfamiliar``: none of the trained actions, or another kind of footage, whatever the label's
confidence says.

Memory is bounded: frames stream from the decoding workers in chunks (a 1080p video is decoded
at twice the backbone's input size, not at 1080p) and only the embeddings are kept: 2.5 KB per
sampled frame at 1,280-d (fp16, as in the cache), so 270 MB for an hour at 30 fps with every
frame sampled, and 9 MB for the same hour sampled at 1 fps (``harx extract --fps 1``).
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from harx.extract.videofiles import VIDEO_EXTENSIONS, is_video_file
from harx.features.errors import CacheMismatchError, DatasetNotFoundError, HarxError, InvalidOptionError
from harx.features.schema import side_by_side

from .annotate import annotate_video
from .base import TemporalHead
from .calibration import apply_temperature, describe, temperature_of
from .errors import RunFolderError
from .familiarity import load_familiarity
from .prediction_files import PredictionCSV, annotation_paths
from .predictions import FramePrediction, PredictedFile, VideoPrediction, WindowPrediction
from .run import open_run
from .sequences import Sequences

__all__ = ["FramePrediction", "PredictedFile", "Predictor", "VideoPrediction", "WindowPrediction", "find_videos", "load_run"]

DEFAULT_WINDOW_S = 4.0   # when the run records no sample duration


# ----------------------------------------------------------------------------- inputs

def find_videos(inputs: Sequence[str | Path]) -> list[Path]:
    """Video files from files, folders (searched recursively for video extensions) and glob
    patterns (``"clips/*.mp4"``, for shells that pass them through). A path that exists is taken
    literally, so names with ``[``, ``*`` or ``!`` work.

    Raises:
        DatasetNotFoundError: an input matches nothing, or a folder holds no video.
    """
    found: list[Path] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            videos = sorted(p for p in path.rglob("*") if p.is_file() and is_video_file(p))
            if not videos:
                raise DatasetNotFoundError(f"{path} holds no video files ({', '.join(sorted(VIDEO_EXTENSIONS))})")
            found.extend(videos)
        elif path.exists():
            found.append(path)
        elif glob.has_magic(str(item)):
            matches = sorted(Path(p) for p in glob.glob(os.path.expanduser(str(item)), recursive=True)
                             if Path(p).is_file())
            if not matches:
                raise DatasetNotFoundError(f"no file matches {item}")
            found.extend(matches)
        else:
            raise DatasetNotFoundError(f"{path}: no such file or folder")
    unique = list(dict.fromkeys(p.resolve() for p in found))
    if not unique:
        raise DatasetNotFoundError("no video given")
    return unique


# ----------------------------------------------------------------------------- the run

def load_run(run: str | Path) -> tuple[TemporalHead, dict, dict]:
    """The run's fitted head, its ``config.json`` and its extraction record.

    Raises:
        RunFolderError: not a run folder, an unfinished run, or a run whose extraction settings
            are recorded nowhere it can still read.
    """
    run_dir, config = open_run(run)
    head = TemporalHead.load(run_dir / "best.pt")
    extraction = config.get("extraction") or head.checkpoint_meta_.get("extraction")
    if not extraction:
        extraction = _extraction_from_cache(run_dir, config)
    if extraction.get("backbone") != config.get("backbone", extraction.get("backbone")):
        raise RunFolderError(f"{run_dir}: config.json names backbone {config.get('backbone')} but the extraction "
                             f"record names {extraction.get('backbone')}; the folder was edited, fit it again")
    return head, config, extraction


def _extraction_from_cache(run_dir: Path, config: dict) -> dict:
    """Runs fitted before extraction settings were recorded in them: read them from the cache."""
    from harx.features.reader import FeatureStore

    cache = Path(config.get("features", ""))
    if not cache.is_file():
        raise RunFolderError(f"run {run_dir.name} does not record how its features were extracted, and its "
                             f"cache {cache} is gone; fit the run again with this version of harx")
    store = FeatureStore(cache)
    if store.fingerprint != config.get("cache_fingerprint"):
        raise RunFolderError(f"the cache {cache} has changed since run {run_dir.name} was fitted; fit it again")
    return store.extraction


def run_streams(run_dir: Path, config: dict, extraction: dict) -> list:
    """The streams a run was trained on, as the cache made them (runs from before streams: rgb).

    Raises:
        RunFolderError: the run names a stream its extraction record does not describe.
    """
    from harx.features.schema import RGB_SPEC, StreamInfo

    specs = extraction.get("streams") or {"rgb": dict(RGB_SPEC)}
    names = config.get("streams") or ["rgb"]
    lacking = [n for n in names if n not in specs]
    if lacking:
        raise RunFolderError(f"run {run_dir.name} was trained on stream(s) {', '.join(lacking)}, which its extraction "
                             "record does not describe; fit it again with this version of harx")
    return [StreamInfo(n, dict(specs[n])) for n in names]


# ----------------------------------------------------------------------------- predicting

class Predictor:
    """A run's head plus the backbone its cache was extracted with, ready for new videos.

    Args:
        run: a finished run folder (``harx fit`` printed it).
        window_s, stride_s: the timeline's windows, in seconds (default: the median training
            sample's duration, and half of it).
        top_k: how many classes each prediction lists.
        device, precision: for the backbone and the head (default: auto; the precision the cache
            was extracted with where this device can run it).
        weights: the backbone's weights when the recorded source is not available here (a moved
            checkpoint); they must be the same weights (SHA-256).
        batch_size, num_workers, decode_timeout_s: as for ``harx extract``.

    Raises:
        RunFolderError, CacheMismatchError (the backbone built here differs from the run's),
        BackboneError, InvalidOptionError.
    """

    def __init__(self, run: str | Path, *, window_s: float | None = None, stride_s: float | None = None,
                 top_k: int = 3, device: str = "auto", precision: str | None = None, weights: str | None = None,
                 batch_size: int | None = None, num_workers: int | None = None, decode_timeout_s: float = 30.0):
        from harx.extract.sampling import Sampling

        if top_k < 1:
            raise InvalidOptionError(f"--top-k must be >= 1, got {top_k}")
        for name, value in (("--window", window_s), ("--stride", stride_s)):
            if value is not None and not value > 0:
                raise InvalidOptionError(f"{name} must be > 0 seconds, got {value:g}")
        self.run_dir = Path(run).expanduser()
        self.head, self.config, self.extraction = load_run(self.run_dir)
        self.temperature = temperature_of(self.head)    # fitted on the run's val split; 1 for older runs
        self.familiarity = load_familiarity(self.run_dir)  # None: a run fitted before harx recorded it
        self.class_names = [str(c) for c in self.head.classes_]
        self.top_k = min(int(top_k), len(self.class_names))
        self.sampling = Sampling.from_settings(self.extraction["sampling"])
        self.streams = run_streams(self.run_dir, self.config, self.extraction)
        self.window_s = float(window_s or self.extraction.get("sample_seconds") or DEFAULT_WINDOW_S)
        self.stride_s = float(stride_s or self.window_s / 2)
        self.batch_size, self.num_workers, self.decode_timeout_s = batch_size, num_workers, decode_timeout_s
        self.backbone = self._build_backbone(device, precision, weights)
        if device not in (None, "auto"):
            self.head.set_params(device=device)

    def _build_backbone(self, device: str, precision: str | None, weights: str | None):
        from harx.extract.backbones import create_backbone
        from harx.extract.streams import map_options
        from harx.features.schema import is_map_stream
        from harx.runtime import resolve_device, resolve_precision

        ext = self.extraction
        source = weights or ext["weights"]
        if weights is None and source not in ("package", "hub", "none") and not Path(source).is_file():
            raise RunFolderError(f"run {self.run_dir.name} embeds frames with {ext['backbone']} weights from "
                                 f"{source}, which is gone; pass --weights FILE (the same weights, checked by SHA-256)")
        if precision is None:  # the cache's precision, where this device runs it
            try:
                precision = resolve_precision(ext.get("precision") or "auto", resolve_device(device))
            except InvalidOptionError:
                precision = "auto"
        size = (ext.get("preprocess") or {}).get("input_size")
        square = int(size[0]) if isinstance(size, list) and len(size) == 2 and size[0] == size[1] else None
        backbone = create_backbone(ext["backbone"], weights=source, device=device, precision=precision,
                                   input_size=square, maps=map_options(self.streams))
        run = self.run_dir.name
        if backbone.weights_sha256 != ext.get("weights_sha256"):
            raise CacheMismatchError(
                f"run {run} was trained on {ext['backbone']} features from weights with SHA-256 "
                f"{str(ext.get('weights_sha256'))[:12]}..., but the weights loaded here ({backbone.weights}) have "
                f"{backbone.weights_sha256[:12]}...; pass --weights with the weights the cache was extracted with")
        recorded = ext.get("preprocess") or {}
        differ = sorted(k for k in set(recorded) | set(backbone.preprocess_spec)
                        if json.dumps(recorded.get(k)) != json.dumps(backbone.preprocess_spec.get(k)))
        if differ:
            raise CacheMismatchError(f"run {run}: the preprocessing of {ext['backbone']} here differs from the "
                                     f"cache's in {', '.join(differ)} (another timm version?); predictions would "
                                     "not match the training features")
        from harx.extract.pose import FEATURE_SHAPE as POSE_SHAPE

        map_width = int(np.prod(backbone.map_shape)) if backbone.map_shape else 0
        width = sum(map_width if is_map_stream(s.name) else int(np.prod(POSE_SHAPE)) if s.input == "pose"
                    else backbone.embed_dim for s in self.streams)
        self.head.check_compatible(width, self.class_names,
                                   where=f"the {ext['backbone']} backbone rebuilt for run {run} "
                                         f"(streams {'+'.join(s.name for s in self.streams)})")
        return backbone

    @property
    def protocol(self) -> dict:
        """How every prediction was made, for reports and JSON (every number carries it)."""
        return {"run": str(self.run_dir), "head": self.config.get("head"), "classes": self.class_names,
                "backbone": self.extraction["backbone"], "weights_sha256": self.extraction.get("weights_sha256"),
                "streams": {s.name: s.spec for s in self.streams}, "fusion": self.config.get("fusion"),
                "sampling": self.sampling.describe(), "window_s": self.window_s, "stride_s": self.stride_s,
                "video_label": "mean of the windows' class probabilities",
                "window_aggregation": self.head.aggregation, "device": str(self.backbone.device),
                "precision": self.backbone.precision,
                "probabilities": describe(self.head.checkpoint_meta_.get("calibration")),
                "temperature": self.temperature,
                "frame_probabilities": "uncalibrated (the temperature is fitted to whole samples)",
                "unfamiliar": self.familiarity_protocol}

    @property
    def familiarity_protocol(self) -> dict:
        """How ``unfamiliar`` is decided (``note`` says why it is ``null`` for an older run)."""
        if self.familiarity is None:
            return {"note": f"unfamiliar videos are not flagged: run {self.run_dir.name} was fitted before harx "
                            "recorded the statistics of its training features; fit it again to flag them"}
        return self.familiarity.describe()

    def predict_proba(self, samples) -> np.ndarray:
        """The run's probabilities ``(N, C)`` of embedded samples: the head's, calibrated with the
        run's temperature, as in its ``predictions.csv``."""
        return apply_temperature(self.head.predict_proba(samples), self.temperature)

    def predict(self, videos: Iterable[str | Path]) -> Iterator[VideoPrediction]:
        """Yield one :class:`VideoPrediction` per video, in order. A video that cannot be read
        gets ``error`` set; the others go on."""
        from harx.extract.decode import DecodeJob
        from harx.extract.embedding import embed_videos
        from harx.extract.streams import decode_images

        paths = [Path(v) for v in videos]
        jobs = [DecodeJob(key=k, path=str(p), ranges=(), sampling=self.sampling,
                          max_short_side=2 * self.backbone.resize_short, windows=(self.window_s, self.stride_s),
                          images=decode_images(self.streams))
                for k, p in enumerate(paths)]
        for video in embed_videos(self.backbone, jobs, batch_size=self.batch_size, num_workers=self.num_workers,
                                  timeout_s=self.decode_timeout_s, dtype=np.float16):
            yield self._classify(video, paths[video.job.key])

    def predict_files(self, videos: Sequence[Path], *, annotate: str | Path | None = None,
                      csv: str | Path | None = None) -> Iterator["PredictedFile"]:
        """:meth:`predict`, plus the files ``harx predict`` writes: a CSV row per video (written as
        it finishes) and, with ``annotate``, each video drawn with its predictions (see
        :func:`temporal.prediction_files.annotation_paths` for the names). Output paths are checked
        before any video is decoded."""
        targets = annotation_paths(list(videos), annotate) if annotate is not None else {}
        sheet = PredictionCSV(csv, self.top_k, self.protocol) if csv is not None else None
        try:
            for prediction in self.predict(videos):
                if sheet is not None:
                    sheet.write(prediction)
                item = PredictedFile(prediction)
                target = targets.get(Path(prediction.path))
                if target is not None and prediction.ok:
                    try:
                        item.annotated = annotate_video(prediction, target, self.class_names)
                    except HarxError as err:
                        item.annotate_error = str(err)
                yield item
        finally:
            if sheet is not None:
                sheet.close()

    def _classify(self, video, path: Path) -> VideoPrediction:
        info, n_ok = video.info, video.n_decoded
        result = VideoPrediction(path=str(path))
        if info is None:
            result.error = _not_a_video(path, video.error)
            return result
        result.fps, result.n_frames = float(info.fps), int(info.n_reported)
        result.size = (int(info.source_size[1]), int(info.source_size[0]))
        result.decoding = info.decoding()
        if n_ok == 0:
            result.error = f"no frame decodes ({video.error or 'the video is empty'})"
            return result
        if video.keypoints is not None:
            result.keypoints, result.keypoint_frames = video.keypoints, info.union[:n_ok]
        stopped_at = video.stopped_at if video.stopped_at is not None else info.n_reported
        result.n_decoded_to = stopped_at
        if video.error:
            result.note = f"{video.error}; predictions cover frames 1-{stopped_at}"
        features = side_by_side(self.streams, video.features)   # as the run was trained, as the cache reads
        windows, samples = [], []
        for k in range(len(info.ranges)):
            start, stop, _, rows = video.range_rows(k)
            if len(rows):
                windows.append((start, stop, len(rows)))
                samples.append(features[rows])
        proba = self.predict_proba(samples)
        names = self.class_names
        for (start, stop, n), p in zip(windows, proba):
            k = int(np.argmax(p))
            result.timeline.append(WindowPrediction(start, stop, info.seconds(start), info.seconds(stop), names[k], float(p[k]), n,
                                                    {c: float(v) for c, v in zip(names, p)}))
        overall = proba.mean(axis=0)
        overall /= overall.sum()
        order = np.argsort(-overall, kind="stable")
        result.label, result.confidence = names[order[0]], float(overall[order[0]])
        result.top_k = [(names[i], float(overall[i])) for i in order[:self.top_k]]
        result.probabilities = {names[i]: float(overall[i]) for i in range(len(names))}
        if self.familiarity is not None:   # over all the video's sampled frames
            result.unfamiliarity = float(self.familiarity.score([features])[0])
            result.unfamiliarity_threshold = self.familiarity.threshold_
            result.unfamiliar = self.familiarity.is_unfamiliar(result.unfamiliarity)
        if getattr(self.head, "frame_level", False):
            result.frames = self._frame_labels(features, info.union[:n_ok], info.seconds)
        return result

    def _frame_labels(self, embeddings: np.ndarray, frames: np.ndarray, seconds) -> list[FramePrediction]:
        """Each sampled frame classified on its own (frame-level heads: one-frame samples).

        Uncalibrated: the run's temperature was fitted to whole samples' (frame-averaged)
        probabilities, which are less confident than single frames; applied here it would
        sharpen frame confidences a second time, on no evidence."""
        one_each = Sequences(embeddings, np.arange(len(embeddings) + 1, dtype=np.int64))
        proba = self.head.predict_proba(one_each)
        best = proba.argmax(axis=1)
        return [FramePrediction(int(f), seconds(int(f)), self.class_names[k], float(proba[i, k]))
                for i, (f, k) in enumerate(zip(frames, best))]


def _not_a_video(path: Path, error: str | None) -> str:
    if not os.access(path, os.R_OK):
        return "unreadable file (no read permission)"
    if path.stat().st_size == 0:
        return "empty file (0 bytes)"
    return f"cannot be decoded: damaged, truncated or not a video ({error or 'no video stream'})"
