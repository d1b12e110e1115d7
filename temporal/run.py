"""Train one head on a feature cache and write a run folder; score a finished run again.

``fit("lstm", features="kth.h5")`` reads the cache's train, val and test splits, trains the head
on train with model selection and early stopping on val (test is read only after training ends),
optionally refits on train+val for the chosen number of epochs, scores val and test, and writes::

    RUN_DIR/
        config.json        resolved configuration (every head option), command line, cache, hash
        metrics.json       protocol block; calibration (the temperature fitted on val); val and
                           test scores (+ video level, + majority vote, + ECE and NLL before and
                           after calibration); training summary; cache fingerprint; library
                           versions. Written last: its presence marks a finished run.
        epochs.csv         one row per epoch: phase, loss, accuracy, val loss/accuracy, seconds
        predictions.csv    one row per test sample: ids, true and predicted label, confidence,
                           correct, class probabilities, calibrated (predictions_video.csv: per
                           video, KTH)
        best.pt, last.pt   checkpoints (atomic writes): the model scored on test, and the last
                           epoch's; each holds the config, class names and cache fingerprint
                           (best.pt also the calibration block with the temperature), and
                           last.pt all an interrupted fit needs to go on (optimiser, random state).
                           With refit: select_best.pt / select_last.pt are the train-only phase's.
        curves.png         loss and accuracy per epoch, best epoch marked
        confusion_test.png test confusion matrices (per sample; per video; majority vote)
        report.md          the above in words: protocol, scores, per-class accuracy, files
        familiarity.npz    statistics of the training features and the threshold chosen on val
                           for harx predict's "unfamiliar" flag (:mod:`temporal.familiarity`)

The default ``RUN_DIR`` is ``<cache folder>/runs/<cache stem>/<head>-seed<N>-<config hash>``
(``<harx home>/runs/...`` when the cache's folder is read-only), where the hash covers the head,
all its options, the seed, refit, device, precision and the cache fingerprint: the same command on
the same cache names the same folder, and ``reuse=True`` returns it untouched. The same command
after an interruption (Ctrl-C) resumes the run from its ``last.pt``, after the last epoch that
finished (``RunResult.resumed_from``), and ends with the numbers the uninterrupted run would have.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from harx.features.coverage import split_warnings
from harx.features.errors import CacheMismatchError, DatasetNotFoundError, HarxError, InvalidOptionError
from harx.features.paths import latest_cache, library_versions
from harx.features.reader import FeatureStore

from .base import TemporalHead
from .calibration import apply_temperature, calibration_block, describe, fit_calibration, not_calibrated, temperature_of
from .classmap import ClassMap, trained_classes
from .familiarity import FAMILIARITY_FILE, fit_familiarity
from .errors import RunFolderError
from .metrics import classification_metrics, video_scores
from .fusion import LateFusion, build_head, parse_stream_selection, streams_for_head
from .loading import choose_loading
from .registry import create_head
from .sequences import concat_sequences

__all__ = ["RunResult", "evaluate", "fit", "default_run_dir", "open_run", "resolve_features", "runs_root"]

METRICS_VERSION = 1


@dataclass
class RunResult:
    """What :func:`fit` did. ``metrics`` is the content of ``metrics.json``."""

    path: Path                    # the run folder
    head: str
    seed: int
    features: Path                # the cache trained on (named in the CLI output)
    config: dict
    metrics: dict
    reused: bool = False          # a finished run with this cache and config existed: nothing trained
    seconds: float = 0.0
    resumed_from: int | None = None   # an interrupted run went on after this epoch ("resumed from epoch N")
    resumed_phase: str | None = None  # ... of this phase: "select", or "refit" with refit_trainval
    history: list[dict] = field(default_factory=list)
    loading: str | None = None        # where the features stayed, and why (None: a reused run)

    @property
    def warnings(self) -> list[str]:
        """What the run could not do, e.g. classes without training samples (``protocol.warnings``)."""
        return list(self.metrics.get("protocol", {}).get("warnings") or [])

    @property
    def streams(self) -> list[str]:
        return list(self.config.get("streams") or ["rgb"])

    @property
    def label(self) -> str:
        """``lstm-rgb+motion``: the head and the streams it read (see :func:`run_label`)."""
        return run_label(self.head, self.streams, self.config.get("fusion"))

    @property
    def test_accuracy(self) -> float | None:
        return (self.metrics.get("test") or {}).get("accuracy")


# ----------------------------------------------------------------------------- caches

def resolve_features(features: str | Path | None) -> Path:
    """The cache to use: ``features`` if given, else the most recent one in the default location.

    Raises:
        DatasetNotFoundError: no cache given and none found.
    """
    if features is not None:
        return Path(features).expanduser()
    found = latest_cache()
    if found is None:
        from harx.features.paths import default_cache_dir
        raise DatasetNotFoundError(f"no feature cache in {default_cache_dir()}; run harx extract first, "
                                   "or pass --features FILE")
    return Path(found)


def runs_root(features: Path) -> Path:
    """Where runs on a cache live: ``<cache folder>/runs/<cache stem>``, or, when the cache's
    folder is not writable (a shared, read-only dataset), ``<harx home>/runs/<cache stem>``."""
    features = Path(features)
    runs = features.parent / "runs"
    if os.access(runs if runs.is_dir() else features.parent, os.W_OK):
        return runs / features.stem
    from harx.features.paths import harx_home
    return harx_home() / "runs" / features.stem


def default_run_dir(features: Path, head: str, seed: int, config_hash: str) -> Path:
    """``runs_root(features) / "<head>-seed<seed>-<config hash>"`` (``head``: see :func:`run_label`)."""
    return runs_root(features) / f"{head}-seed{seed}-{config_hash}"


def run_label(head: str, streams: Sequence[str], fusion: str | None) -> str:
    """``lstm-rgb``, ``lstm-rgb+motion`` (late fusion), ``lstm-rgb+motion-early``: a run's head and streams."""
    return f"{head}-{'+'.join(streams)}" + ("-early" if fusion == "early" and len(streams) > 1 else "")


# ----------------------------------------------------------------------------- fit

def fit(
    head: str,
    features: str | Path | None = None,
    out: str | Path | None = None,
    *,
    seed: int = 0,
    refit_trainval: bool = False,
    epochs: int | None = None,
    patience: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    weight_decay: float | None = None,
    crop_frames: int | None = None,
    max_stride: int | None = None,
    device: str | None = None,
    precision: str | None = None,
    reuse: bool = False,
    command: str | Sequence[str] | None = None,
    on_epoch: Callable | None = None,
    streams: str | Sequence[str] | None = None,
    fusion: str = "late",
    fold: str | int | None = None,
    load: str = "auto",
    **head_options,
) -> RunResult:
    """Train head ``head`` on a feature cache and write a run folder (see the module docstring).

    Args:
        head: a registered head name (``list_heads()``): vote, lstm, gru, meanpool, tcn, transformer,
            convlstm (which reads the spatial map streams: ``streams="rgb"`` means ``rgb_map`` for it).
        features: the cache; ``None``: the most recent cache in the default location.
        streams: the cache's feature streams to train on, ``"rgb"``, ``"motion"``, ``"rgb+motion"``
            (or a list); ``None``: all of the cache's. Recorded in the run: evaluate and predict use them.
        fusion: with several streams, ``"late"`` (one head per stream, probabilities mixed with
            weights chosen on val) or ``"early"`` (one head on the streams side by side, per
            frame); see :mod:`temporal.fusion`.
        fold: for a dataset with several official folds (UCF101, UCF50, HMDB51), which one (a name such
            as ``"split2"`` or a 1-based number); ``None``: the cache's ``split`` column (fold 1).
        load: where the features stay while training: ``"memory"``, ``"disk"`` (read from the
            cache batch by batch: for caches larger than RAM), or ``"auto"`` (RAM when they fit
            comfortably); the same numbers either way. See :mod:`temporal.loading`.
        out: the run folder; ``None``: :func:`default_run_dir`.
        seed: seeds everything random (same seed, same CPU -> same numbers).
        refit_trainval: after selecting the epoch count on val, train a fresh model on
            train+val for that many epochs and score it on test (val scores stay those of the
            train-only model that was selected on val; the protocol says so).
        epochs ... precision: training options (``None``: the head's default); see
            :class:`temporal.training.TorchHead`.
        reuse: return a finished run of the same cache and config without training.
        command: the command line, recorded in ``config.json``.
        on_epoch: called with each :class:`~temporal.training.EpochInfo`.
        **head_options: the head's own options (``hidden_size=256``, ``bidirectional=True``...);
            ``None`` values are dropped.

    Raises:
        UnknownNameError: unknown head. InvalidOptionError: an option out of range or unknown.
        DatasetNotFoundError, ForeignCacheError: no usable cache.
        HarxError: the cache has training samples of fewer than two classes, or refit without a val split.

    The head's classes are those with training samples (``protocol.trained_classes``); a cache class
    without any is listed in ``protocol.absent_from_training``, its test samples count as errors, and
    ``protocol.warnings`` (``RunResult.warnings``) names every class a split lacks.
    """
    started = time.perf_counter()
    cache = FeatureStore(resolve_features(features))
    if fold is None and cache.folds:      # a dataset with official folds: the first, by name
        fold = cache.folds[0]
    chosen = streams_for_head(head, None if streams is None else parse_stream_selection(streams, cache.streams),
                              cache.streams, str(cache.path))
    store = cache.select(chosen, needed_by="this run", fold=fold)
    fusion = fusion if len(store.streams) > 1 else None
    store.loading = choose_loading(store, load)
    names = store.class_names
    n_split = {s: len(store.indices(s)) for s in ("train", "val", "test")}
    if n_split["train"] == 0:
        raise HarxError(f"{store.path} has no training samples (splits: {n_split}); "
                        "extract a dataset with a train split")
    if refit_trainval and n_split["val"] == 0:
        raise InvalidOptionError(f"--refit-trainval needs a val split to choose the epochs, and {store.path} has none")
    # The head gets an output for each class it has training samples of, and for no other.
    trained = trained_classes(names, store.column("label_index")[store.indices("train")])
    if len(trained) < 2:
        raise HarxError(f"{store.path} has training samples of {len(trained)} class ({', '.join(trained)}) of "
                        f"{len(names)}; a classifier needs two; check the split (harx info {store.path})")
    classes = ClassMap(names, trained)
    if crop_frames is None:
        crop_frames = crop_for_sampling(head, store)
    options = dict(epochs=epochs, patience=patience, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                   crop_frames=crop_frames, max_stride=max_stride, device=device, precision=precision)
    options.update(head_options)
    options["random_state"] = int(seed)
    if all(len(store.stream_info(s).feature_shape) == 3 for s in store.streams):   # maps (C, S, S)
        side = int(store.stream_info(store.streams[0]).feature_shape[-1])
        if options.get("map_size") not in (None, side):
            raise InvalidOptionError(f"map_size {options['map_size']}: the maps of {store.path} are {side}x{side}; "
                                     "leave map_size unset (other sizes: harx extract --spatial --map-size N, another --out)")
        options["map_size"] = side
    model = build_head(head, store.widths, len(trained), streams=store.streams, fusion=fusion or "late", **options)
    model._validate_params()                 # bad options fail before any data is read
    if refit_trainval and isinstance(model, LateFusion):
        raise InvalidOptionError("--refit-trainval is not offered with late fusion (each stream's head would need "
                                 "its own epoch count); use --fusion early or one stream")
    from harx.runtime import resolve_device, resolve_precision

    dev = resolve_device(model.device)
    prec = resolve_precision(model.precision, dev, cpu_half=False)
    params = model.get_params()
    hashed = {"head": head, "params": params, "seed": int(seed), "refit_trainval": bool(refit_trainval),
              "cache_fingerprint": store.fingerprint, "device": dev.type, "precision": prec,
              "streams": store.streams, "fusion": fusion, "fold": store.fold}
    config_hash = hashlib.sha256(json.dumps(hashed, sort_keys=True, default=str).encode()).hexdigest()[:8]
    label = run_label(head, store.streams, fusion) + (f"-{store.fold}" if store.fold else "")
    run_dir = Path(out) if out is not None else default_run_dir(store.path, label, seed, config_hash)
    if reuse:
        done = _finished_run(run_dir, config_hash)
        if done is not None:
            return RunResult(path=run_dir, head=head, seed=int(seed), features=store.path,
                             config=done[0], metrics=done[1], reused=True, seconds=time.perf_counter() - started)
    extraction = store.extraction
    config = {
        "head": head, "params": params, "seed": int(seed), "refit_trainval": bool(refit_trainval),
        "device": dev.type, "precision": prec, "config_hash": config_hash,
        "features": str(store.path.resolve()), "cache_fingerprint": store.fingerprint,
        "dataset": store.attrs.get("dataset"), "unit": store.attrs.get("unit"), "backbone": store.backbone,
        "embed_dim": store.embed_dim, "streams": store.streams, "fusion": fusion, "fold": store.fold,
        "class_names": trained, "cache_class_names": names, "extraction": extraction,
        "command": command if command is None or isinstance(command, str) else shlex.join(map(str, command)),
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    resume = _resume_point(run_dir, config_hash, refit_trainval)
    if resume is None:
        _prepare_run_dir(run_dir)
        _write_json(run_dir / "config.json", config)
    else:  # the interrupted run's config (its start time and command line)
        config, resume = resume
    ckpt_meta = {"config": config, "cache_fingerprint": store.fingerprint, "backbone": store.backbone,
                 "extraction": extraction, "streams": store.streams, "fusion": fusion,
                 "embed_dim": store.embed_dim, "class_names": trained, "dataset": store.attrs.get("dataset")}

    X_train, y_train = _samples(store, "train")
    X_val, y_val = _samples(store, "val")
    y_train = classes.head_labels(y_train)
    X_sel, y_sel = _trained_only(classes, X_val, y_val)   # val samples of untrained classes select nothing
    history: list[dict] = []

    def epoch_hook(prefix: str, current: TemporalHead):
        def hook(info):
            history.append(info.as_dict())
            _write_epochs_csv(run_dir / "epochs.csv", history)
            meta = dict(ckpt_meta, epoch=info.epoch, phase=info.phase)
            state = current.training_state() if hasattr(current, "training_state") else None   # torch heads
            current.save(run_dir / f"{prefix}last.pt", dict(meta, checkpoint="last"), resume=state)
            if info.best and info.phase == "select":
                current.save(run_dir / f"{prefix}best.pt", dict(meta, checkpoint="best"))
            if on_epoch is not None:
                on_epoch(info)
        return hook

    prefix = "select_" if refit_trainval else ""
    if resume is not None and resume["phase"] == "refit":
        # selection had finished: its model is select_best.pt, saved before the refit began
        model = TemporalHead.load(run_dir / "select_best.pt")
        history.extend(model.history_)
    elif isinstance(model, LateFusion):
        # one run per stream, in its own default folder: reused when it exists (harx compare trains
        # them anyway), resumed when it was interrupted; then the weights are chosen on val
        stream_runs = _stream_runs(head, store, seed, options, on_epoch, command)
        model.fuse({s: TemporalHead.load(r.path / "best.pt") for s, r in stream_runs.items()}, X_sel, y_sel)
        history.extend(model.history_)
        config["stream_runs"] = {s: str(r.path) for s, r in stream_runs.items()}
        _write_json(run_dir / "config.json", config)
    else:
        if resume is not None:
            history.extend(resume["history"])
        model.fit(X_train, y_train, X_val=X_sel, y_val=y_sel, class_names=trained, on_epoch=epoch_hook(prefix, model),
                  resume=resume)
        if refit_trainval:  # the refit starts from it, and a refit resumed after a Ctrl-C reloads it
            model.save(run_dir / "select_best.pt", dict(ckpt_meta, checkpoint="best", epoch=model.best_epoch_,
                                                        phase="select"))
    best_meta = dict(ckpt_meta, checkpoint="best", epoch=model.best_epoch_, phase="select")
    selected = model
    final = model
    if refit_trainval:
        options = {k: v for k, v in params.items() if k not in ("num_features", "num_classes")}
        final = create_head(head, store.embed_dim, len(trained), **dict(options, epochs=int(model.best_epoch_)))
        refit_resume = resume if resume is not None and resume["phase"] == "refit" else None
        if refit_resume is not None:
            history.extend(refit_resume["history"])
        final.fit(concat_sequences([X_train, X_sel]), np.concatenate([y_train, y_train[:0] if y_sel is None else y_sel]),
                  class_names=trained, on_epoch=epoch_hook("", final), phase="refit", resume=refit_resume)
        best_meta = dict(ckpt_meta, checkpoint="best", epoch=final.n_epochs_, phase="refit")
    # harx predict's "unfamiliar" flag: statistics of the training features, threshold on val (of trained classes)
    # The threshold is taken over val *samples*. In a cache of subsequences (KTH) predict pools a
    # whole video, whose mean is steadier than one subsequence's, so fewer in-distribution videos
    # are flagged than the quantile says: conservative by design, since val sets are small (a
    # quantile over a few val videos would rest on the largest one or two; tried, it flagged a
    # KTH test person's video). metrics.json measures the flagged share of test videos.
    segments = [(int(np.prod(shape)), int(np.prod(shape[1:])) if len(shape) == 3 else 1)
                for shape in (store.stream_info(n).feature_shape for n in store.streams)]
    familiarity = fit_familiarity(X_train, X_sel, segments=segments)
    familiarity.save(run_dir / FAMILIARITY_FILE)
    del X_train

    # Only now is the test split read: nothing above could look at it.
    training = {"max_epochs": int(selected.max_epochs_), "epochs_run": int(selected.n_epochs_),
                "best_epoch": int(selected.best_epoch_), "stopped_early": bool(selected.stopped_early_),
                "patience": int(selected.patience_), "refit_epochs": int(final.n_epochs_) if refit_trainval else None,
                "fit_seconds": round(float(selected.fit_seconds_ + (final.fit_seconds_ if refit_trainval else 0)), 2),
                "device": dev.type, "precision": prec,
                # CPU results depend on the thread count (harx.runtime.fixed_cpu_threads): same count, same numbers
                "cpu_threads": getattr(selected, "n_threads_", None) if dev.type == "cpu" else None,
                "n_parameters": int(sum(p.numel() for p in final.module_.parameters())),
                "loading": store.loading.as_record()}
    if isinstance(selected, LateFusion):
        training["per_stream"] = selected.stream_training_
        training["fusion_weights"] = dict(zip(selected.streams, selected.weights_))
    scored = _score_run(store, selected, final, refit_trainval, X_val=X_val, y_val=y_val)
    # best.pt is written once the temperature is known: harx evaluate and harx predict apply it too
    final.save(run_dir / "best.pt", dict(best_meta, calibration=scored["calibration"]))
    metrics = _metrics_document(store, head, selected, final, int(seed), refit_trainval, training, scored,
                                config_hash, n_split)
    metrics["familiarity"] = _familiarity_summary(store, classes, familiarity, n_split)
    metrics["protocol"]["unfamiliar_videos"] = _familiarity_protocol(familiarity)
    if refit_trainval and y_val is not None and (classes.head_labels(y_val) < 0).any():
        metrics["protocol"]["warnings"].append(
            f"{int((classes.head_labels(y_val) < 0).sum())} val sample(s) of classes absent from train were left "
            "out of the refit on train+val (the head's classes are those of train)")
    _write_outputs(run_dir, metrics, history, scored)
    return RunResult(path=run_dir, head=head, seed=int(seed), features=store.path, config=config, metrics=metrics,
                     reused=False, seconds=time.perf_counter() - started, history=history,
                     resumed_from=None if resume is None else int(resume["epoch"]),
                     resumed_phase=None if resume is None else resume["phase"], loading=store.loading.describe())


def crop_for_sampling(head: str, store) -> int | None:
    """The training crop of a sequence head, in rows, for a cache that keeps every k-th frame: the
    head's default (made for every frame) divided by the median spacing of the training samples'
    rows in source frames, at least 8; ``None`` (the head's default) for frame-level heads and for
    caches of every frame.

    Why (``benchmarks/RESULTS.md``, "Accuracy against cost"): a crop of 32 rows covers a whole
    KTH subsequence at ``--every 4``, so training sees every sample whole, every epoch: no
    temporal augmentation. The LSTM on motion then scored 96.5 ± 4.9 % on unseen persons (vote
    98.4 %); with crops of the same duration as at every frame (8 rows) 99.3 ± 0.7 %, and val loss
    0.0001 instead of 0.018 (val accuracy is 99.5-100 % either way).
    """
    probe = create_head(head, 1, 2)
    if getattr(probe, "frame_level", False) or "crop_frames" not in probe.get_params():
        return None
    idx = store.indices("train")
    rows = (store.column("row_stop") - store.column("row_start"))[idx]
    span = (store.column("range_stop") - store.column("range_start"))[idx]
    keep = rows > 1
    if not keep.any():
        return None
    spacing = float(np.median(span[keep] / rows[keep]))
    if spacing < 1.5:
        return None
    return max(8, int(round(probe.crop_frames / spacing)))


def _stream_runs(head: str, store, seed: int, options: dict, on_epoch: Callable | None,
                 command) -> dict[str, RunResult]:
    """A finished run of ``head`` on each of ``store``'s streams alone, with the same options and
    seed (trained now, or reused): the parts of a late fusion."""
    runs = {}
    for stream in store.streams:
        def tagged(info, stream=stream):
            if on_epoch is not None:
                from dataclasses import replace
                on_epoch(replace(info, phase=f"{info.phase}:{stream}"))
        runs[stream] = fit(head, store.path, seed=seed, streams=[stream], reuse=True, command=command,
                           on_epoch=tagged, fold=store.fold, load=store.loading.asked,
                           **{k: v for k, v in options.items() if k != "random_state"})
    return runs


def _samples(store, split: str):
    """A split's samples and label indices, in RAM or left in the cache as ``store.loading`` (a
    :class:`~temporal.loading.Loading`) says; ``(None, None)`` for an empty split."""
    loading = getattr(store, "loading", None)
    return store.sequences(split, in_memory=loading is None or loading.in_memory)


def _trained_only(classes: ClassMap, X, y) -> tuple[list | None, np.ndarray | None]:
    """The samples of ``X``/``y`` whose class the head is trained on, labels in the head's indices;
    ``(None, None)`` when there are none."""
    if X is None:
        return None, None
    labels = classes.head_labels(y)
    keep = np.flatnonzero(labels >= 0)
    if len(keep) == 0:
        return None, None
    return X.take(keep), labels[keep]


def _familiarity_summary(store: FeatureStore, classes: ClassMap, familiarity, n_split: dict) -> dict:
    """metrics.json's ``familiarity``: how the flag is made, and how many test samples (and videos)
    of the trained classes it flags: all of them false flags."""
    if not n_split["test"] or familiarity.threshold_ is None:
        return familiarity.summary()
    X_test, y_test = _samples(store, "test")
    known = np.flatnonzero(classes.head_labels(y_test) >= 0)
    if len(known) == 0:
        return familiarity.summary()
    ids = store.column("video_id")[store.indices("test")][known]
    return familiarity.summary(X_test.take(known), [str(v) for v in ids])


def _familiarity_protocol(familiarity) -> str:
    if familiarity.threshold_ is None:
        return "not flagged: the run has no val split to choose a threshold on"
    return (f"flagged when the Mahalanobis distance of the video's mean-pooled embedding to the training samples' "
            f"exceeds {familiarity.threshold_:.4g}, the {familiarity.quantile:g} quantile of {familiarity.n_val_} val "
            f"videos' distances ({FAMILIARITY_FILE})")


def _prepare_run_dir(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise HarxError(f"cannot create run folder {run_dir}: {err.strerror}; choose another --out") from None
    if not os.access(run_dir, os.W_OK):
        raise HarxError(f"no write permission in {run_dir}; choose another --out")
    # A rerun into the same folder: the old metrics.json no longer describes it, and an old
    # last.pt must not be mistaken for this run's when it is resumed.
    (run_dir / "metrics.json").unlink(missing_ok=True)
    for stale in ("last.pt", "select_best.pt", "select_last.pt", "predictions_video.csv", FAMILIARITY_FILE):
        (run_dir / stale).unlink(missing_ok=True)


def _resume_point(run_dir: Path, config_hash: str, refit_trainval: bool) -> tuple[dict, dict] | None:
    """``(config, training state)`` of an interrupted run of this config in ``run_dir``, or ``None``.

    Interrupted: ``config.json`` of this config and no ``metrics.json``. The state is the one in
    ``last.pt`` (a refit run: ``last.pt`` once the refit has begun, else ``select_last.pt``), written
    after the last epoch that finished; a checkpoint without one (older harx) starts the run again.
    """
    if (run_dir / "metrics.json").exists():
        return None
    try:
        config = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError):
        return None
    if config.get("config_hash") != config_hash:
        return None
    for name, phase in (("last.pt", "refit"), ("select_last.pt", "select")) if refit_trainval else (("last.pt", "select"),):
        if not (run_dir / name).is_file() or (phase == "refit" and not (run_dir / "select_best.pt").is_file()):
            continue
        try:
            ckpt = TemporalHead.read_checkpoint(run_dir / name)
        except HarxError:  # damaged by the interruption: try the next, or start again
            continue
        state = ckpt.get("resume")
        if state is not None and state.get("phase") == phase and \
                ckpt.get("meta", {}).get("config", {}).get("config_hash") == config_hash:
            return config, state
    return None


def _finished_run(run_dir: Path, config_hash: str) -> tuple[dict, dict] | None:
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text())
        config = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError):
        return None
    if metrics.get("config_hash") != config_hash or config.get("config_hash") != config_hash:
        return None
    if not (run_dir / "best.pt").is_file():
        return None
    return config, metrics


# ----------------------------------------------------------------------------- scoring

def _score_split(store: FeatureStore, split: str, model: TemporalHead, X=None, y=None, *, temperature: float = 1.0,
                 raw: dict | None = None) -> dict | None:
    """Scores and metrics of one split; the primary scores calibrated with ``temperature`` (the
    other aggregations, e.g. the majority vote, are not probabilities and stay as they are).
    ``raw``: the head's ``predict_scores(X)``, when the caller has them already."""
    idx = store.indices(split)
    if len(idx) == 0:
        return None
    if X is None:
        X, y = _samples(store, split)
    names = store.class_names
    classes = ClassMap(names, model.classes_, where=str(store.path))
    raw = model.predict_scores(X) if raw is None else raw
    scores = {k: classes.cache_scores(v) for k, v in raw.items()}  # untrained classes: 0
    primary = next(iter(scores))
    uncalibrated = scores[primary]
    scores[primary] = classes.cache_scores(apply_temperature(raw[primary], temperature))
    m = classification_metrics(y, scores[primary], names)
    m["aggregation"] = primary
    trained = classes.head_labels(y) >= 0
    # NLL over samples of trained classes only: the others have probability 0 for their class
    m["calibration"] = calibration_block(uncalibrated, scores[primary], y, temperature, nll_mask=trained)
    for extra, s in list(scores.items())[1:]:
        m[extra] = classification_metrics(y, s, names)
    untrained = np.flatnonzero(~trained)
    if len(untrained):  # always errors: the head has no output for their class
        m["absent_from_training"] = {"classes": sorted({names[int(y[i])] for i in untrained}),
                                     "sample_ids": [str(v) for v in store.column("sample_id")[idx][untrained]]}
    video_ids = store.column("video_id")[idx]
    lengths = (store.column("row_stop") - store.column("row_start"))[idx]
    entry = {"sample_id": store.column("sample_id")[idx], "video_id": video_ids, "n_frames": lengths,
             "y": np.asarray(y), "scores": scores, "metrics": m}
    if store.attrs.get("unit") == "subsequence":
        videos, vp, vy = video_scores(video_ids, scores[primary], y, weights=lengths)
        m["video"] = classification_metrics(vy, vp, names)
        m["video"]["aggregation"] = "mean of subsequence probabilities, weighted by frames"
        entry["video"] = (videos, vp, vy)
    return entry


def _score_run(store: FeatureStore, selected: TemporalHead, final: TemporalHead, refit: bool, X_val=None,
               y_val=None) -> dict:
    """Validation scores of the model selected on val; test scores of the final model; both
    calibrated with the temperature fitted on the selected model's val scores (``out["calibration"]``).

    With a refit, the refit model has seen val, so ``T`` comes from the train-only model selected
    on val and is applied to the refit model (an approximation; ``fitted_on`` says so).
    """
    if X_val is None:
        return {"calibration": not_calibrated("no val split"), "val": None,
                "test": _score_split(store, "test", final)}
    raw = selected.predict_scores(X_val)
    primary = next(iter(raw))
    labels = ClassMap(store.class_names, selected.classes_, where=str(store.path)).head_labels(y_val)
    keep = labels >= 0       # val samples of classes the head has no output for cannot be fitted
    fitted_on = ("val (scores of the model selected on val, trained on train only; applied to the refit "
                 "model)" if refit else "val")
    calibration = fit_calibration(raw[primary][keep], labels[keep], fitted_on=fitted_on, scores=primary)
    t = calibration["temperature"]
    out = {"calibration": calibration,
           "val": _score_split(store, "val", selected, X_val, y_val, temperature=t, raw=raw)}
    out["test"] = _score_split(store, "test", final, temperature=t)
    return out


def _protocol(store: FeatureStore, head: str, selected: TemporalHead, final: TemporalHead, seed: int, refit: bool,
              n_split: dict, calibration: dict | None = None) -> dict:
    unit = store.attrs.get("unit") or "video"
    has_val = n_split.get("val", 0) > 0
    best_epoch = getattr(selected, "best_epoch_", None)
    max_epochs = getattr(selected, "max_epochs_", None)
    if has_val:
        patience = getattr(selected, "patience_", None)
        selection = (f"early stopping on val accuracy (ties: val loss), patience {patience}; "
                     f"best epoch {best_epoch} of at most {max_epochs}")
        if isinstance(selected, LateFusion):
            selection = (f"per stream, early stopping on val accuracy (ties: val loss), patience {patience}; best "
                         "epoch " + ", ".join(f"{s} {v['best_epoch']}" for s, v in selected.stream_training_.items())
                         + f" of at most {max_epochs}; then the fusion weights on val")
    else:
        selection = f"none (no val split): trained a fixed {max_epochs} epochs, last epoch kept"
    if refit:
        selection += f"; then refit on train+val for {best_epoch} epochs"
    return {
        "dataset": store.attrs.get("dataset"), "split_protocol": store.attrs.get("split_protocol") or None,
        "fold": getattr(store, "fold", None),
        "unit_scored": unit,
        "video_level": ("mean of each video's subsequence probabilities (frame-weighted); reported as "
                        "<split>.video" if unit == "subsequence" else None),
        "sampling": store.attrs.get("sampling_description"), "backbone": store.backbone,
        "embed_dim": store.embed_dim, "streams": list(getattr(store, "streams", ["rgb"])),
        "fusion": _fusion_words(final, getattr(store, "streams", ["rgb"])),
        "class_names": store.class_names, "head": head,
        "trained_classes": [str(c) for c in final.classes_],
        "absent_from_training": ClassMap(store.class_names, final.classes_, where=str(store.path)).absent,
        "warnings": split_warnings(store.class_names, zip(store.column("label"), store.column("split"))),
        "frame_aggregation": final.aggregation, "trained_on": "train+val" if refit else "train",
        "model_selection": selection,
        "validation_scores": (None if not has_val else
                              "of the model selected on val before the refit (trained on train only); "
                              "the refit model saw val" if refit else
                              "of the selected model; val chose the epoch, so they are optimistic"),
        "test_scores": "scored once, after training; test never used for selection",
        "probabilities": describe(calibration),
        "seed": seed, "samples": n_split, "cache": str(store.path), "cache_fingerprint": store.fingerprint,
    }


def _fusion_words(model: TemporalHead, streams: Sequence[str]) -> str | None:
    if len(streams) < 2:
        return None
    if isinstance(model, LateFusion):
        weights = ", ".join(f"{s} {w:.1f}" for s, w in zip(model.streams, model.weights_))
        return (f"late: one head per stream, probabilities mixed with weights chosen on val ({weights}; best val "
                "accuracy, then val log loss)")
    return "early: one head on each frame's features of all streams side by side"


def _metrics_document(store, head, selected, final, seed, refit, training, scored, config_hash, n_split) -> dict:
    return {
        "harx_metrics_version": METRICS_VERSION, "head": head, "config_hash": config_hash,
        "protocol": _protocol(store, head, selected, final, seed, refit, n_split, scored.get("calibration")),
        "calibration": scored.get("calibration"),
        "val": scored["val"]["metrics"] if scored.get("val") else None,
        "test": scored["test"]["metrics"] if scored.get("test") else None,
        "training": training,
        "cache": {"path": str(store.path), "fingerprint": store.fingerprint, "backbone": store.backbone,
                  "embed_dim": store.embed_dim, "settings_fingerprint": store.attrs.get("settings_fingerprint")},
        "versions": library_versions(),
    }


# ----------------------------------------------------------------------------- files

def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_json_default) + "\n")
    os.replace(tmp, path)


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


EPOCH_COLUMNS = ("phase", "epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "best", "seconds", "lr")


def _write_epochs_csv(path: Path, history: list[dict]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(EPOCH_COLUMNS)
        for h in history:
            w.writerow([_fmt(h[c]) for c in EPOCH_COLUMNS])
    os.replace(tmp, path)


def _fmt(v):
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return v


def _write_predictions(path: Path, entry: dict, names: list[str]) -> None:
    main = entry["metrics"]["aggregation"]
    p = entry["scores"][main]
    pred = p.argmax(1)
    extra = [k for k in entry["scores"] if k != main]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sample_id", "video_id", "split", "n_frames", "true_label", "predicted_label", "confidence",
                    "correct", *(f"{k}_label" for k in extra), *(f"p_{c}" for c in names)])
        for i in range(len(pred)):
            w.writerow([entry["sample_id"][i], entry["video_id"][i], "test", int(entry["n_frames"][i]),
                        names[entry["y"][i]], names[pred[i]], f"{p[i, pred[i]]:.4f}", int(pred[i] == entry["y"][i]),
                        *(names[int(entry["scores"][k][i].argmax())] for k in extra),
                        *(f"{v:.4f}" for v in p[i])])


def _write_video_predictions(path: Path, entry: dict, names: list[str]) -> None:
    videos, vp, vy = entry["video"]
    counts: dict[str, int] = {}
    for v in entry["video_id"]:
        counts[v] = counts.get(v, 0) + 1
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["video_id", "split", "n_samples", "true_label", "predicted_label", "confidence", "correct",
                    *(f"p_{c}" for c in names)])
        for v, p, y in zip(videos, vp, vy):
            k = int(p.argmax())
            w.writerow([v, "test", counts[v], names[y], names[k], f"{p[k]:.4f}", int(k == y), *(f"{x:.4f}" for x in p)])


def _write_outputs(run_dir: Path, metrics: dict, history: list[dict], scored: dict) -> None:
    from .report import plot_confusions, plot_curves, run_markdown

    p = metrics["protocol"]
    names = p["class_names"]
    files = {"config.json": "resolved configuration and command line",
             "metrics.json": "protocol, calibration, val and test scores, training summary, versions",
             "epochs.csv": "loss and accuracy per epoch", "best.pt": "checkpoint of the model scored on test",
             "last.pt": "checkpoint of the last epoch", "curves.png": "loss and accuracy curves"}
    _write_epochs_csv(run_dir / "epochs.csv", history)
    t = metrics["training"]
    title = (f"{metrics['head']} on {p['dataset']} ({p['backbone']}), seed {p['seed']}, trained on {p['trained_on']}")
    has_val = bool(history) and history[0]["val_loss"] is not None
    plot_curves(run_dir / "curves.png", history, title, t["best_epoch"] if has_val and "per_stream" not in t else None)
    test = scored.get("test")
    if test is not None:
        _write_predictions(run_dir / "predictions.csv", test, names)
        files["predictions.csv"] = ("one row per test sample: true and predicted label, confidence, probabilities "
                                    "(calibrated)")
        first = ("test, mean of frame probabilities" if "majority_vote" in test["metrics"]
                 else "test, per " + (p["unit_scored"] or "sample"))
        panels = [(first, test["metrics"])]
        if "video" in test["metrics"]:
            panels.append(("test, per video", test["metrics"]["video"]))
            _write_video_predictions(run_dir / "predictions_video.csv", test, names)
            files["predictions_video.csv"] = "one row per test video (mean of its subsequences)"
        if "majority_vote" in test["metrics"]:
            panels.append(("test, majority vote of frames", test["metrics"]["majority_vote"]))
        plot_confusions(run_dir / "confusion_test.png", panels, names, title)
        files["confusion_test.png"] = "test confusion matrices (rows: true class; colour: share of the row)"
    if metrics["protocol"]["trained_on"] == "train+val":
        files["select_best.pt"] = "checkpoint selected on val (train only), which scored val"
    if (run_dir / FAMILIARITY_FILE).is_file():
        files[FAMILIARITY_FILE] = "training-feature statistics and val threshold of harx predict's unfamiliar flag"
    files["report.md"] = "this summary"
    (run_dir / "report.md").write_text(run_markdown(metrics, files))
    _write_json(run_dir / "metrics.json", metrics)          # last: marks the run finished


# ----------------------------------------------------------------------------- evaluate

def open_run(run: str | Path) -> tuple[Path, dict]:
    """A finished run folder and its ``config.json``.

    Raises:
        RunFolderError: the folder is missing, is not a run folder, or its run did not finish.
    """
    run_dir = Path(run).expanduser()
    if not run_dir.is_dir():
        raise RunFolderError(f"run folder {run_dir} not found; pass the folder harx fit printed")
    try:
        config = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError):
        raise RunFolderError(f"{run_dir} has no readable config.json; it is not a harx run folder") from None
    if not isinstance(config, dict) or not isinstance(config.get("head"), str) \
            or not isinstance(config.get("seed"), int):
        raise RunFolderError(f"{run_dir}/config.json is damaged (no head or seed in it); fit the run again")
    if not (run_dir / "best.pt").is_file():
        raise RunFolderError(f"{run_dir} has no best.pt: the run did not finish; fit it again")
    return run_dir, config


def evaluate(run: str | Path, features: str | Path | None = None, *, device: str | None = None) -> dict:
    """Score a finished run's ``best.pt`` again, on its own cache or on ``features``.

    Returns a dict shaped like ``metrics.json`` (``protocol``, ``calibration``, ``val``, ``test``),
    plus ``same_cache`` (whether the cache is the one trained on). Probabilities are calibrated
    with the temperature ``best.pt`` records (``T = 1`` for a run fitted before harx calibrated).

    Raises:
        RunFolderError: ``run`` is not a finished run folder.
        CacheMismatchError: the cache holds another backbone's features, another width, or lacks a
            class the run was trained on (classes it was not trained on count as errors).
    """
    run_dir, config = open_run(run)
    if features is None and not isinstance(config.get("features"), str):
        raise RunFolderError(f"{run_dir}/config.json names no feature cache; pass --features")
    cache = Path(features) if features is not None else Path(config["features"])
    if features is None and not cache.is_file():
        raise DatasetNotFoundError(f"run {run_dir.name} was trained on {cache}, which is gone; pass --features "
                                   f"with a cache of {config.get('backbone')} features of the same classes")
    store = FeatureStore(cache).select(config.get("streams") or ["rgb"], needed_by=f"run {run_dir.name}",
                                       fold=config.get("fold"))
    store.loading = choose_loading(store)
    final = TemporalHead.load(run_dir / "best.pt")
    meta = final.checkpoint_meta_
    trained = (f"{meta.get('backbone')} {final.n_features_in_}-d features of {len(final.classes_)} classes "
               f"({', '.join(final.classes_)})")
    here = (f"{store.backbone} {store.embed_dim}-d features of {len(store.class_names)} classes "
            f"({', '.join(store.class_names)})")
    # A cache may hold classes the run was not trained on (their samples count as errors), not fewer.
    if (store.backbone != meta.get("backbone") or store.embed_dim != final.n_features_in_
            or not set(map(str, final.classes_)) <= set(store.class_names)):
        raise CacheMismatchError(f"{store.path} holds {here}, but run {run_dir.name} was trained on {trained}; "
                                 f"evaluate it on a cache extracted with --backbone {meta.get('backbone')}, "
                                 "or fit a new run on this cache")
    if device is not None:
        final.set_params(device=device)
    refit = bool(config.get("refit_trainval"))
    selected = final
    if refit and (run_dir / "select_best.pt").is_file():
        selected = TemporalHead.load(run_dir / "select_best.pt")
        if device is not None:
            selected.set_params(device=device)
    n_split = {s: len(store.indices(s)) for s in ("train", "val", "test")}
    # the temperature fitted on the run's own val split (none in best.pt: a run from before, T = 1)
    calibration = meta.get("calibration")
    t = temperature_of(meta)
    val = _score_split(store, "val", selected, temperature=t)
    test = _score_split(store, "test", final, temperature=t)
    protocol = _protocol(store, config["head"], selected, final, int(config["seed"]), refit, n_split, calibration)
    return {"harx_metrics_version": METRICS_VERSION, "head": config["head"], "run": str(run_dir),
            # runs from before streams recorded the cache's own fingerprint
            "same_cache": (store.fingerprint if "streams" in config else store.store.fingerprint)
            == config.get("cache_fingerprint"), "protocol": protocol,
            "calibration": calibration,
            "val": val["metrics"] if val else None, "test": test["metrics"] if test else None,
            "versions": library_versions()}
