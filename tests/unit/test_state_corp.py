"""The mock State Corporation receiver: uploads, signed commits, receipts, chain, faults, restart."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from mocks.state_corp import StateCorpConfig, create_app, generate_keypair, sign

pytestmark = pytest.mark.unit

TOKEN = "delivery-token"
ADMIN = "admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN}"}

Keys = tuple[bytes, bytes]  # (private PEM, public PEM)


@pytest.fixture(scope="module")
def keys() -> Keys:
    return generate_keypair()


@pytest.fixture
def config(tmp_path: Path, keys: Keys) -> StateCorpConfig:
    return StateCorpConfig(state_dir=tmp_path / "state", token=TOKEN, admin_token=ADMIN, public_key=keys[1])


@pytest.fixture
def client(config: StateCorpConfig) -> Iterator[TestClient]:
    with TestClient(create_app(config)) as c:
        yield c


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def upload(client: TestClient, package_id: str, name: str, data: bytes, claimed: str | None = None) -> Any:
    headers = {**AUTH, "X-Content-SHA256": claimed or sha(data)}
    return client.put(f"/v1/packages/{package_id}/files/{name}", content=data, headers=headers)


def manifest_for(package_id: str, files: dict[str, bytes], previous: str | None = None, **extra: Any) -> bytes:
    entries = [{"name": n, "sha256": sha(d), "bytes": len(d), "rows": 1} for n, d in sorted(files.items())]
    body = {"package_id": package_id, "logical_date": package_id[-10:], "files": entries}
    body["previous_manifest_sha256"] = previous
    body.update(extra)
    return json.dumps(body, sort_keys=True).encode()


def commit(
    client: TestClient, package_id: str, manifest: bytes, private_pem: bytes, signature: bytes | None = None
) -> Any:
    sig = signature if signature is not None else sign(private_pem, manifest)
    payload = {"manifest": base64.b64encode(manifest).decode(), "signature": base64.b64encode(sig).decode()}
    return client.post(f"/v1/packages/{package_id}/commit", json=payload, headers=AUTH)


def deliver(client: TestClient, keys: Keys, package_id: str, previous: str | None = None) -> tuple[Any, bytes]:
    files = {"records.parquet": b"records of " + package_id.encode(), "quality.json": b'{"ok": true}'}
    for name, data in files.items():
        assert upload(client, package_id, name, data).status_code == 201
    manifest = manifest_for(package_id, files, previous)
    return commit(client, package_id, manifest, keys[0]), manifest


def ledger_lines(config: StateCorpConfig) -> list[dict[str, Any]]:
    path = config.state_dir / "ledger.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_good_package_is_accepted_with_a_receipt(client: TestClient, keys: Keys, config: StateCorpConfig) -> None:
    # arrange / act
    response, manifest = deliver(client, keys, "PKG-2025-06-01")
    # assert
    assert response.status_code == 200, response.text
    receipt = response.json()
    assert receipt["receipt_id"] == "RCPT-" + sha(manifest)[:20].upper()
    assert receipt["package_id"] == "PKG-2025-06-01"
    assert receipt["manifest_sha256"] == sha(manifest)
    assert receipt["logical_date"] == "2025-06-01"
    assert receipt["files"] == 2
    assert receipt["received_at"].endswith("Z")
    package_dir = config.state_dir / "packages" / "PKG-2025-06-01"
    assert (package_dir / "manifest.json").read_bytes() == manifest
    assert json.loads((package_dir / "receipt.json").read_text()) == receipt
    state = client.get("/v1/packages/PKG-2025-06-01", headers=AUTH).json()
    assert state["state"] == "committed" and state["receipt"] == receipt
    assert [f["name"] for f in state["files"]] == ["quality.json", "records.parquet"]
    listed = client.get("/v1/packages", headers=AUTH).json()["packages"]
    assert listed == [
        {k: receipt[k] for k in ("package_id", "logical_date", "receipt_id", "received_at")}
    ]


def test_upload_answers_201_then_200_for_the_same_bytes_and_replaces_before_commit(client: TestClient) -> None:
    first = upload(client, "P1", "a.bin", b"one")
    again = upload(client, "P1", "a.bin", b"one")
    replaced = upload(client, "P1", "a.bin", b"two")
    assert (first.status_code, again.status_code, replaced.status_code) == (201, 200, 201)
    assert first.json() == {"package_id": "P1", "name": "a.bin", "sha256": sha(b"one"), "bytes": 3}
    files = client.get("/v1/packages/P1", headers=AUTH).json()["files"]
    assert files == [{"name": "a.bin", "sha256": sha(b"two"), "bytes": 3}]


def test_tampered_upload_is_refused_and_nothing_kept(client: TestClient, config: StateCorpConfig) -> None:
    response = upload(client, "P1", "records.parquet", b"tampered bytes", claimed=sha(b"original bytes"))
    assert response.status_code == 422
    assert response.json()["error"] == "checksum_mismatch"
    assert "records.parquet" in response.json()["message"]
    assert not (config.state_dir / "packages" / "P1" / "files" / "records.parquet").exists()
    assert list((config.state_dir / "tmp").iterdir()) == []


def test_upload_without_checksum_header_is_refused(client: TestClient) -> None:
    response = client.put("/v1/packages/P1/files/a.bin", content=b"x", headers=AUTH)
    assert response.status_code == 422
    assert response.json()["error"] == "missing_checksum"


def test_manifest_sha_differing_from_upload_is_refused_naming_the_file(client: TestClient, keys: Keys) -> None:
    upload(client, "P1", "records.parquet", b"what was uploaded")
    manifest = manifest_for("P1", {"records.parquet": b"what the manifest claims"})
    response = commit(client, "P1", manifest, keys[0])
    assert response.status_code == 422
    assert response.json()["error"] == "checksum_mismatch"
    assert "records.parquet" in response.json()["message"]
    assert client.get("/v1/packages/P1", headers=AUTH).json()["state"] == "uploading"


def test_manifest_listing_a_file_never_uploaded_is_refused(client: TestClient, keys: Keys) -> None:
    upload(client, "P1", "records.parquet", b"r")
    manifest = manifest_for("P1", {"records.parquet": b"r", "changes.parquet": b"c"})
    response = commit(client, "P1", manifest, keys[0])
    assert response.status_code == 422
    assert response.json()["error"] == "file_missing"
    assert "changes.parquet" in response.json()["message"]


def test_manifest_for_another_package_id_is_refused(client: TestClient, keys: Keys) -> None:
    upload(client, "P1", "a", b"a")
    response = commit(client, "P1", manifest_for("P2", {"a": b"a"}), keys[0])
    assert response.status_code == 422
    assert response.json()["error"] == "package_id_mismatch"


def test_bad_signature_is_refused(client: TestClient, keys: Keys) -> None:
    upload(client, "P1", "a", b"a")
    manifest = manifest_for("P1", {"a": b"a"})
    other_private, _ = generate_keypair()
    by_other_key = commit(client, "P1", manifest, other_private)
    over_other_bytes = commit(client, "P1", manifest, keys[0], signature=sign(keys[0], manifest + b" "))
    for response in (by_other_key, over_other_bytes):
        assert response.status_code == 422
        assert response.json()["error"] == "bad_signature"
    assert commit(client, "P1", manifest, keys[0]).status_code == 200


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}, ADMIN_AUTH]
)
def test_missing_or_wrong_token_is_401(client: TestClient, headers: dict[str, str]) -> None:
    for response in (
        client.get("/v1/packages", headers=headers),
        client.put("/v1/packages/P1/files/a", content=b"a", headers={**headers, "X-Content-SHA256": sha(b"a")}),
        client.post("/v1/packages/P1/commit", json={}, headers=headers),
    ):
        assert response.status_code == 401
        assert response.json()["error"] == "unauthorized"
    assert client.get("/health").json() == {"status": "ok"}


def test_repeated_commit_returns_the_same_receipt_and_one_ledger_entry(
    client: TestClient, keys: Keys, config: StateCorpConfig
) -> None:
    first, manifest = deliver(client, keys, "P1")
    second = commit(client, "P1", manifest, keys[0])
    assert second.status_code == 200
    assert second.json() == first.json()
    assert [entry["receipt"]["package_id"] for entry in ledger_lines(config)] == ["P1"]
    # a retried upload of an unchanged file after commit is still idempotent
    assert upload(client, "P1", "quality.json", b'{"ok": true}').status_code == 200


def test_different_manifest_under_a_committed_id_is_409(client: TestClient, keys: Keys) -> None:
    deliver(client, keys, "P1")
    other = manifest_for("P1", {"quality.json": b'{"ok": true}'})
    response = commit(client, "P1", other, keys[0])
    assert response.status_code == 409
    assert response.json()["error"] == "conflict"
    changed_upload = upload(client, "P1", "quality.json", b"changed")
    assert changed_upload.status_code == 409
    assert changed_upload.json()["error"] == "already_committed"


def test_chain_out_of_order_is_409_and_the_right_chain_is_accepted(client: TestClient, keys: Keys) -> None:
    first, first_manifest = deliver(client, keys, "PKG-2025-06-01")
    assert first.status_code == 200
    wrong, _ = deliver(client, keys, "PKG-2025-06-02", previous=None)
    assert wrong.status_code == 409
    body = wrong.json()
    assert body["error"] == "out_of_order"
    assert sha(first_manifest) in body["message"] and "null" in body["message"]
    files = {"records.parquet": b"records of PKG-2025-06-02", "quality.json": b'{"ok": true}'}
    right = commit(client, "PKG-2025-06-02", manifest_for("PKG-2025-06-02", files, sha(first_manifest)), keys[0])
    assert right.status_code == 200, right.text
    listed = [p["package_id"] for p in client.get("/v1/packages", headers=AUTH).json()["packages"]]
    assert listed == ["PKG-2025-06-01", "PKG-2025-06-02"]


def test_chain_not_enforced_when_configured_off(config: StateCorpConfig, keys: Keys) -> None:
    config.enforce_chain = False
    with TestClient(create_app(config)) as client:
        assert deliver(client, keys, "P1", previous="ab" * 32)[0].status_code == 200
        assert deliver(client, keys, "P2", previous=None)[0].status_code == 200


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("/v1/packages/P1/files/..%2Fx", "bad_name"),
        ("/v1/packages/P1/files/..%2F..%2Fledger.jsonl", "bad_name"),
        ("/v1/packages/P1/files/sub%2Fx", "bad_name"),
        ("/v1/packages/P1/files/sub/x", "bad_name"),
        ("/v1/packages/P1/files/a..b", "bad_name"),
        ("/v1/packages/P1/files/bad%20name", "bad_name"),
        ("/v1/packages/..%2Fx/files/a", "bad_package_id"),
        ("/v1/packages/..%2F..%2Fx/files/a", "bad_package_id"),
        ("/v1/packages/bad%20id/files/a", "bad_package_id"),
        ("/v1/packages/" + "x" * 101 + "/files/a", "bad_package_id"),
        ("/v1/packages/../files/a", None),  # the client itself normalises the dot segment away
    ],
)
def test_bad_names_are_refused(client: TestClient, config: StateCorpConfig, path: str, code: str | None) -> None:
    response = client.put(path, content=b"x", headers={**AUTH, "X-Content-SHA256": sha(b"x")})
    assert response.status_code in ((422,) if code else (404, 405, 422))
    if code:
        assert response.json()["error"] == code
    written = sorted(p.relative_to(config.state_dir).as_posix() for p in config.state_dir.rglob("*") if p.is_file())
    assert [p for p in written if p != "audit.jsonl"] == []


def test_restart_keeps_receipts_and_the_chain(config: StateCorpConfig, keys: Keys) -> None:
    with TestClient(create_app(config)) as client:
        first, manifest = deliver(client, keys, "PKG-2025-06-01")
        upload(client, "PKG-2025-06-02", "records.parquet", b"half-way")
    with TestClient(create_app(config)) as restarted:
        again = commit(restarted, "PKG-2025-06-01", manifest, keys[0])
        assert again.status_code == 200
        assert again.json() == first.json()
        assert restarted.get("/v1/packages/PKG-2025-06-01", headers=AUTH).json()["receipt"] == first.json()
        assert restarted.get("/v1/packages/PKG-2025-06-02", headers=AUTH).json()["state"] == "uploading"
        out_of_order = commit(restarted, "PKG-2025-06-02",
                              manifest_for("PKG-2025-06-02", {"records.parquet": b"half-way"}), keys[0])
        assert out_of_order.json()["error"] == "out_of_order"
        chained = commit(restarted, "PKG-2025-06-02",
                         manifest_for("PKG-2025-06-02", {"records.parquet": b"half-way"}, sha(manifest)), keys[0])
        assert chained.status_code == 200
    assert [e["receipt"]["package_id"] for e in ledger_lines(config)] == ["PKG-2025-06-01", "PKG-2025-06-02"]


def test_torn_last_ledger_line_is_dropped_on_restart(config: StateCorpConfig, keys: Keys) -> None:
    with TestClient(create_app(config)) as client:
        first, _ = deliver(client, keys, "P1")
    with open(config.state_dir / "ledger.jsonl", "ab") as f:
        f.write(b'{"seq": 2, "rec')
    with TestClient(create_app(config)) as restarted:
        listed = restarted.get("/v1/packages", headers=AUTH).json()["packages"]
    assert [p["receipt_id"] for p in listed] == [first.json()["receipt_id"]]
    assert (config.state_dir / "ledger.jsonl").read_bytes().endswith(b"\n")


def test_fail_next_commits_gives_503_with_retry_after_then_success(client: TestClient, keys: Keys) -> None:
    # arrange
    set_faults = client.put("/_admin/faults", json={"fail_next_commits": 2, "fail_next_uploads": 1}, headers=ADMIN_AUTH)
    assert set_faults.status_code == 200
    assert client.get("/_admin/faults", headers=ADMIN_AUTH).json() == {
        "fail_next_commits": 2, "fail_next_uploads": 1, "delay_commit_seconds": 0.0,
        "delay_commit_answer_seconds": 0.0}
    # act
    failed_upload = upload(client, "P1", "quality.json", b'{"ok": true}')
    manifest = manifest_for("P1", {"quality.json": b'{"ok": true}'})
    upload(client, "P1", "quality.json", b'{"ok": true}')
    attempts = [commit(client, "P1", manifest, keys[0]) for _ in range(3)]
    # assert
    assert failed_upload.status_code == 503 and failed_upload.headers["Retry-After"] == "1"
    assert [r.status_code for r in attempts] == [503, 503, 200]
    assert attempts[0].headers["Retry-After"] == "1"
    assert attempts[0].json()["error"] == "unavailable"
    assert client.get("/_admin/faults", headers=ADMIN_AUTH).json()["fail_next_commits"] == 0


def test_admin_faults_need_the_admin_token_and_valid_values(client: TestClient) -> None:
    assert client.put("/_admin/faults", json={"fail_next_commits": 1}, headers=AUTH).status_code == 401
    assert client.get("/_admin/faults").status_code == 401
    bad = client.put("/_admin/faults", json={"fail_next_commits": -1}, headers=ADMIN_AUTH)
    assert bad.status_code == 422 and bad.json()["error"] == "bad_request"
    assert client.put("/_admin/faults", json={"nonsense": 1}, headers=ADMIN_AUTH).status_code == 422


def test_unknown_package_is_404_and_malformed_commit_is_422(client: TestClient) -> None:
    missing = client.get("/v1/packages/NOPE", headers=AUTH)
    assert missing.status_code == 404 and "NOPE" in missing.json()["message"]
    malformed = client.post("/v1/packages/P1/commit", content=b"not json", headers=AUTH)
    assert malformed.status_code == 422 and malformed.json()["error"] == "bad_request"


def test_audit_log_records_requests_without_contents(
    client: TestClient, keys: Keys, config: StateCorpConfig
) -> None:
    deliver(client, keys, "P1")
    client.get("/v1/packages", headers={"Authorization": "Bearer wrong"})
    lines = [json.loads(line) for line in (config.state_dir / "audit.jsonl").read_text().splitlines()]
    assert {"time", "method", "path", "status", "package_id"} <= set(lines[0])
    assert [(e["method"], e["status"], e["package_id"]) for e in lines] == [
        ("PUT", 201, "P1"), ("PUT", 201, "P1"), ("POST", 200, "P1"), ("GET", 401, None)]
    assert lines[2]["outcome"] == "committed" and lines[3]["outcome"] == "unauthorized"
    assert b"records of" not in (config.state_dir / "audit.jsonl").read_bytes()


def test_public_key_accepted_as_raw_bytes_object_or_pem_path(tmp_path: Path, keys: Keys) -> None:
    from cryptography.hazmat.primitives import serialization

    public = serialization.load_pem_public_key(keys[1])
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    pem_path = tmp_path / "pub.pem"
    pem_path.write_bytes(keys[1])
    for index, key in enumerate((public, raw, pem_path, str(pem_path))):
        config = StateCorpConfig(state_dir=tmp_path / f"s{index}", token=TOKEN, admin_token=ADMIN, public_key=key)
        with TestClient(create_app(config)) as client:
            assert deliver(client, keys, "P1")[0].status_code == 200
