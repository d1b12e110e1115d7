"""The contract every temporal head keeps, in scikit-learn's manner.

A head turns a *sample* (a ``(T, D)`` array: ``T`` frame embeddings of width ``D``, ``T`` from 1 to
thousands) into class probabilities. It is built by :func:`temporal.create_head` and then::

    head = create_head("lstm", num_features=1280, num_classes=6, hidden_size=128)
    head.fit(X_train, y_train, X_val=X_val, y_val=y_val, class_names=names)   # returns head
    P = head.predict_proba(X_test)          # (N, C), rows sum to 1
    y_hat = head.predict(X_test)            # (N,) label indices into head.classes_
    head.save("best.pt"); head2 = TemporalHead.load("best.pt")

Rules (scikit-learn's): ``__init__`` takes keyword-only parameters and only stores them (validation
waits for ``fit``), so ``get_params()`` is the head's whole configuration; what ``fit`` learns ends in
``_`` (``classes_``, ``n_features_in_``, ...); ``fit`` returns ``self``. ``X`` is a list of ``(T, D)``
arrays (or a :class:`~temporal.sequences.Sequences`); ``y`` holds integer label indices, the cache's
``label_index``; ``classes_`` holds the class names in label-index order.
"""

from __future__ import annotations

import inspect
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from harx.features.errors import CacheMismatchError, HarxError, InvalidOptionError

from .errors import NotFittedError, RunFolderError
from .registry import COMPOSITES, create_head

__all__ = ["TemporalHead", "CHECKPOINT_FORMAT"]

CHECKPOINT_FORMAT = "harx-head"
CHECKPOINT_VERSION = 1


class TemporalHead(ABC):
    """Base class of all heads. Subclasses define ``name``, ``aggregation``, ``__init__``, ``fit``,
    ``predict_proba``, and ``_get_state``/``_set_state`` (what a checkpoint holds besides the
    parameters and the ``_`` attributes listed in ``_fitted_attrs``)."""

    #: registry name (``harx fit NAME``)
    name: ClassVar[str] = ""
    #: how the frames of a sample become one prediction, in words (quoted in every report)
    aggregation: ClassVar[str] = ""
    #: the strategy of the field it stands for, in the words of ``harx compare``'s strategy table
    strategy: ClassVar[str] = ""
    #: fitted attributes that are plain values and go into checkpoints
    _fitted_attrs: ClassVar[tuple[str, ...]] = ("classes_", "n_features_in_")

    # -- parameters (scikit-learn's get_params/set_params) ---------------------------------------
    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        for p in sig.parameters.values():
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                raise TypeError(f"{cls.__name__}.__init__ must list its parameters (no *args/**kwargs)")
        return [p for p in sig.parameters if p != "self"]

    def _keep_params(self, values: dict) -> None:
        """Store every ``__init__`` argument as the attribute of its name, as scikit-learn's
        estimators do (``self._keep_params(locals())`` in ``__init__``): no logic, no validation
        (that happens in ``fit``), so ``get_params`` returns exactly what was given."""
        for name in self._param_names():
            setattr(self, name, values[name])

    def get_params(self) -> dict[str, Any]:
        """The head's parameters, as passed to ``__init__`` (JSON-friendly values)."""
        return {k: getattr(self, k) for k in self._param_names()}

    def set_params(self, **params) -> "TemporalHead":
        names = set(self._param_names())
        for k, v in params.items():
            if k not in names:
                raise InvalidOptionError(f"head {self.name!r} has no option {k!r}; its options: "
                                         f"{', '.join(sorted(names))}")
            setattr(self, k, v)
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.get_params().items())})"

    # -- the estimator API -----------------------------------------------------------------------
    @abstractmethod
    def fit(self, X, y, *, X_val=None, y_val=None, class_names: Sequence[str] | None = None,
            on_epoch: Callable | None = None) -> "TemporalHead":
        """Learn from samples ``X`` with label indices ``y``; ``X_val``/``y_val`` (optional) are
        used for model selection and early stopping, never for gradient steps. Returns ``self``."""

    @abstractmethod
    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities ``(N, C)`` of ``N`` samples; each row sums to 1."""

    def predict(self, X) -> np.ndarray:
        """Label indices ``(N,)`` (into ``classes_``) of the most probable class."""
        return np.argmax(self.predict_proba(X), axis=1)

    def predict_scores(self, X) -> dict[str, np.ndarray]:
        """Every aggregation of frames into a sample score the head reports, ``name -> (N, C)``.

        The first entry is what ``predict_proba`` returns. Heads with more than one way to
        aggregate (``vote``: mean probability and majority vote) add theirs.
        """
        return {"probability": self.predict_proba(X)}

    # -- fitted state ----------------------------------------------------------------------------
    def _check_is_fitted(self) -> None:
        if not hasattr(self, "classes_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit() or load a checkpoint")

    def check_compatible(self, embed_dim: int, class_names: Sequence[str], where: str = "the cache") -> None:
        """Refuse features of another width or class list than the head was trained on.

        Raises:
            CacheMismatchError: with both sides named.
        """
        self._check_is_fitted()
        if int(embed_dim) != int(self.n_features_in_) or list(class_names) != list(self.classes_):
            raise CacheMismatchError(
                f"{where} holds {embed_dim}-d features of classes {list(class_names)}, but this head was "
                f"trained on {self.n_features_in_}-d features of classes {list(self.classes_)}")

    @abstractmethod
    def _get_state(self) -> dict:
        """Tensors/arrays learned by ``fit`` (e.g. a torch ``state_dict``)."""

    @abstractmethod
    def _set_state(self, state: dict) -> None:
        """Restore what ``_get_state`` returned (after the parameters and fitted values are set)."""

    # -- checkpoints -----------------------------------------------------------------------------
    def save(self, path: str | Path, meta: dict | None = None, resume: dict | None = None) -> Path:
        """Write a checkpoint atomically (a temporary file, then ``os.replace``).

        It holds the head name, parameters, fitted values (``classes_``...), learned state, and
        ``meta`` (a JSON-like dict: a run's config, the cache's fingerprint and backbone...);
        ``resume`` (a torch head's ``training_state()``) lets an interrupted fit go on from it.
        Atomic because a run rewrites ``last.pt`` every epoch and Ctrl-C may come at any time.
        """
        import torch

        self._check_is_fitted()
        path = Path(path)
        ckpt = {"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION, **self.export(),
                "meta": _plain(meta or {})}
        if resume is not None:
            ckpt["resume"] = resume
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            torch.save(ckpt, tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return path

    @staticmethod
    def read_checkpoint(path: str | Path) -> dict:
        """The raw checkpoint dict (``head``, ``params``, ``fitted``, ``state``, ``meta``).

        Raises:
            RunFolderError: ``path`` is missing or is not a harx head checkpoint.
        """
        import torch

        path = Path(path)
        if not path.is_file():
            raise RunFolderError(f"checkpoint {path} not found; the run did not finish, fit it again")
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises many types for a damaged or foreign file
            raise RunFolderError(f"{path} is not a readable checkpoint ({type(err).__name__}); "
                                 "fit the run again") from None
        if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
            raise RunFolderError(f"{path} is not a harx head checkpoint; fit the run again")
        return ckpt

    def export(self) -> dict:
        """The head as plain values and tensors: ``head``, ``params``, ``fitted``, ``state`` (what a
        checkpoint holds besides its meta; a late-fusion head nests one per stream)."""
        fitted = {k: _plain(getattr(self, k)) for k in self._fitted_attrs if hasattr(self, k)}
        return {"head": self.name, "params": _plain(self.get_params()), "fitted": fitted, "state": self._get_state()}

    @staticmethod
    def from_export(entry: dict) -> "TemporalHead":
        """The fitted head :meth:`export` described (KeyError, ValueError... when it is damaged)."""
        params = dict(entry["params"])
        if entry["head"] in COMPOSITES:    # a head of heads (late fusion): its own parameters build it
            head = COMPOSITES[entry["head"]](**params)
        else:
            head = create_head(entry["head"], params.pop("num_features"), params.pop("num_classes"), **params)
        n_classes = int(head.num_classes)
        for k, v in entry["fitted"].items():
            setattr(head, k, np.asarray(v) if k == "classes_" else v)
        if len(getattr(head, "classes_", ())) != n_classes:
            raise ValueError(f"{len(getattr(head, 'classes_', ()))} class names for {n_classes} classes")
        head._set_state(entry["state"])
        return head

    @classmethod
    def load(cls, path: str | Path) -> "TemporalHead":
        """A fitted head from a checkpoint written by :meth:`save`; its ``meta`` is in ``checkpoint_meta_``."""
        ckpt = cls.read_checkpoint(path)
        try:
            head = cls.from_export(ckpt)
            head.checkpoint_meta_ = dict(ckpt["meta"])
        except HarxError as err:  # a head name or option this harx does not know
            raise RunFolderError(f"{path}: {err}; fit the run again") from None
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as err:
            # a harx checkpoint with missing entries or tensors of other shapes than its parameters say
            raise RunFolderError(f"{path} is a damaged head checkpoint ({type(err).__name__}: "
                                 f"{' '.join(str(err).split())[:200]}); fit the run again") from None
        return head


def _plain(value):
    """numpy scalars/arrays -> Python values, recursively (checkpoints load with weights_only)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value
