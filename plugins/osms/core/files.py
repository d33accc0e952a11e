"""Atomic file writes: write aside, then rename, so no reader sees a partial file; and the one file lock.

Every file written here is its owner's only (0600) and every folder made here 0700, whatever
the process's umask: the data root holds the name and IIN of every covered person.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


def private_dir(path: Path) -> Path:
    """Make ``path`` and any missing parent folders, each 0700 whatever the umask; return ``path``.

    Folders that already exist are left as they are (the data root may be a mount point, a
    test's temporary folder or ``/tmp``): only what this call creates is set.
    """
    path = Path(path)
    missing = []
    probe = path
    while not probe.is_dir():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=PRIVATE_DIR)
        except FileExistsError:
            if not folder.is_dir():
                raise
            continue  # made by another process meanwhile: its maker set it
        os.chmod(folder, PRIVATE_DIR)  # mkdir's mode passes through the umask
    return path


def create_private(path: Path) -> Path:
    """Create (or truncate) ``path`` as an empty file of its owner's only (0600), whatever the umask."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
    try:
        os.fchmod(fd, PRIVATE_FILE)
    finally:
        os.close(fd)
    return Path(path)


@contextmanager
def private_umask() -> Iterator[None]:
    """Run a block with umask 077: files that a library creates itself (DuckDB's spill files) are 0600.

    The umask is the process's: the block is a stage of a task, which is one per process.
    """
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def temporary_beside(path: Path) -> Path:
    """A new empty file (0600) beside ``path``, named ``.<name>.*.tmp`` so :func:`remove_temporaries` finds it."""
    path = Path(path)
    private_dir(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(tmp)


def replace_durably(tmp: Path, path: Path) -> Path:
    """Rename a complete temporary file onto ``path``: its bytes flushed first, the rename made durable after."""
    fsync_path(tmp)
    os.replace(tmp, path)
    fsync_dir(Path(path).parent)
    return Path(path)


def write_parquet_atomic(table: pa.Table, path: Path, *, compression: str = "zstd") -> Path:
    """Write ``table`` to ``path`` through a temporary file in the same directory."""
    import pyarrow.parquet as pq

    tmp = temporary_beside(path)
    try:
        pq.write_table(table, tmp, compression=compression)
        replace_durably(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_bytes_atomic(data: bytes, path: Path, *, mode: int | None = None) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same directory.

    The file is the owner's only (0600, as ``mkstemp`` makes it) unless ``mode`` says otherwise.
    """
    private_dir(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def remove_temporaries(path: Path) -> list[Path]:
    """Remove the temporary files an interrupted atomic write of ``path`` left beside it (``.<name>.*.tmp``).

    Only the one writer of ``path`` calls this, before it writes: a temporary file of
    that name is then an earlier try's, which nothing will ever rename into place.
    """
    import shutil

    from osms.core.layout import TEMPORARIES_BESIDE, beside

    path = Path(path)
    removed = []
    for tmp in path.parent.glob(beside(path, TEMPORARIES_BESIDE).name) if path.parent.is_dir() else ():
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)  # a sort's spill folder
        else:
            tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


@contextmanager
def locked(path: Path, *, wait: bool = True, create: bool = True) -> Iterator[bool]:
    """Hold an exclusive advisory lock (``flock``) on ``path`` for the block; yield whether it is held.

    ``wait=False`` does not wait for another holder: the block then runs with False and must leave
    alone what the lock guards. ``create=False`` locks an existing file (opened for reading: the file
    the holder works on); otherwise ``path`` is created if need be, in a folder the caller made.
    """
    with Path(path).open("a" if create else "rb") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def sha256_file(path: Path) -> str:
    """The SHA-256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fsync_path(path: str | Path) -> None:
    """Flush a written file to disk before it is renamed into place."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | Path) -> None:
    """Make a rename in ``path`` durable; best effort, as some filesystems refuse it for directories."""
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


class RowGroupWriter:
    """Parquet with row groups of exactly ``row_group_rows`` rows (the last one shorter), whatever the batches.

    Rows arrive in tables of any size and are cut into fixed row groups, so the
    file's bytes depend on its rows alone, never on how a producer batched them:
    what makes the package byte-identical run after run. Nothing time-dependent
    goes in (pyarrow writes no timestamp). The file is written in place: callers
    write into a work folder or a temporary path and rename.
    """

    def __init__(self, path: Path, schema: pa.Schema, *, row_group_rows: int, compression: str = "zstd",
                 compression_level: int | None = None) -> None:
        import pyarrow.parquet as pq

        self.path, self.schema, self.row_group_rows = Path(path), schema, row_group_rows
        create_private(self.path)  # Arrow would create it 0666 less the umask; it keeps an existing file's mode
        self._writer = pq.ParquetWriter(self.path, schema, compression=compression,
                                        compression_level=compression_level)
        self._pending: list[pa.Table] = []
        self._buffered = 0
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        """Append rows (cast to the file's schema); complete row groups go to the file at once."""
        import pyarrow as pa

        if table.num_rows == 0:
            return
        self._pending.append(table.cast(self.schema) if table.schema != self.schema else table)
        self._buffered += table.num_rows
        self.rows += table.num_rows
        while self._buffered >= self.row_group_rows:
            joined = pa.concat_tables(self._pending)
            self._writer.write_table(joined.slice(0, self.row_group_rows), row_group_size=self.row_group_rows)
            rest = joined.slice(self.row_group_rows)
            self._pending, self._buffered = [rest], rest.num_rows

    def close(self) -> int:
        """Write the last row group and close the file; return the rows written."""
        import pyarrow as pa

        if self._buffered:
            self._writer.write_table(pa.concat_tables(self._pending), row_group_size=self.row_group_rows)
        self._pending, self._buffered = [], 0
        self._writer.close()
        return self.rows

    def abort(self) -> None:
        """Close without finishing; the caller removes the file."""
        try:
            self._writer.close()
        except Exception:  # noqa: BLE001: already failing; the file is removed by the caller
            pass


@contextmanager
def parquet_writer_atomic(path: Path, schema: pa.Schema, *, row_group_rows: int,
                          compression_level: int | None = None) -> Iterator[RowGroupWriter]:
    """A :class:`RowGroupWriter` on a temporary file beside ``path``, renamed onto it when the block succeeds.

    If the block raises, the temporary file is removed and ``path`` stays as it was.
    """
    tmp = temporary_beside(path)
    writer = RowGroupWriter(tmp, schema, row_group_rows=row_group_rows, compression_level=compression_level)
    try:
        yield writer
        writer.close()
        replace_durably(tmp, path)
    except BaseException:
        writer.abort()
        tmp.unlink(missing_ok=True)
        raise


class BackgroundWriter:
    """A :class:`RowGroupWriter` fed from a thread of its own, so compression overlaps the producer's work.

    At most ``depth`` tables wait, which bounds the memory; the rows reach the file in
    the order they were given, so the file is the same as the one a direct writer makes.
    An error of the writing thread is raised by the next ``write`` or by ``close``.
    """

    def __init__(self, writer: RowGroupWriter, *, depth: int = 2) -> None:
        import queue
        import threading

        self.writer = writer
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"write {writer.path.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            table = self._queue.get()
            if table is None:
                return
            if self._error is None:
                try:
                    self.writer.write(table)
                except BaseException as exc:  # noqa: BLE001: handed to the producer
                    self._error = exc

    def write(self, table: pa.Table) -> None:
        """Queue rows for the file."""
        if self._error is not None:
            raise self._error
        self._queue.put(table)

    @property
    def rows(self) -> int:
        """Rows written so far (all of them once closed)."""
        return self.writer.rows

    def close(self) -> int:
        """Wait for every queued table, then close the file; return the rows written."""
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            self.writer.abort()
            raise self._error
        return self.writer.close()
