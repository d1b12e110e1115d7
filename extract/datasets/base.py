"""What a dataset adapter returns: the samples to embed, with their labels and split.

An adapter only says *which* samples exist. It does not decode (``extract.decode``) nor sample
frames (``extract.sampling``). Frame ranges are 0-based and end-exclusive everywhere in harx;
adapters whose annotation files use other conventions convert once, on reading.
"""

from __future__ import annotations

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
    resplit: Optional[Callable[[dict[Path, str]], "DatasetIndex"]] = field(default=None, repr=False,
                                                                          compare=False)
