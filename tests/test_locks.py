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
