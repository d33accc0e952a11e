"""Strip GX validation results down to counts and percentages.

GX puts the failing values themselves (IINs, names, dates of birth) into a
result: ``unexpected_list``, ``partial_unexpected_list``, ``unexpected_index_list``,
``partial_unexpected_counts``, ``unexpected_index_query``, ``observed_value``...
None of that may be stored or reported, so a result's ``result`` keeps only
the keys below, and the value-bearing keys are dropped wherever they appear.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ALLOWED_RESULT_KEYS", "scrub_validation_result"]

# What a GX result may keep: counts and percentages, nothing that holds a value.
ALLOWED_RESULT_KEYS = frozenset(
    {
        "element_count",
        "unexpected_count",
        "unexpected_percent",
        "unexpected_percent_total",
        "unexpected_percent_nonmissing",
        "missing_count",
        "missing_percent",
    }
)
_FORBIDDEN_KEYS = frozenset(
    {
        "unexpected_list",
        "partial_unexpected_list",
        "unexpected_index_list",
        "partial_unexpected_index_list",
        "partial_unexpected_counts",
        "unexpected_index_query",
        "unexpected_index_column_names",
        "unexpected_rows",
        "observed_value",
        "details",
        "exception_traceback",
        "exception_message",
    }
)


def scrub_validation_result(node: Any) -> Any:
    """A copy of a GX validation result (or any part of one, as JSON dicts) with counts only."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key in _FORBIDDEN_KEYS:
                continue
            if key == "result" and isinstance(value, dict):
                out[key] = {k: v for k, v in value.items() if k in ALLOWED_RESULT_KEYS}
            else:
                out[key] = scrub_validation_result(value)
        return out
    if isinstance(node, list):
        return [scrub_validation_result(v) for v in node]
    return node
