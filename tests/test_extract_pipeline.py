"""Stage one end to end: real decoding, real (tiny) backbone, real HDF5, resume after kill -9."""

from __future__ import annotations

import json
import time
from pathlib import Path


import h5py
import numpy as np
import pytest

from conftest import TINY, kill_9_mid_extraction, needs_cpu_bf16
from harx.extract import make_config, run_extract
from harx.features import FeatureStore
from harx.features.errors import CacheMismatchError, ForeignCacheError


def _extract(root: Path, out: Path, **kw):
    opts = dict(TINY, **kw)
    return run_extract(make_config(dataset="folder", root=root, out=out, **opts))


def test_folder_extract_writes_documented_schema(video_folder, tmp_path):
    out = tmp_path / "c.h5"
    s = _extract(video_folder, out, every=2)
    assert s.samples_total == 14 and s.samples_new == 12
    failed = dict(s.failed)
    assert set(failed) == {"wave/broken", "clap/truncated"}
    assert "cannot open video" in failed["wave/broken"]
    # plain h5py, following features/schema.py's docstring
    with h5py.File(out, "r") as f:
        assert f.attrs["format"] == "harx-features" and f.attrs["schema_version"] == 2
        assert json.loads(f.attrs["streams"]) == ["rgb", "motion"]  # the default streams
        names = json.loads(f.attrs["class_names"])
        assert names == ["clap", "jump", "wave"]
        smp = f["samples"]
        ids = [x.decode() for x in smp["sample_id"][:]]
        i = ids.index("jump/g3_jump")  # 9 + 24 + 1 = 34 frames, every 2nd -> 17
        rows = slice(smp["row_start"][i], smp["row_stop"][i])
        assert f["streams/rgb"][rows].shape == (17, 256) and f["streams/rgb"].dtype == np.float16
        assert json.loads(f["streams/rgb"].attrs["spec"]) == {"input": "rgb"}
        assert json.loads(f["streams/motion"].attrs["spec"]) == {"input": "motion", "gap": 2, "amp": 1.0}
        assert f["streams/motion"][rows].shape == (17, 256)
        assert not np.array_equal(f["streams/motion"][rows], f["streams/rgb"][rows])
        assert list(f["frame_index"][rows]) == list(range(0, 34, 2))
        assert names[smp["label_index"][i]] == smp["label"][i].decode() == "jump"
        assert smp["split"][i].decode() == "test" and smp["group"][i].decode() == "g3"
        assert {x.decode() for x in f["failures/sample_id"][:]} == {"wave/broken", "clap/truncated"}
        assert f.attrs["weights"] == "none" and f.attrs["n_samples"] == 12
    store = FeatureStore(out)
    xs, ys = store.load("train")
    assert len(xs) == len(store.samples("train")) == 6 and all(x.shape[1] == 256 for x in xs)
    assert np.isfinite(np.concatenate(xs).astype(np.float32)).all()
    assert store.failures and not (out.parent / "c.h5.parts").exists()


def test_rerun_is_a_no_op_and_other_settings_are_refused(video_folder, tmp_path):
    out = tmp_path / "c.h5"
    _extract(video_folder, out, every=4)
    before = out.stat().st_mtime_ns
    again = _extract(video_folder, out, every=4)
    assert again.nothing_to_do and again.samples_new == 0 and again.reused == 14
    assert out.stat().st_mtime_ns == before
    assert not out.with_name("c.h5.parts").exists()  # a no-op rerun leaves nothing behind
    out.unlink()  # ...so a run with other settings is not taken for an interrupted one
    assert _extract(video_folder, out, every=3).samples_new == 12
    _extract(video_folder, out, every=4, overwrite=True)
    with pytest.raises(CacheMismatchError, match="sampling"):
        _extract(video_folder, out, every=3)
    s = _extract(video_folder, out, every=3, overwrite=True)
    assert s.samples_new == 12 and FeatureStore(out).attrs["sampling"]["every"] == 3


def test_foreign_file_is_refused(video_folder, tmp_path):
    out = tmp_path / "notes.h5"
    out.write_text("my notes")
    with pytest.raises(ForeignCacheError, match="not a readable HDF5"):
        _extract(video_folder, out)
    assert out.read_text() == "my notes"


def test_hung_decoder_keeps_frames_before_the_hang(video_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("HARX_FAULT_HANG", "g3_jump:20")
    out = tmp_path / "c.h5"
    t0 = time.monotonic()
    s = _extract(video_folder, out, decode_timeout_s=1.5)
    assert time.monotonic() - t0 < 60
    store = FeatureStore(out)
    rec = next(r for r in store.samples() if r.sample_id == "jump/g3_jump")
    assert rec.n_frames == 20 and list(store.frame_index(rec.index)) == list(range(20))
    assert "hung" in rec.note and rec.range_stop == 20 and s.clamped == 1


def test_kill_9_then_resume_equals_uninterrupted_run(video_folder, tmp_path):
    clean = tmp_path / "clean.h5"
    _extract(video_folder, clean, part_seconds=0)
    out = tmp_path / "killed.h5"
    parts = out.with_name("killed.h5.parts")
    committed = kill_9_mid_extraction(video_folder, out)
    assert committed >= 4 and not out.exists()
    s = _extract(video_folder, out, part_seconds=0)
    assert s.reused >= committed and s.samples_new + s.reused + len(s.failed) == 14
    a, b = FeatureStore(clean), FeatureStore(out)
    assert [r.sample_id for r in a.samples()] == [r.sample_id for r in b.samples()]
    xa, _ = a.load()
    xb, _ = b.load()
    assert all(np.array_equal(x, y) for x, y in zip(xa, xb))
    assert not parts.exists()


@needs_cpu_bf16
def test_bf16_embeddings_stay_close_to_fp32_on_real_clips(realdata):
    from decord import VideoReader

    from harx.extract.backbones import create_backbone

    clips = [realdata / "kth/jogging/person01_jogging_d1_uncomp.avi",
             realdata / "ucf101/Shotput/v_Shotput_g05_c02.avi"]
    frames = [VideoReader(str(p))[0:64:8].asnumpy() for p in clips if p.exists()]
    if not frames:
        pytest.skip("real clips absent")
    b32 = create_backbone(precision="fp32", device="cpu")
    b16 = create_backbone(precision="bf16", device="cpu")
    for x in frames:
        a, b = b32.embed(x), b16.embed(x)
        cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        assert cos.min() > 0.99, cos


def test_packaged_weights_classify_imagenet_photos():
    data = pytest.importorskip("skimage.data")
    import timm
    import torch

    from harx.extract.backbones import _load_by_position, _load_state, create_backbone, package_weights_path

    b = create_backbone(precision="fp32", device="cpu")
    full = timm.create_model("tf_efficientnet_lite0")
    _load_by_position(full, _load_state(package_weights_path("tf_efficientnet_lite0")), "tf_efficientnet_lite0")
    full.eval()
    with torch.inference_mode():
        cat = full(b.preprocess(torch.from_numpy(data.chelsea()[None]))).softmax(-1)[0]
        coffee = full(b.preprocess(torch.from_numpy(data.coffee()[None]))).softmax(-1)[0]
    assert 285 in cat.topk(3).indices.tolist()  # Egyptian cat (tabby/tiger cat beside it)
    assert coffee.argmax().item() == 967  # espresso
    assert b.embed_dim == 1280 and b.weights == "package"


@pytest.mark.parametrize("size", [(120, 160), (121, 161), (48, 64), (256, 452), (100, 400), (240, 320)])
def test_matrix_resize_equals_interpolate_then_crop(size, monkeypatch):
    """Small frames are resized and cropped by two matrix products; the numbers must be those of
    resizing the whole frame with F.interpolate and cropping (timm's recipe)."""
    import torch

    import harx.extract.backbones as backbones

    b = backbones.create_backbone(TINY["backbone"], weights="none", device="cpu", precision="fp32")
    frames = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (3, *size, 3), dtype=np.uint8))
    fast = b.preprocess(frames)
    monkeypatch.setattr(backbones, "MATMUL_RESIZE_MAX_PIXELS", 0)
    plain = b.preprocess(frames)
    assert fast.shape == plain.shape == (3, 3, *b.input_size)
    assert float((fast - plain).abs().max()) < 1e-5


@pytest.mark.parametrize("name", ["test_efficientnet", "resnet18", "mobilenetv3_small_100"])
def test_batchnorm_folding_keeps_the_embedding(name):
    """Folding frozen BN into the preceding conv changes no output, with non-trivial BN statistics."""
    import timm
    import torch

    from harx.extract.backbones import fold_batchnorm

    model = timm.create_model(name, pretrained=False, num_classes=0).eval()
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) * 2 + 0.1)
            m.weight.data.copy_(torch.randn(m.num_features, generator=g))
            m.bias.data.copy_(torch.randn(m.num_features, generator=g))
    folded, n = fold_batchnorm(model, (64, 64))
    assert n > 0 and not any(type(m) is torch.nn.BatchNorm2d for m in folded.modules())
    x = torch.randn(2, 3, 64, 64, generator=g)
    with torch.no_grad():
        a, b = model(x), folded(x)
    assert torch.allclose(a, b, rtol=1e-4, atol=1e-4 * float(a.abs().max()))


def test_resume_refuses_a_cache_whose_split_would_change(video_folder, tmp_path, monkeypatch):
    """An interrupted run, then a rerun whose harx-made split differs (a video that did not
    decode then decodes now): one line, never a cache holding two splits."""
    import dataclasses

    import harx.extract.pipeline as pipeline

    out = tmp_path / "c.h5"
    seen = []

    def stop_after_two(p):
        seen.append(p.videos_done)
        if p.videos_done >= 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_extract(make_config(dataset="folder", root=video_folder, out=out, **TINY), on_progress=stop_after_two)

    parts = sorted(out.with_name("c.h5.parts").glob("part-*.h5"))
    assert parts
    with h5py.File(parts[0], "r") as f:
        done = [s.decode() for s in f["samples/sample_id"][:]]
    real = pipeline.drop_undecodable

    def moved(index, decoder):
        index = real(index, decoder)
        swap = {"train": "test", "val": "train", "test": "train"}
        samples = [dataclasses.replace(s, split=swap[s.split]) if s.sample_id == done[0] else s
                   for s in index.samples]
        return dataclasses.replace(index, samples=samples)

    monkeypatch.setattr(pipeline, "drop_undecodable", moved)
    with pytest.raises(CacheMismatchError, match="another split.*--overwrite"):
        run_extract(make_config(dataset="folder", root=video_folder, out=out, **TINY))
    monkeypatch.setattr(pipeline, "drop_undecodable", real)
    finished = run_extract(make_config(dataset="folder", root=video_folder, out=out, **TINY))
    assert finished.reused >= len(done) and FeatureStore(out).attrs["n_samples"] > 0


def test_input_size_sets_the_crop_the_cache_name_and_predict(video_folder, tmp_path):
    from harx.features.errors import InvalidOptionError
    from harx.temporal import fit
    from harx.temporal.predict import Predictor

    s = run_extract(make_config(dataset="folder", root=video_folder, input_size=64, streams="rgb", **TINY))
    assert s.out.name.endswith("-in64-every1.h5")
    with FeatureStore(s.out) as store:
        assert store.attrs["preprocess"]["input_size"] == [64, 64]
        assert store.attrs["preprocess"]["resize_short_side"] >= 64
    run = fit("vote", s.out, out=tmp_path / "run", epochs=2)
    predictor = Predictor(run.path, device="cpu")
    assert predictor.backbone.input_size == (64, 64)
    (p,) = predictor.predict([video_folder / "jump" / "g3_jump.avi"])
    assert p.ok
    with pytest.raises(InvalidOptionError, match="--input-size must be"):
        run_extract(make_config(dataset="folder", root=video_folder, input_size=8, out=tmp_path / "x.h5", **TINY))
