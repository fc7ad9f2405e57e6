"""What a learner sees of a generated notebook, for the tests (tests/test_binder.py,
tests/test_notebook_render.py, tests/test_colab_like.py): raw MyST in rendered text, the
HTML that nbconvert renders with hidden inputs hidden (as JupyterLab and Colab show them),
and how many images the site's page of a chapter shows."""
from __future__ import annotations

import copy
import html as html_lib
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Raw MyST a CommonMark renderer would show as text: a role (``{name}`` right before a
# backtick), a directive fence (```{name} or :::{name}), a target line ``(label)=``, a
# substitution ``{{ name }}``.
RAW_MYST = re.compile(
    r"\{[a-zA-Z][\w:.-]*\}`"              # {glue:text}`...`, {term}`...`, {cite:p}`...`
    r"|(?:```|~~~|:::)\s*\{[a-zA-Z][\w:.-]*\}"  # ```{admonition} ...
    r"|^\([\w:.-]+\)=\s*$"                # (ch-nf4)=
    r"|\{\{\s*[\w.]+\s*\}\}",             # {{ substitution }}
    re.MULTILINE)


def raw_myst(text: str) -> list[str]:
    """The raw MyST constructs in ``text`` (rendered HTML or Markdown; the HTML's scripts
    and styles are not read)."""
    text = re.sub(r"<(script|style)\b.*?</\1>", "", text, flags=re.DOTALL | re.IGNORECASE)
    return [m.group(0) for m in RAW_MYST.finditer(html_lib.unescape(text))]


def learner_view(nb):
    """A copy of ``nb`` without the inputs JupyterLab and Colab hide
    (``jupyter.source_hidden``; nbconvert's templates honour ``transient.remove_source``)."""
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        if cell.cell_type == "code" and cell.metadata.get("jupyter", {}).get("source_hidden"):
            cell.metadata["transient"] = {"remove_source": True}
            if cell.metadata.get("jupyter", {}).get("outputs_hidden"):
                cell.outputs = []
    return nb


def render_html(nb) -> str:
    """``nb`` as nbconvert's HTML exporter (the lab template) renders it for a learner."""
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter(template_name="lab").from_notebook_node(learner_view(nb))
    return body


def output_images(nb) -> list[str]:
    """Alt text ('' when none) of every image a notebook's outputs show: PNG/SVG/JPEG
    outputs and ``<img>`` in HTML outputs (one per output, HTML preferred)."""
    found = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if "text/html" in data:
                text = "".join(data["text/html"]) if isinstance(data["text/html"], list) else data["text/html"]
                found += [html_lib.unescape(a) for a in re.findall(r'<img\b[^>]*\balt="([^"]*)"', text)]
                found += [""] * len(re.findall(r"<img\b(?![^>]*\balt=)", text))
            elif any(k in data for k in ("image/png", "image/svg+xml", "image/jpeg")):
                found.append("")
    return found


def site_images(page: str, root: Path = ROOT) -> int | None:
    """How many images the built site's page ``page`` (``book/nf4``) shows in its article,
    or None when _build/html has no such page (or it is older than the chapter)."""
    built, source = root / "_build" / "html" / f"{page}.html", root / f"{page}.md"
    if not built.is_file() or built.stat().st_mtime < source.stat().st_mtime:
        return None
    text = built.read_text(encoding="utf-8")
    start = text.find("<article")
    end = text.find("</article>", start)
    article = text[start:end] if start >= 0 and end > start else text
    return len(re.findall(r"<img\b", article))


def source_figures(page: str, root: Path = ROOT) -> int:
    """The figures a chapter pastes with ``{glue:figure}`` or shows with ``{figure}``."""
    text = (root / f"{page}.md").read_text(encoding="utf-8")
    return len(re.findall(r"^(?:```|:::)\{(?:glue:figure|figure|image)\}", text, re.MULTILINE))


GLUED_TEMPLATE = re.compile(r'markdown\(r?("""|\'\'\')(.*?)\1\)', re.DOTALL)
NUMERIC_SPECS = set("bcdoxXeEfFgGn%")


def glued_fields(source: str) -> list[tuple[str, str]]:
    """The ``(name, spec)`` fields a glued paragraph's cell (``markdown(r'''...''')``,
    written by tools/sync_notebooks.py) fills with this run's values."""
    import string

    found = []
    for _, template in GLUED_TEMPLATE.findall(source):
        found += [(name, spec or "") for _, name, spec, _ in string.Formatter().parse(template) if name]
    return found
