"""Dataset adapters: a registry of functions ``(root, **options) -> DatasetIndex``.

The registry key is the function name and the CLI word (``harx extract --dataset kth``).
Importing a family module registers it, as in timm's model registry.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from harx.features.errors import UnknownNameError

from .base import SPLITS, DatasetIndex, VideoSample

DATASETS: dict[str, Callable[..., DatasetIndex]] = {}


def register_dataset(fn: Callable[..., DatasetIndex]) -> Callable[..., DatasetIndex]:
    """Add ``fn`` to :data:`DATASETS` under its own name."""
    if fn.__name__ in DATASETS:
        raise ValueError(f"dataset {fn.__name__!r} is registered twice")
    DATASETS[fn.__name__] = fn
    return fn


def list_datasets() -> list[str]:
    return sorted(DATASETS)


def create_dataset(name: str, root: str | Path | None = None, **options) -> DatasetIndex:
    """Index dataset ``name`` under ``root``. Options that are ``None`` keep the adapter's defaults.

    Raises:
        UnknownNameError: ``name`` is not registered.
        DatasetNotFoundError: ``root`` or a required annotation file is missing.
    """
    if name not in DATASETS:
        raise UnknownNameError("dataset", name, list_datasets())
    options = {k: v for k, v in options.items() if v is not None}
    return DATASETS[name](root=None if root is None else Path(root), **options)


__all__ = ["DATASETS", "SPLITS", "DatasetIndex", "VideoSample", "create_dataset", "list_datasets",
           "register_dataset"]

# Importing a family module registers its adapter (after register_dataset exists).
from . import folder, kth, demo, ucf101, hmdb51  # noqa: E402,F401  isort: skip
