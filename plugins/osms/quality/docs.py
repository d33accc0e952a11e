"""Great Expectations Data Docs per date, rebuilt from the scrubbed GX reports.

``validate_category`` stores every (body, category) run as counts only
(``reports/gx/<D>/<body>/<category>.json``, see ``scrub.py``). GX's Data Docs
render from validation results held in a context's validation results store,
so :func:`build_data_docs` rebuilds one ``ExpectationSuiteValidationResult`` per
report, from those counts alone, into the in-memory store of a throw-away
ephemeral context, and lets GX's own ``SiteBuilder`` write the standard site
into ``reports/data_docs/<D>/``: ``index.html``, one validation page per
(body, category) under ``validations/`` and the suites under ``expectations/``.

What a reconstructed result holds:

* one expectation result per rule of the report, with the rule's counts merged
  over the chunks it ran on (``element_count``, ``unexpected_count``,
  ``missing_count`` and the percentages GX derives from them); every
  ``unexpected_list`` / ``partial_unexpected_list`` is empty, and nothing else
  of a GX result (no ``observed_value``, no index lists, no exception text);
* an expectation's success is the report's ``within_threshold`` (the rule's
  ``mostly`` over every row of the feed, as the verdict uses it), the result's
  success is the verdict (``published``);
* the expectation configurations (type, kwargs with the date's parameters
  resolved, meta, severity) come from the report's scrubbed ``gx_runs``;
* keys: suite = the report's suite (the category), run name ``osms-<D>``, run
  time = the report's GX batch load time, batch id = the body; the data asset
  is shown as ``<body>/<category>``.

The index page is GX's, plus one tab, "OSMS verdicts", with each (body,
category)'s verdict, reason and row counts (the verdict also weighs volume,
which no expectation shows). Pages carry no context id and no build time.
The files keep GX's links to its CSS/JS and logo on public CDNs; the Data
quality plugin (``osms.ui.app``) serves them with those links pointed at vendored
copies (``osms.ui.assets``), so a page opened there never reaches outside.
The build itself makes no network call, and GX analytics are off.

``render_day`` is called once a day, by the package DAG's ``data_docs`` task
after every body has reported (never by a validate task); it never raises: a
failed build is logged as a warning with the exception type only. The build uses
GX's public API: a context of its own (not made GX's current one), its stores,
``context.build_data_docs`` and the site's configured renderer and view classes.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from osms.core import layout
from osms.core.files import locked
from osms.quality.scrub import scrub_validation_result

if TYPE_CHECKING:
    from great_expectations.data_context import EphemeralDataContext

__all__ = ["build_data_docs", "current_site", "has_reports", "render_day"]

logger = logging.getLogger(__name__)

SITE_NAME = "osms_quality"
_EXCEPTION_NOTE = "could not be evaluated (details are not kept in the scrubbed reports)"


def render_day(data_dir: Path, as_of: dt.date) -> Path:
    """Build the GX Data Docs of the date into ``reports/data_docs/<D>/``; return its ``index.html``.

    Never raises: rendering must not fail a validation. A failure is logged as a
    warning naming the exception type only (a message could quote data).
    """
    index = layout.Paths(data_dir).data_docs_index(as_of)
    try:
        return build_data_docs(data_dir, as_of)
    except Exception as exc:  # noqa: BLE001  reports are written; the docs are a view of them
        logger.warning("GX Data Docs for %s not built: %s", as_of.isoformat(), type(exc).__name__)
        return index


def _reports(data_dir: Path, as_of: dt.date) -> list[Path]:
    return layout.Paths(data_dir).gx_reports(as_of)


def has_reports(data_dir: Path, as_of: dt.date) -> bool:
    """Whether any body has a scrubbed GX report for the date (the docs can be rendered)."""
    return bool(_reports(data_dir, as_of))


def current_site(data_dir: Path, as_of: dt.date) -> Path | None:
    """The date's Data Docs folder, rendered first if a report is newer than it (or it is missing); None if none.

    The package DAG's ``data_docs`` task renders each day's docs once all bodies have
    reported; a QA reviewer opening a day before then (a body's backfill, a day whose
    package has not run) gets them rendered from the reports there are, once, and
    the same pages again until a report changes.
    """
    site = layout.Paths(data_dir).data_docs(as_of)
    reports = _reports(data_dir, as_of)
    index = layout.Paths(data_dir).data_docs_index(as_of)
    if reports and (not index.is_file() or max(p.stat().st_mtime for p in reports) > index.stat().st_mtime):
        render_day(data_dir, as_of)
    return site if index.is_file() else None


def build_data_docs(data_dir: Path, as_of: dt.date) -> Path:
    """Rebuild ``reports/data_docs/<D>/`` from every scrubbed report of the date; raise on any failure.

    GX drops pages whose results are not in its store, so a build that read fewer
    reports could undo a newer one (a retried task overlapping its first try, a
    backfill beside the scheduled run). Builds of a date therefore take a lock and
    read the reports inside it: the last build sees every report written before it.
    """
    site = layout.Paths(data_dir).data_docs(as_of)
    lock = layout.Paths(data_dir).data_docs_lock(as_of)
    lock.parent.mkdir(parents=True, exist_ok=True)
    with locked(lock):
        reports = [
            scrub_validation_result(json.loads(p.read_text(encoding="utf-8")))  # scrubbed again: only counts go in
            for p in _reports(data_dir, as_of)
        ]
        from great_expectations.exceptions import DataContextRequiredError

        try:
            return _build(site, reports, as_of)
        except DataContextRequiredError:
            # GX resolves some objects through the process's current project; a process that never
            # validated (the API server, a task process of its own) has none. It gets an ephemeral
            # one, as validation's runner makes (there was none to replace), and the build runs again.
            import great_expectations as gx

            gx.get_context(mode="ephemeral")
            return _build(site, reports, as_of)


def _build(site: Path, reports: list[dict[str, Any]], as_of: dt.date) -> Path:
    from great_expectations.data_context.types.resource_identifiers import ValidationResultIdentifier

    context = _context(site, [_outcome_row(r) for r in reports])
    expected: list[ValidationResultIdentifier] = []
    suites: dict[str, dict[str, dict[str, Any]]] = {}
    for report in reports:
        key, result, configs = _validation_result(report, as_of)
        context.validation_results_store.set(key, result)
        expected.append(key)
        suites.setdefault(report["suite"], {}).update(configs)
    for name, configs in sorted(suites.items()):
        context.suites.add(_suite(name, configs))
    urls = context.build_data_docs(site_names=[SITE_NAME])

    index = site / layout.DATA_DOCS_INDEX
    # GX's SiteBuilder logs a page it could not render and carries on: a missing page is a failure here.
    missing = [k for k in expected if not (site / layout.DATA_DOCS_PAGES / Path(*_page_parts(k))).is_file()]
    if SITE_NAME not in urls or not index.is_file() or not index.stat().st_size or missing:
        raise RuntimeError(f"{len(missing)} validation page(s) or the index missing")
    return index


# --------------------------------------------------------------------------- the context


def _context(site: Path, outcomes: list[dict[str, Any]]) -> EphemeralDataContext:
    """An ephemeral context: in-memory stores, analytics off, one filesystem Data Docs site at ``site``.

    Built as ``EphemeralDataContext(...)``, not by ``gx.get_context``, so it does not
    become GX's process-wide current context: everything the build does goes through
    this context's own stores and factories, and the context of the validations
    (``osms.quality.runner``) stays the current one in a process that does both.
    """
    from great_expectations.data_context import EphemeralDataContext
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    import osms.quality.expectations  # noqa: F401  registers the IIN expectations (their renderers)

    view = {"module_name": __name__, "class_name": "QuietPageView"}
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
        data_docs_sites={
            SITE_NAME: {
                "class_name": "SiteBuilder",
                "show_how_to_buttons": False,
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(site)},
                "site_index_builder": {
                    "class_name": "DefaultSiteIndexBuilder",
                    "renderer": {"module_name": __name__, "class_name": "OsmsIndexPageRenderer",
                                 "outcomes": outcomes},
                    "view": {"module_name": __name__, "class_name": "QuietIndexPageView"},
                },
                "site_section_builders": {
                    "expectations": {"view": view},
                    "validations": {"view": view},
                    "profiling": "None",
                },
            }
        },
    )
    return EphemeralDataContext(project_config=config)


# --------------------------------------------------------------------------- results from reports


def _page_parts(key: Any) -> tuple[str, ...]:
    """Where GX's HtmlSiteStore puts a validation page, below ``validations/``."""
    *parts, last = key.to_tuple()
    return (*parts, f"{last}.html")


def _run_time(report: dict[str, Any], as_of: dt.date) -> dt.datetime:
    """The GX batch load time of the report's first run; midnight UTC of the date if there is none."""
    for run in report.get("gx_runs", []):
        stamp = run.get("meta", {}).get("batch_markers", {}).get("ge_load_time")
        if stamp:
            try:
                return dt.datetime.strptime(stamp, "%Y%m%dT%H%M%S.%fZ").replace(tzinfo=dt.UTC)
            except ValueError:
                break
    return dt.datetime.combine(as_of, dt.time(), tzinfo=dt.UTC)


def _configs(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each rule's expectation configuration: the report's own list, else the first scrubbed GX run that held it."""
    configs: dict[str, dict[str, Any]] = {}
    for c in report.get("expectations", []):
        rule = (c.get("meta") or {}).get("rule")
        if rule:
            configs[rule] = {"type": c["type"], "kwargs": c.get("kwargs") or {}, "meta": c.get("meta") or {},
                             "severity": c.get("severity", "critical")}
    for run in report.get("gx_runs", []):
        for res in run.get("results", []):
            c = res.get("expectation_config") or {}
            rule = (c.get("meta") or {}).get("rule")
            if rule and rule not in configs:
                kwargs = {k: v for k, v in (c.get("kwargs") or {}).items() if k != "batch_id"}
                configs[rule] = {"type": c["type"], "kwargs": kwargs, "meta": c.get("meta") or {},
                                 "severity": c.get("severity", "critical")}
    return configs


def _percent(part: int, whole: int) -> float | None:
    return 100.0 * part / whole if whole else None


def _expectation_result(counts: dict[str, Any], config: dict[str, Any]) -> Any:
    """One rule's merged counts as a GX ExpectationValidationResult, no values."""
    from great_expectations.core.expectation_validation_result import ExpectationValidationResult
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    element, unexpected = int(counts["element_count"]), int(counts["unexpected_count"])
    missing = int(counts.get("missing_count") or 0)
    nonmissing = element - missing
    result = {
        "element_count": element,
        "missing_count": missing,
        "missing_percent": _percent(missing, element),
        "unexpected_count": unexpected,
        "unexpected_percent": _percent(unexpected, nonmissing),
        "unexpected_percent_total": _percent(unexpected, element),
        "unexpected_percent_nonmissing": _percent(unexpected, nonmissing),
        "partial_unexpected_list": [],
        "unexpected_list": [],
    }
    raised = bool(counts.get("raised_exception"))
    return ExpectationValidationResult(
        success=bool(counts["within_threshold"]),
        expectation_config=ExpectationConfiguration(
            type=config["type"], kwargs=config["kwargs"], meta=config["meta"], severity=config["severity"]
        ),
        result={} if raised else result,
        exception_info={"raised_exception": raised, "exception_message": _EXCEPTION_NOTE if raised else None,
                        "exception_traceback": _EXCEPTION_NOTE if raised else None},
        meta={"rows": counts.get("rows"), "gx_success": counts.get("gx_success")},
    )


def _validation_result(report: dict[str, Any], as_of: dt.date) -> tuple[Any, Any, dict[str, dict[str, Any]]]:
    """(store key, ExpectationSuiteValidationResult, configurations by rule) for one scrubbed report."""
    from great_expectations import __version__ as gx_version
    from great_expectations.core.expectation_validation_result import ExpectationSuiteValidationResult
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    o = report["outcome"]
    suite = report["suite"]
    configs = _configs(report)
    results = [_expectation_result(r, configs[r["rule"]]) for r in report["results"] if r["rule"] in configs]
    ok = sum(1 for r in results if r.success)
    run_id = RunIdentifier(run_name=f"osms-{as_of.isoformat()}", run_time=_run_time(report, as_of))
    asset = f"{o['body']}/{o['category']}"
    key = ValidationResultIdentifier(ExpectationSuiteIdentifier(name=suite), run_id, o["body"])
    result = ExpectationSuiteValidationResult(
        success=o["verdict"] == "published",
        results=results,
        suite_name=suite,
        statistics={
            "evaluated_expectations": len(results),
            "successful_expectations": ok,
            "unsuccessful_expectations": len(results) - ok,
            "success_percent": _percent(ok, len(results)) if results else None,
        },
        meta={
            "great_expectations_version": gx_version,
            "run_id": run_id,
            "batch_spec": {"data_asset_name": asset, "body": o["body"], "category": o["category"],
                           "as_of": as_of.isoformat(), "edition": report.get("edition"),
                           "rows_in": o["rows_in"]},
            "active_batch_definition": {"datasource_name": "osms_landing", "data_connector_name": "fluent",
                                        "data_asset_name": asset, "batch_identifiers": {}},
        },
    )
    return key, result, configs


def _suite(name: str, configs: dict[str, dict[str, Any]]) -> Any:
    from great_expectations.core import ExpectationSuite
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    return ExpectationSuite(
        name=name,
        expectations=[
            ExpectationConfiguration(type=c["type"], kwargs=c["kwargs"], meta=c["meta"],
                                     severity=c["severity"]).to_domain_obj()
            for _, c in sorted(configs.items())
        ],
    )


def _outcome_row(report: dict[str, Any]) -> dict[str, Any]:
    o = report["outcome"]
    return {
        "body": o["body"], "category": o["category"], "verdict": o["verdict"], "reason": o.get("reason") or "",
        "rows_in": o["rows_in"], "rows_published": o["rows_published"], "rows_quarantined": o["rows_quarantined"],
        "quarantined_by_rule": ", ".join(f"{k}: {v:,}" for k, v in sorted(o.get("quarantined_by_rule", {}).items())),
        "warnings_by_rule": ", ".join(f"{k}: {v:,}" for k, v in sorted(o.get("warnings_by_rule", {}).items()) if v),
    }


# --------------------------------------------------------------------------- GX renderer and views


def _renderer_classes() -> tuple[type, type, type]:
    from great_expectations.render import (
        RenderedBootstrapTableContent,
        RenderedTabsContent,
    )
    from great_expectations.render.renderer import SiteIndexPageRenderer
    from great_expectations.render.view import DefaultJinjaIndexPageView, DefaultJinjaPageView
    from jinja2 import pass_context

    class _OsmsIndexPageRenderer(SiteIndexPageRenderer):
        """GX's index page, plus a tab with each (body, category)'s verdict and counts."""

        def __init__(self, outcomes: list[dict[str, Any]] | None = None, **kwargs: Any) -> None:
            super().__init__()
            self.outcomes = outcomes or []

        def render(self, index_links_dict: dict[str, Any]) -> Any:  # type: ignore[override]
            document = super().render(index_links_dict)
            if document is None or not self.outcomes:
                return document
            for block in document.sections[0].content_blocks:
                if isinstance(block, RenderedTabsContent):
                    block.tabs.insert(1 if block.tabs else 0,
                                      {"tab_name": "OSMS verdicts", "tab_content": self._verdicts_table()})
            return document

        def _verdicts_table(self) -> Any:
            columns = [("body", "Body"), ("category", "Category"), ("verdict", "Verdict"), ("reason", "Reason"),
                       ("rows_in", "Rows in"), ("rows_published", "Published"), ("rows_quarantined", "Quarantined"),
                       ("quarantined_by_rule", "Quarantined by rule"), ("warnings_by_rule", "Warnings by rule")]
            return RenderedBootstrapTableContent(
                table_columns=[{"field": f, "title": t, "sortable": "true"} for f, t in columns],
                table_data=[
                    {f: (f"{row[f]:,}" if isinstance(row[f], int) else str(row[f])) for f, _ in columns}
                    for row in sorted(self.outcomes, key=lambda r: (r["body"], r["category"]))
                ],
                table_options={"search": "true", "trimOnSearch": "false", "visibleSearch": "true",
                               "pagination": "true", "iconSize": "sm", "toolbarAlign": "right"},
                styling={"classes": ["col-12", "ge-index-page-table-container"],
                         "body": {"classes": ["table-sm", "osms-verdicts-table"]}},
            )

    class _Quiet:
        """No data context id and no build time in asset URLs; templates compiled once per process.

        GX builds a fresh jinja Environment per view and so recompiles every
        template on every build (most of a build's time); a view class keeps the
        first one's. Filters stay bound to that first view: views hold no state.
        """

        _shared_env: Any = None

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            cls = type(self)
            if cls._shared_env is None:
                cls._shared_env = self.env
            self.env = cls._shared_env

        @pass_context
        def add_data_context_id_to_url(self, jinja_context: Any, url: str, add_datetime: bool = True) -> str:
            return url

    class _QuietPageView(_Quiet, DefaultJinjaPageView):
        pass

    class _QuietIndexPageView(_Quiet, DefaultJinjaIndexPageView):
        pass

    return _OsmsIndexPageRenderer, _QuietPageView, _QuietIndexPageView


def __getattr__(name: str) -> Any:
    """GX instantiates the site's renderer and views by module and class name; GX is imported lazily."""
    names = ("OsmsIndexPageRenderer", "QuietPageView", "QuietIndexPageView")
    if name not in names:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return dict(zip(names, _renderer_classes_cached(), strict=True))[name]


_CLASSES: tuple[type, type, type] | None = None


def _renderer_classes_cached() -> tuple[type, type, type]:
    global _CLASSES  # noqa: PLW0603
    if _CLASSES is None:
        _CLASSES = _renderer_classes()
    return _CLASSES
