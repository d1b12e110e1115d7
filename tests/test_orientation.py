"""Videos whose container says to turn them (phone portrait clips) come out upright, everywhere.

decord 0.6 fails every frame of a quarter-turned video, so before this every portrait phone clip
was a failed sample. The expected geometry is FFmpeg's: a display rotation of +90 degrees turns
the picture counterclockwise, so the coded frame's top rows (where the test videos stamp the frame
number) end up as the left columns; -90: the right columns; 180: the bottom rows, read backwards.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import TINY, decode_whole
from harx.extract.orientation import display_turns, quarter_turns
from harx.extract.stream import FrameStream
from videos import read_frame_index, stamp_bits, write_video

N_FRAMES, SIZE = 30, (96, 48)          # (width, height) coded; 48 high: decord alone fails it
COUNTERCLOCKWISE = {90: 1, -90: 3, 180: 2}   # FFmpeg's autorotation, as quarter turns of np.rot90


@pytest.fixture(scope="module")
def turned(tmp_path_factory) -> dict[int, Path]:
    """The same encoded frames, with no display matrix (0) and with each turn."""
    folder = tmp_path_factory.mktemp("turned")
    return {r: write_video(folder / f"r{r}.mp4", N_FRAMES, SIZE, rotation=r, seed=3) for r in (0, 90, -90, 180)}


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_turned_videos_decode_upright_frame_for_frame(turned, rotation):
    assert display_turns(turned[rotation]) == COUNTERCLOCKWISE[rotation]
    start, frames, end = decode_whole(turned[rotation])
    _, plain, _ = decode_whole(turned[0])
    assert end.error is None and len(frames) == N_FRAMES
    width, height = SIZE
    shown = (height, width) if rotation == 180 else (width, height)    # (height, width) on screen
    assert frames.shape == (N_FRAMES, shown[0], shown[1], 3) and start.info.size == start.info.source_size == shown
    # the same pixels as the unturned file, turned as FFmpeg's players turn them
    np.testing.assert_array_equal(frames, np.rot90(plain, COUNTERCLOCKWISE[rotation], axes=(1, 2)))
    stamp_edge = {90: lambda f: np.rot90(f, -1), -90: lambda f: np.rot90(f, 1), 180: lambda f: np.rot90(f, 2)}
    bits = stamp_bits(N_FRAMES)
    assert [read_frame_index(stamp_edge[rotation](f), bits) for f in frames] == list(range(N_FRAMES))


def test_a_turned_video_is_scaled_by_its_short_side_upright(turned):
    start, frames, end = decode_whole(turned[-90], max_short_side=32)      # 96x48 coded, 48x96 shown
    assert end.error is None and frames.shape == (N_FRAMES, 64, 32, 3)
    assert start.info.size == (64, 32) and start.info.source_size == (96, 48)


def test_motion_images_of_a_turned_video_are_the_turned_motion_images(turned):
    images = (("rgb", "rgb", 0, 1.0), ("motion", "motion", 2, 1.0))
    _, frames, end = decode_whole(turned[-90], images=images)
    _, plain, _ = decode_whole(turned[0], images=images)
    assert end.error is None and frames.shape[-1] == 6
    np.testing.assert_array_equal(frames, np.rot90(plain, 3, axes=(1, 2)))


def test_reading_every_frame_with_pyav_turns_them_the_same_way(turned):
    _, decoded, _ = decode_whole(turned[90])
    with FrameStream(turned[90]) as stream:
        assert (stream.width, stream.height) == (SIZE[1], SIZE[0])
        frames = np.stack(list(stream))
    assert frames.shape == decoded.shape
    assert np.abs(frames.astype(int) - decoded).mean() < 3      # two colour conversions, same picture


def test_no_matrix_or_an_unreadable_file_means_no_turn(turned, tmp_path):
    assert display_turns(turned[0]) == 0
    (tmp_path / "junk.mp4").write_bytes(b"not a video")
    assert display_turns(tmp_path / "junk.mp4") == 0
    assert display_turns(tmp_path / "clip.avi") == 0          # AVI cannot carry a turn: not even opened
    assert [quarter_turns(d) for d in (0, 90, -90, 180, -180, 89.6, None)] == [0, 1, 3, 2, 2, 1, 0]


def test_a_folder_of_portrait_phone_clips_extracts(tmp_path):
    """Before: every sample failed ("The size must exactly match")."""
    from harx.extract import make_config, run_extract
    from harx.features import FeatureStore

    root = tmp_path / "clips"
    for k in range(4):
        for label in ("wave", "clap"):
            write_video(root / label / f"p{k}_{label}.mp4", 16, SIZE, rotation=-90, seed=k + 10 * len(label))
    summary = run_extract(make_config(dataset="folder", root=root, out=tmp_path / "c.h5", **TINY))
    assert summary.failed == [] and summary.samples_new == 8
    assert summary.decoding == {"turned": 8, "pyav": 8}              # said in the summary
    assert len(FeatureStore(tmp_path / "c.h5")) == 8


def test_a_real_kth_clip_filmed_portrait_decodes_as_the_original_turned(realdata, tmp_path):
    """A real clip's packets, unchanged, in a MOV whose matrix says "turn -90" (how a phone stores
    portrait video): harx must deliver the original's frames turned clockwise."""
    import av

    original = realdata / "kth" / "jogging" / "person01_jogging_d1_uncomp.avi"
    if not original.is_file():
        pytest.skip(f"{original} absent")
    portrait = tmp_path / "portrait.mov"
    with av.open(str(original)) as source, av.open(str(portrait), "w") as out:
        stream = out.add_stream_from_template(source.streams.video[0])
        stream.set_display_rotation(-90)
        for packet in source.demux(source.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    _, want, _ = decode_whole(original)
    _, got, end = decode_whole(portrait)
    assert end.error is None and got.shape == (len(want), 160, 120, 3)
    np.testing.assert_array_equal(got, np.rot90(want, 3, axes=(1, 2)))
