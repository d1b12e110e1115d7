"""Writing a feature cache so that no interruption loses finished work or leaves a broken file.

HDF5 files are not crash-safe: a process killed while it writes can leave a file that no longer
opens. So the cache at ``PATH`` is only ever replaced whole, by an atomic rename, and work in
progress lives beside it::

    PATH                 the finished cache (schema in ``features.schema``); absent until done
    PATH.parts/          work in progress of an interrupted or running extraction
        settings.json    the settings the parts were made with (checked on resume)
        part-000001.h5   committed parts: closed cleanly, then renamed into place
        part-000002.h5.tmp   the part being written; discarded on resume

A part is committed every ``part_seconds`` (default 60 s) and on any exception or Ctrl-C, so a
``kill -9`` loses at most that much work. :meth:`FeatureWriter.finalize` merges the old cache (if
any) and the parts, in dataset order, into ``PATH.tmp`` and renames it over ``PATH``; the parts
are deleted only after that. Because samples are written in dataset order and each video is
embedded the same way whatever else runs, a resumed cache equals an uninterrupted one.

One writer per cache: HDF5 corrupts a file with two concurrent writers. A lock on
``PATH.parts/lock`` (``features.locks``), freed by the kernel when its writer dies, refuses a
second live writer.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import h5py
import numpy as np

from .errors import CacheMismatchError, CorruptCacheError, ForeignCacheError, HarxError, OutputError
from .locks import FileLock, take_lock
from .schema import (RGB_SPEC, FAILURE_COLUMNS, FLOAT_COLUMNS, FORMAT, INT_COLUMNS, READABLE_SCHEMAS, SCHEMA_VERSION,
                     SETTINGS_KEYS, STR_COLUMNS, STR_DTYPE, StreamInfo, chunk_rows, decode_attr, encode_attr,
                     fold_column, read_stream_infos, settings_fingerprint, stream_datasets, stream_fingerprint,
                     stream_path)


class _CacheFile:
    """Builds one schema-2 HDF5 file: appends rows in large blocks, writes columns at close.
    ``streams``: the streams it holds; each sample added gives rows of every one of them."""

    def __init__(self, path: Path, attrs: dict, streams: list[StreamInfo], dtype: str = "float16"):
        self.path = path
        self.attrs = dict(attrs, streams=[s.name for s in streams])
        self.dtype = np.dtype(dtype)
        self.streams = streams
        self.broken = False       # a write failed for want of room (see _writing)
        self.f = h5py.File(path, "w")
        # chunk rows and the flush block follow the vector streams (maps get chunks of their own)
        vectors = [s for s in streams if len(s.feature_shape) < 2] or streams
        widest = max(int(np.prod(s.feature_shape)) for s in vectors)
        rows = chunk_rows(widest, self.dtype.itemsize)
        self.data: dict[str, h5py.Dataset] = {}
        for s in streams:
            shape = tuple(s.feature_shape)
            ds = self.f.create_dataset(stream_path(s.name), shape=(0, *shape), maxshape=(None, *shape),
                                       dtype=self.dtype, chunks=(_stream_chunk_rows(shape, rows, self.dtype), *shape))
            for key, value in (("input", s.input), ("spec", s.spec), ("feature_shape", list(shape)),
                               ("description", s.description),
                               ("fingerprint", stream_fingerprint(attrs.get("settings_fingerprint", ""), s.spec))):
                ds.attrs[key] = encode_attr(key, value)
            self.data[s.name] = ds
        self.fidx = self.f.create_dataset("frame_index", shape=(0,), maxshape=(None,), dtype=np.int32,
                                          chunks=(max(rows, 1024),))
        self.block = 4 * rows
        self.n_rows = 0
        self._pending: list[tuple[dict[str, np.ndarray], np.ndarray]] = []
        self._pending_rows = 0
        self.text_columns = (*STR_COLUMNS, *(fold_column(f) for f in attrs.get("folds") or []))
        self.columns: dict[str, list] = {k: [] for k in (*self.text_columns, *INT_COLUMNS, *FLOAT_COLUMNS)}
        self.failures: dict[str, list] = {k: [] for k in FAILURE_COLUMNS}

    def add_sample(self, meta: dict, embeddings: dict[str, np.ndarray], frame_index: np.ndarray) -> None:
        n = len(frame_index)
        start = self.n_rows + self._pending_rows
        self._pending.append(({s.name: np.asarray(embeddings[s.name], dtype=self.dtype) for s in self.streams},
                              np.asarray(frame_index, np.int32)))
        self._pending_rows += n
        for key in self.text_columns:
            self.columns[key].append("" if meta.get(key) is None else str(meta[key]))
        for key in (*INT_COLUMNS, *FLOAT_COLUMNS):
            self.columns[key].append(meta.get(key, -1))
        self.columns["row_start"][-1], self.columns["row_stop"][-1] = start, start + n
        if self._pending_rows >= self.block:
            self._flush()

    def add_failure(self, sample_id: str, path: str, reason: str) -> None:
        for key, value in zip(FAILURE_COLUMNS, (sample_id, path, reason)):
            self.failures[key].append(value)

    @property
    def n_samples(self) -> int:
        return len(self.columns["sample_id"])

    def _flush(self) -> None:
        if not self._pending:
            return
        fidx = np.concatenate([i for _, i in self._pending])
        lo, hi = self.n_rows, self.n_rows + len(fidx)
        with self._writing():
            for name, ds in self.data.items():
                ds.resize(hi, axis=0)
                ds[lo:hi] = np.concatenate([e[name] for e, _ in self._pending])
            self.fidx.resize(hi, axis=0)
            self.fidx[lo:hi] = fidx
        self.n_rows = hi
        self._pending, self._pending_rows = [], 0

    @contextmanager
    def _writing(self):
        """A write that fails for want of room becomes one OutputError (:func:`writing_room`); the
        file is then broken and only good for :meth:`abandon`."""
        with writing_room(self.path.name.removesuffix(".tmp"), on_fail=self._break):
            yield

    def _break(self) -> None:
        self.broken = True
        _discard_writes(self.f)              # see abandon()

    def close(self, complete: bool) -> None:
        self._flush()
        with self._writing():
            self._close(complete)

    def _close(self, complete: bool) -> None:
        samples = self.f.create_group("samples")
        for key in self.text_columns:
            samples.create_dataset(key, data=np.array(self.columns[key], dtype=object), dtype=STR_DTYPE)
        for key, dt in {**INT_COLUMNS, **FLOAT_COLUMNS}.items():
            samples.create_dataset(key, data=np.array(self.columns[key], dtype=dt))
        failures = self.f.create_group("failures")
        for key in FAILURE_COLUMNS:
            failures.create_dataset(key, data=np.array(self.failures[key], dtype=object), dtype=STR_DTYPE)
        attrs = dict(self.attrs, complete=complete, n_samples=self.n_samples, n_frames=self.n_rows,
                     n_failed=len(self.failures["sample_id"]))
        for key, value in attrs.items():
            self.f.attrs[key] = encode_attr(key, value)
        self.f.flush()          # a flush that fails leaves the file open, for abandon() to discard
        self.f.close()

    def abandon(self) -> None:
        """Close and delete the file, whatever state its writes left it in. After a failed write
        HDF5 cannot flush the file, its close fails half-way and freeing its objects later crashes
        the interpreter; so :meth:`_writing` points its descriptor at /dev/null when a write fails,
        and the close's flush succeeds and goes nowhere (the file is deleted anyway)."""
        try:
            self.f.close()
        except (OSError, RuntimeError):     # a file whose writes failed: what is in it is lost anyway
            pass
        finally:
            self.path.unlink(missing_ok=True)


REPLACE_HINT = "use --overwrite to replace it or --out for another file"
#: What h5py (and decoding what it returns) raises on a damaged file: a missing object is a
#: KeyError, an unreadable block an OSError, a bad attribute a ValueError (JSON, UTF-8).
H5_READ_ERRORS = (OSError, KeyError, ValueError, RuntimeError)


@contextmanager
def writing_room(what: str, on_fail=None):
    """A write that fails for want of room (a full disk, a file-size limit, a quota) becomes one
    OutputError naming ``what``, after ``on_fail()``; other failures pass through unchanged."""
    try:
        yield
    except (OSError, RuntimeError) as err:
        why = no_room(err)
        if why is None:
            raise
        if on_fail is not None:
            on_fail()
        raise OutputError(f"cannot write {what}: {why}; the work finished before it is kept: free some space and "
                          "rerun the same command") from None


def no_room(err: BaseException) -> str | None:
    """Why a write failed for want of room, in words, or ``None`` when it failed otherwise. An
    ``OSError`` says it in ``errno``; HDF5 reports it as a RuntimeError whose text holds the errno."""
    code = getattr(err, "errno", None)
    text = " ".join(str(err).split())
    if code == errno.ENOSPC or "No space left" in text or "errno = 28" in text:
        return "the disk is full"
    if code in (errno.EFBIG, errno.EDQUOT) or any(k in text for k in ("File too large", "errno = 27", "Disk quota",
                                                                      "errno = 122")):
        return "a file-size or disk-quota limit was reached"
    return None


def corrupt_cache(path: Path, err: BaseException, hint: str) -> CorruptCacheError:
    """The one-line error for a damaged cache file: what broke, then the fix."""
    detail = " ".join(str(err).split()).strip("'\"") or type(err).__name__
    return CorruptCacheError(f"{path} is damaged ({detail}); {hint}")


def read_settings(path: Path, hint: str = REPLACE_HINT, damaged_hint: str | None = None) -> dict:
    """The settings attributes of an existing cache or part; ForeignCacheError (ending in
    ``hint``) if it is not one, CorruptCacheError (ending in ``damaged_hint``, default ``hint``)
    if its attributes cannot be read or decoded."""
    try:
        with h5py.File(path, "r") as f:
            raw = dict(f.attrs.items())
    except OSError as err:
        raise ForeignCacheError(f"{path} is not a readable HDF5 file ({' '.join(str(err).split())}); {hint}") from None
    except (KeyError, ValueError, RuntimeError) as err:
        raise corrupt_cache(path, err, damaged_hint or hint) from None
    try:
        marks = {k: decode_attr(k, raw.get(k)) for k in ("format", "schema_version")}
    except ValueError:  # not UTF-8: no harx file
        marks = {"format": raw.get("format"), "schema_version": raw.get("schema_version")}
    if marks["format"] != FORMAT or marks["schema_version"] not in READABLE_SCHEMAS:
        raise ForeignCacheError(f"{path} is not a harx cache of schema {' or '.join(map(str, READABLE_SCHEMAS))} (found format "
                                f"{marks['format']!r}, schema {marks['schema_version']!r}); {hint}")
    try:
        return {k: decode_attr(k, v) for k, v in raw.items()}
    except ValueError as err:  # bad JSON or UTF-8 in one attribute
        raise corrupt_cache(path, err, damaged_hint or hint) from None


@dataclass(frozen=True)
class StoredSamples:
    """What a cache or part holds: the split and row range of each embedded sample, the ids of
    failed samples, and its streams (every embedded sample of it has rows of each)."""

    splits: dict[str, str]
    rows: dict[str, tuple[int, int]]
    failed: set[str]
    streams: list[StreamInfo]


def read_stored_samples(path: Path, hint: str = REPLACE_HINT) -> StoredSamples:
    """:class:`StoredSamples` of the cache or part at ``path``, in one read of its columns.

    Raises:
        CorruptCacheError: the file lacks the columns or cannot be read.
    """
    try:
        with h5py.File(path, "r") as f:
            attrs = {k: decode_attr(k, v) for k, v in f.attrs.items()}
            s = f["samples"]
            ids = [_text(v) for v in s["sample_id"][:]]
            splits = dict(zip(ids, map(_text, s["split"][:])))
            rows = {sid: (int(a), int(b)) for sid, a, b in zip(ids, s["row_start"][:], s["row_stop"][:])}
            failed = {_text(v) for v in f["failures/sample_id"][:]}
            streams = read_stream_infos(f, attrs)
    except H5_READ_ERRORS as err:
        raise corrupt_cache(path, err, hint) from None
    return StoredSamples(splits, rows, failed, streams)


def _text(value) -> str:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, str):
        return value
    raise ValueError(f"a sample id is {type(value).__name__}, not a string")


def make_folder(folder: Path) -> None:
    """``mkdir -p folder``, or OutputError in one line saying why and "choose another --out"."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot create folder {folder} ({err.strerror or err}); choose another --out") from None


def check_writable(path: str | Path) -> None:
    """Refuse, in one line and before any work, a cache path that cannot be written: its folder
    cannot be made or written in (read-only, a file, ``/proc``), the path is a folder, or its
    ``.parts`` folder is in the way. Tried for real: ``os.access`` is true for root anywhere.

    Raises:
        OutputError: with the reason and "choose another --out".
    """
    path = Path(path)
    folder, parts = path.parent, path.with_name(path.name + ".parts")
    if path.is_dir():
        raise OutputError(f"--out {path} is a folder; give a file path, e.g. {path / 'features.h5'}")
    make_folder(folder)
    if parts.exists() and not parts.is_dir():
        raise OutputError(f"{parts} is a file, where harx keeps the work in progress of {path.name}; "
                          "remove it or choose another --out")
    for where in (folder, parts) if parts.is_dir() else (folder,):
        try:
            fd, probe = tempfile.mkstemp(prefix=".harx-write-test-", dir=where)
            os.close(fd)
            os.unlink(probe)
        except OSError as err:
            raise OutputError(f"cannot write in {where} ({err.strerror or err}); choose another --out") from None


def describe_mismatch(have: dict, want: dict) -> str:
    """'backbone resnet18 != tf_efficientnet_lite0; sampling ...' for the keys that differ."""
    diffs = []
    for key in SETTINGS_KEYS:
        a, b = have.get(key), want.get(key)
        if a != b:
            a_s, b_s = json.dumps(a, default=str), json.dumps(b, default=str)
            if len(a_s) > 60 or len(b_s) > 60:
                diffs.append(f"{key} differs")
            else:
                diffs.append(f"{key} {a_s} here vs {b_s} requested")
    return "; ".join(diffs) or "settings fingerprint differs"


class FeatureWriter:
    """Create, resume or extend the cache at ``path`` for the given settings and streams.

    Usage::

        with FeatureWriter(path, settings, streams=[rgb, motion], overwrite=False) as w:
            todo = [s for s in samples if s.sample_id not in w.done_ids]
            for ...: w.add_sample(meta, {"rgb": x, "motion": m}, frame_index)   # or w.add_failure(...)
            w.finalize(order=[s.sample_id for s in samples])

    Streams accumulate: the finished cache holds the streams of the existing cache (if any) and
    those asked for (:attr:`streams`, in that order). A sample embedded before needs only the
    streams it lacks (:meth:`missing_streams`); adding a stream to a cache recomputes no other.

    Raises:
        ForeignCacheError: ``path`` exists and is not a harx cache (``overwrite=True`` replaces).
        CacheMismatchError: ``path`` or its parts were made with other settings, or hold a stream
            of the same name made another way.
    """

    def __init__(self, path: str | Path, settings: dict, *, streams: list[StreamInfo] | None = None,
                 overwrite: bool = False, part_seconds: float = 60.0, part_samples: int = 2000):
        self.path = Path(path)
        self.parts_dir = self.path.with_name(self.path.name + ".parts")
        self.settings = dict(settings, settings_fingerprint=settings_fingerprint(settings))
        self.requested = [_with_shape(s, settings) for s in (streams or [StreamInfo("rgb")])]
        self.streams: list[StreamInfo] = list(self.requested)   # the finished cache's, known after open()
        self.overwrite = overwrite
        self.part_seconds = part_seconds
        self.part_samples = part_samples
        self._parts: dict[tuple[str, ...], _CacheFile] = {}
        self._part_opened = 0.0
        self.done_ids: set[str] = set()      # samples with every stream, or failed
        self.failed_ids: set[str] = set()
        self.stored_splits: dict[str, str] = {}   # split of each sample embedded before this run
        self._have: dict[str, set[str]] = {}      # streams each sample embedded before this run has
        self._stored_rows: dict[str, tuple[Path, int, int]] = {}   # where its frame index was written
        self._final: StoredSamples | None = None  # the finished cache's contents, read once on open
        self.dropped_parts: list[str] = []        # damaged parts set aside on open (their work is redone)
        self.has_final = False
        self._lock: FileLock | None = None

    # -- opening ---------------------------------------------------------------------------------
    def __enter__(self) -> "FeatureWriter":
        self.open()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # Any exit, Ctrl-C included, keeps what is finished: commit the open parts. A parts folder
        # with no part in it holds nothing to resume (a rerun that found nothing to do); left
        # behind, it would refuse the next run with other settings as "interrupted".
        self.commit_part()
        if self.parts_dir.exists() and not self.committed_parts():
            self._drop_parts_dir()
        self._release_lock()

    def open(self) -> None:
        check_writable(self.path)
        # The lock first: --overwrite must not delete a live writer's work (its lock included)
        with writing_room(f"in {self.parts_dir}"):
            made = not self.parts_dir.exists()
            self.parts_dir.mkdir(exist_ok=True)
            self._take_lock()
        try:
            self._open_locked()
        except BaseException:
            self._release_lock()          # refused or interrupted: free it for the next attempt
            if made and self.parts_dir.is_dir() and not any(self.parts_dir.iterdir()):
                self.parts_dir.rmdir()
            raise

    def _open_locked(self) -> None:
        if self.overwrite:
            self._remove_all()
        self._check_existing()
        with writing_room(f"in {self.parts_dir}"):
            settings_file = self.parts_dir / "settings.json"
            settings_file.write_text(json.dumps({"settings_fingerprint": self.settings["settings_fingerprint"],
                                                 "streams": _stream_specs(self.streams),
                                                 "settings": {k: self.settings.get(k) for k in SETTINGS_KEYS}},
                                                indent=1, default=str))
        for tmp in self.parts_dir.glob("*.tmp"):
            tmp.unlink()
        names = {s.name for s in self.streams}
        for source in self._sources():
            try:
                stored = self._final if source == self.path else read_stored_samples(
                    source, hint="use --overwrite to discard the interrupted run and start over")
            except (CorruptCacheError, ForeignCacheError) as err:
                # a committed part damaged since (a disk error, a copy cut short): set aside, its work redone
                aside = self.path.with_name(f"{self.path.name}.{source.name}.damaged")   # beside the cache: kept
                os.replace(source, aside)
                self.dropped_parts.append(f"{source.name} could not be read ({str(err).split(';')[0]}); set aside "
                                          f"as {aside.name}, its videos are embedded again")
                continue
            self.stored_splits.update(stored.splits)
            for sample_id, rows in stored.rows.items():
                self._have.setdefault(sample_id, set()).update(s.name for s in stored.streams)
                self._stored_rows.setdefault(sample_id, (source, *rows))
            self.failed_ids.update(stored.failed)       # a failed sample is not retried
        self.done_ids = set(self.failed_ids) | {sid for sid, have in self._have.items() if names <= have}

    def stored_frame_index(self, sample_id: str) -> np.ndarray | None:
        """The source frames of sample ``sample_id``'s rows as written before this run (``None``: not
        written): a stream added to it must stand at exactly these frames."""
        where = self._stored_rows.get(sample_id)
        if where is None:
            return None
        path, lo, hi = where
        try:
            with h5py.File(path, "r") as f:
                return f["frame_index"][lo:hi]
        except H5_READ_ERRORS as err:
            raise corrupt_cache(path, err, "use --overwrite to rebuild the cache") from None

    def missing_streams(self, sample_id: str) -> list[str]:
        """The streams sample ``sample_id`` still needs, in :attr:`streams` order (none once failed)."""
        if sample_id in self.failed_ids:
            return []
        have = self._have.get(sample_id, set())
        return [s.name for s in self.streams if s.name not in have]

    def _remove_all(self) -> None:
        """The cache and the interrupted run's work, all but the lock this writer holds."""
        self.path.unlink(missing_ok=True)
        for item in self.parts_dir.iterdir() if self.parts_dir.is_dir() else []:
            if self._lock is not None and item == self._lock.path:
                continue
            if item.is_dir() and not item.is_symlink():
                shutil.rmtree(item)
            else:
                item.unlink()

    def _check_existing(self) -> None:
        want = self.settings["settings_fingerprint"]
        if self.path.exists():
            have = read_settings(self.path)
            if have.get("settings_fingerprint") != want:
                raise CacheMismatchError(
                    f"{self.path} was built with other settings ({describe_mismatch(have, self.settings)}); "
                    "use --out for a new file or --overwrite to replace it")
            self._final = read_stored_samples(self.path, hint="use --overwrite to rebuild the cache")
            self.streams = union_streams(self.path, self._final.streams, self.requested)
            self.has_final = True
        settings_file = self.parts_dir / "settings.json"
        if settings_file.exists():
            try:
                saved = json.loads(settings_file.read_text())
                if not isinstance(saved, dict):
                    raise ValueError("not a JSON object")
            except (OSError, ValueError) as err:
                raise CorruptCacheError(f"{settings_file} is damaged ({err}); use --overwrite to discard the "
                                        "interrupted run and start over") from None
            if saved.get("settings_fingerprint") != want:
                raise CacheMismatchError(
                    f"{self.parts_dir} holds an interrupted run with other settings "
                    f"({describe_mismatch(saved.get('settings', {}), self.settings)}); rerun it with its own "
                    "options to finish it, or use --overwrite to discard it")
            saved_streams = saved.get("streams", {"rgb": dict(RGB_SPEC)})
            if saved_streams != _stream_specs(self.streams) and self.committed_parts():
                raise CacheMismatchError(
                    f"{self.parts_dir} holds an interrupted run of streams {','.join(saved_streams)} and this run "
                    f"asks for {','.join(s.name for s in self.streams)}; rerun it with --streams "
                    f"{','.join(saved_streams)} to finish it, or use --overwrite to discard it")

    def _take_lock(self) -> None:
        self._lock = take_lock(self.parts_dir / "lock", f"writing {self.path}")

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _drop_parts_dir(self) -> None:
        """Delete the parts folder, then free the lock held in it: not the reverse, or a writer
        starting between the two would lose its new folder."""
        shutil.rmtree(self.parts_dir, ignore_errors=True)
        if self._lock is not None:
            self._lock.forget()
            self._lock = None

    def committed_parts(self) -> list[Path]:
        return sorted(self.parts_dir.glob("part-*.h5")) if self.parts_dir.exists() else []

    def _sources(self) -> list[Path]:
        return ([self.path] if self.path.exists() else []) + self.committed_parts()

    def split_changes(self, splits: dict[str, str]) -> list[tuple[str, str, str]]:
        """``(sample_id, stored split, split now)`` of every stored sample whose split differs
        from ``splits``. A resumed run must not mix two splits in one cache: where harx makes
        the split from the videos that decode, a video that opens now but did not then (or
        the other way round) moves others between splits."""
        return [(sample_id, stored, splits[sample_id]) for sample_id, stored in self.stored_splits.items()
                if sample_id in splits and splits[sample_id] != stored]

    # -- writing ---------------------------------------------------------------------------------
    def _current_part(self, names: tuple[str, ...]) -> _CacheFile:
        part = self._parts.get(names)
        if part is None:
            number = len(self.committed_parts()) + 1
            taken = {p.path.name for p in self._parts.values()}
            while (self.parts_dir / f"part-{number:06d}.h5").exists() or f"part-{number:06d}.h5.tmp" in taken:
                number += 1
            path = self.parts_dir / f"part-{number:06d}.h5.tmp"
            streams = [s for s in self.streams if s.name in names]
            part = self._parts[names] = _CacheFile(path, self._attrs(), streams, self.settings["dtype"])
            if len(self._parts) == 1:
                self._part_opened = time.monotonic()
        return part

    def _attrs(self) -> dict:
        return dict(self.settings, format=FORMAT, schema_version=SCHEMA_VERSION,
                    created_utc=datetime.now(timezone.utc).isoformat(timespec="seconds"))

    def add_sample(self, meta: dict, embeddings: dict[str, np.ndarray] | np.ndarray, frame_index: np.ndarray) -> None:
        """Append one sample's features of the streams it lacks, ``{stream: (frames, *feature_shape)}``
        (an array alone: the one stream it lacks), and its source frame numbers."""
        sample_id = meta["sample_id"]
        needed = self.missing_streams(sample_id)
        if isinstance(embeddings, dict) and not embeddings:
            raise ValueError(f"no features given for sample {sample_id}")
        if not isinstance(embeddings, dict):
            if len(needed) != 1:
                raise ValueError(f"sample {sample_id} needs streams {needed}; give a dict of arrays")
            embeddings = {needed[0]: embeddings}
        shapes = {s.name: s.feature_shape for s in self.streams}
        for name, x in embeddings.items():
            if name not in shapes:
                raise ValueError(f"stream {name!r} is not one of this cache's ({', '.join(shapes)})")
            if x.shape != (len(frame_index), *shapes[name]):
                raise ValueError(f"{name} features of shape {x.shape}, expected ({len(frame_index)}, "
                                 f"{', '.join(map(str, shapes[name]))})")
        names = tuple(n for n in shapes if n in embeddings)
        self._current_part(names).add_sample(meta, embeddings, frame_index)
        self._have.setdefault(sample_id, set()).update(names)
        if not self.missing_streams(sample_id):
            self.done_ids.add(sample_id)

    def add_failure(self, sample_id: str, path: str, reason: str) -> None:
        """Record a sample that could not be embedded; it is reported, not retried."""
        self._current_part(tuple(s.name for s in self.streams)).add_failure(sample_id, path, reason)
        self.done_ids.add(sample_id)
        self.failed_ids.add(sample_id)

    def maybe_commit(self) -> None:
        """Commit the open parts if they are old or large enough (call between videos)."""
        if self._parts and (time.monotonic() - self._part_opened >= self.part_seconds
                            or sum(p.n_samples for p in self._parts.values()) >= self.part_samples):
            self.commit_part()

    def commit_part(self) -> None:
        parts, self._parts = list(self._parts.values()), {}
        failed = None
        for part in parts:
            if part.broken or (part.n_samples == 0 and not part.failures["sample_id"]):
                part.abandon()               # a part whose writes failed holds nothing to keep
                continue
            try:
                part.close(complete=False)
            except OutputError as err:
                part.abandon()
                failed = failed or err
                continue
            os.replace(part.path, part.path.with_suffix(""))  # drop ".tmp": the part is now committed
        if failed is not None:
            raise failed

    # -- finishing -------------------------------------------------------------------------------
    def finalize(self, order: list[str], extra_attrs: dict | None = None) -> Path:
        """Merge the old cache and all parts, in ``order`` (then any others), into ``path``."""
        self.commit_part()
        sources = self._sources()
        if self.has_final and len(sources) == 1:
            self._drop_parts_dir()
            return self.path  # nothing new to merge
        tmp = self.path.with_name(self.path.name + ".tmp")
        out = _CacheFile(tmp, dict(self._attrs(), **(extra_attrs or {})), self.streams, self.settings["dtype"])
        try:
            _merge(sources, order, out)
            out.close(complete=True)
        except BaseException:
            out.abandon()
            raise
        os.replace(tmp, self.path)
        self.has_final = True
        self._drop_parts_dir()
        return self.path


def _stream_chunk_rows(shape: tuple, rows: int, dtype: np.dtype) -> int:
    """Rows per chunk of one stream: ``rows`` (about 512 KiB of the widest vector stream) for
    vectors; about 128 KiB for spatial maps, uncompressed. Measured on real maps
    (``benchmarks/map_storage.py``, ``benchmarks/RESULTS.md``): training reads 32-row crops, and
    128 KiB chunks read them 1.25x faster than 512 KiB and 2x faster than 2 MiB; lzf or gzip
    saved 0-19 % of the bytes (float16 maps compress badly) and read crops 5-30x slower."""
    if len(shape) < 2:
        return rows
    return chunk_rows(int(np.prod(shape)), np.dtype(dtype).itemsize, target=128 * 1024)


def _with_shape(stream: StreamInfo, settings: dict) -> StreamInfo:
    """``stream`` with its feature shape; ``()`` means the backbone's ``embed_dim`` vector."""
    if stream.feature_shape:
        return stream
    return StreamInfo(stream.name, stream.spec, stream.description, (int(settings["embed_dim"]),))


def _stream_specs(streams: list[StreamInfo]) -> dict[str, dict]:
    return {s.name: s.spec for s in streams}


def union_streams(path: Path, existing: list[StreamInfo], requested: list[StreamInfo]) -> list[StreamInfo]:
    """The existing cache's streams, then the requested ones it lacks.

    Raises:
        CacheMismatchError: a requested stream whose name the cache holds was made another way.
    """
    have = {s.name: s for s in existing}
    for s in requested:
        if s.name in have and have[s.name].spec != s.spec:
            raise CacheMismatchError(
                f"{path} holds a {s.name} stream made with {json.dumps(have[s.name].spec, sort_keys=True)}, not "
                f"{json.dumps(s.spec, sort_keys=True)}; use --out for a new file or --overwrite to replace it")
    return list(existing) + [s for s in requested if s.name not in have]


_MERGE_HINT = "use --overwrite to rebuild the cache from the videos"


def _merge(sources: list[Path], order: list[str], out: _CacheFile) -> None:
    """Write every sample of ``sources`` into ``out`` in ``order``, each stream's rows taken from
    the first source that holds them for that sample (a stream added later lives in a part)."""
    files = [h5py.File(p, "r") for p in sources]
    try:
        where: dict[str, list[tuple[int, int]]] = {}
        failures: dict[str, tuple[str, str]] = {}
        cols, datasets = [], []
        for fi, f in enumerate(files):
            try:
                attrs = {k: decode_attr(k, v) for k, v in f.attrs.items()}
                datasets.append({name: f[path] for name, path in stream_datasets(f, attrs).items()})
                s = f["samples"]
                col = {k: s[k][:] for k in s}
                fl = f["failures"]
                failed = list(zip(fl["sample_id"][:], fl["path"][:], fl["reason"][:]))
            except H5_READ_ERRORS as err:
                raise corrupt_cache(sources[fi], err, _MERGE_HINT) from None
            cols.append(col)
            for i, sid in enumerate(col["sample_id"]):
                where.setdefault(sid.decode(), []).append((fi, i))
            for sid, path, reason in failed:
                failures[sid.decode()] = (path.decode(), reason.decode())
        rank = {sid: i for i, sid in enumerate(order)}
        ids = sorted(set(where) | set(failures), key=lambda sid: (rank.get(sid, len(rank)), sid))
        for sid in ids:
            if sid not in where:
                out.add_failure(sid, *failures[sid])
                continue
            (fi, i), *_ = where[sid]
            col = cols[fi]
            meta = {k: (v[i].decode() if isinstance(v[i], bytes) else v[i]) for k, v in col.items()}
            try:
                frames = _rows(files[fi]["frame_index"], col, i)
                features = {}
                for stream in out.streams:
                    held = [(fj, j) for fj, j in where[sid] if stream.name in datasets[fj]]
                    if not held:
                        raise CacheMismatchError(f"sample {sid} has no {stream.name} features in {sources[fi]} or "
                                                 f"its parts; {_MERGE_HINT}")
                    fj, j = held[0]
                    if fj != fi and not np.array_equal(_rows(files[fj]["frame_index"], cols[fj], j), frames):
                        raise CacheMismatchError(f"sample {sid}'s {stream.name} rows stand at other frames than its "
                                                 f"other streams' (the video decodes differently now); {_MERGE_HINT}")
                    features[stream.name] = _rows(datasets[fj][stream.name], cols[fj], j)
            except HarxError:
                raise
            except H5_READ_ERRORS as err:
                raise corrupt_cache(sources[fi], err, _MERGE_HINT) from None
            out.add_sample(meta, features, frames)
    finally:
        for f in files:
            f.close()


def _rows(dataset: h5py.Dataset, col: dict, i: int) -> np.ndarray:
    return dataset[int(col["row_start"][i]):int(col["row_stop"][i])]


def _discard_writes(f: h5py.File) -> None:
    """Point an open HDF5 file's descriptor at /dev/null (files of the default driver only)."""
    try:
        fd = f.id.get_vfd_handle() if f.id.valid and f.driver == "sec2" else None
    except (OSError, RuntimeError, ValueError):
        fd = None
    if fd is not None:
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, fd)
        finally:
            os.close(null)
