"""Find the run folders ``harx fit`` and ``harx compare`` wrote, and summarise each in one row.

A run folder is recognised by its ``config.json`` (written first); its ``metrics.json`` (written
last) marks it finished. Only JSON is read, so listing hundreds of runs takes no model and no
torch. Default places: ``<harx home>/features/runs`` (runs beside the default caches) and
``<harx home>/runs`` (runs on caches in read-only folders); see :func:`harx.temporal.run.runs_root`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from harx.features.errors import DatasetNotFoundError
from harx.features.paths import default_cache_dir, harx_home

__all__ = ["RunRow", "default_run_roots", "list_runs"]


@dataclass(frozen=True)
class RunRow:
    """One run folder, as ``harx runs`` shows it."""

    path: Path
    head: str
    streams: str                # "rgb", "rgb+motion" (late fusion), "rgb+motion-early"
    cache: str                  # the cache's path when trained
    seed: int | None
    finished: bool              # metrics.json present
    val_accuracy: float | None
    test_accuracy: float | None
    created_utc: str            # ISO 8601, from config.json
    unit: str | None            # what the accuracies count (video, subsequence)


def default_run_roots() -> list[Path]:
    return [default_cache_dir() / "runs", harx_home() / "runs"]


def list_runs(roots: list[str | Path] | None = None, features: str | Path | None = None) -> list[RunRow]:
    """Every run folder under ``roots`` (default :func:`default_run_roots`), newest first.

    Args:
        roots: folders searched recursively for run folders.
        features: keep only runs trained on this cache (a path: same file; else a substring of
            the cache's file name, e.g. ``kth``).

    Raises:
        DatasetNotFoundError: a root given explicitly does not exist.
    """
    explicit = roots is not None
    folders = [Path(r).expanduser() for r in (roots if explicit else default_run_roots())]
    for folder in folders:
        if explicit and not folder.is_dir():
            raise DatasetNotFoundError(f"run folder root {folder} not found")
    rows, seen = [], set()
    for folder in folders:
        if not folder.is_dir():
            continue
        for config_path in folder.rglob("config.json"):
            run_dir = config_path.parent.resolve()
            if run_dir in seen:
                continue
            seen.add(run_dir)
            row = _read_row(run_dir)
            if row is not None and _matches(row, features):
                rows.append(row)
    return sorted(rows, key=lambda r: (r.created_utc, str(r.path)), reverse=True)


def _read_row(run_dir: Path) -> RunRow | None:
    try:
        config = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict) or "head" not in config or "features" not in config:
        return None                     # another tool's config.json
    metrics = None
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        pass
    metrics = metrics if isinstance(metrics, dict) else None

    def accuracy(split: str) -> float | None:
        scores = (metrics or {}).get(split) or {}
        value = scores.get("accuracy") if isinstance(scores, dict) else None
        return float(value) if isinstance(value, (int, float)) else None

    seed = config.get("seed")
    streams = config.get("streams") if isinstance(config.get("streams"), list) else ["rgb"]
    return RunRow(path=run_dir, head=str(config["head"]), streams="+".join(map(str, streams)) +
                  ("-early" if config.get("fusion") == "early" else ""), cache=str(config["features"]),
                  seed=int(seed) if isinstance(seed, int) else None, finished=metrics is not None,
                  val_accuracy=accuracy("val"), test_accuracy=accuracy("test"),
                  created_utc=str(config.get("created_utc") or ""), unit=config.get("unit"))


def _matches(row: RunRow, features: str | Path | None) -> bool:
    if features is None:
        return True
    wanted = Path(features).expanduser()
    if wanted.exists():
        try:
            return Path(row.cache).resolve() == wanted.resolve()
        except OSError:
            return False
    return str(features) in Path(row.cache).name
