"""features.locks: one process at a time on an output, freed by the kernel when its holder dies."""

from __future__ import annotations

import os
import signal

import pytest

from conftest import hold_lock
from harx.features.errors import HarxError
from harx.features.locks import take_lock


def test_a_live_holder_is_named_and_a_killed_one_frees_the_lock_at_once(tmp_path):
    path = tmp_path / "lock"
    holder = hold_lock(path)
    try:
        with pytest.raises(HarxError, match=f"another harx process \\(pid {holder.pid}\\) is merging; wait"):
            take_lock(path, "merging")
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    assert path.exists()                          # kill -9 left its file behind ...
    with take_lock(path, "merging") as lock:      # ... and the lock is free, no guessing about PIDs
        assert path.read_text().split()[0] == str(os.getpid())
        with pytest.raises(HarxError, match=f"pid {os.getpid()}"):
            take_lock(path, "merging")            # one holder, even within a process
    assert not path.exists()
    take_lock(path, "merging").release()


def test_a_file_deleted_by_its_releasing_holder_is_not_locked_in_its_place(tmp_path, monkeypatch):
    """A process that opened the file just before its holder released it (unlink, then close) wins
    flock on a deleted file; it must notice and lock the path's new file instead. Otherwise it and
    a third process locking the new file would both think they hold the lock."""
    import fcntl

    path = tmp_path / "lock"
    first = take_lock(path, "writing")
    real_flock, calls = fcntl.flock, []

    def released_meanwhile(fd, op):              # the holder lets go between our open and flock
        if not calls:
            first.release()
        calls.append(os.fstat(fd).st_ino)
        return real_flock(fd, op)

    monkeypatch.setattr(fcntl, "flock", released_meanwhile)
    with take_lock(path, "writing"):
        assert len(calls) == 2 and os.stat(path).st_ino == calls[1]   # tried again, on the new file
        monkeypatch.setattr(fcntl, "flock", real_flock)
        with pytest.raises(HarxError, match="is writing"):
            take_lock(path, "writing")


def test_a_file_system_without_locks_gets_a_warning_not_a_refusal(tmp_path, monkeypatch, capsys):
    import errno
    import fcntl

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with take_lock(tmp_path / "lock", "writing"):
        pass
    assert "cannot be locked (No locks available)" in capsys.readouterr().err


def _writer_settings(small_cache) -> dict:
    from harx.features import FeatureStore

    skip = {"format", "schema_version", "complete", "n_samples", "n_frames", "n_failed", "created_utc",
            "stage_one_cost", "settings_fingerprint", "streams"}
    return {k: v for k, v in FeatureStore(small_cache).attrs.items() if k not in skip}


def _write_one_sample(writer, small_cache) -> None:
    import dataclasses

    from harx.features import FeatureStore

    src = FeatureStore(small_cache)
    rec = src.samples()[0]
    meta = {k: v for k, v in dataclasses.asdict(rec).items() if k not in ("index", "row_start", "row_stop")}
    writer.add_sample(meta, src.frames(rec.index), src.frame_index(rec.index))


def test_overwrite_is_refused_while_another_process_writes_the_cache(small_cache, tmp_path):
    """--overwrite used to delete the parts folder, the live writer's lock with it, before locking."""
    from harx.features.writer import FeatureWriter

    out = tmp_path / "c.h5"
    parts = out.with_name("c.h5.parts")
    parts.mkdir()
    (parts / "part-000001.h5").write_bytes(b"the other writer's work")
    holder = hold_lock(parts / "lock")
    try:
        with pytest.raises(HarxError, match=f"another harx process \\(pid {holder.pid}\\) is writing"):
            FeatureWriter(out, _writer_settings(small_cache), overwrite=True).open()
        assert (parts / "part-000001.h5").read_bytes() == b"the other writer's work"
    finally:
        holder.kill()
        holder.wait()


def test_a_refused_open_frees_the_lock_for_the_next_attempt_in_the_same_process(small_cache, tmp_path):
    """A notebook or `harx serve` process whose open() was refused must be able to try again."""
    from harx.features.errors import CacheMismatchError
    from harx.features.writer import FeatureWriter

    out = tmp_path / "c.h5"
    settings = _writer_settings(small_cache)
    with FeatureWriter(out, settings) as writer:             # an interrupted run: one part, no cache
        _write_one_sample(writer, small_cache)
    other = dict(settings, precision="fp16" if settings.get("precision") != "fp16" else "fp32")
    with pytest.raises(CacheMismatchError):
        FeatureWriter(out, other).open()
    with FeatureWriter(out, other, overwrite=True) as writer:   # refused as "pid <this process>" if kept
        _write_one_sample(writer, small_cache)
        writer.finalize(order=[])
    assert out.is_file() and not out.with_name("c.h5.parts").exists()
