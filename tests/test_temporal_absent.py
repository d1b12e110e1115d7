"""A class without training samples: the head has no output for it, reports name it, warnings say it."""

from __future__ import annotations

import csv
import dataclasses
import json

import numpy as np
import pytest

from harx.features.errors import HarxError
from harx.features.reader import FeatureStore
from harx.features.writer import FeatureWriter
from harx.temporal import TemporalHead, compare, evaluate, fit
from harx.temporal.classmap import ClassMap
from harx.temporal.predict import load_run

FAST = {"epochs": 3}
NO_TRAINING = "class(es) with no training sample: box;"


def _copy_without(src, dst, drop):
    """``src`` without the samples for which ``drop(record)`` is true."""
    store = FeatureStore(src)
    skip = {"format", "schema_version", "complete", "n_samples", "n_frames", "n_failed", "created_utc", "stage_one_cost",
            "settings_fingerprint"}
    settings = {k: v for k, v in store.attrs.items() if k not in skip}
    settings["dataset_options"] = dict(settings["dataset_options"], copied_to=str(dst))
    with FeatureWriter(dst, settings) as w:
        kept = []
        for rec in store.samples():
            if drop(rec):
                continue
            meta = {k: v for k, v in dataclasses.asdict(rec).items() if k not in ("index", "row_start", "row_stop")}
            w.add_sample(meta, store.frames(rec.index), store.frame_index(rec.index))
            kept.append(rec.sample_id)
        w.finalize(order=kept)
    return dst


@pytest.fixture(scope="module")
def full(small_cache):
    return small_cache


@pytest.fixture(scope="module")
def no_box(full, tmp_path_factory):
    """The same cache without box's training samples (box stays in val and test)."""
    return _copy_without(full, tmp_path_factory.mktemp("absent") / "no-box.h5",
                         lambda r: r.label == "box" and r.split == "train")


@pytest.fixture(scope="module")
def vote_run(no_box, tmp_path_factory):
    return fit("vote", no_box, tmp_path_factory.mktemp("runs") / "vote", seed=0, **FAST)


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_head_never_predicts_a_class_it_was_not_trained_on(vote_run, no_box):
    head = TemporalHead.load(vote_run.path / "best.pt")
    assert list(head.classes_) == ["fall", "rise"] and head.num_classes == 2
    rows = _rows(vote_run.path / "predictions.csv")
    assert {r["predicted_label"] for r in rows} <= {"fall", "rise"}
    assert {r["majority_vote_label"] for r in rows} <= {"fall", "rise"}
    assert all(float(r["p_box"]) == 0.0 for r in rows)           # calibration keeps it at 0
    calibration = vote_run.metrics["test"]["calibration"]          # NLL over trained classes only: finite
    assert np.isfinite(calibration["nll_after"]) and calibration["ece_after"] is not None
    box = [r for r in rows if r["true_label"] == "box"]
    assert box and all(r["correct"] == "0" for r in box)          # always errors, never dropped

    store = FeatureStore(no_box)
    test = store.indices("test")
    box_ids = sorted(store.column("sample_id")[test][store.column("label")[test] == "box"])
    m = vote_run.metrics
    assert m["test"]["absent_from_training"] == {"classes": ["box"], "sample_ids": box_ids}
    assert m["test"]["per_class_accuracy"]["box"] == 0.0 and m["test"]["n"] == len(test)
    assert sum(row[0] for row in m["test"]["confusion_matrix"]) == 0  # nothing predicted as box
    p = m["protocol"]
    assert p["class_names"] == ["box", "fall", "rise"] and p["trained_classes"] == ["fall", "rise"]
    assert p["absent_from_training"] == ["box"]
    config = json.loads((vote_run.path / "config.json").read_text())
    assert config["class_names"] == ["fall", "rise"] and config["cache_class_names"] == ["box", "fall", "rise"]
    report = (vote_run.path / "report.md").read_text()
    assert "classes absent from training: box" in report and "box (not trained)" in report
    assert box_ids[0] in report


def test_fit_warns_of_a_class_without_training_samples(vote_run, full, tmp_path):
    assert [w for w in vote_run.warnings if w.startswith(NO_TRAINING)] and vote_run.warnings == \
        vote_run.metrics["protocol"]["warnings"]
    complete = fit("vote", full, tmp_path / "full", seed=0, **FAST)
    assert complete.warnings == [] and complete.metrics["protocol"]["absent_from_training"] == []
    assert "absent_from_training" not in complete.metrics["test"]
    no_test = _copy_without(full, tmp_path / "no-test.h5", lambda r: r.label == "rise" and r.split == "test")
    r = fit("vote", no_test, tmp_path / "no-test", seed=0, **FAST)
    assert [w.split(";")[0] for w in r.warnings] == ["class(es) with no test sample: rise"]


def test_evaluate_compare_and_predict_work_with_such_runs(vote_run, no_box, full, tmp_path):
    again = evaluate(vote_run.path)
    assert again["test"] == vote_run.metrics["test"]
    assert again["protocol"]["absent_from_training"] == ["box"]
    on_full = evaluate(vote_run.path, full)          # a cache with box's training samples: box still absent
    assert on_full["test"]["per_class_accuracy"]["box"] == 0.0
    head, config, _ = load_run(vote_run.path)        # what harx predict loads: labels are the run's classes
    assert list(head.classes_) == ["fall", "rise"]
    assert head.predict_proba(FeatureStore(full).load("test")[0]).shape[1] == 2
    result = compare(no_box, heads="vote", seeds=1, out=tmp_path / "cmp", epochs=3)
    assert result.protocol["absent_from_training"] == ["box"]
    assert "Classes absent from training:** box" in result.table


def test_refit_leaves_out_val_samples_of_untrained_classes(no_box, tmp_path):
    r = fit("meanpool", no_box, tmp_path / "refit", seed=0, refit_trainval=True, epochs=2)
    assert r.metrics["protocol"]["trained_classes"] == ["fall", "rise"]
    assert any("left out of the refit" in w for w in r.warnings)


def test_one_trained_class_is_refused(full, tmp_path):
    one = _copy_without(full, tmp_path / "one.h5", lambda r: r.split == "train" and r.label != "fall")
    with pytest.raises(HarxError, match="training samples of 1 class \\(fall\\) of 3; a classifier needs two"):
        fit("vote", one, tmp_path / "one", **FAST)


def test_class_map_lays_scores_over_the_cache_classes():
    classes = ClassMap(["boxing", "running", "walking"], ["running", "walking"])
    assert classes.cache_scores(np.array([[0.3, 0.7]])).tolist() == [[0.0, 0.3, 0.7]]
    assert classes.head_labels(np.array([0, 1, 2])).tolist() == [-1, 0, 1]
    assert classes.absent == ["boxing"]


def test_cli_prints_the_warnings(vote_run, no_box, tmp_path):
    from typer.testing import CliRunner

    from harx.cli import app

    result = CliRunner().invoke(app, ["fit", "vote", "--features", str(no_box), "--out", str(tmp_path / "r"),
                                      "--epochs", "2"])
    assert result.exit_code == 0, result.output
    assert f"warning: {NO_TRAINING}" in result.output
    result = CliRunner().invoke(app, ["evaluate", "--run", str(vote_run.path)])
    assert result.exit_code == 0 and "warning: the run was not trained on box" in result.output
    result = CliRunner().invoke(app, ["compare", "--features", str(no_box), "--heads", "vote", "--seeds", "1",
                                      "--epochs", "2", "--out", str(tmp_path / "cmp")])
    assert result.exit_code == 0, result.output
    assert result.output.count(f"warning: {NO_TRAINING}") == 1
