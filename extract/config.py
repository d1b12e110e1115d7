"""ExtractConfig: every stage-one setting and its default, in one place.

The CLI passes ``None`` for options the user did not give, and :func:`make_config` drops them,
so the defaults here are the only ones (as timm's ``create_model`` does with kwargs).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

from harx.features.paths import default_cache_dir
from harx.features.schema import StreamInfo

from .motion import DEFAULT_AMP, DEFAULT_GAP
from harx.features.errors import InvalidOptionError

from .streams import DEFAULT_MAP_LAYER, DEFAULT_MAP_SIZE, MapOptions, MotionOptions, parse_streams, stream_infos

from .weights import DEFAULT_BACKBONE
from .sampling import Sampling


@dataclass(frozen=True)
class ExtractConfig:
    """Stage one's settings.

    Attributes:
        dataset: registered dataset name (``kth``, ``demo``, ``folder``).
        root: dataset folder (``demo``: optional; rendered under ``$HARX_HOME/demo``).
        out: cache file; default ``$HARX_HOME/features/<dataset>[-<unit>]-<backbone>-<sampling>.h5``.
        dataset_options: adapter options (``unit`` for kth, ``manifest``/``seed`` for folder).
        backbone / weights / device / precision: see :mod:`extract.backbones`.
        input_size: the backbone's square input in pixels (``None``: its pretrained config's).
        every / target_fps / max_frames: frame sampling, see :class:`extract.sampling.Sampling`.
        streams: the feature streams to embed, ``"rgb,motion"`` or a sequence of names (``None``:
            both, :data:`extract.streams.DEFAULT_STREAMS`); streams the cache holds already are kept
            and not recomputed, so ``streams="motion"`` adds motion to an RGB cache.
        motion_gap / motion_amp: how motion images are made (:mod:`extract.motion`).
        spatial / map_size / map_layer: also keep each stream's spatial feature map, pooled to
            ``map_size`` x ``map_size``, from ``map_layer`` (:class:`extract.streams.MapOptions`).
        batch_size: frames per forward pass; ``None`` = 8 on a CPU, 128 on a GPU.
        num_workers: decoding processes; ``None`` = 1 on a CPU (the model needs the cores),
            up to 8 on a GPU (decoding is then the bottleneck).
        decode_timeout_s: a decoder silent this long on one video is killed and the video
            keeps what decoded (decord can hang on over-reported frame counts).
        shard: ``"K/N"``: embed only the K-th of N blocks of the videos, into
            ``OUT.shards/shard-K-of-N.h5`` (:mod:`extract.shards`; ``harx merge`` joins them).
        launcher: read the rank from a launcher's environment (``torchrun``: ``RANK``,
            ``WORLD_SIZE``) and run as that shard, the first rank merging (``harx extract`` sets it;
            a script calling :func:`run_extract` under torchrun decides for itself).
        overwrite: replace an existing cache built with other settings.
        part_seconds: commit finished work at least this often (what a ``kill -9`` can lose).
    """

    dataset: str = "demo"
    root: Path | None = None
    out: Path | None = None
    dataset_options: dict = field(default_factory=dict)
    backbone: str = DEFAULT_BACKBONE
    weights: str = "auto"
    device: str = "auto"
    precision: str = "auto"
    input_size: int | None = None
    every: int = 1
    target_fps: float | None = None
    max_frames: int | None = None
    streams: str | tuple[str, ...] | None = None
    motion_gap: int = DEFAULT_GAP
    motion_amp: float = DEFAULT_AMP
    spatial: bool = False
    map_size: int = DEFAULT_MAP_SIZE
    map_layer: str = DEFAULT_MAP_LAYER
    batch_size: int | None = None
    num_workers: int | None = None
    decode_timeout_s: float = 30.0
    shard: str | None = None
    launcher: bool = False
    overwrite: bool = False
    part_seconds: float = 60.0

    @property
    def sampling(self) -> Sampling:
        return Sampling(every=self.every, target_fps=self.target_fps, max_frames=self.max_frames)

    @property
    def stream_infos(self) -> list[StreamInfo]:
        """The requested streams as the cache describes them (validates the stream options)."""
        if not self.spatial and (self.map_size != DEFAULT_MAP_SIZE or self.map_layer != DEFAULT_MAP_LAYER):
            raise InvalidOptionError("--map-size and --map-layer go with --spatial")
        maps = MapOptions(self.map_layer, self.map_size) if self.spatial else None
        names = parse_streams(self.streams)
        if "pose" in names:
            from .pose import check_pose_extra

            check_pose_extra()
        return stream_infos(names, MotionOptions(self.motion_gap, self.motion_amp), maps)


def make_config(**options) -> ExtractConfig:
    """An ExtractConfig from keyword options; ``None`` values keep the defaults."""
    known = {f.name for f in fields(ExtractConfig)}
    unknown = set(options) - known
    if unknown:
        raise TypeError(f"unknown extract option(s): {', '.join(sorted(unknown))}")
    return ExtractConfig(**{k: v for k, v in options.items() if v is not None})


def default_cache_path(name: str, backbone: str, sampling: Sampling, input_size: int | None = None) -> Path:
    """``<name>-<backbone>[-in<size>]-<sampling>.h5`` in the default cache folder; ``name`` is the
    dataset index's ``cache_name`` (its adapter decides it: ``kth-video``, ``folder-<folder>-<hash>``)."""
    size = f"-in{input_size}" if input_size else ""
    return default_cache_dir() / f"{name}-{backbone}{size}-{sampling.slug}.h5"
