"""Binder's recipe works, and the notebooks read like the site there: a fresh virtual
environment set up by binder/postBuild executes every notebook in notebooks/ from a fresh
kernel (nbclient), as a Binder user would run it; then nbconvert's HTML exporter renders
each executed notebook as JupyterLab shows it (hidden inputs hidden), and the render must
hold no raw MyST and at least as many images as the site's page (or, without a built
site, one per ``{glue:figure}`` of the chapter, each with its alt text).

Then a real browser on the Binder experience: JupyterLab 4, installed into that venv,
serves a copy of two notebooks on 127.0.0.1, and headless chromium (Playwright) opens
them, runs all cells from the Run menu and reads what a learner sees: a chapter
(group-quant) with its Markdown rendered (no raw MyST), every figure with its alt text and
caption and every glued paragraph filled with numbers, and the live format explorer
(explorers), whose outlier slider, moved with the keyboard, changes its numbers to the
ones int4ref computes. Screenshots go to ``_build/jupyterlab/``. Those two tests skip
with a reason when playwright or chromium is missing (``.ci/run`` installs chromium).

Slow (it installs the book's dependencies from PyPI into a new venv), so it is marked
``binder``; ``make test`` runs it, and CI with it. The venv is made once per module
(``binder_venv``), the executed notebooks too (``binder_run``).
"""
from __future__ import annotations

import contextlib
import html as html_lib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from notebook_checks import (  # noqa: E402
    NUMERIC_SPECS,
    glued_fields,
    output_images,
    raw_myst,
    render_html,
    site_images,
    source_figures,
)

pytestmark = pytest.mark.binder
NOTEBOOKS = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "notebooks").glob("*.ipynb"))

EXECUTE = textwrap.dedent(
    """
    import sys, nbformat
    from nbclient import NotebookClient
    out_dir, paths = sys.argv[1], sys.argv[2:]
    failures = []
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        try:
            NotebookClient(nb, timeout=600, kernel_name="python3",
                           resources={"metadata": {"path": "notebooks"}}).execute()
            print("ok", path, flush=True)
        except Exception as exc:  # report every failing notebook, not just the first
            failures.append(f"{path}: {type(exc).__name__}: {str(exc)[-2000:]}")
        nbformat.write(nb, f"{out_dir}/{path.split('/')[-1]}")
    print("\\n".join(failures))
    sys.exit(1 if failures else 0)
    """
)


@pytest.fixture(scope="module")
def binder_venv(tmp_path_factory):
    """(venv, env): a fresh virtual environment set up by binder/postBuild."""
    tmp = tmp_path_factory.mktemp("binder")
    venv = tmp / "binder-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = dict(os.environ, PATH=f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}", VIRTUAL_ENV=str(venv))
    env.pop("PYTHONPATH", None)
    setup = subprocess.run(["bash", "binder/postBuild"], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=1500)
    assert setup.returncode == 0, f"binder/postBuild failed:\n{setup.stdout[-3000:]}\n{setup.stderr[-3000:]}"
    return venv, env


@pytest.fixture(scope="module")
def binder_run(binder_venv, tmp_path_factory):
    """(venv, env, executed notebooks' folder, the nbclient run)."""
    assert NOTEBOOKS, "no notebooks to run"
    venv, env = binder_venv
    executed = tmp_path_factory.mktemp("executed")
    run = subprocess.run([str(venv / "bin" / "python"), "-c", EXECUTE, str(executed), *NOTEBOOKS], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=1800)
    return venv, env, executed, run


def test_binder_environment_runs_every_notebook(binder_run):
    _, _, _, run = binder_run
    assert run.returncode == 0, (
        f"notebooks failed in the Binder environment:\n{run.stdout[-6000:]}\n{run.stderr[-3000:]}")
    assert run.stdout.count("ok ") == len(NOTEBOOKS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: Path(p).stem)
def test_rendered_notebook_reads_like_the_site(binder_run, path):
    import nbformat

    _, _, executed, _ = binder_run
    done = executed / Path(path).name
    assert done.is_file(), f"{path} was not executed"
    nb = nbformat.read(done, as_version=4)
    html = render_html(nb)
    raw = raw_myst(html)
    assert not raw, f"{path}: raw MyST in what a learner sees: {sorted(set(raw))[:10]}"
    page = nb.metadata["int4book"]["generated_from"].removesuffix(".md")
    images = output_images(nb)
    on_site = site_images(page)
    expected = on_site if on_site is not None else source_figures(page)
    assert len(images) >= expected, (f"{path}: {len(images)} figures, the site's page shows {expected}"
                                     + ("" if on_site is not None else " (glue:figure count; no built site)"))
    for cell in nb.cells:  # every pasted figure: an image with its alt text, then its caption
        if "int4book-figure" in cell.metadata.get("tags", []):
            kinds = [sorted(o.get("data", {})) or [o.get("output_type")] for o in cell.outputs]  # bundle order varies
            assert len(kinds) == 2 and "text/html" in kinds[0] and "text/markdown" in kinds[1], (
                f"{path}: figure cell outputs {kinds}")
            [alt] = output_images(nbformat.from_dict({"cells": [cell]}))
            assert alt, f"{path}: a figure without alt text"
            assert cell.outputs[1]["data"]["text/markdown"].startswith("**Figure ")
    json.dumps(nb)


# -- JupyterLab in a real browser ----------------------------------------------------------
# Binder starts JupyterLab; binder/postBuild installs only the book's dependencies (Binder's
# image brings JupyterLab itself), so the test installs it into the Binder venv. JupyterLab
# serves a copy of the notebooks, so that its autosave never writes into the repository.
JUPYTERLAB = "jupyterlab>=4,<5"
LAB_CHAPTER, LAB_EXPLORERS = "group-quant", "explorers"
LAB_SHOTS = ROOT / "_build" / "jupyterlab"
# A Markdown cell appended to the served copy of the chapter: the raw-MyST check must find
# exactly what it holds, so a check that finds nothing can be trusted.
CANARY = "Canary: {term}`scale` and\n\n```{note}\nraw\n```\n"
CANARY_RAW = ["{term}`", "```{note}"]

# The notebook panel's state, read through the JupyterLab application object that
# ``LabApp.expose_app_in_browser`` exposes as ``window.jupyterapp``.
JS_KERNEL_IDLE = """path => { const nb = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const kernel = nb && nb.context && nb.context.path === path && nb.sessionContext
                 && nb.sessionContext.session && nb.sessionContext.session.kernel;
  return !!(kernel && kernel.status === 'idle' && nb.content && nb.content.widgets.length); }"""
JS_RUN_FINISHED = """path => { const nb = window.jupyterapp.shell.currentWidget;
  const kernel = nb.context.path === path && nb.sessionContext.session && nb.sessionContext.session.kernel;
  const code = nb.content.widgets.filter(c => c.model.type === 'code');
  const pending = code.some(c => c.promptNode && c.promptNode.textContent.includes('*'));
  const failed = code.some(c => c.model.outputs.toJSON().some(o => o.output_type === 'error'));
  return !!kernel && kernel.status === 'idle' && !pending
         && (failed || code.every(c => c.model.executionCount !== null)); }"""
# Per cell: its type, tags, errors, and what it shows: each rendered Markdown as Markdown-ish
# text (inline code back in backticks, a code block's language after a fence, so that a raw
# role or directive reads as in the source; typeset math left out), the plain text of its
# outputs, and its output images (alt text, whether the picture loaded).
JS_CELLS = """() => window.jupyterapp.shell.currentWidget.content.widgets.map(c => {
  const md = Array.from(c.node.querySelectorAll('.jp-RenderedMarkdown')).map(el => {
    const copy = el.cloneNode(true);
    copy.querySelectorAll('script, style, mjx-container, .MathJax').forEach(e => e.remove());
    copy.querySelectorAll('pre > code').forEach(e => {
      const lang = Array.from(e.classList).find(k => k.startsWith('language-'));
      e.textContent = '```' + (lang ? lang.slice(9) : '') + '\\n' + e.textContent + '\\n```'; });
    copy.querySelectorAll('code').forEach(e => {
      if (e.parentElement.tagName !== 'PRE') e.textContent = '`' + e.textContent + '`'; });
    copy.querySelectorAll('p, li, h1, h2, h3, h4, h5, h6, pre, blockquote, tr, div').forEach(e => {
      e.prepend('\\n'); e.append('\\n'); });
    return copy.textContent; });
  const outputs = Array.from(c.node.querySelectorAll('.jp-OutputArea-output'));
  return {type: c.model.type, tags: c.model.getMetadata('tags') || [],
          rendered: c.model.type !== 'markdown' || c.rendered, markdown: md,
          errors: c.model.type === 'code'
            ? c.model.outputs.toJSON().filter(o => o.output_type === 'error').map(o => o.ename + ': ' + o.evalue)
            : [],
          output_markdown: outputs.flatMap(o => o.matches('.jp-RenderedMarkdown') ? [o]
                                                : Array.from(o.querySelectorAll('.jp-RenderedMarkdown')))
                                  .map(e => e.textContent).join('\\n'),
          images: outputs.flatMap(o => Array.from(o.querySelectorAll('img')).map(i => ({
              alt: i.getAttribute('alt') || '', loaded: i.complete && i.naturalWidth > 0}))),
          text: outputs.map(o => o.textContent).join('\\n')}; })"""


@contextlib.contextmanager
def jupyterlab_server(venv: Path, env: dict, tmp: Path):
    """JupyterLab 4 from the Binder venv on 127.0.0.1 (a free port, a random token), serving
    ``tmp/root`` (a copy of the notebooks); yields (base URL, token, install seconds)."""
    started = time.monotonic()
    pip = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", JUPYTERLAB], env=env,
                         capture_output=True, text=True, timeout=900)
    assert pip.returncode == 0, f"pip install {JUPYTERLAB} failed:\n{pip.stdout[-3000:]}\n{pip.stderr[-3000:]}"
    install_s = time.monotonic() - started
    root = tmp / "root"
    (root / "notebooks").mkdir(parents=True)
    for name in (LAB_CHAPTER, LAB_EXPLORERS):
        shutil.copy(ROOT / "notebooks" / f"{name}.ipynb", root / "notebooks")
    chapter = json.loads((root / "notebooks" / f"{LAB_CHAPTER}.ipynb").read_text())
    chapter["cells"].append({"cell_type": "markdown", "id": "int4book-canary", "metadata": {}, "source": CANARY})
    (root / "notebooks" / f"{LAB_CHAPTER}.ipynb").write_text(json.dumps(chapter))
    # a private Jupyter configuration: no user settings, kernels or workspaces from $HOME,
    # no news or update check (they would ask for the network and cover the notebook)
    dirs = {k: tmp / k.lower() for k in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR",
                                         "JUPYTERLAB_SETTINGS_DIR", "JUPYTERLAB_WORKSPACES_DIR", "IPYTHONDIR")}
    for d in dirs.values():
        d.mkdir()
    notification = dirs["JUPYTERLAB_SETTINGS_DIR"] / "@jupyterlab" / "apputils-extension"
    notification.mkdir(parents=True)
    (notification / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    (dirs["JUPYTER_CONFIG_DIR"] / "jupyter_lab_config.json").write_text(json.dumps({"LabApp": {
        "news_url": None, "check_for_updates_class": "jupyterlab.handlers.announcements.NeverCheckForUpdate",
        "expose_app_in_browser": True}}))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = secrets.token_hex(16)
    log_path = tmp / "jupyterlab.log"
    with open(log_path, "w") as log:
        lab = subprocess.Popen(
            [str(venv / "bin" / "jupyter-lab"), "--no-browser", "--ServerApp.ip=127.0.0.1",
             f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
             f"--ServerApp.root_dir={root}", "--allow-root"],
            env={**env, **{k: str(v) for k, v in dirs.items()}}, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5) as r:
                    assert json.load(r)["started"]
                break
            except OSError:
                assert lab.poll() is None, f"JupyterLab exited:\n{log_path.read_text()[-3000:]}"
                assert time.monotonic() < deadline, f"JupyterLab did not answer:\n{log_path.read_text()[-3000:]}"
                time.sleep(0.3)
        yield base, token, install_s
    finally:
        lab.terminate()
        try:
            lab.wait(30)
        except subprocess.TimeoutExpired:
            lab.kill()
            lab.wait()


@pytest.fixture(scope="module")
def lab_browser(request, tmp_path_factory):
    """(a chromium page on JupyterLab from the Binder venv, its base URL and token)."""
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[site]')")
    from test_site import CHROMIUM_ARGS, _chromium

    if _chromium() is None:
        pytest.skip("chromium is not installed (apt-get install chromium); .ci/run installs it")
    venv, env = request.getfixturevalue("binder_venv")  # only now: a skip above costs no venv
    from playwright.sync_api import sync_playwright

    with jupyterlab_server(venv, env, tmp_path_factory.mktemp("jupyterlab")) as (base, token, install_s):
        print(f"\npip install {JUPYTERLAB} into the Binder venv: {install_s:.1f} s")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=_chromium(), args=CHROMIUM_ARGS, headless=True)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            try:
                yield page, base, token
            finally:
                browser.close()


def run_all_cells(page, base: str, token: str, name: str, timeout_s: float = 300) -> list[dict]:
    """Open notebooks/<name>.ipynb in JupyterLab, run it as a learner does (menu Run > Run
    All Cells), wait for the kernel to finish, and return what each cell shows (JS_CELLS)."""
    shut_down_kernels(base, token)  # a notebook opened before: its kernel is done
    path = f"notebooks/{name}.ipynb"
    page.goto(f"{base}/lab/tree/{path}?reset&token={token}", wait_until="load")  # reset: only this notebook
    page.wait_for_function(JS_KERNEL_IDLE, arg=path, timeout=120_000, polling=250)
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
    page.wait_for_function(JS_RUN_FINISHED, arg=path, timeout=timeout_s * 1000, polling=500)
    cells = page.evaluate(JS_CELLS)
    errors = [e for c in cells for e in c["errors"]]
    assert not errors, f"{name}: cells failed in JupyterLab: {errors}"
    return cells


def shut_down_kernels(base: str, token: str) -> None:
    """End every kernel session of the server (the notebook a test has finished with)."""
    auth = {"Authorization": f"token {token}"}
    with urllib.request.urlopen(urllib.request.Request(f"{base}/api/sessions", headers=auth), timeout=30) as r:
        sessions = json.load(r)
    for session in sessions:
        request = urllib.request.Request(f"{base}/api/sessions/{session['id']}", headers=auth, method="DELETE")
        urllib.request.urlopen(request, timeout=30).close()


def test_jupyterlab_shows_a_chapter_as_the_site_does(lab_browser):
    """group-quant in JupyterLab after Run All: Markdown rendered without raw MyST, every
    figure drawn with its alt text and caption, every glued paragraph filled with numbers."""
    import nbformat

    page, base, token = lab_browser
    started = time.monotonic()
    cells = run_all_cells(page, base, token, LAB_CHAPTER)
    print(f"{LAB_CHAPTER}: opened and ran in JupyterLab in {time.monotonic() - started:.1f} s")
    nb = nbformat.read(ROOT / "notebooks" / f"{LAB_CHAPTER}.ipynb", as_version=4)
    assert len(cells) == len(nb.cells) + 1, "JupyterLab shows another notebook than the chapter and its canary"
    *cells, canary = cells
    assert canary["type"] == "markdown" and sorted(raw_myst("\n".join(canary["markdown"]))) == sorted(CANARY_RAW), (
        f"the raw-MyST check does not see the canary's raw MyST: {canary['markdown']}")

    assert all(c["rendered"] for c in cells), "a Markdown cell is shown as source, not rendered"
    raw = [r for c in cells for text in c["markdown"] for r in raw_myst(text)]
    assert not raw, f"{LAB_CHAPTER}: raw MyST in what JupyterLab shows: {sorted(set(raw))[:10]}"

    source_page = nb.metadata["int4book"]["generated_from"].removesuffix(".md")
    images = [img for c in cells for img in c["images"]]
    assert all(img["loaded"] for img in images), f"{LAB_CHAPTER}: an image did not load: {images}"
    on_site, figures = site_images(source_page), source_figures(source_page)
    assert len(images) >= (on_site if on_site is not None else figures), (
        f"{LAB_CHAPTER}: JupyterLab shows {len(images)} images, the site's page {on_site}, the source {figures}")
    assert sum(1 for img in images if img["alt"]) >= figures >= 1
    for cell, shown in zip(nb.cells, cells):
        tags = cell.metadata.get("tags", [])
        assert shown["tags"] == tags
        if "int4book-figure" in tags:  # the picture with its alt text, its caption below
            assert len(shown["images"]) == 1 and shown["images"][0]["alt"], f"figure cell shows {shown['images']}"
            assert shown["output_markdown"].lstrip().startswith("Figure "), shown["output_markdown"][:200]
        if "int4book-text" in tags:  # a glued paragraph: this run's numbers, no empty field
            fields = glued_fields(cell.source)
            text = shown["output_markdown"]
            assert text.strip(), f"a glued paragraph shows nothing: {cell.source[:200]}"
            unfilled = [name for name, _ in fields if "{" + name in text]
            assert not unfilled, f"glued fields not filled: {unfilled}"
            numeric = sum(1 for _, spec in fields if spec and spec[-1] in NUMERIC_SPECS)
            numbers = re.findall(r"\d+(?:[.,]\d+)*", text)
            assert len(numbers) >= numeric, f"{numeric} numeric fields, {len(numbers)} numbers in: {text[:300]}"
    glued = [c for c in nb.cells if "int4book-text" in c.metadata.get("tags", [])]
    assert len(glued) >= 5, "the chapter was expected to glue numbers into several paragraphs"

    LAB_SHOTS.mkdir(parents=True, exist_ok=True)
    for shot, tag, where in (("glued", "int4book-text", "center"), ("figure-1", "int4book-figure", "start")):
        first = next(i for i, c in enumerate(nb.cells) if tag in c.metadata.get("tags", []))
        page.locator(".jp-Notebook .jp-Cell").nth(first).evaluate(f"e => e.scrollIntoView({{block: '{where}'}})")
        page.wait_for_timeout(300)
        page.screenshot(path=str(LAB_SHOTS / f"{LAB_CHAPTER}-{shot}.png"))


def explorer_numbers(explorer) -> list[list[str]]:
    """The numbers table of an int4ref explorer (what ``numbers_html`` writes): rows of
    [label, value]."""
    rows = re.findall(r"<tr>(.*?)</tr>", explorer.numbers_html(explorer.result))
    return [[html_lib.unescape(re.sub(r"<[^>]+>", "", td)).strip() for td in re.findall(r"<td[^>]*>(.*?)</td>", row)]
            for row in rows]


def test_jupyterlab_explorer_slider_changes_its_numbers(lab_browser):
    """The explorers notebook in JupyterLab after Run All: the live format explorer (an
    ipywidgets box) shows the numbers int4ref computes for its settings, and moving its
    outlier slider with the keyboard changes them to the numbers for the new setting."""
    from int4ref.explore import FormatExplorer

    page, base, token = lab_browser
    started = time.monotonic()
    run_all_cells(page, base, token, LAB_EXPLORERS)
    print(f"{LAB_EXPLORERS}: opened and ran in JupyterLab in {time.monotonic() - started:.1f} s")
    explorer = page.locator(".jp-OutputArea-output .widget-vbox",
                            has=page.locator(".widget-html", has_text="Format explorer")).first
    explorer.scroll_into_view_if_needed()
    slider = explorer.locator(".widget-slider", has_text="outlier")
    handle, readout = slider.locator(".noUi-handle"), slider.locator(".widget-readout")
    table = explorer.locator(".widget-html table").first
    shown = """t => Array.from(t.rows).map(r => Array.from(r.cells).map(c => c.textContent.trim()))"""

    reference = FormatExplorer()
    reference.update()
    assert readout.inner_text().strip() == "0"
    before = table.evaluate(shown)
    assert before == explorer_numbers(reference), "the explorer's numbers differ from int4ref's"
    picture = explorer.locator("img").first.get_attribute("src")
    LAB_SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(LAB_SHOTS / "explorer-before.png"))

    handle.focus()
    for _ in range(5):
        page.keyboard.press("ArrowRight")  # one step (1 sigma) each
    reference = FormatExplorer(outlier=5.0)
    reference.update()
    expected = explorer_numbers(reference)
    assert expected != before
    deadline = time.monotonic() + 60  # each step redraws; the HTML widget replaces its table
    while (now := table.evaluate(shown)) != expected and time.monotonic() < deadline:
        page.wait_for_timeout(200)
    assert now == expected, (f"after the slider moved to {readout.inner_text()!r} the explorer shows {now}, "
                             f"int4ref computes {expected}")
    page.wait_for_function(JS_KERNEL_IDLE, arg=f"notebooks/{LAB_EXPLORERS}.ipynb", timeout=60_000)
    assert readout.inner_text().strip() == "5"
    assert explorer.locator("img").first.get_attribute("src") != picture, "the picture did not change"
    page.screenshot(path=str(LAB_SHOTS / "explorer-after.png"))
