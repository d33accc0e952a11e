"""Delivery against the mock State Corporation receiver over real HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mocks.runner import RunningServer, serving
from mocks.state_corp import Faults, StateCorpConfig, create_app
from osms.package.deliver import DeliveryError, DeliveryWaiting, ReceiverEndpoint, deliver_package, endpoint_from_connection
from tests.unit.test_deliver import build_package, default_files, manifest_sha

pytestmark = pytest.mark.integration

TOKEN = "receiver-token-for-tests"
ADMIN = "admin-token-for-tests"


@dataclass
class Receiver:
    server: RunningServer
    config: StateCorpConfig

    def ledger(self) -> list[dict[str, Any]]:
        path = self.config.state_dir / "ledger.jsonl"
        return [json.loads(line)["receipt"] for line in path.read_text().splitlines()] if path.exists() else []

    def get(self, path: str) -> requests.Response:
        return requests.get(f"{self.server.url}{path}", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)

    def set_faults(self, **faults: Any) -> None:
        response = requests.put(f"{self.server.url}/_admin/faults", json=faults,
                                headers={"Authorization": f"Bearer {ADMIN}"}, timeout=5)
        response.raise_for_status()


class CountingSession(requests.Session):
    """A session that counts the requests it sends, by method."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[str, str]] = []

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        self.sent.append((method, url))
        return super().request(method, url, *args, **kwargs)

    def count(self, method: str) -> int:
        return sum(1 for m, _ in self.sent if m == method)


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def receiver(tmp_path: Path, key: Ed25519PrivateKey) -> Iterator[Receiver]:
    config = StateCorpConfig(state_dir=tmp_path / "state_corp", token=TOKEN, admin_token=ADMIN,
                             public_key=key.public_key(), faults=Faults())
    with serving(create_app(config), name="state-corp") as server:
        yield Receiver(server, config)


@pytest.fixture
def endpoint(receiver: Receiver) -> ReceiverEndpoint:
    # Tiny backoff: the mock's Retry-After (1 s) is capped at backoff_max, so retries take milliseconds.
    return ReceiverEndpoint(base_url=receiver.server.url, token=TOKEN, timeout=10, max_retries=3,
                            backoff_base=0.01, backoff_max=0.05)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def test_a_package_is_delivered_and_its_receipt_matches_the_ledger(
    data_dir: Path, key, receiver: Receiver, endpoint: ReceiverEndpoint
) -> None:
    # arrange
    package = build_package(data_dir, "2025-06-01", key)
    # act
    receipt, new = deliver_package(package, endpoint)
    # assert
    assert new is True
    assert receiver.ledger() == [receipt.as_dict()]
    assert json.loads((package / "receipt.json").read_text()) == receipt.as_dict()
    assert receipt.manifest_sha256 == manifest_sha(package) and receipt.files == 3
    state = receiver.get("/v1/packages/OSMS-2025-06-01").json()
    assert state["state"] == "committed" and state["receipt"] == receipt.as_dict()
    stored = receiver.config.state_dir / "packages" / "OSMS-2025-06-01" / "files"
    for name, data in default_files("2025-06-01").items():
        assert (stored / name).read_bytes() == data


def test_delivering_again_returns_the_same_receipt_without_any_request(
    data_dir: Path, key, receiver: Receiver, endpoint: ReceiverEndpoint
) -> None:
    package = build_package(data_dir, "2025-06-01", key)
    first, _ = deliver_package(package, endpoint)
    session = CountingSession()
    again, new = deliver_package(package, endpoint, session=session)
    assert (again, new) == (first, False)
    assert session.sent == []
    assert len(receiver.ledger()) == 1


def test_commits_refused_twice_are_retried_until_delivered(
    data_dir: Path, key, receiver: Receiver, endpoint: ReceiverEndpoint, caplog
) -> None:
    # arrange
    package = build_package(data_dir, "2025-06-01", key)
    receiver.set_faults(fail_next_commits=2)
    session = CountingSession()
    # act
    with caplog.at_level(logging.WARNING, logger="osms.package.deliver"):
        receipt, new = deliver_package(package, endpoint, session=session)
    # assert
    assert new is True and receiver.ledger() == [receipt.as_dict()]
    assert session.count("POST") == 3
    assert caplog.text.count("commit: HTTP 503 unavailable") == 2 and TOKEN not in caplog.text


def test_uploads_refused_twice_are_retried_until_delivered(
    data_dir: Path, key, receiver: Receiver, endpoint: ReceiverEndpoint
) -> None:
    package = build_package(data_dir, "2025-06-01", key)
    receiver.set_faults(fail_next_uploads=2)
    session = CountingSession()
    receipt, _ = deliver_package(package, endpoint, session=session)
    assert receiver.ledger() == [receipt.as_dict()]
    assert session.count("PUT") == 5  # three files, two refused once each (or one twice)


def test_a_crash_between_commit_and_receipt_heals_with_the_same_receipt(
    data_dir: Path, key, receiver: Receiver, endpoint: ReceiverEndpoint
) -> None:
    # arrange: delivered, then receipt.json lost as if the task died before writing it
    package = build_package(data_dir, "2025-06-01", key)
    first, _ = deliver_package(package, endpoint)
    (package / "receipt.json").unlink()
    session = CountingSession()
    # act
    again, new = deliver_package(package, endpoint, session=session)
    # assert
    assert again == first and new is False
    assert json.loads((package / "receipt.json").read_text()) == first.as_dict()
    assert session.count("PUT") == 0 and session.count("POST") == 0
    assert len(receiver.ledger()) == 1


def test_a_delivery_that_failed_at_the_commit_resumes_without_uploading_again(
    data_dir: Path, key, receiver: Receiver, endpoint: ReceiverEndpoint
) -> None:
    # arrange: every commit attempt of the first run is refused
    package = build_package(data_dir, "2025-06-01", key)
    receiver.set_faults(fail_next_commits=endpoint.max_retries + 1)
    with pytest.raises(DeliveryError, match=r"commit failed after 4 attempts: HTTP 503 unavailable"):
        deliver_package(package, endpoint)
    assert receiver.ledger() == [] and not (package / "receipt.json").exists()
    # act
    session = CountingSession()
    receipt, new = deliver_package(package, endpoint, session=session)
    # assert
    assert new is True and receiver.ledger() == [receipt.as_dict()]
    assert session.count("PUT") == 0 and session.count("POST") == 1


def test_a_package_is_never_delivered_before_its_predecessor(
    data_dir: Path, key, receiver: Receiver, endpoint: ReceiverEndpoint
) -> None:
    # arrange
    first = build_package(data_dir, "2025-06-01", key)
    second = build_package(data_dir, "2025-06-02", key, previous=manifest_sha(first))
    # act / assert: D+1 waits, nothing reaches the receiver
    with pytest.raises(DeliveryWaiting, match=r"^package OSMS-2025-06-02 waits: its predecessor \(packages/"
                                              r"2025-06-01, manifest sha256 [0-9a-f]{64}\) has no receipt yet$"):
        deliver_package(second, endpoint)
    assert receiver.ledger() == [] and receiver.get("/v1/packages/OSMS-2025-06-02").status_code == 404
    # then D, then D+1: delivered in order
    r1, _ = deliver_package(first, endpoint)
    r2, new = deliver_package(second, endpoint)
    assert new is True and receiver.ledger() == [r1.as_dict(), r2.as_dict()]


def test_the_receivers_out_of_order_refusal_is_a_wait(
    data_dir: Path, key, receiver: Receiver, endpoint: ReceiverEndpoint
) -> None:
    # arrange: the predecessor carries a receipt.json the receiver never issued (restored from elsewhere)
    first = build_package(data_dir, "2025-06-01", key)
    forged = {"receipt_id": "RCPT-X", "package_id": "OSMS-2025-06-01", "manifest_sha256": manifest_sha(first),
              "logical_date": "2025-06-01", "received_at": "2025-06-02T00:00:00.000Z", "files": 3}
    (first / "receipt.json").write_text(json.dumps(forged))
    second = build_package(data_dir, "2025-06-02", key, previous=manifest_sha(first))
    # act
    with pytest.raises(DeliveryWaiting) as caught:
        deliver_package(second, endpoint)
    # assert
    assert str(caught.value).startswith("package OSMS-2025-06-02 waits: the receiver says its predecessor is not"
                                        " delivered yet (HTTP 409 out_of_order: package 'OSMS-2025-06-02' is out"
                                        " of order")
    assert caught.value.step == "commit"
    assert receiver.ledger() == [] and not (second / "receipt.json").exists()


def test_a_tampered_file_is_refused_before_upload(
    data_dir: Path, key, receiver: Receiver, endpoint: ReceiverEndpoint
) -> None:
    package = build_package(data_dir, "2025-06-01", key)
    (package / "records.parquet").write_bytes(b"PAR1 someone else's records")
    session = CountingSession()
    with pytest.raises(DeliveryError, match=r"^package OSMS-2025-06-01: check records.parquet failed: .* does not"
                                            r" match the manifest"):
        deliver_package(package, endpoint, session=session)
    assert session.sent == []
    assert receiver.ledger() == [] and receiver.get("/v1/packages/OSMS-2025-06-01").status_code == 404


def test_a_different_manifest_under_a_delivered_id_is_a_conflict(
    tmp_path: Path, key, receiver: Receiver, endpoint: ReceiverEndpoint
) -> None:
    # arrange: OSMS-2025-06-01 delivered; then rebuilt with other content under the same id
    delivered = build_package(tmp_path / "data", "2025-06-01", key)
    first, _ = deliver_package(delivered, endpoint)
    files = default_files("2025-06-01") | {"quality.json": b'{"rebuilt": true}'}
    rebuilt = build_package(tmp_path / "rebuilt", "2025-06-01", key, files=files)
    session = CountingSession()
    # act
    with pytest.raises(DeliveryError) as caught:
        deliver_package(rebuilt, endpoint, session=session)
    # assert
    message = str(caught.value)
    assert message.startswith("package OSMS-2025-06-01: look up failed: a different package with this id was"
                              f" already delivered (the receiver holds receipt {first.receipt_id}")
    assert manifest_sha(rebuilt) in message and not isinstance(caught.value, DeliveryWaiting)
    assert session.count("PUT") == 0 and receiver.ledger() == [first.as_dict()]
    assert not (rebuilt / "receipt.json").exists()


def test_a_wrong_token_is_refused_at_once_without_the_token_in_the_message(
    data_dir: Path, key, receiver: Receiver, endpoint: ReceiverEndpoint
) -> None:
    package = build_package(data_dir, "2025-06-01", key)
    wrong = ReceiverEndpoint(base_url=endpoint.base_url, token="not-the-token", max_retries=3,
                             backoff_base=0.01, backoff_max=0.05)
    with pytest.raises(DeliveryError) as caught:
        deliver_package(package, wrong)
    assert str(caught.value).startswith("package OSMS-2025-06-01: look up failed: HTTP 401 unauthorized: ")
    assert "not-the-token" not in str(caught.value) and caught.value.attempts == 1


def test_an_unreachable_receiver_fails_after_the_retries(data_dir: Path, key) -> None:
    package = build_package(data_dir, "2025-06-01", key)
    with socket.socket() as sock:  # a free loopback port, closed again: nothing listens there
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    endpoint = ReceiverEndpoint(base_url=url, token=TOKEN, timeout=2, max_retries=2, backoff_base=0.01,
                                backoff_max=0.05)
    with pytest.raises(DeliveryError, match=rf"look up failed after 3 attempts: connection to {url} failed"):
        deliver_package(package, endpoint)


def test_the_endpoint_comes_from_the_airflow_connection(
    data_dir: Path, key, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # arrange
    conn = {"conn_type": "http", "host": "127.0.0.1", "port": receiver.server.port, "schema": "http",
            "password": TOKEN, "extra": {"timeout": 10, "max_retries": 2, "backoff_base": 0.01, "backoff_max": 0.05}}
    monkeypatch.setenv("AIRFLOW_CONN_OSMS_STATE_CORP", json.dumps(conn))
    # act
    endpoint = endpoint_from_connection()
    # assert
    assert endpoint.base_url == receiver.server.url and endpoint.token == TOKEN
    assert (endpoint.timeout, endpoint.max_retries, endpoint.backoff_base, endpoint.backoff_max) == (10, 2, 0.01, 0.05)
    assert TOKEN not in repr(endpoint)
    receipt, new = deliver_package(build_package(data_dir, "2025-06-01", key), endpoint)
    assert new is True and receiver.ledger() == [receipt.as_dict()]


def test_a_connection_without_a_token_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_OSMS_STATE_CORP", json.dumps({"conn_type": "http", "host": "127.0.0.1"}))
    with pytest.raises(ValueError, match="'osms_state_corp' has no password"):
        endpoint_from_connection("osms_state_corp")
