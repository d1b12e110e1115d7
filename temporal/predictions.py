"""What a prediction is: the records ``harx predict`` yields, writes and draws.

Their own module so that the modules that write them (:mod:`temporal.prediction_files`,
:mod:`temporal.annotate`) and the one that makes them (:mod:`temporal.predict`) all import them
from here, and imports go one way: predict -> annotate/prediction_files -> predictions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["FramePrediction", "PredictedFile", "VideoPrediction", "WindowPrediction"]


@dataclass
class WindowPrediction:
    """One window of the timeline: frames ``[start_frame, stop_frame)`` of the video."""

    start_frame: int
    stop_frame: int
    start_s: float
    end_s: float
    label: str
    confidence: float
    n_embedded: int                       # sampled frames the head saw
    probabilities: dict = field(default_factory=dict)   # every class's (calibrated) probability

    def as_dict(self) -> dict:
        return {"start_s": round(self.start_s, 3), "end_s": round(self.end_s, 3), "start_frame": self.start_frame,
                "stop_frame": self.stop_frame, "label": self.label, "confidence": round(self.confidence, 4),
                "frames_embedded": self.n_embedded,
                "probabilities": {k: round(v, 4) for k, v in self.probabilities.items()}}


@dataclass
class FramePrediction:
    """A frame-level head's label for one sampled frame."""

    frame: int
    time_s: float
    label: str
    confidence: float

    def as_dict(self) -> dict:
        return {"frame": self.frame, "time_s": round(self.time_s, 3), "label": self.label,
                "confidence": round(self.confidence, 4)}


@dataclass
class VideoPrediction:
    """What the run says about one video. ``error`` is set (and ``label`` is ``None``) when the
    video could not be classified; ``note`` says when only part of it decoded. ``unfamiliar``: the
    video is unlike the run's training videos (its ``unfamiliarity`` score is above the run's
    threshold, :mod:`temporal.familiarity`), so its label means little; ``None`` when the run
    records no familiarity statistics (fitted before harx did) or the video was not classified."""

    path: str
    label: str | None = None
    confidence: float | None = None
    top_k: list[tuple[str, float]] = field(default_factory=list)
    probabilities: dict[str, float] = field(default_factory=dict)
    timeline: list[WindowPrediction] = field(default_factory=list)
    frames: list[FramePrediction] | None = None
    fps: float = 0.0
    n_frames: int = 0                     # frames the container reports
    size: tuple[int, int] = (0, 0)        # (width, height) as shown (turned upright where the file says)
    decoding: dict = field(default_factory=dict)   # VideoInfo.decoding(): decoder, turn, varying rate
    n_decoded_to: int = 0                 # frames [0, n_decoded_to) decoded; less than n_frames on a bad file
    error: str | None = None
    note: str = ""
    unfamiliar: bool | None = None
    unfamiliarity: float | None = None            # the score: higher is stranger
    unfamiliarity_threshold: float | None = None  # the run's; above it is unfamiliar
    #: runs on the pose stream: the keypoints found in each decoded frame, (n, 33, 3) x / width,
    #: y / height, visibility (NaN: no person), at source frames ``keypoint_frames`` (drawn by
    #: ``--annotate``; only counted in ``as_dict``)
    keypoints: object | None = field(default=None, repr=False)
    keypoint_frames: object | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def duration_s(self) -> float:
        return self.n_frames / self.fps if self.fps > 0 else 0.0

    def as_dict(self, protocol: dict | None = None) -> dict:
        d = {"path": self.path, "label": self.label,
             "confidence": None if self.confidence is None else round(self.confidence, 4),
             "unfamiliar": self.unfamiliar,
             "unfamiliarity": None if self.unfamiliarity is None else
             {"score": round(self.unfamiliarity, 4), "threshold": None if self.unfamiliarity_threshold is None
              else round(self.unfamiliarity_threshold, 4)},
             "top_k": [{"label": k, "confidence": round(p, 4)} for k, p in self.top_k],
             "probabilities": {k: round(p, 4) for k, p in self.probabilities.items()},
             "timeline": [w.as_dict() for w in self.timeline]}
        if self.frames is not None:
            d["frames"] = [f.as_dict() for f in self.frames]
        d["video"] = {"fps": round(self.fps, 3), "n_frames": self.n_frames, "width": self.size[0],
                      "height": self.size[1], "duration_s": round(self.duration_s, 3), **self.decoding}
        if self.keypoints is not None:
            import numpy as np

            found = int((~np.isnan(self.keypoints).all(axis=(1, 2))).sum())
            d["pose"] = {"frames": len(self.keypoints), "frames_with_person": found}
        d["error"], d["note"] = self.error, self.note
        if protocol is not None:
            d["protocol"] = protocol
        return d


@dataclass
class PredictedFile:
    """A prediction and, with ``--annotate``, the annotated video (or why it could not be written)."""

    prediction: VideoPrediction
    annotated: object | None = None          # temporal.annotate.AnnotatedVideo
    annotate_error: str | None = None
