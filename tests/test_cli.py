"""The CLI: help texts, one-line errors with exit 1, and the KTH layout end to end."""

from __future__ import annotations

import shutil

import pytest
from typer.testing import CliRunner

from harx.cli import app
from conftest import TINY

runner = CliRunner()
TINY_ARGS = ["--backbone", TINY["backbone"], "--weights", TINY["weights"], "--device", "cpu", "--precision", "fp32"]


@pytest.mark.parametrize("command", [[], ["extract"], ["download"], ["info"], ["demo"], ["predict"], ["fit"], ["compare"]])
def test_help(command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0 and "Usage" in result.output


def _error_line(result) -> str:
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert "Traceback" not in result.output
    assert lines[-1].startswith("error: ") or lines[0].startswith("error: ")
    return " ".join(lines)


def test_unknown_dataset():
    assert "choose one of: demo, folder, hmdb51, kth, ucf101" in _error_line(runner.invoke(app, ["extract", "--dataset", "ucf"]))


def test_missing_root(tmp_path):
    msg = _error_line(runner.invoke(app, ["extract", "--dataset", "folder", "--root", str(tmp_path / "nope")]))
    assert "nope" in msg


def test_empty_root(tmp_path):
    assert "no videos" in _error_line(runner.invoke(app, ["extract", "--dataset", "folder", "--root", str(tmp_path)]))


def test_kth_without_sequences_file(tmp_path):
    (tmp_path / "walking").mkdir()
    (tmp_path / "walking" / "person01_walking_d1_uncomp.avi").write_bytes(b"x")
    assert "00sequences.txt" in _error_line(runner.invoke(app, ["extract", "--dataset", "kth", "--root", str(tmp_path)]))


def test_unknown_backbone(video_folder):
    msg = _error_line(runner.invoke(app, ["extract", "--dataset", "folder", "--root", str(video_folder),
                                          "--backbone", "resnet_does_not_exist"]))
    assert "unknown backbone" in msg


def test_unreadable_checkpoint(video_folder, tmp_path):
    bad = tmp_path / "weights.pth"
    bad.write_bytes(b"garbage")
    msg = _error_line(runner.invoke(app, ["extract", "--dataset", "folder", "--root", str(video_folder),
                                          "--backbone", "test_efficientnet", "--weights", str(bad)]))
    assert "cannot read checkpoint" in msg


def test_bad_sampling_option(video_folder):
    assert "--every must be >= 1" in _error_line(runner.invoke(app, ["extract", "--dataset", "folder", "--root",
                                                                     str(video_folder), "--every", "0"]))


def test_unwritable_output(video_folder, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    msg = _error_line(runner.invoke(app, ["extract", "--dataset", "folder", "--root", str(video_folder), *TINY_ARGS,
                                          "--out", str(blocker / "cache.h5")]))
    assert "cannot create folder" in msg


def test_nothing_but_broken_files(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.mp4").write_text("not a video")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "y.avi").write_bytes(b"\0" * 100)
    msg = _error_line(runner.invoke(app, ["extract", "--dataset", "folder", "--root", str(tmp_path), *TINY_ARGS,
                                          "--out", str(tmp_path / "c.h5")]))
    assert "none of the 2 sample(s) could be decoded" in msg


def test_info_on_foreign_file(tmp_path):
    f = tmp_path / "x.h5"
    f.write_text("hello")
    assert "not a readable HDF5" in _error_line(runner.invoke(app, ["info", str(f)]))


def test_kth_layout_with_real_sequences_file(realdata, tmp_path):
    """Real person01 clips in the per-action layout of the zips, plus the real 00sequences.txt."""
    root = tmp_path / "kth"
    clips = sorted((realdata / "kth").glob("*/*.avi"))
    if not clips:
        pytest.skip("no real KTH clips")
    for clip in clips:
        (root / clip.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(clip, root / clip.parent.name / clip.name)
    shutil.copy(realdata / "kth" / "00sequences.txt", root / "00sequences.txt")
    out = tmp_path / "kth.h5"
    result = runner.invoke(app, ["extract", "--dataset", "kth", "--root", str(root), "--out", str(out), "--every", "8",
                                 *TINY_ARGS])
    assert result.exit_code == 0, result.output
    assert "missing" in result.output and "reused" in result.output
    from harx.features import FeatureStore

    store = FeatureStore(out)
    records = store.samples()
    assert len(records) == 4 * len(clips)  # the person01 d1/d2 videos have 4 subsequences each
    assert {r.split for r in records} == {"val"} and {r.group for r in records} == {"person01"}
    r = records[0]
    assert r.sample_id.endswith("#1") and r.annotated_start >= 0 and r.range_start == r.annotated_start
    assert all(f % 8 == r.range_start % 8 for f in store.frame_index(r.index))
    info = runner.invoke(app, ["info", str(out)])
    assert info.exit_code == 0 and "jogging" in info.output
