"""make soak's plan (seeded, with each fault's expected effect) and its audit's comparisons."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from osms.dev.soak import (
    CATALOGUE,
    PACKAGE_DAG,
    DayFacts,
    check_ledger,
    compare_days,
    make_plan,
    mock_day_faults,
    parse_faults,
)

pytestmark = pytest.mark.unit

START = dt.date(2025, 6, 1)


def test_the_same_seed_gives_the_same_plan_and_another_seed_another() -> None:
    a, b = make_plan(660, START, 14), make_plan(660, START, 14)
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    assert a["days"][0] == "2025-06-01" and a["days"][-1] == "2025-06-14" and len(a["days"]) == 14
    others = [make_plan(seed, START, 14)["faults"] for seed in (1, 2, 3)]
    assert any(o != a["faults"] for o in others)


def test_a_drawn_plan_has_at_most_three_faults_a_day_from_the_catalogue() -> None:
    for seed in range(20):
        plan = make_plan(seed, START, 14)
        per_day: dict[str, list[dict[str, Any]]] = {}
        for f in plan["faults"]:
            assert f["kind"] in CATALOGUE
            per_day.setdefault(f["day"], []).append(f)
        assert all(len(fs) <= 3 for fs in per_day.values())
        for fs in per_day.values():  # two faults of one day never hit one system
            systems = [f["system"] for f in fs if f["system"]]
            assert len(systems) == len(set(systems))
        # a volume drop is only where the rule has history to see it and a morning after for QA
        for f in plan["faults"]:
            if f["kind"] == "volume_drop":
                index = plan["days"].index(f["day"])
                assert 3 <= index < 13


def test_fixed_faults_are_placed_on_their_days_and_bad_ones_refused() -> None:
    kinds, fixed = parse_faults("schema_change:1,scheduler_kill:2,receiver_down:3")
    plan = make_plan(660, START, 3, kinds=kinds, fixed=fixed)
    assert [(f["day"], f["kind"]) for f in plan["faults"]] == [
        ("2025-06-01", "schema_change"), ("2025-06-02", "scheduler_kill"), ("2025-06-03", "receiver_down")]
    with pytest.raises(ValueError, match="unknown fault"):
        make_plan(660, START, 3, fixed=[("meteor", 1)])
    with pytest.raises(ValueError, match="volume_drop cannot be on day 2"):
        make_plan(660, START, 3, fixed=[("volume_drop", 2)])
    with pytest.raises(ValueError, match="within 1..3"):
        make_plan(660, START, 3, fixed=[("schema_change", 4)])
    with pytest.raises(ValueError, match="not both"):
        parse_faults("schema_change,receiver_down:2")


def test_each_fault_names_its_expected_effect() -> None:
    plan = make_plan(660, START, 6, fixed=[("schema_change", 1), ("source_down", 2), ("volume_drop", 5),
                                           ("scheduler_kill", 3), ("receiver_down", 3)])
    by_kind = {f["kind"]: f for f in plan["faults"]}
    schema = by_kind["schema_change"]
    assert schema["expect"]["feeds"] and set(schema["expect"]["feeds"].values()) == {"held_back"}
    assert all(k.endswith("/" + schema["system"]) for k in schema["expect"]["feeds"])
    assert {k for k, _ in schema["expect"]["notices"]} == {"qa_decision_waiting", "feeds_not_published"}
    assert not schema["expect"]["identical"]
    assert schema["expect"]["next_day_may_differ"] == sorted({k.split("/")[0] for k in schema["expect"]["feeds"]})
    down = by_kind["source_down"]
    assert set(down["expect"]["feeds"].values()) == {"failed"}
    assert {k for k, _ in down["expect"]["notices"]} == {"agency_run_failed", "feeds_not_published"}
    drop = by_kind["volume_drop"]
    assert set(drop["expect"]["feeds"].values()) == {"held_back"}
    assert ["qa_decision_waiting", PACKAGE_DAG] in drop["expect"]["notices"]
    assert drop["expect"]["released_next_day"] == [f"{k.split('/')[1]}.{drop['system']}.{k.split('/')[0]}"
                                                   for k in drop["expect"]["feeds"]]
    for kind in ("scheduler_kill", "receiver_down"):
        assert by_kind[kind]["expect"] == {"feeds": {}, "released_next_day": [], "notices": [], "identical": True,
                                           "next_day_may_differ": []}
    # the mocks get the source faults keyed to their day, nothing else
    day_faults = mock_day_faults(plan)
    assert set(day_faults) == {dt.date(2025, 6, 1), dt.date(2025, 6, 2), dt.date(2025, 6, 5)}
    assert day_faults[dt.date(2025, 6, 2)][down["system"]].down is True
    assert day_faults[dt.date(2025, 6, 5)][drop["system"]].volume_drop == pytest.approx(0.9)


def _quality(feeds: dict[str, str], decisions: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    categories: dict[str, Any] = {}
    for key, status in feeds.items():
        c, b, s = key.split("/")
        categories.setdefault(c, {"bodies": {}})["bodies"].setdefault(b, {"feeds": {}})["feeds"][s] = {
            "status": status}
    return {"categories": categories, "decisions": decisions or []}


CLEAN = {"pregnant/health/pregnancy_register": "published", "disabled/labour/disability_db": "published"}


def _facts(day: str, records: bytes, feeds: dict[str, str], *, ref: bytes = b"R",
           decisions: list[dict[str, Any]] | None = None) -> DayFacts:
    return DayFacts(day=day, records=records, reference_records=ref, quality=_quality(feeds, decisions),
                    reference_quality=_quality(CLEAN))


def _plan(faults: list[dict[str, Any]]) -> dict[str, Any]:
    return {"seed": 1, "days": ["2025-06-01", "2025-06-02"], "faults": faults}


SCHEMA = {"day": "2025-06-01", "kind": "schema_change", "system": "disability_db",
          "expect": {"feeds": {"disabled/labour/disability_db": "held_back"}, "released_next_day": [],
                     "notices": [["feeds_not_published", "agency_labour"], ["qa_decision_waiting", PACKAGE_DAG]],
                     "identical": False}}
SENT = [("2025-06-01", "feeds_not_published", "agency_labour"), ("2025-06-01", "qa_decision_waiting", PACKAGE_DAG)]


def test_a_day_as_planned_is_explained() -> None:
    facts = [_facts("2025-06-01", b"other", {**CLEAN, "disabled/labour/disability_db": "held_back"}),
             _facts("2025-06-02", b"R", CLEAN)]
    result = compare_days(_plan([SCHEMA]), facts, SENT)
    assert result["unexplained"] == []
    assert result["identical_days"] == ["2025-06-02"] and result["faulted_days"] == ["2025-06-01"]
    assert result["notices"]["expected"] == 2 and result["notices"]["sent"] == 2


def test_a_clean_day_whose_records_differ_is_unexplained() -> None:
    facts = [_facts("2025-06-01", b"other", {**CLEAN, "disabled/labour/disability_db": "held_back"}),
             _facts("2025-06-02", b"DIFFERENT", CLEAN)]
    result = compare_days(_plan([SCHEMA]), facts, SENT)
    [line] = result["unexplained"]
    assert line.startswith("2025-06-02: records.parquet differs from the clean run's (faults: none;")


def _records(rows: list[tuple[str, str]]) -> bytes:
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(pa.table({"iin": [r[0] for r in rows], "category": [r[1] for r in rows]}), sink)
    return sink.getvalue()


def test_the_day_after_a_data_fault_may_differ_only_in_the_faulted_categories() -> None:
    schema = {**SCHEMA, "expect": {**SCHEMA["expect"], "next_day_may_differ": ["disabled"]}}
    ref = _records([("1", "disabled"), ("2", "disabled"), ("3", "pregnant")])
    kept_less = _records([("1", "disabled"), ("3", "pregnant")])  # D lacked the feed: nothing kept from it
    other = _records([("1", "disabled"), ("2", "disabled")])  # another category lost: not the fault's doing
    day1 = _facts("2025-06-01", b"other", {**CLEAN, "disabled/labour/disability_db": "held_back"})
    assert compare_days(_plan([schema]), [day1, _facts("2025-06-02", kept_less, CLEAN, ref=ref)],
                        SENT)["unexplained"] == []
    [line] = compare_days(_plan([schema]), [day1, _facts("2025-06-02", other, CLEAN, ref=ref)], SENT)["unexplained"]
    assert "categories ['pregnant'], the day before's data faults allow ['disabled']" in line


def test_a_process_fault_must_leave_the_records_identical() -> None:
    kill = {"day": "2025-06-02", "kind": "scheduler_kill", "system": None,
            "expect": {"feeds": {}, "released_next_day": [], "notices": [], "identical": True}}
    facts = [_facts("2025-06-01", b"R", CLEAN), _facts("2025-06-02", b"DIFFERENT", CLEAN)]
    [line] = compare_days(_plan([kill]), facts, [])["unexplained"]
    assert "2025-06-02: records.parquet differs" in line and "scheduler_kill" in line


def test_verdicts_notices_and_releases_other_than_the_plans_are_unexplained() -> None:
    # the fault's feed published after all, another feed held back, a notice twice, one missing, a stray release
    facts = [_facts("2025-06-01", b"other", {**CLEAN, "pregnant/health/pregnancy_register": "held_back"}),
             _facts("2025-06-02", b"R", CLEAN, decisions=[{"action": "release", "feed": "health.x.pregnant"}])]
    sent = [SENT[0], SENT[0]]
    unexplained = compare_days(_plan([SCHEMA]), facts, sent)["unexplained"]
    text = "\n".join(unexplained)
    assert "2025-06-01: quality.json verdicts differ" in text and "pregnancy_register" in text
    assert "2025-06-02: releases named ['health.x.pregnant'], the plan's []" in text
    assert f"2025-06-01: notice qa_decision_waiting of {PACKAGE_DAG} expected, not sent" in text
    assert "2025-06-01: notice feeds_not_published of agency_labour sent 2 times" in text
    assert len(unexplained) == 4


def test_a_missing_package_is_unexplained() -> None:
    facts = [DayFacts(day="2025-06-01", records=None, reference_records=b"R", quality=None,
                      reference_quality=_quality(CLEAN))]
    assert compare_days(_plan([]), facts, [])["unexplained"] == ["2025-06-01: no package"]


def test_the_ledger_must_hold_every_day_once_in_order_each_naming_its_predecessor() -> None:
    def entry(day: str, sha: str) -> dict[str, Any]:
        return {"receipt": {"logical_date": day, "manifest_sha256": sha}}

    days = ["2025-06-01", "2025-06-02"]
    ledger = [entry(days[0], "a"), entry(days[1], "b")]
    manifests = {days[0]: {"previous_manifest_sha256": None}, days[1]: {"previous_manifest_sha256": "a"}}
    assert check_ledger(ledger, manifests, days) == (days, True, True, [])
    delivered, in_order, chained, problems = check_ledger(ledger[::-1], manifests, days)
    assert not in_order and not chained and len(problems) == 3
    broken = {**manifests, days[1]: {"previous_manifest_sha256": "zzz"}}
    assert check_ledger(ledger, broken, days)[1:3] == (True, False)
    assert not check_ledger(ledger[:1], manifests, days)[1]


def test_the_mocks_read_faults_keyed_to_a_day_and_refuse_unknown_ones() -> None:
    from mocks.config import MockConfig

    cfg = MockConfig.from_mapping({"day_faults": {"2025-06-02": {"egov_portal": {"down": True}}}})
    assert cfg.day_faults[dt.date(2025, 6, 2)]["egov_portal"].down is True
    assert cfg.faults_for("egov_portal").down is False  # other days: the system's own faults
    with pytest.raises(ValueError, match="unknown fault setting"):
        MockConfig.from_mapping({"day_faults": {"2025-06-02": {"egov_portal": {"meteor": 1}}}})
