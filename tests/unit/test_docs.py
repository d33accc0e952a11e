"""The project's own docs: the decree page is the registry's, and nothing the README relies on lives outside."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support import decree_doc

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def test_the_decree_page_is_what_the_registry_serves() -> None:
    committed = decree_doc.PAGE.read_text(encoding="utf-8")
    assert committed == decree_doc.page(), "docs/decree-660.md is stale: run `make docs` and commit it"


def test_the_decree_page_names_every_feed_of_every_edition() -> None:
    from osms.core.registry import default_registry

    page = decree_doc.page()
    for edition in default_registry().editions:
        section = page.split(f"## Edition {edition.code}", 1)[1].split("\n## ", 1)[0]
        rows = [line for line in section.splitlines() if line.startswith("| ") and "`" in line]
        named = sum(line.rsplit("|", 2)[1].count("(`") for line in rows)
        assert named == len(edition.feeds), edition.code


@pytest.mark.parametrize("doc", ["README.md", "docs/design.md", "docs/decree-660.md"])
def test_links_stay_in_the_repository_or_go_to_public_sources(doc: str) -> None:
    text = (ROOT / doc).read_text(encoding="utf-8")
    assert "../shared" not in text
    for target in re.findall(r"\]\(([^)#\s]+)", text):
        if re.match(r"https?://", target):
            assert not re.match(r"https?://(127\.|localhost)", target), target
            continue
        assert (ROOT / Path(doc).parent / target).exists(), f"{doc} links to {target}, which is not in the repository"
