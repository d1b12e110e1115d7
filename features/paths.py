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


__all__ = ["HOME_ENV", "default_cache_dir", "harx_home"]
