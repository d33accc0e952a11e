"""Builds a responsible body's agency DAG from the registry.

One DAG per body (``agency_<body>``), one task group per category the body
feeds in any edition, one extract task per (system, category) feed and one
validate task per category, and a final ``publish_status`` that always runs.
For a run's date D the edition in force on D decides what runs: a feed or
category not in force on D is skipped, visibly, with the reason in its log.

Parse time does no I/O beyond reading the registry (small YAML) and imports
neither pandas nor Great Expectations: those load inside the tasks.
"""

from __future__ import annotations

import datetime as dt
import json
from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import DAG, CronDataIntervalTimetable, TaskGroup, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
from airflow.task.trigger_rule import TriggerRule

from osms import layout
from osms.registry import Edition, NoEditionInForce, Registry, default_registry

ALMATY = "Asia/Almaty"
START_DATE = pendulum.datetime(2022, 9, 26, tz=ALMATY)  # the 2022 edition's first day
OWNER = "osms-data-engineering"

# Daily at 00:30 Almaty for the day that just ended: the data interval is that day,
# so a run's D is its interval start, and a backfill over a date range gives one
# run per D, exactly as the schedule would have.
SCHEDULE = "30 0 * * *"

DEFAULT_ARGS: dict[str, Any] = {
    "owner": OWNER,
    # The extract client already retries transient HTTP faults within a task;
    # task retries cover what is left (a worker lost, a source down for minutes).
    "retries": 2,
    "retry_delay": timedelta(minutes=2),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": timedelta(minutes=20),
}


def run_day(context: Any) -> dt.date:
    """The date D a run is for: its logical date, as the calendar reads in Almaty.

    Scheduled and backfill runs have logical date = data interval start = D. A
    manual run keeps the logical date the operator chose (Airflow would infer the
    interval that *ends* then), so "trigger for 2025-06-01" means D = 2025-06-01.
    """
    moment = context.get("logical_date") or context["data_interval_start"]
    return pendulum.instance(moment).in_timezone(ALMATY).date()


def _edition_or_skip(day: dt.date) -> Edition:
    try:
        return default_registry().edition_on(day)
    except NoEditionInForce as exc:
        raise AirflowSkipException(str(exc)) from None


# ----------------------------------------------------------------------------- tasks


@task(task_id="extract")
def extract(body: str, system: str, category: str, **context: Any) -> dict[str, Any]:
    """Extract one feed for D into its landing file; return counts."""
    day = run_day(context)
    edition = _edition_or_skip(day)
    feed_id = f"{body}.{system}.{category}"
    if not any(f.id == feed_id for f in edition.feeds):
        raise AirflowSkipException(f"feed {feed_id} is not in force on {day} (edition {edition.code})")

    from osms.extract import FeedExtractError, endpoint_from_connection, extract_feed
    from osms.files import write_bytes_atomic

    root = layout.data_dir()
    conn_id = f"osms_source_{system}"
    error_path = layout.extract_error(root, day, body, system, category)
    error_path.unlink(missing_ok=True)
    try:
        result = extract_feed(
            endpoint_from_connection(conn_id),
            body=body,
            system=system,
            category=category,
            as_of=day,
            landing_path=layout.landing(root, day, body, system, category),
            columns=edition.category(category).record_columns,
        )
    except Exception as exc:
        schema_change = isinstance(exc, FeedExtractError) and exc.schema_change
        # FeedExtractError messages are written never to quote a record; anything else
        # might, and this text travels into the status and the package's quality.json
        message = (str(exc) if isinstance(exc, FeedExtractError)
                   else f"feed {feed_id} for {day}: {type(exc).__name__} (see the task log)")
        message = f"{message} (connection {conn_id})"
        # Kept beside the landing file so the status can say why; the message names
        # the feed, the date, the connection and the cause, never a record's content.
        write_bytes_atomic(
            json.dumps({"feed": feed_id, "as_of": day.isoformat(), "connection": conn_id,
                        "kind": "schema_change" if schema_change else "extract_failed", "error": message},
                       ensure_ascii=False).encode(),
            error_path,
        )
        if isinstance(exc, FeedExtractError):
            # transient faults were already retried by the client: this one is final
            raise AirflowFailException(message) from None
        raise
    return result.as_dict()


@task(task_id="validate", trigger_rule=TriggerRule.NONE_FAILED)
def validate(body: str, category: str, **context: Any) -> dict[str, Any]:
    """Run the category's suite over the body's landing files for D; quarantine; verdict."""
    day = run_day(context)
    edition = _edition_or_skip(day)
    feeds = [f for f in edition.feeds if f.body == body and f.category == category]
    if not feeds:
        raise AirflowSkipException(f"category {category} is not fed by {body} on {day} (edition {edition.code})")

    from osms.quality.validate import validate_category
    from osms.status import trailing_counts

    root = layout.data_dir()
    outcome = validate_category(
        body=body,
        category=category,
        as_of=day,
        landing_paths=[layout.landing(root, day, body, f.system, category) for f in feeds],
        data_dir=root,
        trailing_counts=trailing_counts(root, day, body, category),
    )
    return outcome.as_dict()


@task(task_id="publish_status", trigger_rule=TriggerRule.ALL_DONE)
def publish_status(body: str, **context: Any) -> dict[str, Any]:
    """Write the body's status for D, whatever happened upstream."""
    day = run_day(context)
    edition = _edition_or_skip(day)
    from osms.status import BodyStatus, write_status

    root = layout.data_dir()
    ti = context["ti"]
    statuses = [_category_status(root, ti, day, edition, body, cat.code) for cat in edition.categories_of(body)]
    path = write_status(root, BodyStatus(body=body, as_of=day, edition=edition.code, categories=tuple(statuses)))
    try:
        from osms.quality.validate import write_feedback

        write_feedback(body, day, root)
    except Exception as exc:  # the status must stand even if the feedback file cannot be written
        import logging

        logging.getLogger(__name__).warning("feedback file for %s on %s not written: %s", body, day, type(exc).__name__)
    verdicts = {s.category: s.status for s in statuses}
    import logging

    logging.getLogger(__name__).info("status of %s for %s: %s -> %s", body, day, verdicts, path)
    if any(v == "failed" for v in verdicts.values()):
        # the status is written; the run still shows red so engineers see it at a glance
        failed = sorted(k for k, v in verdicts.items() if v == "failed")
        raise AirflowFailException(f"{body} on {day}: categories failed: {', '.join(failed)} (status written to {path})")
    return {"status_path": str(path), "categories": verdicts}


def _category_status(root: Any, ti: Any, day: dt.date, edition: Edition, body: str, category: str) -> Any:
    from osms.status import CategoryStatus

    feeds = [f for f in edition.feeds if f.body == body and f.category == category]
    feed_info: dict[str, dict[str, Any]] = {}
    errors: list[str] = []
    schema_changes: list[str] = []
    for f in feeds:
        counts = ti.xcom_pull(task_ids=f"{category}.extract_{f.system}")
        if counts:
            feed_info[f.system] = {k: counts[k] for k in ("rows", "pages", "retries") if k in counts}
        error_path = layout.extract_error(root, day, body, f.system, category)
        if error_path.exists():
            error = json.loads(error_path.read_text(encoding="utf-8"))
            feed_info[f.system] = {"error": error["error"], "kind": error.get("kind", "extract_failed")}
            if error.get("kind") == "schema_change":
                schema_changes.append(f"{f.system}: {error['error']}")
            else:
                errors.append(f"{f.system}: {error['error']}")
    if schema_changes and not errors:
        # the source answered, but with other columns than the decree's contract:
        # a batch-level verdict on the data, not a failure to get it
        return CategoryStatus(category=category, status="held_back",
                              reason="schema change: " + "; ".join(schema_changes), feeds=feed_info)
    outcome = ti.xcom_pull(task_ids=f"{category}.validate")
    if errors or not outcome:
        reason = "; ".join(errors) if errors else "validation did not complete (see the validate task's log)"
        return CategoryStatus(category=category, status="failed", reason=reason, feeds=feed_info)
    return CategoryStatus(
        category=category,
        status=outcome["verdict"],
        reason=outcome.get("reason"),
        rows_in=outcome["rows_in"],
        rows_published=outcome["rows_published"],
        rows_quarantined=outcome["rows_quarantined"],
        quarantined_by_rule=outcome.get("quarantined_by_rule", {}),
        warnings_by_rule=outcome.get("warnings_by_rule", {}),
        feeds=feed_info,
    )


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
    ) as dag:
        validations = []
        for category, systems in plan:
            with TaskGroup(group_id=category, tooltip=f"row {category}"):
                extracts = [
                    extract.override(task_id=f"extract_{system}")(body=body, system=system, category=category)
                    for system in systems
                ]
                checked = validate(body=body, category=category)
                extracts >> checked
            validations.append(checked)
        validations >> publish_status(body=body)
    return dag
