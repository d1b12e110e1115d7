"""Scores of a set of predictions, and video-level scores from subsequence predictions.

All accuracies are fractions in 0..1. For a set of samples with true label indices ``y`` and
class scores ``P`` (N, C)::

    classification_metrics(y, P, class_names) -> {
        "n": N,
        "accuracy": top-1 accuracy (share of samples whose highest score is the true class),
        "mean_class_accuracy": mean over the classes present in y of each class's accuracy,
        "macro_f1": unweighted mean of per-class F1 over the classes present in y,
        "per_class_accuracy": {class: accuracy, or None when the class has no sample},
        "confusion_matrix": C x C counts, rows = true class, columns = predicted class,
    }

Video level (KTH): when a cache's samples are subsequences, several share one ``video_id``.
:func:`video_scores` averages the class probabilities of a video's subsequences (each weighted
by its number of frames); the video's label is the highest mean probability. Reports give these
beside the subsequence-level numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import confusion_matrix, f1_score

__all__ = ["classification_metrics", "video_scores", "METRIC_NAMES"]

#: the summary metrics, in report order, with their display names
METRIC_NAMES = {"accuracy": "top-1 accuracy", "mean_class_accuracy": "mean class accuracy",
                "macro_f1": "macro-F1"}


def classification_metrics(y_true: np.ndarray, scores: np.ndarray, class_names: Sequence[str]) -> dict:
    """Accuracy, mean class accuracy, macro-F1, per-class accuracy and confusion matrix."""
    y_true = np.asarray(y_true, dtype=np.int64)
    C = len(class_names)
    y_pred = np.asarray(scores).argmax(1) if len(y_true) else np.zeros(0, np.int64)
    cm = confusion_matrix(y_true, y_pred, labels=np.arange(C)) if len(y_true) else np.zeros((C, C), np.int64)
    support = cm.sum(1)
    per_class = {name: (float(cm[i, i] / support[i]) if support[i] else None) for i, name in enumerate(class_names)}
    present = np.flatnonzero(support)
    return {
        "n": int(len(y_true)),
        "accuracy": float(np.mean(y_pred == y_true)) if len(y_true) else None,
        "mean_class_accuracy": float(np.mean([cm[i, i] / support[i] for i in present])) if len(present) else None,
        "macro_f1": float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0))
        if len(present) else None,
        "per_class_accuracy": per_class,
        "confusion_matrix": cm.astype(int).tolist(),
    }


def video_scores(video_ids: Sequence[str], scores: np.ndarray, y_true: np.ndarray,
                 weights: np.ndarray | None = None) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Per-video class probabilities: the (frame-weighted) mean over the video's samples.

    Returns ``(videos, video_scores (V, C), video_labels (V,))`` with videos in first-seen order.

    Raises:
        ValueError: the samples of one video disagree on the label (a broken cache).
    """
    video_ids = [str(v) for v in video_ids]
    order = list(dict.fromkeys(video_ids))
    pos = {v: i for i, v in enumerate(order)}
    idx = np.array([pos[v] for v in video_ids], dtype=np.int64)
    w = np.ones(len(idx)) if weights is None else np.asarray(weights, dtype=np.float64)
    sums = np.zeros((len(order), scores.shape[1]))
    np.add.at(sums, idx, scores * w[:, None])
    out = sums / sums.sum(1, keepdims=True)
    labels = np.full(len(order), -1, dtype=np.int64)
    for i, y in zip(idx, np.asarray(y_true)):
        if labels[i] not in (-1, y):
            raise ValueError(f"video {order[i]!r} has samples of two labels")
        labels[i] = y
    return order, out, labels
