"""Verify a built package: its manifest (read once, through :class:`~osms.core.documents.Manifest`), every file
it lists, its Ed25519 signature and its link to the previous package.

What ``osms package verify``, the package page and the tests use; every problem is one
:class:`~osms.core.documents.Problem`, a sentence naming the file, with its kind.
pyarrow and cryptography are imported inside functions: the package DAG imports this module at parse time.
"""

from __future__ import annotations

import json
from pathlib import Path

from osms.core import layout
from osms.core.documents import (
    MANIFEST,
    PACKAGE_FILES,
    PACKAGE_SCHEMA,
    RECEIPT,
    SIGNATURE,
    DocumentError,
    Manifest,
    Problem,
)
from osms.core.files import sha256_file

__all__ = ["verify_package"]


class _Unreadable(Exception):
    """The manifest cannot be read as a manifest at all: nothing else of the package can be checked."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(str(problem))
        self.problem = problem


def verify_package(package_dir: Path, public_key_pem: bytes | None, *,
                   previous_manifest: Path | None = None) -> list[Problem]:
    """Every problem with a package, one :class:`~osms.core.documents.Problem` each (a sentence naming the file,
    with its kind); [] when all is well.

    Without a public key (``None``) the signature is not checked; everything else is. A manifest
    that does not fit its contract is named and its signature checked; its files and chain are not
    (they cannot be read from it).
    """
    package_dir = Path(package_dir)
    try:
        manifest_bytes, manifest = _read_manifest(package_dir)
    except _Unreadable as exc:
        return [exc.problem]
    signature = [] if public_key_pem is None else _verify_signature(package_dir, manifest_bytes, public_key_pem)
    if isinstance(manifest, DocumentError):
        return [Problem("manifest", MANIFEST, f"does not fit the manifest's contract ({manifest})"), *signature]
    canonical = [] if manifest.to_bytes() == manifest_bytes else [Problem("manifest", MANIFEST,
                                                                          "not in canonical JSON form")]
    return [*canonical, *_verify_files(package_dir, manifest), *signature,
            *_verify_chain(package_dir, manifest, previous_manifest)]


def _read_manifest(package_dir: Path) -> tuple[bytes, Manifest | DocumentError]:
    """(the manifest's bytes, the manifest or why it does not fit its contract); :class:`_Unreadable` when it is
    missing, not JSON or of another schema."""
    path = package_dir / MANIFEST
    if not path.is_file():
        raise _Unreadable(Problem("manifest", MANIFEST, f"missing from {package_dir}"))
    manifest_bytes = path.read_bytes()
    try:
        raw = json.loads(manifest_bytes)
    except ValueError as exc:
        raise _Unreadable(Problem("manifest", MANIFEST, f"not valid JSON ({exc})")) from None
    if not isinstance(raw, dict) or raw.get("schema") != PACKAGE_SCHEMA:
        got = raw.get("schema") if isinstance(raw, dict) else None
        raise _Unreadable(Problem("manifest", MANIFEST, f"schema is {got!r}, not {PACKAGE_SCHEMA!r}"))
    try:
        return manifest_bytes, Manifest.parse(raw)
    except DocumentError as exc:
        return manifest_bytes, exc


def _verify_files(package_dir: Path, manifest: Manifest) -> list[Problem]:
    import pyarrow.parquet as pq

    problems = []
    listed = {f.name for f in manifest.files}
    for name in PACKAGE_FILES:
        if name not in listed:
            problems.append(Problem("file", name, f"not listed in {MANIFEST}"))
    for entry in manifest.files:
        name = entry.name
        path = package_dir / name
        if Path(name).name != name or name in (MANIFEST, SIGNATURE, RECEIPT):
            problems.append(Problem("file", name, "not a file a manifest may list"))
            continue
        if not path.is_file():
            problems.append(Problem("file", name, f"listed in {MANIFEST} but missing"))
            continue
        size = path.stat().st_size
        if size != entry.bytes:
            problems.append(Problem("file", name, f"size {size} bytes differs from the manifest ({entry.bytes})"))
        if sha256_file(path) != entry.sha256:
            problems.append(Problem("file", name, "SHA-256 differs from the manifest"))
        elif name.endswith(".parquet"):
            rows = pq.ParquetFile(path).metadata.num_rows
            if rows != entry.rows:
                problems.append(Problem("file", name, f"{rows} rows, the manifest says {entry.rows}"))
    return problems


def _verify_signature(package_dir: Path, manifest_bytes: bytes, public_key_pem: bytes) -> list[Problem]:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    sig_path = package_dir / SIGNATURE
    if not sig_path.is_file():
        return [Problem("signature", SIGNATURE, "missing")]
    try:
        key = serialization.load_pem_public_key(public_key_pem)
    except (ValueError, TypeError) as exc:
        return [Problem("key", "public key", f"not a PEM public key ({exc})")]
    if not isinstance(key, Ed25519PublicKey):
        return [Problem("key", "public key", f"must be Ed25519, not {type(key).__name__}")]
    signature = sig_path.read_bytes()
    if len(signature) != 64:
        return [Problem("signature", SIGNATURE, f"{len(signature)} bytes, an Ed25519 signature is 64")]
    try:
        key.verify(signature, manifest_bytes)
    except InvalidSignature:
        return [Problem("signature", SIGNATURE, f"the signature does not match {MANIFEST}")]
    return []


def _verify_chain(package_dir: Path, manifest: Manifest, previous_manifest: Path | None) -> list[Problem]:
    claimed = manifest.previous_manifest_sha256
    if previous_manifest is not None:
        previous_manifest = Path(previous_manifest)
        shown = _short_path(previous_manifest)
        if not previous_manifest.is_file():
            return [_chain(f"{shown} does not exist")]
        actual = sha256_file(previous_manifest)
        if claimed is None:
            return [_chain(f"previous_manifest_sha256 is null, but {shown} was given as the previous package")]
        if claimed != actual:
            return [_chain(f"previous_manifest_sha256 {claimed} does not match {shown} (its SHA-256 is {actual})")]
        return []
    # Without an explicit previous manifest: look among the package's siblings.
    day = manifest.logical_date
    earlier = sorted(
        ((d, p) for d, p in layout.dated_dirs(package_dir.resolve().parent) if d < day and (p / MANIFEST).is_file()),
        reverse=True,
    )
    if claimed is None:
        delivered = [p for _, p in earlier if (p / RECEIPT).is_file()]
        if delivered:
            return [_chain(f"previous_manifest_sha256 is null, but {_short_path(delivered[0] / MANIFEST)}"
                           " was delivered before")]
        return []
    if not earlier:
        return []  # a package on its own (copied out): the link cannot be checked here
    for _, p in earlier:
        if sha256_file(p / MANIFEST) == claimed:
            return []
    return [_chain(f"previous_manifest_sha256 {claimed} does not match {_short_path(earlier[0][1] / MANIFEST)}"
                   " nor any earlier manifest beside this package")]


def _chain(message: str) -> Problem:
    return Problem("chain", "chain", message)


def _short_path(path: Path) -> str:
    """``packages/<D>/manifest.json`` style: the last three parts of a path."""
    return "/".join(Path(path).parts[-3:])
