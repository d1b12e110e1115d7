"""Stage one over several processes: ``--shard K/N`` blocks of the videos, then ``harx merge``
into the cache one process writes, bit for bit; resumption after kill -9, and the refusals."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import TINY, hold_lock, kill_9_mid_extraction
from harx.extract import make_config, run_extract
from harx.extract.datasets import create_dataset
from harx.extract.shards import merge_shards, parse_shard, shard_path, video_shards
from harx.features.errors import CacheMismatchError, HarxError, InvalidOptionError


def _extract(root: Path, out: Path, **kw):
    return run_extract(make_config(dataset="folder", root=root, out=out, **dict(TINY, **kw)))


def _same_cache(a: Path, b: Path) -> None:
    """Every dataset and attribute equal (creation time aside)."""
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        names = []
        fa.visit(lambda n: names.append(n) if isinstance(fa[n], h5py.Dataset) else None)
        other = []
        fb.visit(lambda n: other.append(n) if isinstance(fb[n], h5py.Dataset) else None)
        assert sorted(names) == sorted(other)
        for n in names:
            assert np.array_equal(fa[n][()], fb[n][()]), n
        keys = (set(fa.attrs) | set(fb.attrs)) - {"created_utc", "stage_one_cost"}   # (times measured)
        assert {k: str(fa.attrs.get(k)) for k in keys} == {k: str(fb.attrs.get(k)) for k in keys}


def test_shards_are_contiguous_balanced_blocks_of_the_videos(video_folder):
    index = create_dataset("folder", video_folder)
    shards = video_shards(index, 3)
    order = list(shards.values())
    assert order == sorted(order) and set(order) == {1, 2, 3}          # contiguous, none empty
    assert video_shards(index, 3) == shards                           # the same every run
    assert parse_shard("2/4") == (2, 4)
    for bad in ("0/2", "3/2", "2", "a/b"):
        with pytest.raises(InvalidOptionError, match="--shard takes K/N"):
            parse_shard(bad)
    with pytest.raises(InvalidOptionError, match="use at most"):
        video_shards(index, 1000)


@pytest.mark.parametrize("manifest", [True, False])
def test_merged_shards_equal_one_process(video_folder, tmp_path, manifest):
    root = video_folder
    if not manifest:               # no split column: harx makes the split, on the whole dataset
        root = tmp_path / "videos"
        shutil.copytree(video_folder, root)
        (root / "manifest.csv").unlink()
    single = tmp_path / "single.h5"
    _extract(root, single, spatial=True, map_size=1)
    out = tmp_path / "sharded.h5"
    for k in (1, 2, 3):
        summary = _extract(root, out, shard=f"{k}/3", spatial=True, map_size=1)
        assert summary.out == shard_path(out, k, 3) and summary.merge_into == out
    assert merge_shards(out) == out and not shard_path(out, 1, 3).parent.exists()
    _same_cache(out, single)


def test_a_shard_killed_mid_run_resumes_and_the_merge_is_unchanged(video_folder, tmp_path):
    single = tmp_path / "single.h5"
    _extract(video_folder, single)
    out = tmp_path / "sharded.h5"
    _extract(video_folder, out, shard="1/2")
    assert kill_9_mid_extraction(video_folder, out, parts=1, shard="2/2") >= 1
    with pytest.raises(HarxError, match="shard\\(s\\) 2/2 of .* are not finished"):
        merge_shards(out)
    _extract(video_folder, out, shard="2/2")                          # the rerun finishes what is left
    merge_shards(out)
    _same_cache(out, single)


def test_shards_made_otherwise_are_refused(video_folder, tmp_path):
    out = tmp_path / "mixed.h5"
    _extract(video_folder, out, shard="1/2")
    _extract(video_folder, out, shard="2/2", every=2)
    with pytest.raises(CacheMismatchError, match="shard 2/2 was made with other settings than shard 1/2: sampling"):
        merge_shards(out)
    out.write_bytes(b"")
    with pytest.raises(HarxError, match="exists; delete it or pass --overwrite"):
        merge_shards(out)
    with pytest.raises(HarxError, match="no shards of"):
        merge_shards(tmp_path / "nothing.h5")


def test_cli_merge_says_what_is_missing_in_one_line(video_folder, tmp_path):
    import subprocess
    import sys

    out = tmp_path / "c.h5"
    _extract(video_folder, out, shard="2/2")
    done = subprocess.run([sys.executable, "-m", "harx", "merge", str(out)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stderr.strip().count("\n") == 0
    assert "shard(s) 1/2 of" in done.stderr and "not finished" in done.stderr


def _torchrun(root: Path, out: Path, env: dict):
    import subprocess
    import sys

    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--nproc-per-node", "2", "-m", "harx", "extract", "--dataset", "folder", "--root", str(root),
           "--out", str(out), "--backbone", TINY["backbone"], "--weights", "none", "--device", "cpu",
           "--precision", "fp32", "--decode-timeout", "600"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _rank_pid(rank: int) -> int | None:
    """The process of torchrun's rank ``rank`` running harx extract."""
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
            env = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"harx" in cmd and b"extract" in cmd and f"RANK={rank}".encode() in env:
            return int(proc.name)
    return None


@pytest.mark.skipif(not Path(__import__("sys").executable).with_name("torchrun").exists(), reason="no torchrun")
def test_torchrun_ranks_write_one_cache_and_a_killed_rank_is_redone(video_folder, tmp_path):
    """Two ranks on the CPU (torchrun, no GPU). Rank 1 hangs on its last video and is killed with
    SIGKILL once rank 0 has finished its shard; torchrun stops. The rerun keeps rank 0's finished
    shard, redoes rank 1's, and rank 0 merges: the cache one process writes, bit for bit."""
    import os
    import signal
    import time

    single = tmp_path / "single.h5"
    _extract(video_folder, single)
    out = tmp_path / "ranks.h5"
    second = [p for p, k in video_shards(create_dataset("folder", video_folder), 2).items()
              if k == 2 and not any(bad in str(p) for bad in ("broken", "truncated"))]
    env = dict(os.environ, HARX_FAULT_HANG=f"{Path(second[-1]).name}:0", OMP_NUM_THREADS="1")
    first = _torchrun(video_folder, out, env)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not shard_path(out, 1, 2).is_file():
        time.sleep(0.3)
    pid = _rank_pid(1)
    assert pid is not None and shard_path(out, 1, 2).is_file(), "rank 0 unfinished, or rank 1 not hanging"
    os.kill(pid, signal.SIGKILL)
    log = first.communicate(timeout=180)[0]
    assert first.returncode != 0 and not out.exists() and not shard_path(out, 2, 2).is_file(), log[-2000:]
    env.pop("HARX_FAULT_HANG")
    again = _torchrun(video_folder, out, env)
    log = again.communicate(timeout=300)[0]
    assert again.returncode == 0, log[-2000:]
    assert "cache is complete, nothing to do" in log and "merged:    every shard into" in log   # rank 0 kept its shard
    _same_cache(out, single)


def test_two_runs_of_one_shard_are_refused(video_folder, tmp_path):
    """A second process on a shard another is writing is refused in one line, as for a whole cache."""
    import json
    import os
    import subprocess
    import sys
    import time

    from conftest import REPO, _EXTRACT_CHILD

    out = tmp_path / "two.h5"
    second = [p for p, k in video_shards(create_dataset("folder", video_folder), 2).items()
              if k == 2 and not any(bad in str(p) for bad in ("broken", "truncated"))]
    env = dict(os.environ, HARX_FAULT_HANG=f"{Path(second[0]).name}:0", PYTHONPATH=str(REPO))
    child = subprocess.Popen([sys.executable, "-c", _EXTRACT_CHILD, str(video_folder), str(out),
                              json.dumps({"shard": "2/2"})], env=env)
    lock = shard_path(out, 2, 2).with_name("shard-2-of-2.h5.parts") / "lock"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (lock.exists() and lock.read_text()):
            time.sleep(0.2)
        with pytest.raises(HarxError, match=f"another harx process \\(pid {child.pid}\\) is writing"):
            _extract(video_folder, out, shard="2/2")
        _extract(video_folder, out, shard="1/2")                      # another shard goes ahead
    finally:
        child.kill()
        child.wait()


def test_a_second_merge_is_refused_while_one_runs(video_folder, tmp_path):
    out = tmp_path / "c.h5"
    for k in (1, 2):
        _extract(video_folder, out, shard=f"{k}/2")
    lock = shard_path(out, 1, 2).parent / "merge.lock"
    holder = hold_lock(lock)                           # a live process owns the merge lock
    try:
        with pytest.raises(HarxError, match=f"another harx process \\(pid {holder.pid}\\) is merging the shards"):
            merge_shards(out)
        assert not out.exists() and shard_path(out, 2, 2).exists()   # nothing lost
    finally:
        holder.kill()
        holder.wait()
    assert merge_shards(out) == out                    # its owner gone (killed), the lock is free
    with pytest.raises(HarxError, match="merged already"):
        merge_shards(out)


def test_the_first_rank_does_not_merge_a_finished_shard_of_an_earlier_run(video_folder, tmp_path):
    """An earlier run with other options left shard 2/2 finished; this run's rank 2 rebuilds it
    (--overwrite) while rank 1 waits: the merge must wait for the new one, not take the old."""
    import threading

    from harx.extract.shards import wait_and_merge

    single = tmp_path / "single.h5"
    _extract(video_folder, single)
    out = tmp_path / "c.h5"
    _extract(video_folder, out, shard="2/2", every=2)   # the earlier run's finished shard
    _extract(video_folder, out, shard="1/2")            # this run's rank 1 finished its own
    merged: list = []
    waiter = threading.Thread(target=lambda: merged.append(wait_and_merge(out, 2, 1, poll_s=0.05)), daemon=True)
    waiter.start()
    waiter.join(1.0)
    assert waiter.is_alive() and not out.exists()       # the stale shard is not taken
    _extract(video_folder, out, shard="2/2", overwrite=True)
    waiter.join(60)
    assert merged == [out]
    _same_cache(out, single)
