"""Errors a user can fix. The CLI prints ``str(err)`` as one line and exits 1.

They live in ``features/`` because it is the one package both stages import. Each message says
what was received and what to do next; a traceback always means a harx bug, never a user mistake.
"""

from __future__ import annotations


class HarxError(Exception):
    """A problem the user can fix (bad path, wrong option, foreign cache...)."""


class UnknownNameError(HarxError, ValueError):
    """A name that is not in a registry (dataset, backbone, head)."""

    def __init__(self, kind: str, name: str, known: list[str]):
        super().__init__(f"unknown {kind} {name!r}; choose one of: {', '.join(known)}")


class DatasetNotFoundError(HarxError, FileNotFoundError):
    """A dataset root, annotation file or video that is not where the user said."""


class DatasetFormatError(HarxError, ValueError):
    """An annotation or manifest file that cannot be parsed."""


class InvalidOptionError(HarxError, ValueError):
    """An option value out of its range (``--every 0``, ``--device cuda`` without CUDA...)."""


class BackboneError(HarxError, RuntimeError):
    """A backbone or its weights cannot be created or loaded."""


class ForeignCacheError(HarxError, ValueError):
    """A file that is not a harx feature cache, or of another schema version."""


class CorruptCacheError(ForeignCacheError):
    """A harx cache whose file is damaged (truncated, overwritten, missing datasets or attributes)."""


class OutputError(HarxError, OSError):
    """A file or folder harx must write that cannot be written (read-only, not a folder, in the way)."""


class CacheMismatchError(HarxError, ValueError):
    """A cache built with other settings (backbone, classes, sampling) than this run needs."""


class DownloadError(HarxError, RuntimeError):
    """A download that failed or whose checksum does not match."""


class DamagedArchiveError(DownloadError):
    """An archive that cannot be read or unpacked whole (truncated, a CRC that fails): fetching it
    again is the cure, so ``harx download`` deletes it."""
