"""Ctrl-C and SIGTERM for the long-running commands: recorded, however many and however fast."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from osms.dev.stopping import StopSignals

pytestmark = pytest.mark.unit

# A second signal lands while the first one's handler runs (a double Ctrl-C, or `timeout` forwarding
# the signal it got): recording the first one sends the second, whose handler then runs nested, at the
# next bytecode. With "locking" the handler holds a lock while it records, as threading.Event.set does.
NESTED = textwrap.dedent("""
    import os, signal, sys, threading
    from osms.dev.stopping import StopSignals

    class Record(list):
        sent = False

        def append(self, signum):
            if not Record.sent:
                Record.sent = True
                os.kill(os.getpid(), signal.SIGINT)
                n = 0
                for _ in range(1000):  # bytecodes: the pending handler runs in here
                    n += 1
            super().append(signum)

    stop = StopSignals()
    if sys.argv[1:] == ["locking"]:
        lock = threading.Lock()

        def handler(signum, frame):
            with lock:
                stop.received.append(signum)

        stop._handler = handler
    with stop:
        stop.received = Record()
        os.kill(os.getpid(), signal.SIGTERM)
        stop.wait(10)
    print(sorted(stop.received))
""")


def _nested(*args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", NESTED, *args], capture_output=True, text=True, timeout=timeout)


def test_a_signal_is_recorded_and_ends_the_wait() -> None:
    with StopSignals() as stop:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGINT)
        started = time.monotonic()
        assert stop.wait(30)
        assert time.monotonic() - started < 5
    assert stop.received == [signal.SIGINT]


def test_wait_gives_up_after_the_timeout_without_a_signal() -> None:
    with StopSignals() as stop:
        assert stop.wait(0.3) is False
        assert not stop.requested


def test_the_previous_handlers_are_back_after_the_block() -> None:
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with StopSignals():
        assert all(signal.getsignal(s) != h for s, h in before.items())
    assert {s: signal.getsignal(s) for s in before} == before


def test_a_signal_inside_the_handler_neither_hangs_nor_is_lost() -> None:
    r = _nested(timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(sorted([int(signal.SIGINT), int(signal.SIGTERM)]))


def test_the_nested_signal_really_nests() -> None:
    """The check above can fail: the same nesting hangs a handler that takes a lock (the old Event.set)."""
    with pytest.raises(subprocess.TimeoutExpired):
        _nested("locking", timeout=5)
