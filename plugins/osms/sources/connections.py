"""Airflow HTTP connections as the pipeline's endpoints, read in one place: sources, the receiver, the alert webhook.

A connection (e.g. ``AIRFLOW_CONN_<ID>``) gives ``host`` (a name, or a whole URL as chat webhooks
are handed out), optionally ``schema`` (http/https), ``port`` and an extra ``endpoint`` path; the
password is the bearer token. Extras named by the caller tune the client (numbers, typed here).

Plain ``http`` carries the token and the data unencrypted: it is taken as it is only to a loopback
host (127.0.0.0/8, ::1, ``localhost``). To any other host it needs the extra
``"allow_plain_http": true`` (a private network such as the compose network of the demo mocks),
and then every read of the connection logs a warning that names it; without the extra the
connection is refused (:class:`ConnectionRefused`), naming the connection and the extra.
"""

from __future__ import annotations

import ipaddress
import logging
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from osms.sources.http_client import RetryPolicy

__all__ = ["ALLOW_PLAIN_HTTP", "ConnectionRefused", "HttpConnection", "HttpEndpoint", "connection_url",
           "read_connection", "read_connection_async"]

log = logging.getLogger(__name__)

ALLOW_PLAIN_HTTP = "allow_plain_http"  # the extra that allows http to a host that is not loopback


class ConnectionRefused(ValueError):
    """A connection the pipeline will not use as it is (another try reads the same): the message says why."""


@dataclass(frozen=True)
class HttpConnection:
    """An HTTP connection as the clients use it: URL, bearer token (never in a repr), typed extras."""

    conn_id: str
    url: str = field(repr=False)  # a chat webhook's URL may carry its secret
    token: str | None = field(repr=False)
    settings: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class HttpEndpoint:
    """Where the pipeline's HTTP client calls, as a connection sets it: URL, token, timeout, retries and backoff.

    A source (:class:`osms.sources.paging.SourceEndpoint`) adds its paging bounds; the receiver
    (``osms.package.deliver.ReceiverEndpoint``) only a longer timeout.
    """

    base_url: str
    token: str = field(repr=False)  # never in a repr, so never in a log line by accident
    timeout: float = 60.0
    # Retries per request; a request is given up after max_retries + 1 attempts.
    max_retries: int = 6
    # Backoff: base * 2**(retry - 1) seconds, at most backoff_max; a Retry-After is honoured up to
    # backoff_max too, so a peer asking for an hour cannot stall a worker for an hour (the task's
    # own retry takes over).
    backoff_base: float = 0.5
    backoff_max: float = 30.0

    @property
    def policy(self) -> RetryPolicy:
        """The client's retry policy with this endpoint's attempts and backoff."""
        from osms.sources.http_client import RetryPolicy

        return RetryPolicy(attempts=self.max_retries + 1, backoff_base=self.backoff_base, backoff_max=self.backoff_max)


# Connection extras that tune any endpoint, with their types.
HTTP_EXTRAS: dict[str, Any] = {"timeout": float, "max_retries": int, "backoff_base": float, "backoff_max": float}


def connection_url(conn: Any, conn_id: str) -> str:
    """The URL of an Airflow connection: ``host`` (or a whole URL in it), ``schema``, ``port``, extra ``endpoint``."""
    host = (conn.host or "").strip()
    if not host.strip("/"):
        raise ConnectionRefused(f"connection {conn_id!r} has no host")
    if "://" in host:
        url = host  # a whole URL, kept as given (a webhook's trailing slash may matter)
        parts = urllib.parse.urlsplit(url)
        if conn.port and parts.port is None:
            url = urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.netloc}:{conn.port}"))
    else:
        scheme = (conn.schema or "http").lower()
        if scheme not in ("http", "https"):
            scheme = "https" if (conn.conn_type or "").lower() == "https" else "http"
        url = f"{scheme}://{host.rstrip('/')}" + (f":{conn.port}" if conn.port else "")
    endpoint = str((conn.extra_dejson or {}).get("endpoint") or "").strip().lstrip("/")
    return f"{url.rstrip('/')}/{endpoint}" if endpoint else url


def is_loopback(host: str | None) -> bool:
    """Whether a host name or address is this machine's loopback (no name is resolved)."""
    name = (host or "").strip().strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_scheme(url: str, conn_id: str, extra: Mapping[str, Any]) -> None:
    """Refuse plain http to a host that is not loopback unless the extra allows it (then warn, naming the connection)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() != "http" or is_loopback(parts.hostname):
        return
    if str(extra.get(ALLOW_PLAIN_HTTP, "")).strip().lower() in ("true", "1", "yes", "on"):
        log.warning("connection %r uses plain http to %s (allowed by its extra %s): the token and the data cross"
                    " the network unencrypted", conn_id, parts.hostname, ALLOW_PLAIN_HTTP)
        return
    raise ConnectionRefused(
        f"connection {conn_id!r} uses plain http to {parts.hostname}, which is not this machine: use https, or set"
        f" the connection's extra {ALLOW_PLAIN_HTTP!r} to true where the network between them is private")


def _from(conn: Any, conn_id: str, token_of: str | None, extras: Mapping[str, type]) -> HttpConnection:
    url = connection_url(conn, conn_id)
    if token_of is not None and not conn.password:
        raise ConnectionRefused(f"connection {conn_id!r} has no password ({token_of} bearer token)")
    extra = conn.extra_dejson or {}
    check_scheme(url, conn_id, extra)
    settings: dict[str, Any] = {}
    for name, kind in extras.items():
        if extra.get(name) is not None:
            try:
                settings[name] = kind(extra[name])
            except (TypeError, ValueError):
                raise ConnectionRefused(f"connection {conn_id!r}: extra {name!r} must be a number") from None
    return HttpConnection(conn_id=conn_id, url=url, token=conn.password or None, settings=settings)


def read_connection(conn_id: str, *, token_of: str | None = None,
                    extras: Mapping[str, type] | None = None) -> HttpConnection:
    """Read an Airflow HTTP connection; ``token_of`` (whose token the password is) makes the token required."""
    from airflow.sdk import BaseHook  # lazily: no airflow at import time

    return _from(BaseHook.get_connection(conn_id), conn_id, token_of, extras or {})


async def read_connection_async(conn_id: str, *, token_of: str | None = None,
                                extras: Mapping[str, type] | None = None) -> HttpConnection | None:
    """The same, from async code (the triggerer); None when the connection is not defined."""
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = await Connection.async_get(conn_id)
    except AirflowNotFoundException:
        return None
    return _from(conn, conn_id, token_of, extras or {})

