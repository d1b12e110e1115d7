"""UCF101 (Soomro, Zamir, Shah, 2012) with its three official splits, as folds of one cache.

Layout under ``root``: the class folders (``UCF-101/`` as the archive unpacks, or directly in
``root``) and ``ucfTrainTestlist/`` (in ``root``, beside it, or ``root`` itself). Fold k tests
groups 7k-6..7k. Validation, folds, missing and unlisted clips: :mod:`extract.datasets.official_splits`.
"""

from __future__ import annotations

from pathlib import Path

from . import register_dataset
from .base import DatasetIndex, DownloadSource, RemoteFile
from .official_splits import index_with_folds, read_ucf101_lists, split_folder, ucf_group, video_folder


#: The authors' site publishes no checksums: archive members are checked by their CRCs on unpacking.
SOURCE = DownloadSource(
    base_urls=("https://www.crcv.ucf.edu/data/UCF101/",),
    files=(RemoteFile("UCF101.rar", 6_900_000_000, unpack_to="."),
           RemoteFile("UCF101TrainTestSplits-RecognitionTask.zip", 115_000, unpack_to=".")),
    note="no checksum is published for UCF101: each archive member's CRC is checked as it unpacks")


@register_dataset(settings=("val_fraction", "seed"), source=SOURCE)
def ucf101(root: Path | None = None, val_fraction: float = 0.15, seed: int = 0) -> DatasetIndex:
    """UCF101 with its three official splits (fold k tests groups 7(k-1)+1..7k)."""
    root, lists = split_folder(root, "UCF101", "UCF-101/ and ucfTrainTestlist/",
                               ["ucfTrainTestlist", ".", "../ucfTrainTestlist"], lambda d: (d / "classInd.txt").is_file(),
                               "no ucfTrainTestlist/classInd.txt (UCF101's official split lists, "
                               "UCF101TrainTestSplits-RecognitionTask.zip)")
    names, folds = read_ucf101_lists(lists)
    return index_with_folds("ucf101", root, names, folds, ucf_group, video_folder(root, names, "UCF-101"), val_fraction,
                            seed, "UCF101 official splits 1-3 (Soomro et al. 2012): split k tests groups 7k-6..7k, the other "
                            "groups train", {"val_fraction": val_fraction, "seed": seed})
