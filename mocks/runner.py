"""Run an ASGI app on 127.0.0.1 in a background thread: for `osms mocks serve` and tests."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import uvicorn

LOOPBACK = "127.0.0.1"


@dataclass
class RunningServer:
    """A server started by :func:`start_server`; ``stop()`` shuts it down cleanly."""

    url: str
    port: int
    _server: uvicorn.Server
    _thread: threading.Thread

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the server to exit and wait for its thread."""
        self._server.should_exit = True
        self._thread.join(timeout)


def _loopback_socket(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((LOOPBACK, port))  # never another address: the mocks are loopback-only
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def start_server(app: Any, port: int = 0, *, name: str = "mock", startup_timeout: float = 15.0) -> RunningServer:
    """Serve ``app`` on 127.0.0.1:``port`` (0: a free port) in a daemon thread."""
    sock = _loopback_socket(port)
    bound = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", timeout_keep_alive=30)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=f"{name}:{bound}", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError(f"the {name} server on {LOOPBACK}:{bound} exited during startup")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"the {name} server on {LOOPBACK}:{bound} did not start in {startup_timeout:.0f} s")
        time.sleep(0.02)
    return RunningServer(url=f"http://{LOOPBACK}:{bound}", port=bound, _server=server, _thread=thread)


@contextlib.contextmanager
def serving(app: Any, port: int = 0, *, name: str = "mock") -> Iterator[RunningServer]:
    """Context manager form of :func:`start_server`."""
    running = start_server(app, port, name=name)
    try:
        yield running
    finally:
        running.stop()
