"""Vendored Data Docs assets: every CDN file is here, pages point at it, nothing loads from outside, paths stay in."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from osms.ui import assets as ui_assets
from osms.ui.assets import (
    ASSETS,
    PACKAGES,
    UI_STATIC,
    AssetNotFoundError,
    UnsafeAssetPathError,
    localize_docs_css,
    localize_docs_html,
    media_type,
    vendor_file,
)

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).with_name("fixtures")
# Real GX pages (an index and a validation page) cut down to head, navbar and footer.
PAGES = sorted(FIXTURES.glob("gx_*_page.html"))
PREFIX = "/ui/static"

# Attributes a browser fetches by itself; href too, except on <a>/<area>.
LOADING = {"src", "srcset", "imagesrcset", "poster", "background", "data", "ping", "lowsrc", "dynsrc"}
CSS_URL = re.compile(r"""url\(\s*(?:"([^"]*)"|'([^']*)'|([^)\s]*))\s*\)|@import\s+["']([^"']*)["']""",
                     re.IGNORECASE)


def _external(url: str) -> bool:
    url = url.strip()
    return bool(re.match(r"(?i)([a-z][a-z0-9+.\-]*:|[/\\]{2})", url)) and not re.match(r"(?i)(data|blob|about):", url)


class _Loads(HTMLParser):
    """Every URL a page would fetch by itself: loading attributes and CSS in <style> and style=."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.urls: list[str] = []
        self.links: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._in_style = tag == "style"
        for name, value in attrs:
            if value is None:
                continue
            if name == "style":
                self.urls += _css_urls(value)
            elif name == "srcdoc":
                self.urls += _loads(value).urls
            elif name in ("href", "xlink:href") and tag in ("a", "area"):
                self.links.append(value)
            elif name in LOADING or name in ("href", "xlink:href"):
                self.urls += [c.split()[0] for c in value.split(",") if c.split()] if "srcset" in name else [value]

    handle_startendtag = handle_starttag

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.urls += _css_urls(data)


def _css_urls(css: str) -> list[str]:
    return [next(g for g in m.groups() if g is not None) for m in CSS_URL.finditer(css)]


def _loads(page: str) -> _Loads:
    parser = _Loads()
    parser.feed(page)
    parser.close()
    return parser


def _served(url: str) -> Path:
    """The file the static route would serve for a localized URL."""
    assert url.startswith(PREFIX + "/"), url
    return vendor_file(url.removeprefix(PREFIX + "/"))


def _gx_view_dir() -> Path:
    spec = importlib.util.find_spec("great_expectations")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("great_expectations is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "render" / "view"


# --------------------------------------------------------------------------- the vendored tree


def test_every_mapped_url_names_a_non_empty_vendored_file() -> None:
    for url, path in ASSETS.items():
        file = vendor_file(path)
        assert file.stat().st_size > 0, url
        assert path.startswith(("vendor/", "images/")), path


def test_each_package_has_its_folder_and_licence_and_is_used() -> None:
    for package in PACKAGES:
        folder = UI_STATIC / package.folder
        assert folder.is_dir(), package
        assert [p for p in folder.iterdir() if p.name.startswith("LICENSE") and p.stat().st_size], package
        assert any(path.startswith(package.folder + "/") for path in ASSETS.values()), package
    folders = {p.relative_to(UI_STATIC).as_posix() for p in (UI_STATIC / "vendor").glob("**/?*@*") if p.is_dir()}
    assert folders == {p.folder for p in PACKAGES}


def test_vendored_css_references_resolve_inside_the_tree() -> None:
    referenced = 0
    for css in sorted(UI_STATIC.rglob("*.css")):
        for url in _css_urls(css.read_text(encoding="utf-8")):
            if url.startswith("data:"):
                continue
            assert not _external(url), (css, url)
            target = (css.parent / re.split(r"[?#]", url)[0]).resolve()
            assert target.is_file() and target.is_relative_to(UI_STATIC.resolve()), (css, url)
            referenced += 1
    assert referenced >= 8  # Font Awesome: woff2 and ttf of four faces


def test_the_tree_holds_only_what_pages_use() -> None:
    used = set(ASSETS.values())
    for css in UI_STATIC.rglob("*.css"):
        used |= {(css.parent / u).resolve().relative_to(UI_STATIC.resolve()).as_posix()
                 for u in _css_urls(css.read_text(encoding="utf-8")) if not u.startswith("data:")}
    files = {p.relative_to(UI_STATIC).as_posix() for p in UI_STATIC.rglob("*") if p.is_file()}
    extra = {f for f in files - used if not re.search(r"(^|/)(LICENSE[^/]*|README\.md)$", f)}
    assert extra == set()
    assert not [f for f in files if f.endswith(".map")]


def test_gx_integrity_hashes_match_the_vendored_files() -> None:
    imports = (_gx_view_dir() / "templates" / "js_script_imports.j2").read_text(encoding="utf-8")
    pinned = re.findall(r'src="([^"]+)"\s+integrity="sha384-([^"]+)"', imports)
    assert len(pinned) >= 2
    for url, digest in pinned:
        data = vendor_file(ASSETS[url]).read_bytes()
        assert base64.b64encode(hashlib.sha384(data).digest()).decode() == digest, url


def test_every_url_gx_pages_load_is_mapped() -> None:
    """GX's own templates and stylesheet: an outside URL is a mapped asset, or a plain <a href> link."""
    view = _gx_view_dir()
    sources = [p for p in (view / "templates").glob("*.j2") if not p.name.startswith("markdown")]
    sources += sorted((view / "static").rglob("*.css"))
    unmapped = []
    for source in sources:
        text = source.read_text(encoding="utf-8")
        for m in re.finditer(r"https?://[^\s\"'<>)]+", text):
            tag = text[text.rfind("<", 0, m.start()):m.start()]
            if re.fullmatch(r"<a\s[^>]*href=[\"']?", tag):
                continue
            url = m.group()
            if url not in ASSETS and not any(key.startswith(url) for key in ASSETS if url.endswith("/")):
                unmapped.append((source.name, url))
    assert unmapped == []


# --------------------------------------------------------------------------- localizing pages


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.stem)
def test_a_localized_gx_page_loads_only_vendored_files(page: Path) -> None:
    original = page.read_text(encoding="utf-8")
    assert [u for u in _loads(original).urls if _external(u)]  # the fixture does load from CDNs

    loads = _loads(localize_docs_html(original, PREFIX))

    assert [u for u in loads.urls if _external(u)] == []
    local = [u for u in loads.urls if u.startswith(PREFIX)]
    assert len(local) >= 16
    assert all(_served(u).is_file() for u in local)
    assert any(u.startswith("https://greatexpectations.io") for u in loads.links)  # plain links stay


def test_the_rewrite_keeps_everything_else_byte_for_byte() -> None:
    page = (FIXTURES / "gx_validation_page.html").read_text(encoding="utf-8")
    localized = localize_docs_html(page, PREFIX)

    def rest(text: str) -> str:
        return re.sub(r"(https://[^\"')]+|/ui/static/[^\"')]+)", "URL", text)

    assert rest(localized) == rest(page)
    assert localize_docs_html(localized, PREFIX) == localized


def test_the_site_stylesheet_is_localized_too() -> None:
    css = (_gx_view_dir() / "static" / "styles" / "data_docs_default_styles.css").read_text(encoding="utf-8")

    urls = _css_urls(localize_docs_css(css, PREFIX))

    assert urls and not [u for u in urls if _external(u)]
    assert all(_served(u).is_file() for u in urls)


@pytest.mark.parametrize(
    "markup",
    [
        '<script src="https://evil.example/x.js"></script>',
        "<script src='HTTPS://evil.example/x.js'></script>",
        "<script src=//evil.example/x.js></script>",
        '<script src=" \thttps://evil.example/x.js"></script>',
        '<script src="h&#116;tps://evil.example/x.js"></script>',
        '<script src="ht\ntps://evil.example/x.js"></script>',
        '<script src="/\\evil.example/x.js"></script>',
        '<script SRC = "ftp://evil.example/x.js"></script>',
        '<link rel="stylesheet" href="https://evil.example/x.css">',
        '<link rel="preload" as="font" href="https://evil.example/f.woff2">',
        '<base href="https://evil.example/">',
        '<img alt="it\'s" src=https://evil.example/a.png>',
        '<img srcset="a.png 1x, https://evil.example/b.png 2x">',
        '<iframe src="https://evil.example/"></iframe>',
        '<video poster="https://evil.example/p.png"></video>',
        '<object data="https://evil.example/o.swf"></object>',
        '<table background="https://evil.example/t.png"></table>',
        '<svg><image xlink:href="https://evil.example/i.png"/></svg>',
        '<a href="#top" ping="https://evil.example/track">top</a>',
        '<div style="background: url(&quot;https://evil.example/bg.png&quot;)"></div>',
        "<style>@import 'https://evil.example/i.css';</style>",
        "<style>.x { background: URL( https://evil.example/bg.png ) }</style>",
        "<style>.x { background: \\75 rl(https://evil.example/bg.png) }</style>",
        "<style>.x { background: url('\\68ttps://evil.example/bg.png') }</style>",
        '<STYLE>.x { background-image: image-set("https://evil.example/a.png" 1x) }</STYLE>',
        '<iframe srcdoc="&lt;img src=&quot;https://evil.example/a.png&quot;&gt;"></iframe>',
    ],
)
def test_any_other_outside_load_is_disabled(markup: str) -> None:
    localized = localize_docs_html(f"<html><head></head><body>{markup}</body></html>", PREFIX)

    assert [u for u in _loads(localized).urls if _external(u)] == []
    assert "evil.example" not in " ".join(_loads(localized).urls)


def test_links_relative_urls_and_data_urls_are_left_alone() -> None:
    page = ('<a href="https://greatexpectations.io">GX</a><area href="https://example.org/">'
            '<link rel="icon" href="../static/images/favicon.ico"><img src="data:image/png;base64,AA==">'
            '<script>if (a<b && c>d) { x = "<img src=\'local.png\'>"; }</script>')
    assert localize_docs_html(page, PREFIX) == page


def test_markup_inside_a_script_is_rewritten_without_breaking_the_script() -> None:
    page = ("""<script>var s = "<img src='https://evil.example/a.png'>", """
            """t = '<script src="https://code.jquery.com/jquery-3.7.1.min.js">';</script>""")

    localized = localize_docs_html(page, PREFIX)

    assert localized == ("""<script>var s = "<img data-blocked-src>", """
                         """t = '<script src="/ui/static/vendor/jquery@3.7.1/dist/jquery.min.js">';</script>""")


def test_known_urls_match_in_any_spelling() -> None:
    for url in ("http://code.jquery.com/jquery-3.7.1.min.js", "//code.jquery.com/jquery-3.7.1.min.js",
                "https://code.jquery.com/jquery-3.7.1.min.js?v=1#x"):
        assert localize_docs_html(f'<script src="{url}"></script>', "/s/") == (
            '<script src="/s/vendor/jquery@3.7.1/dist/jquery.min.js"></script>')


@pytest.mark.parametrize("prefix", ["https://cdn.example/static", "//cdn.example", "/ui/static\" onload=\"x", "a b"])
def test_the_static_prefix_must_be_a_plain_path(prefix: str) -> None:
    with pytest.raises(ValueError, match="static_prefix"):
        localize_docs_html("<p></p>", prefix)


# --------------------------------------------------------------------------- serving files


def test_vendor_file_gives_the_file_under_ui_static() -> None:
    path = vendor_file("vendor/jquery@3.7.1/dist/jquery.min.js")

    assert path == (UI_STATIC / "vendor" / "jquery@3.7.1" / "dist" / "jquery.min.js").resolve()
    assert path.read_bytes().startswith(b"/*! jQuery v3.7.1")


@pytest.mark.parametrize(
    "relpath",
    [
        "",
        ".",
        "../x",
        "../ui_assets.py",
        "/etc/passwd",
        "//etc/passwd",
        "vendor/../../ui_assets.py",
        "vendor/./jquery@3.7.1/dist/jquery.min.js",
        "vendor//jquery@3.7.1/dist/jquery.min.js",
        "vendor/",
        "%2e%2e/ui_assets.py",
        "vendor/%2e%2e/%2e%2e/ui_assets.py",
        "vendor/%252e%252e/x",
        "..\\ui_assets.py",
        "vendor\\..\\..\\ui_assets.py",
        "vendor/jquery@3.7.1/dist/jquery.min.js\x00.png",
    ],
)
def test_vendor_file_refuses_paths_that_could_leave_ui_static(relpath: str) -> None:
    with pytest.raises(UnsafeAssetPathError):
        vendor_file(relpath)


def test_refusals_are_value_errors_and_not_found_errors() -> None:
    with pytest.raises(ValueError):
        vendor_file("../x")
    with pytest.raises(FileNotFoundError):
        vendor_file("../x")
    with pytest.raises(AssetNotFoundError):
        vendor_file("vendor/nothing-here.js")
    with pytest.raises(AssetNotFoundError, match="not a file"):
        vendor_file("vendor")


def test_vendor_file_refuses_a_symlink_out_but_follows_one_inside(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    static = tmp_path / "ui_static"
    (static / "vendor").mkdir(parents=True)
    (static / "vendor" / "a.js").write_text("ok")
    (tmp_path / "secret.txt").write_text("secret")
    (static / "vendor" / "out.txt").symlink_to(tmp_path / "secret.txt")
    (static / "vendor" / "up").symlink_to(tmp_path, target_is_directory=True)
    (static / "vendor" / "alias.js").symlink_to(static / "vendor" / "a.js")
    (static / "vendor" / "loop").symlink_to(static / "vendor" / "loop")
    monkeypatch.setattr(ui_assets, "UI_STATIC", static)

    assert vendor_file("vendor/alias.js").read_text() == "ok"
    for escaping in ("vendor/out.txt", "vendor/up/secret.txt"):
        with pytest.raises(UnsafeAssetPathError, match="outside"):
            vendor_file(escaping)
    with pytest.raises(AssetNotFoundError):
        vendor_file("vendor/loop")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("vendor/x/all.min.css", "text/css"),
        ("vendor/x/jquery.min.js", "text/javascript"),
        ("fa-solid-900.woff2", "font/woff2"),
        ("a.woff", "font/woff"),
        ("fa-solid-900.TTF", "font/ttf"),
        ("HKGrotesk-Bold.otf", "font/otf"),
        ("gx-logo-long.svg", "image/svg+xml"),
        ("logo.png", "image/png"),
        ("favicon.ico", "image/vnd.microsoft.icon"),
        ("index.html", "text/html"),
        ("x.json", "application/json"),
        ("LICENSE", "text/plain"),
        ("LICENSE.txt", "text/plain"),
        ("archive.bin", "application/octet-stream"),
    ],
)
def test_media_type(name: str, expected: str) -> None:
    assert media_type(name) == expected
    assert media_type(Path(name)) == expected
