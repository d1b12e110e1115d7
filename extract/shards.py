"""Stage one split over several processes or machines: ``harx extract --shard K/N``, then
``harx merge``.

Each shard embeds a fixed, contiguous block of the dataset's videos and writes a complete harx
cache of its own samples, ``OUT.shards/shard-K-of-N.h5`` (resumable like any extraction: its
parts live beside it). The blocks are cut from the dataset's own video order, balanced by frame
count where the dataset annotates frame ranges (KTH) and by file size otherwise, so every run of
``--shard K/N`` on the same dataset takes the same videos, and concatenating the shards in order
gives the dataset's sample order. :func:`merge_shards` checks that all N shards are finished and
were made with the same settings and streams, then writes the one cache a single process would
have written (same samples, order, rows and attributes) and deletes the shards.

A harx-made split (a folder without a split column) is decided on the whole dataset, after the
probe that drops videos that do not open, in every shard alike; shards then only choose which
videos they embed.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
from pathlib import Path

import numpy as np

from harx.features.errors import CacheMismatchError, HarxError, InvalidOptionError
from harx.features.locks import take_lock
from harx.features.schema import read_stream_infos
from harx.features.writer import H5_READ_ERRORS, _CacheFile, _merge, describe_mismatch, read_settings

from .cost import add_costs
from .datasets import DatasetIndex

SHARD_NAME = re.compile(r"^shard-(\d+)-of-(\d+)\.h5$")
#: attributes a shard has of its own, not the merged cache's
OWN_ATTRS = ("shard", "shard_plan", "n_samples", "n_frames", "n_failed", "complete", "created_utc", "stage_one_cost")


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/4"`` -> ``(2, 4)``; InvalidOptionError in one line for anything else."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise InvalidOptionError(f"--shard takes K/N with 1 <= K <= N (e.g. 2/4), got {text!r}")
    return int(m.group(1)), int(m.group(2))


def shards_dir(out: Path) -> Path:
    return Path(out).with_name(Path(out).name + ".shards")


def shard_path(out: Path, k: int, n: int) -> Path:
    """Where shard ``k`` of ``n`` of the cache ``out`` is written."""
    return shards_dir(out) / f"shard-{k}-of-{n}.h5"


def video_shards(index: DatasetIndex, n: int) -> dict[Path, int]:
    """Each video's shard (1..n): contiguous blocks of the index's video order, balanced by
    annotated frames (every sample has a frame range) or by file size.

    Raises:
        InvalidOptionError: more shards than videos.
    """
    videos: dict[Path, float] = {}
    ranged = all(s.frame_range is not None for s in index.samples)
    for s in index.samples:
        weight = (s.frame_range[1] - s.frame_range[0]) if ranged else 0.0
        videos[s.path] = videos.get(s.path, 0.0) + max(weight, 1.0)
    if not ranged:
        for path in videos:
            try:
                videos[path] = float(max(1, os.path.getsize(path)))
            except OSError:
                videos[path] = 1.0
    if n > len(videos):
        raise InvalidOptionError(f"--shard ../{n}: the dataset has {len(videos)} video(s); use at most {len(videos)} shards")
    weights = np.array(list(videos.values()), dtype=np.float64)
    middle = np.cumsum(weights) - weights / 2
    shard = np.minimum(n - 1, (middle / weights.sum() * n).astype(int)) + 1
    if len(set(shard.tolist())) < n:        # a shard left empty (one video outweighs several): by count
        shard = np.arange(len(weights)) * n // len(weights) + 1
    return dict(zip(videos, shard.tolist()))


def take_shard(index: DatasetIndex, assignment: dict[Path, int], k: int) -> DatasetIndex:
    """``index`` with only the samples of shard ``k``'s videos (videos unknown to ``assignment``:
    none; classes, folds and what is missing stay those of the dataset)."""
    return dataclasses.replace(index, samples=[s for s in index.samples if assignment.get(s.path) == k])


def launcher_shard() -> tuple[str, int, int] | None:
    """``("K/N", local rank, ranks on this node)`` when a launcher started this process as one
    of N > 1 ranks (``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
    ``LOCAL_WORLD_SIZE``; rank r embeds shard r + 1), else ``None``."""
    try:
        world, rank = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
    except (KeyError, ValueError):
        return None
    if world < 2 or not 0 <= rank < world:
        return None
    local = int(os.environ.get("LOCAL_RANK", rank))
    return f"{rank + 1}/{world}", local, int(os.environ.get("LOCAL_WORLD_SIZE", world))


def wait_and_merge(out: str | Path, n: int, k: int = 1, *, overwrite: bool = False, poll_s: float = 1.0) -> Path:
    """The first rank (shard ``k``), once its own shard is done: wait until every shard of ``n``
    is finished *by this run*, then :func:`merge_shards`. A shard counts once it is complete and
    was made with this run's settings and dataset plan (those of shard ``k``), so a finished shard
    left by an earlier run with other options is not taken while its rank rebuilds it. A rank that
    dies takes the others down with it under torchrun, so this never waits for nothing."""
    import time

    folder = shards_dir(Path(out))
    mine = _identity(folder / f"shard-{k}-of-{n}.h5")
    if mine is None:        # this rank's own shard, just finished, must be there and readable
        raise HarxError(f"shard {k}/{n} of {out} is not there or unreadable after its extraction; rerun the command")
    while True:
        done = [j for j in range(1, n + 1) if not (folder / f"shard-{j}-of-{n}.h5.parts").exists()
                and _identity(folder / f"shard-{j}-of-{n}.h5") == mine]
        if len(done) == n:
            return merge_shards(out, overwrite=overwrite)
        time.sleep(poll_s)


def _identity(shard: Path) -> tuple | None:
    """What makes a finished shard one of this run's: its settings and dataset plan (None: not
    there, unreadable or unfinished)."""
    if not shard.is_file():
        return None
    try:
        a = read_settings(shard)
    except (HarxError, *H5_READ_ERRORS):
        return None
    return (a.get("settings_fingerprint"), a.get("shard_plan")) if a.get("complete", True) else None


def shard_plan(index: DatasetIndex, assignment: dict[Path, int]) -> str:
    """A hash of what every shard must agree on: the whole dataset's samples and splits after the
    probe, what it left out, and which shard takes each video (``harx merge`` compares it)."""
    import hashlib
    import json

    doc = {"samples": [[s.sample_id, s.split, *s.folds, assignment.get(s.path)] for s in index.samples],
           "left_out": sorted(sid for sid, _, _ in index.left_out)}
    return hashlib.sha256(json.dumps(doc, default=str).encode()).hexdigest()[:16]


def merge_shards(out: str | Path, *, overwrite: bool = False) -> Path:
    """Join the finished shards of ``out`` into ``out``; see the module docstring.

    Raises:
        HarxError: no shards, shards of several counts, or unfinished shards (naming them).
        CacheMismatchError: shards made with other settings or streams (naming the setting).
    """
    out = Path(out)
    folder = shards_dir(out)
    if not folder.is_dir():
        raise HarxError(f"no shards of {out} in {folder}" + (" (merged already)" if out.exists() else
                        "; run harx extract ... --out {out} --shard K/N first"))
    with take_lock(folder / "merge.lock", f"merging the shards of {out}"):
        return _merge_locked(out, folder, overwrite)


def _merge_locked(out: Path, folder: Path, overwrite: bool) -> Path:
    found: dict[int, dict[int, Path]] = {}
    for p in sorted(folder.glob("shard-*-of-*.h5")) if folder.is_dir() else []:
        m = SHARD_NAME.match(p.name)
        if m:
            found.setdefault(int(m.group(2)), {})[int(m.group(1))] = p
    if not found:
        raise HarxError(f"no shards of {out} in {folder}; run harx extract ... --out {out} --shard K/N first")
    if len(found) > 1:
        raise HarxError(f"{folder} holds shards of {' and of '.join(map(str, sorted(found)))}; keep one count")
    (n, have), = found.items()
    unfinished = [k for k in range(1, n + 1)
                  if k not in have or (folder / f"shard-{k}-of-{n}.h5.parts").exists()]
    if unfinished:
        names = ", ".join(f"{k}/{n}" for k in unfinished)
        raise HarxError(f"shard(s) {names} of {out} are not finished; rerun harx extract with the same options and "
                        f"--shard for each, then harx merge")
    if out.exists() and not overwrite:
        raise HarxError(f"{out} exists; delete it or pass --overwrite to replace it with the merged shards")
    attrs = [read_settings(have[k]) for k in range(1, n + 1)]
    first = attrs[0]
    import h5py

    streams, orders, failed = [], [], []
    for k in range(1, n + 1):
        a = attrs[k - 1]
        if a.get("settings_fingerprint") != first.get("settings_fingerprint"):
            raise CacheMismatchError(f"shard {k}/{n} was made with other settings than shard 1/{n}: "
                                     f"{describe_mismatch(a, first)}; rerun it with the same options")
        if a.get("shard_plan") != first.get("shard_plan"):
            raise CacheMismatchError(f"shard {k}/{n} saw another dataset than shard 1/{n} (other videos, or other "
                                     "ones that open, or another split); delete the shards that differ and rerun "
                                     "them on the same files")
        try:
            with h5py.File(have[k], "r") as f:
                infos = read_stream_infos(f, a)
                orders.extend(v.decode() if isinstance(v, bytes) else str(v) for v in f["samples/sample_id"][:])
                failed.append([v.decode() if isinstance(v, bytes) else str(v) for v in f["failures/sample_id"][:]])
        except H5_READ_ERRORS as err:
            raise HarxError(f"shard {k}/{n} ({have[k]}) cannot be read ({err}); delete it and rerun its --shard") from None
        specs = [(s.name, s.spec) for s in infos]
        if streams and specs != [(s.name, s.spec) for s in streams]:
            raise CacheMismatchError(f"shard {k}/{n} holds streams {[n_ for n_, _ in specs]}, shard 1/{n} "
                                     f"{[s.name for s in streams]}; rerun it with the same --streams")
        streams = streams or infos
    # Samples and failures are columns of their own, each in dataset order: a shard's failures are,
    # but those every shard records (videos the dataset left out) go last, sorted, as in one process.
    everywhere = set.intersection(*(set(ids) for ids in failed)) if n > 1 else set()
    orders += [sid for ids in failed for sid in ids if sid not in everywhere]
    merged = {k: v for k, v in first.items() if k not in OWN_ATTRS}
    from datetime import datetime, timezone

    merged["created_utc"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    merged["stage_one_cost"] = add_costs(*(a.get("stage_one_cost") or {} for a in attrs))
    tmp = out.with_name(out.name + ".tmp")
    cache = _CacheFile(tmp, merged, list(streams), merged.get("dtype") or "float16")
    try:
        _merge([have[k] for k in range(1, n + 1)], orders, cache)
        cache.close(complete=True)
    except BaseException:
        cache.abandon()
        raise
    os.replace(tmp, out)
    shutil.rmtree(folder, ignore_errors=True)
    return out
