"""What a jaxcv run prints: its own lines, not the chatter of the libraries it uses.

TensorFlow (its C++ start-up banner, oneDNN's notice), absl (tfds' and orbax's warnings) and
Python's deprecation warnings from those libraries are silenced unless ``JAXCV_DEBUG=1``
(or ``jaxcv --verbose``), which brings every line back. Importing this module imports
nothing heavy.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator, MutableMapping

DEBUG_ENV = "JAXCV_DEBUG"

# Libraries whose Python warnings a normal run does not show.
_NOISY_MODULES = r"(tensorflow|tensorflow_datasets|tf_keras|keras|orbax|absl|flax|etils|google)"


def debug_enabled(environ: MutableMapping[str, str] = os.environ) -> bool:
    """Whether ``JAXCV_DEBUG=1``: show tracebacks and every library's output."""
    return environ.get(DEBUG_ENV) == "1"


@contextlib.contextmanager
def verbose_if(verbose: bool) -> Iterator[None]:
    """``JAXCV_DEBUG=1`` for the duration (``jaxcv --verbose``; subprocesses inherit it)."""
    if not verbose:
        yield
        return
    previous = os.environ.get(DEBUG_ENV)
    os.environ[DEBUG_ENV] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(DEBUG_ENV, None)
        else:
            os.environ[DEBUG_ENV] = previous


def warn(message: str) -> None:
    """Print ``jaxcv: warning: MESSAGE`` as one line on stderr: something the user should know
    that does not stop the command (a corrupt checkpoint skipped, a stale lock taken over)."""
    print(f"jaxcv: warning: {message}", file=sys.stderr, flush=True)


def quiet_tensorflow_environment(environ: MutableMapping[str, str] = os.environ) -> None:
    """Environment that keeps TensorFlow's C++ side quiet; must run before it is imported.

    The user's own values win. ``TF_ENABLE_ONEDNN_OPTS=0`` removes the oneDNN notice that TF
    prints (through absl, before its log level applies) at start-up; tf.data's image ops, all
    TensorFlow does here, do not use oneDNN's kernels.
    """
    if debug_enabled(environ):
        return
    environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def quiet_libraries() -> None:
    """Silence absl logging below ERROR and the libraries' Python warnings (unless debug)."""
    quiet_tensorflow_environment()
    if debug_enabled():
        return
    for category in (DeprecationWarning, FutureWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category, module=_NOISY_MODULES)
    # absl's Python logger (tfds: "Variant folder ... has no dataset_info.json", orbax:
    # "Requested tracked_metric ...") writes through the standard logging module.
    absl = logging.getLogger("absl")
    absl.setLevel(logging.ERROR)
    if not any(isinstance(f, _DropOrbaxLogs) for f in absl.filters):
        absl.addFilter(_DropOrbaxLogs())
    sys.unraisablehook = _drop_closed_loop_callbacks(sys.unraisablehook)


class _DropOrbaxLogs(logging.Filter):
    """Drops the records that orbax logs through absl. Its errors (a failed save, with a
    traceback from each of its threads) repeat an exception that reaches jaxcv, which reports
    it in one line. absl names itself as the caller of every record, so the logging call is
    found on the stack (only records at the logger's level get this far: ERROR)."""

    def filter(self, record: logging.LogRecord) -> bool:
        frame = sys._getframe(1)
        while frame is not None:
            name = frame.f_globals.get("__name__", "")
            if not (name == "logging" or name.startswith(("logging.", "absl", __name__))):
                return not name.startswith("orbax")
            frame = frame.f_back
        return True


def _drop_closed_loop_callbacks(previous):
    """An unraisable-exception hook that drops asyncio's "Event loop is closed" and passes the
    rest to ``previous``. After a failed read, orbax's TensorStore futures call back into the
    event loop it has already closed, once per pending read: a traceback each, at exit, for an
    error jaxcv has already reported in one line."""
    if getattr(previous, "drops_closed_loop_callbacks", False):
        return previous

    def hook(unraisable):
        value = unraisable.exc_value
        if isinstance(value, RuntimeError) and str(value) == "Event loop is closed":
            return
        previous(unraisable)

    hook.drops_closed_loop_callbacks = True
    return hook
