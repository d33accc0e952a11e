"""Files of personal data are their owner's only (0600, folders 0700), whatever the umask of the process."""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from osms.core.files import (
    RowGroupWriter,
    parquet_writer_atomic,
    private_dir,
    remove_temporaries,
    write_bytes_atomic,
    write_parquet_atomic,
)

pytestmark = pytest.mark.unit


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The loosest umask there is: nothing is taken away from what a call asks for."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_every_writer_makes_private_files_and_folders(tmp_path: Path, open_umask: None) -> None:
    table = pa.table({"iin": ["791028302728"]})
    written = [
        write_bytes_atomic(b"{}", tmp_path / "status" / "2025-06-01" / "labour.json"),
        write_parquet_atomic(table, tmp_path / "landing" / "2025-06-01" / "labour" / "payments" / "x.parquet"),
    ]
    with parquet_writer_atomic(tmp_path / "validated" / "2025-06-01" / "labour" / "x.parquet", table.schema,
                               row_group_rows=10) as w:
        w.write(table)
    written.append(tmp_path / "validated" / "2025-06-01" / "labour" / "x.parquet")
    private_dir(tmp_path / "packages" / ".2025-06-01.tmp-1")
    direct = RowGroupWriter(tmp_path / "packages" / ".2025-06-01.tmp-1" / "records.parquet", table.schema,
                            row_group_rows=10)
    direct.write(table)
    direct.close()
    written.append(direct.path)
    for path in written:
        assert _mode(path) == 0o600, path
    folders = [p for p in tmp_path.rglob("*") if p.is_dir()]
    assert folders and all(_mode(d) == 0o700 for d in folders), {str(d): oct(_mode(d)) for d in folders}


def test_a_folder_that_exists_is_left_as_it_is(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    os.chmod(shared, 0o755)
    private_dir(shared / "mine")
    assert _mode(shared) == 0o755 and _mode(shared / "mine") == 0o700


def test_duckdb_spills_into_a_private_folder_with_private_files(tmp_path: Path, open_umask: None) -> None:
    from osms.core.spill import spilling_duckdb

    spill = tmp_path / "tmp" / "package-2025-06-01-1"
    seen: dict[str, int] = {}
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            for p in list(spill.rglob("*")) + ([spill] if spill.exists() else []):
                try:
                    seen[str(p)] = _mode(p)
                except FileNotFoundError:
                    pass
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with spilling_duckdb(spill, "64MB") as con:
            con.execute("SET threads = 1")
            con.execute("CREATE TABLE t AS SELECT range AS a, md5(range::VARCHAR) || md5((range + 1)::VARCHAR) AS b"
                        " FROM range(3000000)")
            for _ in con.sql("SELECT * FROM t ORDER BY b").to_arrow_reader(100_000):
                pass
            current = os.umask(0o077)
            os.umask(current)
            assert current == 0o077
    finally:
        done.set()
        watcher.join()
    assert os.umask(0) == 0  # the process's own umask is back
    spilled = {p: m for p, m in seen.items() if p != str(spill)}
    assert spilled, "DuckDB did not spill: the test proves nothing"
    assert seen[str(spill)] == 0o700 and set(spilled.values()) == {0o600}, seen


def test_a_sorts_spill_folder_left_by_a_killed_try_is_removed(tmp_path: Path) -> None:
    landing = tmp_path / "pregnant.parquet"
    (tmp_path / ".pregnant.parquet.123.sort.tmp").mkdir()
    (tmp_path / ".pregnant.parquet.123.sort.tmp" / "duckdb_temp_1").write_bytes(b"x")
    (tmp_path / ".pregnant.parquet.abc.tmp").write_bytes(b"x")
    assert len(remove_temporaries(landing)) == 2 and list(tmp_path.iterdir()) == []
