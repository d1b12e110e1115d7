"""HMDB51 (Kuehne et al., ICCV 2011) with its three official splits, as folds of one cache.

Layout under ``root``: the class folders (``hmdb51/`` or directly in ``root``) and the split files
``<class>_test_split{1,2,3}.txt`` (``testTrainMulti_7030_splits/`` or ``splits/`` in ``root`` or
beside it). Clips flagged 0 are unused by that fold. Validation (by source movie), folds, missing
and unlisted clips: :mod:`extract.datasets.official_splits`.
"""

from __future__ import annotations

from pathlib import Path

from . import register_dataset
from .base import DatasetIndex, DownloadSource, RemoteFile
from .official_splits import hmdb_source, index_with_folds, read_hmdb51_splits, split_folder, video_folder


#: hmdb51_org.rar holds one RAR per class (``<class>/<clip>.avi`` inside); they are unpacked into
#: ``hmdb51/`` and deleted. No checksums are published: members are checked by their CRCs.
SOURCE = DownloadSource(
    base_urls=("http://serre-lab.clps.brown.edu/wp-content/uploads/2013/10/",),
    files=(RemoteFile("hmdb51_org.rar", 2_100_000_000, inner_to="hmdb51", unpacked_bytes=2_100_000_000),
           RemoteFile("test_train_splits.rar", 200_000, unpack_to=".")),
    note="no checksum is published for HMDB51: each archive member's CRC is checked as it unpacks")


@register_dataset(settings=("val_fraction", "seed"), source=SOURCE)
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
