"""Delivery client logic without a network: receipts, predecessor, local checks, retry policy, messages.

HTTP is answered by ``FakeReceiver``, a requests transport adapter that behaves like the Delivery API by
default and can be scripted per route (statuses, Retry-After, connection errors). The real mock receiver
over HTTP is exercised in ``tests/integration/test_deliver_http.py``.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict

from osms.core.documents import PACKAGE_SCHEMA
from osms.package.deliver import (
    DeliveryError,
    DeliveryWaiting,
    Receipt,
    ReceiverEndpoint,
    deliver_package,
    find_predecessor,
    read_receipt,
)

pytestmark = pytest.mark.unit

TOKEN = "secret-receiver-token-4711"
BASE_URL = "http://receiver.test"
# Stands in for personal data inside a file: it must never reach a message or a log line.
CONTENT_MARKER = b"IIN-791028302728"


# --------------------------------------------------------------------------
# Building packages (shared with the integration tests)
# --------------------------------------------------------------------------


def default_files(date: str) -> dict[str, bytes]:
    """Small stand-ins for the package's files (the client never reads them as Parquet)."""
    return {
        "records.parquet": b"PAR1 records of " + date.encode() + b" " + CONTENT_MARKER,
        "changes.parquet": b"PAR1 changes of " + date.encode(),
        "quality.json": json.dumps({"date": date, "ok": True}).encode(),
    }


def build_package(
    data_dir: Path,
    date: str,
    key: Ed25519PrivateKey,
    *,
    previous: str | None = None,
    files: dict[str, bytes] | None = None,
    package_id: str | None = None,
    folder: str | None = None,
) -> Path:
    """``data_dir/packages/<date>/`` with the files, canonical manifest.json and its Ed25519 manifest.sig."""
    directory = data_dir / "packages" / (folder or date)
    directory.mkdir(parents=True)
    files = files if files is not None else default_files(date)
    for name, data in files.items():
        (directory / name).write_bytes(data)
    manifest = {
        "schema": PACKAGE_SCHEMA,
        "package_id": package_id or f"OSMS-{date}",
        "logical_date": date,
        "edition": {"code": "2022", "provisional": False,
                    "decree": {"number": "660", "date": "2021-06-01", "title": "a decree for tests"}},
        "previous_manifest_sha256": previous,
        "files": [
            {"name": n, "sha256": hashlib.sha256(d).hexdigest(), "bytes": len(d), "rows": 1}
            for n, d in sorted(files.items())
        ],
        "categories": {},
        "producer": {"name": "osms-pipeline", "version": "test"},
    }
    manifest_bytes = json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    (directory / "manifest.json").write_bytes(manifest_bytes)
    (directory / "manifest.sig").write_bytes(key.sign(manifest_bytes))
    return directory


def manifest_sha(package_dir: Path) -> str:
    return hashlib.sha256((package_dir / "manifest.json").read_bytes()).hexdigest()


def receipt_for(package_dir: Path, **changes: Any) -> dict[str, Any]:
    manifest = json.loads((package_dir / "manifest.json").read_bytes())
    receipt = {
        "receipt_id": "RCPT-" + manifest_sha(package_dir)[:20].upper(),
        "package_id": manifest["package_id"],
        "manifest_sha256": manifest_sha(package_dir),
        "logical_date": manifest["logical_date"],
        "received_at": "2025-06-02T01:00:00.000Z",
        "files": len(manifest["files"]),
    }
    return receipt | changes


# --------------------------------------------------------------------------
# A scripted receiver behind a requests transport adapter
# --------------------------------------------------------------------------

Scripted = tuple[int, Any, dict[str, str]] | Exception


class FakeReceiver(BaseAdapter):
    """The Delivery API in memory; ``script[(method, last path part)]`` answers first, then the default."""

    def __init__(self) -> None:
        super().__init__()
        self.script: dict[tuple[str, str], list[Scripted]] = {}
        self.calls: list[tuple[str, str]] = []
        self.stored: dict[str, tuple[str, int]] = {}
        self.receipt: dict[str, Any] | None = None
        self.streamed: list[bool] = []
        self.headers: list[CaseInsensitiveDict] = []

    def on(self, method: str, last: str, *answers: Scripted) -> None:
        self.script.setdefault((method, last), []).extend(answers)

    def count(self, method: str, last: str | None = None) -> int:
        return sum(1 for m, p in self.calls if m == method and (last is None or p.rsplit("/", 1)[-1] == last))

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        path = urlparse(request.url).path
        self.calls.append((request.method, path))
        self.headers.append(CaseInsensitiveDict(request.headers))
        body = request.body
        if hasattr(body, "read"):
            self.streamed.append(True)
            body = body.read()
        elif request.method == "PUT":
            self.streamed.append(False)
        queue = self.script.get((request.method, path.rsplit("/", 1)[-1]))
        if queue:
            answer = queue.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return self._response(request, *answer)
        return self._default(request, path, body or b"")

    def _default(self, request: requests.PreparedRequest, path: str, body: bytes | str) -> requests.Response:
        parts = path.strip("/").split("/")  # v1 packages <id> [files <name> | commit]
        if request.method == "GET":
            if self.receipt is None and not self.stored:
                return self._response(request, 404, {"error": "not_found", "message": "unknown"}, {})
            files = [{"name": n, "sha256": s, "bytes": b} for n, (s, b) in sorted(self.stored.items())]
            state = "committed" if self.receipt else "uploading"
            return self._response(request, 200, {"package_id": parts[2], "state": state, "files": files,
                                                 "receipt": self.receipt}, {})
        if request.method == "PUT":
            data = body if isinstance(body, bytes) else body.encode()
            self.stored[parts[4]] = (hashlib.sha256(data).hexdigest(), len(data))
            return self._response(request, 201, {"name": parts[4]}, {})
        payload = json.loads(body)
        manifest = base64.b64decode(payload["manifest"])
        parsed = json.loads(manifest)
        if self.receipt is None:
            sha = hashlib.sha256(manifest).hexdigest()
            self.receipt = {"receipt_id": "RCPT-" + sha[:20].upper(), "package_id": parts[2],
                            "manifest_sha256": sha, "logical_date": parsed["logical_date"],
                            "received_at": "2025-06-02T01:00:00.000Z", "files": len(parsed["files"])}
        return self._response(request, 200, self.receipt, {})

    @staticmethod
    def _response(request: requests.PreparedRequest, status: int, body: Any, headers: dict[str, str]
                  ) -> requests.Response:
        response = requests.Response()
        response.status_code = status
        response.headers = CaseInsensitiveDict({"Content-Type": "application/json", **headers})
        response.raw = io.BytesIO(json.dumps(body).encode())
        response.url = request.url
        response.request = request
        return response

    def close(self) -> None:
        pass


class NoNetwork(BaseAdapter):
    """Fails the test on any request."""

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        raise AssertionError(f"unexpected request {request.method} {request.url}")

    def close(self) -> None:
        pass


def session_with(adapter: BaseAdapter) -> requests.Session:
    session = requests.Session()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def endpoint() -> ReceiverEndpoint:
    return ReceiverEndpoint(base_url=BASE_URL, token=TOKEN, timeout=5, max_retries=3, backoff_base=0.5,
                            backoff_max=4.0)


@pytest.fixture
def receiver() -> FakeReceiver:
    return FakeReceiver()


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def deliver(endpoint: ReceiverEndpoint, receiver: FakeReceiver, sleeps: list[float]) -> Callable[..., Any]:
    """deliver_package against the FakeReceiver, recording the backoff sleeps instead of sleeping."""

    def _deliver(package_dir: Path, **kwargs: Any) -> tuple[Receipt, bool]:
        kwargs.setdefault("session", session_with(receiver))
        return deliver_package(package_dir, kwargs.pop("endpoint", endpoint), sleep=sleeps.append, **kwargs)

    return _deliver


# --------------------------------------------------------------------------
# Exactly once
# --------------------------------------------------------------------------


def test_a_stored_receipt_for_this_manifest_returns_without_any_request(tmp_path: Path, key, endpoint) -> None:
    # arrange
    package = build_package(tmp_path, "2025-06-01", key)
    (package / "receipt.json").write_text(json.dumps(receipt_for(package)))
    # act
    receipt, new = deliver_package(package, endpoint, session=session_with(NoNetwork()))
    # assert
    assert new is False
    assert receipt.as_dict() == receipt_for(package)


def test_first_delivery_uploads_every_file_streamed_commits_and_writes_the_receipt(
    tmp_path: Path, key, deliver, receiver: FakeReceiver
) -> None:
    package = build_package(tmp_path, "2025-06-01", key)
    receipt, new = deliver(package)
    assert new is True
    assert receipt.manifest_sha256 == manifest_sha(package) and receipt.package_id == "OSMS-2025-06-01"
    assert json.loads((package / "receipt.json").read_text()) == receipt.as_dict() == receiver.receipt
    assert read_receipt(package) == receipt
    assert receiver.count("PUT") == 3 and receiver.count("POST", "commit") == 1
    assert receiver.streamed == [True, True, True]  # file objects, not bytes read into memory
    manifest = json.loads((package / "manifest.json").read_bytes())
    sent = {h["X-Content-SHA256"] for h in receiver.headers if "X-Content-SHA256" in h}
    assert sent == {f["sha256"] for f in manifest["files"]}
    assert all(h["Authorization"] == f"Bearer {TOKEN}" for h in receiver.headers)
    assert not list(package.glob(".receipt.json*"))  # no temp file left by the atomic write


def test_a_receipt_for_another_manifest_is_not_trusted(tmp_path: Path, key, deliver, receiver) -> None:
    package = build_package(tmp_path, "2025-06-01", key)
    (package / "receipt.json").write_text(json.dumps(receipt_for(package, manifest_sha256="0" * 64)))
    receipt, new = deliver(package)
    assert new is True and receipt.manifest_sha256 == manifest_sha(package)
    assert receiver.count("POST") == 1


def test_an_unreadable_receipt_is_redone(tmp_path: Path, key, deliver, receiver) -> None:
    package = build_package(tmp_path, "2025-06-01", key)
    (package / "receipt.json").write_text("{not json")
    _, new = deliver(package)
    assert new is True and read_receipt(package) is not None


def test_committed_on_the_receiver_but_no_local_receipt_stores_it_without_uploading(
    tmp_path: Path, key, deliver, receiver: FakeReceiver
) -> None:
    # arrange: a crash came between the commit and writing receipt.json
    package = build_package(tmp_path, "2025-06-01", key)
    receiver.receipt = receipt_for(package)
    # act
    receipt, new = deliver(package)
    # assert
    assert new is False
    assert receipt.as_dict() == receiver.receipt == json.loads((package / "receipt.json").read_text())
    assert receiver.count("PUT") == 0 and receiver.count("POST") == 0


def test_files_the_receiver_already_stored_are_not_sent_again(tmp_path: Path, key, deliver, receiver) -> None:
    package = build_package(tmp_path, "2025-06-01", key)
    data = (package / "records.parquet").read_bytes()
    receiver.stored["records.parquet"] = (hashlib.sha256(data).hexdigest(), len(data))
    receiver.stored["quality.json"] = ("0" * 64, 3)  # a different earlier version: sent again
    deliver(package)
    assert receiver.count("PUT", "records.parquet") == 0
    assert receiver.count("PUT", "quality.json") == 1 and receiver.count("PUT", "changes.parquet") == 1


# --------------------------------------------------------------------------
# Never out of order
# --------------------------------------------------------------------------


def test_a_package_whose_predecessor_has_no_receipt_waits(tmp_path: Path, key, endpoint) -> None:
    # arrange
    first = build_package(tmp_path, "2025-06-01", key)
    second = build_package(tmp_path, "2025-06-02", key, previous=manifest_sha(first))
    # act
    with pytest.raises(DeliveryWaiting) as caught:
        deliver_package(second, endpoint, session=session_with(NoNetwork()))
    # assert
    message = str(caught.value)
    assert message == (f"package OSMS-2025-06-02 waits: its predecessor (packages/2025-06-01, manifest sha256"
                       f" {manifest_sha(first)}) has no receipt yet")
    assert isinstance(caught.value, DeliveryError) and caught.value.step == "check predecessor"
    assert not (second / "receipt.json").exists()


def test_a_predecessor_receipt_for_another_manifest_does_not_count(tmp_path: Path, key, endpoint) -> None:
    first = build_package(tmp_path, "2025-06-01", key)
    (first / "receipt.json").write_text(json.dumps(receipt_for(first, manifest_sha256="1" * 64)))
    second = build_package(tmp_path, "2025-06-02", key, previous=manifest_sha(first))
    with pytest.raises(DeliveryWaiting, match="has no receipt yet"):
        deliver_package(second, endpoint, session=session_with(NoNetwork()))


def test_a_predecessor_that_is_not_on_disk_waits_and_says_so(tmp_path: Path, key, endpoint) -> None:
    second = build_package(tmp_path, "2025-06-02", key, previous="ab" * 32)
    with pytest.raises(DeliveryWaiting) as caught:
        deliver_package(second, endpoint, session=session_with(NoNetwork()))
    assert "ab" * 32 in str(caught.value) and "is not among the packages under" in str(caught.value)


def test_a_delivered_predecessor_lets_the_package_go(tmp_path: Path, key, deliver, receiver) -> None:
    first = build_package(tmp_path, "2025-06-01", key)
    (first / "receipt.json").write_text(json.dumps(receipt_for(first)))
    second = build_package(tmp_path, "2025-06-02", key, previous=manifest_sha(first))
    receipt, new = deliver(second)
    assert new is True and receipt.package_id == "OSMS-2025-06-02"


def test_the_predecessor_is_looked_up_under_the_given_data_dir(tmp_path: Path, key, deliver) -> None:
    # the package lives elsewhere; its predecessor under data_dir
    first = build_package(tmp_path / "data", "2025-06-01", key)
    (first / "receipt.json").write_text(json.dumps(receipt_for(first)))
    second = build_package(tmp_path / "elsewhere", "2025-06-02", key, previous=manifest_sha(first))
    assert find_predecessor(tmp_path / "data", manifest_sha(first)) == first
    assert deliver(second, data_dir=tmp_path / "data")[1] is True


def test_the_receivers_out_of_order_answer_is_a_wait(tmp_path: Path, key, deliver, receiver) -> None:
    package = build_package(tmp_path, "2025-06-01", key)
    message = "package 'OSMS-2025-06-01' is out of order: previous_manifest_sha256 must be abc (the last ...)"
    receiver.on("POST", "commit", (409, {"error": "out_of_order", "message": message}, {}))
    with pytest.raises(DeliveryWaiting) as caught:
        deliver(package)
    assert str(caught.value).startswith("package OSMS-2025-06-01 waits: the receiver says")
    assert "HTTP 409 out_of_order" in str(caught.value) and message in str(caught.value)
    assert receiver.count("POST") == 1 and not (package / "receipt.json").exists()


# --------------------------------------------------------------------------
# Local checks before anything is sent
# --------------------------------------------------------------------------


def test_a_file_changed_on_disk_is_refused_before_any_request(tmp_path: Path, key, endpoint) -> None:
    # arrange
    package = build_package(tmp_path, "2025-06-01", key)
    original = (package / "records.parquet").read_bytes()
    tampered = original.replace(b"records", b"RECORDS")
    (package / "records.parquet").write_bytes(tampered)
    # act
    with pytest.raises(DeliveryError) as caught:
        deliver_package(package, endpoint, session=session_with(NoNetwork()))
    # assert
    message = str(caught.value)
    assert message.startswith("package OSMS-2025-06-01: check records.parquet failed: ")
    assert hashlib.sha256(original).hexdigest() in message and hashlib.sha256(tampered).hexdigest() in message
    assert "nothing was uploaded" in message
    assert CONTENT_MARKER.decode() not in message
    assert not isinstance(caught.value, DeliveryWaiting)


def test_a_file_of_another_size_is_refused(tmp_path: Path, key, endpoint) -> None:
    package = build_package(tmp_path, "2025-06-01", key)
    with open(package / "quality.json", "ab") as fh:
        fh.write(b" ")
    with pytest.raises(DeliveryError, match=r"check quality\.json failed: .* on disk: \d+ bytes"):
        deliver_package(package, endpoint, session=session_with(NoNetwork()))


def test_a_missing_file_is_refused(tmp_path: Path, key, endpoint) -> None:
    package = build_package(tmp_path, "2025-06-01", key)
    (package / "changes.parquet").unlink()
    with pytest.raises(DeliveryError, match=r"check changes\.parquet failed: .*cannot be read"):
        deliver_package(package, endpoint, session=session_with(NoNetwork()))


def test_a_missing_or_malformed_signature_is_refused(tmp_path: Path, key, endpoint) -> None:
    package = build_package(tmp_path, "2025-06-01", key)
    (package / "manifest.sig").write_bytes(b"short")
    with pytest.raises(DeliveryError, match="check signature failed: .* holds 5 bytes"):
        deliver_package(package, endpoint, session=session_with(NoNetwork()))
    (package / "manifest.sig").unlink()
    with pytest.raises(DeliveryError, match="check signature failed"):
        deliver_package(package, endpoint, session=session_with(NoNetwork()))


@pytest.mark.parametrize("name", ["../outside.parquet", "sub/records.parquet", ".."])
def test_a_manifest_naming_a_path_outside_the_package_is_refused(tmp_path: Path, key, endpoint, name) -> None:
    package = build_package(tmp_path, "2025-06-01", key)
    manifest = json.loads((package / "manifest.json").read_bytes())
    manifest["files"][0]["name"] = name
    (package / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DeliveryError, match=r"read manifest failed: files\[0\] needs a plain file 'name'"):
        deliver_package(package, endpoint, session=session_with(NoNetwork()))


@pytest.mark.parametrize(("field", "value", "named"), [
    ("sha256", "not-a-hash", r"files\.0\.sha256"),
    ("bytes", "many", r"files\.0\.bytes"),
])
def test_a_manifest_outside_its_contract_is_refused_naming_the_field(tmp_path: Path, key, endpoint, field, value,
                                                                     named) -> None:
    package = build_package(tmp_path, "2025-06-01", key)
    manifest = json.loads((package / "manifest.json").read_bytes())
    manifest["files"][0][field] = value
    (package / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DeliveryError, match=rf"package 2025-06-01: read manifest failed: .*manifest\.json does not"
                                            rf" fit the manifest's contract \({named}"):
        deliver_package(package, endpoint, session=session_with(NoNetwork()))


def test_a_package_without_a_manifest_is_refused_naming_the_folder(tmp_path: Path, endpoint) -> None:
    (tmp_path / "packages" / "2025-06-01").mkdir(parents=True)
    with pytest.raises(DeliveryError, match="package 2025-06-01: read manifest failed: .*manifest.json"):
        deliver_package(tmp_path / "packages" / "2025-06-01", endpoint)


# --------------------------------------------------------------------------
# Retries and messages
# --------------------------------------------------------------------------


def test_503_with_retry_after_is_retried_after_the_capped_wait(
    tmp_path: Path, key, deliver, receiver, sleeps: list[float]
) -> None:
    # arrange
    package = build_package(tmp_path, "2025-06-01", key)
    busy = (503, {"error": "unavailable", "message": "retry later"}, {"Retry-After": "2"})
    long = (503, {"error": "unavailable", "message": "retry much later"}, {"Retry-After": "3600"})
    receiver.on("POST", "commit", busy, long)
    # act
    receipt, new = deliver(package)
    # assert: Retry-After honoured, an hour capped at backoff_max (4 s)
    assert new is True and receipt.manifest_sha256 == manifest_sha(package)
    assert sleeps == [2.0, 4.0]
    assert receiver.count("POST") == 3


def test_5xx_429_and_connection_errors_back_off_exponentially(tmp_path: Path, key, deliver, receiver, sleeps):
    package = build_package(tmp_path, "2025-06-01", key)
    receiver.on("PUT", "records.parquet",
                (500, {"error": "internal_error", "message": "boom"}, {}),
                requests.ConnectionError("refused"),
                (429, {"error": "rate_limited", "message": "slow down"}, {}))
    deliver(package)
    assert sleeps == [0.5, 1.0, 2.0]  # base 0.5, doubling; no Retry-After given
    assert receiver.count("PUT", "records.parquet") == 4


def test_a_timeout_is_retried(tmp_path: Path, key, deliver, receiver, sleeps) -> None:
    package = build_package(tmp_path, "2025-06-01", key)
    receiver.on("GET", "OSMS-2025-06-01", requests.ReadTimeout("slow"))
    assert deliver(package)[1] is True
    assert sleeps == [0.5]


def test_retries_run_out_with_an_error_naming_the_step_and_last_cause(
    tmp_path: Path, key, deliver, receiver, sleeps
) -> None:
    package = build_package(tmp_path, "2025-06-01", key)
    receiver.on("POST", "commit", *[(503, {"error": "unavailable", "message": "down for maintenance"}, {})] * 4)
    with pytest.raises(DeliveryError) as caught:
        deliver(package)
    assert str(caught.value) == ("package OSMS-2025-06-01: commit failed after 4 attempts:"
                                 " HTTP 503 unavailable: down for maintenance")
    assert (caught.value.status, caught.value.code, caught.value.attempts) == (503, "unavailable", 4)
    assert receiver.count("POST") == 4 and len(sleeps) == 3
    assert not (package / "receipt.json").exists()


def test_a_connection_that_never_comes_names_the_receiver_not_the_token(tmp_path, key, deliver, receiver):
    package = build_package(tmp_path, "2025-06-01", key)
    receiver.on("GET", "OSMS-2025-06-01", *[requests.ConnectionError(f"refused {TOKEN}")] * 4)
    with pytest.raises(DeliveryError) as caught:
        deliver(package)
    assert str(caught.value) == ("package OSMS-2025-06-01: look up failed after 4 attempts:"
                                 f" connection to {BASE_URL} failed (ConnectionError)")


def test_a_4xx_is_not_retried_and_quotes_the_receivers_code_and_message(
    tmp_path: Path, key, deliver, receiver, sleeps
) -> None:
    package = build_package(tmp_path, "2025-06-01", key)
    message = "file 'changes.parquet' of package 'OSMS-2025-06-01': X-Content-SHA256 says a but ... hash to b"
    receiver.on("PUT", "changes.parquet", (422, {"error": "checksum_mismatch", "message": message}, {}))
    with pytest.raises(DeliveryError) as caught:
        deliver(package)
    assert str(caught.value) == ("package OSMS-2025-06-01: upload changes.parquet failed:"
                                 f" HTTP 422 checksum_mismatch: {message}")
    assert sleeps == [] and receiver.count("PUT", "changes.parquet") == 1 and receiver.count("POST") == 0


def test_an_unauthorized_answer_never_shows_the_token(tmp_path: Path, key, deliver, receiver, caplog) -> None:
    package = build_package(tmp_path, "2025-06-01", key)
    receiver.on("GET", "OSMS-2025-06-01", (401, {"error": "unauthorized", "message": "token not known"}, {}))
    with caplog.at_level(logging.DEBUG, logger="osms.package.deliver"), pytest.raises(DeliveryError) as caught:
        deliver(package)
    assert str(caught.value) == "package OSMS-2025-06-01: look up failed: HTTP 401 unauthorized: token not known"
    assert TOKEN not in str(caught.value) and TOKEN not in caplog.text


def test_a_non_json_error_body_still_gives_the_status(tmp_path: Path, key, deliver, receiver) -> None:
    package = build_package(tmp_path, "2025-06-01", key)
    receiver.on("POST", "commit", (400, "<html>bad</html>", {}))
    with pytest.raises(DeliveryError, match=r"^package OSMS-2025-06-01: commit failed: HTTP 400$"):
        deliver(package)


@pytest.mark.parametrize(("step", "answer"), [
    ("commit", (409, {"error": "conflict", "message": "already committed with manifest sha256 ffff"}, {})),
    ("upload", (409, {"error": "already_committed", "message": "file cannot be added or replaced"}, {})),
])
def test_a_conflict_says_a_different_package_with_this_id_was_delivered(
    tmp_path: Path, key, deliver, receiver, step, answer
) -> None:
    package = build_package(tmp_path, "2025-06-01", key)
    receiver.on("POST", "commit", answer) if step == "commit" else receiver.on("PUT", "changes.parquet", answer)
    with pytest.raises(DeliveryError) as caught:
        deliver(package)
    assert not isinstance(caught.value, DeliveryWaiting)
    message = str(caught.value)
    assert "a different package with this id was already delivered" in message
    assert answer[1]["message"] in message and manifest_sha(package) in message


def test_a_receiver_holding_another_manifest_under_the_id_is_a_conflict_before_uploading(
    tmp_path: Path, key, deliver, receiver
) -> None:
    package = build_package(tmp_path, "2025-06-01", key)
    receiver.receipt = receipt_for(package, manifest_sha256="f" * 64, receipt_id="RCPT-OTHER")
    with pytest.raises(DeliveryError) as caught:
        deliver(package)
    assert str(caught.value).startswith("package OSMS-2025-06-01: look up failed: a different package with this"
                                        " id was already delivered (the receiver holds receipt RCPT-OTHER")
    assert receiver.count("PUT") == 0 and not (package / "receipt.json").exists()


def test_a_receipt_for_another_manifest_from_the_commit_is_refused(tmp_path: Path, key, deliver, receiver):
    package = build_package(tmp_path, "2025-06-01", key)
    receiver.on("POST", "commit", (200, receipt_for(package, manifest_sha256="e" * 64), {}))
    with pytest.raises(DeliveryError, match="commit failed: the receiver answered receipt .* not for this"):
        deliver(package)
    assert not (package / "receipt.json").exists()


def test_logs_name_package_step_bytes_and_retries_never_content_or_token(
    tmp_path: Path, key, deliver, receiver, caplog
) -> None:
    package = build_package(tmp_path, "2025-06-01", key)
    receiver.on("PUT", "records.parquet", (503, {"error": "unavailable", "message": "later"}, {}))
    size = (package / "records.parquet").stat().st_size
    with caplog.at_level(logging.INFO, logger="osms.package.deliver"):
        deliver(package)
    text = caplog.text
    assert f"package OSMS-2025-06-01: upload records.parquet: {size} bytes in" in text
    assert "1 retries" in text and "retrying in 0.50 s (attempt 2 of 4)" in text
    assert "package OSMS-2025-06-01 delivered: receipt RCPT-" in text
    assert TOKEN not in text and CONTENT_MARKER.decode() not in text


def test_the_endpoint_repr_hides_the_token() -> None:
    endpoint = ReceiverEndpoint(base_url=BASE_URL, token=TOKEN)
    assert TOKEN not in repr(endpoint)
    assert (endpoint.timeout, endpoint.max_retries, endpoint.backoff_base, endpoint.backoff_max) == (120, 6, 0.5, 30)


def test_errors_survive_pickling_with_their_fields() -> None:
    error = DeliveryWaiting("OSMS-2025-06-02", "commit", "the receiver says wait", status=409, code="out_of_order")
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is DeliveryWaiting and str(again) == str(error) == "package OSMS-2025-06-02 waits: the" \
        " receiver says wait"
    assert (again.step, again.status, again.code) == ("commit", 409, "out_of_order")


def test_receipt_as_dict_round_trips() -> None:
    data = {"receipt_id": "RCPT-1", "package_id": "P", "manifest_sha256": "a" * 64, "logical_date": None,
            "received_at": "2025-06-02T01:00:00.000Z", "files": 4}
    assert Receipt.from_dict(data).as_dict() == data
    with pytest.raises(ValueError, match="'receipt_id'"):
        Receipt.from_dict({k: v for k, v in data.items() if k != "receipt_id"})
    with pytest.raises(ValueError, match="wrong types"):
        Receipt.from_dict(data | {"files": "4"})


def test_a_file_that_vanishes_after_the_check_fails_the_upload_clearly(tmp_path: Path, key, deliver, receiver):
    package = build_package(tmp_path, "2025-06-01", key)
    # the GET answers; then the file is gone before its upload
    receiver.on("GET", "OSMS-2025-06-01", (404, {"error": "not_found", "message": "unknown"}, {}))
    original = receiver.send

    def send(request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        response = original(request, **kwargs)
        if request.method == "GET":
            (package / "records.parquet").unlink()
        return response

    receiver.send = send  # type: ignore[method-assign]
    with pytest.raises(DeliveryError, match=r"upload records\.parquet failed: .*records\.parquet cannot be read"):
        deliver(package)
