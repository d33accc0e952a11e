"""Injected defects at known rates: the GX suites quarantine exactly the ground truth's error rows.

FakePopulation's clean records use each enum's first value and adults' birth
dates, which several categories do not admit (children, pensioners' "age"
pension at 30...). So each category's clean records are built here to satisfy
its decree rule, then mocks.defects injects the defects as the mock sources do.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from mocks.defects import DEFECT_KINDS, DefectRates, apply_defects, required_columns, summarise
from osms.core.run import Run
from osms.core import iin
from osms.quality.validate import validate_category, write_feedback
from osms.core.registry import default_registry

pytestmark = pytest.mark.integration

DAY = dt.date(2026, 3, 1)
ROWS = 2500
RATES = DefectRates.from_mapping({k: 0.004 for k in DEFECT_KINDS}, DefectRates.none())

# Per category: the birth years of its persons, their sex, and values its rule admits.
FIXTURES = {
    "children": ((2009, 2025), None, {"care_status": "orphan"}),
    "pregnant": ((1980, 2005), "F", {"pregnancy_weeks": 20, "expected_delivery_date": dt.date(2026, 7, 1)}),
    "pensioners": ((1930, 1963), None, {"pension_type": "age"}),
    "students": ((1995, 2008), None, {"education_level": "higher", "study_form": "full_time",
                                      "org_bin": "123456789012", "country": "KZ"}),
    "eaeu_migrants": ((1970, 2000), None, {"citizenship": "KG", "relation": "worker", "worker_iin": None}),
    "carer_child_under3": ((1980, 2000), None, {"child_birth_date": dt.date(2024, 6, 1), "relation": "mother",
                                                "child_iin": "061211600012", "other_parent_iin": None}),
}
_TYPES = {"string": pa.string(), "iin": pa.string(), "enum": pa.string(), "date": pa.date32(),
          "timestamp": pa.timestamp("s", tz="UTC"), "int": pa.int32(), "bool": pa.bool_()}


def clean_records(category: str, system: str, n: int) -> pa.Table:
    """n records of the category that its suite admits, with valid IINs agreeing with birth date and sex."""
    (first, last), sex, values = FIXTURES[category]
    i = np.arange(n)
    span = (np.datetime64(f"{last}-01-01") - np.datetime64(f"{first}-01-01")).astype(int)
    births = np.datetime64(f"{first}-01-01") + (i * 7919 % span).astype("timedelta64[D]")
    sexes = np.full(n, sex) if sex else np.where(i % 2 == 0, "M", "F")
    serials = (i // span * 11 + 3) % 10000
    ids, ok = iin.generate_many(births, sexes, serials)
    while not ok.all():
        serials = np.where(ok, serials, (serials + 1) % 10000)
        ids, ok = iin.generate_many(births, sexes, serials)
    cat = default_registry().edition_on(DAY).category(category)
    cols = {}
    for col in cat.record_columns:
        if col.name == "record_id":
            v = [f"{system.upper()}-{k:06d}" for k in i]
        elif col.name == "iin":
            v = list(ids)
        elif col.name == "birth_date":
            v = list(births.astype(dt.date))
        elif col.name == "sex":
            v = list(sexes)
        elif col.name in ("last_name", "first_name"):
            v = ["Сейтқали"] * n
        elif col.name == "period_start":
            v = [dt.date(2025, 1, 1) + dt.timedelta(days=int(k % 300)) for k in i]
        elif col.name == "updated_at":
            v = [dt.datetime(2026, 2, 28, tzinfo=dt.UTC)] * n
        elif col.name in values:
            v = [values[col.name]] * n
        elif col.type == "enum":
            v = [col.values[0]] * n
        else:
            v = [None] * n
        cols[col.name] = pa.array(v, _TYPES[col.type])
    return pa.table(cols)


@pytest.mark.parametrize("category", sorted(FIXTURES))
def test_quarantine_matches_the_injected_defects(tmp_path, category: str) -> None:
    edition = default_registry().edition_on(DAY)
    feeds = edition.feeds_for(category)
    body = feeds[0].body
    systems = [f.system for f in feeds if f.body == body]
    required = required_columns(edition.category(category).record_columns)
    paths, truths = [], []
    for system in systems:
        served, truth = apply_defects(clean_records(category, system, ROWS), system=system, category=category,
                                      as_of=DAY, rates=RATES, seed=11, required=required)
        n = served.num_rows
        served = (served.append_column("body", pa.array([body] * n)).append_column("system", pa.array([system] * n))
                  .append_column("category", pa.array([category] * n)).append_column("as_of", pa.array([DAY] * n, pa.date32())))
        path = tmp_path / "landing" / DAY.isoformat() / body / system / f"{category}.parquet"
        path.parent.mkdir(parents=True)
        pq.write_table(served, path)
        paths.append(path)
        truths.append(truth)
    truth = pa.concat_tables(truths)
    counts = summarise(truth)
    assert counts.get("category_rule", 0) > 0 and counts.get("iin_mismatch", 0) > 0

    outcome = validate_category(Run.of(DAY, data_dir=tmp_path), body=body, category=category, landing_paths=paths,
                                trailing_counts=[len(systems) * ROWS] * 5)

    errors = truth.filter(pc.equal(truth.column("severity"), "error"))
    expected = sorted(zip(errors.column("system").to_pylist(), errors.column("record_id").to_pylist(), strict=True))
    q = pq.read_table(outcome.quarantine_path)
    got = sorted(zip(q.column("system").to_pylist(), q.column("record_id").to_pylist(), strict=True))
    assert got == expected
    assert outcome.verdict == "published", outcome.reason
    assert outcome.rows_in == len(systems) * ROWS + counts["duplicate_record"]
    assert outcome.rows_in == outcome.rows_published + outcome.rows_quarantined
    assert outcome.quarantined_by_rule["duplicate_record"] == counts["duplicate_record"]
    assert outcome.warnings_by_rule == {"iin_matches_birth_date_sex": counts["iin_mismatch"]}

    report = outcome.report_path.read_text(encoding="utf-8")
    for value in set(q.column("iin").to_pylist()) - {None}:
        assert value not in report
    feedback = write_feedback(body, DAY, tmp_path).read_text(encoding="utf-8")
    assert len(feedback.splitlines()) == 1 + q.num_rows and "Сейтқали" not in feedback
