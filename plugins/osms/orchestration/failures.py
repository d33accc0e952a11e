"""Errors sorted once: permanent ones fail a task at once, with the cause; transient ones are retried.

Every task of the DAGs runs its work inside :func:`task_errors`. What another try
cannot change fails the task there and then, without the hour of retries that a
refused signature or a broken chain used to cost: a source's 4xx or a page that is
not what the contract says (the HTTP clients have already retried the transient
faults of each request), a package the gate refuses or a delivered one that would
change, a signing key that is not one, a receiver that refuses the package (422,
409), a damaged state file. Anything else (a network down for a whole try, a worker
lost, a full disk) is transient: the task's retries, with backoff, take it.
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

    if isinstance(exc, FeedExtractError | PackageError | ChainBroken | StatusUnreadable):
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
        return exc.status is not None and 400 <= exc.status < 500 and RetryPolicy().action(exc.status) is Action.FAIL \
            or exc.code in ("conflict", "already_committed", "out_of_order") or exc.step == "read manifest"
    return False


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
