"""The built site in a real browser: headless Debian Chromium driven by Playwright.

Builds the book with warnings as errors into ``_build/`` (the execution cache makes a
rebuild quick), serves ``_build/html`` on 127.0.0.1 and checks every page: it loads with
no console errors and no failed requests, every image loads, every formula is typeset by
MathJax (shipped with the site, no CDN), the launch links point at notebooks that exist
in the repository, and the search page finds "NF4". A screenshot of each page is saved
to ``_build/screenshots/``.

Skips with a reason when jupyter-book, playwright or chromium is missing (``.ci/run``
installs chromium, so CI runs it).
"""
from __future__ import annotations

import functools
import http.server
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
SHOTS = ROOT / "_build" / "screenshots"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
]
pytestmark = pytest.mark.site


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture(scope="module")
def site():
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    if not jupyter_book.exists():
        pytest.skip("jupyter-book is not installed (pip install -e '.[book]')")
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[site]')")
    if _chromium() is None:
        pytest.skip("chromium is not installed (apt-get install chromium); .ci/run installs it")
    build = subprocess.run(
        [str(jupyter_book), "build", str(ROOT), "--builder", "html", "-W", "--keep-going"],
        capture_output=True, text=True, timeout=1800,
    )
    assert build.returncode == 0, f"book build failed:\n{build.stdout[-6000:]}\n{build.stderr[-3000:]}"
    handler = functools.partial(_QuietHandler, directory=str(HTML))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def browser(site):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=_chromium(), args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


def content_pages() -> list[str]:
    skip = {"genindex.html", "search.html", "py-modindex.html"}
    pages = []
    for path in sorted(HTML.rglob("*.html")):
        rel = path.relative_to(HTML).as_posix()
        if path.name in skip or rel.startswith(("_static/", "_sources/", "_images/")):
            continue
        if "http-equiv=\"refresh\"" in path.read_text(errors="replace")[:2000].lower():  # redirect stub (index.html)
            continue
        pages.append(rel)
    return pages


def open_page(browser, url: str):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems: list[str] = []
    def on_console(m):
        where = (m.location or {}).get("url", "")
        if m.type == "error" and not where.endswith("/favicon.ico"):
            problems.append(f"console {m.type}: {m.text} ({where})")

    page.on("console", on_console)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url} ({r.failure})")
            if not r.url.endswith("/favicon.ico") else None)
    page.on("response", lambda r: problems.append(f"HTTP {r.status}: {r.url}")
            if r.status >= 400 and not r.url.endswith("/favicon.ico") else None)
    page.goto(url, wait_until="load")
    return page, problems


def test_every_page_loads_cleanly(site, browser):
    pages = content_pages()
    assert "book/index.html" in pages and len(pages) >= 3
    SHOTS.mkdir(parents=True, exist_ok=True)
    failures = {}
    for rel in pages:
        page, problems = open_page(browser, f"{site}/{rel}")
        html = (HTML / rel).read_text()
        # every image has loaded and has a size
        broken = page.evaluate(
            "Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)"
        )
        problems += [f"image not loaded: {src}" for src in broken]
        # math: every formula Sphinx emitted is typeset by MathJax
        n_math = len(re.findall(r'class="math[ "]', html))
        if n_math:
            page.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.promise", timeout=20000)
            page.evaluate("() => MathJax.startup.promise")
            typeset = page.evaluate("document.querySelectorAll('mjx-container').length")
            if typeset < n_math:
                problems.append(f"{n_math} formulas but only {typeset} typeset by MathJax")
            if page.evaluate("document.querySelectorAll('mjx-merror').length"):
                problems.append("MathJax reported a formula error")
        page.screenshot(path=str(SHOTS / (rel.replace("/", "__") + ".png")), full_page=True)
        page.close()
        if problems:
            failures[rel] = problems
    assert not failures, failures


def test_math_is_rendered_somewhere(site, browser):
    pages_with_math = [p for p in content_pages() if re.search(r'class="math[ "]', (HTML / p).read_text())]
    assert pages_with_math, "no page has math; the MathJax check would test nothing"
    page, problems = open_page(browser, f"{site}/{pages_with_math[0]}")
    page.evaluate("() => MathJax.startup.promise")
    assert page.evaluate("document.querySelectorAll('mjx-container').length") > 0
    assert not problems, problems
    page.close()


def test_search_finds_nf4(site, browser):
    page, problems = open_page(browser, f"{site}/search.html?q=NF4")
    page.wait_for_selector("#search-results ul.search li a", timeout=20000)
    hits = page.eval_on_selector_all("#search-results ul.search li a", "els => els.map(e => e.href)")
    assert hits and any("book/" in h for h in hits)
    assert not problems, problems
    page.close()


def test_launch_links_point_at_existing_notebooks(site):
    missing, checked = [], 0
    for rel in content_pages():
        html = (HTML / rel).read_text()
        for href in re.findall(r'href="(https://(?:colab\.research\.google\.com|mybinder\.org)[^"]+)"', html):
            href = unquote(href.replace("&amp;", "&"))
            m = re.search(r"/blob/[^/]+/(.+\.ipynb)$", href) or re.search(r"urlpath=lab/tree/(.+\.ipynb)", href)
            assert m, f"launch link of {rel} does not open a notebook: {href}"
            checked += 1
            if not (ROOT / m.group(1)).is_file():
                missing.append((rel, m.group(1)))
    assert checked >= 2, "no launch links found"
    assert not missing, missing
    for nb in ROOT.glob("notebooks/*.ipynb"):  # and every generated notebook is reachable from a page
        assert any(nb.name in (HTML / p).read_text() for p in content_pages()), f"no page launches {nb.name}"


def test_site_is_self_contained(site):
    """No page loads a script, stylesheet or font from another host (the site works offline)."""
    external = []
    for rel in content_pages():
        for tag, url in re.findall(r'<(script|link)[^>]+(?:src|href)="(https?://[^"]+)"', (HTML / rel).read_text()):
            if tag == "link" and not url.endswith((".css", ".js", ".woff", ".woff2")):
                continue
            external.append((rel, urlparse(url).netloc, url))
    assert not external, external


def test_no_kernel_slider_swaps_the_figure(site, browser):
    """The explorers page's precomputed sweep: moving the slider changes picture, alt text
    and label, with no kernel behind the page."""
    page, problems = open_page(browser, f"{site}/book/explorers.html")
    slider = page.locator('div[id^="int4ref-frames-"] input[type="range"]').first
    assert slider.count() == 1, "no frame slider on the explorers page"
    root = page.locator('div[id^="int4ref-frames-"]').first
    n = int(slider.get_attribute("max")) + 1
    assert n >= 2
    seen = set()
    for i in range(n):
        slider.evaluate("(el, v) => { el.value = v; el.dispatchEvent(new Event('input')); }", str(i))
        img = root.locator("img")
        seen.add((img.get_attribute("src")[-64:], img.get_attribute("alt"), root.locator("output").inner_text()))
        assert page.evaluate("(el) => el.complete && el.naturalWidth > 0", img.element_handle())
    assert len(seen) == n, "some slider positions show the same picture, alt text and label"
    assert not problems, problems
    page.close()


# The chapters' own kernel-free explorers (int4ref.explore.static_explorer): each chapter
# that teaches with an explorer shows its precomputed states on the site.
CHAPTER_STATIC_EXPLORERS = ("group-quant", "nf4", "double-quant", "packing")


@pytest.mark.parametrize("chapter", CHAPTER_STATIC_EXPLORERS)
def test_a_chapters_static_explorer_answers_its_controls(site, browser, chapter):
    """Moving each control of the chapter's static explorer (a range slider or a menu)
    changes what it shows (picture, alt text, numbers), with no kernel behind the page."""
    page, problems = open_page(browser, f"{site}/book/{chapter}.html")
    root = page.locator("div.int4ref-static-explorer").first
    assert root.count() == 1, f"no static explorer on {chapter}.html"
    controls = root.locator("input[type=range], select")
    assert controls.count() >= 1

    def state():
        view = root.locator(".int4ref-view").first
        shown = view.get_attribute("src") or view.inner_html()
        return shown[-96:], view.get_attribute("alt"), root.locator("table.int4ref-numbers").inner_text()

    for k in range(controls.count()):
        ctl = controls.nth(k)
        tag = ctl.evaluate("(el) => el.tagName")
        values = ([o.get_attribute("value") for o in ctl.locator("option").all()] if tag == "SELECT"
                  else [str(v) for v in range(int(ctl.get_attribute("min") or 0), int(ctl.get_attribute("max")) + 1)])
        assert len(values) >= 2, f"{chapter}: control {k} offers one state"
        start = ctl.evaluate("(el) => el.value")
        seen = set()
        for v in values:
            ctl.evaluate("(el, v) => { el.value = v; el.dispatchEvent(new Event('input')); "
                         "el.dispatchEvent(new Event('change')); }", v)
            seen.add(state())
        assert len(seen) >= 2, f"{chapter}: moving control {k} changes nothing on the page"
        ctl.evaluate("(el, v) => { el.value = v; el.dispatchEvent(new Event('change')); }", start)
    img = root.locator("img.int4ref-view")
    if img.count():
        assert page.evaluate("(el) => el.complete && el.naturalWidth > 0", img.first.element_handle())
    assert not problems, problems
    page.close()


# A reader must never see a Python error where the book meant to show a result. Output that
# an error message is the point of (int4ref's own "bad input" messages) is printed by the
# chapters without the exception's class name, so nothing legitimate matches these.
ERROR_IN_OUTPUT = re.compile(r"Traceback \(most recent call last\)|\b[A-Z]\w*(?:Error|Exception)\b: ")


def error_outputs(html: str) -> list[str]:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    found = []
    for out in soup.select("div.cell_output, div.output"):
        text = out.get_text(" ", strip=True)
        m = ERROR_IN_OUTPUT.search(text)
        if m:
            found.append(text[max(0, m.start() - 80): m.end() + 120])
    return found


def test_error_outputs_are_detected():
    bad = ('<div class="cell_output docutils container"><pre>Traceback (most recent call last):\n'
           "ModuleNotFoundError: No module named 'cupy'</pre></div>")
    assert error_outputs(bad)
    assert error_outputs('<div class="cell_output"><pre>ValueError: group_size must be positive</pre></div>')
    assert not error_outputs('<div class="cell_output"><pre>int4ref: zero-point -1 does not fit</pre></div>')
    assert not error_outputs("<p>A ValueError: is raised for bad input.</p>")   # prose is not output


def test_no_page_shows_a_python_error(site):
    failures = {}
    for rel in content_pages():
        found = error_outputs((HTML / rel).read_text())
        if found:
            failures[rel] = found
    assert not failures, failures
