"""The generated notebooks read like the site in Jupyter's and Colab's renderers (CommonMark
and math, no MyST): tools/sync_notebooks.py's MyST converter, and int4ref.explore.notebook, the
glue that the notebooks use instead of myst-nb's.

Fast checks; executing every notebook in the Binder environment and rendering it with
nbconvert is tests/test_binder.py.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("jupytext")
pytest.importorskip("myst_parser")
nbformat = pytest.importorskip("nbformat")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT / "tests"))

import sync_notebooks as sn  # noqa: E402
from notebook_checks import output_images, raw_myst, render_html  # noqa: E402

from int4ref.explore import notebook  # noqa: E402

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.fixture(scope="module")
def index():
    return sn.SiteIndex(ROOT)


@pytest.fixture
def convert(index):
    def run(text, page="book/group-quant"):
        return sn.MarkdownConverter(index, page).convert(text)
    return run


# -- the converter ------------------------------------------------------------------------
def test_roles_become_links_and_citations(convert, index):
    site = sn.site_url(ROOT)
    [(kind, text)] = convert("A {term}`scale`, see {ref}`ch-uniform` and {doc}`nf4`; "
                             "{cite:p}`dettmers2023qlora,frantar2023gptq` and {cite:t}`lin2024awq`.")
    assert kind == "markdown"
    assert f"[scale]({site}book/glossary.html#term-scale)" in text
    assert f"[Uniform INT4]({site}book/uniform-int4.html#ch-uniform)" in text
    assert f"({site}book/nf4.html)" in text
    assert "(Dettmers et al., 2023; Frantar et al., 2023)" in text
    assert "Lin et al. (2024)" in text
    assert not raw_myst(text)


def test_site_url_comes_from_the_repository_in_config():
    assert sn.site_url(ROOT) == "https://int4-book.github.io/int4-book/"


def test_code_spans_and_math_are_left_alone(convert):
    [(kind, text)] = convert("Write `{term}`x`` literally; $x^{2}$ and {term}`scale`.")
    assert kind == "markdown"
    assert "`{term}`x``" in text and "$x^{2}$" in text and "[scale](" in text


def test_glue_paragraph_becomes_a_template_with_literal_braces_doubled(convert):
    pieces = convert("# Title\n\nSQNR {glue:text}`sq:.2f` dB at $2^{b}$ levels, "
                     "{glue:text}`n:,d` weights.\n\nPlain text.")
    assert [k for k, _ in pieces] == ["markdown", "template", "markdown"]
    template = pieces[1][1]
    assert notebook.fill(template, {"sq": 12.3456, "n": 1234567}) == \
        "SQNR 12.35 dB at $2^{b}$ levels, 1,234,567 weights."


def test_admonition_becomes_a_quote_and_dropdown_details(convert):
    [(_, quote)] = convert("```{admonition} A claim\n:class: warning\nNot so: {term}`NF4`.\n```")
    assert quote.startswith("> **A claim**\n>\n> Not so: [NF4](")
    [(_, details)] = convert("```{admonition} Solution\n:class: dropdown\nIt is 4.\n```")
    assert details == "<details>\n<summary>Solution</summary>\n\nIt is 4.\n\n</details>"
    [(kind, glued)] = convert("```{admonition} Numbers\n:class: note\nIt is {glue:text}`v:.1f`.\n```")
    assert kind == "template" and notebook.fill(glued, {"v": 2.25}).endswith("> It is 2.2.")


def test_glue_figure_becomes_a_figure_call(convert):
    [(kind, call)] = convert("```{glue:figure} fig_x\n:alt: Bars of {x}.\n:name: fig-x\n\n"
                             "The caption, with {glue:text}`v:.1f`.\n```")
    assert kind == "figure"
    assert "figure('fig_x'" in call and 'alt=r"Bars of {x}."' in call
    assert "**Figure 1.** The caption, with {v:.1f}." in call


def test_targets_and_tables(convert):
    [(kind, text)] = convert("(my-label)=\n| a | {term}`scale` |\n|:--|--:|\n| 1 | 2 |")
    assert kind == "markdown" and "(my-label)=" not in text
    assert text.splitlines()[1] == "| :-- | --: |"


@pytest.mark.parametrize("text, what", [
    ("```{mystery}\nbody\n```", "{mystery}"),
    ("A {unknownrole}`x`.", "{unknownrole}"),
    ("{term}`no such term at all`", "no such term"),
    ("{ref}`no-such-label`", "no such label"),
    ("{cite:p}`nosuchkey1999`", "nosuchkey1999"),
])
def test_unconvertible_myst_is_an_error(convert, text, what):
    with pytest.raises(sn.SyncError, match=what):
        convert(text)


def test_references_list_the_cited_entries(index):
    conv = sn.MarkdownConverter(index, "book/nf4")
    conv.convert("{cite:p}`dettmers2023qlora`")
    refs = conv.references()
    assert refs.startswith("## References\n\n- Dettmers, T., Pagnoni, A., Holtzman, A., and Zettlemoyer, L. (2023).")
    assert "QLoRA: Efficient Finetuning of Quantized LLMs." in refs and "https://doi.org/" in refs


# -- the generated notebooks ---------------------------------------------------------------
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_generated_notebook_has_no_myst(path):
    nb = nbformat.read(path, as_version=4)
    markdown = [c.source for c in nb.cells if c.cell_type == "markdown"]
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    assert not raw_myst("\n".join(markdown)), f"{path.name}: raw MyST in Markdown cells"
    assert not any("myst_nb" in c for c in code), f"{path.name}: imports myst_nb"
    for cell in nb.cells:  # glue text / figures: hidden input in JupyterLab and Colab
        if set(cell.metadata.get("tags", [])) & {"int4book-text", "int4book-figure", "remove-input"}:
            assert cell.metadata["jupyter"]["source_hidden"] is True
            assert cell.metadata["cellView"] == "form" and cell.source.startswith("#@title")


def test_every_glue_figure_has_a_figure_cell():
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        source = (ROOT / nb.metadata["int4book"]["generated_from"]).read_text(encoding="utf-8")
        assert sum("int4book-figure" in c.metadata.get("tags", []) for c in nb.cells) == \
            source.count("```{glue:figure}"), path.name


def test_install_cell_installs_only_what_is_missing():
    nb = nbformat.read(ROOT / "notebooks" / "group-quant.ipynb", as_version=4)
    cell = next(c for c in nb.cells if "colab-install" in c.metadata.get("tags", []))
    assert "--upgrade" not in cell.source and " -U" not in cell.source and "myst" not in cell.source
    assert "'ipywidgets': 'ipywidgets>=7.7'" in cell.source
    assert "cupy" not in cell.source
    gpu = nbformat.read(ROOT / "notebooks" / "gpu-kernels.ipynb", as_version=4)
    gpu_cell = next(c for c in gpu.cells if "colab-install" in c.metadata.get("tags", []))
    assert 'find_spec("cupy") is None' in gpu_cell.source


# -- int4ref.explore.notebook -----------------------------------------------------------------------
@pytest.mark.parametrize("value, spec", [
    (3.14159, ".2f"), (1234567, ",d"), (0.1234, ".1%"), (7.0, ".0f"), (12, "d"), (2.5, ""),
    ("text", ""), ("text", "s"), (1e-5, ".2e"), (123456.7, ",.0f"), (5, ".1f"), (3.9, "d"),
])
def test_format_value_matches_myst_nb(value, spec):
    variables = pytest.importorskip("myst_nb.core.variables")
    from IPython.core.formatters import format_display_data

    plain = format_display_data(value)[0]["text/plain"]
    assert notebook.format_value(value, spec) == variables.format_plain_text(plain, spec or "s")


def test_fill_reports_a_value_not_yet_glued():
    with pytest.raises(notebook.GlueError, match="run the cells above"):
        notebook.fill("x {missing:.2f}", {})


def test_glue_figure_shows_image_with_alt_and_caption(monkeypatch):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = []
    monkeypatch.setattr("IPython.display.display", lambda obj, **kw: shown.append(obj))
    fig, ax = plt.subplots(figsize=(2, 1))
    ax.plot([0, 1])
    notebook.REGISTRY.clear()
    notebook.glue("f", fig, display=False)
    notebook.glue("v", 1.5, display=False)
    plt.close(fig)  # the chapters close glued figures; the notebook still shows them
    notebook.figure("f", alt='A "line"', caption="**Figure 1.** Value {v:.1f}.")
    img, caption = shown
    assert img._repr_png_().startswith(b"\x89PNG")
    assert 'alt="A &quot;line&quot;"' in img._repr_html_()
    assert caption._repr_markdown_() == "**Figure 1.** Value 1.5."


def test_rendered_html_of_a_small_notebook(tmp_path):
    """The converter's output, run and rendered by nbconvert: numbers, figure, no MyST."""
    pytest.importorskip("nbclient")
    pytest.importorskip("matplotlib")
    book = tmp_path / "book"
    book.mkdir()
    for name in ("glossary.md", "references.bib", "bibliography.md", "uniform-int4.md"):
        (book / name).write_text((ROOT / "book" / name).read_text(encoding="utf-8"), encoding="utf-8")
    for name in ("_config.yml", "pyproject.toml"):
        (tmp_path / name).write_text((ROOT / name).read_text(encoding="utf-8"), encoding="utf-8")
    (book / "tiny.md").write_text(
        "---\nkernelspec:\n  name: python3\n  display_name: Python 3\n---\n\n# Tiny\n\n"
        "```{code-cell} ipython3\n:tags: [remove-cell, colab-install]\n```\n\n"
        "```{code-cell} ipython3\nimport matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\n"
        "from myst_nb import glue\nfig, ax = plt.subplots()\nax.plot([1, 2])\n"
        "glue('fig_a', fig, display=False)\nglue('val', 2 / 3, display=False)\nplt.close(fig)\n```\n\n"
        "```{glue:figure} fig_a\n:alt: A rising line.\n\nThe line, {glue:text}`val:.3f`.\n```\n\n"
        "The value is {glue:text}`val:.2f` {cite:p}`dettmers2023qlora`, a {term}`scale`.\n",
        encoding="utf-8")
    nb = sn.build_notebook(tmp_path, sn.PurePosixPath("book/tiny.md"), "https://github.com/a/b", "main")
    nb.cells = [c for c in nb.cells if "colab-install" not in c.metadata.get("tags", [])]
    from nbclient import NotebookClient

    NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    html = render_html(nb)
    assert not raw_myst(html)
    assert "The value is 0.67 (Dettmers et al., 2023)" in html
    assert "<strong>Figure 1.</strong> The line, 0.667." in html
    assert output_images(nb) == ["A rising line."]
    assert "glue(" not in html.split("The value is")[1]  # hidden inputs are not shown
    json.dumps(nb)  # stays a valid notebook
