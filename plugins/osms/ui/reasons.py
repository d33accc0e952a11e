"""Why a feed was held back or failed, in the reader's language.

The statuses and the package say why in English sentences the pipeline writes itself
(``osms.quality.validate``, ``osms.orchestration.dag_factory``, ``osms.package.build``);
the pages translate the ones they know, part by part (parts are joined by "; "), with
their numbers and rule names kept. A part they do not know (a source's own error text,
quoted by an extract's failure) is shown as it is.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from osms.core.i18n import N_, gettext_for

__all__ = ["localize_reason"]

# (pattern of the English part, its message with the same named fields)
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = tuple((re.compile(p), m) for p, m in (
    (r"(?P<rule>\S+): (?P<percent>[\d.]+) % of rows failed \(threshold (?P<threshold>[\d.]+) %\)",
     N_("{rule}: {percent} % of rows failed (threshold {threshold} %)")),
    (r"(?P<rule>\S+): could not be evaluated \(see the GX report\)",
     N_("{rule}: could not be evaluated (see the GX report)")),
    (r"volume (?P<percent>\d+) % of trailing median (?P<median>[\d,]+) \(minimum (?P<minimum>\d+) %\)",
     N_("volume {percent} % of trailing median {median} (minimum {minimum} %)")),
    (r"no rows, although the previous days had up to (?P<most>[\d,]+)",
     N_("no rows, although the previous days had up to {most}")),
    (r"the body did not report for this date", N_("the body did not report for this date")),
    (r"the body's status names no such category", N_("the body's status names no such category")),
    (r"the body's status names no such feed", N_("the body's status names no such feed")),
    (r"never published: contributes nothing", N_("never published: contributes nothing")),
    (r"(?P<systems>[a-z0-9_, ]+) never published: contributes nothing",
     N_("{systems} never published: contributes nothing")),
    (r"the feed was not extracted or not validated \(see the task logs\)",
     N_("the feed was not extracted or not validated (see the task logs)")),
    (r"published, but its validated file is missing", N_("published, but its validated file is missing")),
    (r"released, but its validated file is missing", N_("released, but its validated file is missing")),
    (r"schema change: (?P<detail>.*)", N_("schema change: {detail}")),
))
_FEED_PREFIX = re.compile(r"(?P<system>[a-z0-9_]+): (?P<rest>.+)")


def localize_reason(text: str | None, language: str) -> str:
    """The reason in ``language``: each part it knows translated, the rest kept as written."""
    if not text:
        return ""
    _ = gettext_for(language)
    return "; ".join(_part(part, _) for part in text.split("; "))


def _part(part: str, _: Callable[[str], str]) -> str:
    for pattern, message in _PATTERNS:
        found = pattern.fullmatch(part)
        if found:
            return _(message).format(**found.groupdict())
    prefixed = _FEED_PREFIX.fullmatch(part)
    if prefixed:
        rest = _part(prefixed["rest"], _)
        if rest != prefixed["rest"]:
            return f"{prefixed['system']}: {rest}"
    return part
