"""``harx predict``: runs applied to new videos, timelines, JSON/CSV, annotated videos, bad input.

The run is trained (tiny backbone, seeded random weights) on a small folder dataset whose classes
differ in colour, so a video that changes colour half way must show the change in its timeline.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from harx.cli import app
from conftest import TINY
from harx.extract import make_config, run_extract
from harx.extract.encode import write_h264
from harx.extract.sampling import sliding_windows
from harx.features.errors import CacheMismatchError, DatasetNotFoundError, InvalidOptionError
from harx.features.reader import FeatureStore
from harx.temporal import TemporalHead, fit
from harx.temporal.annotate import class_colors, frame_labels
from harx.temporal.predict import Predictor, find_videos
from harx.temporal.predictions import FramePrediction, VideoPrediction, WindowPrediction

runner = CliRunner()
COLOURS = {"red": (200, 40, 40), "green": (40, 180, 60), "blue": (40, 60, 200)}
FPS = 10


def colour_frames(colour: str, n: int, size=(64, 48), seed: int = 0, start: int = 0) -> list[np.ndarray]:
    """Frames of one class: its background colour (shifted a little per seed), a moving square, noise."""
    rng = np.random.default_rng(seed)
    w, h = size
    base = np.clip(np.array(COLOURS[colour]) + rng.integers(-25, 25, 3), 0, 255)
    frames = []
    for t in range(start, start + n):
        img = np.empty((h, w, 3), np.float32)
        img[:] = base
        x, y = (3 * t) % max(1, w - 12), (2 * t) % max(1, h - 12)
        img[y:y + 12, x:x + 12] = 235
        img += rng.normal(0, 6, img.shape)
        frames.append(np.clip(img, 0, 255).astype(np.uint8))
    return frames


def write_colour_video(path: Path, colours: list[tuple[str, int]], size=(64, 48), seed: int = 0) -> Path:
    frames, t = [], 0
    for colour, n in colours:
        frames += colour_frames(colour, n, size, seed, start=t)
        t += n
    path.parent.mkdir(parents=True, exist_ok=True)
    write_h264(path, frames, size, FPS, crf=18, preset="ultrafast")
    return path


def colour_dataset(root: Path) -> Path:
    """A folder dataset of 3 colours x 6 groups (20 frames at 10 fps each; groups 0-3 train, 4 val,
    5 test) with its manifest."""
    rows = []
    for colour in COLOURS:
        for g in range(6):
            rel = f"{colour}/g{g}.mp4"
            write_colour_video(root / rel, [(colour, 20)], seed=10 * g + len(colour))
            rows.append((rel, colour, f"g{g}", "train" if g < 4 else ("val" if g == 4 else "test")))
    with open(root / "manifest.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "group", "split"])
        w.writerows(rows)
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The colour dataset, its cache (rgb and motion), and a vote run on both streams (late
    fusion) and an lstm run on rgb (colour is all these videos differ in) fitted on it."""
    root = colour_dataset(tmp_path_factory.mktemp("colours"))
    out = tmp_path_factory.mktemp("cache") / "colours.h5"
    run_extract(make_config(dataset="folder", root=root, out=out, **TINY))
    runs = tmp_path_factory.mktemp("runs")
    vote = fit("vote", features=out, out=runs / "vote", epochs=40, seed=0)
    lstm = fit("lstm", features=out, out=runs / "lstm", epochs=40, seed=0, streams="rgb")
    return {"root": root, "cache": out, "vote": vote.path, "lstm": lstm.path}


# ----------------------------------------------------------------------------- windows

def test_sliding_windows_cover_the_video():
    assert sliding_windows(100, 25, 2.0, 1.0) == [(0, 50), (25, 75), (50, 100)]
    assert sliding_windows(110, 25, 2.0, 1.0)[-1] == (60, 110)       # the tail gets its own window
    assert sliding_windows(30, 25, 2.0, 1.0) == [(0, 30)]             # shorter than a window: one
    assert sliding_windows(0, 25, 2.0, 1.0) == []
    assert sliding_windows(100, 0, 2.0, 1.0) == [(0, 50), (25, 75), (50, 100)]  # unknown fps: 25
    with pytest.raises(InvalidOptionError):
        sliding_windows(100, 25, 0, 1.0)


def test_frame_labels_follow_nearest_window_or_latest_frame():
    names = ["a", "b"]
    p = VideoPrediction(path="x", label="a", confidence=0.6, timeline=[
        WindowPrediction(0, 10, 0, 1, "a", 0.9, 10), WindowPrediction(5, 15, 0.5, 1.5, "b", 0.7, 10)])
    labels, conf = frame_labels(p, names, 15)
    assert labels.tolist() == [0] * 8 + [1] * 7          # centres 4.5 and 9.5: frame 7 is nearer 4.5
    assert conf[0] == pytest.approx(0.9) and conf[-1] == pytest.approx(0.7)
    p.frames = [FramePrediction(0, 0, "b", 0.8), FramePrediction(4, 0.4, "a", 0.6)]
    labels, _ = frame_labels(p, names, 8)
    assert labels.tolist() == [1, 1, 1, 1, 0, 0, 0, 0]


# ----------------------------------------------------------------------------- predictions

@pytest.mark.parametrize("head", ["vote", "lstm"])
def test_prediction_equals_the_head_on_cached_features(trained, head, tmp_path):
    """A test video predicted from its file gets exactly the probabilities the head gives its
    cached embeddings: predict decodes, samples and embeds as stage one did, and calibrates with
    the run's temperature, so they are those of the run's predictions.csv."""
    from harx.temporal.calibration import apply_temperature

    store = FeatureStore(trained["cache"])
    i = int(store.indices("test")[0])
    record = store.sample(i)
    predictor = Predictor(trained[head], window_s=10.0, device="cpu")
    (p,) = predictor.predict([trained["root"] / record.path])
    assert p.ok and len(p.timeline) == 1 and p.timeline[0].n_embedded == record.n_frames
    metrics = json.loads((trained[head] / "metrics.json").read_text())
    assert predictor.temperature == metrics["calibration"]["temperature"]   # 1 when val is all right
    assert predictor.protocol["temperature"] == predictor.temperature
    assert predictor.config["streams"] == {"vote": ["rgb", "motion"], "lstm": ["rgb"]}[head]
    raw = predictor.head.predict_proba([store.frames(i, stream=predictor.config["streams"])])
    expected = apply_temperature(raw, predictor.temperature)[0]
    got = np.array([p.probabilities[c] for c in predictor.class_names])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    with open(trained[head] / "predictions.csv", newline="") as f:
        (row,) = [r for r in csv.DictReader(f) if r["sample_id"] == record.sample_id]
    np.testing.assert_allclose(got, [float(row[f"p_{c}"]) for c in predictor.class_names], atol=1e-4)
    assert p.label == record.label == row["predicted_label"]
    # these runs' 3 val samples are all right (T = 1); a run with a fitted T gets it applied
    warm = tmp_path / "warm"
    shutil.copytree(trained[head], warm)
    meta = TemporalHead.read_checkpoint(warm / "best.pt")["meta"]
    predictor.head.save(warm / "best.pt", dict(meta, calibration={"method": "temperature", "temperature": 2.5}))
    (q,) = Predictor(warm, window_s=10.0, device="cpu").predict([trained["root"] / record.path])
    got = np.array([q.probabilities[c] for c in predictor.class_names])
    np.testing.assert_allclose(got, apply_temperature(raw, 2.5)[0], atol=1e-5)
    assert q.label == p.label and q.confidence < p.confidence


@pytest.mark.parametrize("head", ["vote", "lstm"])
def test_timeline_shows_a_change_of_action(trained, tmp_path, head):
    video = write_colour_video(tmp_path / "red then blue.mp4", [("red", 40), ("blue", 40)], seed=77)
    (p,) = Predictor(trained[head], window_s=2.0, stride_s=1.0, device="cpu").predict([video])
    assert [w.start_s for w in p.timeline] == [0, 1, 2, 3, 4, 5, 6]
    assert p.timeline[0].label == "red" and p.timeline[-1].label == "blue"
    assert {k for k, _ in p.top_k[:2]} == {"red", "blue"}
    assert sum(p.probabilities.values()) == pytest.approx(1.0, abs=1e-4)
    if head == "vote":  # per-frame labels: every frame embedded, labelled on its own
        assert [f.frame for f in p.frames] == list(range(80))
        assert p.frames[0].label == "red" and p.frames[-1].label == "blue"
    else:
        assert p.frames is None


def test_default_window_is_the_median_training_sample(trained):
    predictor = Predictor(trained["lstm"], device="cpu")
    assert predictor.window_s == pytest.approx(2.0) and predictor.stride_s == pytest.approx(1.0)
    assert predictor.protocol["sampling"] == "every 1 frame(s)"


# ----------------------------------------------------------------------------- CLI

def _json_lines(result) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def test_json_parses_and_matches_the_table(trained, tmp_path):
    videos = [write_colour_video(tmp_path / "a.mp4", [("green", 30)], seed=5),
              write_colour_video(tmp_path / "b.mp4", [("red", 25)], seed=6)]
    args = ["predict", *map(str, videos), "--run", str(trained["lstm"]), "--top-k", "2", "--device", "cpu"]
    as_json = runner.invoke(app, [*args, "--json"])
    assert as_json.exit_code == 0, as_json.output
    objects = _json_lines(as_json)
    assert [Path(o["path"]).name for o in objects] == ["a.mp4", "b.mp4"]
    table = runner.invoke(app, args)
    assert table.exit_code == 0, table.output
    for o in objects:
        assert len(o["top_k"]) == 2 and o["top_k"][0]["label"] == o["label"]
        assert o["protocol"]["head"] == "lstm" and o["protocol"]["window_s"] == pytest.approx(2.0)
        assert o["video"] == {"fps": 10.0, "n_frames": 30 if o["path"].endswith("a.mp4") else 25, "width": 64,
                              "height": 48, "duration_s": o["video"]["duration_s"],
                              "decoder": "decord", "turned_clockwise_deg": 0, "variable_frame_rate": False}
        row = next(line for line in table.stdout.splitlines() if Path(o["path"]).name in line)
        assert o["label"] in row and f"{100 * o['confidence']:.1f}%" in row
    assert [o["label"] for o in objects] == ["green", "red"]


def test_annotated_video_keeps_frames_size_and_fps_and_shows_the_label(trained, tmp_path):
    from decord import VideoReader

    src = write_colour_video(tmp_path / "in.mp4", [("blue", 36)], size=(160, 120), seed=9)
    out = tmp_path / "out" / "labelled.mp4"
    result = runner.invoke(app, ["predict", str(src), "--run", str(trained["lstm"]), "--annotate", str(out),
                                 "--device", "cpu"])
    assert result.exit_code == 0, result.output
    a, b = VideoReader(str(out)), VideoReader(str(src))
    assert len(a) == len(b) == 36 and a[0].shape == b[0].shape == (120, 160, 3)
    assert a.get_avg_fps() == pytest.approx(b.get_avg_fps())
    fa, fb = a[20].asnumpy().astype(int), b[20].asnumpy().astype(int)
    box = np.abs(fa[2:14, 2:40] - fb[2:14, 2:40]).mean()         # the label box, top left
    middle = np.abs(fa[40:80, 60:100] - fb[40:80, 60:100]).mean()  # untouched picture
    assert box > 30 and middle < 6
    # the timeline strip along the bottom: the class colour over the picture (cursor at x=88)
    colour = class_colors(3)[0]  # classes are blue, green, red: every window of this video is blue
    expected = (fb[-3:, :80] * 40 + colour.astype(int) * 215) // 255
    assert np.abs(fa[-3:, :80] - expected).mean() < 12
    assert (fa[-3:, 88] > 200).all()
    assert not list(out.parent.glob(".*partial*"))


def test_a_portrait_phone_clip_is_annotated_upright(trained, tmp_path):
    """Landscape frames with a display matrix of -90 (how phones store portrait video): the JSON
    reports the size shown, and the annotated video is upright with the label box at its top left."""
    from decord import VideoReader

    from videos import write_frames

    frames = colour_frames("blue", 24, size=(160, 120), seed=9)
    src = write_frames(tmp_path / "portrait.mp4", frames, fps=FPS, rotation=-90)
    out = tmp_path / "portrait.annotated.mp4"
    result = runner.invoke(app, ["predict", str(src), "--run", str(trained["lstm"]), "--annotate", str(out),
                                 "--json"])
    assert result.exit_code == 0, result.output
    video = json.loads(result.stdout)["video"]
    assert (video["width"], video["height"]) == (120, 160) and json.loads(result.stdout)["label"] == "blue"
    assert (video["decoder"], video["turned_clockwise_deg"]) == ("pyav", 90)   # -90 ccw: a phone's "rotate 90"
    annotated = VideoReader(str(out))[10].asnumpy().astype(int)
    shown = np.rot90(frames[10], 3).astype(int)                  # turned clockwise, as players show it
    assert annotated.shape == shown.shape == (160, 120, 3)
    assert np.abs(annotated[2:14, 2:40] - shown[2:14, 2:40]).mean() > 30      # the label box
    assert np.abs(annotated[50:90, 30:90] - shown[50:90, 30:90]).mean() < 8   # the picture, upright


def test_a_varying_frame_rate_is_timed_by_the_frames_own_times(trained, tmp_path):
    """30 frames in the first second, then 10 a second for three: windows are 2 s of the video's
    own time, and the timeline's seconds are when those frames are shown."""
    from videos import write_frames

    times_ms = [round(i * 1000 / 30) for i in range(30)] + [1000 + 100 * i for i in range(30)]
    src = write_frames(tmp_path / "vfr.mp4", colour_frames("green", 60, seed=4), fps=30, times_ms=times_ms)
    result = runner.invoke(app, ["predict", str(src), "--run", str(trained["lstm"]), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert [(w["start_frame"], w["stop_frame"]) for w in out["timeline"]] == [(0, 40), (30, 50), (40, 60)]
    assert [w["start_s"] for w in out["timeline"]] == pytest.approx([0.0, 1.0, 2.0], abs=0.01)
    assert out["video"]["variable_frame_rate"] is True and out["video"]["decoder"] == "decord"
    assert out["video"]["duration_s"] == pytest.approx(3.9 + 3.9 / 59, abs=0.002)   # last start + mean interval
    assert out["timeline"][-1]["end_s"] == pytest.approx(out["video"]["duration_s"], abs=0.002)


def test_odd_frame_size_is_kept(trained, tmp_path):
    from decord import VideoReader

    frames = colour_frames("green", 12, size=(65, 49))
    src = tmp_path / "odd.avi"
    import av
    with av.open(str(src), "w") as c:  # an MPEG-4 AVI of odd size, as old cameras write
        s = c.add_stream("mpeg4", rate=FPS)
        s.width, s.height, s.pix_fmt = 65, 49, "yuv420p"
        for i, f in enumerate(frames):
            c.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        c.mux(s.encode(None))
    out = tmp_path / "odd.mp4"
    result = runner.invoke(app, ["predict", str(src), "--run", str(trained["vote"]), "--annotate", str(out)])
    assert result.exit_code == 0, result.output
    a = VideoReader(str(out))
    assert len(a) == len(VideoReader(str(src))) and a[0].shape == (49, 65, 3)


def test_folder_gives_csv_and_annotated_folder_with_odd_names(trained, tmp_path):
    folder = tmp_path / "in"
    names = ["clip one!.mp4", "ünï cödé.mp4", "brackets [1].mp4", "sub/clip one!.mp4"]
    for k, name in enumerate(names):
        write_colour_video(folder / name, [(list(COLOURS)[k % 3], 15 + k)], seed=k)
    (folder / "notes.txt").write_text("not a video, and not picked up: wrong extension")
    sheet, ann = tmp_path / "out" / "predictions.csv", tmp_path / "annotated"
    result = runner.invoke(app, ["predict", str(folder), "--run", str(trained["vote"]), "--csv", str(sheet),
                                 "--annotate", str(ann)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(open(sheet, encoding="utf-8")))
    assert sorted(Path(r["path"]).name for r in rows) == sorted(Path(n).name for n in names)
    assert all(r["label"] in COLOURS and 0 < float(r["confidence"]) <= 1 and r["error"] == "" for r in rows)
    assert all(r["timeline"] and r["run"] == str(trained["vote"]) for r in rows)
    assert sorted(p.name for p in ann.iterdir()) == sorted(
        ["brackets [1].annotated.mp4", "clip one!.annotated.mp4", "clip one!-2.annotated.mp4",
         "ünï cödé.annotated.mp4"])


def test_glob_and_literal_names(trained, tmp_path):
    write_colour_video(tmp_path / "x[1].mp4", [("red", 12)])
    write_colour_video(tmp_path / "y.mp4", [("red", 12)])
    assert [p.name for p in find_videos([tmp_path / "x[1].mp4"])] == ["x[1].mp4"]   # literal, not a glob
    assert sorted(p.name for p in find_videos([str(tmp_path / "*.mp4")])) == ["x[1].mp4", "y.mp4"]
    with pytest.raises(DatasetNotFoundError):
        find_videos([str(tmp_path / "*.mkv")])


# ----------------------------------------------------------------------------- bad input

def _error(result) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert lines, result.output
    return " ".join(lines)


def test_not_a_video_and_empty_file_are_reported_and_others_go_on(trained, tmp_path):
    good = write_colour_video(tmp_path / "good.mp4", [("red", 15)])
    (tmp_path / "text.mp4").write_text("hello, I am not a video\n" * 20)
    (tmp_path / "empty.avi").write_bytes(b"")
    result = runner.invoke(app, ["predict", str(good), str(tmp_path / "text.mp4"), str(tmp_path / "empty.avi"),
                                 "--run", str(trained["lstm"]), "--json"])
    msg = _error(result)
    assert "text.mp4: cannot be decoded" in msg and "empty.avi: empty file" in msg and "2 of 3" in result.output
    objects = _json_lines(result)
    assert [o["label"] is not None for o in objects] == [True, False, False]


def test_truncated_videos(trained, tmp_path):
    """A cut AVI (index lost) and a cut MP4 (index whole, data missing: decord cannot reach its
    frames, PyAV can) both give the frames before the cut, with a note saying where it stopped."""
    import av

    avi = tmp_path / "full.avi"
    with av.open(str(avi), "w") as c:
        s = c.add_stream("mpeg4", rate=FPS)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for f in colour_frames("blue", 60):
            c.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        c.mux(s.encode(None))
    mp4 = write_colour_video(tmp_path / "full.mp4", [("blue", 60)])
    for full in (avi, mp4):
        data = full.read_bytes()
        (tmp_path / f"cut{full.suffix}").write_bytes(data[: len(data) * 2 // 3])
    result = runner.invoke(app, ["predict", str(tmp_path / "cut.avi"), str(tmp_path / "cut.mp4"),
                                 "--run", str(trained["lstm"]), "--json"])
    assert result.exit_code == 0, result.output
    for cut in _json_lines(result):
        assert cut["label"] == "blue" and 0 < cut["video"]["n_frames"] < 60
        assert cut["timeline"][-1]["stop_frame"] <= cut["video"]["n_frames"]
    assert "decoding stopped at frame" in _json_lines(result)[1]["note"]


@pytest.mark.parametrize("case", ["missing", "no_config", "unfinished"])
def test_bad_run_folder(trained, tmp_path, case):
    video = write_colour_video(tmp_path / "v.mp4", [("red", 12)])
    run = tmp_path / "run"
    if case != "missing":
        shutil.copytree(trained["lstm"], run)
        (run / ("config.json" if case == "no_config" else "best.pt")).unlink()
    msg = _error(runner.invoke(app, ["predict", str(video), "--run", str(run)]))
    assert {"missing": "not found", "no_config": "config.json", "unfinished": "best.pt"}[case] in msg


def test_run_and_backbone_disagree(trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained["lstm"], run)
    config = json.loads((run / "config.json").read_text())
    config["extraction"]["weights_sha256"] = "0" * 64
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(CacheMismatchError, match="SHA-256"):
        Predictor(run)
    config["extraction"]["weights_sha256"] = json.loads((trained["lstm"] / "config.json").read_text())[
        "extraction"]["weights_sha256"]
    config["extraction"]["preprocess"]["mean"] = [0.5, 0.5, 0.5]
    (run / "config.json").write_text(json.dumps(config))
    video = write_colour_video(tmp_path / "v.mp4", [("red", 12)])
    assert "preprocessing" in _error(runner.invoke(app, ["predict", str(video), "--run", str(run)]))


@pytest.mark.parametrize("args, expected", [
    (["--window", "0"], "--window must be > 0"),
    (["--top-k", "0"], "--top-k must be >= 1"),
    (["--annotate", "one.mp4"], "names one file"),
])
def test_bad_options(trained, tmp_path, args, expected):
    a = write_colour_video(tmp_path / "a.mp4", [("red", 12)])
    b = write_colour_video(tmp_path / "b.mp4", [("red", 12)])
    assert expected in _error(runner.invoke(app, ["predict", str(a), str(b), "--run", str(trained["lstm"]), *args]))


@pytest.mark.parametrize("what", ["missing", "empty_folder"])
def test_bad_inputs(trained, tmp_path, what):
    target = tmp_path / "nothing_here"
    if what == "empty_folder":
        target.mkdir()
    msg = _error(runner.invoke(app, ["predict", str(target), "--run", str(trained["lstm"])]))
    assert ("no such file" if what == "missing" else "holds no video") in msg


# ----------------------------------------------------------------------------- real and large videos

def test_real_clips(trained, realdata):
    """Real KTH, UCF101 and HMDB51 clips (AVI and MP4, 160x120 to 452x256, odd names): every one
    is classified with a full timeline."""
    videos = [realdata / "kth/handclapping/person01_handclapping_d1_uncomp.avi",
              realdata / "ucf101/Shotput/v_Shotput_g05_c02.avi", *sorted((realdata / "hmdb51").rglob("*.mp4"))[:3]]
    videos = [v for v in videos if v.is_file()]
    predictions = list(Predictor(trained["lstm"], device="cpu").predict(videos))
    for v, p in zip(videos, predictions):
        assert p.ok, p.error
        assert p.label in COLOURS and 0 < p.confidence <= 1
        assert p.timeline[-1].stop_frame == p.n_frames and p.n_decoded_to == p.n_frames
        assert p.timeline[0].start_frame == 0 and p.size[0] > 0


def test_decoder_memory_stays_bounded_on_1080p(tmp_path, monkeypatch):
    """decord decodes ahead into memory while its consumer is slow; the worker must drop that
    read-ahead past its budget. 120 frames of 1080p are 750 MB decoded: a slow consumer would
    see all of it held in the worker without the bound."""
    from harx.extract.decode import DecodeJob, Frames, VideoDecoder
    from harx.extract.sampling import Sampling

    monkeypatch.setenv("HARX_DECODE_BUDGET_MB", "64")
    frames = colour_frames("red", 4, size=(1920, 1080))
    src = tmp_path / "hd.mp4"
    write_h264(src, (frames[i % 4] for i in range(120)), (1920, 1080), 30, preset="ultrafast")
    job = DecodeJob(key=0, path=str(src), ranges=(None,), sampling=Sampling(), max_short_side=None)
    peak, n = 0, 0

    def rss(pid: int) -> float:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    if not Path("/proc/self/statm").exists():
        pytest.skip("needs /proc to read the worker's memory")
    with VideoDecoder(num_workers=1) as decoder:
        for event in decoder.decode([job]):
            if isinstance(event, Frames):
                n += len(event.frames)
                time.sleep(0.15)  # a slow consumer: decord reads ahead meanwhile
                peak = max(peak, rss(decoder._workers[0].process.pid))
    assert n == 120
    assert peak < 450, f"decoding worker grew to {peak:.0f} MB"


def test_frame_stream_reads_what_decord_counts(realdata, tmp_path):
    """The annotate pass reads with PyAV (bounded memory); it must see the frames decord counts."""
    from decord import VideoReader

    from harx.extract.stream import FrameStream
    from harx.features.errors import HarxError

    clips = [realdata / "kth/jogging/person01_jogging_d1_uncomp.avi", realdata / "ucf101/Shotput/v_Shotput_g05_c02.avi",
             *sorted((realdata / "hmdb51").rglob("*.mp4"))[:2]]
    for clip in (c for c in clips if c.is_file()):
        vr = VideoReader(str(clip))
        with FrameStream(clip) as s:
            frames = list(s)
        assert len(frames) == len(vr) and frames[0].shape == vr[0].shape and s.error is None
        assert float(s.rate) == pytest.approx(vr.get_avg_fps(), rel=1e-3)
    (tmp_path / "x.mp4").write_text("not a video")
    with pytest.raises(HarxError, match="cannot open"):
        FrameStream(tmp_path / "x.mp4")
