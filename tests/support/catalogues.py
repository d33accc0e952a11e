"""Compile the gettext catalogues of the pages and notices: ``.venv/bin/python -m tests.support.catalogues``.

Each ``plugins/osms/locale/<lang>/LC_MESSAGES/osms.po`` becomes the ``.mo`` beside it, which the
code reads (committed: no installation compiles). Babel is a development tool here
(requirements-dev.txt); ``tests/unit/test_i18n.py`` checks that the ``.mo`` files are the ``.po``.
"""

from __future__ import annotations

from pathlib import Path

from osms.core.i18n import DOMAIN, LOCALE_DIR


def compile_catalogues(locale_dir: Path = LOCALE_DIR) -> list[Path]:
    """Compile every ``.po`` under ``locale_dir`` to its ``.mo``; return the ``.mo`` files written."""
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po

    written = []
    for po in sorted(locale_dir.glob(f"*/LC_MESSAGES/{DOMAIN}.po")):
        with po.open("rb") as fh:
            catalog = read_po(fh, locale=po.parent.parent.name)
        mo = po.with_suffix(".mo")
        with mo.open("wb") as fh:
            write_mo(fh, catalog, use_fuzzy=False)
        written.append(mo)
    return written


if __name__ == "__main__":
    for path in compile_catalogues():
        print(path)
