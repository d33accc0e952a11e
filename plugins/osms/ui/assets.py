"""Offline assets for GX Data Docs: vendored copies of the CDN files its pages load, and the rewrite to them.

GX's Data Docs templates load Bootstrap, jQuery, Popper, Font Awesome,
bootstrap-table, bootstrap-datepicker, bootstrap-dark and Vega from public CDNs,
and GX's logo from S3. The production network is closed, so exact-version
copies live in ``static/vendor/<package>@<version>/`` (paths as in the npm
tarball) and two local SVGs stand in for the logo in ``static/images/``.

* :data:`ASSETS` maps each external URL a Data Docs page uses to its file under
  ``static``: the one table to change when GX changes a URL.
* :func:`localize_docs_html` points a page at those files and disables every
  other outside load, so a page makes no request off this server.
* :func:`vendor_file` resolves a requested path under ``static`` for the
  static route, refusing anything that could leave that folder.

Standard library only: the UI imports this at start-up.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from html import escape as _escape
from html import unescape as _unescape
from pathlib import Path

__all__ = [
    "ASSETS",
    "PACKAGES",
    "UI_STATIC",
    "AssetNotFoundError",
    "UnsafeAssetPathError",
    "VendoredPackage",
    "localize_docs_css",
    "localize_docs_html",
    "media_type",
    "vendor_file",
]

UI_STATIC = Path(__file__).resolve().parent / "static"


@dataclass(frozen=True)
class VendoredPackage:
    """One npm package copied into ``static/vendor``: what the CDN URLs asked for and what was taken."""

    name: str
    version: str
    license: str  # SPDX expression from the package's package.json
    requested: str  # the version the GX templates name; a range for Vega, pinned here to the latest match

    @property
    def folder(self) -> str:
        """Its folder, relative to ``static``."""
        return f"vendor/{self.name}@{self.version}"


PACKAGES: tuple[VendoredPackage, ...] = (
    VendoredPackage("bootstrap", "4.3.1", "MIT", "4.3.1"),
    VendoredPackage("jquery", "3.7.1", "MIT", "3.7.1"),
    VendoredPackage("popper.js", "1.12.9", "MIT", "1.12.9"),
    VendoredPackage("@fortawesome/fontawesome-free", "6.6.0", "CC-BY-4.0 AND OFL-1.1 AND MIT", "6.6.0"),
    # GX asks for 1.19.1 except the filter-control CSS, which it takes from 1.19.0; the two files
    # differ only in their version comment, so 1.19.1's serves both.
    VendoredPackage("bootstrap-table", "1.19.1", "MIT", "1.19.0 / 1.19.1"),
    VendoredPackage("bootstrap-datepicker", "1.9.0", "Apache-2.0", "1.9.0"),
    VendoredPackage("@forevolve/bootstrap-dark", "1.1.0", "MIT", "1.1.0"),
    VendoredPackage("vega", "5.33.1", "BSD-3-Clause", "5"),
    VendoredPackage("vega-lite", "5.23.0", "BSD-3-Clause", "5"),
    VendoredPackage("vega-embed", "6.29.0", "BSD-3-Clause", "6"),
)

_FILTER_CONTROL_CSS = (
    "vendor/bootstrap-table@1.19.1/dist/extensions/filter-control/bootstrap-table-filter-control.min.css"
)

# External URL (without query or fragment) -> file under static.
ASSETS: dict[str, str] = {
    "https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css":
        "vendor/bootstrap@4.3.1/dist/css/bootstrap.min.css",
    "https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js":
        "vendor/bootstrap@4.3.1/dist/js/bootstrap.min.js",
    "https://code.jquery.com/jquery-3.7.1.min.js":
        "vendor/jquery@3.7.1/dist/jquery.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js":
        "vendor/popper.js@1.12.9/dist/umd/popper.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.6.0/css/all.min.css":
        "vendor/@fortawesome/fontawesome-free@6.6.0/css/all.min.css",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.css":
        "vendor/bootstrap-table@1.19.1/dist/bootstrap-table.min.css",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.js":
        "vendor/bootstrap-table@1.19.1/dist/bootstrap-table.min.js",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/extensions/filter-control/bootstrap-table-filter-control.min.js":
        "vendor/bootstrap-table@1.19.1/dist/extensions/filter-control/bootstrap-table-filter-control.min.js",
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.min.css":
        _FILTER_CONTROL_CSS,
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.css":
        _FILTER_CONTROL_CSS,
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/css/bootstrap-datepicker.min.css":
        "vendor/bootstrap-datepicker@1.9.0/dist/css/bootstrap-datepicker.min.css",
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/js/bootstrap-datepicker.min.js":
        "vendor/bootstrap-datepicker@1.9.0/dist/js/bootstrap-datepicker.min.js",
    # GX links the unminified build (880 kB); the package's minified one (150 kB) is the same CSS.
    "https://cdn.jsdelivr.net/npm/@forevolve/bootstrap-dark@1.1.0/dist/css/bootstrap-prefers-dark.css":
        "vendor/@forevolve/bootstrap-dark@1.1.0/dist/css/bootstrap-prefers-dark.min.css",
    # jsDelivr serves a bare package URL as the package.json "jsdelivr" file, the minified UMD build.
    "https://cdn.jsdelivr.net/npm/vega@5": "vendor/vega@5.33.1/build/vega.min.js",
    "https://cdn.jsdelivr.net/npm/vega-lite@5": "vendor/vega-lite@5.23.0/build/vega-lite.min.js",
    "https://cdn.jsdelivr.net/npm/vega-embed@6": "vendor/vega-embed@6.29.0/build/vega-embed.min.js",
    # GX's logo (navbar <img>, and the dark-mode navbar background): local text logos, not GX's artwork.
    "https://great-expectations-web-assets.s3.us-east-2.amazonaws.com/logo-long.png": "images/gx-logo-long.svg",
    "https://great-expectations-web-assets.s3.us-east-2.amazonaws.com/full_logo_dark.png": "images/gx-logo-dark.svg",
}


class AssetNotFoundError(FileNotFoundError):
    """No file under the folder (``static``, a Data Docs site) answers the requested path."""


class UnsafeAssetPathError(AssetNotFoundError, ValueError):
    """The requested path could name something outside its folder; refused without looking."""


# --------------------------------------------------------------------------- rewriting pages

_WS = "\t\n\f\r "  # HTML's ASCII whitespace (CR included: the tokenizer turns it into LF)
_TAG = re.compile(r"<([a-zA-Z][^\t\n\f\r />]*)")
_STYLE_END = re.compile(r"</style[\t\n\f\r />]", re.IGNORECASE)
_SCHEME = re.compile(r"([a-zA-Z][a-zA-Z0-9+.\-]*):")
_LOCAL_SCHEMES = frozenset({"data", "blob", "about"})
_PREFIX = re.compile(r"[A-Za-z0-9._~@/\-]*")
# Attributes whose URL the browser fetches by itself. ``href`` and ``xlink:href`` load everywhere but
# on <a>/<area> (<link>, <base>, SVG <image>/<use>); ``ping`` fires on a click, still an outside request.
_LOAD_ATTRIBUTES = frozenset({"src", "srcset", "imagesrcset", "poster", "background", "lowsrc", "dynsrc",
                              "data", "codebase", "archive", "manifest", "ping"})
_HREF_ATTRIBUTES = frozenset({"href", "xlink:href"})
_LINK_TAGS = frozenset({"a", "area"})

_BLOCKED_IN_CSS = "data:,"


def localize_docs_html(html: str, static_prefix: str) -> str:
    """Point a Data Docs page's CDN assets at ``static_prefix`` and disable every other outside load.

    Known URLs (:data:`ASSETS`) in ``src``/``href`` and in CSS (``<style>``, ``style=``) become
    ``{static_prefix}/{path}``, e.g. ``/ui/static/vendor/jquery@3.7.1/dist/jquery.min.js``.
    Any other off-site URL (``http:``, ``https:``, any scheme but data/blob/about, ``//host``) in an
    attribute the browser loads by itself is renamed ``data-blocked-<attr>`` with no value, and in CSS
    becomes ``data:,``. Plain links (``<a href>``, ``<area href>``) stay as they are.

    Every ``<tag`` is examined, even inside scripts and comments: a surplus rewrite there is harmless,
    a missed one would leak. Edits only replace attribute or URL text, never add quotes, so
    markup quoted inside a script stays valid script.
    """
    prefix = _checked_prefix(static_prefix)
    edits: list[tuple[int, int, str]] = []
    for tag in _TAG.finditer(html):
        name = tag.group(1).lower()
        attributes, end = _attributes(html, tag.end())
        for attr in attributes:
            edits += _attribute_edits(html, name, attr, prefix)
        if name == "style":
            close = _STYLE_END.search(html, end)
            stop = close.start() if close else len(html)
            edits += [(a + end, b + end, new) for a, b, new in _css_edits(html[end:stop], prefix)]
    return _apply(html, edits)


def localize_docs_css(css: str, static_prefix: str) -> str:
    """The same rewrite for a stylesheet (e.g. the site's ``static/styles/*.css``); ``static_prefix`` from the root."""
    return _apply(css, _css_edits(css, _checked_prefix(static_prefix)))


def _checked_prefix(static_prefix: str) -> str:
    """``static_prefix`` without its trailing slash; refuse a URL or anything needing quoting."""
    if not _PREFIX.fullmatch(static_prefix) or static_prefix.startswith("//"):
        raise ValueError(f"static_prefix must be a plain path such as '/ui/static', not {static_prefix!r}")
    return static_prefix.rstrip("/")


@dataclass(frozen=True)
class _Attribute:
    name: str  # lower-cased, as the tokenizer reports it
    start: int  # where the name starts
    end: int  # just past the value (or the name, when there is no value)
    value_start: int = -1  # -1: no value
    value_end: int = -1


def _attributes(text: str, pos: int) -> tuple[list[_Attribute], int]:
    """The attributes of the start tag whose name ends at ``pos``, read as HTML's tokenizer reads them,
    and the index just past the tag's ``>`` (or the text's end)."""
    n = len(text)
    found: list[_Attribute] = []
    while True:
        while pos < n and (text[pos] in _WS or text[pos] == "/"):
            pos += 1
        if pos >= n:
            return found, n
        if text[pos] == ">":
            return found, pos + 1
        start = pos
        pos += 1  # a first "=" belongs to the name
        while pos < n and text[pos] not in _WS and text[pos] not in "/>=":
            pos += 1
        name = text[start:pos].lower()
        after = pos
        while after < n and text[after] in _WS:
            after += 1
        if after >= n or text[after] != "=":
            found.append(_Attribute(name, start, pos))
            continue
        after += 1
        while after < n and text[after] in _WS:
            after += 1
        if after < n and text[after] in "\"'":
            close = text.find(text[after], after + 1)
            if close < 0:  # EOF inside the value: browsers drop the tag
                return found, n
            found.append(_Attribute(name, start, close + 1, after + 1, close))
            pos = close + 1
        else:
            stop = after
            while stop < n and text[stop] not in _WS and text[stop] != ">":
                stop += 1
            found.append(_Attribute(name, start, stop, after, stop))
            pos = stop


def _attribute_edits(text: str, tag: str, attr: _Attribute, prefix: str) -> list[tuple[int, int, str]]:
    if attr.value_start < 0:
        return []
    value = _unescape(text[attr.value_start:attr.value_end])
    if attr.name == "style":
        new_css = _apply(value, _css_edits(value, prefix))
        return [] if new_css == value else [(attr.value_start, attr.value_end, _escape(new_css))]
    if attr.name == "srcdoc":  # a whole document in an attribute
        new_doc = localize_docs_html(value, prefix)
        return [] if new_doc == value else [(attr.value_start, attr.value_end, _escape(new_doc))]
    loads = attr.name in _LOAD_ATTRIBUTES or (attr.name in _HREF_ATTRIBUTES and tag not in _LINK_TAGS)
    if not loads:
        return []
    if attr.name in ("srcset", "imagesrcset"):
        urls = [c.split()[0] for c in value.split(",") if c.split()]
        return [(attr.start, attr.end, f"data-blocked-{attr.name}")] if any(map(_is_external, urls)) else []
    local = _local(value, prefix)
    if local is not None:
        return [(attr.value_start, attr.value_end, local)]
    if _is_external(value):
        return [(attr.start, attr.end, f"data-blocked-{attr.name}")]
    return []


# CSS: function names (escapes allowed, so ``\75 rl(`` is ``url(``), strings, comments.
_CSS_TOKEN = re.compile(
    r"""(?P<comment>/\*.*?(?:\*/|\Z))
      | (?<![\w\-\\])(?P<fn>(?>(?:[a-zA-Z0-9_\-]|[^\x00-\x7f]|\\[0-9a-fA-F]{1,6}[\t\n\f\r ]?|\\[^\n\r\f0-9a-fA-F])+))\(
      | (?P<q>["'])(?P<string>(?:\\.|\\\n|(?!(?P=q))[^\\\n])*)(?:(?P=q)|(?=\n)|\Z)""",
    re.VERBOSE | re.DOTALL,
)
_CSS_ESCAPE = re.compile(r"\\(?:([0-9a-fA-F]{1,6})[\t\n\f\r ]?|(\n)|(.))", re.DOTALL)


def _css_edits(css: str, prefix: str) -> list[tuple[int, int, str]]:
    """Edits to ``css`` that localize known URLs and blank out other external ones.

    Every URL-looking string is examined, not only those in ``url()``/``@import``: ``image-set("…")``
    and ``src("…")`` load strings too, and a surplus rewrite of a ``content:`` string is harmless.
    """
    edits: list[tuple[int, int, str]] = []
    pos = 0
    while (m := _CSS_TOKEN.search(css, pos)) is not None:
        pos = m.end()
        if m.group("string") is not None:
            span: tuple[int, int] | None = m.span("string")
        elif m.group("fn") is not None and _css_unescape(m.group("fn")).lower() in ("url", "src"):
            start = pos
            while start < len(css) and css[start] in _WS:
                start += 1
            if start < len(css) and css[start] in "\"'":
                continue  # the quoted argument is a string token, taken on the next round
            stop = css.find(")", start)
            stop = len(css) if stop < 0 else stop
            while stop > start and css[stop - 1] in _WS:
                stop -= 1
            span, pos = (start, stop), max(pos, stop)
        else:
            span = None
        if span is None:
            continue
        url = _css_unescape(css[span[0]:span[1]])
        local = _local(url, prefix)
        if local is not None:
            edits.append((*span, local))
        elif _is_external(url):
            edits.append((*span, _BLOCKED_IN_CSS))
    return edits


def _css_unescape(text: str) -> str:
    def one(m: re.Match[str]) -> str:
        if m.group(1):
            code = int(m.group(1), 16)
            return chr(code) if 0 < code <= 0x10FFFF and not 0xD800 <= code <= 0xDFFF else "\ufffd"
        return "" if m.group(2) else m.group(3)

    return _CSS_ESCAPE.sub(one, text)


def _browser_form(url: str) -> str:
    """The URL as a browser's parser sees it: outer spaces/controls gone, tabs and newlines dropped,
    backslashes as slashes (they are, for http(s))."""
    url = url.strip("".join(map(chr, range(0x21))))
    return re.sub(r"[\t\n\r]", "", url).replace("\\", "/")


def _is_external(url: str) -> bool:
    """Whether loading ``url`` would leave this server: a scheme other than data/blob/about, or ``//host``."""
    url = _browser_form(url)
    if url.startswith("//"):
        return True
    scheme = _SCHEME.match(url)
    return scheme is not None and scheme.group(1).lower() not in _LOCAL_SCHEMES


def _local(url: str, prefix: str) -> str | None:
    """``{prefix}/{path}`` when ``url`` is one of :data:`ASSETS` (any of http/https/``//``), else None."""
    key = re.split(r"[?#]", _browser_form(url), maxsplit=1)[0]
    if key.startswith("//"):
        key = "https:" + key
    elif key[:7].lower() == "http://":
        key = "https://" + key[7:]
    path = ASSETS.get(key)
    return None if path is None else f"{prefix}/{path}"


def _apply(text: str, edits: list[tuple[int, int, str]]) -> str:
    """``text`` with each (start, end, replacement); an edit overlapping an earlier-starting one is dropped
    (it lies inside a span that edit already replaces)."""
    out: list[str] = []
    done = 0
    for start, end, new in sorted(edits, key=lambda e: (e[0], -e[1])):
        if start < done:
            continue
        out += [text[done:start], new]
        done = end
    out.append(text[done:])
    return "".join(out)


# --------------------------------------------------------------------------- serving files


def vendor_file(relpath: str) -> Path:
    """The file under ``static`` named by ``relpath`` (as the route received it, e.g.
    ``vendor/jquery@3.7.1/dist/jquery.min.js``); raise rather than leave ``static``."""
    return safe_file(UI_STATIC, relpath)


def safe_file(folder: Path, relpath: str) -> Path:
    """The regular file ``folder/relpath`` as a route received ``relpath``; raise rather than leave ``folder``.

    Refused (:class:`UnsafeAssetPathError`, a ``ValueError``): empty, absolute, ``.``/``..`` or empty
    segments, backslashes, ``%`` (the router has already decoded once; decoding again is how ``%2e%2e``
    gets through), control characters, and any path whose real location (symlinks followed) is outside.
    Missing or not a regular file: :class:`AssetNotFoundError`. Both are ``FileNotFoundError``s.
    """
    if not isinstance(relpath, str) or not relpath:
        raise UnsafeAssetPathError(f"asset path must be a non-empty string, not {relpath!r}")
    if relpath.startswith("/") or "\\" in relpath or "%" in relpath or any(ord(c) < 0x20 or c == "\x7f"
                                                                             for c in relpath):
        raise UnsafeAssetPathError(f"asset path {relpath!r} is not a plain relative path")
    parts = relpath.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise UnsafeAssetPathError(f"asset path {relpath!r} has an empty, '.' or '..' segment")
    root = Path(folder).resolve()
    try:
        target = root.joinpath(*parts).resolve(strict=True)
    except (OSError, RuntimeError):  # missing, a symlink loop (RuntimeError before 3.13), name too long
        raise AssetNotFoundError(f"no asset {relpath!r}") from None
    if not target.is_relative_to(root):
        raise UnsafeAssetPathError(f"asset path {relpath!r} leads outside its folder")
    if not target.is_file():
        raise AssetNotFoundError(f"asset {relpath!r} is not a file")
    return target


_MEDIA_TYPES = {
    ".css": "text/css",
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".json": "application/json",
    ".map": "application/json",
    ".html": "text/html",
    ".htm": "text/html",
    ".txt": "text/plain",
    ".md": "text/plain",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".gif": "image/gif",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".ico": "image/vnd.microsoft.icon",
    ".woff2": "font/woff2",
    ".woff": "font/woff",
    ".ttf": "font/ttf",
    ".otf": "font/otf",
    ".eot": "application/vnd.ms-fontobject",
}
_PLAIN_TEXT_NAMES = frozenset({"LICENSE", "LICENCE", "NOTICE", "README", "AUTHORS", "COPYING"})


def media_type(path: str | os.PathLike[str]) -> str:
    """The Content-Type for a file by its name (``application/octet-stream`` when unknown)."""
    name = Path(path).name
    if name.upper() in _PLAIN_TEXT_NAMES:
        return "text/plain"
    return _MEDIA_TYPES.get(Path(name).suffix.lower(), "application/octet-stream")

