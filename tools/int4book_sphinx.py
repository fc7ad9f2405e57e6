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


def setup(app):
    # sphinx-book-theme adds the launch buttons at priority 501; run after it.
    app.connect("html-page-context", retarget_launch_buttons, priority=600)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
