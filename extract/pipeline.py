"""The stage-one loop: decode (worker processes) -> preprocess + embed (batched) -> FeatureWriter.

Decoding runs ahead in worker processes while the main process embeds, so on a CPU the
backbone sets the pace. Batches are formed within one video's frame stream only: a video is
embedded the same way whether the run was resumed or not, so a resumed cache equals an
uninterrupted one. Finished videos are committed to the cache's part files as the run goes
(see :mod:`features.writer`); a failed video is recorded with its reason and the run goes on.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, NamedTuple

import numpy as np

from harx.features.coverage import split_warnings
from harx.features.errors import CacheMismatchError, HarxError
from harx.features.paths import library_versions
from harx.features.schema import StreamInfo, fold_column
from harx.features.writer import FeatureWriter, check_writable

from harx.runtime import resolve_device

from .config import ExtractConfig, default_cache_path
from .cost import stage_one_cost
from .datasets import DatasetIndex, VideoSample, create_dataset
from .decode import DecodeJob, VideoDecoder
from .probe import drop_undecodable
from .reuse import FinishedCache, finished_cache, index_settings, request_key
from .shards import launcher_shard, parse_shard, shard_path, shard_plan, take_shard, video_shards, wait_and_merge
from .streams import decode_images, map_options, with_map_shape

if TYPE_CHECKING:  # both import torch, which a finished cache does not need (extract.reuse)
    from .backbones import Backbone
    from .embedding import EmbeddedVideo


@dataclass
class ExtractProgress:
    """Sent to ``on_progress`` after each video (and once at the start, with ``videos_done=0``)."""

    videos_done: int
    videos_total: int
    frames_done: int
    samples_done: int
    failed: int
    elapsed_s: float
    current: str = ""


@dataclass
class ExtractSummary:
    """What a run did. ``reused`` samples were already in the cache (a resumed or finished run)."""

    out: Path
    dataset: str
    unit: str
    backbone: str
    weights: str
    device: str
    precision: str
    samples_total: int
    samples_new: int
    reused: int
    failed: list[tuple[str, str]] = field(default_factory=list)  # (sample_id, reason), this run
    failed_before: int = 0
    clamped: int = 0
    #: videos read in an unusual way this run: "turned" (a display matrix), "pyav" (decord could
    #: not open it, or it was turned), "variable rate" (sampled by its frames' times)
    decoding: dict = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    unlisted: list[str] = field(default_factory=list)     # videos present that no split file names
    frames: int = 0
    seconds: float = 0.0
    file_bytes: int = 0
    nothing_to_do: bool = False
    split_protocol: str = ""
    streams: list[str] = field(default_factory=list)        # the cache's streams after this run
    streams_added: list[str] = field(default_factory=list)  # added this run to samples embedded before
    warnings: list[str] = field(default_factory=list)  # e.g. a class with no training sample
    #: image (rgb, motion, pose) -> [model seconds, frames] of this run (see stage_one_cost)
    model_seconds: dict = field(default_factory=dict)
    merge_into: Path | None = None   # a shard's run: the cache `harx merge` joins the shards into
    merged: Path | None = None       # under a launcher, the first rank: the merged cache

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def run_extract(cfg: ExtractConfig, on_progress: Callable[[ExtractProgress], None] | None = None) -> ExtractSummary:
    """Build (or resume, or confirm) the feature cache that ``cfg`` describes.

    Raises:
        HarxError subclasses for everything the user can fix (dataset, backbone, cache clash).
        KeyboardInterrupt after committing finished videos: rerun the same command to resume.
    """
    sampling = cfg.sampling  # validates the sampling options first: cheapest check
    streams = cfg.stream_infos
    index = create_dataset(cfg.dataset, cfg.root, **cfg.dataset_options)
    out = Path(cfg.out) if cfg.out else default_cache_path(index.cache_name or index.name, cfg.backbone,
                                                           sampling, cfg.input_size)
    # A finished cache is confirmed from its attributes (extract.reuse): no torch, no model.
    key = request_key(cfg.backbone, cfg.weights, cfg.device, cfg.precision, cfg.input_size)
    shard, launched = None, (launcher_shard() if cfg.launcher and not cfg.shard else None)
    if cfg.shard or launched:                # a block of the videos, into OUT.shards/ (extract.shards)
        done = None if cfg.overwrite else finished_cache(out, index, sampling, cfg.backbone, key, streams)
        if done is not None:                 # merged before: nothing for any shard to do
            return _nothing_to_do(done, index)
        if out.exists() and not cfg.overwrite:   # every rank decides alike: none waits for another
            raise HarxError(f"{out} exists and is not the finished cache of this request (other streams or "
                            "settings, or made elsewhere); extend it without --shard, or pass --overwrite to "
                            "rebuild it in shards")
        k, n = parse_shard(cfg.shard or launched[0])
        shard = _Shard(k, n, video_shards(index, n), out, index)
        out = shard_path(out, k, n)
        index = take_shard(index, shard.assignment, k)
        if launched:
            cfg = _rank_settings(cfg, *launched[1:])
    finished = None if cfg.overwrite else finished_cache(out, index, sampling, cfg.backbone, key, streams)
    if finished is not None:
        summary = _nothing_to_do(finished, index)
        summary.merge_into = shard.merge_into if shard else None
        return _merge_if_first(summary, shard, launched, cfg)
    check_writable(out)  # a bad --out fails now, not after the model loads
    from .embedding import auto_workers  # imports torch

    # Decoding workers start first, so their interpreters load while the model does.
    workers = auto_workers(resolve_device(cfg.device), cfg.num_workers)
    with VideoDecoder(num_workers=workers, timeout_s=cfg.decode_timeout_s).start() as decoder:
        if shard is not None:   # harx's split is made on the whole dataset, as one process makes it
            whole = drop_undecodable(shard.whole, decoder)
            index = take_shard(whole, shard.assignment, shard.k)
            plan = shard_plan(whole, shard.assignment)
        else:
            index = drop_undecodable(index, decoder)  # before a split of harx's is used
        summary = _build_cache(cfg, sampling, streams, index, decoder, on_progress, out, key,
                               extra_attrs={"shard": f"{shard.k}/{shard.n}", "shard_plan": plan} if shard else None)
        if shard is not None:
            summary.merge_into = shard.merge_into
    return _merge_if_first(summary, shard, launched, cfg)


class _Shard(NamedTuple):
    """This run's block of the videos (``--shard K/N`` or a launcher's rank)."""

    k: int
    n: int
    assignment: dict          # video path -> its shard, 1..n
    merge_into: Path          # the cache the shards are merged into
    whole: DatasetIndex       # the whole dataset (harx's split is made on it)


def _rank_settings(cfg: ExtractConfig, local_rank: int, local_ranks: int) -> ExtractConfig:
    """One rank of a launcher: its own GPU (``cuda:LOCAL_RANK`` where ``--device auto`` finds
    CUDA), and a share of this node's CPUs for decoding."""
    import dataclasses

    import torch

    device = cfg.device
    if device in ("auto", "cuda") and torch.cuda.is_available():
        device = f"cuda:{local_rank % torch.cuda.device_count()}"
    workers = cfg.num_workers
    if workers is None and str(device).startswith("cuda"):   # as one process takes, shared by the ranks
        workers = max(1, min(8, ((os.cpu_count() or 2) - local_ranks) // local_ranks))
    return dataclasses.replace(cfg, device=device, num_workers=workers)


def _merge_if_first(summary: "ExtractSummary", shard: _Shard | None, launched, cfg: ExtractConfig) -> "ExtractSummary":
    """Under a launcher, the first rank waits for the others' shards and merges them."""
    if launched and shard is not None and shard.k == 1:
        summary.merged = wait_and_merge(shard.merge_into, shard.n, shard.k, overwrite=cfg.overwrite)
    return summary


def _build_cache(cfg: ExtractConfig, sampling, streams: list[StreamInfo], index: DatasetIndex, decoder: VideoDecoder,
                 on_progress, out: Path, key: str, extra_attrs: dict | None = None) -> "ExtractSummary":
    """run_extract once the dataset is indexed and the decoding workers are starting; ``out`` and
    the request ``key`` are those run_extract checked the existing cache against."""
    from .backbones import create_backbone

    backbone = create_backbone(cfg.backbone, weights=cfg.weights, device=cfg.device, precision=cfg.precision,
                               input_size=cfg.input_size, maps=map_options(streams))
    streams = with_map_shape(streams, backbone.map_shape)
    settings = dict(cache_settings(index, backbone, sampling), request_key=key)
    started = time.monotonic()
    summary = ExtractSummary(out=out, dataset=index.name, unit=index.unit, backbone=backbone.name,
                             weights=backbone.weights, device=str(backbone.device), precision=backbone.precision,
                             samples_total=len(index.samples) + len(index.left_out), samples_new=0, reused=0,
                             missing=list(index.missing), unlisted=list(index.unlisted),
                             split_protocol=index.split_protocol)
    with FeatureWriter(out, settings, streams=streams, overwrite=cfg.overwrite,
                       part_seconds=cfg.part_seconds) as writer:
        summary.streams = [s.name for s in writer.streams]
        moved = writer.split_changes({s.sample_id: s.split for s in index.samples})
        if moved:
            sample_id, was, now = moved[0]
            raise CacheMismatchError(
                f"{out} holds {len(moved)} sample(s) in another split than this run would give them (e.g. "
                f"{sample_id}: {was} there, {now} now): the videos that decode have changed since it was "
                "written, and harx's split is made from them; use --overwrite to rebuild it with one split")
        _refuse_stale_samples(writer, index, out)
        videos = _group_by_video(index.samples)
        todo = OrderedDict((p, s) for p, s in videos.items() if any(x.sample_id not in writer.done_ids for x in s))
        summary.reused = sum(1 for s in index.samples if s.sample_id in writer.done_ids)
        summary.streams_added = [s.name for s in writer.streams if any(
            s.name in writer.missing_streams(x.sample_id) for x in index.samples if x.sample_id in writer.stored_splits)]
        summary.failed_before = sum(1 for s in index.samples if s.sample_id in writer.failed_ids)
        left_out = _record_left_out(writer, index, summary)
        if not todo and not left_out and writer.has_final and not writer.committed_parts():
            summary.nothing_to_do = True
        else:
            _embed_videos(cfg, backbone, todo, index, writer, summary, on_progress, started, decoder)
            writer.finalize(order=[s.sample_id for s in index.samples],
                            extra_attrs={"missing": index.missing, "device": str(backbone.device),
                                         "versions": library_versions(),
                                         "stage_one_cost": stage_one_cost(out if writer.has_final else None,
                                                                          summary.model_seconds, backbone.device),
                                         **(extra_attrs or {})})
        summary.warnings = list(writer.dropped_parts) + split_warnings(index.class_names, [
            (s.label, s.split) for s in index.samples
            if s.sample_id in writer.done_ids and s.sample_id not in writer.failed_ids])
    summary.seconds = time.monotonic() - started
    summary.file_bytes = out.stat().st_size if out.exists() else 0
    if summary.failed and summary.samples_new == 0 and summary.reused == summary.failed_before \
            and not (extra_attrs or {}).get("shard"):     # a shard of failures only: the merge decides
        sample_id, reason = summary.failed[0]
        raise HarxError(f"none of the {len(summary.failed)} sample(s) could be decoded (first: {sample_id}: "
                        f"{reason}); check that the files are videos")
    return summary


def _refuse_stale_samples(writer: FeatureWriter, index: DatasetIndex, out: Path) -> None:
    """A stream cannot be added to a sample the dataset no longer has, or whose video no longer
    decodes: every sample of a cache has every stream. Refused before any work."""
    now = {s.sample_id for s in index.samples}
    gone = {sample_id for sample_id, _, _ in index.left_out}
    stale = [sid for sid in writer.stored_splits if writer.missing_streams(sid) and (sid not in now or sid in gone)]
    if stale:
        raise CacheMismatchError(
            f"{out} holds {len(stale)} sample(s) that stream(s) {', '.join(writer.missing_streams(stale[0]))} "
            f"cannot be added to: not in the dataset now, or their videos no longer decode (e.g. {stale[0]}); use "
            "--overwrite to rebuild the cache from the videos as they are now, or --out for a new file")


def _record_left_out(writer: FeatureWriter, index: DatasetIndex, summary: ExtractSummary) -> int:
    """Record the videos that the split left out for not decoding (see :mod:`extract.probe`) as
    failures, once; returns how many were new."""
    root, new = Path(index.root), 0
    for sample_id, path, reason in index.left_out:
        if sample_id in writer.failed_ids:
            summary.reused += 1
            summary.failed_before += 1
            continue
        writer.add_failure(sample_id, _rel(path, root), reason)
        summary.failed.append((sample_id, reason))
        new += 1
    return new


def cache_settings(index: DatasetIndex, backbone: Backbone, sampling) -> dict:
    """The cache attributes that decide its numbers (checked on resume) plus descriptive ones."""
    return {
        **index_settings(index, sampling),
        "backbone": backbone.name, "weights": backbone.weights, "weights_sha256": backbone.weights_sha256,
        "embed_dim": backbone.embed_dim, "preprocess": backbone.preprocess_spec,
        "precision": backbone.precision, "device": str(backbone.device),
        "inference": f"channels_last; {backbone.folded_batchnorms} BatchNorm layers folded into their convolutions"
                     + (f"; {backbone.fused_activations} activations fused into oneDNN convolutions"
                        if backbone.fused_activations else ""),
        "versions": library_versions(),
    }


def _nothing_to_do(finished: FinishedCache, index: DatasetIndex) -> ExtractSummary:
    """The summary of a rerun whose cache already holds every sample (see extract.reuse)."""
    a = finished.attrs
    return ExtractSummary(out=finished.path, dataset=index.name, unit=index.unit, backbone=a.get("backbone", ""),
                          weights=a.get("weights", ""), device=str(a.get("device", "")),
                          precision=a.get("precision", ""), samples_total=len(index.samples), samples_new=0,
                          reused=finished.reused, failed_before=finished.failed_before, missing=list(index.missing),
                          file_bytes=finished.path.stat().st_size, nothing_to_do=True,
                          streams=list(a.get("streams") or ["rgb"]),
                          split_protocol=a.get("split_protocol") or index.split_protocol,
                          warnings=split_warnings(index.class_names, finished.labels_splits))


def _group_by_video(samples: list[VideoSample]) -> "OrderedDict[Path, list[VideoSample]]":
    videos: OrderedDict[Path, list[VideoSample]] = OrderedDict()
    for s in samples:
        videos.setdefault(s.path, []).append(s)
    return videos


def _embed_videos(cfg: ExtractConfig, backbone: Backbone, todo, index: DatasetIndex, writer: FeatureWriter,
                  summary: ExtractSummary, on_progress, started: float, decoder: VideoDecoder) -> None:
    from .backbones import attach_map_hook
    from .embedding import embed_videos

    infos = {s.name: s for s in writer.streams}
    maps = map_options(writer.streams)      # a cache with maps keeps them for every sample it gains
    if maps is not None and not backbone.map_size:
        attach_map_hook(backbone, maps.layer, maps.size)

    def images(samples: list[VideoSample]) -> tuple:
        needed = {name for s in samples for name in writer.missing_streams(s.sample_id)}
        return decode_images([info for name, info in infos.items() if name in needed])

    jobs = [DecodeJob(key=k, path=str(path), ranges=tuple(s.frame_range for s in samples), sampling=cfg.sampling,
                      max_short_side=2 * backbone.resize_short, images=images(samples))
            for k, (path, samples) in enumerate(todo.items())]
    sample_lists = list(todo.values())
    root = Path(index.root)
    label_index = {name: i for i, name in enumerate(index.class_names)}

    def progress(done: int, current: str = "") -> None:
        if on_progress is not None:
            on_progress(ExtractProgress(done, len(jobs), summary.frames, summary.samples_new, len(summary.failed),
                                        time.monotonic() - started, current))

    progress(0)
    for video in embed_videos(backbone, jobs, batch_size=cfg.batch_size, decoder=decoder):
        samples = sample_lists[video.job.key]
        if video.info is not None:  # the video opened: keep every frame that decoded
            _count_decoding(summary.decoding, video.info)
            _write_samples(writer, samples, video, root, summary, label_index, index.folds)
            summary.frames += video.n_decoded
            for name, seconds in video.seconds.items():
                done = summary.model_seconds.setdefault(name, [0.0, 0])
                done[0] += seconds
                done[1] += video.n_decoded
        else:
            for s in samples:
                if writer.missing_streams(s.sample_id):
                    _fail(writer, summary, s, root, video.error or "no frame decoded")
        writer.maybe_commit()
        progress(video.job.key + 1, video.job.path)


def _count_decoding(counts: dict, info) -> None:
    for key, unusual in (("turned", info.turns != 0), ("pyav", info.reader == "pyav"),
                         ("variable rate", info.times is not None)):
        if unusual:
            counts[key] = counts.get(key, 0) + 1


def _write_samples(writer: FeatureWriter, samples: list[VideoSample], video: EmbeddedVideo, root: Path,
                   summary: ExtractSummary, label_index: dict[str, int], folds: list[str]) -> None:
    """Give each sample of one video its rows of the embeddings; clamp ranges to what decoded.

    ``samples[k]`` asked for ``video.job.ranges[k]``; ``info`` has the ranges clamped to the
    container's frame count and the sampled indices. Decoding that stopped early (a truncated
    file, a decoder hang) clamps further, to the frames that arrived; the note says why.
    """
    info = video.info
    reason = video.error or f"the video decodes {info.n_reported} frames"
    for k, sample in enumerate(samples):
        if not writer.missing_streams(sample.sample_id):   # finished before: its video is decoded for another
            continue
        start, stop, frames, rows = video.range_rows(k)
        stored = writer.stored_frame_index(sample.sample_id)
        if stored is not None:   # a stream is added to rows written before: exactly their frames
            frames, rows = _stored_rows(sample, stored, frames, rows, reason)
        annotated = sample.frame_range
        what = "the video" if annotated is None else f"annotated frames {annotated[0] + 1}-{annotated[1]}"
        if not len(frames):
            _fail(writer, summary, sample, root, f"no frame of {what} decodes ({reason})")
            continue
        wanted = (0, info.n_reported) if annotated is None else tuple(annotated)
        note = ""
        if (start, stop) != wanted or len(frames) < len(info.indices[k]):
            note = f"{what} clamped to frames {start + 1}-{stop} ({reason})"
            summary.clamped += 1
        meta = {"sample_id": sample.sample_id, "video_id": sample.video_id or sample.sample_id,
                "path": _rel(sample.path, root), "label": sample.label, "label_index": label_index[sample.label],
                "split": sample.split, "group": sample.group, "scenario": sample.scenario,
                "range_start": start, "range_stop": stop,
                "annotated_start": -1 if annotated is None else annotated[0],
                "annotated_stop": -1 if annotated is None else annotated[1], "fps": info.fps, "note": note,
                **{fold_column(name): part for name, part in zip(folds, sample.folds)}}
        writer.add_sample(meta, {name: video.features[name][rows] for name in writer.missing_streams(sample.sample_id)},
                          frames)
        summary.samples_new += 1


def _stored_rows(sample: VideoSample, stored: np.ndarray, frames: np.ndarray, rows: np.ndarray,
                 reason: str) -> tuple[np.ndarray, np.ndarray]:
    """The decoded ``frames`` (and their ``rows``) at the frames a sample's other streams were
    written at; HarxError when some of those did not decode this time (a decoder hang now), since
    the streams of one row must stand at one frame. A sample stored cut short (a hang then) takes
    the frames it has."""
    pos = np.searchsorted(frames, stored)
    if len(frames) == 0 or pos.max(initial=0) >= len(frames) or not np.array_equal(frames[pos], stored):
        raise HarxError(f"{sample.sample_id}: decoding gave other frames than when its other streams were written "
                        f"({reason}); nothing was written for it: rerun to try again (finished work is kept), or "
                        "use --overwrite to rebuild every stream from the videos as they are now")
    return stored, rows[pos]


def _fail(writer: FeatureWriter, summary: ExtractSummary, sample: VideoSample, root: Path, reason: str) -> None:
    if sample.sample_id in writer.stored_splits:   # embedded before: another stream is being added
        raise HarxError(f"{sample.sample_id}: {reason}, but its other streams were made from it before, so "
                        f"{', '.join(writer.missing_streams(sample.sample_id))} cannot be added: rerun to try "
                        "again (finished work is kept), or use --overwrite to rebuild every stream from the videos "
                        "as they are now")
    writer.add_failure(sample.sample_id, _rel(sample.path, root), reason)
    summary.failed.append((sample.sample_id, reason))


def _rel(path: Path, root: Path) -> str:
    """Paths under the dataset root are stored relative to it, so a moved dataset still matches."""
    try:
        return str(Path(path).resolve().relative_to(Path(root).resolve()))
    except ValueError:
        return str(path)
