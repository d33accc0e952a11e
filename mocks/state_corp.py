"""The State Corporation's receiving endpoint (mock): streamed file uploads, signed manifest commit, receipts.

Implements the Delivery API of ``docs/design.md``: each file of a package is uploaded with its
SHA-256, then the signed manifest is committed; the receiver checks every file against the manifest, the
Ed25519 signature and (optionally) the manifest chain, and answers with a deterministic receipt. A package
is delivered exactly once: re-committing the same manifest returns the stored receipt.

On disk, under ``state_dir``::

    ledger.jsonl                     committed packages in commit order (append-only, fsync'd): the commit point
    audit.jsonl                      one line per request: time, method, path, status, package_id, outcome
    tmp/                             uploads in flight (cleared at start-up)
    packages/<package_id>/
        files/<name>                 the uploaded files
        uploads.json                 name -> {sha256, bytes} of the stored files
        manifest.json manifest.sig receipt.json   (once committed)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

PACKAGE_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,100}$")
# 255: the longest file name common filesystems accept.
FILE_NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,255}$")
SHA256_RE = re.compile(r"^[0-9a-fA-F]{64}$")
SHA256_HEADER = "X-Content-SHA256"
# Uploads are written in 1 MiB batches from a worker thread: memory stays bounded for a 1 GB file and the
# event loop is not blocked by disk writes.
WRITE_BATCH = 1 << 20
# A manifest is kilobytes; 16 MiB refuses an abusive commit body long before it costs memory.
MAX_COMMIT_BODY = 16 << 20
RETRY_AFTER_SECONDS = 1

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


# --- configuration ----------------------------------------------------------------------------------------


@dataclass
class Faults:
    """Injected failures for rehearsing the delivery client's retries."""

    fail_next_commits: int = 0
    fail_next_uploads: int = 0
    delay_commit_seconds: float = 0.0
    # the commit is made, then its answer is held this long: a sender that gave up never learns of it
    delay_commit_answer_seconds: float = 0.0


@dataclass
class StateCorpConfig:
    """How the mock receiver is set up: where it keeps state, its tokens and the sender's public key."""

    state_dir: Path
    token: str
    admin_token: str
    # An Ed25519PublicKey, raw 32 bytes, PEM bytes, or a path (str or Path) to a PEM file.
    public_key: Ed25519PublicKey | bytes | str | Path
    enforce_chain: bool = True
    faults: Faults = field(default_factory=Faults)


class ReceiverError(Exception):
    """A refusal answered as ``{"error": code, "message": message}`` with an HTTP status."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


# --- keys and signatures ----------------------------------------------------------------------------------


def generate_keypair() -> tuple[bytes, bytes]:
    """Create an Ed25519 key pair: (private key PKCS#8 PEM, public key SubjectPublicKeyInfo PEM)."""
    private = Ed25519PrivateKey.generate()
    private_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_pem, public_pem


def sign(private_key_pem: bytes, data: bytes) -> bytes:
    """Detached Ed25519 signature of ``data`` with a PEM private key (as the package builder signs)."""
    key = serialization.load_pem_private_key(private_key_pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("the signing key is not an Ed25519 private key")
    return key.sign(data)


def load_public_key(key: Ed25519PublicKey | bytes | str | Path) -> Ed25519PublicKey:
    """Turn the configured public key (object, raw 32 bytes, PEM bytes or a PEM file path) into a key object."""
    if isinstance(key, Ed25519PublicKey):
        return key
    if isinstance(key, bytes) and len(key) == 32:
        return Ed25519PublicKey.from_public_bytes(key)
    pem = key if isinstance(key, bytes) else Path(key).read_bytes()
    loaded = serialization.load_pem_public_key(pem)
    if not isinstance(loaded, Ed25519PublicKey):
        raise ValueError("the configured public key is not an Ed25519 public key")
    return loaded


# --- small helpers ----------------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _fsync_dir(path: Path) -> None:
    # Makes a rename durable; not every platform lets a directory be opened, hence best effort.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, ensure_ascii=False, indent=2, sort_keys=True) + "\n").encode()


def receipt_id_for(manifest_bytes: bytes) -> str:
    """The receipt id of a manifest: deterministic, so a repeated commit yields the same id."""
    return "RCPT-" + hashlib.sha256(manifest_bytes).hexdigest()[:20].upper()


def check_package_id(package_id: str) -> None:
    """Refuse a package id that is not 1-100 of ``[A-Za-z0-9._-]`` (or is a bare ``.``/``..``)."""
    if not PACKAGE_ID_RE.fullmatch(package_id) or package_id in (".", ".."):
        raise ReceiverError(
            422,
            "bad_package_id",
            f"package id {package_id!r} is not allowed: use 1-100 characters of A-Z a-z 0-9 . _ -",
        )


def check_file_name(package_id: str, name: str) -> None:
    """Refuse a file name that is not a plain name (no slashes, no ``..``)."""
    if not FILE_NAME_RE.fullmatch(name) or ".." in name or name == ".":
        raise ReceiverError(
            422,
            "bad_name",
            f"file name {name!r} in package {package_id!r} is not allowed: use a plain file name of"
            " A-Z a-z 0-9 . _ - without '..' or slashes",
        )


# --- storage and rules ------------------------------------------------------------------------------------


class Receiver:
    """The receiver's state on disk and its rules; thread-safe, shared by the request handlers."""

    def __init__(self, config: StateCorpConfig) -> None:
        self.config = config
        self.public_key = load_public_key(config.public_key)
        self.root = Path(config.state_dir)
        self.packages_dir = self.root / "packages"
        self.tmp_dir = self.root / "tmp"
        self.ledger_path = self.root / "ledger.jsonl"
        self.audit_path = self.root / "audit.jsonl"
        self.faults = Faults(**asdict(config.faults))
        # One lock for every state change (upload placement, commit): commits are rare and short, and one
        # lock makes "two simultaneous commits give one delivery" and the chain order obviously right.
        self._lock = threading.Lock()
        self._faults_lock = threading.Lock()
        self._audit_lock = threading.Lock()
        self._receipts: dict[str, dict[str, Any]] = {}
        self._order: list[str] = []
        self.packages_dir.mkdir(parents=True, exist_ok=True)
        # Leftovers of uploads interrupted by a crash: never referenced, safe to drop.
        shutil.rmtree(self.tmp_dir, ignore_errors=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self._load_ledger()

    # paths

    def package_dir(self, package_id: str) -> Path:
        """The directory of one package (its id is validated before it gets here)."""
        return self.packages_dir / package_id

    def _index_path(self, package_id: str) -> Path:
        return self.package_dir(package_id) / "uploads.json"

    def new_temp_path(self) -> Path:
        """A fresh temp file path on the same filesystem as the packages, so the final rename is atomic."""
        return self.tmp_dir / f"{uuid.uuid4().hex}.part"

    # ledger

    def _load_ledger(self) -> None:
        if not self.ledger_path.exists():
            return
        raw = self.ledger_path.read_bytes()
        if raw and not raw.endswith(b"\n"):
            # A crash mid-append leaves a torn last line; that commit never completed (no answer was sent),
            # so it is cut off rather than glued to the next append.
            keep = raw.rfind(b"\n") + 1
            log.warning("ledger %s: dropping a torn last line (%d bytes)", self.ledger_path, len(raw) - keep)
            with open(self.ledger_path, "r+b") as f:
                f.truncate(keep)
                os.fsync(f.fileno())
            raw = raw[:keep]
        for number, line in enumerate(raw.decode().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                receipt = json.loads(line)["receipt"]
                package_id = receipt["package_id"]
            except (ValueError, KeyError, TypeError) as exc:
                raise RuntimeError(f"ledger {self.ledger_path} line {number} is not a ledger entry: {exc}") from exc
            if package_id in self._receipts:
                continue
            self._receipts[package_id] = receipt
            self._order.append(package_id)
            # The ledger is the commit point; receipt.json is a copy that a crash may have left unwritten.
            receipt_path = self.package_dir(package_id) / "receipt.json"
            if not receipt_path.exists():
                receipt_path.parent.mkdir(parents=True, exist_ok=True)
                _atomic_write(receipt_path, _json_bytes(receipt))

    def _append_ledger(self, receipt: dict[str, Any]) -> None:
        entry = {"seq": len(self._order) + 1, "receipt": receipt}
        with open(self.ledger_path, "ab") as f:
            f.write(json.dumps(entry, ensure_ascii=False, sort_keys=True).encode() + b"\n")
            f.flush()
            os.fsync(f.fileno())

    def last_manifest_sha256(self) -> str | None:
        """The manifest hash of the most recently committed package, or None before the first."""
        with self._lock:
            return self._receipts[self._order[-1]]["manifest_sha256"] if self._order else None

    def packages(self) -> list[dict[str, Any]]:
        """Committed packages in commit order, as listed by ``GET /v1/packages``."""
        with self._lock:
            receipts = [self._receipts[p] for p in self._order]
        keys = ("package_id", "logical_date", "receipt_id", "received_at")
        return [{k: r.get(k) for k in keys} for r in receipts]

    def package(self, package_id: str) -> dict[str, Any] | None:
        """One package's state, files and receipt; None when nothing was ever uploaded or committed."""
        with self._lock:
            receipt = self._receipts.get(package_id)
            if receipt is None and not self.package_dir(package_id).is_dir():
                return None
            index = self._read_index(package_id)
        files = [{"name": n, "sha256": e["sha256"], "bytes": e["bytes"]} for n, e in sorted(index.items())]
        return {
            "package_id": package_id,
            "state": "committed" if receipt else "uploading",
            "files": files,
            "receipt": receipt,
        }

    # uploads

    def _read_index(self, package_id: str) -> dict[str, dict[str, Any]]:
        path = self._index_path(package_id)
        return json.loads(path.read_text()) if path.exists() else {}

    def committed_conflict(self, package_id: str, name: str, claimed_sha256: str) -> bool:
        """True when the package is committed and this upload could only change it (answer 409 at once)."""
        with self._lock:
            if package_id not in self._receipts:
                return False
            stored = self._read_index(package_id).get(name)
        return stored is None or stored["sha256"] != claimed_sha256

    def store_upload(self, package_id: str, name: str, tmp: Path, sha256: str, size: int) -> int:
        """Move a verified temp file into the package; 201 when stored, 200 when identical to the stored one."""
        with self._lock:
            index = self._read_index(package_id)
            stored = index.get(name)
            if stored is not None and stored["sha256"] == sha256 and stored["bytes"] == size:
                return 200
            if package_id in self._receipts:
                raise ReceiverError(
                    409,
                    "already_committed",
                    f"package {package_id!r} is already committed; file {name!r} cannot be added or replaced",
                )
            files_dir = self.package_dir(package_id) / "files"
            files_dir.mkdir(parents=True, exist_ok=True)
            # File first, index second: a crash in between leaves the index stale, which a commit then
            # refuses (checksum mismatch) instead of accepting a file the index does not describe.
            os.replace(tmp, files_dir / name)
            _fsync_dir(files_dir)
            index[name] = {"sha256": sha256, "bytes": size}
            _atomic_write(self._index_path(package_id), _json_bytes(index))
        log.info("package %s: stored file %s (%d bytes)", package_id, name, size)
        return 201

    # commit

    def commit(self, package_id: str, manifest_bytes: bytes, signature: bytes) -> tuple[dict[str, Any], bool]:
        """Verify and record a package's manifest; returns (receipt, True when it was already committed)."""
        manifest_sha256 = hashlib.sha256(manifest_bytes).hexdigest()
        with self._lock:
            stored = self._receipts.get(package_id)
            if stored is not None:
                if stored["manifest_sha256"] == manifest_sha256:
                    return stored, True
                raise ReceiverError(
                    409,
                    "conflict",
                    f"package {package_id!r} is already committed with manifest sha256"
                    f" {stored['manifest_sha256']} (receipt {stored['receipt_id']}); a different manifest"
                    f" (sha256 {manifest_sha256}) is refused",
                )
            manifest = self._parse_manifest(package_id, manifest_bytes)
            if manifest.get("package_id") != package_id:
                raise ReceiverError(
                    422,
                    "package_id_mismatch",
                    f"the manifest names package {manifest.get('package_id')!r} but was committed under"
                    f" {package_id!r}",
                )
            entries = self._manifest_files(package_id, manifest)
            self._check_files(package_id, entries)
            try:
                self.public_key.verify(signature, manifest_bytes)
            except InvalidSignature:
                raise ReceiverError(
                    422,
                    "bad_signature",
                    f"the signature of package {package_id!r}'s manifest does not verify with the configured"
                    " Ed25519 public key",
                ) from None
            if self.config.enforce_chain:
                self._check_chain(package_id, manifest)
            receipt = {
                "receipt_id": receipt_id_for(manifest_bytes),
                "package_id": package_id,
                "manifest_sha256": manifest_sha256,
                "logical_date": manifest.get("logical_date"),
                "files": len(entries),
                "received_at": _now(),
            }
            directory = self.package_dir(package_id)
            directory.mkdir(parents=True, exist_ok=True)
            _atomic_write(directory / "manifest.json", manifest_bytes)
            _atomic_write(directory / "manifest.sig", signature)
            self._append_ledger(receipt)  # the commit point: from here on the package is delivered
            self._receipts[package_id] = receipt
            self._order.append(package_id)
            _atomic_write(directory / "receipt.json", _json_bytes(receipt))
        log.info("package %s committed: receipt %s", package_id, receipt["receipt_id"])
        return receipt, False

    @staticmethod
    def _parse_manifest(package_id: str, manifest_bytes: bytes) -> dict[str, Any]:
        try:
            manifest = json.loads(manifest_bytes)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ReceiverError(
                422, "bad_manifest", f"the manifest of package {package_id!r} is not valid JSON: {exc}"
            ) from None
        if not isinstance(manifest, dict):
            raise ReceiverError(422, "bad_manifest", f"the manifest of package {package_id!r} is not a JSON object")
        return manifest

    @staticmethod
    def _manifest_files(package_id: str, manifest: dict[str, Any]) -> list[dict[str, Any]]:
        files = manifest.get("files")
        if not isinstance(files, list):
            raise ReceiverError(
                422, "bad_manifest", f"the manifest of package {package_id!r} has no 'files' list"
            )
        seen: set[str] = set()
        for position, entry in enumerate(files):
            ok = (
                isinstance(entry, dict)
                and isinstance(entry.get("name"), str)
                and isinstance(entry.get("sha256"), str)
                and SHA256_RE.fullmatch(entry["sha256"]) is not None
                and isinstance(entry.get("bytes"), int)
                and not isinstance(entry.get("bytes"), bool)
            )
            if not ok:
                raise ReceiverError(
                    422,
                    "bad_manifest",
                    f"the manifest of package {package_id!r}: files[{position}] needs 'name' (string),"
                    " 'sha256' (64 hex digits) and 'bytes' (integer)",
                )
            if entry["name"] in seen:
                raise ReceiverError(
                    422,
                    "bad_manifest",
                    f"the manifest of package {package_id!r} lists file {entry['name']!r} twice",
                )
            seen.add(entry["name"])
        return files

    def _check_files(self, package_id: str, entries: list[dict[str, Any]]) -> None:
        index = self._read_index(package_id)
        for entry in entries:
            name = entry["name"]
            stored = index.get(name)
            if stored is None:
                raise ReceiverError(
                    422,
                    "file_missing",
                    f"file {name!r} listed in the manifest of package {package_id!r} was not uploaded",
                )
            if stored["sha256"] != entry["sha256"].lower():
                raise ReceiverError(
                    422,
                    "checksum_mismatch",
                    f"file {name!r} of package {package_id!r}: the manifest says sha256 {entry['sha256'].lower()}"
                    f" but the uploaded file has {stored['sha256']}",
                )
            if stored["bytes"] != entry["bytes"]:
                raise ReceiverError(
                    422,
                    "checksum_mismatch",
                    f"file {name!r} of package {package_id!r}: the manifest says {entry['bytes']} bytes but the"
                    f" uploaded file has {stored['bytes']}",
                )

    def _check_chain(self, package_id: str, manifest: dict[str, Any]) -> None:
        expected = self._receipts[self._order[-1]]["manifest_sha256"] if self._order else None
        given = manifest.get("previous_manifest_sha256")
        if isinstance(given, str):
            given = given.lower()
        if given != expected:
            raise ReceiverError(
                409,
                "out_of_order",
                f"package {package_id!r} is out of order: previous_manifest_sha256 must be {expected or 'null'}"
                f" (the last committed manifest) but the manifest gives {given if given is not None else 'null'}",
            )

    # faults

    def take_fault(self, kind: str) -> bool:
        """Consume one injected failure of ``kind`` (``commits`` or ``uploads``); True when this call fails."""
        attribute = f"fail_next_{kind}"
        with self._faults_lock:
            left = getattr(self.faults, attribute)
            if left > 0:
                setattr(self.faults, attribute, left - 1)
                return True
            return False

    def set_faults(self, faults: Faults) -> Faults:
        """Replace the fault settings (what ``PUT /_admin/faults`` does)."""
        with self._faults_lock:
            self.faults = faults
            return Faults(**asdict(faults))

    def get_faults(self) -> Faults:
        """A copy of the current fault settings."""
        with self._faults_lock:
            return Faults(**asdict(self.faults))

    # audit

    def audit(self, entry: dict[str, Any]) -> None:
        """Append one request's outcome to the audit log (never file contents)."""
        line = json.dumps(entry, ensure_ascii=False, sort_keys=True) + "\n"
        with self._audit_lock, open(self.audit_path, "a", encoding="utf-8") as f:
            f.write(line)


# --- HTTP -------------------------------------------------------------------------------------------------

_PACKAGE_IN_PATH = re.compile(r"^/v1/packages/([^/]+)")


class AuditMiddleware:
    """Pure ASGI middleware (streams bodies untouched) that writes one audit line per HTTP request."""

    def __init__(self, app: ASGIApp, receiver: Receiver) -> None:
        self.app = app
        self.receiver = receiver

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        status = 500
        started = time.monotonic()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            path = scope.get("path", "")
            match = _PACKAGE_IN_PATH.match(path)
            self.receiver.audit(
                {
                    "time": _now(),
                    "method": scope.get("method"),
                    "path": path,
                    "status": status,
                    "package_id": match.group(1) if match else None,
                    "outcome": state.get("outcome"),
                    "ms": round((time.monotonic() - started) * 1000, 1),
                }
            )


class FaultsBody(BaseModel):
    """The body of ``PUT /_admin/faults``; omitted fields are reset to 0."""

    model_config = ConfigDict(extra="forbid")
    fail_next_commits: int = Field(0, ge=0)
    fail_next_uploads: int = Field(0, ge=0)
    delay_commit_seconds: float = Field(0.0, ge=0.0)
    delay_commit_answer_seconds: float = Field(0.0, ge=0.0)


def _error(
    request: Request, status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    request.state.outcome = code
    return JSONResponse({"error": code, "message": message}, status_code=status, headers=headers)


def _bearer_checker(expected: str, realm: str) -> Callable[[Request], None]:
    def check(request: Request) -> None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        # compare_digest: a mock, but the delivery client should meet a receiver that behaves like a real one.
        known = bool(token) and hmac.compare_digest(token.strip().encode(), expected.encode())
        if scheme.lower() != "bearer" or not known:
            raise ReceiverError(
                401,
                "unauthorized",
                f"{realm} needs 'Authorization: Bearer <token>' with a known token"
                + ("; none was given" if not header else "; the token given is not known"),
                headers={"WWW-Authenticate": "Bearer"},
            )

    return check


async def _receive_to_file(request: Request, path: Path) -> tuple[str, int]:
    """Stream the request body into ``path`` in bounded batches, hashing as it goes; returns (sha256, bytes)."""
    digest = hashlib.sha256()
    size = 0
    buffer = bytearray()
    f = await anyio.to_thread.run_sync(open, path, "wb")

    def flush(data: bytes) -> None:
        digest.update(data)
        f.write(data)

    try:
        async for chunk in request.stream():
            buffer += chunk
            size += len(chunk)
            if len(buffer) >= WRITE_BATCH:
                data, buffer = bytes(buffer), bytearray()
                await anyio.to_thread.run_sync(flush, data)
        if buffer:
            await anyio.to_thread.run_sync(flush, bytes(buffer))

        def finish() -> None:
            f.flush()
            os.fsync(f.fileno())

        await anyio.to_thread.run_sync(finish)
    finally:
        await anyio.to_thread.run_sync(f.close)
    return digest.hexdigest(), size


def create_app(config: StateCorpConfig) -> FastAPI:
    """Build the mock State Corporation receiver (Delivery API) over ``config.state_dir``."""
    receiver = Receiver(config)
    app = FastAPI(title="State Corporation receiver (mock)", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.receiver = receiver
    app.add_middleware(AuditMiddleware, receiver=receiver)
    require_token = _bearer_checker(config.token, "the Delivery API")
    require_admin = _bearer_checker(config.admin_token, "the admin API")

    @app.exception_handler(ReceiverError)
    async def _receiver_error(request: Request, exc: ReceiverError) -> JSONResponse:
        return _error(request, exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed"}
        code = codes.get(exc.status_code, "http_error")
        if exc.status_code == 404:
            message = f"there is no route {request.method} {request.url.path}"
        elif exc.status_code == 405:
            message = f"method {request.method} is not allowed on {request.url.path}"
        else:
            message = str(exc.detail)
        return _error(request, exc.status_code, code, message, dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return _error(request, 422, "bad_request", f"the request to {request.url.path} is invalid: {problems}")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return _error(request, 500, "internal_error", f"the receiver failed on {request.method} {request.url.path}")

    @app.get("/health")
    async def health() -> dict[str, str]:
        """Liveness probe (no auth)."""
        return {"status": "ok"}

    @app.put("/v1/packages/{package_id}/files/{name:path}", dependencies=[Depends(require_token)])
    async def upload_file(package_id: str, name: str, request: Request) -> JSONResponse:
        """Receive one file of a package, streamed to disk and checked against X-Content-SHA256."""
        if receiver.take_fault("uploads"):
            raise ReceiverError(
                503,
                "unavailable",
                f"upload of {name!r} to package {package_id!r} refused: injected fault, retry later",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        check_package_id(package_id)
        check_file_name(package_id, name)
        claimed = request.headers.get(SHA256_HEADER, "").strip()
        if not SHA256_RE.fullmatch(claimed):
            raise ReceiverError(
                422,
                "missing_checksum",
                f"upload of {name!r} to package {package_id!r} needs header {SHA256_HEADER}: 64 hex digits"
                + (" (none given)" if not claimed else " (not 64 hex digits)"),
            )
        claimed = claimed.lower()
        if await run_in_threadpool(receiver.committed_conflict, package_id, name, claimed):
            # Answered before reading the body: the package can no longer change, whatever the bytes are.
            raise ReceiverError(
                409,
                "already_committed",
                f"package {package_id!r} is already committed; file {name!r} cannot be added or replaced",
            )
        tmp = receiver.new_temp_path()
        try:
            sha256, size = await _receive_to_file(request, tmp)
            if sha256 != claimed:
                raise ReceiverError(
                    422,
                    "checksum_mismatch",
                    f"file {name!r} of package {package_id!r}: {SHA256_HEADER} says {claimed} but the"
                    f" received {size} bytes hash to {sha256}; nothing was kept",
                )
            status = await run_in_threadpool(receiver.store_upload, package_id, name, tmp, sha256, size)
        finally:
            tmp.unlink(missing_ok=True)
        request.state.outcome = "stored" if status == 201 else "unchanged"
        return JSONResponse(
            {"package_id": package_id, "name": name, "sha256": sha256, "bytes": size}, status_code=status
        )

    @app.post("/v1/packages/{package_id}/commit", dependencies=[Depends(require_token)])
    async def commit_package(package_id: str, request: Request) -> JSONResponse:
        """Verify the signed manifest against the uploaded files and answer with the receipt."""
        if receiver.take_fault("commits"):
            raise ReceiverError(
                503,
                "unavailable",
                f"commit of package {package_id!r} refused: injected fault, retry later",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        delay = receiver.get_faults().delay_commit_seconds
        if delay > 0:
            await anyio.sleep(delay)
        check_package_id(package_id)
        manifest_bytes, signature = await _read_commit_body(package_id, request)
        receipt, replay = await run_in_threadpool(receiver.commit, package_id, manifest_bytes, signature)
        request.state.outcome = "already_committed_same_manifest" if replay else "committed"
        held = receiver.get_faults().delay_commit_answer_seconds
        if held > 0:
            await anyio.sleep(held)
        return JSONResponse(receipt, status_code=200)

    @app.get("/v1/packages", dependencies=[Depends(require_token)])
    async def list_packages() -> dict[str, Any]:
        """Committed packages in commit order."""
        return {"packages": receiver.packages()}

    @app.get("/v1/packages/{package_id}", dependencies=[Depends(require_token)])
    async def get_package(package_id: str) -> dict[str, Any]:
        """One package: state, stored files and receipt."""
        check_package_id(package_id)
        found = await run_in_threadpool(receiver.package, package_id)
        if found is None:
            raise ReceiverError(404, "not_found", f"package {package_id!r} is unknown: nothing was uploaded for it")
        return found

    @app.api_route(
        "/v1/packages/{rest:path}",
        methods=["GET", "PUT", "POST", "DELETE", "PATCH"],
        dependencies=[Depends(require_token)],
    )
    async def bad_package_path(rest: str, request: Request) -> JSONResponse:
        """Name the bad package id when an id with a slash (e.g. ``..%2Fx``) kept a route from matching."""
        found = re.fullmatch(r"(.+)/(?:files/[^/]*|commit)", rest) if request.method in ("PUT", "POST") else None
        package_id = found.group(1) if found else rest
        if request.method in ("GET", "PUT", "POST"):
            check_package_id(package_id)
        raise ReceiverError(404, "not_found", f"there is no route {request.method} {request.url.path}")

    @app.get("/_admin/faults", dependencies=[Depends(require_admin)])
    async def get_faults() -> dict[str, Any]:
        """The current injected faults."""
        return asdict(receiver.get_faults())

    @app.put("/_admin/faults", dependencies=[Depends(require_admin)])
    async def put_faults(body: FaultsBody) -> dict[str, Any]:
        """Replace the injected faults (omitted fields become 0)."""
        return asdict(receiver.set_faults(Faults(**body.model_dump())))

    return app


async def _read_commit_body(package_id: str, request: Request) -> tuple[bytes, bytes]:
    """Read and decode ``{"manifest": b64, "signature": b64}``, refusing an oversized or malformed body."""
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_COMMIT_BODY:
            raise ReceiverError(
                413, "too_large", f"the commit body for package {package_id!r} exceeds {MAX_COMMIT_BODY} bytes"
            )
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if not isinstance(body, dict) or not all(isinstance(body.get(k), str) for k in ("manifest", "signature")):
        raise ReceiverError(
            422,
            "bad_request",
            f"the commit of package {package_id!r} needs a JSON body"
            ' {"manifest": "<base64>", "signature": "<base64>"}',
        )
    decoded = []
    for key in ("manifest", "signature"):
        try:
            decoded.append(base64.b64decode(body[key], validate=True))
        except (binascii.Error, ValueError):
            raise ReceiverError(
                422, "bad_request", f"the commit of package {package_id!r}: {key!r} is not valid base64"
            ) from None
    return decoded[0], decoded[1]
