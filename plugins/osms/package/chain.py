"""The delivery chain: the package of day D follows the delivered package of D-1, always.

Each package's manifest names its predecessor's manifest hash, and the State
Corporation accepts a package only after the one it names. So D's package is
built, and delivered, only once D-1's has a receipt; whatever the order of runs,
failures, retries and backfills, no day can be delivered over a gap and then leave
the missing day refused for ever.

The chain has an explicit **start** (``chain/start.json`` under the data root, written
once): the init writes it when given one (``osms deploy init --chain-start D``), or
``osms chain start --date D``, or else the first package run allowed to (a scheduled or
backfill run, or ``osms run``) writes its own D. A data root that built packages
before the start was a setting takes the earliest of them. From the start on, what
:func:`link` decides for D:

- D is before the start: refused (:class:`BeforeChainStart`), whatever runs;
- D is the start: D starts the chain (its manifest names no predecessor), unless the
  receiver holds earlier days, or later ones but not D (:class:`ChainBroken`);
- D-1's package here has a receipt for its manifest: D follows it;
- the receiver (asked only then) holds D-1: its receipt is stored here again (a lost
  ``receipt.json``), or, when D-1's folder is lost or damaged, D-1 must be rebuilt
  first (from its inputs, which give the same bytes) and checked against the receipt;
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
from osms.core.documents import MANIFEST, ChainStart, DocumentError

log = logging.getLogger(__name__)

__all__ = [
    "BeforeChainStart", "ChainBroken", "ChainNotStarted", "ChainWaiting", "Link", "Receiver", "chain_start",
    "first_day", "link", "package_id", "set_chain_start",
]


class ChainWaiting(RuntimeError):
    """D-1's package is not delivered yet: D waits for it (not a failure)."""


class ChainBroken(RuntimeError):
    """D cannot be chained on D-1 as the receiver knows it; the message says why and what to do."""


class BeforeChainStart(ChainBroken):
    """D is before the chain's start: no package is built for it (permanent, like every ChainBroken)."""


class ChainNotStarted(ChainBroken):
    """The chain has no start yet and this run may not set it: the message says who can."""


class ChainStartConflict(ValueError):
    """A start was asked for that differs from the one written; the start is written once."""


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


def chain_start(data_dir: Path) -> ChainStart | None:
    """The chain's start as written (None: not yet); ChainBroken naming the file when it is damaged."""
    path = layout.chain_start(Path(data_dir))
    try:
        return ChainStart.parse(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, DocumentError) as exc:
        raise ChainBroken(f"{path}: the chain's start is unreadable ({exc}); restore it from a backup, or write"
                          " it again with `osms chain start --date D` after removing the file") from None


def set_chain_start(data_dir: Path, day: dt.date, *, set_by: str, strict: bool = False) -> ChainStart:
    """Write the chain's start once; the start in force is returned (the first writer wins a race).

    ``strict``: a start already written that differs is :class:`ChainStartConflict` (for people
    setting it); otherwise the one written stands. A day before the decree's first day is refused.
    """
    if day < first_day():
        raise ChainStartConflict(f"{day} is before the decree's first day ({first_day()}): no chain starts there")
    path = layout.chain_start(Path(data_dir))
    existing = chain_start(data_dir)
    if existing is None:
        doc = ChainStart(start=day, set_by=set_by,
                         set_at=dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat())
        _write_once(path, doc.to_bytes())
        existing = chain_start(data_dir)
        assert existing is not None
        if existing.start == day:
            log.warning("the delivery chain starts at %s (set by %s)", day, existing.set_by)
    if strict and existing.start != day:
        raise ChainStartConflict(f"the chain already starts at {existing.start} (set by {existing.set_by} at"
                                 f" {existing.set_at}); the start is written once")
    return existing


def _write_once(path: Path, data: bytes) -> None:
    """Place ``path`` with ``data`` unless it exists (atomic: a hard link of a complete file, or nothing)."""
    import os
    import uuid

    from osms.core.files import fsync_dir

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = layout.beside(path, f"tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    tmp.write_bytes(data)
    try:
        with tmp.open("rb") as fh:
            os.fsync(fh.fileno())
        os.link(tmp, path)
    except FileExistsError:
        pass  # another run wrote it first: its start stands
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def _inferred_start(data_dir: Path) -> dt.date | None:
    """Where a chain built here before the start was a setting began: its earliest package (None: no package)."""
    packages = layout.Paths(Path(data_dir)).packages_root()
    built = sorted(d for d, p in layout.dated_dirs(packages) if (p / MANIFEST).is_file())
    return built[0] if built else None


def link(data_dir: Path, day: dt.date, receiver: Receiver | None = None, *, may_start: bool = True,
         started_by: str = "the first package run") -> Link:
    """Where D's package goes in the chain (see the module's notes); ChainWaiting or ChainBroken otherwise.

    ``may_start``: with no start written yet, this run may write one (its own D when nothing was
    built or delivered before; ``started_by`` says who, for the record); otherwise ChainNotStarted.
    """
    from osms.package.deliver import read_receipt, store_receipt

    data_dir = Path(data_dir)
    start = chain_start(data_dir)
    held: dict[dt.date, dict[str, Any]] | None = None
    if start is None:
        inferred = _inferred_start(data_dir)
        if inferred is not None:
            start = set_chain_start(data_dir, inferred, set_by="inferred: the earliest package built here")
        elif may_start:
            return _start_here(data_dir, day, receiver, held, started_by)
        else:
            raise ChainNotStarted(
                f"the delivery chain has no start yet and this run may not set it: set it once ({_HOW_TO_START}),"
                f" or let the first scheduled or backfill run of the package DAG set it")
    if day < start.start:
        raise BeforeChainStart(f"{day} is before the start of the delivery chain ({start.start}, set by"
                               f" {start.set_by}): no package is built for it")
    if day == start.start:
        return _start_here(data_dir, day, receiver, held, started_by)

    previous_day = day - dt.timedelta(days=1)
    previous_dir = layout.package_dir(data_dir, previous_day)
    built = manifest_sha256(previous_dir)
    local = read_receipt(previous_dir)
    if local is not None and built is not None and local.manifest_sha256 == built:
        return Link(day, previous_dir, f"follows {previous_day}, delivered (receipt {local.receipt_id})")

    if receiver is None:
        raise ChainWaiting(f"the package of {previous_day} has no receipt yet: {day}'s package waits until it"
                           " is delivered")

    held = held if held is not None else _by_day(receiver.packages())
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
    if day in held and not any(d < day for d in held):
        # delivered as the first package the receiver holds (before the start was a setting): rebuilt as it was
        return Link(day, None, f"{day} was delivered as the first package the receiver holds")
    _refuse_later(day, previous_day, held)
    raise ChainWaiting(f"the package of {previous_day} is not delivered yet: {day}'s package waits until it is")


_HOW_TO_START = "`osms chain start --date D`, or the init's `--chain-start D` (OSMS_CHAIN_START)"


def _start_here(data_dir: Path, day: dt.date, receiver: Receiver | None, held: dict[dt.date, dict[str, Any]] | None,
                started_by: str) -> Link:
    """D is the chain's first day (or becomes it): its package names no predecessor, if the receiver agrees."""
    if receiver is not None:
        held = held if held is not None else _by_day(receiver.packages())
        earlier = sorted(d for d in held if d < day)
        if earlier:
            raise ChainBroken(f"the delivery chain starts at {day} here, but the receiver holds packages of earlier"
                              f" days ({earlier[0]}{f' to {earlier[-1]}' if len(earlier) > 1 else ''}): the start"
                              " written here is wrong for this receiver; correct it before delivering")
        _refuse_later(day, day, held)
    start = set_chain_start(data_dir, day, set_by=started_by)
    if start.start != day:  # another run wrote another start meanwhile: decide again against it
        return link(data_dir, day, receiver, may_start=False)
    return Link(day, None, f"{day} is the start of the delivery chain (set by {start.set_by}): the package starts"
                           " the chain")


def _refuse_later(day: dt.date, previous_day: dt.date, held: dict[dt.date, dict[str, Any]]) -> None:
    """ChainBroken when the receiver holds days after D but neither D nor D-1: D can never be chained there."""
    later = sorted(d for d in held if d > day)
    if later and day not in held:
        raise ChainBroken(
            f"the receiver already holds packages of later days ({later[0]}"
            f"{f' to {later[-1]}' if len(later) > 1 else ''}) but not {previous_day}: {day} can no longer be"
            " chained; ask the State Corporation how it wants the missing days")


def _by_day(packages: dict[str, dict[str, Any]]) -> dict[dt.date, dict[str, Any]]:
    out = {}
    for entry in packages.values():
        try:
            out[dt.date.fromisoformat(str(entry.get("logical_date")))] = entry
        except ValueError:
            continue
    return out


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
