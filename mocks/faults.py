"""Faults a source system shows at the HTTP level, configurable per system.

Transient faults (5xx, 429, slow responses, a page cut off mid-line) are drawn
per request from a seeded stream, so a retry can succeed; persistent faults (a
malformed line on a page, a renamed or missing column, a volume drop, a
rejected token, a system that is down, a cursor that repeats itself, HTML pages
answered 200) hold for every request until the configuration changes, as they
would in a real system.

Hostile behaviours, persistent too: a page of ``huge_page_bytes`` (one record whose
name is that long, streamed: the mock never holds it), a page dripped at
``drip_bytes_per_second``, every request redirected (``redirect_to``, a 302), a line
nested ``deep_json_depth`` arrays deep, the IIN as every record's id
(``iin_record_ids``), and ``long_strings`` records whose name is ``long_string_bytes``
long (a megabyte by default).
"""

from __future__ import annotations

import threading
import zlib
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

import numpy as np

Verdict = Literal["ok", "down", "token_rejected", "rate_limited", "server_error", "slow", "truncate"]


@dataclass(frozen=True)
class SystemFaults:
    """The faults one source system shows; all off by default."""

    error_rate: float = 0.0  # share of requests answered 500/502/503
    rate_limit_rate: float = 0.0  # share answered 429 with Retry-After
    retry_after_seconds: int = 1
    slow_rate: float = 0.0  # share answered only after slow_seconds
    slow_seconds: float = 2.0
    truncate_rate: float = 0.0  # share of pages cut off in the middle of a line
    malformed_line_rate: float = 0.0  # share of pages holding one line that is not JSON
    reject_token: bool = False  # the system refuses its own (valid) token
    down: bool = False  # every request answered 503
    rename_columns: dict[str, str] = field(default_factory=dict)  # served key -> new key
    drop_columns: tuple[str, ...] = ()
    volume_drop: float = 0.0  # share of the feed's records withheld
    repeat_cursor: bool = False  # every page names the same next cursor: a client following it loops for ever
    html_pages: bool = False  # pages answered 200 with an HTML error page (a proxy in front of the system)
    huge_page_bytes: int = 0  # the first page's first record has a last_name this many bytes long (streamed)
    drip_bytes_per_second: float = 0.0  # every page is sent a few bytes at a time, at this rate
    redirect_to: str = ""  # every request answered 302 to this URL (the request's path and query appended)
    deep_json_depth: int = 0  # the first page's first line has a last_name nested this many arrays deep
    iin_record_ids: bool = False  # record_id is the person's IIN (a source using it as its id)
    long_strings: int = 0  # the feed's first records get a last_name of long_string_bytes
    long_string_bytes: int = 1 << 20

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> SystemFaults:
        """Faults from a config mapping; unknown keys are refused by name."""
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown fault setting(s) {sorted(unknown)}; known: {sorted(known)}")
        values = dict(values)
        if "drop_columns" in values:
            values["drop_columns"] = tuple(values["drop_columns"])
        faults = cls(**values)
        for name in ("error_rate", "rate_limit_rate", "slow_rate", "truncate_rate", "malformed_line_rate", "volume_drop"):
            if not 0 <= getattr(faults, name) <= 1:
                raise ValueError(f"{name} must be between 0 and 1")
        if faults.error_rate + faults.rate_limit_rate + faults.slow_rate + faults.truncate_rate > 1:
            raise ValueError("error, rate-limit, slow and truncate rates add up to more than 1")
        for name in ("huge_page_bytes", "drip_bytes_per_second", "deep_json_depth", "long_strings",
                     "long_string_bytes"):
            if getattr(faults, name) < 0:
                raise ValueError(f"{name} must not be negative")
        return faults

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain JSON-able data."""
        d = asdict(self)
        d["drop_columns"] = list(self.drop_columns)
        return d


class FaultDice:
    """Per-system seeded draws deciding each request's transient fault."""

    def __init__(self, seed: int) -> None:
        self._seed = seed
        self._streams: dict[str, np.random.Generator] = {}
        self._lock = threading.Lock()

    def roll(self, system: str, faults: SystemFaults) -> tuple[Verdict, int]:
        """The verdict for the next request to ``system``, and a number for details."""
        if faults.down:
            return "down", 0
        if faults.reject_token:
            return "token_rejected", 0
        with self._lock:
            rng = self._streams.setdefault(system, np.random.default_rng([self._seed, zlib.crc32(system.encode())]))
            u = float(rng.random())
            detail = int(rng.integers(0, 1 << 30))
        edges = np.cumsum([faults.rate_limit_rate, faults.error_rate, faults.slow_rate, faults.truncate_rate])
        verdicts: tuple[Verdict, ...] = ("rate_limited", "server_error", "slow", "truncate")
        i = int(np.searchsorted(edges, u, side="right"))
        return (verdicts[i] if i < len(verdicts) else "ok"), detail


def page_has_malformed_line(seed: int, system: str, category: str, as_of: str, offset: int, rate: float) -> bool:
    """Whether a page holds a malformed line: fixed per page, so a retry sees it again."""
    if rate <= 0:
        return False
    key = f"{seed}|{system}|{category}|{as_of}|{offset}".encode()
    return (zlib.crc32(key) / 0xFFFFFFFF) < rate
