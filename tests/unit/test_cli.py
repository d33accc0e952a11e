"""The osms command as a user types it."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from osms.core.documents import QualityDocument, Receipt
from osms.dev.cli import main

pytestmark = pytest.mark.unit


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def test_registry_show_json_2025() -> None:
    code, out = _run("registry", "show", "--date", "2025-06-01", "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["edition"]["code"] == "2022"
    assert doc["edition"]["provisional"] is False
    assert doc["counts"] == {"bodies": 8, "systems": 18, "categories": 16, "feeds": 35}
    assert len(doc["categories"]) == 16 and len(doc["feeds"]) == 35


def test_registry_show_json_2026_is_provisional() -> None:
    code, out = _run("registry", "show", "--date", "2026-03-01", "--json")
    doc = json.loads(out)
    assert code == 0
    assert doc["edition"]["code"] == "2026" and doc["edition"]["provisional"] is True
    assert len(doc["categories"]) == 17
    new = next(c for c in doc["categories"] if c["code"] == "crisis_nonworking")
    assert new["provisional"] is True and new["funding"] == "local_budget"


def test_registry_show_text() -> None:
    code, out = _run("registry", "show", "--date", "2026-03-01")
    assert code == 0
    assert "edition 2026  [PROVISIONAL]" in out
    assert "agency_labour" in out and "labour_unnamed" in out


def test_registry_show_before_first_edition_is_refused() -> None:
    code, out = _run("registry", "show", "--date", "2021-12-31")
    assert code == 1
    assert "no edition of Decree No. 660 is available for 2021-12-31" in out
    assert "2022-09-26" in out


def test_registry_show_bad_date() -> None:
    code, out = _run("registry", "show", "--date", "01.06.2025")
    assert code == 2
    assert "is not a date of the form YYYY-MM-DD" in out


def test_iin_check_all_valid() -> None:
    code, out = _run("iin", "check", "791028302728", "061211600012")
    assert code == 0
    assert out.count(" valid") == 2 and "invalid" not in out


def test_iin_check_reasons() -> None:
    code, out = _run("iin", "check", "821214240092", "12345", "7910283027AB", "791028302728")
    lines = dict(line.split(None, 1) for line in out.splitlines())
    assert code == 1
    assert lines["821214240092"].startswith("invalid: check digit cannot be computed")
    assert lines["12345"] == "invalid: format: 5 characters, an IIN is 12 digits"
    assert lines["7910283027AB"] == "invalid: format: a character other than a digit, an IIN is 12 digits"
    assert lines["791028302728"].startswith("valid")


def test_the_run_summary_reads_quality_json_and_the_receipt_through_their_models(tmp_path, capsys) -> None:
    # Arrange: labour held back on D, its package carrying unemployed forward from the day before; a damaged receipt
    import datetime as dt

    from osms.core.documents import QUALITY, RECEIPT
    from osms.core.registry import default_registry
    from osms.core.status import BodyStatus, CategoryStatus
    from osms.dev.cli import _document, _print_summary

    day, before = dt.date(2025, 6, 1), dt.date(2025, 5, 31)
    feed = {"status": "held_back", "reason": "volume", "carried_forward_from": before.isoformat(), "rows_in": 4,
            "rows_published": 0, "rows_quarantined": 0, "rows_used": 7}
    body = {"status": "held_back", "reason": "volume", "rows_in": 4, "rows_published": 0, "rows_quarantined": 0,
            "quarantined_by_rule": {}, "carried_forward_from": before.isoformat(), "rows_used": 7,
            "records_carried_forward": 7, "feeds": {"labour_market": feed}}
    quality = {"schema": "osms.package.build.quality/1", "package_id": "OSMS-2025-06-01",
               "logical_date": day.isoformat(), "edition": {"code": "2022", "provisional": False},
               "categories": {"unemployed": {"status": "carried_forward", "rows": 7, "decree_row": 2,
                                             "records_carried_forward": 7, "conflicts": {},
                                             "bodies": {"labour": body}}},
               "totals": {"rows": 7, "categories": {"carried_forward": 1}, "rows_quarantined": 0,
                          "records_carried_forward": 7, "conflicts": {}},
               "changes": {"against": None, "added": 7, "removed": 0, "changed": 0}, "notes": []}
    (tmp_path / QUALITY).write_text(json.dumps(quality))
    (tmp_path / RECEIPT).write_text('{"receipt_id": "R"}')
    status = BodyStatus(body="labour", as_of=day, edition="2022", categories=(
        CategoryStatus("unemployed", "held_back", reason="volume", rows_in=4),))

    # Act
    read = _document(tmp_path / QUALITY, QualityDocument)
    receipt = _document(tmp_path / RECEIPT, Receipt)
    _print_summary(default_registry().edition_on(day), {"labour": status}, read)

    # Assert
    out = capsys.readouterr()
    assert receipt is None and f"{RECEIPT} is unreadable: package_id: field required" in out.err
    assert "unemployed  -> package: carried_forward, 7 rows" in out.out
    assert "labour         no status for this category" in out.out  # labour's other categories
    assert "labour         held_back         4        0      0     0 carried forward from 2025-05-31" in out.out
