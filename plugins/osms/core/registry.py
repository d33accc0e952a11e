"""The decree as data: editions of the list annexed to Decree No. 660, with their
bodies, information systems, categories of persons and feeds.

The seeds in ``include/seeds/`` are parsed into immutable typed models. Loading
checks every reference and refuses an inconsistent registry with a
:class:`RegistryError` that names the file and the entry at fault, so a typo in a
seed can never reach a DAG.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

__all__ = [
    "Body",
    "Category",
    "Column",
    "Edition",
    "EditionCategory",
    "Feed",
    "NoEditionInForce",
    "Registry",
    "RegistryError",
    "System",
    "default_registry",
    "load_registry",
]

ColumnType = Literal["string", "iin", "date", "timestamp", "int", "bool", "enum"]
Funding = Literal["republican_budget", "local_budget"]

# Codes become DAG ids, connection ids and directory names.
_CODE_RE = re.compile(r"^[a-z][a-z0-9_]*$")


class RegistryError(ValueError):
    """The seeds are inconsistent; the message names the file and the entry."""


class NoEditionInForce(LookupError):
    """No edition of the decree is in force on the requested date."""


# --------------------------------------------------------------------------
# Raw seed schemas: the YAML as written, checked for shape and types only.
# --------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _RawBody(_Strict):
    code: str
    name_kk: str
    name_ru: str | None = None
    name_en: str


class _RawSystem(_Strict):
    code: str
    name_kk: str | None
    name_ru: str | None = None
    name_en: str
    bodies: list[str]
    provisional: bool = False
    note: str | None = None


class _RawColumn(_Strict):
    name: str
    type: ColumnType
    required: bool
    personal: bool = False
    values: list[str] | None = None
    pattern: str | None = None
    description: str


class _RawCategory(_Strict):
    code: str
    name_kk: str | None
    name_ru: str | None = None
    name_en: str
    provisional: bool = False
    columns: list[_RawColumn]


class _RawDecree(_Strict):
    number: str
    date: dt.date
    title: str


class _RawRow(_Strict):
    row: int
    category: str
    funding: Funding
    provisional: bool = False
    feeds: dict[str, list[str]]


class _RawEdition(_Strict):
    code: str
    based_on: str | None = None
    decree: _RawDecree
    effective_from: dt.date
    effective_to: dt.date | None
    provisional: bool
    source: str
    rows: list[_RawRow]


class _BodiesFile(_Strict):
    bodies: list[_RawBody]


class _SystemsFile(_Strict):
    systems: list[_RawSystem]


class _CategoriesFile(_Strict):
    common_columns: list[_RawColumn]
    categories: list[_RawCategory]


class _EditionsFile(_Strict):
    editions: list[_RawEdition]


# --------------------------------------------------------------------------
# Resolved models: what the rest of the project uses.
# --------------------------------------------------------------------------


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


# --------------------------------------------------------------------------
# Loading and checking
# --------------------------------------------------------------------------


def default_seed_dir() -> Path:
    """``include/seeds`` of this checkout, or ``$OSMS_SEED_DIR`` when set."""
    env = os.environ.get("OSMS_SEED_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "include" / "seeds"


@functools.lru_cache(maxsize=4)
def _cached(seed_dir: str) -> Registry:
    return load_registry(Path(seed_dir))


def default_registry() -> Registry:
    """The project's registry, loaded once per process."""
    return _cached(str(default_seed_dir()))


def load_registry(seed_dir: Path | str | None = None) -> Registry:
    """Parse and check the seeds in ``seed_dir``; :class:`RegistryError` if inconsistent."""
    seed_dir = Path(seed_dir) if seed_dir is not None else default_seed_dir()
    bodies_f = _parse(seed_dir / "bodies.yaml", _BodiesFile)
    systems_f = _parse(seed_dir / "systems.yaml", _SystemsFile)
    categories_f = _parse(seed_dir / "categories.yaml", _CategoriesFile)
    editions_f = _parse(seed_dir / "editions.yaml", _EditionsFile)

    bodies = _catalog("bodies.yaml", "body", bodies_f.bodies)
    systems = _catalog("systems.yaml", "system", systems_f.systems)
    categories = _catalog("categories.yaml", "category", categories_f.categories)

    for s in systems.values():
        where = f"systems.yaml: system {s.code!r}"
        if not s.bodies:
            raise RegistryError(f"{where}: names no body")
        for b in s.bodies:
            if b not in bodies:
                raise RegistryError(f"{where}: names unknown body {b!r}")
        if len(set(s.bodies)) != len(s.bodies):
            raise RegistryError(f"{where}: names a body twice")
        if not s.provisional and not s.name_kk:
            raise RegistryError(f"{where}: has no Kazakh name (only a provisional system may lack one)")

    common = tuple(_column("categories.yaml: common_columns", c) for c in categories_f.common_columns)
    _unique_columns("categories.yaml: common_columns", common)
    resolved_categories: dict[str, Category] = {}
    for c in categories.values():
        where = f"categories.yaml: category {c.code!r}"
        if not c.provisional and not c.name_kk:
            raise RegistryError(f"{where}: has no Kazakh name (only a provisional category may lack one)")
        cols = tuple(_column(where, col) for col in c.columns)
        _unique_columns(where, common + cols)
        resolved_categories[c.code] = Category(
            code=c.code,
            name_kk=c.name_kk,
            name_ru=c.name_ru,
            name_en=c.name_en,
            provisional=c.provisional,
            columns=cols,
        )

    editions = _editions(editions_f.editions, bodies, systems, resolved_categories, common)

    used_bodies = {b.code for e in editions for b in e.bodies}
    used_systems = {s.code for e in editions for s in e.systems}
    used_categories = {c.code for e in editions for c in e.categories}
    for file, kind, catalog, used in (
        ("bodies.yaml", "body", bodies, used_bodies),
        ("systems.yaml", "system", systems, used_systems),
        ("categories.yaml", "category", categories, used_categories),
    ):
        for code in catalog:
            if code not in used:
                raise RegistryError(f"{file}: {kind} {code!r} is not used by any edition")

    return Registry(editions=editions, common_columns=common, source_dir=seed_dir)


def _parse(path: Path, schema: type[BaseModel]) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RegistryError(f"{path.name}: the seed file is missing from {path.parent}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RegistryError(f"{path.name}: not valid YAML: {exc}") from None
    try:
        return schema.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{_describe_loc(raw, err['loc'])}: {err['msg']}" for err in exc.errors()[:5]
        )
        raise RegistryError(f"{path.name}: {problems}") from None


def _describe_loc(raw: Any, loc: tuple[Any, ...]) -> str:
    """Turn a pydantic error location into words naming the entry (by code or row)."""
    parts: list[str] = []
    node = raw
    for key in loc:
        if isinstance(key, int) and isinstance(node, list) and 0 <= key < len(node):
            node = node[key]
            label = None
            if isinstance(node, Mapping):
                label = node.get("code") or (f"row {node['row']}" if "row" in node else None)
            parts.append(f"[{label!r}]" if label is not None else f"[{key}]")
        else:
            node = node.get(key) if isinstance(node, Mapping) else None
            parts.append(f".{key}" if parts else str(key))
    return "".join(parts) or "(top level)"


def _catalog(file: str, kind: str, entries: list[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for entry in entries:
        if not _CODE_RE.match(entry.code):
            raise RegistryError(
                f"{file}: {kind} {entry.code!r}: a code must be lower-case letters, digits and _"
            )
        if entry.code in out:
            raise RegistryError(f"{file}: {kind} {entry.code!r} is defined twice")
        out[entry.code] = entry
    return out


def _column(where: str, raw: _RawColumn) -> Column:
    here = f"{where}, column {raw.name!r}"
    if not _CODE_RE.match(raw.name):
        raise RegistryError(f"{here}: a column name must be lower-case letters, digits and _")
    if raw.type == "enum" and not raw.values:
        raise RegistryError(f"{here}: an enum column needs its values")
    if raw.type != "enum" and raw.values is not None:
        raise RegistryError(f"{here}: only an enum column has values")
    if raw.values is not None and len(set(raw.values)) != len(raw.values):
        raise RegistryError(f"{here}: a value is listed twice")
    if raw.pattern is not None:
        if raw.type != "string":
            raise RegistryError(f"{here}: only a string column has a pattern")
        try:
            re.compile(raw.pattern)
        except re.error as exc:
            raise RegistryError(f"{here}: the pattern is not a regular expression: {exc}") from None
    return Column(
        name=raw.name,
        type=raw.type,
        required=raw.required,
        personal=raw.personal or raw.type == "iin",
        description=raw.description,
        values=tuple(raw.values) if raw.values is not None else None,
        pattern=raw.pattern,
    )


def _unique_columns(where: str, columns: tuple[Column, ...]) -> None:
    seen: set[str] = set()
    for col in columns:
        if col.name in seen:
            raise RegistryError(f"{where}: column {col.name!r} is declared twice (or repeats a common column)")
        seen.add(col.name)


def _editions(
    raw_editions: list[_RawEdition],
    bodies: dict[str, _RawBody],
    systems: dict[str, _RawSystem],
    categories: dict[str, Category],
    common: tuple[Column, ...],
) -> tuple[Edition, ...]:
    file = "editions.yaml"
    if not raw_editions:
        raise RegistryError(f"{file}: no edition is defined")
    resolved: dict[str, Edition] = {}
    rows_of: dict[str, dict[int, _RawRow]] = {}
    for raw in raw_editions:
        where = f"{file}: edition {raw.code!r}"
        if raw.code in resolved:
            raise RegistryError(f"{where} is defined twice")
        if raw.effective_to is not None and raw.effective_to < raw.effective_from:
            raise RegistryError(f"{where}: effective_to {raw.effective_to} is before effective_from {raw.effective_from}")

        rows: dict[int, _RawRow] = {}
        if raw.based_on is not None:
            if raw.based_on not in rows_of:
                raise RegistryError(
                    f"{where}: based_on {raw.based_on!r} names no edition defined before it"
                )
            rows.update(rows_of[raw.based_on])
        own_rows: set[int] = set()
        for row in raw.rows:
            if row.row in own_rows:
                raise RegistryError(f"{where}: row {row.row} is listed twice")
            if row.row < 1:
                raise RegistryError(f"{where}: row {row.row}: a row number starts at 1")
            own_rows.add(row.row)
            rows[row.row] = row
        rows_of[raw.code] = rows

        edition_categories: list[EditionCategory] = []
        feeds: list[Feed] = []
        seen_categories: dict[str, int] = {}
        for number in sorted(rows):
            row = rows[number]
            here = f"{where}, row {number}"
            if row.category not in categories:
                raise RegistryError(f"{here}: names unknown category {row.category!r}")
            if row.category in seen_categories:
                raise RegistryError(
                    f"{here}: category {row.category!r} is already row {seen_categories[row.category]}"
                )
            seen_categories[row.category] = number
            category = categories[row.category]
            provisional = row.provisional or category.provisional
            if provisional and not raw.provisional:
                raise RegistryError(f"{here}: a provisional category or row in an edition not marked provisional")
            if not row.feeds:
                raise RegistryError(f"{here}: names no feed")
            for body, body_systems in row.feeds.items():
                if body not in bodies:
                    raise RegistryError(f"{here}: feed {body}/... names unknown body {body!r}")
                if not body_systems:
                    raise RegistryError(f"{here}: body {body!r} names no system")
                for system in body_systems:
                    feed_name = f"{body}.{system}.{row.category}"
                    if system not in systems:
                        raise RegistryError(f"{here}: feed {feed_name} names unknown system {system!r}")
                    if body not in systems[system].bodies:
                        raise RegistryError(
                            f"{here}: feed {feed_name}: system {system!r} is not a system of body {body!r}"
                            " (see its bodies in systems.yaml)"
                        )
                    if systems[system].provisional and not provisional:
                        raise RegistryError(
                            f"{here}: feed {feed_name} uses provisional system {system!r} in a row not marked provisional"
                        )
                    feed = Feed(row=number, body=body, system=system, category=row.category)
                    if feed in feeds:
                        raise RegistryError(f"{here}: feed {feed_name} is listed twice")
                    feeds.append(feed)
            edition_categories.append(
                EditionCategory(
                    row=number,
                    category=category,
                    funding=row.funding,
                    provisional=provisional,
                    common_columns=common,
                )
            )

        used_bodies = {f.body for f in feeds}
        used_systems = {f.system for f in feeds}
        edition = Edition(
            code=raw.code,
            decree=Decree(number=raw.decree.number, date=raw.decree.date, title=raw.decree.title),
            effective_from=raw.effective_from,
            effective_to=raw.effective_to,
            provisional=raw.provisional,
            source=raw.source,
            based_on=raw.based_on,
            categories=tuple(edition_categories),
            feeds=tuple(feeds),
            bodies=tuple(_body(b) for code, b in bodies.items() if code in used_bodies),
            systems=tuple(_system(s) for code, s in systems.items() if code in used_systems),
        )
        for other in resolved.values():
            if _overlap(edition, other):
                raise RegistryError(
                    f"{where}: its period of force {_period(edition)} overlaps edition {other.code!r} ({_period(other)})"
                )
        resolved[raw.code] = edition
    return tuple(sorted(resolved.values(), key=lambda e: e.effective_from))


def _body(raw: _RawBody) -> Body:
    return Body(code=raw.code, name_kk=raw.name_kk, name_ru=raw.name_ru, name_en=raw.name_en)


def _system(raw: _RawSystem) -> System:
    return System(
        code=raw.code,
        name_kk=raw.name_kk,
        name_ru=raw.name_ru,
        name_en=raw.name_en,
        bodies=tuple(raw.bodies),
        provisional=raw.provisional,
        note=raw.note,
    )


def _overlap(a: Edition, b: Edition) -> bool:
    far = dt.date.max
    return a.effective_from <= (b.effective_to or far) and b.effective_from <= (a.effective_to or far)


def _period(e: Edition) -> str:
    return f"{e.effective_from.isoformat()}..{e.effective_to.isoformat() if e.effective_to else 'open'}"
