"""Files ``harx predict`` writes besides its table: the CSV of predictions and the names of
annotated videos."""

from __future__ import annotations

import csv
from pathlib import Path

from harx.features.errors import InvalidOptionError

from .predictions import VideoPrediction

__all__ = ["PredictionCSV", "annotation_paths"]

VIDEO_OUT_SUFFIXES = (".mp4", ".m4v", ".mov")


def annotation_paths(videos: list[Path], annotate: str | Path) -> dict[Path, Path]:
    """Where each annotated video goes. One input and a name ending in ``.mp4``: that file.
    Otherwise ``annotate`` is a folder and each video becomes ``<stem>.annotated.mp4`` in it
    (``<stem>-2.annotated.mp4``... when two inputs share a stem).

    Raises:
        InvalidOptionError: several inputs but ``annotate`` names a file.
    """
    target = Path(annotate).expanduser()
    if target.suffix.lower() in VIDEO_OUT_SUFFIXES and not target.is_dir():
        if len(videos) > 1:
            raise InvalidOptionError(f"--annotate {target} names one file but {len(videos)} videos are given; "
                                     "give a folder")
        return {videos[0]: target}
    if target.exists() and not target.is_dir():
        raise InvalidOptionError(f"--annotate {target} exists and is not a folder; give a folder or a .mp4 name")
    out: dict[Path, Path] = {}
    taken: set[str] = set()
    for video in videos:
        stem, n = video.stem, 1
        name = f"{stem}.annotated.mp4"
        while name in taken:
            n += 1
            name = f"{stem}-{n}.annotated.mp4"
        taken.add(name)
        out[video] = target / name
    return out


class PredictionCSV:
    """One row per video, written and flushed as each video finishes (an interrupted run keeps
    its rows). Columns: path, label, confidence, top-k labels and confidences, the timeline as
    ``start-end:label:confidence`` items separated by ``;``, the video's properties, error, note,
    and the protocol (run, backbone, sampling, window, stride, and the temperature that calibrated
    the confidences: 1 for a run fitted before harx calibrated), then ``unfamiliar`` (1 or 0;
    empty for a run without familiarity statistics), its score and the run's threshold."""

    def __init__(self, path: str | Path, top_k: int, protocol: dict):
        self.path = Path(path).expanduser()
        self.top_k, self.protocol = top_k, protocol
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "w", newline="", encoding="utf-8")
        except OSError as err:
            raise InvalidOptionError(f"cannot write --csv {self.path}: {err.strerror or err}") from None
        self._writer = csv.writer(self._file)
        top = [c for i in range(1, top_k + 1) for c in (f"top{i}_label", f"top{i}_confidence")]
        self._writer.writerow(["path", "label", "confidence", *top, "timeline", "fps", "n_frames", "width", "height",
                               "duration_s", "error", "note", "run", "head", "backbone", "sampling", "window_s",
                               "stride_s", "temperature", "unfamiliar", "unfamiliarity", "unfamiliarity_threshold"])

    def write(self, p: VideoPrediction) -> None:
        top = [v for i in range(self.top_k) for v in
               ((p.top_k[i][0], f"{p.top_k[i][1]:.4f}") if i < len(p.top_k) else ("", ""))]
        timeline = ";".join(f"{w.start_s:.2f}-{w.end_s:.2f}:{w.label}:{w.confidence:.3f}" for w in p.timeline)
        pr = self.protocol
        self._writer.writerow([p.path, p.label or "", "" if p.confidence is None else f"{p.confidence:.4f}", *top,
                               timeline, f"{p.fps:.3f}", p.n_frames, p.size[0], p.size[1], f"{p.duration_s:.3f}",
                               p.error or "", p.note, pr["run"], pr["head"], pr["backbone"], pr["sampling"],
                               pr["window_s"], pr["stride_s"], pr.get("temperature", 1.0),
                               "" if p.unfamiliar is None else int(p.unfamiliar), _num(p.unfamiliarity),
                               _num(p.unfamiliarity_threshold)])
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "PredictionCSV":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"
