"""The pose stream: BlazePose keypoints per frame, normalised to the person, NaN where no person is
found; one line without the extra; end to end on real KTH clips (fit on pose, predict with the
skeleton drawn). The tests that run MediaPipe skip without the ``pose`` extra."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import TINY, kth_subset
from harx.extract import make_config, run_extract
from harx.extract.pose import FEATURE_SHAPE, LEFT_HIP, LEFT_SHOULDER, RIGHT_HIP, RIGHT_SHOULDER, normalise
from harx.features.errors import HarxError
from videos import write_video

needs_mediapipe = pytest.mark.skipif(importlib.util.find_spec("mediapipe") is None,
                                     reason="the pose extra (mediapipe 0.10.21) is not installed")


def _torso(points: np.ndarray) -> np.ndarray:
    hips = points[..., [LEFT_HIP, RIGHT_HIP], :2].mean(-2)
    shoulders = points[..., [LEFT_SHOULDER, RIGHT_SHOULDER], :2].mean(-2)
    return hips, np.linalg.norm(shoulders - hips, axis=-1)


def test_normalised_keypoints_do_not_depend_on_where_the_person_stands_or_how_far():
    rng = np.random.default_rng(0)
    body = rng.uniform(0.3, 0.6, (33, 4)).astype(np.float32)
    pose = normalise(body, 160, 120)
    hips, torso = _torso(pose)
    assert np.allclose(hips, 0, atol=1e-5) and np.isclose(torso, 1, atol=1e-5)
    moved = body.copy()                       # the same body, 20 px to the right and half as far away
    moved[:, 0] = (body[:, 0] * 160 * 2 + 20) / 160
    moved[:, 1] = body[:, 1] * 2
    moved[:, 2] = body[:, 2] * 2
    assert np.allclose(normalise(moved, 160, 120), pose, atol=1e-4)
    assert np.array_equal(pose[:, 3], body[:, 3])          # visibility kept as found


def test_without_the_extra_pose_fails_in_one_line_naming_it(monkeypatch, video_folder, tmp_path):
    from importlib import metadata

    def absent(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", absent)
    with pytest.raises(HarxError, match=r"--streams pose needs MediaPipe 0\.10\.21 .*pip install 'harx\[pose\]'"):
        run_extract(make_config(dataset="folder", root=video_folder, out=tmp_path / "c.h5", streams="pose", **TINY))
    assert not (tmp_path / "c.h5").exists()
    monkeypatch.setattr(metadata, "version", lambda name: "0.10.32")
    with pytest.raises(HarxError, match="needs mediapipe 0.10.21, found 0.10.32"):
        run_extract(make_config(dataset="folder", root=video_folder, out=tmp_path / "c.h5", streams="pose", **TINY))


@needs_mediapipe
def test_a_clip_with_no_person_is_recorded_as_missing(tmp_path):
    root = tmp_path / "videos"
    for label in ("a", "b"):
        write_video(root / label / f"square_{label}.mp4", n_frames=20, size=(96, 64), seed=ord(label), pattern="square")
    run_extract(make_config(dataset="folder", root=root, out=tmp_path / "c.h5", streams="rgb,pose", **TINY))
    with h5py.File(tmp_path / "c.h5", "r") as f:
        pose = f["streams/pose"][()]
        spec = json.loads(f["streams/pose"].attrs["spec"])
    assert pose.shape == (40, *FEATURE_SHAPE) and np.isnan(pose).all()      # missing, never zeros
    assert spec["missing"] == "nan" and "torso" in spec["normalisation"] and spec["mediapipe"] == "0.10.21"
    from harx.features.reader import FeatureStore

    x, _ = FeatureStore(tmp_path / "c.h5").load(stream="pose")
    assert all(np.array_equal(a, np.zeros_like(a)) for a in x)   # heads read it as every keypoint unseen


@needs_mediapipe
@pytest.mark.realdata
def test_pose_end_to_end_on_real_kth_clips(realdata, tmp_path):
    """Real KTH walking and running of persons 11 (train), 1 (val) and 2 (test): pose stream
    beside rgb, an LSTM on pose alone, predict with the skeleton drawn."""
    from harx.temporal import Predictor, fit

    root = kth_subset(realdata, tmp_path / "kth", persons=(11, 1, 2))
    cache = tmp_path / "kth.h5"
    summary = run_extract(make_config(dataset="kth", root=root, out=cache, streams="rgb,pose", max_frames=24, **TINY))
    assert summary.samples_new == 24 and set(summary.model_seconds) == {"rgb", "pose"}
    with h5py.File(cache, "r") as f:
        pose = f["streams/pose"][()].astype(np.float32)
        cost = json.loads(f.attrs["stage_one_cost"])
    found = ~np.isnan(pose).all(axis=(1, 2))
    assert pose.shape[1:] == FEATURE_SHAPE and found.mean() > 0.5, f"a person in {found.mean():.0%} of the frames"
    assert not np.isnan(pose[found]).any()                                 # a frame is whole or missing
    hips, torso = _torso(pose[found])
    assert np.abs(hips).max() < 1e-2 and np.allclose(torso, 1, atol=1e-2)  # normalised to the person
    assert (pose[found][..., 3] > 0).all()
    assert cost["pose"]["frames"] == len(pose) and cost["pose"]["ms_per_frame"] > 0

    run = fit("lstm", cache, streams="pose", epochs=3, out=tmp_path / "run")
    assert run.streams == ["pose"]
    assert 0.0 <= run.metrics["test"]["accuracy"] <= 1.0

    from harx.temporal.compare import compare

    table = compare(cache, heads="vote,lstm", seeds=1, epochs=2, streams="rgb,pose", out=tmp_path / "cmp").table
    pose_row = next(line for line in table.splitlines() if line.startswith("| LSTM") and "pose (BlazePose" in line)
    assert float(pose_row.rstrip(" |").rsplit("|", 1)[1]) == pytest.approx(cost["pose"]["ms_per_frame"], abs=0.01)

    clip = root / "person02_walking_d1_uncomp.avi"
    predictor = Predictor(run.path, device="cpu")
    item = next(predictor.predict_files([clip], annotate=tmp_path / "out"))
    p = item.prediction
    assert p.ok and p.keypoints is not None and p.as_dict()["pose"]["frames_with_person"] > 0
    from harx.extract.stream import FrameStream

    drawn = plain = None
    with FrameStream(item.annotated.path) as a, FrameStream(clip) as b:
        for i, (fa, fb) in enumerate(zip(a, b)):
            k = int(np.searchsorted(p.keypoint_frames, i, side="right") - 1)
            if k >= 0 and not np.isnan(p.keypoints[k]).all():
                drawn, plain = fa, fb
                break
    assert drawn is not None
    green = (drawn[..., 1] > 180) & (drawn[..., 0] < 120) & (drawn[..., 2] > 60) & (drawn[..., 2] < 200)
    was = (plain[..., 1] > 180) & (plain[..., 0] < 120) & (plain[..., 2] > 60) & (plain[..., 2] < 200)
    assert green.sum() > was.sum() + 10, "no skeleton drawn on a frame where a person was found"
