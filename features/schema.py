"""The feature cache format, schema version 1: the contract between stage one and stage two.

One HDF5 file holds every frame embedding of one dataset, backbone and sampling choice, in a
ragged layout that scales to millions of frames: all frames of all samples are rows of a single
2-D array, and each sample names its rows. Plain h5py reads it without harx::

    import h5py, json
    with h5py.File("kth-tf_efficientnet_lite0-every1.h5", "r") as f:
        names = json.loads(f.attrs["class_names"])
        s = f["samples"]
        i = 0                                             # the first sample
        rows = slice(s["row_start"][i], s["row_stop"][i])
        x = f["embeddings"][rows]                         # (frames, embed_dim) float16
        label = s["label"][i].decode()                    # == names[s["label_index"][i]]
        frames = f["frame_index"][rows]                   # source frame number of each row

Datasets
    ``embeddings``   (F, D) float16 (``attrs["dtype"]``): the pooled pre-logits vector of each
                     embedded frame, all samples concatenated in sample order. Chunked along F.
    ``frame_index``  (F,) int32: 0-based frame number in the source video of each row.
    ``samples/*``    one 1-D column per field, length N (one entry per sample, in dataset order):
        ``sample_id`` str (unique), ``video_id`` str, ``path`` str (relative to ``attrs["root"]``
        when under it, else absolute), ``label`` str, ``label_index`` int16 (into
        ``class_names``), ``split`` str (train|val|test), ``group`` str (person/actor; "" if
        none), ``scenario`` str ("" if none), ``row_start``/``row_stop`` int64 (rows
        ``[row_start, row_stop)`` of ``embeddings``), ``range_start``/``range_stop`` int64 (the
        source frame range that was sampled, 0-based end-exclusive, after clamping to the frames
        that decode), ``annotated_start``/``annotated_stop`` int64 (the range as annotated, -1 for
        a whole video), ``fps`` float32, ``note`` str (why a range was clamped, else "").
    ``failures/*``   columns ``sample_id``, ``path``, ``reason`` (str), one entry per sample that
                     could not be embedded (corrupt, truncated to nothing, decoder hang).

File attributes (JSON strings where marked)
    ``format`` = "harx-features", ``schema_version`` = 1, ``complete`` (bool: False only in
    in-progress part files), ``dataset``, ``root``, ``unit`` (video|subsequence),
    ``split_protocol``, ``class_names`` (JSON list, label-index order), ``dataset_options`` (JSON),
    ``missing`` (JSON list of annotated videos absent from the folder), ``backbone`` (timm name),
    ``weights`` (package|hub|none|<path>), ``weights_sha256``, ``embed_dim``, ``dtype``,
    ``preprocess`` (JSON: input size, resize, crop, interpolation, mean, std), ``sampling``
    (JSON), ``sampling_description``, ``precision``, ``device``, ``inference`` (memory format and
    BatchNorm folding, descriptive), ``settings_fingerprint`` (hash
    of everything that changes the numbers), ``request_key`` (hash of the options and host
    that produced the model-made settings, so a rerun is confirmed without a model; see
    ``extract.reuse``; absent in caches of older harx), ``versions`` (JSON: harx, torch, timm, decord,
    h5py, numpy), ``created_utc``, ``n_samples``, ``n_frames``, ``n_failed``.

All strings are UTF-8. Frame ranges are 0-based and end-exclusive everywhere.
"""

from __future__ import annotations

import hashlib
import json

import h5py
import numpy as np

FORMAT = "harx-features"
SCHEMA_VERSION = 1

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
JSON_ATTRS = ("class_names", "dataset_options", "missing", "preprocess", "sampling", "versions")

STR_DTYPE = h5py.string_dtype("utf-8")


def chunk_rows(embed_dim: int, itemsize: int = 2) -> int:
    """Rows per HDF5 chunk: about 512 KiB, inside h5py's advice of 10 KiB to 1 MiB."""
    return max(1, (512 * 1024) // (embed_dim * itemsize))


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
