"""The CUDA path, where there is a GPU (skipped elsewhere, so CI never runs it): extraction with
pinned uploads and a queued batch gives the CPU's numbers within float tolerance, spatial maps come
back from the device, and stage two trains there from RAM and from disk.

Run by ``benchmarks/gpu_check.sh`` on a GPU machine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TINY
from harx.extract import make_config, run_extract
from harx.features import FeatureStore
from harx.temporal import fit

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def _extract(root: Path, out: Path, **kw):
    return run_extract(make_config(dataset="folder", root=root, out=out, **dict(TINY, **kw)))


def test_cuda_extraction_matches_the_cpu_in_fp32(video_folder, tmp_path):
    cpu, gpu = tmp_path / "cpu.h5", tmp_path / "gpu.h5"
    _extract(video_folder, cpu)
    summary = _extract(video_folder, gpu, device="cuda", spatial=True)
    assert summary.device.startswith("cuda") and summary.streams == ["rgb", "rgb_map", "motion", "motion_map"]
    with FeatureStore(cpu) as a, FeatureStore(gpu) as b:
        assert list(a.column("sample_id")) == list(b.column("sample_id"))
        for name in ("rgb", "motion"):
            for x, y in zip(a.load(stream=name)[0], b.load(stream=name)[0]):
                np.testing.assert_allclose(x.astype(np.float32), y.astype(np.float32), rtol=2e-2, atol=2e-2)
        assert b.frames(0, stream="rgb_map").shape[1:] == b.stream_info("rgb_map").feature_shape


def test_cuda_extraction_in_half_precision_stays_close_to_fp32(video_folder, tmp_path):
    full, half = tmp_path / "fp32.h5", tmp_path / "half.h5"
    _extract(video_folder, full, device="cuda")
    _extract(video_folder, half, device="cuda", precision="auto")
    with FeatureStore(full) as a, FeatureStore(half) as b:
        x = np.concatenate(a.load(stream="rgb")[0]).astype(np.float32)
        y = np.concatenate(b.load(stream="rgb")[0]).astype(np.float32)
    cos = (x * y).sum(1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1) + 1e-12)
    assert cos.min() > 0.99, cos.min()


@pytest.mark.parametrize("load", ["memory", "disk"])
def test_stage_two_trains_on_the_gpu(small_cache, tmp_path, load):
    run = fit("lstm", small_cache, seed=0, epochs=3, device="cuda", load=load, out=tmp_path / load)
    assert run.metrics["training"]["device"] == "cuda"
    assert 0.0 <= run.metrics["test"]["accuracy"] <= 1.0


def test_convlstm_trains_on_the_gpu(video_folder, tmp_path):
    cache = tmp_path / "maps.h5"
    _extract(video_folder, cache, device="cuda", spatial=True)
    run = fit("convlstm", cache, seed=0, epochs=2, device="cuda", out=tmp_path / "conv")
    assert run.streams == ["rgb_map", "motion_map"] and run.metrics["training"]["device"] == "cuda"
