"""The people's languages: Kazakh, Russian and English, through gettext catalogues.

The Data quality and package pages and the notices say everything through the ``osms``
gettext domain: English is the source language (and the default), Kazakh and Russian
are catalogues in ``plugins/osms/locale/<lang>/LC_MESSAGES/osms.po``, compiled to the
``.mo`` files beside them (committed, so every shape and image has them; rebuild with
``.venv/bin/python -m tests.support.catalogues`` after editing a ``.po``: Babel, a development
tool). A test extracts every message of the code and templates and fails when a catalogue
lacks one.

Names of bodies, systems and categories are not messages: the registry holds each in
the three languages (``name_kk``, ``name_ru``, ``name_en``), and :func:`local_name`
picks one. Only the standard library is needed at run time.
"""

from __future__ import annotations

import gettext as _gettext
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = ["COOKIE", "DEFAULT", "LANGUAGES", "LOCALE_DIR", "N_", "STATUS_LABELS", "choose", "gettext_for",
           "local_name", "parse_accept_language", "translations"]

DOMAIN = "osms"
LOCALE_DIR = Path(__file__).resolve().parents[1] / "locale"
DEFAULT = "en"
# each language by its own name, as a person looking for theirs reads it
LANGUAGES = {"kk": "Қазақша", "ru": "Русский", "en": "English"}
COOKIE = "osms_lang"  # where the pages remember a person's choice


def N_(message: str) -> str:  # noqa: N802 (gettext's name for "mark for translation, translate later")
    """Mark a message for the catalogues; it is translated where it is shown, in the reader's language."""
    return message


# the verdicts as people read them (the pages and the notices)
STATUS_LABELS = {
    "published": N_("published"), "partial": N_("partial"), "carried_forward": N_("carried forward"),
    "missing": N_("missing"), "held_back": N_("held back"), "failed": N_("failed"), "released": N_("released"),
}


@lru_cache(maxsize=None)
def translations(language: str) -> _gettext.NullTranslations:
    """The catalogue of a language (English: the messages as written); KeyError for a language not offered."""
    if language not in LANGUAGES:
        raise KeyError(f"no catalogue for language {language!r}; offered: {', '.join(LANGUAGES)}")
    if language == DEFAULT:
        return _gettext.NullTranslations()
    # no fallback: a catalogue missing from an installation is an error to see, not English in disguise
    return _gettext.translation(DOMAIN, localedir=str(LOCALE_DIR), languages=[language])


def gettext_for(language: str) -> Callable[[str], str]:
    """The ``_`` of a language."""
    return translations(language).gettext


def local_name(entity: Any, language: str) -> str:
    """A registry entity's name in a language: ``name_kk``, ``name_ru`` or ``name_en`` (English where none)."""
    return getattr(entity, f"name_{language}", None) or entity.name_en


def parse_accept_language(header: str | None) -> list[str]:
    """The offered languages a browser's ``Accept-Language`` asks for, most wanted first."""
    wanted: list[tuple[float, int, str]] = []
    for position, part in enumerate((header or "")[:500].split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        language = tag.strip().lower().split("-")[0]
        if language in LANGUAGES and quality > 0:
            wanted.append((-quality, position, language))
    seen: list[str] = []
    for _, _, language in sorted(wanted):
        if language not in seen:
            seen.append(language)
    return seen


def choose(asked: str | None = None, remembered: str | None = None, accept_language: str | None = None) -> str:
    """The language to show: the one just asked for, else the one remembered, else the browser's, else English."""
    for candidate in (asked, remembered):
        if candidate and candidate in LANGUAGES:
            return candidate
    return next(iter(parse_accept_language(accept_language)), DEFAULT)
