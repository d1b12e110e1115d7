"""Run folders, evaluation, refusal of foreign caches, protocol honesty, and comparisons."""

from __future__ import annotations

import csv
import dataclasses
import json

import numpy as np
import pytest

from harx.features.errors import CacheMismatchError
from harx.features.reader import FeatureStore
from harx.features.synthetic import make_synthetic_cache
from harx.features.writer import FeatureWriter
from harx.temporal import RunFolderError, compare, evaluate, fit
from harx.temporal.metrics import classification_metrics, video_scores

FAST = {"epochs": 3}
RUN_FILES = {"config.json", "metrics.json", "epochs.csv", "predictions.csv", "best.pt", "last.pt", "curves.png",
             "confusion_test.png", "report.md"}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return make_synthetic_cache(tmp_path_factory.mktemp("run") / "small.h5", n_samples=60, embed_dim=16, n_classes=3,
                                mean_frames=20, max_frames=60, seed=2)


@pytest.fixture(scope="module")
def vote_run(cache, tmp_path_factory):
    return fit("vote", cache, tmp_path_factory.mktemp("runs") / "vote", seed=0, command=["harx", "fit", "vote"], **FAST)


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ----------------------------------------------------------------------------- the run folder

def test_run_folder_holds_everything(vote_run, cache):
    files = {p.name for p in vote_run.path.iterdir()}
    assert RUN_FILES <= files, f"missing: {RUN_FILES - files}"
    m = json.loads((vote_run.path / "metrics.json").read_text())
    assert m == json.loads(json.dumps(vote_run.metrics))
    for split in ("val", "test"):
        for key in ("accuracy", "mean_class_accuracy", "macro_f1", "per_class_accuracy", "confusion_matrix", "n"):
            assert key in m[split], f"metrics.json {split} lacks {key}"
        assert 0.0 <= m[split]["accuracy"] <= 1.0
        assert set(m[split]["per_class_accuracy"]) == {"box", "fall", "rise"}
        assert "majority_vote" in m[split]                    # vote reports both aggregations
    p = m["protocol"]
    for key in ("dataset", "split_protocol", "unit_scored", "frame_aggregation", "trained_on", "seed",
                "model_selection", "cache_fingerprint", "samples"):
        assert p.get(key) is not None, f"protocol lacks {key}"
    assert p["trained_on"] == "train" and p["unit_scored"] == "video" and p["seed"] == 0
    assert m["cache"]["fingerprint"] == FeatureStore(cache).stream_fingerprint(p["streams"]) and p["streams"] == ["rgb"]
    assert m["versions"]["torch"] and m["versions"]["numpy"]

    store = FeatureStore(cache)
    preds = _rows(vote_run.path / "predictions.csv")
    assert len(preds) == len(store.indices("test")) == m["test"]["n"]
    assert {r["sample_id"] for r in preds} == set(store.column("sample_id")[store.indices("test")])
    assert {"true_label", "predicted_label", "confidence", "video_id", "split"} <= set(preds[0])
    assert np.isclose(np.mean([int(r["correct"]) for r in preds]), m["test"]["accuracy"])

    epochs = _rows(vote_run.path / "epochs.csv")
    assert len(epochs) == m["training"]["epochs_run"]
    assert {"epoch", "train_loss", "val_accuracy", "seconds"} <= set(epochs[0])

    config = json.loads((vote_run.path / "config.json").read_text())
    assert config["command"] == "harx fit vote" and config["params"]["epochs"] == 3
    assert config["class_names"] == ["box", "fall", "rise"] and config["params"]["hidden_size"] == 0
    report = (vote_run.path / "report.md").read_text()
    assert "## Protocol" in report and "majority vote" in report


def test_checkpoints_hold_config_classes_and_fingerprint(vote_run, cache):
    from harx.temporal import TemporalHead

    for name in ("best.pt", "last.pt"):
        meta = TemporalHead.read_checkpoint(vote_run.path / name)["meta"]
        assert meta["checkpoint"] == name[:-3]
        assert meta["class_names"] == ["box", "fall", "rise"]
        assert meta["cache_fingerprint"] == FeatureStore(cache).stream_fingerprint("rgb")
        assert meta["config"]["head"] == "vote"
    assert not list(vote_run.path.glob("*.tmp")), "a temporary checkpoint was left behind"


def test_default_run_folder_is_named_by_head_seed_and_config(cache):
    r = fit("meanpool", cache, seed=1, **FAST)
    assert r.path.parent == cache.parent / "runs" / cache.stem
    assert r.path.name.startswith("meanpool-rgb-seed1-")
    again = fit("meanpool", cache, seed=1, reuse=True, **FAST)
    assert again.reused and again.path == r.path and again.metrics == json.loads(json.dumps(r.metrics))
    other = fit("meanpool", cache, seed=1, reuse=True, epochs=2)
    assert not other.reused and other.path != r.path


def test_same_seed_same_metrics(cache, tmp_path):
    def numbers(r):
        m = json.loads((r.path / "metrics.json").read_text())
        return m["val"], m["test"], m["training"]["best_epoch"]
    a = fit("lstm", cache, tmp_path / "a", seed=7, **FAST)
    b = fit("lstm", cache, tmp_path / "b", seed=7, **FAST)
    assert numbers(a) == numbers(b)
    assert [row["train_loss"] for row in _rows(a.path / "epochs.csv")] == \
           [row["train_loss"] for row in _rows(b.path / "epochs.csv")]


def test_on_epoch_reports_progress(cache, tmp_path):
    seen = []
    fit("meanpool", cache, tmp_path / "r", on_epoch=seen.append, **FAST)
    assert [e.epoch for e in seen] == [1, 2, 3]
    assert all(e.val_accuracy is not None and e.seconds >= 0 and e.train_loss > 0 for e in seen)


def _without_timings(doc):
    """metrics.json minus what differs between two identical runs: timings, dates, versions."""
    if isinstance(doc, dict):
        return {k: _without_timings(v) for k, v in doc.items()
                if not ("seconds" in k or k in ("created_utc", "versions"))}
    return [_without_timings(v) for v in doc] if isinstance(doc, list) else doc


@pytest.mark.parametrize("head, refit, stop_at", [("lstm", False, ("select", 3)),
                                                  ("meanpool", True, ("select", 2)),
                                                  ("meanpool", True, ("refit", 2))])
def test_an_interrupted_fit_resumes_and_ends_as_an_uninterrupted_one(cache, tmp_path, head, refit, stop_at):
    options = dict(seed=4, epochs=5, refit_trainval=refit)
    clean = fit(head, cache, tmp_path / "clean", **options)

    def ctrl_c(info):            # what Ctrl-C does, after that epoch's last.pt is written
        if (info.phase, info.epoch) == stop_at:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(head, cache, tmp_path / "cut", on_epoch=ctrl_c, **options)
    assert not (tmp_path / "cut" / "metrics.json").exists()
    seen = []
    again = fit(head, cache, tmp_path / "cut", on_epoch=seen.append, **options)
    assert (again.resumed_phase, again.resumed_from) == stop_at and clean.resumed_from is None
    assert (seen[0].phase, seen[0].epoch) == (stop_at[0], stop_at[1] + 1)   # no epoch is trained twice
    assert _without_timings(again.metrics) == _without_timings(clean.metrics)
    for name in ("predictions.csv", "epochs.csv"):
        rows = [[{k: v for k, v in r.items() if k != "seconds"} for r in _rows(run.path / name)]
                for run in (clean, again)]
        assert rows[0] == rows[1], name
    assert again.config["config_hash"] == clean.config["config_hash"]


def test_a_finished_or_other_config_run_is_not_resumed(cache, tmp_path):
    stopped = []

    def ctrl_c(info):
        if info.epoch == 2:
            stopped.append(info)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit("meanpool", cache, tmp_path / "r", seed=0, epochs=4, on_epoch=ctrl_c)
    other = fit("meanpool", cache, tmp_path / "r", seed=1, epochs=4)       # another seed: starts again
    assert other.resumed_from is None and len(other.history) == 4
    done = fit("meanpool", cache, tmp_path / "r", seed=1, epochs=4)        # finished: trained again, not resumed
    assert done.resumed_from is None


# ----------------------------------------------------------------------------- honesty of the protocol

def _copy_with_other_test(src, dst, seed=0):
    """The same cache, except that every test sample's frames are replaced by noise."""
    store = FeatureStore(src)
    skip = {"format", "schema_version", "complete", "n_samples", "n_frames", "n_failed", "created_utc", "stage_one_cost",
            "settings_fingerprint"}
    settings = {k: v for k, v in store.attrs.items() if k not in skip}
    settings["dataset_options"] = dict(settings["dataset_options"], test_replaced=True)
    rng = np.random.default_rng(seed)
    with FeatureWriter(dst, settings) as w:
        for rec in store.samples():
            x = store.frames(rec.index)
            if rec.split == "test":
                x = rng.standard_normal(x.shape).astype(np.float16)
            meta = {k: v for k, v in dataclasses.asdict(rec).items() if k not in ("index", "row_start", "row_stop")}
            w.add_sample(meta, x, store.frame_index(rec.index))
        w.finalize(order=list(store.column("sample_id")))
    return dst


def test_model_selection_never_looks_at_test(cache, tmp_path):
    other = _copy_with_other_test(cache, tmp_path / "other-test.h5")
    a = fit("lstm", cache, tmp_path / "a", seed=0, epochs=6, patience=2)
    b = fit("lstm", other, tmp_path / "b", seed=0, epochs=6, patience=2)
    assert _rows(a.path / "epochs.csv") != [] and \
        [{k: v for k, v in r.items() if k != "seconds"} for r in _rows(a.path / "epochs.csv")] == \
        [{k: v for k, v in r.items() if k != "seconds"} for r in _rows(b.path / "epochs.csv")]
    assert a.metrics["val"] == b.metrics["val"]
    assert a.metrics["training"]["best_epoch"] == b.metrics["training"]["best_epoch"]
    assert a.metrics["test"] != b.metrics["test"]          # the test data did change


def test_refit_on_train_and_val_is_stated(cache, tmp_path):
    r = fit("meanpool", cache, tmp_path / "refit", seed=0, refit_trainval=True, epochs=4)
    p, t = r.metrics["protocol"], r.metrics["training"]
    assert p["trained_on"] == "train+val" and "refit on train+val" in p["model_selection"]
    assert "before the refit" in p["validation_scores"]
    assert t["refit_epochs"] == t["best_epoch"]
    assert (r.path / "select_best.pt").is_file() and (r.path / "best.pt").is_file()
    phases = [row["phase"] for row in _rows(r.path / "epochs.csv")]
    assert phases.count("refit") == t["best_epoch"] and phases.count("select") == t["epochs_run"]
    again = evaluate(r.path)
    assert again["val"] == r.metrics["val"] and again["test"] == r.metrics["test"]


# ----------------------------------------------------------------------------- evaluate

def test_evaluate_gives_the_same_numbers(vote_run):
    m = evaluate(vote_run.path)
    assert m["same_cache"] is True
    assert m["test"] == vote_run.metrics["test"] and m["val"] == vote_run.metrics["val"]


def test_evaluate_refuses_another_backbone(vote_run, tmp_path):
    other = make_synthetic_cache(tmp_path / "resnet.h5", n_samples=30, embed_dim=16, n_classes=3, seed=2,
                                 backbone="resnet18")
    with pytest.raises(CacheMismatchError) as err:
        evaluate(vote_run.path, other)
    msg = str(err.value)
    assert "resnet18" in msg and "synthetic" in msg and "\n" not in msg


def test_evaluate_refuses_another_width_or_class_list(vote_run, tmp_path):
    wide = make_synthetic_cache(tmp_path / "wide.h5", n_samples=30, embed_dim=32, n_classes=3, seed=2)
    with pytest.raises(CacheMismatchError, match="32-d.*16-d"):
        evaluate(vote_run.path, wide)
    four = make_synthetic_cache(tmp_path / "four.h5", n_samples=30, embed_dim=16, n_classes=4, seed=2)
    with pytest.raises(CacheMismatchError, match="4 classes.*3 classes"):
        evaluate(vote_run.path, four)


def test_evaluate_on_a_missing_or_unfinished_run(tmp_path, vote_run):
    with pytest.raises(RunFolderError, match="not found"):
        evaluate(tmp_path / "nope")
    half = tmp_path / "half"
    half.mkdir()
    (half / "config.json").write_text((vote_run.path / "config.json").read_text())
    with pytest.raises(RunFolderError, match="no best.pt"):
        evaluate(half)


def test_evaluate_when_the_runs_cache_is_gone(tmp_path, vote_run):
    import shutil

    from harx.features.errors import DatasetNotFoundError

    moved = tmp_path / "moved"
    shutil.copytree(vote_run.path, moved)
    config = json.loads((moved / "config.json").read_text())
    config["features"] = str(tmp_path / "gone.h5")
    (moved / "config.json").write_text(json.dumps(config))
    with pytest.raises(DatasetNotFoundError, match="which is gone; pass --features"):
        evaluate(moved)
    assert evaluate(moved, vote_run.features)["test"] == vote_run.metrics["test"]


# ----------------------------------------------------------------------------- metrics

def test_metrics_by_hand():
    y = np.array([0, 0, 1, 1, 2])
    P = np.eye(3)[[0, 1, 1, 1, 0]]
    m = classification_metrics(y, P, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["per_class_accuracy"] == {"a": 0.5, "b": 1.0, "c": 0.0}
    assert m["mean_class_accuracy"] == pytest.approx(0.5)
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert m["macro_f1"] == pytest.approx(np.mean([0.5, 0.8, 0.0]))


def test_video_scores_average_subsequences():
    P = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.6, 0.4]])
    videos, vp, vy = video_scores(["v1", "v1", "v2", "v2"], P, np.array([0, 0, 1, 1]), weights=[3, 1, 1, 1])
    assert videos == ["v1", "v2"] and list(vy) == [0, 1]
    assert np.allclose(vp[0], [(2.7 + 0.2) / 4, (0.3 + 0.8) / 4]) and np.allclose(vp[1], [0.45, 0.55])


def test_subsequences_are_also_scored_per_video(tmp_path):
    path = make_synthetic_cache(tmp_path / "sub.h5", n_samples=72, embed_dim=16, n_classes=3, unit="subsequence",
                                mean_frames=15, seed=3)
    r = fit("meanpool", path, tmp_path / "r", **FAST)
    store = FeatureStore(path)
    test_videos = set(store.column("video_id")[store.indices("test")])
    assert r.metrics["protocol"]["unit_scored"] == "subsequence"
    assert r.metrics["test"]["video"]["n"] == len(test_videos) < r.metrics["test"]["n"]
    assert len(_rows(r.path / "predictions_video.csv")) == len(test_videos)
    assert "per video" in (r.path / "report.md").read_text()


# ----------------------------------------------------------------------------- compare

def test_compare_writes_the_aggregate_and_reuses_finished_runs(cache, tmp_path):
    out = tmp_path / "cmp"
    runs = []
    first = compare(cache, heads="vote,meanpool", seeds=2, out=out, epochs=2, on_run=runs.append)
    assert [(r.head, r.seed) for r in runs] == [("vote", 0), ("vote", 1), ("meanpool", 0), ("meanpool", 1)]
    for name in ("compare.json", "compare.md", "compare.csv", "compare.png"):
        assert (out / name).is_file(), name
    doc = json.loads((out / "compare.json").read_text())
    acc = doc["results"]["vote"]["test"]["accuracy"]
    assert set(acc) == {"mean", "std", "values"} and len(acc["values"]) == 2
    assert all(0.0 <= v <= 1.0 for v in acc["values"]) and acc["mean"] == pytest.approx(np.mean(acc["values"]))
    assert acc["std"] == pytest.approx(np.std(acc["values"], ddof=1))
    assert doc["protocol"]["seeds"] == [0, 1] and doc["protocol"]["dataset"] == "synthetic"
    assert set(doc["protocol"]["frame_aggregation"]) == {"vote", "meanpool"}
    assert set(doc["results"]["meanpool"]["test"]["per_class_accuracy"]) == {"box", "fall", "rise"}
    assert first.table.startswith("# vote vs meanpool") and "**Protocol.**" in first.table
    assert len(_rows(out / "compare.csv")) == 4

    mtimes = {r.path: (r.path / "metrics.json").stat().st_mtime_ns for r in first.runs}
    epochs = []
    second = compare(cache, heads=["vote", "meanpool"], seeds=2, out=out, epochs=2, on_epoch=epochs.append)
    assert second.n_reused == 4 and epochs == [], "finished runs were trained again"
    assert {r.path: (r.path / "metrics.json").stat().st_mtime_ns for r in second.runs} == mtimes
    assert second.results == first.results


def test_compare_defaults_to_vote_and_lstm():
    import inspect

    assert inspect.signature(compare).parameters["heads"].default == ("vote", "lstm")


def test_sequence_heads_crop_the_same_duration_of_a_thinned_cache(video_folder, tmp_path, cache):
    """At --every 4 a 32-row crop covers a whole short sample (no temporal augmentation): the
    default crop of sequence heads is divided by the rows' spacing; frame-level heads keep theirs."""
    from conftest import TINY
    from harx.extract import make_config, run_extract

    thinned = run_extract(make_config(dataset="folder", root=video_folder, out=tmp_path / "e4.h5", every=4,
                                      streams="rgb", **TINY)).out
    lstm = fit("lstm", thinned, tmp_path / "lstm", epochs=1)
    # 32 rows at every frame; the short clips here (9-40 frames) put rows 3-4 source frames apart
    assert 8 <= lstm.config["params"]["crop_frames"] <= 11
    assert fit("vote", thinned, tmp_path / "vote", epochs=1).config["params"]["crop_frames"] == 64
    assert fit("lstm", thinned, tmp_path / "given", epochs=1, crop_frames=20).config["params"]["crop_frames"] == 20
    assert fit("lstm", cache, tmp_path / "every1", epochs=1).config["params"]["crop_frames"] == 32
