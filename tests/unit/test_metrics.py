"""The pipeline's Prometheus metrics: derived from the documents on the data root, guarded by a scrape token."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from osms.core import layout
from osms.core.documents import (
    CHANGES,
    MANIFEST,
    QUALITY,
    RECEIPT,
    RECORDS,
    Changes,
    Decree,
    EditionRef,
    Manifest,
    ManifestCategory,
    ManifestEdition,
    ManifestFile,
    Producer,
    QualityBody,
    QualityCategory,
    QualityDocument,
    QualityFeed,
    QualityTotals,
    Receipt,
)
from osms.core.files import write_bytes_atomic
from osms.core.status import BodyStatus, CategoryStatus, write_status
from osms.package.chain import set_chain_start
from osms.ui.metrics import create_metrics_app, day_timestamp, due_timestamp, render

pytestmark = pytest.mark.unit

D1, D2, D3 = dt.date(2025, 6, 1), dt.date(2025, 6, 2), dt.date(2025, 6, 3)
NOW = dt.datetime(2025, 6, 4, 10, 0, tzinfo=dt.UTC)  # 15:00 in Almaty on D3 + 1: D1, D2 due; D3 due tomorrow
SECRET_IIN = "900101300123"


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, by name and sorted labels."""
    out = {}
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(found: dict, name: str, **labels: str) -> float | None:
    return found.get((name, tuple(sorted(labels.items()))))


def feeds(**verdicts: str) -> dict:
    return {system: {"status": v, "rows_in": 10, "rows_published": 10 if v == "published" else 0,
                     "rows_quarantined": 0} for system, v in verdicts.items()}


def status(root: Path, day: dt.date, body: str, category: str, cat_status: str, **verdicts: str) -> None:
    write_status(root, BodyStatus(body=body, as_of=day, edition="2022", categories=(
        CategoryStatus(category, cat_status, rows_in=10 * len(verdicts), rows_published=10, rows_quarantined=1,
                       feeds=feeds(**verdicts)),)))


def package(root: Path, day: dt.date, *, delivered: bool, carried_from: dt.date | None = None) -> None:
    """A package's quality.json, manifest and (if ``delivered``) receipt, as the build and the delivery write them."""
    folder = layout.package_dir(root, day)
    status = "carried_forward" if carried_from else "published"
    feed = QualityFeed(status="failed" if carried_from else "published", reason=None, carried_forward_from=carried_from,
                       rows_in=42, rows_published=42, rows_quarantined=0, rows_used=42)
    body = QualityBody(status="failed" if carried_from else "published", reason=None, rows_in=42, rows_published=42,
                       rows_quarantined=0, quarantined_by_rule={}, carried_forward_from=carried_from, rows_used=42,
                       records_carried_forward=5, feeds={"labour_market": feed})
    category = QualityCategory(status=status, rows=42, decree_row=3, records_carried_forward=5, conflicts={},
                               bodies={"labour": body})
    quality = QualityDocument(package_id=f"OSMS-{day}", logical_date=day, edition=EditionRef(code="2022",
                              provisional=False), categories={"unemployed": category},
                              totals=QualityTotals(rows=42, categories={status: 1}, rows_quarantined=0,
                                                   records_carried_forward=5, conflicts={}),
                              changes=Changes(against=None, added=42, removed=0, changed=0), notes=[])
    write_bytes_atomic(quality.to_bytes(), folder / QUALITY)
    manifest = Manifest(
        package_id=f"OSMS-{day}", logical_date=day, previous_manifest_sha256=None,
        edition=ManifestEdition(code="2022", provisional=False,
                                decree=Decree(number="660", date=dt.date(2022, 1, 1), title="Decree 660")),
        files=[ManifestFile(name=name, sha256="0" * 64, bytes=size, rows=rows)
               for name, size, rows in ((RECORDS, 1000, 42), (CHANGES, 200, 3), (QUALITY, 50, None))],
        categories={"unemployed": ManifestCategory(status=status, rows=42)}, producer=Producer(name="osms",
                                                                                            version="test"))
    write_bytes_atomic(manifest.to_bytes(), folder / MANIFEST)
    if delivered:
        receipt = Receipt(receipt_id="R", package_id=f"OSMS-{day}", manifest_sha256="0" * 64,
                          logical_date=day.isoformat(), received_at=f"{day}T20:00:00+00:00", files=3)
        write_bytes_atomic(receipt.to_bytes(), folder / RECEIPT)


def task(root: Path, day: dt.date, dag_id: str, task_id: str, *, wall: float, peak: int, tries: int = 1,
         state: str = "success", started: float = 1000.0) -> None:
    write_bytes_atomic(json.dumps({"dag_id": dag_id, "task_id": task_id, "wall_seconds": wall, "cpu_seconds": wall / 2,
                                   "peak_rss_bytes": peak, "try_number": tries, "state": state,
                                   "started_at": started, "ended_at": started + wall}).encode(),
                       root / "metrics" / day.isoformat() / dag_id / f"{task_id}.json")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """Three days: labour's feed held back on D1..D3; justice reported D1 only (failed D2, D3); D1 and D2 delivered."""
    root = tmp_path / "data"
    set_chain_start(root, D1, set_by="the init")
    for day in (D1, D2, D3):
        status(root, day, "labour", "unemployed", "partial", labour_market="published", labour_unnamed="held_back")
        package(root, day, delivered=day != D3, carried_from=D1 if day == D3 else None)
        task(root, day, "osms_daily_package", "build_package", wall=12.5, peak=300 << 20, started=day.toordinal())
        task(root, day, "osms_daily_package", "deliver", wall=2.0, peak=100 << 20, tries=3 if day == D3 else 1,
             started=day.toordinal() + 20)
    status(root, D1, "justice", "children", "published", individuals="published")
    (root / "alerts" / D3.isoformat()).mkdir(parents=True)
    for name in ("agency_justice.agency_run_failed.scheduled__2025-06-03.json",
                 "agency_justice.agency_run_failed.scheduled__2025-06-03.sent", "agency_labour.feeds_not_published.r1.sent",
                 "agency_labour.feeds_not_published.r2.sent", "osms_daily_package.delivery_waiting.r3.json"):
        (root / "alerts" / D3.isoformat() / name).touch()  # the outbox: a notice, and .sent once accepted
    return root


def test_the_figures_of_bodies_feeds_and_streaks_come_from_the_statuses(root: Path) -> None:
    found = samples(render(root, NOW))

    assert value(found, "osms_body_last_status_timestamp_seconds", body="labour") == day_timestamp(D3)
    assert value(found, "osms_body_last_status_timestamp_seconds", body="justice") == day_timestamp(D1)
    assert value(found, "osms_category_rows_in", body="labour", category="unemployed") == 20
    assert value(found, "osms_category_rows_held_back", body="labour", category="unemployed") == 10
    assert value(found, "osms_category_verdict", body="labour", category="unemployed", verdict="partial") == 1
    assert value(found, "osms_category_verdict", body="labour", category="unemployed", verdict="published") == 0
    assert value(found, "osms_feed_verdict", body="labour", system="labour_unnamed", category="unemployed",
                 verdict="held_back") == 1
    # the alert rules' streaks: a feed held back three days running, a body without a status two days running
    assert value(found, "osms_feed_held_back_days_in_a_row", body="labour", system="labour_unnamed",
                 category="unemployed") == 3
    assert value(found, "osms_feed_held_back_days_in_a_row", body="labour", system="labour_market",
                 category="unemployed") == 0
    assert value(found, "osms_body_failed_days_in_a_row", body="justice") == 2
    assert value(found, "osms_body_failed_days_in_a_row", body="labour") == 0


def test_a_body_still_running_on_the_latest_day_has_not_failed_it(root: Path) -> None:
    # D4 begun: labour reported, justice not yet, no package: justice's streak still ends at D3
    D4 = D3 + dt.timedelta(days=1)
    status(root, D4, "labour", "unemployed", "published", labour_market="published")
    found = samples(render(root, NOW + dt.timedelta(days=1)))
    assert value(found, "osms_body_failed_days_in_a_row", body="justice") == 2  # D2, D3: D4 is not over
    status(root, D3, "justice", "children", "published", individuals="published")
    found = samples(render(root, NOW + dt.timedelta(days=1)))
    assert value(found, "osms_body_failed_days_in_a_row", body="justice") == 0
    package(root, D4, delivered=False)  # the package DAG went on without justice: now it failed D4
    found = samples(render(root, NOW + dt.timedelta(days=1)))
    assert value(found, "osms_body_failed_days_in_a_row", body="justice") == 1


def test_a_failed_feed_counts_as_a_failed_day_of_its_body(root: Path) -> None:
    status(root, D3, "justice", "children", "failed", individuals="failed")
    status(root, D2, "justice", "children", "published", individuals="published")
    found = samples(render(root, NOW))
    assert value(found, "osms_body_failed_days_in_a_row", body="justice") == 1


def test_the_chain_figures_say_what_is_delivered_owed_and_due(root: Path) -> None:
    found = samples(render(root, NOW))

    assert value(found, "osms_chain_start_timestamp_seconds") == day_timestamp(D1)
    assert value(found, "osms_package_last_delivered_timestamp_seconds") == day_timestamp(D2)
    assert value(found, "osms_package_days_undelivered") == 1  # D3: yesterday in Almaty, no receipt
    due = value(found, "osms_package_oldest_undelivered_due_timestamp_seconds", day=D3.isoformat())
    assert due == due_timestamp(D3)
    assert value(found, "osms_package_delivered", day=D3.isoformat()) == 0
    assert value(found, "osms_package_delivered", day=D1.isoformat()) == 1
    assert value(found, "osms_package_rows", day=D2.isoformat()) == 42
    assert value(found, "osms_package_bytes", day=D2.isoformat()) == 1250
    assert value(found, "osms_package_build_seconds", day=D2.isoformat()) == 12.5
    assert value(found, "osms_package_delivery_seconds", day=D2.isoformat()) == 2.0
    assert value(found, "osms_package_carried_forward_days", body="labour", category="unemployed") == 2
    assert value(found, "osms_package_category_carried_forward", category="unemployed") == 1
    assert value(found, "osms_package_records_carried_forward", category="unemployed") == 5


def test_nothing_is_owed_once_every_day_is_delivered_and_the_next_is_due_tomorrow(root: Path) -> None:
    package(root, D3, delivered=True, carried_from=D1)
    found = samples(render(root, NOW))
    assert value(found, "osms_package_days_undelivered") == 0
    tomorrow = D3 + dt.timedelta(days=1)
    assert value(found, "osms_package_oldest_undelivered_due_timestamp_seconds", day=tomorrow.isoformat()) \
        == due_timestamp(tomorrow)


def test_task_costs_notices_and_per_day_figures(root: Path) -> None:
    found = samples(render(root, NOW))

    assert value(found, "osms_task_wall_seconds", dag_id="osms_daily_package", task_id="build_package") == 12.5
    assert value(found, "osms_task_peak_rss_bytes", dag_id="osms_daily_package", task_id="build_package") == 300 << 20
    assert value(found, "osms_task_try_number", dag_id="osms_daily_package", task_id="deliver") == 3
    assert value(found, "osms_day_task_retries", day=D3.isoformat()) == 2
    assert value(found, "osms_day_task_retries", day=D2.isoformat()) == 0
    assert value(found, "osms_day_task_peak_rss_bytes", day=D1.isoformat()) == 300 << 20
    assert value(found, "osms_day_span_seconds", day=D1.isoformat()) == 22.0
    assert value(found, "osms_notices_sent", kind="feeds_not_published", dag_id="agency_labour") == 2
    assert value(found, "osms_notices_sent", kind="agency_run_failed", dag_id="agency_justice") == 1
    assert value(found, "osms_notices_pending", kind="delivery_waiting", dag_id="osms_daily_package") == 1
    assert value(found, "osms_notices_pending", kind="agency_run_failed", dag_id="agency_justice") is None


def test_damaged_documents_are_counted_never_fatal_and_nothing_personal_is_exported(root: Path) -> None:
    # a status cut short, a quality document that is not JSON, a stray IIN in a file name the figures never read
    layout.status(root, D3, "labour").write_text('{"schema": "osms.core.status/1", "body": "lab')
    (layout.package_dir(root, D3) / QUALITY).write_text("not json " + SECRET_IIN)
    # a manifest and a receipt that are JSON but not what their models say
    (layout.package_dir(root, D2) / MANIFEST).write_text(json.dumps({"files": [{"name": RECORDS, "rows": 42}]}))
    (layout.package_dir(root, D2) / RECEIPT).write_text(json.dumps({"receipt_id": "R"}))
    text = render(root, NOW)
    found = samples(text)
    assert value(found, "osms_metrics_unreadable_documents", document="manifest") == 1
    assert value(found, "osms_metrics_unreadable_documents", document="receipt") == 1
    assert value(found, "osms_package_rows", day=D2.isoformat()) is None
    assert value(found, "osms_package_delivered", day=D2.isoformat()) == 0
    assert value(found, "osms_metrics_unreadable_documents", document="status") >= 1
    assert value(found, "osms_metrics_unreadable_documents", document="quality") == 1
    assert value(found, "osms_body_failed_days_in_a_row", body="labour") == 1  # an unreadable status is a failed day
    assert SECRET_IIN.encode() not in text


def test_an_empty_data_root_gives_figures_without_failing(tmp_path: Path) -> None:
    found = samples(render(tmp_path / "nothing", NOW))
    assert value(found, "osms_metrics_unreadable_documents", document="figures") == 0
    assert value(found, "osms_package_days_undelivered") is None  # no chain, nothing owed


def test_the_route_needs_the_scrape_token_and_is_off_without_one(root: Path) -> None:
    on = TestClient(create_metrics_app(root=lambda: root, token=lambda: "s3cret-token"))
    assert on.get("/metrics").status_code == 401
    assert on.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    ok = on.get("/metrics", headers={"Authorization": "Bearer s3cret-token"})
    assert ok.status_code == 200 and ok.headers["content-type"].startswith("text/plain")
    assert b"osms_package_days_undelivered" in ok.content
    off = TestClient(create_metrics_app(root=lambda: root, token=lambda: None))
    assert off.get("/metrics", headers={"Authorization": "Bearer s3cret-token"}).status_code == 404


def test_the_token_is_read_from_the_environment_or_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from osms.ui.metrics import scrape_token

    monkeypatch.delenv("OSMS_METRICS_TOKEN", raising=False)
    monkeypatch.delenv("OSMS_METRICS_TOKEN_FILE", raising=False)
    assert scrape_token() is None
    (tmp_path / "token").write_text("from-a-file\n")
    monkeypatch.setenv("OSMS_METRICS_TOKEN_FILE", str(tmp_path / "token"))
    assert scrape_token() == "from-a-file"
    monkeypatch.setenv("OSMS_METRICS_TOKEN", "from-the-env")
    assert scrape_token() == "from-the-env"


def test_the_compose_prometheus_configuration_is_make_clusters_with_the_compose_names() -> None:
    from osms.dev.prometheus import config_text, rules_file

    committed = (rules_file().parent / "prometheus-compose.yml").read_text()
    body = "\n".join(line for line in committed.splitlines() if not line.startswith("#")) + "\n"
    assert body == config_text(target="airflow-apiserver:8080", metrics_path="/osms-metrics/metrics",
                               token_file=Path("/run/secrets/osms_metrics_token"),
                               rules=Path("/etc/prometheus/alerts.yml"))
