"""An explorer for a page without a kernel: precomputed states behind sliders and menus.

:class:`StaticExplorer` takes an :class:`~int4ref.explore.Explorer` and a few values for
one or more of its controls. For every combination (the grid of the values, last control
fastest) it runs the explorer's own ``compute`` and ``render`` in Python, when the page is
built, and keeps the picture (an inline PNG, or for the nibble inspector its HTML view),
the alt text of that picture (computed from the same result) and the numbers the live
widget would show. ``_repr_html_`` writes all of it into the page with a short script that
only picks which precomputed state to show: a range slider for a slider control, a
``<select>`` for a menu. Nothing is computed in the browser.

In a notebook, the same explorer is live: ``FormatExplorer().widget()``.
"""
from __future__ import annotations

import base64
import html
import io
import itertools
import json

from . import viz
from .explorer import WIDGET_DPI, Explorer, format_value

__all__ = ["StaticExplorer"]

#: control kinds shown as a range slider on the page (the others as a menu)
SLIDER_KINDS = ("int", "float", "selection")


def _png(fig, dpi: int, colors: int | None) -> bytes:
    """``fig`` as PNG at ``dpi``; with ``colors``, reduced to an adaptive palette of that
    many colours (the explorers' flat fills and text lose nothing visible; a third of the
    bytes)."""
    png = viz.to_png(fig, dpi)
    if colors is None:
        return png
    from PIL import Image

    img = Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=colors, method=Image.Quantize.MEDIANCUT)
    buf = io.BytesIO()
    img.save(buf, format="png", optimize=True)
    return buf.getvalue()


class StaticExplorer:
    """``explorer``'s states for ``controls`` (``{control name: values}``), precomputed.

    ``settings``: the other settings (default: the explorer's current ones). ``view``:
    ``"png"`` (the explorer's figure) or ``"html"`` (its ``render_html``, the nibble
    inspector's live view). ``start``: the initial value of each control (default: the
    explorer's setting where it is among the values, else the first value). ``dpi`` and
    ``colors`` (palette size, ``None`` for full colour) set the size of the pictures.

    :meth:`states` gives every state as a dict (its settings, value labels, picture, alt
    text and numbers); ``len(self)`` is their number and :meth:`nbytes` the size of the
    page fragment.
    """

    _count = 0

    def __init__(self, explorer: Explorer, controls: dict, settings: dict | None = None, *, view: str = "png",
                 start: dict | None = None, dpi: int = WIDGET_DPI, colors: int | None = 128):
        if not isinstance(explorer, Explorer):
            raise TypeError(f"explorer must be an int4ref.explore.Explorer, got {type(explorer).__name__}")
        if view not in ("png", "html"):
            raise ValueError(f"view must be 'png' or 'html', got {view!r}")
        if view == "html" and not hasattr(explorer, "render_html"):
            raise ValueError(f"{type(explorer).__name__} has no HTML view (render_html); use view='png'")
        if not controls:
            raise ValueError("controls must name at least one control and its values")
        known = {c.name: c for c in explorer.controls()}
        self.explorer, self.view, self.dpi, self.colors = explorer, view, dpi, colors
        self.base = explorer.validate(settings or {}, base=explorer.settings)
        self.controls, self.values = [], []
        for name, values in controls.items():
            if name not in known:
                raise ValueError(f"{type(explorer).__name__} has no control {name!r}; controls: {sorted(known)}")
            values = [known[name].check(v) for v in values]
            if not values:
                raise ValueError(f"control {name!r}: give at least one value")
            if len(set(map(repr, values))) != len(values):
                raise ValueError(f"control {name!r}: values repeat: {values}")
            self.controls.append(known[name])
            self.values.append(values)
        start = dict(start or {})
        unknown = set(start) - set(controls)
        if unknown:
            raise ValueError(f"start names controls that are not swept: {sorted(unknown)}")
        self.start = []
        for c, values in zip(self.controls, self.values):
            v = start.get(c.name, self.base[c.name])
            if c.name in start and v not in values:
                raise ValueError(f"start value {v!r} of {c.name!r} is not among its values {values}")
            self.start.append(values.index(v) if v in values else 0)
        self._states: list[dict] | None = None

    def __repr__(self) -> str:
        swept = " x ".join(f"{c.name} ({len(v)})" for c, v in zip(self.controls, self.values))
        return f"StaticExplorer({type(self.explorer).__name__}, {len(self)} states: {swept})"

    def __len__(self) -> int:
        n = 1
        for values in self.values:
            n *= len(values)
        return n

    def index(self, **chosen) -> int:
        """The position in :meth:`states` of the state with these control values (the
        script's rule: mixed radix, last control fastest)."""
        k = 0
        for c, values in zip(self.controls, self.values):
            if c.name not in chosen:
                raise ValueError(f"index needs a value for every swept control; missing {c.name!r}")
            k = k * len(values) + values.index(c.check(chosen[c.name]))
        return k

    def states(self) -> list[dict]:
        """Every state, in :meth:`index` order: ``settings`` (the swept values), ``labels``
        (their text), ``numbers`` ([[label, text], ...] as the widget shows them), ``alt``
        (the figure's alt text; for the HTML view a summary of the numbers) and ``src``
        (a PNG data URI) or ``html``."""
        if self._states is None:
            self._states = [self._state(combo) for combo in itertools.product(*self.values)]
        return self._states

    def _state(self, combo) -> dict:
        ex = self.explorer
        chosen = {c.name: v for c, v in zip(self.controls, combo)}
        result = ex.compute(**{**self.base, **chosen})
        numbers = [[k, format_value(v)] for k, v in ex.numbers(result).items()]
        state = {"settings": chosen, "labels": [format_value(v) for v in combo], "numbers": numbers}
        if self.view == "png":
            self._figure = ex.render(result, fig=getattr(self, "_figure", None))
            alt = viz.alt_text(self._figure)
            if not alt:
                raise ValueError(f"{type(ex).__name__}'s figure has no alt text")
            png = _png(self._figure, self.dpi, self.colors)
            state.update(alt=alt, src="data:image/png;base64," + base64.b64encode(png).decode("ascii"))
        else:
            state.update(html=ex.render_html(result),
                         alt="; ".join(f"{k}: {v}" for k, v in numbers))
        return state

    @staticmethod
    def numbers_html(numbers) -> str:
        """The numbers table's rows, as the page shows them."""
        return "".join(f"<tr><td style='padding-right:1em'>{html.escape(k)}</td><td style='text-align:right'>"
                       f"<code>{html.escape(v)}</code></td></tr>" for k, v in numbers)

    # The script. pick(sizes, chosen) is the state's index (tests/test_static_explorer.py
    # runs the whole script in node); show() reads the controls and swaps picture and numbers.
    SCRIPT = """
function int4refPick(sizes, chosen) {
  var k = 0;
  for (var j = 0; j < sizes.length; j++) { k = k * sizes[j] + chosen[j]; }
  return k;
}
"""

    def _repr_html_(self) -> str:
        StaticExplorer._count += 1
        uid = f"int4ref-static-{StaticExplorer._count}-{id(self):x}"
        states = self.states()
        first = states[self.index(**{c.name: v[i] for c, v, i in zip(self.controls, self.values, self.start)})]
        controls = []
        for j, (c, values, i) in enumerate(zip(self.controls, self.values, self.start)):
            labels = [format_value(v) for v in values]
            if c.kind in SLIDER_KINDS:
                controls.append(
                    f'<label style="margin-right:1.5em">{html.escape(c.label)}: <input type="range" data-j="{j}" '
                    f'min="0" max="{len(values) - 1}" step="1" value="{i}" style="vertical-align:middle"/> '
                    f'<output data-j="{j}">{html.escape(labels[i])}</output></label>')
            else:
                opts = "".join(f'<option value="{k}"{" selected" if k == i else ""}>{html.escape(lab)}</option>'
                               for k, lab in enumerate(labels))
                controls.append(f'<label style="margin-right:1.5em">{html.escape(c.label)}: '
                                f'<select data-j="{j}">{opts}</select></label>')
        if self.view == "png":
            view = (f'<img class="int4ref-view" src="{first["src"]}" alt="{html.escape(first["alt"], quote=True)}" '
                    f'style="max-width:100%;height:auto"/>')
            payload = [{"src": s["src"], "alt": s["alt"], "rows": self.numbers_html(s["numbers"])} for s in states]
        else:
            view = f'<div class="int4ref-view" style="overflow-x:auto">{first["html"]}</div>'
            payload = [{"html": s["html"], "rows": self.numbers_html(s["numbers"])} for s in states]
        labels = [[format_value(v) for v in values] for values in self.values]
        return (
            f'<div id="{uid}" class="int4ref-static-explorer" style="font-size:90%">'
            f'<div><b>{html.escape(self.explorer.title)}</b> (precomputed: {len(states)} states)</div>'
            f'<div style="margin:0.4em 0">{"".join(controls)}</div>'
            f'<table class="int4ref-numbers" style="margin-bottom:0.5em">{self.numbers_html(first["numbers"])}</table>'
            f"{view}"
            f"<script>(function() {{{self.SCRIPT}"
            f"var states = {json.dumps(payload)}, labels = {json.dumps(labels)};"
            f"var sizes = labels.map(function(l) {{ return l.length; }});"
            f"var root = document.getElementById({json.dumps(uid)});"
            "var inputs = root.querySelectorAll('input, select'), outs = root.querySelectorAll('output');"
            "var view = root.querySelector('.int4ref-view'), table = root.querySelector('.int4ref-numbers');"
            "function show() {"
            "  var chosen = sizes.map(function() { return 0; });"
            "  inputs.forEach(function(el) { chosen[+el.dataset.j] = +el.value; });"
            "  outs.forEach(function(o) { var j = +o.dataset.j; o.textContent = labels[j][chosen[j]]; });"
            "  var s = states[int4refPick(sizes, chosen)];"
            "  if (s.src) { view.src = s.src; view.alt = s.alt; } else { view.innerHTML = s.html; }"
            "  table.innerHTML = s.rows;"
            "}"
            "inputs.forEach(function(el) { el.addEventListener('input', show); el.addEventListener('change', show); });"
            "})();</script></div>"
        )

    def nbytes(self) -> int:
        """Size of the page fragment in bytes (UTF-8): what this explorer adds to a page."""
        return len(self._repr_html_().encode("utf-8"))
