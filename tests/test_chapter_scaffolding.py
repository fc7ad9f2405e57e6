"""Every chapter teaches with the same frame (issue 13, "Make every chapter teach"):

* near the top, before the first code cell (the hidden Colab install cell aside) and
  before the first section, an admonition whose body says what the reader will learn
  ("You will learn", at least three bullets) and what they need first ("You need");
* an admonition titled "Key takeaways" after it, with at least three bullets.

The chapters are those of the "Chapters" part of _toc.yml, except the preface (how to
read the book) and the explorers (a page of widgets). The check reads the MyST source
line by line: fenced blocks (```` ``` ```` or ``~~~``, any length) are tracked so that a
heading or an admonition inside a code cell does not count.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[1]
EXEMPT = {"book/preface", "book/explorers"}
ADMONITIONS = {"admonition", "note", "tip", "hint", "important", "seealso", "warning",
               "caution", "attention", "danger", "error"}
FENCE = re.compile(r"^(`{3,}|~{3,})(.*)$")


def toc_chapters() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    part = next((p for p in toc.get("parts", []) if p.get("caption") == "Chapters"), None)
    assert part is not None, "_toc.yml has no 'Chapters' part"
    return [c["file"] for c in part["chapters"] if c["file"] not in EXEMPT]


def blocks(text: str) -> list[dict]:
    """The top-level blocks that matter here, in order: fenced directives and code blocks
    (``kind`` the directive name or "code", ``title``, ``body``, ``tags``) and ``##``
    headings (``kind`` "heading")."""
    out, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        line = lines[i]
        m = FENCE.match(line)
        if m:
            fence, info = m.group(1), m.group(2).strip()
            j = i + 1
            while j < len(lines):
                close = FENCE.match(lines[j])
                if (close and close.group(1)[0] == fence[0] and len(close.group(1)) >= len(fence)
                        and not close.group(2).strip()):
                    break
                j += 1
            else:
                raise ValueError(f"line {i + 1}: unterminated fence {fence!r}")
            body = lines[i + 1:j]
            directive = re.match(r"\{([\w:-]+)\}\s*(.*)", info)
            kind = directive.group(1) if directive else "code"
            title = directive.group(2).strip() if directive else ""
            options = [b for b in body if b.startswith(":")]
            tags = " ".join(b for b in options if b.startswith(":tags:"))
            content = [b for b in body if not b.startswith(":")]
            out.append({"kind": kind, "title": title, "body": "\n".join(content),
                        "tags": tags, "options": options, "line": i + 1})
            i = j + 1
            continue
        if line.startswith("## "):
            out.append({"kind": "heading", "title": line[3:].strip(), "body": "", "tags": "",
                        "line": i + 1})
        i += 1
    return out


def bullets(body: str) -> int:
    return sum(1 for line in body.splitlines() if re.match(r"\s*[-*] \S", line))


def problems(text: str) -> list[str]:
    """What the chapter lacks of the frame; empty when it has it all."""
    found = blocks(text)
    first = next((k for k, b in enumerate(found)
                  if b["kind"] == "heading"
                  or (b["kind"] == "code-cell" and "colab-install" not in b["tags"])),
                 len(found))
    top = next((k for k, b in enumerate(found[:first])
                if b["kind"] in ADMONITIONS and "You will learn" in b["body"]), None)
    issues = []
    if top is None:
        issues.append("no admonition with 'You will learn' before the first code cell or section")
    else:
        box = found[top]["body"]
        learn, _, need = box.partition("You will learn")[2].partition("You need")
        if "You need" not in box:
            issues.append(f"line {found[top]['line']}: the top box has no 'You need'")
        elif not need.strip():
            issues.append(f"line {found[top]['line']}: 'You need' says nothing")
        if bullets(learn) < 3:
            issues.append(f"line {found[top]['line']}: fewer than 3 'You will learn' bullets")
    after = found[top + 1:] if top is not None else found
    takeaways = [b for b in after if b["kind"] == "admonition" and b["title"] == "Key takeaways"]
    if not takeaways:
        issues.append("no 'Key takeaways' admonition after the top box")
    elif bullets(takeaways[0]["body"]) < 3:
        issues.append(f"line {takeaways[0]['line']}: fewer than 3 key takeaways")
    return issues


def test_the_chapters_are_found():
    chapters = toc_chapters()
    assert "book/memory" in chapters and "book/gptq-awq" in chapters
    assert not EXEMPT & set(chapters)


@pytest.mark.parametrize("chapter", toc_chapters())
def test_chapter_has_its_boxes(chapter):
    text = (ROOT / f"{chapter}.md").read_text(encoding="utf-8")
    assert problems(text) == [], chapter


# --- the check itself can fail ----------------------------------------------------------

HEAD = """---
kernelspec:
  name: python3
---

(ch-fake)=
# A fake chapter

```{code-cell} ipython3
:tags: [remove-cell, colab-install]

# Colab install cell
```

An introduction.
"""
TOP = """
```{admonition} In this chapter
:class: note
**You will learn** to

- do one thing;
- do another;
- do a third.

**You need** {ref}`ch-uniform`.
```
"""
CODE = """
```{code-cell} ipython3
x = 1
```

## A section
"""
END = """
```{admonition} Key takeaways
:class: important
- one;
- two;
- three.
```
"""


def test_a_complete_fake_chapter_passes():
    assert problems(HEAD + TOP + CODE + END) == []


def test_a_chapter_without_boxes_fails():
    issues = problems(HEAD + CODE)
    assert any("You will learn" in p for p in issues)
    assert any("Key takeaways" in p for p in issues)


def test_the_top_box_must_come_before_the_first_code_cell():
    assert any("before the first code cell" in p for p in problems(HEAD + CODE + TOP + END))


def test_the_top_box_must_say_what_is_needed_and_list_enough():
    no_need = TOP.replace("**You need** {ref}`ch-uniform`.", "")
    assert any("no 'You need'" in p for p in problems(HEAD + no_need + CODE + END))
    one_bullet = TOP.replace("- do another;\n- do a third.\n", "")
    assert any("fewer than 3 'You will learn'" in p for p in problems(HEAD + one_bullet + CODE + END))
    short_end = END.replace("- two;\n- three.\n", "")
    assert any("fewer than 3 key takeaways" in p for p in problems(HEAD + TOP + CODE + short_end))


def test_boxes_inside_a_code_cell_do_not_count():
    hidden = "\n````{code-cell} ipython3\ns = '''\n" + TOP + END + "'''\n````\n"
    issues = problems(HEAD + hidden + CODE)
    assert any("You will learn" in p for p in issues) and any("Key takeaways" in p for p in issues)


# --- bookkeeping out of sight -----------------------------------------------------------
# Issue 13: "glue calls and figure plumbing are not what a reader should read (hide the
# input, or move it to a helper), while the code that teaches stays visible." A code cell
# a reader sees (no remove-/hide- tag) may not call myst-nb's glue nor close a figure it
# built for glue; those go in a remove-input cell after it.

HIDDEN_TAGS = ("remove-input", "remove-cell", "hide-input", "hide-cell")
BOOKKEEPING = re.compile(r"^\s*(glue\(|plt\.close\()", re.M)


def bookkeeping_in_sight(text: str) -> list[str]:
    """The visible code cells of a chapter that glue values or close glued figures."""
    return [f"line {b['line']}: a visible code cell calls {BOOKKEEPING.search(b['body']).group(1)}...)"
            for b in blocks(text)
            if b["kind"] == "code-cell" and not any(t in b["tags"] for t in HIDDEN_TAGS)
            and BOOKKEEPING.search(b["body"])]


@pytest.mark.parametrize("chapter", toc_chapters() + sorted(EXEMPT))
def test_no_glue_or_figure_plumbing_in_a_visible_cell(chapter):
    text = (ROOT / f"{chapter}.md").read_text(encoding="utf-8")
    assert bookkeeping_in_sight(text) == [], chapter


def test_the_bookkeeping_check_can_fail():
    seen = "\n```{code-cell} ipython3\nx = 1\nglue('x', x, display=False)\n```\n"
    hidden = "\n```{code-cell} ipython3\n:tags: [remove-input]\n\nglue('x', x, display=False)\n```\n"
    assert bookkeeping_in_sight(HEAD + seen) == ["line 17: a visible code cell calls glue(...)"]
    assert bookkeeping_in_sight(HEAD + hidden) == []


# --- every figure has alt text ------------------------------------------------------------
# A figure reaches the page either as a {glue:figure} with an :alt: option, or as a
# int4ref.explore.viz.show (directly, or glued), whose <img alt> is computed from the figure's
# own data. A bare plt.show() would give the reader an image without a description.

def figures_without_alt(text: str) -> list[str]:
    bad = [f"line {b['line']}: plt.show() shows a figure without alt text" for b in blocks(text)
           if b["kind"] == "code-cell" and "plt.show()" in b["body"]]
    for b in blocks(text):
        if b["kind"] != "glue:figure" or any(o.startswith(":alt:") for o in b["options"]):
            continue
        key = b["title"]
        value = re.search(rf"glue\(\s*[\"']{re.escape(key)}[\"']\s*,\s*([\w.]+)", text)
        name = value.group(1) if value else None
        shown = name == "viz.show" or (name and re.search(rf"^\s*{re.escape(name)}\s*=\s*viz\.show\(", text, re.M))
        if not shown:
            bad.append(f"line {b['line']}: figure {key!r} has no :alt: and is not glued as a viz.show")
    return bad


@pytest.mark.parametrize("chapter", toc_chapters() + sorted(EXEMPT))
def test_every_figure_has_alt_text(chapter):
    text = (ROOT / f"{chapter}.md").read_text(encoding="utf-8")
    assert figures_without_alt(text) == [], chapter


def test_the_alt_text_check_can_fail():
    bare = "\n```{code-cell} ipython3\nplt.plot([1, 2])\nplt.show()\n```\n"
    glued = ("\n```{code-cell} ipython3\nglue('fig_a', fig, display=False)\n```\n\n"
             "```{glue:figure} fig_a\n:name: a\n\nA.\n```\n")
    shown = glued.replace("glue('fig_a', fig", "glue('fig_a', viz.show(fig)")
    assert figures_without_alt(HEAD + bare) == ["line 17: plt.show() shows a figure without alt text"]
    assert figures_without_alt(HEAD + glued) == ["line 21: figure 'fig_a' has no :alt: and is not glued as a viz.show"]
    assert figures_without_alt(HEAD + shown) == []


# --- what a reader sees is self-contained -------------------------------------------------
# A visible cell may not use a name that only a removed cell (remove-input / remove-cell)
# defined: the reader would meet a variable from nowhere. (A hide-input cell can be opened,
# so what it defines counts as shown.)

def _names(code: str) -> tuple[set[str], set[str]]:
    code = "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in code.splitlines())
    tree = ast.parse(code)
    stores = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    stores |= {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    stores |= {n.arg for n in ast.walk(tree) if isinstance(n, ast.arg)}
    stores |= {(a.asname or a.name).split(".")[0] for n in ast.walk(tree)
               if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
    loads = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    return stores, loads


def names_from_removed_cells(text: str) -> list[str]:
    removed_defs, shown_defs, bad = {}, set(), []
    for b in blocks(text):
        if b["kind"] != "code-cell":
            continue
        try:
            stores, loads = _names(b["body"])
        except SyntaxError:
            continue
        if any(t in b["tags"] for t in ("remove-input", "remove-cell")):
            for name in stores - shown_defs:
                removed_defs.setdefault(name, b["line"])
            continue
        for name in sorted(loads - stores - shown_defs):
            if name in removed_defs:
                bad.append(f"line {b['line']}: uses {name}, defined only in the removed cell at line "
                           f"{removed_defs[name]}")
        shown_defs |= stores
    return bad


@pytest.mark.parametrize("chapter", toc_chapters() + sorted(EXEMPT))
def test_visible_cells_use_no_name_from_a_removed_cell(chapter):
    text = (ROOT / f"{chapter}.md").read_text(encoding="utf-8")
    assert names_from_removed_cells(text) == [], chapter


def test_the_removed_name_check_can_fail():
    removed = "\n```{code-cell} ipython3\n:tags: [remove-input]\n\nsecret = 3\n```\n"
    shown = "\n```{code-cell} ipython3\nf = lambda v: v + 1\nprint(f(secret))\n```\n"
    assert names_from_removed_cells(HEAD + removed + shown) == [
        "line 23: uses secret, defined only in the removed cell at line 17"]
    assert names_from_removed_cells(HEAD + removed.replace("remove-input", "hide-input") + shown) == []
