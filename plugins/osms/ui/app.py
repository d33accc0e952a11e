"""The "Data quality" pages inside Airflow: an Airflow 3 plugin's FastAPI app.

Mounted by the API server at ``/osms`` (``fastapi_apps``) and shown in Airflow's
navigation through an external view (``/plugin/data-quality``, an iframe of
``/osms/quality``). For a chosen date D:

- ``/osms/quality?day=D``: per category its verdict (published, partial, carried
  forward, missing), rows in, published, quarantined per rule, warnings, and the
  date it is carried forward from; per body the same and why it was held back or
  failed; 30-day trends of rows in and of the quarantine rate per category;
- ``/osms/docs/D/``: that day's Great Expectations Data Docs, with their styles and
  scripts served from vendored copies (the pages never reach outside);
- ``/osms/package?day=D``: the package's manifest, each file's checksum checked, the
  signature checked with the pipeline's public key, the chain link to the previous
  package, and the receiver's receipt;
- ``/osms/api/...``: the same as JSON, for tools.

Security. A mounted sub-app does not inherit the API server's route dependencies, so
this app puts its own on *every* route, static files included: the caller must carry
Airflow's JWT (the UI's ``_token`` cookie or an ``Authorization: Bearer`` header) and
be allowed the custom view ``Data quality`` by the auth manager (viewer and up with
the simple auth manager). The OpenAPI and docs routes FastAPI would add are switched
off. File paths from URLs are resolved inside their folder or refused. The pages show
counts, rule names, codes, dates and checksums only: no IIN or name is read.

Configuration: ``OSMS_DATA_DIR`` (the data root, as for the DAGs) and
``OSMS_SIGNING_PUBLIC_KEY`` (PEM path of the key packages are checked against;
default: the development key in ``$OSMS_KEY_DIR`` or ``~/.osms/keys``).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from markupsafe import Markup

from osms.core import layout
from osms.ui import assets as ui_assets
from osms.ui.charts import line_chart
from osms.ui.report import (
    TREND_DAYS,
    BadDay,
    available_days,
    day_report,
    docs_dir,
    package_view,
    parse_day,
    trends,
)

URL_PREFIX = "/osms"
VIEW_NAME = "Data quality"
DECISIONS_VIEW = "QA decisions"
URL_ROUTE = "data-quality"
TEMPLATES = Path(__file__).with_name("templates")
ICON = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" fill="none" stroke="#4a90d9" stroke-width="2">'
    '<path d="M3 3v18h18"/><path d="M7 15l4-4 3 3 5-6"/></svg>'
)
STATUS_LABELS = {
    "published": "published", "partial": "partial", "carried_forward": "carried forward",
    "missing": "missing", "held_back": "held back", "failed": "failed",
}

Authorize = Callable[..., Any]


def data_root() -> Path:
    return layout.data_dir()


def public_key_path() -> Path | None:
    """The PEM public key packages are checked against, or None when there is none."""
    configured = os.environ.get("OSMS_SIGNING_PUBLIC_KEY")
    if configured:
        return Path(configured)
    from osms.core.keys import PUBLIC_NAME, default_key_dir

    path = default_key_dir() / PUBLIC_NAME
    return path if path.is_file() else None


def airflow_authorization() -> Authorize:
    """A dependency: Airflow's authenticated user, allowed the custom view ``Data quality``."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.core_api.security import get_user

    def authorize(user: Any = Depends(get_user)) -> Any:
        if not get_auth_manager().is_authorized_custom_view(method="GET", resource_name=VIEW_NAME, user=user):
            raise HTTPException(status_code=403, detail="Forbidden: the Data quality view is not allowed")
        return user

    return authorize


def _templates() -> Any:
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape(["html"]),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = lambda v: "—" if v is None else f"{v:,}".replace(",", "\u202f")
    env.filters["pct"] = lambda v: "—" if v is None else f"{v * 100:.2f} %"
    env.filters["label"] = lambda s: STATUS_LABELS.get(s, s)
    return env


def create_app(authorize: Authorize | None = None, *, prefix: str = URL_PREFIX,
               root: Callable[[], Path] = data_root, key: Callable[[], Path | None] = public_key_path) -> FastAPI:
    """The plugin's app; ``authorize`` guards every route (Airflow's auth when not given)."""
    guard = authorize or airflow_authorization()
    app = FastAPI(title="OSMS data quality", docs_url=None, redoc_url=None, openapi_url=None,
                  dependencies=[Depends(guard)])
    env = _templates()

    def page(name: str, status_code: int = 200, **ctx: Any) -> HTMLResponse:
        html = env.get_template(name).render(prefix=prefix, **ctx)
        return HTMLResponse(html, status_code=status_code, headers=_NO_STORE)

    def day_or_latest(day: str | None) -> tuple[dt.date | None, list[dt.date]]:
        days = available_days(root())
        if day:
            return _day(day), days
        return (days[0] if days else None), days

    @app.get("/", include_in_schema=False)
    def index() -> RedirectResponse:
        return RedirectResponse(f"{prefix}/quality", status_code=307)

    @app.get("/quality", response_class=HTMLResponse)
    def quality_page(day: str | None = Query(default=None)) -> HTMLResponse:
        chosen, days = day_or_latest(day)
        if chosen is None:
            return page("empty.html", days=days, chosen=None, title="Data quality")
        report = day_report(root(), chosen)
        trend = trends(root(), chosen, TREND_DAYS)
        charts = {}
        for code, points in trend.series.items():
            rows = [(p.day, p.rows_in) for p in points]
            rate = [(p.day, p.quarantine_rate) for p in points]
            charts[code] = (
                Markup(line_chart(rows, title=f"{code}: rows in", kind="count", color="#1f6feb")),
                Markup(line_chart(rate, title=f"{code}: quarantine rate", kind="rate", color="#d1242f")),
            )
        return page("quality.html", report=report, days=days, chosen=chosen, charts=charts,
                    trend_days=TREND_DAYS, title=f"Data quality {chosen}")

    @app.get("/package", response_class=HTMLResponse)
    def package_page(day: str | None = Query(default=None)) -> HTMLResponse:
        chosen, days = day_or_latest(day)
        if chosen is None:
            return page("empty.html", days=days, chosen=None, title="Package")
        view = package_view(root(), chosen, key())
        return page("package.html", view=view, days=days, chosen=chosen, title=f"Package {chosen}")

    @app.get("/docs/{day}")
    def data_docs_root(day: str) -> RedirectResponse:
        return RedirectResponse(f"{prefix}/docs/{_day(day).isoformat()}/", status_code=307)

    @app.get("/docs/{day}/{path:path}")
    def data_docs(day: str, path: str = "") -> Response:
        site = docs_dir(root(), _day(day))
        if not path or path == "index.html":
            # rendered here when a body's report is newer than the site (the package DAG renders each day once)
            from osms.quality.docs import current_site

            site = current_site(root(), _day(day)) or site
        target = _inside(site, path or "index.html")
        if target.suffix == ".html":
            html = target.read_text(encoding="utf-8", errors="replace")
            return HTMLResponse(ui_assets.localize_docs_html(html, f"{prefix}/static"), headers=_NO_STORE)
        return FileResponse(target, media_type=ui_assets.media_type(target), headers=_NO_STORE)

    @app.get("/static/{path:path}")
    def static(path: str) -> Response:
        target = _inside(ui_assets.UI_STATIC, path)
        return FileResponse(target, media_type=ui_assets.media_type(target),
                            headers={"Cache-Control": "private, max-age=86400"})

    @app.get("/icon.svg")
    def icon() -> Response:
        return Response(ICON, media_type="image/svg+xml", headers={"Cache-Control": "private, max-age=86400"})

    @app.get("/api/days")
    def api_days() -> JSONResponse:
        return JSONResponse([d.isoformat() for d in available_days(root())])

    @app.get("/api/quality/{day}")
    def api_quality(day: str) -> JSONResponse:
        d = _day(day)
        report = day_report(root(), d)
        trend = trends(root(), d, TREND_DAYS)
        doc = report.to_dict()
        doc["trends"] = {
            code: [{"day": p.day.isoformat(), "rows_in": p.rows_in, "rows_quarantined": p.rows_quarantined}
                   for p in points]
            for code, points in trend.series.items()
        }
        return JSONResponse(doc, headers=_NO_STORE)

    @app.get("/api/package/{day}")
    def api_package(day: str) -> JSONResponse:
        view = package_view(root(), _day(day), key())
        if not view.exists:
            raise HTTPException(status_code=404, detail=f"no package for {day}")
        return JSONResponse(view.to_dict(), headers=_NO_STORE)

    return app


_NO_STORE = {"Cache-Control": "no-store"}


def _day(text: str) -> dt.date:
    try:
        return parse_day(text)
    except BadDay as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from None


def _inside(folder: Path, relative: str) -> Path:
    """``folder/relative`` if it is a file inside ``folder`` (see ``ui_assets.safe_file``); else 404."""
    try:
        return ui_assets.safe_file(folder, relative)
    except (ValueError, OSError):  # refused, missing or unreadable: all look the same
        raise HTTPException(status_code=404, detail="Not Found") from None


def external_view() -> dict[str, Any]:
    """The navigation entry: Airflow shows ``/osms/quality`` in an iframe at ``/plugin/data-quality``."""
    return {
        "name": VIEW_NAME,
        "href": f"{URL_PREFIX}/quality",
        "icon": f"{URL_PREFIX}/icon.svg",
        "url_route": URL_ROUTE,
        "destination": "nav",
        "nav_top_level": True,
    }
