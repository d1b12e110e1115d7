"""What ``harx serve`` may show: the run folders ``harx runs`` lists, each under an id the server
made, and, of each run, only the files and test samples harx wrote for it.

No path ever comes from the client. A run is addressed by a short hash of its folder's resolved
path (stable across restarts, so links keep working), a test sample by its row in the run's
``predictions.csv``, a run's picture by a fixed name (``curves``, ``confusion``); an id the
catalog did not make is unknown, so no request can name a file outside what it serves.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from harx.features.errors import HarxError
from harx.temporal.runs import RunRow, list_runs

#: the pictures a run folder holds that the page shows, by the name the API uses
PICTURES = {"curves": "curves.png", "confusion": "confusion_test.png"}


class UnknownIdError(HarxError):
    """An id that the catalog did not make (answered with 404)."""

    status = 404


def run_id(path: Path) -> str:
    return hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class TestSample:
    """One row of a run's ``predictions.csv``: a scored test sample."""

    index: int
    sample_id: str
    video_id: str
    true_label: str
    predicted_label: str
    confidence: float
    correct: bool
    probabilities: dict

    def as_dict(self) -> dict:
        return {"index": self.index, "sample_id": self.sample_id, "video_id": self.video_id,
                "true": self.true_label, "predicted": self.predicted_label,
                "confidence": round(self.confidence, 4), "correct": self.correct,
                "probabilities": {k: round(v, 4) for k, v in self.probabilities.items()}}


class RunCatalog:
    """The runs under ``roots`` (default: ``harx runs``' places), found again on :meth:`refresh`."""

    def __init__(self, roots: list[str | Path] | None = None):
        self.roots = roots
        self._runs: dict[str, RunRow] = {}
        self.refresh()

    def refresh(self) -> list[dict]:
        """Look for runs again; each finished one as a JSON-ready row, newest first."""
        self._scan()
        return [self.summary(rid) for rid in self._runs]

    def _scan(self) -> None:
        self._runs = {run_id(r.path): r for r in list_runs(self.roots) if r.finished}

    def newest(self) -> RunRow | None:
        """The newest finished run, looked for again (``None``: there is none yet)."""
        self._scan()
        return next(iter(self._runs.values()), None)

    def run(self, rid: str) -> RunRow:
        if rid not in self._runs:
            self._scan()                     # a run finished since the page was loaded
        if rid not in self._runs:
            raise UnknownIdError(f"no run {rid!r}")
        return self._runs[rid]

    def summary(self, rid: str) -> dict:
        r = self._runs[rid]
        return {"id": rid, "name": r.path.name, "head": r.head, "streams": r.streams, "seed": r.seed,
                "cache": Path(r.cache).name, "unit": r.unit, "created_utc": r.created_utc,
                "val_accuracy": r.val_accuracy, "test_accuracy": r.test_accuracy}

    def details(self, rid: str) -> dict:
        """Metrics with their protocol, training curves, the test confusion matrix and the
        ``compare`` reports of the run's cache."""
        r = self.run(rid)
        metrics = _read_json(r.path / "metrics.json")
        test = metrics.get("test") or {}
        classes = list((metrics.get("protocol") or {}).get("class_names") or [])
        return {**self.summary(rid), "protocol": metrics.get("protocol"), "calibration": metrics.get("calibration"),
                "training": metrics.get("training"),
                "metrics": {split: {k: (metrics.get(split) or {}).get(k)
                                    for k in ("n", "accuracy", "mean_class_accuracy", "macro_f1")}
                            for split in ("val", "test")},
                "video_accuracy": (test.get("video") or {}).get("accuracy"),
                "classes": classes, "confusion": test.get("confusion_matrix"),
                "curves": _epochs(r.path / "epochs.csv"),
                "pictures": [name for name, file in PICTURES.items() if (r.path / file).is_file()],
                "compare_reports": self._compare_reports(r)}

    def picture(self, rid: str, name: str) -> Path:
        """A picture harx fit wrote in the run folder: a plain file there, never a link out of it."""
        r = self.run(rid)
        path = r.path / PICTURES.get(name, "")
        if name not in PICTURES or not path.is_file() or path.is_symlink() \
                or not path.resolve().is_relative_to(r.path.resolve()):
            raise UnknownIdError(f"run {rid} has no picture {name!r}")
        return path

    def test_samples(self, rid: str) -> list[TestSample]:
        path = self.run(rid).path / "predictions.csv"
        if not path.is_file():
            return []
        out = []
        with open(path, newline="", encoding="utf-8") as f:
            for k, row in enumerate(csv.DictReader(f)):
                probs = {c[2:]: float(v) for c, v in row.items() if c.startswith("p_") and v not in ("", None)}
                out.append(TestSample(k, row["sample_id"], row.get("video_id", ""), row["true_label"],
                                      row["predicted_label"], float(row.get("confidence") or 0.0),
                                      row.get("correct") == "1", probs))
        return out

    def sample(self, rid: str, index: int) -> TestSample:
        samples = self.test_samples(rid)
        if not 0 <= index < len(samples):
            raise UnknownIdError(f"run {rid} has no test sample {index}")
        return samples[index]

    def sample_video(self, rid: str, index: int) -> tuple[Path, tuple[int, int] | None]:
        """The video file of test sample ``index`` and the frame range it covers (``None``: the
        whole video), as the run's cache recorded them."""
        from harx.features.reader import FeatureStore

        sample = self.sample(rid, index)
        cache = Path(self.run(rid).cache)
        try:
            store = FeatureStore(cache)
        except HarxError as err:
            raise UnknownIdError(f"the cache of run {rid} cannot be read ({err})") from None
        ids = list(store.column("sample_id"))
        if sample.sample_id not in ids:
            raise UnknownIdError(f"the cache of run {rid} no longer holds {sample.sample_id}")
        rec = store.sample(ids.index(sample.sample_id))
        path = Path(rec.path)
        if not path.is_absolute():
            path = Path(store.attrs.get("root") or "") / path
        if not path.is_file():
            raise UnknownIdError(f"the video of {sample.sample_id} is gone ({path.name})")
        ranged = rec.annotated_start >= 0
        return path, ((int(rec.range_start), int(rec.range_stop)) if ranged else None)

    def _compare_reports(self, r: RunRow) -> list[dict]:
        from harx.temporal.run import runs_root

        try:
            folder = runs_root(Path(r.cache))
        except HarxError:
            return []
        reports = []
        for md in sorted(folder.glob("compare*/compare.md")) if folder.is_dir() else []:
            reports.append({"name": md.parent.name, "markdown": md.read_text(encoding="utf-8")})
        return reports


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _epochs(path: Path) -> list[dict]:
    """``epochs.csv`` as rows of numbers (the training curves)."""
    if not path.is_file():
        return []
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            rows.append({k: (v if k == "phase" else (None if v in ("", "None") else float(v) if k != "best"
                                                      else v == "True")) for k, v in row.items()})
    return rows
