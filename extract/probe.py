"""Find the videos that do not decode before harx makes a split, so none takes a place in it.

Without this, a 0-byte clip was given a split like any video, then failed: a class with 5
videos, one broken, could end with no training video and the summary still counted 5.

A probe is a decode job with no frame range, run by the decoding workers: the worker opens the
file (decord reads its header and decodes frame 0) and stops there, so a file that hangs costs
one ``decode_timeout_s``, never the run. Opening, not decoding a sampled frame, is the test:
decord's read-ahead makes decoding a nearly empty truncated file a race, while opening it is
stable, and the split must be the same on every run. A probe costs a small fraction of
embedding the clip (``benchmarks/RESULTS.md``). A rerun probes again (the answer is the same).
"""

from __future__ import annotations

from pathlib import Path

from harx.features.errors import HarxError

from .datasets import DatasetIndex
from .decode import DecodeJob, VideoDecoder, VideoEnd, VideoStart
from .sampling import Sampling


def probe_videos(decoder: VideoDecoder, paths: list[Path], attempts: int = 3) -> dict[Path, str]:
    """The videos among ``paths`` that do not open, with the reason.

    A video fails only if it fails ``attempts`` times: on a short truncated file, decord's
    read-ahead thread may meet the cut before the first frame is out, or not (4 opens in 30
    failed on a 26-frame MJPEG AVI cut at 70 %), and the split must not depend on that race.
    A hang is not tried again: it costs a whole timeout each time.
    """
    failed = {path: "" for path in paths}
    for _ in range(max(1, attempts)):
        todo = [path for path, why in failed.items() if not why.startswith("decoder hung")]
        if not todo:
            break
        jobs = [DecodeJob(key=k, path=str(path), ranges=(), sampling=_NO_FRAMES)
                for k, path in enumerate(todo)]
        for event in decoder.decode(jobs):
            path = todo[event.job.key]
            if isinstance(event, VideoStart):
                del failed[path]
            elif isinstance(event, VideoEnd) and path in failed:
                failed[path] = event.error or "the video does not open"
    return failed


_NO_FRAMES = Sampling()  # a probe job has no range: it opens the file and decodes no more


def drop_undecodable(index: DatasetIndex, decoder: VideoDecoder) -> DatasetIndex:
    """``index`` split again without the videos that do not decode, where harx made the split.

    An official split (KTH's, a manifest's split column) is kept as given: its failed videos
    are recorded by the pipeline as it goes. The probe's answer depends on the files only, so a
    rerun (a resumed extraction) makes the same split. A video that opens but then fails in the
    pipeline (cut before its first sampled frame) keeps its place and is recorded as a failure;
    the summary's warnings name a class that this leaves without a split's samples.

    Raises:
        HarxError: no video decodes at all.
    """
    if index.resplit is None:
        return index
    paths = sorted({s.path for s in index.samples})
    failed = probe_videos(decoder, paths)
    if not failed:
        return index
    if len(failed) == len(paths):  # worded as the pipeline says it of an official split
        first = index.samples[0]
        raise HarxError(f"none of the {len(index.samples)} sample(s) could be decoded (first: {first.sample_id}: "
                        f"{failed[first.path]}); check that the files are videos")
    return index.resplit(failed)


__all__ = ["drop_undecodable", "probe_videos"]
