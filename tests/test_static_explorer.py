"""int4ref.explore.static_explorer (the explorers on a page without a kernel) and
int4ref.explore.figures (the packing chapter's picture of the four layouts).

The static explorer's states are checked against the live explorer (same numbers, same
alt text as its figure for the same settings), its page script is run in node against a
stand-in for the DOM and must show, for each choice of the controls, the picture, alt
text and numbers Python computed for that setting. The packing picture's maps are
checked against the layout rules and against the bytes pack_nibbles / pack_int32 write.
"""
from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

from int4ref import packing  # noqa: E402
from int4ref.explore import (  # noqa: E402
    DoubleQuantExplorer,
    FormatExplorer,
    NF4Builder,
    NibbleInspector,
    figures,
    viz,
)
from int4ref.explore.explorer import format_value  # noqa: E402
from int4ref.explore.static_explorer import StaticExplorer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NODE = shutil.which("node")


@pytest.fixture(scope="module")
def fmt_static():
    return StaticExplorer(FormatExplorer(format="int4_sym", n=4096),
                          {"group_size": [16, 64, 256], "outlier": [0.0, 20.0]})


# ---- states ------------------------------------------------------------------------------

def test_states_are_the_live_explorers_numbers_and_alt_text(fmt_static):
    states = fmt_static.states()
    assert len(states) == len(fmt_static) == 6
    live = FormatExplorer(format="int4_sym", n=4096)
    for g, o in [(16, 0.0), (256, 20.0), (64, 20.0)]:
        s = states[fmt_static.index(group_size=g, outlier=o)]
        assert s["settings"] == {"group_size": g, "outlier": o}
        r = live.compute(**{**live.settings, "group_size": g, "outlier": o})
        assert s["numbers"] == [[k, format_value(v)] for k, v in live.numbers(r).items()]
        assert s["alt"] == viz.alt_text(live.render(r))
        assert s["src"].startswith("data:image/png;base64,")
        assert base64.b64decode(s["src"].split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    # the states differ from each other: pictures, alt texts and numbers
    assert len({s["src"] for s in states}) == 6
    assert len({s["alt"] for s in states}) == 6
    assert len({json.dumps(s["numbers"]) for s in states}) == 6


def test_index_is_row_major_last_control_fastest(fmt_static):
    assert fmt_static.index(group_size=16, outlier=0.0) == 0
    assert fmt_static.index(group_size=16, outlier=20.0) == 1
    assert fmt_static.index(group_size=64, outlier=0.0) == 2
    assert fmt_static.index(group_size=256, outlier=20.0) == 5
    with pytest.raises(ValueError, match="missing 'outlier'"):
        fmt_static.index(group_size=16)


def test_numbers_table_is_the_widgets_table(fmt_static):
    ex = FormatExplorer(format="int4_sym", n=4096)
    s = fmt_static.states()[fmt_static.index(group_size=64, outlier=0.0)]
    widget_table = ex.numbers_html(ex.compute(**{**ex.settings, "group_size": 64}))
    assert StaticExplorer.numbers_html(s["numbers"]) == widget_table.removeprefix("<table>").removesuffix("</table>")


def test_validation():
    with pytest.raises(TypeError, match="must be an int4ref.explore.Explorer"):
        StaticExplorer("FormatExplorer", {"group_size": [16]})
    with pytest.raises(ValueError, match="no control 'colour'"):
        StaticExplorer(FormatExplorer(), {"colour": ["red"]})
    with pytest.raises(ValueError, match="group_size must be one of"):
        StaticExplorer(FormatExplorer(), {"group_size": [48]})
    with pytest.raises(ValueError, match="at least one value"):
        StaticExplorer(FormatExplorer(), {"group_size": []})
    with pytest.raises(ValueError, match="values repeat"):
        StaticExplorer(FormatExplorer(), {"group_size": [16, 16]})
    with pytest.raises(ValueError, match="at least one control"):
        StaticExplorer(FormatExplorer(), {})
    with pytest.raises(ValueError, match="view must be"):
        StaticExplorer(FormatExplorer(), {"group_size": [16]}, view="svg")
    with pytest.raises(ValueError, match="no HTML view"):
        StaticExplorer(FormatExplorer(), {"group_size": [16]}, view="html")
    with pytest.raises(ValueError, match="not among its values"):
        StaticExplorer(FormatExplorer(), {"group_size": [16, 32]}, start={"group_size": 64})
    with pytest.raises(ValueError, match="not swept"):
        StaticExplorer(FormatExplorer(), {"group_size": [16, 32]}, start={"outlier": 1.0})


def test_start_state_is_shown_first():
    st = StaticExplorer(NF4Builder(n=4096), {"n_positive": [7, 8, 9]})   # the builder's default: 8
    page = st._repr_html_()
    default = st.states()[1]
    assert default["settings"] == {"n_positive": 8}
    assert f'src="{default["src"]}"' in page
    assert 'value="1"' in page


def test_html_view_of_the_nibble_inspector():
    st = StaticExplorer(NibbleInspector(), {"format": ["int4_sym", "nf4"]}, view="html")
    states = st.states()
    for s, fmt in zip(states, ["int4_sym", "nf4"]):
        r = NibbleInspector().compute(format=fmt)   # the inspector's other settings are its defaults
        assert s["html"] == NibbleInspector().render_html(r)
        assert ["GGML bytes", r["hex_ggml"]] in s["numbers"]
    assert "<select" in st._repr_html_() and "<img" not in st._repr_html_()


def test_page_weight_is_measured_and_palette_shrinks_it():
    full = StaticExplorer(DoubleQuantExplorer(n=4096), {"dq_bits": [2, 8]}, {"dq_table": "uniform"}, colors=None)
    small = StaticExplorer(DoubleQuantExplorer(n=4096), {"dq_bits": [2, 8]}, {"dq_table": "uniform"})
    assert 0 < small.nbytes() < full.nbytes()
    assert small.nbytes() == len(small._repr_html_().encode())


# ---- the page script, in node ----------------------------------------------------------------

DOM = """
function el(props) { var e = {textContent: '', innerHTML: '', src: '', alt: '', listeners: {}, dataset: {}};
  for (var k in props) { e[k] = props[k]; }
  e.addEventListener = function(type, f) { e.listeners[type] = f; }; return e; }
var inputs = CONTROLS.map(function(c, j) { return el({dataset: {j: String(j)}, value: String(c)}); });
var outs = SLIDERS.map(function(j) { return el({dataset: {j: String(j)}}); });
var view = el({}), table = el({});
var root = {querySelectorAll: function(q) { return q === 'output' ? outs : inputs; },
            querySelector: function(q) { return q === '.int4ref-view' ? view : table; }};
var document = {getElementById: function() { return root; }};
"""


def run_page_script(st, choices):
    """Run the page's script in node; for each choice (indices per control) set the
    controls, fire their 'input' event and report what the page shows."""
    script = re.search(r"<script>(.*)</script>", st._repr_html_(), re.S).group(1)
    sliders = [j for j, c in enumerate(st.controls) if c.kind in ("int", "float", "selection")]
    driver = (
        f"var CHOICES = {json.dumps(choices)}, shown = [];"
        "CHOICES.forEach(function(ch) { ch.forEach(function(v, j) { inputs[j].value = String(v); });"
        " inputs[0].listeners.input();"
        " shown.push({src: view.src, alt: view.alt, html: view.innerHTML, rows: table.innerHTML,"
        "             labels: outs.map(function(o) { return o.textContent; })}); });"
        "console.log(JSON.stringify(shown));"
    )
    prelude = DOM.replace("CONTROLS", json.dumps(st.start)).replace("SLIDERS", json.dumps(sliders))
    run = subprocess.run([NODE, "-e", prelude + script + driver], capture_output=True, text=True, check=True)
    return json.loads(run.stdout), sliders


@pytest.mark.skipif(NODE is None, reason="node is not installed")
def test_page_script_shows_what_python_computed(fmt_static):
    choices = [[0, 0], [2, 1], [1, 1], [0, 1]]
    shown, sliders = run_page_script(fmt_static, choices)
    assert sliders == [0, 1]        # group size (a selection slider) and outlier (a float slider)
    for (gi, oi), page in zip(choices, shown):
        g, o = fmt_static.values[0][gi], fmt_static.values[1][oi]
        state = fmt_static.states()[fmt_static.index(group_size=g, outlier=o)]
        assert page["src"] == state["src"] and page["alt"] == state["alt"]
        assert page["rows"] == StaticExplorer.numbers_html(state["numbers"])
        assert page["labels"] == [format_value(g), format_value(o)]


@pytest.mark.skipif(NODE is None, reason="node is not installed")
def test_page_script_swaps_html_views():
    st = StaticExplorer(NibbleInspector(), {"format": ["int4_sym", "int4_asym", "nf4"]}, view="html")
    shown, sliders = run_page_script(st, [[2], [0], [1]])
    assert sliders == []            # the format is a menu
    for k, page in zip([2, 0, 1], shown):
        assert page["html"] == st.states()[k]["html"]
        assert page["rows"] == StaticExplorer.numbers_html(st.states()[k]["numbers"])


# ---- the packing picture ----------------------------------------------------------------------

def test_layout_maps_follow_the_rules():
    maps = figures.layout_maps()
    k = np.arange(16)
    assert np.array_equal(maps["bnb"], np.stack([2 * k, 2 * k + 1], axis=1))
    assert np.array_equal(maps["ggml"], np.stack([k + 16, k], axis=1))
    assert np.array_equal(maps["gptq"], np.arange(8))
    assert np.array_equal(maps["awq"], [0, 2, 4, 6, 1, 3, 5, 7])


def test_layout_maps_agree_with_packed_bytes():
    """Read each map the other way: the code at the mapped nibble of the packed bytes is
    the element's code, for random codes (not only the 0xF probes the maps are made of)."""
    rng = np.random.default_rng(3)
    codes = rng.integers(0, 16, 32, dtype=np.uint8)
    for lay in ("bnb", "ggml"):
        packed = packing.pack_nibbles(codes, lay)
        slots = figures.byte_slots(lay)
        assert np.array_equal(packed >> 4, codes[slots[:, 0]])
        assert np.array_equal(packed & 0xF, codes[slots[:, 1]])
    for lay, order in (("gptq", "sequential"), ("awq", "awq")):
        word = int(packing.pack_int32(codes[:8], order=order).view(np.uint32)[0])
        slots = figures.word_slots(lay)
        assert [(word >> (4 * s)) & 0xF for s in range(8)] == [int(codes[e]) for e in slots]


def test_layout_picture_alt_text_and_cells_come_from_the_maps():
    fig = figures.packing_layouts()
    alt = viz.alt_text(fig)
    maps = fig.int4ref_maps
    assert "byte 0 holds element 0 (high nibble) and 1 (low nibble)" in alt
    assert "byte 0 holds element 16 (high nibble) and 0 (low nibble)" in alt
    assert "byte 15 holds element 31 (high nibble) and 15 (low nibble)" in alt
    assert "hold elements 7, 6, 5, 4, 3, 2, 1, 0" in alt
    assert "hold elements 7, 5, 3, 1, 6, 4, 2, 0" in alt
    # the labels drawn in each row are the map's elements, in drawing order
    rows = fig.axes
    bnb_cells = [t.get_text() for t in rows[0].texts if not t.get_text().startswith("byte")]
    assert bnb_cells == [str(e) for e in maps["bnb"].ravel()]
    ggml_cells = [t.get_text() for t in rows[1].texts if not t.get_text().startswith("byte")]
    assert ggml_cells == [str(e) for e in maps["ggml"].ravel()]
    awq_cells = [t.get_text() for t in rows[3].texts if t.get_text().startswith("element")]
    assert awq_cells == [f"element {e}" for e in maps["awq"][::-1]]
    # a different map draws and describes differently: the picture follows its data
    swapped = {**maps, "awq": maps["gptq"]}
    assert viz.alt_text(figures.packing_layouts(swapped)).count("hold elements 7, 6, 5, 4, 3, 2, 1, 0") == 2


def test_layout_functions_refuse_unknown_layouts():
    with pytest.raises(ValueError, match="unknown nibble layout 'q4_k'"):
        figures.byte_slots("q4_k")
    with pytest.raises(ValueError, match="unknown word layout 'marlin'"):
        figures.word_slots("marlin")


# ---- the chapters use them -----------------------------------------------------------------------

CHAPTER_EXPLORERS = {"group-quant": "FormatExplorer", "nf4": "NF4Builder", "double-quant": "DoubleQuantExplorer",
                     "packing": "NibbleInspector"}


@pytest.mark.parametrize("chapter", sorted(CHAPTER_EXPLORERS))
def test_each_explorer_lives_in_its_chapter(chapter):
    """Live widget cell (skipped on the site) and a static version in the chapter, and an
    index entry on the explorers page that links to the section."""
    text = (ROOT / "book" / f"{chapter}.md").read_text(encoding="utf-8")
    name = CHAPTER_EXPLORERS[chapter]
    live = re.search(r"```\{code-cell\} ipython3\n:tags: \[skip-execution\]\n\n(?:.*\n)*?" + name
                     + r"\([^)]*\)\.widget\(\)", text)
    assert live, f"{chapter}: no skip-execution cell with {name}(...).widget()"
    static = re.search(r":tags: \[remove-input, site-only\]\n\n(?:.*\n)*?StaticExplorer\(" + name, text)
    assert static, f"{chapter}: no site-only StaticExplorer({name}...) cell"
    label = re.search(r"\((explorer-[a-z0-9-]+)\)=\n## Try it", text)
    assert label, f"{chapter}: no labelled 'Try it' section"
    index = (ROOT / "book" / "explorers.md").read_text(encoding="utf-8")
    assert f"{{ref}}`{label.group(1)}`" in index
