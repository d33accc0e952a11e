"""One HTTP app serving every source information system (the Source API).

    GET /v1/systems/{system}/records?category=&as_of=YYYY-MM-DD&cursor=&limit=
    Authorization: Bearer <the system's token>
    200 application/x-ndjson, one record a line; X-Next-Cursor absent on the last page
    401/403 bad token, 404 unknown system or category, 422 bad parameters,
    429 with Retry-After, 5xx

Records come from the synthetic population, with the configured defects
injected (ground truth at ``/_admin/ground-truth``) and the configured faults
shown. Admin routes (``/_admin/...``) need the admin token.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import threading
import time
import zlib
from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from mocks import ndjson
from mocks.config import FIRST_DAY, LAST_DAY, MockConfig
from mocks.defects import GROUND_TRUTH_SCHEMA, apply_defects, required_columns
from mocks.faults import FaultDice, SystemFaults, page_has_malformed_line

DEFAULT_LIMIT = 5000
MAX_LIMIT = 50_000
NDJSON = "application/x-ndjson"


class RecordSource(Protocol):
    """What the app needs of a population: the feeds and their clean records."""

    def feeds(self) -> tuple[tuple[str, str], ...]: ...

    def records(self, system: str, category: str, as_of: dt.date) -> pa.Table: ...


class ApiError(Exception):
    """An answer other than 200, with the contract's JSON body."""

    def __init__(self, status: int, error: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.error, self.message, self.headers = status, error, message, headers or {}


class SourceService:
    """The state behind the app: feeds, day tables (cached), faults, statistics."""

    def __init__(self, population: RecordSource, config: MockConfig, *, cache_size: int = 6) -> None:
        from osms.core.registry import default_registry

        self.population = population
        self.config = config
        self.feeds = {system: set() for system, _ in population.feeds()}
        for system, category in population.feeds():
            self.feeds[system].add(category)
        if config.tokens is None or config.admin_token is None:
            config.with_credentials(sorted(self.feeds))
        self.tokens: dict[str, str] = dict(config.tokens or {})
        self.faults: dict[str, SystemFaults] = {s: config.faults_for(s) for s in self.feeds}
        self.dice = FaultDice(config.seed)
        self.stats: dict[str, Counter[str]] = {s: Counter() for s in self.feeds}
        self._required = {c.code: required_columns(c.record_columns) for c in default_registry().all_categories()}
        self._cache: OrderedDict[tuple[str, str, dt.date], tuple[pa.Table, pa.Table]] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self._building: dict[tuple[str, str, dt.date], threading.Lock] = {}

    # ------------------------------------------------------------------ data

    def day_table(self, system: str, category: str, as_of: dt.date) -> tuple[pa.Table, pa.Table]:
        """(served records with defects, ground truth) of one feed on one day; cached."""
        key = (system, category, as_of)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
            build_lock = self._building.setdefault(key, threading.Lock())
        with build_lock:  # one build per key, however many requests wait for it
            with self._lock:
                if key in self._cache:
                    return self._cache[key]
            clean = self.population.records(system, category, as_of)
            served, truth = apply_defects(
                clean,
                system=system,
                category=category,
                as_of=as_of,
                rates=self.config.rates_for(system, category),
                seed=self.config.seed,
                required=self._required.get(category, ()),
            )
            with self._lock:
                self._cache[key] = (served, truth)
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
                self._building.pop(key, None)
            return served, truth

    def faults_on(self, system: str, as_of: str | None) -> SystemFaults:
        """The system's faults for a request of day ``as_of``: the day's own when configured, else the system's."""
        if as_of and self.config.day_faults:
            try:
                day = dt.date.fromisoformat(as_of)
            except ValueError:
                return self.faults[system]  # refused by name when the request is parsed
            on_day = self.config.day_faults.get(day, {})
            if system in on_day:
                return on_day[system]
        return self.faults[system]

    def served_table(self, system: str, category: str, as_of: dt.date) -> pa.Table:
        """The day table less what a volume-drop fault withholds."""
        table, _ = self.day_table(system, category, as_of)
        drop = self.faults_on(system, as_of.isoformat()).volume_drop
        if drop <= 0 or table.num_rows == 0:
            return table
        rng = np.random.default_rng([self.config.seed, zlib.crc32(system.encode()), as_of.toordinal(), 7])
        return table.filter(pa.array(rng.random(table.num_rows) >= drop))

    def ground_truth(self, system: str, category: str, as_of: dt.date) -> pa.Table:
        """Which served records carry which injected defect."""
        return self.day_table(system, category, as_of)[1]

    def all_ground_truth(self, as_of: dt.date) -> pa.Table:
        """Ground truth of every feed on a day."""
        tables = [self.ground_truth(s, c, as_of) for s in sorted(self.feeds) for c in sorted(self.feeds[s])]
        return pa.concat_tables(tables) if tables else GROUND_TRUTH_SCHEMA.empty_table()

    # ------------------------------------------------------------------ requests

    def authorise(self, system: str, header: str | None) -> None:
        """Check the bearer token against the system's; raise ApiError if it is not."""
        if system not in self.feeds:
            raise ApiError(404, "unknown_system", f"there is no source system {system!r}")
        if not header or not header.startswith("Bearer "):
            raise ApiError(401, "unauthorized", "an Authorization: Bearer <token> header is required",
                           {"WWW-Authenticate": "Bearer"})
        token = header[len("Bearer "):].strip()
        if secrets_equal(token, self.tokens[system]):
            return
        if any(secrets_equal(token, t) for t in self.tokens.values()):
            raise ApiError(403, "forbidden", f"this token is not valid for system {system!r}")
        raise ApiError(401, "unauthorized", "the token is not valid", {"WWW-Authenticate": "Bearer"})

    def page(self, system: str, params: dict[str, str], path: str = "") -> Response:
        """One page of a feed, after the system's faults (of that day, when keyed to it) have had their say."""
        faults = self.faults_on(system, params.get("as_of"))
        if faults.redirect_to:
            self.stats[system]["redirected"] += 1
            query = "&".join(f"{k}={v}" for k, v in params.items())
            return Response(status_code=302, headers={"Location": f"{faults.redirect_to.rstrip('/')}{path}?{query}"})
        verdict, detail = self.dice.roll(system, faults)
        self.stats[system][verdict] += 1
        if verdict == "down":
            raise ApiError(503, "unavailable", f"system {system!r} is not available", {"Retry-After": "60"})
        if verdict == "token_rejected":
            raise ApiError(401, "token_rejected", f"system {system!r} rejected the token")
        category, as_of, offset, limit = self._parse(system, params)
        if verdict == "rate_limited":
            raise ApiError(429, "rate_limited", "too many requests", {"Retry-After": str(faults.retry_after_seconds)})
        if verdict == "server_error":
            status = (500, 502, 503)[detail % 3]
            raise ApiError(status, "server_error", f"system {system!r} failed to answer")
        if verdict == "slow":
            time.sleep(faults.slow_seconds)

        if faults.html_pages:
            return Response(content=_HTML_ERROR_PAGE, media_type="text/html; charset=utf-8", status_code=200)
        table = self.served_table(system, category, as_of)
        total = table.num_rows
        if offset > total:
            raise ApiError(422, "bad_cursor", "the cursor points past the end of the feed")
        page = table.slice(offset, limit)
        page = _hostile_values(page, faults, offset)
        for col in faults.drop_columns:
            if col in page.column_names:
                page = page.drop_columns([col])
        body = ndjson.encode(page, rename=faults.rename_columns)
        if page.num_rows and page_has_malformed_line(
            self.config.seed, system, category, as_of.isoformat(), offset, faults.malformed_line_rate
        ):
            body = _break_one_line(body, offset)
        if verdict == "truncate" and len(body) > 2:
            body = _cut_mid_line(body, detail)
        if offset == 0 and page.num_rows and faults.deep_json_depth:
            body = _deep_first_line(body, faults.deep_json_depth)
        headers = {"X-Total-Count": str(total), "X-Page-Records": str(page.num_rows)}
        if faults.repeat_cursor and total:
            headers["X-Next-Cursor"] = encode_cursor(min(limit, total - 1), system, category, as_of)  # always the same
        elif offset + limit < total:
            headers["X-Next-Cursor"] = encode_cursor(offset + limit, system, category, as_of)
        pieces: Any = None
        if offset == 0 and page.num_rows and faults.huge_page_bytes:
            pieces = _huge_first_record(body, faults.huge_page_bytes)
        if faults.drip_bytes_per_second:
            pieces = _drip(pieces if pieces is not None else iter([body]), faults.drip_bytes_per_second)
        if pieces is not None:
            return StreamingResponse(pieces, media_type=NDJSON, headers=headers)
        return Response(content=body, media_type=NDJSON, headers=headers)

    def _parse(self, system: str, params: dict[str, str]) -> tuple[str, dt.date, int, int]:
        unknown = set(params) - {"category", "as_of", "cursor", "limit"}
        if unknown:
            raise ApiError(422, "bad_parameter", f"unknown parameter(s): {', '.join(sorted(unknown))}")
        category = params.get("category")
        if not category:
            raise ApiError(422, "bad_parameter", "the category parameter is required")
        if category not in self.feeds[system]:
            raise ApiError(404, "unknown_category", f"system {system!r} serves no category {category!r}")
        raw_day = params.get("as_of")
        if not raw_day:
            raise ApiError(422, "bad_parameter", "the as_of parameter is required (YYYY-MM-DD)")
        try:
            as_of = dt.date.fromisoformat(raw_day)
        except ValueError:
            raise ApiError(422, "bad_parameter", f"as_of {raw_day!r} is not a date of the form YYYY-MM-DD") from None
        if not FIRST_DAY <= as_of <= LAST_DAY:
            raise ApiError(422, "bad_parameter",
                           f"as_of {raw_day} is outside the served period {FIRST_DAY}..{LAST_DAY}")
        try:
            limit = int(params.get("limit", DEFAULT_LIMIT))
        except ValueError:
            raise ApiError(422, "bad_parameter", "limit must be a whole number") from None
        if not 1 <= limit <= MAX_LIMIT:
            raise ApiError(422, "bad_parameter", f"limit must be between 1 and {MAX_LIMIT}")
        offset = 0
        if params.get("cursor"):
            offset = decode_cursor(params["cursor"], system, category, as_of)
        return category, as_of, offset, limit


_HTML_ERROR_PAGE = (b"<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\n"
                    b"<body><h1>Bad Gateway</h1><p>The upstream system did not answer.</p></body></html>\n")


def _hostile_values(page: pa.Table, faults: SystemFaults, offset: int) -> pa.Table:
    """The page with the record ids and names a hostile fault asks for (IINs as ids, megabyte names)."""
    if faults.iin_record_ids and "iin" in page.column_names and "record_id" in page.column_names:
        page = page.set_column(page.schema.get_field_index("record_id"), "record_id", page.column("iin"))
    long = max(0, min(faults.long_strings - offset, page.num_rows))
    if long and "last_name" in page.column_names:
        names = page.column("last_name").to_pylist()
        names[:long] = ["A" * faults.long_string_bytes] * long
        page = page.set_column(page.schema.get_field_index("last_name"), "last_name", pa.array(names, pa.string()))
    return page


def _first_line(body: bytes) -> tuple[dict[str, Any], bytes]:
    line, _, rest = body.partition(b"\n")
    return json.loads(line), rest


def _deep_first_line(body: bytes, depth: int) -> bytes:
    """The page with its first record's last_name nested ``depth`` arrays deep."""
    record, rest = _first_line(body)
    record["last_name"] = "\0"
    head, tail = json.dumps(record, ensure_ascii=False).encode().split(b'"\\u0000"', 1)
    return head + b"[" * depth + b"]" * depth + tail + b"\n" + rest


def _huge_first_record(body: bytes, size: int, piece: int = 1 << 20) -> Any:
    """The page as pieces, its first record's last_name ``size`` bytes long: never held whole."""
    record, rest = _first_line(body)
    record["last_name"] = "\0"
    head, tail = json.dumps(record, ensure_ascii=False).encode().split(b'"\\u0000"', 1)

    def pieces() -> Any:
        yield head + b'"'
        block = b"A" * piece
        left = size
        while left > 0:
            yield block[: min(piece, left)]
            left -= piece
        yield b'"' + tail + b"\n" + rest

    return pieces()


def _drip(pieces: Any, rate: float, tick: float = 0.1) -> Any:
    """The pieces sent a few bytes every ``tick`` seconds, ``rate`` bytes a second."""
    step = max(1, int(rate * tick))
    for piece in pieces:
        for at in range(0, len(piece), step):
            time.sleep(tick)
            yield piece[at : at + step]


def secrets_equal(a: str, b: str) -> bool:
    """Constant-time comparison of two tokens."""
    import hmac

    return hmac.compare_digest(a.encode(), b.encode())


def _fingerprint(system: str, category: str, as_of: dt.date) -> str:
    return f"{zlib.crc32(f'{system}|{category}|{as_of.isoformat()}'.encode()):08x}"


def encode_cursor(offset: int, system: str, category: str, as_of: dt.date) -> str:
    """An opaque cursor, valid only for the query it came from."""
    raw = f"{offset}:{_fingerprint(system, category, as_of)}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, system: str, category: str, as_of: dt.date) -> int:
    """The offset in a cursor; ApiError 422 if it is not one of this query's."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        offset_s, fp = raw.split(":", 1)
        offset = int(offset_s)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ApiError(422, "bad_cursor", "the cursor is not one this system issued") from None
    if fp != _fingerprint(system, category, as_of) or offset < 0:
        raise ApiError(422, "bad_cursor", "the cursor belongs to another query (category or as_of differ)")
    return offset


def _break_one_line(body: bytes, salt: int) -> bytes:
    lines = body.split(b"\n")
    i = salt % max(1, len(lines) - 1)
    # cut the object short: what a source's serialiser leaves after a crash mid-write
    lines[i] = lines[i][: max(1, len(lines[i]) // 2)]
    return b"\n".join(lines)


def _cut_mid_line(body: bytes, detail: int) -> bytes:
    cut = 1 + detail % (len(body) - 1)
    while cut < len(body) and body[cut - 1 : cut] == b"\n":
        cut += 1  # never end exactly at a line boundary: the cut must be visible
    return body[:cut] if cut < len(body) else body[:-2]


def create_app(service: SourceService) -> FastAPI:
    """The Source API over ``service``."""
    app = FastAPI(title="OSMS mock source systems", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = service

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"error": exc.error, "message": exc.message}, status_code=exc.status, headers=exc.headers)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/systems/{system}/records")
    def records(system: str, request: Request) -> Response:
        service.authorise(system, request.headers.get("authorization"))
        return service.page(system, dict(request.query_params), path=request.url.path)

    def admin(request: Request) -> None:
        header = request.headers.get("authorization") or ""
        if not secrets_equal(header.removeprefix("Bearer ").strip(), service.config.admin_token or ""):
            raise ApiError(401, "unauthorized", "the admin token is required", {"WWW-Authenticate": "Bearer"})

    def admin_route(path: str, method: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            app.add_api_route(path, fn, methods=[method])
            return fn

        return register

    @admin_route("/_admin/feeds", "GET")
    def feeds(request: Request) -> dict[str, Any]:
        admin(request)
        return {"feeds": [{"system": s, "category": c} for s in sorted(service.feeds) for c in sorted(service.feeds[s])]}

    @admin_route("/_admin/faults", "GET")
    def get_faults(request: Request) -> dict[str, Any]:
        admin(request)
        return {s: f.to_dict() for s, f in sorted(service.faults.items())}

    @admin_route("/_admin/faults/{system}", "PUT")
    async def put_faults(system: str, request: Request) -> dict[str, Any]:
        admin(request)
        if system not in service.feeds:
            raise ApiError(404, "unknown_system", f"there is no source system {system!r}")
        try:
            service.faults[system] = SystemFaults.from_mapping(json.loads(await request.body() or b"{}"))
        except (ValueError, TypeError) as exc:
            raise ApiError(422, "bad_faults", str(exc)) from None
        return service.faults[system].to_dict()

    @admin_route("/_admin/faults", "DELETE")
    def clear_faults(request: Request) -> dict[str, str]:
        admin(request)
        for s in service.faults:
            service.faults[s] = SystemFaults()
        return {"status": "cleared"}

    @admin_route("/_admin/stats", "GET")
    def stats(request: Request) -> dict[str, Any]:
        admin(request)
        return {s: dict(c) for s, c in sorted(service.stats.items())}

    @admin_route("/_admin/ground-truth", "GET")
    def ground_truth(request: Request) -> Response:
        admin(request)
        q = dict(request.query_params)
        try:
            as_of = dt.date.fromisoformat(q.get("as_of", ""))
        except ValueError:
            raise ApiError(422, "bad_parameter", "as_of (YYYY-MM-DD) is required") from None
        system, category = q.get("system"), q.get("category")
        if system and category:
            if category not in service.feeds.get(system, ()):
                raise ApiError(404, "unknown_feed", f"no feed {system}.{category}")
            truth = service.ground_truth(system, category, as_of)
        else:
            truth = service.all_ground_truth(as_of)
        return Response(content=ndjson.encode(truth), media_type=NDJSON)

    return app
