"""The decoding workers' frame transport: shared-memory slots, the pipe fallback, no leaks."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from decord import VideoReader

from extract.decode import DecodeJob, Frames, VideoDecoder, VideoEnd
from extract.sampling import Sampling
from videos import read_frame_index, stamp_bits, write_video


def _decode(decoder: VideoDecoder, paths: list[Path]) -> dict[str, np.ndarray]:
    """Every frame of every path, in order, as the decoder delivers them."""
    jobs = [DecodeJob(key=k, path=str(p), ranges=(None,), sampling=Sampling()) for k, p in enumerate(paths)]
    chunks: dict[str, list[np.ndarray]] = {str(p): [] for p in paths}
    with decoder:
        for event in decoder.decode(jobs):
            if isinstance(event, Frames):
                assert event.pos == sum(len(c) for c in chunks[event.job.path])
                chunks[event.job.path].append(event.frames)
            elif isinstance(event, VideoEnd):
                assert event.error is None
    return {path: np.concatenate(c) for path, c in chunks.items()}


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("transport")
    return [write_video(folder / f"v{k}.mp4", n_frames=n, size=(96, 64), seed=k)
            for k, n in enumerate((70, 33, 5))]


def test_shared_slots_and_pipe_deliver_what_decord_decodes(clips):
    """Chunks through the slots (the default), through the pipe (``ring_slots=0``), and chunks
    too large for a slot (one frame over ``chunk_bytes``, so the pipe again) are all decord's frames."""
    with VideoDecoder().start() as decoder:
        assert decoder._workers[0].ring is not None  # shared memory is the default path
    slots = _decode(VideoDecoder(chunk_frames=8), clips)
    pipe = _decode(VideoDecoder(chunk_frames=8, ring_slots=0), clips)
    oversized = _decode(VideoDecoder(chunk_bytes=1000), clips)
    for path in map(str, clips):
        expected = VideoReader(path).get_batch(list(range(len(VideoReader(path))))).asnumpy()
        for got in (slots[path], pipe[path], oversized[path]):
            np.testing.assert_array_equal(got, expected)
        bits = stamp_bits(len(expected))
        assert [read_frame_index(f, bits) for f in slots[path]] == list(range(len(expected)))


def test_a_slow_consumer_keeps_its_frames(clips):
    """Frames handed out stay valid while the worker refills their slot: the consumer holds
    every chunk of a 70-frame video (9 chunks, 3 slots) before looking at any."""
    held = _decode(VideoDecoder(chunk_frames=8, ring_slots=3), clips[:1])[str(clips[0])]
    expected = VideoReader(str(clips[0])).get_batch(list(range(70))).asnumpy()
    np.testing.assert_array_equal(held, expected)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to count open files")
def test_workers_leave_no_open_files(clips):
    """Nor do recycled ones (a fresh worker, with a fresh ring, after every video)."""
    before = set(os.listdir("/proc/self/fd"))
    for _ in range(3):
        _decode(VideoDecoder(num_workers=2, chunk_frames=8).start(), clips)
        _decode(VideoDecoder(chunk_frames=8, max_jobs_per_worker=1), clips)
    assert set(os.listdir("/proc/self/fd")) - before == set()


def test_without_shared_memory_frames_take_the_pipe(clips, monkeypatch):
    """A system that refuses shared memory (no memfd, a full /dev/shm) still decodes, by pipe."""
    def refuse(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "memfd_create", refuse, raising=False)
    decoder = VideoDecoder(chunk_frames=8).start()
    assert decoder._workers[0].ring is None
    got = _decode(decoder, clips)
    for path in map(str, clips):
        expected = VideoReader(path).get_batch(list(range(len(VideoReader(path))))).asnumpy()
        np.testing.assert_array_equal(got[path], expected)


def test_without_memfd_the_slots_live_in_a_temporary_file(clips, monkeypatch):
    """Systems without memfd_create (macOS, old kernels) share an unlinked temporary file."""
    monkeypatch.delattr(os, "memfd_create", raising=False)
    decoder = VideoDecoder(chunk_frames=8).start()
    assert decoder._workers[0].ring is not None
    got = _decode(decoder, clips)
    for path in map(str, clips):
        expected = VideoReader(path).get_batch(list(range(len(VideoReader(path))))).asnumpy()
        np.testing.assert_array_equal(got[path], expected)
