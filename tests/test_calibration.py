"""Temperature scaling: the math on synthetic predictions, and a run that fits, records and applies T."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from harx.features.reader import FeatureStore
from harx.features.synthetic import make_synthetic_cache
from harx.temporal import TemporalHead, compare, evaluate, fit
from harx.temporal.calibration import (apply_temperature, expected_calibration_error, fit_calibration,
                                       fit_temperature, negative_log_likelihood, temperature_of)
from harx.temporal.predict import load_run


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _calibrated(n=20000, c=5, seed=0):
    """Probabilities and labels drawn from them: calibrated by construction."""
    rng = np.random.default_rng(seed)
    P = _softmax(2.0 * rng.normal(size=(n, c)))
    y = (rng.random(n)[:, None] > np.cumsum(P, 1)).sum(1)
    return P, y


# ----------------------------------------------------------------------------- the math

def test_calibrated_predictions_have_ece_near_zero_and_keep_t_near_one():
    P, y = _calibrated()
    assert expected_calibration_error(P, y) < 0.015
    assert fit_temperature(P, y) == pytest.approx(1.0, abs=0.05)


def test_overconfident_predictions_get_t_above_one_and_lower_ece():
    P, y = _calibrated(seed=1)
    over = apply_temperature(P, 1 / 3)          # p ** 3, renormalised: three times the logits
    t = fit_temperature(over, y)
    assert t == pytest.approx(3.0, rel=0.05)
    after = apply_temperature(over, t)
    assert expected_calibration_error(over, y) > 0.1 > 0.015 > expected_calibration_error(after, y)
    assert negative_log_likelihood(after, y) < negative_log_likelihood(over, y)
    under = apply_temperature(P, 2.0)           # underconfident: T < 1 sharpens
    assert fit_temperature(under, y) == pytest.approx(0.5, rel=0.05)


def test_t_one_changes_nothing_and_no_t_changes_the_argmax():
    rng = np.random.default_rng(2)
    P = _softmax(rng.normal(size=(500, 7)) * 3).astype(np.float32)
    P[0] = [0.5, 0.5, 0, 0, 0, 0, 0]            # a tie and underflowed zeros
    np.testing.assert_array_equal(apply_temperature(P, 1.0), P)
    for t in (0.05, 0.3, 0.9, 1.1, 3.0, 20.0):
        Q = apply_temperature(P, t)
        np.testing.assert_array_equal(Q.argmax(1), P.argmax(1))
        np.testing.assert_allclose(Q.sum(1), 1.0, atol=1e-12)
    with pytest.raises(ValueError):
        apply_temperature(P, 0.0)


def test_ece_by_hand_and_empty_inputs():
    P = np.tile([[0.9, 0.1]], (10, 1))
    y = np.array([0] * 6 + [1] * 4)
    assert expected_calibration_error(P, y) == pytest.approx(0.3)      # |0.6 - 0.9|
    # two bins: (0.5, 0.6] holds 0.55 (right), (0.9, 1] holds 1.0 (wrong): (0.45 + 1.0) / 2
    assert expected_calibration_error(np.array([[0.55, 0.45], [1.0, 0.0]]), [0, 1]) == pytest.approx(0.725)
    assert expected_calibration_error(np.zeros((0, 2)), []) is None
    assert fit_temperature(np.zeros((0, 2)), []) == 1.0
    assert fit_temperature(P, y) == fit_temperature(P, y)             # deterministic


def test_a_val_split_with_every_sample_right_is_not_calibrated():
    """Its NLL falls without end as T -> 0: fitting would make test probabilities 0/1 (T = 1 instead)."""
    P, y = _calibrated(n=300, seed=3)
    right = P.argmax(1)
    assert fit_temperature(P, right) == pytest.approx(np.exp(-3))
    c = fit_calibration(P, right)
    assert c["method"] == "none" and c["temperature"] == 1.0 and "all 300 val samples are right" in c["description"]
    c = fit_calibration(P, y)
    assert c["method"] == "temperature" and c["val_nll_after"] <= c["val_nll_before"]
    assert fit_calibration(P[:0], y[:0])["method"] == "none"


def test_checkpoints_without_a_temperature_mean_one():
    assert temperature_of({}) == 1.0 and temperature_of({"calibration": None}) == 1.0
    assert temperature_of({"calibration": {"temperature": 1.7}}) == 1.7


# ----------------------------------------------------------------------------- a run

@pytest.fixture(scope="module")
def cache(small_cache):
    return small_cache


@pytest.fixture(scope="module")
def gru_run(cache, tmp_path_factory):
    """A recurrent head (softmax of logits) that gets some val samples wrong: T is fitted."""
    return fit("gru", cache, tmp_path_factory.mktemp("runs") / "gru", seed=0, epochs=3)


def test_fit_records_the_temperature_and_ece_before_and_after(gru_run):
    m = json.loads((gru_run.path / "metrics.json").read_text())
    c = m["calibration"]
    assert c["method"] == "temperature" and c["fitted_on"] == "val" and c["scores"] == "probability"
    assert c["temperature"] != 1.0 and m["val"]["accuracy"] < 1.0
    assert c["val_nll_after"] <= c["val_nll_before"] + 1e-12        # T minimises the val NLL (T = 1 is allowed)
    for split in ("val", "test"):
        block = m[split]["calibration"]
        assert set(block) == {"temperature", "ece_before", "ece_after", "nll_before", "nll_after"}
        assert block["temperature"] == c["temperature"]
    assert m["val"]["calibration"]["nll_after"] == pytest.approx(c["val_nll_after"])
    assert m["protocol"]["probabilities"].startswith("calibrated by temperature scaling")
    assert "## Calibration" in (gru_run.path / "report.md").read_text()
    assert temperature_of(TemporalHead.load(gru_run.path / "best.pt")) == c["temperature"]


def test_predictions_csv_and_evaluate_use_the_calibrated_probabilities(gru_run, cache):
    t = gru_run.metrics["calibration"]["temperature"]
    store = FeatureStore(cache)
    X, y = store.load("test")
    head, _, _ = load_run(gru_run.path)
    raw = head.predict_proba(X)
    expected = apply_temperature(raw, t)
    with open(gru_run.path / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    got = np.array([[float(r[f"p_{c}"]) for c in store.class_names] for r in rows])
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert [float(r["confidence"]) for r in rows] == pytest.approx(expected.max(1), abs=1e-4)
    block = gru_run.metrics["test"]["calibration"]
    assert block["ece_before"] == pytest.approx(expected_calibration_error(raw, y))
    assert block["ece_after"] == pytest.approx(expected_calibration_error(expected, y))
    assert gru_run.metrics["test"]["accuracy"] == pytest.approx(np.mean(raw.argmax(1) == y))
    again = evaluate(gru_run.path)
    assert again["test"] == gru_run.metrics["test"] and again["val"] == gru_run.metrics["val"]
    assert again["calibration"] == gru_run.metrics["calibration"]


def test_a_run_from_before_calibration_is_scored_with_t_one(gru_run, tmp_path):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(gru_run.path, old)
    ckpt = TemporalHead.read_checkpoint(old / "best.pt")
    head = TemporalHead.load(old / "best.pt")
    head.save(old / "best.pt", {k: v for k, v in ckpt["meta"].items() if k != "calibration"})
    m = evaluate(old)
    assert m["calibration"] is None and "not calibrated" in m["protocol"]["probabilities"]
    block = m["test"]["calibration"]
    assert block["temperature"] == 1.0 and block["ece_after"] == block["ece_before"]
    assert block["ece_before"] == gru_run.metrics["test"]["calibration"]["ece_before"]
    assert m["test"]["accuracy"] == gru_run.metrics["test"]["accuracy"]
    assert temperature_of(load_run(old)[0]) == 1.0


def test_without_a_val_split_nothing_is_calibrated(tmp_path):
    path = make_synthetic_cache(tmp_path / "noval.h5", n_samples=40, embed_dim=16, n_classes=3, mean_frames=20,
                                max_frames=60, seed=3, split_fractions=(0.8, 0.0, 0.2))
    r = fit("vote", path, tmp_path / "vote", seed=0, epochs=2)
    assert r.metrics["calibration"] == {"method": "none", "temperature": 1.0, "fitted_on": None,
                                        "description": "not calibrated (no val split)"}
    assert r.metrics["test"]["calibration"]["ece_after"] == r.metrics["test"]["calibration"]["ece_before"]
    assert temperature_of(TemporalHead.load(r.path / "best.pt")) == 1.0


def test_refit_applies_the_temperature_of_the_selected_model(cache, tmp_path):
    r = fit("meanpool", cache, tmp_path / "refit", seed=0, refit_trainval=True, epochs=2)
    c = r.metrics["calibration"]
    assert c["method"] == "temperature" and c["fitted_on"].startswith("val (scores of the model selected")
    assert r.metrics["test"]["calibration"]["temperature"] == c["temperature"]
    assert temperature_of(TemporalHead.load(r.path / "best.pt")) == c["temperature"]


def test_compare_reports_ece_over_seeds(cache, tmp_path):
    result = compare(cache, heads="vote", seeds=2, out=tmp_path / "cmp", epochs=2)
    ece = result.results["vote"]["test"]["calibration"]["ece_after"]
    assert len(ece["values"]) == 2 and ece["mean"] == pytest.approx(np.mean(ece["values"]))
    assert "test ECE after calibration" in result.table and "T = " in result.table
    header = (tmp_path / "cmp" / "compare.csv").read_text().splitlines()[0]
    assert "test_calibration_ece_after" in header
