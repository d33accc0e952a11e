"""Kazakh, Russian and English: every message of the pages and notices has a real translation in each catalogue.

The messages are extracted from the code and the templates the way translators get them
(Babel, gettext keywords ``_`` and ``N_``); a message a catalogue lacks, leaves empty or
marks fuzzy, a translation that drops or invents a placeholder, or one left in English,
fails here, naming it.
"""

from __future__ import annotations

import gettext
import re
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from osms.core import i18n
from osms.core.i18n import LOCALE_DIR, choose, local_name, parse_accept_language
from osms.core.registry import default_registry

pytestmark = pytest.mark.unit

PLUGINS = Path(__file__).resolve().parents[2] / "plugins" / "osms"
TRANSLATED = ("kk", "ru")
METHODS = [("**/templates/**.html", "jinja2"), ("dev/**.py", "ignore"), ("**.py", "python")]
OPTIONS = {"**/templates/**.html": {"extensions": "jinja2.ext.i18n"}}
_PLACEHOLDER = re.compile(r"%\([a-z_]+\)s|\{[a-z_]+\}")
_CYRILLIC = re.compile(r"[А-Яа-яЁёӘәҒғҚқҢңӨөҰұҮүҺһІі]")
# words both languages borrowed alike
LOANWORDS = {"Bytes", "File", "Package", "package", "SHA-256 (manifest)", "edition"}
_KAZAKH_LETTERS = re.compile(r"[ӘәҒғҚқҢңӨөҰұҮүҺһІі]")


def extracted() -> set[str]:
    """Every message the code and templates mark for translation."""
    found = extract_from_dir(str(PLUGINS), method_map=METHODS, options_map=OPTIONS, keywords={"_": None, "N_": None})
    return {message for _, _, message, _, _ in found if isinstance(message, str)}


def catalogue(language: str) -> Catalog:
    with (LOCALE_DIR / language / "LC_MESSAGES" / "osms.po").open("rb") as fh:
        return read_po(fh, locale=language)


def problems(messages: set[str], catalog: Catalog) -> list[str]:
    """What is wrong with a catalogue for these messages, one sentence each (empty: nothing)."""
    out = []
    for message in sorted(messages):
        entry = catalog.get(message)
        if entry is None or not entry.string:
            out.append(f"no translation of {message!r}")
        elif entry.fuzzy:
            out.append(f"fuzzy translation of {message!r}")
        elif sorted(_PLACEHOLDER.findall(entry.string)) != sorted(_PLACEHOLDER.findall(message)):
            out.append(f"placeholders differ in the translation of {message!r}")
        elif _CYRILLIC.search(entry.string) is None:
            out.append(f"the translation of {message!r} is not in Cyrillic: {entry.string!r}")
    stale = sorted(m.id for m in catalog if m.id and m.id not in messages)
    out += [f"a translation of a message nothing uses any more: {m!r}" for m in stale]
    return out


def test_the_code_and_templates_have_messages_to_translate():
    messages = extracted()
    assert {"Data quality", "Confirm the hold", "held back"} <= messages
    assert any("The package of {day} waits" in m for m in messages)  # the notices
    assert any("volume {percent} %" in m for m in messages)  # the reasons


@pytest.mark.parametrize("language", TRANSLATED)
def test_every_message_has_a_translation(language):
    assert problems(extracted(), catalogue(language)) == []


def test_a_message_without_a_translation_fails_the_check():
    catalog = Catalog(locale="ru")
    catalog.add("Release", "Разрешить публикацию")
    catalog.add("Rows {count}", "Строк: {n}")
    catalog.add("Reason", "Reason")

    found = problems({"Release", "Confirm the hold", "Rows {count}", "Reason"}, catalog)

    assert found == ["no translation of 'Confirm the hold'", "the translation of 'Reason' is not in Cyrillic: 'Reason'",
                     "placeholders differ in the translation of 'Rows {count}'"]


@pytest.mark.parametrize("language", TRANSLATED)
def test_the_compiled_catalogue_is_the_po_file(language):
    with (LOCALE_DIR / language / "LC_MESSAGES" / "osms.mo").open("rb") as fh:
        compiled = gettext.GNUTranslations(fh)
    po = {m.id: m.string for m in catalogue(language) if m.id}
    assert {k: compiled.gettext(k) for k in po} == po, "run: .venv/bin/python -m tests.support.catalogues"


def test_kazakh_is_kazakh_and_differs_from_russian():
    kk, ru = catalogue("kk"), catalogue("ru")
    worded = [m.id for m in kk if m.id and re.search(r"[a-z]{3}", _PLACEHOLDER.sub("", m.id))]
    same = sorted(m for m in worded if kk.get(m).string == ru.get(m).string)
    assert same == sorted(LOANWORDS)
    with_kazakh_letters = [m for m in worded if _KAZAKH_LETTERS.search(kk.get(m).string)]
    assert len(with_kazakh_letters) > len(worded) // 2


def test_the_registry_names_everything_in_the_three_languages():
    registry = default_registry()
    body = next(b for b in registry.all_bodies() if b.code == "health")
    assert local_name(body, "kk") == "Қазақстан Республикасының Денсаулық сақтау министрлігі"
    assert local_name(body, "ru") == "Министерство здравоохранения Республики Казахстан"
    assert local_name(body, "en") == "Ministry of Health"
    unnamed = registry.edition_on(__import__("datetime").date(2026, 3, 1)).system("labour_unnamed")
    assert local_name(unnamed, "ru") == unnamed.name_en  # a name the sources do not give: English stands in


@pytest.mark.parametrize(("header", "wanted"), [
    ("ru-RU,ru;q=0.9,en-US;q=0.8,en;q=0.7", ["ru", "en"]),
    ("kk-KZ, ru;q=0.5", ["kk", "ru"]),
    ("de-DE,de;q=0.9", []),
    ("en;q=0.2, kk;q=0.8, ru;q=0", ["kk", "en"]),
    ("", []),
    (None, []),
])
def test_accept_language_is_read_by_quality(header, wanted):
    assert parse_accept_language(header) == wanted


def test_the_language_asked_beats_the_remembered_one_which_beats_the_browser():
    assert choose("kk", "ru", "en") == "kk"
    assert choose(None, "ru", "kk") == "ru"
    assert choose("xx", "yy", "kk-KZ") == "kk"
    assert choose(None, None, "de") == "en"


def test_an_unknown_language_has_no_catalogue():
    with pytest.raises(KeyError, match="no catalogue"):
        i18n.translations("de")
