"""Where harx keeps what it makes: one home folder, overridable by ``HARX_HOME``.

Both stages need the same answer (stage one writes caches, stage two finds them), so it lives in
``features/``, the package both import. Nothing here creates folders: callers do, when they write.
"""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "HARX_HOME"


def harx_home() -> Path:
    """``$HARX_HOME`` if set and non-empty, else ``~/.cache/harx``."""
    value = os.environ.get(HOME_ENV, "").strip()
    if value:
        return Path(value).expanduser()
    return Path.home() / ".cache" / "harx"


def default_cache_dir() -> Path:
    """Feature caches go here unless the user names another folder."""
    return harx_home() / "features"


def latest_cache() -> Path | None:
    """The most recently written finished cache in :func:`default_cache_dir`, or ``None``.

    Stage two uses it when no ``--features`` is given, so that ``harx extract``, ``harx fit``,
    ``harx compare`` work in sequence with no flags; the CLI names the file it picked.
    """
    folder = default_cache_dir()
    caches = [p for p in folder.glob("*.h5") if p.is_file()] if folder.is_dir() else []
    return max(caches, key=lambda p: p.stat().st_mtime) if caches else None


def library_versions() -> dict:
    """Versions of harx and the libraries that decide its numbers, recorded in caches and runs."""
    import platform
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for name in ("harx", "torch", "timm", "decord", "h5py", "numpy", "scikit-learn", "matplotlib"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


__all__ = ["HOME_ENV", "default_cache_dir", "harx_home", "latest_cache", "library_versions"]
