"""Heads over several feature streams: early fusion (one head on the streams side by side) and
late fusion (one head per stream, their probabilities mixed with weights chosen on val).

A run on streams ``rgb+motion`` reads each frame's features of both streams side by side (the
cache's ``load(split, ["rgb", "motion"])``), so every head takes them unchanged: with
``fusion="early"`` the head simply sees a wider frame. :class:`LateFusion` instead cuts each frame
back into its streams, trains the base head on each alone (same options, same seed, early
stopping on val), and predicts ``sum_k w_k p_k``, where the weights ``w`` (on a 0.1 grid of the
simplex) give the best val accuracy, ties broken by the lower val log loss, then by the weights
closest to equal. Without val the weights are equal.

Why late fusion is the default (``benchmarks/RESULTS.md``, "Two streams in harx": real KTH
walking and running of persons never seen, 128 training subsequences, seeds 0-2): the LSTM on
early fusion scored 98.6 ± 1.4 % and the vote head 97.9 ± 0.7 %; late fusion 100.0 ± 0.0 % and
99.8 ± 0.4 %: a head on the wide frame learns the appearance half (who, where) that does not carry
over to new people, while late fusion can weigh the stream that does. And where one stream is
useless, late fusion falls back to the other (a test with a stream of noise); early fusion cannot.

A late-fusion run (:func:`temporal.fit`) trains each stream as a run of its own, in its default
folder, and fuses their ``best.pt``: ``harx compare`` trains those runs anyway, so its fused
columns cost only the choice of weights, and an interrupted fused fit resumes stream by stream.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from harx.features.errors import CacheMismatchError, InvalidOptionError
from harx.features.schema import MAP_SUFFIX, is_map_stream

from .base import TemporalHead
from .calibration import negative_log_likelihood
from .registry import create_head, register_composite
from .sequences import Sequences, as_sequences

__all__ = ["FUSIONS", "LateFusion", "build_head", "head_takes_maps", "parse_stream_selection", "streams_for_head"]

FUSIONS = ("late", "early")
WEIGHT_STEP = 0.1


def parse_stream_selection(selection: str | Sequence[str] | None, available: Sequence[str]) -> list[str]:
    """``"rgb+motion"`` (or a list of names) -> ``["rgb", "motion"]``; ``None``: every stream of the
    cache. Names are checked against the cache later (one line naming what it lacks)."""
    if selection is None:
        return list(available)
    if isinstance(selection, str) and "," in selection:
        raise InvalidOptionError(f"--streams {selection}: join the streams one run reads with + (e.g. "
                                 f"{selection.replace(',', '+')}); commas separate the selections of harx compare")
    names = selection.split("+") if isinstance(selection, str) else list(selection)
    names = [n.strip() for n in names if n.strip()]
    if not names:
        raise InvalidOptionError("--streams names no stream; e.g. rgb, motion or rgb+motion")
    if len(set(names)) != len(names):
        raise InvalidOptionError(f"--streams {'+'.join(names)} names a stream twice")
    return names


def head_takes_maps(head: str) -> bool:
    """Whether head ``head`` reads spatial map streams (``convlstm``) rather than vectors."""
    return bool(getattr(create_head(head, 1, 2), "takes_maps", False))


def streams_for_head(head: str, selection: Sequence[str] | None, available: Sequence[str], where: str = "") -> list[str]:
    """The streams head ``head`` reads for ``selection`` (``None``: the cache's streams of its kind).

    A map head (``convlstm``) given an image stream reads its map (``rgb`` -> ``rgb_map``), so one
    ``--streams rgb,motion`` serves every head of a comparison; a vector head is refused a map.

    Raises:
        CacheMismatchError: a map head on a cache without maps (one line: how to add them).
        InvalidOptionError: a vector head asked for a map stream.
    """
    maps = head_takes_maps(head)
    if selection is None:
        selection = [s for s in available if is_map_stream(s) == maps] or [s for s in available if not is_map_stream(s)]
    if not maps:
        wrong = [s for s in selection if is_map_stream(s)]
        if wrong:
            raise InvalidOptionError(f"{head} reads feature vectors, and {wrong[0]} holds spatial maps; use "
                                     f"{wrong[0][:-len(MAP_SUFFIX)]}, or a map head (convlstm)")
        return list(selection)
    chosen = [s if is_map_stream(s) else s + MAP_SUFFIX for s in selection]
    lacking = [s for s in chosen if s not in available]
    if lacking:
        raise CacheMismatchError(f"{head} reads spatial maps, and {where or 'the cache'} has no {', '.join(lacking)} "
                                 f"(it holds {', '.join(available)}); add them with harx extract --spatial and the "
                                 "options the cache was made with")
    return chosen


def build_head(head: str, widths: Sequence[int], num_classes: int, *, streams: Sequence[str], fusion: str = "late",
               **options) -> TemporalHead:
    """Head ``head`` over ``streams`` whose frames are ``widths`` wide: the head itself on one
    stream or with early fusion, a :class:`LateFusion` of it otherwise."""
    if fusion not in FUSIONS:
        raise InvalidOptionError(f"--fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}")
    if len(streams) == 1 or fusion == "early":
        return create_head(head, int(sum(widths)), num_classes, **options)
    return LateFusion(base=head, num_features=int(sum(widths)), num_classes=int(num_classes),
                      streams=list(streams), widths=[int(w) for w in widths],
                      options={k: v for k, v in options.items() if v is not None})


@register_composite
class LateFusion(TemporalHead):
    """One ``base`` head per stream, on that stream's columns of each frame; probabilities mixed
    with weights chosen on val (module docstring). Refit on train+val is not offered: each stream
    would need its own epoch count."""

    name = "late_fusion"      # in checkpoints; not a head of harx fit (see registry.COMPOSITES)
    _fitted_attrs = ("classes_", "n_features_in_", "weights_", "best_epoch_", "n_epochs_", "max_epochs_",
                     "patience_", "stopped_early_", "fit_seconds_", "n_threads_", "stream_training_", "history_")

    def __init__(self, *, base: str, num_features: int, num_classes: int, streams: list, widths: list,
                 options: dict):
        self._keep_params(locals())

    # options every torch head has, which a run reads before fitting
    @property
    def device(self):
        return self.options.get("device")

    @property
    def precision(self):
        return self.options.get("precision")

    @property
    def random_state(self):
        return self.options.get("random_state", 0)

    def set_params(self, **params) -> "LateFusion":
        own = {k: v for k, v in params.items() if k in self._param_names()}
        super().set_params(**own)
        rest = {k: v for k, v in params.items() if k not in own}
        if rest:
            self.options = dict(self.options, **rest)
            for head in getattr(self, "heads_", {}).values():
                head.set_params(**rest)
        return self

    @property
    def frame_level(self) -> bool:
        """Whether each frame is classified on its own (a late fusion of vote heads is)."""
        return bool(getattr(create_head(self.base, 1, 2), "frame_level", False))

    @property
    def aggregation(self) -> str:
        weights = getattr(self, "weights_", None)
        mix = (" + ".join(f"{w:.1f} x p_{s}" for s, w in zip(self.streams, weights)) if weights is not None
               else "weights chosen on val")
        inner = create_head(self.base, self.widths[0], 2, **self.options).aggregation
        return f"late fusion of one {self.base} head per stream ({inner}): p = {mix}"

    def _sub_heads(self) -> dict[str, TemporalHead]:
        return {s: create_head(self.base, w, self.num_classes, **self.options) for s, w in zip(self.streams, self.widths)}

    def _validate_params(self) -> None:
        if len(self.streams) != len(self.widths) or len(self.streams) < 2:
            raise InvalidOptionError(f"late fusion needs two or more streams with their widths, got "
                                     f"{self.streams} and {self.widths}")
        if sum(self.widths) != self.num_features:
            raise InvalidOptionError(f"stream widths {self.widths} do not add up to {self.num_features} features")
        for head in self._sub_heads().values():
            head._validate_params()

    def _columns(self, X) -> dict[str, Sequences]:
        """Each stream's columns of samples ``X`` (frames of all streams side by side)."""
        seqs = as_sequences(X)
        if seqs.dim != self.num_features:
            raise InvalidOptionError(f"samples have {seqs.dim} features, the head was built for {self.num_features}")
        out, lo = {}, 0
        for s, w in zip(self.streams, self.widths):
            out[s] = seqs.columns(lo, lo + w)
            lo += w
        return out

    def fit(self, X, y, *, X_val=None, y_val=None, class_names: Sequence[str] | None = None,
            on_epoch: Callable | None = None, phase: str = "select", resume: dict | None = None) -> "LateFusion":
        """Fit one head per stream, then choose the weights on val. ``resume`` is ignored here; a
        run (:func:`temporal.fit`) trains each stream as a run of its own, which resumes."""
        self._validate_params()
        started = time.perf_counter()
        train = self._columns(X)
        val = self._columns(X_val) if X_val is not None and len(X_val) else None
        heads = self._sub_heads()
        for stream, head in heads.items():
            def tagged(info, stream=stream):
                if on_epoch is not None:
                    on_epoch(replace(info, phase=f"{info.phase}:{stream}"))
            head.fit(train[stream], y, X_val=None if val is None else val[stream], y_val=y_val,
                     class_names=class_names, on_epoch=tagged, phase=phase)
        self.fuse(heads, X_val, y_val)
        self.fit_seconds_ = time.perf_counter() - started
        return self

    def fuse(self, heads: dict[str, TemporalHead], X_val=None, y_val=None) -> "LateFusion":
        """Take fitted per-stream ``heads`` (one per stream, each on its stream's columns) and choose
        the weights on val samples ``X_val`` (frames of all streams side by side)."""
        self._validate_params()
        widths = [int(heads[s].n_features_in_) for s in self.streams]
        if widths != [int(w) for w in self.widths]:
            raise InvalidOptionError(f"stream heads of {widths} features for streams {self.streams} of {self.widths}")
        val = self._columns(X_val) if X_val is not None and len(X_val) else None
        self.heads_ = {s: heads[s] for s in self.streams}
        first = self.heads_[self.streams[0]]
        self.classes_ = first.classes_
        self.n_features_in_ = self.num_features
        self.weights_ = self._choose_weights(val, y_val)
        self.history_ = [dict(row, phase=f"{row['phase']}:{s}") for s, h in self.heads_.items()
                         for row in getattr(h, "history_", [])]
        self.stream_training_ = {s: {"best_epoch": int(h.best_epoch_), "epochs_run": int(h.n_epochs_),
                                     "stopped_early": bool(h.stopped_early_)} for s, h in self.heads_.items()}
        self.best_epoch_ = max(int(h.best_epoch_) for h in self.heads_.values())
        self.n_epochs_ = max(int(h.n_epochs_) for h in self.heads_.values())
        self.max_epochs_ = max(int(h.max_epochs_) for h in self.heads_.values())
        self.patience_ = int(first.patience_)
        self.stopped_early_ = all(bool(h.stopped_early_) for h in self.heads_.values())
        self.n_threads_ = getattr(first, "n_threads_", None)
        self.fit_seconds_ = float(sum(getattr(h, "fit_seconds_", 0.0) for h in self.heads_.values()))
        return self

    def _choose_weights(self, val: dict[str, Sequences] | None, y_val) -> list[float]:
        k = len(self.streams)
        if val is None:
            return [1.0 / k] * k
        probs = [self.heads_[s].predict_proba(val[s]) for s in self.streams]
        y_val = np.asarray(y_val)
        steps = round(1 / WEIGHT_STEP)
        best, best_key = None, None
        for combo in itertools.product(range(steps + 1), repeat=k - 1):
            if sum(combo) > steps:
                continue
            w = np.array([*combo, steps - sum(combo)], dtype=float) / steps
            p = sum(wi * pi for wi, pi in zip(w, probs))
            key = (-float((p.argmax(1) == y_val).mean()), negative_log_likelihood(p, y_val) or 0.0,
                   float(np.abs(w - 1.0 / k).sum()))
            if best_key is None or key < best_key:
                best, best_key = w, key
        return [round(float(v), 4) for v in best]

    def predict_scores(self, X) -> dict[str, np.ndarray]:
        """Every aggregation the base head reports, each mixed with the same weights."""
        self._check_is_fitted()
        cols = self._columns(X)
        scores = [self.heads_[s].predict_scores(cols[s]) for s in self.streams]
        keys = [key for key in scores[0] if all(key in sc for sc in scores)]
        return {key: sum(w * sc[key] for w, sc in zip(self.weights_, scores)) for key in keys}

    def predict_proba(self, X) -> np.ndarray:
        return next(iter(self.predict_scores(X).values()))

    @property
    def module_(self):
        import torch.nn as nn

        return nn.ModuleList([h.module_ for h in self.heads_.values()])

    def _get_state(self) -> dict:
        return {s: h.export() for s, h in self.heads_.items()}

    def _set_state(self, state: dict) -> None:
        self.heads_ = {s: TemporalHead.from_export(state[s]) for s in self.streams}
        widths = [int(self.heads_[s].n_features_in_) for s in self.streams]
        if widths != [int(w) for w in self.widths] or sum(widths) != int(self.num_features):
            raise ValueError(f"stream heads of {widths} features for streams of {self.widths} "
                             f"({self.num_features} in all)")
