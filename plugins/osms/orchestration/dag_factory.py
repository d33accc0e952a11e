"""Builds a responsible body's agency DAG from the registry.

One DAG per body (``agency_<body>``), one task group per category the body
feeds in any edition, one extract task per (system, category) feed and one
validate task per category, and a final ``publish_status`` that always runs.
For a run's date D the edition in force on D decides what runs: a feed or
category not in force on D is skipped, visibly, with the reason in its log.
Each extract runs in its source system's pool (``osms.orchestration.pools``), and
``publish_status`` updates the body's status asset, which the package DAG reads.

Parse time does no I/O beyond reading the registry (small YAML) and imports
neither pandas nor Great Expectations: those load inside the tasks.
"""

from __future__ import annotations

import datetime as dt
from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import DAG, CronDataIntervalTimetable, TaskGroup, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
from airflow.task.trigger_rule import TriggerRule

from osms.core import layout
from osms.core.dates import ALMATY, SCHEDULE, run_day
from osms.core.registry import Edition, NoEditionInForce, Registry, default_registry
from osms.core.run import Run
from osms.orchestration.assets import status_asset
from osms.orchestration.notices import failure_notifiers

START_DATE = pendulum.datetime(2022, 9, 26, tz=ALMATY)  # the 2022 edition's first day
OWNER = "osms-data-engineering"

DEFAULT_ARGS: dict[str, Any] = {
    "owner": OWNER,
    # The extract client already retries transient HTTP faults within a task;
    # task retries cover what is left (a worker lost, a source down for minutes).
    "retries": 2,
    "retry_delay": timedelta(minutes=2),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": timedelta(minutes=20),
}


def _run_or_skip(context: dict[str, Any]) -> Run:
    """The task's Run: its day, the settings read once, the edition in force (none: the task is skipped)."""
    try:
        return Run.of(run_day(context))
    except NoEditionInForce as exc:
        raise AirflowSkipException(str(exc)) from None


# ----------------------------------------------------------------------------- tasks

# Bounds on a task's time, for national volumes: the largest feed (6 M records) is extracted in
# under a minute and validated in about one on this project's 2-core benchmark machine; these
# leave tenfold room, and stop a task that hangs (a source that never answers the last page).
EXTRACT_TIMEOUT = timedelta(hours=1)
VALIDATE_TIMEOUT = timedelta(hours=1)
PUBLISH_TIMEOUT = timedelta(minutes=15)


@task(task_id="extract", execution_timeout=EXTRACT_TIMEOUT)
def extract(body: str, system: str, category: str, **context: Any) -> dict[str, Any]:
    """Extract one feed for D into its landing file; return counts."""
    run = _run_or_skip(context)
    day, edition = run.day, run.edition
    feed = next((f for f in edition.feeds if (f.body, f.system, f.category) == (body, system, category)), None)
    if feed is None:
        raise AirflowSkipException(f"feed {body}.{system}.{category} is not in force on {day} (edition {edition.code})")
    feed_id = feed.id

    from osms.core.documents import ExtractError
    from osms.sources.extract import FeedExtractError, endpoint_from_connection, extract_feed
    from osms.orchestration.failures import task_errors
    from osms.core.files import remove_temporaries, write_bytes_atomic

    conn_id = edition.system(system).connection_id  # the registry names each system's connection
    landing = run.paths.landing(day, body, system, category)
    error_path = run.paths.extract_error(day, body, system, category)
    error_path.unlink(missing_ok=True)
    remove_temporaries(landing)  # what a killed try of this extract left
    try:
        with task_errors():
            result = extract_feed(endpoint_from_connection(conn_id), run, body=body, system=system, category=category)
    except Exception as exc:
        cause = exc.__cause__ if isinstance(exc, AirflowFailException) and exc.__cause__ is not None else exc
        schema_change = isinstance(cause, FeedExtractError) and cause.schema_change
        # FeedExtractError messages are written never to quote a record; anything else
        # might, and this text travels into the status and the package's quality.json
        message = (str(cause) if isinstance(cause, FeedExtractError)
                   else f"feed {feed_id} for {day}: {type(cause).__name__} (see the task log)")
        from osms.core.redact import quote

        # one line, bounded, no IIN: what a source said travels into the status, quality.json and the UI
        message = quote(f"{message} (connection {conn_id})", 1000)
        # Kept beside the landing file so the status can say why; the message names the feed,
        # the date, the connection and the cause, never a record's content.
        write_bytes_atomic(ExtractError(feed=feed_id, as_of=day, connection=conn_id,
                                        kind="schema_change" if schema_change else "extract_failed",
                                        error=message).to_bytes(), error_path)
        raise
    return result.as_dict()


@task(task_id="validate", trigger_rule=TriggerRule.ALL_DONE, execution_timeout=VALIDATE_TIMEOUT)
def validate(body: str, category: str, **context: Any) -> dict[str, Any]:
    """Run the category's suite over the body's feeds extracted for D; quarantine; a verdict per feed.

    Runs whatever happened to the extracts: a feed that failed or changed its schema is
    left out (its own verdict is written by publish_status) and the other feeds are
    validated and published.
    """
    run = _run_or_skip(context)
    day, edition = run.day, run.edition
    feeds = [f for f in edition.feeds if f.body == body and f.category == category]
    if not feeds:
        raise AirflowSkipException(f"category {category} is not fed by {body} on {day} (edition {edition.code})")

    from osms.orchestration.failures import task_errors
    from osms.quality.validate import validate_category
    from osms.core.status import trailing_counts

    root = run.root
    ti = context["ti"]
    extracted = [f for f in feeds if _extracted(ti, root, day, f)]
    if not extracted:
        raise AirflowSkipException(f"no feed of {category} was extracted for {day}: nothing to validate")
    with task_errors():
        outcome = validate_category(
            run,
            body=body,
            category=category,
            landing_paths=[run.paths.landing(day, body, f.system, category) for f in extracted],
            trailing_counts={f.system: trailing_counts(root, day, body, category, f.system) for f in extracted},
        )
    return outcome.as_dict()


def _extracted(ti: Any, root: Any, day: dt.date, feed: Any) -> bool:
    """Whether the feed's extract succeeded in this run: its counts in XCom, its landing file, no error file."""
    counts = ti.xcom_pull(task_ids=f"{feed.category}.extract_{feed.system}")
    return bool(counts) and layout.landing(root, day, feed.body, feed.system, feed.category).is_file() \
        and not layout.extract_error(root, day, feed.body, feed.system, feed.category).exists()


@task(task_id="publish_status", trigger_rule=TriggerRule.ALL_DONE, execution_timeout=PUBLISH_TIMEOUT)
def publish_status(body: str, **context: Any) -> dict[str, Any]:
    """Write the body's status for D, whatever happened upstream: a verdict per feed and per category."""
    import logging

    run = _run_or_skip(context)
    day, edition = run.day, run.edition
    from osms.core.status import BodyStatus, write_status
    from osms.orchestration.notices import notice_of, send_notice

    log = logging.getLogger(__name__)
    root = run.root
    ti = context["ti"]
    statuses = [_category_status(root, ti, day, edition, body, cat.code) for cat in edition.categories_of(body)]
    path = write_status(root, BodyStatus(body=body, as_of=day, edition=edition.code, categories=tuple(statuses)))
    try:
        from osms.quality.validate import write_feedback

        write_feedback(body, day, root)
    except Exception as exc:  # the status must stand even if the feedback file cannot be written
        log.warning("feedback file for %s on %s not written: %s", body, day, type(exc).__name__)
    verdicts = {s.category: s.status for s in statuses}
    log.info("status of %s for %s: %s -> %s", body, day, verdicts, path)
    # the asset event names the day and the verdicts (no record): the Assets view lists each body's reports
    context["outlet_events"][status_asset(body)].extra = {"day": day.isoformat(), "categories": verdicts}
    not_published = {
        f"{s.category}.{system}": s.feed_status(system) for s in statuses for system in sorted(s.feeds)
        if s.feed_status(system) != "published"
    }
    if not_published:
        # names and counts only: which feeds, their verdicts; the status file says why
        send_notice(notice_of("feeds_not_published", context, fields={"body": body}, feeds=not_published,
                              details={"body": body}))
    failed = sorted(k for k, v in not_published.items() if v == "failed")
    if failed:
        # the status is written; the run still shows red so engineers see it at a glance
        raise AirflowFailException(f"{body} on {day}: feeds failed: {', '.join(failed)} (status written to {path})")
    return {"status_path": str(path), "categories": verdicts}


def _category_status(root: Any, ti: Any, day: dt.date, edition: Edition, body: str, category: str) -> Any:
    """A category's status: each feed's verdict (its extract's failure, else validation's), and the sums."""
    from osms.core.status import CategoryStatus, category_verdict

    feeds = [f for f in edition.feeds if f.body == body and f.category == category]
    outcome = ti.xcom_pull(task_ids=f"{category}.validate") or {}
    validated = outcome.get("feeds") or {}
    info: dict[str, dict[str, Any]] = {}
    for f in feeds:
        entry: dict[str, Any] = {}
        counts = ti.xcom_pull(task_ids=f"{category}.extract_{f.system}")
        if counts:
            entry.update({k: counts[k] for k in ("rows", "pages", "retries") if k in counts})
        error = _read_error(layout.extract_error(root, day, body, f.system, category))
        if error is not None:
            held = error.get("kind") == "schema_change"
            # the source answered, but with other columns than the decree's contract: a verdict on
            # the data (held back), not a failure to get it
            entry.update({"error": error["error"], "kind": error.get("kind", "extract_failed"),
                          "status": "held_back" if held else "failed",
                          "reason": ("schema change: " if held else "") + error["error"]})
        elif f.system in validated:
            entry.update(validated[f.system])
        else:
            entry.update({"status": "failed", "reason": "the feed was not extracted or not validated"
                          " (see the task logs)"})
        info[f.system] = entry
    verdicts = [e["status"] for e in info.values()]
    not_published = [f"{system}: {e['reason']}" for system, e in sorted(info.items()) if e["status"] != "published"]
    return CategoryStatus(
        category=category,
        status=category_verdict(verdicts),
        reason="; ".join(not_published) or None,
        rows_in=sum(int(e.get("rows_in", 0)) for e in info.values()),
        rows_published=sum(int(e.get("rows_published", 0)) for e in info.values()),
        rows_quarantined=sum(int(e.get("rows_quarantined", 0)) for e in info.values()),
        quarantined_by_rule=_sum_counts(e.get("quarantined_by_rule") for e in info.values()),
        warnings_by_rule=_sum_counts(e.get("warnings_by_rule") for e in info.values()),
        feeds=info,
    )


def _read_error(path: Any) -> dict[str, Any] | None:
    """An extract's error file; a damaged one still says that the extract failed, and where to look."""
    from osms.core.documents import DocumentError, ExtractError

    try:
        return ExtractError.parse(path.read_bytes()).model_dump(mode="json")
    except FileNotFoundError:
        return None
    except OSError:
        return {"error": f"the extract failed; its error file {path.name} is unreadable (see the task log)",
                "kind": "extract_failed"}
    except DocumentError as exc:
        return {"error": f"the extract failed; its error file {path.name} does not fit its contract ({exc})"
                         " (see the task log)", "kind": "extract_failed"}


def _sum_counts(parts: Any) -> dict[str, int]:
    total: dict[str, int] = {}
    for part in parts:
        for k, v in (part or {}).items():
            total[k] = total.get(k, 0) + int(v)
    return dict(sorted(total.items()))


# ----------------------------------------------------------------------------- the DAG


def _plan(registry: Registry, body: str) -> list[tuple[str, list[str]]]:
    """(category, systems) the body feeds in any edition, in decree row order."""
    rows: dict[str, int] = {}
    systems: dict[str, list[str]] = {}
    for edition in registry.editions:
        for f in edition.feeds_of(body) if body in {b.code for b in edition.bodies} else ():
            rows.setdefault(f.category, f.row)
            if f.system not in systems.setdefault(f.category, []):
                systems[f.category].append(f.system)
    return [(c, systems[c]) for c in sorted(rows, key=lambda c: (rows[c], c))]


def _doc_md(registry: Registry, body: str, plan: list[tuple[str, list[str]]]) -> str:
    b = next(x for x in registry.all_bodies() if x.code == body)
    lines = [
        f"# {b.name_en}",
        f"*{b.name_kk}*",
        "",
        "Extracts this body's feeds under Decree No. 660 for the day D that just ended, validates each",
        "category with its Great Expectations suite (bad rows go to quarantine with the rules they broke),",
        "and always ends by writing the body's status for D, which the package DAG reads.",
        "",
        "| row | category | systems (feeds) | editions |",
        "|---|---|---|---|",
    ]
    for category, systems in plan:
        editions = [e.code for e in registry.editions if any(f.body == body and f.category == category for f in e.feeds)]
        row = next(f.row for e in registry.editions for f in e.feeds if f.body == body and f.category == category)
        lines.append(f"| {row} | `{category}` | {', '.join(f'`{s}`' for s in systems)} | {', '.join(editions)} |")
    lines += [
        "",
        "Connections: `osms_source_<system>` (HTTP, token as password). Backfill any date range from",
        "the UI; each run reads and writes only its own date's partition.",
    ]
    return "\n".join(lines)


def build_agency_dag(body: str, registry: Registry | None = None) -> DAG:
    """The agency DAG of one responsible body, built from the registry."""
    registry = registry or default_registry()
    if body not in {b.code for b in registry.all_bodies()}:
        raise KeyError(f"no body {body!r} in the registry")
    plan = _plan(registry, body)
    pools = {s.code: s.pool for s in registry.all_systems()}
    with DAG(
        dag_id=f"agency_{body}",
        description=f"Decree No. 660 feeds of {next(b.name_en for b in registry.all_bodies() if b.code == body)}",
        schedule=CronDataIntervalTimetable(SCHEDULE, timezone=ALMATY),
        start_date=START_DATE,
        catchup=False,
        # the volume check reads the earlier dates' statuses: one date at a time keeps
        # backfills identical to the scheduled runs
        max_active_runs=1,
        default_args=DEFAULT_ARGS,
        tags=["osms", "agency", body],
        doc_md=_doc_md(registry, body, plan),
        on_failure_callback=failure_notifiers("agency_run_failed"),  # a notice within a minute
    ) as dag:
        validations = []
        for category, systems in plan:
            with TaskGroup(group_id=category, tooltip=f"row {category}"):
                extracts = [
                    # the system's pool: scaled workers never query one system more often at once than it allows
                    extract.override(task_id=f"extract_{system}", pool=pools[system])(
                        body=body, system=system, category=category)
                    for system in systems
                ]
                checked = validate(body=body, category=category)
                extracts >> checked
            validations.append(checked)
        validations >> publish_status.override(outlets=[status_asset(body)])(body=body)  # lineage: the status
    return dag
