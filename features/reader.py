"""Reading a feature cache: what stage two, ``harx predict`` and notebooks use.

``FeatureStore(path)`` validates the file on open (format, schema version) and then reads only
what is asked: the metadata columns are small and loaded once; features are read per sample or
per split with one contiguous read, of one stream or of several side by side (``load(split,
["rgb", "motion"])``: per-frame concatenation). Caches of schema 1 read as one ``rgb`` stream. The HDF5 handle is opened lazily and reopened in a forked
child process, since a handle inherited across ``fork`` gives corrupt reads (h5py).
"""

from __future__ import annotations

import hashlib
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from .errors import CacheMismatchError, DatasetNotFoundError, ForeignCacheError, InvalidOptionError
from .schema import (FAILURE_COLUMNS, FLOAT_COLUMNS, INT_COLUMNS, MAP_SUFFIX, STR_COLUMNS, StreamInfo, fill_missing,
                     fold_column, is_map_stream, read_stream_infos, stream_datasets, stream_fingerprint)
from .writer import H5_READ_ERRORS, corrupt_cache, read_settings

#: rows closer than this share one read in :meth:`FeatureStore.read_rows` (a KTH crop at stride
#: 2 is one read; two crops of one sample far apart are two)
READ_GAP_ROWS = 64
REBUILD_HINT = "rebuild it with harx extract --overwrite (and the options it was made with)"


@dataclass(frozen=True)
class SampleRecord:
    """Metadata of one cached sample (see ``features.schema`` for each field)."""

    index: int
    sample_id: str
    video_id: str
    path: str
    label: str
    label_index: int
    split: str
    group: str
    scenario: str
    row_start: int
    row_stop: int
    range_start: int
    range_stop: int
    annotated_start: int
    annotated_stop: int
    fps: float
    note: str

    @property
    def n_frames(self) -> int:
        return self.row_stop - self.row_start


def _strings(dataset: h5py.Dataset) -> list[str]:
    """A 1-D UTF-8 string dataset as ``str``; ValueError if it holds anything else."""
    if dataset.ndim != 1 or h5py.check_string_dtype(dataset.dtype) is None:
        raise ValueError(f"{dataset.name} is {dataset.shape} {dataset.dtype}, not a column of strings")
    return [v.decode() if isinstance(v, bytes) else str(v) for v in dataset[:]]


class FeatureStore:
    """A finished harx feature cache, opened read-only.

    Raises:
        DatasetNotFoundError: ``path`` does not exist.
        ForeignCacheError: it is not a complete harx cache of this schema.
        CorruptCacheError: it is one, but damaged: a dataset or attribute is missing, of the wrong
            type or shape, or unreadable (also raised later, by a read that meets a damaged block).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if self.path.is_dir():
            raise DatasetNotFoundError(f"{self.path} is a folder; give the .h5 file harx extract wrote")
        if not self.path.is_file():
            raise DatasetNotFoundError(f"feature cache {self.path} not found; run harx extract first")
        self.attrs = read_settings(self.path, hint="give a cache written by harx extract", damaged_hint=REBUILD_HINT)
        if not self.attrs.get("complete"):
            raise ForeignCacheError(f"{self.path} is an unfinished part of a cache; rerun harx extract to finish it")
        self._file: h5py.File | None = None
        self._pid = -1
        with self._reading(), h5py.File(self.path, "r") as f:
            s = f["samples"]
            folds = self.attrs.get("folds") or []
            if not isinstance(folds, list) or not all(isinstance(x, str) and x for x in folds):
                raise ValueError(f"attribute folds is {folds!r}, not a list of fold names")
            text = (*STR_COLUMNS, *(fold_column(x) for x in folds))
            self._columns = {k: (np.array(_strings(s[k]), dtype=object) if k in text else s[k][:])
                             for k in (*text, *INT_COLUMNS, *FLOAT_COLUMNS)}
            self._failures = {k: _strings(f["failures"][k]) for k in FAILURE_COLUMNS}
            self._datasets = stream_datasets(f, self.attrs)
            self._streams = {info.name: info for info in read_stream_infos(f, self.attrs)}
            self._check_layout(f)

    def _check_layout(self, f: h5py.File) -> None:
        """What every later read relies on: the attributes' types, the datasets' dtypes and
        shapes, rows inside ``embeddings``, labels inside ``class_names``."""
        a, c = self.attrs, self._columns
        names = a.get("class_names")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError(f"attribute class_names is {names!r}, not a list of names")
        for key in ("backbone", "settings_fingerprint"):
            if not isinstance(a.get(key), str):
                raise ValueError(f"attribute {key} is {a.get(key)!r}, not a string")
        if not isinstance(a.get("embed_dim"), int) or a["embed_dim"] < 1:
            raise ValueError(f"attribute embed_dim is {a.get('embed_dim')!r}, not a positive integer")
        fidx = f["frame_index"]
        if fidx.ndim != 1 or fidx.dtype.kind not in "iu":
            raise ValueError(f"frame_index is {fidx.shape} {fidx.dtype}, expected (frames,) integers")
        for name, where in self._datasets.items():
            emb = f[where]
            if emb.ndim < 2 or emb.shape[0] != fidx.shape[0] or emb.dtype.kind != "f":
                raise ValueError(f"{where} is {emb.shape} {emb.dtype}, expected ({fidx.shape[0]}, ...) floats")
            if emb.ndim == 2 and emb.shape[1] != a["embed_dim"]:
                raise ValueError(f"{where} is {emb.shape}, expected (frames, {a['embed_dim']})")
        n = len(c["sample_id"])
        for key, column in c.items():
            kind = column.dtype.kind
            if column.ndim != 1 or len(column) != n or (key in INT_COLUMNS and kind not in "iu") \
                    or (key in FLOAT_COLUMNS and kind not in "fiu"):
                raise ValueError(f"samples/{key} is {column.shape} {column.dtype}, expected {n} values")
        if len({len(v) for v in self._failures.values()}) > 1:
            raise ValueError("the failures columns differ in length")
        start, stop = c["row_start"], c["row_stop"]
        if n and (start.min() < 0 or (stop < start).any() or stop.max() > fidx.shape[0]):
            raise ValueError(f"sample rows outside the cache's {fidx.shape[0]} frame rows")
        if n and (c["label_index"].min() < 0 or c["label_index"].max() >= len(names)):
            raise ValueError(f"label_index outside the {len(names)} classes")

    @contextmanager
    def _reading(self):
        """Turn what h5py raises on a damaged file into one CorruptCacheError naming it."""
        try:
            yield
        except H5_READ_ERRORS as err:
            raise corrupt_cache(self.path, err, REBUILD_HINT) from None

    # -- attributes ------------------------------------------------------------------------------
    @property
    def class_names(self) -> list[str]:
        return list(self.attrs["class_names"])

    @property
    def backbone(self) -> str:
        return self.attrs["backbone"]

    @property
    def embed_dim(self) -> int:
        return int(self.attrs["embed_dim"])

    @property
    def folds(self) -> list[str]:
        """The names of the dataset's official folds (``["split1", "split2", "split3"]``), or
        ``[]`` when it has one split (the ``split`` column)."""
        return list(self.attrs.get("folds") or [])

    def fold_splits(self, fold: str | int | None = None) -> np.ndarray:
        """Each sample's part (train|val|test, "" unused) in ``fold``: a name, a 1-based number, or
        ``None`` for the ``split`` column (the first fold's).

        Raises:
            InvalidOptionError: no such fold, naming the folds there are.
        """
        if fold is None:
            return self._columns["split"]
        names = self.folds
        name = names[int(fold) - 1] if str(fold).isdigit() and 1 <= int(fold) <= len(names) else str(fold)
        if name not in names:
            there = f"its folds: {', '.join(names)} (or 1-{len(names)})" if names else "it has one split"
            raise InvalidOptionError(f"{self.path} has no fold {fold!r}; {there}")
        return self._columns[fold_column(name)]

    def fold_name(self, fold: str | int | None) -> str | None:
        """The name of ``fold`` (a name or 1-based number), ``None`` for the default split."""
        if fold is None:
            return None
        self.fold_splits(fold)
        return self.folds[int(fold) - 1] if str(fold).isdigit() else str(fold)

    @property
    def streams(self) -> list[str]:
        """The names of the feature streams, in file order (``["rgb"]``, ``["rgb", "motion"]``)."""
        return list(self._streams)

    def stream_info(self, name: str) -> StreamInfo:
        self.check_streams([name])
        return self._streams[name]

    def check_streams(self, names, needed_by: str = "") -> list[str]:
        """``names`` as a list, or CacheMismatchError in one line naming the streams it lacks."""
        names = [names] if isinstance(names, str) else list(names)
        lacking = [n for n in names if n not in self._streams]
        if lacking:
            by = f" that {needed_by} needs" if needed_by else ""
            raise CacheMismatchError(
                f"{self.path} has no {' or '.join(lacking)} stream{by} (it holds {', '.join(self._streams)}); add "
                f"it with harx extract --streams {','.join(lacking)} and the options the cache was made with")
        return names

    def feature_dim(self, streams=None) -> int:
        """Width of one frame's features of ``streams`` side by side (default: rgb, else the first)."""
        names = self.check_streams(self._default(streams))
        return int(sum(np.prod(self._streams[n].feature_shape) for n in names))

    @property
    def feature_dtype(self) -> np.dtype:
        """The dtype features are stored in (float16 unless the cache says otherwise)."""
        return np.dtype(self.attrs.get("dtype") or "float16")

    def _default(self, streams):
        """``streams``, or by default ``rgb`` (the frames), else the first stream."""
        if streams is not None:
            return streams
        return "rgb" if "rgb" in self._streams else self.streams[0]

    @property
    def fingerprint(self) -> str:
        """Identifies the numbers in this cache: settings plus the exact sample list (not the
        streams: see :meth:`stream_fingerprint`)."""
        h = hashlib.sha256(self.attrs["settings_fingerprint"].encode())
        for sid in self._columns["sample_id"]:
            h.update(sid.encode() + b"\0")
        return h.hexdigest()[:16]

    def stream_fingerprint(self, streams=None) -> str:
        """Identifies the numbers a run on ``streams`` reads: :attr:`fingerprint` plus each stream's
        settings (so a stream rebuilt another way is another cache, and one added beside it is not)."""
        names = self.check_streams(self._default(streams))
        h = hashlib.sha256(self.fingerprint.encode())
        for n in names:
            h.update(f"{n}:{stream_fingerprint(self.attrs['settings_fingerprint'], self._streams[n].spec)}".encode())
        return h.hexdigest()[:16]

    @property
    def extraction(self) -> dict:
        """How the frames were embedded, so that a new video can be embedded the same way
        (``harx predict``): backbone, weights and their SHA-256, preprocessing, sampling, precision,
        and the median duration in seconds of a training sample (the default prediction window)."""
        a = self.attrs
        keys = ("backbone", "weights", "weights_sha256", "embed_dim", "preprocess", "sampling", "precision", "device")
        record = {k: a.get(k) for k in keys}
        record["embed_dim"] = self.embed_dim
        record["streams"] = {name: info.spec for name, info in self._streams.items()}
        c = self._columns
        train = self.indices("train")
        train = train if len(train) else self.indices()
        fps = np.where(c["fps"][train] > 0, c["fps"][train], 25.0)
        seconds = (c["range_stop"][train] - c["range_start"][train]) / fps
        record["sample_seconds"] = round(float(np.median(seconds)), 3) if len(seconds) else None
        return record

    def __len__(self) -> int:
        return len(self._columns["sample_id"])

    def __repr__(self) -> str:
        return (f"FeatureStore({str(self.path)!r}: {len(self)} samples, {self.attrs.get('n_frames')} frames, "
                f"{self.backbone} {self.embed_dim}-d, streams {'+'.join(self.streams)}, "
                f"{len(self.class_names)} classes)")

    @property
    def failures(self) -> list[dict]:
        return [dict(zip(FAILURE_COLUMNS, row)) for row in zip(*(self._failures[k] for k in FAILURE_COLUMNS))]

    # -- samples ---------------------------------------------------------------------------------
    def sample(self, i: int) -> SampleRecord:
        c = self._columns
        return SampleRecord(index=int(i), **{k: (c[k][i] if k in STR_COLUMNS else c[k][i].item())
                                        for k in SampleRecord.__dataclass_fields__ if k != "index"})

    def samples(self, split: str | None = None) -> list[SampleRecord]:
        """Sample records in cache order, optionally of one split (train|val|test)."""
        return [self.sample(i) for i in self.indices(split)]

    def indices(self, split: str | None = None) -> np.ndarray:
        if split is None:
            return np.arange(len(self))
        return np.flatnonzero(self._columns["split"] == split)

    def column(self, name: str) -> np.ndarray:
        """One metadata column for all samples (e.g. ``label_index``, ``split``)."""
        return self._columns[name]

    def _h5(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._file

    def frames(self, i: int, start: int = 0, stop: int | None = None, stream=None) -> np.ndarray:
        """Features of sample ``i``, its frames ``[start, stop)``; time is axis 0. Reads only that
        slice. ``stream``: a name, or several side by side (default: the first stream)."""
        names = self.check_streams(self._default(stream))
        lo, hi = int(self._columns["row_start"][i]), int(self._columns["row_stop"][i])
        end = hi if stop is None else min(hi, lo + stop)
        with self._reading():
            parts = [self._filled(n, self._h5()[self._datasets[n]][lo + start:end]) for n in names]
        if len(parts) == 1:
            return parts[0]
        return np.concatenate([p.reshape(len(p), -1) for p in parts], axis=-1)   # maps: flattened, per frame

    def frame_index(self, i: int) -> np.ndarray:
        lo, hi = int(self._columns["row_start"][i]), int(self._columns["row_stop"][i])
        with self._reading():
            return self._h5()["frame_index"][lo:hi]

    def read_rows(self, rows: np.ndarray, stream=None, gap: int = READ_GAP_ROWS) -> np.ndarray:
        """Features of cache rows ``rows`` (any shape, any order, repeats allowed) ->
        ``(*rows.shape, D)`` in the streams' dtype, streams side by side.

        The distinct rows are read in file order, one slice per run of rows less than ``gap``
        apart (the rows between are read and dropped): a batch of training crops costs about one
        read per crop, each touching one or two chunks, instead of one HDF5 call per row.
        """
        names = self.check_streams(self._default(stream))
        rows = np.asarray(rows, dtype=np.int64)
        wanted, where = np.unique(rows.reshape(-1), return_inverse=True)
        widths = [self.feature_dim(n) for n in names]
        out = np.empty((len(wanted), sum(widths)), dtype=self.feature_dtype)
        cuts = np.concatenate([[0], np.flatnonzero(np.diff(wanted) >= gap) + 1, [len(wanted)]])
        with self._reading():
            datasets = [self._h5()[self._datasets[n]] for n in names]
            for a, b in zip(cuts[:-1], cuts[1:]):
                lo, hi = int(wanted[a]), int(wanted[b - 1]) + 1
                col = 0
                for n, ds, w in zip(names, datasets, widths):
                    block = self._filled(n, ds[lo:hi])
                    out[a:b, col:col + w] = block.reshape(hi - lo, -1)[wanted[a:b] - lo]
                    col += w
        return out[where].reshape(*rows.shape, out.shape[1])

    def read_span_into(self, out: np.ndarray, lo: int, hi: int, stream=None) -> None:
        """Cache rows ``[lo, hi)`` of ``stream`` (streams side by side, maps flattened) into
        ``out`` (``(hi - lo, D)``), without a second copy of the span: one stream straight into
        ``out``, several in pieces of about 32 MiB (what :meth:`StoredSequences.to_memory` uses)."""
        names = self.check_streams(self._default(stream))
        widths = [self.feature_dim(n) for n in names]
        with self._reading():
            datasets = [self._h5()[self._datasets[n]] for n in names]
            if len(names) == 1 and out.flags.c_contiguous and out.dtype == datasets[0].dtype:
                datasets[0].read_direct(out.reshape(hi - lo, *datasets[0].shape[1:]), np.s_[lo:hi])
                self._filled(names[0], out)
                return
            step = max(1, (32 << 20) // (2 * max(widths)))
            for a in range(lo, hi, step):
                b = min(hi, a + step)
                col = 0
                for n, ds, w in zip(names, datasets, widths):
                    out[a - lo:b - lo, col:col + w] = self._filled(n, ds[a:b]).reshape(b - a, -1)
                    col += w

    def load(self, split: str | None = None, stream=None) -> tuple[list[np.ndarray], np.ndarray]:
        """All samples of a split as ``(list of (frames, D) arrays, label indices)``, of ``stream``
        (a name; several names: their features side by side, per frame; default: the first stream).

        Adjacent samples are read as one contiguous run of rows: far fewer HDF5 calls than one
        read per sample, and never more rows than the split holds.
        """
        return self.load_indices(self.indices(split), stream)

    def load_indices(self, idx: np.ndarray, stream=None) -> tuple[list[np.ndarray], np.ndarray]:
        """:meth:`load` of the samples ``idx`` (in that order)."""
        names = self.check_streams(self._default(stream))
        per_stream = [[a.reshape(len(a), -1) for a in self._load_stream(idx, n)] for n in names]
        arrays = per_stream[0] if len(names) == 1 else [np.concatenate(xs, axis=-1) for xs in zip(*per_stream)]
        return arrays, self._columns["label_index"][idx].astype(np.int64)

    def _load_stream(self, idx: np.ndarray, name: str) -> list[np.ndarray]:
        starts, stops = self._columns["row_start"][idx], self._columns["row_stop"][idx]
        with self._reading():
            emb = self._h5()[self._datasets[name]]
        arrays: list[np.ndarray] = []
        run_lo = 0
        for k in range(1, len(idx) + 1):
            if k == len(idx) or starts[k] != stops[k - 1]:
                with self._reading():
                    block = self._filled(name, emb[int(starts[run_lo]):int(stops[k - 1])])
                base = int(starts[run_lo])
                arrays.extend(block[a - base:b - base] for a, b in zip(starts[run_lo:k], stops[run_lo:k]))
                run_lo = k
        return arrays

    def stage_one_ms(self, streams=None) -> float | None:
        """Model milliseconds per frame that stage one spent on ``streams`` together, as the cache
        recorded it (``stage_one_cost``; a map stream costs its image's pass, see
        :mod:`extract.cost`); ``None`` when the cache records none for one of them (older caches)."""
        names = self.check_streams(self._default(streams))
        cost = self.attrs.get("stage_one_cost") or {}
        images = {n[:-len(MAP_SUFFIX)] if is_map_stream(n) else n for n in names}
        if not isinstance(cost, dict) or any(not isinstance(cost.get(i), dict) for i in images):
            return None
        return float(sum(cost[i]["ms_per_frame"] for i in images))

    def _filled(self, name: str, block: np.ndarray) -> np.ndarray:
        """``block`` of stream ``name`` as heads read it (:func:`features.schema.fill_missing`)."""
        return fill_missing(self._streams[name].spec, block)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> "FeatureStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()



    def select(self, streams=None, needed_by: str = "", fold: str | int | None = None) -> "StreamSelection":
        """This cache seen through ``streams`` (a name or names; default: rgb) and ``fold`` (a
        name or 1-based number; default: the ``split`` column); see :class:`StreamSelection`.
        CacheMismatchError in one line when it lacks a stream, InvalidOptionError for no such fold."""
        return StreamSelection(self, self.check_streams(self._default(streams), needed_by), self.fold_name(fold))


class StreamSelection:
    """A cache seen through some of its streams, as stage two trains on it: :meth:`load` and
    :meth:`frames` give each frame's features of those streams side by side, ``embed_dim`` is
    their total width (``widths``: each stream's), and ``fingerprint`` covers the streams'
    settings. Everything else (``column``, ``indices``, ``attrs``...) is the cache's own."""

    def __init__(self, store: FeatureStore, streams: list[str], fold: str | None = None):
        self.store = store
        self.streams = list(streams)
        self.widths = [store.feature_dim(s) for s in self.streams]
        self.fold = fold
        self._split = store.fold_splits(fold)

    def indices(self, split: str | None = None) -> np.ndarray:
        """Sample indices of ``split`` in this selection's fold (all samples the fold uses for ``None``)."""
        if split is None:
            return np.flatnonzero(self._split != "")
        return np.flatnonzero(self._split == split)

    def column(self, name: str) -> np.ndarray:
        return self._split if name == "split" else self.store.column(name)

    def samples(self, split: str | None = None) -> list:
        return [self.store.sample(i) for i in self.indices(split)]

    def __getattr__(self, name):
        return getattr(self.store, name)

    def __len__(self) -> int:
        return len(self.store)

    @property
    def embed_dim(self) -> int:
        return int(sum(self.widths))

    @property
    def fingerprint(self) -> str:
        fp = self.store.stream_fingerprint(self.streams)
        return fp if self.fold is None else hashlib.sha256(f"{fp}:{self.fold}".encode()).hexdigest()[:16]

    def load(self, split: str | None = None) -> tuple[list[np.ndarray], np.ndarray]:
        return self.store.load_indices(self.indices(split), self.streams)

    def sequences(self, split: str | None = None, *, in_memory: bool = True):
        """Samples of ``split`` (all the fold uses for ``None``) and their label indices, as
        ``temporal`` trains on them: read into RAM (:class:`~harx.temporal.sequences.Sequences`),
        or left in the cache and read as training asks (``in_memory=False``:
        :class:`~harx.temporal.sequences.StoredSequences`). ``None, None`` for an empty split."""
        from harx.temporal.sequences import StoredSequences

        idx = self.indices(split)
        if len(idx) == 0:
            return None, None
        c = self.store._columns
        stored = StoredSequences(self.store, self.streams, c["row_start"][idx], c["row_stop"][idx] - c["row_start"][idx])
        labels = c["label_index"][idx].astype(np.int64)
        return (stored.to_memory() if in_memory else stored), labels

    def nbytes(self, split: str | None = None) -> int:
        """Bytes the features of ``split`` take in RAM (float16, streams side by side)."""
        idx = self.indices(split)
        c = self.store._columns
        return int((c["row_stop"][idx] - c["row_start"][idx]).sum()) * self.embed_dim * self.store.feature_dtype.itemsize

    def frames(self, i: int, start: int = 0, stop: int | None = None) -> np.ndarray:
        x = self.store.frames(i, start, stop, self.streams)
        return x.reshape(len(x), -1)
