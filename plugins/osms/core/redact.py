"""What may be quoted or logged: source text folded and bounded, and IINs masked.

Two lines of defence, both here:

- :func:`quote` is how text a source controls (an error code, a column name, a content
  type, a record id) enters a message, a status, ``quality.json`` or the UI: folded to
  one line (every run of whitespace or control characters becomes one space), cut to a
  bound with an ellipsis, and with any IIN masked. A source cannot break a line of a log
  or a document, nor fill one with a megabyte of its own text.
- :class:`RedactIins` (a :class:`logging.Filter`) and :func:`redact_event` (a structlog
  processor) mask, in every log line of a task, any run of 12 digits that passes the IIN
  check. Messages are written never to hold an IIN; this catches what a library quotes
  (pyarrow, DuckDB and pandas errors may quote a value). :func:`install_log_redaction`
  puts both in place; the task listener (:mod:`osms.orchestration.task_metrics`) calls it
  at the start of every task, whoever runs it.

A masked IIN reads ``************``: what it was cannot be told, that there was one can.
"""

from __future__ import annotations

import logging
import re
from collections.abc import MutableMapping
from typing import Any

__all__ = ["MASK", "RedactIins", "install_log_redaction", "mask_iins", "quote", "redact_event"]

MASK = "*" * 12
# A run of exactly 12 digits (not part of a longer run of digits): the shape of an IIN.
_TWELVE = re.compile(r"(?<!\d)\d{12}(?!\d)")
# Whitespace and control characters (C0, DEL, C1, the line and paragraph separators): folded to one space.
_FOLD = re.compile(r"[\s\x00-\x1f\x7f-\x9f\u2028\u2029]+")
# Text of a source is quoted at most this long by default (a column name, an error code).
QUOTE_LIMIT = 120


def mask_iins(text: str) -> str:
    """``text`` with every run of 12 digits that passes the IIN check replaced by ``************``."""
    if len(text) < 12 or not _TWELVE.search(text):
        return text
    from osms.core.iin import check_one

    return _TWELVE.sub(lambda m: MASK if check_one(m.group(0)) == 0 else m.group(0), text)


def quote(text: object, limit: int = QUOTE_LIMIT) -> str:
    """Source text as it may be quoted: one line, at most ``limit`` characters (``…`` marks a cut), no IIN."""
    raw = text if isinstance(text, str) else str(text)
    # fold only what can be shown: a megabyte of text is cut before it is scanned
    head = raw[: 4 * limit + 64]
    folded = _FOLD.sub(" ", head).strip()
    cut = len(folded) > limit or len(raw) > len(head)
    if cut:
        folded = folded[: max(limit - 1, 0)].rstrip() + "…"
    return mask_iins(folded)


class RedactIins(logging.Filter):
    """Masks IINs in a log record (its message, arguments and exception text); never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record in place; always keep it."""
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001: a record that cannot be formatted is left to the handler to report
            return True
        masked = mask_iins(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and record.exc_info[0] is not None:
            text = record.exc_text or logging.Formatter().formatException(record.exc_info)
            if mask_iins(text) != text:
                # a formatter would render the exception again from exc_info, unmasked: keep its text only
                record.msg, record.args = f"{record.msg}\n{mask_iins(text)}", None
                record.exc_info, record.exc_text = None, None
        elif record.exc_text:
            record.exc_text = mask_iins(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_iins(record.stack_info)
        return True


def _mask_deep(value: Any) -> Any:
    if isinstance(value, str):
        return mask_iins(value)
    if isinstance(value, dict):
        return {k: _mask_deep(v) for k, v in value.items()}
    if type(value) in (list, tuple):
        return type(value)(_mask_deep(v) for v in value)
    if isinstance(value, BaseException):
        return mask_iins(f"{type(value).__name__}: {value}")
    return value


def redact_event(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: IINs masked in every string of an event (its message, fields and traceback)."""
    info = event.get("exc_info")
    if info and not isinstance(info, str):
        # an exception no processor before this one rendered: render it here, so it is masked before it is written
        import sys
        import traceback

        if info is True:
            info = sys.exc_info()
        elif isinstance(info, BaseException):
            info = (type(info), info, info.__traceback__)
        if isinstance(info, tuple) and info[0] is not None:
            text = "".join(traceback.format_exception(*info))
            if mask_iins(text) != text:
                event.pop("exc_info")
                event["exception"] = mask_iins(text)
    for key, value in list(event.items()):
        if key != "exc_info":
            event[key] = _mask_deep(value)
    return event


def install_log_redaction() -> None:
    """Mask IINs in this process's logs: the filter on every stdlib handler, the processor in structlog's chain.

    Idempotent; handlers added later are covered when it is called again (each task calls it).
    """
    handlers = list(logging.getLogger().handlers)
    for logger in list(logging.Logger.manager.loggerDict.values()):
        if isinstance(logger, logging.Logger):
            handlers.extend(logger.handlers)
    for handler in handlers:
        if not any(isinstance(f, RedactIins) for f in handler.filters):
            handler.addFilter(RedactIins())
    try:
        import structlog
    except ImportError:  # pragma: no cover: Airflow brings structlog
        return
    processors = structlog.get_config().get("processors")
    if isinstance(processors, list) and redact_event not in processors:
        # in place, before the renderer: loggers already bound share this list and see it too
        processors.insert(max(len(processors) - 1, 0), redact_event)
