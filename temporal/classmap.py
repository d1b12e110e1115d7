"""A head's classes inside a cache's class list: a head has outputs only for what it was trained on.

``harx fit`` gives a head the classes that have training samples (``classes_``), not the whole
class list of the cache: a head with an output for a class it never saw still predicts it now
and then (a vote head trained on walking and running gave ``boxing`` to 1.1 % of walking
samples). Scores are then laid out over the cache's classes, the untrained ones at 0, so a test
sample of an untrained class always counts as an error and confusion matrices keep its row.

Example: cache classes ``boxing, running, walking``, a head trained on ``running, walking``:
``ClassMap(cache, head).cache_scores([[0.3, 0.7]])`` is ``[[0, 0.3, 0.7]]`` and ``absent`` is
``["boxing"]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from harx.features.errors import CacheMismatchError

__all__ = ["ClassMap", "trained_classes"]


def trained_classes(class_names: Sequence[str], y_train: np.ndarray) -> list[str]:
    """The classes with at least one training sample, in the cache's label order."""
    present = set(np.asarray(y_train, dtype=np.int64).tolist())
    return [name for i, name in enumerate(class_names) if i in present]


class ClassMap:
    """Label indices and scores between a cache's classes and a head's (a subset of them).

    Raises:
        CacheMismatchError: the head knows a class the cache does not have.
    """

    def __init__(self, cache_names: Sequence[str], head_names: Sequence[str], where: str = "the cache"):
        cache_names, head_names = [str(c) for c in cache_names], [str(c) for c in head_names]
        unknown = [name for name in head_names if name not in cache_names]
        if unknown:
            raise CacheMismatchError(
                f"{where} has no class {', '.join(unknown)}, which the head was trained on (its classes: "
                f"{', '.join(cache_names)}); score the run on a cache of the classes it was trained on")
        self.cache_names, self.head_names = cache_names, head_names
        self.columns = np.array([cache_names.index(name) for name in head_names], dtype=np.int64)
        self.absent = [name for name in cache_names if name not in head_names]
        self._to_head = np.full(len(cache_names), -1, dtype=np.int64)
        self._to_head[self.columns] = np.arange(len(head_names))

    def head_labels(self, y: np.ndarray) -> np.ndarray:
        """Cache label indices -> the head's, ``-1`` for a class the head was not trained on."""
        return self._to_head[np.asarray(y, dtype=np.int64)]

    def cache_scores(self, scores: np.ndarray) -> np.ndarray:
        """``(N, head classes)`` scores -> ``(N, cache classes)``, 0 for the untrained classes."""
        scores = np.asarray(scores)
        out = np.zeros((len(scores), len(self.cache_names)), dtype=scores.dtype)
        out[:, self.columns] = scores
        return out
