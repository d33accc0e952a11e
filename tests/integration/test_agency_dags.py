"""Real Airflow runs of the agency DAGs (`airflow dags test`, embedded SQLite) against the mocks.

One date, every kind of defect injected at a fixed seed: what the DAGs quarantine
must equal the mock's ground truth, record by record and rule by rule, and no
IIN or name may reach a task log, an XCom value or a report.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from mocks.config import MockConfig
from mocks.defects import DEFECT_KINDS, DefectRates
from mocks.faults import SystemFaults
from mocks.service import MockServices, start_mocks
from osms.dev.local_run import DagWorkers, airflow_env, migrate, run_day_dags
from osms.quality.suites import load_suite_dict
from osms.core.registry import default_registry
from osms.core.status import read_status

pytestmark = pytest.mark.integration

DAY = dt.date(2025, 6, 1)
COMMON_RULE = {
    "bad_check_digit": "iin_valid",
    "malformed_iin": "iin_valid",
    "future_birth_date": "birth_date_not_future",
    "period_end_before_start": "period_end_after_start",
    "duplicate_record": "duplicate_record",
}


def _suite_rules(category: str, origin: str) -> set[str]:
    doc = load_suite_dict(category)  # as validate loads it: the common rules merged in
    return {e["meta"]["rule"] for e in doc["expectations"] if e["meta"].get("origin") == origin}


def _tiny_backoff(env: dict[str, str], **extra: object) -> dict[str, str]:
    """Connection extras that keep retries fast in tests."""
    out = dict(env)
    for key, value in env.items():
        if key.startswith("AIRFLOW_CONN_OSMS_SOURCE_"):
            conn = json.loads(value)
            conn["extra"] = {"backoff_base": 0.01, "backoff_max": 0.05, "max_retries": 3, **extra}
            out[key] = json.dumps(conn)
    return out


@pytest.fixture(scope="module")
def signing_public_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from osms.core.keys import ensure_dev_keypair

    return ensure_dev_keypair(tmp_path_factory.mktemp("keys"))[1]


@pytest.fixture(scope="module")
def daily_run(tmp_path_factory: pytest.TempPathFactory, signing_public_key: Path) -> Iterator[tuple[Path, MockServices]]:
    """All 8 agency DAGs for DAY, every defect kind injected at 0.4 % per feed."""
    data = tmp_path_factory.mktemp("daily")
    rates = DefectRates.from_mapping({k: 0.004 for k in DEFECT_KINDS}, DefectRates.none())
    with start_mocks(MockConfig(data_dir=data / "mocks", defects=rates), public_key_path=signing_public_key) as m:
        env = airflow_env(data, _tiny_backoff(m.airflow_env()))
        migrate(env)
        # the eight DAGs on warm workers, two at a time, as osms run runs them
        results, _ = run_day_dags(DAY, data, env, package=False, say=lambda _: None)
        assert len(results) == len(default_registry().edition_on(DAY).bodies)
        for result in results:
            assert result.ok, result.log.read_text()[-4000:]
        yield data, m


def test_every_body_reported(daily_run) -> None:
    data, _ = daily_run
    for body in default_registry().edition_on(DAY).bodies:
        status = read_status(data, DAY, body.code)
        assert status is not None and status.edition == "2022"
        assert {c.status for c in status.categories} == {"published"}, status


def test_quarantine_equals_ground_truth(daily_run) -> None:
    data, mocks = daily_run
    edition = default_registry().edition_on(DAY)
    checked_kinds: set[str] = set()
    for body in edition.bodies:
        for cat in edition.categories_of(body.code):
            expected: dict[tuple[str, str], tuple[str, str | None]] = {}
            for feed in (f for f in edition.feeds if f.body == body.code and f.category == cat.code):
                for t in mocks.source_service.ground_truth(feed.system, cat.code, DAY).to_pylist():
                    if t["severity"] == "error":
                        expected[(feed.system, t["record_id"])] = (t["defect"], t["column"])
            got = {
                (r["system"], r["record_id"]): set(r["rules"])
                for r in pq.read_table(data / "quarantine" / DAY.isoformat() / body.code / f"{cat.code}.parquet",
                                       columns=["system", "record_id", "rules"]).to_pylist()
            }
            assert set(got) == set(expected), (body.code, cat.code)  # no false positive, no miss
            decree_rules = _suite_rules(cat.code, "decree") | {"period_start_not_future"}
            for key, (defect, column) in expected.items():
                checked_kinds.add(defect)
                if defect in COMMON_RULE:
                    assert COMMON_RULE[defect] in got[key], (body.code, cat.code, key, defect, got[key])
                elif defect == "missing_required":
                    assert f"required:{column}" in got[key], (key, column, got[key])
                elif defect == "category_rule":
                    assert got[key] & decree_rules, (body.code, cat.code, key, got[key])
    assert checked_kinds == set(DEFECT_KINDS) - {"iin_mismatch"}


def test_warnings_equal_injected_mismatches(daily_run) -> None:
    data, mocks = daily_run
    edition = default_registry().edition_on(DAY)
    for body in edition.bodies:
        status = read_status(data, DAY, body.code)
        for cat in edition.categories_of(body.code):
            injected = sum(
                1
                for f in edition.feeds if f.body == body.code and f.category == cat.code
                for t in mocks.source_service.ground_truth(f.system, cat.code, DAY).to_pylist()
                if t["defect"] == "iin_mismatch"
            )
            assert status.category(cat.code).warnings_by_rule.get("iin_matches_birth_date_sex", 0) == injected


def _personal_values(mocks: MockServices) -> tuple[set[str], set[str]]:
    iins: set[str] = set()
    names: set[str] = set()
    for system, category in mocks.source_service.population.feeds():
        table, _ = mocks.source_service.day_table(system, category, DAY)
        for col in ("iin", "child_iin", "other_parent_iin", "cared_person_iin", "worker_iin"):
            if col in table.column_names:
                iins.update(v for v in table.column(col).to_pylist() if v)
        for col in ("last_name", "first_name", "patronymic"):
            names.update(v for v in table.column(col).to_pylist() if v and len(v) >= 4)
    return iins, names


def test_no_personal_data_in_logs_xcom_or_reports(daily_run) -> None:
    data, mocks = daily_run
    iins, names = _personal_values(mocks)
    digits = re.compile(r"\d{12}")
    words = re.compile(r"[^\W\d_]{4,}")

    def leaks(text: str) -> set[str]:
        return (set(digits.findall(text)) & iins) | (set(words.findall(text)) & names)

    scanned = 0
    for folder in ("airflow/logs", "reports", "status", "feedback"):
        for path in (data / folder).rglob("*"):
            if path.is_file() and path.suffix in {".log", ".json", ".html", ".csv", ".txt", ""}:
                found = leaks(path.read_text(encoding="utf-8", errors="replace"))
                assert not found, f"{path} holds personal data ({len(found)} values)"
                scanned += 1
    with sqlite3.connect(data / "airflow" / "airflow.db") as db:
        values = [row[0] for row in db.execute("select value from xcom")]
    assert values, "no XCom values were stored"
    for value in values:
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
        assert not leaks(text), "an XCom value holds personal data"
    assert scanned > 10


# ----------------------------------------------------------------------------- faults


@pytest.fixture(scope="module")
def fault_run(tmp_path_factory: pytest.TempPathFactory, signing_public_key: Path):
    """Mocks with clean data and an Airflow home; each test sets its system's faults."""
    data = tmp_path_factory.mktemp("faults")
    with start_mocks(MockConfig(data_dir=data / "mocks", defects=DefectRates.none()),
                     public_key_path=signing_public_key) as m:
        env = airflow_env(data, _tiny_backoff(m.airflow_env()))
        migrate(env)
        runs = iter(range(1, 1000))
        # one warm worker runs each test's DAG (Airflow's dag.test(), as osms run runs it), not a cold process per run
        with DagWorkers(env, 1) as pool:
            pool.prepare(data / "airflow" / "logs" / "prepare.log")

            def run(dag_id: str, day: dt.date = DAY):
                log = data / "airflow" / "logs" / dag_id / f"run-{next(runs)}.log"
                log.parent.mkdir(parents=True, exist_ok=True)
                (result,) = pool.run([(dag_id, day, log)])
                return result

            yield data, m, run


def test_5xx_and_429_are_retried(fault_run) -> None:
    data, m, run = fault_run
    m.source_service.faults["legal_statistics"] = SystemFaults(error_rate=0.3, rate_limit_rate=0.2,
                                                               retry_after_seconds=0)
    assert run("agency_prosecutor").ok
    c = read_status(data, DAY, "prosecutor").category("detainees")
    assert c.status == "published" and c.rows_in > 0


def test_truncated_pages_fail_the_feed(fault_run) -> None:
    data, m, run = fault_run
    m.source_service.faults["judicial_is"] = SystemFaults(truncate_rate=1.0)
    assert not run("agency_courts").ok
    c = read_status(data, DAY, "courts").category("pensioners")
    assert c.status == "failed" and "truncated" in c.reason and "judicial_is" in c.reason
    assert not (data / "validated" / DAY.isoformat() / "courts" / "pensioners.parquet").exists()


def test_malformed_line_fails_and_renamed_column_holds_back(fault_run) -> None:
    data, m, run = fault_run
    m.source_service.faults["penal_db"] = SystemFaults(malformed_line_rate=1.0)
    m.source_service.faults["migration_police"] = SystemFaults(rename_columns={"birth_date": "date_of_birth"})
    assert not run("agency_interior").ok
    status = read_status(data, DAY, "interior")
    inmates, migrants = status.category("inmates"), status.category("eaeu_migrants")
    assert inmates.status == "failed" and "not valid JSON" in inmates.reason and "line" in inmates.reason
    assert migrants.status == "held_back"
    assert "birth_date" in migrants.reason and "date_of_birth" in migrants.reason


def test_rejected_token_names_the_connection(fault_run) -> None:
    data, m, run = fault_run
    m.source_service.faults["pregnancy_register"] = SystemFaults(reject_token=True)
    assert not run("agency_health").ok
    c = read_status(data, DAY, "health").category("pregnant")
    assert c.status == "failed" and "401" in c.reason and "osms_source_pregnancy_register" in c.reason


def test_volume_drop_holds_back(fault_run) -> None:
    data, m, run = fault_run
    m.source_service.faults["disability_db"] = SystemFaults()
    assert run("agency_labour").ok
    # the previous days reported the same volume
    for k in (1, 2, 3):
        prior = data / "status" / (DAY - dt.timedelta(days=k)).isoformat()
        prior.mkdir(parents=True, exist_ok=True)
        text = (data / "status" / DAY.isoformat() / "labour.json").read_text()
        (prior / "labour.json").write_text(text.replace(DAY.isoformat(), (DAY - dt.timedelta(days=k)).isoformat()))
    m.source_service.faults["disability_db"] = SystemFaults(volume_drop=0.5)
    assert run("agency_labour").ok
    c = read_status(data, DAY, "labour").category("disabled")
    # the verdict is the feed's, and the category's reason names the feed
    assert c.status == "held_back" and c.feed_status("disability_db") == "held_back"
    assert c.feed_reason("disability_db").startswith("volume")
    assert c.reason.startswith("disability_db: volume")
    shutil.rmtree(data / "status" / (DAY - dt.timedelta(days=1)).isoformat())
