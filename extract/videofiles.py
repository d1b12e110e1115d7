"""What counts as a video file, for every part of harx that looks for videos.

Its own small module, not a dataset adapter's constant: the folder adapter (``extract.datasets.folder``)
lists a dataset's videos with it and ``harx predict`` (``temporal.predict``) lists the videos it is
given, and the two must agree, while stage two must not depend on a dataset adapter. It lives in
``extract`` because recognising a video is stage one's business (decoding), which ``predict`` calls
anyway.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["VIDEO_EXTENSIONS", "is_video_file"]

VIDEO_EXTENSIONS = frozenset({
    ".avi", ".mp4", ".mkv", ".mov", ".webm", ".mpg", ".mpeg", ".m4v", ".wmv", ".flv", ".3gp",
    # camcorders (AVCHD), broadcast and stream recordings, DVDs, older web and desktop formats
    ".mts", ".m2ts", ".m2t", ".ts", ".vob", ".mxf", ".ogv", ".asf", ".divx", ".f4v", ".3g2",
})


def is_video_file(path: Path) -> bool:
    """A visible file with a video extension (case-insensitive)."""
    return not path.name.startswith(".") and path.suffix.lower() in VIDEO_EXTENSIONS
