"""The feature cache format, schema version 2: the contract between stage one and stage two.

One HDF5 file holds every per-frame feature of one dataset, backbone and sampling choice, in a
ragged layout that scales to millions of frames: all frames of all samples are rows of one frame
index, each sample names its rows, and each named **stream** (``rgb``: the frames themselves;
``motion``: difference images of neighbouring frames) holds one array with a row for every frame
row. Plain h5py reads it without harx::

    import h5py, json
    with h5py.File("kth-tf_efficientnet_lite0-every1.h5", "r") as f:
        names = json.loads(f.attrs["class_names"])
        streams = json.loads(f.attrs["streams"])          # e.g. ["rgb", "motion"]
        s = f["samples"]
        i = 0                                             # the first sample
        rows = slice(s["row_start"][i], s["row_stop"][i])
        rgb = f["streams/rgb"][rows]                      # (frames, 1280) float16
        motion = f["streams/motion"][rows]                # the same frames' motion features
        label = s["label"][i].decode()                    # == names[s["label_index"][i]]
        frames = f["frame_index"][rows]                   # source frame number of each row

Datasets
    ``streams/<name>`` (F, *feature_shape) float16 (``attrs["dtype"]``): stream ``<name>``'s
                     features of each frame row, all samples concatenated in sample order; every
                     stream has all F rows. Chunked along F. Its attributes: ``input`` (``rgb`` or
                     ``motion``), ``spec`` (JSON: the stream's settings, e.g. ``{"input":
                     "motion", "gap": 2, "amp": 1.0}``; a map stream adds ``"map": {"layer":
                     "stage", "size": 4}``), ``feature_shape`` (JSON list; ``[D]`` for a pooled
                     vector, ``[C, S, S]`` for the spatial maps of streams ``rgb_map`` and
                     ``motion_map``), ``description``, ``fingerprint``
                     (hash of the cache's ``settings_fingerprint`` and ``spec``).
    ``frame_index``  (F,) int32: 0-based frame number in the source video of each row.
    ``samples/*``    one 1-D column per field, length N (one entry per sample, in dataset order):
        ``sample_id`` str (unique), ``video_id`` str, ``path`` str (relative to ``attrs["root"]``
        when under it, else absolute), ``label`` str, ``label_index`` int16 (into
        ``class_names``), ``split`` str (train|val|test), ``group`` str (person/actor; "" if
        none), ``scenario`` str ("" if none), ``row_start``/``row_stop`` int64 (rows
        ``[row_start, row_stop)`` of every stream), ``range_start``/``range_stop`` int64 (the
        source frame range that was sampled, 0-based end-exclusive, after clamping to the frames
        that decode), ``annotated_start``/``annotated_stop`` int64 (the range as annotated, -1 for
        a whole video), ``fps`` float32, ``note`` str (why a range was clamped, else "");
        ``fold_<name>`` str, one column per official fold of a dataset that has several
        (``attrs["folds"]``, e.g. UCF101's ``split1``-``split3``): the sample's part in that fold
        (train|val|test, "" when the fold does not use it). ``split`` is then the first fold's.
    ``failures/*``   columns ``sample_id``, ``path``, ``reason`` (str), one entry per sample that
                     could not be embedded (corrupt, truncated to nothing, decoder hang).

File attributes (JSON strings where marked)
    ``format`` = "harx-features", ``schema_version`` = 2, ``complete`` (bool: False only in
    in-progress part files), ``streams`` (JSON list of stream names, in file order), ``folds``
    (JSON list of fold names; absent or empty: one split, the ``split`` column),
    ``dataset``, ``root``, ``unit`` (video|subsequence),
    ``split_protocol``, ``class_names`` (JSON list, label-index order), ``dataset_options`` (JSON),
    ``missing`` (JSON list of annotated videos absent from the folder), ``backbone`` (timm name,
    shared by every stream), ``weights`` (package|hub|none|<path>), ``weights_sha256``,
    ``embed_dim`` (the backbone's feature width), ``dtype``,
    ``preprocess`` (JSON: input size, resize, crop, interpolation, mean, std), ``sampling``
    (JSON), ``sampling_description``, ``precision``, ``device``, ``inference`` (memory format and
    BatchNorm folding, descriptive), ``settings_fingerprint`` (hash of everything shared by the
    streams that changes the numbers), ``request_key`` (hash of the options and host
    that produced the model-made settings, so a rerun is confirmed without a model; see
    ``extract.reuse``; absent in caches of older harx), ``versions`` (JSON: harx, torch, timm, decord,
    h5py, numpy), ``stage_one_cost`` (JSON: per image stream, the model time per frame measured
    while embedding it, decoding excluded, and the device; see ``extract.cost``), ``created_utc``,
    ``n_samples``, ``n_frames``, ``n_failed``.

Schema 1 (harx 0.2 and earlier) had one stream, as the dataset ``embeddings`` (F, D), and no
``streams`` attribute; harx reads it as a cache whose one stream is ``rgb``, and a stream added
to it (``harx extract --streams motion``) rewrites it as schema 2.

All strings are UTF-8. Frame ranges are 0-based and end-exclusive everywhere.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import h5py
import numpy as np

FORMAT = "harx-features"
SCHEMA_VERSION = 2
READABLE_SCHEMAS = (1, 2)
V1_EMBEDDINGS = "embeddings"   # schema 1's one stream, read as "rgb"

STR_COLUMNS = ("sample_id", "video_id", "path", "label", "split", "group", "scenario", "note")
INT_COLUMNS = {
    "label_index": np.int16,
    "row_start": np.int64,
    "row_stop": np.int64,
    "range_start": np.int64,
    "range_stop": np.int64,
    "annotated_start": np.int64,
    "annotated_stop": np.int64,
}
FLOAT_COLUMNS = {"fps": np.float32}
FAILURE_COLUMNS = ("sample_id", "path", "reason")

# Attributes whose values decide the numbers in the file: a cache is reused or resumed only
# when all of them match.
SETTINGS_KEYS = (
    "dataset", "root", "unit", "dataset_options", "class_names", "backbone", "weights",
    "weights_sha256", "embed_dim", "dtype", "preprocess", "sampling", "precision",
)
JSON_ATTRS = ("class_names", "dataset_options", "missing", "preprocess", "sampling", "versions", "streams",
              "spec", "feature_shape", "folds", "stage_one_cost")

STR_DTYPE = h5py.string_dtype("utf-8")


def chunk_rows(embed_dim: int, itemsize: int = 2, target: int = 512 * 1024) -> int:
    """Rows per HDF5 chunk of ``target`` bytes (512 KiB: inside h5py's advice of 10 KiB to 1 MiB)."""
    return max(1, target // (embed_dim * itemsize))


def settings_fingerprint(settings: dict) -> str:
    """A short stable hash of the settings that decide the embeddings."""
    canon = json.dumps({k: settings.get(k) for k in SETTINGS_KEYS}, sort_keys=True, default=str)
    return hashlib.sha256(canon.encode()).hexdigest()[:16]


def encode_attr(key: str, value):
    """Python value -> HDF5 attribute (JSON for nested values)."""
    if key in JSON_ATTRS:
        return json.dumps(value)
    if value is None:
        return ""
    return value


def decode_attr(key: str, value):
    """HDF5 attribute -> Python value."""
    if isinstance(value, bytes):
        value = value.decode()
    if key in JSON_ATTRS and isinstance(value, str):
        return json.loads(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def fold_column(name: str) -> str:
    """The sample column holding each sample's part in fold ``name``."""
    return f"fold_{name}"


def stream_path(name: str) -> str:
    """The HDF5 path of stream ``name``'s dataset."""
    return f"streams/{name}"


def stream_fingerprint(settings_fp: str, spec: dict) -> str:
    """A short hash of a stream: the shared settings plus the stream's own."""
    canon = json.dumps({"settings": settings_fp, "spec": spec}, sort_keys=True, default=str)
    return hashlib.sha256(canon.encode()).hexdigest()[:16]


#: A stream of spatial maps is named after its image stream plus this (``rgb_map``: the frames'
#: maps, shape ``(channels, size, size)`` per frame); stage two's map heads read these, the others
#: the vector streams.
MAP_SUFFIX = "_map"


def is_map_stream(name: str) -> bool:
    """Whether stream ``name`` holds spatial maps (``rgb_map``, ``motion_map``)."""
    return name.endswith(MAP_SUFFIX)


#: The stream a cache of schema 1 holds, and what a stream request without names means.
RGB_SPEC = {"input": "rgb"}


@dataclass(frozen=True)
class StreamInfo:
    """One stream of a cache: its name, the settings that decide its numbers (``spec``), a
    sentence for people, and the shape of one frame's features (``()``: the backbone's
    ``embed_dim`` vector, filled in by the writer)."""

    name: str
    spec: dict = field(default_factory=lambda: dict(RGB_SPEC))
    description: str = ""
    feature_shape: tuple = ()

    @property
    def input(self) -> str:
        return str(self.spec.get("input", "rgb"))


def fill_missing(spec: dict, block: np.ndarray) -> np.ndarray:
    """``block`` of a stream as heads read it, changed in place: a stream whose ``spec`` stores a
    missing frame as NaN (``"missing": "nan"``: pose, no person found) gives zeros there (for pose:
    every keypoint unseen, visibility 0, at the body's centre; see ``extract.pose``)."""
    if spec.get("missing") == "nan":
        np.nan_to_num(block, copy=False, nan=0.0)
    return block


def side_by_side(streams: list[StreamInfo], features: dict[str, np.ndarray]) -> np.ndarray:
    """``(frames, D)``: the frames of ``streams`` as a head reads them, missing frames filled
    (:func:`fill_missing`), each stream flattened per frame (maps), in ``streams``' order."""
    return np.concatenate([fill_missing(s.spec, features[s.name]).reshape(len(features[s.name]), -1)
                           for s in streams], axis=1)


def stream_datasets(f: h5py.File, attrs: dict) -> dict[str, str]:
    """Stream name -> HDF5 path of its array, for a file of either readable schema."""
    if attrs.get("schema_version") == 1:
        return {"rgb": V1_EMBEDDINGS}
    names = attrs.get("streams")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"attribute streams is {names!r}, not a list of stream names")
    return {n: stream_path(n) for n in names}


def read_stream_infos(f: h5py.File, attrs: dict) -> list[StreamInfo]:
    """The streams of an open cache or part, in file order (schema 1: one ``rgb`` stream)."""
    infos = []
    for name, where in stream_datasets(f, attrs).items():
        ds = f[where]
        if attrs.get("schema_version") == 1:
            infos.append(StreamInfo(name, dict(RGB_SPEC), "frames (schema 1)", tuple(ds.shape[1:])))
            continue
        spec = decode_attr("spec", ds.attrs.get("spec", "{}"))
        if not isinstance(spec, dict):
            raise ValueError(f"{where} has spec {spec!r}, not a JSON object")
        infos.append(StreamInfo(name, spec, str(decode_attr("description", ds.attrs.get("description", ""))),
                                tuple(ds.shape[1:])))
    return infos
