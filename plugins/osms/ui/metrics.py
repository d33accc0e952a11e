"""The pipeline's own figures as Prometheus metrics, read from the documents on the data root.

Every figure is derived, at each scrape, from what the stages write under ``OSMS_DATA_DIR``:
the bodies' statuses (``status/D/<body>.json``), the packages (``quality.json``,
``manifest.json``, ``receipt.json``), the chain's start (``chain/start.json``), the notices
accepted (``alerts/D/<dag>.<kind>.<run>.sent``) or still waiting and each task's cost, written by
the task-metrics listener (``metrics/D/<dag>/<task>.json``). So every API server process of
every host serves the same figures, and nothing is lost when one restarts: there is no
state in memory to scrape.

Served by the Airflow plugin at ``/osms-metrics/metrics`` (:func:`create_metrics_app`),
guarded by a scrape token of its own (``OSMS_METRICS_TOKEN``, or the file named by
``OSMS_METRICS_TOKEN_FILE``) sent as ``Authorization: Bearer``: Prometheus cannot log in
as a person, Airflow's JWTs expire, and the token lets its holder read these figures and
nothing else. Without a token configured, the route answers 404.

What is exported (labels in braces; no IIN, name or record ever, only codes and counts):

- per body, its latest reported day: ``osms_body_last_status_timestamp_seconds{body}``;
  per (body, category) of that day rows in, published, quarantined, held back
  (``osms_category_rows_*``) and the verdict (``osms_category_verdict{...,verdict}``, 1 for
  the one that holds); per feed its verdict and rows in (``osms_feed_*``);
- streaks, for the alert rules: ``osms_body_failed_days_in_a_row{body}`` (no status, or a
  feed failed) and ``osms_feed_held_back_days_in_a_row{body,system,category}``;
- the latest package: rows and carried-forward records per category, and per (body,
  category) for how many days its data is carried forward;
- the chain: its start, the last delivered day, ``osms_package_days_undelivered`` (days
  from the start through yesterday, Almaty, without a receipt) and
  ``osms_package_oldest_undelivered_due_timestamp_seconds{day}`` (the deadline, D+1 07:00
  Almaty, of the oldest day owed);
- per package day of the last :data:`WINDOW_DAYS` days that have one: rows, bytes, delivered, when the
  receipt was given, build and delivery seconds (``osms_package_*{day}``), and per day the
  tasks' wall time, span, peak memory and retries (``osms_day_*{day}``);
- per task of the latest day with task costs: wall, CPU, peak memory, try number, failed;
- notices sent, by kind and DAG (``osms_notices_sent``); documents that could not be read or do not fit
  their model in :mod:`osms.core.documents` (``osms_metrics_unreadable_documents{document}``).
"""

from __future__ import annotations

import datetime as dt
import hmac
import json
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import Response
from pydantic import BaseModel

from osms.core import layout, settings
from osms.core.dates import almaty
from osms.core.documents import (
    FEED_VERDICTS,
    MANIFEST,
    QUALITY,
    RECEIPT,
    RECORDS,
    STATUS_VERDICTS,
    BodyStatus,
    ChainStart,
    DocumentError,
    Manifest,
    QualityDocument,
    Receipt,
)
from osms.core.status import StatusUnreadable, read_status

__all__ = ["METRICS_PATH", "PipelineCollector", "URL_PREFIX", "create_metrics_app", "figures_of", "render",
           "scrape_token"]

log = logging.getLogger(__name__)
_D = TypeVar("_D", bound=BaseModel)

URL_PREFIX = "/osms-metrics"
METRICS_PATH = f"{URL_PREFIX}/metrics"
TOKEN_ENV = "OSMS_METRICS_TOKEN"
TOKEN_FILE_ENV = "OSMS_METRICS_TOKEN_FILE"
WINDOW_DAYS = 31  # per-day series: a month, enough for a soak and a dashboard, bounded in series
STREAK_DAYS = 14  # how far back a streak is counted (the rules ask for 2 and 3 days)
DUE_TIME = dt.time(7, 0)  # D's package is due at D+1 07:00 Almaty (as osms.orchestration.alerts says)
PACKAGE_DAG = "osms_daily_package"  # whose build and delivery times the per-day figures give


def day_timestamp(day: dt.date) -> float:
    """The Unix time of D's midnight in Almaty: how a day is given as a number."""
    return dt.datetime.combine(day, dt.time(0), tzinfo=almaty()).timestamp()


def due_timestamp(day: dt.date) -> float:
    """The Unix time of D's package deadline, D+1 07:00 Almaty."""
    return dt.datetime.combine(day + dt.timedelta(days=1), DUE_TIME, tzinfo=almaty()).timestamp()


@dataclass
class _Family:
    name: str
    help: str
    labels: tuple[str, ...]
    samples: list[tuple[tuple[str, ...], float]] = field(default_factory=list)

    def add(self, value: float | None, *labels: str) -> None:
        if value is not None:
            self.samples.append((tuple(labels), float(value)))


class _Figures:
    """The metric families of one scrape, filled from the data root."""

    def __init__(self) -> None:
        self.families: dict[str, _Family] = {}
        self.unreadable: Counter[str] = Counter()

    def family(self, name: str, help_text: str, *labels: str) -> _Family:
        if name not in self.families:
            self.families[name] = _Family(name, help_text, labels)
        return self.families[name]


def _read_json(path: Path, figures: _Figures, document: str) -> Any:
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        figures.unreadable[document] += 1
        return None


def _read(path: Path, model: type[_D], figures: _Figures, document: str) -> _D | None:
    """A document through its model; None when it is absent, or unreadable (then counted)."""
    try:
        return model.parse(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, DocumentError):
        figures.unreadable[document] += 1
        return None


# --------------------------------------------------------------------------- statuses

_Status = BodyStatus | None | Literal["unreadable"]


class _Statuses:
    """The bodies' statuses, each read once per scrape (an unreadable one is counted once)."""

    def __init__(self, root: Path, figures: _Figures) -> None:
        self.root, self.figures = root, figures
        self.cache: dict[tuple[dt.date, str], _Status] = {}

    def __call__(self, day: dt.date, body: str) -> _Status:
        key = (day, body)
        if key not in self.cache:
            try:
                self.cache[key] = read_status(self.root, day, body)
            except StatusUnreadable:
                self.figures.unreadable["status"] += 1
                self.cache[key] = "unreadable"
        return self.cache[key]


def _statuses(root: Path, figures: _Figures) -> None:
    days = sorted((d for d, _ in layout.dated_dirs(layout.status_root(root))), reverse=True)
    packages = {d for d, p in layout.dated_dirs(layout.packages_root(root)) if (p / MANIFEST).is_file()}
    seen = set(days) | packages
    bodies = sorted({b for d in days[:STREAK_DAYS] for b in layout.status_bodies(root, d)})
    status = _Statuses(root, figures)
    last_status = figures.family("osms_body_last_status_timestamp_seconds",
                                 "The latest day D (midnight Almaty) the body wrote a status for.", "body")
    failed_run = figures.family("osms_body_failed_days_in_a_row",
                                "Consecutive days up to the latest one run on which the body failed (no status, an"
                                " unreadable one, or a feed failed).", "body")
    latest_seen = max(seen) if seen else None
    for body in bodies:
        reported = [d for d in days if layout.status(root, d, body).is_file()]
        if not reported:
            continue
        latest = reported[0]
        last_status.add(day_timestamp(latest), body)
        failed_run.add(_failed_streak(status, body, latest_seen, seen, packages), body)
        st = status(latest, body)
        if isinstance(st, BodyStatus):
            _latest_day_figures(figures, status, st, latest)


def _failed_streak(status: _Statuses, body: str, latest_seen: dt.date | None, seen: set[dt.date],
                   packages: set[dt.date]) -> int:
    """Calendar days back from the latest day anything ran on which the body failed; a day nothing ran ends it.

    A missing status is a failure once the day is over for the pipeline (its package built, or a later day
    begun); on the latest day, while the body may still be running, it is not counted either way.
    """
    streak, day = 0, latest_seen
    while day is not None and day in seen and streak < STREAK_DAYS:
        st = status(day, body)
        if st is None and day == latest_seen and day not in packages:
            day -= dt.timedelta(days=1)  # still running: the streak is that of the days before
            continue
        if not isinstance(st, BodyStatus) or any(
                c.feed_status(s) == "failed" for c in st.categories for s in (c.feeds or {"": {}})):
            streak += 1
            day -= dt.timedelta(days=1)
            continue
        break
    return streak


def _latest_day_figures(figures: _Figures, status: _Statuses, st: BodyStatus, latest: dt.date) -> None:
    """Per category and feed of the body's latest day: rows, verdicts, and how long each feed is held back."""
    rows = {k: figures.family(f"osms_category_rows_{k}", f"Rows {t} of the body's category on its latest day.",
                              "body", "category")
            for k, t in (("in", "in"), ("published", "published"), ("quarantined", "quarantined"),
                         ("held_back", "held back (the rows in of its held-back feeds)"))}
    verdict = figures.family("osms_category_verdict", "The category's verdict on the body's latest day (1: this one).",
                             "body", "category", "verdict")
    feed_verdict = figures.family("osms_feed_verdict", "The feed's verdict on the body's latest day (1: this one).",
                                  "body", "system", "category", "verdict")
    feed_rows = figures.family("osms_feed_rows_in", "Rows the feed brought in on the body's latest day.",
                               "body", "system", "category")
    held_streak = figures.family("osms_feed_held_back_days_in_a_row",
                                 "Consecutive days up to the body's latest one on which the feed was held back.",
                                 "body", "system", "category")
    body = st.body
    for c in st.categories:
        held = sum(c.feed_rows_in(s) or 0 for s in c.feeds if c.feed_status(s) == "held_back")
        rows["in"].add(c.rows_in, body, c.category)
        rows["published"].add(c.rows_published, body, c.category)
        rows["quarantined"].add(c.rows_quarantined, body, c.category)
        rows["held_back"].add(held if c.feeds else (c.rows_in if c.status == "held_back" else 0), body, c.category)
        for v in STATUS_VERDICTS:
            verdict.add(1 if c.status == v else 0, body, c.category, v)
        for system in sorted(c.feeds):
            now = c.feed_status(system)
            for v in FEED_VERDICTS:
                feed_verdict.add(1 if now == v else 0, body, system, c.category, v)
            feed_rows.add(c.feed_rows_in(system), body, system, c.category)
            held_streak.add(_held_back_streak(status, body, latest, c.category, system), body, system, c.category)


def _held_back_streak(status: _Statuses, body: str, latest: dt.date, category: str, system: str) -> int:
    """Consecutive days up to ``latest`` on which the feed was held back."""
    streak, day = 0, latest
    while streak < STREAK_DAYS:
        earlier = status(day, body)
        if not isinstance(earlier, BodyStatus):
            break
        try:
            cat = earlier.category(category)
        except KeyError:
            break
        if system not in cat.feeds or cat.feed_status(system) != "held_back":
            break
        streak += 1
        day -= dt.timedelta(days=1)
    return streak


# --------------------------------------------------------------------------- packages and the chain


def _packages(root: Path, figures: _Figures, today: dt.date) -> None:
    built = sorted(((d, p) for d, p in layout.dated_dirs(layout.packages_root(root)) if (p / MANIFEST).is_file()),
                   reverse=True)
    delivered = {d for d, p in built if (p / RECEIPT).is_file()}
    _chain_figures(figures, _chain_start(root, figures, built), built, delivered, today)
    _per_day_figures(root, figures, built, delivered)
    if built:
        _latest_package_figures(figures, *built[0])


def _chain_start(root: Path, figures: _Figures, built: list[tuple[dt.date, Path]]) -> dt.date | None:
    """The chain's first day: its start document's, else (a chain from before the start was a setting) its first
    package's."""
    start = _read(layout.chain_start(root), ChainStart, figures, "chain_start")
    if start is not None:
        return start.start
    return built[-1][0] if built else None


def _chain_figures(figures: _Figures, start: dt.date | None, built: list[tuple[dt.date, Path]],
                   delivered: set[dt.date], today: dt.date) -> None:
    """The chain's start, the last built and delivered days, the days owed and the deadline of the oldest."""
    if start is not None:
        figures.family("osms_chain_start_timestamp_seconds", "The delivery chain's first day (midnight Almaty).").add(
            day_timestamp(start))
    if built:
        figures.family("osms_package_last_built_timestamp_seconds",
                       "The latest day D whose package was built (midnight Almaty).").add(day_timestamp(built[0][0]))
    if delivered:
        figures.family("osms_package_last_delivered_timestamp_seconds",
                       "The latest day D whose package has a receipt (midnight Almaty).").add(
            day_timestamp(max(delivered)))
    if start is not None:
        yesterday = today - dt.timedelta(days=1)
        owed = [start + dt.timedelta(days=k) for k in range(max(0, (yesterday - start).days + 1))]
        figures.family("osms_package_days_undelivered",
                       "Days from the chain's start through yesterday (Almaty) whose package has no receipt.").add(
            sum(1 for d in owed if d not in delivered))
        oldest = next((d for d in (*owed, today) if d not in delivered), None)
        if oldest is not None:  # labelled with the day, so that an alert on it names the day
            figures.family("osms_package_oldest_undelivered_due_timestamp_seconds",
                           "The deadline (D+1 07:00 Almaty) of the oldest day D from the chain's start whose package"
                           " has no receipt.", "day").add(due_timestamp(oldest), oldest.isoformat())


def _per_day_figures(root: Path, figures: _Figures, built: list[tuple[dt.date, Path]], delivered: set[dt.date]
                     ) -> None:
    """Rows, bytes, receipt and build and delivery time of the packages of the last days that have one.

    The window follows the data: a catch-up or a soak runs past days.
    """
    window = [(d, p) for d, p in built if d > built[0][0] - dt.timedelta(days=WINDOW_DAYS)] if built else []
    per_day = {k: figures.family(f"osms_package_{k}", t, "day") for k, t in (
        ("rows", "Rows of the package of day D."),
        ("bytes", "Bytes of the files the manifest of day D lists."),
        ("delivered", "Whether the package of day D has a receipt (1) or not (0)."),
        ("received_timestamp_seconds", "When the State Corporation received the package of day D."),
        ("build_seconds", "Wall seconds of the build_package task of day D (its last try)."),
        ("delivery_seconds", "Wall seconds of the deliver task of day D (its last try)."),
    )}
    for day, folder in window:
        label = day.isoformat()
        manifest = _read(folder / MANIFEST, Manifest, figures, "manifest")
        if manifest is not None:
            records = manifest.file(RECORDS)
            per_day["bytes"].add(sum(f.bytes for f in manifest.files), label)
            per_day["rows"].add(records.rows if records is not None else None, label)
        receipt = _read(folder / RECEIPT, Receipt, figures, "receipt") if day in delivered else None
        per_day["delivered"].add(1 if receipt is not None else 0, label)
        if receipt is not None:
            per_day["received_timestamp_seconds"].add(_timestamp(receipt.received_at), label)
        for task, key in (("build_package", "build_seconds"), ("deliver", "delivery_seconds")):
            cost = _read_json(layout.task_metrics(root, day, PACKAGE_DAG, task), figures, "task_metrics")
            if isinstance(cost, dict):
                per_day[key].add(cost.get("wall_seconds"), label)


def _latest_package_figures(figures: _Figures, day: dt.date, folder: Path) -> None:
    """Per category of the latest package: rows, records and whether it is carried forward, and for how long."""
    quality = _read(folder / QUALITY, QualityDocument, figures, "quality")
    if quality is None:
        return
    cat_rows = figures.family("osms_package_category_rows", "Rows of the category in the latest package.", "category")
    cat_carried = figures.family("osms_package_records_carried_forward",
                                 "Records of the category the latest package carries forward.", "category")
    cat_status = figures.family("osms_package_category_carried_forward",
                                "Whether the latest package carries the whole category forward (1) or not (0).",
                                "category")
    body_days = figures.family("osms_package_carried_forward_days",
                               "For how many days the latest package carries the body's category forward"
                               " (0: its data is of the day).", "body", "category")
    for code, cat in sorted(quality.categories.items()):
        cat_rows.add(cat.rows, code)
        cat_carried.add(cat.records_carried_forward, code)
        cat_status.add(1 if cat.status == "carried_forward" else 0, code)
        for body, b in sorted(cat.bodies.items()):
            source = b.carried_forward_from
            body_days.add((day - source).days if source else 0, body, code)


def _timestamp(text: Any) -> float | None:
    try:
        moment = dt.datetime.fromisoformat(str(text))
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)).timestamp()


# --------------------------------------------------------------------------- tasks and notices


def _tasks(root: Path, figures: _Figures) -> None:
    days = sorted((d for d, _ in layout.dated_dirs(layout.metrics_root(root))), reverse=True)
    per_day = {k: figures.family(f"osms_day_{k}", t, "day") for k, t in (
        ("task_wall_seconds", "Wall seconds of every task of day D, added up (their last tries)."),
        ("span_seconds", "From the first task's start to the last task's end, for day D."),
        ("task_peak_rss_bytes", "The highest peak memory of a task process for day D."),
        ("task_retries", "Tries beyond the first, over the tasks of day D."),
        ("tasks_failed", "Tasks of day D whose last try failed."),
    )}
    latest: list[dict[str, Any]] = []
    for day in days:
        if day <= days[0] - dt.timedelta(days=WINDOW_DAYS):
            break
        costs = []
        for path in sorted((layout.metrics_root(root) / day.isoformat()).glob("*/*.json")):
            cost = _read_json(path, figures, "task_metrics")
            if isinstance(cost, dict):
                costs.append(cost)
        if not costs:
            continue
        label = day.isoformat()
        per_day["task_wall_seconds"].add(sum(float(c.get("wall_seconds") or 0) for c in costs), label)
        starts = [c["started_at"] for c in costs if isinstance(c.get("started_at"), int | float)]
        ends = [c["ended_at"] for c in costs if isinstance(c.get("ended_at"), int | float)]
        if starts and ends:
            per_day["span_seconds"].add(max(ends) - min(starts), label)
        per_day["task_peak_rss_bytes"].add(max((c.get("peak_rss_bytes") or 0) for c in costs), label)
        per_day["task_retries"].add(sum(max(0, int(c.get("try_number") or 1) - 1) for c in costs), label)
        per_day["tasks_failed"].add(sum(1 for c in costs if c.get("state") == "failed"), label)
        if not latest:
            latest = costs
    if not latest:
        return
    task = {k: figures.family(f"osms_task_{k}", t, "dag_id", "task_id") for k, t in (
        ("wall_seconds", "Wall seconds of the task's last try, on the latest day with task costs."),
        ("cpu_seconds", "CPU seconds of the task's last try, on the latest day with task costs."),
        ("peak_rss_bytes", "Peak memory of the task's process during its last try."),
        ("try_number", "The task's try number (1: it ran once)."),
        ("failed", "Whether the task's last try failed (1) or succeeded (0)."),
    )}
    for c in latest:
        labels = (str(c.get("dag_id")), str(c.get("task_id")))
        task["wall_seconds"].add(c.get("wall_seconds"), *labels)
        task["cpu_seconds"].add(c.get("cpu_seconds"), *labels)
        task["peak_rss_bytes"].add(c.get("peak_rss_bytes"), *labels)
        task["try_number"].add(c.get("try_number"), *labels)
        task["failed"].add(1 if c.get("state") == "failed" else 0, *labels)


def _notices(root: Path, figures: _Figures) -> None:
    """Notices the webhook accepted (``.sent``) and those still waiting in the outbox (see osms.orchestration.notices)."""
    sent: Counter[tuple[str, str]] = Counter()
    pending: Counter[tuple[str, str]] = Counter()
    for _, folder in layout.dated_dirs(layout.Paths(root).alerts_root()):
        for path in folder.iterdir():
            dag_id, dot, rest = path.name.partition(".")
            kind = rest.partition(".")[0]
            if not dot or not kind or path.name.startswith("."):
                continue
            if path.suffix == ".sent":
                sent[(kind, dag_id)] += 1
            elif path.suffix == ".json" and not any(layout.Paths.alert_mark(path, s).exists()
                                                     for s in layout.ALERT_MARKS):
                pending[(kind, dag_id)] += 1
    family = figures.family("osms_notices_sent", "Notices the webhook accepted (alerts/D/*.sent), by kind and DAG.",
                            "kind", "dag_id")
    for (kind, dag_id), count in sorted(sent.items()):
        family.add(count, kind, dag_id)
    family = figures.family("osms_notices_pending", "Notices not accepted yet, retried with backoff, by kind and DAG.",
                            "kind", "dag_id")
    for (kind, dag_id), count in sorted(pending.items()):
        family.add(count, kind, dag_id)


# --------------------------------------------------------------------------- exposition


def figures_of(root: Path, now: dt.datetime | None = None) -> dict[str, _Family]:
    """Every family of the data root's figures (``now``: the clock the chain's figures are read against)."""
    now = now or dt.datetime.now(dt.UTC)
    today = now.astimezone(almaty()).date()
    figures = _Figures()
    for part in (lambda: _statuses(root, figures), lambda: _packages(root, figures, today),
                 lambda: _tasks(root, figures), lambda: _notices(root, figures)):
        try:
            part()
        except Exception as exc:  # noqa: BLE001: one part's failure must not blank the others
            log.warning("metrics: a part of the figures failed (%s)", type(exc).__name__)
            figures.unreadable["figures"] += 1
    unreadable = figures.family("osms_metrics_unreadable_documents",
                                "Documents that could not be read while the figures were made.", "document")
    for document in ("status", "quality", "manifest", "receipt", "chain_start", "task_metrics", "figures"):
        unreadable.add(figures.unreadable[document], document)
    return figures.families


class PipelineCollector:
    """A prometheus_client collector: the data root's figures, made afresh at each scrape."""

    def __init__(self, root: Callable[[], Path], clock: Callable[[], dt.datetime] | None = None) -> None:
        self._root = root
        self._clock = clock

    def collect(self) -> Iterator[Any]:
        """The metric families, as prometheus_client wants them."""
        from prometheus_client.core import GaugeMetricFamily

        for fam in figures_of(self._root(), self._clock() if self._clock else None).values():
            metric = GaugeMetricFamily(fam.name, fam.help, labels=list(fam.labels))
            for labels, value in fam.samples:
                metric.add_metric(list(labels), value)
            yield metric


def render(root: Path, now: dt.datetime | None = None) -> bytes:
    """The data root's figures in Prometheus's text format."""
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(PipelineCollector(lambda: root, (lambda: now) if now else None))
    return generate_latest(registry)


def scrape_token() -> str | None:
    """The scrape token: ``$OSMS_METRICS_TOKEN``, or the first line of ``$OSMS_METRICS_TOKEN_FILE``; None: off."""
    token = settings.current().metrics_token or ""
    if not token and (token_file := settings.current().metrics_token_file) is not None:
        try:
            token = token_file.read_text(encoding="utf-8").strip()
        except OSError:
            token = ""
    return token or None


def create_metrics_app(root: Callable[[], Path] = layout.data_dir,
                       token: Callable[[], str | None] = scrape_token) -> Any:
    """The FastAPI app the plugin mounts at :data:`URL_PREFIX`: ``GET /metrics`` with the scrape token only."""
    from prometheus_client import CONTENT_TYPE_LATEST

    app = FastAPI(title="OSMS metrics", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/metrics")
    def metrics(request: Request) -> Response:
        expected = token()
        if expected is None:
            raise HTTPException(status_code=404, detail="Not Found")
        given = request.headers.get("authorization", "")
        scheme, _, credentials = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(credentials.strip().encode(), expected.encode()):
            raise HTTPException(status_code=401, detail="a scrape token is needed (Authorization: Bearer)",
                                headers={"WWW-Authenticate": "Bearer"})
        return Response(render(root()), media_type=CONTENT_TYPE_LATEST, headers={"Cache-Control": "no-store"})

    return app

