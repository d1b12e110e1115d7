"""The official split files of UCF101 and HMDB51, read as folds; validation carved by group.

What the ``ucf101`` and ``hmdb51`` adapters share: one extraction serves every fold, so a fold is
a mapping ``relative path -> "train" | "val" | "test"``, each sample carries its part in every
fold (``VideoSample.folds``), and the cache stores them all (``fold_<name>`` columns). Formats (``../shared/REFERENCE.md`` §5):

* UCF101, ``ucfTrainTestlist/``: ``classInd.txt`` (``<1-based index> <Class>``), ``trainlist0k.txt``
  (``<Class>/<file> <index>``) and ``testlist0k.txt`` (``<Class>/<file>``), k = 1, 2, 3, with CRLF
  line endings. The class folder ``HandstandPushups`` holds files named ``v_HandStandPushups_*``;
  paths are kept as the lists spell them (folder, then file). Clip names carry their group
  (``_g08_``): fold k tests groups 7(k-1)+1 .. 7k, groups 22-25 are always train.
* HMDB51: one file per class and fold, ``<class>_test_split<k>.txt``, lines ``<file> <flag>`` with
  flag 0 unused, 1 train, 2 test (70 train and 30 test clips per class and fold). The source
  movie is the file name up to the class name (``50_FIRST_DATES_drink_u_...`` -> ``50_FIRST_DATES``).

Neither has an official validation set. :func:`carve_validation` takes one from a fold's train
part by group (UCF101: the clip's group; HMDB51: its source movie), so that no group is in two
parts, seeded and recorded by the caller.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from harx.extract.videofiles import is_video_file
from harx.features.errors import DatasetFormatError, DatasetNotFoundError, InvalidOptionError

from .base import DatasetIndex, VideoSample

UCF_FOLDS = 3
HMDB_FOLDS = 3
_UCF_GROUP = re.compile(r"_g(\d+)_c(\d+)(?:\.\w+)?$", re.I)
_HMDB_FILE = re.compile(r"^(.+)_test_split(\d+)\.txt$")


@dataclass(frozen=True)
class Fold:
    """One official train/test split: ``assignment`` maps each listed clip's path relative to the
    dataset root (``Class/file``) to ``train`` or ``test`` (HMDB51's unused clips are left out)."""

    name: str
    assignment: dict[str, str]


def _lines(path: Path) -> list[tuple[int, str]]:
    """Non-blank lines with their 1-based numbers: CRLF, a BOM and stray spaces removed."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        text = path.read_text(encoding="latin-1")
    return [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def _need(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DatasetNotFoundError(f"{path} not found: {what}")
    return path


def read_ucf101_lists(folder: str | Path) -> tuple[list[str], list[Fold]]:
    """The class names (in ``classInd.txt`` order) and the three official folds of UCF101.

    Raises:
        DatasetNotFoundError: a list file is missing.
        DatasetFormatError: a line that is not in the format, naming the file and line.
    """
    folder = Path(folder)
    hint = "UCF101's split lists (ucfTrainTestlist/) are needed"
    classes: dict[int, str] = {}
    index_file = _need(folder / "classInd.txt", hint)
    for n, line in _lines(index_file):
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise DatasetFormatError(f"{index_file}:{n}: expected '<index> <Class>', got {line!r}")
        classes[int(parts[0])] = parts[1]
    if sorted(classes) != list(range(1, len(classes) + 1)):
        raise DatasetFormatError(f"{index_file}: class indices are not 1..{len(classes)}")
    names = [classes[i] for i in sorted(classes)]
    folds = []
    for k in range(1, UCF_FOLDS + 1):
        assignment: dict[str, str] = {}
        train_file = _need(folder / f"trainlist0{k}.txt", hint)
        for n, line in _lines(train_file):
            parts = line.split()
            if len(parts) != 2 or not parts[1].isdigit() or int(parts[1]) not in classes:
                raise DatasetFormatError(f"{train_file}:{n}: expected '<Class>/<file> <class index>', got {line!r}")
            path = _ucf_path(parts[0], train_file, n)
            if path.split("/")[0] != classes[int(parts[1])]:
                raise DatasetFormatError(f"{train_file}:{n}: {path} is in folder {path.split('/')[0]} but has the "
                                         f"index of {classes[int(parts[1])]}")
            assignment[path] = "train"
        test_file = _need(folder / f"testlist0{k}.txt", hint)
        for n, line in _lines(test_file):
            path = _ucf_path(line.split()[0], test_file, n)
            if path.split("/")[0] not in names:
                raise DatasetFormatError(f"{test_file}:{n}: {path} is in no class of classInd.txt")
            if assignment.get(path) == "train":
                raise DatasetFormatError(f"{test_file}:{n}: {path} is also in {train_file.name}")
            assignment[path] = "test"
        folds.append(Fold(f"split{k}", assignment))
    return names, folds


def _ucf_path(raw: str, where: Path, n: int) -> str:
    path = raw.replace("\\", "/").strip("/")
    if path.count("/") != 1:
        raise DatasetFormatError(f"{where}:{n}: expected '<Class>/<file>', got {raw!r}")
    return path


def ucf_group(path: str | Path) -> str:
    """``"g08"`` from ``.../v_Class_g08_c01.avi``.

    Raises:
        DatasetFormatError: the name carries no group.
    """
    match = _UCF_GROUP.search(Path(path).name)
    if match is None:
        raise DatasetFormatError(f"{path}: a UCF clip name ends in _gNN_cNN, this one does not")
    return f"g{int(match.group(1)):02d}"


def read_hmdb51_splits(folder: str | Path) -> tuple[list[str], list[Fold]]:
    """The class names (sorted) and the three official folds of HMDB51, from the
    ``<class>_test_split<k>.txt`` files in ``folder``.

    Raises:
        DatasetNotFoundError: no split file, or a class lacks one of its three.
        DatasetFormatError: a line that is not ``<file> <0|1|2>``, naming the file and line.
    """
    folder = Path(folder)
    files: dict[tuple[str, int], Path] = {}
    for path in folder.glob("*_test_split*.txt") if folder.is_dir() else ():
        match = _HMDB_FILE.match(path.name)
        if match:
            files[(match.group(1), int(match.group(2)))] = path
    names = sorted({c for c, _ in files})
    if not names:
        raise DatasetNotFoundError(f"no HMDB51 split files (<class>_test_split1.txt) in {folder}")
    folds = []
    for k in range(1, HMDB_FOLDS + 1):
        assignment: dict[str, str] = {}
        for name in names:
            path = files.get((name, k))
            if path is None:
                raise DatasetNotFoundError(f"{folder / f'{name}_test_split{k}.txt'} not found: every class needs "
                                           f"its {HMDB_FOLDS} split files")
            for n, line in _lines(path):
                parts = line.split()
                if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                    raise DatasetFormatError(f"{path}:{n}: expected '<file> <0|1|2>', got {line!r}")
                if parts[1] != "0":
                    assignment[f"{name}/{parts[0]}"] = "train" if parts[1] == "1" else "test"
        folds.append(Fold(f"split{k}", assignment))
    return names, folds


def hmdb_source(path: str | Path) -> str:
    """The source movie of an HMDB51 clip: its file name up to ``_<class>_`` (the class is the
    clip's folder), e.g. ``drink/50_FIRST_DATES_drink_u_nm_np1_fr_goo_29.avi`` -> ``50_FIRST_DATES``."""
    path = Path(path)
    cls, stem = path.parent.name, path.stem
    cut = stem.rfind(f"_{cls}_")
    return stem[:cut] if cut > 0 else stem


def carve_validation(fold: Fold, group_of: Callable[[str], str], fraction: float = 0.15,
                     seed: int = 0) -> Fold:
    """``fold`` with about ``fraction`` of each class's train clips moved to ``val``, whole groups
    at a time (a group never spans two parts), groups drawn in a seeded order. A class whose train
    clips form a single group keeps them all in train."""
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must lie in (0, 1), got {fraction}")
    by_class: dict[str, dict[str, list[str]]] = {}
    for path, part in fold.assignment.items():
        if part == "train":
            by_class.setdefault(path.split("/")[0], {}).setdefault(group_of(path), []).append(path)
    assignment = dict(fold.assignment)
    rng = np.random.default_rng(seed)
    for cls in sorted(by_class):
        groups = by_class[cls]
        if len(groups) < 2:
            continue
        order = sorted(groups)
        rng.shuffle(order)
        total, taken = sum(len(v) for v in groups.values()), 0
        for group in order[:-1]:              # at least one group stays in train
            if taken >= fraction * total:
                break
            for path in groups[group]:
                assignment[path] = "val"
            taken += len(groups[group])
    return Fold(fold.name, assignment)


# ----------------------------------------------------------------------------- building an index

def first_dir(candidates: list[Path], test: Callable[[Path], bool]) -> Path | None:
    """The first of ``candidates`` that is a folder passing ``test``."""
    return next((c for c in candidates if c.is_dir() and test(c)), None)


def split_folder(root: Path | None, dataset: str, layout: str, candidates: list[str],
                 holds: Callable[[Path], bool], missing: str) -> tuple[Path, Path]:
    """``(root, the folder of split files)``: the first of ``candidates`` (relative to ``root``;
    ``".."``-prefixed ones beside it) for which ``holds`` is true.

    Raises:
        DatasetNotFoundError: ``root`` is no folder (``layout`` says what it should hold), or no
            candidate holds the split files (``missing`` says which and where they come from).
    """
    if root is None or not Path(root).is_dir():
        where = "no folder given" if root is None else f"{dataset} folder {root} not found"
        raise DatasetNotFoundError(f"{where}; give --root the folder that holds {layout} (harx download "
                                   f"{dataset.lower()} --root DIR fetches it)")
    root = Path(root)
    found = first_dir([root / c for c in candidates], holds)
    if found is None:
        raise DatasetNotFoundError(f"{missing} in {root} or beside it")
    return root, found


def video_folder(root: Path, names: list[str], archive_dir: str) -> Path:
    """The folder holding the class folders: ``root/<archive_dir>`` or ``root``."""
    found = first_dir([root / archive_dir, root], lambda d: any((d / n).is_dir() for n in names))
    if found is None:
        raise DatasetNotFoundError(f"no class folder of the split files ({', '.join(names[:3])}, ...) in {root} or "
                                   f"{root / archive_dir}")
    return found


def _present(videos: Path, class_names: list[str], listed: set[str]) -> dict[str, Path]:
    """The videos under ``videos/<class>/`` by the path the split files would give them. A video
    re-encoded to another container (``clip.mp4`` for a listed ``clip.avi``, as many HMDB51 and
    UCF101 copies are) takes the listed name, so its sample id and split are the official ones."""
    present = {f"{p.parent.name}/{p.name}": p for cls in class_names if (videos / cls).is_dir()
               for p in sorted((videos / cls).iterdir()) if is_video_file(p)}
    by_stem = {_stem(rel): rel for rel in listed}
    found = {rel: path for rel, path in present.items() if rel in listed}
    for rel, path in present.items():
        official = by_stem.get(_stem(rel))
        if rel in listed:
            continue
        if official is not None and official not in found:
            found[official] = path            # a re-encoded copy of a listed clip
        else:
            found[rel] = path                 # unlisted: reported under its own name
    return found


def _stem(rel: str) -> str:
    return rel.rsplit(".", 1)[0]


def index_with_folds(name: str, root: Path, class_names: list[str], folds: list[Fold],
                     group_of: Callable[[str], str], videos: Path, val_fraction: float, seed: int, protocol: str,
                     options: dict) -> DatasetIndex:
    """The index of a dataset with official ``folds``: validation carved from each, one sample per
    listed clip present under ``videos/<class>/``, its part in every fold, missing and unlisted clips."""
    if not 0 < val_fraction < 1:
        raise InvalidOptionError(f"val_fraction must lie in (0, 1), got {val_fraction}")
    folds = [carve_validation(f, group_of, val_fraction, seed) for f in folds]
    listed = set().union(*(f.assignment for f in folds))
    present = _present(videos, class_names, listed)
    rank = {c: i for i, c in enumerate(class_names)}
    samples = []
    for rel in sorted(listed & set(present), key=lambda r: (rank[r.split("/")[0]], r)):
        cls = rel.split("/")[0]
        parts = tuple(f.assignment.get(rel, "") for f in folds)
        samples.append(VideoSample(sample_id=rel, path=present[rel], label=cls, split=parts[0],
                                   group=f"{cls}/{group_of(rel)}", video_id=Path(rel).stem, folds=parts))
    if not samples:
        raise DatasetNotFoundError(f"none of the {len(listed)} clips the {name} split files name is in {videos}")
    return DatasetIndex(name=name, root=Path(root), class_names=list(class_names), samples=samples,
                        split_protocol=protocol + (f"; val: {val_fraction:g} of each class's train clips of each fold, "
                                                   f"whole groups, seed {seed}"), unit="video",
                        missing=sorted(listed - set(present)), options=options, folds=[f.name for f in folds],
                        unlisted=sorted(set(present) - listed))
