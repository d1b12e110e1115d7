"""What a dataset adapter returns: the samples to embed, with their labels and split.

An adapter only says *which* samples exist. It does not decode (``extract.decode``) nor sample
frames (``extract.sampling``). Frame ranges are 0-based and end-exclusive everywhere in harx;
adapters whose annotation files use other conventions convert once, on reading.
"""

from __future__ import annotations

from collections.abc import Callable

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class VideoSample:
    """One unit to embed: a whole video, or an annotated range of one.

    Attributes:
        sample_id: unique in the dataset, e.g. ``"person01_boxing_d1#2"``.
        path: the video file (absolute).
        label: class name.
        split: ``train``, ``val`` or ``test``.
        group: person/actor/group; splits never cross groups. ``None`` if unknown.
        scenario: recording condition (KTH ``d1``..``d4``), ``None`` if the dataset has none.
        frame_range: ``(start, stop)`` 0-based, end-exclusive, as annotated; ``None`` = whole video.
            Stage one clamps it to the frames that actually decode and records the clamp.
        video_id: the source video's name; several samples may share one video.
        folds: the sample's part (train, val, test, or "" unused) in each of the dataset's
            official folds (``DatasetIndex.folds``), for datasets that have several; ``split``
            is then its part in the first.
    """

    sample_id: str
    path: Path
    label: str
    split: str
    group: str | None = None
    scenario: str | None = None
    frame_range: tuple[int, int] | None = None
    video_id: str = ""
    folds: tuple[str, ...] = ()


@dataclass
class DatasetIndex:
    """An adapter's answer: class list (in label-index order), samples, and what was left out.

    ``missing`` names videos that the annotation lists but the folder lacks (a partial download);
    stage one extracts what is present and reports the count. ``split_protocol`` states in words
    how the train/val/test split was made; it is stored in the cache and quoted in every report.

    ``resplit`` is set only where harx made the split (no official one): given the videos that
    do not decode (path -> why), it returns the index split without them, so a failed video does
    not take a video's place in train, val or test. Those videos are then in ``left_out`` as
    ``(sample_id, path, reason)``; stage one records them as failures.

    ``options`` are the adapter's options and facts it found; those the registration names as
    ``settings`` enter the cache's settings hash (:func:`extract.datasets.register_dataset`).
    """

    name: str
    root: Path
    class_names: list[str]
    samples: list[VideoSample]
    split_protocol: str
    unit: str = "video"
    missing: list[str] = field(default_factory=list)
    options: dict = field(default_factory=dict)
    left_out: list[tuple[str, Path, str]] = field(default_factory=list)
    folds: list[str] = field(default_factory=list)   # names of the official folds, if several
    unlisted: list[str] = field(default_factory=list)  # videos in the folder that no split file names
    cache_name: str = ""   # the default cache file's first word; "" = name (kth video unit: kth-video)
    resplit: Optional[Callable[[dict[Path, str]], "DatasetIndex"]] = field(default=None, repr=False,
                                                                          compare=False)


@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset's download, fetched from ``<base url><name>`` into ``root/<name>``.

    Attributes:
        name: path under the base URL, and the file's name on disk.
        approx_bytes: its size, APPROXIMATE, for planning only (never used to check a download).
        sha1: the published SHA-1, checked after download; ``None`` where none is published.
        unpack_to: folder under the root its members go to (``"."``: the root); ``None``: kept as is.
        flatten: members go to ``unpack_to`` by base name (archives that hold them flat or in a folder).
        inner_to: the archive holds archives (HMDB51: one RAR per class): each is unpacked into
            this folder under the root, then deleted; ``unpack_to`` is then unused.
        check: for a file kept as is: ``path -> None`` if plausible, else why not (a file with no
            published hash must at least parse).
        unpacked_bytes: disk its members take once unpacked; ``None``: about ``approx_bytes``
            (videos are already compressed).
    """

    name: str
    approx_bytes: int
    sha1: str | None = None
    unpack_to: str | None = None
    flatten: bool = False
    inner_to: str | None = None
    check: Optional[Callable[[Path], Optional[str]]] = field(default=None, compare=False)
    unpacked_bytes: int | None = None

    @property
    def is_archive(self) -> bool:
        return self.unpack_to is not None or self.inner_to is not None

    @property
    def is_rar(self) -> bool:
        return self.name.lower().endswith(".rar")


@dataclass(frozen=True)
class DownloadSource:
    """Where a dataset is published: base URLs tried in order (mirrors), and its files."""

    base_urls: tuple[str, ...]
    files: tuple[RemoteFile, ...]
    note: str = ""    # said before downloading, e.g. that no checksum is published

    def rar_to_unpack(self, done: Callable[["RemoteFile"], bool]) -> bool:
        """Whether a RAR archive remains to unpack (``done(file)``: already unpacked)."""
        return any(f.is_rar and not done(f) for f in self.files)
