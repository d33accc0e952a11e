"""Reading the seeds of ``include/seeds/`` into the registry's models, checking every reference on the way.

The YAML is first parsed into strict schemas (shape and types only), then resolved: codes checked, references
followed, editions built on the rows of the edition they are based on. Any inconsistency is a
:class:`~osms.core.registry_models.RegistryError` naming the file and the entry at fault.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from osms.core.registry_models import (
    Body,
    Category,
    Column,
    ColumnType,
    Decree,
    Edition,
    EditionCategory,
    Feed,
    Funding,
    RegistryError,
    System,
)

# Codes become DAG ids, connection ids and directory names.
_CODE_RE = re.compile(r"^[a-z][a-z0-9_]*$")


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
# Loading and checking
# --------------------------------------------------------------------------


def read_seeds(seed_dir: Path) -> tuple[tuple[Edition, ...], tuple[Column, ...]]:
    """The editions (by date of force) and the common columns of the seeds in ``seed_dir``, checked."""
    bodies_f = _parse(seed_dir / "bodies.yaml", _BodiesFile)
    systems_f = _parse(seed_dir / "systems.yaml", _SystemsFile)
    categories_f = _parse(seed_dir / "categories.yaml", _CategoriesFile)
    editions_f = _parse(seed_dir / "editions.yaml", _EditionsFile)

    bodies = _catalog("bodies.yaml", "body", bodies_f.bodies)
    systems = _catalog("systems.yaml", "system", systems_f.systems)
    categories = _catalog("categories.yaml", "category", categories_f.categories)
    _check_systems(systems, bodies)
    common = tuple(_column("categories.yaml: common_columns", c) for c in categories_f.common_columns)
    _unique_columns("categories.yaml: common_columns", common)
    resolved_categories = _resolve_categories(categories, common)

    editions = _editions(editions_f.editions, bodies, systems, resolved_categories, common)
    _check_every_entry_used(editions, bodies, systems, categories)
    return editions, common


def _check_systems(systems: dict[str, _RawSystem], bodies: dict[str, _RawBody]) -> None:
    """Each system names known bodies, each once, and has a Kazakh name unless provisional."""
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


def _resolve_categories(categories: dict[str, _RawCategory], common: tuple[Column, ...]) -> dict[str, Category]:
    """The categories as models, their columns checked (none repeating a common column)."""
    resolved: dict[str, Category] = {}
    for c in categories.values():
        where = f"categories.yaml: category {c.code!r}"
        if not c.provisional and not c.name_kk:
            raise RegistryError(f"{where}: has no Kazakh name (only a provisional category may lack one)")
        cols = tuple(_column(where, col) for col in c.columns)
        _unique_columns(where, common + cols)
        resolved[c.code] = Category(
            code=c.code,
            name_kk=c.name_kk,
            name_ru=c.name_ru,
            name_en=c.name_en,
            provisional=c.provisional,
            columns=cols,
        )
    return resolved


def _check_every_entry_used(
    editions: tuple[Edition, ...],
    bodies: dict[str, _RawBody],
    systems: dict[str, _RawSystem],
    categories: dict[str, _RawCategory],
) -> None:
    """A catalog entry no edition uses is refused: it is a typo or a leftover."""
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
    """Every edition resolved, on the rows of the one it is based on, none overlapping another in force."""
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
            raise RegistryError(
                f"{where}: effective_to {raw.effective_to} is before effective_from {raw.effective_from}"
            )
        rows_of[raw.code] = rows = _edition_rows(where, raw, rows_of)
        edition_categories, feeds = _edition_entries(where, raw, rows, _Catalogs(bodies, systems, categories), common)
        edition = _edition(raw, edition_categories, feeds, bodies, systems)
        for other in resolved.values():
            if _overlap(edition, other):
                raise RegistryError(
                    f"{where}: its period of force {_period(edition)} overlaps edition {other.code!r}"
                    f" ({_period(other)})"
                )
        resolved[raw.code] = edition
    return tuple(sorted(resolved.values(), key=lambda e: e.effective_from))


class _Catalogs(NamedTuple):
    """The catalogs a row's references are checked against."""

    bodies: dict[str, _RawBody]
    systems: dict[str, _RawSystem]
    categories: dict[str, Category]


def _edition_rows(where: str, raw: _RawEdition, rows_of: dict[str, dict[int, _RawRow]]) -> dict[int, _RawRow]:
    """An edition's rows by number: those of the edition it is based on, with its own replacing or adding."""
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
    return rows


def _edition_entries(
    where: str, raw: _RawEdition, rows: dict[int, _RawRow], catalogs: _Catalogs, common: tuple[Column, ...]
) -> tuple[list[EditionCategory], list[Feed]]:
    """An edition's categories and feeds in row order, each row checked (one category once, its feeds known)."""
    edition_categories: list[EditionCategory] = []
    feeds: list[Feed] = []
    seen_categories: dict[str, int] = {}
    for number in sorted(rows):
        row = rows[number]
        here = f"{where}, row {number}"
        if row.category not in catalogs.categories:
            raise RegistryError(f"{here}: names unknown category {row.category!r}")
        if row.category in seen_categories:
            raise RegistryError(
                f"{here}: category {row.category!r} is already row {seen_categories[row.category]}"
            )
        seen_categories[row.category] = number
        category = catalogs.categories[row.category]
        provisional = row.provisional or category.provisional
        if provisional and not raw.provisional:
            raise RegistryError(f"{here}: a provisional category or row in an edition not marked provisional")
        feeds += _row_feeds(here, number, row, provisional, catalogs)
        edition_categories.append(
            EditionCategory(
                row=number,
                category=category,
                funding=row.funding,
                provisional=provisional,
                common_columns=common,
            )
        )
    return edition_categories, feeds


def _row_feeds(here: str, number: int, row: _RawRow, provisional: bool, catalogs: _Catalogs) -> list[Feed]:
    """The feeds of one row: known bodies, each with systems of its own, a provisional system only if the row is."""
    if not row.feeds:
        raise RegistryError(f"{here}: names no feed")
    feeds: list[Feed] = []
    for body, body_systems in row.feeds.items():
        if body not in catalogs.bodies:
            raise RegistryError(f"{here}: feed {body}/... names unknown body {body!r}")
        if not body_systems:
            raise RegistryError(f"{here}: body {body!r} names no system")
        for system in body_systems:
            feed_name = f"{body}.{system}.{row.category}"
            if system not in catalogs.systems:
                raise RegistryError(f"{here}: feed {feed_name} names unknown system {system!r}")
            if body not in catalogs.systems[system].bodies:
                raise RegistryError(
                    f"{here}: feed {feed_name}: system {system!r} is not a system of body {body!r}"
                    " (see its bodies in systems.yaml)"
                )
            if catalogs.systems[system].provisional and not provisional:
                raise RegistryError(
                    f"{here}: feed {feed_name} uses provisional system {system!r} in a row not marked provisional"
                )
            feed = Feed(row=number, body=body, system=system, category=row.category)
            # a feed of another row differs by its row and category: a repeat can only be within this row
            if feed in feeds:
                raise RegistryError(f"{here}: feed {feed_name} is listed twice")
            feeds.append(feed)
    return feeds


def _edition(
    raw: _RawEdition,
    edition_categories: list[EditionCategory],
    feeds: list[Feed],
    bodies: dict[str, _RawBody],
    systems: dict[str, _RawSystem],
) -> Edition:
    """The edition's model: its bodies and systems are those its feeds use, in seed order."""
    used_bodies = {f.body for f in feeds}
    used_systems = {f.system for f in feeds}
    return Edition(
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
