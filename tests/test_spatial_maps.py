"""Spatial maps in the cache (``harx extract --spatial``) and the ConvLSTM head that reads them:
what the map rows hold, adding maps to a cache, stream choice per head, fit, compare, predict."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import TINY
from harx.extract import make_config, run_extract
from harx.extract.backbones import create_backbone
from harx.extract.streams import MapOptions
from harx.features import FeatureStore
from harx.features.errors import CacheMismatchError, InvalidOptionError
from harx.temporal import compare, fit
from harx.temporal.predict import Predictor


def _extract(root: Path, out: Path, **kw):
    return run_extract(make_config(dataset="folder", root=root, out=out, **dict(TINY, **kw)))


@pytest.fixture(scope="module")
def map_cache(video_folder, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("maps") / "maps.h5"
    summary = _extract(video_folder, out, spatial=True, map_size=2)
    assert summary.streams == ["rgb", "rgb_map", "motion", "motion_map"]
    return out


def test_map_streams_have_their_shape_and_the_vectors_are_unchanged(map_cache, video_folder, tmp_path):
    store = FeatureStore(map_cache)
    backbone = create_backbone(**{k: v for k, v in TINY.items() if k != "backbone"}, name=TINY["backbone"],
                               maps=MapOptions("stage", 2))
    channels = backbone.model.feature_info[-1]["num_chs"]
    assert store.stream_info("rgb_map").feature_shape == (channels, 2, 2)
    assert store.stream_info("motion_map").spec == {"input": "motion", "gap": 2, "amp": 1.0,
                                                    "map": {"layer": "stage", "size": 2}}
    assert store.frames(0, stream="rgb_map").shape[1:] == (channels, 2, 2)
    plain = tmp_path / "plain.h5"
    _extract(video_folder, plain)                                     # no maps: the same vectors
    with FeatureStore(plain) as other:
        for name in ("rgb", "motion"):
            a, b = store.load(stream=name)[0], other.load(stream=name)[0]
            assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_a_head_map_of_size_one_is_the_pooled_vector(video_folder, tmp_path):
    """What the global pool receives, averaged to 1x1, is the frame's embedding itself."""
    out = tmp_path / "head.h5"
    _extract(video_folder, out, streams="rgb", spatial=True, map_size=1, map_layer="head")
    with FeatureStore(out) as store:
        vec, maps = store.frames(2, stream="rgb"), store.frames(2, stream="rgb_map")
    assert maps.shape == (len(vec), vec.shape[1], 1, 1)
    np.testing.assert_allclose(maps[:, :, 0, 0].astype(np.float32), vec.astype(np.float32), rtol=2e-3, atol=2e-3)


def test_spatial_adds_maps_to_a_cache_and_keeps_what_it_had(video_folder, tmp_path):
    out = tmp_path / "grow.h5"
    _extract(video_folder, out)
    before = {n: FeatureStore(out).load(stream=n)[0] for n in ("rgb", "motion")}
    summary = _extract(video_folder, out, spatial=True, map_size=2)
    assert sorted(summary.streams_added) == ["motion_map", "rgb_map"]
    with FeatureStore(out) as store:
        for name, arrays in before.items():
            assert all(np.array_equal(x, y) for x, y in zip(arrays, store.load(stream=name)[0]))
    with pytest.raises(CacheMismatchError, match="rgb_map"):          # maps of another size: another stream
        _extract(video_folder, out, spatial=True, map_size=3)


@pytest.mark.parametrize("options, message", [({"map_size": 0}, "--map-size must be a whole number from 1 to 32"),
                                              ({"map_layer": "middle"}, "--map-layer must be one of stage, head")])
def test_bad_map_options_are_one_line(video_folder, tmp_path, options, message):
    with pytest.raises(InvalidOptionError, match=message):
        _extract(video_folder, tmp_path / "x.h5", spatial=True, **options)


def test_each_head_reads_its_kind_of_stream(map_cache, video_folder, tmp_path):
    conv = fit("convlstm", map_cache, seed=0, epochs=2, out=tmp_path / "conv")
    assert conv.streams == ["rgb_map", "motion_map"] and conv.config["params"]["options"]["map_size"] == 2
    assert "2x2 feature map in order through a 1-layer ConvLSTM" in conv.metrics["protocol"]["frame_aggregation"]
    from harx.temporal.familiarity import load_familiarity

    channels = FeatureStore(map_cache).stream_info("rgb_map").feature_shape[0]
    assert load_familiarity(conv.path).center_.shape == (2 * channels,)   # each map averaged over its positions
    one = fit("convlstm", map_cache, seed=0, epochs=2, streams="motion", out=tmp_path / "one")
    assert one.streams == ["motion_map"]                              # an image stream means its map
    lstm = fit("lstm", map_cache, seed=0, epochs=2, out=tmp_path / "lstm")
    assert lstm.streams == ["rgb", "motion"]                          # the vectors, not the maps
    with pytest.raises(InvalidOptionError, match="lstm reads feature vectors, and rgb_map holds spatial maps"):
        fit("lstm", map_cache, streams="rgb_map")
    with pytest.raises(InvalidOptionError, match="map_size 1: the maps of .* are 2x2"):
        fit("convlstm", map_cache, map_size=1)
    plain = tmp_path / "plain.h5"
    _extract(video_folder, plain)
    with pytest.raises(CacheMismatchError, match="convlstm reads spatial maps.*harx extract --spatial"):
        fit("convlstm", plain)


def test_compare_puts_convlstm_beside_the_vector_heads(map_cache, tmp_path):
    result = compare(map_cache, heads="vote,convlstm", seeds=1, epochs=2, streams="motion", out=tmp_path / "cmp")
    assert set(result.results) == {"vote", "convlstm"}
    assert result.protocol["streams"] == {"vote": ["motion"], "convlstm": ["motion_map"]}
    assert "convlstm" in (tmp_path / "cmp" / "compare.md").read_text()


def test_a_convlstm_run_predicts_new_videos_from_their_maps(map_cache, video_folder, tmp_path):
    run = fit("convlstm", map_cache, seed=1, epochs=2, out=tmp_path / "run")
    predictor = Predictor(run.path, device="cpu")
    assert predictor.backbone.map_shape[1:] == (2, 2)
    video = sorted(video_folder.glob("jump/*.mp4"))[0]
    (pred,) = list(predictor.predict([video]))
    assert pred.error is None and pred.label in ("clap", "jump", "wave")
    assert np.isclose(sum(pred.probabilities.values()), 1.0, atol=1e-4)
