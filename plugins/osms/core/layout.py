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
        return self.decisions_root() / day.isoformat() / f"{body}.json"

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

    def tasks_metrics(self, day: dt.date | str) -> list[Path]:
        """Every task's cost file of a day (any DAG), sorted."""
        return sorted((self.metrics_root() / str(day)).glob("*/*.json"))

    def status_asset(self, body: str) -> Path:
        """What a body's status Asset is named by: ``status/<body>`` (an Asset's URI, no file of its own)."""
        return self.status_root() / body

    def lineage(self) -> Path:
        """Where the OpenLineage file transport writes its events (one JSON file each; see config/airflow.env)."""
        return self.root / "lineage"

    def feedback(self, day: dt.date, body: str) -> Path:
        """The rows of a body held back on a day, with the rules they broke (CSV, for the body's own staff)."""
        return self.root / "feedback" / day.isoformat() / f"{body}.csv"

    def quarantine_files(self, day: dt.date, body: str) -> list[Path]:
        """Every quarantine file of a body on a day (one per category validated), sorted."""
        return sorted(self.quarantine(day, body, "any").parent.glob("*.parquet"))

    def gx_report(self, day: dt.date, body: str, category: str) -> Path:
        """The scrubbed GX report (counts only) of a (body, category) on a day."""
        return self.root / "reports" / "gx" / day.isoformat() / body / f"{category}.json"

    def gx_reports(self, day: dt.date) -> list[Path]:
        """Every scrubbed GX report of a day (any body, any category), sorted."""
        return sorted((self.root / "reports" / "gx" / day.isoformat()).glob("*/*.json"))

    def data_docs(self, day: dt.date) -> Path:
        """The GX Data Docs site of a day (GX lays out what is inside: see DATA_DOCS_INDEX, DATA_DOCS_PAGES)."""
        return self.root / "reports" / "data_docs" / day.isoformat()

    def data_docs_index(self, day: dt.date) -> Path:
        """The Data Docs site's front page of a day."""
        return self.data_docs(day) / DATA_DOCS_INDEX

    def data_docs_lock(self, day: dt.date) -> Path:
        """The lock one build of a day's Data Docs holds (beside the site: the site is rebuilt whole)."""
        return self.data_docs(day).parent / f".{day.isoformat()}.lock"

    def decisions_root(self) -> Path:
        """Where QA's decisions live, one partition per date."""
        return self.root / "decisions"

    def all_decisions(self) -> list[Path]:
        """Every decisions file of every day, sorted."""
        root = self.decisions_root()
        return sorted(root.glob("*/*.json")) if root.is_dir() else []

    def decisions_lock(self, day: dt.date, body: str) -> Path:
        """The lock one writer of a body's decisions of a day holds."""
        return self.root / "locks" / f"decisions-{day.isoformat()}-{body}.lock"

    def package_work(self, day: dt.date, pid: int) -> Path:
        """A build's package folder until it is complete (beside the final one: the move into place is a rename)."""
        return beside(self.package_dir(day), f"tmp-{pid}")

    def package_aside(self, day: dt.date, pid: int) -> Path:
        """Where a rebuild moves the day's earlier package for the instant it renames the new one into place."""
        return beside(self.package_dir(day), f"old-{pid}")

    def package_leftovers(self, day: dt.date) -> list[Path]:
        """Every work and aside folder of a day's builds (any pid): what package_work and package_aside made."""
        return sorted(_of_any_pid(self.package_work(day, 0)) + _of_any_pid(self.package_aside(day, 0)))

    def scratch(self, kind: str, day: dt.date, *parts: str, pid: int) -> Path:
        """A process's private scratch folder (spill files, work files) for a job of ``kind`` on a day."""
        return self.root / "tmp" / "-".join((kind, day.isoformat(), *parts, str(pid)))

    def scratches(self, kind: str, day: dt.date, *parts: str) -> list[Path]:
        """Every scratch folder ``scratch(kind, day, *parts, pid=...)`` made, of any pid (exactly those), sorted."""
        return _of_any_pid(self.scratch(kind, day, *parts, pid=0))

    def alerts_root(self) -> Path:
        """The notices' outbox, one partition per date."""
        return self.root / "alerts"

    def alert(self, day: dt.date | str, name: str) -> Path:
        """A notice of a day in the outbox (its marks beside it: see alert_mark)."""
        return self.alerts_root() / (day if isinstance(day, str) else day.isoformat()) / name

    def alerts_pending(self) -> Path:
        """The links to the notices not done yet: ``alerts/pending/<D>__<notice>``."""
        return self.alerts_root() / ALERTS_PENDING

    def pending_alerts(self) -> list[tuple[Path, Path]]:
        """(link, notice) of each link in alerts_pending (the notice may be gone)."""
        folder = self.alerts_pending()
        out = []
        for entry in folder.iterdir() if folder.is_dir() else ():
            day, _, name = entry.name.partition("__")
            out.append((entry, self.alert(day, name)))
        return out

    @staticmethod
    def alert_pending_entry(alert: Path) -> Path:
        """The link in alerts_pending to a notice of the outbox."""
        return alert.parent.parent / ALERTS_PENDING / f"{alert.parent.name}__{alert.name}"

    @staticmethod
    def alert_mark(alert: Path, suffix: str) -> Path:
        """A mark beside a notice: ``.sent``, ``.dropped``, ``.skipped`` (done) or ``.tries`` (its tries so far)."""
        return alert.with_suffix(suffix)


DATA_DOCS_INDEX = "index.html"  # GX's site layout: the front page and the folder of validation pages
DATA_DOCS_PAGES = "validations"
ALERTS_PENDING = "pending"
SCRATCH_DUCKDB = "duckdb"  # the spilling DuckDB database inside a scratch folder
ALERT_MARKS = (".sent", ".dropped", ".skipped")  # a notice with one of these is done


def beside(path: Path, tag: str) -> Path:
    """A hidden temporary beside ``path`` (``.<name>.<tag>``): one tag ending ``.tmp`` is cleared by
    osms.core.files.remove_temporaries (TEMPORARIES_BESIDE)."""
    return path.parent / f".{path.name}.{tag}"


TEMPORARIES_BESIDE = "*.tmp"  # beside(path, TEMPORARIES_BESIDE).name: the glob of what an atomic write leaves


def _of_any_pid(made: Path) -> list[Path]:
    """The siblings named as ``made`` (whose name ends in pid 0) with any pid in its place, sorted."""
    prefix = made.name.removesuffix("0")
    if not made.parent.is_dir():
        return []
    return sorted(p for p in made.parent.iterdir() if p.name.startswith(prefix) and p.name[len(prefix):].isdigit())


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
