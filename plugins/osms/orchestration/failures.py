"""Errors sorted once: permanent ones fail a task at once, with the cause; transient ones are retried.

Every task of the DAGs runs its work inside :func:`task_errors`. What another try
cannot change fails the task there and then, without the hour of retries that a
refused signature or a broken chain used to cost: a source's 4xx or a page that is
not what the contract says (the HTTP clients have already retried the transient
faults of each request), a page past its byte bound or its deadline, a line nested
too deep, a redirect (never followed, from a source or the receiver), a connection
the pipeline refuses (plain http to another host, no host, no token), a package the
gate refuses or a delivered one that would change, a signing key that is not one or
is not allowed here, a receiver that refuses the package (422, 409), a damaged state
file, DuckDB out of its memory share or a parser out of stack (the same data gives the
same again). Anything else (a network down for a whole try, a worker lost, a full
disk) is transient: the task's retries, with backoff, take it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["is_permanent", "task_errors"]


def is_permanent(exc: BaseException) -> bool:
    """Whether another try of the same task cannot succeed."""
    from osms.package.chain import ChainBroken, ChainWaiting
    from osms.package.deliver import DeliveryError, DeliveryWaiting
    from osms.sources.extract import FeedExtractError
    from osms.sources.http_client import Action, RetryPolicy
    from osms.package.build import PackageError
    from osms.core.status import StatusUnreadable

    from osms.core.keys import SigningKeyRefused
    from osms.sources.connections import ConnectionRefused

    if isinstance(exc, FeedExtractError | PackageError | ChainBroken | StatusUnreadable | ConnectionRefused
                  | SigningKeyRefused | RecursionError):
        return True
    if _duckdb_out_of_memory(exc):
        return True
    if isinstance(exc, ChainWaiting):
        # where a task (not the chain sensor, which waits) finds D-1 undelivered, the sensor gave up
        return True
    if isinstance(exc, DeliveryWaiting):
        # waiting for a predecessor found here is for the chain sensor to wait on; the receiver refusing the
        # chain (409 out_of_order) means its chain and ours differ, which no retry mends
        return exc.code == "out_of_order"
    if isinstance(exc, DeliveryError):
        # the HTTP client retried what its policy retries (connection errors, timeouts, 5xx, 408, 429): an
        # answer it gave up on is transient; a 4xx the policy fails at once (a bad checksum or signature, a
        # conflict, a refused chain) is not
        # a 3xx is a redirect, never followed: the connection names the wrong place, which no retry mends
        return exc.status is not None and 300 <= exc.status < 500 and RetryPolicy().action(exc.status) is Action.FAIL \
            or exc.code in ("conflict", "already_committed", "out_of_order") or exc.step == "read manifest"
    return False


def _duckdb_out_of_memory(exc: BaseException) -> bool:
    """DuckDB ran out of its memory share: the same data asks the same again (only loaded when DuckDB is)."""
    import sys

    duckdb = sys.modules.get("duckdb")
    return duckdb is not None and isinstance(exc, getattr(duckdb, "OutOfMemoryException", ()))


@contextmanager
def task_errors() -> Iterator[None]:
    """Run a task's work; a permanent error becomes Airflow's fail-now exception with the same message."""
    from airflow.sdk.exceptions import AirflowFailException

    try:
        yield
    except AirflowFailException:
        raise
    except Exception as exc:
        if is_permanent(exc):
            raise AirflowFailException(str(exc)) from exc
        raise
