"""One writer per workdir: a lock file held while ``jaxcv train`` or ``jaxcv eval`` writes.

Two runs writing one workdir interleave their ``metrics.jsonl`` and overwrite each other's
checkpoints and ``results.json`` without an error; :class:`WorkdirLock` refuses the second one
at once (:class:`jaxcv.errors.WorkdirLockedError`, naming the holder's PID and host). The
command line takes it before importing JAX or TensorFlow, so the refusal costs no start-up; the
training loop and ``evaluate_checkpoint`` take it again (for callers other than the command
line), which within one process only counts a level.

The lock is ``fcntl.flock`` on ``WORKDIR/.jaxcv.lock``. The kernel releases it when the
holder's file descriptor closes, however the process ends (return, exception, SIGKILL), so no
dead process can hold it. What a killed holder does leave is its record in the file (PID, host,
command, start time), which a clean release empties: a new holder that finds a record takes
over a stale lock, and says so. The file itself is never deleted: deleting it would let a
process that had already opened it lock an orphaned copy while a third one locks a new file.

flock is advisory: it binds only jaxcv processes. It works between processes of one machine
and, on Linux, over NFS; on a file system without locks the run goes on unlocked, with a
warning. Importing this module imports nothing heavy (it is layer 0 of docs/architecture.md).
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import os
import socket
import threading
from pathlib import Path
from typing import Any

from jaxcv import console
from jaxcv.errors import WorkdirLockedError

__all__ = ["LOCK_FILE", "WorkdirLock", "WorkdirLockedError"]

LOCK_FILE = ".jaxcv.lock"
# errno values of a file system that does not support flock.
_NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS)
# errno values of a lock file opened read-only.
_NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)

# The locks this process holds: real path of the lock file -> [descriptor or None, depth].
_held: dict[str, list] = {}
_held_guard = threading.Lock()


def _describe(record: dict[str, Any]) -> str:
    """``PID 123 on host h (jaxcv train x, since 2024-01-01 12:00:00)`` from a lock record."""
    text = f"PID {record.get('pid', '?')} on host {record.get('host', '?')}"
    details = [record.get("command"), record.get("started") and f"since {record['started']}"]
    details = [d for d in details if d]
    return text + (f" ({', '.join(details)})" if details else "")


def _read_record(fd: int) -> dict[str, Any]:
    try:
        text = os.pread(fd, 4096, 0).decode(errors="replace").strip()
        return json.loads(text) if text else {}
    except (OSError, ValueError):
        return {"pid": "?", "host": "?"}


def _write_record(fd: int, record: dict[str, Any] | None) -> None:
    """Replace the file's content with ``record`` (empty for None); skipped when the file is
    open read-only."""
    data = json.dumps(record).encode() + b"\n" if record else b""
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EBADF, errno.EINVAL, *_NOT_WRITABLE):
            raise


class WorkdirLock:
    """Context manager holding the lock of ``workdir`` (created if missing).

    Args:
      workdir: the run directory.
      command: what holds it, shown to a refused process (e.g. ``"jaxcv train digits_cnn"``).
      required: True creates the workdir and raises the OSError of a workdir that cannot
        hold the lock file. False (``jaxcv eval``, which only adds a file) creates nothing: a
        missing workdir, or one this process cannot write, is used unlocked, and the command
        reports its own error later (a read-only run still evaluates, and prints its metrics).

    Raises (on enter):
      WorkdirLockedError: another process holds the lock.
    """

    def __init__(self, workdir: str | os.PathLike, command: str, *, required: bool = True):
        self.path = Path(workdir) / LOCK_FILE
        self.command, self.required = command, required
        self._key: str | None = None
        self.took_over: dict[str, Any] | None = None  # the stale record replaced, if any

    def _open(self) -> int | None:
        """The lock file's descriptor (None: run unlocked). Not ``required``: read-only when
        the workdir is not ours to write (flock needs no write access), None when it does not
        exist or cannot be opened."""
        if self.required:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        for flags in (os.O_RDWR | os.O_CREAT, os.O_RDONLY):
            try:
                return os.open(self.path, flags, 0o644)
            except OSError:
                continue
        return None

    def _lock(self) -> int | None:
        """Open and flock the file; the descriptor, or None when running unlocked."""
        fd = self._open()
        if fd is None:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _read_record(fd)
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise WorkdirLockedError(
                    f"workdir {self.path.parent} is in use by {_describe(holder)}; wait for "
                    "it to finish, or use another --workdir"
                ) from None
            if e.errno not in _NO_LOCKS:
                raise
            console.warn(f"cannot lock {self.path} ({e.strerror}); running without the lock")
            return None
        return fd

    def acquire(self) -> WorkdirLock:
        """Take the lock (or one more level of this process's lock) or raise
        :class:`WorkdirLockedError` at once; never waits."""
        key = os.path.realpath(self.path)
        with _held_guard:
            if key in _held:
                _held[key][1] += 1
                self._key = key
                return self
            fd = self._lock()
            _held[key] = [fd, 1]
            self._key = key
        if fd is not None:
            self._claim(fd)
        return self

    def _claim(self, fd: int) -> None:
        """Write this process's record, reporting the stale one a killed holder left."""
        stale = _read_record(fd)
        if stale:
            self.took_over = stale
            console.warn(
                f"took over the lock of {self.path.parent} from {_describe(stale)}, which "
                "ended without releasing it"
            )
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": self.command,
            "started": datetime.datetime.now().isoformat(sep=" ", timespec="seconds"),
        }
        _write_record(fd, record)

    def release(self) -> None:
        """Drop one level; the last one empties the record (a clean release) and unlocks."""
        if self._key is None:
            return
        with _held_guard:
            entry = _held[self._key]
            entry[1] -= 1
            if entry[1] == 0:
                del _held[self._key]
                fd = entry[0]
                if fd is not None:
                    try:
                        _write_record(fd, None)
                    finally:
                        os.close(fd)  # closing the last descriptor releases the flock
            self._key = None

    def __enter__(self) -> WorkdirLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
