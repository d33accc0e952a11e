"""The fault matrix: an operator's bad week, one fault at a time, each ending in its documented state.

A world of two days is built once with real Airflow runs of the 8 agency DAGs over the
mock sources (real HTTP on 127.0.0.1), and the clean packages of both days are built
and delivered once to the mock State Corporation: the reference. Every scenario then
works on its own copy of that world, with its own receiver (real HTTP), injects one
fault, lets the pipeline's own code handle it, and checks that nothing was lost and
that, where the fault clears before delivery, the packages are byte for byte the
reference's. Scenarios that need whole DAG runs go through ``osms run``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mocks.config import MockConfig
from mocks.runner import serving
from mocks.service import MockServices, start_mocks
from mocks.state_corp import Faults, StateCorpConfig, create_app
from osms.core.run import Run
from osms.core import layout
from osms.package.chain import ChainBroken, ChainWaiting, link
from osms.package.deliver import DeliveryError, ReceiverEndpoint, deliver_package, read_receipt, receiver_packages
from osms.orchestration.failures import is_permanent
from osms.dev.local_run import airflow_env, migrate, run_day_dags
from osms.package.build import PackageError, build_package
from osms.orchestration.package_dag import SIGNING_KEY_VARIABLE
from osms.core.registry import default_registry

pytestmark = pytest.mark.integration

D1, D2, D3 = dt.date(2025, 6, 1), dt.date(2025, 6, 2), dt.date(2025, 6, 3)
PACKAGE_FILES = ("records.parquet", "changes.parquet", "quality.json", "manifest.json", "manifest.sig")
RECEIVER_TOKEN = "fault-matrix-receiver-token"
OSMS = str(Path(sys.executable).with_name("osms"))


# --------------------------------------------------------------------------- the world and the reference


@dataclass(frozen=True)
class World:
    data: Path  # validated data of D1 and D2, no package
    private_key: Path
    public_key: Path
    reference: dict[dt.date, dict[str, bytes]]  # the clean packages' files


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, population_cache: Path) -> Iterator[World]:
    from mocks.population import PopulationSpec, load_population
    from osms.core.keys import ensure_dev_keypair

    private, public = ensure_dev_keypair(tmp_path_factory.mktemp("keys"))
    data = tmp_path_factory.mktemp("world")
    cfg = MockConfig(data_dir=data / "mocks")
    population = load_population(PopulationSpec(seed=cfg.seed, scale=cfg.scale), population_cache)
    with start_mocks(cfg, population=population, public_key_path=public) as m:
        env = airflow_env(data, {**m.airflow_env(), f"AIRFLOW_VAR_{SIGNING_KEY_VARIABLE.upper()}": private.read_text()})
        migrate(env)
        for day in (D1, D2):
            results, _ = run_day_dags(day, data, env, package=False, say=lambda _: None)
            assert all(r.ok for r in results), [(r.dag_id, r.log.read_text()[-2000:]) for r in results if not r.ok]
    reference_dir = tmp_path_factory.mktemp("reference")
    clean = _copy(data, reference_dir)
    with receiver(clean, public) as endpoint:
        for day in (D1, D2):
            _build_and_deliver(clean, day, private, endpoint)
    reference = {day: _files(clean, day) for day in (D1, D2)}
    yield World(data, private, public, reference)


def _copy(world_data: Path, into: Path) -> Path:
    target = into / "data"
    shutil.copytree(world_data, target, symlinks=True, ignore=shutil.ignore_patterns("airflow"))
    return target


@contextlib.contextmanager
def receiver(data: Path, public_key: Path, *, faults: Faults | None = None,
             key: Path | None = None) -> Iterator[ReceiverEndpoint]:
    """The mock State Corporation on 127.0.0.1, keeping its state in the copy's own folder."""
    app = create_app(StateCorpConfig(state_dir=data / "receiver", token=RECEIVER_TOKEN, admin_token="admin",
                                     public_key=key or public_key, faults=faults or Faults()))
    with serving(app, name="state_corp") as server:
        yield ReceiverEndpoint(server.url, RECEIVER_TOKEN, timeout=10.0, max_retries=1, backoff_base=0.01,
                               backoff_max=0.05)


class _Receiver:
    """What the chain asks, through the delivery client (what the DAG's HttpReceiver does)."""

    def __init__(self, endpoint: ReceiverEndpoint) -> None:
        self.endpoint = endpoint

    def packages(self):
        return receiver_packages(self.endpoint)

    def receipt(self, package_id: str):
        from osms.package.deliver import receiver_receipt

        return receiver_receipt(self.endpoint, package_id)


def _build(data: Path, day: dt.date, private_key: Path, endpoint: ReceiverEndpoint | None = None):
    return build_package(Run.of(day, data_dir=data), signing_key_pem=private_key.read_bytes(), producer_version="fm",
                         receiver=_Receiver(endpoint) if endpoint else None)


def _build_and_deliver(data: Path, day: dt.date, private_key: Path, endpoint: ReceiverEndpoint):
    result = _build(data, day, private_key, endpoint)
    receipt, _ = deliver_package(result.path, endpoint, data_dir=data)
    return result, receipt


def _files(data: Path, day: dt.date) -> dict[str, bytes]:
    return {name: (layout.package_dir(data, day) / name).read_bytes() for name in PACKAGE_FILES}


def _ledger(data: Path) -> list[str]:
    path = data / "receiver" / "ledger.jsonl"
    return [json.loads(line)["receipt"]["package_id"] for line in path.read_text().splitlines()] if path.exists() \
        else []


# --------------------------------------------------------------------------- the delivery chain


def test_1_a_later_day_waits_for_the_day_before_and_is_then_chained_on_it(world: World, tmp_path: Path) -> None:
    data = _copy(world.data, tmp_path)
    with receiver(data, world.public_key) as endpoint:
        _build(data, D1, world.private_key, endpoint)  # D1 built, its delivery not done yet (failed, retrying)
        with pytest.raises(ChainWaiting, match=f"{D1.isoformat()} is not delivered yet"):
            _build(data, D2, world.private_key, endpoint)  # D2 waits: it is never delivered over the gap
        assert not layout.package_dir(data, D2).exists() and _ledger(data) == []
        deliver_package(layout.package_dir(data, D1), endpoint, data_dir=data)
        _build_and_deliver(data, D2, world.private_key, endpoint)
    assert _files(data, D1) == world.reference[D1] and _files(data, D2) == world.reference[D2]
    assert _ledger(data) == ["OSMS-2025-06-01", "OSMS-2025-06-02"]


def test_2_a_lost_receipt_is_recovered_from_the_receiver(world: World, tmp_path: Path) -> None:
    data = _copy(world.data, tmp_path)
    with receiver(data, world.public_key) as endpoint:
        _build_and_deliver(data, D1, world.private_key, endpoint)
        (layout.package_dir(data, D1) / "receipt.json").unlink()
        found = link(data, D2, _Receiver(endpoint))
        assert found.previous == layout.package_dir(data, D1) and "recovered" in found.how
        assert read_receipt(layout.package_dir(data, D1)) is not None
        _build_and_deliver(data, D2, world.private_key, endpoint)
    assert _files(data, D2) == world.reference[D2]
    assert _ledger(data) == ["OSMS-2025-06-01", "OSMS-2025-06-02"]


def test_3_a_lost_package_folder_is_rebuilt_byte_identical(world: World, tmp_path: Path) -> None:
    data = _copy(world.data, tmp_path)
    with receiver(data, world.public_key) as endpoint:
        _build_and_deliver(data, D1, world.private_key, endpoint)
        shutil.rmtree(layout.package_dir(data, D1))
        _build_and_deliver(data, D2, world.private_key, endpoint)
    assert _files(data, D1) == world.reference[D1] and _files(data, D2) == world.reference[D2]
    assert read_receipt(layout.package_dir(data, D1)) is not None
    assert _ledger(data) == ["OSMS-2025-06-01", "OSMS-2025-06-02"]  # D1 rebuilt, not delivered twice


def test_4_a_work_folder_left_by_a_killed_build_is_never_taken_for_the_package(world: World, tmp_path: Path) -> None:
    data = _copy(world.data, tmp_path)
    with receiver(data, world.public_key) as endpoint:
        _build_and_deliver(data, D1, world.private_key, endpoint)
        stale = data / "packages" / f".{D2.isoformat()}.tmp-99999"
        shutil.copytree(layout.package_dir(data, D1), stale)  # holds a manifest: looks like a package
        assert link(data, D2, _Receiver(endpoint)).previous == layout.package_dir(data, D1)
        _build_and_deliver(data, D2, world.private_key, endpoint)
    assert not stale.exists()  # the next build of that day removed it
    assert _files(data, D2) == world.reference[D2]


# --------------------------------------------------------------------------- damaged state, contained


def test_5_a_truncated_status_of_one_body_is_named_and_contained_to_that_body(world: World, tmp_path: Path) -> None:
    data = _copy(world.data, tmp_path)
    status = layout.status(data, D2, "labour")
    status.write_bytes(status.read_bytes()[: len(status.read_bytes()) // 2])
    with receiver(data, world.public_key) as endpoint:
        _build_and_deliver(data, D1, world.private_key, endpoint)
        result, _ = _build_and_deliver(data, D2, world.private_key, endpoint)
    quality = json.loads((result.path / "quality.json").read_bytes())
    reference = json.loads(world.reference[D2]["quality.json"])
    for code, cat in quality["categories"].items():
        for body, entry in cat["bodies"].items():
            if body == "labour":
                assert entry["status"] == "missing" and "labour.json" in entry["reason"]
                assert "not valid JSON" in entry["reason"]
                assert entry["carried_forward_from"] == D1.isoformat()
            else:
                assert entry["status"] == reference["categories"][code]["bodies"][body]["status"]
    # nobody labour reported on D1 is removed on D2
    d1_labour = {(r["iin"], r["category"]) for r in _rows(world.reference[D1]["records.parquet"])
                 if "labour" in r["bodies"]}
    removed = {(r["iin"], r["category"]) for r in _rows((result.path / "changes.parquet").read_bytes())
               if r["change"] == "removed"}
    assert d1_labour and not (d1_labour & removed)


def test_6_an_unreadable_day_is_skipped_by_the_volume_check(world: World, tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    from osms.core.status import trailing_counts

    data = _copy(world.data, tmp_path)
    layout.status(data, D1, "labour").write_bytes(b'{"schema": "osms.core.status/1", "categ')
    assert trailing_counts(data, D2, "labour", "pensioners") == []
    assert any("unreadable" in r.message and "labour.json" in r.message for r in caplog.records)


def _rows(parquet: bytes) -> list[dict]:
    import io

    import pyarrow.parquet as pq

    return pq.read_table(io.BytesIO(parquet)).to_pylist()


# --------------------------------------------------------------------------- the receiver misbehaves


def test_7_a_receiver_down_for_a_whole_try_is_tried_again_and_delivered_once(world: World, tmp_path: Path) -> None:
    data = _copy(world.data, tmp_path)
    with receiver(data, world.public_key) as endpoint:
        _build_and_deliver(data, D1, world.private_key, endpoint)
        result = _build(data, D2, world.private_key, endpoint)
    with pytest.raises(DeliveryError) as err:  # the server is gone: connection refused on every attempt
        deliver_package(result.path, endpoint, data_dir=data)
    assert not is_permanent(err.value)  # the task's retry takes it
    with receiver(data, world.public_key) as endpoint:  # back, with the same state
        deliver_package(result.path, endpoint, data_dir=data)
    assert _files(data, D2) == world.reference[D2]
    assert _ledger(data) == ["OSMS-2025-06-01", "OSMS-2025-06-02"]


def test_8_a_commit_whose_answer_is_lost_gives_one_delivery_and_the_receipt(world: World, tmp_path: Path) -> None:
    data = _copy(world.data, tmp_path)
    faults = Faults(delay_commit_answer_seconds=1.5)
    with receiver(data, world.public_key, faults=faults) as endpoint:
        slow = ReceiverEndpoint(endpoint.base_url, RECEIVER_TOKEN, timeout=0.5, max_retries=0)
        result = _build(data, D1, world.private_key, endpoint)
        with pytest.raises(DeliveryError, match="no answer"):
            deliver_package(result.path, slow, data_dir=data)  # the receiver commits; the answer never comes
        time.sleep(1.6)
        faults.delay_commit_answer_seconds = 0.0
        receipt, new = deliver_package(result.path, endpoint, data_dir=data)  # the task's retry
    assert not new and receipt.package_id == "OSMS-2025-06-01"
    assert read_receipt(result.path) == receipt
    assert _ledger(data) == ["OSMS-2025-06-01"]


def test_9_permanent_refusals_fail_at_once(world: World, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    data = _copy(world.data, tmp_path)
    other = tmp_path / "other.pub"
    other.write_bytes(Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    result = _build(data, D1, world.private_key)
    with receiver(data, world.public_key, key=other) as endpoint:  # the receiver knows another key
        with pytest.raises(DeliveryError) as bad_signature:
            deliver_package(result.path, endpoint, data_dir=data)
    assert bad_signature.value.status == 422 and is_permanent(bad_signature.value)
    with pytest.raises(PackageError, match="signing key") as bad_key:
        build_package(Run.of(D1, data_dir=data), signing_key_pem=b"-----BEGIN NOT A KEY-----", producer_version="fm")
    assert is_permanent(bad_key.value)
    # a receiver already holding a later day (delivered as the start of a chain) but not D1's predecessor
    # nor D1: D1 can never be chained there, and waiting would not help
    scratch = _copy(world.data, tmp_path / "scratch")
    shutil.rmtree(scratch / "status" / D1.isoformat())
    shutil.rmtree(scratch / "validated" / D1.isoformat())
    with receiver(tmp_path / "elsewhere", world.public_key) as endpoint:
        later = _build(scratch, D2, world.private_key)  # nothing before D2 there: it starts its own chain
        deliver_package(later.path, endpoint, data_dir=scratch)
        with pytest.raises(ChainBroken, match="later days") as broken:
            link(data, D1, _Receiver(endpoint))
    assert is_permanent(broken.value)


# --------------------------------------------------------------------------- killed, full, twice at once


def test_10_a_build_killed_midway_leaves_nothing_taken_and_the_rerun_is_identical(world: World,
                                                                                   tmp_path: Path) -> None:
    data = _copy(world.data, tmp_path)
    code = textwrap.dedent(f"""
        import datetime as dt, os, signal
        from pathlib import Path
        import osms.core.files as files
        from osms.core.run import Run
        from osms.package.build import build_package
        real = files.RowGroupWriter.write
        def write(self, table):
            real(self, table)
            os.kill(os.getpid(), signal.SIGKILL)  # killed in the middle of writing records.parquet
        files.RowGroupWriter.write = write
        build_package(Run.of(dt.date(2025, 6, 1), data_dir=Path({str(data)!r})),
                      signing_key_pem=Path({str(world.private_key)!r}).read_bytes(), producer_version="fm")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == -signal.SIGKILL
    assert not layout.package_dir(data, D1).exists()
    assert list((data / "packages").glob(f".{D1.isoformat()}.tmp-*"))  # what it left
    with receiver(data, world.public_key) as endpoint:
        _build_and_deliver(data, D1, world.private_key, endpoint)
    assert not list((data / "packages").glob(".*tmp*")) and not list((data / "tmp").glob(f"package-{D1}*"))
    assert _files(data, D1) == world.reference[D1]


def test_11_a_full_disk_while_writing_the_package_places_nothing(world: World, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import osms.core.files as files

    data = _copy(world.data, tmp_path)
    real = files.RowGroupWriter.write

    def full(self, table):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.RowGroupWriter, "write", full)
    with pytest.raises(OSError) as err:
        _build(data, D1, world.private_key)
    assert err.value.errno == errno.ENOSPC and not is_permanent(err.value)  # retried once space is back
    assert not layout.package_dir(data, D1).exists() and not list((data / "packages").glob(".*tmp*"))
    monkeypatch.setattr(files.RowGroupWriter, "write", real)
    with receiver(data, world.public_key) as endpoint:
        _build_and_deliver(data, D1, world.private_key, endpoint)
    assert _files(data, D1) == world.reference[D1]


def test_12_two_package_runs_for_one_date_at_once_give_one_package_and_one_delivery(world: World,
                                                                                    tmp_path: Path) -> None:
    data = _copy(world.data, tmp_path)
    with receiver(data, world.public_key) as endpoint:
        code = textwrap.dedent(f"""
            import datetime as dt
            from pathlib import Path
            from osms.package.deliver import ReceiverEndpoint, deliver_package
            from osms.core.run import Run
            from osms.package.build import build_package, package_lock
            data = Path({str(data)!r})
            r = build_package(Run.of(dt.date(2025, 6, 1), data_dir=data),
                              signing_key_pem=Path({str(world.private_key)!r}).read_bytes(), producer_version="fm")
            with package_lock(data, dt.date(2025, 6, 1)):
                deliver_package(r.path, ReceiverEndpoint({endpoint.base_url!r}, {RECEIVER_TOKEN!r}), data_dir=data)
        """)
        runs = [subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True) for _ in range(2)]
        errors = [p.communicate()[1] for p in runs]
        assert [p.returncode for p in runs] == [0, 0], errors
    assert _files(data, D1) == world.reference[D1]
    assert _ledger(data) == ["OSMS-2025-06-01"]


def test_13_an_extract_killed_midway_leaves_no_landing_file_and_the_retry_cleans_up(tmp_path: Path,
                                                                                     start) -> None:
    from mocks.faults import SystemFaults
    from osms.sources.extract import SourceEndpoint, extract_feed
    from osms.core.files import remove_temporaries

    m = start()
    m.source_service.faults["payments"] = SystemFaults(slow_rate=1.0, slow_seconds=0.5)
    landing = layout.landing(tmp_path, D1, "labour", "payments", "pensioners")
    code = textwrap.dedent(f"""
        import datetime as dt
        from pathlib import Path
        from osms.core.run import Run
        from osms.sources.extract import SourceEndpoint, extract_feed
        extract_feed(SourceEndpoint({m.sources_url!r}, {m.tokens["payments"]!r}, page_size=20),
                     Run.of(dt.date(2025, 6, 1), data_dir=Path({str(landing.parent)!r})),
                     body="labour", system="payments", category="pensioners",
                     landing_path=Path({str(landing)!r}))
    """)
    proc = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.monotonic() + 60
    while not list(landing.parent.glob(".*.tmp")) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.8)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not landing.exists() and list(landing.parent.glob(".*.tmp"))
    m.source_service.faults["payments"] = SystemFaults()
    assert remove_temporaries(landing)  # what the extract task does first
    result = extract_feed(SourceEndpoint(m.sources_url, m.tokens["payments"]), Run.of(D1, data_dir=landing.parent),
                          body="labour", system="payments",
                          category="pensioners", landing_path=landing)
    assert result.rows == m.source_service.served_table("payments", "pensioners", D1).num_rows
    assert not list(landing.parent.glob(".*.tmp"))


# --------------------------------------------------------------------------- whole runs: per-feed verdicts, exit codes, notices


class _Webhook(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802: http.server's name
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        _Webhook.received.append({"auth": self.headers.get("Authorization"), **json.loads(body)})
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_14_one_bad_feed_withholds_nothing_else_and_the_run_says_so(world: World, tmp_path: Path) -> None:
    """osms run for D3: egov_portal changes its schema, oralman sends a malformed line, a notice webhook listens."""
    data = _copy(world.data, tmp_path)
    with receiver(data, world.public_key) as endpoint:  # the world's D1 and D2 delivered first
        for day in (D1, D2):
            _build_and_deliver(data, day, world.private_key, endpoint)
    shutil.rmtree(data / "mocks" / "state", ignore_errors=True)
    shutil.copytree(data / "receiver", data / "mocks" / "state" / "state_corp")  # osms run's receiver keeps it
    config = tmp_path / "faults.yaml"
    config.write_text(textwrap.dedent("""
        faults:
          egov_portal: {rename_columns: {study_form: form_of_study}}
          oralman: {malformed_line_rate: 1.0}
    """))
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Webhook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {**os.environ, "OSMS_KEY_DIR": str(world.private_key.parent),
           "AIRFLOW_CONN_OSMS_ALERT_WEBHOOK": json.dumps({"conn_type": "http", "host": "127.0.0.1",
                                                          "port": server.server_address[1], "schema": "http",
                                                          "password": "hook-token"})}
    try:
        out = subprocess.run([OSMS, "run", "--date", D3.isoformat(), "--data-dir", str(data),
                              "--mocks-config", str(config)], capture_output=True, text=True, env=env, timeout=600)
    finally:
        server.shutdown()
    assert out.returncode == 3, out.stdout[-3000:] + out.stderr[-3000:]  # delivered, but a DAG run failed
    assert "receipt" in out.stdout and "agency_labour" in out.stdout
    science = json.loads(layout.status(data, D3, "science").read_text())["categories"]["students"]
    assert science["status"] == "partial"
    assert science["feeds"]["egov_portal"]["status"] == "held_back"
    assert "form_of_study" in science["feeds"]["egov_portal"]["reason"]
    for healthy in ("nedb", "students_abroad"):
        assert science["feeds"][healthy]["status"] == "published" and science["feeds"][healthy]["rows_in"] > 0
    kandases = json.loads(layout.status(data, D3, "labour").read_text())["categories"]["kandases"]
    assert kandases["feeds"]["oralman"]["status"] == "failed" and "not valid JSON" in kandases["feeds"]["oralman"][
        "reason"]
    assert kandases["feeds"]["payments"]["status"] == "published" and kandases["status"] == "partial"
    quality = json.loads((layout.package_dir(data, D3) / "quality.json").read_text())
    feeds = quality["categories"]["students"]["bodies"]["science"]["feeds"]
    assert feeds["egov_portal"]["carried_forward_from"] == D2.isoformat() and feeds["nedb"]["status"] == "published"
    assert quality["categories"]["students"]["status"] == "partial"
    notices = {(n["kind"], n["dag_id"]) for n in _Webhook.received}
    assert ("feeds_not_published", "agency_science") in notices and ("feeds_not_published", "agency_labour") in notices
    assert all(n["auth"] == "Bearer hook-token" for n in _Webhook.received)
    text = json.dumps(_Webhook.received, ensure_ascii=False)
    for row in _rows((layout.package_dir(data, D3) / "records.parquet").read_bytes())[:200]:
        assert row["iin"] not in text and row["last_name"] not in text  # names and counts only


def test_15_osms_run_for_a_day_whose_predecessor_is_not_delivered_waits_and_exits_4(world: World,
                                                                                    tmp_path: Path) -> None:
    data = _copy(world.data, tmp_path)
    with receiver(data, world.public_key) as endpoint:  # D1 delivered, D2 not
        _build_and_deliver(data, D1, world.private_key, endpoint)
    shutil.rmtree(data / "mocks" / "state", ignore_errors=True)
    shutil.copytree(data / "receiver", data / "mocks" / "state" / "state_corp")
    env = {**os.environ, "OSMS_KEY_DIR": str(world.private_key.parent)}
    out = subprocess.run([OSMS, "run", "--date", D3.isoformat(), "--data-dir", str(data)], capture_output=True,
                         text=True, env=env, timeout=600)
    assert out.returncode == 4, out.stdout[-3000:]
    assert "no package was delivered" in out.stdout
    log = (data / "airflow" / "logs" / f"run-{D3.isoformat()}" / "osms_daily_package.log").read_text()
    assert f"the package of {D2.isoformat()} is not delivered yet" in log
    assert _ledger_of(data / "mocks" / "state" / "state_corp") == ["OSMS-2025-06-01"]


def _ledger_of(state: Path) -> list[str]:
    path = state / "ledger.jsonl"
    return [json.loads(line)["receipt"]["package_id"] for line in path.read_text().splitlines()]


# --------------------------------------------------------------------------- hostile sources, data at rest


class _Trap(BaseHTTPRequestHandler):
    """Where a redirect points: it must never be asked anything."""

    hits: list[str] = []

    def _hit(self) -> None:
        _Trap.hits.append(f"{self.command} {self.path}")
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = do_PUT = _hit  # noqa: N815: http.server's names

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def _server(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _Redirector(BaseHTTPRequestHandler):
    """A receiver or webhook answering every request with a redirect to the trap."""

    to = ""

    def _redirect(self) -> None:
        self.send_response(307)
        self.send_header("Location", f"{_Redirector.to}{self.path}")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = do_PUT = _redirect  # noqa: N815: http.server's names

    def log_message(self, *args: object) -> None:
        pass


PERSONAL_TREES = ("landing", "validated", "quarantine", "packages", "feedback", "tmp", "status")


def _modes(data: Path) -> dict[str, str]:
    """Every file and folder of the personal-data trees whose mode is not 0600 (files) or 0700 (folders)."""
    wrong = {}
    for tree in PERSONAL_TREES:
        for path in [data / tree, *(data / tree).rglob("*")] if (data / tree).exists() else []:
            want = 0o700 if path.is_dir() else 0o600
            if stat.S_IMODE(path.lstat().st_mode) != want:
                wrong[str(path.relative_to(data))] = oct(stat.S_IMODE(path.lstat().st_mode))
    return wrong


def test_16_hostile_sources_end_in_their_limits_with_the_cause_and_nothing_personal_leaks(world: World,
                                                                                          tmp_path: Path) -> None:
    """osms run for D3 under umask 022 with a hostile source in front of five feeds, a notice webhook listening.

    pregnancy_register answers a page of 200 MiB, legal_statistics redirects, labour_market nests a line
    100 000 arrays deep, penal_db uses the IIN as record id, disability_db sends three megabyte names.
    """
    data = _copy(world.data, tmp_path)
    with receiver(data, world.public_key) as endpoint:
        for day in (D1, D2):
            _build_and_deliver(data, day, world.private_key, endpoint)
    shutil.rmtree(data / "mocks" / "state", ignore_errors=True)
    shutil.copytree(data / "receiver", data / "mocks" / "state" / "state_corp")
    _Trap.hits, _Webhook.received = [], []
    with _server(_Trap) as trap, _server(_Webhook) as hook:
        config = tmp_path / "faults.yaml"
        config.write_text(textwrap.dedent(f"""
            faults:
              pregnancy_register: {{huge_page_bytes: {200 << 20}}}
              legal_statistics: {{redirect_to: "{trap}"}}
              labour_market: {{deep_json_depth: 100000}}
              penal_db: {{iin_record_ids: true}}
              disability_db: {{long_strings: 3}}
        """))
        port = int(hook.rsplit(":", 1)[1])
        env = {**os.environ, "OSMS_KEY_DIR": str(world.private_key.parent),
               "AIRFLOW_CONN_OSMS_ALERT_WEBHOOK": json.dumps({"conn_type": "http", "host": "127.0.0.1", "port": port,
                                                              "schema": "http", "password": "hook-token"})}
        started = time.monotonic()
        out = subprocess.run([OSMS, "run", "--date", D3.isoformat(), "--data-dir", str(data), "--mocks-config",
                              str(config)], capture_output=True, text=True, env=env, timeout=900,
                             preexec_fn=lambda: os.umask(0o022))
        seconds = time.monotonic() - started
    assert out.returncode == 3, out.stdout[-3000:] + out.stderr[-3000:]  # delivered; the bodies' runs failed
    assert seconds < 600  # each hostile feed ended at once, none waited out a timeout

    def feed(body: str, category: str, system: str) -> dict:
        return json.loads(layout.status(data, D3, body).read_text())["categories"][category]["feeds"][system]

    huge = feed("health", "pregnant", "pregnancy_register")
    assert huge["status"] == "failed" and "page 1: the answer is larger than the limit of 181 MiB" in huge["reason"]
    assert "max_page_bytes" in huge["reason"]
    redirected = feed("prosecutor", "detainees", "legal_statistics")
    assert redirected["status"] == "failed" and "HTTP 302" in redirected["reason"]
    assert f"redirect to {trap}" in redirected["reason"] and "not followed" in redirected["reason"]
    assert _Trap.hits == []  # the redirect target received nothing, no token, no request
    deep = feed("labour", "unemployed", "labour_market")
    assert deep["status"] == "failed" and "page 1, line 1: nested deeper than 32" in deep["reason"]
    iin_ids = feed("interior", "inmates", "penal_db")
    assert iin_ids["status"] == "held_back" and "record_id_not_iin" in iin_ids["reason"]
    long = feed("labour", "disabled", "disability_db")
    assert long["status"] == "published" and long["quarantined_by_rule"]["last_name_length"] == 3
    for reason in (huge["reason"], redirected["reason"], deep["reason"]):
        assert "\n" not in reason and len(reason) <= 1000
    # the failed extracts failed at once (permanent: one try, no retries), the huge page within the task's budget
    log_dir = data / "airflow" / "logs" / f"run-{D3.isoformat()}"
    tries = {(m["dag_id"], m["task_id"]): m for dag in ("agency_health", "agency_prosecutor", "agency_labour")
             for m in _metrics(data, D3, dag)}
    for task in (("agency_health", "pregnant.extract_pregnancy_register"),
                 ("agency_prosecutor", "detainees.extract_legal_statistics"),
                 ("agency_labour", "unemployed.extract_labour_market")):
        assert tries[task]["state"] == "failed" and tries[task]["try_number"] == 1, tries[task]
    assert tries[("agency_health", "pregnant.extract_pregnancy_register")]["peak_rss_bytes"] < 2 * 2**30

    # nothing personal in statuses, feedback, reports, logs or notices
    landed = data / "landing" / D3.isoformat() / "interior" / "penal_db" / "inmates.parquet"
    import pyarrow.parquet as pq

    iins = set(pq.read_table(landed, columns=["iin"]).column(0).drop_null().to_pylist())
    ids = pq.read_table(landed, columns=["record_id"]).column(0).to_pylist()
    withheld = sum(1 for r in ids if r and r.startswith("withheld-iin-p"))
    assert iins and not (iins & set(ids)) and withheld > 0.95 * iin_ids["rows_in"]  # only the defects' bad IINs stay
    assert iin_ids["quarantined_by_rule"]["record_id_not_iin"] == withheld
    texts = [p.read_text(errors="replace") for tree in ("status", "feedback", "reports") for p in
             (data / tree).rglob("*") if D3.isoformat() in str(p) and p.is_file()
             and p.suffix in (".json", ".csv", ".html")]
    texts += [p.read_text(errors="replace") for p in log_dir.glob("*.log")]
    texts += [json.dumps(_Webhook.received, ensure_ascii=False), out.stdout, out.stderr]
    assert len(texts) > 20
    for text in texts:
        assert not (iins & set(re.findall(r"(?<!\d)\d{12}(?!\d)", text)))
        assert "A" * 1000 not in text  # no megabyte name quoted anywhere
    assert _Webhook.received and all(n["auth"] == "Bearer hook-token" for n in _Webhook.received)

    # data at rest: every file of personal data 0600, every folder 0700, under the usual umask
    assert _modes(data) == {}
    package = layout.package_dir(data, D3)
    assert stat.S_IMODE(package.stat().st_mode) == 0o700
    assert {stat.S_IMODE((package / n).stat().st_mode) for n in PACKAGE_FILES} == {0o600}


def _metrics(data: Path, day: dt.date, dag_id: str) -> list[dict]:
    from osms.orchestration.task_metrics import read_metrics

    return [m for m in read_metrics(data, day.isoformat()) if m["dag_id"] == dag_id]


def test_17_a_dripped_page_fails_at_its_deadline_at_once(tmp_path: Path, start) -> None:
    from mocks.faults import SystemFaults
    from osms.sources.extract import FeedExtractError, SourceEndpoint, extract_feed

    m = start()
    m.source_service.faults["payments"] = SystemFaults(drip_bytes_per_second=2000)
    landing = layout.landing(tmp_path, D1, "labour", "payments", "pensioners")
    started = time.monotonic()
    with pytest.raises(FeedExtractError) as err:
        extract_feed(SourceEndpoint(m.sources_url, m.tokens["payments"], page_deadline=2.0, timeout=30),
                     Run.of(D1, data_dir=landing.parent), body="labour", system="payments", category="pensioners", landing_path=landing)
    assert time.monotonic() - started < 10  # not the socket timeout (30 s), not the task's hour
    assert "page 1: the answer was still arriving after 2 s" in str(err.value) and "page_deadline" in str(err.value)
    assert is_permanent(err.value) and not landing.exists()
    assert m.source_service.stats["payments"]["ok"] == 1  # asked once: not retried


def test_18_a_redirect_from_the_receiver_or_the_webhook_reaches_nobody(world: World, tmp_path: Path) -> None:
    from osms.orchestration.alerts import AlertNotPosted, Webhook, send_alert

    data = _copy(world.data, tmp_path)
    result = _build(data, D1, world.private_key)
    _Trap.hits = []
    with _server(_Trap) as trap, _server(_Redirector) as redirector:
        _Redirector.to = trap
        with pytest.raises(DeliveryError) as err:
            deliver_package(result.path, ReceiverEndpoint(redirector, RECEIVER_TOKEN, timeout=5, max_retries=2,
                                                          backoff_base=0.01), data_dir=data)
        with pytest.raises(AlertNotPosted, match="HTTP 307"):
            send_alert(Webhook(conn_id="osms_alert_webhook", url=f"{redirector}/hooks/osms", token="hook-token"),
                       {"message": "x"}, attempts=2, backoff=0.01)
    assert err.value.status == 307 and "not followed" in str(err.value) and is_permanent(err.value)
    assert _Trap.hits == []  # no package file, no manifest, no token, no alert went to the Location host
    assert read_receipt(result.path) is None


def test_19_an_iin_a_task_logs_comes_out_masked_in_its_log(tmp_path: Path) -> None:
    """A task of a real DAG run (``airflow dags test``, as ``osms run`` runs them) logs an IIN on purpose."""
    iin = "791028302728"
    dag_file = tmp_path / "dags" / "osms_log_probe.py"
    dag_file.parent.mkdir()
    dag_file.write_text(textwrap.dedent(f"""
        import logging
        import pendulum
        from airflow.sdk import DAG, task

        @task
        def probe():
            log = logging.getLogger("osms.probe")
            log.warning("deliberately logged IIN %s", "{iin}")
            try:
                raise ValueError("a library quoting {iin}")
            except ValueError:
                log.exception("a caught error")
            print("printed IIN {iin}")

        with DAG("osms_log_probe", schedule=None, start_date=pendulum.datetime(2025, 1, 1)):
            probe()
    """))
    env = airflow_env(tmp_path / "data", {"AIRFLOW__CORE__DAGS_FOLDER": str(dag_file.parent)})
    migrate(env)
    airflow = str(Path(sys.executable).with_name("airflow"))
    out = subprocess.run([airflow, "dags", "test", "-f", str(dag_file), "osms_log_probe", "2025-06-01"], env=env,
                         capture_output=True, text=True, timeout=600)
    text = out.stdout + out.stderr
    assert out.returncode == 0 and "deliberately logged IIN" in text and "a caught error" in text, text[-3000:]
    lines = [line for line in text.splitlines() if "IIN" in line or "quoting" in line or "caught" in line]
    assert not [line for line in lines if iin in line and "printed IIN" not in line], lines
    assert "deliberately logged IIN ************" in text and "a library quoting ************" in text
