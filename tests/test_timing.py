"""Videos whose frame rate varies are sampled and timed by their frames' own times."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import decode_whole
from harx.extract.decode import DecodeJob, VideoDecoder, VideoStart
from harx.extract.sampling import Sampling
from videos import make_frames, read_frame_index, stamp_bits, write_frames, write_video

# 30 frames a second for one second, then 10 a second for three (a phone in low light)
TIMES_MS = [round(i * 1000 / 30) for i in range(30)] + [1000 + 100 * i for i in range(30)]


def _decode(path, **job):
    start, frames, _ = decode_whole(path, **job)
    return start.info, [read_frame_index(f, stamp_bits(60)) for f in frames]


@pytest.mark.parametrize("suffix, codec", [(".mp4", "libx264"), (".webm", "libvpx-vp9")])
def test_fps_sampling_follows_the_frames_times(tmp_path, suffix, codec):
    """--fps 5: the frame shown every 0.2 s. By frame count at the stated or average rate, the
    slow part would be sampled too sparsely (the WebM states 30 frames a second)."""
    path = write_frames(tmp_path / f"vfr{suffix}", make_frames(60, (96, 64)), fps=30, codec=codec, times_ms=TIMES_MS)
    info, got = _decode(path, sampling=Sampling(target_fps=5))
    assert got == [0, 6, 12, 18, 24] + list(range(30, 60, 2))
    assert info.times is not None and info.times[30] == pytest.approx(1.0, abs=0.002)
    assert info.fps == pytest.approx(59 / 3.9, rel=0.01)
    assert info.seconds(45) == pytest.approx(2.5, abs=0.002)


def test_a_constant_rate_keeps_frame_number_sampling(tmp_path, realdata):
    steady = write_video(tmp_path / "steady.mp4", 60, (96, 64), fps=30)
    info, got = _decode(steady, sampling=Sampling(target_fps=5))
    assert info.times is None and got == list(range(0, 60, 6))
    # a real UCF101 AVI with packed B-frames: decord's times for it are garbage; never asked
    clip = realdata / "ucf101" / "Shotput" / "v_Shotput_g05_c02.avi"
    if clip.is_file():
        info, got = _decode(clip, sampling=Sampling(target_fps=5))
        assert info.times is None and info.fps == 25.0


def test_windows_of_a_varying_rate_video_are_seconds_long(tmp_path):
    path = write_frames(tmp_path / "vfr.mp4", make_frames(60, (96, 64)), fps=30, times_ms=TIMES_MS)
    with VideoDecoder() as decoder:
        job = DecodeJob(key=0, path=str(path), ranges=(), sampling=Sampling(), windows=(2.0, 1.0))
        info = next(e for e in decoder.decode([job]) if isinstance(e, VideoStart)).info
    assert info.ranges == [(0, 40), (30, 50), (40, 60)]          # [0, 2), [1, 3), [2, 4) seconds
    assert [info.seconds(a) for a, _ in info.ranges] == pytest.approx([0.0, 1.0, 2.0], abs=0.002)


def test_time_sampling_of_an_even_rate_is_frame_number_sampling():
    """Away from float32 ties, the two agree, so a video is sampled alike whichever path it takes."""
    for n, fps, target in ((100, 25, 5), (95, 25, 5), (300, 29.97, 7), (61, 30, 4), (50, 24, 30), (1001, 59.94, 10)):
        times = np.arange(n) / fps
        for sampling in (Sampling(target_fps=target), Sampling(target_fps=target, max_frames=8), Sampling(every=3)):
            for start, stop in ((0, n), (10, n - 1), (3, n // 2 + 3)):
                np.testing.assert_array_equal(sampling.indices_at(start, stop, times), sampling.indices(start, stop, fps))


class _Times:
    """A reader that only tells times, as decord gives them (float32 seconds)."""

    def __init__(self, starts, fps):
        self.starts, self.fps = np.asarray(starts), fps

    def __len__(self):
        return len(self.starts)

    def get_avg_fps(self):
        return self.fps

    def get_frame_timestamp(self, indices):
        s = self.starts[indices].astype(np.float32)
        return np.stack([s, s + np.float32(1 / self.fps)], axis=1)


@pytest.mark.parametrize("starts, fps, varies", [
    (np.arange(108_000) / 29.97, 29.97, False),                  # an hour at 29.97, float32 times
    (np.round(np.arange(18_000) / 30, 3), 30, False),             # ten minutes in whole milliseconds
    (np.round(np.arange(600) / 29.97, 3) + 1.5, 29.97, False),    # starting at 1.5 s
    (np.array(TIMES_MS) / 1000, 30, True),                        # 30 then 10 a second
    (np.array(TIMES_MS) / 1000, 15.13, True),
    (np.r_[-9.2e18, np.arange(1, 300) / 30], 30, False),          # a first frame with no time (AV_NOPTS)
    (np.r_[np.arange(299) / 30, 1e9], 30, False),                 # one absurd time
    (np.r_[np.arange(150) / 30, 20 + np.arange(150) / 30], 30, False),   # a 15 s hole: broken times
])
def test_which_times_count_as_a_varying_rate(starts, fps, varies):
    from harx.extract.timing import frame_times

    times = frame_times(_Times(starts, fps), "clip.mp4")
    assert (times is not None) == varies
    assert frame_times(_Times(starts, fps), "clip.avi") is None            # AVI: never asked


def test_a_long_constant_rate_matroska_file_keeps_frame_numbers(tmp_path):
    """Matroska stores whole milliseconds: 29.97 fps comes back as steps of 33 and 34 ms."""
    path = write_video(tmp_path / "steady.mkv", 600, (64, 48), fps=29.97, stamp=False)
    info, _ = _decode(path, sampling=Sampling(target_fps=5, max_frames=4))
    assert info.times is None


def test_windows_in_seconds_are_the_frame_windows_for_an_even_rate():
    from harx.extract.sampling import sliding_windows, sliding_windows_at

    for n in range(1, 400, 7):
        for fps, window, stride in ((25, 2, 1), (30, 1, 0.5), (10, 3, 3), (60, 4, 1)):
            assert sliding_windows_at(np.arange(n) / fps, window, stride) == sliding_windows(n, fps, window, stride)
