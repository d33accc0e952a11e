"""Individual identification numbers (IIN): format, check digit, decoding, generation.

An IIN is 12 digits: ``YYMMDD`` birth date, a century-and-sex digit (1/2 = 1800s
male/female, 3/4 = 1900s, 5/6 = 2000s), a 4-digit serial and a check digit:

    c = (d1*1 + d2*2 + ... + d11*11) mod 11
    if c == 10: c = (d1*3 + d2*4 + ... + d9*11 + d10*1 + d11*2) mod 11
    if c == 10: the number is never issued (not valid)
    valid when c == d12

The check digit is the hard rule. Since 2013 the birth-date and sex digits are
not guaranteed to match the person, so decoding them is advisory (a warning when
they disagree with the record, never a rejection).

Everything here is vectorised over numpy: checking millions of values is a few
matrix operations, not a Python loop. IINs are personal data; nothing here logs
or formats them into messages.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from enum import IntEnum
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "IinCheck",
    "Reason",
    "check",
    "check_one",
    "check_digit",
    "decode",
    "generate",
    "generate_many",
    "is_valid",
]

Sex = Literal["M", "F"]

_W1 = np.arange(1, 12, dtype=np.int32)  # 1..11
_W2 = np.array([3, 4, 5, 6, 7, 8, 9, 10, 11, 1, 2], dtype=np.int32)
# century-and-sex digit -> (century base year, sex); 0 and 7-9 decode to nothing.
_CENTURY = np.array([0, 1800, 1800, 1900, 1900, 2000, 2000, 0, 0, 0], dtype=np.int32)


class Reason(IntEnum):
    """Why a value is not a valid IIN (``OK`` when it is)."""

    OK = 0
    FORMAT = 1
    CHECK_DIGIT_UNCOMPUTABLE = 2
    CHECK_DIGIT_MISMATCH = 3

    @property
    def text(self) -> str:
        """The reason in words, for people."""
        return _REASON_TEXT[self]


_REASON_TEXT = {
    Reason.OK: "valid",
    Reason.FORMAT: "not 12 digits",
    Reason.CHECK_DIGIT_UNCOMPUTABLE: "check digit cannot be computed (both weightings give 10: never issued)",
    Reason.CHECK_DIGIT_MISMATCH: "check digit does not match",
}


class IinCheck:
    """Per-value results of :func:`check`, as aligned numpy arrays.

    ``reason`` is computed at once; the decoded ``birth_date`` and ``sex`` only when
    asked for, since most callers need just the verdict.
    """

    def __init__(self, reason: np.ndarray, digits: np.ndarray, well_formed: np.ndarray) -> None:
        self.reason = reason  # uint8, a Reason per value
        self._digits = digits
        self._well_formed = well_formed
        self._decoded: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def valid(self) -> np.ndarray:
        """True where the value is a valid IIN."""
        return self.reason == Reason.OK

    @property
    def birth_date(self) -> np.ndarray:
        """datetime64[D] birth date in the digits; NaT where they give none."""
        return self._decode()[0]

    @property
    def sex(self) -> np.ndarray:
        """'M', 'F', or '' where the digits give no sex."""
        return self._decode()[1]

    def _decode(self) -> tuple[np.ndarray, np.ndarray]:
        if self._decoded is None:
            self._decoded = _decode_digits(self._digits, self._well_formed)
        return self._decoded

    def __len__(self) -> int:
        return len(self.reason)


def _digit_matrix(values: Any) -> tuple[np.ndarray, np.ndarray]:
    """(12, n) uint8 digits, one row per position, and a mask of values that are 12 ASCII digits."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = _as_arrow_strings(values)
    n = len(arr)
    if n == 0:
        return np.zeros((12, 0), dtype=np.uint8), np.zeros(0, dtype=bool)
    # Byte length 12 and nothing but digits: a non-ASCII character makes the byte
    # length differ from the character count, or leaves a byte >= 0x80.
    twelve = pc.fill_null(pc.equal(pc.binary_length(arr), 12), False)
    if not pc.all(twelve).as_py():
        arr = pc.if_else(twelve, arr, pa.scalar("000000000000"))
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32, count=n + 1, offset=arr.offset * 4)
    start = int(offsets[0])
    # every value is 12 bytes now, so the values lie back to back in the data buffer
    raw = np.frombuffer(arr.buffers()[2], dtype=np.uint8, count=12 * n, offset=start)
    digits = np.ascontiguousarray(raw.reshape(n, 12).T) - np.uint8(48)  # wraps below '0'
    ok = twelve.to_numpy(zero_copy_only=False).astype(bool)
    ok &= np.logical_and.reduce(digits <= 9, axis=0)
    return digits, ok


def _as_arrow_strings(values: Any) -> pa.Array:
    """Any sequence of strings as one contiguous pyarrow string array."""
    import pyarrow as pa

    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        arr = values
    elif isinstance(values, np.ndarray) and values.dtype.kind in "US":
        arr = pa.array(values, type=pa.string())
    else:
        arr = pa.array([None if v is None else str(v) for v in values], type=pa.string())
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
    if not pa.types.is_string(arr.type):
        arr = arr.cast(pa.string())
    return arr


def _check_digits(digits: np.ndarray) -> np.ndarray:
    """Computed check digit per value (digits as (12, n)): 0..9, or 10 where uncomputable."""
    s1 = np.zeros(digits.shape[1], dtype=np.uint16)
    s2 = np.zeros(digits.shape[1], dtype=np.uint16)
    for i in range(11):  # 11 vector operations, whatever n is
        col = digits[i].astype(np.uint16)
        s1 += col * np.uint16(_W1[i])
        s2 += col * np.uint16(_W2[i])
    c = s1 % np.uint16(11)
    return np.where(c == 10, s2 % np.uint16(11), c)


_SEX = np.array(["", "M", "F"], dtype="<U1")


_MONTH_DAYS = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int32)


def _days_from_civil(y: np.ndarray, m: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Days since 1970-01-01 of a proleptic Gregorian date, in integer arithmetic."""
    y = y - (m <= 2)
    era = np.floor_divide(y, 400)
    yoe = y - era * 400
    mp = (m + 9) % 12
    doy = (153 * mp + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _decode_digits(digits: np.ndarray, usable: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d = digits[:7].astype(np.int32)
    year = _CENTURY[np.minimum(d[6], 9)] + d[0] * 10 + d[1]
    mm = d[2] * 10 + d[3]
    dd = d[4] * 10 + d[5]
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    month_days = _MONTH_DAYS[np.where((mm >= 1) & (mm <= 12), mm, 0)] + (leap & (mm == 2))
    ok = usable & (d[6] >= 1) & (d[6] <= 6) & (month_days > 0) & (dd >= 1) & (dd <= month_days)
    days = _days_from_civil(year, np.where(ok, mm, 1), np.where(ok, dd, 1))
    birth = np.where(ok, days.astype(np.int64), np.int64(np.iinfo(np.int64).min)).view("datetime64[D]")  # int64 min is NaT
    sex = _SEX[np.where(ok, 2 - (d[6] % 2), 0)]
    return birth, sex


def check(values: Any) -> IinCheck:
    """Check every value (list, numpy or pyarrow array); vectorised."""
    digits, well_formed = _digit_matrix(values)
    computed = _check_digits(digits)
    reason = np.where(
        ~well_formed,
        np.uint8(Reason.FORMAT),
        np.where(
            computed == 10,
            np.uint8(Reason.CHECK_DIGIT_UNCOMPUTABLE),
            np.where(computed == digits[11], np.uint8(Reason.OK), np.uint8(Reason.CHECK_DIGIT_MISMATCH)),
        ),
    ).astype(np.uint8)
    return IinCheck(reason=reason, digits=digits, well_formed=well_formed)


def is_valid(values: Any) -> np.ndarray:
    """Bool array: True where the value is a valid IIN."""
    return check(values).valid


def check_one(value: str) -> Reason:
    """The :class:`Reason` for a single value."""
    return Reason(int(check([value]).reason[0]))


def check_digit(first11: str) -> int | None:
    """The check digit for 11 leading digits, or None where it cannot be computed."""
    if len(first11) != 11 or not first11.isascii() or not first11.isdigit():
        raise ValueError("expected 11 digits")
    d = np.frombuffer(first11.encode() + b"0", dtype=np.uint8).reshape(12, 1) - np.uint8(48)
    c = int(_check_digits(d)[0])
    return None if c == 10 else c


def decode(value: str) -> tuple[dt.date | None, Sex | None]:
    """Birth date and sex encoded in an IIN's digits, where the digits allow."""
    result = check([value])
    birth = result.birth_date[0]
    if np.isnat(birth):
        return None, None
    return birth.astype(dt.date), result.sex[0]  # type: ignore[return-value]


def _century_digit(year: np.ndarray, male: np.ndarray) -> np.ndarray:
    base = np.select([year < 1900, year < 2000], [1, 3], 5)
    return base + np.where(male, 0, 1)


def generate_many(
    birth_dates: Sequence[dt.date] | np.ndarray,
    sexes: Sequence[str] | np.ndarray,
    serials: Sequence[int] | np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """IINs for given birth dates, sexes and 4-digit serials; vectorised.

    Returns the IINs (as '<U12') and a bool mask of those that are valid. About one
    serial in eleven gives an uncomputable check digit: the caller picks another
    serial there (see :func:`generate`).
    """
    birth = np.asarray(birth_dates, dtype="datetime64[D]")
    male = np.asarray(sexes) == "M"
    serial = np.asarray(serials, dtype=np.int64)
    if np.any((serial < 0) | (serial > 9999)):
        raise ValueError("a serial is 0..9999")
    years = birth.astype("datetime64[Y]").astype(np.int64) + 1970
    if np.any((years < 1800) | (years > 2099)):
        raise ValueError("an IIN encodes birth years 1800..2099 only")
    months = birth.astype("datetime64[M]").astype(np.int64) % 12 + 1
    days = (birth - birth.astype("datetime64[M]").astype("datetime64[D]")).astype(np.int64) + 1
    d = np.empty((12, len(birth)), dtype=np.uint8)
    yy = years % 100
    d[0], d[1] = yy // 10, yy % 10
    d[2], d[3] = months // 10, months % 10
    d[4], d[5] = days // 10, days % 10
    d[6] = _century_digit(years, male)
    for i, p in enumerate((1000, 100, 10, 1)):
        d[7 + i] = (serial // p) % 10
    c = _check_digits(d)
    ok = c < 10
    d[11] = np.where(ok, c, 0)
    iins = np.ascontiguousarray((d + np.uint8(48)).T).view("S12").ravel().astype("<U12")
    return iins, ok


def generate(birth_date: dt.date, sex: Sex, serial: int = 0) -> str:
    """A valid IIN for a birth date and sex: the first usable serial from ``serial`` on."""
    if sex not in ("M", "F"):
        raise ValueError("sex is 'M' or 'F'")
    for s in range(serial, serial + 11):
        iins, ok = generate_many([birth_date], [sex], [s % 10000])
        if ok[0]:
            return str(iins[0])
    raise AssertionError("unreachable: one of any 11 consecutive serials has a check digit")


def prefix_ranges(counts: Mapping[str | None, int], rows: int) -> list[tuple[str | None, str | None]]:
    """Ranges [lo, hi) of IINs holding at most about ``rows`` rows each, from a count of rows per IIN prefix.

    A pass over a feed or a package takes one range at a time, so that what it holds
    is bounded by ``rows`` and not by the data; taking the ranges in order keeps the
    output sorted by IIN. A prefix is never split (its rows may exceed ``rows``);
    ``None`` counts rows without an IIN, which belong to the last range (``hi`` None).
    """
    edges: list[str | None] = [None]
    filled = 0
    for prefix in sorted(p for p in counts if p is not None):
        if filled and filled + counts[prefix] > rows:
            edges.append(prefix)
            filled = 0
        filled += counts[prefix]
    edges.append(None)
    return list(zip(edges[:-1], edges[1:], strict=True))
