"""Ragged samples: many ``(T, D)`` arrays of different ``T`` seen as one frame array, in RAM or on disk.

Training gathers crops by frame row, so samples are a frame array plus offsets (sample ``i`` is
rows ``offsets[i]:offsets[i+1]``), not a list of arrays. Two kinds share that interface:

* :class:`Sequences`: the frames in one contiguous array in RAM; a GPU receives it in one
  transfer. The fast path, whenever the selection fits in memory.
* :class:`StoredSequences`: the frames stay in the HDF5 cache and each batch reads its rows as
  it trains, so a cache many times larger than RAM trains in the memory of a batch
  (:meth:`StoredSequences.rows`: a batch's rows are read in file order, one slice per run of
  nearby rows, so a training crop costs one read touching one or two HDF5 chunks).

Both give the same numbers: the same rows in the same order, the same float16 values, and
statistics summed over the same blocks (:func:`feature_stats`), so a fit streamed from disk and
one in memory agree to the bit for a seed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from harx.features.errors import InvalidOptionError

__all__ = ["Sequences", "StoredSequences", "as_sequences", "concat_sequences", "feature_stats", "stats_block_rows"]


class _Ragged:
    """What both kinds share: offsets, lengths, per-sample access and row blocks."""

    offsets: np.ndarray   # (N + 1,) int64, offsets[0] == 0, offsets[-1] == F

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def n_frames(self) -> int:
        return int(self.offsets[-1])

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self[i] for i in range(len(self)))

    def __getitem__(self, i: int) -> np.ndarray:
        if not -len(self) <= i < len(self):
            raise IndexError(f"sample {i} of {len(self)}")
        i %= len(self)
        return self.block(int(self.offsets[i]), int(self.offsets[i + 1]))

    @property
    def nbytes(self) -> int:
        """Bytes of all frames held in RAM (what :meth:`StoredSequences.to_memory` would take)."""
        return self.n_frames * self.dim * np.dtype(self.dtype).itemsize


@dataclass
class Sequences(_Ragged):
    """Samples of different lengths in one array in RAM: sample ``i`` is ``data[offsets[i]:offsets[i+1]]``."""

    data: np.ndarray      # (F, D) float16 or float32, frames of all samples in order
    offsets: np.ndarray

    in_memory = True

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
        return cls(data, _offsets(lengths))

    @property
    def dim(self) -> int:
        return int(self.data.shape[1])

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    def block(self, lo: int, hi: int) -> np.ndarray:
        """Frame rows ``[lo, hi)`` (a view)."""
        return self.data[lo:hi]

    def rows(self, idx: np.ndarray) -> np.ndarray:
        """Frame rows ``idx`` (any shape) -> ``(*idx.shape, D)``."""
        return self.data[idx]

    def take(self, samples: np.ndarray) -> "Sequences":
        """The samples ``samples`` (indices, in that order)."""
        return Sequences.from_arrays([self[int(i)] for i in samples])

    def columns(self, lo: int, hi: int) -> "Sequences":
        """Features ``[lo, hi)`` of every frame (one stream of several side by side)."""
        return Sequences(np.ascontiguousarray(self.data[:, lo:hi]), self.offsets)


class StoredSequences(_Ragged):
    """Samples that stay in a feature cache: sample ``i`` is file rows ``[starts[i], starts[i] +
    lengths[i])`` of ``streams`` (side by side), read when asked. The cache is opened lazily in
    each process (never shared across a fork: see :class:`harx.features.FeatureStore`).

    ``store`` is anything with ``read_rows(rows, streams)``, ``read_span_into(out, lo, hi,
    streams)`` and ``feature_dim(stream)``: a :class:`harx.features.FeatureStore`.
    """

    in_memory = False

    def __init__(self, store, streams: Sequence[str], starts: np.ndarray, lengths: np.ndarray):
        self.store = store
        self.streams = list(streams)
        self.widths = [int(store.feature_dim(s)) for s in self.streams]
        self.starts = np.asarray(starts, dtype=np.int64)
        self.offsets = _offsets(np.asarray(lengths, dtype=np.int64))
        if len(self.starts) == 0:
            raise InvalidOptionError("no samples given")
        if self.lengths.min() < 1:
            raise InvalidOptionError(f"sample {int(np.argmin(self.lengths))} has no frames")

    def __repr__(self) -> str:
        return (f"StoredSequences({len(self)} samples, {self.n_frames} frames x {self.dim} of "
                f"{'+'.join(self.streams)} in {getattr(self.store, 'path', self.store)})")

    @property
    def dim(self) -> int:
        return int(sum(self.widths))

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(getattr(self.store, "feature_dtype", np.float16))

    def file_rows(self, idx: np.ndarray) -> np.ndarray:
        """Cache rows of frame rows ``idx`` (any shape)."""
        idx = np.asarray(idx, dtype=np.int64)
        sample = np.searchsorted(self.offsets, idx, side="right") - 1
        return self.starts[sample] + (idx - self.offsets[sample])

    def rows(self, idx: np.ndarray) -> np.ndarray:
        """Frame rows ``idx`` (any shape) -> ``(*idx.shape, D)``, read from the cache."""
        return self.store.read_rows(self.file_rows(idx), self.streams)

    def block(self, lo: int, hi: int) -> np.ndarray:
        """Frame rows ``[lo, hi)``: one read per run of samples that lie side by side in the cache."""
        out = np.empty((hi - lo, self.dim), dtype=self.dtype)
        if hi <= lo:
            return out
        first = int(np.searchsorted(self.offsets, lo, side="right")) - 1
        last = int(np.searchsorted(self.offsets, hi - 1, side="right")) - 1
        at = lo
        k = first
        while k <= last:
            j = k                                    # samples k..j are adjacent in the file
            while j < last and self.starts[j + 1] == self.starts[j] + self.lengths[j]:
                j += 1
            a = max(at, int(self.offsets[k]))
            b = min(hi, int(self.offsets[j + 1]))
            file_lo = int(self.starts[k]) + a - int(self.offsets[k])
            self.store.read_span_into(out[a - lo:b - lo], file_lo, file_lo + (b - a), self.streams)
            at, k = b, j + 1
        return out

    def take(self, samples: np.ndarray) -> "StoredSequences":
        samples = np.asarray(samples, dtype=np.int64)
        return StoredSequences(self.store, self.streams, self.starts[samples], self.lengths[samples])

    def columns(self, lo: int, hi: int) -> "StoredSequences":
        """The streams whose features are ``[lo, hi)`` (late fusion takes one stream at a time)."""
        edges = np.concatenate([[0], np.cumsum(self.widths)])
        if lo not in edges or hi not in edges:
            raise InvalidOptionError(f"features [{lo}, {hi}) are not whole streams of {'+'.join(self.streams)}")
        pick = self.streams[list(edges).index(lo):list(edges).index(hi)]
        return StoredSequences(self.store, pick, self.starts, self.lengths)

    def to_memory(self) -> Sequences:
        """All frames read into one array in RAM, one read per run of adjacent samples."""
        return Sequences(self.block(0, self.n_frames), self.offsets.copy())


def _offsets(lengths: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)


def as_sequences(X) -> Sequences | StoredSequences:
    """``X`` as ragged samples: :class:`Sequences` and :class:`StoredSequences` pass through, a
    list of ``(T, D)`` arrays is copied into a :class:`Sequences`."""
    return X if isinstance(X, _Ragged) else Sequences.from_arrays(list(X))


def concat_sequences(parts: Sequence) -> Sequences | StoredSequences:
    """The samples of ``parts`` one after another (train + val for a refit); stored parts of one
    cache and streams stay stored."""
    parts = [as_sequences(p) for p in parts if p is not None and len(p)]
    if not parts:
        raise InvalidOptionError("no samples given")
    if all(isinstance(p, StoredSequences) for p in parts) and \
            len({(id(p.store), tuple(p.streams)) for p in parts}) == 1:
        return StoredSequences(parts[0].store, parts[0].streams, np.concatenate([p.starts for p in parts]),
                               np.concatenate([p.lengths for p in parts]))
    memory = [p.to_memory() if isinstance(p, StoredSequences) else p for p in parts]
    dtype = np.float16 if all(p.data.dtype == np.float16 for p in memory) else np.float32
    data = np.concatenate([p.data for p in memory]).astype(dtype, copy=False)
    return Sequences(data, _offsets(np.concatenate([p.lengths for p in memory])))


def stats_block_rows(dim: int) -> int:
    """Rows per block of :func:`feature_stats`: about 16 MiB of float32, so a stored fit's
    memory does not grow with the cache; the same for both kinds, so their sums agree to the bit."""
    return max(256, (16 << 20) // (4 * max(1, dim)))


def feature_stats(seqs, chunk: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and standard deviation over all frames (float64 sums, in blocks)."""
    chunk = chunk or stats_block_rows(seqs.dim)
    total = np.zeros(seqs.dim, np.float64)
    total_sq = np.zeros(seqs.dim, np.float64)
    n = seqs.n_frames
    for lo in range(0, n, chunk):
        block = seqs.block(lo, min(n, lo + chunk)).astype(np.float32)
        total += block.sum(0, dtype=np.float64)
        total_sq += np.einsum("ij,ij->j", block, block, dtype=np.float64)
    mean = total / n
    var = np.maximum(total_sq / n - mean ** 2, 0.0)
    std = np.sqrt(var)
    std[std < 1e-6] = 1.0          # constant dimensions: leave them alone
    return mean.astype(np.float32), std.astype(np.float32)
