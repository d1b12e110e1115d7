"""The feature streams stage one can write: which images of a video the backbone embeds.

``rgb`` embeds the decoded frames; ``motion`` embeds difference images of neighbouring frames
(:mod:`extract.motion`). Both run the same backbone with the same preprocessing over the same
decoded frames, and their rows stand at the same frame indices, so a cache holds them side by
side (:mod:`features.schema`). ``pose`` holds body keypoints of the same frames, from a pose
estimator instead of the backbone (:mod:`extract.pose`; the ``pose`` extra). The names are
fixed, so that scripts can rely on them.

With ``--spatial`` (:class:`MapOptions`) each of them also keeps a **spatial map** per frame, as
one more stream, ``rgb_map`` and ``motion_map``: the backbone's last-stage feature map of the
same forward pass, average-pooled to ``size x size``, shape ``(channels, size, size)``. The
vector streams stay beside them (the vector is the map's global average, nearly free to keep).

Default: both (``DEFAULT_STREAMS``). Measured on real KTH walking and running of persons never
seen (``benchmarks/RESULTS.md``), frozen ImageNet features of the frames carry mostly who and
where; those of difference images carry how the person moves. The second stream costs a second
backbone pass (about 2x the extraction time and the cache size), which buys the accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass

from harx.features.errors import InvalidOptionError
from harx.features.schema import MAP_SUFFIX, StreamInfo, is_map_stream

from .motion import DEFAULT_AMP, DEFAULT_GAP

STREAM_NAMES = ("rgb", "motion", "pose")
#: streams the backbone embeds (the others come from another model: pose)
IMAGE_STREAMS = ("rgb", "motion")
DEFAULT_STREAMS = ("rgb", "motion")
MAP_LAYERS = ("stage", "head")
#: chosen by measurement on real KTH persons never seen, on val (benchmarks/RESULTS.md, "ConvLSTM on
#: spatial maps"): 2x2 scored higher than 1x1 and than 4x4 at a quarter of 4x4's bytes
DEFAULT_MAP_SIZE = 2
DEFAULT_MAP_LAYER = "stage"


@dataclass(frozen=True)
class MapOptions:
    """Which spatial map each image stream keeps (``--spatial``, ``--map-size``, ``--map-layer``).

    ``layer``: ``stage``, the output of the backbone's last stage as timm's ``feature_info`` names
    it (lite0: ``blocks.6``, 320 channels), or ``head``, what the global pool averages
    (``forward_features``; lite0: 1,280 channels after its 1x1 ``conv_head``). For lite0 the head
    map is a pointwise function of the stage map, so ``stage`` carries the same spatial
    information in a quarter of the bytes. ``size``: the map is average-pooled to ``size x
    size`` (adaptive pooling; 7x7 at lite0's 224 input is the map unpooled).
    """

    layer: str = DEFAULT_MAP_LAYER
    size: int = DEFAULT_MAP_SIZE

    def __post_init__(self) -> None:
        if self.layer not in MAP_LAYERS:
            raise InvalidOptionError(f"--map-layer must be one of {', '.join(MAP_LAYERS)}, got {self.layer!r}")
        if not isinstance(self.size, int) or not 1 <= self.size <= 32:
            raise InvalidOptionError(f"--map-size must be a whole number from 1 to 32, got {self.size!r}")

    @property
    def spec(self) -> dict:
        return {"layer": self.layer, "size": self.size}


def image_of(info: StreamInfo) -> str:
    """The image stream whose frames a stream embeds: ``rgb`` for ``rgb`` and ``rgb_map``."""
    return info.name[:-len(MAP_SUFFIX)] if is_map_stream(info.name) else info.name


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


def stream_infos(names: tuple[str, ...], motion: MotionOptions, maps: MapOptions | None = None) -> list[StreamInfo]:
    """The cache's description of each stream: the settings that decide its numbers, in words too;
    with ``maps``, each image stream is followed by its map stream (whose ``feature_shape`` the
    backbone decides: :func:`with_map_shape`)."""
    infos = _image_infos(names, motion)
    if maps is None:
        return infos
    out = []
    for info in infos:
        out.append(info)
        if info.name not in IMAGE_STREAMS:
            continue
        out.append(StreamInfo(info.name + MAP_SUFFIX, dict(info.spec, map=maps.spec),
                              f"{info.description}: the backbone's {maps.layer} feature map, average-pooled to "
                              f"{maps.size}x{maps.size}"))
    return out


def with_map_shape(infos: list[StreamInfo], map_shape: tuple[int, ...] | None) -> list[StreamInfo]:
    """``infos`` with each map stream's ``feature_shape`` set to the backbone's ``map_shape``."""
    from dataclasses import replace

    return [replace(s, feature_shape=tuple(map_shape)) if is_map_stream(s.name) and map_shape else s for s in infos]


def map_options(infos: list[StreamInfo]) -> MapOptions | None:
    """The map settings the streams ask for (one for all), or ``None`` when none is a map."""
    specs = [s.spec["map"] for s in infos if is_map_stream(s.name)]
    if not specs:
        return None
    if any(sp != specs[0] for sp in specs):
        raise InvalidOptionError(f"map streams with different settings {specs}; one cache has one map setting")
    return MapOptions(str(specs[0].get("layer", DEFAULT_MAP_LAYER)), int(specs[0].get("size", DEFAULT_MAP_SIZE)))


def _image_infos(names: tuple[str, ...], motion: MotionOptions) -> list[StreamInfo]:
    from .pose import FEATURE_SHAPE, pose_spec

    infos = []
    for name in names:
        if name == "rgb":
            infos.append(StreamInfo("rgb", {"input": "rgb"}, "the decoded frames"))
        elif name == "pose":
            infos.append(StreamInfo("pose", pose_spec(), "33 body keypoints (x, y, z, visibility) per frame from "
                                    "MediaPipe BlazePose, normalised to the person (origin: mid-hips, unit: torso "
                                    "length); NaN where no person was found", FEATURE_SHAPE))
        else:
            spec = {"input": "motion", "gap": motion.gap, "amp": float(motion.amp)}
            amp = "" if motion.amp == 1.0 else f"{motion.amp:g} x "
            infos.append(StreamInfo("motion", spec,
                                    f"{amp}|frame[t] - frame[t-{motion.gap}]| per RGB channel, clipped to 0-255 "
                                    f"(frame[t+{motion.gap}] for the first {motion.gap})"))
    return infos


def decode_images(infos: list[StreamInfo]) -> tuple[tuple[str, str, int, float], ...]:
    """What the decoding workers make for the streams: ``(image name, input, gap, amp)``, once per
    image (``rgb`` and ``rgb_map`` embed the same frames, in one forward pass)."""
    images: dict[str, tuple[str, str, int, float]] = {}
    for s in infos:
        name = image_of(s)
        kind = "rgb" if s.input == "pose" else s.input      # the pose estimator reads the frames
        images.setdefault(name, (name, kind, int(s.spec.get("gap", 0)), float(s.spec.get("amp", 1.0))))
    return tuple(images.values())
