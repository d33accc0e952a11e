"""Airflow HTTP connections as the pipeline's endpoints: one reading for sources and the receiver."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def http_connection(conn_id: str, token_of: str, numeric_extras: Mapping[str, type]) -> tuple[str, str, dict[str, Any]]:
    """(base URL, bearer token, typed extras) of an HTTP connection (e.g. given as ``AIRFLOW_CONN_<ID>``).

    ``token_of`` names whose token the password is, for the error message; only the
    extras named in ``numeric_extras`` are read, each converted to its type.
    """
    from airflow.sdk import BaseHook  # lazily: no airflow at import time

    conn = BaseHook.get_connection(conn_id)
    host = (conn.host or "").strip().rstrip("/")
    if not host:
        raise ValueError(f"connection {conn_id!r} has no host")
    if "://" in host:
        base_url = host
    else:
        scheme = (conn.schema or "http").lower()
        if scheme not in ("http", "https"):
            scheme = "https" if (conn.conn_type or "").lower() == "https" else "http"
        base_url = f"{scheme}://{host}"
    if conn.port and not base_url.rsplit("/", 1)[-1].count(":"):
        base_url = f"{base_url}:{conn.port}"
    if not conn.password:
        raise ValueError(f"connection {conn_id!r} has no password ({token_of} bearer token)")
    extra = conn.extra_dejson or {}
    settings: dict[str, Any] = {}
    for name, kind in numeric_extras.items():
        if extra.get(name) is not None:
            try:
                settings[name] = kind(extra[name])
            except (TypeError, ValueError):
                raise ValueError(f"connection {conn_id!r}: extra {name!r} must be a number") from None
    return base_url, conn.password, settings
