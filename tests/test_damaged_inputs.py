"""Damaged inputs end in one line ``error: ...`` and exit 1, never in a traceback (issue 14).

Every command meets what a disk, a copy or a hand edit can do to its inputs: truncated, zeroed
and foreign HDF5 files, caches missing datasets or attributes or holding wrong dtypes, run
folders with a damaged ``best.pt`` or ``config.json``, bad manifests, folders where files belong,
outputs that cannot be written, broken videos. Bad videos inside a dataset are data, not errors:
they are recorded as failures (tests/test_extract_pipeline.py).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import TINY
from harx.cli import app

runner = CliRunner()
TINY_ARGS = ["--backbone", TINY["backbone"], "--weights", TINY["weights"], "--device", TINY["device"],
             "--precision", TINY["precision"]]


def _error_line(args: list[str]) -> str:
    """Run harx; assert one line ``error: ...``, exit 1, no traceback; return the line."""
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 1, result.output
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


@pytest.fixture(scope="module")
def made(video_folder, tmp_path_factory) -> dict[str, Path]:
    """A finished tiny cache and two finished runs on it (vote and lstm)."""
    from harx.extract import make_config, run_extract
    from harx.temporal import fit

    base = tmp_path_factory.mktemp("made")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HARX_HOME", str(base / "home"))
        cache = base / "good.h5"
        run_extract(make_config(dataset="folder", root=video_folder, out=cache, every=4, **TINY))
        vote = fit("vote", features=cache, out=base / "vote").path
        lstm = fit("lstm", features=cache, out=base / "lstm", epochs=1).path
    return {"cache": cache, "vote": vote, "lstm": lstm}


# ----------------------------------------------------------------------------- damaged caches

def _edit(fn):
    def damage(src: Path, dst: Path) -> None:
        shutil.copy(src, dst)
        with h5py.File(dst, "a") as f:
            fn(f)
    return damage


def _replace(name: str, data) -> Callable:
    def fn(f):
        del f[name]
        f[name] = data
    return _edit(fn)


def _zero_metadata(src: Path, dst: Path) -> None:
    """Zero every byte between the first object header and the data (same size): what a
    damaged disk block does to the middle of a cache. Before the fix: a 101-line KeyError."""
    with h5py.File(src, "r") as f:
        lo = h5py.h5o.get_info(f["streams/rgb"].id).addr
        hi = f["streams/rgb"].id.get_chunk_info(0).byte_offset
    data = bytearray(src.read_bytes())
    data[lo:hi] = bytes(hi - lo)
    dst.write_bytes(data)


def _truncate(src: Path, dst: Path) -> None:
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])


def _set_attr(key, value):
    return _edit(lambda f: f.attrs.__setitem__(key, value))


def _del(name):
    return _edit(lambda f: f.__delitem__(name))


def _del_attr(key):
    return _edit(lambda f: f.attrs.__delitem__(key))


def _poke(name, index, value):
    def fn(f):
        f[name][index] = value
    return _edit(fn)


DAMAGES: dict[str, tuple[Callable, str]] = {
    "zeroed metadata": (_zero_metadata, "is damaged"),
    "truncated": (_truncate, "not a readable HDF5 file"),
    "empty file": (lambda s, d: d.write_bytes(b""), "not a readable HDF5 file"),
    "text file": (lambda s, d: d.write_text("hello"), "not a readable HDF5 file"),
    "foreign HDF5": (lambda s, d: h5py.File(d, "w").close(), "not a harx cache of schema 1 or 2"),
    "no samples group": (_del("samples"), "is damaged"),
    "no rgb stream": (_del("streams/rgb"), "is damaged"),
    "no streams attribute": (_del_attr("streams"), "is damaged"),
    "streams not a list": (_set_attr("streams", '"rgb"'), "is damaged"),
    "no failures group": (_del("failures"), "is damaged"),
    "no row_start column": (_del("samples/row_start"), "is damaged"),
    "no class_names": (_del_attr("class_names"), "is damaged"),
    "class_names bad JSON": (_set_attr("class_names", "[not json"), "is damaged"),
    "class_names not a list": (_set_attr("class_names", "5"), "is damaged"),
    "no embed_dim": (_del_attr("embed_dim"), "is damaged"),
    "embed_dim a string": (_set_attr("embed_dim", "abc"), "is damaged"),
    "no settings_fingerprint": (_del_attr("settings_fingerprint"), "is damaged"),
    "sampling bad JSON": (_set_attr("sampling", "{bad"), "is damaged"),
    "sample_id integers": (_replace("samples/sample_id", np.arange(12)), "is damaged"),
    "stream 1-D": (_replace("streams/motion", np.zeros(10, "f2")), "is damaged"),
    "stream strings": (_replace("streams/rgb", np.full((3, 256), b"a", dtype="S1")), "is damaged"),
    "stream spec bad JSON": (_edit(lambda f: f["streams/motion"].attrs.__setitem__("spec", "{bad")), "is damaged"),
    "short column": (_replace("samples/label_index", np.zeros(3, "i2")), "is damaged"),
    "rows past the end": (_poke("samples/row_stop", 0, 10**9), "is damaged"),
    "label_index out of range": (_poke("samples/label_index", 0, 77), "is damaged"),
}


@pytest.fixture(scope="module")
def damaged(made, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("damaged")
    files = {}
    for k, (name, (damage, _)) in enumerate(DAMAGES.items()):
        files[name] = folder / f"cache{k}.h5"
        damage(made["cache"], files[name])
    return files


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_damaged_cache_is_one_line_for_every_reader(damage, damaged, made, tmp_path):
    cache, expected = damaged[damage], DAMAGES[damage][1]
    for args in (["info", cache],
                 ["fit", "vote", "--features", cache, "--out", tmp_path / "run"],
                 ["evaluate", "--run", made["lstm"], "--features", cache]):
        line = _error_line(args)
        assert str(cache) in line and expected in line, line
        if "is damaged" in line:
            assert "harx extract --overwrite" in line, line


@pytest.mark.parametrize("damage", ["zeroed metadata", "no samples group", "sample_id integers", "class_names bad JSON",
                                    "rows past the end", "truncated"])
def test_damaged_cache_given_to_compare_and_extract(damage, damaged, video_folder, tmp_path):
    cache = tmp_path / "c.h5"
    shutil.copy(damaged[damage], cache)
    line = _error_line(["compare", "--features", cache, "--heads", "vote", "--seeds", "1", "--out", tmp_path / "cmp"])
    assert str(cache) in line
    line = _error_line(["extract", "--dataset", "folder", "--root", video_folder, "--every", "4", *TINY_ARGS,
                        "--out", cache])
    assert str(cache) in line and "--overwrite" in line, line  # never "cache is complete"


def test_a_folder_where_the_cache_should_be(tmp_path, video_folder):
    assert "is a folder" in _error_line(["info", tmp_path])
    assert "is a folder" in _error_line(["fit", "vote", "--features", tmp_path])
    assert "is a folder" in _error_line(["extract", "--dataset", "folder", "--root", video_folder, *TINY_ARGS,
                                         "--out", tmp_path])


# ----------------------------------------------------------------------------- interrupted-run leftovers

def test_damaged_parts_folder(video_folder, tmp_path):
    out = tmp_path / "c.h5"
    parts = tmp_path / "c.h5.parts"
    parts.write_text("not a folder")
    assert "c.h5.parts is a file" in _error_line(["extract", "--dataset", "folder", "--root", video_folder,
                                                  *TINY_ARGS, "--out", out])
    parts.unlink()
    parts.mkdir()
    (parts / "settings.json").write_text("{broken")
    line = _error_line(["extract", "--dataset", "folder", "--root", video_folder, *TINY_ARGS, "--out", out])
    assert "settings.json is damaged" in line and "--overwrite" in line
    (parts / "settings.json").unlink()


def test_a_damaged_part_is_set_aside_and_its_work_redone(video_folder, tmp_path):
    """A committed part cut short (a disk error, a copy) loses only its own videos: they are
    embedded again, the other parts are kept, and the result equals a clean extraction."""
    from conftest import kill_9_mid_extraction
    from harx.extract import make_config, run_extract

    clean, out = tmp_path / "clean.h5", tmp_path / "c.h5"
    options = dict(dataset="folder", root=video_folder, backbone="test_efficientnet", weights="none", device="cpu",
                   precision="fp32")
    run_extract(make_config(out=clean, **options))
    assert kill_9_mid_extraction(video_folder, out, parts=3) >= 3
    parts = sorted((tmp_path / "c.h5.parts").glob("part-*.h5"))
    data = parts[1].read_bytes()
    parts[1].write_bytes(data[: len(data) // 3])                      # the middle part, truncated
    summary = run_extract(make_config(out=out, **options))
    assert any(f"{parts[1].name} could not be read" in w and "embedded again" in w for w in summary.warnings)
    assert 0 < summary.samples_new < len(summary.failed) + summary.samples_new + summary.reused
    with h5py.File(clean, "r") as a, h5py.File(out, "r") as b:
        for key in ("streams/rgb", "streams/motion", "frame_index", "samples/sample_id"):
            assert np.array_equal(a[key][()], b[key][()]), key


# ----------------------------------------------------------------------------- outputs

def test_unwritable_out_fails_at_once(video_folder, tmp_path):
    """/proc takes no files, even from root; before: a 79-line traceback after loading the model."""
    line = _error_line(["extract", "--dataset", "folder", "--root", video_folder, *TINY_ARGS, "--out", "/proc/x.h5"])
    assert "/proc" in line and "choose another --out" in line
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert "cannot create folder" in _error_line(["extract", "--dataset", "folder", "--root", video_folder,
                                                  *TINY_ARGS, "--out", blocker / "c.h5"])


def test_unwritable_outputs_of_stage_two(made, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert "choose another --out" in _error_line(["fit", "vote", "--features", made["cache"],
                                                  "--out", blocker / "run"])
    assert "choose another --out" in _error_line(["compare", "--features", made["cache"], "--heads", "vote",
                                                  "--seeds", "1", "--out", blocker / "cmp"])
    assert "is a file" in _error_line(["download", "kth", "--root", blocker / "kth", "--yes"])
    assert "is a file" in _error_line(["download", "kth", "--root", blocker, "--yes"])


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads and writes files whatever their mode; the read-only "
                                                "case is covered by /proc in test_unwritable_out_fails_at_once")
def test_unreadable_cache_and_read_only_folder(made, tmp_path, video_folder):
    cache = tmp_path / "c.h5"
    shutil.copy(made["cache"], cache)
    cache.chmod(0)
    assert str(cache) in _error_line(["info", cache])
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    assert "choose another --out" in _error_line(["extract", "--dataset", "folder", "--root", video_folder,
                                                  *TINY_ARGS, "--out", folder / "c.h5"])


# ----------------------------------------------------------------------------- run folders

def _torch_edit(fn):
    def damage(run: Path) -> None:
        import torch

        ckpt = torch.load(run / "best.pt", weights_only=True)
        fn(ckpt)
        torch.save(ckpt, run / "best.pt")
    return damage


def _write(name: str, data: bytes | str):
    def damage(run: Path) -> None:
        target = run / name
        target.write_bytes(data if isinstance(data, bytes) else data.encode())
    return damage


def _config(fn):
    def damage(run: Path) -> None:
        config = json.loads((run / "config.json").read_text())
        fn(config)
        (run / "config.json").write_text(json.dumps(config))
    return damage


def _torch_save(obj):
    def damage(run: Path) -> None:
        import torch

        torch.save(obj, run / "best.pt")
    return damage


def _best_is_folder(run: Path) -> None:
    (run / "best.pt").unlink()
    (run / "best.pt").mkdir()


RUN_DAMAGES: dict[str, Callable] = {
    "best.pt truncated": lambda run: (run / "best.pt").write_bytes((run / "best.pt").read_bytes()[:200]),
    "best.pt random bytes": _write("best.pt", os.urandom(4000)),
    "best.pt empty": _write("best.pt", b""),
    "best.pt a folder": _best_is_folder,
    "best.pt missing": lambda run: (run / "best.pt").unlink(),
    "best.pt another torch file": _torch_save({"weights": [1, 2, 3]}),
    "best.pt a list": _torch_save([1, 2, 3]),
    "best.pt without params": _torch_edit(lambda c: c.pop("params")),
    "best.pt without state": _torch_edit(lambda c: c.__setitem__("state", {})),
    "best.pt unknown head": _torch_edit(lambda c: c.__setitem__("head", "nope")),
    "best.pt params disagree with state": _torch_edit(lambda c: c["params"].__setitem__("num_features", 7)),
    "best.pt fitted a list": _torch_edit(lambda c: c.__setitem__("fitted", [1])),
    "config.json invalid JSON": _write("config.json", "{not json"),
    "config.json a list": _write("config.json", "[1, 2]"),
    "config.json empty object": _write("config.json", "{}"),
    "config.json not UTF-8": _write("config.json", b"\xff\xfe{}"),
    "config.json missing": lambda run: (run / "config.json").unlink(),
    "config.json without head": _config(lambda c: c.pop("head")),
    "config.json without seed": _config(lambda c: c.pop("seed")),
}


@pytest.mark.parametrize("head", ["vote", "lstm"])
@pytest.mark.parametrize("damage", list(RUN_DAMAGES))
def test_damaged_run_folder(damage, head, made, tmp_path, video_folder):
    run = tmp_path / "run"
    shutil.copytree(made[head], run)
    RUN_DAMAGES[damage](run)
    video = next(video_folder.glob("clap/g0_*"))
    for args in (["evaluate", "--run", run, "--features", made["cache"]],
                 ["predict", video, "--run", run, "--device", "cpu"]):
        line = _error_line(args)
        assert str(run) in line, line


def test_run_folder_is_a_file(tmp_path, video_folder):
    run = tmp_path / "run"
    run.write_text("x")
    assert "not found" in _error_line(["evaluate", "--run", run])


def test_config_without_features_needs_features_option(made, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(made["vote"], run)
    _config(lambda c: c.pop("features"))(run)
    assert "pass --features" in _error_line(["evaluate", "--run", run])


# ----------------------------------------------------------------------------- manifests and datasets

MANIFESTS = {
    "missing label column": ("path,group\nclap/g0_clap.mp4,g0\n", "lacks column(s) label"),
    "empty label": ("path,label\n{v},\n", "empty label"),
    "unknown split": ("path,label,split\n{v},clap,trian\n", "split 'trian'"),
    "non-UTF-8": (b"path,label\n{v},cl\xe4p\n", "not UTF-8"),
    "random bytes": (os.urandom(300).replace(b"\n", b"x"), "manifest"),
    "duplicate path": ("path,label\n{v},clap\n{v},wave\n", "already listed"),
    "empty file": ("", "is empty"),
    "header only": ("path,label,group,split\n", "lists no videos"),
    "short row": ("path,label,group\n{v}\n", "expected 3 fields"),
    "empty path": ("path,label\n,clap\n", "empty path"),
    "path outside root, missing": ("path,label\n../../nowhere/x.mp4,clap\n", "exists"),
}


@pytest.mark.parametrize("case", list(MANIFESTS))
def test_bad_manifest(case, video_folder, tmp_path):
    text, expected = MANIFESTS[case]
    video = next(video_folder.glob("clap/g0_*")).relative_to(video_folder).as_posix()
    manifest = video_folder / f"bad-{case.replace(' ', '_')}.csv"
    data = text.replace("{v}", video).encode() if isinstance(text, str) else text.replace(b"{v}", video.encode())
    manifest.write_bytes(data)
    try:
        line = _error_line(["extract", "--dataset", "folder", "--root", video_folder, "--manifest", manifest,
                            *TINY_ARGS, "--out", tmp_path / "c.h5"])
    finally:
        manifest.unlink()
    assert expected in line, line


def test_manifest_that_is_a_folder_and_root_that_is_a_file(video_folder, tmp_path):
    assert "manifest" in _error_line(["extract", "--dataset", "folder", "--root", video_folder,
                                      "--manifest", tmp_path, *TINY_ARGS, "--out", tmp_path / "c.h5"])
    video = next(video_folder.glob("clap/g0_*"))
    assert "is a file" in _error_line(["extract", "--dataset", "folder", "--root", video, *TINY_ARGS,
                                       "--out", tmp_path / "c.h5"])


def test_checkpoint_weights_that_are_not_a_checkpoint(video_folder, tmp_path):
    bad = tmp_path / "w.pth"
    bad.write_text("hello")  # torch.load raised KeyError on this: a traceback
    line = _error_line(["extract", "--dataset", "folder", "--root", video_folder, "--backbone", "test_efficientnet",
                        "--weights", bad, "--device", "cpu", "--out", tmp_path / "c.h5"])
    assert "cannot read checkpoint" in line


# ----------------------------------------------------------------------------- videos given to predict

def test_broken_videos_given_to_predict(made, video_folder, tmp_path):
    """Each broken video is named on an ``error:`` line and the exit code is 1 (the table of the
    others still prints); nothing raises."""
    good = next(video_folder.glob("clap/g0_*"))
    data = good.read_bytes()
    broken = {"truncated.mp4": data[: len(data) // 2], "header.mp4": data[:50], "text.mp4": b"not a video",
              "empty.mp4": b""}
    for name, content in broken.items():
        (tmp_path / name).write_bytes(content)
    for name in broken:
        result = runner.invoke(app, ["predict", str(tmp_path / name), "--run", str(made["vote"]), "--device", "cpu"])
        assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
        assert result.exit_code == 1 and "Traceback" not in result.output
        assert f"error: {tmp_path / name}" in result.output
    assert "no such file" in _error_line(["predict", tmp_path / "nothere.mp4", "--run", made["vote"]])
    (tmp_path / "folder.mp4").mkdir()
    assert "holds no video" in _error_line(["predict", tmp_path / "folder.mp4", "--run", made["vote"]])


def test_a_full_disk_is_one_line_and_the_rerun_completes(video_folder, tmp_path):
    """Writes that fail for want of room (here a file-size limit, RLIMIT_FSIZE, as a full disk
    or a quota) stop the extraction with one line; the rerun with room finishes it."""
    import resource
    import subprocess
    import sys

    from harx.extract import make_config, run_extract

    options = dict(dataset="folder", root=str(video_folder), backbone="test_efficientnet", weights="none",
                   device="cpu", precision="fp32")
    child = ("import json, sys\nfrom harx.extract import make_config, run_extract\nfrom harx.features.errors import "
             "HarxError\ntry:\n    run_extract(make_config(out=sys.argv[1], part_seconds=0, **json.loads(sys.argv[2])))\n"
             "except HarxError as err:\n    print('error:', err, flush=True)\n    sys.exit(1)\n")
    out = tmp_path / "full.h5"

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (600_000, 600_000))
    import json
    done = subprocess.run([sys.executable, "-c", child, str(out), json.dumps(options)], preexec_fn=limit,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and not out.exists()      # (no crash at exit: -11 before)
    lines = [line for line in done.stdout.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "a file-size or disk-quota limit was reached" in lines[0], done.stdout + done.stderr[-500:]
    assert "Traceback" not in done.stderr
    summary = run_extract(make_config(out=out, **options))             # room again: it completes
    clean = tmp_path / "clean.h5"
    run_extract(make_config(out=clean, **options))
    assert summary.samples_new > 0
    with h5py.File(clean, "r") as a, h5py.File(out, "r") as b:
        for key in ("streams/rgb", "streams/motion", "samples/sample_id"):
            assert np.array_equal(a[key][()], b[key][()]), key
