"""A package from ~200k source records of every body, under a small DuckDB memory limit (it must spill, not fail)."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from osms.core.run import Run
from osms.core import iin
from osms.package.build import build_package, verify_package

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _bench():
    """benchmarks/bench_package.py, whose synthesiser this test shares."""
    spec = importlib.util.spec_from_file_location("bench_package", ROOT / "benchmarks" / "bench_package.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_200k_record_package_builds_within_256mb_and_verifies(tmp_path):
    # Arrange
    bench = _bench()
    written = bench.synthesize(tmp_path, 200_000)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    # Act
    result = build_package(Run.of(bench.DAY, data_dir=tmp_path), signing_key_pem=pem, producer_version="it",
                           memory_limit="256MB")

    # Assert
    records = pq.read_table(result.path / "records.parquet", columns=["iin", "category", "bodies", "last_name"])
    assert 150_000 < records.num_rows == result.rows < written  # ~10 % of persons are reported twice
    keys = pc.binary_join_element_wise(records.column("category"), records.column("iin"), "|")
    assert pc.count_distinct(keys).as_py() == records.num_rows
    assert iin.check(records.column("iin").combine_chunks()).valid.all()
    assert pc.max(pc.list_value_length(records.column("bodies"))).as_py() == 2
    quality = json.loads((result.path / "quality.json").read_bytes())
    assert sum(c["rows"] for c in quality["categories"].values()) == result.rows
    assert all(c["status"] == "published" for c in quality["categories"].values())
    assert quality["totals"]["conflicts"]["last_name"] > 0  # 1 % of second reports carry another name
    changes = pq.read_table(result.path / "changes.parquet")
    assert changes.num_rows == result.rows and set(changes.column("change").to_pylist()) == {"added"}
    assert pq.ParquetFile(result.path / "records.parquet").metadata.num_row_groups == -(-result.rows // 500_000)
    assert verify_package(result.path, public) == []
    assert not list((tmp_path / "tmp").iterdir())  # the spill directory is cleaned up
