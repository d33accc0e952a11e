"""The reference a distributed run is compared with: ``osms run`` for each day, as ``make run`` runs it."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

# what a package holds that must be byte-identical wherever it was built (the receipt is the receiver's)
PACKAGE_FILES = ("records.parquet", "changes.parquet", "quality.json", "manifest.json", "manifest.sig")


class OsmsRuns:
    """``osms run`` for each day in order, into a data dir of its own, in the background (a thread)."""

    def __init__(self, data: Path, days: Sequence[dt.date], env: Mapping[str, str] | None = None) -> None:
        self.data, self.days = data, list(days)
        self.extra_env = dict(env or {})
        self.failures: list[str] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        osms = str(Path(sys.executable).with_name("osms"))
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}  # not the test runner's Airflow
        env.update(self.extra_env)
        for day in self.days:
            out = subprocess.run([osms, "run", "--date", day.isoformat(), "--data-dir", str(self.data)], env=env,
                                 stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=900)
            if out.returncode != 0:
                self.failures.append(f"osms run {day} exited {out.returncode}:\n{out.stdout[-3000:]}{out.stderr[-2000:]}")
                return

    def start(self) -> OsmsRuns:
        self._thread.start()
        return self

    def wait(self) -> Path:
        self._thread.join(timeout=1200)
        assert not self._thread.is_alive(), "osms run did not end"
        assert not self.failures, self.failures[0]
        return self.data


def differing_files(ours: Path, theirs: Path) -> list[str]:
    """The package files that differ between two package folders (a missing one counts)."""
    return [name for name in PACKAGE_FILES
            if not (ours / name).is_file() or not (theirs / name).is_file()
            or (ours / name).read_bytes() != (theirs / name).read_bytes()]
