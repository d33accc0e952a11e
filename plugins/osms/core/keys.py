"""The package signing key: a development Ed25519 pair kept outside the repository, and the rules on using it.

The development pair (``make setup``) is marked as such: its private PEM starts with the
line :data:`DEV_MARK`, text before the PEM block that PEM readers skip (RFC 7468), so the
mark travels with the key into a variable or a secret. The distributed shape refuses a
development key unless ``OSMS_DEMO`` says the deployment is a demo (:func:`check_signing_key`):
a package signed with a key that sits in every developer's home proves nothing.

The embedded runs (``osms run``, ``make airflow``) hand the key to the package task as a
path, ``OSMS_SIGNING_KEY_FILE`` (the file 0600), never as the PEM in every process's
environment; the distributed shape keeps it in the variable ``osms_signing_private_key``
(Airflow's metadata database, encrypted with the Fernet key), put there by ``osms deploy init``.
"""

from __future__ import annotations

import stat
from pathlib import Path

from osms.core import settings
from osms.core.files import write_bytes_atomic

__all__ = ["DEMO_ENV", "DEV_MARK", "KEY_FILE_ENV", "SigningKeyRefused", "check_signing_key", "default_key_dir",
           "demo_mode", "ensure_dev_keypair", "is_development_key", "read_key_file"]

PRIVATE_NAME = "osms_dev_ed25519.pem"
PUBLIC_NAME = "osms_dev_ed25519.pub.pem"
DEV_MARK = b"OSMS development signing key: for development and demos only, never for a real deployment"
DEMO_ENV = settings.DEMO_ENV  # true: this deployment is a demo, the development key is allowed
KEY_FILE_ENV = settings.KEY_FILE_ENV  # the embedded runs: the private key's path (0600)


class SigningKeyRefused(ValueError):
    """A signing key that must not be used here (a development key in the distributed shape, a key file others
    can read); the message says why and what to do."""


def default_key_dir() -> Path:
    """``$OSMS_KEY_DIR``, else ``~/.osms/keys``: never inside the checkout."""
    return settings.current().key_dir


def ensure_dev_keypair(key_dir: Path | None = None) -> tuple[Path, Path]:
    """Create the development key pair once; return (private key path, public key path).

    A private key made before keys were marked gets the mark (the same key, the PEM unchanged).
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key_dir = key_dir or default_key_dir()
    private, public = key_dir / PRIVATE_NAME, key_dir / PUBLIC_NAME
    if private.exists() and public.exists():
        pem = private.read_bytes()
        if DEV_MARK not in pem.split(b"-----BEGIN", 1)[0]:
            write_bytes_atomic(DEV_MARK + b"\n" + pem, private, mode=0o600)
        return private, public
    key_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    write_bytes_atomic(DEV_MARK + b"\n" + private_pem, private, mode=0o600)
    write_bytes_atomic(public_pem, public, mode=0o644)
    return private, public


def is_development_key(pem: bytes | str) -> bool:
    """Whether a private key PEM is a development key: it carries the mark, or it is this machine's development key."""
    data = pem.encode() if isinstance(pem, str) else pem
    head = data.split(b"-----BEGIN", 1)[0]
    if DEV_MARK in head:
        return True
    known = default_key_dir() / PRIVATE_NAME
    try:
        return known.is_file() and _pem_block(known.read_bytes()) == _pem_block(data)
    except OSError:
        return False


def _pem_block(data: bytes) -> bytes:
    at = data.find(b"-----BEGIN")
    return data[at:].strip() if at >= 0 else b""


def demo_mode() -> bool:
    """Whether ``OSMS_DEMO`` says this deployment is a demo."""
    return settings.current().demo


def check_signing_key(pem: bytes | str, *, where: str) -> None:
    """Refuse a development key (:class:`SigningKeyRefused`) unless ``OSMS_DEMO`` is true; ``where`` names its source."""
    if is_development_key(pem) and not demo_mode():
        raise SigningKeyRefused(
            f"the signing key in {where} is the development key (made by make setup, kept in ~/.osms/keys):"
            " a distributed deployment signs with a key of its own. Give that key (OSMS_SIGNING_KEY_FILE for the"
            f" init), or set {DEMO_ENV}=true if this deployment is a demo")


def read_key_file(path: Path) -> bytes:
    """A private key file's PEM; refused when others than its owner may read it (it must be 0600 or 0400)."""
    path = Path(path)
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SigningKeyRefused(f"the signing key file {path} is open to others (mode {stat.S_IMODE(mode):o}):"
                                f" chmod 600 {path}")
    return path.read_bytes()
