"""KTH actions (Schuldt, Laptev, Caputo, ICPR 2004): index the videos and their annotated ranges.

Layout accepted under ``root``: the videos ``personXX_<action>_dY_uncomp.avi`` either flat in
``root`` or one folder per action (as the six zips unpack), plus ``00sequences.txt`` in ``root``.
Any video extension works, and the ``_uncomp`` suffix is optional, so re-encoded copies index too.

``00sequences.txt`` lists, per video, the frame ranges where the action is performed, 1-based and
inclusive. They are converted once here to harx's 0-based end-exclusive ``(a - 1, b)``. Ranges
are kept exactly as annotated: short ones are not dropped, overlapping ones are not merged, and
out-of-order ones keep the file's order, so subsequence ``#k`` is the k-th range on the video's
line (the numbering other KTH code uses). Ranges past the end of a video (``person01_boxing_d4``
lists frames up to 370, about 305 decode) are clamped later, by stage one, which records it.

Class order is the website's (walking, jogging, running, boxing, handwaving, handclapping).
Public loaders disagree on it (some sort alphabetically), so every harx cache stores its own list.
"""

from __future__ import annotations

import re
from pathlib import Path

from harx.features.errors import DatasetFormatError, DatasetNotFoundError, InvalidOptionError

from . import register_dataset
from .base import DatasetIndex, DownloadSource, RemoteFile, VideoSample

#: Class names in the order of the KTH website (label index = position).
KTH_CLASSES: tuple[str, ...] = ("walking", "jogging", "running", "boxing", "handwaving",
                                "handclapping")

# Official person split of Schuldt, Laptev, Caputo, "Recognizing human actions: a local SVM
# approach", ICPR 2004 (also in the header of 00sequences.txt). Hard-coded so that the split is
# the official one even when the file given has no header.
KTH_TRAIN_PERSONS: tuple[int, ...] = (11, 12, 13, 14, 15, 16, 17, 18)
KTH_VAL_PERSONS: tuple[int, ...] = (19, 20, 21, 23, 24, 25, 1, 4)
KTH_TEST_PERSONS: tuple[int, ...] = (22, 2, 3, 5, 6, 7, 8, 9, 10)
KTH_SPLIT: dict[str, tuple[int, ...]] = {
    "train": KTH_TRAIN_PERSONS, "val": KTH_VAL_PERSONS, "test": KTH_TEST_PERSONS}

KTH_SPLIT_PROTOCOL = ("KTH official person split (Schuldt et al. 2004): train persons 11-18, "
                      "val 01,04,19,20,21,23,24,25, test 02,03,05-10,22")

SEQUENCES_FILE = "00sequences.txt"
UNITS = ("subsequence", "video")
VIDEO_EXTENSIONS = frozenset({".avi", ".mp4", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg",
                              ".wmv", ".flv", ".ogv", ".3gp", ".ts"})

_ACTIONS = "|".join(KTH_CLASSES)
_VIDEO_ID = rf"person\d+_(?:{_ACTIONS})_d\d+"
_LINE_RE = re.compile(rf"^\s*({_VIDEO_ID})(?![A-Za-z0-9_])(.*)$")
_STEM_RE = re.compile(rf"^({_VIDEO_ID})(?:_uncomp)?$")
_RANGE_RE = re.compile(r"(\d+)\s*-\s*(\d+)")
_ID_PARTS_RE = re.compile(r"^person(\d+)_([a-z]+)_(d\d+)$")
_HEADER_RE = {"train": re.compile(r"^\s*Training\s*:(.*)$", re.I),
              "val": re.compile(r"^\s*Validation\s*:(.*)$", re.I),
              "test": re.compile(r"^\s*Test\s*:(.*)$", re.I)}
_INSTALL_HINT = "get KTH with `harx download kth --root DIR`"

Ranges = list[tuple[int, int]]


def parse_sequences(text: str) -> dict[str, Ranges | None]:
    """Parse ``00sequences.txt``: video id -> 0-based end-exclusive ranges (``None``: missing).

    Header and blank lines are skipped; CRLF, tabs and stray spaces are tolerated. Ranges keep
    the file's order. A line that names a video but whose ranges cannot be read raises, because
    silently dropping it would shrink the dataset without notice.

    Raises:
        DatasetFormatError: an unreadable or duplicated video line, or no video line at all.
    """
    out: dict[str, Ranges | None] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        match = _LINE_RE.match(line)
        if match is None:
            continue
        video_id, rest = match.group(1), match.group(2)
        if video_id in out:
            raise DatasetFormatError(
                f"00sequences.txt line {number}: {video_id} is listed twice; "
                "use the file from the KTH website (`harx download kth`)")
        out[video_id] = _parse_ranges(rest, video_id, number)
    if not out:
        raise DatasetFormatError(
            "00sequences.txt has no line like 'person01_boxing_d1  frames  1-95, 96-185'; "
            f"is it the KTH annotation file? {_INSTALL_HINT}")
    return out


def _parse_ranges(rest: str, video_id: str, number: int) -> Ranges | None:
    """Read ``frames a-b, c-d`` (or ``*missing*``) after a video id; convert to 0-based."""
    if "*missing*" in rest.lower():
        return None
    ranges = [(int(a), int(b)) for a, b in _RANGE_RE.findall(rest)]
    leftover = _RANGE_RE.sub("", rest).replace("frames", "").replace(",", "").strip()
    where = f"00sequences.txt line {number} ({video_id})"
    if not ranges or leftover:
        raise DatasetFormatError(
            f"{where}: cannot read frame ranges from {rest.strip()!r}; "
            "expected 'frames 1-95, 96-185, ...'")
    for a, b in ranges:
        if a < 1 or b < a:
            raise DatasetFormatError(
                f"{where}: range {a}-{b} is not 1-based with start <= end; fix or re-download it")
    return [(a - 1, b) for a, b in ranges]


def parse_split_header(text: str) -> dict[str, tuple[int, ...]] | None:
    """Read the person split from the file header (``Training: person11, 12, ...``), if any.

    Used only to check the file against the hard-coded official split; ``None`` if no header.
    """
    found: dict[str, tuple[int, ...]] = {}
    for line in text.splitlines():
        for split, pattern in _HEADER_RE.items():
            match = pattern.match(line)
            if match is not None:
                found[split] = tuple(int(n) for n in re.findall(r"\d+", match.group(1)))
    return found if len(found) == len(_HEADER_RE) else None


def person_split(person: int) -> str:
    """The official split of a KTH person number.

    Raises:
        DatasetFormatError: a person outside 1-25.
    """
    for split, persons in KTH_SPLIT.items():
        if person in persons:
            return split
    raise DatasetFormatError(
        f"KTH has persons 1-25, got person{person:02d}; remove that file or its annotation line")


def find_videos(root: Path) -> dict[str, Path]:
    """KTH videos under ``root`` (itself and two folder levels below): video id -> path.

    Raises:
        DatasetFormatError: the same video found twice (e.g. an .avi and an .mp4 copy).
    """
    found: dict[str, Path] = {}
    for pattern in ("*", "*/*", "*/*/*"):
        for path in sorted(root.glob(pattern)):
            video_id = _video_id_of(path)
            if video_id is None:
                continue
            if video_id in found:
                raise DatasetFormatError(
                    f"KTH video {video_id} found twice: {found[video_id]} and {path}; "
                    "keep one copy under the root")
            found[video_id] = path.resolve()
    return found


def _video_id_of(path: Path) -> str | None:
    """``person01_boxing_d1`` for a KTH video file name, else ``None``."""
    if path.suffix.lower() not in VIDEO_EXTENSIONS or not path.is_file():
        return None
    match = _STEM_RE.match(path.stem)
    return None if match is None else match.group(1)


def _id_parts(video_id: str) -> tuple[int, str, str]:
    """``person01_boxing_d1`` -> ``(1, "boxing", "d1")``."""
    match = _ID_PARTS_RE.match(video_id)
    assert match is not None, video_id  # guaranteed by _LINE_RE/_STEM_RE
    return int(match.group(1)), match.group(2), match.group(3)


def _samples_for(video_id: str, path: Path, ranges: Ranges | None) -> list[VideoSample]:
    """One sample per range, or one for the whole video when ``ranges`` is ``None``."""
    person, action, scenario = _id_parts(video_id)
    common = dict(path=path, label=action, split=person_split(person),
                  group=f"person{person:02d}", scenario=scenario, video_id=video_id)
    if ranges is None:
        return [VideoSample(sample_id=video_id, frame_range=None, **common)]
    return [VideoSample(sample_id=f"{video_id}#{k}", frame_range=r, **common)
            for k, r in enumerate(ranges, start=1)]


# ----------------------------------------------------------------------------- download source

#: Published SHA-1 of the zips (as listed by the vipy project).
KTH_SHA1: dict[str, str] = {
    "walking.zip": "a3e81537271a0ab4576591774baa38c2d97b7e3a",
    "jogging.zip": "21943bdbcef9dad106db0d74661e49eaeaa15a25",
    "running.zip": "da83bb313edfd4455fffdda6263696fa10d43c6f",
    "boxing.zip": "adb36ed9c29c846d44d2ba15f348bd115c951bbd",
    "handwaving.zip": "0792f7cd69f7f895a205c08ac212ddaa7177e370",
    "handclapping.zip": "d3b81261aa822ef63d0d1523f945bfaff27814d2",
}
_APPROX_MB = {"walking": 242, "jogging": 168, "running": 149, "boxing": 194, "handwaving": 218, "handclapping": 176}
MIN_SEQUENCE_LINES = 590  # the real file lists 600 videos (one of them *missing*)


def sequences_problem(path: Path) -> str | None:
    """Why ``path`` is not a plausible ``00sequences.txt`` (it has no published hash), or ``None``."""
    try:
        entries = parse_sequences(path.read_text(encoding="utf-8", errors="replace"))
    except DatasetFormatError as err:
        return str(err)
    if len(entries) < MIN_SEQUENCE_LINES:
        return f"{len(entries)} video lines, expected about 600"
    return None


#: The six zips unpack flat into one folder per action; the newer address of the same files is
#: tried when the first cannot be reached.
KTH_SOURCE = DownloadSource(
    base_urls=("http://www.nada.kth.se/cvap/actions/", "https://www.csc.kth.se/cvap/actions/"),
    files=(*(RemoteFile(f"{a}.zip", _APPROX_MB[a] * 1_000_000, KTH_SHA1[f"{a}.zip"], unpack_to=a, flatten=True)
             for a in KTH_CLASSES),
           RemoteFile(SEQUENCES_FILE, 40_000, check=sequences_problem)))


def _check_root(root: Path | None) -> Path:
    """The root as an existing folder, or a one-line error that says how to get KTH."""
    if root is None:
        raise DatasetNotFoundError(f"no KTH root given; pass --root DIR ({_INSTALL_HINT})")
    if not root.is_dir():
        raise DatasetNotFoundError(f"KTH root {root} is not a folder; {_INSTALL_HINT}")
    return root.resolve()


def _read_sequences(root: Path, sequences_file: Path | None) -> tuple[Path, str]:
    """Locate and read ``00sequences.txt`` (in ``root`` unless given)."""
    path = Path(sequences_file) if sequences_file is not None else root / SEQUENCES_FILE
    if not path.is_file():
        raise DatasetNotFoundError(
            f"KTH annotation file {path} not found; {_INSTALL_HINT} "
            "(it fetches 00sequences.txt), or pass sequences_file=")
    return path.resolve(), path.read_text(encoding="utf-8", errors="replace")


@register_dataset(settings=("unit", "sequences_file"), source=KTH_SOURCE)
def kth(root: Path | None = None, *, unit: str = "subsequence",
        sequences_file: Path | None = None) -> DatasetIndex:
    """KTH with its official person split: a sample per annotated range (unit=subsequence) or video.

    Videos annotated but absent go to ``missing``. Videos present but not annotated are samples
    in ``unit="video"`` and listed in ``options["unannotated"]`` in subsequence mode (they have no
    ranges to cut). The split is always the official person split, whatever the file header says.

    Raises:
        InvalidOptionError: ``unit`` not ``subsequence`` or ``video``.
        DatasetNotFoundError: no root, no ``00sequences.txt``, or no KTH video under root.
        DatasetFormatError: an unreadable annotation line or a video found twice.
    """
    if unit not in UNITS:
        raise InvalidOptionError(f"KTH unit {unit!r} is not one of: {', '.join(UNITS)}")
    root = _check_root(Path(root) if root is not None else None)
    seq_path, text = _read_sequences(root, sequences_file)
    annotations = parse_sequences(text)
    videos = find_videos(root)
    if not videos:
        raise DatasetNotFoundError(
            f"no KTH video (personXX_<action>_dY_uncomp.avi) under {root}; {_INSTALL_HINT}")
    header = parse_split_header(text)
    samples: list[VideoSample] = []
    unannotated: list[str] = []
    for video_id in sorted(videos):
        ranges = annotations.get(video_id)
        if ranges is None and unit == "subsequence":
            unannotated.append(video_id)
            continue
        samples.extend(_samples_for(video_id, videos[video_id],
                                    ranges if unit == "subsequence" else None))
    missing = sorted(v for v, r in annotations.items() if r is not None and v not in videos)
    options: dict = {"unit": unit, "sequences_file": str(seq_path),
                     "header_split": _header_status(header)}
    if unit == "subsequence":
        options["unannotated"] = unannotated
    return DatasetIndex(name="kth", root=root, class_names=list(KTH_CLASSES), samples=samples,
                        split_protocol=KTH_SPLIT_PROTOCOL, unit=unit, missing=missing,
                        options=options, cache_name="kth-video" if unit == "video" else "kth")


def _header_status(header: dict[str, tuple[int, ...]] | None) -> str:
    """``absent``, ``official`` or ``differs``: the file header against the hard-coded split."""
    if header is None:
        return "absent"
    same = all(sorted(header[s]) == sorted(KTH_SPLIT[s]) for s in KTH_SPLIT)
    return "official" if same else "differs"


__all__ = ["KTH_CLASSES", "KTH_SHA1", "KTH_SOURCE", "KTH_SPLIT", "KTH_SPLIT_PROTOCOL", "KTH_TEST_PERSONS",
           "KTH_TRAIN_PERSONS", "KTH_VAL_PERSONS", "SEQUENCES_FILE", "find_videos", "kth",
           "parse_sequences", "parse_split_header", "person_split"]
