"""Videos that do not decode take no place in a split harx makes; classes a split lacks are said."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import h5py
import pytest

from conftest import TINY
from harx.extract import make_config, run_extract
from harx.extract.datasets import create_dataset
from harx.extract.decode import VideoDecoder
from harx.extract.probe import drop_undecodable, probe_videos
from harx.features.coverage import split_warnings
from videos import write_video

BAD = {"clap/empty", "clap/cut"}


@pytest.fixture(scope="module")
def broken_folder(tmp_path_factory) -> Path:
    """``ROOT/<class>/<video>``, no manifest: clap has 3 good clips, a 0-byte one and an MP4 cut
    in half (its index is at the end: it does not open); jump has 4 good clips and an MPEG-4 AVI
    cut at 70 % (it opens, and its first 61 frames decode); wave has 4 good clips."""
    root = tmp_path_factory.mktemp("broken")
    for c, (label, n) in enumerate([("clap", 3), ("jump", 4), ("wave", 4)]):
        for k in range(n):
            write_video(root / label / f"v{k}.mp4", n_frames=8 + k, size=(32, 24), seed=10 * c + k,
                        stamp=False)
    (root / "clap" / "empty.mp4").write_bytes(b"")
    data = write_video(root / "full.mp4", n_frames=30, size=(32, 24), stamp=False).read_bytes()
    (root / "clap" / "cut.mp4").write_bytes(data[: len(data) // 2])
    data = write_video(root / "full.avi", n_frames=120, size=(64, 48), codec="mpeg4",
                       stamp=False).read_bytes()
    (root / "jump" / "cut.avi").write_bytes(data[: len(data) * 7 // 10])
    (root / "full.mp4").unlink()
    (root / "full.avi").unlink()
    return root


def _extract(root: Path, out: Path, **kw):
    return run_extract(make_config(dataset="folder", root=root, out=out, **dict(TINY, **kw)))


def _cache(out: Path) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """split and note of each cached sample, reason of each failure."""
    with h5py.File(out, "r") as f:
        s = f["samples"]
        ids = [x.decode() for x in s["sample_id"][:]]
        splits = dict(zip(ids, (x.decode() for x in s["split"][:])))
        notes = dict(zip(ids, (x.decode() for x in s["note"][:])))
        failures = dict(zip((x.decode() for x in f["failures/sample_id"][:]),
                            (x.decode() for x in f["failures/reason"][:])))
    return splits, notes, failures


def test_probe_finds_what_does_not_decode(broken_folder):
    paths = sorted(broken_folder.rglob("*.*"))
    with VideoDecoder(timeout_s=10).start() as decoder:
        failed = probe_videos(decoder, paths)
    assert {p.relative_to(broken_folder).with_suffix("").as_posix() for p in failed} == BAD
    assert all("cannot open video" in why for why in failed.values())


def test_probe_of_a_hanging_file_costs_one_timeout(broken_folder, monkeypatch):
    monkeypatch.setenv("HARX_FAULT_HANG", "wave/v1:open")  # the worker hangs opening it
    paths = sorted((broken_folder / "wave").iterdir())
    with VideoDecoder(timeout_s=1.0).start() as decoder:
        started = time.monotonic()
        failed = probe_videos(decoder, paths)
        assert time.monotonic() - started < 2.5  # one timeout, not one per attempt
    assert list(failed) == [broken_folder / "wave" / "v1.mp4"]
    assert "hung for more than 1 s" in failed[broken_folder / "wave" / "v1.mp4"]


def test_split_counts_only_decodable_videos(broken_folder):
    index = create_dataset("folder", broken_folder)
    assert len(index.samples) == 14 and index.resplit is not None
    with VideoDecoder(timeout_s=10).start() as decoder:
        kept = drop_undecodable(index, decoder)
    assert {s.sample_id for s in kept.samples} == {s.sample_id for s in index.samples} - BAD
    assert {sid for sid, _, _ in kept.left_out} == BAD
    # unprobed, clap's val and test places went to its two broken clips; probed, 3 clips: 1/1/1
    assert {s.split for s in index.samples if s.sample_id in BAD} == {"val", "test"}
    assert "got 8/3/3 videos" in index.split_protocol and "got 6/3/3 videos" in kept.split_protocol
    assert Counter(s.split for s in kept.samples if s.label == "clap") == {"train": 1, "val": 1, "test": 1}
    assert "2 video(s) that do not decode are left out" in kept.split_protocol
    assert kept.class_names == index.class_names
    by_class = Counter((s.label, s.split) for s in kept.samples)
    assert all(by_class[(label, split)] >= 1 for label in kept.class_names for split in ("train", "val", "test"))
    again = index.resplit({p: "x" for _, p, _ in kept.left_out})
    assert [(s.sample_id, s.split) for s in again.samples] == [(s.sample_id, s.split) for s in kept.samples]


def test_given_split_is_kept_and_failures_recorded(video_folder):
    index = create_dataset("folder", video_folder)  # manifest with a split column
    assert index.resplit is None
    with VideoDecoder(timeout_s=10).start() as decoder:
        assert drop_undecodable(index, decoder) is index


def test_extract_records_failures_keeps_train_and_reruns_the_same(broken_folder, tmp_path):
    out = tmp_path / "c.h5"
    s = _extract(broken_folder, out, every=2)
    assert {sid for sid, _ in s.failed} == BAD and s.samples_total == 14 and s.samples_new == 12
    assert "got 6/3/3 videos" in s.split_protocol
    splits, notes, failures = _cache(out)
    assert set(failures) == BAD and not BAD & set(splits)
    assert "jump/cut" in splits  # a cut file that decodes keeps its place
    labels = {sid: sid.split("/")[0] for sid in splits}
    assert {labels[sid] for sid, split in splits.items() if split == "train"} == {"clap", "jump", "wave"}
    assert s.warnings == []

    again = _extract(broken_folder, out, every=2)  # a finished cache: nothing to do, same split
    assert again.nothing_to_do and again.failed == [] and again.failed_before == 2
    assert again.split_protocol == s.split_protocol and _cache(out)[0] == splits

    # interrupted after the first video, then resumed: the same cache as one clean run
    part = tmp_path / "p.h5"

    def stop(progress):
        if progress.videos_done == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_extract(make_config(dataset="folder", root=broken_folder, out=part, every=2, **TINY), stop)
    resumed = _extract(broken_folder, part, every=2)
    assert resumed.split_protocol == s.split_protocol
    assert _cache(part)[0] == splits and set(_cache(part)[2]) == BAD
    with h5py.File(out, "r") as a, h5py.File(part, "r") as b:
        assert a.attrs["settings_fingerprint"] == b.attrs["settings_fingerprint"]
        assert a.attrs["split_protocol"] == b.attrs["split_protocol"]


def test_extract_warns_of_a_class_without_training_videos(tmp_path):
    root = tmp_path / "data"
    rows = ["path,label,split"]
    for label, splits in [("clap", ["val", "test"]), ("jump", ["train", "val", "test"])]:
        for k, split in enumerate(splits):
            write_video(root / label / f"v{k}.mp4", n_frames=6, size=(32, 24), seed=k, stamp=False)
            rows.append(f"{label}/v{k}.mp4,{label},{split}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    s = _extract(root, tmp_path / "c.h5", every=3)
    assert s.warnings == ["class(es) with no training sample: clap; no head can learn them, and "
                          "their test samples count as errors"]
    assert _extract(root, tmp_path / "c.h5", every=3).warnings == s.warnings  # also on a no-op rerun
    from typer.testing import CliRunner

    from harx.cli import app

    result = CliRunner().invoke(app, ["extract", "--dataset", "folder", "--root", str(root), "--out",
                                      str(tmp_path / "c.h5"), "--every", "3", "--backbone", TINY["backbone"],
                                      "--weights", "none", "--device", "cpu", "--precision", "fp32"])
    assert result.exit_code == 0 and f"warning: {s.warnings[0]}" in " ".join(result.output.split())


def test_split_warnings_wording():
    names = ["a", "b", "c", "d"]
    assert split_warnings(names, [(n, s) for n in names for s in ("train", "val", "test")]) == []
    lines = split_warnings(names, [("a", "train"), ("a", "test"), ("b", "test"), ("d", "train")])
    assert lines[0] == "class(es) with no sample at all: c"
    assert lines[1].startswith("class(es) with no training sample: b;")
    assert lines[2].startswith("class(es) with no test sample: d;")
    assert len(lines) == 3  # no val split at all: not a gap to name per class
