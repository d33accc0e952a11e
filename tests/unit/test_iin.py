"""IIN checks: known answers, vectorised behaviour, and generation round trips."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from osms.core import iin
from osms.core.iin import Reason

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("791028302728", Reason.OK),
        ("061211600012", Reason.OK),
        ("821214240092", Reason.CHECK_DIGIT_UNCOMPUTABLE),
        ("791028302729", Reason.CHECK_DIGIT_MISMATCH),
        ("12345", Reason.FORMAT),
        ("7910283027AB", Reason.FORMAT),
        ("7910283027281", Reason.FORMAT),
        ("", Reason.FORMAT),
        (" 91028302728", Reason.FORMAT),
        ("79102830272٨", Reason.FORMAT),  # an Arabic-Indic eight is a digit to str.isdigit, not to us
    ],
)
def test_known_answers(value: str, reason: Reason) -> None:
    assert iin.check_one(value) is reason


def test_null_is_format_error() -> None:
    assert iin.check([None, "791028302728"]).reason.tolist() == [Reason.FORMAT, Reason.OK]


def test_decode_known() -> None:
    assert iin.decode("791028302728") == (dt.date(1979, 10, 28), "M")
    assert iin.decode("061211600012") == (dt.date(2006, 12, 11), "F")
    assert iin.decode("12345") == (None, None)


@pytest.mark.parametrize(
    ("digits", "birth"),
    [
        ("000229500000", dt.date(2000, 2, 29)),  # leap day of a leap century
        ("000229300000", None),  # 1900 was not a leap year
        ("790230300000", None),
        ("791301300000", None),
        ("790100300000", None),
        ("791028000000", None),  # century digit 0 encodes nothing
        ("791028700000", None),
    ],
)
def test_decode_only_where_digits_allow(digits: str, birth: dt.date | None) -> None:
    got = iin.check([digits]).birth_date[0]
    assert (None if np.isnat(got) else got.astype(dt.date)) == birth


def test_check_digit() -> None:
    assert iin.check_digit("79102830272") == 8
    assert iin.check_digit("82121424009") is None
    with pytest.raises(ValueError, match="11 digits"):
        iin.check_digit("123")


def test_accepts_arrow_numpy_and_lists() -> None:
    values = ["791028302728", "12345", None, "061211600012"]
    expected = [Reason.OK, Reason.FORMAT, Reason.FORMAT, Reason.OK]
    assert iin.check(values).reason.tolist() == expected
    assert iin.check(pa.array(values)).reason.tolist() == expected
    assert iin.check(pa.chunked_array([values[:2], values[2:]])).reason.tolist() == expected
    assert iin.check(pa.array(values, type=pa.large_string())).reason.tolist() == expected
    assert iin.check(np.array(["791028302728", "12345"])).reason.tolist() == expected[:2]
    assert iin.check(pa.array(values).slice(1)).reason.tolist() == expected[1:]
    assert len(iin.check([])) == 0


def test_generate_known() -> None:
    assert iin.generate(dt.date(1979, 10, 28), "M", 272) == "791028302728"
    assert iin.generate(dt.date(2006, 12, 11), "F", 1) == "061211600012"


def test_generate_skips_uncomputable_serial() -> None:
    # 821214240092 has an uncomputable check digit, so serial 4009 is skipped
    got = iin.generate(dt.date(1882, 12, 14), "F", 4009)
    assert got.startswith("8212142") and got[7:11] == "4010"
    assert iin.check_one(got) is Reason.OK


def test_generate_many_marks_uncomputable() -> None:
    iins, ok = iin.generate_many([dt.date(1882, 12, 14)] * 2, ["F", "F"], [4009, 4010])
    assert ok.tolist() == [False, True]


def test_generate_refuses_out_of_range() -> None:
    with pytest.raises(ValueError, match="1800..2099"):
        iin.generate_many([dt.date(1799, 12, 31)], ["M"], [1])
    with pytest.raises(ValueError, match="0..9999"):
        iin.generate_many([dt.date(1990, 1, 1)], ["M"], [10000])


def test_vectorised_matches_scalar_on_random_strings() -> None:
    rng = np.random.default_rng(7)
    values = ["".join(map(str, rng.integers(0, 10, 12))) for _ in range(2000)]
    vector = iin.check(values).reason.tolist()
    scalar = [iin.check_one(v) for v in values]
    assert vector == scalar
    # about 1 in 11 random 12-digit strings has the right check digit
    assert 0.05 < np.mean(np.array(vector) == Reason.OK) < 0.15


births = st.dates(min_value=dt.date(1800, 1, 1), max_value=dt.date(2099, 12, 31))


@settings(max_examples=300, deadline=None)
@given(birth=births, sex=st.sampled_from(["M", "F"]), serial=st.integers(0, 9999))
def test_generated_iins_are_valid_and_decode(birth: dt.date, sex: str, serial: int) -> None:
    value = iin.generate(birth, sex, serial)  # type: ignore[arg-type]
    assert iin.check_one(value) is Reason.OK
    assert iin.decode(value) == (birth, sex)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(births, st.sampled_from(["M", "F"]), st.integers(0, 9999)), min_size=1, max_size=200))
def test_generate_many_round_trip(rows: list[tuple[dt.date, str, int]]) -> None:
    b, s, n = zip(*rows, strict=True)
    iins, ok = iin.generate_many(list(b), list(s), list(n))
    result = iin.check(iins[ok])
    assert result.valid.all()
    assert (result.birth_date == np.array(b, dtype="datetime64[D]")[ok]).all()
    assert (result.sex == np.array(s)[ok]).all()
    assert not iin.check(iins[~ok]).valid.any()


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=14))
def test_any_text_gets_a_reason(value: str) -> None:
    reason = iin.check_one(value)
    if len(value) != 12 or not all("0" <= ch <= "9" for ch in value):
        assert reason is Reason.FORMAT
