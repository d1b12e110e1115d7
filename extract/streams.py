"""The feature streams stage one can write: which images of a video the backbone embeds.

``rgb`` embeds the decoded frames; ``motion`` embeds difference images of neighbouring frames
(:mod:`extract.motion`). Both run the same backbone with the same preprocessing over the same
decoded frames, and their rows stand at the same frame indices, so a cache holds them side by
side (:mod:`features.schema`). The names are fixed, so that scripts can rely on them.

Default: both (``DEFAULT_STREAMS``). Measured on real KTH walking and running of persons never
seen (``benchmarks/RESULTS.md``), frozen ImageNet features of the frames carry mostly who and
where; those of difference images carry how the person moves. The second stream costs a second
backbone pass (about 2x the extraction time and the cache size), which buys the accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass

from harx.features.errors import InvalidOptionError
from harx.features.schema import StreamInfo

from .motion import DEFAULT_AMP, DEFAULT_GAP

STREAM_NAMES = ("rgb", "motion")
DEFAULT_STREAMS = ("rgb", "motion")


@dataclass(frozen=True)
class MotionOptions:
    """How motion images are made (see :mod:`extract.motion`)."""

    gap: int = DEFAULT_GAP
    amp: float = DEFAULT_AMP

    def __post_init__(self) -> None:
        if not isinstance(self.gap, int) or self.gap < 1:
            raise InvalidOptionError(f"--motion-gap must be a whole number >= 1, got {self.gap}")
        if not self.amp > 0:
            raise InvalidOptionError(f"--motion-amp must be > 0, got {self.amp}")


def parse_streams(streams: str | tuple[str, ...] | list[str] | None) -> tuple[str, ...]:
    """``"rgb,motion"`` (or a sequence of names) -> ``("rgb", "motion")``; None -> the defaults.

    Raises:
        InvalidOptionError: an unknown or repeated name, or none.
    """
    if streams is None:
        return DEFAULT_STREAMS
    names = [n.strip() for n in (streams.split(",") if isinstance(streams, str) else streams)]
    names = [n for n in names if n]
    unknown = [n for n in names if n not in STREAM_NAMES]
    if unknown:
        raise InvalidOptionError(f"unknown stream {unknown[0]!r}; --streams takes {', '.join(STREAM_NAMES)} "
                                 "(comma-separated, e.g. rgb,motion)")
    if not names:
        raise InvalidOptionError(f"--streams names no stream; give some of {', '.join(STREAM_NAMES)}")
    if len(set(names)) != len(names):
        raise InvalidOptionError(f"--streams {','.join(names)} names a stream twice")
    return tuple(n for n in STREAM_NAMES if n in names)   # one order whatever the order given: rgb first


def stream_infos(names: tuple[str, ...], motion: MotionOptions) -> list[StreamInfo]:
    """The cache's description of each stream: the settings that decide its numbers, in words too."""
    infos = []
    for name in names:
        if name == "rgb":
            infos.append(StreamInfo("rgb", {"input": "rgb"}, "the decoded frames"))
        else:
            spec = {"input": "motion", "gap": motion.gap, "amp": float(motion.amp)}
            amp = "" if motion.amp == 1.0 else f"{motion.amp:g} x "
            infos.append(StreamInfo("motion", spec,
                                    f"{amp}|frame[t] - frame[t-{motion.gap}]| per RGB channel, clipped to 0-255 "
                                    f"(frame[t+{motion.gap}] for the first {motion.gap})"))
    return infos


def decode_images(infos: list[StreamInfo]) -> tuple[tuple[str, str, int, float], ...]:
    """What the decoding workers make for each stream: ``(name, input, gap, amp)``."""
    return tuple((s.name, s.input, int(s.spec.get("gap", 0)), float(s.spec.get("amp", 1.0))) for s in infos)
