"""Videos decord cannot open (AV1) decode through PyAV, with decord's frame numbering."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from decord import VideoReader

from conftest import TINY, decode_whole
from harx.extract.pyav_reader import PyAVReader
from videos import make_frames, read_frame_index, stamp_bits, write_video

needs_av1_encoder = pytest.mark.skipif("libsvtav1" not in av.codecs_available,
                                       reason="this PyAV has no AV1 encoder to write test clips")


@pytest.fixture(scope="module")
def b_frames(tmp_path_factory) -> Path:
    """H.264 with B-frames (presentation order differs from decoding order) and short GOPs."""
    path = tmp_path_factory.mktemp("pyav") / "bframes.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25, options={"bf": "3", "g": "12", "crf": "18"})
        stream.width, stream.height, stream.pix_fmt = 128, 96, "yuv420p"
        for i, rgb in enumerate(make_frames(100, (128, 96))):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


@pytest.mark.parametrize("indices", [[0, 1, 2, 3], [50, 10, 99], [5, 7, 9, 90, 91, 2], list(range(100))])
def test_frames_and_numbers_are_decords(b_frames, indices):
    """Forwards, backwards (a seek to the keyframe before), far ahead, every frame: the same
    frames as decord, numbered the same, to the last bit."""
    ours, theirs = PyAVReader(str(b_frames)), VideoReader(str(b_frames))
    assert len(ours) == len(theirs) == 100 and ours.get_avg_fps() == theirs.get_avg_fps() == 25
    got = ours.get_batch(indices).asnumpy()
    np.testing.assert_array_equal(got, theirs.get_batch(indices).asnumpy())
    assert [read_frame_index(f, stamp_bits(100)) for f in got] == indices


def _encode(path: Path, options: dict, codec: str = "libx264", n: int = 100, fmt: str | None = None) -> Path:
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=25, options=options)
        stream.width, stream.height, stream.pix_fmt = 128, 96, "yuv420p"
        for i, rgb in enumerate(make_frames(n, (128, 96))):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def _trimmed(source: Path, path: Path, frames: int) -> Path:
    """``source``'s packets moved ``frames`` frames earlier: an MP4 edit list then hides them, as
    a copy trimmed without re-encoding does (``ffmpeg -ss ... -c copy``)."""
    with av.open(str(source)) as src, av.open(str(path), "w") as out:
        stream = out.add_stream_from_template(src.streams.video[0])
        step = int(1 / (src.streams.video[0].time_base * 25))
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.pts, packet.dts = packet.pts - frames * step, packet.dts - frames * step
                packet.stream = stream
                out.mux(packet)
    return path


@pytest.mark.parametrize("kind", ["open_gop", "open_gop_hevc", "mpegts", "trimmed"])
def test_every_frame_found_by_seeking_backwards(tmp_path, monkeypatch, kind):
    """One frame at a time from the last to the first, every request a seek: open GOPs (frames
    shown before a keyframe are decoded after it), MPEG-TS (seeks by byte position), an MP4
    trimmed by an edit list (its first packets are never shown)."""
    import harx.extract.pyav_reader as pyav_reader

    monkeypatch.setattr(pyav_reader, "_SEEK_AHEAD", 0)
    gop = {"x264-params": "open-gop=1:keyint=12:bframes=3"}
    path, first = {
        "open_gop": lambda: (_encode(tmp_path / "v.mp4", gop), 0),
        "open_gop_hevc": lambda: (_encode(tmp_path / "v.mp4", {"x265-params": "open-gop=1:keyint=12:log-level=none"},
                                          codec="libx265"), 0),
        "mpegts": lambda: (_encode(tmp_path / "v.ts", {"g": "12"}, fmt="mpegts"), 0),
        "trimmed": lambda: (_trimmed(_encode(tmp_path / "full.mp4", gop), tmp_path / "v.mp4", 3), 3),
    }[kind]()
    reader = PyAVReader(str(path))
    assert len(reader) == 100 - first
    got = [read_frame_index(reader[i], stamp_bits(100)) for i in reversed(range(len(reader)))]
    assert got == list(reversed(range(first, 100)))


def test_out_of_range_and_not_a_video(b_frames, tmp_path):
    with pytest.raises(IndexError):
        PyAVReader(str(b_frames)).get_batch([100])
    (tmp_path / "x.mp4").write_bytes(b"no video here")
    with pytest.raises(av.FFmpegError):
        PyAVReader(str(tmp_path / "x.mp4"))


@needs_av1_encoder
def test_an_av1_video_decodes_in_the_workers_scaled_with_motion_and_upright(tmp_path):
    n = 30
    with pytest.raises(Exception):                        # why this exists: decord cannot open AV1
        VideoReader(str(write_video(tmp_path / "probe.mp4", 4, (96, 64), codec="libsvtav1")))
    plain = write_video(tmp_path / "plain.mp4", n, (96, 64), codec="libsvtav1")
    start, frames, end = decode_whole(plain)
    assert end.error is None and frames.shape == (n, 64, 96, 3) and start.info.n_reported == n
    assert [read_frame_index(f, stamp_bits(n)) for f in frames] == list(range(n))
    start, small, end = decode_whole(plain, max_short_side=32, images=(("rgb", "rgb", 0, 1.0), ("motion", "motion", 2, 1.0)))
    assert end.error is None and small.shape == (n, 32, 48, 6)
    turned = write_video(tmp_path / "turned.mp4", n, (96, 64), codec="libsvtav1", rotation=-90)
    _, upright, end = decode_whole(turned)
    assert end.error is None
    np.testing.assert_array_equal(upright, np.rot90(frames, 3, axes=(1, 2)))


@needs_av1_encoder
def test_a_truncated_av1_video_keeps_the_frames_before_the_cut(tmp_path):
    # Matroska: its index is not needed to read on (an MP4 cut loses its moov box: nothing opens)
    path = write_video(tmp_path / "cut.mkv", 60, (96, 64), codec="libsvtav1", pattern="noise")
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * 0.6)])
    _, frames, end = decode_whole(path)
    assert 0 < len(frames) < 60
    assert [read_frame_index(f, stamp_bits(60)) for f in frames] == list(range(len(frames)))


@needs_av1_encoder
def test_a_folder_of_av1_clips_extracts_and_a_non_video_still_fails(tmp_path):
    from harx.extract import make_config, run_extract

    root = tmp_path / "clips"
    for k in range(3):
        for label in ("wave", "clap"):
            write_video(root / label / f"g{k}_{label}.mp4", 12, (96, 64), codec="libsvtav1", seed=k + 7 * len(label))
    (root / "clap" / "g9_clap.mp4").write_bytes(b"not a video at all")
    summary = run_extract(make_config(dataset="folder", root=root, out=tmp_path / "c.h5", **TINY))
    assert summary.samples_new == 6
    assert [(sid, "cannot open video" in why) for sid, why in summary.failed] == [("clap/g9_clap", True)]


def test_every_reader_takes_the_video_decord_takes_not_a_cover_picture(tmp_path):
    """A cover picture stored as the first video stream (as downloaders embed thumbnails): PyAV's
    first video stream is the picture; FFmpeg's best stream, which decord takes, is the video."""
    from harx.extract.orientation import display_turns
    from harx.extract.stream import FrameStream

    path = tmp_path / "cover.mkv"
    with av.open(str(path), "w") as container:
        cover = container.add_stream("mjpeg", rate=1)
        cover.width, cover.height, cover.pix_fmt = 32, 32, "yuvj420p"
        video = container.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 96, 64, "yuv420p"
        picture = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 200, np.uint8), format="rgb24")
        container.mux(cover.encode(picture.reformat(format="yuvj420p")))
        container.mux(cover.encode(None))
        for rgb in make_frames(20, (96, 64)):
            container.mux(video.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(video.encode(None))
    with av.open(str(path)) as container:
        assert container.streams.video[0].codec_context.name == "mjpeg"     # the trap
    want = VideoReader(str(path)).get_batch(list(range(20))).asnumpy()
    np.testing.assert_array_equal(PyAVReader(str(path)).get_batch(list(range(20))).asnumpy(), want)
    with FrameStream(path) as stream:
        assert (stream.width, stream.height) == (96, 64) and len(list(stream)) == 20
    assert display_turns(path) == 0
