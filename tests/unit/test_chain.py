"""The delivery chain's explicit start: written once, nothing before it, every later day waits for the day before."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner

from osms.core import layout
from osms.core.documents import Receipt
from osms.orchestration.failures import is_permanent
from osms.package.chain import (
    BeforeChainStart,
    ChainBroken,
    ChainNotStarted,
    ChainStartConflict,
    ChainWaiting,
    chain_start,
    link,
    package_id,
    set_chain_start,
)

pytestmark = pytest.mark.unit

D0, D1, D2, D3 = (dt.date(2025, 6, 1) + dt.timedelta(days=k) for k in range(4))


def built(root: Path, day: dt.date, *, delivered: bool = False) -> str:
    """A package folder of D as the chain sees it: a manifest, and a receipt for it when delivered."""
    folder = layout.package_dir(root, day)
    folder.mkdir(parents=True, exist_ok=True)
    manifest = json.dumps({"package_id": package_id(day), "logical_date": day.isoformat()}).encode()
    (folder / "manifest.json").write_bytes(manifest)
    sha = hashlib.sha256(manifest).hexdigest()
    if delivered:
        (folder / "receipt.json").write_bytes(receipt(day, sha).to_bytes())
    return sha


def receipt(day: dt.date, sha: str) -> Receipt:
    return Receipt(receipt_id=f"R-{day}", package_id=package_id(day), manifest_sha256=sha,
                   logical_date=day.isoformat(), received_at=f"{day + dt.timedelta(days=1)}T01:00:00+00:00", files=3)


class FakeReceiver:
    """What the chain asks the State Corporation, holding the given days' receipts."""

    def __init__(self, held: dict[dt.date, str] | None = None) -> None:
        self.held = dict(held or {})

    def packages(self) -> dict[str, dict[str, Any]]:
        return {package_id(d): {"logical_date": d.isoformat(), "receipt_id": f"R-{d}"} for d in self.held}

    def receipt(self, pid: str) -> Receipt | None:
        day = next((d for d in self.held if package_id(d) == pid), None)
        return None if day is None else receipt(day, self.held[day])


def test_the_first_run_on_a_fresh_data_root_writes_the_start_and_starts_the_chain(tmp_path: Path) -> None:
    # Act
    found = link(tmp_path, D1, FakeReceiver(), started_by="the first scheduled run (scheduled__x)")

    # Assert
    assert found.previous is None and "start of the delivery chain" in found.how
    start = chain_start(tmp_path)
    assert start is not None and start.start == D1 and start.set_by == "the first scheduled run (scheduled__x)"
    assert json.loads(layout.chain_start(tmp_path).read_text())["schema"] == "osms.package.chain.start/1"


def test_a_later_day_run_first_waits_for_the_start_and_the_days_between_whatever_the_order(tmp_path: Path) -> None:
    # Arrange: the init set the start at D0; D2's run comes before any other
    set_chain_start(tmp_path, D0, set_by="the init", strict=True)

    # Act / Assert: D2 waits for D1, which waits for D0 (never "starts the chain" itself)
    with pytest.raises(ChainWaiting, match=f"{D1} is not delivered yet"):
        link(tmp_path, D2, FakeReceiver())
    with pytest.raises(ChainWaiting, match=f"{D0} has no receipt"):
        link(tmp_path, D1)
    assert link(tmp_path, D0, FakeReceiver()).previous is None  # the start itself starts the chain
    built(tmp_path, D0, delivered=True)
    assert link(tmp_path, D1).previous == layout.package_dir(tmp_path, D0)
    built(tmp_path, D1, delivered=True)
    assert link(tmp_path, D2, FakeReceiver()).previous == layout.package_dir(tmp_path, D1)
    assert chain_start(tmp_path).start == D0  # written once: no run moved it


def test_a_day_before_the_start_is_refused_with_that_reason_at_once(tmp_path: Path) -> None:
    # Arrange
    link(tmp_path, D2, FakeReceiver(), started_by="the first backfill run (backfill__y)")

    # Act
    with pytest.raises(BeforeChainStart) as refused:
        link(tmp_path, D1, FakeReceiver(), started_by="another run")

    # Assert: permanent (fails the task at once), and the message names the start and who set it
    assert f"{D1} is before the start of the delivery chain ({D2}, set by the first backfill run" in str(refused.value)
    assert is_permanent(refused.value)
    assert chain_start(tmp_path).start == D2


def test_a_run_that_may_not_start_the_chain_says_how_to_start_it(tmp_path: Path) -> None:
    with pytest.raises(ChainNotStarted, match="osms chain start --date D") as refused:
        link(tmp_path, D1, FakeReceiver(), may_start=False)
    assert is_permanent(refused.value)
    assert chain_start(tmp_path) is None  # nothing written


def test_a_data_root_with_packages_from_before_the_setting_takes_its_earliest_package_as_the_start(
        tmp_path: Path) -> None:
    # Arrange: packages of D0 and D1 delivered before the start was a setting
    sha0 = built(tmp_path, D0, delivered=True)
    built(tmp_path, D1, delivered=True)

    # Act: D2 follows D1, as before; even a run that may not start a chain
    found = link(tmp_path, D2, FakeReceiver({D0: sha0}), may_start=False)

    # Assert
    assert found.previous == layout.package_dir(tmp_path, D1)
    start = chain_start(tmp_path)
    assert start.start == D0 and start.set_by.startswith("inferred")


def test_the_start_is_refused_when_the_receiver_holds_other_days(tmp_path: Path) -> None:
    # a receiver that already holds an earlier day: the start written here is wrong for it
    with pytest.raises(ChainBroken, match="receiver holds packages of earlier days"):
        link(tmp_path, D2, FakeReceiver({D1: "a" * 64}))
    # one that holds later days but not D: D can never be chained there
    with pytest.raises(ChainBroken, match="later days"):
        link(tmp_path, D0, FakeReceiver({D2: "b" * 64}))
    assert chain_start(tmp_path) is None  # neither run wrote a start


def test_the_start_is_written_once_and_the_first_writer_wins(tmp_path: Path) -> None:
    # Arrange
    results: list[dt.date] = []
    barrier = threading.Barrier(8)

    def write(day: dt.date) -> None:
        barrier.wait()
        results.append(set_chain_start(tmp_path, day, set_by=f"run {day}").start)

    # Act: eight runs race to write eight different starts
    threads = [threading.Thread(target=write, args=(D0 + dt.timedelta(days=k),)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    # Assert: every one of them got the same start, the one on disk
    assert len(results) == 8 and len(set(results)) == 1 and results[0] == chain_start(tmp_path).start
    with pytest.raises(ChainStartConflict, match="written once"):
        set_chain_start(tmp_path, results[0] + dt.timedelta(days=30), set_by="a person", strict=True)
    assert set_chain_start(tmp_path, results[0], set_by="a person", strict=True).start == results[0]
    assert not [p for p in layout.chain_start(tmp_path).parent.iterdir() if p.name.startswith(".")]


def test_a_damaged_start_file_fails_naming_it(tmp_path: Path) -> None:
    path = layout.chain_start(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text('{"schema": "osms.package.chain.start/1", "start": "2025-06')
    with pytest.raises(ChainBroken, match="chain's start is unreadable") as broken:
        link(tmp_path, D1)
    assert str(path) in str(broken.value)


def test_a_start_before_the_decree_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ChainStartConflict, match="decree's first day"):
        set_chain_start(tmp_path, dt.date(2021, 1, 1), set_by="a person")


@pytest.mark.parametrize(("run_type", "conf", "may"), [
    ("scheduled", {}, True),
    ("backfill", {}, True),
    ("manual", {}, False),
    ("manual", {"start_chain": True}, True),
    ("asset_triggered", {}, False),
])
def test_which_package_runs_may_write_the_start(run_type: str, conf: dict[str, Any], may: bool) -> None:
    from osms.orchestration.package_dag import chain_starter

    context = {"dag_run": SimpleNamespace(run_type=SimpleNamespace(value=run_type), conf=conf), "run_id": "r1"}
    allowed, who = chain_starter(context)
    assert allowed is may and "r1" in who


def test_osms_chain_start_shows_and_writes_the_start_once(tmp_path: Path) -> None:
    from osms.dev.cli import main

    runner = CliRunner()
    empty = runner.invoke(main, ["chain", "start", "--data-dir", str(tmp_path)])
    assert empty.exit_code == 1 and "no start yet" in empty.output
    written = runner.invoke(main, ["chain", "start", "--date", D1.isoformat(), "--data-dir", str(tmp_path)])
    assert written.exit_code == 0 and f"starts at {D1} (set by osms chain start" in written.output
    moved = runner.invoke(main, ["chain", "start", "--date", D2.isoformat(), "--data-dir", str(tmp_path)])
    assert moved.exit_code != 0 and "written once" in moved.output
    assert chain_start(tmp_path).start == D1
