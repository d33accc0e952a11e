"""One Airflow pool per source system: however many workers run, one system never gets more extracts at once.

Every extract task of a system (of any body, any category) runs in the system's pool
(``System.pool``, ``osms_source_<system>``), so the number of requests a system sees at a
time is its pool's size, not the number of worker slots. The size comes from one setting,
``OSMS_SOURCE_POOL_SLOTS`` (default 2: each extract pages through one request at a time,
and two at once is what the systems were asked to bear). The init of every shape creates
the pools that are missing (``osms deploy init``, ``osms run``'s set-up, ``make airflow``);
an existing pool keeps the size an engineer gave it (Admin → Pools), like a password.
"""

from __future__ import annotations

from osms.core import settings
from osms.core.settings import DEFAULT_POOL_SLOTS, POOL_SLOTS_ENV

__all__ = ["DEFAULT_POOL_SLOTS", "POOL_SLOTS_ENV", "ensure_source_pools", "pool_slots", "source_pools"]


def pool_slots() -> int:
    """The size of a new source system's pool: ``OSMS_SOURCE_POOL_SLOTS``, a whole number from 1."""
    return settings.current().pool_slots


def source_pools() -> dict[str, str]:
    """The pool of every source system of any edition, with its description (the system's name)."""
    from osms.core.registry import default_registry

    return {s.pool: f"{s.name_en}: the extracts that may query it at once (connection {s.connection_id})"
            for s in default_registry().all_systems()}


def ensure_source_pools(slots: int | None = None) -> list[str]:
    """Create the missing source-system pools in the metadata database; return every pool's name.

    Runs in a process configured for the deployment (its metadata database); existing pools are left as they are.
    """
    from airflow.models.pool import Pool
    from airflow.utils.session import create_session
    from sqlalchemy import select

    size = slots or pool_slots()
    wanted = source_pools()
    with create_session() as session:
        existing = set(session.scalars(select(Pool.pool).where(Pool.pool.in_(list(wanted)))))
        for name, description in sorted(wanted.items()):
            if name not in existing:
                session.add(Pool(pool=name, slots=size, description=description, include_deferred=False))
    return sorted(wanted)
