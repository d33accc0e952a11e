"""docs/decree-660.md from the registry: the decree's table as the pipeline serves it, per edition.

The registry (``include/seeds/``) is the decree as data and decides everything per date; this
page renders it for people, so it can never say something the code does not do.
``tests/unit/test_docs.py`` keeps the committed page equal to what this writes;
``make docs`` writes it again after a change of the seeds.
"""

from __future__ import annotations

import sys
from pathlib import Path

from osms.core.registry import Category, Edition, Registry, default_registry

PAGE = Path(__file__).resolve().parents[2] / "docs" / "decree-660.md"

HEADER = """\
# Decree No. 660: the list the pipeline serves

Kazakhstan's Government Decree No. 660 of 22.09.2021 names, for every category of persons whose
compulsory social health insurance (OSMS) contributions the state pays, the state body that
supplies data about them and the information systems the data comes from. The data goes to the
State Corporation "Government for Citizens", which passes it to the OSMS information system.
This project moves that data every day: one Airflow DAG per body, one feed per (body,
information system, category), one package a day.

This page is generated from the registry (`include/seeds/`, `plugins/osms/core/registry.py`) by
`make docs`, and a unit test keeps it equal to the registry: it is what the pipeline does, not a
second copy of the decree to keep in step. The official text is the Kazakh one
([`decree-660.kk.txt`](decree-660.kk.txt), the edition of Decree No. 748 of 26.09.2022); where a
name here and the Kazakh text differ, the Kazakh text wins. An edition marked *provisional* is
known from secondary sources only (news summaries of Decree No. 807 of 29.09.2025 and of Law
No. 206-VIII of 14.07.2025) and is served as such: its packages say so in `manifest.json`.
"""


def _name(category: Category) -> str:
    return f"{category.name_en} ({category.name_kk})" if category.name_kk else category.name_en


def edition_section(edition: Edition) -> str:
    """One edition: its decree, period of force and table (row, category, funding, body, systems)."""
    until = edition.effective_to.isoformat() if edition.effective_to else "today"
    lines = [
        f"## Edition {edition.code}{' (provisional)' if edition.provisional else ''}",
        "",
        f"{edition.decree.title.strip()}. In force {edition.effective_from.isoformat()} to {until}"
        + (f"; based on edition {edition.based_on}" if edition.based_on else "") + ".",
        "",
        f"{len(edition.categories)} categories, {len({f.body for f in edition.feeds})} bodies, "
        f"{len({f.system for f in edition.feeds})} information systems, {len(edition.feeds)} feeds.",
        "",
        "| row | category | funding | body | information systems (feeds) |",
        "|---|---|---|---|---|",
    ]
    for category in sorted(edition.categories, key=lambda c: c.row):
        feeds = edition.feeds_for(category.code)
        bodies = dict.fromkeys(f.body for f in feeds)  # in the decree's order
        for i, body in enumerate(bodies):
            systems = ", ".join(f"{edition.system(f.system).name_en} (`{f.system}`)" for f in feeds if f.body == body)
            head = (f"{category.row}", f"{_name(category.category)} (`{category.code}`)"
                    + (" *provisional*" if category.provisional else ""),
                    category.funding.replace("_", " ")) if i == 0 else ("", "", "")
            lines.append(f"| {' | '.join(head)} | {edition.body(body).name_en} (`{body}`) | {systems} |")
    return "\n".join(lines) + "\n"


def bodies_section(registry: Registry) -> str:
    """The bodies, one DAG each, with their names in the three languages."""
    lines = ["## Bodies and their DAGs", "", "| body | DAG | Kazakh | Russian |", "|---|---|---|---|"]
    for body in registry.all_bodies():
        lines.append(f"| {body.name_en} | `{body.dag_id}` | {body.name_kk} | {body.name_ru or '—'} |")
    return "\n".join(lines) + "\n"


def page(registry: Registry | None = None) -> str:
    """The whole page."""
    registry = registry or default_registry()
    parts = [HEADER, bodies_section(registry)]
    parts += [edition_section(e) for e in sorted(registry.editions, key=lambda e: e.effective_from)]
    return "\n".join(parts)


if __name__ == "__main__":
    PAGE.write_text(page(), encoding="utf-8")
    print(f"wrote {PAGE}", file=sys.stderr)
