"""The one HTTP client: the retry policy table, Retry-After, the error envelope, connections, one loop for all.

HTTP is answered by a requests transport adapter scripted per request; nothing leaves the process.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict

from osms.orchestration import alerts

from osms.package import deliver

from osms.sources import extract
from osms.sources.connections import connection_url
from osms.sources.http_client import (
    POLICY,
    Action,
    HttpClient,
    Refused,
    RetryPolicy,
    Transient,
    describe,
    error_envelope,
)

pytestmark = pytest.mark.unit

PLUGINS = Path(__file__).resolve().parents[2] / "plugins" / "osms"


class Scripted(BaseAdapter):
    """Answers each request with the next (status, body, headers) or raises the next exception."""

    def __init__(self, *answers: tuple[int, Any, dict[str, str]] | Exception) -> None:
        super().__init__()
        self.answers = list(answers)
        self.seen: list[requests.PreparedRequest] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        self.seen.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        status, body, headers = answer
        response = requests.Response()
        response.status_code = status
        response.headers = CaseInsensitiveDict({"Content-Type": "application/json", **headers})
        response.raw = io.BytesIO(body if isinstance(body, bytes) else json.dumps(body).encode())
        response.url, response.request = request.url, request
        return response

    def close(self) -> None:
        pass

    def session(self) -> requests.Session:
        session = requests.Session()
        session.mount("http://", self)
        session.mount("https://", self)
        return session


def _client(adapter: Scripted, **policy: Any) -> tuple[HttpClient, list[float]]:
    sleeps: list[float] = []
    client = HttpClient(token="tok-123", timeout=5, policy=RetryPolicy(**({"attempts": 4} | policy)),
                        session=adapter.session(), sleep=sleeps.append)
    return client, sleeps


# ---------------------------------------------------------------- the policy table


@pytest.mark.parametrize(("status", "action"), [
    (None, Action.RETRY), (408, Action.RETRY), (429, Action.RATE_LIMITED), (500, Action.RETRY),
    (502, Action.RETRY), (503, Action.RETRY), (504, Action.RETRY), (400, Action.FAIL), (401, Action.FAIL),
    (403, Action.FAIL), (404, Action.FAIL), (409, Action.FAIL), (422, Action.FAIL), (301, Action.FAIL),
    (204, Action.FAIL),
])
def test_the_policy_table_says_what_each_answer_means(status: int | None, action: Action) -> None:
    assert RetryPolicy().action(status) is action


def test_the_table_is_data_and_read_only() -> None:
    assert POLICY["network"] is Action.RETRY and POLICY[429] is Action.RATE_LIMITED and POLICY["4xx"] is Action.FAIL
    with pytest.raises(TypeError):
        POLICY[404] = Action.RETRY  # type: ignore[index]


def test_the_loop_reads_the_table_it_is_given() -> None:
    # arrange: a policy that fails 503 at once
    adapter = Scripted((503, {"error": "unavailable", "message": "later"}, {}))
    client, sleeps = _client(adapter, actions={**POLICY, 503: Action.FAIL})
    # act / assert
    with pytest.raises(Refused) as refused:
        client.request("GET", "http://src.test/x", what="x")
    assert refused.value.status == 503 and len(adapter.seen) == 1 and sleeps == []


# ---------------------------------------------------------------- Retry-After and backoff


def test_retry_after_is_honoured_and_capped_backoff_otherwise() -> None:
    adapter = Scripted(
        (429, {"error": "rate_limited", "message": "slow down"}, {"Retry-After": "7"}),
        (503, {"error": "unavailable", "message": "later"}, {"Retry-After": "3600"}),  # capped
        requests.ConnectionError("refused"),
        (200, {"ok": True}, {}),
    )
    client, sleeps = _client(adapter, backoff_base=0.5, backoff_max=30.0)
    answer = client.request("GET", "http://src.test/x", what="x")
    assert answer.status == 200 and answer.json() == {"ok": True}
    assert sleeps == [7.0, 30.0, 2.0]
    assert client.retry_causes == {"HTTP 429": 1, "HTTP 503": 1, "connection error": 1}


def test_transient_failures_run_out_with_the_last_cause_and_the_attempts() -> None:
    adapter = Scripted(*[(503, {"error": "unavailable", "message": "down"}, {})] * 3)
    client, sleeps = _client(adapter, attempts=3, backoff_base=0.01, backoff_max=0.05)
    with pytest.raises(Transient) as gave_up:
        client.request("POST", "http://rcv.test/commit", what="commit", json={"a": 1})
    assert (gave_up.value.status, gave_up.value.code, gave_up.value.attempts) == (503, "unavailable", 3)
    assert gave_up.value.cause == "HTTP 503 unavailable: down" and sleeps == [0.01, 0.02]


def test_a_check_of_a_successful_answer_can_ask_for_a_retry() -> None:
    adapter = Scripted((200, b"half", {}), (200, b"whole\n", {}))
    client, sleeps = _client(adapter)

    def complete(answer: Any) -> bytes:
        if not answer.content.endswith(b"\n"):
            raise Transient("cut off", kind="truncated page")
        return answer.content

    assert client.request("GET", "http://src.test/x", what="x", check=complete) == b"whole\n"
    assert client.retry_causes == {"truncated page": 1} and sleeps == [0.5]


def test_the_token_is_sent_as_bearer_and_never_shown() -> None:
    adapter = Scripted(requests.ConnectionError("refused tok-123"), (401, {"error": "unauthorized"}, {}))
    client, _ = _client(adapter)
    with pytest.raises(Refused) as refused:
        client.request("GET", "http://src.test/x", what="x")
    assert adapter.seen[0].headers["Authorization"] == "Bearer tok-123"
    assert "tok-123" not in str(refused.value) and refused.value.cause == "HTTP 401 unauthorized"


# ---------------------------------------------------------------- the error envelope


@pytest.mark.parametrize(("body", "expected"), [
    (b'{"error": "conflict", "message": "already  committed\\n with ffff"}',
     ("conflict", "already committed with ffff")),
    (b'{"error": "not_found"}', ("not_found", "")),
    (b'{"message": "no code"}', (None, "no code")),
    (b'{"error": 7, "message": "x"}', (None, "x")),
    (b"<html>bad</html>", (None, "")),
    (b"[1, 2]", (None, "")),
    (b"", (None, "")),
    (b"\xff\xfe", (None, "")),
])
def test_the_error_envelope_is_read_once_for_every_endpoint(body: bytes, expected: tuple) -> None:
    assert error_envelope(body) == expected


def test_an_error_message_is_cut_to_a_quotable_length() -> None:
    code, message = error_envelope(json.dumps({"error": "e", "message": "x" * 5000}).encode())
    assert code == "e" and len(message) == 300


def test_describe() -> None:
    assert describe(409, "conflict", "taken") == "HTTP 409 conflict: taken"
    assert describe(400, None, "") == "HTTP 400"


# ---------------------------------------------------------------- connections, read once


def _conn(**fields: Any) -> SimpleNamespace:
    base = {"host": "127.0.0.1", "schema": "http", "port": None, "conn_type": "http", "extra_dejson": {}}
    return SimpleNamespace(**(base | fields))


@pytest.mark.parametrize(("fields", "url"), [
    ({"port": 8081}, "http://127.0.0.1:8081"),
    ({"host": "alerts.test", "schema": "https", "port": 8443, "extra_dejson": {"endpoint": "/hooks/osms"}},
     "https://alerts.test:8443/hooks/osms"),
    ({"host": "https://hooks.chat.test/services/T0/B1/XYZ", "schema": None},
     "https://hooks.chat.test/services/T0/B1/XYZ"),
    ({"host": "http://127.0.0.1", "port": 9000}, "http://127.0.0.1:9000"),
    ({"host": "http://127.0.0.1:9000/base", "port": 1}, "http://127.0.0.1:9000/base"),
    ({"host": "rcv.test", "schema": "ftp", "conn_type": "https"}, "https://rcv.test"),
])
def test_one_reading_of_a_connection_url(fields: dict, url: str) -> None:
    assert connection_url(_conn(**fields), "c") == url


def test_a_connection_without_a_host_is_refused() -> None:
    with pytest.raises(ValueError, match="'c' has no host"):
        connection_url(_conn(host=" "), "c")


# ---------------------------------------------------------------- one loop for the three clients


def test_a_retry_loop_is_built_in_one_module_only() -> None:
    loops = {p.name for p in PLUGINS.rglob("*.py")
             if re.search(r"\btenacity\b|\bRetrying\b", p.read_text(encoding="utf-8"))}
    assert loops == {"http_client.py"}


def test_sources_receiver_and_webhook_share_the_client() -> None:
    source = extract.SourceClient(extract.SourceEndpoint("http://src.test", "tok"))
    receiver = deliver._Client(deliver.ReceiverEndpoint("http://rcv.test", "tok"), "P1", None, lambda _: None)
    try:
        assert isinstance(source.http, HttpClient) and isinstance(receiver.http, HttpClient)
        assert source.http.policy.actions is POLICY and receiver.http.policy.actions is POLICY
        assert source.http.policy.attempts == 7 and receiver.http.policy.attempts == 7
    finally:
        source.close()
        receiver.close()
    # the webhook: a 429 now waits its Retry-After like the other clients (it once retried 5xx only)
    adapter = Scripted((429, {}, {"Retry-After": "0"}), (200, {}, {}))
    hook = alerts.Webhook(conn_id="hook", url="https://hook.test/x", token=None)
    assert alerts.send_alert(hook, {"m": "x"}, session=adapter.session(), backoff=0) == 200
    assert len(adapter.seen) == 2
