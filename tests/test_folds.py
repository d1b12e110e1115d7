"""Datasets with official folds: one cache holds every fold's split, a run names its fold, and
compare reports each fold and the mean over folds."""

from __future__ import annotations

import dataclasses

import pytest

from harx.features import FeatureStore, FeatureWriter
from harx.features.errors import InvalidOptionError
from harx.temporal import compare, evaluate, fit

SWAP = {"train": "test", "test": "train", "val": "val"}


@pytest.fixture(scope="module")
def folded(small_cache, tmp_path_factory):
    """The small synthetic cache with two folds: split1 = its split, split2 = train and test swapped,
    and a third sample unused by split2; written in two writer sessions (a resumed extraction)."""
    src = FeatureStore(small_cache)
    skip = {"format", "schema_version", "complete", "n_samples", "n_frames", "n_failed", "created_utc", "stage_one_cost",
            "settings_fingerprint", "streams"}
    settings = dict({k: v for k, v in src.attrs.items() if k not in skip}, folds=["split1", "split2"])
    dst = tmp_path_factory.mktemp("folds") / "folds.h5"
    records = src.samples()
    for part in (records[:30], records[30:]):
        with FeatureWriter(dst, settings) as w:
            for rec in part:
                meta = {k: v for k, v in dataclasses.asdict(rec).items() if k not in ("index", "row_start", "row_stop")}
                meta.update(fold_split1=rec.split, fold_split2="" if rec.index == 2 else SWAP[rec.split])
                w.add_sample(meta, src.frames(rec.index), src.frame_index(rec.index))
            if part is not records[:30]:
                w.finalize(order=list(src.column("sample_id")))
    return dst


def test_the_cache_holds_every_fold(folded, small_cache):
    store, src = FeatureStore(folded), FeatureStore(small_cache)
    assert store.folds == ["split1", "split2"] and FeatureStore(small_cache).folds == []
    assert list(store.fold_splits(1)) == list(src.column("split")) == list(store.column("split"))
    second = store.select(fold="split2")
    assert len(second.indices()) == len(store) - 1 and list(second.indices("train")) == list(src.indices("test"))
    with pytest.raises(InvalidOptionError, match="has no fold 'split3'; its folds: split1, split2"):
        store.select(fold="split3")


def test_runs_name_their_fold_and_evaluate_keeps_it(folded):
    one = fit("meanpool", folded, epochs=2)
    two = fit("meanpool", folded, epochs=2, fold=2)
    assert one.metrics["protocol"]["fold"] == "split1" and two.metrics["protocol"]["fold"] == "split2"
    assert "-split2-seed0-" in two.path.name and one.path != two.path
    n1, n2 = one.metrics["protocol"]["samples"], two.metrics["protocol"]["samples"]
    # train and test swapped, and one sample unused in split2
    assert sum(n1.values()) == sum(n2.values()) + 1 and abs(n1["train"] - n2["test"]) + abs(n1["test"] - n2["train"]) == 1
    again = evaluate(two.path)
    assert again["protocol"]["fold"] == "split2" and again["test"]["accuracy"] == pytest.approx(
        two.metrics["test"]["accuracy"])


def test_compare_every_fold_reports_each_and_the_mean(folded, small_cache, tmp_path):
    result = compare(folded, heads="vote,meanpool", seeds=2, out=tmp_path / "cmp", epochs=2, fold="all")
    assert set(result.results) == {"vote", "meanpool"}
    for head, entry in result.results.items():
        per_fold = entry["folds"]["accuracy"]
        assert set(per_fold) == {"split1", "split2"}
        assert entry["test"]["accuracy"]["mean"] == pytest.approx(sum(per_fold.values()) / 2)
    assert (tmp_path / "cmp" / "split2" / "compare.md").is_file()
    assert "| vote | " in result.table and "mean ± std over folds" in result.table
    assert (tmp_path / "cmp" / "compare_folds.json").is_file()
    with pytest.raises(InvalidOptionError, match="has one split, no folds"):
        compare(small_cache, heads="vote", seeds=1, fold="all", out=tmp_path / "x")
