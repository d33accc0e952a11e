"""What may be quoted or logged: source text folded and bounded, IINs masked in messages and in task logs."""

from __future__ import annotations

import io
import json
import logging

import pytest

from osms.core.redact import MASK, RedactIins, install_log_redaction, mask_iins, quote, redact_event

pytestmark = pytest.mark.unit

IIN = "791028302728"  # passes the check
NOT_IIN = "791028302729"  # twelve digits, wrong check digit


def test_mask_iins_masks_valid_iins_only_and_only_whole_runs_of_twelve() -> None:
    assert mask_iins(f"id {IIN}, again {IIN}.") == f"id {MASK}, again {MASK}."
    assert mask_iins(f"no {NOT_IIN}") == f"no {NOT_IIN}"
    assert mask_iins(f"longer 1{IIN} and {IIN}9") == f"longer 1{IIN} and {IIN}9"  # 13 digits: not an IIN
    assert mask_iins(f"REC-{IIN}-x") == f"REC-{MASK}-x"


def test_quote_folds_to_one_line_bounds_and_masks() -> None:
    assert quote("form\nof\r\n\tstudy\x00 \u2028x") == "form of study x"
    long = quote("A" * (1 << 20), 64)
    assert len(long) == 64 and long.endswith("…")
    assert quote(f"column {IIN}") == f"column {MASK}"
    assert quote("short") == "short" and quote(None) == "None"


def test_the_logging_filter_masks_message_arguments_and_exception() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactIins())
    logger = logging.getLogger("osms.test.redact")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("value %s refused", IIN)
        try:
            raise ValueError(f"cannot cast {IIN!r} to int")
        except ValueError:
            logger.exception("a library quoted a value")
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert IIN not in text and text.count(MASK) == 2
    assert "ValueError" in text and "a library quoted a value" in text


def test_the_structlog_processor_masks_every_field_and_nested_tracebacks() -> None:
    event = {"event": f"x {IIN}", "extra": {"list": [IIN, 3]}, "n": 5,
             "exception": [{"exc_value": f"bad {IIN}", "frames": []}]}
    out = redact_event(None, "info", event)
    assert IIN not in json.dumps(out) and out["n"] == 5


def test_a_task_log_configured_as_airflow_does_comes_out_masked() -> None:
    """Airflow's own logging set-up (structlog, stdlib through it) with the redaction installed on top."""
    import structlog
    from airflow.sdk.log import configure_logging

    out = io.StringIO()
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    configure_logging.cache_clear()
    configure_logging(json_output=False, output=out, cache_logger_on_first_use=False, colored_console_log=False)
    try:
        install_log_redaction()
        install_log_redaction()  # idempotent
        logging.getLogger("osms.some.stage").warning("deliberately logged IIN %s", IIN)
        structlog.get_logger("airflow.task").info("structlog event", value=IIN)
        try:
            raise RuntimeError(f"DuckDB: conversion of {IIN} failed")
        except RuntimeError:
            structlog.get_logger("airflow.task").exception("task failed")
        text = out.getvalue()
    finally:
        configure_logging.cache_clear()
        structlog.configure(**saved)
        root.handlers[:] = handlers
        root.setLevel(level)
    assert "deliberately logged IIN" in text and "structlog event" in text and "task failed" in text
    assert IIN not in text
    assert text.count(MASK) >= 3
