"""Paths (osms.core.layout): every place of the data dir under its root, days apart, temporaries found exactly."""

from __future__ import annotations

import datetime as dt
import inspect
from pathlib import Path
from typing import Any

import pytest

from osms.core import layout
from osms.core.files import remove_temporaries
from osms.core.layout import Paths

pytestmark = pytest.mark.unit

D1, D2 = dt.date(2026, 3, 2), dt.date(2026, 3, 3)
_ARGS: dict[str, Any] = {"body": "mvd", "system": "sys1", "category": "c01", "dag_id": "agency_mvd",
                         "task_id": "validate", "name": "agency_mvd.run_failed.r1.json", "kind": "validate",
                         "pid": 4242}


def _places(paths: Paths, day: dt.date) -> dict[str, Path]:
    """Every method of Paths that names one place, called with ``day`` (and fixed other arguments)."""
    out = {}
    for name, fn in inspect.getmembers(paths, inspect.ismethod):
        if name.startswith("_"):
            continue
        params = inspect.signature(fn).parameters
        if inspect.signature(fn).return_annotation not in ("Path", Path):
            continue
        kwargs = {p: (day if p == "day" else _ARGS[p]) for p in params if p not in ("parts",)}
        out[name] = fn(**kwargs)
    return out


def test_every_place_is_under_the_root(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    places = _places(paths, D1)
    # the test reaches every method that names a place (a new one is checked without editing this list)
    assert {"landing", "validated", "quarantine", "status", "package_dir", "decisions", "scratch", "alert",
            "package_work", "package_aside", "gx_report", "data_docs_lock", "feedback"} <= set(places)
    for name, place in places.items():
        assert place.is_relative_to(tmp_path) and place != tmp_path, name
        assert ".." not in place.relative_to(tmp_path).parts, name


def test_distinct_days_never_collide(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    one, other = _places(paths, D1), _places(paths, D2)
    dated = {n for n in one if one[n] != other[n]}
    for name in dated:
        assert one[name] != other[name]
    # every place of a day differs from every place of another day, across methods too
    assert not set(one[n] for n in dated) & set(other[n] for n in dated)
    # and the places of one day are distinct from each other
    assert len(set(one.values())) == len(one)
    undated = set(one) - dated
    assert undated == {n for n in one if "day" not in inspect.signature(getattr(paths, n)).parameters}


def test_the_functions_of_a_root_are_paths_methods(tmp_path: Path) -> None:
    assert layout.landing(tmp_path, D1, "mvd", "sys1", "c01") == Paths(tmp_path).landing(D1, "mvd", "sys1", "c01")
    assert layout.package_lock(tmp_path, D1) == Paths(tmp_path).package_lock(D1)
    assert layout.paths() == Paths(layout.data_dir())


def test_the_scratch_glob_matches_exactly_what_scratch_creates(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    mine = [paths.scratch("validate", D1, "mvd", "c01", pid=pid) for pid in (7, 1234)]
    others = [paths.scratch("validate", D2, "mvd", "c01", pid=7),        # another day
              paths.scratch("validate", D1, "mvd", "c01x", pid=7),       # a category whose code starts as ours
              paths.scratch("validate", D1, "mvd", "c01-2", pid=7),      # ... and one with a dash after it
              paths.scratch("validate", D1, "mvdx", "c01", pid=7),       # a body whose code starts as ours
              paths.scratch("package", D1, pid=7)]
    for d in (*mine, *others):
        d.mkdir(parents=True)
    (tmp_path / "tmp" / f"validate-{D1.isoformat()}-mvd-c01-notapid").mkdir()
    assert paths.scratches("validate", D1, "mvd", "c01") == sorted(mine)
    assert paths.scratches("package", D1) == [paths.scratch("package", D1, pid=7)]
    assert paths.scratches("package", D2) == []
    assert Paths(tmp_path / "none").scratches("validate", D1, "mvd", "c01") == []


def test_the_package_leftovers_are_what_a_build_makes(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    made = [paths.package_work(D1, 11), paths.package_aside(D1, 12)]
    kept = [paths.package_dir(D1), paths.package_dir(D2), paths.package_work(D2, 11)]
    for d in (*made, *kept):
        d.mkdir(parents=True)
    assert paths.package_leftovers(D1) == sorted(made)
    assert all(p.parent == paths.packages_root() and p.name.startswith(".") for p in made)
    # and the dated listing of packages never takes a build's folder for a package
    assert sorted(layout.dated_dirs(paths.packages_root())) == [(D1, paths.package_dir(D1)),
                                                                 (D2, paths.package_dir(D2))]


def test_a_temporary_beside_a_file_is_what_remove_temporaries_clears(tmp_path: Path) -> None:
    target = tmp_path / "landing" / "x.parquet"
    target.parent.mkdir()
    spill = layout.beside(target, "123.sort.tmp")
    spill.mkdir()
    other = layout.beside(tmp_path / "landing" / "y.parquet", "1.tmp")
    other.write_bytes(b"")
    assert spill.parent == target.parent and spill.name.startswith(".x.parquet.")
    assert remove_temporaries(target) == [spill]
    assert not spill.exists() and other.exists()


def test_the_listings_find_what_the_places_name(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    report = paths.gx_report(D1, "mvd", "c01")
    quarantined = [paths.quarantine(D1, "mvd", c) for c in ("c02", "c01")]
    metrics = paths.task_metrics(D1, "agency_mvd", "validate")
    decisions = paths.decisions(D1, "mvd")
    for p in (report, *quarantined, metrics, decisions, paths.gx_report(D2, "mvd", "c01")):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"{}")
    assert paths.gx_reports(D1) == [report]
    assert paths.quarantine_files(D1, "mvd") == sorted(quarantined)
    assert paths.tasks_metrics(D1) == paths.tasks_metrics(D1.isoformat()) == [metrics]
    assert paths.all_decisions() == [decisions]
    assert Paths(tmp_path / "none").all_decisions() == [] and Paths(tmp_path / "none").gx_reports(D1) == []


def test_a_notice_its_marks_and_its_pending_link(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    notice = paths.alert(D1, _ARGS["name"])
    assert paths.alert(D1.isoformat(), _ARGS["name"]) == notice
    entry = Paths.alert_pending_entry(notice)
    assert entry.parent == paths.alerts_pending()
    entry.parent.mkdir(parents=True)
    entry.write_bytes(b"")
    assert paths.pending_alerts() == [(entry, notice)]  # the link leads back to its notice
    marks = {Paths.alert_mark(notice, s) for s in (*layout.ALERT_MARKS, ".tries")}
    assert len(marks) == 4 and all(m.parent == notice.parent and m.stem == notice.stem for m in marks)
