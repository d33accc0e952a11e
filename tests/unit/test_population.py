"""The synthetic population (mocks/population.py): determinism, IINs, names, feeds, rules."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from mocks.population import (
    DEFAULT_SCALE,
    SERVED_FROM,
    SERVED_TO,
    Population,
    PopulationSpec,
    load_population,
)
from osms.core import iin as iinmod
from osms.core.registry import default_registry

pytestmark = pytest.mark.unit

DATES = (dt.date(2022, 9, 26), dt.date(2025, 6, 1), dt.date(2026, 1, 1), dt.date(2026, 3, 1), dt.date(2027, 12, 31))
ARROW = {
    "string": pa.string(), "iin": pa.string(), "enum": pa.string(), "date": pa.date32(),
    "timestamp": pa.timestamp("s", tz="UTC"), "int": pa.int32(), "bool": pa.bool_(),
}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("population")


@pytest.fixture(scope="module")
def pop(cache) -> Population:
    return load_population(PopulationSpec(), cache)


def _age(birth: dt.date, on: dt.date) -> int:
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))


def _rows(pop, system, category, day):
    return pop.records(system, category, day).to_pylist()


def _all_rows(pop, category, day):
    rows = []
    for system, cat in pop.feeds():
        if cat == category:
            rows += _rows(pop, system, category, day)
    return rows


def _members_on(pop, category, day):
    """{iin: row} of a category's members on a day, across its feeds."""
    return {r["iin"]: r for r in _all_rows(pop, category, day)}


def test_spec_key():
    assert PopulationSpec().key == "seed660-scale0.001"
    assert PopulationSpec(seed=1, scale=1.0).key == "seed1-scale1"
    assert DEFAULT_SCALE == 0.001


def test_deterministic_and_cache(pop, cache, tmp_path):
    again = load_population(PopulationSpec(), tmp_path)
    assert again.persons.equals(pop.persons)
    for cat, table in pop.memberships.items():
        assert again.memberships[cat].equals(table), cat
    loaded = load_population(PopulationSpec(), cache)  # from the cache files
    assert loaded.persons.equals(pop.persons)
    assert (cache / PopulationSpec().key / "COMPLETE").exists()
    day = dt.date(2025, 6, 1)
    for system, cat in pop.feeds():
        assert loaded.records(system, cat, day).equals(pop.records(system, cat, day))
    other = load_population(PopulationSpec(seed=661), tmp_path)
    assert not other.persons.column("iin").equals(pop.persons.column("iin"))


def test_persons_shape_and_proportions(pop):
    p = pop.persons
    assert p.column_names == ["person_id", "iin", "last_name", "first_name", "patronymic", "birth_date", "sex", "death_date"]
    assert abs(p.num_rows - 20_300) < 50
    assert p.column("person_id").to_pylist() == list(range(p.num_rows))
    day = dt.date(2025, 6, 1)
    alive = p.filter(pc.and_(pc.less_equal(p["birth_date"], day),
                             pc.or_kleene(pc.is_null(p["death_date"]), pc.greater_equal(p["death_date"], day))))
    ages = np.array([_age(b, day) for b in alive["birth_date"].to_pylist()])
    assert 0.28 < (ages < 18).mean() < 0.37
    assert 0.09 < (ages >= 63).mean() < 0.14
    assert 0.47 < pc.mean(pc.equal(alive["sex"], "M")).as_py() < 0.50
    deaths = p.filter(pc.is_valid(p["death_date"]))
    assert deaths.num_rows > 300
    assert pc.all(pc.greater_equal(deaths["death_date"], deaths["birth_date"])).as_py()
    assert pc.min(deaths["death_date"]).as_py() >= SERVED_FROM and pc.max(deaths["death_date"]).as_py() <= SERVED_TO
    assert pc.sum(pc.greater(p["birth_date"], SERVED_FROM)).as_py() > 1000  # births in the window


def test_iins_valid_unique_and_decode(pop):
    iins = pop.persons.column("iin")
    res = iinmod.check(iins)
    assert res.valid.all()
    assert len(pc.unique(iins)) == len(iins)
    births = pop.persons.column("birth_date").to_numpy().astype("datetime64[D]")
    assert (res.birth_date == births).all()
    assert (res.sex == np.asarray(pop.persons.column("sex").to_pylist())).all()


def test_name_gender_forms(pop):
    rows = pop.persons.to_pylist()
    kz_m = kz_f = 0
    no_patr = 0
    for r in rows:
        last, patr, male = r["last_name"], r["patronymic"], r["sex"] == "M"
        if patr is None:
            no_patr += 1
        else:
            if male:
                assert patr.endswith(("ұлы", "улы", "ич", "уулу")), r
            else:
                assert patr.endswith(("қызы", "кызы", "вна", "чна")), r
        if last.endswith(("ов", "ев", "ёв", "ин", "ын")):
            assert male, r
        if last.endswith(("ова", "ева", "ёва", "ина", "ына")):
            assert not male, r
        if last.endswith(("ский", "цкий")):
            assert male
        if last.endswith(("ская", "цкая")):
            assert not male
        kz_m += male and last.endswith(("ов", "ев", "ин"))
        kz_f += (not male) and last.endswith(("ова", "ева", "ина"))
    assert kz_m > 5000 and kz_f > 5000
    assert 0.01 < no_patr / len(rows) < 0.08
    kazakh_letters = set("әғқңөұүһі")
    with_kk = sum(1 for r in rows if kazakh_letters & set(r["last_name"] + r["first_name"]))
    assert with_kk / len(rows) > 0.4
    assert sum(1 for r in rows if r["patronymic"] and r["patronymic"].endswith("ұлы")) > 1000


def test_feeds_cover_registry_and_serve_every_column(pop):
    reg = default_registry()
    expected = {(f.system, f.category) for e in reg.editions for f in e.feeds}
    assert set(pop.feeds()) == expected and len(pop.feeds()) == len(expected)
    cats = {c.code: c for c in reg.all_categories()}
    for day in (dt.date(2025, 6, 1), dt.date(2026, 3, 1)):
        for system, category in pop.feeds():
            t = pop.records(system, category, day)
            cols = cats[category].record_columns
            assert t.schema.names == [c.name for c in cols]
            assert [f.type for f in t.schema] == [ARROW[c.type] for c in cols]
            if category == "crisis_nonworking" and day < dt.date(2026, 1, 1):
                continue
            assert t.num_rows > 0, (system, category, day)
            assert pop.record_count(system, category, day) == t.num_rows
            ids = t.column("record_id").to_pylist()
            assert ids == sorted(ids) and len(set(ids)) == len(ids)
            assert len(set(t.column("iin").to_pylist())) == t.num_rows  # one membership per person
            for c in cols:
                if c.required:
                    assert t.column(c.name).null_count == 0, (system, category, c.name)
                if c.values is not None:
                    vals = set(t.column(c.name).drop_null().to_pylist())
                    assert vals <= set(c.values), (category, c.name, vals)
            starts = t.column("period_start").to_pylist()
            ends = t.column("period_end").to_pylist()
            assert all(s <= day for s in starts)
            assert all(e is None or e >= day for e in ends)
    assert pop.records("nedb", "crisis_nonworking" if ("nedb", "crisis_nonworking") in expected else "students", dt.date(2025, 6, 1)) is not None
    with pytest.raises(KeyError, match="penal_db"):
        pop.records("penal_db", "children", dt.date(2025, 6, 1))
    assert pop.records("labour_unnamed", "crisis_nonworking", dt.date(2025, 12, 31)).num_rows == 0


def test_record_ids_stable_and_per_system(pop):
    d1, d2 = dt.date(2025, 6, 1), dt.date(2025, 6, 2)
    a = {r["iin"]: r["record_id"] for r in _rows(pop, "nedb", "children", d1)}
    b = {r["iin"]: r["record_id"] for r in _rows(pop, "nedb", "children", d2)}
    assert all(b[k] == v for k, v in a.items() if k in b)
    ind = {r["iin"]: r["record_id"] for r in _rows(pop, "individuals", "children", d1)}
    common = set(a) & set(ind)
    assert common and all(a[k] != ind[k] for k in common)


def _person_index(pop):
    p = pop.persons.to_pylist()
    return {r["iin"]: r for r in p}


@pytest.mark.parametrize("day", [dt.date(2022, 9, 26), dt.date(2025, 6, 1), dt.date(2026, 3, 1), dt.date(2027, 12, 31)])
def test_category_rules(pop, day):
    people = _person_index(pop)
    disabled = _members_on(pop, "disabled", day)

    def alive(r):
        p = people[r["iin"]]
        assert p["birth_date"] <= day and (p["death_date"] is None or p["death_date"] >= day), r
        assert (p["birth_date"], p["sex"], p["last_name"]) == (r["birth_date"], r["sex"], r["last_name"])
        return p

    for system, cat in pop.feeds():
        for r in _rows(pop, system, cat, day):
            alive(r)
            age = _age(r["birth_date"], day)
            assert r["updated_at"].date() <= day
            if cat == "children":
                assert age < 18
                if system == "orphans":
                    assert r["care_status"] != "family"
            elif cat == "pregnant":
                assert r["sex"] == "F" and 16 <= age <= 49
                assert 0 < r["pregnancy_weeks"] <= 44
            elif cat == "carer_child_under3":
                child = people[r["child_iin"]]
                assert child["birth_date"] == r["child_birth_date"] <= day
                assert _age(child["birth_date"], day) < 3
                if r["other_parent_iin"]:
                    assert r["other_parent_iin"] in people and r["other_parent_iin"] != r["iin"]
                if r["relation"] == "mother":
                    assert r["sex"] == "F"
                if system == "orphans":
                    assert r["relation"] in ("guardian", "adoptive_parent")
            elif cat == "parental_leave":
                if r["leave_type"] == "maternity":
                    assert r["sex"] == "F"
                else:
                    assert r["child_iin"] is not None
                if r["child_iin"] is not None:
                    child = people[r["child_iin"]]
                    assert child["birth_date"] == r["child_birth_date"] <= day
                    assert _age(child["birth_date"], day) < 3
            elif cat == "carer_disabled_child":
                assert _age(r["child_birth_date"], day) < 18
                assert disabled[r["child_iin"]]["disability_group"] == "child"
            elif cat == "carer_group1":
                assert r["cared_person_disability_group"] == "I"
                assert disabled[r["cared_person_iin"]]["disability_group"] == "I"
            elif cat == "pensioners":
                if r["pension_type"] == "age":
                    assert age >= (63 if r["sex"] == "M" else 61)
                elif r["pension_type"] == "wwii_veteran":
                    assert r["birth_date"] < dt.date(1928, 1, 1)
                else:
                    assert age >= 18
                assert (system == "judicial_is") == (r["pension_type"] == "judicial")
            elif cat == "inmates":
                assert r["security_level"] != "minimum" and age >= 18
            elif cat == "detainees":
                assert r["measure"] in ("pretrial_detention", "house_arrest")
                if system == "payments":
                    assert r["measure"] == "house_arrest"
            elif cat == "kandases":
                assert r["country_of_origin"] in {"UZ", "CN", "MN", "TM", "RU", "TJ", "KG", "IR", "AF", "TR"}
                assert r["kandas_status_date"] <= r["period_start"]
            elif cat == "mothers_many_children":
                assert r["sex"] == "F"
                need = {"altyn_alqa": 7, "mother_heroine": 7, "kumis_alqa": 6, "ana_dangqy_1": 5, "ana_dangqy_2": 5}
                assert r["children_count"] >= need[r["award"]]
            elif cat == "disabled":
                assert (r["disability_group"] == "child") == (age < 18)
                assert r["review_date"] is None or r["review_date"] > day
            elif cat == "students":
                assert r["study_form"] == "full_time" and len(r["org_bin"]) == 12 and r["org_bin"].isdigit()
                lo, hi = {"tvet": (15, 25), "post_secondary": (15, 25), "higher": (17, 30), "postgraduate": (21, 40), "secondary": (18, 25)}[r["education_level"]]
                assert lo <= age <= hi, r
                assert (system == "students_abroad") == (r["country"] != "KZ")
            elif cat == "unemployed":
                assert 16 <= age < (63 if r["sex"] == "M" else 61)
                assert r["registration_date"] <= r["period_start"]
                if day >= dt.date(2026, 1, 1):
                    assert r["active_measure"] == "none"
            elif cat == "crisis_nonworking":
                assert r["wellbeing_level"] in ("crisis", "emergency") and r["months_without_contributions"] >= 3
                assert r["period_start"] >= dt.date(2026, 1, 1)
            elif cat == "eaeu_migrants":
                assert r["citizenship"] in ("AM", "BY", "KG", "RU")
                if r["relation"] == "worker":
                    assert r["worker_iin"] is None
                else:
                    assert r["worker_iin"] in people and r["worker_iin"] != r["iin"]
            elif cat == "tsa_recipients":
                assert r["household_id"]


def test_tsa_households_shared(pop):
    rows = _rows(pop, "tsa_db", "tsa_recipients", dt.date(2025, 6, 1))
    sizes = {}
    for r in rows:
        sizes[r["household_id"]] = sizes.get(r["household_id"], 0) + 1
    assert max(sizes.values()) >= 3 and sum(sizes.values()) / len(sizes) > 2


def test_pensioners_include_other_types_and_students_levels(pop):
    types = {r["pension_type"] for d in DATES for r in _rows(pop, "pensions_benefits", "pensioners", d)}
    assert {"age", "military", "disability", "survivor"} <= types
    levels = {r["education_level"] for r in _rows(pop, "nedb", "students", dt.date(2025, 3, 1))}
    assert {"higher", "tvet"} <= levels
    assert pop.persons.filter(pc.less(pop.persons["birth_date"], dt.date(1928, 1, 1))).num_rows >= 1


@pytest.mark.parametrize("day", [dt.date(2024, 6, 30), dt.date(2025, 12, 31), dt.date(2026, 5, 17)])
def test_consecutive_days_differ_by_starts_and_ends(pop, day):
    nxt = day + dt.timedelta(days=1)
    changes = 0
    individuals_next = {r["iin"] for r in _rows(pop, "individuals", "children", nxt)}
    for system, cat in pop.feeds():
        a = {r["record_id"]: r for r in _rows(pop, system, cat, day)}
        b = {r["record_id"]: r for r in _rows(pop, system, cat, nxt)}
        for rid in set(a) - set(b):
            assert a[rid]["period_end"] == day, (system, cat, a[rid])
        for rid in set(b) - set(a):
            if (system, cat) == ("nedb", "children"):  # enrolment (kindergarten, school) of a child
                assert b[rid]["period_start"] <= nxt and b[rid]["iin"] in individuals_next
                continue
            assert b[rid]["period_start"] == nxt, (system, cat, b[rid])
        for rid in set(a) & set(b):
            assert a[rid]["period_start"] == b[rid]["period_start"]
            assert a[rid]["iin"] == b[rid]["iin"]
        changes += len(set(a) ^ set(b))
    assert changes >= 3


def test_period_end_visibility(pop):
    """Scheduled ends show from the start; unscheduled ends only on the day itself."""
    day = dt.date(2025, 6, 1)
    kids = _rows(pop, "individuals", "children", day)
    assert all(r["period_end"] is not None for r in kids)  # 18th birthday, known from birth
    un = _rows(pop, "labour_market", "unemployed", day)
    for r in un:
        if r["period_end"] is not None:
            assert r["period_end"] == day and r["updated_at"].date() == day
    assert any(r["period_end"] is None for r in un)
