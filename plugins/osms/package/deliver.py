"""The State Corporation client: deliver one built package exactly once, and keep its receipt beside it.

    GET  {base_url}/v1/packages/{id}                       what the receiver already holds
    PUT  {base_url}/v1/packages/{id}/files/{name}          each file, streamed, X-Content-SHA256
    POST {base_url}/v1/packages/{id}/commit                {"manifest": b64, "signature": b64} -> receipt
    Authorization: Bearer <the receiver's token>

Exactly once, and safe to retry at any step:

- a package with ``receipt.json`` whose ``manifest_sha256`` is the manifest's hash is delivered: it is
  returned as it is, without a network call;
- before uploading, the receiver is asked what it holds for the id. Committed with this manifest (a crash
  came between the commit and writing ``receipt.json``): its receipt is stored and returned, nothing is
  uploaded. Committed with another manifest: refused. Files already stored with the right hash (an
  interrupted earlier attempt) are not sent again;
- the commit itself is idempotent on the receiver (the same manifest gives the same receipt), so a commit
  whose answer was lost is simply repeated.

"Newly delivered" (the second value of :func:`deliver_package`) is True when the receiver did not hold the
package committed just before this call's commit. The receiver answers a repeated commit exactly like the
first one (same status, same receipt), so the check before the commit is what tells them apart; only a
second sender committing the same package in the moment between that check and our commit could make
two calls both report True, and both would still hold the one receipt.

Never out of order: a package whose manifest names a predecessor (``previous_manifest_sha256``) waits
(:class:`DeliveryWaiting`) until that predecessor, found by its manifest hash under ``data_dir/packages``,
has its own receipt; the receiver's ``409 out_of_order`` is reported the same way.

Requests go through the pipeline's one HTTP client (:mod:`osms.sources.http_client`) and its retry policy:
connection errors and timeouts, 5xx, 408 and 429 are retried with exponential backoff (a Retry-After
honoured up to ``backoff_max``); every other 4xx is not. Every failure is one
:class:`DeliveryError` naming the package, the step (``upload <file>``, ``commit``, ...) and the cause
(HTTP status, the receiver's error code and message), never the token or file content.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from osms.core import layout
from osms.core.documents import MANIFEST, RECEIPT, SIGNATURE, DocumentError, Manifest, ManifestFile, Receipt
from osms.core.files import write_bytes_atomic
from osms.sources.connections import HTTP_EXTRAS, HttpEndpoint
from osms.sources.http_client import Answer, HttpClient, Refused, Transient

__all__ = [
    "DeliveryError",
    "DeliveryWaiting",
    "Receipt",
    "ReceiverEndpoint",
    "deliver_package",
    "endpoint_from_connection",
    "find_predecessor",
    "read_receipt",
]

log = logging.getLogger(__name__)

DEFAULT_CONN_ID = "osms_state_corp"
SHA256_HEADER = "X-Content-SHA256"
# Ed25519 signatures are always 64 bytes: anything else is not a signature the receiver can verify.
SIGNATURE_BYTES = 64
# Files are hashed in 1 MiB reads: bounded memory for a national-scale records.parquet.
_READ_CHUNK = 1 << 20


# --------------------------------------------------------------------------
# Connection settings
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class ReceiverEndpoint(HttpEndpoint):
    """What the Airflow connection ``osms_state_corp`` holds: the pipeline's :class:`HttpEndpoint`."""

    # A commit answers after the receiver checked every file; 120 s leaves room for a slow receiver.
    timeout: float = 120.0


# Connection extras that tune an endpoint, with their types.
CONNECTION_EXTRAS = HTTP_EXTRAS


def endpoint_from_connection(conn_id: str = DEFAULT_CONN_ID) -> ReceiverEndpoint:
    """Read the Airflow connection ``conn_id`` (e.g. ``AIRFLOW_CONN_OSMS_STATE_CORP``) as a ReceiverEndpoint."""
    from osms.sources.connections import read_connection

    conn = read_connection(conn_id, token_of="the receiver's", extras=CONNECTION_EXTRAS)
    return ReceiverEndpoint(base_url=conn.url, token=conn.token or "", **conn.settings)


# --------------------------------------------------------------------------
# Errors and the receipt
# --------------------------------------------------------------------------


class DeliveryError(RuntimeError):
    """A package could not be delivered; the message names the package, the step and the cause."""

    def __init__(
        self,
        package_id: str,
        step: str,
        cause: str,
        *,
        status: int | None = None,
        code: str | None = None,
        attempts: int = 1,
    ) -> None:
        self.package_id, self.step, self.cause = package_id, step, cause
        self.status, self.code, self.attempts = status, code, attempts
        super().__init__(self._message())

    def _message(self) -> str:
        tries = f" after {self.attempts} attempts" if self.attempts > 1 else ""
        return f"package {self.package_id}: {self.step} failed{tries}: {self.cause}"

    def __reduce__(self) -> tuple[Any, ...]:
        # keyword-only fields: rebuild through __init__ so the exception survives pickling (e.g. a log handler)
        return (_rebuild_error, (type(self), self.package_id, self.step, self.cause, self.status, self.code,
                                 self.attempts))


class DeliveryWaiting(DeliveryError):
    """The package's predecessor is not delivered yet: deliver that one first, then retry this one."""

    def _message(self) -> str:
        # "waits", not "failed": nothing is wrong with this package, its turn has not come.
        return f"package {self.package_id} waits: {self.cause}"


def _rebuild_error(cls: type[DeliveryError], package_id: str, step: str, cause: str, status: int | None,
                   code: str | None, attempts: int) -> DeliveryError:
    return cls(package_id, step, cause, status=status, code=code, attempts=attempts)


def read_receipt(package_dir: Path) -> Receipt | None:
    """The package's ``receipt.json``, or None when there is none or it is unreadable (then it is redone)."""
    path = Path(package_dir) / RECEIPT
    try:
        return Receipt.from_dict(json.loads(path.read_bytes()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("%s is unreadable (%s): the receiver is asked again", path, exc)
        return None


# --------------------------------------------------------------------------
# Local checks: manifest, files, predecessor
# --------------------------------------------------------------------------


def _sha256_file(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(_READ_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


@dataclass(frozen=True)
class _Package:
    directory: Path
    manifest: Manifest
    manifest_bytes: bytes  # what is signed and committed, as it is on disk
    manifest_sha256: str

    @property
    def package_id(self) -> str:
        """The id the manifest names."""
        return self.manifest.package_id

    @property
    def previous(self) -> str | None:
        """The predecessor's manifest hash, or None for the chain's first package."""
        return self.manifest.previous_manifest_sha256

    @property
    def files(self) -> list[ManifestFile]:
        """The files the manifest lists, in its order."""
        return self.manifest.files


def _load_package(package_dir: Path) -> _Package:
    """The package's manifest, read through :class:`~osms.core.documents.Manifest`; DeliveryError when not."""
    path = package_dir / MANIFEST
    label = package_dir.name  # until the manifest names the package
    try:
        manifest_bytes = path.read_bytes()
    except OSError as exc:
        raise DeliveryError(label, "read manifest", f"{path} cannot be read"
                            f" ({exc.strerror or type(exc).__name__})") from None
    try:
        manifest = Manifest.parse(manifest_bytes)
    except DocumentError as exc:
        raise DeliveryError(label, "read manifest", f"{path} does not fit the manifest's contract ({exc})") from None
    if not manifest.package_id:
        raise DeliveryError(label, "read manifest", f"{path} names no package_id")
    if not manifest.files:
        raise DeliveryError(manifest.package_id, "read manifest", "the manifest lists no files")
    for position, entry in enumerate(manifest.files):
        # each file is read here and stored by the receiver under its name: a path could reach outside the package
        if entry.name in ("", ".", "..") or Path(entry.name).name != entry.name or "\\" in entry.name:
            raise DeliveryError(manifest.package_id, "read manifest",
                                f"files[{position}] needs a plain file 'name', not {entry.name!r}")
    return _Package(directory=package_dir, manifest=manifest, manifest_bytes=manifest_bytes,
                    manifest_sha256=hashlib.sha256(manifest_bytes).hexdigest())


def _check_files(package: _Package) -> bytes:
    """Every listed file is on disk with the manifest's size and hash; returns the signature bytes."""
    for entry in package.files:
        path = package.directory / entry.name
        step = f"check {entry.name}"
        try:
            sha256, size = _sha256_file(path)
        except OSError as exc:
            raise DeliveryError(package.package_id, step, f"{path} cannot be read"
                                f" ({exc.strerror or type(exc).__name__}); nothing was uploaded") from None
        if size != entry.bytes or sha256 != entry.sha256:
            raise DeliveryError(
                package.package_id, step,
                f"{path} does not match the manifest (manifest: {entry.bytes} bytes, sha256 {entry.sha256};"
                f" on disk: {size} bytes, sha256 {sha256}); the file was changed after the package was built,"
                " nothing was uploaded",
            )
    try:
        signature = (package.directory / SIGNATURE).read_bytes()
    except OSError as exc:
        raise DeliveryError(package.package_id, "check signature", f"{package.directory / SIGNATURE} cannot be"
                            f" read ({exc.strerror or type(exc).__name__}); nothing was uploaded") from None
    if len(signature) != SIGNATURE_BYTES:
        raise DeliveryError(package.package_id, "check signature", f"{package.directory / SIGNATURE} holds"
                            f" {len(signature)} bytes, not a {SIGNATURE_BYTES}-byte Ed25519 signature;"
                            " nothing was uploaded")
    return signature


def find_predecessor(data_dir: Path, manifest_sha256: str, *, exclude: Path | None = None) -> Path | None:
    """The package directory under ``data_dir/packages`` whose manifest.json hashes to ``manifest_sha256``."""
    wanted = manifest_sha256.lower()
    # dated folders only: a build's work folder (packages/.D.tmp-<pid>/) is never a package
    for _, directory in sorted(layout.dated_dirs(layout.Paths(Path(data_dir)).packages_root())):
        manifest = directory / MANIFEST
        if exclude is not None and directory.resolve() == exclude.resolve():
            continue
        try:
            if hashlib.sha256(manifest.read_bytes()).hexdigest() == wanted:
                return directory
        except OSError:
            continue
    return None


def _check_predecessor(package: _Package, data_dir: Path) -> None:
    if package.previous is None:
        return
    found = find_predecessor(data_dir, package.previous, exclude=package.directory)
    if found is None:
        raise DeliveryWaiting(
            package.package_id, "check predecessor",
            f"its predecessor (manifest sha256 {package.previous}) is not among the packages under"
            f" {layout.Paths(Path(data_dir)).packages_root()}; build and deliver it first",
        )
    receipt = read_receipt(found)
    if receipt is None or receipt.manifest_sha256 != package.previous:
        where = found.relative_to(data_dir) if found.is_relative_to(data_dir) else found
        raise DeliveryWaiting(
            package.package_id, "check predecessor",
            f"its predecessor ({where.as_posix()}, manifest sha256 {package.previous}) has no receipt yet",
        )


# --------------------------------------------------------------------------
# The HTTP client
# --------------------------------------------------------------------------


class _Client:
    """One delivery's conversation with the receiver, through the pipeline's HTTP client."""

    def __init__(self, endpoint: ReceiverEndpoint, package_id: str, session: requests.Session | None,
                 sleep: Callable[[float], None]) -> None:
        self.endpoint = endpoint
        self.package_id = package_id
        self._own_session = session is None
        self.http = HttpClient(token=endpoint.token, timeout=endpoint.timeout, policy=endpoint.policy,
                               session=session, sleep=sleep, shown_as=endpoint.base_url, log=log)
        quoted = urllib.parse.quote(package_id, safe="")
        self.package_url = f"{endpoint.base_url.rstrip('/')}/v1/packages/{quoted}"

    @property
    def retries(self) -> int:
        """Retries made so far, over every request."""
        return self.http.retries

    def close(self) -> None:
        """Release the connection pool (only one this client opened)."""
        if self._own_session:
            self.http.close()

    def request(self, step: str, method: str, url: str, *, ok: tuple[int, ...],
                body: Callable[[], Any] | None = None, headers: dict[str, str] | None = None,
                json_body: Any = None) -> Answer:
        """One request, retried on transient failures; DeliveryError (or Refused for the caller) otherwise."""
        try:
            return self.http.request(method, url, what=f"package {self.package_id}: {step}", ok=ok, body=body,
                                     headers=headers, json=json_body)
        except Transient as exc:
            raise DeliveryError(self.package_id, step, exc.cause, status=exc.status, code=exc.code,
                                attempts=exc.attempts) from None


def _receipt_from(package: _Package, step: str, data: Any) -> Receipt:
    """The receiver's receipt, checked to be for this package and this manifest."""
    try:
        receipt = Receipt.from_dict(data)
    except ValueError as exc:
        raise DeliveryError(package.package_id, step, f"the receiver's answer is not a receipt ({exc})") from None
    if receipt.package_id != package.package_id or receipt.manifest_sha256 != package.manifest_sha256:
        raise DeliveryError(
            package.package_id, step,
            f"the receiver answered receipt {receipt.receipt_id} for package {receipt.package_id} with manifest"
            f" sha256 {receipt.manifest_sha256}, not for this manifest (sha256 {package.manifest_sha256})",
        )
    return receipt


def _conflict(package: _Package, step: str, detail: str, *, status: int | None = None,
              code: str | None = None) -> DeliveryError:
    return DeliveryError(
        package.package_id, step,
        f"a different package with this id was already delivered ({detail}); this manifest"
        f" (sha256 {package.manifest_sha256}) is refused. A delivered package is never replaced: give the"
        " rebuilt package a new id or restore the delivered one",
        status=status, code=code,
    )


def _refused(package: _Package, step: str, exc: Refused) -> DeliveryError:
    if exc.status == 409 and exc.code == "out_of_order":
        return DeliveryWaiting(package.package_id, step, f"the receiver says its predecessor is not delivered"
                               f" yet ({exc.cause})", status=exc.status, code=exc.code)
    if exc.status == 409 and exc.code in ("conflict", "already_committed"):
        return _conflict(package, step, exc.cause, status=exc.status, code=exc.code)
    return DeliveryError(package.package_id, step, exc.cause, status=exc.status, code=exc.code)


def _held_by_receiver(client: _Client, package: _Package) -> tuple[Receipt | None, dict[str, tuple[str, int]]]:
    """(its receipt if the receiver committed this manifest, {file name: (sha256, bytes)} already stored)."""
    step = "look up"
    try:
        response = client.request(step, "GET", client.package_url, ok=(200, 404))
    except Refused as exc:
        raise _refused(package, step, exc) from None
    if response.status == 404:
        return None, {}
    try:
        state = response.json()
    except ValueError:
        raise DeliveryError(package.package_id, step, "the receiver's answer is not JSON") from None
    if not isinstance(state, dict):
        raise DeliveryError(package.package_id, step, "the receiver's answer is not a JSON object")
    stored = state.get("receipt")
    if isinstance(stored, dict):
        if stored.get("manifest_sha256") != package.manifest_sha256:
            raise _conflict(package, step, f"the receiver holds receipt {stored.get('receipt_id')} for manifest"
                                           f" sha256 {stored.get('manifest_sha256')}")
        return _receipt_from(package, step, stored), {}
    files = {}
    for entry in state.get("files") or []:
        if isinstance(entry, dict) and isinstance(entry.get("name"), str):
            files[entry["name"]] = (str(entry.get("sha256", "")).lower(), entry.get("bytes"))
    return None, files


def _opener(path: Path) -> Callable[[], Any]:
    return lambda: open(path, "rb")  # noqa: SIM115: closed by the HTTP client after each attempt


def _upload(client: _Client, package: _Package, entry: ManifestFile) -> None:
    name = entry.name
    step = f"upload {name}"
    url = f"{client.package_url}/files/{urllib.parse.quote(name, safe='')}"
    started, retries = time.monotonic(), client.retries
    try:
        client.request(step, "PUT", url, ok=(200, 201), body=_opener(package.directory / name),
                       headers={SHA256_HEADER: entry.sha256, "Content-Type": "application/octet-stream"})
    except Refused as exc:
        raise _refused(package, step, exc) from None
    except OSError as exc:  # the file vanished or became unreadable after it was checked
        raise DeliveryError(package.package_id, step, f"{package.directory / name} cannot be read"
                            f" ({exc.strerror or type(exc).__name__})") from None
    log.info("package %s: %s: %d bytes in %.2f s, %d retries", package.package_id, step, entry.bytes,
             time.monotonic() - started, client.retries - retries)


def _commit(client: _Client, package: _Package, signature: bytes) -> Receipt:
    step = "commit"
    started, retries = time.monotonic(), client.retries
    payload = {
        "manifest": base64.b64encode(package.manifest_bytes).decode("ascii"),
        "signature": base64.b64encode(signature).decode("ascii"),
    }
    try:
        response = client.request(step, "POST", f"{client.package_url}/commit", ok=(200, 201), json_body=payload)
    except Refused as exc:
        raise _refused(package, step, exc) from None
    try:
        data = response.json()
    except ValueError:
        raise DeliveryError(package.package_id, step, "the receiver's answer is not JSON") from None
    receipt = _receipt_from(package, step, data)
    log.info("package %s: %s: receipt %s in %.2f s, %d retries", package.package_id, step, receipt.receipt_id,
             time.monotonic() - started, client.retries - retries)
    return receipt


def deliver_package(
    package_dir: Path,
    endpoint: ReceiverEndpoint,
    *,
    data_dir: Path | None = None,
    session: requests.Session | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[Receipt, bool]:
    """Deliver the package in ``package_dir`` once; returns (its receipt, True when this call delivered it).

    ``session`` (a requests session to send through, e.g. one with a test transport) and ``sleep`` (the
    backoff's sleep) are for tests; by default a session is opened and closed per call.
    """
    package_dir = Path(package_dir)
    data_dir = Path(data_dir) if data_dir is not None else package_dir.parent.parent
    package = _load_package(package_dir)
    pid = package.package_id

    local = read_receipt(package_dir)
    if local is not None:
        if local.manifest_sha256 == package.manifest_sha256:
            log.info("package %s: already delivered (receipt %s), nothing to do", pid, local.receipt_id)
            return local, False
        log.warning("package %s: receipt.json is for manifest sha256 %s, not this manifest (sha256 %s):"
                    " asking the receiver", pid, local.manifest_sha256, package.manifest_sha256)

    _check_predecessor(package, data_dir)
    signature = _check_files(package)

    started = time.monotonic()
    client = _Client(endpoint, pid, session, sleep)
    try:
        held, stored = _held_by_receiver(client, package)
        if held is not None:
            # Committed by an earlier attempt whose receipt.json was never written: store it now.
            log.info("package %s: the receiver already holds it (receipt %s); storing the receipt", pid,
                     held.receipt_id)
            _store_receipt(package, held)
            return held, False
        sent = 0
        for entry in package.files:
            if stored.get(entry.name) == (entry.sha256, entry.bytes):
                log.info("package %s: upload %s: already stored by the receiver, skipped", pid, entry.name)
                continue
            _upload(client, package, entry)
            sent += entry.bytes
        receipt = _commit(client, package, signature)
    finally:
        client.close()
    _store_receipt(package, receipt)
    log.info("package %s delivered: receipt %s, %d files, %d bytes uploaded in %.2f s, %d retries", pid,
             receipt.receipt_id, len(package.files), sent, time.monotonic() - started, client.retries)
    return receipt, True


def _store_receipt(package: _Package, receipt: Receipt) -> None:
    write_bytes_atomic(receipt.to_bytes(), package.directory / RECEIPT)


# --------------------------------------------------------------------------
# What the receiver holds: the delivery chain as the State Corporation knows it
# --------------------------------------------------------------------------


def receiver_packages(endpoint: ReceiverEndpoint, *, session: requests.Session | None = None,
                      sleep: Callable[[float], None] = time.sleep) -> dict[str, dict[str, Any]]:
    """Every package the receiver has committed: ``{package_id: {logical_date, receipt_id, received_at}}``."""
    client = _Client(endpoint, "(chain)", session, sleep)
    try:
        try:
            response = client.request("list packages", "GET", f"{endpoint.base_url.rstrip('/')}/v1/packages",
                                      ok=(200,))
        except Refused as exc:
            raise DeliveryError("(chain)", "list packages", exc.cause, status=exc.status, code=exc.code) from None
    finally:
        client.close()
    try:
        listed = response.json().get("packages")
    except (ValueError, AttributeError):
        listed = None
    if not isinstance(listed, list):
        raise DeliveryError("(chain)", "list packages", "the receiver's answer lists no packages")
    return {p["package_id"]: p for p in listed if isinstance(p, dict) and isinstance(p.get("package_id"), str)}


def receiver_receipt(endpoint: ReceiverEndpoint, package_id: str, *, session: requests.Session | None = None,
                     sleep: Callable[[float], None] = time.sleep) -> Receipt | None:
    """The receipt the receiver gave for ``package_id``, or None when it has not committed that package."""
    client = _Client(endpoint, package_id, session, sleep)
    try:
        try:
            response = client.request("look up", "GET", client.package_url, ok=(200, 404))
        except Refused as exc:
            raise DeliveryError(package_id, "look up", exc.cause, status=exc.status, code=exc.code) from None
    finally:
        client.close()
    if response.status == 404:
        return None
    try:
        stored = response.json().get("receipt")
    except (ValueError, AttributeError):
        raise DeliveryError(package_id, "look up", "the receiver's answer is not a JSON object") from None
    if not isinstance(stored, dict):
        return None
    try:
        return Receipt.from_dict(stored)
    except ValueError as exc:
        raise DeliveryError(package_id, "look up", f"the receiver's receipt is not a receipt ({exc})") from None


def store_receipt(package_dir: Path, receipt: Receipt) -> Path:
    """Keep ``receipt`` as the package's ``receipt.json`` (atomically)."""
    return write_bytes_atomic(receipt.to_bytes(), Path(package_dir) / RECEIPT)
