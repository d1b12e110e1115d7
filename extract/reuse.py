"""Answering a rerun of a finished extraction from the cache's attributes, without a model.

A rerun whose cache is complete has nothing to do, yet building the backbone to confirm it took
9 s (timm's import alone is 3 s; BatchNorm folding and oneDNN fusion the rest). The settings
fingerprint that decides whether a cache fits (:mod:`features.schema`) covers values only a
built model knows (``weights_sha256``, ``embed_dim``, ``preprocess``) and the precision ``auto``
resolves to on this host. So each cache also records ``request_key``, a hash of what decides
those values: the backbone name and any ``--input-size``; the weight source and the identity of its file (the weights
package's version, or a checkpoint's path, size and modification time); ``--device`` and
``--precision`` as given; the host when either is ``auto`` (its name and architecture, the GPUs
it shows, the CPU's bf16 flags); the torch and timm versions. When the key matches, the stored
values are those a model built now would give, and the cache is checked without one:

* the dataset's settings (root, classes, options, sampling, backbone name) must equal the
  stored ones; a difference raises the CacheMismatchError of the full check, only sooner;
* every sample of the dataset must be in the cache (embedded or failed), and no interrupted
  run may wait beside it (``PATH.parts``).

Anything else (a cache from an older harx, another host, an upgraded torch) falls back to the
full check, which builds the model: slower, never wrong. Nothing here imports torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from harx.features.errors import CacheMismatchError
from harx.features.schema import SETTINGS_KEYS, StreamInfo, settings_fingerprint
from harx.features.writer import describe_mismatch, read_settings, union_streams

from .datasets import DatasetIndex, get_dataset
from .sampling import Sampling
from .weights import PACKAGE_NAMES, resolve_source

# CPU flags that decide what precision "auto" gives on a CPU (see harx.runtime.cpu_bf16).
_PRECISION_FLAGS = frozenset({"avx512_bf16", "amx_tile", "amx_bf16", "avx512bw", "avx512vl", "avx512dq"})
_GPU_VISIBILITY = ("CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES")
# oneDNN's instruction-set cap also decides what "auto" gives on a CPU (harx.runtime.cpu_bf16).
_ISA_CAPS = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")


@dataclass
class FinishedCache:
    """A complete cache that holds every sample of the dataset, with the settings asked for."""

    path: Path
    attrs: dict                       # its attributes (backbone, weights, precision, device...)
    reused: int                       # samples of the dataset in it, failed ones included
    failed_before: int                # samples of the dataset recorded as failed
    labels_splits: list[tuple[str, str]]  # (label, split) of each sample embedded in it


def index_settings(index: DatasetIndex, sampling: Sampling) -> dict:
    """The cache settings that the dataset and the sampling decide (no model needed)."""
    return {
        "dataset": index.name, "root": str(index.root), "unit": index.unit,
        "dataset_options": {k: str(v) if isinstance(v, Path) else v for k, v in index.options.items()
                            if k in get_dataset(index.name).settings},
        "class_names": list(index.class_names), "split_protocol": index.split_protocol,
        "dtype": "float16", "sampling": json.loads(sampling.to_json()), "sampling_description": sampling.describe(),
        "missing": index.missing, "folds": list(index.folds),
    }


def request_key(backbone: str, weights: str | None, device: str | None, precision: str | None,
                input_size: int | None = None) -> str:
    """A hash of everything that decides the model-made settings of a cache (module docstring).

    Raises:
        BackboneError: ``weights`` names no usable source (the same error building it gives).
    """
    source = resolve_source(backbone, weights)
    if source == "package":
        identity = _version(PACKAGE_NAMES[backbone])
    elif source not in ("hub", "none"):
        stat = Path(source).stat()
        identity = [stat.st_size, stat.st_mtime_ns]
    else:
        identity = None
    device, precision = (device or "auto").lower(), (precision or "auto").lower()
    request = {"backbone": backbone, "weights": source, "weights_identity": identity, "device": device,
               "precision": precision, "torch": _version("torch"), "timm": _version("timm"),
               "host": _host() if "auto" in (device, precision) else None}
    if input_size is not None:   # absent otherwise, so that caches made before the option keep their key
        request["input_size"] = int(input_size)
    return hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()[:16]


def finished_cache(path: Path, index: DatasetIndex, sampling: Sampling, backbone: str,
                   key: str, streams: list[StreamInfo] | None = None) -> FinishedCache | None:
    """The cache at ``path`` if it is complete for this dataset, these settings and ``streams``,
    else ``None`` (no cache, an interrupted run beside it, samples or streams to add, or settings
    only a model can confirm).
    An existing cache is checked whole here, before any model loads, whatever the answer.

    Raises:
        ForeignCacheError: ``path`` is not a harx cache.
        CorruptCacheError: it is one, but damaged (see ``FeatureStore``).
        CacheMismatchError: it was built from other dataset, sampling or backbone settings, or
            holds a stream of a requested name made another way.
    """
    from harx.features.reader import FeatureStore

    path = Path(path)
    if not path.is_file():
        return None
    have = read_settings(path)
    want = dict(index_settings(index, sampling), backbone=backbone)
    if any(_canon(have.get(k)) != _canon(want[k]) for k in SETTINGS_KEYS if k in want):
        raise CacheMismatchError(f"{path} was built with other settings "
                                 f"({describe_mismatch(have, {**have, **want})}); "
                                 "use --out for a new file or --overwrite to replace it")
    with FeatureStore(path) as store:  # the layout every later read relies on
        cached = set(store.column("sample_id")) | {f["sample_id"] for f in store.failures}
        failed = {f["sample_id"] for f in store.failures}
        ids = [s.sample_id for s in index.samples]
        wanted = set(ids)
        labels_splits = [(label, split) for sid, label, split in
                         zip(store.column("sample_id"), store.column("label"), store.column("split")) if sid in wanted]
        held = [store.stream_info(name) for name in store.streams]
    if len(union_streams(path, held, list(streams or []))) > len(held):   # a requested stream to add
        return None
    if path.with_name(path.name + ".parts").exists() or have.get("request_key") != key:
        return None
    if settings_fingerprint({**have, **want}) != have.get("settings_fingerprint"):
        return None
    if not wanted <= cached:
        return None
    return FinishedCache(path=path, attrs=have, reused=len(ids), failed_before=len(wanted & failed),
                         labels_splits=labels_splits)


def _canon(value) -> str:
    """Values compared as the fingerprint sees them (tuples as lists, paths as strings)."""
    return json.dumps(value, sort_keys=True, default=str)


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _host() -> dict:
    """What decides where ``--device auto`` runs and what ``--precision auto`` gives there."""
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    dev = Path("/dev")
    gpus = sorted(p.name for p in dev.glob("nvidia[0-9]*")) + (["kfd"] if (dev / "kfd").exists() else [])
    return {"node": platform.node(), "machine": platform.machine(), "system": platform.system(),
            "cpu_flags": sorted(flags & _PRECISION_FLAGS), "gpus": gpus,
            "visible": {k: os.environ.get(k) for k in _GPU_VISIBILITY + _ISA_CAPS}}


__all__ = ["FinishedCache", "finished_cache", "index_settings", "request_key"]
