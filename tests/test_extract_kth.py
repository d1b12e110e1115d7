"""KTH adapter: the real 00sequences.txt quirks, both folder layouts, real clips, and errors."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import harx.extract.datasets.kth as kthmod  # importing registers the adapter
from harx.extract.datasets import DATASETS, create_dataset
from harx.extract.datasets.kth import (KTH_CLASSES, KTH_SPLIT, KTH_TEST_PERSONS, KTH_TRAIN_PERSONS,
                                  KTH_VAL_PERSONS, kth, parse_sequences, parse_split_header,
                                  person_split)
from harx.features.errors import DatasetFormatError, DatasetNotFoundError, InvalidOptionError


def _realdata() -> Path:
    """``../shared/realdata`` next to the repo, or ``$HARX_REALDATA``."""
    env = os.environ.get("HARX_REALDATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "realdata"


REALDATA = _realdata()
KTH_REAL = REALDATA / "kth"
needs_realdata = pytest.mark.skipif(not (KTH_REAL / "00sequences.txt").is_file(),
                                    reason=f"real KTH data not found at {KTH_REAL}")

SMALL_SEQUENCES = (
    "\r\nTraining:   person11, 12, 13, 14, 15, 16, 17, 18\r\n"
    "Validation: person19, 20, 21, 23, 24, 25, 01, 04\r\n"
    "Test:       person22, 02, 03, 05, 06, 07, 08, 09, 10 \r\n\r\n"
    "person01_boxing_d1\t\tframes\t1-95, 96-185, 186-245, 246-360\r\n"
    "person02_walking_d1    \tframes\t1-100, 50-150\r\n"          # spaces + overlap
    "person11_running_d2\t\tframes\t200-224, 1-50, 60-120\r\n"     # out of order, 3 ranges
    "person13_handclapping_d3\t*missing*\r\n"
)


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


# ------------------------------------------------------------------------------ parsing


def test_registered():
    assert DATASETS["kth"].index is kth and DATASETS["kth"].source is not None


def test_parse_small_text_quirks():
    seqs = parse_sequences(SMALL_SEQUENCES)
    assert seqs["person01_boxing_d1"] == [(0, 95), (95, 185), (185, 245), (245, 360)]
    assert seqs["person02_walking_d1"] == [(0, 100), (49, 150)]
    assert seqs["person11_running_d2"] == [(199, 224), (0, 50), (59, 120)]  # file order kept
    assert seqs["person13_handclapping_d3"] is None
    assert len(seqs) == 4


def test_parse_split_header():
    header = parse_split_header(SMALL_SEQUENCES)
    assert header is not None
    assert {k: sorted(v) for k, v in header.items()} == {
        k: sorted(v) for k, v in KTH_SPLIT.items()}
    assert parse_split_header("person01_boxing_d1\tframes\t1-2\n") is None


@pytest.mark.parametrize("bad", [
    "person01_boxing_d1\tframes\t1-95, abc\n",
    "person01_boxing_d1\tframes\n",
    "person01_boxing_d1\tframes\t10-5\n",
    "person01_boxing_d1\tframes\t0-5\n",
    "person01_boxing_d1\tframes\t1-5\nperson01_boxing_d1\tframes\t1-5\n",
    "just some text\n",
])
def test_parse_rejects_bad_lines(bad):
    with pytest.raises(DatasetFormatError):
        parse_sequences(bad)


def test_split_constants_are_disjoint_and_complete():
    persons = KTH_TRAIN_PERSONS + KTH_VAL_PERSONS + KTH_TEST_PERSONS
    assert sorted(persons) == list(range(1, 26))
    assert person_split(1) == "val" and person_split(22) == "test" and person_split(11) == "train"
    with pytest.raises(DatasetFormatError):
        person_split(26)


def _split_counts(seqs: dict) -> dict[str, tuple[int, int]]:
    """split -> (annotated videos, subsequences)."""
    counts = {s: [0, 0] for s in KTH_SPLIT}
    for video_id, ranges in seqs.items():
        if ranges is None:
            continue
        split = person_split(int(video_id[6:8]))
        counts[split][0] += 1
        counts[split][1] += len(ranges)
    return {s: tuple(c) for s, c in counts.items()}


@needs_realdata
@pytest.mark.realdata
@pytest.mark.parametrize("name", ["00sequences.txt", "00sequences.noheader.txt"])
def test_parse_real_file(name):
    text = (KTH_REAL / name).read_text()
    seqs = parse_sequences(text)
    annotated = {k: v for k, v in seqs.items() if v is not None}
    assert len(seqs) == 600 and len(annotated) == 599
    assert seqs["person13_handclapping_d3"] is None
    assert sum(len(v) for v in annotated.values()) == 2391
    assert _split_counts(seqs) == {"train": (191, 760), "val": (192, 768), "test": (216, 863)}
    assert sum(len(v) == 3 for v in annotated.values()) == 5
    assert max(b for _, b in annotated["person01_boxing_d4"]) == 370
    lengths = [b - a for v in annotated.values() for a, b in v]
    assert min(lengths) == 24 and sum(n < 30 for n in lengths) == 7
    assert annotated["person01_boxing_d1"] == [(0, 95), (95, 185), (185, 245), (245, 360)]
    assert sum(v != sorted(v) for v in annotated.values()) == 2
    header = parse_split_header(text)
    assert (header is None) == (name == "00sequences.noheader.txt")


# --------------------------------------------------------------------------- fake folders


def _fake_root(tmp_path: Path, per_action: bool) -> Path:
    root = tmp_path / "kth"
    root.mkdir()
    (root / "00sequences.txt").write_text(SMALL_SEQUENCES, newline="")
    for vid in ("person01_boxing_d1", "person11_running_d2", "person05_jogging_d4"):
        action = vid.split("_")[1]
        folder = root / action if per_action else root
        _touch(folder / f"{vid}_uncomp.avi")
    _touch(root / "notes.txt")
    _touch(root / "person01_boxing_d1_uncomp.avi.part")  # not a video extension
    return root


@pytest.mark.parametrize("per_action", [False, True])
def test_fake_root_subsequences(tmp_path, per_action):
    root = _fake_root(tmp_path, per_action)
    index = kth(root)
    assert index.name == "kth" and index.unit == "subsequence"
    assert index.class_names == list(KTH_CLASSES)
    ids = [s.sample_id for s in index.samples]
    assert ids == [f"person01_boxing_d1#{k}" for k in (1, 2, 3, 4)] + [
        f"person11_running_d2#{k}" for k in (1, 2, 3)]
    first = index.samples[0]
    assert first.frame_range == (0, 95) and first.split == "val" and first.group == "person01"
    assert first.scenario == "d1" and first.label == "boxing"
    assert first.video_id == "person01_boxing_d1" and first.path.is_absolute()
    running = [s for s in index.samples if s.video_id == "person11_running_d2"]
    assert [s.frame_range for s in running] == [(199, 224), (0, 50), (59, 120)]
    assert {s.split for s in running} == {"train"}
    assert index.missing == ["person02_walking_d1"]  # *missing* entry is not counted
    assert index.options["unannotated"] == ["person05_jogging_d4"]
    assert index.options["unit"] == "subsequence"
    assert index.options["sequences_file"] == str((root / "00sequences.txt").resolve())
    assert index.options["header_split"] == "official"
    assert "Schuldt" in index.split_protocol


def test_fake_root_video_unit(tmp_path):
    index = kth(_fake_root(tmp_path, per_action=True), unit="video")
    assert index.unit == "video"
    assert [(s.sample_id, s.split, s.frame_range) for s in index.samples] == [
        ("person01_boxing_d1", "val", None), ("person05_jogging_d4", "test", None),
        ("person11_running_d2", "train", None)]
    assert index.missing == ["person02_walking_d1"]
    assert "unannotated" not in index.options


def test_create_dataset_and_sequences_file(tmp_path):
    root = _fake_root(tmp_path, per_action=True)
    seq = tmp_path / "elsewhere.txt"
    (root / "00sequences.txt").rename(seq)
    index = create_dataset("kth", str(root), unit=None, sequences_file=seq)
    assert index.options["sequences_file"] == str(seq.resolve())
    assert len(index.samples) == 7


def test_reencoded_names_and_duplicates(tmp_path):
    root = _fake_root(tmp_path, per_action=False)
    _touch(root / "mp4" / "person02_walking_d1.mp4")  # no _uncomp, other extension
    index = kth(root)
    assert index.missing == []
    assert [s.sample_id for s in index.samples if s.video_id == "person02_walking_d1"] == [
        "person02_walking_d1#1", "person02_walking_d1#2"]
    _touch(root / "copy" / "person01_boxing_d1_uncomp.MP4")
    with pytest.raises(DatasetFormatError, match="found twice"):
        kth(root)


# -------------------------------------------------------------------------------- errors


def test_error_no_root():
    with pytest.raises(DatasetNotFoundError, match="harx download kth"):
        kth(None)


def test_error_root_missing(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="harx download kth") as info:
        kth(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(info.value) and "\n" not in str(info.value)


def test_error_no_sequences_file(tmp_path):
    root = _fake_root(tmp_path, per_action=True)
    (root / "00sequences.txt").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"00sequences\.txt.*--root") as info:
        kth(root)
    assert str(root / "00sequences.txt") in str(info.value)


def test_error_no_videos(tmp_path):
    (tmp_path / "00sequences.txt").write_text(SMALL_SEQUENCES)
    with pytest.raises(DatasetNotFoundError, match="no KTH video"):
        kth(tmp_path)


def test_error_bad_unit(tmp_path):
    with pytest.raises(InvalidOptionError, match="'clip'"):
        kth(_fake_root(tmp_path, per_action=True), unit="clip")


# ----------------------------------------------------------------------------- real clips


def _link_tree(src: Path, dst: Path) -> None:
    """Mirror ``src`` under ``dst`` with symlinks (copies where links are not allowed)."""
    for path in src.rglob("*"):
        if path.is_file():
            target = dst / path.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                target.symlink_to(path)
            except OSError:
                shutil.copyfile(path, target)


@needs_realdata
@pytest.mark.realdata
def test_real_clips(tmp_path):
    _link_tree(KTH_REAL, tmp_path)
    index = kth(tmp_path)
    videos = sorted({s.video_id for s in index.samples})
    assert videos == ["person01_handclapping_d1", "person01_handclapping_d2",
                      "person01_jogging_d1"]
    assert all(s.split == "val" and s.group == "person01" for s in index.samples)
    assert {s.scenario for s in index.samples} == {"d1", "d2"}
    assert len(index.missing) == 599 - 3
    assert "person01_boxing_d4" in index.missing and "person13_handclapping_d3" not in index.missing
    seqs = parse_sequences((KTH_REAL / "00sequences.txt").read_text())
    assert len(index.samples) == sum(len(seqs[v]) for v in videos)
    assert index.samples[0].path.name == "person01_handclapping_d1_uncomp.avi"


@needs_realdata
@pytest.mark.realdata
def test_real_reencoded_clips(tmp_path):
    reencoded = REALDATA / "kth_reencoded"
    if not reencoded.is_dir():
        pytest.skip(f"no {reencoded}")
    _link_tree(reencoded, tmp_path)
    shutil.copyfile(KTH_REAL / "00sequences.txt", tmp_path / "00sequences.txt")
    index = kth(tmp_path, unit="video")
    by_id = {s.video_id: s for s in index.samples}
    assert by_id["person03_boxing_d4"].split == "test"
    assert by_id["person04_boxing_d1"].split == "val"
    assert by_id["person01_boxing_d2"].path.suffix == ".mp4"
    assert not any(s.video_id.startswith("clip") for s in index.samples)
    # the original AVI and its re-encode in one root are the same video twice
    _link_tree(KTH_REAL / "handclapping", tmp_path / "orig")
    with pytest.raises(DatasetFormatError, match="person01_handclapping_d1"):
        kth(tmp_path)


def test_module_exports():
    assert set(kthmod.__all__) <= set(dir(kthmod))
