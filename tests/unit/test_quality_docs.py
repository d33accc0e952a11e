"""GX Data Docs per date, rebuilt from the scrubbed reports: GX's site, and no personal data in it."""

from __future__ import annotations

import dataclasses
import datetime as dt
import html
import json
import logging
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from osms.core.run import Run
from osms.core import iin
from osms.quality import docs
from osms.quality.validate import CategoryOutcome, validate_category
from osms.core.registry import default_registry

pytestmark = pytest.mark.unit

DAY = dt.date(2026, 3, 1)
SURNAMES = ["Сейтқалиева", "Жұмабаева", "Нұрланова", "Төлегенова",
            "Қасымова", "Омарова", "Бекмұханова", "Әлиева"]
FIRST_NAMES = ["Айгерим", "Аружан", "Мадина", "Жансая", "Гүлназ", "Динара", "Әсем", "Томирис"]
PATRONYMICS = ["Серікқызы", "Қайратовна", "Болатқызы", "Ерланқызы"]
EXTRA = {
    "children": {"care_status": "family"},
    "carer_child_under3": {"child_birth_date": dt.date(2025, 1, 1), "relation": "mother", "other_parent_iin": None},
}
# (body, system, category): two bodies with the same category, and a second category.
FEEDS = [
    ("enlightenment", "nedb", "children"),
    ("enlightenment", "orphans", "children"),
    ("justice", "individuals", "children"),
    ("labour", "payments", "carer_child_under3"),
]


def _person(category: str, k: int, system: str) -> dict[str, Any]:
    birth = (dt.date(2012, 1, 1) if category == "children" else dt.date(1990, 1, 1)) + dt.timedelta(days=k)
    row: dict[str, Any] = {
        "record_id": f"{system.upper()}-{k:05d}",
        "last_name": SURNAMES[k % len(SURNAMES)],
        "first_name": FIRST_NAMES[(k // len(SURNAMES)) % len(FIRST_NAMES)],
        "patronymic": PATRONYMICS[k % len(PATRONYMICS)],
        "birth_date": birth,
        "sex": "F",
        "period_start": dt.date(2025, 1, 1),
        "period_end": None,
        "updated_at": dt.datetime(2026, 2, 28, 12, tzinfo=dt.UTC),
        "iin": iin.generate(birth, "F", k),
        **EXTRA[category],
    }
    if category == "carer_child_under3":
        row["child_iin"] = iin.generate(dt.date(2025, 1, 1) + dt.timedelta(days=k % 300), "M", k)
    return row


def _rows(category: str, system: str, n: int) -> list[dict[str, Any]]:
    rows = [_person(category, k, system) for k in range(n)]
    rows[0]["iin"] = rows[0]["iin"][:-1] + str((int(rows[0]["iin"][-1]) + 1) % 10)  # broken check digit
    rows[1]["birth_date"] = dt.date(2001, 2, 3)  # too old for the category
    rows[2]["last_name"] = None
    rows[3] = dict(rows[4])  # an exact duplicate
    if category == "carer_child_under3":  # held back: a quarter of the children are too old
        for r in rows[10:70]:
            r["child_birth_date"] = dt.date(2020, 5, 17)
    return rows


def _landing(data_dir: Path, body: str, system: str, category: str, rows: list[dict[str, Any]]) -> Path:
    cat = default_registry().edition_on(DAY).category(category)
    types = {"string": pa.string(), "iin": pa.string(), "enum": pa.string(), "date": pa.date32(),
             "timestamp": pa.timestamp("us", tz="UTC"), "int": pa.int32(), "bool": pa.bool_()}
    cols = {c.name: pa.array([r.get(c.name) for r in rows], types[c.type]) for c in cat.record_columns}
    path = data_dir / "landing" / DAY.isoformat() / body / system / f"{category}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(cols), path)
    return path


@dataclasses.dataclass
class Day:
    data_dir: Path
    outcomes: list[CategoryOutcome]
    personal: set[str]  # every IIN and name of the input


@pytest.fixture(scope="module")
def day(tmp_path_factory: pytest.TempPathFactory) -> Day:
    data_dir = tmp_path_factory.mktemp("docs")
    landed: dict[tuple[str, str], list[Path]] = {}
    personal: set[str] = set()
    for body, system, category in FEEDS:
        rows = _rows(category, system, 240)
        landed.setdefault((body, category), []).append(_landing(data_dir, body, system, category, rows))
        for r in rows:
            personal.update(str(r[c]) for c in ("iin", "child_iin", "last_name", "first_name", "patronymic")
                            if r.get(c))
    outcomes = [validate_category(Run.of(DAY, data_dir=data_dir), body=b, category=c, landing_paths=paths)
                for (b, c), paths in landed.items()]
    docs.render_day(data_dir, DAY)  # once the bodies have reported, as the package DAG does
    return Day(data_dir, outcomes, personal)


def _forms(value: str) -> set[bytes]:
    """How a value could sit in a page: raw, HTML-escaped, JSON-escaped (\\uXXXX), and both."""
    escaped = json.dumps(value)[1:-1]
    return {f.encode() for f in (value, html.escape(value), escaped, html.escape(escaped), escaped.upper())}


def _leaks(site: Path, values: set[str]) -> list[tuple[str, str]]:
    forms = {v: _forms(v) for v in values}
    found = []
    for path in sorted(p for p in site.rglob("*") if p.is_file()):
        data = path.read_bytes()
        found += [(str(path.relative_to(site)), v) for v, fs in forms.items() if any(f in data for f in fs)]
    return found


def _text(page: str) -> str:
    """A page's visible text, one space between words."""
    page = re.sub(r"<(script|style)\b.*?</\1>", " ", page, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


def test_the_day_has_what_the_docs_must_hide(day: Day) -> None:
    by_key = {(o.body, o.category): o for o in day.outcomes}
    assert by_key["labour", "carer_child_under3"].verdict == "held_back"
    children = by_key["enlightenment", "children"]
    assert children.rows_in == 480 and children.rows_quarantined >= 4
    assert len(day.personal) > 700


def test_data_docs_hold_no_iin_and_no_name(day: Day) -> None:
    site = day.data_dir / "reports" / "data_docs" / DAY.isoformat()
    pages = sorted(site.rglob("*.html"))
    assert len(pages) >= 1 + len(day.outcomes)
    assert _leaks(site, day.personal) == []
    assert _leaks(site, {"2001-02-03", "2020-05-17"}) == []  # the failing values themselves


def test_index_is_gx_and_lists_every_validation(day: Day) -> None:
    site = day.data_dir / "reports" / "data_docs" / DAY.isoformat()
    index = (site / "index.html").read_text(encoding="utf-8")
    assert "Data Docs" in index and "Validation Results" in index and "Expectation Suites" in index
    assert "OSMS verdicts" in index and "held_back" in index and "iin_valid" in index
    assert "dataContextId" not in index and "logo-long.png?d=" not in index
    for o in day.outcomes:
        assert f"{o.body}/{o.category}" in index
        pages = list((site / "validations" / o.category / f"osms-{DAY.isoformat()}").glob(f"*/{o.body}.html"))
        assert len(pages) == 1, (o.body, o.category)
        assert f"validations/{o.category}/osms-{DAY.isoformat()}/{pages[0].parent.name}/{o.body}.html" in index
        page = _text(pages[0].read_text(encoding="utf-8"))
        status = "Failed" if o.verdict == "held_back" else "Succeeded"
        assert f"Data asset: {o.body}/{o.category} Status: {status}" in page
    assert (site / "expectations" / "children.html").is_file()


def test_the_leak_check_would_see_a_leak(day: Day, tmp_path: Path) -> None:
    """A control: a name and an IIN planted in a report's text are found by the same check."""
    src = day.data_dir / "reports" / "gx" / DAY.isoformat() / "justice" / "children.json"
    report = json.loads(src.read_text(encoding="utf-8"))
    report["outcome"]["reason"] = f"{SURNAMES[0]} {FIRST_NAMES[1]} 791028302728"
    dst = tmp_path / "reports" / "gx" / DAY.isoformat() / "justice" / "children.json"
    dst.parent.mkdir(parents=True)
    dst.write_text(json.dumps(report, ensure_ascii=False), encoding="utf-8")
    docs.build_data_docs(tmp_path, DAY)
    leaks = {v for _, v in _leaks(tmp_path / "reports" / "data_docs" / DAY.isoformat(),
                                 {SURNAMES[0], FIRST_NAMES[1], "791028302728"})}
    assert leaks == {SURNAMES[0], FIRST_NAMES[1], "791028302728"}


def test_a_failed_build_is_a_warning_with_the_type_only(
    day: Day, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def boom(*_: Any) -> None:
        raise ValueError("791028302728 Сейтқалиева")

    monkeypatch.setattr(docs, "_context", boom)
    with caplog.at_level(logging.WARNING, logger="osms.quality.docs"):
        index = docs.render_day(day.data_dir, DAY)
    assert index == day.data_dir / "reports" / "data_docs" / DAY.isoformat() / "index.html"
    assert "ValueError" in caplog.text
    assert "791028302728" not in caplog.text and "Сейтқалиева" not in caplog.text


def test_building_keeps_the_current_gx_project(day: Day) -> None:
    import great_expectations as gx
    from great_expectations.data_context.data_context.context_factory import project_manager

    before = project_manager.get_current_project()  # validate_category's own context
    current = gx.get_context(mode="ephemeral")
    try:
        docs.render_day(day.data_dir, DAY)
        assert project_manager.get_current_project() is current
    finally:
        project_manager.set_project(before)


def test_a_rule_that_raised_is_shown_without_details_and_builds_repeat(day: Day, tmp_path: Path) -> None:
    src = day.data_dir / "reports" / "gx" / DAY.isoformat() / "justice" / "children.json"
    report = json.loads(src.read_text(encoding="utf-8"))
    report["results"][0] |= {"raised_exception": True, "within_threshold": False}
    for data_dir in (tmp_path / "a", tmp_path / "b"):
        dst = data_dir / "reports" / "gx" / DAY.isoformat() / "justice" / "children.json"
        dst.parent.mkdir(parents=True)
        dst.write_text(json.dumps(report), encoding="utf-8")
        docs.build_data_docs(data_dir, DAY)
    sites = [tmp_path / d / "reports" / "data_docs" / DAY.isoformat() for d in ("a", "b")]
    (page,) = sites[0].glob("validations/children/*/*/justice.html")
    assert "raised an exception: could not be evaluated" in _text(page.read_text(encoding="utf-8"))
    files = [sorted(p.relative_to(s) for p in s.rglob("*") if p.is_file()) for s in sites]
    assert files[0] == files[1]
    assert all((sites[0] / f).read_bytes() == (sites[1] / f).read_bytes() for f in files[0])


def test_the_library_uses_no_private_gx_api() -> None:
    """GX is used through its public API: no project manager, no private attributes or helpers."""
    library = Path(__file__).resolve().parents[2] / "plugins" / "osms"
    private = re.compile(r"project_manager|context_factory|_mostly_success|\bgx\._|great_expectations\.[\w.]*\._")
    found = [f"{p.relative_to(library)}:{n}" for p in sorted(library.rglob("*.py"))
             for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if private.search(line)]
    assert found == []


def test_a_day_opened_before_its_package_is_rendered_once_and_again_when_a_report_changes(
        day: Day, tmp_path: Path) -> None:
    import os
    import shutil

    data_dir = tmp_path / "data"
    shutil.copytree(day.data_dir / "reports" / "gx", data_dir / "reports" / "gx")
    assert docs.has_reports(data_dir, DAY) and not docs.has_reports(data_dir, DAY - dt.timedelta(days=1))
    assert docs.current_site(data_dir, DAY - dt.timedelta(days=1)) is None  # no report: nothing to render

    site = docs.current_site(data_dir, DAY)  # no site yet: rendered now
    assert site is not None and "justice" in (site / "index.html").read_text(encoding="utf-8")
    built = (site / "index.html").stat().st_mtime_ns
    assert docs.current_site(data_dir, DAY) == site
    assert (site / "index.html").stat().st_mtime_ns == built  # current: served as it is

    report = data_dir / "reports" / "gx" / DAY.isoformat() / "justice" / "children.json"
    later = (site / "index.html").stat().st_mtime + 5
    os.utime(report, (later, later))  # a body's rerun wrote a newer report
    docs.current_site(data_dir, DAY)
    assert (site / "index.html").stat().st_mtime_ns != built


def test_a_process_that_never_validated_builds_the_docs(day: Day, tmp_path: Path) -> None:
    # the API server (QA opening a day) and the package DAG's own task process hold no GX project
    import shutil
    import subprocess
    import sys

    data_dir = tmp_path / "data"
    shutil.copytree(day.data_dir / "reports" / "gx", data_dir / "reports" / "gx")
    code = ("import datetime as dt, pathlib; from osms.quality import docs; "
            f"docs.build_data_docs(pathlib.Path({str(data_dir)!r}), dt.date.fromisoformat({DAY.isoformat()!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    index = data_dir / "reports" / "data_docs" / DAY.isoformat() / "index.html"
    assert "Validation Results" in index.read_text(encoding="utf-8")
