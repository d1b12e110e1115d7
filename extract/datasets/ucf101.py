"""UCF101 (Soomro, Zamir, Shah, 2012) with its three official splits, as folds of one cache.

Layout under ``root``: the class folders (``UCF-101/`` as the archive unpacks, or directly in
``root``) and ``ucfTrainTestlist/`` (in ``root``, beside it, or ``root`` itself). Fold k tests
groups 7k-6..7k. Validation, folds, missing and unlisted clips: :mod:`extract.datasets.official_splits`.
"""

from __future__ import annotations

from pathlib import Path

from harx.features.errors import DatasetNotFoundError

from . import register_dataset
from .base import DatasetIndex
from .official_splits import first_dir, index_with_folds, read_ucf101_lists, ucf_group, video_folder


@register_dataset
def ucf101(root: Path | None = None, val_fraction: float = 0.15, seed: int = 0) -> DatasetIndex:
    """UCF101 with its three official splits (fold k tests groups 7(k-1)+1..7k)."""
    if root is None or not Path(root).is_dir():
        raise DatasetNotFoundError(f"UCF101 folder {root} not found; give --root the folder that holds UCF-101/ "
                                   "and ucfTrainTestlist/")
    root = Path(root)
    lists = first_dir([root / "ucfTrainTestlist", root, root.parent / "ucfTrainTestlist"],
                       lambda d: (d / "classInd.txt").is_file())
    if lists is None:
        raise DatasetNotFoundError(f"no ucfTrainTestlist/classInd.txt in {root} or beside it: UCF101's official "
                                   "split lists are needed (UCF101TrainTestSplits-RecognitionTask.zip)")
    names, folds = read_ucf101_lists(lists)
    return index_with_folds("ucf101", root, names, folds, ucf_group, video_folder(root, names, "UCF-101"), val_fraction,
                  seed, "UCF101 official splits 1-3 (Soomro et al. 2012): split k tests groups 7k-6..7k, the other "
                  "groups train", {"val_fraction": val_fraction, "seed": seed})
