"""The synthetic national population behind the mock source systems.

A deterministic (per seed and scale) population of Kazakhstan: persons with valid,
unique IINs, Kazakh/Russian/other names in their correct gender forms, births and
deaths over the served window, and their memberships in the categories of Decree
No. 660 with periods, as each source system reports them.

Everything is built with numpy over whole arrays (no per-person Python loops) and
cached as Parquet (zstd) under ``cache_dir/<spec.key>/``. The layout makes
:meth:`Population.records` a filter and a take: per category one table of
memberships, in record-id order, with the period, the category's own values and a
bitmask of the systems that report the membership.

Dates are handled internally as int32 days since 1970-01-01. A membership has a
start, an actual end (``OPEN`` when none) and a scheduled end (``OPEN`` when none is
known in advance). The source shows the scheduled end from the start and an
unscheduled (earlier) end only from that day on.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from osms.core import iin as _iin
from osms.core.registry import default_registry

__all__ = [
    "DEFAULT_SCALE",
    "DEFAULT_SEED",
    "NATIONAL_PERSONS",
    "SERVED_FROM",
    "SERVED_TO",
    "Population",
    "PopulationSpec",
    "load_population",
]

NATIONAL_PERSONS = 20_300_000
DEFAULT_SEED = 660
DEFAULT_SCALE = 0.001  # about 20,300 persons: development and tests

SERVED_FROM = dt.date(2022, 9, 26)
SERVED_TO = dt.date(2027, 12, 31)
FORMAT_VERSION = 1
NAMES_FILE = Path(__file__).resolve().parents[1] / "include" / "seeds" / "reference" / "names.yaml"

_EPOCH = dt.date(1970, 1, 1)
OPEN = np.int32(np.iinfo(np.int32).max)
_YEAR = 365.2425


def _day(d: dt.date) -> int:
    return (d - _EPOCH).days


W0 = _day(SERVED_FROM)
W1 = _day(SERVED_TO)
Y2026 = _day(dt.date(2026, 1, 1))


@dataclass(frozen=True)
class PopulationSpec:
    """Which population: the seed of every random stream and the scale (1.0 = the country)."""

    seed: int = DEFAULT_SEED
    scale: float = DEFAULT_SCALE

    @property
    def key(self) -> str:
        """Names the cache directory, e.g. ``seed660-scale0.001``."""
        return f"seed{self.seed}-scale{self.scale:g}"

    @property
    def persons_target(self) -> int:
        return max(int(round(NATIONAL_PERSONS * self.scale)), 1)


# --------------------------------------------------------------------------
# Date helpers (vectorised, int32 days since 1970-01-01)
# --------------------------------------------------------------------------


def _ymd(days: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    d = np.asarray(days, dtype=np.int64).astype("datetime64[D]")
    m = d.astype("datetime64[M]")
    y = m.astype("datetime64[Y]").astype(np.int64) + 1970
    mo = m.astype(np.int64) % 12 + 1
    dd = (d - m.astype("datetime64[D]")).astype(np.int64) + 1
    return y, mo, dd


def add_years(days: Any, years: Any) -> np.ndarray:
    """The same day ``years`` later (29 Feb -> 1 Mar), consistent with :func:`age_on`."""
    d = np.asarray(days, dtype=np.int64).astype("datetime64[D]")
    m = d.astype("datetime64[M]")
    off = (d - m.astype("datetime64[D]")).astype(np.int64)
    shifted = m + (np.asarray(years, dtype=np.int64) * 12).astype("timedelta64[M]")
    return (shifted.astype("datetime64[D]").astype(np.int64) + off).astype(np.int32)


def age_on(birth: Any, day: Any) -> np.ndarray:
    """Completed years of age on ``day``."""
    yb, mb, db = _ymd(birth)
    yd, md, dd = _ymd(np.broadcast_to(np.asarray(day), np.shape(birth)))
    return ((yd * 10000 + md * 100 + dd) - (yb * 10000 + mb * 100 + db)) // 10000


def _date_of(y: Any, m: int, d: int) -> np.ndarray:
    y = np.asarray(y, dtype=np.int64)
    months = (y - 1970) * 12 + (m - 1)
    return (months.astype("datetime64[M]").astype("datetime64[D]").astype(np.int64) + d - 1).astype(np.int32)


# --------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------

_VOWELS = set("аеёиоуыэюяәіұүөі")
# patronymic styles
P_NONE, P_KK, P_KK_ALT, P_RU, P_KY = 0, 1, 2, 3, 4


def _female_surname(s: str) -> str:
    for suffix in ("ов", "ев", "ёв", "ин", "ын"):
        if s.endswith(suffix):
            return s + "а"
    if s.endswith("ский"):
        return s[:-4] + "ская"
    if s.endswith("цкий"):
        return s[:-4] + "цкая"
    return s


def _russian_patronymics(name: str) -> tuple[str, str]:
    if name.endswith(("й", "ь")):
        return name[:-1] + "евич", name[:-1] + "евна"
    if name[-1].lower() in _VOWELS:
        return name + "евич", name + "евна"
    return name + "ович", name + "овна"


@dataclass
class _Names:
    groups: list[str]
    shares: np.ndarray
    style: list[str]
    vocab: list[str]
    sur_m: np.ndarray  # (G, K) vocab index, -1 padding
    sur_f: np.ndarray
    n_sur: np.ndarray
    first_m: np.ndarray
    first_f: np.ndarray
    n_first_m: np.ndarray
    n_first_f: np.ndarray
    patr: np.ndarray  # (G, K, 5 styles, 2 sexes [son, daughter])


def _load_names(path: Path = NAMES_FILE) -> _Names:
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]
    vocab: list[str] = []
    index: dict[str, int] = {}

    def vid(s: str) -> int:
        if s not in index:
            index[s] = len(vocab)
            vocab.append(s)
        return index[s]

    groups = list(raw)
    G = len(groups)
    K = max(max(len(g["surnames"]), len(g["male"]), len(g["female"])) for g in raw.values())
    sur_m = np.full((G, K), -1, np.int32)
    sur_f = np.full((G, K), -1, np.int32)
    first_m = np.full((G, K), -1, np.int32)
    first_f = np.full((G, K), -1, np.int32)
    patr = np.full((G, K, 5, 2), -1, np.int32)
    n_sur = np.zeros(G, np.int32)
    n_fm = np.zeros(G, np.int32)
    n_ff = np.zeros(G, np.int32)
    for gi, g in enumerate(groups):
        spec = raw[g]
        for k, s in enumerate(spec["surnames"]):
            sur_m[gi, k] = vid(s)
            sur_f[gi, k] = vid(_female_surname(s))
        n_sur[gi] = len(spec["surnames"])
        males: dict[str, tuple[str, str]] = {}
        for entry in spec["male"]:
            if isinstance(entry, list):
                males[entry[0]] = (entry[1], entry[2])
            else:
                males.setdefault(entry, _russian_patronymics(entry))
        for k, (name, (son, daughter)) in enumerate(males.items()):
            first_m[gi, k] = vid(name)
            patr[gi, k, P_RU] = (vid(son), vid(daughter))
            patr[gi, k, P_KK] = (vid(name + "ұлы"), vid(name + "қызы"))
            patr[gi, k, P_KK_ALT] = (vid(name + "улы"), vid(name + "кызы"))
            patr[gi, k, P_KY] = (vid(name + " уулу"), vid(name + " кызы"))
        n_fm[gi] = len(males)
        females = list(dict.fromkeys(spec["female"]))
        for k, name in enumerate(females):
            first_f[gi, k] = vid(name)
        n_ff[gi] = len(females)
    shares = np.array([float(raw[g]["share"]) for g in groups])
    return _Names(
        groups=groups,
        shares=shares / shares.sum(),
        style=[raw[g]["patronymic"] for g in groups],
        vocab=vocab,
        sur_m=sur_m,
        sur_f=sur_f,
        n_sur=n_sur,
        first_m=first_m,
        first_f=first_f,
        n_first_m=n_fm,
        n_first_f=n_ff,
        patr=patr,
    )


# --------------------------------------------------------------------------
# Random streams and samplers
# --------------------------------------------------------------------------


def _rng(seed: int, stream: str) -> np.random.Generator:
    # a stable stream id from the name (no hash(): it is salted per process)
    sid = int.from_bytes(stream.encode("utf-8")[:16].ljust(16, b"\0"), "little")
    return np.random.default_rng([seed, sid & 0xFFFFFFFF, sid >> 32 & 0xFFFFFFFF, sid >> 64 & 0xFFFFFFFF])


def _count(national: float, scale: float, floor: int) -> int:
    return max(int(round(national * scale)), floor)


def _spells(
    rng: np.random.Generator,
    stock: int,
    mean_dur: float,
    lo: int = W0,
    hi: int = W1,
    *,
    max_dur: int | None = None,
    min_dur: int = 1,
    shape: float = 2.0,
    start_floor: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(start, end) of spells keeping about ``stock`` of them in force on every day of [lo, hi].

    Arrivals are stratified (evenly spread with jitter), so even a stock of a few
    never leaves a day empty. With ``start_floor`` spells begin no earlier than it
    (a category that starts to exist on that day)."""
    if max_dur is None:
        max_dur = int(mean_dur * 5)
    spacing = mean_dur / max(stock, 1)
    min_dur = max(min_dur, int(np.ceil(2.2 * spacing)))
    base = lo if start_floor is None else max(lo, start_floor)
    a = base - max_dur
    k = int(round((hi - a) / spacing))
    starts = a + ((np.arange(k) + rng.random(k)) * spacing).astype(np.int64)
    dur = np.clip(rng.gamma(shape, mean_dur / shape, k), min_dur, max_dur).astype(np.int64)
    ends = starts + dur - 1
    if start_floor is not None:
        starts = np.maximum(starts, start_floor)
    keep = (ends >= base) & (starts <= hi)
    return starts[keep].astype(np.int32), ends[keep].astype(np.int32)


class _Picker:
    """Picks persons by birth-date range (persons are sorted by birth date)."""

    def __init__(self, birth: np.ndarray, male: np.ndarray, death: np.ndarray, eligible: np.ndarray):
        self.birth = birth
        self.male = male
        self.death = death
        self.eligible = eligible

    def by_birth(
        self,
        rng: np.random.Generator,
        lo: np.ndarray,
        hi: np.ndarray,
        alive_on: np.ndarray,
        sex: str | np.ndarray | None = None,
        extra: np.ndarray | None = None,
        tries: int = 12,
    ) -> np.ndarray:
        """Per element, a person born in [lo, hi], alive on ``alive_on``; -1 where none found."""
        lo = np.asarray(lo, np.int64)
        hi = np.asarray(hi, np.int64)
        n = len(lo)
        out = np.full(n, -1, np.int64)
        li = np.searchsorted(self.birth, lo, "left")
        hi_i = np.searchsorted(self.birth, hi, "right")
        width = hi_i - li
        alive_on = np.broadcast_to(np.asarray(alive_on, np.int64), (n,))
        want_m = None
        if sex is not None:
            want_m = np.broadcast_to(np.asarray(sex) == "M", (n,))
        todo = np.flatnonzero(width > 0)
        for _ in range(tries):
            if len(todo) == 0:
                break
            cand = li[todo] + (rng.random(len(todo)) * width[todo]).astype(np.int64)
            ok = self.eligible[cand] & (self.death[cand] >= alive_on[todo])
            if want_m is not None:
                ok &= self.male[cand] == want_m[todo]
            if extra is not None:
                ok &= extra[cand]
            out[todo[ok]] = cand[ok]
            todo = todo[~ok]
        return out

    def by_age(self, rng, day, age, sex=None, extra=None) -> np.ndarray:
        """A person aged ``age`` (completed years) on ``day``, alive then."""
        day = np.asarray(day, np.int64)
        age = np.asarray(age, np.int64)
        lo = add_years(day, -(age + 1)) + 1
        hi = add_years(day, -age)
        return self.by_birth(rng, lo, hi, day, sex, extra)


def _ages(rng: np.random.Generator, n: int, lo: int, hi: int, mode: float | None = None) -> np.ndarray:
    if mode is None:
        return rng.integers(lo, hi + 1, n)
    return np.floor(rng.triangular(lo, mode, hi + 1, n)).astype(np.int64)


def _choice(rng: np.random.Generator, values: list[str], probs: list[float], n: int) -> np.ndarray:
    p = np.asarray(probs, float)
    idx = np.searchsorted(np.cumsum(p / p.sum()), rng.random(n), side="right")
    return np.asarray(values, dtype=object)[np.minimum(idx, len(values) - 1)]


# --------------------------------------------------------------------------
# The build
# --------------------------------------------------------------------------

# Age pyramid of Kazakhstan (share by five-year group, ages 0-4 ... 95-99), 2022.
_PYRAMID = np.array(
    [9.6, 9.4, 8.0, 6.3, 6.0, 7.1, 8.6, 7.9, 6.9, 6.1, 5.6, 5.5, 5.0, 3.9, 2.6, 1.2, 0.9, 0.5, 0.15, 0.03]
)
BIRTHS_PER_YEAR = 390_000


def _hazard(age: np.ndarray) -> np.ndarray:
    """Yearly death hazard by age (Gompertz-Makeham, crude rate ~7.5 per 1000)."""
    return 0.0008 + 0.00004 * np.exp(0.095 * np.asarray(age, float))


@dataclass
class _People:
    n: int
    birth: np.ndarray
    male: np.ndarray
    death: np.ndarray
    foreign: np.ndarray
    veteran: np.ndarray
    group: np.ndarray
    mother: np.ndarray
    father: np.ndarray


class _Builder:
    def __init__(self, spec: PopulationSpec, progress: bool = False):
        self.spec = spec
        self.s = spec.scale
        self.names = _load_names()
        self.registry = default_registry()
        self.categories = {c.code: c for c in self.registry.all_categories()}
        self.cat_systems: dict[str, list[str]] = {}
        for edition in self.registry.editions:
            for f in edition.feeds:
                lst = self.cat_systems.setdefault(f.category, [])
                if f.system not in lst:
                    lst.append(f.system)
        from tqdm import tqdm

        self.bar = tqdm(total=8 + len(self.categories), desc=f"population {spec.key}", file=sys.stderr, disable=not progress)

    def rng(self, stream: str) -> np.random.Generator:
        return _rng(self.spec.seed, stream)

    def step(self, what: str) -> None:
        self.bar.set_postfix_str(what)
        self.bar.update(1)

    # ---------------------------------------------------------------- persons

    def _migrant_plan(self) -> dict[str, np.ndarray]:
        rng = self.rng("migrants")
        ws, we = _spells(rng, _count(45_000, self.s, 5), 420, max_dur=1500)
        nw = len(ws)
        cit = _choice(rng, ["KG", "RU", "BY", "AM"], [0.45, 0.35, 0.08, 0.12], nw)
        w_male = rng.random(nw) < 0.75
        w_age = _ages(rng, nw, 20, 55, 30)
        nf = int(round(nw * 15 / 45))
        fw = rng.integers(0, nw, nf)
        rel = _choice(rng, ["spouse", "child", "parent"], [0.47, 0.40, 0.13], nf)
        fs = ws[fw] + rng.integers(0, 60, nf).astype(np.int32)
        fe = we[fw].copy()
        keep = fs <= fe
        fw, rel, fs, fe = fw[keep], rel[keep], fs[keep], fe[keep]
        nf = len(fw)
        f_age = np.where(
            rel == "spouse",
            np.clip(w_age[fw] + rng.integers(-5, 4, nf), 18, 70),
            np.where(rel == "child", rng.integers(0, 17, nf), np.clip(w_age[fw] + 25 + rng.integers(0, 10, nf), 45, 85)),
        )
        f_male = np.where(rel == "spouse", ~w_male[fw], rng.random(nf) < 0.5)
        start = np.concatenate([ws, fs])
        age = np.concatenate([w_age, f_age])
        birth = add_years(start, -age) - rng.integers(0, 365, nw + nf).astype(np.int32)
        return dict(
            start=start,
            end=np.concatenate([we, fe]),
            worker=np.concatenate([np.full(nw, -1), fw]),
            relation=np.concatenate([np.full(nw, "worker", dtype=object), rel]),
            citizenship=np.concatenate([cit, cit[fw]]),
            birth=birth.astype(np.int32),
            male=np.concatenate([w_male, f_male]),
        )

    def build_persons(self) -> None:
        rng = self.rng("persons")
        mig = self._migrant_plan()
        n_for = len(mig["birth"])
        n_total = self.spec.persons_target
        window_years = (W1 - W0) / _YEAR
        n_births = int(round(BIRTHS_PER_YEAR * window_years * self.s))
        n_vet = max(1, int(round(150 * self.s)))
        n_exist = max(n_total - n_for - n_births - n_vet, 0)
        # existing residents: age at W0 from the pyramid
        grp = rng.choice(len(_PYRAMID), n_exist, p=_PYRAMID / _PYRAMID.sum())
        age_days = ((grp * 5 + rng.random(n_exist) * 5) * _YEAR).astype(np.int64)
        b_exist = (W0 - age_days).astype(np.int32)
        b_birth = (W0 + 1 + np.floor(rng.random(n_births) * (W1 - W0))).astype(np.int32)
        b_vet = rng.integers(_day(dt.date(1922, 1, 1)), _day(dt.date(1927, 12, 31)) + 1, n_vet).astype(np.int32)
        birth = np.concatenate([b_exist, b_birth, b_vet, mig["birth"]])
        n = len(birth)
        age0 = np.maximum((W0 - birth) / _YEAR, 0)
        p_male = np.clip(0.512 - np.clip(age0 - 40, 0, None) * 0.0055, 0.25, 0.52)
        male = rng.random(n) < p_male
        male[n - n_for:] = mig["male"]
        foreign = np.zeros(n, bool)
        foreign[n - n_for:] = True
        veteran = np.zeros(n, bool)
        veteran[n_exist + n_births : n_exist + n_births + n_vet] = True
        male[veteran] = rng.random(n_vet) < 0.8
        # deaths over the window
        h = np.where(birth > W0, 0.002, _hazard(age0))
        t = rng.exponential(1.0, n) / h * _YEAR
        start_alive = np.maximum(birth, W0)
        death = (start_alive + t).astype(np.int64)
        death = np.where(death <= W1, death, OPEN).astype(np.int32)
        # sort by birth date (ties at random): person_id is the position
        order = np.lexsort((rng.random(n), birth))
        inv = np.empty(n, np.int64)
        inv[order] = np.arange(n)
        self.p = _People(
            n=n,
            birth=birth[order],
            male=male[order],
            death=death[order],
            foreign=foreign[order],
            veteran=veteran[order],
            group=np.zeros(n, np.int8),
            mother=np.full(n, -1, np.int64),
            father=np.full(n, -1, np.int64),
        )
        self.mig = mig
        self.mig["person"] = inv[n - n_for + np.arange(n_for)]
        self.picker = _Picker(self.p.birth, self.p.male, self.p.death, ~self.p.foreign & ~self.p.veteran)
        self.step("persons")

    def link_families(self) -> None:
        """Mother (and mostly father) for every resident child of the window."""
        p, rng = self.p, self.rng("families")
        kids = np.flatnonzero(~p.foreign & (p.birth >= add_years(W0, -18)))
        k = len(kids)
        cb = p.birth[kids].astype(np.int64)
        m_age = np.clip(rng.normal(28.5, 5.5, k), 18, 44)
        target = cb - (m_age * _YEAR).astype(np.int64)
        mother = self.picker.by_birth(rng, target - 200, target + 200, cb, "F")
        mb = np.where(mother >= 0, p.birth[np.maximum(mother, 0)], target)
        f_age_gap = np.clip(rng.normal(3, 3, k), -2, 15) * _YEAR
        ft = mb - f_age_gap.astype(np.int64)
        ft = np.minimum(ft, cb - int(20 * _YEAR))
        father = self.picker.by_birth(rng, ft - 200, ft + 200, cb - 270, "M")
        father[rng.random(k) >= 0.88] = -1
        p.mother[kids] = mother
        p.father[kids] = father
        self.step("families")

    def assign_names(self) -> None:
        p, nm, rng = self.p, self.names, self.rng("names")
        n = p.n
        G = len(nm.groups)
        group = np.searchsorted(np.cumsum(nm.shares), rng.random(n), side="right").clip(0, G - 1).astype(np.int8)
        gi = {g: i for i, g in enumerate(nm.groups)}
        # foreigners: by citizenship; families of a migrant share the worker's group and surname
        mp = self.mig["person"]
        cit_group = {"KG": gi["kyrgyz"], "RU": gi["russian"], "BY": gi["russian"], "AM": gi["armenian"]}
        group[mp] = np.array([cit_group[c] for c in self.mig["citizenship"]], np.int8) if len(mp) else group[mp]
        sur = (rng.random(n) * nm.n_sur[group]).astype(np.int64)
        fam = self.mig["worker"] >= 0
        sur[mp[fam]] = sur[mp[self.mig["worker"][fam]]]
        # linked children take the father's group and surname (or the mother's)
        for _ in range(2):  # twice: a parent may be a linked child
            par = np.where(p.father >= 0, p.father, p.mother)
            has = par >= 0
            group[has] = group[par[has]]
            sur[has] = sur[par[has]]
        first = np.where(
            p.male, (rng.random(n) * nm.n_first_m[group]), (rng.random(n) * nm.n_first_f[group])
        ).astype(np.int64)
        fname = (rng.random(n) * nm.n_first_m[group]).astype(np.int64)  # the father's given name
        for _ in range(2):
            hf = (p.father >= 0) & (group == group[np.maximum(p.father, 0)])
            fname[hf] = first[p.father[hf]]
        # patronymic style by group and birth year
        style_of = np.array([{"kazakh": P_KK, "russian": P_RU, "kyrgyz": P_KY}[s] for s in nm.style])
        style = style_of[group].copy()
        u = rng.random(n)
        is_kk = style == P_KK
        old = p.birth < _day(dt.date(1991, 1, 1))
        ru_share = np.where(old, 0.55, 0.12)
        style[is_kk & (u < ru_share)] = P_RU
        style[is_kk & (u >= ru_share) & (u < ru_share + 0.08)] = P_KK_ALT
        style[(style_of[group] == P_KY) & (u < 0.3)] = P_RU
        none_share = np.where(np.isin(group, [gi["german"], gi["armenian"]]), 0.10, np.where(group == gi["korean"], 0.05, 0.03))
        style[rng.random(n) < none_share] = P_NONE
        p.group = group
        sex_i = (~p.male).astype(np.int64)
        self.last_idx = np.where(p.male, nm.sur_m[group, sur], nm.sur_f[group, sur])
        self.first_idx = np.where(p.male, nm.first_m[group, first], nm.first_f[group, first])
        self.patr_idx = np.where(style == P_NONE, -1, nm.patr[group, fname, style, sex_i])
        assert (self.last_idx >= 0).all() and (self.first_idx >= 0).all()
        self.step("names")

    def assign_iins(self) -> None:
        p, rng = self.p, self.rng("iin")
        n = p.n
        key = p.birth.astype(np.int64) * 2 + p.male
        order = np.argsort(key, kind="stable")
        ks = key[order]
        new = np.ones(n, bool)
        new[1:] = ks[1:] != ks[:-1]
        first = np.maximum.accumulate(np.where(new, np.arange(n), 0))
        rank = np.arange(n) - first
        if rank.max(initial=0) >= 5000:
            raise RuntimeError("more than 5000 persons share a birth date and sex: IINs would not be unique")
        off = rng.integers(0, 5000, n)[first]
        q = (off + rank) % 5000
        out = np.empty(n, "S12")
        births = p.birth[order].astype("datetime64[D]")
        sexes = np.where(p.male[order], "M", "F")
        for a in range(0, n, 2_000_000):
            b = min(a + 2_000_000, n)
            s0 = 2 * q[a:b]
            i0, ok0 = _iin.generate_many(births[a:b], sexes[a:b], s0)
            i1, ok1 = _iin.generate_many(births[a:b], sexes[a:b], s0 + 1)
            assert (ok0 | ok1).all()
            out[order[a:b]] = np.where(ok0, i0, i1).astype("S12")
        self.iin_bytes = out
        self.step("iins")

    def persons_table(self) -> pa.Table:
        p = self.p
        vocab = pa.array(self.names.vocab, pa.string())
        patronymic = vocab.take(pa.array(self.patr_idx, mask=self.patr_idx < 0))
        death = pa.array(np.where(p.death == OPEN, 0, p.death).astype(np.int32), pa.int32(), mask=p.death == OPEN).cast(pa.date32())
        return pa.table(
            {
                "person_id": pa.array(np.arange(p.n, dtype=np.int64)),
                "iin": _fixed_strings(self.iin_bytes.view(np.uint8).reshape(p.n, 12)),
                "last_name": vocab.take(pa.array(self.last_idx)),
                "first_name": vocab.take(pa.array(self.first_idx)),
                "patronymic": patronymic,
                "birth_date": pa.array(p.birth, pa.int32()).cast(pa.date32()),
                "sex": pa.array(np.where(p.male, "M", "F"), pa.string()),
                "death_date": death,
            }
        )

    # ------------------------------------------------------------ memberships

    def finalize(self, cat: str, m: dict[str, Any], sys_masks: dict[str, np.ndarray], rng: np.random.Generator) -> pa.Table:
        """Apply deaths, keep one membership per person at a time, order, and tabulate."""
        p = self.p
        person = np.asarray(m.pop("person"), np.int64)
        start = np.asarray(m.pop("start"), np.int64)
        end = np.asarray(m.pop("end"), np.int64)
        sched = np.asarray(m.pop("sched", np.full(len(person), OPEN)), np.int64)
        n = len(person)
        masks = {k: np.broadcast_to(np.asarray(v, bool), (n,)) for k, v in sys_masks.items()}
        sysmask = np.zeros(n, np.uint32)
        for bit, system in enumerate(self.cat_systems[cat]):
            sysmask |= np.where(masks.get(system, np.ones(n, bool)), np.uint32(1 << bit), np.uint32(0))
        ok = person >= 0
        death = np.where(ok, p.death[np.maximum(person, 0)], OPEN).astype(np.int64)
        end = np.minimum(np.minimum(end, sched), death)
        ok &= (start <= end) & (start <= W1) & (end >= W0) & (sysmask != 0)
        ok &= start >= p.birth[np.maximum(person, 0)]
        idx = np.flatnonzero(ok)
        # one membership of a category per person at a time: keep the earlier
        keep = np.ones(len(idx), bool)
        o = idx[np.lexsort((start[idx], person[idx]))]
        pos = np.empty(n, np.int64)
        pos[idx] = np.arange(len(idx))
        while True:
            kept = o[keep[pos[o]]]
            bad = (person[kept][1:] == person[kept][:-1]) & (start[kept][1:] <= end[kept][:-1])
            if not bad.any():
                break
            keep[pos[kept[1:][bad]]] = False
        idx = idx[keep]
        # record order: by start, ties at random
        idx = idx[np.lexsort((rng.random(len(idx)), start[idx]))]
        cols: dict[str, Any] = {
            "person_id": pa.array(person[idx]),
            "_start": pa.array(start[idx].astype(np.int32)),
            "_end": pa.array(np.where(end[idx] >= OPEN, OPEN, end[idx]).astype(np.int32)),
            "_sched": pa.array(sched[idx].astype(np.int32)),
            "_sys": pa.array(sysmask[idx]),
        }
        for k, v in m.items():
            arr = np.asarray(v)
            if arr.ndim == 0:
                arr = np.broadcast_to(arr, (n,))
            arr = arr[idx]
            if arr.dtype == object or arr.dtype.kind == "U":
                cols[k] = pa.array(arr.astype(str), pa.string())
            else:
                cols[k] = pa.array(arr)
        self.step(cat)
        return pa.table(cols)

    # -- category builders: each returns (members dict, system masks)

    def cat_children(self, rng):
        p = self.p
        end = add_years(p.birth, 18) - 1
        ids = np.flatnonzero(~p.foreign & (end >= W0))
        n = len(ids)
        u = rng.random(n)
        care = np.where(u < 0.0025, "orphan", np.where(u < 0.0075, "without_parental_care", "family"))
        b = p.birth[ids]
        y, mo, d = _ymd(b)
        school = _date_of(y + 7, 9, 1)  # the September after the 6th-7th birthday
        school = np.where(age_on(b, school) < 6, _date_of(y + 8, 9, 1), school)
        pre = rng.random(n) < 0.4
        from_nedb = np.where(pre, add_years(b, 3), school)
        m = dict(person=ids, start=b, end=end[ids], sched=end[ids], care_status=care, _from_nedb=from_nedb.astype(np.int32))
        return m, {"individuals": True, "nedb": True, "orphans": care != "family"}

    def cat_pensioners(self, rng):
        p = self.p
        elig = ~p.foreign & ~p.veteran
        pa_date = add_years(p.birth, np.where(p.male, 63, 61))
        ids = np.flatnonzero(elig & (pa_date <= W1) & (p.death >= np.maximum(pa_date, W0)))
        ids = ids[rng.random(len(ids)) < 0.88]
        a_start = pa_date[ids] + rng.integers(0, 45, len(ids))
        parts = [(ids, a_start, np.full(len(ids), "age", dtype=object))]
        other = [  # type, stock, age range at start, male share
            ("military", 55_000, 40, 60, 0.95),
            ("length_of_service", 30_000, 45, 60, 0.6),
            ("disability", 40_000, 18, 62, 0.55),
            ("survivor", 20_000, 18, 62, 0.4),
            ("judicial", 3_000, 55, 70, 0.6),
        ]
        for kind, stock, lo, hi, pm in other:
            k0 = _count(stock, self.s, 8)
            k1 = int(round(k0 * (W1 - W0) / (20 * 365)))
            st = np.concatenate([W0 - rng.integers(0, 20 * 365, k0), W0 + rng.integers(0, W1 - W0, k1)])
            sex = np.where(rng.random(len(st)) < pm, "M", "F")
            who = self.picker.by_age(rng, st, _ages(rng, len(st), lo, hi), sex)
            parts.append((who, st, np.full(len(st), kind, dtype=object)))
        vets = np.flatnonzero(p.veteran)
        parts.append((vets, np.full(len(vets), _day(dt.date(1985, 5, 9))), np.full(len(vets), "wwii_veteran", dtype=object)))
        person = np.concatenate([x[0] for x in parts])
        start = np.concatenate([x[1] for x in parts])
        kind = np.concatenate([x[2] for x in parts])
        n = len(person)
        judicial = kind == "judicial"
        m = dict(person=person, start=start, end=np.full(n, OPEN), pension_type=kind)
        return m, {"pensions_benefits": ~judicial, "payments": ~judicial & (rng.random(n) < 0.7), "judicial_is": judicial}

    def cat_disabled(self, rng):
        p = self.p
        # children with a disability
        adult_at = add_years(p.birth, 18)
        kids = np.flatnonzero(~p.foreign & (adult_at - 1 >= W0))
        kids = kids[rng.random(len(kids)) < 0.032]
        onset = np.minimum(p.birth[kids] + (rng.random(len(kids)) * 15 * _YEAR).astype(np.int64), adult_at[kids] - 30)
        ck_end = adult_at[kids] - 1
        nk = len(kids)
        go_on = rng.random(nk) < 0.6
        cont = kids[go_on]
        cont_group = _choice(rng, ["I", "II", "III"], [0.15, 0.45, 0.40], len(cont))
        # adults
        parts_p, parts_s, parts_g = [kids, cont], [onset, adult_at[cont]], [np.full(nk, "child", dtype=object), cont_group]
        for grp, stock in (("I", 75_000), ("II", 290_000), ("III", 230_000)):
            k0 = _count(stock, self.s, 4)
            k1 = int(round(k0 * (W1 - W0) / (12 * 365)))
            st = np.concatenate([W0 - rng.integers(0, 15 * 365, k0), W0 + rng.integers(0, W1 - W0, k1)])
            who = self.picker.by_age(rng, st, _ages(rng, len(st), 18, 85, 62))
            parts_p.append(who)
            parts_s.append(st)
            parts_g.append(np.full(len(st), grp, dtype=object))
        person = np.concatenate(parts_p)
        start = np.concatenate(parts_s).astype(np.int64)
        group = np.concatenate(parts_g)
        n = len(person)
        sched = np.full(n, OPEN, np.int64)
        sched[:nk] = ck_end
        end = sched.copy()
        every = np.where(rng.random(n) < 0.6, np.where(rng.random(n) < 0.5, 365, 730), 0).astype(np.int32)
        every[:nk] = 365
        # some adults are not re-certified at a review: an unscheduled end
        fail = (every > 0) & (group != "child") & (rng.random(n) < 0.25)
        k_rev = rng.integers(1, 4, n)
        end = np.where(fail, start + every * k_rev - 1, end)
        m = dict(person=person, start=start, end=end, sched=sched, disability_group=group, _review_every=every)
        return m, {}

    def _members(self, cat: str) -> dict[str, np.ndarray]:
        t = self.tables[cat]
        return {c: t.column(c).to_numpy(zero_copy_only=False) for c in t.column_names}

    def cat_carer_group1(self, rng):
        d = self._members("disabled")
        sel = np.flatnonzero((d["disability_group"] == "I") & (rng.random(len(d["_start"])) < 0.62))
        st = np.maximum(d["_start"][sel].astype(np.int64) + rng.integers(0, 90, len(sel)), W0 - 3650)
        st = np.minimum(st, d["_end"][sel])
        carer = self.picker.by_age(rng, st, _ages(rng, len(sel), 20, 70, 45), np.where(rng.random(len(sel)) < 0.75, "F", "M"))
        n = len(sel)
        m = dict(person=carer, start=st, end=d["_end"][sel], sched=d["_sched"][sel],
                 ref_cared_person_iin=d["person_id"][sel], cared_person_disability_group=np.full(n, "I", dtype=object))
        return m, {"pensions_benefits": True, "payments": rng.random(n) < 0.6}

    def cat_carer_disabled_child(self, rng):
        p, d = self.p, self._members("disabled")
        sel = np.flatnonzero((d["disability_group"] == "child") & (rng.random(len(d["_start"])) < 0.97))
        child = d["person_id"][sel]
        st = np.minimum(d["_start"][sel].astype(np.int64) + rng.integers(0, 60, len(sel)), d["_end"][sel])
        mother = p.mother[child]
        ok_m = (mother >= 0) & (p.death[np.maximum(mother, 0)] >= st)
        other = self.picker.by_age(rng, st, _ages(rng, len(sel), 25, 55), "F")
        carer = np.where(ok_m, mother, other)
        m = dict(person=carer, start=st, end=d["_end"][sel], sched=d["_sched"][sel], ref_child_iin=child)
        return m, {"pensions_benefits": True, "payments": rng.random(len(sel)) < 0.6}

    def _births(self):
        """Every birth from the window's children (and the next 280 days' synthetic ones):
        (child person or -1, birth day, mother, working mother?)."""
        if hasattr(self, "_births_cache"):
            return self._births_cache
        p, rng = self.p, self.rng("births")
        kids = np.flatnonzero(~p.foreign & (p.birth >= add_years(W0, -3)) & (p.mother >= 0))
        nf = int(round(BIRTHS_PER_YEAR * self.s * 280 / 365))
        fb = W1 + 1 + rng.integers(0, 280, nf)
        fm = self.picker.by_age(rng, np.full(nf, W1), _ages(rng, nf, 19, 44, 28), "F")
        child = np.concatenate([kids, np.full(nf, -1)])
        birth = np.concatenate([p.birth[kids], fb]).astype(np.int64)
        mother = np.concatenate([p.mother[kids], fm])
        ok = mother >= 0
        child, birth, mother = child[ok], birth[ok], mother[ok]
        working = rng.random(len(child)) < 0.35
        self._births_cache = (child, birth, mother, working)
        return self._births_cache

    def cat_pregnant(self, rng):
        child, birth, mother, working = self._births()
        sel = ~working & (birth > W0)
        b = birth[sel]
        n = len(b)
        start = b - 280 + rng.integers(42, 99, n)
        edd = b + np.clip(np.round(rng.normal(0, 7, n)), -21, 14).astype(np.int64)
        m = dict(person=mother[sel], start=start, end=b - 1, _edd=edd.astype(np.int32))
        return m, {"pregnancy_register": True, "payments": rng.random(n) < 0.6}

    def cat_parental_leave(self, rng):
        p = self.p
        child, birth, mother, working = self._births()
        sel = np.flatnonzero(working)
        c, b, mo = child[sel], birth[sel], mother[sel]
        n = len(sel)
        # maternity: 70 days before to 56 days after the birth
        parts = [dict(person=mo, start=b - 70, end=b + 55, sched=b + 55, ref_child_iin=c, leave_type=np.full(n, "maternity", dtype=object))]
        # childcare leave to 1, 1.5 or 3 years
        cc = np.flatnonzero((c >= 0) & (rng.random(n) < 0.8))
        u = rng.random(len(cc))
        bb = b[cc]
        cend = np.where(u < 0.4, add_years(bb, 1) - 1, np.where(u < 0.7, bb + 547, add_years(bb, 3) - 1))
        father = p.father[c[cc]]
        by_father = (father >= 0) & (rng.random(len(cc)) < 0.03)
        who = np.where(by_father, father, mo[cc])
        parts.append(dict(person=who, start=bb + 56, end=cend, sched=cend, ref_child_iin=c[cc], leave_type=np.full(len(cc), "childcare", dtype=object)))
        # adoption of a newborn: to 56 days after the birth
        st, _ = _spells(rng, _count(2_500, self.s, 5), 40, max_dur=60, min_dur=30)
        lag = rng.integers(3, 26, len(st))
        kid = self.picker.by_birth(rng, st - lag - 3, st - lag, st, None)
        adopter = self.picker.by_age(rng, st, _ages(rng, len(st), 25, 50), np.where(rng.random(len(st)) < 0.85, "F", "M"))
        ok = kid >= 0
        kb = np.where(ok, p.birth[np.maximum(kid, 0)], 0).astype(np.int64)
        parts.append(dict(person=np.where(ok, adopter, -1), start=st, end=kb + 55, sched=kb + 55, ref_child_iin=kid,
                          leave_type=np.full(len(st), "adoption", dtype=object)))
        m = {k: np.concatenate([x[k] for x in parts]) for k in parts[0]}
        lt = m["leave_type"]
        return m, {"pensions_benefits": True, "civil_registry": lt != "maternity", "orphans": lt == "adoption"}

    def cat_carer_child_under3(self, rng):
        p = self.p
        child, birth, mother, working = self._births()
        sel = np.flatnonzero(~working & (child >= 0) & (rng.random(len(child)) < 0.95))
        c, b, mo = child[sel], birth[sel], mother[sel]
        n = len(sel)
        rel = _choice(rng, ["mother", "father", "guardian", "adoptive_parent"], [0.93, 0.03, 0.025, 0.015], n)
        father = p.father[c]
        rel = np.where((rel == "father") & (father < 0), "mother", rel)
        start = b + rng.integers(0, 120, n)
        other = self.picker.by_age(rng, start, _ages(rng, n, 25, 60), np.where(rel == "guardian", "F", np.where(rng.random(n) < 0.8, "F", "M")))
        person = np.select([rel == "mother", rel == "father"], [mo, father], other)
        other_parent = np.select([rel == "mother", rel == "father"], [father, mo], -1)
        sched = add_years(b, 3) - 1
        early = rng.random(n) < 0.12
        end = np.where(early, start + (rng.random(n) * (sched - start)).astype(np.int64), sched)
        cdeath = p.death[c].astype(np.int64)
        end = np.minimum(end, cdeath)
        m = dict(person=person, start=start, end=end, sched=sched, ref_child_iin=c, relation=rel, ref_other_parent_iin=other_parent)
        return m, {"civil_registry": True, "pensions_benefits": rng.random(n) < 0.85, "payments": rng.random(n) < 0.6,
                   "orphans": np.isin(rel, ["guardian", "adoptive_parent"])}

    def cat_unemployed(self, rng):
        p = self.p
        st, en = _spells(rng, _count(250_000, self.s, 5), 160, max_dur=900)
        n = len(st)
        who = self.picker.by_age(rng, st, _ages(rng, n, 18, 57, 28))
        pens = add_years(p.birth[np.maximum(who, 0)], np.where(p.male[np.maximum(who, 0)], 63, 61)) - 1
        en = np.minimum(en, pens)
        measure = np.where(rng.random(n) < 0.15, _choice(rng, ["subsidised_job", "vocational_training"], [0.6, 0.4], n), "none")
        measure = np.where(st >= Y2026, "none", measure)
        en = np.where(measure != "none", np.minimum(en, Y2026 - 1), en)
        centre = np.char.add("EC", np.char.zfill(rng.integers(1, 21, n).astype(str), 2))
        centre = np.char.add(np.char.add(centre, "-"), np.char.zfill(rng.integers(1, 40, n).astype(str), 3))
        m = dict(person=who, start=st, end=en, registration_date=(st - rng.integers(0, 10, n)).astype(np.int32),
                 employment_centre_code=centre.astype(object), active_measure=measure.astype(object))
        return m, {}

    def cat_inmates(self, rng):
        st, en = _spells(rng, _count(30_000, self.s, 5), 1300, max_dur=15 * 365, min_dur=180, shape=1.5)
        n = len(st)
        who = self.picker.by_age(rng, st, _ages(rng, n, 18, 60, 28), np.where(rng.random(n) < 0.93, "M", "F"))
        sched = en.astype(np.int64)
        parole = rng.random(n) < 0.2
        en = np.where(parole, st + ((en - st) * (0.5 + 0.4 * rng.random(n))).astype(np.int64), en)
        level = _choice(rng, ["medium", "maximum", "mixed", "extraordinary"], [0.6, 0.25, 0.12, 0.03], n)
        code = np.char.add("PI-", np.char.zfill(rng.integers(1, 21, n).astype(str), 2))
        code = np.char.add(np.char.add(code, "/"), np.char.zfill(rng.integers(1, 9, n).astype(str), 2))
        m = dict(person=who, start=st, end=en, sched=sched, institution_code=code.astype(object), security_level=level)
        return m, {}

    def cat_detainees(self, rng):
        parts = []
        for measure, stock, mean in (("pretrial_detention", 9_000, 100), ("house_arrest", 3_000, 80)):
            st, en = _spells(rng, _count(stock, self.s, 4), mean, max_dur=540)
            n = len(st)
            who = self.picker.by_age(rng, st, _ages(rng, n, 18, 62, 30), np.where(rng.random(n) < 0.88, "M", "F"))
            parts.append(dict(person=who, start=st, end=en, measure=np.full(n, measure, dtype=object)))
        m = {k: np.concatenate([x[k] for x in parts]) for k in parts[0]}
        return m, {"legal_statistics": True, "payments": m["measure"] == "house_arrest"}

    def cat_kandases(self, rng):
        p = self.p
        st, en = _spells(rng, _count(25_000, self.s, 5), 540, max_dur=1460)
        n = len(st)
        kazakh = p.group == self.names.groups.index("kazakh")
        who = self.picker.by_age(rng, st, _ages(rng, n, 18, 60, 32), extra=kazakh)
        country = _choice(rng, ["UZ", "CN", "MN", "TM", "RU", "TJ", "KG", "IR", "AF", "TR"],
                          [0.45, 0.2, 0.12, 0.08, 0.06, 0.03, 0.03, 0.01, 0.01, 0.01], n)
        m = dict(person=who, start=st, end=en, kandas_status_date=(st - rng.integers(0, 90, n)).astype(np.int32), country_of_origin=country)
        return m, {"oralman": True, "payments": rng.random(n) < 0.5}

    def cat_mothers_many_children(self, rng):
        k0 = _count(300_000, self.s, 5)
        k1 = int(round(k0 * (W1 - W0) / (25 * 365)))
        age0 = _ages(rng, k0, 36, 90, 55)
        who0 = self.picker.by_age(rng, np.full(k0, W0), age0, "F")
        b0 = self.p.birth[np.maximum(who0, 0)].astype(np.int64)
        lo = np.maximum(add_years(b0, 32), W0 - 30 * 365)
        st0 = lo + (rng.random(k0) * (W0 - lo)).astype(np.int64)
        st1 = W0 + rng.integers(0, W1 - W0, k1)
        who1 = self.picker.by_age(rng, st1, _ages(rng, k1, 32, 50), "F")
        person = np.concatenate([who0, who1])
        start = np.concatenate([st0, st1])
        n = len(person)
        soviet = start < _day(dt.date(1993, 1, 1))
        award = np.where(
            soviet,
            _choice(rng, ["mother_heroine", "ana_dangqy_1", "ana_dangqy_2"], [0.3, 0.35, 0.35], n),
            _choice(rng, ["altyn_alqa", "kumis_alqa"], [0.45, 0.55], n),
        )
        count = np.select(
            [award == "mother_heroine", award == "altyn_alqa", award == "kumis_alqa", award == "ana_dangqy_1"],
            [rng.integers(10, 15, n), rng.integers(7, 12, n), np.full(n, 6), rng.integers(6, 8, n)],
            5,
        ).astype(np.int32)
        return dict(person=person, start=start, end=np.full(n, OPEN), award=award, children_count=count), {}

    def cat_students(self, rng):
        levels = [  # level, stock, start ages (weights), durations (weights), end month/day
            ("higher", 560_000, {17: 0.45, 18: 0.35, 19: 0.1, 20: 0.05, 21: 0.05}, {4: 0.85, 5: 0.15}, (6, 30)),
            ("tvet", 480_000, {15: 0.45, 16: 0.25, 17: 0.15, 18: 0.1, 19: 0.05}, {2: 0.3, 3: 0.4, 4: 0.3}, (6, 30)),
            ("post_secondary", 20_000, {18: 0.4, 19: 0.3, 20: 0.2, 21: 0.1}, {1: 0.5, 2: 0.5}, (6, 30)),
            ("postgraduate", 40_000, {22: 0.3, 23: 0.25, 24: 0.2, 25: 0.1, 26: 0.1, 28: 0.05}, {2: 0.75, 3: 0.25}, (7, 15)),
            ("secondary", 25_000, {18: 0.8, 19: 0.2}, {1: 1.0}, (5, 31)),
        ]
        pools = {"higher": 130, "tvet": 800, "post_secondary": 90, "postgraduate": 130, "secondary": 400, "abroad": 250}
        bins = {k: _bins(rng, v) for k, v in pools.items()}
        parts = []
        for level, stock, ages, durs, (em, ed) in levels:
            mean_dur = sum(k * v for k, v in durs.items())
            per_year = 1.9 * _count(stock, self.s, 3) / mean_dur  # 1.9: some picks overlap and are dropped
            years = np.arange(_ymd(np.array([W0]))[0][0] - 6, 2028)
            cnt = np.maximum(np.round(np.full(len(years), per_year) * (0.9 + 0.2 * rng.random(len(years)))), 2).astype(np.int64)
            y = np.repeat(years, cnt)
            n = len(y)
            dur = _choice(rng, [str(k) for k in durs], list(durs.values()), n).astype(np.int64)
            age = _choice(rng, [str(k) for k in ages], list(ages.values()), n).astype(np.int64)
            start = _date_of(y, 9, 1).astype(np.int64)
            end = _date_of(y + dur, em, ed).astype(np.int64)
            who = self.picker.by_age(rng, start, age)
            sched = end.copy()
            drop = rng.random(n) < 0.08
            end = np.where(drop, start + (rng.random(n) * (end - start)).astype(np.int64), end)
            abroad = np.isin(level, ["higher", "postgraduate"]) & (rng.random(n) < 0.06)
            country = np.where(abroad, _choice(rng, ["RU", "CN", "KR", "US", "GB", "DE", "CZ", "TR", "MY", "PL"],
                                                [0.45, 0.12, 0.06, 0.06, 0.05, 0.05, 0.06, 0.06, 0.04, 0.05], n), "KZ")
            org = np.where(abroad, bins["abroad"][rng.integers(0, pools["abroad"], n)], bins[level][rng.integers(0, pools[level], n)])
            parts.append(dict(person=who, start=start, end=end, sched=sched, education_level=np.full(n, level, dtype=object),
                              study_form=np.full(n, "full_time", dtype=object), org_bin=org.astype(object), country=country.astype(object)))
        m = {k: np.concatenate([x[k] for x in parts]) for k in parts[0]}
        abroad = m["country"] != "KZ"
        n = len(abroad)
        return m, {"nedb": ~abroad, "egov_portal": ~abroad & (rng.random(n) < 0.3), "students_abroad": abroad}

    def cat_tsa_recipients(self, rng):
        p = self.p
        hs, he = _spells(rng, _count(115_000, self.s, 4), 220, max_dur=366, min_dur=90, shape=4)
        nh = len(hs)
        # the household: a mother with a child under 18, the children's father, her children
        kid = self.picker.by_birth(rng, hs - int(17 * _YEAR), hs - 30, hs, extra=p.mother >= 0)
        ok = kid >= 0
        hs, he, kid = hs[ok], he[ok], kid[ok]
        nh = len(hs)
        mom = p.mother[kid]
        dad = np.where(rng.random(nh) < 0.6, p.father[kid], -1)
        # every child of the mother
        kids_all = np.flatnonzero(p.mother >= 0)
        by_mom = kids_all[np.argsort(p.mother[kids_all], kind="stable")]
        moms_sorted = p.mother[by_mom]
        lo = np.searchsorted(moms_sorted, mom, "left")
        hi = np.searchsorted(moms_sorted, mom, "right")
        cnt = hi - lo
        hh = np.repeat(np.arange(nh), cnt)
        within = np.arange(cnt.sum()) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        ch = by_mom[np.repeat(lo, cnt) + within]
        ch_ok = add_years(p.birth[ch], 18) > hs[hh]
        hh, ch = hh[ch_ok], ch[ch_ok]
        hh_all = np.concatenate([np.arange(nh), np.arange(nh), hh])
        person = np.concatenate([mom, dad, ch])
        start = np.maximum(hs[hh_all], p.birth[np.maximum(person, 0)])
        end = he[hh_all]
        hid_num = 100_000_000 + np.arange(nh) * 7 + rng.integers(0, 7, nh)
        hid = np.char.add("HH", hid_num.astype(str))
        atype = np.where(rng.random(nh) < 0.55, "conditional", "unconditional")
        m = dict(person=person, start=start, end=end, sched=end, household_id=hid[hh_all].astype(object), assistance_type=atype[hh_all].astype(object))
        return m, {"tsa_db": True, "payments": rng.random(len(person)) < 0.6}

    def cat_crisis_nonworking(self, rng):
        st, en = _spells(rng, _count(100_000, self.s, 5), 270, max_dur=1000, start_floor=Y2026)
        n = len(st)
        who = self.picker.by_age(rng, st, _ages(rng, n, 18, 60, 35))
        level = np.where(rng.random(n) < 0.7, "crisis", "emergency")
        hid = np.char.add("SW", (300_000_000 + np.arange(n) * 3 + rng.integers(0, 3, n)).astype(str))
        months0 = (3 + rng.geometric(0.3, n) - 1).astype(np.int32)
        return dict(person=who, start=st, end=en, wellbeing_level=level.astype(object), household_id=hid.astype(object), _months0=months0), {}

    def cat_eaeu_migrants(self, rng):
        mig = self.mig
        person = mig["person"]
        worker = np.where(mig["worker"] >= 0, person[np.maximum(mig["worker"], 0)], -1)
        rel = mig["relation"]
        m = dict(person=person, start=mig["start"], end=mig["end"], citizenship=mig["citizenship"], relation=rel, ref_worker_iin=worker)
        return m, {"migration_police": True, "foreign_labour": rel == "worker"}

    ORDER = ("children", "disabled", "carer_group1", "carer_disabled_child", "pensioners", "pregnant", "parental_leave",
             "carer_child_under3", "unemployed", "inmates", "detainees", "kandases", "mothers_many_children", "students",
             "tsa_recipients", "eaeu_migrants", "crisis_nonworking")

    def build(self) -> tuple[pa.Table, dict[str, pa.Table]]:
        self.build_persons()
        self.link_families()
        self.assign_names()
        self.assign_iins()
        persons = self.persons_table()
        self.step("persons table")
        self.tables: dict[str, pa.Table] = {}
        missing = [c for c in self.categories if c not in self.ORDER]
        if missing:
            raise NotImplementedError(f"the population has no builder for categories {missing}")
        for cat in self.ORDER:
            if cat not in self.categories:
                continue
            rng = self.rng(f"cat:{cat}")
            m, sys_masks = getattr(self, f"cat_{cat}")(rng)
            self.tables[cat] = self.finalize(cat, m, sys_masks, rng)
        self.bar.close()
        return persons, self.tables


def _bins(rng: np.random.Generator, k: int) -> np.ndarray:
    yy = rng.integers(0, 25, k) + 95
    yy = yy % 100
    mm = rng.integers(1, 13, k)
    rest = rng.integers(0, 10**6, k)
    return np.array([f"{a:02d}{b:02d}4{c:07d}" for a, b, c in zip(yy, mm, rest)])


def _fixed_strings(mat: np.ndarray) -> pa.Array:
    """A string array from an (n, w) uint8 matrix of ASCII bytes, without a Python loop."""
    n, w = mat.shape
    offsets = np.arange(0, (n + 1) * w, w, dtype=np.int64 if n * w >= 2**31 else np.int32)
    data = np.ascontiguousarray(mat).reshape(-1)
    typ = pa.large_string() if offsets.dtype == np.int64 else pa.string()
    arr = pa.Array.from_buffers(typ, n, [None, pa.py_buffer(offsets), pa.py_buffer(data)])
    return arr if typ == pa.string() else arr.cast(pa.string())


def _digits(values: np.ndarray, width: int) -> np.ndarray:
    """(n, width) ASCII digit bytes of non-negative integers, zero padded."""
    v = values.astype(np.int64)
    out = np.empty((len(v), width), np.uint8)
    for i in range(width - 1, -1, -1):
        out[:, i] = 48 + v % 10
        v //= 10
    return out


# --------------------------------------------------------------------------
# The population: cache and serving
# --------------------------------------------------------------------------

_PERSON_COLS = ("iin", "last_name", "first_name", "patronymic", "birth_date", "sex")


class Population:
    """A built (or loaded) population: persons and what each source system holds."""

    def __init__(self, spec: PopulationSpec, persons: pa.Table, memberships: dict[str, pa.Table]):
        self.spec = spec
        self.persons = persons.combine_chunks()
        self.memberships = {k: v.combine_chunks() for k, v in memberships.items()}
        registry = default_registry()
        self._cats = {c.code: c for c in registry.all_categories()}
        feeds: list[tuple[str, str]] = []
        systems: dict[str, list[str]] = {}
        for edition in registry.editions:
            for f in edition.feeds:
                if (f.system, f.category) not in feeds:
                    feeds.append((f.system, f.category))
                lst = systems.setdefault(f.category, [])
                if f.system not in lst:
                    lst.append(f.system)
        self._feeds = tuple(feeds)
        self._bits = {(s, c): 1 << systems[c].index(s) for s, c in feeds}
        self._np: dict[str, dict[str, np.ndarray]] = {}
        self._birth = self.persons.column("birth_date").cast(pa.int32()).to_numpy()

    def feeds(self) -> tuple[tuple[str, str], ...]:
        """Every (system, category) served: the union of all editions' feeds in the registry."""
        return self._feeds

    def _arrays(self, category: str) -> dict[str, np.ndarray]:
        if category not in self._np:
            t = self.memberships[category]
            self._np[category] = {
                c: t.column(c).to_numpy() for c in t.column_names if pa.types.is_integer(t.column(c).type)
            }
        return self._np[category]

    def _select(self, system: str, category: str, as_of: dt.date) -> tuple[np.ndarray, int]:
        if (system, category) not in self._bits:
            raise KeyError(f"system {system!r} does not serve category {category!r}: not a feed of the registry")
        a = self._arrays(category)
        d = _day(as_of)
        sel = (a["_start"] <= d) & (a["_end"] >= d) & ((a["_sys"] & np.uint32(self._bits[(system, category)])) != 0)
        extra = a.get(f"_from_{system}")
        if extra is not None:
            sel &= extra <= d
        return np.flatnonzero(sel), d

    def record_count(self, system: str, category: str, as_of: dt.date) -> int:
        """How many records ``records()`` would give."""
        return len(self._select(system, category, as_of)[0])

    def records(self, system: str, category: str, as_of: dt.date) -> pa.Table:
        """The clean records the source ``system`` holds for ``category`` on ``as_of``."""
        idx, d = self._select(system, category, as_of)
        cat = self._cats[category]
        a = self._arrays(category)
        t = self.memberships[category]
        take = pa.array(idx)
        pid = a["person_id"][idx]
        ppl = self.persons.take(pa.array(pid)) if len(pid) else self.persons.slice(0, 0)
        start = a["_start"][idx]
        end = a["_end"][idx]
        sched = a["_sched"][idx]
        out: dict[str, pa.Array] = {}
        for col in cat.record_columns:
            name, typ = col.name, col.arrow_type
            if name == "record_id":
                arr = self._record_ids(system, category, idx)
            elif name in _PERSON_COLS:
                arr = ppl.column(name)
            elif name == "period_start":
                arr = _dates(start)
            elif name == "period_end":
                vis = np.where(end <= d, end, sched)
                arr = _dates(vis, vis == OPEN)
            elif name == "updated_at":
                upd = np.where((end <= d) & (end != sched), end, start).astype(np.int64) * 86400
                arr = pa.array(upd, pa.timestamp("s", tz="UTC"))
            elif f"ref_{name}" in a:
                ref = a[f"ref_{name}"][idx]
                shown = (ref >= 0) & (self._birth[np.maximum(ref, 0)] <= d)
                arr = self.persons.column("iin").take(pa.array(ref, mask=~shown))
            elif name == "child_birth_date" and "ref_child_iin" in a:
                ref = a["ref_child_iin"][idx]
                shown = (ref >= 0) & (self._birth[np.maximum(ref, 0)] <= d)
                arr = _dates(np.where(shown, self._birth[np.maximum(ref, 0)], 0), ~shown)
            elif name == "pregnancy_weeks":
                arr = pa.array(((d - (a["_edd"][idx].astype(np.int64) - 280)) // 7).astype(np.int32))
            elif name == "expected_delivery_date":
                arr = _dates(a["_edd"][idx])
            elif name == "months_without_contributions":
                arr = pa.array((a["_months0"][idx] + (d - start.astype(np.int64)) // 30).astype(np.int32))
            elif name == "review_date":
                every = a["_review_every"][idx].astype(np.int64)
                k = np.where(every > 0, (d - start.astype(np.int64)) // np.maximum(every, 1) + 1, 0)
                arr = _dates(start + k * every, every == 0)
            elif name in t.column_names:
                arr = t.column(name).take(take)
            else:
                raise KeyError(f"the population does not serve column {name!r} of category {category!r}")
            if isinstance(arr, pa.ChunkedArray):
                arr = arr.combine_chunks()
            if arr.type != typ:
                arr = arr.cast(typ)
            out[name] = arr
        schema = pa.schema([pa.field(c.name, c.arrow_type) for c in cat.record_columns])
        return pa.Table.from_arrays(list(out.values()), schema=schema)

    def _record_ids(self, system: str, category: str, idx: np.ndarray) -> pa.Array:
        # "<SYSTEM>-<row>-<number>": the number is a per-feed increasing function of the
        # membership's position, so ids are stable, sorted and differ between systems
        row = self._cats[category].row
        r = _rng(self.spec.seed, f"rid:{system}:{category}")
        base = int(r.integers(10**6, 10**7))
        step = int(r.integers(1, 4))
        prefix = f"{system.upper().replace('_', '')[:10]}-{row:02d}-".encode()
        num = _digits(base + idx.astype(np.int64) * step, 10)
        mat = np.empty((len(idx), len(prefix) + 10), np.uint8)
        mat[:, : len(prefix)] = np.frombuffer(prefix, np.uint8)
        mat[:, len(prefix) :] = num
        return _fixed_strings(mat)


def _dates(days: np.ndarray, null: np.ndarray | None = None) -> pa.Array:
    days = np.asarray(days)
    if null is not None and null.any():
        return pa.array(np.where(null, 0, days).astype(np.int32), pa.int32(), mask=null).cast(pa.date32())
    return pa.array(days.astype(np.int32), pa.int32()).cast(pa.date32())


def _write(table: pa.Table, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, path)


def _marker(spec: PopulationSpec) -> dict[str, Any]:
    return {"format": FORMAT_VERSION, "seed": spec.seed, "scale": spec.scale}


def _complete(d: Path, spec: PopulationSpec) -> bool:
    try:
        return json.loads((d / "COMPLETE").read_text()) .get("marker") == _marker(spec)
    except (OSError, ValueError):
        return False


def _load(d: Path, spec: PopulationSpec) -> Population:
    meta = json.loads((d / "COMPLETE").read_text())
    persons = pq.read_table(d / "persons.parquet")
    members = {c: pq.read_table(d / f"members-{c}.parquet") for c in meta["categories"]}
    return Population(spec, persons, members)


def load_population(spec: PopulationSpec, cache_dir: Path, *, progress: bool = False) -> Population:
    """Build the population once and cache it under ``cache_dir/<spec.key>/``; later
    calls (also from another process) load the cache. ``progress`` shows a bar on stderr."""
    d = Path(cache_dir) / spec.key
    if _complete(d, spec):
        return _load(d, spec)
    d.mkdir(parents=True, exist_ok=True)
    with open(Path(cache_dir) / f".{spec.key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder at a time; the others then load
        if _complete(d, spec):
            return _load(d, spec)
        persons, members = _Builder(spec, progress=progress).build()
        _write(persons, d / "persons.parquet")
        for cat, table in members.items():
            _write(table, d / f"members-{cat}.parquet")
        done = {"marker": _marker(spec), "categories": list(members), "persons": persons.num_rows,
                "memberships": {c: t.num_rows for c, t in members.items()}}
        tmp = d / f".COMPLETE.tmp{os.getpid()}"
        tmp.write_text(json.dumps(done, indent=1, sort_keys=True))
        os.replace(tmp, d / "COMPLETE")
    return Population(spec, persons, members)
