"""The built book (book/_build/html) in headless Chromium.

Every page loads (a title, no request answered 404, no error in the console), every image exists, is non-empty and
decodes (naturalWidth > 0), every internal link resolves to an existing file and anchor, and
nothing is fetched from another host (MathJax included: it is served from _static and renders).

Build the book first (`make reproduce`, or `python -m deepinfo.book.reproduce --book-only`). Without
the book or Chromium these tests skip, except under CI (`CI` set), where `make test` installs
Chromium and builds the book before running them, so a missing one is a failure.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import threading
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlparse

import pytest

ROOT = Path(__file__).resolve().parent.parent
HTML = ROOT / "book" / "_build" / "html"
CHROMEDRIVER = Path("/usr/bin/chromedriver")
PLACEHOLDER_CLASS = "deepinfo-not-run"  # deepinfo.book.reproduce.PLACEHOLDER_CLASS
IN_CI = bool(os.environ.get("CI"))
# Folders of assets, not pages (MathJax and the theme ship html fragments of their own).
NOT_PAGES = {"_static", "_sources", "_images", "_downloads"}


def _unavailable(reason: str):
    if IN_CI:
        pytest.fail(f"{reason}; CI is set, and `make test` installs Chromium and builds the book "
                    "before this test, so this is a failure", pytrace=False)
    pytest.skip(reason)


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _pages() -> list[Path]:
    return sorted(p for p in HTML.rglob("*.html") if not NOT_PAGES & set(p.relative_to(HTML).parts))


class _Ids(HTMLParser):
    """The element ids (and anchor names) of one HTML file."""

    def __init__(self):
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        for key, value in attrs:
            if key == "id" or (tag == "a" and key == "name"):
                self.ids.add(value or "")


@functools.lru_cache(maxsize=None)
def _ids(path: Path) -> frozenset[str]:
    parser = _Ids()
    parser.feed(path.read_text(encoding="utf-8", errors="replace"))
    return frozenset(parser.ids)


class _Server:
    """book/_build/html on 127.0.0.1 (a free port), remembering every request and its status."""

    def __init__(self, root: Path):
        self.requests: list[tuple[str, int]] = []
        log = self.requests

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(root), **kwargs)

            def log_request(self, code="-", size="-"):
                try:
                    log.append((self.path, int(code)))
                except (TypeError, ValueError):
                    log.append((self.path, 0))

            def log_message(self, *args):  # quiet
                pass

        class Server(http.server.ThreadingHTTPServer):
            def handle_error(self, request, client_address):  # a navigation cut a transfer short
                pass

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def _driver(profile_dir: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_AVOID_STATS", "true")  # Selenium Manager is not used; never phone home
    opts = webdriver.ChromeOptions()
    opts.binary_location = _chromium()
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the pages' console, for JS errors
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                f"--user-data-dir={profile_dir}", "--window-size=1280,1024"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=opts)
    driver.set_page_load_timeout(60)
    return driver


# What one page looks like once loaded (collected by the browser after MathJax has typeset).
_PROBE = """
const done = arguments[arguments.length - 1];
const collect = () => done({
  title: document.title,
  url: location.href,
  h1: document.querySelectorAll("h1").length,
  placeholder: document.querySelectorAll("." + arguments[0]).length,
  images: Array.from(document.images).map(i => ({src: i.currentSrc || i.src, complete: i.complete,
      width: i.naturalWidth, in_article: !!i.closest("article")})),
  links: Array.from(document.querySelectorAll("a[href]")).map(a => a.href),
  assets: Array.from(document.querySelectorAll("script[src], link[href], img[src], iframe[src], source[src], video[src], audio[src]"))
      .filter(e => e.tagName !== "LINK" || !/^(canonical|alternate|search|index|next|prev|author|help|license)$/i.test(e.rel))
      .map(e => e.src || e.href),
  resources: performance.getEntriesByType("resource").map(r => r.name),
  math: document.querySelectorAll("mjx-container").length,
  math_errors: Array.from(document.querySelectorAll("mjx-merror")).map(e => e.getAttribute("data-mjx-error") || e.textContent),
  tex: document.querySelectorAll(".math").length,
  // the text column: the widest paragraph of the article; figures: every image of an output cell
  column: Math.max(0, ...Array.from(document.querySelectorAll("article p")).map(p => p.getBoundingClientRect().width)),
  figures: Array.from(document.querySelectorAll("article .cell_output img, article .output img"))
      .map(i => ({src: i.currentSrc || i.src, shown: i.getBoundingClientRect().width})),
  // code and text outputs, with every folded cell unfolded: lines wider than their box are clipped
  clipped: (() => {
    document.querySelectorAll("article details").forEach(d => d.open = true);
    return Array.from(document.querySelectorAll("article pre"))
      .filter(e => e.offsetParent !== null && e.scrollWidth > e.clientWidth + 1)
      .map(e => e.textContent.split("\\n").reduce((a, b) => a.length >= b.length ? a : b, "").slice(0, 80));
  })(),
  tables: Array.from(document.querySelectorAll("article .cell_output table, article .output table")).map(t => ({
      index: t.querySelectorAll("tbody th").length,
      // numbers of the body with more than 4 significant digits
      long: Array.from(t.querySelectorAll("tbody td")).flatMap(td => td.innerText.match(/\\d+\\.\\d+/g) || [])
          .filter(x => x.replace(".", "").replace(/^0+/, "").length > 4).slice(0, 3)})),
  folded: document.querySelectorAll("article details.hide, article .tag_hide-input details, article details.above-input").length,
});
const settle = () => Promise.all(Array.from(document.images).map(i => i.decode().catch(() => null)));
const typeset = (window.MathJax && MathJax.startup && MathJax.startup.promise) || Promise.resolve();
Promise.all([settle(), typeset]).then(collect, collect);
"""


@pytest.fixture(scope="module")
def crawl(tmp_path_factory):
    """Load every page of the built book once; returns ({page: what it showed}, server requests, base)."""
    if not (HTML / "index.html").is_file():
        _unavailable(f"the book is not built ({HTML / 'index.html'} missing): run `make reproduce` or `make book`")
    if not _chromium() or not CHROMEDRIVER.is_file():
        _unavailable("Chromium or chromedriver not installed (apt-get install chromium chromium-driver; "
                     "`make test` does it when run as root)")
    pytest.importorskip("selenium")
    server = _Server(HTML)
    driver = _driver(tmp_path_factory.mktemp("chromium-profile"))
    driver.set_script_timeout(60)
    seen = {}
    try:
        for page in _pages():
            rel = page.relative_to(HTML).as_posix()
            before = len(server.requests)
            driver.get(server.base + rel)
            info = driver.execute_async_script(_PROBE, PLACEHOLDER_CLASS)
            info["requests"] = server.requests[before:]
            info["console"] = [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
            seen[rel] = info
    finally:
        driver.quit()
        server.close()
    return seen, server.base


def _local_path(url: str, base: str) -> tuple[Path, str] | None:
    """(file under HTML, fragment) for a URL on the test server; None for anything else."""
    if not url.startswith(base):
        return None
    url, fragment = urldefrag(url)
    path = unquote(urlparse(url).path).lstrip("/")
    target = HTML / path
    if path == "" or path.endswith("/"):
        target = target / "index.html"
    return target, fragment


def test_every_page_loads(crawl):
    seen, base = crawl
    assert "intro.html" in seen and "index.html" in seen
    problems = []
    for rel, info in seen.items():
        if not info["title"].strip():
            problems.append(f"{rel}: no title")
        if "404" in info["title"] or "Error response" in info["title"]:
            problems.append(f"{rel}: error page ({info['title']!r})")
        missing = [(path, code) for path, code in info["requests"] if code >= 400]
        if missing:
            problems.append(f"{rel}: requests failed {missing}")
        if info["math_errors"]:
            problems.append(f"{rel}: MathJax errors {info['math_errors']}")
        if info["console"]:
            problems.append(f"{rel}: errors in the browser console {info['console']}")
    assert not problems, "\n".join(problems)
    # index.html redirects to the front page
    assert seen["index.html"]["url"].endswith("intro.html"), seen["index.html"]["url"]


def test_front_page_says_how_it_was_produced(crawl):
    seen, _ = crawl
    intro = (HTML / "intro.html").read_text(encoding="utf-8")
    assert "How this book was produced" in intro and "Profile" in intro
    assert "Data:" in intro
    assert seen["intro.html"]["tex"] >= 7, "the front page shows the paper's equations"


def test_math_is_typeset_by_the_local_mathjax(crawl):
    seen, base = crawl
    intro = seen["intro.html"]
    assert any(r.startswith(base + "_static/mathjax/") for r in intro["resources"]), intro["resources"]
    assert intro["math"] >= intro["tex"] > 0, "MathJax did not typeset the front page's equations"


def test_every_image_exists_and_renders(crawl):
    seen, base = crawl
    problems = []
    for rel, info in seen.items():
        for img in info["images"]:
            if not img["src"].startswith("data:"):
                local = _local_path(img["src"], base)
                if local is None:
                    problems.append(f"{rel}: image from elsewhere {img['src']}")
                    continue
                path, _ = local
                if not path.is_file() or path.stat().st_size == 0:
                    problems.append(f"{rel}: image file missing or empty: {path.relative_to(HTML)}")
            if not (img["complete"] and img["width"] > 0):
                problems.append(f"{rel}: image does not render (naturalWidth {img['width']}): {img['src']}")
    assert not problems, "\n".join(problems)


def test_every_notebook_has_a_page_with_its_figures(crawl):
    """Every notebook has a page; a notebook that ran shows at least one figure (the scoreboard aside)."""
    seen, _ = crawl
    problems = []
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        if nb.name.startswith(("_", ".")):
            continue
        scoreboard = nb.stem == "scoreboard" or nb.stem.endswith("_scoreboard")
        rel = f"_generated/notebooks/{'scoreboard' if scoreboard else nb.stem}.html"
        info = seen.get(rel)
        if info is None:
            problems.append(f"{nb.name}: no page {rel}")
        elif info["placeholder"]:
            if IN_CI and not scoreboard:  # CI builds the book right after running every notebook
                problems.append(f"{nb.name}: placeholder page (the notebook did not run)")
        elif not scoreboard and not any(i["in_article"] for i in info["images"]):
            problems.append(f"{nb.name}: its page shows no figure")
    assert not problems, "\n".join(problems)


def test_internal_links_resolve(crawl):
    seen, base = crawl
    problems = []
    for rel, info in seen.items():
        for href in sorted(set(info["links"])):
            local = _local_path(href, base)
            if local is None:
                continue  # another site, mailto:, javascript:
            path, fragment = local
            if not path.is_file():
                problems.append(f"{rel}: link to a missing file {href}")
            elif fragment and path.suffix == ".html" and unquote(fragment) not in _ids(path):
                problems.append(f"{rel}: link to a missing anchor {href}")
    assert not problems, "\n".join(problems)


def test_nothing_comes_from_the_network(crawl):
    """Every script, style sheet, image and font a page uses is served by the book itself."""
    seen, base = crawl
    problems = []
    for rel, info in seen.items():
        for url in sorted(set(info["assets"] + info["resources"])):
            scheme = urlparse(url).scheme
            if scheme in ("http", "https") and not url.startswith(base):
                problems.append(f"{rel}: loads {url}")
    assert not problems, "\n".join(problems)


def test_no_page_refers_to_a_cdn_in_its_source():
    """Static check of the HTML (no browser needed): no script/style/img src on another host."""
    if not (HTML / "index.html").is_file():
        _unavailable(f"the book is not built ({HTML / 'index.html'} missing)")

    class Refs(HTMLParser):
        def __init__(self):
            super().__init__()
            self.urls = []

        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            if tag in ("script", "img", "iframe", "source", "video", "audio", "embed") and a.get("src"):
                self.urls.append(a["src"])
            if tag == "link" and a.get("href") and (a.get("rel") or "").lower() in (
                    "stylesheet", "preload", "modulepreload", "icon", "shortcut icon", "prefetch", "manifest"):
                self.urls.append(a["href"])

    problems = []
    for page in _pages():
        refs = Refs()
        refs.feed(page.read_text(encoding="utf-8", errors="replace"))
        for url in refs.urls:
            if url.startswith(("http:", "https:", "//")):
                problems.append(f"{page.relative_to(HTML)}: {url}")
    assert not problems, "\n".join(problems)
    assert (HTML / "_static" / "mathjax" / "tex-chtml.js").is_file(), "MathJax is not served locally"


def test_figures_span_the_text_column(crawl):
    """Every figure of a notebook page is shown at least as wide as the text column (within 5 %)."""
    seen, _ = crawl
    problems = []
    for rel, info in seen.items():
        if not rel.startswith("_generated/notebooks/") or not info["figures"]:
            continue
        narrow = [f"{f['src'].rsplit('/', 1)[-1]} ({f['shown']:.0f} px)" for f in info["figures"]
                  if f["shown"] < 0.95 * info["column"]]
        if narrow:
            problems.append(f"{rel}: narrower than the text column ({info['column']:.0f} px): {narrow}")
    assert not problems, "\n".join(problems)


def test_no_code_or_output_is_clipped_and_code_is_folded(crawl):
    """Unfolded, no code line or printed output runs past its box; every notebook page folds its code."""
    seen, _ = crawl
    problems = []
    for rel, info in seen.items():
        if info["clipped"]:
            problems.append(f"{rel}: clipped lines, e.g. {info['clipped'][:3]}")
        if rel.startswith("_generated/notebooks/") and not info["placeholder"] and not info["folded"]:
            problems.append(f"{rel}: no folded code cell")
    assert not problems, "\n".join(problems)


def test_tables_are_rounded_and_have_no_index(crawl):
    """Every table of a notebook page shows rounded numbers (at most 4 significant digits in its
    body) and no pandas row index."""
    seen, _ = crawl
    problems = []
    for rel, info in seen.items():
        if not rel.startswith("_generated/notebooks/"):
            continue
        for k, t in enumerate(info["tables"]):
            if t["index"]:
                problems.append(f"{rel}: table {k} shows a row index")
            if t["long"]:
                problems.append(f"{rel}: table {k} shows unrounded numbers, e.g. {t['long']}")
    assert not problems, "\n".join(problems)
