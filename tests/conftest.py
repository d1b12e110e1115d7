"""Shared fixtures: an isolated HARX_HOME, tiny real videos, the real clips of ../shared/realdata.

Tests that embed frames use timm's tiny ``test_efficientnet`` with ``weights="none"`` (seeded
random weights): the real pipeline end to end, at a fraction of the cost of the real backbone.
"""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/videos.py

from videos import write_video  # noqa: E402

TINY = {"backbone": "test_efficientnet", "weights": "none", "device": "cpu", "precision": "fp32"}


def _cpu_bf16() -> tuple[bool, bool]:
    from harx.runtime import cpu_bf16

    return cpu_bf16()


#: CPUs differ between machines (AVX2 only; AVX-512 with BF16; AMX): bf16 tests need oneDNN's bf16.
needs_cpu_bf16 = pytest.mark.skipif(not _cpu_bf16()[1], reason="this CPU's oneDNN has no bf16 kernels "
                                    "(AVX2 only, no AVX512-BF16/AMX/AVX512BW): harx runs fp32 here")
BF16 = pytest.param("bf16", marks=needs_cpu_bf16)


@pytest.fixture(scope="session")
def small_cache(tmp_path_factory) -> Path:
    """A small synthetic cache, read-only for the tests that share it: 60 samples of 3 classes
    (box, fall, rise), 16-d, 8..60 frames, split by person."""
    from harx.features.synthetic import make_synthetic_cache

    return make_synthetic_cache(tmp_path_factory.mktemp("small") / "small.h5", n_samples=60, embed_dim=16,
                                n_classes=3, mean_frames=20, max_frames=60, seed=2)


def realdata_root() -> Path:
    return Path(os.environ.get("HARX_REALDATA", REPO.parent / "shared" / "realdata"))


@pytest.fixture
def realdata() -> Path:
    root = realdata_root()
    if not root.is_dir():
        pytest.skip(f"{root} absent (set HARX_REALDATA)")
    return root


@pytest.fixture(autouse=True)
def harx_home(tmp_path_factory, monkeypatch) -> Path:
    """Every test writes caches and demo renders under its own temporary HARX_HOME."""
    home = tmp_path_factory.mktemp("harx_home")
    monkeypatch.setenv("HARX_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def video_folder(tmp_path_factory) -> Path:
    """A folder dataset with a CSV manifest: 3 classes x 4 groups, three codecs, two sizes,
    lengths 9-40 frames, plus one file that is not a video and one truncated MP4."""
    root = tmp_path_factory.mktemp("videos")
    rows = []
    codecs = ["libx264", "mpeg4", "mjpeg"]
    for c, label in enumerate(["clap", "jump", "wave"]):
        for g in range(4):
            name = f"{label}/g{g}_{label}.{'avi' if codecs[(c + g) % 3] != 'libx264' else 'mp4'}"
            size = (64, 48) if g % 2 else (96, 64)
            write_video(root / name, n_frames=9 + 8 * g + c, size=size, codec=codecs[(c + g) % 3],
                        seed=10 * c + g, pattern="square")
            rows.append((name, label, f"g{g}", ["train", "train", "val", "test"][g]))
    (root / "wave" / "broken.mp4").write_bytes(b"this is not a video at all\n" * 10)
    rows.append(("wave/broken.mp4", "wave", "g0", "train"))
    full = write_video(root / "clap" / "full.mp4", n_frames=30, size=(64, 48), seed=99)
    data = full.read_bytes()
    (root / "clap" / "truncated.mp4").write_bytes(data[: len(data) // 2])
    full.unlink()
    rows.append(("clap/truncated.mp4", "clap", "g1", "train"))
    with open(root / "manifest.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "group", "split"])
        w.writerows(rows)
    return root


_EXTRACT_CHILD = """
import json, sys
from harx.extract import make_config, run_extract
run_extract(make_config(dataset="folder", root=sys.argv[1], out=sys.argv[2], backbone="test_efficientnet",
                        weights="none", device="cpu", precision="fp32", part_seconds=0, decode_timeout_s=600,
                        **json.loads(sys.argv[3])))
"""


def kill_9_mid_extraction(root: Path, out: Path, parts: int = 4, **options) -> int:
    """Start ``harx extract`` of the folder dataset ``root`` into ``out`` in a child process that
    stalls on a late video (``g2_wave``), ``kill -9`` it once ``parts`` parts are committed, and
    return how many were."""
    import json
    import signal
    import subprocess
    import time

    env = dict(os.environ, HARX_FAULT_HANG="g2_wave:0", PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", _EXTRACT_CHILD, str(root), str(out), json.dumps(options)], env=env)
    written = out
    if options.get("shard"):            # a shard writes OUT.shards/shard-K-of-N.h5
        k, n = options["shard"].split("/")
        written = out.with_name(out.name + ".shards") / f"shard-{k}-of-{n}.h5"
    folder = written.with_name(written.name + ".parts")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(folder.glob("part-*.h5"))) < parts:
        time.sleep(0.2)
    committed = len(list(folder.glob("part-*.h5")))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return committed


def decode_whole(path: Path, **job):
    """``(VideoStart or None, frames, VideoEnd)`` of one video through the decoding workers, every
    frame unless ``job`` (``DecodeJob`` fields) says otherwise; frames concatenated (empty: none)."""
    import numpy as np

    from harx.extract.decode import DecodeJob, Frames, VideoDecoder, VideoStart
    from harx.extract.sampling import Sampling

    job.setdefault("sampling", Sampling())
    with VideoDecoder() as decoder:
        events = list(decoder.decode([DecodeJob(key=0, path=str(path), ranges=(None,), **job)]))
    start = next((e for e in events if isinstance(e, VideoStart)), None)
    frames = [e.frames for e in events if isinstance(e, Frames)]
    return start, np.concatenate(frames) if frames else np.zeros(0), events[-1]


def hold_lock(path: Path):
    """A child process that holds ``features.locks`` on ``path`` until killed (returned once it does)."""
    import subprocess
    import time

    code = ("import sys, time; from harx.features.locks import take_lock; take_lock(sys.argv[1], 'testing'); "
            "print('held', flush=True); time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.stdout.readline().strip() == "held", "the lock holder did not start"
    return proc


def kth_subset(realdata: Path, folder: Path, persons, actions=("walking", "running"), scenario: str = "d1") -> Path:
    """A KTH root in ``folder`` linking the real ``kth_walk_run`` clips of ``persons``, ``actions``
    and ``scenario`` beside the real ``00sequences.txt``; skips the test when they are absent."""
    src = realdata / "kth_walk_run"
    if not (src / "00sequences.txt").is_file():
        pytest.skip(f"{src} absent")
    folder.mkdir(parents=True)
    (folder / "00sequences.txt").symlink_to(src / "00sequences.txt")
    for p in persons:
        for action in actions:
            name = f"person{p:02d}_{action}_{scenario}_uncomp.avi"
            (folder / name).symlink_to(src / action / name)
    return folder


@pytest.fixture(scope="session")
def two_streams(small_cache, tmp_path_factory):
    """The small synthetic cache as stream ``rgb`` beside a ``motion`` stream of pure noise: a
    stream that carries nothing, which late fusion must learn to ignore."""
    import dataclasses

    import numpy as np

    from harx.features import FeatureStore, FeatureWriter
    from harx.features.schema import StreamInfo

    src = FeatureStore(small_cache)
    skip = {"format", "schema_version", "complete", "n_samples", "n_frames", "n_failed", "created_utc", "stage_one_cost",
            "settings_fingerprint", "streams"}
    settings = {k: v for k, v in src.attrs.items() if k not in skip}
    rng = np.random.default_rng(5)
    dst = tmp_path_factory.mktemp("fusion") / "two.h5"
    streams = [StreamInfo("rgb"), StreamInfo("motion", {"input": "motion", "gap": 2, "amp": 1.0})]
    with FeatureWriter(dst, settings, streams=streams) as w:
        for rec in src.samples():
            x = src.frames(rec.index)
            meta = {k: v for k, v in dataclasses.asdict(rec).items() if k not in ("index", "row_start", "row_stop")}
            w.add_sample(meta, {"rgb": x, "motion": rng.standard_normal(x.shape).astype(np.float16)},
                         src.frame_index(rec.index))
        w.finalize(order=list(src.column("sample_id")))
    return dst
