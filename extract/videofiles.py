"""What counts as a video file, for every part of harx that looks for videos.

Its own small module, not a dataset adapter's constant: the folder adapter (``extract.datasets.folder``)
lists a dataset's videos with it and ``harx predict`` (``temporal.predict``) lists the videos it is
given, and the two must agree, while stage two must not depend on a dataset adapter. It lives in
``extract`` because recognising a video is stage one's business (decoding), which ``predict`` calls
anyway.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["TIMESTAMPED_CONTAINERS", "VIDEO_EXTENSIONS", "is_video_file"]

VIDEO_EXTENSIONS = frozenset({
    ".avi", ".mp4", ".mkv", ".mov", ".webm", ".mpg", ".mpeg", ".m4v", ".wmv", ".flv", ".3gp",
    # camcorders (AVCHD), broadcast and stream recordings, DVDs, older web and desktop formats
    ".mts", ".m2ts", ".m2t", ".ts", ".vob", ".mxf", ".ogv", ".asf", ".divx", ".f4v", ".3g2",
})


#: Containers that store a timestamp per frame and a display matrix per stream (MP4 and its
#: family, Matroska/WebM). Only these are asked for a turn (``extract.orientation``) or a varying
#: frame rate (``extract.timing``): AVI has neither, and decord's timestamps for AVIs with packed
#: B-frames (most of UCF101) are garbage.
TIMESTAMPED_CONTAINERS = frozenset({".mp4", ".mov", ".m4v", ".3gp", ".3g2", ".mkv", ".webm", ".f4v"})


def is_video_file(path: Path) -> bool:
    """A visible file with a video extension (case-insensitive)."""
    return not path.name.startswith(".") and path.suffix.lower() in VIDEO_EXTENSIONS
