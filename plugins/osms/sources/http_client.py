"""The one HTTP client of the pipeline: source systems, the State Corporation and the alert webhook.

What every conversation shares lives here, once: bearer auth on a requests session, the retry
policy written as data (:data:`POLICY`: what an answer means, retry / fail / rate-limited), the
backoff and ``Retry-After`` rules, the error envelope ``{"error": code, "message": text}`` every
endpoint of the contract answers with, and the one retry loop (tenacity) that reads the policy.

What differs per endpoint stays with its caller: which statuses are a success (``ok``), what
checks a successful answer must pass (``check``, e.g. a source's page cut off mid-line, which
raises :class:`Transient` so the same loop retries it), how a failure is worded for people, and
what may be shown (a receiver's URL is fine in a message, a chat webhook's URL is its secret).

Messages hold the status, the endpoint's error code and its message (folded to one line, cut to a
quotable length, IINs masked: :func:`osms.core.redact.quote`), never the token, a request or
response body beyond that, or record content.

An endpoint is not trusted with this process's memory or time: an answer is read piece by piece
and given up past ``max_bytes`` (an error's body past :data:`ERROR_BODY_BYTES`, which is plenty
for the envelope), or once it is still arriving at the request's ``deadline`` (a source that
drips its answer a byte a second never trips a socket timeout). Redirects are never followed:
a 3xx fails with the cause, and the ``Location`` host gets nothing, no token, no file.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any, TypeVar

import requests
import tenacity

from osms.core.redact import quote

__all__ = [
    "ERROR_BODY_BYTES",
    "POLICY",
    "Action",
    "Answer",
    "HttpClient",
    "Refused",
    "RetryPolicy",
    "TooLarge",
    "TooSlow",
    "Transient",
    "backoff_seconds",
    "describe",
    "error_envelope",
    "parse_retry_after",
]

T = TypeVar("T")

# An endpoint's error message is quoted at most this long, its error code at most CODE_QUOTE.
MAX_QUOTE = 300
CODE_QUOTE = 64
# Bodies are read in pieces of at most 1 MiB: a 50 000-record page arrives in a few dozen reads.
READ_CHUNK = 1 << 20
# The most of an error's body that is read: the envelope is a few hundred bytes; the rest is not looked at.
ERROR_BODY_BYTES = 64 << 10
# The most of a successful answer read when the caller says nothing (a receipt, a list of packages, a
# webhook's reply are kilobytes); a source's pages have their own bound (osms.sources.extract).
DEFAULT_MAX_BYTES = 16 << 20


class Action(StrEnum):
    """What an answer means for the request that got it."""

    RETRY = "retry"  # transient: back off and try again (a Retry-After sent with it is honoured)
    RATE_LIMITED = "rate-limited"  # the endpoint asks to slow down: wait its Retry-After (capped), else back off
    FAIL = "fail"  # another try gets the same answer: fail at once, quoting the endpoint's error


# The retry policy, as data: an exact status first, then its class ("5xx"), then "network" for a request
# that got no complete answer (connection refused or dropped, no answer within the timeout). Every client
# reads this one table; what a caller accepts as success is the caller's ``ok``.
POLICY: Mapping[int | str, Action] = MappingProxyType({
    "network": Action.RETRY,
    408: Action.RETRY,  # request timeout: the endpoint saying "later"
    429: Action.RATE_LIMITED,
    "5xx": Action.RETRY,
    "4xx": Action.FAIL,  # 400, 401, 403, 404, 409, 422, ...: the request itself is wrong
    "3xx": Action.FAIL,  # a redirect not followed: the connection points at the wrong place
    "1xx": Action.FAIL,
    "2xx": Action.FAIL,  # a success status the caller did not expect
})


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long: attempts per request, and backoff ``base * 2**(retry - 1)`` up to ``backoff_max``.

    A ``Retry-After`` is honoured up to ``backoff_max`` too, so an endpoint asking for an hour cannot
    hold a worker for an hour (the task's own retry takes over).
    """

    attempts: int = 7
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    actions: Mapping[int | str, Action] = field(default_factory=lambda: POLICY, repr=False)

    def action(self, status: int | None) -> Action:
        """What an answer with ``status`` means (None: no complete answer came)."""
        if status is None:
            return self.actions["network"]
        return self.actions.get(status) or self.actions.get(f"{status // 100}xx") or Action.FAIL

    def delay(self, retry: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``retry``: the endpoint's Retry-After, else the backoff."""
        if retry_after is not None:
            return min(retry_after, self.backoff_max)
        return backoff_seconds(retry, base=self.backoff_base, maximum=self.backoff_max)


# --------------------------------------------------------------------------
# Failures
# --------------------------------------------------------------------------


class Transient(Exception):
    """A failure worth another attempt; ``cause`` is short and free of content, ``kind`` counts it."""

    def __init__(self, cause: str, *, kind: str | None = None, status: int | None = None, code: str | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(cause)
        self.cause, self.status, self.code, self.retry_after = cause, status, code, retry_after
        self.kind = kind or (f"HTTP {status}" if status is not None else "network")
        self.attempts = 1  # set by the loop when it gives up


class Refused(Exception):
    """An answer another attempt will not change (the policy says fail)."""

    def __init__(self, cause: str, *, status: int | None, code: str | None = None, message: str = "") -> None:
        super().__init__(cause)
        self.cause, self.status, self.code, self.message = cause, status, code, message


class TooLarge(Refused):
    """An answer larger than the caller allows: reading stopped at ``limit`` bytes."""

    def __init__(self, cause: str, *, status: int | None, limit: int) -> None:
        super().__init__(cause, status=status)
        self.limit = limit


class TooSlow(Refused):
    """An answer still arriving at the request's deadline: a source dripping it is not waited for."""

    def __init__(self, cause: str, *, status: int | None, deadline: float) -> None:
        super().__init__(cause, status=status)
        self.deadline = deadline


# --------------------------------------------------------------------------
# Small pure pieces: Retry-After, backoff, the error envelope
# --------------------------------------------------------------------------


def parse_retry_after(value: str | None, *, cap: float, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After (seconds or an HTTP date), at most ``cap``; None if absent or unreadable."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), cap)


def backoff_seconds(retry: int, *, base: float, maximum: float) -> float:
    """Exponential backoff before retry number ``retry`` (1, 2, ...): base, 2*base, 4*base ... at most maximum."""
    return min(maximum, base * 2 ** max(retry - 1, 0))


def error_envelope(content: bytes) -> tuple[str | None, str]:
    """The contract's error body ``{"error": code, "message": text}`` as (code, message); folded and cut."""
    try:
        body = json.loads(content) if content else None
    except (ValueError, UnicodeDecodeError, RecursionError):
        body = None
    code, message = None, ""
    if isinstance(body, dict):
        code = quote(body["error"], CODE_QUOTE) or None if isinstance(body.get("error"), str) else None
        message = quote(str(body.get("message") or ""), MAX_QUOTE)
    return code, message


def mib(n: float) -> str:
    """A size for people: ``179 MiB``, ``512 KiB``."""
    return f"{n / 2**20:.0f} MiB" if n >= 2**20 else f"{n / 2**10:.0f} KiB"


def describe(status: int, code: str | None, message: str) -> str:
    """``HTTP 409 conflict: package 'x' is already committed ...``; ``HTTP 400`` when the body says nothing."""
    return f"HTTP {status}" + (f" {code}" if code else "") + (f": {message}" if message else "")


# --------------------------------------------------------------------------
# The client
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """A complete answer: status, headers and the whole body (read inside the retried attempt)."""

    status: int
    headers: Mapping[str, str]
    content: bytes

    def json(self) -> Any:
        """The body as JSON (ValueError when it is not)."""
        return json.loads(self.content)


class HttpClient:
    """Bearer auth on one session, and every request through :data:`POLICY` and the one retry loop.

    ``shown_as`` names the endpoint in a network failure's cause (``connection to <it> failed``);
    None keeps it out (a chat webhook's URL is its secret). ``log`` is the caller's logger, so a
    retry is logged where the work is. ``max_bytes`` bounds a successful answer and ``deadline``
    (seconds, None: only the socket ``timeout``) the whole of one answer; a request may set its own.
    ``session`` and ``sleep`` are for tests.
    """

    def __init__(self, *, token: str | None, timeout: float, policy: RetryPolicy,
                 session: requests.Session | None = None, sleep: Callable[[float], None] = time.sleep,
                 shown_as: str | None = None, log: logging.Logger | None = None,
                 headers: Mapping[str, str] | None = None, max_bytes: int = DEFAULT_MAX_BYTES,
                 deadline: float | None = None) -> None:
        self.timeout, self.policy, self.shown_as = timeout, policy, shown_as
        self.max_bytes, self.deadline = max_bytes, deadline
        self.session = session if session is not None else requests.Session()
        # every request says allow_redirects=False; requests would still read a 3xx's whole body to prepare the
        # request it does not send (Session.send -> resolve_redirects): unbounded, so it gets nothing to resolve
        self.session.resolve_redirects = _no_redirects  # type: ignore[method-assign]
        self._sleep = sleep
        self._log = log or logging.getLogger(__name__)
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"
        self.session.headers.update(headers or {})
        self.retry_causes: Counter[str] = Counter()

    @property
    def retries(self) -> int:
        """Retries made so far, over every request."""
        return sum(self.retry_causes.values())

    def close(self) -> None:
        """Release the connection pool."""
        self.session.close()

    def request(self, method: str, url: str, *, what: str, ok: Collection[int] = (200,),
                check: Callable[[Answer], T] | None = None, body: Callable[[], Any] | None = None,
                max_bytes: int | None = None, deadline: float | None = None, **kwargs: Any) -> T | Answer:
        """One request, retried as the policy says; its Answer (or what ``check`` makes of it).

        ``what`` names the request in log lines (``package X: commit``). ``check`` runs on a
        successful answer inside the attempt: raising :class:`Transient` retries it like any other
        transient failure. ``body`` opens a fresh request body per attempt (a file is read again).
        ``max_bytes`` and ``deadline`` override the client's for this request.
        Raises :class:`Refused` at once (:class:`TooLarge`, :class:`TooSlow` among them), or the
        last :class:`Transient` (``attempts`` set) once the policy's attempts are spent.
        """
        policy = self.policy

        def wait(state: tenacity.RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            return policy.delay(state.attempt_number, exc.retry_after if isinstance(exc, Transient) else None)

        def before_sleep(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            kind = exc.kind if isinstance(exc, Transient) else type(exc).__name__
            self.retry_causes[kind] += 1
            delay = state.next_action.sleep if state.next_action else 0.0
            self._log.warning("%s: %s, retrying in %.2f s (attempt %d of %d)", what, getattr(exc, "cause", kind),
                              delay, state.attempt_number + 1, policy.attempts)

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(policy.attempts),
            wait=wait,
            retry=tenacity.retry_if_exception_type(Transient),
            before_sleep=before_sleep,
            sleep=self._sleep,
            reraise=True,
        )
        limit = self.max_bytes if max_bytes is None else max_bytes
        seconds = self.deadline if deadline is None else deadline
        attempts = 0
        try:
            for attempt in retrying:
                with attempt:
                    attempts = attempt.retry_state.attempt_number
                    answer = self._send(method, url, ok=ok, body=body, max_bytes=limit, deadline=seconds, **kwargs)
                    return check(answer) if check is not None else answer
        except Transient as exc:
            exc.attempts = attempts
            raise
        raise AssertionError("unreachable")  # pragma: no cover: tenacity returns or raises

    def _send(self, method: str, url: str, *, ok: Collection[int], body: Callable[[], Any] | None,
              max_bytes: int, deadline: float | None, **kwargs: Any) -> Answer:
        """One attempt: send, read the answer within its bounds, sort it by the policy."""
        data = body() if body is not None else None  # a fresh file object per attempt
        if data is not None:
            kwargs["data"] = data
        started = time.monotonic()
        response = None
        try:
            # never a redirect, whatever a caller passes: the Location host would get the token and the body
            kwargs.update(timeout=self.timeout, stream=True, allow_redirects=False)
            response = getattr(self.session, method.lower())(url, **kwargs)
            status = response.status_code
            content = self._read(response, limit=max_bytes if status in ok else ERROR_BODY_BYTES,
                                 fail=status in ok, deadline_at=None if deadline is None else started + deadline,
                                 deadline=deadline)
        except requests.Timeout:
            raise Transient(f"no answer within {self.timeout:g} s", kind="timeout") from None
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError,
                requests.exceptions.ContentDecodingError) as exc:
            where = f" to {self.shown_as}" if self.shown_as else ""
            raise Transient(f"connection{where} failed ({type(exc).__name__})", kind="connection error") from None
        finally:
            if response is not None:
                response.close()
            if data is not None and hasattr(data, "close"):
                data.close()
        answer = Answer(status=status, headers=response.headers, content=content)
        if status in ok:
            return answer
        code, message = error_envelope(answer.content)
        cause = describe(status, code, message)
        if 300 <= status < 400:
            cause += self._redirect_note(response.headers.get("Location"))
        action = self.policy.action(status)
        if action is Action.FAIL:
            raise Refused(cause, status=status, code=code, message=message)
        retry_after = parse_retry_after(response.headers.get("Retry-After"), cap=self.policy.backoff_max)
        raise Transient(cause, status=status, code=code, retry_after=retry_after)

    def _redirect_note(self, location: str | None) -> str:
        """Why a 3xx is not followed, naming where it pointed (scheme and host only; nothing for a secret URL)."""
        where = ""
        if location and self.shown_as:
            import urllib.parse

            parts = urllib.parse.urlsplit(location.strip())
            if parts.scheme and parts.netloc:
                where = f" to {quote(f'{parts.scheme}://{parts.netloc}', 80)}"
        return f" (a redirect{where}: not followed, the connection must name the endpoint itself)"

    def _read(self, response: requests.Response, *, limit: int, fail: bool, deadline_at: float | None,
              deadline: float | None) -> bytes:
        """The answer's body, read in pieces: past ``limit`` bytes TooLarge (``fail``) or cut, past the deadline
        TooSlow."""
        status = response.status_code
        declared = (response.headers.get("Content-Length") or "").strip()
        if fail and declared.isdigit() and int(declared) > limit:
            raise TooLarge(self._too_large(limit, declared=int(declared)), status=status, limit=limit)
        raw = response.raw
        if raw is None:  # an answer already read whole (a transport that gives it so): only its size to check
            content = response.content or b""
            if fail and len(content) > limit:
                raise TooLarge(self._too_large(limit), status=status, limit=limit)
            return content[:limit]
        read = _reader(raw)
        pieces: list[bytes] = []
        size = 0
        while True:
            if deadline_at is not None and time.monotonic() > deadline_at:
                raise TooSlow(f"the answer was still arriving after {deadline:g} s ({mib(size)} so far):"
                              f" no complete answer within the deadline of {deadline:g} s", status=status,
                              deadline=float(deadline or 0))
            try:
                piece = read(READ_CHUNK)
            except _URLLIB3_TIMEOUTS:
                raise requests.Timeout() from None
            except _URLLIB3_ERRORS as exc:
                raise requests.ConnectionError(type(exc).__name__) from None
            if not piece:
                break
            size += len(piece)
            if size > limit:
                if fail:
                    raise TooLarge(self._too_large(limit), status=status, limit=limit)
                pieces.append(piece[: len(piece) - (size - limit)])
                break
            pieces.append(piece)
        return b"".join(pieces)

    @staticmethod
    def _too_large(limit: int, *, declared: int | None = None) -> str:
        said = f" (it declares {mib(declared)})" if declared is not None else ""
        return f"the answer is larger than the limit of {mib(limit)} ({limit:,} bytes){said}: not read further"


def _reader(raw: Any) -> Callable[[int], bytes]:
    """Reads of at most n bytes that return what has arrived (a drip is seen piece by piece), decoded.

    urllib3's ``read1`` returns after one read of the socket, with the content decoded (a gzip bomb is
    counted as it unpacks); its ``read(n)`` would block until n bytes came. Other file objects (tests'
    transports) are read as they are.
    """
    import urllib3.response

    if isinstance(raw, urllib3.response.BaseHTTPResponse):
        return lambda n: raw.read1(n, decode_content=True)
    return getattr(raw, "read1", None) or raw.read


def _no_redirects(*_args: Any, **_kwargs: Any) -> Iterator[Any]:
    """What a session resolves a redirect to: nothing (the 3xx is the answer, read within its bound)."""
    return iter(())


def _urllib3_errors() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    import urllib3.exceptions as u

    return (u.ReadTimeoutError, TimeoutError), (u.HTTPError, OSError)


_URLLIB3_TIMEOUTS, _URLLIB3_ERRORS = _urllib3_errors()
