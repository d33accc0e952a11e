"""The package's signing key: masked in Airflow, handed to the embedded runs as a path, the development key
refused by the distributed shape unless it is a demo."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit


def test_the_signing_key_variable_is_masked_by_airflow() -> None:
    from airflow._shared.secrets_masker import DEFAULT_SENSITIVE_FIELDS

    from osms.orchestration.package_dag import SIGNING_KEY_VARIABLE

    normalized = SIGNING_KEY_VARIABLE.lower()
    assert any(field in normalized for field in DEFAULT_SENSITIVE_FIELDS), (
        f"{SIGNING_KEY_VARIABLE} names no field of Airflow's secrets masker: its value would show in the UI")


def test_osms_run_hands_the_key_as_a_path_never_as_the_pem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OSMS_KEY_DIR", str(tmp_path))
    from osms.dev.local_run import signing_env

    env = signing_env()
    assert list(env) == ["OSMS_SIGNING_KEY_FILE"]
    path = Path(env["OSMS_SIGNING_KEY_FILE"])
    assert path.parent == tmp_path and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not any("PRIVATE KEY" in v for v in env.values())
    assert b"-----BEGIN PRIVATE KEY-----" in path.read_bytes()


@pytest.fixture
def keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, bytes]:
    """This machine's development pair in a temporary key dir, and another key that is not one."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from osms.core.keys import ensure_dev_keypair

    monkeypatch.setenv("OSMS_KEY_DIR", str(tmp_path / "keys"))
    monkeypatch.delenv("OSMS_DEMO", raising=False)
    private, _ = ensure_dev_keypair()
    production = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return private, production


def test_the_development_key_is_marked_and_still_loads(keys: tuple[Path, bytes]) -> None:
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    from osms.core.keys import DEV_MARK, is_development_key

    private, production = keys
    pem = private.read_bytes()
    assert pem.startswith(DEV_MARK) and is_development_key(pem) and not is_development_key(production)
    load_pem_private_key(pem, password=None)  # the mark is text before the PEM block: readers skip it


def test_a_development_key_made_before_the_mark_is_marked_and_known(keys: tuple[Path, bytes]) -> None:
    from osms.core.keys import DEV_MARK, ensure_dev_keypair, is_development_key

    private, _ = keys
    unmarked = private.read_bytes().split(b"\n", 1)[1]
    private.write_bytes(unmarked)
    assert is_development_key(unmarked)  # this machine's development key, even without its mark
    ensure_dev_keypair()
    assert private.read_bytes() == DEV_MARK + b"\n" + unmarked


def test_the_distributed_shape_refuses_the_development_key_unless_a_demo(keys: tuple[Path, bytes],
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from osms.core.keys import SigningKeyRefused
    from osms.orchestration.failures import is_permanent
    from osms.orchestration.package_dag import signing_key_pem

    private, production = keys
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "CeleryExecutor")
    with pytest.raises(SigningKeyRefused, match="is the development key.*OSMS_DEMO=true") as refused:
        signing_key_pem(private.read_text())
    assert is_permanent(refused.value)
    assert signing_key_pem(production.decode()) == production
    monkeypatch.setenv("OSMS_DEMO", "true")
    assert signing_key_pem(private.read_text()) == private.read_bytes()


def test_the_embedded_shape_signs_with_the_key_file_it_is_given(keys: tuple[Path, bytes],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from osms.core.keys import SigningKeyRefused
    from osms.orchestration.package_dag import signing_key_pem
    from osms.package.build import PackageError

    private, _ = keys
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "LocalExecutor")
    monkeypatch.delenv("OSMS_SIGNING_KEY_FILE", raising=False)
    with pytest.raises(PackageError, match="no signing key"):
        signing_key_pem(None)
    monkeypatch.setenv("OSMS_SIGNING_KEY_FILE", str(private))
    assert signing_key_pem(None) == private.read_bytes()  # the development key: fine on one machine
    os.chmod(private, 0o644)
    with pytest.raises(SigningKeyRefused, match="open to others"):
        signing_key_pem(None)


def test_deploy_init_refuses_the_development_key_unless_a_demo(keys: tuple[Path, bytes], tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.models import Variable

    from osms.dev import deploy

    private, production = keys
    stored: dict[str, str] = {}
    monkeypatch.setattr(Variable, "set", staticmethod(lambda key, value, **_: stored.__setitem__(key, value)))
    with pytest.raises(SystemExit, match="development key"):
        deploy.set_signing_key(private)
    assert stored == {}
    own = tmp_path / "own.pem"
    own.write_bytes(production)
    deploy.set_signing_key(own)
    assert stored == {"osms_signing_private_key": production.decode()}
    monkeypatch.setenv("OSMS_DEMO", "true")
    deploy.set_signing_key(private)
    assert stored["osms_signing_private_key"] == private.read_text()
