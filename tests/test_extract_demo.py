"""The built-in demo: real decodable videos, reuse, person split, and motion-only class pairs."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import time
from collections import defaultdict
from pathlib import Path

import decord
import numpy as np
import pytest

import harx.extract.datasets.demo as demo_module
from harx.extract.datasets import DATASETS, create_dataset
from harx.extract.datasets.demo import (
    CLASSES, MOTION_ONLY_PAIRS, PERSON_SPLIT, PERSONS, SCENARIOS, default_demo_root, demo,
    read_marker, render_demo, source_frame,
)
from harx.features.errors import InvalidOptionError

SIZE = (160, 120)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    """One default render shared by the module (rendering is the slow part, ~10 s)."""
    return render_demo(tmp_path_factory.mktemp("demo") / "demo")


def manifest_rows(root: Path) -> list[dict]:
    with (root / "manifest.csv").open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def decode(root: Path, person: str, label: str, scenario: str) -> np.ndarray:
    reader = decord.VideoReader(str(root / label / f"{person}_{label}_{scenario}.mp4"))
    return reader.get_batch(list(range(len(reader)))).asnumpy().astype(np.float32)


def background(root: Path, person: str, scenario: str) -> np.ndarray:
    """Temporal median of the walk clip: the figure crosses the frame, so it drops out."""
    return np.median(decode(root, person, "walk", scenario), axis=0)


def moving(*clips: np.ndarray) -> np.ndarray:
    """Pixels the figure passes over; comparisons there are not drowned by coding noise."""
    return np.any([clip.std(axis=0).sum(axis=-1) > 20 for clip in clips], axis=0)


def gap(a: np.ndarray, b: np.ndarray, area: np.ndarray) -> float:
    """Mean absolute difference over ``area`` (the last three axes are H, W, C)."""
    return float(np.abs(a - b)[..., area, :].mean())


def centroids(frames: np.ndarray, back: np.ndarray) -> np.ndarray:
    """(x, y) of the pixels that differ from the background, per frame."""
    mask = np.abs(frames - back).sum(axis=3) > 45
    ys, xs = np.mgrid[0:frames.shape[1], 0:frames.shape[2]]
    count = mask.sum(axis=(1, 2))
    assert count.min() > 30, "the figure should be visible in every frame"
    return np.stack([(mask * xs).sum(axis=(1, 2)) / count,
                     (mask * ys).sum(axis=(1, 2)) / count], axis=1)


# ----------------------------------------------------------------------------- files

def test_render_layout_and_manifest(rendered):
    marker = read_marker(rendered)
    rows = manifest_rows(rendered)
    assert marker["videos"] == len(rows) == len(CLASSES) * len(PERSONS) * len(SCENARIOS)
    assert 6000 <= marker["frames"] == sum(int(r["frames"]) for r in rows) <= 10000
    on_disk = {p.relative_to(rendered).as_posix() for p in rendered.rglob("*.mp4")}
    assert on_disk == {r["path"] for r in rows}
    for row in rows:
        label = row["label"]
        assert row["path"] == f"{label}/{row['group']}_{label}_{row['scenario']}.mp4"
        assert row["split"] == PERSON_SPLIT[row["group"]]
    assert {r["label"] for r in rows} == set(CLASSES)
    assert len({r["frames"] for r in rows}) > 10, "clip lengths should be ragged"
    assert not [p for p in rendered.parent.iterdir() if p.name.startswith(".")], "temp dirs left"


def test_every_video_decodes_to_its_frame_count_and_size(rendered):
    for row in manifest_rows(rendered):
        reader = decord.VideoReader(str(rendered / row["path"]))
        assert len(reader) == int(row["frames"]), row["path"]
        assert reader[len(reader) - 1].shape == (SIZE[1], SIZE[0], 3)
        assert reader.get_avg_fps() == pytest.approx(25)


def test_second_render_reuses_files(rendered):
    stamps = {p: p.stat().st_mtime_ns for p in rendered.rglob("*") if p.is_file()}
    started = time.perf_counter()
    assert render_demo(rendered) == rendered
    assert time.perf_counter() - started < 1.0
    assert {p: p.stat().st_mtime_ns for p in rendered.rglob("*") if p.is_file()} == stamps


def test_deleted_video_triggers_rerender_check(rendered, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(rendered, copy)
    (copy / "box" / "p01_box_plain.mp4").unlink()
    assert not demo_module._is_complete(copy, read_marker(copy)["params"])


# ----------------------------------------------------------------------------- split

def test_split_is_by_person_and_disjoint(rendered):
    splits_of = defaultdict(set)
    for row in manifest_rows(rendered):
        splits_of[row["group"]].add(row["split"])
    assert all(len(s) == 1 for s in splits_of.values())
    persons = {split: sorted(g for g, s in splits_of.items() if split in s)
               for split in ("train", "val", "test")}
    assert persons == {"train": list(PERSONS[:5]), "val": list(PERSONS[5:7]),
                       "test": list(PERSONS[7:])}


# ----------------------------------------------------------------------------- motion-only pairs

@pytest.mark.parametrize("person, scenario", [("p01", "plain"), ("p06", "texture"),
                                              ("p09", "zoom")])
def test_rise_fall_same_frames_opposite_order(rendered, person, scenario):
    rise = decode(rendered, person, "rise", scenario)
    fall = decode(rendered, person, "fall", scenario)
    box = decode(rendered, person, "box", scenario)
    area = moving(rise, fall)
    # Same frames: fall is rise backwards (up to noise and coding), so the mean images match
    # and no single frame tells the classes apart ...
    assert gap(fall[::-1], rise, area) < 0.25 * gap(fall, rise, area)
    assert gap(rise.mean(axis=0), fall.mean(axis=0), area) < 0.25 * gap(
        rise.mean(axis=0), box.mean(axis=0), area)
    # ... but the motion is opposite: up for rise (y falls), down for fall.
    back = background(rendered, person, scenario)
    rise_dy = np.diff(centroids(rise, back)[:, 1])
    fall_dy = np.diff(centroids(fall, back)[:, 1])
    assert (rise_dy < 0).mean() > 0.9 and (fall_dy > 0).mean() > 0.9
    assert rise_dy.sum() == pytest.approx(-fall_dy.sum(), rel=0.1)


@pytest.mark.parametrize("person, scenario", [("p02", "plain"), ("p07", "texture"),
                                              ("p08", "zoom")])
def test_walk_run_same_frames_different_speed(rendered, person, scenario):
    walk = decode(rendered, person, "walk", scenario)
    run = decode(rendered, person, "run", scenario)
    box = decode(rendered, person, "box", scenario)
    area = moving(walk, run)
    assert gap(walk.mean(axis=0), run.mean(axis=0), area) < 0.25 * gap(
        walk.mean(axis=0), box.mean(axis=0), area)
    back = np.median(walk, axis=0)
    walk_x = centroids(walk, back)[:, 0]
    run_x = centroids(run, back)[:, 0]
    assert np.sort(walk_x) == pytest.approx(np.sort(run_x), abs=1.5)  # same positions visited
    assert np.abs(np.diff(run_x)).mean() > 2.5 * np.abs(np.diff(walk_x)).mean()


def test_paired_poses_are_permutations():
    """The renderer's shortcut (draw once, reorder) agrees with the classes' own definitions."""
    for person, scenario in ((0, 0), (4, 1), (8, 2)):
        clip = demo_module._clip(0, person, scenario, 0, (32, 60), SIZE)
        for label in ("fall", "run"):
            for t in range(clip.n_frames):
                base, u = source_frame(label, t, clip.n_frames, clip.run_k)
                assert base != label
                mine, theirs = demo_module._pose(label, t, clip), demo_module._pose(base, u, clip)
                assert mine.x == pytest.approx(theirs.x, abs=1e-6)
                assert mine.y == pytest.approx(theirs.y, abs=1e-6)
                assert mine.feet == pytest.approx(theirs.feet, abs=1e-6)
    assert {a for pair in MOTION_ONLY_PAIRS for a in pair} <= set(CLASSES)


# ----------------------------------------------------------------------------- adapter

def test_demo_adapter(rendered):
    assert "demo" in DATASETS
    index = demo(rendered)
    assert index.name == "demo" and index.unit == "video" and index.missing == []
    assert index.class_names == sorted(CLASSES)
    assert {s.split for s in index.samples} == {"train", "val", "test"}
    assert "by person" in index.split_protocol and "p08-p09" in index.split_protocol
    assert {s.scenario for s in index.samples} == set(SCENARIOS)
    first = index.samples[0]
    assert first.sample_id == "box/p01_box_plain" and first.group == "p01"
    assert first.path == rendered / "box" / "p01_box_plain.mp4"
    assert index.options["motion_only_pairs"] == [list(p) for p in MOTION_ONLY_PAIRS]
    json.dumps(index.options)  # stored in the cache, so it must serialise


def test_demo_adapter_default_root_under_harx_home(rendered, tmp_path, monkeypatch):
    monkeypatch.setenv("HARX_HOME", str(tmp_path))
    assert default_demo_root() == tmp_path / "demo"
    assert default_demo_root(3) == tmp_path / "demo-seed3"
    shutil.copytree(rendered, tmp_path / "demo")  # a finished render is reused, not redone
    index = create_dataset("demo")
    assert index.root == tmp_path / "demo" and len(index.samples) == 162


# ----------------------------------------------------------------------------- robustness

SMALL = {"frames": (8, 8), "size": (64, 48)}


def test_interrupted_render_leaves_nothing(tmp_path, monkeypatch):
    calls = []
    real = demo_module.write_h264

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) > 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(demo_module, "write_h264", failing)
    with pytest.raises(KeyboardInterrupt):
        render_demo(tmp_path / "demo", **SMALL)
    assert list(tmp_path.iterdir()) == []


def _spy_on_encoder(monkeypatch) -> dict[str, list[str]]:
    """Digests of the frames each clip hands to the H.264 encoder, render after render."""
    seen: dict[str, list[str]] = defaultdict(list)
    encode = demo_module.write_h264

    def spy(path, frames, *args, **kwargs):
        digest = hashlib.sha256()

        def tee():
            for frame in frames:
                digest.update(frame.tobytes())
                yield frame

        n = encode(path, tee(), *args, **kwargs)
        seen[Path(path).name].append(digest.hexdigest())
        return n

    monkeypatch.setattr(demo_module, "write_h264", spy)
    return seen


def test_replaces_older_render_but_not_foreign_folders(tmp_path, monkeypatch):
    encoded = _spy_on_encoder(monkeypatch)
    old = tmp_path / "demo"
    old.mkdir()
    (old / "stale.mp4").write_bytes(b"old")
    (old / demo_module.MARKER_NAME).write_text(json.dumps({"version": 0}))
    killed, running = tmp_path / ".demo.tmp-killed", tmp_path / ".demo.tmp-running"
    killed.mkdir()
    running.mkdir()
    os.utime(killed, (time.time() - 7200, time.time() - 7200))
    render_demo(old, seed=1, **SMALL)
    assert not (old / "stale.mp4").exists()
    assert read_marker(old)["params"]["seed"] == 1
    assert sorted(os.listdir(tmp_path)) == [running.name, "demo"]  # a live render is left be

    again = render_demo(tmp_path / "again", seed=1, **SMALL)
    # Same seed, same frames into the encoder. (Not the same bytes out: libx264 codes identical
    # input a little differently now and then, even single-threaded; seen: a mean pixel
    # difference of 0.9 in one clip of 40.)
    assert len(encoded) == len(list(old.rglob("*.mp4"))) > 0
    assert all(len(digests) == 2 and digests[0] == digests[1] for digests in encoded.values())
    shutil.rmtree(again)

    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("keep me")
    with pytest.raises(InvalidOptionError, match="not a harx demo"):
        render_demo(foreign, **SMALL)
    assert (foreign / "thesis.tex").read_text() == "keep me"


@pytest.mark.parametrize("options, message", [
    ({"seed": -1}, "seed"), ({"frames": (20, 10)}, "frames"), ({"size": (65, 48)}, "even"),
    ({"clips_per_combo": 0}, "clips_per_combo"),
])
def test_bad_render_options(tmp_path, options, message):
    with pytest.raises(InvalidOptionError, match=message):
        render_demo(tmp_path / "demo", **options)
