"""The delivery chain: the package of day D follows the delivered package of D-1, always.

Each package's manifest names its predecessor's manifest hash, and the State
Corporation accepts a package only after the one it names. So D's package is
built, and delivered, only once D-1's has a receipt; whatever the order of runs,
failures, retries and backfills, no day can be delivered over a gap and then leave
the missing day refused for ever. What :func:`link` decides for D:

- D-1's package here has a receipt for its manifest: D follows it;
- the receiver (asked only then) holds D-1: its receipt is stored here again (a lost
  ``receipt.json``), or, when D-1's folder is lost or damaged, D-1 must be rebuilt
  first (from its inputs, which give the same bytes) and checked against the receipt;
- the receiver holds nothing before D and no package of D-1 was built: D starts the
  chain (its manifest names no predecessor);
- otherwise D-1 is not delivered yet: D waits (:class:`ChainWaiting`), or, when the
  receiver already holds later days, D can no longer be chained (:class:`ChainBroken`).

Without a receiver to ask (offline tools, tests), only local receipts count.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from osms.core import layout
from osms.core.documents import MANIFEST

log = logging.getLogger(__name__)

__all__ = ["ChainBroken", "ChainWaiting", "Link", "Receiver", "first_day", "link", "package_id"]


class ChainWaiting(RuntimeError):
    """D-1's package is not delivered yet: D waits for it (not a failure)."""


class ChainBroken(RuntimeError):
    """D cannot be chained on D-1 as the receiver knows it; the message says why and what to do."""


class Receiver(Protocol):
    """What the chain asks the State Corporation."""

    def packages(self) -> dict[str, dict[str, Any]]:
        """Committed packages: ``{package_id: {"logical_date", "receipt_id", ...}}``."""

    def receipt(self, package_id: str) -> Any:
        """The receipt (``osms.core.documents.Receipt``) of a committed package, or None."""


@dataclass(frozen=True)
class Link:
    """Where D's package hangs in the chain."""

    day: dt.date
    previous: Path | None  # D-1's delivered package folder; None: D starts the chain (or D-1 must be rebuilt)
    how: str  # in words, for the log
    rebuild: dt.date | None = None  # D-1 is delivered but its folder here is lost or damaged
    expected_sha256: str | None = None  # the manifest hash the receiver holds for the rebuilt D-1


def package_id(day: dt.date) -> str:
    """The package id of a logical date: ``OSMS-<YYYY-MM-DD>``."""
    return f"OSMS-{day.isoformat()}"


def first_day() -> dt.date:
    """The first day of the decree's first edition: no package can come before it."""
    from osms.core.registry import default_registry

    return min(e.effective_from for e in default_registry().editions)


def manifest_sha256(package_dir: Path) -> str | None:
    """The SHA-256 of a package folder's manifest.json; None when it is missing or unreadable."""
    try:
        return hashlib.sha256((Path(package_dir) / MANIFEST).read_bytes()).hexdigest()
    except OSError:
        return None


def link(data_dir: Path, day: dt.date, receiver: Receiver | None = None) -> Link:
    """Where D's package goes in the chain (see the module's notes); ChainWaiting or ChainBroken otherwise."""
    from osms.package.deliver import read_receipt, store_receipt

    previous_day = day - dt.timedelta(days=1)
    if previous_day < first_day():
        return Link(day, None, f"{day} is the decree's first day: the package starts the chain")
    previous_dir = layout.package_dir(data_dir, previous_day)
    built = manifest_sha256(previous_dir)
    local = read_receipt(previous_dir)
    if local is not None and built is not None and local.manifest_sha256 == built:
        return Link(day, previous_dir, f"follows {previous_day}, delivered (receipt {local.receipt_id})")

    if receiver is None:
        if built is None and not _built_before(data_dir, day):
            return Link(day, None, f"no package before {day} here: the package starts the chain")
        raise ChainWaiting(f"the package of {previous_day} has no receipt yet: {day}'s package waits until it"
                           " is delivered")

    held = _by_day(receiver.packages())
    if previous_day in held:
        receipt = receiver.receipt(package_id(previous_day))
        if receipt is not None and built == receipt.manifest_sha256:
            store_receipt(previous_dir, receipt)
            log.warning("receipt of %s was missing or unreadable here; recovered from the receiver (%s)",
                        previous_day, receipt.receipt_id)
            return Link(day, previous_dir, f"follows {previous_day}, delivered (receipt {receipt.receipt_id},"
                                           " recovered from the receiver)")
        if receipt is not None:
            what = "is missing" if built is None else "differs from the one delivered"
            return Link(day, None, f"{previous_day} was delivered but its package here {what}: rebuild it",
                        rebuild=previous_day, expected_sha256=receipt.manifest_sha256)
    if day in held:
        return Link(day, None, f"{day} was delivered as the first package the receiver holds")
    later = sorted(d for d in held if d > day)
    if later:
        raise ChainBroken(
            f"the receiver already holds packages of later days ({later[0]}"
            f"{f' to {later[-1]}' if len(later) > 1 else ''}) but not {previous_day}: {day} can no longer be"
            " chained; ask the State Corporation how it wants the missing days")
    if built is not None or any(d < previous_day for d in held) or _built_before(data_dir, previous_day):
        raise ChainWaiting(f"the package of {previous_day} is not delivered yet: {day}'s package waits until it is")
    return Link(day, None, f"the receiver holds nothing before {day}: the package starts the chain")


def _by_day(packages: dict[str, dict[str, Any]]) -> dict[dt.date, dict[str, Any]]:
    out = {}
    for entry in packages.values():
        try:
            out[dt.date.fromisoformat(str(entry.get("logical_date")))] = entry
        except ValueError:
            continue
    return out


def _built_before(data_dir: Path, day: dt.date) -> bool:
    """Whether any package of a day before ``day`` was built here (work folders are not packages)."""
    return any(d < day and (p / MANIFEST).is_file()
               for d, p in layout.dated_dirs(Path(data_dir) / "packages"))


@dataclass(frozen=True)
class HttpReceiver:
    """The receiver behind an Airflow connection, as the chain asks it."""

    endpoint: Any  # osms.package.deliver.ReceiverEndpoint

    @classmethod
    def from_connection(cls, conn_id: str = "osms_state_corp") -> HttpReceiver:
        """The receiver of an Airflow HTTP connection."""
        from osms.package.deliver import endpoint_from_connection

        return cls(endpoint_from_connection(conn_id))

    def packages(self) -> dict[str, dict[str, Any]]:
        """Committed packages."""
        from osms.package.deliver import receiver_packages

        return receiver_packages(self.endpoint)

    def receipt(self, package_id: str) -> Any:
        """A committed package's receipt."""
        from osms.package.deliver import receiver_receipt

        return receiver_receipt(self.endpoint, package_id)
