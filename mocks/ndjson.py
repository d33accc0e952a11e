"""Arrow table -> NDJSON bytes, vectorised (no per-record Python), for serving pages fast."""

from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# What a string value's bytes may need: 1 a backslash, 2 a quote (both escaped in
# place), 4 a control character below 0x20 (rare enough in source data that a page
# holding one is encoded by the json module instead).
_FLAGS = np.zeros(256, np.uint8)
_FLAGS[ord("\\")] = 1
_FLAGS[ord('"')] = 2
_FLAGS[:0x20] = 4


class _NeedsJsonModule(Exception):
    """A value holds a control character."""


def _value_bytes(strings: pa.Array) -> np.ndarray:
    """The bytes of all the values of a string array, one after another (no copy)."""
    data = strings.buffers()[2]
    if data is None or len(strings) == 0:
        return np.zeros(0, np.uint8)
    offsets = np.frombuffer(strings.buffers()[1], np.int32, count=len(strings) + 1, offset=strings.offset * 4)
    return np.frombuffer(data, np.uint8)[int(offsets[0]):int(offsets[-1])]


def _quoted(strings: pa.Array) -> pa.Array:
    # one pass over the raw bytes is far cheaper than a search per value, and most
    # columns hold none of these characters
    raw = _value_bytes(strings)
    flags = int(np.bitwise_or.reduce(_FLAGS[raw])) if len(raw) else 0
    if flags & 4:
        raise _NeedsJsonModule
    if flags & 1:
        strings = pc.replace_substring(strings, "\\", "\\\\")
    if flags & 2:
        strings = pc.replace_substring(strings, '"', '\\"')
    return pc.binary_join_element_wise('"', strings, '"', "")


def _json_values(col: pa.Array) -> pa.Array:
    """Each value of ``col`` as JSON text; null as ``null``."""
    t = col.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        out = _quoted(col.cast(pa.string()))
    elif pa.types.is_date(t):
        out = _quoted(col.cast(pa.string()))
    elif pa.types.is_timestamp(t):
        # A cast of a naive timestamp to string is ~30x faster than strftime:
        # "2024-01-02 03:04:05" -> "2024-01-02T03:04:05Z"
        naive = col.cast(pa.timestamp("s", tz="UTC")).cast(pa.timestamp("s")).cast(pa.string())
        out = pc.binary_join_element_wise('"', pc.replace_substring(naive, " ", "T", max_replacements=1), 'Z"', "")
    elif pa.types.is_integer(t) or pa.types.is_floating(t):
        out = col.cast(pa.string())
    elif pa.types.is_boolean(t):
        out = pc.if_else(col, "true", "false")
    elif pa.types.is_null(t):
        out = pa.nulls(len(col), pa.string())
    else:
        raise TypeError(f"no JSON encoding for Arrow type {t}")
    return pc.fill_null(out, "null")


def encode(table: pa.Table, rename: Mapping[str, str] | None = None) -> bytes:
    """The table's rows as NDJSON, one object per line, keys in column order."""
    n = table.num_rows
    if n == 0:
        return b""
    rename = rename or {}
    parts: list[pa.Array | str] = []
    try:
        for i, name in enumerate(table.column_names):
            key = json.dumps(rename.get(name, name), ensure_ascii=False)
            parts.append(("{" if i == 0 else ",") + key + ":")
            parts.append(_json_values(table.column(i).combine_chunks()))
    except _NeedsJsonModule:
        return _encode_slow(table, rename)
    parts.append("}\n")
    lines = pc.binary_join_element_wise(*parts, "")
    lines = lines.combine_chunks() if isinstance(lines, pa.ChunkedArray) else lines
    offsets = np.frombuffer(lines.buffers()[1], np.int32, count=n + 1, offset=lines.offset * 4)
    return lines.buffers()[2].slice(int(offsets[0]), int(offsets[-1] - offsets[0])).to_pybytes()


def _encode_slow(table: pa.Table, rename: Mapping[str, str]) -> bytes:
    out = []
    for row in table.to_pylist():
        obj = {rename.get(k, k): _plain(v) for k, v in row.items()}
        out.append(json.dumps(obj, ensure_ascii=False, separators=(",", ":")))
    return ("\n".join(out) + "\n").encode()


def _plain(v: object) -> object:
    import datetime as dt

    if isinstance(v, dt.datetime):
        return v.strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(v, dt.date):
        return v.isoformat()
    return v
