"""The motion stream and schema 2: what the rows hold, adding a stream to a cache, kill -9 while
adding, mismatched stream settings, and caches of schema 1."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import TINY, kill_9_mid_extraction, kth_subset
from harx.extract import make_config, run_extract
from harx.extract.motion import difference_images, partners
from harx.features import FeatureStore
from harx.features.errors import CacheMismatchError, InvalidOptionError


def _extract(root: Path, out: Path, **kw):
    return run_extract(make_config(dataset="folder", root=root, out=out, **dict(TINY, **kw)))


def _streams(path: Path) -> dict[str, list[np.ndarray]]:
    with FeatureStore(path) as store:
        return {name: store.load(stream=name)[0] for name in store.streams}


def _same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def test_partners_look_back_and_forward_at_the_start():
    assert partners(np.array([0, 1, 2, 5]), 2, 10).tolist() == [2, 3, 0, 3]
    assert partners(np.array([0]), 2, 2).tolist() == [1]      # a 2-frame video: the last frame
    a = np.array([[[[10, 200, 0]]]], np.uint8)
    b = np.array([[[[250, 100, 0]]]], np.uint8)
    assert difference_images(a, b, 1.0).tolist() == [[[[240, 100, 0]]]]
    assert difference_images(a, b, 2.0).tolist() == [[[[255, 200, 0]]]]


def test_motion_rows_embed_differences_of_real_neighbours(video_folder, tmp_path):
    """Thinned to every 3rd frame, each motion row is the backbone's embedding of |frame[t] -
    frame[t-2]| from the video's own frames (t-2 is never an embedded row), as decord decodes them."""
    import decord
    from harx.extract.backbones import create_backbone

    out = tmp_path / "c.h5"
    _extract(video_folder, out, every=3)
    backbone = create_backbone(TINY["backbone"], weights="none", device="cpu", precision="fp32")
    with FeatureStore(out) as store:
        assert store.streams == ["rgb", "motion"] and store.stream_info("motion").spec["gap"] == 2
        rec = next(r for r in store.samples() if r.sample_id == "jump/g3_jump")
        t = store.frame_index(rec.index).astype(np.int64)
        assert t.tolist() == list(range(0, 34, 3))
        frames = decord.VideoReader(str(video_folder / rec.path)).get_batch(list(range(34))).asnumpy()
        expected = backbone.embed(difference_images(frames[t], frames[partners(t, 2, 34)], 1.0))
        got = store.frames(rec.index, stream="motion").astype(np.float32)
        np.testing.assert_allclose(got, expected, rtol=2e-2, atol=2e-2)
        rgb = store.frames(rec.index, stream="rgb").astype(np.float32)
        np.testing.assert_allclose(rgb, backbone.embed(frames[t]), rtol=2e-2, atol=2e-2)
        both, _ = store.load("test", ["rgb", "motion"])      # early fusion: side by side per frame
        assert both[0].shape[1] == 2 * store.embed_dim == store.feature_dim(["rgb", "motion"])


def test_adding_motion_to_an_rgb_cache_equals_a_two_stream_extraction(video_folder, tmp_path):
    clean = tmp_path / "clean.h5"
    _extract(video_folder, clean)
    out = tmp_path / "grown.h5"
    s = _extract(video_folder, out, streams="rgb")
    assert s.streams == ["rgb"]
    before = _streams(out)["rgb"]
    s = _extract(video_folder, out, streams="motion")
    assert s.streams == ["rgb", "motion"] and s.streams_added == ["motion"] and not s.nothing_to_do
    grown, reference = _streams(out), _streams(clean)
    assert _same(grown["rgb"], before) and _same(grown["rgb"], reference["rgb"])
    assert _same(grown["motion"], reference["motion"])
    again = _extract(video_folder, out, streams="rgb,motion")
    assert again.nothing_to_do


def test_another_motion_gap_is_refused_and_unknown_streams_too(video_folder, tmp_path):
    out = tmp_path / "c.h5"
    _extract(video_folder, out)
    with pytest.raises(CacheMismatchError, match="motion stream made with"):
        _extract(video_folder, out, motion_gap=4)
    with pytest.raises(InvalidOptionError, match="unknown stream 'flow'"):
        _extract(video_folder, out, streams="rgb,flow")
    _extract(video_folder, tmp_path / "gap4.h5", motion_gap=4, streams="motion")
    with FeatureStore(tmp_path / "gap4.h5") as store:
        assert store.streams == ["motion"] and store.stream_info("motion").spec["gap"] == 4
        with pytest.raises(CacheMismatchError, match="has no rgb stream"):
            store.load("train", "rgb")


def test_kill_9_while_adding_motion_then_rerun_equals_a_clean_extraction(video_folder, tmp_path):
    clean = tmp_path / "clean.h5"
    _extract(video_folder, clean)
    out = tmp_path / "killed.h5"
    _extract(video_folder, out, streams="rgb")
    parts = out.with_name("killed.h5.parts")
    committed = kill_9_mid_extraction(video_folder, out, streams="motion")
    assert committed >= 4
    with FeatureStore(out) as store:
        assert store.streams == ["rgb"]            # the finished cache is untouched until the merge
    with pytest.raises(CacheMismatchError, match="rerun it with --streams rgb,motion"):
        _extract(video_folder, out, streams="rgb")
    _extract(video_folder, out, streams="motion")
    got, want = _streams(out), _streams(clean)
    assert list(got) == ["rgb", "motion"]
    assert _same(got["rgb"], want["rgb"]) and _same(got["motion"], want["motion"])
    assert not parts.exists()


def _as_schema_1(src: Path, dst: Path) -> None:
    """A cache laid out as harx 0.2 wrote it: one ``embeddings`` dataset, schema_version 1."""
    with h5py.File(src, "r") as f, h5py.File(dst, "w") as g:
        g.create_dataset("embeddings", data=f["streams/rgb"][:])
        for name in ("frame_index", "samples", "failures"):
            f.copy(name, g)
        for key, value in f.attrs.items():
            if key != "streams":
                g.attrs[key] = value
        g.attrs["schema_version"] = 1


def test_a_schema_1_cache_is_read_as_rgb_and_grows_a_motion_stream(video_folder, tmp_path):
    two = tmp_path / "two.h5"
    _extract(video_folder, two)
    old = tmp_path / "old.h5"
    _as_schema_1(two, old)
    with FeatureStore(old) as store:
        assert store.streams == ["rgb"] and store.attrs["schema_version"] == 1
        fingerprint = store.fingerprint
        assert _same(store.load()[0], _streams(two)["rgb"])
    s = _extract(video_folder, old)         # the default streams: rgb is there, motion is added
    assert s.streams_added == ["motion"] and s.samples_new == s.samples_total - 2
    with FeatureStore(old) as store:
        assert store.attrs["schema_version"] == 2 and store.fingerprint == fingerprint
    assert all(_same(a, b) for a, b in zip(_streams(old).values(), _streams(two).values()))
    with h5py.File(old, "r") as f:
        assert json.loads(f.attrs["streams"]) == ["rgb", "motion"] and "embeddings" not in f


# ----------------------------------------------------------------------------- real clips

def test_two_streams_on_real_kth_walking_and_running_of_unseen_persons(realdata, tmp_path):
    """End to end on real KTH clips (lite0, its packaged ImageNet weights, the official person
    split, outdoor scenario d1, 16 frames per subsequence): rgb then motion added, fit, compare,
    evaluate and predict on both streams. Motion separates walking from running for test persons
    never seen; the fused LSTM is not below rgb frame voting."""
    from harx.temporal import compare, evaluate, fit
    from harx.temporal.predict import Predictor

    src = realdata / "kth_walk_run"
    # train 11-16, val 1 4 19, test 2 3 5
    root = kth_subset(realdata, tmp_path / "kth", (11, 12, 13, 14, 15, 16, 1, 4, 19, 2, 3, 5))
    cache = tmp_path / "kth.h5"
    options = dict(dataset="kth", root=root, out=cache, device="cpu", max_frames=16)
    run_extract(make_config(streams="rgb", **options))
    grown = run_extract(make_config(**options))                 # the default streams: motion is added
    assert grown.streams == ["rgb", "motion"] and grown.streams_added == ["motion"]
    with FeatureStore(cache) as store:
        assert store.streams == ["rgb", "motion"] and len(store.indices("test")) == 24
    result = compare(cache, heads="vote,lstm", seeds=1, out=tmp_path / "cmp", epochs=30)
    test = {h: r["test"]["accuracy"]["mean"] for h, r in result.results.items()}
    assert set(test) == {f"{h}-{s}" for h in ("vote", "lstm") for s in ("rgb", "motion", "rgb+motion")}
    assert "| rgb+motion |" in result.table and "late fusion" in result.table
    assert test["lstm-motion"] >= 0.9 and test["lstm-rgb+motion"] >= 0.9, test
    assert test["lstm-rgb+motion"] >= test["vote-rgb"], test
    run = next(r for r in result.runs if r.label == "lstm-rgb+motion")
    again = evaluate(run.path)
    assert again["test"]["accuracy"] == pytest.approx(run.metrics["test"]["accuracy"])
    assert again["protocol"]["streams"] == ["rgb", "motion"]
    video = src / "walking" / "person02_walking_d1_uncomp.avi"
    (prediction,) = Predictor(run.path, device="cpu").predict([video])
    assert prediction.ok and prediction.label == "walking" and prediction.unfamiliar is False
    rgb_only = tmp_path / "rgb.h5"
    run_extract(make_config(**dict(options, out=rgb_only, streams="rgb")))
    with pytest.raises(CacheMismatchError, match="has no motion stream that run"):
        evaluate(run.path, features=rgb_only)


def test_a_stream_is_added_only_at_the_frames_its_sample_was_written_at():
    from harx.extract.datasets.base import VideoSample
    from harx.extract.pipeline import _stored_rows
    from harx.features.errors import HarxError

    sample = VideoSample(sample_id="v/1", video_id="v", path=Path("v.avi"), label="a", split="train")
    frames, rows = np.array([0, 2, 4, 6, 8]), np.array([10, 11, 12, 13, 14])
    got = _stored_rows(sample, np.array([2, 4]), frames, rows, "")   # stored cut short by an old hang
    assert got[0].tolist() == [2, 4] and got[1].tolist() == [11, 12]
    with pytest.raises(HarxError, match="v/1: decoding gave other frames.*rerun to try again"):
        _stored_rows(sample, np.array([2, 4, 6, 8, 10]), frames, rows, "decoder hung")   # cut short now


def test_adding_a_stream_to_samples_the_dataset_lost_is_refused_before_any_work(video_folder, tmp_path):
    import csv
    import shutil

    root = tmp_path / "videos"
    shutil.copytree(video_folder, root)
    out = tmp_path / "c.h5"
    _extract(root, out, streams="rgb")
    manifest = root / "manifest.csv"
    rows = list(csv.reader(manifest.open()))
    with manifest.open("w", newline="") as f:
        csv.writer(f).writerows([r for r in rows if not r[0].startswith("jump/g3")])
    with pytest.raises(CacheMismatchError, match="1 sample.*motion cannot be added to.*jump/g3_jump"):
        _extract(root, out, streams="motion")
    assert not out.with_name("c.h5.parts").exists() and _streams(out).keys() == {"rgb"}


def test_resuming_motion_on_a_video_half_done_adds_only_what_is_missing(realdata, tmp_path):
    """KTH videos hold several subsequences: a run stopped between two of one video's samples
    left some with motion; the rerun decodes the video again and adds motion to the others only."""
    from harx.features.writer import FeatureWriter

    root = kth_subset(realdata, tmp_path / "kth", (11, 1, 2), actions=("walking",))
    options = dict(dataset="kth", root=root, device="cpu", max_frames=6)
    run_extract(make_config(out=tmp_path / "clean.h5", **options))
    out = tmp_path / "grown.h5"
    run_extract(make_config(out=out, streams="rgb", **options))
    clean = FeatureStore(tmp_path / "clean.h5")
    first = clean.sample(0)
    with FeatureStore(out) as store:
        settings = {k: v for k, v in store.attrs.items() if k not in ("format", "schema_version", "complete",
                    "n_samples", "n_frames", "n_failed", "created_utc", "stage_one_cost", "settings_fingerprint", "streams")}
        infos = [store.stream_info("rgb"), clean.stream_info("motion")]
    with FeatureWriter(out, settings, streams=infos) as w:    # stopped after the first subsequence
        meta = {k: v for k, v in dataclasses.asdict(first).items() if k not in ("index", "row_start", "row_stop")}
        w.add_sample(meta, {"motion": clean.frames(0, stream="motion")}, clean.frame_index(0))
    s = run_extract(make_config(out=out, **options))
    assert s.streams_added == ["motion"] and s.samples_new == len(clean) - 1
    got, want = _streams(out), {n: clean.load(stream=n)[0] for n in clean.streams}
    assert _same(got["rgb"], want["rgb"]) and _same(got["motion"], want["motion"])
