"""The decoding workers' frame transport (shared-memory slots, the pipe fallback, no leaks) and
how a video's decoded frames are cut into batches."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from decord import VideoReader

from harx.extract.decode import DecodeJob, Frames, VideoDecoder, VideoEnd
from harx.extract.embedding import plan_batches
from harx.extract.sampling import Sampling
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


def _decord_frames(path: str) -> np.ndarray:
    """Every frame of ``path`` as decord decodes it in one call: what the workers must deliver."""
    reader = VideoReader(path)
    return reader.get_batch(list(range(len(reader)))).asnumpy()


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
        expected = _decord_frames(path)
        for got in (slots[path], pipe[path], oversized[path]):
            np.testing.assert_array_equal(got, expected)
        bits = stamp_bits(len(expected))
        assert [read_frame_index(f, bits) for f in slots[path]] == list(range(len(expected)))


def test_a_slow_consumer_keeps_its_frames(clips):
    """Frames handed out stay valid while the worker refills their slot: the consumer holds
    every chunk of a 70-frame video (9 chunks, 3 slots) before looking at any."""
    held = _decode(VideoDecoder(chunk_frames=8, ring_slots=3), clips[:1])[str(clips[0])]
    expected = _decord_frames(str(clips[0]))
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
        expected = _decord_frames(path)
        np.testing.assert_array_equal(got[path], expected)


def test_without_memfd_the_slots_live_in_a_temporary_file(clips, monkeypatch):
    """Systems without memfd_create (macOS, old kernels) share an unlinked temporary file."""
    monkeypatch.delattr(os, "memfd_create", raising=False)
    decoder = VideoDecoder(chunk_frames=8).start()
    assert decoder._workers[0].ring is not None
    got = _decode(decoder, clips)
    for path in map(str, clips):
        expected = _decord_frames(path)
        np.testing.assert_array_equal(got[path], expected)


# ----------------------------------------------------------------------------- batches

@pytest.mark.parametrize("n", [1, 2, 7, 8, 9, 15, 16, 17, 56, 57, 100, 250, 401])
@pytest.mark.parametrize("pad", [0, 4])
def test_batch_plan_covers_every_frame_once(n, pad):
    plan = plan_batches(n, 8, pad)
    assert sum(take for take, _ in plan) == n and len(plan) == -(-n // 8)
    assert all(1 <= take <= padded <= 8 for take, padded in plan)
    if pad == 0:  # even sizes, nothing padded
        assert max(t for t, _ in plan) - min(t for t, _ in plan) <= 1
        assert all(take == padded for take, padded in plan)
    else:  # full batches, the last one padded to a multiple of 4
        assert all(take == padded == 8 for take, padded in plan[:-1])
        assert plan[-1][1] % 4 == 0 and plan[-1][1] - plan[-1][0] < 4


def test_long_videos_share_two_batch_shapes():
    shapes = {size for n in range(56, 2000) for size, _ in plan_batches(n, 8)}
    assert shapes == {7, 8}
    assert plan_batches(250, 8) == [(8, 8)] * 26 + [(7, 7)] * 6


def test_padded_batches_give_the_same_embeddings(clips):
    """The GPU's padding (here forced on the CPU) changes no embedding; frames come from the
    video itself, so no video's numbers depend on another's."""
    from harx.extract.backbones import create_backbone
    from harx.extract.embedding import embed_videos

    backbone = create_backbone("test_efficientnet", weights="none", device="cpu", precision="fp32")
    jobs = [DecodeJob(key=k, path=str(p), ranges=(None,), sampling=Sampling()) for k, p in enumerate(clips)]
    plain = {v.job.path: v.embeddings for v in embed_videos(backbone, jobs, batch_size=8)}
    padded = {v.job.path: v.embeddings for v in embed_videos(backbone, jobs, batch_size=8, pad_multiple=4)}
    for path in plain:
        assert plain[path].shape == padded[path].shape == (len(VideoReader(path)), backbone.embed_dim)
        np.testing.assert_allclose(padded[path], plain[path], atol=1e-5)


HANGING_CONSUMER = """
import sys, time
from harx.extract.decode import DecodeJob, VideoDecoder
from harx.extract.sampling import Sampling
job = DecodeJob(key=0, path=sys.argv[1], ranges=(None,), sampling=Sampling(), max_short_side=None)
with VideoDecoder(num_workers=1, timeout_s=600) as decoder:
    for event in decoder.decode([job]):
        pass
"""


def test_a_hung_worker_ends_when_harx_is_killed(tmp_path):
    """kill -9 of harx while its decoding worker hangs in decord (simulated): the worker must not
    live on as an orphan."""
    import signal
    import subprocess
    import sys
    import time

    video = write_video(tmp_path / "stuck.mp4", n_frames=12, size=(64, 48), seed=3)
    env = dict(os.environ, HARX_FAULT_HANG="stuck:0")     # the worker hangs at frame 0, for ever
    proc = subprocess.Popen([sys.executable, "-c", HANGING_CONSUMER, str(video)], env=env)
    workers: list[int] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not workers:
        time.sleep(0.2)
        for task in Path(f"/proc/{proc.pid}/task").glob("*"):
            try:
                workers += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                pass
    assert workers, "no decoding worker started"
    time.sleep(2.0)                                        # let it reach the hang
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    def alive(pid: int) -> bool:
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0] != "Z"
        except (OSError, IndexError):
            return False

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(alive(p) for p in workers):
        time.sleep(0.1)
    leftover = [p for p in workers if alive(p)]
    for p in leftover:
        os.kill(p, signal.SIGKILL)
    assert not leftover, "a decoding worker outlived its killed parent"
