"""Data defects injected into a feed's clean records, with the ground truth of each.

Real source systems send bad rows; the pipeline must quarantine each with the
rule it broke. Here every served (feed, date) carries defects at configured
rates, chosen deterministically from the seed, so tests can compare what the
pipeline quarantined with exactly what was injected.

A record carries at most one injected defect. ``iin_mismatch`` (the IIN's
birth-date or sex digits disagree with the record) is a warning in the decree's
sense, not a reason to reject.
"""

from __future__ import annotations

import datetime as dt
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from osms.core import iin

# The order is part of the deterministic draw: append new kinds at the end.
DEFECT_KINDS: tuple[str, ...] = (
    "bad_check_digit",
    "malformed_iin",
    "missing_required",
    "future_birth_date",
    "period_end_before_start",
    "duplicate_record",
    "category_rule",
    "iin_mismatch",
)
WARNING_KINDS = frozenset({"iin_mismatch"})

GROUND_TRUTH_SCHEMA = pa.schema(
    [
        ("system", pa.string()),
        ("category", pa.string()),
        ("as_of", pa.date32()),
        ("record_id", pa.string()),
        ("defect", pa.string()),
        ("column", pa.string()),  # the column the defect is in, where it is one column
        ("severity", pa.string()),  # "error" (to quarantine) or "warning"
    ]
)


@dataclass(frozen=True)
class DefectRates:
    """Share of a feed's records carrying each defect (0 to 1)."""

    bad_check_digit: float = 0.0005
    malformed_iin: float = 0.0003
    missing_required: float = 0.0005
    future_birth_date: float = 0.0002
    period_end_before_start: float = 0.0003
    duplicate_record: float = 0.0003
    category_rule: float = 0.0005
    iin_mismatch: float = 0.001

    @classmethod
    def none(cls) -> DefectRates:
        """No defects at all: clean data."""
        return cls(**{f.name: 0.0 for f in fields(cls)})

    @classmethod
    def from_mapping(cls, values: Mapping[str, float], base: DefectRates | None = None) -> DefectRates:
        """Rates from a config mapping; unknown kinds are refused by name."""
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown defect kind(s) {sorted(unknown)}; known: {sorted(known)}")
        merged = {f.name: getattr(base or cls(), f.name) for f in fields(cls)}
        merged.update({k: float(v) for k, v in values.items()})
        rates = cls(**merged)
        if any(not 0 <= r <= 1 for r in merged.values()) or sum(merged.values()) > 1:
            raise ValueError("defect rates must be between 0 and 1 and add up to at most 1")
        return rates

    def as_array(self) -> np.ndarray:
        """Rates in DEFECT_KINDS order."""
        return np.array([getattr(self, k) for k in DEFECT_KINDS], dtype=np.float64)


@dataclass
class _Batch:
    """The working copy of one feed's table while defects are applied."""

    table: pa.Table
    as_of: dt.date
    category: str
    rng: np.random.Generator
    truth: list[tuple[str, str, str | None]] = field(default_factory=list)

    def values(self, name: str, rows: np.ndarray) -> list:
        """The values of one column at ``rows`` (only those are converted to Python)."""
        return self.table.column(name).take(pa.array(rows, pa.int64())).to_pylist()

    def set(self, name: str, rows: np.ndarray, values: list) -> None:
        """Replace the values at ``rows`` (ascending), vectorised over the column."""
        if len(rows) == 0:
            return
        col = self.table.column(name).combine_chunks()
        mask = np.zeros(len(col), dtype=bool)
        mask[rows] = True
        clean = [v.item() if isinstance(v, np.generic) else v for v in values]
        replaced = pc.replace_with_mask(col, pa.array(mask), pa.array(clean, col.type))
        self.table = self.table.set_column(self.table.schema.get_field_index(name), name, replaced)

    def record(self, rows: np.ndarray, kind: str, column: str | None) -> None:
        ids = self.table.column("record_id").take(pa.array(rows, pa.int64())).to_pylist()
        self.truth.extend((rid, kind, column) for rid in ids)


def _feed_rng(seed: int, system: str, category: str, as_of: dt.date) -> np.random.Generator:
    # crc32, not hash(): the same on every run and machine
    return np.random.default_rng([seed, zlib.crc32(system.encode()), zlib.crc32(category.encode()), as_of.toordinal()])


def apply_defects(
    table: pa.Table,
    *,
    system: str,
    category: str,
    as_of: dt.date,
    rates: DefectRates,
    seed: int,
    required: tuple[str, ...] = (),
) -> tuple[pa.Table, pa.Table]:
    """Inject defects into a feed's clean records; returns (served table, ground truth)."""
    n = table.num_rows
    rng = _feed_rng(seed, system, category, as_of)
    draws = rng.random(n)
    edges = np.cumsum(rates.as_array())
    kind_of = np.searchsorted(edges, draws, side="right")  # len(DEFECT_KINDS) = no defect
    batch = _Batch(table=table, as_of=as_of, category=category, rng=rng)
    duplicates = np.array([], dtype=np.int64)
    for k, kind in enumerate(DEFECT_KINDS):
        rows = np.flatnonzero(kind_of == k)
        if kind == "duplicate_record":
            duplicates = rows
            batch.record(rows, kind, None)
        elif len(rows):
            _APPLY[kind](batch, rows, required)
    out = batch.table
    if len(duplicates):
        # the duplicate sits right after its original, as a source would repeat a row
        order = np.sort(np.concatenate([np.arange(n), duplicates]), kind="stable")
        out = out.take(pa.array(order))
    truth = _truth_table(batch.truth, system, category, as_of)
    return out, truth


def _truth_table(truth: list[tuple[str, str, str | None]], system: str, category: str, as_of: dt.date) -> pa.Table:
    truth = sorted(truth)
    return pa.table(
        {
            "system": pa.array([system] * len(truth), pa.string()),
            "category": pa.array([category] * len(truth), pa.string()),
            "as_of": pa.array([as_of] * len(truth), pa.date32()),
            "record_id": pa.array([t[0] for t in truth], pa.string()),
            "defect": pa.array([t[1] for t in truth], pa.string()),
            "column": pa.array([t[2] for t in truth], pa.string()),
            "severity": pa.array(["warning" if t[1] in WARNING_KINDS else "error" for t in truth], pa.string()),
        },
        schema=GROUND_TRUTH_SCHEMA,
    )


# --------------------------------------------------------------------------- the defects


def _bad_check_digit(b: _Batch, rows: np.ndarray, _: tuple[str, ...]) -> None:
    values = b.values("iin", rows)
    bumped = [v[:11] + str((int(v[11]) + 1 + int(b.rng.integers(0, 9))) % 10) for v in values]
    b.set("iin", rows, bumped)
    b.record(rows, "bad_check_digit", "iin")


def _malformed_iin(b: _Batch, rows: np.ndarray, _: tuple[str, ...]) -> None:
    forms: list[Callable[[str], str]] = [
        lambda v: v[:11],  # a digit lost
        lambda v: v + "0",  # a digit too many
        lambda v: v[:5] + "O" + v[6:],  # letter O for zero, as typed by hand
        lambda v: v[:6] + " " + v[6:11],  # a space inside
    ]
    values = b.values("iin", rows)
    picks = b.rng.integers(0, len(forms), len(rows))
    b.set("iin", rows, [forms[p](v) for p, v in zip(picks, values, strict=True)])
    b.record(rows, "malformed_iin", "iin")


def _missing_required(b: _Batch, rows: np.ndarray, required: tuple[str, ...]) -> None:
    candidates = [c for c in required if c not in ("record_id", "iin")] or ["last_name"]
    picks = b.rng.integers(0, len(candidates), len(rows))
    for p in np.unique(picks):
        sel = rows[picks == p]
        b.set(candidates[p], sel, [None] * len(sel))
        b.record(sel, "missing_required", candidates[p])


def _future_birth_date(b: _Batch, rows: np.ndarray, _: tuple[str, ...]) -> None:
    ahead = b.rng.integers(1, 400, len(rows))
    b.set("birth_date", rows, [b.as_of + dt.timedelta(days=int(d)) for d in ahead])
    b.record(rows, "future_birth_date", "birth_date")


def _period_end_before_start(b: _Batch, rows: np.ndarray, _: tuple[str, ...]) -> None:
    starts = b.values("period_start", rows)
    back = b.rng.integers(1, 300, len(rows))
    b.set("period_end", rows, [s - dt.timedelta(days=int(d)) for s, d in zip(starts, back, strict=True)])
    b.record(rows, "period_end_before_start", "period_end")


def _iin_mismatch(b: _Batch, rows: np.ndarray, _: tuple[str, ...]) -> None:
    if b.category in _SEX_RULED:
        # a sex change would break the category's rule: make the birth date disagree instead
        births = b.values("birth_date", rows)
        b.set("birth_date", rows, [x - dt.timedelta(days=1) for x in births])
        b.record(rows, "iin_mismatch", "birth_date")
    else:
        sexes = b.values("sex", rows)
        b.set("sex", rows, ["F" if s == "M" else "M" for s in sexes])
        b.record(rows, "iin_mismatch", "sex")


def _years_ago(as_of: dt.date, years: int, extra_days: int = 0) -> dt.date:
    try:
        day = as_of.replace(year=as_of.year - years)
    except ValueError:  # 29 February
        day = as_of.replace(year=as_of.year - years, day=28)
    return day - dt.timedelta(days=extra_days)


def _new_person(b: _Batch, rows: np.ndarray, birth: list[dt.date] | None, sex: list[str] | None) -> None:
    """Give rows another birth date and/or sex, with an IIN that agrees with them."""
    births = b.values("birth_date", rows) if birth is None else birth
    sexes = b.values("sex", rows) if sex is None else sex
    serials = b.rng.integers(0, 10000, len(rows))
    values, ok = iin.generate_many(births, sexes, serials)
    while not ok.all():
        serials = np.where(ok, serials, (serials + 1) % 10000)
        values, ok = iin.generate_many(births, sexes, serials)
    b.set("iin", rows, list(values))
    if birth is not None:
        b.set("birth_date", rows, birth)
    if sex is not None:
        b.set("sex", rows, sex)


def _rule_adult(b: _Batch, rows: np.ndarray) -> str:
    ages = b.rng.integers(18, 40, len(rows))
    _new_person(b, rows, [_years_ago(b.as_of, int(a), int(b.rng.integers(0, 300))) for a in ages], None)
    return "birth_date"


def _rule_man(b: _Batch, rows: np.ndarray) -> str:
    _new_person(b, rows, None, ["M"] * len(rows))
    return "sex"


def _rule_child_too_old(b: _Batch, rows: np.ndarray, years: int, column: str = "child_birth_date") -> str:
    b.set(column, rows, [_years_ago(b.as_of, years, int(b.rng.integers(1, 300))) for _ in rows])
    return column


def _rule_set(column: str, value: object) -> Callable[[_Batch, np.ndarray], str]:
    def apply(b: _Batch, rows: np.ndarray) -> str:
        b.set(column, rows, [value] * len(rows))
        return column

    return apply


def _rule_young_pensioner(b: _Batch, rows: np.ndarray) -> str:
    b.set("pension_type", rows, ["age"] * len(rows))
    ages = b.rng.integers(30, 50, len(rows))
    _new_person(b, rows, [_years_ago(b.as_of, int(a), int(b.rng.integers(0, 300))) for a in ages], None)
    return "birth_date"


def _rule_old_unemployed(b: _Batch, rows: np.ndarray) -> str:
    ages = b.rng.integers(70, 85, len(rows))
    _new_person(b, rows, [_years_ago(b.as_of, int(a), int(b.rng.integers(0, 300))) for a in ages], None)
    return "birth_date"


def _rule_adult_child_group(b: _Batch, rows: np.ndarray) -> str:
    b.set("disability_group", rows, ["child"] * len(rows))
    _rule_adult(b, rows)
    return "disability_group"


def _rule_non_eaeu(b: _Batch, rows: np.ndarray) -> str:
    countries = ["UZ", "TJ", "CN", "TR", "AF"]
    b.set("citizenship", rows, [countries[int(i)] for i in b.rng.integers(0, len(countries), len(rows))])
    return "citizenship"


# What "a person who does not meet the category's rule" looks like, per category.
# The validation suites must reject each of these; keep the two in step.
CATEGORY_RULE_DEFECTS: dict[str, Callable[[_Batch, np.ndarray], str]] = {
    "children": _rule_adult,
    "unemployed": _rule_old_unemployed,
    "pregnant": _rule_man,
    "carer_child_under3": lambda b, r: _rule_child_too_old(b, r, 4),
    "parental_leave": lambda b, r: (_rule_set("leave_type", "childcare")(b, r), _rule_child_too_old(b, r, 4))[1],
    "carer_disabled_child": lambda b, r: _rule_child_too_old(b, r, 19),
    "carer_group1": _rule_set("cared_person_disability_group", "II"),
    "pensioners": _rule_young_pensioner,
    "inmates": _rule_set("security_level", "minimum"),
    "detainees": lambda b, r: _rule_set("period_start", b.as_of + dt.timedelta(days=30))(b, r),
    "kandases": _rule_set("country_of_origin", "KZ"),
    "mothers_many_children": _rule_man,
    "disabled": _rule_adult_child_group,
    "students": _rule_set("study_form", "part_time"),
    "tsa_recipients": lambda b, r: _rule_set("period_start", b.as_of + dt.timedelta(days=30))(b, r),
    "eaeu_migrants": _rule_non_eaeu,
    "crisis_nonworking": _rule_set("wellbeing_level", "satisfactory"),
}
_SEX_RULED = frozenset({"pregnant", "mothers_many_children", "parental_leave", "pensioners"})


def _category_rule(b: _Batch, rows: np.ndarray, _: tuple[str, ...]) -> None:
    rule = CATEGORY_RULE_DEFECTS.get(b.category)
    if rule is None:
        rule = _rule_set("period_start", b.as_of + dt.timedelta(days=30))
    column = rule(b, rows)
    b.record(rows, "category_rule", column)


_APPLY: dict[str, Callable[[_Batch, np.ndarray, tuple[str, ...]], None]] = {
    "bad_check_digit": _bad_check_digit,
    "malformed_iin": _malformed_iin,
    "missing_required": _missing_required,
    "future_birth_date": _future_birth_date,
    "period_end_before_start": _period_end_before_start,
    "category_rule": _category_rule,
    "iin_mismatch": _iin_mismatch,
}


def required_columns(category_columns: tuple[object, ...]) -> tuple[str, ...]:
    """Names of the required columns of a record contract (registry Columns)."""
    return tuple(c.name for c in category_columns if getattr(c, "required", False))


def summarise(truth: pa.Table) -> dict[str, int]:
    """Counts of injected defects by kind."""
    if truth.num_rows == 0:
        return {}
    counts = pc.value_counts(truth.column("defect")).to_pylist()
    return {c["values"]: c["counts"] for c in sorted(counts, key=lambda c: c["values"])}
