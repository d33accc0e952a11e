"""The one file lock (``osms.core.files.locked``): exclusive, waiting or not, on a lock file or on the file itself."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from osms.core.files import locked

pytestmark = pytest.mark.unit


def test_a_lock_held_elsewhere_is_not_waited_for_without_wait(tmp_path: Path) -> None:
    # Arrange
    path = tmp_path / "package.lock"

    # Act / Assert: flock is per open file, so a second open in this process stands for another process
    with locked(path) as first:
        with locked(path, wait=False) as second:
            assert first is True and second is False
    with locked(path, wait=False) as again:
        assert again is True
    assert path.is_file()


def test_a_waiting_lock_is_taken_once_its_holder_lets_go(tmp_path: Path) -> None:
    # Arrange
    path = tmp_path / "decisions.lock"
    held, order = threading.Event(), []

    def holder() -> None:
        with locked(path):
            held.set()
            threading.Event().wait(0.2)
            order.append("released")

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(5)

    # Act
    with locked(path) as got:
        order.append("taken")
    thread.join()

    # Assert
    assert got is True and order == ["released", "taken"]


def test_a_file_locked_as_itself_is_never_created(tmp_path: Path) -> None:
    notice = tmp_path / "notice.json"
    with pytest.raises(FileNotFoundError):
        with locked(notice, wait=False, create=False):
            pass
    assert not notice.exists()

    notice.write_bytes(b"{}")
    with locked(notice, wait=False, create=False) as first, locked(notice, wait=False, create=False) as second:
        assert (first, second) == (True, False)
    assert notice.read_bytes() == b"{}"
