"""Where working data lives: one root (OSMS_DATA_DIR, default ./data), one partition per date."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from osms.core import settings


def data_dir() -> Path:
    """The working data root: ``$OSMS_DATA_DIR`` or ``./data``."""
    return settings.current().data_dir.resolve()


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


def landing(root: Path, day: dt.date, body: str, system: str, category: str) -> Path:
    """The landing file of one feed on one day."""
    return root / "landing" / day.isoformat() / body / system / f"{category}.parquet"


def extract_error(root: Path, day: dt.date, body: str, system: str, category: str) -> Path:
    """Why a feed's extract failed on a day (written only when it did)."""
    return landing(root, day, body, system, category).with_suffix(".error.json")


def validated(root: Path, day: dt.date, body: str, category: str) -> Path:
    """Rows of a (body, category) that passed validation."""
    return root / "validated" / day.isoformat() / body / f"{category}.parquet"


def quarantine(root: Path, day: dt.date, body: str, category: str) -> Path:
    """Rows of a (body, category) that broke a rule, with the rules."""
    return root / "quarantine" / day.isoformat() / body / f"{category}.parquet"


def status_root(root: Path) -> Path:
    """Where the bodies' statuses live, one partition per date."""
    return root / "status"


def status(root: Path, day: dt.date, body: str) -> Path:
    """A body's status for a day: what the package DAG reads."""
    return status_root(root) / day.isoformat() / f"{body}.json"


def status_bodies(root: Path, day: dt.date) -> list[str]:
    """The bodies that have a status file for a day (read or not), sorted."""
    return sorted(p.stem for p in (status_root(root) / day.isoformat()).glob("*.json"))


def packages_root(root: Path) -> Path:
    """Where the packages live, one folder per date."""
    return root / "packages"


def package_dir(root: Path, day: dt.date) -> Path:
    """The consolidated package of a day."""
    return packages_root(root) / day.isoformat()


def decisions(root: Path, day: dt.date, body: str) -> Path:
    """QA's decisions about a body's feeds held back on a day (who, when, why: the owner's only)."""
    return root / "decisions" / day.isoformat() / f"{body}.json"


def package_lock(root: Path, day: dt.date) -> Path:
    """The lock one build or delivery of a day's package holds (and a QA decision that may shape it)."""
    return root / "locks" / f"package-{day.isoformat()}.lock"


def chain_start(root: Path) -> Path:
    """The delivery chain's start: written once, read by every package run."""
    return root / "chain" / "start.json"


def metrics_root(root: Path) -> Path:
    """Where the task-metrics listener writes each task's cost, one partition per date."""
    return root / "metrics"


def task_metrics(root: Path, day: dt.date, dag_id: str, task_id: str) -> Path:
    """One task's cost on a day (its last try)."""
    return metrics_root(root) / day.isoformat() / dag_id / f"{task_id}.json"


def lineage(root: Path) -> Path:
    """Where the OpenLineage file transport writes its events (one JSON file each; see config/airflow.env)."""
    return root / "lineage"
