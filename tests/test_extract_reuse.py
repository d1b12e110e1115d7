"""A rerun of a finished extraction is answered from the cache's attributes (extract/reuse.py):
no model, no torch; and it is still right: other settings are refused, new samples are added,
an interrupted run resumes, and anything only a model can confirm goes the full way."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import REPO, TINY
from harx.extract import make_config, run_extract
from harx.extract import backbones
from harx.extract.reuse import request_key
from harx.features.errors import CacheMismatchError, OutputError


class Built(Exception):
    """Raised by the patched create_backbone: the run went the full way."""


def _extract(root: Path, out: Path, **kw):
    return run_extract(make_config(dataset="folder", root=root, out=out, **dict(TINY, **kw)))


@pytest.fixture
def no_backbone(monkeypatch):
    def refuse(*args, **kwargs):
        raise Built("create_backbone was called")

    monkeypatch.setattr(backbones, "create_backbone", refuse)


@pytest.fixture
def finished(video_folder, tmp_path) -> Path:
    out = tmp_path / "c.h5"
    _extract(video_folder, out, every=4)
    return out


def test_no_op_rerun_builds_no_backbone(video_folder, finished, no_backbone):
    before = finished.stat().st_mtime_ns
    s = _extract(video_folder, finished, every=4)
    assert s.nothing_to_do and s.samples_new == 0 and s.reused == 14 and s.failed_before == 2
    assert s.backbone == "test_efficientnet" and s.precision == "fp32" and s.weights == "none"
    assert s.samples_total == 14 and s.file_bytes == finished.stat().st_size
    assert finished.stat().st_mtime_ns == before and not finished.with_name("c.h5.parts").exists()


NO_TORCH = textwrap.dedent("""
    import sys, time
    t0 = time.monotonic()
    from harx.extract import make_config, run_extract
    s = run_extract(make_config(dataset="folder", root=sys.argv[1], out=sys.argv[2], every=4,
                                backbone="test_efficientnet", weights="none", device="cpu", precision="fp32"))
    assert s.nothing_to_do, s
    assert "torch" not in sys.modules and "timm" not in sys.modules, "a no-op rerun imported torch"
    print(time.monotonic() - t0)
""")


def test_no_op_rerun_imports_no_torch(video_folder, finished):
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-c", NO_TORCH, str(video_folder), str(finished)], cwd=REPO,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - t0 < 10  # 0.3 s measured; the full check took 9 s with the real backbone


def test_other_sampling_is_refused_before_the_model(video_folder, finished, no_backbone):
    with pytest.raises(CacheMismatchError, match="sampling"):
        _extract(video_folder, finished, every=3)
    with pytest.raises(Built):  # --overwrite rebuilds: the full way
        _extract(video_folder, finished, every=3, overwrite=True)


def test_what_only_a_model_can_confirm_goes_the_full_way(video_folder, finished, no_backbone):
    with pytest.raises(Built):  # auto precision: the stored fp32 may not be what auto gives here
        _extract(video_folder, finished, every=4, precision="auto")
    with pytest.raises(Built):
        _extract(video_folder, finished, every=4, device="auto")


def test_interrupted_run_beside_the_cache_goes_the_full_way(video_folder, finished, no_backbone):
    finished.with_name("c.h5.parts").mkdir()
    with pytest.raises(Built):
        _extract(video_folder, finished, every=4)


def test_new_video_is_added_not_reported_complete(video_folder, tmp_path):
    root = tmp_path / "videos"
    shutil.copytree(video_folder, root)
    out = tmp_path / "c.h5"
    assert _extract(root, out, every=4).samples_new == 12
    video = next((root / "jump").glob("g3_jump.*"))
    shutil.copy(video, root / "jump" / f"g9_jump{video.suffix}")
    with open(root / "manifest.csv", "a") as f:
        f.write(f"jump/g9_jump{video.suffix},jump,g9,train\n")
    s = _extract(root, out, every=4)
    assert not s.nothing_to_do and s.samples_new == 1 and s.reused == 14
    again = _extract(root, out, every=4)
    assert again.nothing_to_do and again.reused == 15


def test_request_key_names_what_decides_the_model_made_settings(tmp_path):
    base = request_key("test_efficientnet", "none", "cpu", "fp32")
    assert base == request_key("test_efficientnet", "none", "CPU", "fp32")
    assert base != request_key("test_efficientnet", "none", "cpu", "bf16")
    assert base != request_key("test_efficientnet", "hub", "cpu", "fp32")
    assert base != request_key("resnet18", "none", "cpu", "fp32")
    ckpt = tmp_path / "w.pth"
    ckpt.write_bytes(b"x" * 10)
    first = request_key("test_efficientnet", str(ckpt), "cpu", "fp32")
    ckpt.write_bytes(b"y" * 11)  # another checkpoint at the same path
    assert request_key("test_efficientnet", str(ckpt), "cpu", "fp32") != first


def test_unwritable_out_fails_before_the_model(video_folder, tmp_path, no_backbone):
    with pytest.raises(OutputError, match="choose another --out"):
        _extract(video_folder, Path("/proc/harx-test.h5"))
    with pytest.raises(OutputError, match="is a folder"):
        _extract(video_folder, tmp_path)
    (tmp_path / "x.h5.parts").write_text("in the way")
    with pytest.raises(OutputError, match="x.h5.parts is a file"):
        _extract(video_folder, tmp_path / "x.h5")
