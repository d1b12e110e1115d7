"""Stage two on several streams: late fusion (weights on val, one run per stream), early fusion,
checkpoints, and the refusals (a stream the cache lacks, refit with late fusion)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from harx.features import FeatureStore
from harx.features.errors import CacheMismatchError, InvalidOptionError
from harx.temporal import compare, evaluate, fit
from harx.temporal.base import TemporalHead
from harx.temporal.fusion import LateFusion, build_head


def test_late_fusion_weighs_the_informative_stream_and_reuses_the_stream_runs(two_streams):
    rgb = fit("meanpool", two_streams, streams="rgb", seed=0, epochs=30)
    fused = fit("meanpool", two_streams, seed=0, epochs=30)           # default: every stream, late fusion
    assert fused.streams == ["rgb", "motion"] and fused.path.name.startswith("meanpool-rgb+motion-seed0-")
    weights = fused.metrics["training"]["fusion_weights"]
    assert weights["rgb"] > weights["motion"] and sum(weights.values()) == pytest.approx(1.0)
    config = json.loads((fused.path / "config.json").read_text())
    assert config["stream_runs"]["rgb"] == str(rgb.path)                # the rgb run was reused, not retrained
    assert "late: one head per stream" in fused.metrics["protocol"]["fusion"]
    # the fused probabilities are the weighted mean of the stream runs' own heads
    store = FeatureStore(two_streams)
    X, _ = store.load("test", ["rgb", "motion"])
    head = TemporalHead.load(fused.path / "best.pt")
    assert isinstance(head, LateFusion)
    parts = {s: TemporalHead.load(f"{config['stream_runs'][s]}/best.pt").predict_proba(store.load("test", s)[0])
             for s in ("rgb", "motion")}
    np.testing.assert_allclose(head.predict_proba(X), weights["rgb"] * parts["rgb"] + weights["motion"] * parts["motion"],
                               atol=1e-6)
    assert fused.metrics["test"]["accuracy"] >= rgb.metrics["test"]["accuracy"] - 0.1
    again = evaluate(fused.path)
    assert again["test"]["accuracy"] == pytest.approx(fused.metrics["test"]["accuracy"])


def test_late_fusion_fit_in_memory_equals_its_saved_copy(two_streams, tmp_path):
    store = FeatureStore(two_streams)
    X, y = store.load("train", ["rgb", "motion"])
    Xv, yv = store.load("val", ["rgb", "motion"])
    head = build_head("meanpool", [16, 16], 3, streams=["rgb", "motion"], fusion="late", epochs=20, random_state=0)
    head.fit(X, y, X_val=Xv, y_val=yv, class_names=store.class_names)
    assert len(head.weights_) == 2 and {r["phase"] for r in head.history_} == {"select:rgb", "select:motion"}
    head.save(tmp_path / "h.pt")
    back = TemporalHead.load(tmp_path / "h.pt")
    np.testing.assert_allclose(back.predict_proba(Xv), head.predict_proba(Xv), atol=1e-7)
    assert back.weights_ == head.weights_ and "late fusion of one meanpool head per stream" in back.aggregation


def test_early_fusion_is_one_head_on_both_streams(two_streams):
    run = fit("meanpool", two_streams, streams="rgb+motion", fusion="early", seed=0, epochs=5)
    assert run.path.name.startswith("meanpool-rgb+motion-early-seed0-")
    assert run.metrics["protocol"]["embed_dim"] == 32 and run.metrics["protocol"]["fusion"].startswith("early")
    assert not isinstance(TemporalHead.load(run.path / "best.pt"), LateFusion)


def test_refusals_name_the_problem_in_one_line(two_streams, small_cache):
    with pytest.raises(CacheMismatchError, match="has no flow stream that this run needs"):
        fit("vote", two_streams, streams="rgb+flow")
    with pytest.raises(InvalidOptionError, match="refit-trainval is not offered with late fusion"):
        fit("vote", two_streams, refit_trainval=True)
    with pytest.raises(InvalidOptionError, match="--fusion must be one of late, early"):
        fit("vote", two_streams, fusion="middle")
    run = fit("vote", two_streams, seed=0, epochs=2)
    with pytest.raises(CacheMismatchError, match="has no motion stream that run"):
        evaluate(run.path, features=small_cache)


def test_compare_shows_each_stream_and_the_fusion(two_streams, tmp_path):
    result = compare(two_streams, heads="vote,meanpool", seeds=2, out=tmp_path / "cmp", epochs=3)
    assert list(result.results) == ["vote-rgb", "meanpool-rgb", "vote-motion", "meanpool-motion",
                                    "vote-rgb+motion", "meanpool-rgb+motion"]
    assert "**Test accuracy (%) per stream**" in result.table
    for row in ("| rgb |", "| motion |", "| rgb+motion |"):
        assert row in result.table
    doc = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert doc["protocol"]["streams"]["vote-rgb+motion"] == ["rgb", "motion"]
    # one strategy table: a row per head and input, accuracy beside both costs
    assert "## Strategies" in result.table and "not recorded in this cache" in result.table   # (synthetic)
    rows = [line for line in result.table.splitlines() if line.startswith("| single-frame classification")]
    assert [r.split(" | ")[1] for r in rows] == ["rgb (CNN)", "motion (CNN)", "rgb (CNN) + motion (CNN), late fusion"]
    assert all(r.endswith("| — |") for r in rows)                       # no stage-one cost recorded
    every = compare(two_streams, heads="all", seeds=1, out=tmp_path / "all", epochs=1, streams="rgb")
    assert list(every.results) == ["gru", "lstm", "meanpool", "tcn", "transformer", "vote"]   # no maps: no convlstm
    only = compare(two_streams, heads="vote", seeds=1, out=tmp_path / "one", epochs=3, streams="rgb")
    assert list(only.results) == ["vote"] and "per stream" not in only.table
