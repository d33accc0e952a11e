"""Injected defects: deterministic, at their rates, and each one recorded in the ground truth."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow.compute as pc
import pytest

from mocks.defects import DEFECT_KINDS, DefectRates, apply_defects, required_columns, summarise
from osms.core import iin
from osms.core.registry import default_registry
from tests.support.fake_population import FakePopulation

pytestmark = pytest.mark.unit

DAY = dt.date(2023, 6, 1)


def _apply(category: str, rates: DefectRates, system: str = "payments", seed: int = 1):
    pop = FakePopulation(size=4000)
    system = next(s for s, c in pop.feeds() if c == category)
    clean = pop.records(system, category, DAY)
    cat = default_registry().edition_on(DAY).category(category) if category != "crisis_nonworking" else None
    req = required_columns(cat.record_columns) if cat else ()
    served, truth = apply_defects(clean, system=system, category=category, as_of=DAY, rates=rates, seed=seed,
                                  required=req)
    return clean, served, truth


def test_no_defects_leaves_records_untouched() -> None:
    clean, served, truth = _apply("children", DefectRates.none())
    assert served.equals(clean) and truth.num_rows == 0


def test_same_seed_same_defects_other_seed_others() -> None:
    rates = DefectRates.from_mapping({k: 0.01 for k in DEFECT_KINDS}, DefectRates.none())
    _, a, ta = _apply("students", rates, seed=5)
    _, b, tb = _apply("students", rates, seed=5)
    _, _, tc = _apply("students", rates, seed=6)
    assert a.equals(b) and ta.equals(tb)
    assert not ta.equals(tc)


def test_rates_are_respected() -> None:
    rates = DefectRates.from_mapping({k: 0.02 for k in DEFECT_KINDS}, DefectRates.none())
    _, _, truth = _apply("pensioners", rates)
    counts = summarise(truth)
    for kind in DEFECT_KINDS:
        assert 40 <= counts[kind] <= 130, (kind, counts[kind])  # 2 % of 4000 = 80


def test_each_defect_is_what_it_says() -> None:
    rates = DefectRates.from_mapping({k: 0.02 for k in DEFECT_KINDS}, DefectRates.none())
    clean, served, truth = _apply("pregnant", rates)
    kinds = dict(zip(truth.column("record_id").to_pylist(), truth.column("defect").to_pylist(), strict=True))
    rows = served.to_pylist()
    ids = [r["record_id"] for r in rows]
    dupes = {i for i in ids if ids.count(i) > 1}
    assert dupes == {i for i, k in kinds.items() if k == "duplicate_record"}
    by_id = {r["record_id"]: r for r in rows}
    reasons = iin.check([r["iin"] for r in rows]).reason
    reason_of = dict(zip(ids, reasons.tolist(), strict=True))
    for rid, kind in kinds.items():
        r = by_id[rid]
        if kind == "bad_check_digit":
            assert reason_of[rid] == iin.Reason.CHECK_DIGIT_MISMATCH
        elif kind == "malformed_iin":
            assert reason_of[rid] == iin.Reason.FORMAT
        elif kind == "future_birth_date":
            assert r["birth_date"] > DAY
        elif kind == "period_end_before_start":
            assert r["period_end"] < r["period_start"]
        elif kind == "missing_required":
            assert any(v is None for k, v in r.items() if k not in ("patronymic", "period_end"))
        elif kind == "category_rule":
            assert r["sex"] == "M" and reason_of[rid] == iin.Reason.OK  # a man among pregnant women
        elif kind == "iin_mismatch":
            assert reason_of[rid] == iin.Reason.OK
            assert iin.decode(r["iin"])[0] != r["birth_date"]
    untouched = set(ids) - set(kinds)
    clean_by_id = {r["record_id"]: r for r in clean.to_pylist()}
    assert all(by_id[i] == clean_by_id[i] for i in untouched)


@pytest.mark.parametrize("category", sorted(c.code for c in default_registry().all_categories()))
def test_category_rule_defect_exists_for_every_category(category: str) -> None:
    _, served, truth = _apply(category, DefectRates.from_mapping({"category_rule": 0.05}, DefectRates.none()))
    assert truth.num_rows > 0
    assert set(truth.column("defect").to_pylist()) == {"category_rule"}
    assert pc.all(pc.is_valid(truth.column("column"))).as_py()


def test_unknown_kind_refused() -> None:
    with pytest.raises(ValueError, match="unknown defect kind"):
        DefectRates.from_mapping({"typo": 0.1})
    with pytest.raises(ValueError, match="add up to at most 1"):
        DefectRates.from_mapping({k: 0.2 for k in DEFECT_KINDS})


def test_warning_severity() -> None:
    _, _, truth = _apply("children", DefectRates.from_mapping({"iin_mismatch": 0.05, "malformed_iin": 0.05}, DefectRates.none()))
    sev = dict(zip(truth.column("defect").to_pylist(), truth.column("severity").to_pylist(), strict=False))
    assert sev == {"iin_mismatch": "warning", "malformed_iin": "error"}
