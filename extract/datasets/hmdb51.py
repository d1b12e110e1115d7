"""HMDB51 (Kuehne et al., ICCV 2011) with its three official splits, as folds of one cache.

Layout under ``root``: the class folders (``hmdb51/`` or directly in ``root``) and the split files
``<class>_test_split{1,2,3}.txt`` (``testTrainMulti_7030_splits/`` or ``splits/`` in ``root`` or
beside it). Clips flagged 0 are unused by that fold. Validation (by source movie), folds, missing
and unlisted clips: :mod:`extract.datasets.official_splits`.
"""

from __future__ import annotations

from pathlib import Path

from . import register_dataset
from .base import DatasetIndex
from .official_splits import hmdb_source, index_with_folds, read_hmdb51_splits, split_folder, video_folder


@register_dataset
def hmdb51(root: Path | None = None, val_fraction: float = 0.15, seed: int = 0) -> DatasetIndex:
    """HMDB51 with its three official splits (70 train / 30 test clips per class; flag 0 unused)."""
    root, splits = split_folder(root, "HMDB51", "the class folders and testTrainMulti_7030_splits/",
                                ["testTrainMulti_7030_splits", "splits", ".", "../testTrainMulti_7030_splits"],
                                lambda d: any(d.glob("*_test_split1.txt")),
                                "no HMDB51 split files (<class>_test_split1.txt; test_train_splits.rar unpacks to "
                                "testTrainMulti_7030_splits/)")
    names, folds = read_hmdb51_splits(splits)
    return index_with_folds("hmdb51", root, names, folds, hmdb_source, video_folder(root, names, "hmdb51"), val_fraction,
                            seed, "HMDB51 official splits 1-3 (Kuehne et al. 2011): 70 train and 30 test clips per class, "
                            "clips flagged 0 unused", {"val_fraction": val_fraction, "seed": seed})
