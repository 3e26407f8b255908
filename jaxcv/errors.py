"""The errors jaxcv raises on purpose, importable without TensorFlow or JAX.

The CLI catches these to print one line; keeping them here lets it do so without importing the
heavy modules that raise them (``jaxcv list`` and usage errors answer in well under a second).
The wording of a failed write (:func:`cannot_write`: the path, and for a full disk the space
left on it) is here too, shared by the checkpoints, the metrics and the command line.
"""

import errno
import os
import shutil


class DatasetNotPreparedError(RuntimeError):
    """A real (downloaded) dataset is not in the data dir and jaxcv never downloads it."""


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or inf; ``step`` is the first bad step."""

    def __init__(self, message: str, *, step: int):
        super().__init__(message)
        self.step = step


class InitFromError(ValueError):
    """``model.init_from`` cannot be read, or does not fit the model."""


class CheckpointCorruptError(RuntimeError):
    """A checkpoint step directory exists but cannot be read, or fails its checksums."""


class WriteError(RuntimeError):
    """A run's output (metrics, events, results) could not be written: a full disk, a
    directory that cannot be written. The message names the path (:func:`cannot_write`)."""


class CheckpointWriteError(WriteError):
    """A checkpoint step could not be written; the steps saved before are intact."""


class WorkdirLockedError(RuntimeError):
    """Another live process holds the workdir's lock (:mod:`jaxcv.workdir_lock`)."""


class ConfigChangedError(ValueError):
    """A resumed run's config differs from the one its checkpoints were written with."""


#: errno values of a full disk or quota.
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def _size(n: float) -> str:
    """``n`` bytes in B, KiB, MiB, GiB or TiB."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def disk_space(path: str | os.PathLike) -> str:
    """``"12.0 KiB free of 600.0 KiB"`` on the file system of ``path`` (or of its nearest
    existing parent), for the message of a full disk; ``""`` when it cannot be read."""
    path = os.path.abspath(path)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    try:
        usage = shutil.disk_usage(path)
    except OSError:
        return ""
    return f"{_size(usage.free)} free of {_size(usage.total)}"


def is_disk_full(error: BaseException | None) -> bool:
    """Whether ``error`` or one of its causes says the disk (or the quota) is full; TensorStore
    and TensorFlow say it in their messages only."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in DISK_FULL:
            return True
        if "No space left on device" in str(error) or "Disk quota exceeded" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


def cannot_write(path: str | os.PathLike, error: BaseException, limit: int = 240) -> str:
    """``cannot write PATH: REASON`` on one line: for a full disk the space left on it, else
    the error's type and message, cut to ``limit`` characters."""
    if is_disk_full(error):
        space = disk_space(path)
        reason = "no space left on the device" + (f" ({space})" if space else "")
    else:
        reason = " ".join(f"{type(error).__name__}: {error}".split())
        reason = reason if len(reason) <= limit else reason[:limit] + " ..."
    return f"cannot write {path}: {reason}"
