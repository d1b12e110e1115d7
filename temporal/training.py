"""The training loop every torch head shares: crops, batches, model selection, the optimiser.

Variable lengths: a batch is a ``(B, L, D)`` tensor of the batch's samples padded to its longest,
plus their lengths; heads mask the padding (or pack it for RNNs), so no sample is dropped or
truncated for being short or long. Samples are sorted by length into batches (little padding),
and the batch order is shuffled.

Training sees random temporal crops: each epoch, each sample contributes ``crop_frames``
consecutive frames (all of them if shorter) from a random start, optionally with a random stride
up to ``max_stride`` (default 1: a stride changes apparent speed, which is a class cue in KTH:
walking vs jogging vs running). Frame-level heads (``vote``) instead draw ``crop_frames`` random
frames of each sample. Evaluation always sees every frame of every sample, in batches of at most
``eval_frames`` padded frames.

Model selection: after each epoch the model is scored on the validation samples; the *best* epoch
has the highest validation accuracy (ties: the lowest validation loss), training stops after
``patience`` epochs without a clear improvement (accuracy up, or loss down by more than 1 %), and
the best epoch's weights are restored. The test split is never passed here. Without validation
samples, training runs exactly ``epochs`` epochs and the last is kept.

Determinism: a seeded numpy Generator draws crops and batch order; torch's RNG (initial weights,
dropout) is seeded inside ``torch.random.fork_rng`` (the caller's RNG state is left alone). CPU
kernels split their sums by thread, so a gradient depends on torch's thread count; a fit on the
CPU therefore runs on one count from start to end, chosen from the CPUs the process may use and
never from the load (:func:`harx.runtime.fixed_cpu_threads`, recorded in ``n_threads_``): the same
seed gives the same model whatever else runs on the machine. ``torch.use_deterministic_algorithms``
is not switched on: its first call imports torch's compiler stack, which costs more than a small
fit, and the CPU kernels used here are deterministic at a fixed count anyway (tests run the same
fit twice, once beside a busy process, and compare). On CUDA, autocast runs bf16 (or fp16 with a
gradient scaler where bf16 is unsupported) unless ``precision="fp32"``; on a CPU everything is fp32.
"""

from __future__ import annotations

import copy
import math
import time
from abc import abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from harx.runtime import fixed_cpu_threads, keep_freed_memory, resolve_device, resolve_precision
from harx.features.errors import InvalidOptionError

from .base import TemporalHead
from .errors import NotFittedError
from .layers import Standardize, masked_mean
from .sequences import Sequences, StoredSequences, as_sequences, feature_stats

__all__ = ["EpochInfo", "TorchHead", "check_range"]

#: at most this many padded frames per evaluation batch (bounds memory for 1,000-frame videos)
EVAL_FRAMES = 16384
EVAL_MAX_BATCH = 512
EVAL_BYTES = 16 << 20


def check_range(key: str, value, low, high=None, integer: bool = False, open_high: bool = False) -> None:
    """Raise InvalidOptionError unless ``low <= value <= high`` (``< high`` with ``open_high``)."""
    ok = isinstance(value, (int, np.integer)) if integer else isinstance(value, (int, float, np.number))
    if ok:
        ok = value >= low and (high is None or (value < high if open_high else value <= high))
    if not ok:
        rng = f">= {low}" if high is None else f"in [{low}, {high}{')' if open_high else ']'}"
        raise InvalidOptionError(f"{key} must be {'an integer ' if integer else ''}{rng}, got {value!r}")


# ----------------------------------------------------------------------------- optimiser

class AdamW:
    """AdamW (Loshchilov & Hutter, ICLR 2019: decoupled weight decay), as ``torch.optim.AdamW``.

    Written out here because constructing a ``torch.optim`` optimiser imports torch's compiler
    stack (``torch._dynamo``) on first use, which costs more than a small fit on a CPU (measured
    with torch 2.14.1 on the 2-core machine, fresh processes: 1.0-1.9 s for ``torch.optim.AdamW``'s
    construction and first step, under 1 ms for this class; ``benchmarks/RESULTS.md``). It has
    the ``param_groups`` attribute that ``torch.amp.GradScaler`` needs, and a ``state_dict`` for
    resuming a fit.
    """

    def __init__(self, params, lr: float, weight_decay: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.param_groups = [{"params": [p for p in params if p.requires_grad], "lr": lr}]
        self.weight_decay, self.betas, self.eps = weight_decay, betas, eps
        self.state: dict[torch.Tensor, tuple[torch.Tensor, torch.Tensor]] = {}
        self.steps = 0

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.param_groups[0]["params"]:
            p.grad = None

    def state_dict(self) -> dict:
        """Step count and moment estimates, by parameter position (copies, on the CPU)."""
        moments = [self.state.get(p) for p in self.param_groups[0]["params"]]
        return {"steps": self.steps, "lr": self.param_groups[0]["lr"],
                "exp_avg": [None if s is None else s[0].detach().cpu().clone() for s in moments],
                "exp_avg_sq": [None if s is None else s[1].detach().cpu().clone() for s in moments]}

    def load_state_dict(self, state: dict) -> None:
        params = self.param_groups[0]["params"]
        if len(state["exp_avg"]) != len(params):
            raise ValueError(f"optimiser state for {len(state['exp_avg'])} parameters, this model has {len(params)}")
        self.steps, self.param_groups[0]["lr"] = int(state["steps"]), state["lr"]
        self.state = {p: (m.to(p.device, p.dtype), v.to(p.device, p.dtype))
                      for p, m, v in zip(params, state["exp_avg"], state["exp_avg_sq"]) if m is not None}

    @torch.no_grad()
    def step(self) -> None:
        self.steps += 1
        lr = self.param_groups[0]["lr"]
        b1, b2 = self.betas
        c1, c2 = 1 - b1 ** self.steps, 1 - b2 ** self.steps
        for p in self.param_groups[0]["params"]:
            if p.grad is None:
                continue
            if p not in self.state:
                self.state[p] = (torch.zeros_like(p), torch.zeros_like(p))
            m, v = self.state[p]
            p.mul_(1 - lr * self.weight_decay)
            m.mul_(b1).add_(p.grad, alpha=1 - b1)
            v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
            p.addcdiv_(m, (v / c2).sqrt_().add_(self.eps), value=-lr / c1)


def _clip_grad_norm(params, max_norm: float) -> None:
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    total = torch.sqrt(sum((g.float() ** 2).sum() for g in grads))
    scale = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    for g in grads:
        g.mul_(scale.to(g.dtype))


# ----------------------------------------------------------------------------- batches

@dataclass(frozen=True)
class EpochInfo:
    """What one epoch did; given to ``on_epoch`` callbacks and written to ``epochs.csv``."""

    phase: str                    # "select": train, early stopping on val; "refit": train+val, fixed epochs
    epoch: int                    # 1-based
    max_epochs: int
    train_loss: float             # mean cross-entropy over the epoch's training crops
    train_accuracy: float         # accuracy on those crops, as seen during the epoch
    val_loss: float | None        # negative log-likelihood of the validation samples (whole samples)
    val_accuracy: float | None
    best: bool                    # best epoch so far (this epoch's weights are the kept ones)
    seconds: float                # wall time of the epoch, validation included
    lr: float

    def as_dict(self) -> dict:
        return asdict(self)


def _train_rows(lengths: np.ndarray, offsets: np.ndarray, crop: int, max_stride: int, subset: bool,
                rng: np.random.Generator) -> list[np.ndarray]:
    """Frame rows of each sample's training crop for one epoch."""
    rows = []
    for T, lo in zip(lengths.tolist(), offsets[:-1].tolist()):
        if subset:
            if T <= crop:
                r = np.arange(T)
            else:
                r = np.sort(rng.choice(T, crop, replace=False))
        else:
            s = int(rng.integers(1, max_stride + 1)) if max_stride > 1 else 1
            s = max(1, min(s, T // max(1, min(crop, T))))       # keep a full crop when the stride allows
            n = min(crop, (T - 1) // s + 1)
            start = int(rng.integers(0, T - (n - 1) * s))
            r = start + s * np.arange(n)
        rows.append(lo + r)
    return rows


def _pad_rows(rows: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.array([len(r) for r in rows], dtype=np.int64)
    L = int(lengths.max())
    idx = np.empty((len(rows), L), dtype=np.int64)
    for b, r in enumerate(rows):
        idx[b, :len(r)] = r
        idx[b, len(r):] = r[0]              # padding repeats a real row; it is masked out
    return idx, lengths


class _Gather:
    """Batches of frames ``(B, L, D)`` float32 on the device, from rows of the frame array: indexed
    in RAM (on a GPU the whole array goes over once, not every epoch, when it fits there), or read
    from the cache batch by batch for :class:`StoredSequences`."""

    def __init__(self, seqs: Sequences | StoredSequences, device: torch.device):
        self.device, self.seqs = device, seqs
        self.data = None
        if seqs.in_memory:
            data = torch.from_numpy(seqs.data)
            # on the GPU when it fits in a third of the free memory there (the model and the
            # batches need the rest); else each batch goes over: the same numbers, more transfers
            fits = device.type == "cuda" and data.nbytes < torch.cuda.mem_get_info(device)[0] / 3
            self.data = data.to(device) if fits else data

    def __call__(self, idx: np.ndarray) -> torch.Tensor:
        if self.data is None:
            return torch.from_numpy(self.seqs.rows(idx)).to(self.device, torch.float32, non_blocking=True)
        t = torch.from_numpy(idx).to(self.data.device)
        x = self.data[t.reshape(-1)].reshape(*idx.shape, -1)
        return x.to(self.device, torch.float32, non_blocking=True)

    def block(self, lo: int, hi: int) -> torch.Tensor:
        """Frame rows ``[lo, hi)`` as float32 on the device."""
        x = torch.from_numpy(self.seqs.block(lo, hi)) if self.data is None else self.data[lo:hi]
        return x.to(self.device, torch.float32, non_blocking=True)


def eval_frames(dim: int) -> int:
    """Padded frames per evaluation batch: at most EVAL_FRAMES, and about EVAL_BYTES of float32
    input, so wide features (spatial maps) do not take more memory than narrow ones."""
    return max(64, min(EVAL_FRAMES, EVAL_BYTES // (4 * max(1, dim))))


# ----------------------------------------------------------------------------- the head base

class TorchHead(TemporalHead):
    """A head whose model is a torch module trained by the shared loop.

    Subclasses set ``name``/``aggregation``, list all their parameters in ``__init__`` (the
    training ones below included, with the head's own defaults), and define ``_build_module()``
    returning a module ``m(x, lengths)``: ``x`` (B, L, D) float, ``lengths`` (B,) int64 on the CPU,
    returning logits ``(B, C)`` or, for frame-level heads (``frame_level = True``), ``(B, L, C)``.
    The module standardises its input with a :class:`Standardize` (or :class:`InputLinear`) layer;
    ``fit`` sets its statistics from the training frames, and checkpoints keep them.

    Training parameters every torch head has:
        epochs: most epochs (early stopping on validation may end sooner); exactly this many when
            no validation samples are given. Unset (None): automatic, see :meth:`schedule`.
        patience: epochs without clear improvement on validation before stopping (None: automatic).
        batch_size, lr, weight_decay: minibatch size, AdamW learning rate and weight decay.
        crop_frames: frames per training crop (consecutive; random frames for frame-level heads).
        max_stride: largest random stride of a training crop (1 = none).
        device: auto, cpu or cuda. precision: auto, fp32, bf16 or fp16 (GPU only; CPU is fp32).
        random_state: seed of everything random in fit (same seed -> same model on the same CPU, whatever
            its load).
    """

    frame_level: ClassVar[bool] = False
    #: reads spatial map streams (``rgb_map``...) instead of vector streams (see :func:`temporal.fusion.streams_for_head`)
    takes_maps: ClassVar[bool] = False
    #: optimiser steps that automatic ``epochs`` aim at (see :meth:`schedule`)
    auto_steps: ClassVar[int] = 400
    _fitted_attrs = ("classes_", "n_features_in_", "best_epoch_", "n_epochs_", "max_epochs_", "patience_",
                     "stopped_early_", "history_", "fit_seconds_", "n_threads_")

    def schedule(self, n_train: int) -> tuple[int, int]:
        """``(most epochs, patience)`` for ``n_train`` training samples.

        Unset ``epochs`` gives about ``auto_steps`` optimiser steps, within 10..200 epochs: a
        small dataset gets more epochs (the 90-video demo: 3 steps an epoch -> 133 epochs),
        a large one fewer (KTH, 765 training subsequences at batch 32: 24 steps -> 17 epochs), so
        a fit costs about the same on both. Unset ``patience`` is a quarter of the epochs (at least 4).
        """
        steps_per_epoch = max(1, math.ceil(n_train / self.batch_size))
        epochs = self.epochs
        if epochs is None:
            epochs = int(np.clip(round(self.auto_steps / steps_per_epoch), 10, 200))
        patience = self.patience if self.patience is not None else max(4, round(epochs / 4))
        return int(epochs), int(patience)

    @abstractmethod
    def _build_module(self) -> nn.Module:
        """A fresh module for ``self.num_features`` inputs and ``self.num_classes`` outputs."""

    def _validate_params(self) -> None:
        """Raise InvalidOptionError for out-of-range parameters (called at the start of fit)."""
        for key in ("epochs", "patience"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, (int, np.integer)) or value < 1):
                raise InvalidOptionError(f"{key} must be an integer >= 1 (or unset for automatic), got {value!r}")
        checks = [("batch_size", self.batch_size, 1),
                  ("crop_frames", self.crop_frames, 1), ("max_stride", self.max_stride, 1),
                  ("num_features", self.num_features, 1), ("num_classes", self.num_classes, 2)]
        for key, value, low in checks:
            if not isinstance(value, (int, np.integer)) or value < low:
                raise InvalidOptionError(f"{key} must be an integer >= {low}, got {value!r}")
        if not self.lr > 0:
            raise InvalidOptionError(f"lr must be > 0, got {self.lr!r}")
        if not self.weight_decay >= 0:
            raise InvalidOptionError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        resolve_precision(self.precision, resolve_device(self.device), cpu_half=False)

    # -- fit -------------------------------------------------------------------------------------
    def fit(self, X, y, *, X_val=None, y_val=None, class_names: Sequence[str] | None = None,
            on_epoch: Callable[[EpochInfo], None] | None = None, phase: str = "select",
            resume: dict | None = None) -> "TorchHead":
        """Train; see the module docstring for crops, early stopping and determinism.

        Args:
            X, y: training samples (list of (T, D) arrays, or Sequences) and label indices.
            X_val, y_val: validation samples for model selection (optional).
            class_names: names of the ``num_classes`` classes (default "0", "1", ...).
            on_epoch: called with an :class:`EpochInfo` after every epoch; at that moment the
                head's module holds that epoch's weights (a run saves ``last.pt`` then).
            phase: label of the epochs in ``history_`` ("select", or "refit" for a refit run).
            resume: what :meth:`training_state` returned after an epoch of an interrupted fit
                with the same parameters and data: training goes on after that epoch, and ends
                as the uninterrupted fit would have, to the bit.
        """
        self._validate_params()
        started = time.perf_counter()
        train = as_sequences(X)
        y = np.asarray(y, dtype=np.int64)
        if len(y) != len(train):
            raise InvalidOptionError(f"{len(train)} samples but {len(y)} labels")
        if train.dim != self.num_features:
            raise InvalidOptionError(f"samples have {train.dim} features, the head was built for {self.num_features}")
        if y.min() < 0 or y.max() >= self.num_classes:
            raise InvalidOptionError(f"labels must lie in 0..{self.num_classes - 1}, got {y.min()}..{y.max()}")
        val = as_sequences(X_val) if X_val is not None and len(X_val) else None
        y_val = np.asarray(y_val, dtype=np.int64) if val is not None else None
        names = [str(c) for c in (class_names if class_names is not None else range(self.num_classes))]
        if len(names) != self.num_classes:
            raise InvalidOptionError(f"{len(names)} class names for a head of {self.num_classes} classes")

        device = resolve_device(self.device)
        precision = resolve_precision(self.precision, device, cpu_half=False)
        self.classes_ = np.asarray(names)
        self.n_features_in_ = train.dim
        self.history_ = []
        rng = np.random.default_rng(self.random_state)
        fork_devices = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=fork_devices):
            torch.manual_seed(int(self.random_state))
            module = self._build_module()
            mean, std = feature_stats(train)
            for m in module.modules():
                if isinstance(m, Standardize):
                    m.set_stats(mean, std)
            if resume is not None:
                module.load_state_dict(resume["module"])
                rng.bit_generator.state = resume["numpy_rng"]
                torch.set_rng_state(resume["torch_rng"])
                if device.type == "cuda" and resume.get("cuda_rng") is not None:
                    torch.cuda.set_rng_state(resume["cuda_rng"], device)
            self.module_ = module.to(device)
            if device.type == "cpu":
                keep_freed_memory()
            with fixed_cpu_threads(enabled=device.type == "cpu") as threads:  # one count throughout: see runtime
                self.n_threads_ = threads
                self._train_loop(train, y, val, y_val, device, precision, rng, on_epoch, phase, resume)
        self.module_.cpu().eval()
        self.__dict__.pop("_training_state", None)
        self.fit_seconds_ = time.perf_counter() - started + (resume["fit_seconds"] if resume else 0.0)
        return self

    def training_state(self) -> dict:
        """Everything an interrupted fit needs to go on, as of the epoch just finished.

        Only valid inside an ``on_epoch`` callback (a run writes it into ``last.pt`` there): the
        weights, optimiser moments, both random generators, early-stopping state and history.
        """
        if getattr(self, "_training_state", None) is None:
            raise RuntimeError("training_state() is only available inside an on_epoch callback of fit()")
        return self._training_state()

    def _train_loop(self, train: Sequences, y: np.ndarray, val: Sequences | None, y_val: np.ndarray | None,
                    device: torch.device, precision: str, rng: np.random.Generator,
                    on_epoch: Callable | None, phase: str, resume: dict | None) -> None:
        module = self.module_
        opt = AdamW(module.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
        gather = _Gather(train, device)
        val_gather = _Gather(val, device) if val is not None else None
        y_t = torch.from_numpy(y)
        lengths, offsets = train.lengths, train.offsets
        best_key, best_state, since_best = None, None, 0
        max_epochs, patience = self.schedule(len(train))
        self.max_epochs_, self.patience_ = max_epochs, patience
        self.best_epoch_, self.stopped_early_ = max_epochs, False
        first, started = 1, time.perf_counter()
        if resume is not None:
            opt.load_state_dict(resume["optimizer"])
            if scaler is not None and resume.get("scaler"):
                scaler.load_state_dict(resume["scaler"])
            best_key = None if resume["best_key"] is None else tuple(resume["best_key"])
            best_state, since_best = resume["best_state"], int(resume["since_best"])
            self.best_epoch_, self.stopped_early_ = int(resume["best_epoch"]), bool(resume["stopped_early"])
            self.history_ = [dict(row) for row in resume["history"]]
            self.n_epochs_ = int(resume["epoch"])
            first = max_epochs + 1 if resume["done"] else self.n_epochs_ + 1

        def state(epoch: int, done: bool) -> dict:
            # built only when asked (a run asks once an epoch, for last.pt)
            cpu = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
            return {"epoch": epoch, "done": done, "phase": phase, "module": cpu, "optimizer": opt.state_dict(),
                    "scaler": scaler.state_dict() if scaler is not None else None,
                    "numpy_rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                    "best_key": None if best_key is None else list(best_key),
                    "best_state": None if best_state is None else {k: v.detach().cpu().clone()
                                                                   for k, v in best_state.items()},
                    "since_best": since_best, "best_epoch": self.best_epoch_, "stopped_early": self.stopped_early_,
                    "history": [dict(row) for row in self.history_], "max_epochs": max_epochs,
                    "fit_seconds": (resume["fit_seconds"] if resume else 0.0) + time.perf_counter() - started}

        for epoch in range(first, max_epochs + 1):
            t0 = time.perf_counter()
            module.train()
            rows = _train_rows(lengths, offsets, self.crop_frames, self.max_stride, self.frame_level, rng)
            crop_len = np.array([len(r) for r in rows])
            order = np.lexsort((rng.random(len(rows)), crop_len))      # by length, random among equals
            batches = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
            rng.shuffle(batches)
            loss_sum, correct, seen = 0.0, 0, 0
            for b in batches:
                idx, blen = _pad_rows([rows[i] for i in b])
                x = gather(idx)
                target = y_t[b].to(device)
                blen_t = torch.from_numpy(blen)
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    logits = module(x, blen_t)
                    loss, proba = self._loss(logits.float(), target, blen_t)
                opt.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.unscale_(opt)
                    _clip_grad_norm(opt.param_groups[0]["params"], 5.0)
                    scaler.step(opt)
                    scaler.update()
                else:
                    loss.backward()
                    _clip_grad_norm(opt.param_groups[0]["params"], 5.0)
                    opt.step()
                loss_sum += float(loss.detach()) * len(b)
                correct += int((proba.argmax(1) == target).sum())
                seen += len(b)
            val_loss = val_acc = None
            if val is not None:
                scores = self._predict_sequences(val, val_gather, device, amp_dtype)
                p = scores["probability"]
                val_loss = float(-np.mean(np.log(np.clip(p[np.arange(len(y_val)), y_val], 1e-12, None))))
                val_acc = float(np.mean(p.argmax(1) == y_val))
                key = (val_acc, -val_loss)
                improved = best_key is None or key > best_key
                clear = best_key is None or val_acc > best_key[0] or (val_acc == best_key[0]
                                                                      and val_loss < -best_key[1] * 0.99)
                if improved:
                    best_key, self.best_epoch_ = key, epoch
                    best_state = copy.deepcopy(module.state_dict())
                since_best = 0 if clear else since_best + 1
            else:
                improved = True
                self.best_epoch_ = epoch
            info = EpochInfo(phase=phase, epoch=epoch, max_epochs=max_epochs, train_loss=loss_sum / seen,
                             train_accuracy=correct / seen, val_loss=val_loss, val_accuracy=val_acc, best=improved,
                             seconds=time.perf_counter() - t0, lr=self.lr)
            self.history_.append(info.as_dict())
            self.n_epochs_ = epoch
            stop = val is not None and since_best >= patience
            self.stopped_early_ = stop and epoch < max_epochs
            if on_epoch is not None:
                module.eval()
                self._training_state = lambda: state(epoch, stop or epoch == max_epochs)  # noqa: B023
                on_epoch(info)
            if stop:
                break
        if best_state is not None:
            module.load_state_dict(best_state)

    def _loss(self, logits: torch.Tensor, target: torch.Tensor, lengths: torch.Tensor):
        """Training loss and per-sample probabilities (for the running accuracy)."""
        if not self.frame_level:
            return F.cross_entropy(logits, target), logits.detach().softmax(-1)
        B, L, C = logits.shape
        mask = torch.arange(L, device=logits.device)[None, :] < lengths.to(logits.device)[:, None]
        per_frame = F.cross_entropy(logits.reshape(B * L, C), target.repeat_interleave(L), reduction="none")
        loss = (per_frame.reshape(B, L) * mask).sum() / mask.sum()
        return loss, masked_mean(logits.detach().softmax(-1), lengths)

    # -- prediction --------------------------------------------------------------------------------
    @torch.no_grad()
    def _predict_sequences(self, seqs: Sequences, gather: _Gather, device: torch.device,
                           amp_dtype: torch.dtype | None) -> dict[str, np.ndarray]:
        """Scores of whole samples: every frame is seen; batches hold at most EVAL_FRAMES padded frames."""
        module = self.module_
        module.eval()
        if self.frame_level:
            return self._predict_frames(seqs, gather, device, amp_dtype)
        lengths = seqs.lengths
        order = np.argsort(-lengths, kind="stable")
        proba = np.zeros((len(seqs), self.num_classes), np.float32)
        i = 0
        while i < len(order):
            L = int(lengths[order[i]])
            n = max(1, min(EVAL_MAX_BATCH, eval_frames(seqs.dim) // L))
            b = order[i:i + n]
            idx, blen = _pad_rows([np.arange(seqs.offsets[j], seqs.offsets[j + 1]) for j in b])
            blen_t = torch.from_numpy(blen)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits = module(gather(idx), blen_t).float()
            proba[b] = logits.softmax(-1).cpu().numpy()
            i += n
        proba /= proba.sum(1, keepdims=True)
        return {"probability": proba}

    @torch.no_grad()
    def _predict_frames(self, seqs: Sequences, gather: _Gather, device: torch.device,
                        amp_dtype: torch.dtype | None) -> dict[str, np.ndarray]:
        """Frame-level heads: classify all frames in flat chunks (no padding), then average per sample."""
        n_frames, step = seqs.n_frames, eval_frames(seqs.dim)
        owner = torch.from_numpy(np.repeat(np.arange(len(seqs)), seqs.lengths)).to(device)
        proba = torch.zeros((len(seqs), self.num_classes), device=device)
        votes = torch.zeros_like(proba)
        for lo in range(0, n_frames, step):
            hi = min(n_frames, lo + step)
            x = gather.block(lo, hi)[None]
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits = self.module_(x, torch.tensor([hi - lo]))[0].float()
            proba.index_add_(0, owner[lo:hi], logits.softmax(-1))
            votes.index_add_(0, owner[lo:hi], F.one_hot(logits.argmax(-1), self.num_classes).float())
        lengths = torch.from_numpy(seqs.lengths).to(device, torch.float32)[:, None]
        proba, votes = (proba / lengths).cpu().numpy(), (votes / lengths).cpu().numpy()
        proba /= proba.sum(1, keepdims=True)
        return {"probability": proba, "votes": votes}

    def _scores(self, X) -> dict[str, np.ndarray]:
        self._check_is_fitted()
        seqs = as_sequences(X)
        if seqs.dim != self.n_features_in_:
            raise InvalidOptionError(f"samples have {seqs.dim} features; this head was fitted on {self.n_features_in_}")
        device = resolve_device(self.device)
        precision = resolve_precision(self.precision, device, cpu_half=False)
        amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        self.module_.to(device)
        try:
            # the count training ran on: a packed bidirectional LSTM's outputs depend on it
            with fixed_cpu_threads(enabled=device.type == "cpu"):
                return self._predict_sequences(seqs, _Gather(seqs, device), device, amp_dtype)
        finally:
            self.module_.cpu()

    def predict_proba(self, X) -> np.ndarray:
        return self._scores(X)["probability"]

    # -- checkpoint state --------------------------------------------------------------------------
    def _get_state(self) -> dict:
        return {k: v.detach().cpu().clone() for k, v in self.module_.state_dict().items()}

    def _set_state(self, state: dict) -> None:
        module = self._build_module()
        module.load_state_dict(state)
        self.module_ = module.eval()

    def _check_is_fitted(self) -> None:
        super()._check_is_fitted()
        if not hasattr(self, "module_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit() or load a checkpoint")
