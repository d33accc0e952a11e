"""Where working data lives: one root (OSMS_DATA_DIR, default ./data), one partition per date."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from osms.core import settings


def data_dir() -> Path:
    """The working data root: ``$OSMS_DATA_DIR`` or ``./data``."""
    return settings.current().data_dir.resolve()


def paths() -> Paths:
    """The places under the working data root of this process's settings."""
    return Paths(data_dir())


def dated_dirs(parent: Path) -> list[tuple[dt.date, Path]]:
    """The date partitions under ``parent``: subdirectories named ``YYYY-MM-DD`` (others are skipped)."""
    if not parent.is_dir():
        return []
    out = []
    for p in parent.iterdir():
        try:
            out.append((dt.date.fromisoformat(p.name), p))
        except ValueError:
            continue
    return [(d, p) for d, p in out if p.is_dir()]


@dataclass(frozen=True)
class Paths:
    """Every place of the working data under one root: the only place a path of the data dir is spelled."""

    root: Path

    def landing(self, day: dt.date, body: str, system: str, category: str) -> Path:
        """The landing file of one feed on one day."""
        return self.root / "landing" / day.isoformat() / body / system / f"{category}.parquet"

    def extract_error(self, day: dt.date, body: str, system: str, category: str) -> Path:
        """Why a feed's extract failed on a day (written only when it did)."""
        return self.landing(day, body, system, category).with_suffix(".error.json")

    def validated(self, day: dt.date, body: str, category: str) -> Path:
        """Rows of a (body, category) that passed validation."""
        return self.root / "validated" / day.isoformat() / body / f"{category}.parquet"

    def quarantine(self, day: dt.date, body: str, category: str) -> Path:
        """Rows of a (body, category) that broke a rule, with the rules."""
        return self.root / "quarantine" / day.isoformat() / body / f"{category}.parquet"

    def status_root(self) -> Path:
        """Where the bodies' statuses live, one partition per date."""
        return self.root / "status"

    def status(self, day: dt.date, body: str) -> Path:
        """A body's status for a day: what the package DAG reads."""
        return self.status_root() / day.isoformat() / f"{body}.json"

    def status_bodies(self, day: dt.date) -> list[str]:
        """The bodies that have a status file for a day (read or not), sorted."""
        return sorted(p.stem for p in (self.status_root() / day.isoformat()).glob("*.json"))

    def packages_root(self) -> Path:
        """Where the packages live, one folder per date."""
        return self.root / "packages"

    def package_dir(self, day: dt.date) -> Path:
        """The consolidated package of a day."""
        return self.packages_root() / day.isoformat()

    def decisions(self, day: dt.date, body: str) -> Path:
        """QA's decisions about a body's feeds held back on a day (who, when, why: the owner's only)."""
        return self.root / "decisions" / day.isoformat() / f"{body}.json"

    def package_lock(self, day: dt.date) -> Path:
        """The lock one build or delivery of a day's package holds (and a QA decision that may shape it)."""
        return self.root / "locks" / f"package-{day.isoformat()}.lock"

    def chain_start(self) -> Path:
        """The delivery chain's start: written once, read by every package run."""
        return self.root / "chain" / "start.json"

    def metrics_root(self) -> Path:
        """Where the task-metrics listener writes each task's cost, one partition per date."""
        return self.root / "metrics"

    def task_metrics(self, day: dt.date, dag_id: str, task_id: str) -> Path:
        """One task's cost on a day (its last try)."""
        return self.metrics_root() / day.isoformat() / dag_id / f"{task_id}.json"

    def lineage(self) -> Path:
        """Where the OpenLineage file transport writes its events (one JSON file each; see config/airflow.env)."""
        return self.root / "lineage"


# The same places as functions of a root, for the callers that hold a root and not a Paths.

def landing(root: Path, day: dt.date, body: str, system: str, category: str) -> Path:
    """The landing file of one feed on one day."""
    return Paths(root).landing(day, body, system, category)


def extract_error(root: Path, day: dt.date, body: str, system: str, category: str) -> Path:
    """Why a feed's extract failed on a day (written only when it did)."""
    return Paths(root).extract_error(day, body, system, category)


def validated(root: Path, day: dt.date, body: str, category: str) -> Path:
    """Rows of a (body, category) that passed validation."""
    return Paths(root).validated(day, body, category)


def quarantine(root: Path, day: dt.date, body: str, category: str) -> Path:
    """Rows of a (body, category) that broke a rule, with the rules."""
    return Paths(root).quarantine(day, body, category)


def status_root(root: Path) -> Path:
    """Where the bodies' statuses live, one partition per date."""
    return Paths(root).status_root()


def status(root: Path, day: dt.date, body: str) -> Path:
    """A body's status for a day: what the package DAG reads."""
    return Paths(root).status(day, body)


def status_bodies(root: Path, day: dt.date) -> list[str]:
    """The bodies that have a status file for a day (read or not), sorted."""
    return Paths(root).status_bodies(day)


def packages_root(root: Path) -> Path:
    """Where the packages live, one folder per date."""
    return Paths(root).packages_root()


def package_dir(root: Path, day: dt.date) -> Path:
    """The consolidated package of a day."""
    return Paths(root).package_dir(day)


def decisions(root: Path, day: dt.date, body: str) -> Path:
    """QA's decisions about a body's feeds held back on a day (who, when, why: the owner's only)."""
    return Paths(root).decisions(day, body)


def package_lock(root: Path, day: dt.date) -> Path:
    """The lock one build or delivery of a day's package holds (and a QA decision that may shape it)."""
    return Paths(root).package_lock(day)


def chain_start(root: Path) -> Path:
    """The delivery chain's start: written once, read by every package run."""
    return Paths(root).chain_start()


def metrics_root(root: Path) -> Path:
    """Where the task-metrics listener writes each task's cost, one partition per date."""
    return Paths(root).metrics_root()


def task_metrics(root: Path, day: dt.date, dag_id: str, task_id: str) -> Path:
    """One task's cost on a day (its last try)."""
    return Paths(root).task_metrics(day, dag_id, task_id)


def lineage(root: Path) -> Path:
    """Where the OpenLineage file transport writes its events (one JSON file each; see config/airflow.env)."""
    return Paths(root).lineage()
