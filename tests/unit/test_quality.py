"""The validation helper: GX suites per category, quarantine with the rules broken, warnings, verdicts."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from osms.core.run import Run
from osms.core import iin
from osms.quality.scrub import scrub_validation_result
from osms.quality.suites import load_suite_dict, read_suite_file, render_registry_rules, suite_parameters
from osms.quality.validate import CategoryOutcome, validate_category, write_feedback
from osms.core.registry import default_registry

pytestmark = pytest.mark.unit

DAY = dt.date(2026, 3, 1)  # the 2026 edition: every category, and the unemployed's active_measure rule
BODY = "labour"

# A record each category admits, beyond the common columns (the person defaults to a woman born 1990).
CLEAN: dict[str, dict[str, Any]] = {
    "children": {"birth_date": dt.date(2015, 1, 1), "care_status": "family"},
    "unemployed": {"registration_date": dt.date(2025, 1, 1), "employment_centre_code": "C1", "active_measure": "none"},
    "pregnant": {"pregnancy_weeks": 20, "expected_delivery_date": dt.date(2026, 7, 1)},
    "carer_child_under3": {"child_iin": "061211600012", "child_birth_date": dt.date(2025, 1, 1), "relation": "mother",
                           "other_parent_iin": None},
    "parental_leave": {"leave_type": "childcare", "child_iin": None, "child_birth_date": dt.date(2025, 1, 1)},
    "carer_disabled_child": {"child_iin": "061211600012", "child_birth_date": dt.date(2015, 1, 1)},
    "carer_group1": {"cared_person_iin": "791028302728", "cared_person_disability_group": "I"},
    "pensioners": {"birth_date": dt.date(1955, 1, 1), "pension_type": "age"},
    "inmates": {"institution_code": "P-1", "security_level": "medium"},
    "detainees": {"measure": "house_arrest"},
    "kandases": {"kandas_status_date": dt.date(2024, 1, 1), "country_of_origin": "CN"},
    "mothers_many_children": {"award": "altyn_alqa", "children_count": 6},
    "disabled": {"disability_group": "II", "review_date": None},
    "students": {"education_level": "higher", "study_form": "full_time", "org_bin": "123456789012", "country": "KZ"},
    "tsa_recipients": {"household_id": "H1", "assistance_type": "conditional"},
    "eaeu_migrants": {"citizenship": "KG", "relation": "worker", "worker_iin": None},
    "crisis_nonworking": {"wellbeing_level": "crisis", "months_without_contributions": 4, "household_id": "H1"},
}

# (category, what the violating record changes, the rule that must catch it), from the decree.
CATEGORY_RULES = [
    ("children", {"birth_date": dt.date(2000, 1, 1)}, "child_under_18"),
    ("unemployed", {"birth_date": dt.date(1950, 1, 1)}, "age_16_to_63"),
    ("unemployed", {"birth_date": dt.date(2012, 1, 1)}, "age_16_to_63"),
    ("unemployed", {"active_measure": "subsidised_job"}, "active_measure_admitted"),
    ("pregnant", {"sex": "M"}, "sex_female"),
    ("pregnant", {"birth_date": dt.date(1970, 1, 1)}, "age_16_to_49"),
    ("carer_child_under3", {"child_birth_date": dt.date(2022, 1, 1)}, "child_under_3"),
    ("parental_leave", {"leave_type": "adoption", "child_birth_date": dt.date(2021, 6, 1)}, "child_under_3"),
    ("parental_leave", {"child_birth_date": None}, "child_birth_date_for_childcare_adoption"),
    ("carer_disabled_child", {"child_birth_date": dt.date(2005, 1, 1)}, "child_under_18"),
    ("carer_group1", {"cared_person_disability_group": "II"}, "cared_person_group_I"),
    ("pensioners", {"birth_date": dt.date(1985, 1, 1)}, "age_pension_from_61"),
    ("pensioners", {"pension_type": "wwii_veteran", "birth_date": dt.date(1940, 1, 1)}, "wwii_veteran_born_before_1928"),
    ("inmates", {"security_level": "minimum"}, "not_minimum_security"),
    ("detainees", {"period_start": DAY + dt.timedelta(days=30)}, "period_start_not_future"),
    ("kandases", {"country_of_origin": "KZ"}, "origin_not_kz"),
    ("mothers_many_children", {"sex": "M"}, "sex_female"),
    ("mothers_many_children", {"children_count": 4}, "children_count_from_5"),
    ("disabled", {"disability_group": "child", "birth_date": dt.date(1990, 1, 1)}, "child_group_under_18"),
    ("students", {"study_form": "part_time"}, "full_time_study"),
    ("tsa_recipients", {"period_start": DAY + dt.timedelta(days=30)}, "period_start_not_future"),
    ("eaeu_migrants", {"citizenship": "UZ"}, "eaeu_citizenship"),
    ("crisis_nonworking", {"wellbeing_level": "satisfactory"}, "wellbeing_crisis_or_emergency"),
    ("crisis_nonworking", {"months_without_contributions": 2}, "months_without_contributions_from_3"),
]
CLEAN_VARIANTS = [  # records near a rule's edge that the category admits
    ("children", {"birth_date": dt.date(2008, 3, 2)}),  # 18 tomorrow
    ("parental_leave", {"leave_type": "maternity", "child_birth_date": None}),
    ("pensioners", {"pension_type": "wwii_veteran", "birth_date": dt.date(1925, 5, 9)}),
    ("pensioners", {"pension_type": "survivor", "birth_date": dt.date(1990, 1, 1)}),
    ("disabled", {"disability_group": "child", "birth_date": dt.date(2012, 1, 1)}),
    ("carer_child_under3", {"child_birth_date": dt.date(2023, 3, 2)}),  # 3 tomorrow
    ("children", {"last_name": "Ж" * 100, "first_name": "Ә" * 100, "patronymic": "ұлы" * 33, "record_id": "R" * 128}),
]


def record(category: str, k: int, system: str = "payments", **changes: Any) -> dict[str, Any]:
    """A record of ``category`` the suite admits (unless ``changes`` say otherwise); IIN agrees with birth date and sex."""
    row: dict[str, Any] = {
        "record_id": f"{system.upper()}-{k:05d}",
        "last_name": "Ахметова",
        "first_name": "Айгерим",
        "patronymic": None,
        "birth_date": dt.date(1990, 1, 1) + dt.timedelta(days=k),
        "sex": "F",
        "period_start": dt.date(2025, 1, 1),
        "period_end": None,
        "updated_at": dt.datetime(2026, 2, 28, 12, tzinfo=dt.UTC),
    }
    row.update(CLEAN[category])
    if "birth_date" in CLEAN[category]:
        row["birth_date"] = CLEAN[category]["birth_date"] + dt.timedelta(days=k % 20)
    row.update(changes)
    if "iin" not in changes:
        birth = row["birth_date"] or dt.date(1990, 1, 1)
        row["iin"] = iin.generate(birth, row["sex"] if row["sex"] in ("M", "F") else "F", k % 9000)
    return row


def landing(tmp: Path, category: str, rows: list[dict[str, Any]], system: str = "payments") -> Path:
    """Write rows as a landing file with the registry's column types and the lineage columns."""
    cat = default_registry().edition_on(DAY).category(category)
    types = {"string": pa.string(), "iin": pa.string(), "enum": pa.string(), "date": pa.date32(),
             "timestamp": pa.timestamp("us", tz="UTC"), "int": pa.int32(), "bool": pa.bool_()}
    cols = {c.name: pa.array([r.get(c.name) for r in rows], types[c.type]) for c in cat.record_columns}
    n = len(rows)
    cols |= {"body": pa.array([BODY] * n), "system": pa.array([system] * n), "category": pa.array([category] * n),
             "as_of": pa.array([DAY] * n, pa.date32())}
    path = tmp / "landing" / DAY.isoformat() / BODY / system / f"{category}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(cols), path)
    return path


# Enough rows that one bad row stays under every rule's threshold (1 % for the registry's rules).
N = 240


def clean_batch(category: str, n: int = N, system: str = "payments") -> list[dict[str, Any]]:
    return [record(category, k, system) for k in range(n)]


def run(tmp: Path, category: str, rows: list[dict[str, Any]], **kwargs: Any) -> CategoryOutcome:
    outcome = validate_category(Run.of(DAY, data_dir=tmp),
                                body=BODY, category=category, landing_paths=[landing(tmp, category, rows)], **kwargs)
    assert outcome.rows_in == outcome.rows_published + outcome.rows_quarantined  # nothing lost, ever
    return outcome


def quarantined(outcome: CategoryOutcome) -> dict[str, list[str]]:
    t = pq.read_table(outcome.quarantine_path)
    return dict(zip(t.column("record_id").to_pylist(), t.column("rules").to_pylist(), strict=True))


# --------------------------------------------------------------------------- clean data


def test_clean_batch_is_published_with_nothing_quarantined(tmp_path: Path) -> None:
    outcome = run(tmp_path, "children", clean_batch("children"))
    assert outcome.verdict == "published" and outcome.reason is None
    assert (outcome.rows_in, outcome.rows_published, outcome.rows_quarantined) == (N, N, 0)
    assert outcome.quarantined_by_rule == {} and outcome.warnings_by_rule == {"iin_matches_birth_date_sex": 0}
    validated = pq.read_table(outcome.validated_path)
    assert validated.num_rows == N and {"body", "system", "category", "as_of"} <= set(validated.column_names)
    assert validated.column("iin").to_pylist() == sorted(validated.column("iin").to_pylist())
    assert pq.ParquetFile(outcome.validated_path).metadata.row_group(0).column(0).compression == "ZSTD"
    json.dumps(outcome.as_dict())  # JSON-able, for XCom and status files


@pytest.mark.parametrize("category", sorted(CLEAN))
def test_every_category_admits_its_clean_records(tmp_path: Path, category: str) -> None:
    outcome = run(tmp_path, category, clean_batch(category, n=5))
    assert outcome.verdict == "published" and outcome.rows_quarantined == 0, outcome.quarantined_by_rule


def test_the_same_person_from_two_systems_of_a_body_is_normal(tmp_path: Path) -> None:
    a = landing(tmp_path, "children", clean_batch("children", 5, "nedb"), "nedb")
    b = landing(tmp_path, "children", clean_batch("children", 5, "orphans"), "orphans")  # same IINs
    outcome = validate_category(Run.of(DAY, data_dir=tmp_path), body=BODY, category="children", landing_paths=[a, b])
    assert outcome.rows_published == 10 and outcome.rows_quarantined == 0


# --------------------------------------------------------------------------- common rules

COMMON = [
    ({"iin": "821214240092"}, "iin_valid"),
    ({"iin": "82121424009"}, "iin_valid"),
    ({"last_name": None}, "required:last_name"),
    ({"updated_at": None}, "required:updated_at"),
    ({"care_status": None}, "required:care_status"),
    ({"sex": "X"}, "enum:sex"),
    ({"care_status": "lost"}, "enum:care_status"),
    ({"birth_date": DAY + dt.timedelta(days=1)}, "birth_date_not_future"),
    ({"birth_date": None}, "required:birth_date"),
    ({"period_start": DAY + dt.timedelta(days=1)}, "period_start_not_future"),
    ({"period_end": dt.date(2024, 12, 31)}, "period_end_after_start"),
    # bounds no real name comes near: a megabyte string from a source is quarantined, never delivered
    ({"last_name": "Ж" * 101}, "last_name_length"),
    ({"first_name": "A" * (1 << 20)}, "first_name_length"),
    ({"patronymic": "x" * 101}, "patronymic_length"),
    ({"record_id": "R" * 129}, "record_id_length"),
    # what the extract makes of a record id in the form of an IIN (osms.sources.extract.withhold_iin_record_ids)
    ({"record_id": "withheld-iin-p1-r8"}, "record_id_not_iin"),
]


@pytest.mark.parametrize(("change", "rule"), COMMON, ids=[r for _, r in COMMON])
def test_each_common_rule_quarantines_the_row_that_breaks_it(tmp_path: Path, change: dict, rule: str) -> None:
    rows = clean_batch("children")
    rows[7] = record("children", 7, **change)
    outcome = run(tmp_path, "children", rows)
    assert quarantined(outcome) == {rows[7]["record_id"]: [rule] if rule != "birth_date_not_future" else
                                    sorted([rule, "child_under_18"])}
    assert outcome.rows_published == N - 1 and outcome.verdict == "published"


def test_birth_date_before_1900_is_refused(tmp_path: Path) -> None:
    rows = clean_batch("pensioners")
    rows[3] = record("pensioners", 3, birth_date=dt.date(1899, 12, 31), iin="791028302728")
    assert quarantined(run(tmp_path, "pensioners", rows))[rows[3]["record_id"]] == ["birth_date_not_future"]


def test_string_patterns_are_checked(tmp_path: Path) -> None:
    rows = clean_batch("students")
    rows[0] = record("students", 0, org_bin="12345")
    rows[1] = record("students", 1, country="kz")
    q = quarantined(run(tmp_path, "students", rows))
    assert q == {rows[0]["record_id"]: ["pattern:org_bin"], rows[1]["record_id"]: ["pattern:country"]}


def test_a_record_id_reused_for_different_content_quarantines_every_copy(tmp_path: Path) -> None:
    rows = clean_batch("children")
    rows[5] = {**rows[6], "iin": rows[5]["iin"], "birth_date": rows[5]["birth_date"]}  # rows 5 and 6 share an id
    q = quarantined(run(tmp_path, "children", rows))
    assert q == {rows[6]["record_id"]: ["record_id_unique"]} and len(q) == 1
    assert pq.read_table(tmp_path / "quarantine" / DAY.isoformat() / BODY / "children.parquet").num_rows == 2


def test_one_person_twice_in_one_feed_is_quarantined(tmp_path: Path) -> None:
    rows = clean_batch("children")
    rows[9] = record("children", 9, iin=rows[8]["iin"], birth_date=rows[8]["birth_date"])
    outcome = run(tmp_path, "children", rows)
    assert quarantined(outcome) == {rows[8]["record_id"]: ["iin_unique_per_feed"],
                                    rows[9]["record_id"]: ["iin_unique_per_feed"]}
    assert outcome.quarantined_by_rule == {"iin_unique_per_feed": 2}


def test_exact_duplicates_keep_one_copy(tmp_path: Path) -> None:
    rows = clean_batch("children")
    rows.insert(4, dict(rows[3]))
    rows.insert(4, dict(rows[3]))
    outcome = run(tmp_path, "children", rows)
    assert (outcome.rows_in, outcome.rows_published, outcome.rows_quarantined) == (N + 2, N, 2)
    assert outcome.quarantined_by_rule == {"duplicate_record": 2}
    assert quarantined(outcome) == {rows[3]["record_id"]: ["duplicate_record"]}


def test_a_row_breaking_two_rules_counts_in_both(tmp_path: Path) -> None:
    rows = clean_batch("children")
    rows[2] = record("children", 2, last_name=None, sex="X")
    outcome = run(tmp_path, "children", rows)
    assert quarantined(outcome) == {rows[2]["record_id"]: ["enum:sex", "required:last_name"]}
    assert outcome.quarantined_by_rule == {"enum:sex": 1, "required:last_name": 1} and outcome.rows_quarantined == 1


# --------------------------------------------------------------------------- category rules


@pytest.mark.parametrize(("category", "change", "rule"), CATEGORY_RULES,
                         ids=[f"{c}-{r}-{i}" for i, (c, _, r) in enumerate(CATEGORY_RULES)])
def test_category_rule_catches_the_violation(tmp_path: Path, category: str, change: dict, rule: str) -> None:
    rows = clean_batch(category)
    rows[0] = record(category, 0, **change)
    outcome = run(tmp_path, category, rows)
    assert quarantined(outcome) == {rows[0]["record_id"]: [rule]}
    assert outcome.rows_published == N - 1 and outcome.verdict == "published"


@pytest.mark.parametrize(("category", "change"), CLEAN_VARIANTS, ids=[c for c, _ in CLEAN_VARIANTS])
def test_category_rule_admits_the_edge_cases(tmp_path: Path, category: str, change: dict) -> None:
    rows = clean_batch(category, n=5) + [record(category, 99, **change)]
    assert run(tmp_path, category, rows).rows_quarantined == 0


def test_active_measure_is_admitted_before_the_2026_edition(tmp_path: Path) -> None:
    day = dt.date(2025, 6, 1)
    rows = [record("unemployed", k, active_measure="subsidised_job") for k in range(5)]
    path = landing(tmp_path, "unemployed", rows)
    outcome = validate_category(Run.of(day, data_dir=tmp_path), body=BODY, category="unemployed", landing_paths=[path])
    assert outcome.rows_quarantined == 0


# --------------------------------------------------------------------------- warnings and verdicts


def test_iin_disagreeing_with_birth_date_or_sex_is_a_warning_not_quarantined(tmp_path: Path) -> None:
    rows = clean_batch("children")
    rows[1] = {**rows[1], "sex": "M"}  # the IIN says F
    rows[2] = {**rows[2], "birth_date": rows[2]["birth_date"] - dt.timedelta(days=1)}
    outcome = run(tmp_path, "children", rows)
    assert outcome.rows_quarantined == 0 and outcome.verdict == "published"
    assert outcome.warnings_by_rule == {"iin_matches_birth_date_sex": 2}


def _bad_iins(rows: list[dict], n: int) -> list[dict]:
    for k in range(n):
        rows[k] = record("children", k, iin=rows[k]["iin"][:11] + str((int(rows[k]["iin"][11]) + 1) % 10))
    return rows


def test_too_many_bad_iins_hold_the_category_back(tmp_path: Path) -> None:
    rows = _bad_iins(clean_batch("children", 200), 20)  # 10 % > the 5 % iin_valid admits
    outcome = run(tmp_path, "children", rows)
    assert outcome.verdict == "held_back"
    assert outcome.reason == "iin_valid: 10.0 % of rows failed (threshold 5 %)"
    assert outcome.rows_quarantined == 20 and outcome.validated_path.exists()  # files are still written for QA


def test_a_few_bad_rows_in_a_small_feed_are_quarantined_not_held_back(tmp_path: Path) -> None:
    rows = _bad_iins(clean_batch("children", 40), 4)  # 10 %, but only 4 rows: a row problem
    outcome = run(tmp_path, "children", rows)
    assert outcome.verdict == "published"
    assert outcome.rows_quarantined == 4 and outcome.rows_published == 36


def test_most_of_a_small_feed_bad_holds_it_back(tmp_path: Path) -> None:
    rows = _bad_iins(clean_batch("children", 6), 4)  # fewer than 10 rows, but most of the feed
    outcome = run(tmp_path, "children", rows)
    assert outcome.verdict == "held_back" and outcome.reason.startswith("iin_valid:")


def test_a_volume_drop_holds_the_category_back(tmp_path: Path) -> None:
    outcome = run(tmp_path, "children", clean_batch("children", 40), trailing_counts=[100, 90, 110, 50])
    assert outcome.verdict == "held_back"
    assert outcome.reason == "volume 42 % of trailing median 95 (minimum 80 %)"
    assert run(tmp_path, "children", clean_batch("children", 40), trailing_counts=[45, 40]).verdict == "published"


def test_an_empty_extract_after_full_days_is_held_back(tmp_path: Path) -> None:
    outcome = run(tmp_path, "children", [], trailing_counts=[N])
    assert outcome.verdict == "held_back" and "no rows" in outcome.reason
    assert outcome.rows_in == 0 and pq.read_table(outcome.validated_path).num_rows == 0
    assert run(tmp_path, "children", []).verdict == "published"


# --------------------------------------------------------------------------- reports, feedback


def test_stored_gx_results_carry_no_iin_and_no_name(tmp_path: Path) -> None:
    rows = clean_batch("children")
    rows[0] = record("children", 0, iin="821214240092", last_name="Сейтқалиева")
    rows[1] = record("children", 1, birth_date=dt.date(2001, 2, 3))
    rows[2] = {**rows[2], "sex": "M"}
    outcome = run(tmp_path, "children", rows)
    text = outcome.report_path.read_text(encoding="utf-8")
    report = json.loads(text)
    assert report["outcome"]["rows_quarantined"] == 2 and report["gx_runs"]
    for r in rows:
        assert r["iin"] not in text and r["record_id"] not in text
    assert "Сейтқалиева" not in text and "Айгерим" not in text and "2001-02-03" not in text
    from osms.quality.docs import render_day

    page = render_day(tmp_path, DAY).read_text(encoding="utf-8")  # the day's Data Docs, rendered from the reports
    assert "iin_valid" in page and "821214240092" not in page


def test_scrub_keeps_counts_only() -> None:
    raw = {"results": [{"success": False, "expectation_config": {"type": "t", "kwargs": {"column": "iin"}},
                        "result": {"element_count": 3, "unexpected_count": 1, "unexpected_percent": 33.3,
                                   "unexpected_list": ["791028302728"], "partial_unexpected_list": ["791028302728"],
                                   "unexpected_index_list": [{"record_id": "X-1"}],
                                   "partial_unexpected_counts": [{"value": "791028302728", "count": 1}],
                                   "unexpected_index_query": "df.filter(items=[2])", "observed_value": "Айгерим"},
                        "exception_info": {"raised_exception": True, "exception_message": "bad 791028302728",
                                           "exception_traceback": "..."}}]}
    scrubbed = scrub_validation_result(raw)
    text = json.dumps(scrubbed, ensure_ascii=False)
    assert "791028302728" not in text and "X-1" not in text and "Айгерим" not in text
    assert scrubbed["results"][0]["result"] == {"element_count": 3, "unexpected_count": 1, "unexpected_percent": 33.3}
    assert raw["results"][0]["result"]["unexpected_list"]  # the input is left alone


def test_feedback_lists_quarantined_rows_without_personal_data(tmp_path: Path) -> None:
    rows = clean_batch("children")
    rows[0] = record("children", 0, iin="821214240092", last_name=None)
    run(tmp_path, "children", rows)
    path = write_feedback(BODY, DAY, tmp_path)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines == ['"record_id","system","category","rules"',
                     f'"{rows[0]["record_id"]}","payments","children","iin_valid;required:last_name"']
    assert path == tmp_path / "feedback" / DAY.isoformat() / f"{BODY}.csv"


def test_chunked_validation_gives_the_same_outcome(tmp_path: Path) -> None:
    rows = clean_batch("children", 40)
    rows[3] = record("children", 3, iin="821214240092")
    rows[30] = record("children", 30, iin=rows[2]["iin"], birth_date=rows[2]["birth_date"])  # across chunks
    whole = run(tmp_path / "a", "children", rows)
    chunked = run(tmp_path / "b", "children", rows, chunk_rows=7)
    assert quarantined(chunked) == quarantined(whole) and len(quarantined(whole)) == 3
    assert chunked.quarantined_by_rule == whole.quarantined_by_rule


# --------------------------------------------------------------------------- the suites


@pytest.mark.parametrize("category", [c.code for c in default_registry().all_categories()])
def test_each_suite_follows_the_registry(category: str) -> None:
    suite = load_suite_dict(category)
    cat = next(c for c in default_registry().all_categories() if c.code == category)
    from_registry = [e for e in suite["expectations"] if e["meta"].get("origin") == "registry"]
    assert from_registry == render_registry_rules(cat), "run `python -m osms.quality.suites` to refresh"
    rules = [e["meta"]["rule"] for e in suite["expectations"]]
    assert len(rules) == len(set(rules))
    assert {"iin_valid", "record_id_unique", "iin_unique_per_feed", "iin_matches_birth_date_sex"} <= set(rules)
    suite_parameters(suite, DAY, "2026")  # every parameter it uses has a value


def test_the_common_rules_stand_once() -> None:
    common = read_suite_file("common")["expectations"]
    names = {e["meta"]["rule"] for e in common}
    assert names >= {"iin_valid", "birth_date_not_future", "period_start_not_future", "period_end_after_start",
                     "record_id_unique", "iin_unique_per_feed", "iin_matches_birth_date_sex"}
    assert {e["meta"]["origin"] for e in common} == {"common"}
    for category in default_registry().all_categories():
        own = read_suite_file(category.code)
        assert own["meta"]["includes"] == ["common"], category.code
        assert not [e for e in own["expectations"] if e["meta"].get("origin") == "common"
                    or e["meta"]["rule"] in names], f"{category.code} repeats a rule of expectations/common.json"


@pytest.mark.parametrize("category", [c.code for c in default_registry().all_categories()])
def test_every_category_suite_has_the_common_rules_after_its_registry_rules(category: str) -> None:
    common = read_suite_file("common")["expectations"]
    own = read_suite_file(category)["expectations"]
    loaded = load_suite_dict(category)["expectations"]
    registry = [e for e in own if e["meta"]["origin"] == "registry"]
    assert loaded == registry + common + [e for e in own if e["meta"]["origin"] != "registry"]


def test_a_suite_repeating_an_included_rule_is_refused(tmp_path: Path) -> None:
    common = read_suite_file("common")
    suite = read_suite_file("children")
    suite["expectations"].append(common["expectations"][0])
    (tmp_path / "common.json").write_text(json.dumps(common), encoding="utf-8")
    (tmp_path / "children.json").write_text(json.dumps(suite), encoding="utf-8")
    with pytest.raises(ValueError, match="iin_valid"):
        load_suite_dict("children", tmp_path)


def test_the_package_suite_includes_nothing() -> None:
    assert load_suite_dict("package") == read_suite_file("package")


def test_suite_parameters_follow_the_date() -> None:
    suite = {"expectations": [{"kwargs": {"min_value": {"$PARAMETER": "earliest_birth_under_18"},
                                          "max_value": {"$PARAMETER": "latest_birth_for_age_61"}}}]}
    assert suite_parameters(suite, dt.date(2024, 2, 29), "2022") == {
        "earliest_birth_under_18": "2006-03-01T00:00:00", "latest_birth_for_age_61": "1963-02-28T00:00:00"}


def test_the_validate_module_imports_neither_gx_nor_pandas() -> None:
    code = ("import sys, osms.quality, osms.quality.validate; "
            "assert not {'great_expectations', 'pandas'} & set(sys.modules), sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("category", sorted(CLEAN))
def test_the_mock_sources_category_rule_defects_are_caught(tmp_path: Path, category: str) -> None:
    from mocks.defects import CATEGORY_RULE_DEFECTS, DefectRates, apply_defects

    assert category in CATEGORY_RULE_DEFECTS
    clean = pq.read_table(landing(tmp_path / "clean", category, clean_batch(category)))
    served, truth = apply_defects(clean, system="payments", category=category, as_of=DAY,
                                  rates=DefectRates.from_mapping({"category_rule": 0.03}, DefectRates.none()), seed=2)
    path = tmp_path / "served.parquet"
    pq.write_table(served, path)
    outcome = validate_category(Run.of(DAY, data_dir=tmp_path), body=BODY, category=category, landing_paths=[path])
    assert truth.num_rows > 0
    assert sorted(quarantined(outcome)) == sorted(truth.column("record_id").to_pylist())
