"""Clean handling of SIGTERM and Ctrl-C in a training run."""

from __future__ import annotations

import signal
import threading
from typing import Any

__all__ = ["Interruption"]


class Interruption:
    """Context manager turning SIGTERM and SIGINT (Ctrl-C) into a ``requested`` flag.

    The loop polls ``requested`` between steps, saves a checkpoint and returns. A second signal
    restores Python's default behaviour (``KeyboardInterrupt``) so a stuck run can still be
    killed. Outside the main thread it does nothing.
    """

    _SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.requested = False
        self.signal_name = ""
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.signal_name = signal.Signals(signum).name

    def __enter__(self) -> Interruption:
        if threading.current_thread() is threading.main_thread():
            for sig in self._SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
