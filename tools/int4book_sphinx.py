"""Sphinx extension of the INT4 book (loaded through ``sphinx.local_extensions`` in
_config.yml, which also puts tools/ on sys.path).

Launch buttons. sphinx-book-theme builds the Binder and Colab links of a page from the
page's own source path: ``book/<name>.md``, or a same-stem ``.ipynb`` sitting next to
it. Colab opens only ``.ipynb``, and the book's notebooks are generated into
``notebooks/`` (tools/sync_notebooks.py), which the theme does not look at. So after the
theme has built its links, this rewrites the path in each of them to
``notebooks/<name>.ipynb``; repository, branch and hub URLs stay the theme's, read from
_config.yml. A page whose notebook does not exist, or a link that no longer contains the
path the theme is known to use, is a warning, so ``-W`` fails the build instead of the
site shipping a dead link.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path, PurePosixPath

from sphinx.util import logging
from sync_notebooks import notebook_for

logger = logging.getLogger(__name__)


def retarget_launch_buttons(app, pagename, templatename, context, doctree):
    groups = [b for b in context.get("header_buttons", []) if b.get("label") == "launch-buttons"]
    if not groups:
        return
    srcdir = Path(app.srcdir)
    source = PurePosixPath(Path(app.env.doc2path(pagename)).relative_to(srcdir).as_posix())
    notebook = notebook_for(source)
    if not (srcdir / notebook).is_file():
        logger.warning("launch buttons of %s would open %s, which does not exist; "
                       "run `make notebooks`", source, notebook, location=pagename)
    # Paths as the theme writes them: relative to the repository root.
    prefix = app.config.html_theme_options.get("path_to_docs", "").strip("/")
    prefix = f"{prefix}/" if prefix else ""
    theme_paths = [f"{prefix}{pagename}{suffix}" for suffix in (source.suffix, ".ipynb")]
    for group in groups:
        for button in group.get("buttons", []):
            url = button.get("url")
            if not url:  # e.g. the Thebe button runs JavaScript, no link
                continue
            for old in theme_paths:
                at = url.rfind(old)
                if at >= 0:
                    button["url"] = f"{url[:at]}{prefix}{notebook}{url[at + len(old):]}"
                    break
            else:
                logger.warning("cannot point the %s launch link %s at %s",
                               button.get("text"), url, notebook, location=pagename)


# MathJax. Sphinx loads MathJax 3 from a CDN by default; the book ships its own copy (from
# the django-static-mathjax package on PyPI, MathJax 3.2.2, no dependencies) so that the
# site renders math offline, and its browser test can check that it does.
MATHJAX_PARTS = ["tex-mml-chtml.js", "input", "output/chtml", "ui", "a11y", "adaptors"]


def _mathjax_source() -> Path | None:
    spec = importlib.util.find_spec("mathjax")
    if spec is None or not spec.submodule_search_locations:
        return None
    es5 = Path(list(spec.submodule_search_locations)[0]) / "static" / "mathjax" / "es5"
    return es5 if (es5 / "tex-mml-chtml.js").is_file() else None


def use_local_mathjax(app, config):
    if _mathjax_source() is None:
        logger.warning("django-static-mathjax is not installed: math would load MathJax from a CDN; "
                       "install the book extras (pip install -e '.[book]')")
        return
    config.mathjax_path = "mathjax/tex-mml-chtml.js"  # relative to _static


def copy_mathjax(app, exception):
    source = _mathjax_source()
    if exception is not None or source is None or app.builder.format != "html":
        return
    target = Path(app.outdir) / "_static" / "mathjax"
    for part in MATHJAX_PARTS:
        src, dst = source / part, target / part
        if src.is_dir():
            shutil.copytree(src, dst, dirs_exist_ok=True)
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)


def drop_thebe_scripts(app, pagename, templatename, context, doctree):
    """The book has no Thebe (launch_buttons.thebe is false), but sphinx-thebe still adds its
    config script, and adds it twice, which is a JavaScript error on every page
    ("Identifier 'THEBE_JS_URL' has already been declared"). Leave its scripts out."""
    def is_thebe(asset) -> bool:
        name = getattr(asset, "filename", asset) or ""
        body = getattr(asset, "attributes", {}).get("body", "")
        return "thebe" in str(name) or "THEBE_JS_URL" in body

    for key in ("script_files", "css_files"):
        if key in context:
            context[key] = [a for a in context[key] if not is_thebe(a)]


def hide_solutions_for_courses(app, config):
    """``INT4BOOK_HIDE_SOLUTIONS=1`` builds the course edition of the site: sphinx-exercise
    leaves out every ``solution`` (exercises/book/*.md); nothing else changes."""
    if os.environ.get("INT4BOOK_HIDE_SOLUTIONS", "") not in ("", "0"):
        config.hide_solutions = True


def reread_front_pages(app, env, added, changed, removed):
    """The front pages list the chapters, assignments and modules (tools/frontpages.py): read
    them again at every build, so that an incremental build does not keep stale lists."""
    return [doc for doc in ("book/index", "book/preface") if doc in env.found_docs]


def setup(app):
    app.connect("env-get-outdated", reread_front_pages)
    app.connect("config-inited", hide_solutions_for_courses)
    app.connect("html-page-context", drop_thebe_scripts)
    app.connect("config-inited", use_local_mathjax)
    app.connect("build-finished", copy_mathjax)
    # sphinx-book-theme adds the launch buttons at priority 501; run after it.
    app.connect("html-page-context", retarget_launch_buttons, priority=600)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
