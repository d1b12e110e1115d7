"""Errors of stage two that ``features.errors`` does not already name.

Every one subclasses :class:`~features.errors.HarxError`: the CLI prints ``str(err)`` as one line
and exits 1. Cache clashes use ``features.errors.CacheMismatchError``; bad option values use
``features.errors.InvalidOptionError``; unknown head names use ``UnknownNameError``.
"""

from __future__ import annotations

from harx.features.errors import HarxError

__all__ = ["NotFittedError", "RunFolderError"]


class RunFolderError(HarxError, FileNotFoundError):
    """A run folder that does not exist, or lacks the files of a finished run."""


class NotFittedError(HarxError, ValueError):
    """A head used for prediction or saving before ``fit`` (or ``load``)."""
