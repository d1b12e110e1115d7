"""Temperature scaling: probabilities that mean what they say (Guo et al., ICML 2017).

A head's probabilities need not mean what they say: a network trained to high accuracy is often
overconfident (of the samples it labels with 95 %, fewer than 95 % are right), and one stopped early
can be underconfident. Temperature scaling corrects both with one number ``T > 0`` per run, fitted
after training by minimising the negative log-likelihood (NLL) of the **val** split::

    p_T = softmax(log p / T)          # = p ** (1/T), renormalised

For heads whose probabilities are a softmax of logits (``lstm``, ``gru``, ``meanpool``) this is
exactly Guo et al.'s ``softmax(z / T)``, since ``log p`` is ``z`` up to a per-row constant. For
``vote`` the primary score is the *mean* of the frames' probabilities, which is no softmax; scaling
the log of that mean is then an ordinary post-hoc calibration of the sample's probabilities (the
same one-parameter family, fitted the same way), not a temperature on the frame logits. The
majority vote (a share of frames) is reported as it is, uncalibrated.

``T > 1`` softens overconfident probabilities, ``T < 1`` sharpens underconfident ones; ``T = 1``
changes nothing. No ``T`` changes which class is most probable, so accuracy, F1 and confusion
matrices are those of the uncalibrated head. The fit is a deterministic bounded 1-D search on
``log T`` in [-3, 3] (``T`` from 0.05 to 20): a grid of step 0.05, then golden-section refinement
around the best grid point. The NLL is convex in ``1/T``, so the search finds its minimum. A run
keeps ``T = 1`` ("not calibrated", with the reason) without a val split, and when every val sample
is right: the NLL then has no minimum (it falls as ``T -> 0``); see :func:`fit_calibration`.

The expected calibration error (ECE) is the standard one: top-label confidences binned in 15
equal-width bins ``(0, 1/15], ..., (14/15, 1]``, and ``ECE = sum_b |B_b| / N * |acc(B_b) - conf(B_b)|``.
Example: 10 samples all predicted with confidence 0.9, 6 of them right: ECE = |0.6 - 0.9| = 0.3.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["ECE_BINS", "LOG_T_RANGE", "apply_temperature", "calibration_block", "describe",
           "expected_calibration_error", "fit_calibration", "fit_temperature", "negative_log_likelihood",
           "not_calibrated", "temperature_of"]

#: equal-width confidence bins of the expected calibration error (Guo et al. use 15)
ECE_BINS = 15
#: the search range of log T: T from e^-3 = 0.05 to e^3 = 20
LOG_T_RANGE = (-3.0, 3.0)
_TINY = np.finfo(np.float64).tiny       # log(0) would be -inf: a probability that underflowed stays the smallest


def _log_probabilities(P) -> np.ndarray:
    return np.log(np.maximum(np.asarray(P, dtype=np.float64), _TINY))


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def apply_temperature(P, temperature: float) -> np.ndarray:
    """Probabilities ``(N, C)`` calibrated with ``temperature``: ``softmax(log P / T)``, as float64.

    ``T = 1`` returns ``P`` unchanged (as float64); rows keep their most probable class for any ``T > 0``.
    """
    P = np.asarray(P, dtype=np.float64)
    t = float(temperature)
    if not t > 0 or not math.isfinite(t):
        raise ValueError(f"temperature must be a positive finite number, got {temperature}")
    if t == 1.0 or P.size == 0:
        return P
    return np.exp(_log_softmax(_log_probabilities(P) / t))


def negative_log_likelihood(P, y) -> float | None:
    """Mean of ``-log P[i, y[i]]`` (nats); ``None`` for no samples. A probability of 0 counts as
    the smallest positive float64 (-log = 708), not as infinity."""
    P, y = np.asarray(P, dtype=np.float64), np.asarray(y, dtype=np.int64)
    if len(y) == 0:
        return None
    return max(0.0, float(-np.mean(_log_probabilities(P[np.arange(len(y)), y]))))   # no -0.0


def _nll_at(logp: np.ndarray, y: np.ndarray, log_t: float) -> float:
    return float(-np.mean(_log_softmax(logp / math.exp(log_t))[np.arange(len(y)), y]))


def fit_temperature(P, y, *, grid_step: float = 0.05, tol: float = 1e-6) -> float:
    """The temperature ``T`` that minimises the NLL of labels ``y`` under ``apply_temperature(P, T)``.

    ``P``: (N, C) probabilities (rows sum to 1), ``y``: (N,) label indices into P's columns.
    Deterministic: a grid over :data:`LOG_T_RANGE`, then golden-section search between the best
    grid point's neighbours. No samples: ``T = 1``.
    """
    logp = _log_probabilities(P)
    y = np.asarray(y, dtype=np.int64)
    if len(y) == 0:
        return 1.0
    lo, hi = LOG_T_RANGE
    grid = np.linspace(lo, hi, int(round((hi - lo) / grid_step)) + 1)
    losses = [_nll_at(logp, y, g) for g in grid]
    k = int(np.argmin(losses))                  # first minimum: ties (e.g. all-correct one-hot) keep the smaller T
    a, b = grid[max(k - 1, 0)], grid[min(k + 1, len(grid) - 1)]
    ratio = (math.sqrt(5) - 1) / 2
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = _nll_at(logp, y, c), _nll_at(logp, y, d)
    while b - a > tol:
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = _nll_at(logp, y, c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = _nll_at(logp, y, d)
    best = min(((losses[k], grid[k]), (fc, c), (fd, d)))[1]
    return float(math.exp(best))


def expected_calibration_error(P, y, n_bins: int = ECE_BINS) -> float | None:
    """ECE of the top-label confidence over ``n_bins`` equal-width bins (see the module docstring);
    ``None`` for no samples. ``y`` may hold labels no column predicts well: they are simply wrong."""
    P, y = np.asarray(P, dtype=np.float64), np.asarray(y, dtype=np.int64)
    if len(y) == 0:
        return None
    conf, correct = P.max(axis=1), (P.argmax(axis=1) == y).astype(np.float64)
    # bin b holds confidences in (b/n, (b+1)/n]; a confidence of exactly 0 goes to the first bin
    bins = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        inside = bins == b
        if inside.any():
            total += inside.sum() / len(y) * abs(correct[inside].mean() - conf[inside].mean())
    return float(total)


def calibration_block(P_before, P_after, y, temperature: float, nll_mask=None) -> dict:
    """A split's ``calibration`` entry in ``metrics.json``: ECE and NLL before and after, and ``T``.

    ``nll_mask`` (bool, N) selects the samples the NLL is taken over (a run leaves out samples of
    classes its head has no output for: their probability is 0, their NLL infinite); the ECE
    takes every sample, those included (they are confident errors like any other).
    """
    keep = np.ones(len(y), bool) if nll_mask is None else np.asarray(nll_mask, bool)
    y = np.asarray(y, dtype=np.int64)
    return {"temperature": float(temperature),
            "ece_before": expected_calibration_error(P_before, y), "ece_after": expected_calibration_error(P_after, y),
            "nll_before": negative_log_likelihood(np.asarray(P_before)[keep], y[keep]),
            "nll_after": negative_log_likelihood(np.asarray(P_after)[keep], y[keep])}


def temperature_of(head_or_meta) -> float:
    """The temperature a run's checkpoint records (``meta["calibration"]["temperature"]``); 1 for a
    checkpoint written before harx calibrated, or for a run without a val split.

    ``head_or_meta``: a head from ``TemporalHead.load`` (its ``checkpoint_meta_``) or the meta dict.
    """
    meta = getattr(head_or_meta, "checkpoint_meta_", head_or_meta) or {}
    t = (meta.get("calibration") or {}).get("temperature")
    return 1.0 if t is None else float(t)


def fit_calibration(P_val, y_val, *, fitted_on: str = "val", scores: str = "probability") -> dict:
    """Fit ``T`` on val probabilities ``P_val`` (N, C) with labels ``y_val`` and describe it: the
    ``calibration`` block of a run's ``metrics.json`` and checkpoint meta.

    Not calibrated (``T = 1``) without val samples, and when every val sample is right: the NLL
    then falls without end as ``T -> 0``, so val says "sharpen" with nothing to say how far (on
    the demo cache an lstm with 36 of 36 val samples right got T = 0.05, and its test NLL rose from
    0.19 to 3.2). A fit at either end of the range is kept, with a note: at the sharp end the head
    is underconfident beyond the range (an undertrained head whose probabilities are near uniform
    but right), at the soft end its val probabilities are little better than uniform.
    """
    P_val, y_val = np.asarray(P_val), np.asarray(y_val, dtype=np.int64)
    if len(y_val) == 0:
        return not_calibrated("no val sample of a class the head was trained on")
    if (P_val.argmax(1) == y_val).all():
        return dict(not_calibrated(f"all {len(y_val)} val samples are right: the val NLL keeps falling as T -> 0 "
                                   "and fits no temperature, so T = 1"), n_samples=int(len(y_val)))
    t = fit_temperature(P_val, y_val)
    lo, hi = LOG_T_RANGE
    note = (f"; T is at the sharp end of the search range ({math.exp(lo):.2f}): the head is underconfident "
            "beyond it" if math.log(t) - lo < 1e-3 else
            f"; T is at the soft end of the search range ({math.exp(hi):.0f}): the val probabilities are little "
            "better than uniform" if hi - math.log(t) < 1e-3 else "")
    return {"method": "temperature", "temperature": t, "fitted_on": fitted_on, "scores": scores,
            "n_samples": int(len(y_val)),
            "val_nll_before": negative_log_likelihood(P_val, y_val),
            "val_nll_after": negative_log_likelihood(apply_temperature(P_val, t), y_val),
            "description": (f"calibrated by temperature scaling (Guo et al. 2017): T = {t:.3f}, fitted on {fitted_on} "
                            f"by minimising the NLL of the {scores} scores; applied to val and test scores, "
                            "predictions.csv and harx predict; accuracy unchanged" + note)}


def not_calibrated(reason: str) -> dict:
    """The ``calibration`` block of a run that could not be calibrated (``T = 1``)."""
    return {"method": "none", "temperature": 1.0, "fitted_on": None, "description": f"not calibrated ({reason})"}


def describe(calibration: dict | None) -> str:
    """A run's calibration in words, for protocol blocks and reports."""
    if not calibration:
        return "not calibrated (run fitted before harx calibrated probabilities; T = 1)"
    t = float(calibration.get("temperature", 1.0))
    return calibration.get("description") or f"temperature scaling, T = {t:.3f}"
