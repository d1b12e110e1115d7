"""Ragged samples: many ``(T, D)`` arrays of different ``T`` in one frame array, and its statistics.

One contiguous frame array plus offsets (not a list of arrays) because training gathers crops by
frame row from it, and a GPU receives it in one transfer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from harx.features.errors import InvalidOptionError

__all__ = ["Sequences", "as_sequences", "feature_stats"]


@dataclass
class Sequences:
    """Samples of different lengths in one array: sample ``i`` is ``data[offsets[i]:offsets[i+1]]``."""

    data: np.ndarray      # (F, D) float16 or float32, frames of all samples in order
    offsets: np.ndarray   # (N + 1,) int64, offsets[0] == 0, offsets[-1] == F

    @classmethod
    def from_arrays(cls, arrays: Sequence[np.ndarray]) -> "Sequences":
        if len(arrays) == 0:
            raise InvalidOptionError("no samples given")
        dims = {a.shape[1] if a.ndim == 2 else -1 for a in arrays}
        if len(dims) != 1 or -1 in dims:
            raise InvalidOptionError(f"samples must be (frames, features) arrays of one width; "
                                     f"got widths {sorted(dims)}")
        lengths = np.array([len(a) for a in arrays], dtype=np.int64)
        if lengths.min() < 1:
            raise InvalidOptionError(f"sample {int(np.argmin(lengths))} has no frames")
        dtype = np.float16 if all(a.dtype == np.float16 for a in arrays) else np.float32
        data = np.concatenate(arrays).astype(dtype, copy=False)
        return cls(data, np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))

    @classmethod
    def concat(cls, parts: Sequence["Sequences"]) -> "Sequences":
        dtype = np.float16 if all(p.data.dtype == np.float16 for p in parts) else np.float32
        data = np.concatenate([p.data for p in parts]).astype(dtype, copy=False)
        lengths = np.concatenate([p.lengths for p in parts])
        return cls(data, np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def dim(self) -> int:
        return int(self.data.shape[1])

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        return self.data[self.offsets[i]:self.offsets[i + 1]]


def as_sequences(X) -> Sequences:
    return X if isinstance(X, Sequences) else Sequences.from_arrays(list(X))


def feature_stats(seqs: Sequences, chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and standard deviation over all frames (float64 sums, in chunks)."""
    total = np.zeros(seqs.dim, np.float64)
    total_sq = np.zeros(seqs.dim, np.float64)
    n = len(seqs.data)
    for lo in range(0, n, chunk):
        block = seqs.data[lo:lo + chunk].astype(np.float32)
        total += block.sum(0, dtype=np.float64)
        total_sq += np.einsum("ij,ij->j", block, block, dtype=np.float64)
    mean = total / n
    var = np.maximum(total_sq / n - mean ** 2, 0.0)
    std = np.sqrt(var)
    std[std < 1e-6] = 1.0          # constant dimensions: leave them alone
    return mean.astype(np.float32), std.astype(np.float32)
