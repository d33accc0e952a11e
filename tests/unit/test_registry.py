"""The registry: the decree's table exactly, edition selection, refusal of bad seeds."""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from osms.core.registry import NoEditionInForce, Registry, RegistryError, default_seed_dir, load_registry

pytestmark = pytest.mark.unit

# The 2022 table of the decree (docs/decree-660.kk.txt), transcribed by hand independently of
# include/seeds: (row, body, system). 35 feeds.
DECREE_2022_FEEDS = {
    (1, "enlightenment", "nedb"),
    (1, "enlightenment", "orphans"),
    (1, "justice", "individuals"),
    (2, "labour", "labour_market"),
    (3, "health", "pregnancy_register"),
    (3, "labour", "payments"),
    (4, "labour", "pensions_benefits"),
    (4, "labour", "payments"),
    (4, "justice", "civil_registry"),
    (4, "enlightenment", "orphans"),
    (5, "labour", "pensions_benefits"),
    (5, "justice", "civil_registry"),
    (5, "enlightenment", "orphans"),
    (6, "labour", "pensions_benefits"),
    (6, "labour", "payments"),
    (7, "labour", "pensions_benefits"),
    (7, "labour", "payments"),
    (8, "labour", "pensions_benefits"),
    (8, "labour", "payments"),
    (8, "courts", "judicial_is"),
    (9, "interior", "penal_db"),
    (10, "prosecutor", "legal_statistics"),
    (10, "labour", "payments"),
    (11, "labour", "oralman"),
    (11, "labour", "payments"),
    (12, "labour", "pensions_benefits"),
    (13, "labour", "disability_db"),
    (14, "science", "nedb"),
    (14, "science", "egov_portal"),
    (14, "science", "students_abroad"),
    (14, "enlightenment", "nedb"),
    (15, "labour", "tsa_db"),
    (15, "labour", "payments"),
    (16, "interior", "migration_police"),
    (16, "labour", "foreign_labour"),
}

ROW_CATEGORY = {
    1: "children",
    2: "unemployed",
    3: "pregnant",
    4: "carer_child_under3",
    5: "parental_leave",
    6: "carer_disabled_child",
    7: "carer_group1",
    8: "pensioners",
    9: "inmates",
    10: "detainees",
    11: "kandases",
    12: "mothers_many_children",
    13: "disabled",
    14: "students",
    15: "tsa_recipients",
    16: "eaeu_migrants",
}


@pytest.fixture(scope="module")
def registry() -> Registry:
    return load_registry()


# ------------------------------------------------------------------ the 2022 table


def test_2022_edition_counts(registry: Registry) -> None:
    e = registry.edition("2022")
    assert (len(e.bodies), len(e.systems), len(e.categories), len(e.feeds)) == (8, 18, 16, 35)
    assert not e.provisional
    assert e.decree.number == "748"
    assert (e.effective_from, e.effective_to) == (dt.date(2022, 9, 26), dt.date(2025, 12, 31))


def test_2022_every_feed_of_the_decree_table(registry: Registry) -> None:
    e = registry.edition("2022")
    got = {(f.row, f.body, f.system) for f in e.feeds}
    assert got == DECREE_2022_FEEDS
    assert {f.row: f.category for f in e.feeds} == ROW_CATEGORY
    assert {c.row: c.code for c in e.categories} == ROW_CATEGORY


def test_2022_labour_appears_in_13_rows(registry: Registry) -> None:
    e = registry.edition("2022")
    assert len({f.row for f in e.feeds_of("labour")}) == 13


def test_2022_all_republican_budget(registry: Registry) -> None:
    assert {c.funding for c in registry.edition("2022").categories} == {"republican_budget"}


def test_every_name_present(registry: Registry) -> None:
    e = registry.edition("2022")
    for item in (*e.bodies, *e.systems, *(c.category for c in e.categories)):
        assert item.name_kk and item.name_en, item.code


def test_2026_edition_is_2022_plus_the_amendment(registry: Registry) -> None:
    old, new = registry.edition("2022"), registry.edition("2026")
    assert new.provisional and new.source
    assert new.effective_from == dt.date(2026, 1, 1) and new.effective_to is None
    assert len(new.categories) == 17
    assert {(f.row, f.body, f.system) for f in new.feeds} == DECREE_2022_FEEDS | {(17, "labour", "labour_unnamed")}
    crisis = new.category("crisis_nonworking")
    assert crisis.provisional and crisis.funding == "local_budget"
    assert new.system("labour_unnamed").provisional
    assert {c.code for c in new.categories if c.funding == "local_budget"} == {"unemployed", "crisis_nonworking"}
    assert old.category("unemployed").funding == "republican_budget"
    assert [b.code for b in new.bodies] == [b.code for b in old.bodies]


def test_every_category_declares_typed_columns(registry: Registry) -> None:
    common = {c.name for c in registry.common_columns}
    assert {"record_id", "iin", "last_name", "first_name", "patronymic", "birth_date", "sex",
            "period_start", "period_end", "updated_at"} == common
    for cat in registry.all_categories():
        assert cat.category.columns, cat.code
        names = [c.name for c in cat.record_columns]
        assert len(names) == len(set(names))
    migrants = registry.edition("2022").category("eaeu_migrants")
    assert {c.name for c in migrants.category.columns} >= {"citizenship", "relation"}
    inmates = registry.edition("2022").category("inmates")
    level = next(c for c in inmates.category.columns if c.name == "security_level")
    assert level.type == "enum" and "minimum" in level.values


def test_iin_columns_are_personal(registry: Registry) -> None:
    for cat in registry.all_categories():
        for col in cat.record_columns:
            if col.type == "iin" or col.name in {"last_name", "first_name", "patronymic"}:
                assert col.personal, (cat.code, col.name)


# ------------------------------------------------------------------ edition selection


@pytest.mark.parametrize(
    ("day", "code"),
    [
        (dt.date(2022, 9, 26), "2022"),
        (dt.date(2025, 6, 1), "2022"),
        (dt.date(2025, 12, 31), "2022"),
        (dt.date(2026, 1, 1), "2026"),
        (dt.date(2026, 3, 1), "2026"),
        (dt.date(2040, 1, 1), "2026"),
    ],
)
def test_edition_on(registry: Registry, day: dt.date, code: str) -> None:
    assert registry.edition_on(day).code == code


def test_before_first_edition_is_refused(registry: Registry) -> None:
    with pytest.raises(NoEditionInForce, match="2022-09-25.*2022-09-26"):
        registry.edition_on(dt.date(2022, 9, 25))


def test_describe_is_stable_json(registry: Registry) -> None:
    doc = registry.describe(dt.date(2025, 6, 1))
    assert doc["schema"] == "osms.core.registry/1"
    assert doc["edition"]["code"] == "2022"
    assert doc["counts"] == {"bodies": 8, "systems": 18, "categories": 16, "feeds": 35}
    assert [f["id"] for f in doc["feeds"]][0] == "enlightenment.nedb.children"
    assert registry.describe(dt.date(2025, 6, 1)) == doc


# ------------------------------------------------------------------ refusal of bad seeds


Mutation = Callable[[dict[str, Any]], None]


def _broken(tmp_path: Path, file: str, mutate: Mutation) -> Path:
    seeds = tmp_path / "seeds"
    shutil.copytree(default_seed_dir(), seeds)
    path = seeds / file
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    mutate(data)
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return seeds


def _row(data: dict[str, Any], edition: str, row: int) -> dict[str, Any]:
    ed = next(e for e in data["editions"] if e["code"] == edition)
    return next(r for r in ed["rows"] if r["row"] == row)


def _edition(data: dict[str, Any], code: str) -> dict[str, Any]:
    return next(e for e in data["editions"] if e["code"] == code)


def _cat(data: dict[str, Any], code: str) -> dict[str, Any]:
    return next(c for c in data["categories"] if c["code"] == code)


def test_unchanged_copy_loads(tmp_path: Path) -> None:
    seeds = _broken(tmp_path, "editions.yaml", lambda d: None)
    assert len(load_registry(seeds).edition("2022").feeds) == 35


BROKEN: list[tuple[str, str, Mutation, str]] = [
    (
        "feed names an unknown system",
        "editions.yaml",
        lambda d: _row(d, "2022", 3)["feeds"]["labour"].append("payrolls"),
        r"editions\.yaml: edition '2022', row 3: feed labour\.payrolls\.pregnant names unknown system 'payrolls'",
    ),
    (
        "feed names an unknown body",
        "editions.yaml",
        lambda d: _row(d, "2022", 9)["feeds"].update({"defence": ["penal_db"]}),
        r"editions\.yaml: edition '2022', row 9: .*unknown body 'defence'",
    ),
    (
        "row names an unknown category",
        "editions.yaml",
        lambda d: _row(d, "2022", 11).update(category="refugees"),
        r"editions\.yaml: edition '2022', row 11: names unknown category 'refugees'",
    ),
    (
        "feed uses a system of another body",
        "editions.yaml",
        lambda d: _row(d, "2022", 9)["feeds"]["interior"].append("payments"),
        r"editions\.yaml: edition '2022', row 9: feed interior\.payments\.inmates: system 'payments' is not a system of body 'interior'",
    ),
    (
        "a category in two rows",
        "editions.yaml",
        lambda d: _row(d, "2022", 13).update(category="children"),
        r"editions\.yaml: edition '2022', row 13: category 'children' is already row 1",
    ),
    (
        "a row listed twice",
        "editions.yaml",
        lambda d: _edition(d, "2022")["rows"].append(dict(_row(d, "2022", 2))),
        r"editions\.yaml: edition '2022': row 2 is listed twice",
    ),
    (
        "a feed listed twice",
        "editions.yaml",
        lambda d: _row(d, "2022", 2)["feeds"]["labour"].append("labour_market"),
        r"editions\.yaml: edition '2022', row 2: feed labour\.labour_market\.unemployed is listed twice",
    ),
    (
        "editions overlap",
        "editions.yaml",
        lambda d: _edition(d, "2022").update(effective_to=dt.date(2026, 6, 30)),
        r"editions\.yaml: edition '2026': its period of force 2026-01-01\.\.open overlaps edition '2022'",
    ),
    (
        "an edition ends before it starts",
        "editions.yaml",
        lambda d: _edition(d, "2022").update(effective_to=dt.date(2021, 1, 1)),
        r"editions\.yaml: edition '2022': effective_to 2021-01-01 is before effective_from 2022-09-26",
    ),
    (
        "an edition based on an unknown edition",
        "editions.yaml",
        lambda d: _edition(d, "2026").update(based_on="2019"),
        r"editions\.yaml: edition '2026': based_on '2019' names no edition",
    ),
    (
        "an edition code used twice",
        "editions.yaml",
        lambda d: _edition(d, "2026").update(code="2022"),
        r"editions\.yaml: edition '2022' is defined twice",
    ),
    (
        "a provisional system in a row not marked provisional",
        "editions.yaml",
        lambda d: _row(d, "2022", 2)["feeds"]["labour"].append("labour_unnamed"),
        r"editions\.yaml: edition '2022', row 2: feed labour\.labour_unnamed\.unemployed uses provisional system",
    ),
    (
        "an unknown funding",
        "editions.yaml",
        lambda d: _row(d, "2022", 5).update(funding="oblast_budget"),
        r"editions\.yaml: editions\['2022'\]\.rows\['row 5'\]\.funding: Input should be",
    ),
    (
        "a body code defined twice",
        "bodies.yaml",
        lambda d: d["bodies"].append(dict(d["bodies"][0])),
        r"bodies\.yaml: body 'enlightenment' is defined twice",
    ),
    (
        "a body code not usable as an id",
        "bodies.yaml",
        lambda d: d["bodies"][0].update(code="Enlightenment Ministry"),
        r"bodies\.yaml: body 'Enlightenment Ministry': a code must be",
    ),
    (
        "a system code defined twice",
        "systems.yaml",
        lambda d: d["systems"].append(dict(d["systems"][3])),
        r"systems\.yaml: system 'labour_market' is defined twice",
    ),
    (
        "a system names an unknown body",
        "systems.yaml",
        lambda d: d["systems"][0]["bodies"].append("culture"),
        r"systems\.yaml: system 'nedb': names unknown body 'culture'",
    ),
    (
        "a category code defined twice",
        "categories.yaml",
        lambda d: d["categories"].append(dict(d["categories"][0])),
        r"categories\.yaml: category 'children' is defined twice",
    ),
    (
        "a column declared twice",
        "categories.yaml",
        lambda d: _cat(d, "students")["columns"].append(dict(_cat(d, "students")["columns"][0])),
        r"categories\.yaml: category 'students': column 'education_level' is declared twice",
    ),
    (
        "a column repeats a common column",
        "categories.yaml",
        lambda d: _cat(d, "disabled")["columns"].append({"name": "iin", "type": "iin", "required": True, "description": "x"}),
        r"categories\.yaml: category 'disabled': column 'iin' is declared twice",
    ),
    (
        "an enum column without values",
        "categories.yaml",
        lambda d: _cat(d, "detainees")["columns"][0].pop("values"),
        r"categories\.yaml: category 'detainees', column 'measure': an enum column needs its values",
    ),
    (
        "an unknown column type",
        "categories.yaml",
        lambda d: _cat(d, "pregnant")["columns"][0].update(type="float"),
        r"categories\.yaml: categories\['pregnant'\]\.columns\[0\]\.type: Input should be",
    ),
    (
        "a category without a Kazakh name",
        "categories.yaml",
        lambda d: _cat(d, "kandases").update(name_kk=None),
        r"categories\.yaml: category 'kandases': has no Kazakh name",
    ),
    (
        "a catalog entry no edition uses",
        "systems.yaml",
        lambda d: d["systems"].append(
            {"code": "spare", "name_kk": "x", "name_en": "Spare", "bodies": ["labour"]}
        ),
        r"systems\.yaml: system 'spare' is not used by any edition",
    ),
    (
        "an unknown field (a typo in a key)",
        "bodies.yaml",
        lambda d: d["bodies"][1].update(nmae_en="Justice"),
        r"bodies\.yaml: bodies\['justice'\]\.nmae_en: Extra inputs are not permitted",
    ),
]


@pytest.mark.parametrize(("file", "mutate", "message"), [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN])
def test_broken_registry_is_refused(tmp_path: Path, file: str, mutate: Mutation, message: str) -> None:
    seeds = _broken(tmp_path, file, mutate)
    with pytest.raises(RegistryError, match=message):
        load_registry(seeds)


def test_missing_seed_file_is_refused(tmp_path: Path) -> None:
    seeds = _broken(tmp_path, "bodies.yaml", lambda d: None)
    (seeds / "systems.yaml").unlink()
    with pytest.raises(RegistryError, match=r"systems\.yaml: the seed file is missing"):
        load_registry(seeds)


def test_invalid_yaml_is_refused(tmp_path: Path) -> None:
    seeds = _broken(tmp_path, "bodies.yaml", lambda d: None)
    (seeds / "editions.yaml").write_text("editions: [\n  - code: '2022'\n", encoding="utf-8")
    with pytest.raises(RegistryError, match=r"editions\.yaml: not valid YAML"):
        load_registry(seeds)
