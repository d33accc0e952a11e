"""The memory budget of one task, and the sizes every stage derives from it.

One number decides how much memory a task may use: ``OSMS_TASK_MEMORY_BUDGET``
(bytes, or with a unit: ``2GiB``, ``1536MiB``; default 2 GiB, which keeps a task
of the national run under 2.5 GiB with Airflow, pandas and GX loaded). Nothing
else in the pipeline sizes a chunk, a partition or a DuckDB limit by hand: the
validation chunk, the hash tables of the uniqueness pass, the sort buckets of
the validated files and the package's partitions all come from here, so that a
task's peak follows the budget and not the size of a feed or of the country.

The per-row figures are measured, not guessed: GX on a chunk of pandas columns
holds about 0.8 KiB per row at its peak (the frame, GX's boolean masks and
index copies); a package partition about 1.2 KiB per source row (the range's records
in Arrow, sorted and grouped, its package rows and its changes), beside DuckDB's share. ``make bench-national`` prints each task's peak next to the budget.
"""

from __future__ import annotations

from dataclasses import dataclass

from osms.core import settings
from osms.core.settings import BUDGET_ENV, parse_bytes

__all__ = ["BUDGET_ENV", "DEFAULT_BUDGET", "Budget", "parse_bytes", "task_budget"]

DEFAULT_BUDGET = 2 * 2**30
# What is already resident before a task does anything: the interpreter with
# Airflow's task runner, pyarrow, pandas and Great Expectations imported.
BASELINE = 600 * 2**20


@dataclass(frozen=True)
class Budget:
    """A task's memory budget and the sizes derived from it."""

    total: int = DEFAULT_BUDGET

    def __post_init__(self) -> None:
        if self.total < 2 * BASELINE:
            raise ValueError(f"a task memory budget of {self.total / 2**20:.0f} MiB is too small:"
                             f" at least {2 * BASELINE / 2**20:.0f} MiB")

    @property
    def working(self) -> int:
        """What the task's data may use: the budget less the interpreter and its libraries."""
        return self.total - BASELINE

    @property
    def validation_chunk_rows(self) -> int:
        """Rows of a landing feed handed to one GX run (about half a million at 2 GiB).

        A third of what would fit: a range's rows are held in Arrow and in pandas at once,
        and a worker keeps some of what its earlier tasks allocated.
        """
        return _round_rows(self.working // 2800)

    @property
    def sort_bucket_rows(self) -> int:
        """Rows sorted in memory at once when writing a validated or quarantine file."""
        return self.validation_chunk_rows

    @property
    def package_partition_rows(self) -> int:
        """Source rows consolidated at once into the package (one range of IINs of one category).

        Two ranges are in memory at once (one read ahead) with their package rows and changes.
        """
        return _round_rows(self.working // 2800)

    @property
    def duckdb_limit(self) -> str:
        """DuckDB's ``memory_limit``: beyond it, joins, aggregates and sorts spill to disk."""
        return f"{max(256, self.working // 4 // 2**20)}MiB"

    @property
    def max_page_bytes(self) -> int:
        """The largest page of a source an extract reads (181 MiB at 2 GiB; a national page is about 15 MiB).

        An eighth of the working share: a page is held while it is read, another waits to be
        parsed and Arrow's table of it is about as large again, besides the row group buffered.
        """
        return self.working // 8

    @property
    def gate_chunk_rows(self) -> int:
        """Rows of records.parquet handed to one GX run of the package suite."""
        return self.validation_chunk_rows


def _round_rows(rows: int) -> int:
    """Down to two significant digits, at least 10 000: sizes people can read in a log."""
    rows = max(int(rows), 10_000)
    scale = 10 ** (len(str(rows)) - 2)
    return rows // scale * scale


def task_budget() -> Budget:
    """The budget of this task: ``$OSMS_TASK_MEMORY_BUDGET`` or 2 GiB."""
    total = settings.current().memory_budget
    return Budget(total) if total is not None else Budget()
