"""The category suites: loading them from ``expectations/<category>.json``, filling
their date-dependent parameters for a logical date, and keeping the part derived
from the registry (required columns, enum domains, patterns) in step with it.

A suite is GX's ExpectationSuite JSON. Every expectation carries ``meta.rule``,
the rule name reported for a quarantined row and in the counts, and
``meta.origin``, which says where the rule stands:

- ``registry``: written into each category's file by :func:`render_registry_rules`
  from ``include/seeds/categories.yaml`` (``python -m osms.quality.suites``);
- ``common``: the rules of every category, written once by hand in
  ``expectations/common.json`` and merged into each category suite that lists
  ``"common"`` in its ``meta.includes`` when it is loaded;
- ``decree``: the category's own rules (the decree's row), written by hand in its file.

A loaded category suite is its registry rules, then the included common rules,
then its own: the same list, in the same order, as when every file held a copy.
Suites are data for QA staff; the code only knows these conventions.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

from osms.core import settings
from osms.core.registry import EditionCategory, default_registry

__all__ = [
    "expectations_dir",
    "load_suite_dict",
    "read_suite_file",
    "render_registry_rules",
    "resolve_parameters",
    "suite_parameters",
    "years_before",
]

_AGE_PARAM = re.compile(r"^(earliest_birth_under|latest_birth_for_age)_(\d+)$")


def expectations_dir() -> Path:
    """``expectations/`` of this checkout, or ``$OSMS_EXPECTATIONS_DIR`` when set."""
    from osms.core.run import CHECKOUT_EXPECTATIONS

    return settings.current().expectations_dir or CHECKOUT_EXPECTATIONS


def read_suite_file(name: str, directory: Path | None = None) -> dict[str, Any]:
    """``expectations/<name>.json`` as it stands on disk, without the suites it includes."""
    path = (directory or expectations_dir()) / f"{name}.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"no expectation suite {name!r}: {path} is missing") from None


def load_suite_dict(category: str, directory: Path | None = None) -> dict[str, Any]:
    """The suite of a category as its JSON dict, with the suites of its ``meta.includes`` merged in.

    Included rules follow the suite's registry rules and precede its own; a rule
    name that the suite and an included suite both define is refused.
    """
    suite = read_suite_file(category, directory)
    includes = suite.get("meta", {}).get("includes", [])
    if not includes:
        return suite
    own = suite["expectations"]
    head = [e for e in own if e.get("meta", {}).get("origin") == "registry"]
    tail = [e for e in own if e.get("meta", {}).get("origin") != "registry"]
    included = [e for name in includes for e in read_suite_file(name, directory)["expectations"]]
    rules = [e.get("meta", {}).get("rule") for e in own + included]
    clashes = sorted({r for r in rules if r is not None and rules.count(r) > 1})
    if clashes:
        raise ValueError(f"suite {suite.get('name')!r} defines rule(s) {clashes} more than once with {includes}")
    return {**suite, "expectations": head + included + tail}


def years_before(day: dt.date, years: int) -> dt.date:
    """The same day ``years`` earlier (28 February for a 29 February)."""
    try:
        return day.replace(year=day.year - years)
    except ValueError:
        return day.replace(year=day.year - years, day=28)


def _referenced_parameters(node: Any) -> set[str]:
    if isinstance(node, dict):
        if set(node) == {"$PARAMETER"}:
            return {node["$PARAMETER"]}
        return set().union(*(_referenced_parameters(v) for v in node.values())) if node else set()
    if isinstance(node, list):
        return set().union(*(_referenced_parameters(v) for v in node)) if node else set()
    return set()


def suite_parameters(suite: dict[str, Any], as_of: dt.date, edition: str) -> dict[str, Any]:
    """Values of every ``$PARAMETER`` the suite uses, for logical date ``as_of``.

    Dates are ISO date-times at midnight: GX's pydantic models would read a bare
    ``YYYY-MM-DD`` as a ``date``, which pandas refuses to compare with the
    datetime64 columns GX's vectorised comparisons need.
    ``as_of`` and ``max_birth_date`` are D; ``earliest_birth_under_N`` is D minus N
    years plus a day (born on or after it: under N on D); ``latest_birth_for_age_N``
    is D minus N years (born on or before it: at least N on D). Values that depend
    on the decree's edition come from the suite's ``meta.parameters_by_edition``.
    """
    by_edition = suite.get("meta", {}).get("parameters_by_edition", {})
    values: dict[str, Any] = dict(by_edition.get(edition, {}))
    for name in sorted(_referenced_parameters(suite.get("expectations", []))):
        if name in values:
            continue
        if name in ("as_of", "max_birth_date"):
            values[name] = _midnight(as_of)
            continue
        m = _AGE_PARAM.match(name)
        if m is None:
            raise KeyError(
                f"suite {suite.get('name')!r} uses parameter {name!r}, which is neither a date parameter"
                f" nor given for edition {edition} in meta.parameters_by_edition"
            )
        day = years_before(as_of, int(m.group(2)))
        if m.group(1) == "earliest_birth_under":
            day += dt.timedelta(days=1)
        values[name] = _midnight(day)
    return values


def resolve_parameters(node: Any, parameters: dict[str, Any]) -> Any:
    """``node`` (an expectation's kwargs) with every ``{"$PARAMETER": name}`` replaced by its value."""
    if isinstance(node, dict):
        if set(node) == {"$PARAMETER"}:
            return parameters[node["$PARAMETER"]]
        return {k: resolve_parameters(v, parameters) for k, v in node.items()}
    if isinstance(node, list):
        return [resolve_parameters(v, parameters) for v in node]
    return node


def _midnight(day: dt.date) -> str:
    return f"{day.isoformat()}T00:00:00"


# Thresholds (``mostly``) for the rules derived from the registry: a feed where
# more than 1 % of rows miss a required field or leave a domain is broken as a
# whole, not a few bad rows.
_REGISTRY_MOSTLY = 0.99


def render_registry_rules(category: EditionCategory) -> list[dict[str, Any]]:
    """The suite expectations that follow from the registry's record contract."""
    out: list[dict[str, Any]] = []

    def add(type_: str, rule: str, **kwargs: Any) -> None:
        out.append(
            {"type": type_, "kwargs": {**kwargs, "mostly": _REGISTRY_MOSTLY},
             "meta": {"rule": rule, "origin": "registry"}, "severity": "critical"}
        )

    for col in category.record_columns:
        if col.required:
            add("expect_column_values_to_not_be_null", f"required:{col.name}", column=col.name)
    for col in category.record_columns:
        if col.values is not None:
            add("expect_column_values_to_be_in_set", f"enum:{col.name}", column=col.name, value_set=list(col.values))
        if col.pattern is not None:
            add("expect_column_values_to_match_regex", f"pattern:{col.name}", column=col.name, regex=col.pattern)
    return out


def refresh_suite(suite: dict[str, Any], category: EditionCategory) -> dict[str, Any]:
    """The suite with its registry-derived rules replaced by the registry's current ones."""
    kept = [e for e in suite["expectations"] if e.get("meta", {}).get("origin") != "registry"]
    registry_rules = render_registry_rules(category)
    # registry rules first: a reader sees the contract, then the category's own rules
    return {**suite, "expectations": registry_rules + kept}


def main(argv: list[str] | None = None) -> int:
    """``python -m osms.quality.suites``: rewrite the registry-derived rules of every suite.

    Only a category's own file changes; ``expectations/common.json`` is written by hand.
    ``python -m osms.quality.suites show <category>`` prints the suite as it is run,
    its included rules merged in.
    """
    import sys

    args = sys.argv[1:] if argv is None else argv
    directory = expectations_dir()
    if args[:1] == ["show"] and len(args) == 2:
        print(json.dumps(load_suite_dict(args[1], directory), indent=2, ensure_ascii=False))
        return 0
    if args:
        print("usage: python -m osms.quality.suites [show <category>]", file=sys.stderr)
        return 2
    for category in default_registry().all_categories():
        path = directory / f"{category.code}.json"
        suite = read_suite_file(category.code, directory)
        path.write_text(json.dumps(refresh_suite(suite, category), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"refreshed {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
