"""QA's decisions on held-back feeds: recorded with who and when, inputs of the package, never changing a built one."""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import stat
from pathlib import Path

import pytest

from osms.core import layout
from osms.core.decisions import DecisionRefused, Decisions, check_reason, read_log, record
from osms.core.status import BodyStatus, CategoryStatus, trailing_counts, write_status
from tests.unit.test_package import build, deliver, keys, person, publish, quality, records  # noqa: F401

pytestmark = pytest.mark.unit

D1, D2, D3 = dt.date(2025, 6, 1), dt.date(2025, 6, 2), dt.date(2025, 6, 3)
BODY, SYSTEM, CATEGORY = "enlightenment", "nedb", "children"
FEED = f"{BODY}.{SYSTEM}.{CATEGORY}"
AT = dt.datetime(2025, 6, 2, 4, 10, tzinfo=dt.UTC)


def feed_status(root: Path, day: dt.date, verdict: str, rows_in: int = 2, kind: str | None = None) -> None:
    """The body's status of D: the children feed from nedb with ``verdict``."""
    info = {"status": verdict, "reason": None if verdict == "published" else "volume 40 % of trailing median 5",
            "rows_in": rows_in, "rows_published": rows_in, "rows_quarantined": 0}
    if kind:
        info.update({"kind": kind, "error": "schema change"})
    cat = CategoryStatus(category=CATEGORY, status=verdict, reason=info["reason"], rows_in=rows_in,
                         rows_published=rows_in, feeds={SYSTEM: info})
    write_status(root, BodyStatus(body=BODY, as_of=day, edition="2022", categories=(cat,)))


def day_of(root: Path, day: dt.date, verdict: str, people: range) -> None:
    publish(root, day, BODY, CATEGORY, [{**person(n), "system": SYSTEM, "record_id": f"e{n}"} for n in people])
    feed_status(root, day, verdict, rows_in=len(people))


def decide(root: Path, day: dt.date, action: str, reason: str = "the drop is real: a register was cleaned",
           by: str = "qa", at: dt.datetime = AT):
    return record(root, day=day, body=BODY, system=SYSTEM, category=CATEGORY, action=action, reason=reason, by=by,
                  at=at)


def package_files(result) -> dict[str, bytes]:
    return {n: (result.path / n).read_bytes() for n in ("records.parquet", "changes.parquet", "quality.json",
                                                        "manifest.json", "manifest.sig")}


def test_release_before_the_package_is_built_publishes_the_rows_into_that_package(tmp_path, keys):
    # Arrange: D1 published (3 people), D2 held back with its own 2 people
    day_of(tmp_path, D1, "published", range(1, 4))
    day_of(tmp_path, D2, "held_back", range(1, 3))
    deliver(build(tmp_path, D1, keys))

    # Act
    decision = decide(tmp_path, D2, "release")
    result = build(tmp_path, D2, keys)

    # Assert: D2's own rows, the decision with who and when in quality.json
    assert decision.applies_from == D2
    assert len(records(result)) == 2
    q = quality(result)
    feed = q["categories"][CATEGORY]["bodies"][BODY]["feeds"][SYSTEM]
    assert feed["status"] == "released" and feed["carried_forward_from"] is None and feed["rows_used"] == 2
    assert feed["decision"] == {"feed": FEED, "day": "2025-06-02", "action": "release", "by": "qa",
                                "at": "2025-06-02T04:10:00Z", "applies_from": "2025-06-02",
                                "reason": "the drop is real: a register was cleaned"}
    assert q["decisions"] == [feed["decision"]]


def test_without_a_decision_the_hold_stands_and_quality_json_has_no_decisions(tmp_path, keys):
    day_of(tmp_path, D1, "published", range(1, 4))
    day_of(tmp_path, D2, "held_back", range(1, 3))
    deliver(build(tmp_path, D1, keys))

    result = build(tmp_path, D2, keys)

    q = quality(result)
    assert "decisions" not in q and "decision" not in q["categories"][CATEGORY]["bodies"][BODY]["feeds"][SYSTEM]
    assert q["categories"][CATEGORY]["bodies"][BODY]["feeds"][SYSTEM]["carried_forward_from"] == "2025-06-01"
    assert len(records(result)) == 3


def test_release_after_delivery_shapes_the_next_package_and_never_the_delivered_one(tmp_path, keys):
    # Arrange: D2 held back and delivered carried forward from D1; D3 held back too (its run came first)
    day_of(tmp_path, D1, "published", range(1, 6))
    day_of(tmp_path, D2, "held_back", range(1, 3))
    day_of(tmp_path, D3, "held_back", range(1, 2))
    deliver(build(tmp_path, D1, keys))
    delivered = build(tmp_path, D2, keys)
    deliver(delivered)
    before = package_files(delivered)

    # Act
    decision = decide(tmp_path, D2, "release")
    rebuilt = build(tmp_path, D2, keys)
    following = build(tmp_path, D3, keys)

    # Assert: D2 rebuilds byte for byte; D3 carries D2's released rows forward and names the decision
    assert decision.applies_from == D3
    assert package_files(rebuilt) == before
    assert len(records(following)) == 2
    q = quality(following)
    feed = q["categories"][CATEGORY]["bodies"][BODY]["feeds"][SYSTEM]
    assert feed["status"] == "held_back" and feed["carried_forward_from"] == "2025-06-02"
    assert [d["day"] for d in q["decisions"]] == ["2025-06-02"]
    assert package_files(build(tmp_path, D3, keys)) == package_files(following)  # same inputs and decisions


def test_a_release_applying_from_the_next_day_is_listed_there_even_when_that_day_publishes(tmp_path, keys):
    day_of(tmp_path, D1, "published", range(1, 6))
    day_of(tmp_path, D2, "held_back", range(1, 3))
    deliver(build(tmp_path, D1, keys))
    deliver(build(tmp_path, D2, keys))
    decide(tmp_path, D2, "release")
    day_of(tmp_path, D3, "published", range(1, 3))

    q = quality(build(tmp_path, D3, keys))

    assert [(d["day"], d["applies_from"]) for d in q["decisions"]] == [("2025-06-02", "2025-06-03")]
    assert q["categories"][CATEGORY]["bodies"][BODY]["feeds"][SYSTEM]["status"] == "published"


def test_a_confirmed_hold_keeps_the_feed_carried_forward_and_says_so(tmp_path, keys):
    day_of(tmp_path, D1, "published", range(1, 4))
    day_of(tmp_path, D2, "held_back", range(1, 3))
    deliver(build(tmp_path, D1, keys))

    decide(tmp_path, D2, "hold", reason="the ministry confirms an outage; wait for the resend")
    result = build(tmp_path, D2, keys)

    feed = quality(result)["categories"][CATEGORY]["bodies"][BODY]["feeds"][SYSTEM]
    assert feed["status"] == "held_back" and feed["carried_forward_from"] == "2025-06-01"
    assert feed["decision"]["action"] == "hold"
    assert len(records(result)) == 3


def test_a_change_of_mind_shapes_only_packages_not_built_yet(tmp_path, keys):
    day_of(tmp_path, D1, "published", range(1, 4))
    day_of(tmp_path, D2, "held_back", range(1, 3))
    day_of(tmp_path, D3, "held_back", range(1, 2))
    deliver(build(tmp_path, D1, keys))
    decide(tmp_path, D2, "hold")
    first = build(tmp_path, D2, keys)
    deliver(first)
    before = package_files(first)

    later = decide(tmp_path, D2, "release", at=AT + dt.timedelta(hours=3))

    assert later.applies_from == D3
    assert package_files(build(tmp_path, D2, keys)) == before
    assert [d.action for d in Decisions(tmp_path).of_feed(D2, FEED)] == ["hold", "release"]
    assert Decisions(tmp_path).effective(D2, FEED, D2).action == "hold"
    assert Decisions(tmp_path).effective(D2, FEED, D3).action == "release"


def test_a_package_being_built_does_not_take_a_decision_made_meanwhile(tmp_path):
    day_of(tmp_path, D2, "held_back", range(1, 3))
    lock = layout.package_lock(tmp_path, D2)
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # a build of D2 is running
        decision = decide(tmp_path, D2, "release")
    assert decision.applies_from == D3


def test_the_decisions_file_is_the_owners_only_and_typed(tmp_path):
    day_of(tmp_path, D2, "held_back", range(1, 3))

    decide(tmp_path, D2, "release", by="qa")

    path = layout.decisions(tmp_path, D2, BODY)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    doc = json.loads(path.read_text())
    assert doc["schema"] == "osms.core.decisions/1" and doc["body"] == BODY and len(doc["decisions"]) == 1
    assert read_log(tmp_path, D2, BODY).decisions[0].by == "qa"


@pytest.mark.parametrize(("verdict", "kind", "action", "says"), [
    ("published", None, "release", "not held back"),
    ("failed", None, "hold", "not held back"),
    ("held_back", "schema_change", "release", "no validated rows"),
    ("held_back", None, "approve", "release or hold"),
])
def test_decisions_that_cannot_stand_are_refused_saying_why(tmp_path, verdict, kind, action, says):
    publish(tmp_path, D2, BODY, CATEGORY, [{**person(1), "system": SYSTEM}])
    feed_status(tmp_path, D2, verdict, kind=kind)
    with pytest.raises(DecisionRefused, match=says):
        decide(tmp_path, D2, action)
    assert not layout.decisions(tmp_path, D2, BODY).exists()


def test_no_status_no_decision(tmp_path):
    with pytest.raises(DecisionRefused, match="has not reported"):
        decide(tmp_path, D2, "hold")


@pytest.mark.parametrize(("reason", "says"), [
    ("   ", "needs a reason"), ("x" * 501, "at most 500"), ("person 791028302728 moved", "12-digit"),
])
def test_reasons_are_bounded_and_hold_no_iin(reason, says):
    with pytest.raises(DecisionRefused, match=says):
        check_reason(reason)


def test_reasons_are_folded_to_one_line():
    assert check_reason("  real\n drop\tconfirmed ") == "real drop confirmed"


def test_a_damaged_decisions_file_counts_as_no_decision(tmp_path, keys, caplog):
    day_of(tmp_path, D1, "published", range(1, 4))
    day_of(tmp_path, D2, "held_back", range(1, 3))
    deliver(build(tmp_path, D1, keys))
    path = layout.decisions(tmp_path, D2, BODY)
    path.parent.mkdir(parents=True)
    path.write_text('{"schema": "osms.core.decisions/1", "body": "enlightenment", "day": "2025-06')

    result = build(tmp_path, D2, keys)

    assert quality(result)["categories"][CATEGORY]["bodies"][BODY]["feeds"][SYSTEM]["status"] == "held_back"
    assert "QA decisions unreadable" in caplog.text


def test_a_release_resets_the_feeds_volume_baseline_from_its_day(tmp_path):
    # Arrange: five days at 100 rows, then a lasting drop to 40 on D, released by QA
    drop = dt.date(2025, 6, 10)
    for k in range(5, 0, -1):
        feed_status(tmp_path, drop - dt.timedelta(days=k), "published", rows_in=100)
    feed_status(tmp_path, drop, "held_back", rows_in=40)
    publish(tmp_path, drop, BODY, CATEGORY, [{**person(1), "system": SYSTEM}])
    before = trailing_counts(tmp_path, drop + dt.timedelta(days=1), BODY, CATEGORY, SYSTEM)

    # Act
    decide(tmp_path, drop, "release")

    # Assert: the next day's history starts at the released day
    assert before == [40, 100, 100, 100, 100, 100]
    assert trailing_counts(tmp_path, drop + dt.timedelta(days=1), BODY, CATEGORY, SYSTEM) == [40]
    feed_status(tmp_path, drop + dt.timedelta(days=1), "published", rows_in=41)
    assert trailing_counts(tmp_path, drop + dt.timedelta(days=2), BODY, CATEGORY, SYSTEM) == [41, 40]
    # a confirmed hold moves nothing
    decide(tmp_path, drop, "hold", at=AT + dt.timedelta(hours=1))
    assert len(trailing_counts(tmp_path, drop + dt.timedelta(days=1), BODY, CATEGORY, SYSTEM)) == 6
