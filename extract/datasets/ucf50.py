"""UCF50 (Reddy and Shah, 2012) with leave-one-group-out folds, as folds of one cache.

UCF50 ships no split files: its 25 groups (``v_<Class>_gNN_cNN.avi``; the clips of one group
share actors and scene) are the protocol. The authors evaluate leave-one-group-out: 25 folds,
fold ``gNN`` tests group NN and trains on the other 24 (``protocol="logo"``, the default). Some
papers use 5 folds of 5 groups instead (``protocol="5fold"``: fold k tests groups 5k-4..5k).
Layout under ``root``: the class folders (``UCF50/`` as the archive unpacks, or directly in
``root``). Clips whose names carry no group are reported as unlisted and not extracted.
Validation (whole groups of each fold's train part, seeded) and folds:
:mod:`extract.datasets.official_splits`.
"""

from __future__ import annotations

from pathlib import Path

from harx.extract.videofiles import is_video_file
from harx.features.errors import DatasetFormatError, DatasetNotFoundError, InvalidOptionError

from . import register_dataset
from .base import DatasetIndex, DownloadSource, RemoteFile
from .official_splits import Fold, first_dir, index_with_folds, ucf_group

GROUPS = 25
PROTOCOLS = {"logo": "leave-one-group-out (Reddy and Shah 2012): 25 folds, fold gNN tests group NN",
             "5fold": "5 folds by group: fold k tests groups 5k-4..5k"}

#: The authors' site publishes no checksum: archive members are checked by their CRCs on unpacking.
SOURCE = DownloadSource(
    base_urls=("https://www.crcv.ucf.edu/data/",),
    files=(RemoteFile("UCF50.rar", 3_200_000_000, unpack_to="."),),
    note="no checksum is published for UCF50: each archive member's CRC is checked as it unpacks")


def ucf50_folds(paths: list[str], protocol: str = "logo") -> list[Fold]:
    """The folds of ``paths`` (``Class/v_Class_gNN_cNN.avi``) under ``protocol``.

    Raises:
        InvalidOptionError: an unknown protocol.
    """
    if protocol not in PROTOCOLS:
        raise InvalidOptionError(f"UCF50 protocol {protocol!r} is not one of: {', '.join(PROTOCOLS)}")
    group = {p: int(ucf_group(p)[1:]) for p in paths}
    if protocol == "logo":
        tested = {f"g{k:02d}": {k} for k in range(1, GROUPS + 1)}
    else:
        tested = {f"fold{k}": set(range(5 * k - 4, 5 * k + 1)) for k in range(1, 6)}
    return [Fold(name, {p: "test" if g in groups else "train" for p, g in group.items()})
            for name, groups in tested.items()]


@register_dataset(settings=("protocol", "val_fraction", "seed"), source=SOURCE)
def ucf50(root: Path | None = None, protocol: str = "logo", val_fraction: float = 0.15,
          seed: int = 0) -> DatasetIndex:
    """UCF50 with group folds: leave-one-group-out (25, default) or protocol=5fold."""
    if root is None or not Path(root).is_dir():
        where = "no folder given" if root is None else f"UCF50 folder {root} not found"
        raise DatasetNotFoundError(f"{where}; give --root the folder that holds UCF50/ "
                                   "(harx download ucf50 --root DIR fetches it)")
    root = Path(root)
    videos = first_dir([root / "UCF50", root], lambda d: any(_grouped_clips(c) for c in d.iterdir() if c.is_dir()))
    if videos is None:
        raise DatasetNotFoundError(f"no UCF50 class folder (<Class>/v_<Class>_gNN_cNN.avi) in {root} or {root / 'UCF50'}")
    names = sorted(c.name for c in videos.iterdir() if c.is_dir() and _grouped_clips(c))
    paths = [f"{c}/{p.name}" for c in names for p in _grouped_clips(videos / c)]
    index = index_with_folds("ucf50", root, names, ucf50_folds(paths, protocol), ucf_group, videos, val_fraction,
                             seed, f"UCF50 {PROTOCOLS[protocol]}",
                             {"protocol": protocol, "val_fraction": val_fraction, "seed": seed})
    if protocol != "logo":
        index.cache_name = f"ucf50-{protocol}"
    return index


def _grouped_clips(folder: Path) -> list[Path]:
    """The videos in ``folder`` whose names carry a UCF group (others are reported unlisted)."""
    clips = []
    for p in sorted(folder.iterdir()):
        if is_video_file(p):
            try:
                ucf_group(p.name)
            except DatasetFormatError:
                continue
            clips.append(p)
    return clips
