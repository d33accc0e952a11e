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
- ``/osms/api/...``: the same as JSON, for tools;
- ``POST /osms/decisions`` (the page's forms) and ``POST /osms/api/decisions`` (JSON): QA
  releases a feed held back on D, or confirms the hold, with a reason
  (:mod:`osms.core.decisions`).

Languages: English, Kazakh and Russian (:mod:`osms.core.i18n`); ``?lang=kk`` chooses one
and a cookie (``osms_lang``) remembers it, else the browser's ``Accept-Language`` decides.

Security. A mounted sub-app does not inherit the API server's route dependencies, so
this app puts its own on *every* route, static files included: the caller must carry
Airflow's JWT (the UI's ``_token`` cookie or an ``Authorization: Bearer`` header) and
be allowed the custom view ``Data quality`` by the auth manager (viewer and up with
the simple auth manager). A decision also needs the custom view ``QA decisions`` with
the method POST (FAB gives it to the roles ``qa`` and ``engineer`` only); the simple auth
manager allows every custom view to every viewer, so where ``OSMS_QA_DECIDERS`` names
users (the embedded shape: ``qa,engineer``) the decider must also be one of them, as
Airflow's human-in-the-loop tasks restrict who answers (``is_authorized_hitl_task``). A
decision is refused when the browser says it comes from another site (``Origin``,
``Sec-Fetch-Site``). The OpenAPI and docs routes FastAPI would add are switched
off. File paths from URLs are resolved inside their folder or refused. The pages show
counts, rule names, codes, dates and checksums only: no IIN or name is read.

Configuration: ``OSMS_DATA_DIR`` (the data root, as for the DAGs),
``OSMS_SIGNING_PUBLIC_KEY`` (PEM path of the key packages are checked against;
default: the development key in ``$OSMS_KEY_DIR`` or ``~/.osms/keys``) and
``OSMS_QA_DECIDERS`` (comma-separated user ids; unset: the permission alone decides).
"""

from __future__ import annotations

import datetime as dt
import json
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from markupsafe import Markup

from osms.core import layout, settings
from osms.core.decisions import DecisionRefused, record
from osms.core.i18n import COOKIE, LANGUAGES, N_, STATUS_LABELS, choose, gettext_for, translations
from osms.ui import assets as ui_assets
from osms.ui.charts import line_chart
from osms.ui.reasons import localize_reason
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
DECIDERS_ENV = "OSMS_QA_DECIDERS"
URL_ROUTE = "data-quality"
TEMPLATES = Path(__file__).with_name("templates")
ICON = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" fill="none" stroke="#4a90d9" stroke-width="2">'
    '<path d="M3 3v18h18"/><path d="M7 15l4-4 3 3 5-6"/></svg>'
)
FORM_MAX_BYTES = 8192  # a decision's form: a few codes and a reason of at most 500 characters
COOKIE_MAX_AGE = 365 * 24 * 3600
# What a refused decision tells the person, by the rule it broke (osms.core.decisions.DecisionRefused.code)
REFUSALS = {
    "reason_empty": N_("A decision needs a reason."),
    "reason_long": N_("The reason is too long: at most {limit} characters."),
    "reason_iin": N_("The reason holds a 12-digit number (an IIN?): personal data never goes in a reason."),
    "not_held_back": N_("Only a held-back feed is QA's to decide: {feed} is not held back on {day}."),
    "not_releasable": N_("{feed} on {day} has no validated rows to release: its data did not reach validation."),
    "nothing": N_("Nothing held back on {day} matches the decision."),
}

Authorize = Callable[..., Any]


def data_root() -> Path:
    return layout.data_dir()


def public_key_path() -> Path | None:
    """The PEM public key packages are checked against, or None when there is none."""
    configured = settings.current().signing_public_key
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


def qa_deciders() -> set[str]:
    """The user ids allowed to decide besides the permission (``OSMS_QA_DECIDERS``); empty: the permission decides."""
    return set(settings.current().qa_deciders)


def may_decide(manager: Any, user: Any) -> bool:
    """Whether ``user`` may make QA decisions: the permission, and one of ``OSMS_QA_DECIDERS`` where it is set."""
    if not manager.is_authorized_custom_view(method="POST", resource_name=DECISIONS_VIEW, user=user):
        return False
    deciders = qa_deciders()
    return not deciders or manager.is_authorized_hitl_task(assigned_users=deciders, user=user)


def decider_authorization() -> Authorize:
    """A dependency: the name of the user if they may make QA decisions, else None."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.core_api.security import get_user

    def decider(user: Any = Depends(get_user)) -> str | None:
        return str(user.get_name()) if may_decide(get_auth_manager(), user) else None

    return decider


def _templates(language: str) -> Any:
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape(["html"]),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                      extensions=["jinja2.ext.i18n"])
    env.install_gettext_translations(translations(language), newstyle=True)  # type: ignore[attr-defined]
    _ = gettext_for(language)
    env.filters["num"] = lambda v: "—" if v is None else f"{v:,}".replace(",", "\u202f")
    env.filters["pct"] = lambda v: "—" if v is None else f"{v * 100:.2f} %"
    env.filters["label"] = lambda s: _(STATUS_LABELS[s]) if s in STATUS_LABELS else s
    env.filters["reason"] = lambda text: localize_reason(text, language)
    env.filters["action"] = lambda a: _(ACTION_LABELS[a]) if a in ACTION_LABELS else a
    env.globals.update(language=language, languages=LANGUAGES)
    return env


ACTION_LABELS = {"release": N_("released"), "hold": N_("hold confirmed")}


def create_app(authorize: Authorize | None = None, *, prefix: str = URL_PREFIX,
               root: Callable[[], Path] = data_root, key: Callable[[], Path | None] = public_key_path,
               decider: Authorize | None = None,
               clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)) -> FastAPI:
    """The plugin's app; ``authorize`` guards every route, ``decider`` names who may decide (Airflow's when not
    given); ``clock`` says when a decision is made."""
    guard = authorize or airflow_authorization()
    # a stand-in login (tests) without a stand-in decider: nobody may decide
    deciders = decider or (decider_authorization() if authorize is None else _nobody)
    app = FastAPI(title="OSMS data quality", docs_url=None, redoc_url=None, openapi_url=None,
                  dependencies=[Depends(guard)])
    site = _Site(prefix, root, key, clock, {language: _templates(language) for language in LANGUAGES})
    _page_routes(app, site, deciders)
    _decision_routes(app, site, deciders)
    _file_routes(app, site)
    _api_routes(app, site)
    return app


@dataclass(frozen=True)
class _Site:
    """What the app's routes share: the URL prefix, the data root, the public key, the clock and the templates."""

    prefix: str
    root: Callable[[], Path]
    key: Callable[[], Path | None]
    clock: Callable[[], dt.datetime]
    envs: dict[str, Any]  # language -> its templates

    def page(self, name: str, language: str, asked: str | None, status_code: int = 200, **ctx: Any) -> HTMLResponse:
        """A page rendered in ``language``; the language ``asked`` for in the URL is remembered in a cookie."""
        html = self.envs[language].get_template(name).render(prefix=self.prefix, **ctx)
        response = HTMLResponse(html, status_code=status_code, headers=_NO_STORE)
        if asked in LANGUAGES:  # remembered for the next visit
            response.set_cookie(COOKIE, asked, max_age=COOKIE_MAX_AGE, path=self.prefix, samesite="lax",
                                httponly=True)
        return response

    def day_or_latest(self, day: str | None) -> tuple[dt.date | None, list[dt.date]]:
        """The day asked for, else the latest with data; and every day with data."""
        days = available_days(self.root())
        if day:
            return _day(day), days
        return (days[0] if days else None), days

    def quality(self, chosen: dt.date | None, days: list[dt.date], language: str, asked: str | None,
                who: str | None, status_code: int = 200, **flash: Any) -> HTMLResponse:
        """The Data quality page of ``chosen``, with its trend charts (``flash``: what a decision did)."""
        _ = gettext_for(language)
        if chosen is None:
            return self.page("empty.html", language, asked, days=days, chosen=None, title=_("Data quality"))
        report = day_report(self.root(), chosen, language)
        trend = trends(self.root(), chosen, TREND_DAYS)
        charts = {}
        for code, points in trend.series.items():
            rows = [(p.day, p.rows_in) for p in points]
            rate = [(p.day, p.quarantine_rate) for p in points]
            charts[code] = (
                Markup(line_chart(rows, title=_("{code}: rows in").format(code=code), kind="count",
                                  color="#1f6feb")),
                Markup(line_chart(rate, title=_("{code}: quarantine rate").format(code=code), kind="rate",
                                  color="#d1242f")),
            )
        return self.page("quality.html", language, asked, status_code=status_code, report=report, days=days,
                         chosen=chosen, charts=charts, trend_days=TREND_DAYS, may_decide=who is not None,
                         title=_("Data quality {day}").format(day=chosen), flash=flash or None)

    def decide(self, request: Request, who: str | None, fields: dict[str, str]
               ) -> tuple[list[Any], DecisionRefused | None]:
        """Record the decision on every held-back feed the fields name; (decisions recorded, the refusal if none)."""
        if who is None:
            raise HTTPException(status_code=403, detail=f"Forbidden: the {DECISIONS_VIEW} view is not allowed")
        _same_site(request)
        chosen = _day(fields.get("day", ""))
        category, body, system = (fields.get(k, "").strip() for k in ("category", "body", "system"))
        report = day_report(self.root(), chosen)
        targets = [(u.body, f.system, c.code) for c in report.categories if c.code == category for u in c.units
                   if body in ("", u.body) for f in u.feeds if system in ("", f.system) and f.decidable]
        if not category or not targets:
            return [], DecisionRefused("nothing held back matches", "nothing", day=chosen)
        made, refused = [], None
        moment = self.clock()
        for b, sys_, cat in targets:
            try:
                made.append(record(self.root(), day=chosen, body=b, system=sys_, category=cat,
                                   action=fields.get("action", ""), reason=fields.get("reason", ""), by=who,
                                   at=moment))
            except DecisionRefused as exc:
                refused = refused or exc
        return made, (refused if not made else None)


def _language_of(request: Request, lang: str | None = Query(default=None, max_length=8)) -> str:
    """A dependency: the page's language (``?lang=``, else the cookie, else the browser's)."""
    return choose(lang, request.cookies.get(COOKIE), request.headers.get("accept-language"))


def _page_routes(app: FastAPI, site: _Site, may_decide: Authorize) -> None:
    """The pages: the Data quality page of a day and its package's."""

    @app.get("/", include_in_schema=False)
    def index() -> RedirectResponse:
        return RedirectResponse(f"{site.prefix}/quality", status_code=307)

    @app.get("/quality", response_class=HTMLResponse)
    def quality_page(day: str | None = Query(default=None), done: int | None = Query(default=None, ge=0, le=1000),
                     lang: str | None = Query(default=None, max_length=8), language: str = Depends(_language_of),
                     who: str | None = Depends(may_decide)) -> HTMLResponse:
        chosen, days = site.day_or_latest(day)
        flash = {"recorded": done} if done is not None else {}
        return site.quality(chosen, days, language, lang, who, **flash)

    @app.get("/package", response_class=HTMLResponse)
    def package_page(day: str | None = Query(default=None), lang: str | None = Query(default=None, max_length=8),
                     language: str = Depends(_language_of)) -> HTMLResponse:
        _ = gettext_for(language)
        chosen, days = site.day_or_latest(day)
        if chosen is None:
            return site.page("empty.html", language, lang, days=days, chosen=None, title=_("Package"))
        view = package_view(site.root(), chosen, site.key())
        return site.page("package.html", language, lang, view=view, days=days, chosen=chosen,
                         title=_("Package {day}").format(day=chosen))


def _decision_routes(app: FastAPI, site: _Site, may_decide: Authorize) -> None:
    """QA's decisions: the page's form and the JSON API."""

    @app.post("/decisions", response_class=HTMLResponse)
    async def decisions_form(request: Request, language: str = Depends(_language_of),
                             who: str | None = Depends(may_decide)) -> Response:
        raw = await _bounded_body(request)
        fields = {k: v[0] for k, v in urllib.parse.parse_qs(raw.decode("utf-8", "replace"),
                                                            keep_blank_values=True).items()}
        made, refused = site.decide(request, who, fields)
        chosen = _day(fields["day"])
        if refused is not None:
            _ = gettext_for(language)
            message = _(REFUSALS[refused.code]).format(**{k: str(v) for k, v in refused.fields.items()}) \
                if refused.code in REFUSALS else str(refused)
            return site.quality(chosen, available_days(site.root()), language, None, who, status_code=409,
                                refused=message)
        target = (f"{site.prefix}/quality?day={chosen.isoformat()}&done={len(made)}"
                  f"#category-{fields.get('category', '')}")
        return RedirectResponse(target, status_code=303)

    @app.post("/api/decisions")
    async def decisions_api(request: Request, who: str | None = Depends(may_decide)) -> JSONResponse:
        if "application/json" not in request.headers.get("content-type", ""):
            raise HTTPException(status_code=415, detail="a decision is sent as application/json")
        try:
            fields = {k: str(v) for k, v in json.loads(await _bounded_body(request)).items()}
        except (ValueError, AttributeError):
            raise HTTPException(status_code=400, detail="a decision is a JSON object") from None
        made, refused = site.decide(request, who, fields)
        if refused is not None:
            return JSONResponse({"detail": str(refused), "code": refused.code}, status_code=409, headers=_NO_STORE)
        return JSONResponse({"decisions": [d.as_dict() for d in made]}, status_code=201, headers=_NO_STORE)


def _file_routes(app: FastAPI, site: _Site) -> None:
    """Files: a day's GX Data Docs, the vendored styles and scripts, the icon."""

    @app.get("/docs/{day}")
    def data_docs_root(day: str) -> RedirectResponse:
        return RedirectResponse(f"{site.prefix}/docs/{_day(day).isoformat()}/", status_code=307)

    @app.get("/docs/{day}/{path:path}")
    def data_docs(day: str, path: str = "") -> Response:
        docs = docs_dir(site.root(), _day(day))
        if not path or path == "index.html":
            # rendered here when a body's report is newer than the site (the package DAG renders each day once)
            from osms.quality.docs import current_site

            docs = current_site(site.root(), _day(day)) or docs
        target = _inside(docs, path or "index.html")
        if target.suffix == ".html":
            html = target.read_text(encoding="utf-8", errors="replace")
            return HTMLResponse(ui_assets.localize_docs_html(html, f"{site.prefix}/static"), headers=_NO_STORE)
        return FileResponse(target, media_type=ui_assets.media_type(target), headers=_NO_STORE)

    @app.get("/static/{path:path}")
    def static(path: str) -> Response:
        target = _inside(ui_assets.UI_STATIC, path)
        return FileResponse(target, media_type=ui_assets.media_type(target),
                            headers={"Cache-Control": "private, max-age=86400"})

    @app.get("/icon.svg")
    def icon() -> Response:
        return Response(ICON, media_type="image/svg+xml", headers={"Cache-Control": "private, max-age=86400"})


def _api_routes(app: FastAPI, site: _Site) -> None:
    """The pages' data as JSON, for tools."""

    @app.get("/api/days")
    def api_days() -> JSONResponse:
        return JSONResponse([d.isoformat() for d in available_days(site.root())])

    @app.get("/api/quality/{day}")
    def api_quality(day: str) -> JSONResponse:
        d = _day(day)
        report = day_report(site.root(), d)
        trend = trends(site.root(), d, TREND_DAYS)
        doc = report.to_dict()
        doc["trends"] = {
            code: [{"day": p.day.isoformat(), "rows_in": p.rows_in, "rows_quarantined": p.rows_quarantined}
                   for p in points]
            for code, points in trend.series.items()
        }
        return JSONResponse(doc, headers=_NO_STORE)

    @app.get("/api/package/{day}")
    def api_package(day: str) -> JSONResponse:
        view = package_view(site.root(), _day(day), site.key())
        if not view.exists:
            raise HTTPException(status_code=404, detail=f"no package for {day}")
        return JSONResponse(view.to_dict(), headers=_NO_STORE)


_NO_STORE = {"Cache-Control": "no-store"}


def _nobody() -> None:
    return None


async def _bounded_body(request: Request) -> bytes:
    """The request's body, refused beyond :data:`FORM_MAX_BYTES`."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > FORM_MAX_BYTES:
            raise HTTPException(status_code=413, detail=f"a decision is at most {FORM_MAX_BYTES} bytes")
    return body


def _same_site(request: Request) -> None:
    """Refuse a decision a browser says another site sent (a forged form riding on the UI's login cookie)."""
    site = request.headers.get("sec-fetch-site")
    if site and site not in ("same-origin", "none"):
        raise HTTPException(status_code=403, detail="Forbidden: a decision must come from the Data quality page")
    origin = request.headers.get("origin")
    if origin:
        host = request.headers.get("x-forwarded-host") or request.headers.get("host") or ""
        if urllib.parse.urlsplit(origin).netloc != host:
            raise HTTPException(status_code=403, detail="Forbidden: a decision must come from the Data quality page")


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
