"""The front pages (book/index.md, book/preface.md) print lists that tools/frontpages.py
generates from _toc.yml, exercises/ and the int4ref package. These tests check the
generated lists against those sources, found independently where possible, and check that
the pages print them instead of carrying hand-typed copies that go stale.
"""
import importlib.util
import re
import sys
from pathlib import Path, PurePosixPath

import pytest

yaml = pytest.importorskip("yaml")
jupytext = pytest.importorskip("jupytext")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import frontpages  # noqa: E402

LINK = re.compile(r"\[((?:[^\]\\]|\\.)+)\]\(([^)\s]+\.md)\)")


def toc_files(caption=None):
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    return [c["file"] for part in toc["parts"] if caption in (None, part["caption"])
            for c in part["chapters"]]


def resolve(link, page):
    """A relative .md link on ``page`` (toc style) -> the toc entry it points at."""
    target = PurePosixPath(page).parent / link
    parts = []
    for part in target.parts:
        if part == "..":
            parts.pop()
        else:
            parts.append(part)
    return str(PurePosixPath(*parts).with_suffix(""))


def code_cells(page):
    nb = jupytext.read(ROOT / f"{page}.md", fmt="md:myst")
    return [c for c in nb.cells if c.cell_type == "code"]


def markdown_text(page):
    nb = jupytext.read(ROOT / f"{page}.md", fmt="md:myst")
    return "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")


def printing_cell(page, call):
    """The code cell of ``page`` that calls ``call``; it must hide its input and have its
    Markdown output parsed as MyST (otherwise the .md links stay dead on the site)."""
    cells = [c for c in code_cells(page) if call in c.source]
    assert len(cells) == 1, f"{page}.md: expected one code cell calling {call}, found {len(cells)}"
    cell = cells[0]
    assert "remove-input" in cell.metadata.get("tags", []), f"{page}.md: the {call} cell should hide its code"
    assert cell.metadata.get("mystnb", {}).get("markdown_format") == "myst", (
        f"{page}.md: the {call} cell needs `mystnb: {{markdown_format: myst}}`")
    return cell


@pytest.mark.parametrize("page", ["book/index", "book/preface"])
def test_front_pages_are_never_served_from_the_execution_cache(page):
    nb = jupytext.read(ROOT / f"{page}.md", fmt="md:myst")
    assert nb.metadata.get("mystnb", {}).get("execution_mode") == "force", (
        f"{page}.md: its lists come from other files, so a cached run would show stale ones")


# --- index.md: the chapter list -----------------------------------------------------------

def test_every_chapter_has_exactly_one_summary():
    chapters = toc_files("Chapters")
    assert chapters, "_toc.yml has no 'Chapters' part"
    assert set(frontpages.SUMMARIES) == set(chapters), (
        f"SUMMARIES in tools/frontpages.py: missing {sorted(set(chapters) - set(frontpages.SUMMARIES))}, "
        f"no such chapter {sorted(set(frontpages.SUMMARIES) - set(chapters))}")
    for name, (short, line) in frontpages.SUMMARIES.items():
        assert short.strip() and line.strip() and not line.endswith("."), name


def test_chapter_list_is_the_toc_in_order_with_titles():
    listed = LINK.findall(frontpages.chapter_list("book/index"))
    chapters = toc_files("Chapters")
    assert [resolve(link, "book/index") for _, link in listed] == chapters
    assert "book/explorers" in chapters
    for (text, _), chapter in zip(listed, chapters):
        body = (ROOT / f"{chapter}.md").read_text(encoding="utf-8")
        title = text.replace("\\[", "[").replace("\\]", "]")
        assert re.search(rf"^# {re.escape(title)}\s*$", body, re.M), (
            f"{chapter}: {title!r} is not its title heading")


def test_other_parts_list_every_other_page_in_order():
    text = frontpages.other_parts("book/index")
    others = [f for f in toc_files() if f not in toc_files("Chapters")]
    assert [resolve(link, "book/index") for _, link in LINK.findall(text)] == others
    captions = {p["caption"] for p in yaml.safe_load((ROOT / "_toc.yml").read_text())["parts"]}
    for caption in captions - {"Chapters"}:
        assert f"**{caption}:**" in text


def test_index_prints_the_generated_lists_and_types_none():
    source = printing_cell("book/index", "frontpages.chapter_list").source
    assert "frontpages.other_parts" in source
    prose = markdown_text("book/index")
    for chapter in toc_files("Chapters"):  # a hand-typed list would link the chapters itself
        stem = PurePosixPath(chapter).name
        assert f"{{doc}}`{stem}`" not in prose and f"({stem}.md)" not in prose, (
            f"book/index.md links {chapter} by hand: the chapter list is generated")


def test_generated_links_point_at_pages_of_the_book():
    pages = set(toc_files())
    for page, text in [("book/index", frontpages.chapter_list("book/index")),
                       ("book/index", frontpages.other_parts("book/index")),
                       ("book/preface", frontpages.module_table("book/preface"))]:
        links = LINK.findall(text)
        assert links
        for _, link in links:
            assert resolve(link, page) in pages, f"{page}: link {link} is not a page of the book"


def test_no_page_calls_an_existing_chapter_planned():
    for page in ("book/index", "book/preface"):
        text = (ROOT / f"{page}.md").read_text(encoding="utf-8")
        assert not re.search(r"\bplanned\b|work in progress", text, re.I), f"{page}.md"
    names = {frontpages.title_of(f) for f in toc_files()}
    names |= {short for short, _ in frontpages.SUMMARIES.values()}
    for page in toc_files():
        for line in (ROOT / f"{page}.md").read_text(encoding="utf-8").splitlines():
            if re.search(r"\bplanned\b|\bcoming soon\b", line, re.I):
                said = [n for n in names if n.lower() in line.lower()]
                assert not said, f"{page}.md calls {said} planned: {line.strip()}"


# --- preface.md: assignments and modules --------------------------------------------------

def test_assignments_are_the_exercise_masters():
    masters = sorted(p.stem for p in (ROOT / "exercises").glob("*.md") if p.name != "README.md")
    assert frontpages.assignments() == masters and len(masters) >= 1
    spec = importlib.util.spec_from_file_location("exercises_build", ROOT / "exercises" / "build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    assert sorted(build.ASSIGNMENTS) == masters
    assert sorted(p.stem for p in (ROOT / "exercises" / "book").glob("*.md")) == masters


def test_pages_state_the_number_of_assignments_right():
    n = len(frontpages.assignments())
    glue = [c for c in code_cells("book/preface") if "frontpages.assignments()" in c.source]
    assert glue and "glue(" in glue[0].source
    assert re.search(r"\{glue:md\}`(\w+)` autograded\s+assignments", markdown_text("book/preface"))
    words = "|".join(frontpages.NUMBER_WORDS)
    for page in toc_files() + ["book/index"]:
        text = (ROOT / f"{page}.md").read_text(encoding="utf-8")
        for m in re.finditer(rf"\b({words}|\d+)\s+(?:autograded\s+)?assignments\b", text, re.I):
            assert m.group(1).lower() in (str(n), frontpages.in_words(n)), (
                f"{page}.md says {m.group(0)!r}; exercises/ has {n}")


def package_modules():
    """Public int4ref modules, read off the file tree (not through pkgutil)."""
    out = []
    for path in (ROOT / "int4ref").rglob("*.py"):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts[:-1]) if rel.name == "__init__" else list(rel.parts)
        if len(parts) > 1 and not any(p.startswith("_") for p in parts):
            out.append(".".join(parts))
    return sorted(out)


def test_module_table_lists_every_public_module():
    printing_cell("book/preface", "frontpages.module_table")
    rows = [line for line in frontpages.module_table("book/preface").splitlines()[2:]]
    listed = [re.match(r"\| `([\w.]+)` \|", row).group(1) for row in rows]
    assert sorted(listed) == package_modules()
    assert "int4ref.interop.gguf" in listed and not any("._" in m for m in listed)
    tiers = [row.split(" | ")[1] for row in rows]  # grouped by tier, core first, each tier once
    assert tiers[0] == "core" and len({t for t in tiers}) == len([t for i, t in enumerate(tiers)
                                                                  if i == 0 or t != tiers[i - 1]])
    assert dict(zip(listed, tiers))["int4ref.explore.viz"] == "book support"
    assert dict(zip(listed, tiers))["int4ref.gpu.bench"] == "gpu"
    for row in rows:
        assert row.count(" | ") == 3, f"a table cell contains a bar: {row}"


def test_module_table_usage_column():
    table = {re.match(r"\| `([\w.]+)` \|", row).group(1): row
             for row in frontpages.module_table("book/preface").splitlines()[2:]}
    assert "(nf4.md)" in table["int4ref.codebooks"]          # `from int4ref import codebooks` in nf4.md
    assert "(uniform-int4.md)" in table["int4ref.dispatch"]  # int4ref.quantize is re-exported from dispatch
    assert "(preface.md)" not in "".join(table.values())    # the page itself is not a user


# --- the helpers themselves ---------------------------------------------------------------

def test_modules_used_traces_imports_and_reexports(tmp_path):
    (tmp_path / "book").mkdir()
    (tmp_path / "book" / "a.md").write_text(
        "# A\n\n```python\nfrom int4ref import metrics, packing as pk\n"
        "from int4ref.interop import gguf as g\nq = int4ref.quantize(x)\nint4ref.nothing\n```\n")
    assert frontpages.modules_used("book/a", tmp_path) == {
        "int4ref.metrics", "int4ref.packing", "int4ref.interop.gguf", "int4ref.dispatch"}


def test_first_sentence_and_title_parsing(tmp_path):
    assert frontpages.first_sentence("int4ref.gptq").startswith("GPTQ (Frantar et al. 2022")
    assert frontpages.first_sentence("int4ref.model.modelquant").startswith(
        "Quantize every linear layer of a `MiniLM`")
    (tmp_path / "p.md").write_text("---\ntitle: x\n---\n```python\n# not a title\n```\n\n# Real title\n")
    assert frontpages.title_of("p", tmp_path) == "Real title"
    (tmp_path / "q.md").write_text("no heading here\n")
    with pytest.raises(ValueError, match="no `# ` title"):
        frontpages.title_of("q", tmp_path)
    with pytest.raises(FileNotFoundError, match="missing"):
        frontpages.title_of("missing", tmp_path)


def test_bad_toc_and_counts_are_clear_errors(tmp_path):
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: book/index\nparts:\n"
                                      "  - caption: Other\n    chapters:\n      - file: book/x\n")
    with pytest.raises(ValueError, match="no part with caption 'Chapters'"):
        frontpages.toc_chapters(tmp_path)
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: book/index\n")
    with pytest.raises(ValueError, match="parts"):
        frontpages.toc_parts(tmp_path)
    assert frontpages.in_words(7) == "seven" and frontpages.in_words(13) == "13"
    with pytest.raises(ValueError):
        frontpages.in_words(-1)


def test_readme_module_table_is_generated_and_current():
    """README.md's module table is tools/frontpages.py's, for the modules there are now
    (`python tools/frontpages.py readme` rewrites it)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    stale = "README.md's module table is stale: run python tools/frontpages.py readme"
    assert frontpages.readme_with_table(text) == text, stale
    table = frontpages.readme_module_table()
    assert all(f"| `{m}` |" in table for m in frontpages.public_modules())
    with pytest.raises(ValueError, match="markers"):
        frontpages.readme_with_table("no markers here")
