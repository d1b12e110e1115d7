"""UCF101 and HMDB51 split files, written here in their real formats and quirks (CRLF, a BOM,
the HandStandPushups file names, HMDB51's 0/1/2 flags), read as folds; validation by group."""

from __future__ import annotations

from pathlib import Path

import pytest

from harx.extract.datasets.official_splits import (carve_validation, hmdb_source, read_hmdb51_splits,
                                                   read_ucf101_lists, ucf_group)
from harx.features.errors import DatasetFormatError, DatasetNotFoundError
from layouts import UCF_CLASSES, ucf_file as _ucf_file, write_hmdb_splits as _write_hmdb, write_ucf_lists as _write_ucf_lists

def test_ucf101_lists_give_three_folds_that_test_seven_groups_each(tmp_path):
    names, folds = read_ucf101_lists(_write_ucf_lists(tmp_path / "ucfTrainTestlist"))
    assert names == UCF_CLASSES and [f.name for f in folds] == ["split1", "split2", "split3"]
    for k, fold in enumerate(folds, 1):
        assert len(fold.assignment) == 3 * 25 * 2
        tested = {int(ucf_group(p)[1:]) for p, part in fold.assignment.items() if part == "test"}
        assert tested == set(range(7 * (k - 1) + 1, 7 * k + 1))
    assert folds[0].assignment["HandstandPushups/v_HandStandPushups_g08_c01.avi"] == "train"
    assert ucf_group("HandstandPushups/v_HandStandPushups_g08_c01.avi") == "g08"


@pytest.mark.parametrize("name, line, message", [
    ("trainlist01.txt", "Shotput/v_Shotput_g09_c01.avi x", "trainlist01.txt:1: expected '<Class>/<file> <class index>'"),
    ("trainlist01.txt", "Shotput/v_Shotput_g09_c01.avi 1", "trainlist01.txt:1: .* is in folder Shotput but has the index of ApplyEyeMakeup"),
    ("testlist01.txt", "Archery/v_Archery_g01_c01.avi", "testlist01.txt:1: .* is in no class"),
])
def test_ucf101_bad_lines_name_file_and_line(tmp_path, name, line, message):
    folder = _write_ucf_lists(tmp_path / "lists")
    path = folder / name
    path.write_text(line + "\n" + path.read_text())
    with pytest.raises(DatasetFormatError, match=message):
        read_ucf101_lists(folder)


def test_ucf101_missing_lists_and_nameless_groups(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="classInd.txt not found"):
        read_ucf101_lists(tmp_path)
    with pytest.raises(DatasetFormatError, match="_gNN_cNN"):
        ucf_group("Shotput/clip.avi")


def test_hmdb51_split_files_give_three_folds_without_unused_clips(tmp_path):
    names, folds = read_hmdb51_splits(_write_hmdb(tmp_path / "splits"))
    assert names == ["drink", "jump"] and len(folds) == 3
    for k, fold in enumerate(folds, 1):
        assert len(fold.assignment) == 2 * 20                   # a third of the 30 clips per class flagged 0
        assert set(fold.assignment.values()) == {"train", "test"}
    assert hmdb_source("drink/Movie_3_drink_u_nm_np1_fr_goo_2.avi") == "Movie_3"
    assert hmdb_source("drink/50_FIRST_DATES_drink_u_nm_np1_fr_goo_29.mp4") == "50_FIRST_DATES"


def test_hmdb51_missing_and_bad_split_files(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="no HMDB51 split files"):
        read_hmdb51_splits(tmp_path)
    folder = _write_hmdb(tmp_path / "s")
    (folder / "jump_test_split3.txt").unlink()
    with pytest.raises(DatasetNotFoundError, match="jump_test_split3.txt not found"):
        read_hmdb51_splits(folder)
    (folder / "jump_test_split3.txt").write_text("clip.avi 7\n")
    with pytest.raises(DatasetFormatError, match=r"jump_test_split3.txt:1: expected '<file> <0\|1\|2>'"):
        read_hmdb51_splits(folder)


def test_validation_is_carved_from_train_by_whole_groups(tmp_path):
    _, folds = read_ucf101_lists(_write_ucf_lists(tmp_path / "lists"))
    carved = carve_validation(folds[0], ucf_group, fraction=0.15, seed=3)
    assert carve_validation(folds[0], ucf_group, fraction=0.15, seed=3) == carved      # seeded
    for cls in UCF_CLASSES:
        parts: dict[str, set[str]] = {}
        for path, part in carved.assignment.items():
            if path.startswith(cls + "/"):
                parts.setdefault(ucf_group(path), set()).add(part)
        assert all(len(p) == 1 for p in parts.values())                             # no group in two parts
        val = sum(1 for p in parts.values() if p == {"val"})
        assert 3 <= val <= 4                                                       # 15 % of 18 train groups
        assert {g for g, p in parts.items() if p == {"test"}} == {f"g{g:02d}" for g in range(1, 8)}
    _, hmdb = read_hmdb51_splits(_write_hmdb(tmp_path / "h", sources=1))
    assert carve_validation(hmdb[0], hmdb_source).assignment == hmdb[0].assignment   # one movie: stays in train


# ----------------------------------------------------------------------------- the adapters, end to end

UCF_GROUPS = (1, 8, 15, 22)      # one test group of each fold, and one always in train


def _ucf_tree(root: Path) -> Path:
    """A UCF101 layout: UCF-101/<Class>/ clips of four groups (two clips each), the real lists of
    all 25 groups (so most listed clips are missing), and one clip no list names."""
    from videos import write_video

    _write_ucf_lists(root / "ucfTrainTestlist")
    for i, cls in enumerate(UCF_CLASSES):
        for g in UCF_GROUPS:
            for c in (1, 2):
                write_video(root / "UCF-101" / _ucf_file(cls, g, c), n_frames=6, size=(32, 24), seed=10 * i + g + c)
    write_video(root / "UCF-101" / "Shotput" / "v_Shotput_g30_c01.avi", n_frames=6, size=(32, 24), seed=1)
    return root


def test_ucf101_extracts_once_for_every_fold(tmp_path):
    from conftest import TINY
    from harx.extract import make_config, run_extract
    from harx.features import FeatureStore

    root = _ucf_tree(tmp_path / "ucf")
    s = run_extract(make_config(dataset="ucf101", root=root, out=tmp_path / "ucf.h5", streams="rgb", **TINY))
    assert s.samples_total == 3 * 4 * 2 and not s.failed
    assert len(s.missing) == 3 * 25 * 2 - 24 and s.unlisted == ["Shotput/v_Shotput_g30_c01.avi"]
    store = FeatureStore(s.out)
    assert store.folds == ["split1", "split2", "split3"] and store.class_names == UCF_CLASSES
    assert "UCF101 official splits 1-3" in store.attrs["split_protocol"]
    ids = list(store.column("sample_id"))
    for k, test_group in enumerate((1, 8, 15), 1):
        parts = dict(zip(ids, store.fold_splits(k)))
        assert {p for i, p in parts.items() if f"_g{test_group:02d}_" in i} == {"test"}
        assert {p for i, p in parts.items() if "_g22_" in i} <= {"train", "val"}
    assert set(store.column("group")) == {f"{c}/g{g:02d}" for c in UCF_CLASSES for g in UCF_GROUPS}


def test_hmdb51_folds_leave_unused_clips_out_of_a_fold(tmp_path):
    from conftest import TINY
    from videos import write_video
    from harx.extract import make_config, run_extract
    from harx.features import FeatureStore

    root = tmp_path / "hmdb"
    _write_hmdb(root / "testTrainMulti_7030_splits", sources=2, clips=3)
    for cls in ("drink", "jump"):
        for s in range(2):
            for c in range(3):
                write_video(root / "hmdb51" / cls / f"Movie_{s}_{cls}_u_nm_np1_fr_goo_{c}.avi", n_frames=5,
                            size=(32, 24), seed=s * 10 + c)
    summary = run_extract(make_config(dataset="hmdb51", root=root, out=tmp_path / "h.h5", streams="rgb", **TINY))
    store = FeatureStore(summary.out)
    assert store.folds == ["split1", "split2", "split3"] and len(store) == 12 and not summary.missing
    for k in (1, 2, 3):
        assert (store.fold_splits(k) == "").sum() == 4            # a third of the clips flagged 0 in each fold
    assert set(store.column("group")) == {f"{c}/Movie_{s}" for c in ("drink", "jump") for s in range(2)}


def test_adapters_say_what_is_missing_in_one_line(tmp_path):
    from harx.extract.datasets import create_dataset

    with pytest.raises(DatasetNotFoundError, match="no ucfTrainTestlist/classInd.txt"):
        create_dataset("ucf101", tmp_path)
    with pytest.raises(DatasetNotFoundError, match="no HMDB51 split files"):
        create_dataset("hmdb51", tmp_path)
    _write_ucf_lists(tmp_path / "ucfTrainTestlist")
    with pytest.raises(DatasetNotFoundError, match="no class folder of the split files"):
        create_dataset("ucf101", tmp_path)


# ----------------------------------------------------------------------------- the real clips

def test_real_ucf101_clips_with_lists_in_the_real_format(tmp_path, realdata):
    """The three real UCF101 Xvid AVIs in a UCF-101/ layout; lists naming them (and the rest of
    their classes, absent): every fold's part follows the clip's group."""
    from conftest import TINY
    from harx.extract import make_config, run_extract
    from harx.features import FeatureStore

    clips = sorted((realdata / "ucf101").glob("*/*.avi"))
    if not clips:
        pytest.skip("no real UCF101 clip")
    lists = tmp_path / "ucf" / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    classes = sorted({c.parent.name for c in clips})
    (lists / "classInd.txt").write_bytes("".join(f"{i} {c}\r\n" for i, c in enumerate(classes, 1)).encode())
    for c in clips:
        (tmp_path / "ucf" / "UCF-101" / c.parent.name).mkdir(parents=True)
        (tmp_path / "ucf" / "UCF-101" / c.parent.name / c.name).symlink_to(c)
    for k in (1, 2, 3):
        rows = [(f"{c}/v_{c}_g{g:02d}_c01.avi", i) for i, c in enumerate(classes, 1) for g in range(1, 26)]
        rows += [(f"{c.parent.name}/{c.name}", classes.index(c.parent.name) + 1) for c in clips]
        test = [r for r in rows if 7 * k - 6 <= int(r[0].split("_g")[1][:2]) <= 7 * k]
        (lists / f"trainlist0{k}.txt").write_bytes("".join(f"{p} {i}\r\n" for p, i in rows if (p, i) not in test).encode())
        (lists / f"testlist0{k}.txt").write_bytes("".join(f"{p}\r\n" for p, _ in test).encode())
    s = run_extract(make_config(dataset="ucf101", root=tmp_path / "ucf", out=tmp_path / "u.h5", streams="rgb", **TINY))
    assert s.samples_total == len(clips) and not s.failed and s.frames > 100
    store = FeatureStore(s.out)
    for sample_id, *parts in zip(store.column("sample_id"), *(store.fold_splits(k) for k in (1, 2, 3))):
        group = int(sample_id.split("_g")[1][:2])
        assert [p == "test" for p in parts] == [7 * k - 6 <= group <= 7 * k for k in (1, 2, 3)]


def test_real_hmdb51_mp4_copies_take_the_split_files_avi_names(tmp_path, realdata):
    """The real HMDB51 clips are MP4 re-encodes, and the split files name the original AVIs: each
    copy is indexed under its listed name, with its flags, and decodes."""
    from conftest import TINY
    from harx.extract import make_config, run_extract
    from harx.features import FeatureStore

    clips = sorted((realdata / "hmdb51").glob("*/*.mp4"))
    if not clips:
        pytest.skip("no real HMDB51 clip")
    splits = tmp_path / "hmdb" / "testTrainMulti_7030_splits"
    splits.mkdir(parents=True)
    for n, c in enumerate(clips):
        cls = c.parent.name
        (tmp_path / "hmdb" / "hmdb51" / cls).mkdir(parents=True)
        (tmp_path / "hmdb" / "hmdb51" / cls / c.name).symlink_to(c)
        for k in (1, 2, 3):
            (splits / f"{cls}_test_split{k}.txt").write_text(f"{c.stem}.avi {(n + k) % 3} \r\n")
    s = run_extract(make_config(dataset="hmdb51", root=tmp_path / "hmdb", out=tmp_path / "h.h5", streams="rgb",
                                max_frames=8, **TINY))
    assert s.samples_total == len(clips) and not s.failed and not s.missing and not s.unlisted
    store = FeatureStore(s.out)
    assert sorted(store.column("sample_id")) == sorted(f"{c.parent.name}/{c.stem}.avi" for c in clips)
    flags = {f"{c.parent.name}/{c.stem}.avi": n for n, c in enumerate(clips)}
    for k in (1, 2, 3):
        for sample_id, part in zip(store.column("sample_id"), store.fold_splits(k)):
            assert part == {0: "", 1: "train", 2: "test"}[(flags[sample_id] + k) % 3] or (
                part == "val" and (flags[sample_id] + k) % 3 == 1)
