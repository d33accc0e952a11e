"""The registry's typed models: the decree's editions, bodies, systems, categories, columns and feeds.

What the rest of the project uses, built by :mod:`osms.core.registry_seeds` from the seeds and reached through
:mod:`osms.core.registry` (which re-exports every name here). Immutable: a model is checked once, when the
registry loads, and then only read.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

ColumnType = Literal["string", "iin", "date", "timestamp", "int", "bool", "enum"]
Funding = Literal["republican_budget", "local_budget"]


class RegistryError(ValueError):
    """The seeds are inconsistent; the message names the file and the entry."""


class NoEditionInForce(LookupError):
    """No edition of the decree is in force on the requested date."""


@functools.cache
def arrow_type(column_type: ColumnType) -> Any:
    """The Arrow type of a registry column type (pyarrow is imported on first use, not at parse time)."""
    import pyarrow as pa

    return {
        "string": pa.string(),
        "iin": pa.string(),
        "enum": pa.string(),
        "date": pa.date32(),
        "timestamp": pa.timestamp("s", tz="UTC"),
        "int": pa.int32(),
        "bool": pa.bool_(),
    }[column_type]


@dataclass(frozen=True)
class Column:
    """A column of the source record contract."""

    name: str
    type: ColumnType
    required: bool
    personal: bool
    description: str
    values: tuple[str, ...] | None = None
    pattern: str | None = None

    @property
    def arrow_type(self) -> Any:
        """The Arrow type of this column in landing files and served records."""
        return arrow_type(self.type)

    def to_dict(self) -> dict[str, Any]:
        """The column in the stable JSON form."""
        return {
            "name": self.name,
            "type": self.type,
            "required": self.required,
            "personal": self.personal,
            "values": list(self.values) if self.values is not None else None,
            "pattern": self.pattern,
            "description": self.description,
        }


@dataclass(frozen=True)
class Body:
    """A state body responsible for data (column 2 of the decree's table)."""

    code: str
    name_kk: str
    name_ru: str | None
    name_en: str

    @property
    def dag_id(self) -> str:
        """The id of this body's agency DAG."""
        return f"agency_{self.code}"

    def to_dict(self) -> dict[str, Any]:
        """The body in the stable JSON form."""
        return {
            "code": self.code,
            "name_kk": self.name_kk,
            "name_ru": self.name_ru,
            "name_en": self.name_en,
            "dag_id": self.dag_id,
        }


@dataclass(frozen=True)
class System:
    """An information system a body feeds data from (column 4)."""

    code: str
    name_kk: str | None
    name_ru: str | None
    name_en: str
    bodies: tuple[str, ...]
    provisional: bool
    note: str | None

    @property
    def connection_id(self) -> str:
        """The Airflow connection holding this system's URL and token."""
        return f"osms_source_{self.code}"

    @property
    def pool(self) -> str:
        """The Airflow pool capping how many extracts query this system at once."""
        return f"osms_source_{self.code}"

    def to_dict(self) -> dict[str, Any]:
        """The system in the stable JSON form."""
        return {
            "code": self.code,
            "name_kk": self.name_kk,
            "name_ru": self.name_ru,
            "name_en": self.name_en,
            "bodies": list(self.bodies),
            "connection_id": self.connection_id,
            "provisional": self.provisional,
            "note": self.note,
        }


@dataclass(frozen=True)
class Category:
    """A category of persons (column 3) and its category-specific columns."""

    code: str
    name_kk: str | None
    name_ru: str | None
    name_en: str
    provisional: bool
    columns: tuple[Column, ...]


@dataclass(frozen=True)
class EditionCategory:
    """A category as an edition lists it: its row, funding and columns."""

    row: int
    category: Category
    funding: Funding
    provisional: bool
    common_columns: tuple[Column, ...] = field(repr=False)

    @property
    def code(self) -> str:
        """The category's code."""
        return self.category.code

    @property
    def record_columns(self) -> tuple[Column, ...]:
        """Every column a source record of this category carries, in order."""
        return self.common_columns + self.category.columns

    def to_dict(self) -> dict[str, Any]:
        """The category in the stable JSON form."""
        c = self.category
        return {
            "code": c.code,
            "row": self.row,
            "name_kk": c.name_kk,
            "name_ru": c.name_ru,
            "name_en": c.name_en,
            "funding": self.funding,
            "provisional": self.provisional,
            "columns": [col.to_dict() for col in c.columns],
        }


@dataclass(frozen=True)
class Feed:
    """One (body, system, category) flow of data named by a row of the decree."""

    row: int
    body: str
    system: str
    category: str

    @property
    def id(self) -> str:
        """A stable, readable id: ``body.system.category``."""
        return f"{self.body}.{self.system}.{self.category}"

    def to_dict(self) -> dict[str, Any]:
        """The feed in the stable JSON form."""
        return {
            "id": self.id,
            "row": self.row,
            "body": self.body,
            "system": self.system,
            "category": self.category,
        }


@dataclass(frozen=True)
class Decree:
    """The decree that made an edition."""

    number: str
    date: dt.date
    title: str


@dataclass(frozen=True)
class Edition:
    """The list as in force over one period: the single source of truth for a date."""

    code: str
    decree: Decree
    effective_from: dt.date
    effective_to: dt.date | None
    provisional: bool
    source: str
    based_on: str | None
    categories: tuple[EditionCategory, ...]
    feeds: tuple[Feed, ...]
    bodies: tuple[Body, ...]
    systems: tuple[System, ...]

    def in_force(self, day: dt.date) -> bool:
        """Whether this edition is in force on ``day``."""
        return self.effective_from <= day and (self.effective_to is None or day <= self.effective_to)

    def body(self, code: str) -> Body:
        """The body with this code; KeyError naming the edition if it has none."""
        return _find(self.bodies, code, f"edition {self.code} has no body {code!r}")

    def system(self, code: str) -> System:
        """The system with this code."""
        return _find(self.systems, code, f"edition {self.code} has no system {code!r}")

    def category(self, code: str) -> EditionCategory:
        """The category with this code."""
        return _find(self.categories, code, f"edition {self.code} has no category {code!r}")

    def feeds_of(self, body: str) -> tuple[Feed, ...]:
        """The feeds a body is responsible for, in decree order."""
        self.body(body)
        return tuple(f for f in self.feeds if f.body == body)

    def categories_of(self, body: str) -> tuple[EditionCategory, ...]:
        """The categories a body feeds, in decree order."""
        codes = {f.category for f in self.feeds_of(body)}
        return tuple(c for c in self.categories if c.code in codes)

    def feeds_for(self, category: str) -> tuple[Feed, ...]:
        """Every feed of one category, across bodies."""
        self.category(category)
        return tuple(f for f in self.feeds if f.category == category)

    def to_dict(self) -> dict[str, Any]:
        """The edition's header in the stable JSON form."""
        return {
            "code": self.code,
            "based_on": self.based_on,
            "decree": {
                "number": self.decree.number,
                "date": self.decree.date.isoformat(),
                "title": self.decree.title,
            },
            "effective_from": self.effective_from.isoformat(),
            "effective_to": self.effective_to.isoformat() if self.effective_to else None,
            "provisional": self.provisional,
            "source": self.source,
        }


@dataclass(frozen=True)
class Registry:
    """Every edition of the decree, with the catalogs they draw from."""

    editions: tuple[Edition, ...]
    common_columns: tuple[Column, ...]
    source_dir: Path

    def edition_on(self, day: dt.date) -> Edition:
        """The edition in force on ``day``; :class:`NoEditionInForce` if none is."""
        for edition in self.editions:
            if edition.in_force(day):
                return edition
        first = min(e.effective_from for e in self.editions)
        if day < first:
            raise NoEditionInForce(
                f"no edition of Decree No. 660 is available for {day.isoformat()}: the earliest"
                f" edition in the registry is in force from {first.isoformat()} (the 2021"
                " original list is not available)"
            )
        raise NoEditionInForce(f"no edition of Decree No. 660 is in force on {day.isoformat()}")

    def edition(self, code: str) -> Edition:
        """The edition with this code."""
        return _find(self.editions, code, f"the registry has no edition {code!r}")

    def all_categories(self) -> tuple[EditionCategory, ...]:
        """Every category of every edition, latest edition's form first, once each."""
        seen: dict[str, EditionCategory] = {}
        for edition in reversed(self.editions):
            for cat in edition.categories:
                seen.setdefault(cat.code, cat)
        return tuple(sorted(seen.values(), key=lambda c: c.row))

    def all_bodies(self) -> tuple[Body, ...]:
        """Every body of every edition, once each, in seed order."""
        seen: dict[str, Body] = {}
        for edition in self.editions:
            for body in edition.bodies:
                seen.setdefault(body.code, body)
        return tuple(seen.values())

    def all_systems(self) -> tuple[System, ...]:
        """Every system of every edition, once each, in seed order."""
        seen: dict[str, System] = {}
        for edition in self.editions:
            for system in edition.systems:
                seen.setdefault(system.code, system)
        return tuple(seen.values())

    def describe(self, day: dt.date) -> dict[str, Any]:
        """The stable JSON document of ``osms registry show --json`` for ``day``."""
        edition = self.edition_on(day)
        return {
            "schema": "osms.core.registry/1",
            "date": day.isoformat(),
            "edition": edition.to_dict(),
            "counts": {
                "bodies": len(edition.bodies),
                "systems": len(edition.systems),
                "categories": len(edition.categories),
                "feeds": len(edition.feeds),
            },
            "common_columns": [c.to_dict() for c in self.common_columns],
            "bodies": [b.to_dict() for b in edition.bodies],
            "systems": [s.to_dict() for s in edition.systems],
            "categories": [c.to_dict() for c in edition.categories],
            "feeds": [f.to_dict() for f in edition.feeds],
        }


def _find(items: Iterable[Any], code: str, message: str) -> Any:
    for item in items:
        if item.code == code:
            return item
    raise KeyError(message)
