"""One NDJSON page of a source as a typed table: the checks of its columns and types, and IIN-like record ids.

Each page is parsed by Arrow's C++ JSON reader against the declared column types. A line that is
not JSON, a column that is missing or unexpected, a value of the wrong type: the page fails with a
:class:`PageError` that names the page and the line, never the record's content (IINs and names are
personal data). A line nested deeper than :data:`MAX_JSON_DEPTH` is refused before Python's JSON
parser sees it. A ``record_id`` in the form of an IIN is replaced by ``withheld-iin-p<page>-r<row>``
(:func:`withhold_iin_record_ids`) before anything else sees it.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from osms.core.redact import mask_iins, quote

if TYPE_CHECKING:
    from osms.core.registry import Column

__all__ = ["MAX_JSON_DEPTH", "PageError", "SchemaChange", "check_columns", "nested_deeper_than", "parse_page",
           "withhold_iin_record_ids"]

SORT_KEY = "record_id"
# Arrow's JSON reader splits its input in blocks of this size (a line must fit in one).
_JSON_BLOCK_BYTES = 1 << 20
_INT32 = (-(2**31), 2**31 - 1)
# A record is one flat JSON object (depth 1): a line nested deeper than this is refused before any
# Python parser sees it (json's recursion ends in RecursionError a thousand levels down).
MAX_JSON_DEPTH = 32
# What a record_id in the form of an IIN becomes in the landing file (and so everywhere after).
WITHHELD_PREFIX = "withheld-iin-"
# Source text (a column name) is quoted at most this long; at most this many names are listed.
NAME_QUOTE = 64
NAMES_LISTED = 10


class PageError(ValueError):
    """A page that is persistently wrong (not JSON, wrong columns or types); the message has no record content."""


class SchemaChange(PageError):
    """The source serves other columns than the registry declares (renamed, dropped or new ones)."""


def _declared_schema(columns: Sequence[Column]) -> pa.Schema:
    return pa.schema([pa.field(c.name, c.arrow_type) for c in columns])


def _json_schema(columns: Sequence[Column]) -> pa.Schema:
    # Arrow's JSON reader takes a date as days since the epoch, not as text: read
    # dates as strings and cast them (a strict cast: 2024-02-30 is refused).
    return pa.schema([pa.field(c.name, pa.string() if c.type == "date" else c.arrow_type) for c in columns])


def check_columns(found: Sequence[str], declared: Sequence[str]) -> str | None:
    """What is wrong with the columns a record carries, in words (a renamed column is one missing + one unexpected)."""
    found_set, declared_set = set(found), set(declared)
    missing = [c for c in declared if c not in found_set]
    unexpected = [c for c in found if c not in declared_set]
    problems = []
    if missing:
        problems.append(f"column{'s' if len(missing) > 1 else ''} {', '.join(missing)}"
                        f" {'are' if len(missing) > 1 else 'is'} missing")
    if unexpected:
        # the source's own names: each folded and cut, and only the first few listed
        names = [quote(c, NAME_QUOTE) for c in unexpected[:NAMES_LISTED]]
        more = f" and {len(unexpected) - NAMES_LISTED} more" if len(unexpected) > NAMES_LISTED else ""
        problems.append(f"unexpected column{'s' if len(unexpected) > 1 else ''} {', '.join(names)}{more}")
    return "; ".join(problems) or None


_JSON_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"?|[\[\]{}]')


def nested_deeper_than(line: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether a JSON text nests arrays and objects more than ``limit`` deep (brackets in strings do not count).

    Read without parsing: strings are skipped whole, so a line of any depth costs one pass at most,
    and a deep one stops at its ``limit + 1``-th level.
    """
    if line.count(b"{") + line.count(b"[") <= limit:
        return False
    depth = 0
    for m in _JSON_TOKENS.finditer(line):
        token = m.group()
        if token in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return True
        elif token in (b"]", b"}"):
            depth -= 1
    return False


def parse_page(data: bytes, columns: Sequence[Column], *, page: int) -> pa.Table:
    """One NDJSON page as a table of the declared columns and types; PageError naming page and line otherwise."""
    schema = _declared_schema(columns)
    if not data.strip():
        return schema.empty_table()
    declared = [c.name for c in columns]
    # The first record's keys: a renamed or dropped column fails on every line,
    # and here it is named as such instead of as a type error.
    first_line = data.lstrip(b"\r\n").split(b"\n", 1)[0]
    first = _loads(first_line) if not nested_deeper_than(first_line) else None
    if isinstance(first, dict):
        problem = check_columns(list(first), declared)
        if problem:
            raise SchemaChange(f"page {page}: {problem}")
    try:
        # Arrow's reader is given the flat declared schema: it stops at the first nested value
        # (a type change or an unexpected field), so no depth reaches it
        table = _read_json(data, _json_schema(columns))
    except pa.ArrowInvalid:
        # Arrow's message may quote the offending value: find the line ourselves.
        raise _locate_bad_line(data, columns, page) from None
    for i, col in enumerate(columns):
        if col.type == "date":
            table = table.set_column(i, col.name, _dates(table, col.name, data, page))
    return table.select(declared)


def _loads(line: bytes) -> Any:
    """A line as JSON, or None when it is not (the caller names why)."""
    try:
        return json.loads(line)
    except (ValueError, RecursionError):
        return None


def _read_json(data: bytes, schema: pa.Schema) -> pa.Table:
    parse = pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="error")
    try:
        return pj.read_json(pa.BufferReader(data), read_options=pj.ReadOptions(block_size=_JSON_BLOCK_BYTES),
                            parse_options=parse)
    except pa.ArrowInvalid as exc:
        if "straddl" not in str(exc):
            raise
        # a line longer than a block: read the page as one block
        return pj.read_json(pa.BufferReader(data), read_options=pj.ReadOptions(block_size=len(data) + 1),
                            parse_options=parse)


def _dates(table: pa.Table, name: str, data: bytes, page: int) -> pa.Array:
    strings = table.column(name).combine_chunks()
    try:
        return pc.cast(strings, pa.date32())
    except pa.ArrowInvalid:
        row = _first_uncastable(strings, pa.date32())
        raise PageError(f"page {page}, line {_line_of_row(data, row)}{_record_ref(table, row)}:"
                        f" column {name} holds a value that is not a date (YYYY-MM-DD)") from None


def _first_uncastable(values: pa.Array, to: pa.DataType) -> int:
    """Index of the first value that does not cast, by bisection (vectorised casts, no per-row Python)."""
    lo, hi = 0, len(values)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        try:
            pc.cast(values.slice(lo, mid - lo), to)
            lo = mid
        except pa.ArrowInvalid:
            hi = mid
    return lo


def _line_of_row(data: bytes, row: int) -> int:
    """1-based line number of the row-th record (Arrow skips blank lines)."""
    seen = -1
    for number, line in enumerate(data.split(b"\n"), start=1):
        if line.strip():
            seen += 1
            if seen == row:
                return number
    return row + 1


def _record_ref(table: pa.Table, row: int) -> str:
    return _quote_record_id(table.column(SORT_KEY)[row].as_py()) if SORT_KEY in table.column_names else ""


def _quote_record_id(value: Any) -> str:
    """`` (record_id X)`` for a message: record_id is the source's id, the one field a message may name;
    never one that holds an IIN, and only a short one, folded."""
    if not isinstance(value, str) or not 0 < len(value) <= NAME_QUOTE or mask_iins(value) != value:
        return ""
    return f" (record_id {quote(value, NAME_QUOTE)})"


def _fits(column_type: str, value: Any) -> bool:
    if value is None:
        return True
    if column_type in ("string", "iin", "enum", "date"):
        return isinstance(value, str)
    if column_type == "int":
        return isinstance(value, int) and not isinstance(value, bool) and _INT32[0] <= value <= _INT32[1]
    if column_type == "bool":
        return isinstance(value, bool)
    if column_type == "timestamp":
        if not isinstance(value, str):
            return False
        try:
            dt.datetime.fromisoformat(value)
        except ValueError:
            return False
        return True
    return False


_TYPE_WORDS = {
    "string": "text", "iin": "text", "enum": "text", "date": "a date (YYYY-MM-DD)",
    "timestamp": "a timestamp (YYYY-MM-DDTHH:MM:SSZ)", "int": "a 32-bit whole number", "bool": "true or false",
}


def _locate_bad_line(data: bytes, columns: Sequence[Column], page: int) -> PageError:
    """The first line that Arrow could not read, as a PageError naming page, line and column."""
    declared = [c.name for c in columns]
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        where = f"page {page}, line {number}"
        if nested_deeper_than(raw):
            return PageError(f"{where}: nested deeper than {MAX_JSON_DEPTH}")
        try:
            record = json.loads(raw)
        except RecursionError:  # pragma: no cover: nested_deeper_than stops such a line first
            return PageError(f"{where}: nested deeper than {MAX_JSON_DEPTH}")
        except ValueError as exc:
            # the decoder's own words ("unterminated string", "expecting ',' delimiter"), never its excerpt
            reason = exc.msg.split(" starting at")[0].lower() if isinstance(exc, json.JSONDecodeError) \
                else "not UTF-8 text"
            return PageError(f"{where}: not valid JSON ({reason})")
        if not isinstance(record, dict):
            return PageError(f"{where}: not a JSON object")
        problem = check_columns(list(record), declared)
        if problem:
            return SchemaChange(f"{where}: {problem}")
        ref = _quote_record_id(record.get(SORT_KEY))
        for col in columns:
            if not _fits(col.type, record.get(col.name)):
                return PageError(f"{where}{ref}: column {col.name} holds a value that is not {_TYPE_WORDS[col.type]}")
    # Arrow refused the page and no line looks wrong to Python: ask Arrow line by line.
    schema = _json_schema(columns)
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if raw.strip():
            try:
                _read_json(raw + b"\n", schema)
            except pa.ArrowInvalid:
                return PageError(f"page {page}, line {number}: a value does not fit its declared column type")
    return PageError(f"page {page}: the page could not be read as the declared columns")


# Rows whose record_id holds a run of 12 digits: the candidates for an IIN (RE2 has no lookbehind).
_TWELVE_DIGITS = r"(^|[^0-9])[0-9]{12}([^0-9]|$)"


def withhold_iin_record_ids(table: pa.Table, *, page: int) -> tuple[pa.Table, int]:
    """``record_id`` values that are, or hold, an IIN replaced by ``withheld-iin-p<page>-r<row>``; how many.

    The replacement is made before the landing file is written, so an IIN a source put in
    its record ids reaches no file, message, log or page of the UI as a record id; the
    common suite's ``record_id_not_iin`` quarantines the row (the body's feedback names
    the page and row of its answer for D).
    """
    import numpy as np

    if SORT_KEY not in table.column_names or table.num_rows == 0:
        return table, 0
    ids = table.column(SORT_KEY).combine_chunks()
    candidates = pc.fill_null(pc.match_substring_regex(ids, _TWELVE_DIGITS), False)
    rows = np.flatnonzero(candidates.to_numpy(zero_copy_only=False))
    if not len(rows):
        return table, 0
    values = ids.take(pa.array(rows)).to_pylist()
    hit = np.array([mask_iins(v) != v for v in values], dtype=bool)
    if not hit.any():
        return table, 0
    mask = np.zeros(table.num_rows, dtype=bool)
    mask[rows[hit]] = True
    replacement = pa.array([f"{WITHHELD_PREFIX}p{page}-r{r + 1}" for r in rows[hit].tolist()], pa.string())
    replaced = pc.replace_with_mask(ids, pa.array(mask), replacement)
    return table.set_column(table.schema.get_field_index(SORT_KEY), SORT_KEY, replaced), int(hit.sum())
