"""The package signing key: a development Ed25519 pair kept outside the repository."""

from __future__ import annotations

import os
from pathlib import Path

from osms.core.files import write_bytes_atomic

PRIVATE_NAME = "osms_dev_ed25519.pem"
PUBLIC_NAME = "osms_dev_ed25519.pub.pem"


def default_key_dir() -> Path:
    """``$OSMS_KEY_DIR``, else ``~/.osms/keys``: never inside the checkout."""
    return Path(os.environ.get("OSMS_KEY_DIR") or Path.home() / ".osms" / "keys")


def ensure_dev_keypair(key_dir: Path | None = None) -> tuple[Path, Path]:
    """Create the development key pair once; return (private key path, public key path)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key_dir = key_dir or default_key_dir()
    private, public = key_dir / PRIVATE_NAME, key_dir / PUBLIC_NAME
    if private.exists() and public.exists():
        return private, public
    key_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    write_bytes_atomic(private_pem, private, mode=0o600)
    write_bytes_atomic(public_pem, public, mode=0o644)
    return private, public
