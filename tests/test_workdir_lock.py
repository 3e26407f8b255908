"""The workdir lock: another process is refused at once, naming the holder; a lock left by a
killed process is taken over; one process may take its own lock again; a read-only workdir
is used unlocked when the lock is not required.

The holders are small Python processes that only take the lock (no JAX), so each case costs
a fraction of a second; ``tests/test_bad_inputs_io.py`` runs two real ``jaxcv train``.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest

from jaxcv.errors import WorkdirLockedError
from jaxcv.workdir_lock import LOCK_FILE, WorkdirLock

HOLD = textwrap.dedent(
    """
    import sys
    from jaxcv.workdir_lock import WorkdirLock
    lock = WorkdirLock(sys.argv[1], "holder test").acquire()
    print("held", flush=True)
    if sys.argv[2] == "kill":
        import os, signal
        os.kill(os.getpid(), signal.SIGKILL)
    sys.stdin.read()  # until the test closes stdin
    lock.release()
    """
)


def hold(workdir, mode="wait") -> subprocess.Popen:
    """A process holding ``workdir``'s lock (until its stdin closes; ``kill``: SIGKILLs itself
    while holding it)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(workdir), mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    if mode == "wait":
        assert proc.stdout.readline().strip() == "held"
    else:
        proc.wait(timeout=60)
        assert proc.returncode == -signal.SIGKILL
    return proc


def test_a_second_process_is_refused_naming_the_holder(tmp_path):
    holder = hold(tmp_path / "run")
    try:
        with pytest.raises(WorkdirLockedError) as err:
            WorkdirLock(tmp_path / "run", "jaxcv train x").acquire()
        message = str(err.value)
        assert f"PID {holder.pid} on host {socket.gethostname()} (holder test, since " in message
        assert "\n" not in message and "use another --workdir" in message
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    record = (tmp_path / "run" / LOCK_FILE).read_text()
    assert record == ""  # a clean release empties the record
    with WorkdirLock(tmp_path / "run", "jaxcv train x") as lock:
        assert lock.took_over is None
        assert json.loads((tmp_path / "run" / LOCK_FILE).read_text())["pid"] == os.getpid()


def test_the_lock_of_a_killed_process_is_taken_over_and_said(tmp_path, capsys):
    dead = hold(tmp_path, mode="kill")
    with WorkdirLock(tmp_path, "jaxcv train x") as lock:
        assert lock.took_over["pid"] == dead.pid
    err = capsys.readouterr().err
    assert err.startswith(f"jaxcv: warning: took over the lock of {tmp_path} from PID {dead.pid}")
    assert len(err.splitlines()) == 1


def test_one_process_takes_its_own_lock_again(tmp_path):
    outer = WorkdirLock(tmp_path, "jaxcv train x").acquire()
    with WorkdirLock(tmp_path, "train_and_evaluate"):
        pass
    assert json.loads((tmp_path / LOCK_FILE).read_text())["command"] == "jaxcv train x"
    outer.release()
    assert (tmp_path / LOCK_FILE).read_text() == ""
    other = subprocess.run(
        [sys.executable, "-c", HOLD, str(tmp_path), "kill"], capture_output=True, text=True
    )
    assert other.returncode == -signal.SIGKILL  # it got the lock: ours was released


def test_a_read_only_workdir_is_used_unlocked_unless_required(tmp_path, monkeypatch):
    real_open = os.open

    def read_only_fs(path, flags, *args):
        if flags & (os.O_RDWR | os.O_WRONLY | os.O_CREAT):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", read_only_fs)
    with WorkdirLock(tmp_path, "jaxcv eval x", required=False):
        pass
    with pytest.raises(OSError, match="Read-only file system"):
        WorkdirLock(tmp_path, "jaxcv train x").acquire()
    monkeypatch.undo()
    holder = hold(tmp_path)  # a lock file that exists is locked read-only, and conflicts
    try:
        monkeypatch.setattr(os, "open", read_only_fs)
        with pytest.raises(WorkdirLockedError, match=f"PID {holder.pid}"):
            WorkdirLock(tmp_path, "jaxcv eval x", required=False).acquire()
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)


def test_a_missing_workdir_is_not_created_unless_required(tmp_path):
    with WorkdirLock(tmp_path / "none", "jaxcv eval x", required=False):
        pass
    assert not (tmp_path / "none").exists()
    with WorkdirLock(tmp_path / "new", "jaxcv train x"):
        assert (tmp_path / "new" / LOCK_FILE).is_file()
