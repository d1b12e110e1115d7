"""Is a video like the ones a run was trained on? The ``unfamiliar`` flag of ``harx predict``.

A head trained on six demo actions says "walk 99.5 %" for a clip of someone drinking water: a
softmax has no "none of these" output. This module measures how far a video lies from the
training videos in the backbone's embedding space, and flags it when it is farther than the
run's own validation videos are.

**The score** is the Mahalanobis distance of the video's mean-pooled frame embedding to the
mean-pooled embeddings of the run's training samples (one vector per training sample, every
frame in it averaged), in a space standardised with the training vectors' per-dimension mean
and standard deviation, under their covariance shrunk towards a multiple of the identity
(Ledoit & Wolf, 2004: with 90 training samples of 1,280 numbers the plain covariance is
singular). It depends on the features only, not on the head, so every head on a cache gets the
same score. ``benchmarks/RESULTS.md`` ("Unfamiliar videos (issue 15)") compares it with the
alternatives (cosine nearest neighbours, per-frame distances, the head's maximum probability and
energy) on real clips.

**The threshold** is chosen on the validation split, which the score never saw: the
``quantile`` (default 0.99) of the val samples' scores. Val holds only videos of the trained
actions, so the threshold sets the share of such videos that get flagged (about 1 % of
videos like val's); how many foreign videos it catches depends on how foreign they are. A run
without a val split gets no threshold and no flag.

Worked example: 90 demo training clips give 90 vectors of 1,280 numbers; the shrunk covariance is
stored as the 89 directions the clips span plus the shrinkage constant (``basis`` is 89 x 1,280),
and scoring a 300-frame video averages its 300 embeddings and takes one distance: microseconds.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harx.features.errors import HarxError, InvalidOptionError

__all__ = ["FAMILIARITY_FILE", "Familiarity", "fit_familiarity", "load_familiarity", "mean_pool"]

FAMILIARITY_FILE = "familiarity.npz"
METHOD = "mahalanobis"
FORMAT_VERSION = 1
DEFAULT_QUANTILE = 0.99


def mean_pool(samples: Sequence[np.ndarray], segments=()) -> np.ndarray:
    """``(N, D')`` float64: each ``(T, D)`` sample's mean over its frames (spatial maps also
    averaged over their positions: see :func:`pool_positions`)."""
    sums, counts = frame_sums(samples, segments)
    return sums / counts[:, None]


def pool_positions(x: np.ndarray, segments=()) -> np.ndarray:
    """``x`` (..., D) with each spatial map averaged over its positions: ``segments`` lists each
    stream's ``(features, positions)`` side by side (a ``(C, S, S)`` map flattened: ``(C*S*S,
    S*S)``; a vector: ``(D, 1)``). The statistics then stay ``C`` wide per map stream instead of
    ``C*S*S`` (a run on 4x4 maps would keep 16x the bytes in familiarity.npz); empty: ``x``."""
    if not segments or all(int(p) == 1 for _, p in segments):
        return x
    parts, col = [], 0
    for width, positions in segments:
        width, positions = int(width), int(positions)
        block = x[..., col:col + width]
        parts.append(block.reshape(*x.shape[:-1], width // positions, positions).mean(-1) if positions > 1 else block)
        col += width
    return np.concatenate(parts, axis=-1)


def frame_sums(samples: Sequence[np.ndarray], segments=()) -> tuple[np.ndarray, np.ndarray]:
    """Each ``(T, D)`` sample's sum over its frames ``(N, D')`` float64 (maps pooled over their
    positions, :func:`pool_positions`) and its ``T``, one sample at a time (samples left in the
    cache are read once each and not kept)."""
    if len(samples) == 0:
        raise InvalidOptionError("no samples given")
    sums, counts = [], []
    for s in samples:
        sums.append(pool_positions(np.asarray(s, dtype=np.float32).sum(axis=0, dtype=np.float64), segments))
        counts.append(len(s))
    return np.stack(sums), np.asarray(counts, dtype=np.float64)


def _ledoit_wolf(Z: np.ndarray) -> tuple[float, float, np.ndarray, np.ndarray]:
    """Shrinkage of the covariance of the centred rows of ``Z`` (N, D) towards ``mu * I``.

    Returns ``(alpha, mu, eigenvalues, basis)``: the covariance is ``(1 - alpha) S + alpha mu I``
    with ``S = basis.T @ diag(eigenvalues) @ basis`` (the rows of ``basis`` are orthonormal; only
    the directions the samples span, at most N - 1). Computed through the N x N Gram matrix, so
    no D x D matrix is ever formed.
    """
    n, p = Z.shape
    gram = Z @ Z.T                                   # (n, n)
    sq = np.diag(gram).copy()                        # |z_k|^2
    mu = float(sq.sum() / (n * p))                   # tr(S) / p
    s_fro2 = float((gram ** 2).sum() / n ** 2)       # |S|_F^2 = |Z Z^T|_F^2 / n^2
    delta = s_fro2 / p - mu ** 2                     # |S - mu I|_F^2 / p
    beta = max(0.0, (float((sq ** 2).sum()) / n - s_fro2) / (n * p))
    alpha = 1.0 if delta <= 0 else min(1.0, beta / delta)
    w, U = np.linalg.eigh(gram)
    keep = w > max(w.max(), 0.0) * 1e-10
    w, U = w[keep], U[:, keep]
    basis = (Z.T @ U / np.sqrt(w)).T                 # (k, p), orthonormal rows
    return alpha, mu, w / n, basis


@dataclass
class Familiarity:
    """How unlike a run's training samples a video is (see the module docstring).

    Attributes:
        center_, scale_: the training vectors' per-dimension mean and standard deviation (D,).
        basis_, eigenvalues_: the directions the standardised training vectors span (k, D) and
            their variances (k,).
        alpha_, mu_: the Ledoit-Wolf shrinkage weight and the identity's scale.
        threshold_: scores above it are unfamiliar; ``None`` when the run had no val split.
        quantile: the quantile of val scores the threshold is.
        n_train_, n_val_: samples the statistics and the threshold came from.
        val_scores_: the val samples' scores (the threshold's evidence).
    """

    center_: np.ndarray
    scale_: np.ndarray
    basis_: np.ndarray
    eigenvalues_: np.ndarray
    alpha_: float
    mu_: float
    threshold_: float | None
    quantile: float
    n_train_: int
    n_val_: int
    val_scores_: np.ndarray
    segments_: list = field(default_factory=list)   # [(features, positions)] per stream: see pool_positions

    @property
    def method(self) -> str:
        return METHOD

    def score_pooled(self, pooled: np.ndarray) -> np.ndarray:
        """Scores of mean-pooled vectors ``(N, D)``: Mahalanobis distance under the shrunk covariance."""
        z = (np.atleast_2d(np.asarray(pooled, dtype=np.float64)) - self.center_) / self.scale_
        noise = max(self.alpha_, 1e-6) * self.mu_                 # alpha = 0 only when N >> D
        signal = (1.0 - self.alpha_) * self.eigenvalues_
        proj = z @ self.basis_.T                                  # (N, k)
        d2 = (z ** 2).sum(1) / noise - (proj ** 2 * (signal / (noise * (signal + noise)))).sum(1)
        return np.sqrt(np.maximum(d2, 0.0))

    def score(self, samples: Sequence[np.ndarray]) -> np.ndarray:
        """One score per ``(T, D)`` sample (a video's sampled frames): higher is stranger."""
        sums, counts = self._frame_sums(samples)
        return self.score_pooled(sums / counts[:, None])

    def _frame_sums(self, samples: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """:func:`frame_sums` with this run's map pooling; InvalidOptionError for another width."""
        sums, counts = frame_sums(samples, self.segments_)
        if sums.shape[1] != len(self.center_):
            raise InvalidOptionError(f"samples have {sums.shape[1]} features; the familiarity statistics were "
                                     f"computed on {len(self.center_)}")
        return sums, counts

    def is_unfamiliar(self, score: float) -> bool | None:
        return None if self.threshold_ is None else bool(score > self.threshold_)

    def describe(self) -> dict:
        """The protocol block (``metrics.json`` ``familiarity``, ``harx predict``'s protocol)."""
        return {"method": "Mahalanobis distance of the video's mean-pooled frame embedding to the training samples' "
                          "(standardised with training stats; Ledoit-Wolf shrunk covariance)",
                "score": METHOD, "threshold": None if self.threshold_ is None else round(float(self.threshold_), 4),
                "threshold_rule": (f"{self.quantile:g} quantile of the scores of {self.n_val_} val samples"
                                   if self.threshold_ is not None else "none: no val split, no flag"),
                "n_train": self.n_train_, "n_val": self.n_val_, "shrinkage": round(float(self.alpha_), 4),
                **({} if self.threshold_ is not None else
                   {"note": "unfamiliar videos are not flagged: the run had no val split to choose a threshold on"})}

    def summary(self, X_test: Sequence[np.ndarray] | None = None, video_ids: Sequence[str] | None = None) -> dict:
        """:meth:`describe`, plus the share of test samples flagged at the threshold (they are of the
        trained actions, so every flag is a false one) and, with ``video_ids`` (a cache of
        subsequences), the share of whole test videos flagged, each scored over all its samples'
        frames as ``harx predict`` scores a video."""
        out = self.describe()
        out["file"] = FAMILIARITY_FILE
        if self.threshold_ is None or X_test is None or len(X_test) == 0:
            return out
        sums, counts = self._frame_sums(X_test)    # one read of each sample, nothing kept but its sum
        scores = self.score_pooled(sums / counts[:, None])
        out["test_samples_flagged"] = round(float((scores > self.threshold_).mean()), 4)
        out["test_samples"] = len(scores)
        if video_ids is not None and len(set(video_ids)) < len(video_ids):
            rows: dict[str, list[int]] = {}
            for i, v in enumerate(video_ids):
                rows.setdefault(str(v), []).append(i)
            videos = self.score_pooled(np.stack([sums[r].sum(0) / counts[r].sum() for r in rows.values()]))
            out["test_videos_flagged"] = round(float((videos > self.threshold_).mean()), 4)
            out["test_videos"] = len(videos)
        return out

    # -- file --------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp.npz")
        meta = {"format": FORMAT_VERSION, "method": METHOD, "alpha": self.alpha_, "mu": self.mu_,
                "threshold": self.threshold_, "quantile": self.quantile, "n_train": self.n_train_, "n_val": self.n_val_,
                "segments": [list(map(int, seg)) for seg in self.segments_]}
        np.savez(tmp, center=self.center_.astype(np.float32), scale=self.scale_.astype(np.float32),
                 basis=self.basis_.astype(np.float32), eigenvalues=self.eigenvalues_.astype(np.float64),
                 val_scores=self.val_scores_.astype(np.float64), meta=np.array(json.dumps(meta)))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Familiarity":
        """Raises: HarxError: the file is damaged or of a newer format."""
        try:
            with np.load(path, allow_pickle=False) as f:
                meta = json.loads(str(f["meta"]))
                arrays = {k: f[k] for k in ("center", "scale", "basis", "eigenvalues", "val_scores")}
        except (OSError, ValueError, KeyError) as err:
            raise HarxError(f"{path} is damaged ({err}); fit the run again") from None
        if meta.get("format") != FORMAT_VERSION or meta.get("method") != METHOD:
            raise HarxError(f"{path} is of format {meta.get('format')} ({meta.get('method')}); this harx reads "
                            f"format {FORMAT_VERSION} ({METHOD}): update harx or fit the run again")
        return cls(center_=arrays["center"].astype(np.float64), scale_=arrays["scale"].astype(np.float64),
                   basis_=arrays["basis"].astype(np.float64), eigenvalues_=arrays["eigenvalues"],
                   alpha_=float(meta["alpha"]), mu_=float(meta["mu"]), threshold_=meta["threshold"],
                   quantile=float(meta["quantile"]), n_train_=int(meta["n_train"]), n_val_=int(meta["n_val"]),
                   val_scores_=arrays["val_scores"], segments_=[tuple(seg) for seg in meta.get("segments") or []])


def fit_familiarity(X_train: Sequence[np.ndarray], X_val: Sequence[np.ndarray] | None = None, *, segments=(),
                    quantile: float = DEFAULT_QUANTILE) -> Familiarity:
    """Statistics of the training samples and a threshold from the val samples.

    Args:
        X_train: the training samples, ``(T, D)`` frame embeddings each (at least 2).
        X_val: the val samples; ``None`` or empty: no threshold (nothing will be flagged).
        segments: each stream's ``(features, positions)``, for runs on spatial maps
            (:func:`pool_positions`); empty for vectors.
        quantile: the threshold is this quantile of the val scores (0.5 to 1).

    Raises:
        InvalidOptionError: fewer than 2 training samples, or ``quantile`` out of range.
    """
    if not 0.5 <= quantile <= 1.0:
        raise InvalidOptionError(f"the familiarity quantile must be in [0.5, 1], got {quantile:g}")
    if len(X_train) < 2:
        raise InvalidOptionError(f"familiarity needs at least 2 training samples, got {len(X_train)}")
    pooled = mean_pool(X_train, segments)
    center = pooled.mean(0)
    scale = pooled.std(0)
    scale[scale < 1e-6 * max(float(scale.max()), 1e-12)] = 1.0     # constant dimensions: leave them alone
    Z = (pooled - center) / scale
    alpha, mu, eigenvalues, basis = _ledoit_wolf(Z)
    model = Familiarity(center_=center, scale_=scale, basis_=basis, eigenvalues_=eigenvalues, alpha_=alpha, mu_=mu,
                        threshold_=None, quantile=float(quantile), n_train_=len(X_train), n_val_=0,
                        val_scores_=np.zeros(0), segments_=[tuple(map(int, seg)) for seg in segments])
    if X_val is not None and len(X_val):
        model.val_scores_ = model.score(X_val)
        model.n_val_ = len(X_val)
        model.threshold_ = float(np.quantile(model.val_scores_, quantile))
    return model


def load_familiarity(run_dir: str | Path) -> Familiarity | None:
    """The run's familiarity statistics, or ``None`` for a run fitted before harx recorded them."""
    path = Path(run_dir) / FAMILIARITY_FILE
    return Familiarity.load(path) if path.is_file() else None
