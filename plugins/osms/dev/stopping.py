"""Ctrl-C and SIGTERM for the long-running commands (``osms airflow``, ``osms mocks serve``).

A Python signal handler runs in the main thread between two bytecodes, wherever that thread is,
including inside another handler. A handler that takes a lock, as ``threading.Event.set`` does,
therefore deadlocks when a second signal lands while the first handler holds the lock: a double
Ctrl-C, or ``timeout``/``make`` forwarding the signal they got on top of the terminal's. The
command then hangs with every server still running. Here the handler only appends to a list (one
step under the GIL, no lock to hold), and the main loop polls.
"""

from __future__ import annotations

import signal
import time
from types import FrameType, TracebackType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
POLL_S = 0.2  # how soon a waiting loop sees a signal


class StopSignals:
    """Within ``with StopSignals() as stop:``, SIGINT and SIGTERM only record a stop request.

    ``stop.wait(timeout)`` returns True once one has arrived (False when the timeout passed
    first); the previous handlers are back after the block. Main thread only, as ``signal`` is.
    """

    def __init__(self, signals: tuple[signal.Signals, ...] = STOP_SIGNALS) -> None:
        self.signals = signals
        self.received: list[int] = []
        self._previous: dict[signal.Signals, object] = {}

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        self.received.append(signum)  # nothing else: see the module's docstring

    @property
    def requested(self) -> bool:
        """Whether a stop signal has arrived."""
        return bool(self.received)

    def wait(self, timeout: float | None = None) -> bool:
        """Sleep until a stop signal has arrived (True) or ``timeout`` seconds passed (False)."""
        end = None if timeout is None else time.monotonic() + timeout
        while not self.received:
            left = POLL_S if end is None else min(POLL_S, end - time.monotonic())
            if left <= 0:
                return False
            time.sleep(left)
        return True

    def __enter__(self) -> StopSignals:
        for s in self.signals:
            self._previous[s] = signal.signal(s, self._handler)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)  # type: ignore[arg-type]
        self._previous.clear()
