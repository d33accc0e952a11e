"""The mock State Corporation receiver over real HTTP (uvicorn on 127.0.0.1): streaming, tampering, races."""

from __future__ import annotations

import base64
import hashlib
import json
import random
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mocks.runner import RunningServer, serving
from mocks.state_corp import StateCorpConfig, create_app, generate_keypair, sign

pytestmark = pytest.mark.integration

TOKEN = "delivery-token"
ADMIN = "admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BIG_BYTES = 20 * 1024 * 1024
CHUNK = 256 * 1024


@pytest.fixture(scope="module")
def keys() -> tuple[bytes, bytes]:
    return generate_keypair()


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def server(state_dir: Path, keys: tuple[bytes, bytes]) -> Iterator[RunningServer]:
    config = StateCorpConfig(state_dir=state_dir, token=TOKEN, admin_token=ADMIN, public_key=keys[1])
    with serving(create_app(config), name="state_corp") as running:
        yield running


def big_file_chunks(seed: int = 660) -> Iterator[bytes]:
    """20 MB of deterministic bytes, produced chunk by chunk so neither side holds the whole file."""
    rng = random.Random(seed)
    for _ in range(BIG_BYTES // CHUNK):
        yield rng.randbytes(CHUNK)


def big_file_sha256() -> str:
    digest = hashlib.sha256()
    for chunk in big_file_chunks():
        digest.update(chunk)
    return digest.hexdigest()


def commit_body(manifest: bytes, private_pem: bytes) -> dict[str, str]:
    return {
        "manifest": base64.b64encode(manifest).decode(),
        "signature": base64.b64encode(sign(private_pem, manifest)).decode(),
    }


def test_streamed_20mb_upload_and_commit(server: RunningServer, state_dir: Path, keys: tuple[bytes, bytes]) -> None:
    # arrange
    digest = big_file_sha256()
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as client:
        # act
        uploaded = client.put(
            "/v1/packages/PKG-2025-06-01/files/records.parquet",
            content=big_file_chunks(),
            headers={"X-Content-SHA256": digest},
        )
        manifest = json.dumps(
            {
                "package_id": "PKG-2025-06-01",
                "logical_date": "2025-06-01",
                "previous_manifest_sha256": None,
                "files": [{"name": "records.parquet", "sha256": digest, "bytes": BIG_BYTES}],
            }
        ).encode()
        committed = client.post("/v1/packages/PKG-2025-06-01/commit", json=commit_body(manifest, keys[0]))
        # assert
        assert uploaded.status_code == 201, uploaded.text
        assert uploaded.json() == {
            "package_id": "PKG-2025-06-01", "name": "records.parquet", "sha256": digest, "bytes": BIG_BYTES}
        assert committed.status_code == 200, committed.text
        receipt = committed.json()
        assert receipt["receipt_id"] == "RCPT-" + hashlib.sha256(manifest).hexdigest()[:20].upper()
        assert receipt["logical_date"] == "2025-06-01" and receipt["files"] == 1
        assert client.get("/v1/packages").json()["packages"][0]["receipt_id"] == receipt["receipt_id"]
    stored = state_dir / "packages" / "PKG-2025-06-01" / "files" / "records.parquet"
    assert stored.stat().st_size == BIG_BYTES


def test_tampered_file_is_refused_over_http(server: RunningServer, state_dir: Path) -> None:
    # arrange: the header claims the genuine file, the body is altered in one chunk
    digest = big_file_sha256()

    def tampered() -> Iterator[bytes]:
        for index, chunk in enumerate(big_file_chunks()):
            yield (b"X" + chunk[1:]) if index == 40 else chunk

    with httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as client:
        # act
        response = client.put(
            "/v1/packages/PKG-2025-06-01/files/records.parquet",
            content=tampered(),
            headers={"X-Content-SHA256": digest},
        )
        # assert
        assert response.status_code == 422
        assert response.json()["error"] == "checksum_mismatch"
        assert "records.parquet" in response.json()["message"]
        assert client.get("/v1/packages/PKG-2025-06-01").status_code == 404
    assert not (state_dir / "packages" / "PKG-2025-06-01" / "files" / "records.parquet").exists()
    assert list((state_dir / "tmp").iterdir()) == []


def test_concurrent_commits_of_one_package_give_one_delivery(
    server: RunningServer, state_dir: Path, keys: tuple[bytes, bytes]
) -> None:
    # arrange: a delay holds both commits in flight at once
    data = b'{"categories": 16}'
    digest = hashlib.sha256(data).hexdigest()
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as client:
        assert client.put(
            "/v1/packages/P1/files/quality.json", content=data, headers={"X-Content-SHA256": digest}
        ).status_code == 201
        faults = client.put(
            "/_admin/faults", json={"delay_commit_seconds": 0.3}, headers={"Authorization": f"Bearer {ADMIN}"}
        )
        assert faults.status_code == 200
    manifest = json.dumps(
        {"package_id": "P1", "previous_manifest_sha256": None, "files": [{"name": "quality.json", "sha256": digest,
                                                                          "bytes": len(data)}]}
    ).encode()
    body = commit_body(manifest, keys[0])
    barrier = threading.Barrier(4)
    responses: list[httpx.Response] = []
    lock = threading.Lock()

    def commit_once() -> None:
        with httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as own:
            barrier.wait()
            response = own.post("/v1/packages/P1/commit", json=body)
        with lock:
            responses.append(response)

    # act
    threads = [threading.Thread(target=commit_once) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    # assert
    assert [r.status_code for r in responses] == [200, 200, 200, 200]
    assert len({json.dumps(r.json(), sort_keys=True) for r in responses}) == 1
    ledger = (state_dir / "ledger.jsonl").read_text().splitlines()
    assert len(ledger) == 1 and json.loads(ledger[0])["receipt"] == responses[0].json()
