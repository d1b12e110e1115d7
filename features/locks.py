"""One process at a time: an exclusive lock on a file, held by an open descriptor.

The lock is ``flock(2)`` on the file, not the file's existence. The kernel frees it when its
holder dies, however it dies (``kill -9``, a lost node's process reaped), so nothing ever has to
guess whether an owner is gone and take its lock over; two processes that both find a dead
owner's file cannot both win. On NFS, Linux maps ``flock`` to byte-range locks that the server
arbitrates, so ranks on several machines sharing one file system exclude each other too, unless
the file system is mounted so that locks stay local to each machine (NFS ``nolock`` or
``local_lock=flock``, Lustre ``localflock``): then, silently, they exclude only processes on the
same machine, and nothing in user space can tell.

The file holds ``pid host`` for the refusal message only. A file system that cannot lock at all
(some parallel file systems mounted without lock support) gets a one-line warning and no lock:
refusing all work there would be worse than the risk it names.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import sys
from pathlib import Path

from .errors import HarxError

__all__ = ["FileLock", "take_lock"]

_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


class FileLock:
    """A held lock; :meth:`release` (or leaving the ``with`` block) deletes the file and frees it."""

    def __init__(self, path: Path, fd: int | None):
        self.path, self._fd = path, fd

    def release(self) -> None:
        if self._fd is None:
            return
        # Unlink before closing: a process that opened the file meanwhile and wins flock after
        # the close sees that the path is gone (or is another file) and tries again.
        self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None

    def forget(self) -> None:
        """Free the lock without touching the file (its folder was removed with it)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "FileLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def take_lock(path: Path, doing: str) -> FileLock:
    """Lock ``path`` for this process, or raise ``HarxError`` naming the live holder and what it
    is ``doing``. Never waits: a second run on the same output is refused at once."""
    path = Path(path)
    for _ in range(10):
        try:
            fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
        except FileNotFoundError:
            raise HarxError(f"{path.parent} was removed while harx took its lock (another harx process "
                            "finished or discarded it); run the command again") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise HarxError(f"another harx process ({holder}) is {doing}; wait for it or stop it") from None
        except OSError as err:
            if err.errno not in _NO_LOCKS:
                os.close(fd)
                raise
            print(f"warning: {path.parent} cannot be locked ({err.strerror}); a second run on the same "
                  "output would not be noticed", file=sys.stderr)
            _write_holder(fd)
            return FileLock(path, fd)
        if _is_current(fd, path):
            _write_holder(fd)
            return FileLock(path, fd)
        os.close(fd)    # its holder released it and deleted the file between our open and flock
    raise HarxError(f"cannot take the lock {path} (processes keep racing for it); try again")


def _is_current(fd: int, path: Path) -> bool:
    try:
        here, there = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def _write_holder(fd: int) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}".encode(), 0)


def _read_holder(fd: int) -> str:
    try:
        pid, _, host = os.pread(fd, 300, 0).decode(errors="replace").strip().partition(" ")
    except OSError:
        pid, host = "", ""
    if not pid:
        return "starting"
    return f"pid {pid}" + (f" on {host}" if host and host != socket.gethostname() else "")
