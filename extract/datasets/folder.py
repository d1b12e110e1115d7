"""Any folder of videos (``ROOT/<class>/<video>``) or a CSV manifest, as a dataset.

Two ways to say what is in a dataset:

* **Folder layout**: ``ROOT/<class>/<video>``; class names are the sorted folder names, so label
  indices are the same on every machine. Videos may sit in sub-folders of a class folder. Hidden
  files, non-video files and videos directly under ``ROOT`` are ignored (and noted in ``options``).
* **Manifest**: a CSV with a header row ``path,label[,group][,split]`` (any order; extra columns
  are kept per row, and a ``scenario`` column is used). Paths are relative to the manifest's
  folder, or absolute. It is used when ``manifest=`` is given, when ``root`` is a ``.csv`` file,
  or when ``ROOT/manifest.csv`` exists.

When no split is given it is made here, reproducibly from ``seed``: by group when groups are
known (a group never spans two splits), else stratified by class. ``split_protocol`` says which.
Stage one first probes the videos (:mod:`extract.probe`) and splits again without those that do
not open (``DatasetIndex.resplit``), so a broken file takes no video's place in a split.
"""

from __future__ import annotations

import csv
import hashlib
import os
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from harx.features.errors import DatasetFormatError, DatasetNotFoundError, InvalidOptionError
from harx.extract.videofiles import VIDEO_EXTENSIONS, is_video_file  # shared with harx predict

from . import register_dataset
from .base import SPLITS, DatasetIndex, VideoSample

MANIFEST_NAME = "manifest.csv"
SPLIT_ALIASES = {
    "train": "train", "training": "train",
    "val": "val", "validation": "val",
    "test": "test", "testing": "test",
}
REQUIRED_COLUMNS = ("path", "label")
KNOWN_COLUMNS = ("path", "label", "group", "split")
MIN_VIDEOS_TO_SPLIT = 3  # a class with fewer videos goes whole into train


@dataclass(frozen=True)
class ManifestRow:
    """One video the dataset lists: where it is, its label, and what the manifest said of it.

    ``line`` is the manifest line (1-based) for error messages, 0 for a scanned folder.
    ``written`` is the path as the manifest wrote it (or relative to the root, when scanned).
    ``extra`` holds the other columns, e.g. ``scenario``; empty cells are left out.
    """

    line: int
    path: Path
    written: str
    label: str
    group: str | None = None
    split: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


def normalize_split(value: str, where: str) -> str | None:
    """``train``/``val``/``test`` (and their long forms) to the harx word; blank to ``None``."""
    word = value.strip().lower()
    if not word:
        return None
    if word not in SPLIT_ALIASES:
        raise DatasetFormatError(
            f"{where}: split {value!r} is not one of train, val, test "
            "(also accepted: training, validation, testing); fix the split column")
    return SPLIT_ALIASES[word]


# ----------------------------------------------------------------------------- manifest reading

def read_manifest(path: str | Path) -> list[ManifestRow]:
    """Parse a manifest CSV into rows with absolute paths; no file-system checks on the videos.

    Accepts a UTF-8 BOM, CRLF line ends, blank lines and quoted cells (commas, spaces, unicode).

    Raises:
        DatasetNotFoundError: the manifest itself does not exist.
        DatasetFormatError: bad header, bad row (named by line number), not UTF-8, no rows.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DatasetNotFoundError(
            f"manifest {path} does not exist; pass a CSV with columns path,label[,group][,split]")
    base = path.absolute().parent
    try:
        with path.open("r", encoding="utf-8-sig", newline="") as handle:
            rows = _parse_rows(csv.reader(handle, strict=True), path, base)
    except UnicodeDecodeError as err:
        raise DatasetFormatError(
            f"manifest {path} is not UTF-8 text ({err.reason} at byte {err.start}); "
            "save it as UTF-8 CSV") from None
    if not rows:
        raise DatasetFormatError(f"manifest {path} has a header but lists no videos; add rows "
                                 "path,label[,group][,split]")
    return rows


def _parse_rows(reader, path: Path, base: Path) -> list[ManifestRow]:
    """Header first (the first non-blank row), then one ManifestRow per non-blank row."""
    header: list[str] | None = None
    rows: list[ManifestRow] = []
    try:
        for cells in reader:
            if not any(cell.strip() for cell in cells):
                continue
            if header is None:
                header = _check_header(cells, f"manifest {path} line {reader.line_num}")
                continue
            rows.append(_parse_row(cells, header, reader.line_num, path, base))
    except csv.Error as err:
        raise DatasetFormatError(
            f"manifest {path} line {reader.line_num}: {err}; check the quoting") from None
    if header is None:
        raise DatasetFormatError(f"manifest {path} is empty; write a header row path,label "
                                 "[,group][,split] and one row per video")
    return rows


def _check_header(cells: list[str], where: str) -> list[str]:
    """Lower-cased column names; ``path`` and ``label`` must be there, no name twice."""
    names = [cell.strip().lower() for cell in cells]
    missing = [name for name in REQUIRED_COLUMNS if name not in names]
    if missing:
        raise DatasetFormatError(
            f"{where}: header {','.join(cells)!r} lacks column(s) {', '.join(missing)}; the first "
            "row must name the columns, e.g. path,label,group,split")
    twice = sorted(name for name, n in Counter(names).items() if n > 1 and name)
    if twice:
        raise DatasetFormatError(f"{where}: column(s) {', '.join(twice)} appear twice in the "
                                 "header; keep one of each")
    return names


def _parse_row(cells: list[str], header: list[str], line: int, path: Path,
               base: Path) -> ManifestRow:
    """One data row; every complaint names the manifest line."""
    where = f"manifest {path} line {line}"
    if len(cells) != len(header):
        raise DatasetFormatError(
            f"{where}: expected {len(header)} fields ({','.join(header)}), got {len(cells)}; "
            "quote paths or labels that contain commas")
    values = dict(zip(header, cells))
    written = values["path"].strip()
    label = values["label"].strip()
    if not written:
        raise DatasetFormatError(f"{where}: empty path; every row needs a video path")
    if not label:
        raise DatasetFormatError(f"{where}: empty label for {written!r}; every row needs a class")
    video = Path(written).expanduser()
    video = Path(os.path.normpath(video if video.is_absolute() else base / video))
    extra = {name: value.strip() for name, value in values.items()
             if name not in KNOWN_COLUMNS and name and value.strip()}
    return ManifestRow(line=line, path=video, written=written, label=label,
                       group=values.get("group", "").strip() or None,
                       split=normalize_split(values.get("split", ""), where), extra=extra)


# ----------------------------------------------------------------------------- folder scanning

def scan_folder(root: Path) -> tuple[list[ManifestRow], list[str]]:
    """Rows for ``ROOT/<class>/**/<video>``, sorted; plus notes on what was ignored."""
    rows: list[ManifestRow] = []
    notes: list[str] = []
    loose = sorted(p.name for p in root.iterdir() if p.is_file() and is_video_file(p))
    if loose:
        notes.append(f"ignored {len(loose)} video(s) directly under the root (e.g. {loose[0]!r}); "
                     "move them into a class folder")
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        videos = _videos_under(folder)
        if not videos:
            notes.append(f"ignored class folder {folder.name!r}: it holds no videos")
            continue
        rows.extend(ManifestRow(line=0, path=video, written=video.relative_to(root).as_posix(),
                                label=folder.name) for video in videos)
    return rows, notes


def _videos_under(folder: Path) -> list[Path]:
    """Video files anywhere below ``folder``, skipping hidden files and hidden folders.

    Symlinked folders are followed (datasets are often assembled that way), each real folder
    once, so a link back to an ancestor cannot loop forever.
    """
    found = []
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(Path(dirpath) / name for name in filenames if is_video_file(Path(name)))
    return sorted(found)


# ----------------------------------------------------------------------------- splitting

def check_fractions(val_fraction: float, test_fraction: float) -> None:
    """Both in [0, 1) and leaving something for train."""
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise InvalidOptionError(f"{name} must be in [0, 1); got {value}")
    if val_fraction + test_fraction >= 1.0:
        raise InvalidOptionError(
            f"val_fraction + test_fraction must be below 1 so train gets videos; got "
            f"{val_fraction} + {test_fraction}")


def split_groups(sizes: dict[str, int], val_fraction: float, test_fraction: float,
                 seed: int) -> dict[str, str]:
    """Assign whole groups to splits, aiming at the fractions counted in videos.

    Groups are shuffled with ``seed``; each goes to the split furthest below its target. Then
    every split with a positive fraction that came out empty takes the smallest group of the
    split holding the most groups, so with 3 or more groups no wanted split is empty.
    """
    names = sorted(sizes)
    random.Random(seed).shuffle(names)
    total = sum(sizes.values())
    fractions = {"train": 1.0 - val_fraction - test_fraction, "val": val_fraction,
                 "test": test_fraction}
    count = dict.fromkeys(SPLITS, 0)
    members: dict[str, list[str]] = {s: [] for s in SPLITS}
    for name in names:
        split = max(SPLITS, key=lambda s: fractions[s] * total - count[s])
        members[split].append(name)
        count[split] += sizes[name]
    for split in ("train", "test", "val"):
        if fractions[split] > 0 and not members[split]:
            donor = max(SPLITS, key=lambda s: len(members[s]))
            if len(members[donor]) > 1:
                moved = min(members[donor], key=lambda g: (sizes[g], g))
                members[donor].remove(moved)
                members[split].append(moved)
    return {name: split for split, group_names in members.items() for name in group_names}


def split_stratified(labels: dict[str, str], val_fraction: float, test_fraction: float,
                     seed: int) -> tuple[dict[str, str], list[str]]:
    """Per class, a seeded shuffle cut into train/val/test; tiny classes go whole to train.

    Returns the split of each key of ``labels`` and the classes too small to split. Each class
    has its own random stream (seeded by seed and class name), so adding a class leaves the
    others' splits unchanged.
    """
    by_class: dict[str, list[str]] = defaultdict(list)
    for key, label in labels.items():
        by_class[label].append(key)
    result: dict[str, str] = {}
    tiny: list[str] = []
    for label in sorted(by_class):
        keys = sorted(by_class[label])
        if len(keys) < MIN_VIDEOS_TO_SPLIT:
            tiny.append(label)
            result.update(dict.fromkeys(keys, "train"))
            continue
        random.Random(f"{seed}:{label}").shuffle(keys)
        n_val, n_test = _class_counts(len(keys), val_fraction, test_fraction)
        for i, key in enumerate(keys):
            result[key] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    return result, tiny


def _class_counts(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """Rounded val/test counts, at least 1 each when wanted, at least 1 video left for train."""
    n_val = max(1, round(n * val_fraction)) if val_fraction > 0 else 0
    n_test = max(1, round(n * test_fraction)) if test_fraction > 0 else 0
    while n_val + n_test > n - 1:
        if n_val >= n_test:
            n_val -= 1
        else:
            n_test -= 1
    return n_val, n_test


def _percent(value: float) -> str:
    return f"{100 * value:g}%"


def _assign_splits(rows: list[ManifestRow], source: str, val_fraction: float,
                   test_fraction: float, seed: int) -> tuple[list[str], str]:
    """The split of every row, and the sentence that says how it was made."""
    given = [row for row in rows if row.split is not None]
    if given and len(given) != len(rows):
        first = next(row for row in rows if row.split is None)
        raise DatasetFormatError(
            f"{source} line {first.line}: no split for {first.written!r}, but {len(given)} other "
            f"row(s) give one; fill the split column for all {len(rows)} rows or for none")
    if given:
        return [row.split for row in rows], _given_protocol(rows, source)
    if any(row.group for row in rows):
        return _group_splits(rows, val_fraction, test_fraction, seed)
    return _stratified_splits(rows, val_fraction, test_fraction, seed)


def _given_protocol(rows: list[ManifestRow], source: str) -> str:
    """Quote the manifest, and say so when a group crosses splits (the user's call, not ours)."""
    splits_of: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        if row.group:
            splits_of[row.group].add(row.split)
    crossing = sorted(g for g, s in splits_of.items() if len(s) > 1)
    text = f"given by the split column of {source}"
    if crossing:
        text += (f"; note: {len(crossing)} group(s) appear in more than one split "
                 f"(e.g. {crossing[0]!r})")
    return text


def _group_splits(rows: list[ManifestRow], val_fraction: float, test_fraction: float,
                  seed: int) -> tuple[list[str], str]:
    """Split by group; a row without a group counts as a group of its own."""
    keys = [row.group or f"\0{row.path}" for row in rows]
    sizes = Counter(keys)
    assignment = split_groups(dict(sizes), val_fraction, test_fraction, seed)
    splits = [assignment[key] for key in keys]
    n_groups = Counter(assignment.values())
    n_videos = Counter(splits)
    train = 1.0 - val_fraction - test_fraction
    text = (f"by group, seeded {seed}: groups shuffled and assigned to reach "
            f"{_percent(train)}/{_percent(val_fraction)}/{_percent(test_fraction)} of videos "
            f"(train/val/test); got {n_groups['train']}/{n_groups['val']}/{n_groups['test']} "
            f"groups, {n_videos['train']}/{n_videos['val']}/{n_videos['test']} videos; "
            "no group spans two splits")
    ungrouped = sum(1 for row in rows if not row.group)
    if ungrouped:
        text += f"; {ungrouped} video(s) without a group each count as their own group"
    return splits, text


def _stratified_splits(rows: list[ManifestRow], val_fraction: float, test_fraction: float,
                       seed: int) -> tuple[list[str], str]:
    """Split each class by the fractions; no group is known, so people may cross splits."""
    keys = [str(i) for i in range(len(rows))]
    assignment, tiny = split_stratified(dict(zip(keys, (r.label for r in rows))), val_fraction,
                                        test_fraction, seed)
    splits = [assignment[key] for key in keys]
    n_videos = Counter(splits)
    train = 1.0 - val_fraction - test_fraction
    text = (f"stratified by class, seeded {seed}: {_percent(train)}/{_percent(val_fraction)}/"
            f"{_percent(test_fraction)} of each class's videos (train/val/test); got "
            f"{n_videos['train']}/{n_videos['val']}/{n_videos['test']} videos; no groups known, "
            "so one person may appear in several splits")
    if tiny:
        text += (f"; {len(tiny)} class(es) with fewer than {MIN_VIDEOS_TO_SPLIT} videos are all "
                 f"in train: {', '.join(tiny)}")
    return splits, text


# ----------------------------------------------------------------------------- indexing

def sample_ids(paths: list[Path], root: Path) -> list[str]:
    """Path relative to ``root`` without extension; keep the extension where that would clash.

    A path outside ``root`` (an absolute manifest path) uses its absolute form.
    """
    def stem_id(path: Path, keep_suffix: bool) -> str:
        try:
            rel = path.relative_to(root)
        except ValueError:
            rel = path
        return rel.as_posix() if keep_suffix else rel.with_suffix("").as_posix()

    ids = [stem_id(p, keep_suffix=False) for p in paths]
    clashes = {i for i, n in Counter(ids).items() if n > 1}
    return [stem_id(p, keep_suffix=True) if i in clashes else i for p, i in zip(paths, ids)]


def build_index(name: str, root: Path, rows: list[ManifestRow], *, source: str, seed: int,
                val_fraction: float, test_fraction: float, options: dict | None = None,
                undecodable: dict[Path, str] | None = None) -> DatasetIndex:
    """Turn rows into a DatasetIndex: make or check the split, then set missing files aside.

    ``undecodable`` (path -> why) are videos left out of a split made here; ids stay those of
    the full list. The index's ``resplit`` rebuilds it with such a dict (none for a given split).

    Raises:
        DatasetFormatError: a path listed twice, or a split given for some rows only.
        DatasetNotFoundError: none of the listed videos exists.
    """
    _check_duplicates(rows, source)
    on_disk = [row.path.is_file() for row in rows]
    if not any(on_disk):
        raise DatasetNotFoundError(
            f"none of the {len(rows)} videos listed in {source} exists (first: {rows[0].path}); "
            "paths are read relative to the manifest's folder, or give absolute paths")
    # Split and name every listed video, present or not, so that a partial download gives each
    # video the same split and id as the full one. A video that does not decode gets no split.
    undecodable = undecodable or {}
    kept = [row for row in rows if row.path not in undecodable]
    splits, protocol = _assign_splits(kept, source, val_fraction, test_fraction, seed)
    split_of = dict(zip((row.path for row in kept), splits))
    ids = sample_ids([row.path for row in rows], root)
    samples = [
        VideoSample(sample_id=sid, path=row.path, label=row.label, split=split_of[row.path],
                    group=row.group, scenario=row.extra.get("scenario"), frame_range=None,
                    video_id=sid)
        for row, sid, present in zip(rows, ids, on_disk) if present and row.path in split_of
    ]
    left_out = [(sid, row.path, undecodable[row.path]) for row, sid in zip(rows, ids)
                if row.path in undecodable]
    if left_out:
        protocol += (f"; {len(left_out)} video(s) that do not decode are left out of the split "
                     "(recorded as failures)")
    missing = [row.written for row, present in zip(rows, on_disk) if not present]
    class_names = sorted({row.label for row in rows})
    notes = list((options or {}).get("notes", []))
    absent = set(class_names) - {row.label for row, present in zip(rows, on_disk) if present}
    empty = sorted(absent)
    if empty:
        notes.append(f"{len(empty)} class(es) have no video on disk: {', '.join(empty)}")
    dead = sorted(set(class_names) - absent - {s.label for s in samples})
    if dead:
        notes.append(f"{len(dead)} class(es) have no video that decodes: {', '.join(dead)}")
    all_options = {"seed": seed, "val_fraction": val_fraction, "test_fraction": test_fraction,
                   **(options or {}), "notes": notes}
    made_here = all(row.split is None for row in rows)
    return DatasetIndex(
        name=name, root=root, class_names=class_names, samples=samples, split_protocol=protocol,
        unit="video", missing=missing, options=all_options, left_out=left_out,
        resplit=(lambda bad: build_index(name, root, rows, source=source, seed=seed,
                                         val_fraction=val_fraction, test_fraction=test_fraction,
                                         options=options, undecodable=bad)) if made_here else None)


def _check_duplicates(rows: list[ManifestRow], source: str) -> None:
    """The same video listed twice would be embedded twice under one id."""
    seen: dict[Path, int] = {}
    for row in rows:
        key = row.path
        if key in seen:
            raise DatasetFormatError(
                f"{source} line {row.line}: {row.written!r} is already listed on line "
                f"{seen[key]}; list each video once")
        seen[key] = row.line


def index_manifest(manifest: Path, *, name: str = "folder", root: Path | None = None,
                   seed: int = 0, val_fraction: float = 0.15,
                   test_fraction: float = 0.15) -> DatasetIndex:
    """Index the videos a manifest lists; ``root`` (default: its folder) anchors sample ids."""
    check_fractions(val_fraction, test_fraction)
    manifest = Path(manifest).expanduser().absolute()
    rows = read_manifest(manifest)
    root = manifest.parent if root is None else Path(root).expanduser().absolute()
    return build_index(name, root, rows, source=f"manifest {manifest}", seed=seed,
                       val_fraction=val_fraction, test_fraction=test_fraction,
                       options={"source": "manifest", "manifest": str(manifest)})


def index_folder(root: Path, *, name: str = "folder", seed: int = 0, val_fraction: float = 0.15,
                 test_fraction: float = 0.15) -> DatasetIndex:
    """Index ``ROOT/<class>/<video>``; class names are the sorted folder names."""
    check_fractions(val_fraction, test_fraction)
    root = Path(root).expanduser().absolute()
    rows, notes = scan_folder(root)
    if not rows:
        raise DatasetNotFoundError(
            f"no videos found under {root}; expected {root}/<class>/<video> with one of "
            f"{', '.join(sorted(VIDEO_EXTENSIONS))}, or a manifest.csv")
    return build_index(name, root, rows, source=f"folder {root}", seed=seed,
                       val_fraction=val_fraction, test_fraction=test_fraction,
                       options={"source": "folder", "notes": notes})


@register_dataset(settings=("seed", "val_fraction", "test_fraction", "manifest"))
def folder(root: Path | None = None, *, manifest: Path | None = None, val_fraction: float = 0.15,
           test_fraction: float = 0.15, seed: int = 0) -> DatasetIndex:
    """Any folder of class sub-folders, or a CSV manifest; split by group when groups are known.

    See the module docstring.

    Raises:
        DatasetNotFoundError: no root or manifest, a missing root, or no videos at all.
        DatasetFormatError: a manifest that cannot be parsed (named by line).
        InvalidOptionError: fractions out of range.
    """
    index = _index(root, manifest, {"seed": seed, "val_fraction": val_fraction, "test_fraction": test_fraction})
    index.cache_name = folder_cache_name(index.root)
    return index


def folder_cache_name(root: Path) -> str:
    """``folder-<folder name>-<hash of its absolute path>``: two folders never share a cache file."""
    digest = hashlib.sha256(str(Path(root).resolve()).encode()).hexdigest()[:6]
    return f"folder-{Path(root).resolve().stem or 'root'}-{digest}"


def _index(root: Path | None, manifest: Path | None, options: dict) -> DatasetIndex:
    if manifest is not None:
        return index_manifest(Path(manifest), root=root, **options)
    if root is None:
        raise DatasetNotFoundError("the folder dataset needs a root: pass ROOT (a folder of "
                                   "<class>/<video> files) or a manifest .csv")
    root = Path(root).expanduser()
    if not root.exists():
        raise DatasetNotFoundError(
            f"dataset root {root} does not exist; pass a folder of <class>/<video> files or a "
            "manifest .csv")
    if root.is_file():
        if root.suffix.lower() != ".csv":
            raise DatasetNotFoundError(
                f"dataset root {root} is a file, not a folder or a .csv manifest; pass the "
                "folder that holds <class>/<video>")
        return index_manifest(root, **options)
    if (root / MANIFEST_NAME).is_file():
        return index_manifest(root / MANIFEST_NAME, **options)
    return index_folder(root, **options)


__all__ = ["MANIFEST_NAME", "ManifestRow", "VIDEO_EXTENSIONS", "build_index", "folder",
           "index_folder", "index_manifest", "is_video_file", "read_manifest", "sample_ids",
           "scan_folder", "split_groups", "split_stratified"]
