"""What every explorer shares: the test data (:func:`sample`, :func:`with_outlier`), a
control (:class:`Control`), and the base class :class:`Explorer` with its widget and update loop.

An explorer is a class with

* ``compute(**settings) -> dict``: pure; numbers (Python floats/ints) and arrays for the
  given settings, every number from int4ref (quantize, dequantize, metrics,
  ``bits_per_weight``, packing). Missing settings take :meth:`Explorer.defaults`.
* ``render(result=None, fig=None) -> Figure``: draws a result (default: the explorer's
  current settings) on a new figure, or redraws it into ``fig``.
* ``widget()``: the controls, the figure and the numbers, wired together. Each change
  of a control calls ``compute`` and redraws into the same figure (``update``).
"""
from __future__ import annotations

import dataclasses
import html
import math
from functools import lru_cache
from typing import ClassVar

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..formats import FORMATS
from ..model import data
from . import viz

WIDGET_DPI = 72  # PNG resolution of the live figures (the static page uses viz.show's 100)


DATA_KINDS = {
    "gaussian": "Gaussian N(0, 1)",
    "laplace": "Laplace (unit variance)",
    "student_t": "Student-t, 4 d.o.f. (unit variance)",
    "minilm": "MiniLM-L6 layer (real weights)",
}
DEFAULT_LAYER = "encoder.layer.0.attention.self.query.weight"


@lru_cache(maxsize=32)
def sample(kind: str = "gaussian", n: int = 65536, seed: int = 0, layer: str = DEFAULT_LAYER) -> np.ndarray:
    """Test data as a read-only float32 array.

    ``"gaussian"``, ``"laplace"`` and ``"student_t"`` (4 degrees of freedom) draw ``n``
    values with unit variance from ``numpy.random.default_rng(seed)``; ``"minilm"``
    returns the weight matrix ``layer`` of all-MiniLM-L6-v2 (``n`` and ``seed`` unused).
    """
    if kind == "minilm":
        return data.minilm_layer(layer)
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    rng = np.random.default_rng(seed)
    if kind == "gaussian":
        x = rng.standard_normal(n)
    elif kind == "laplace":
        x = rng.laplace(0.0, 1 / math.sqrt(2), n)
    elif kind == "student_t":
        x = rng.standard_t(4, n) / math.sqrt(2)  # variance of t(4) is 4/2 = 2
    else:
        raise ValueError(f"unknown data kind {kind!r}; expected one of {list(DATA_KINDS)}")
    x = x.astype(np.float32)
    x.setflags(write=False)
    return x


def with_outlier(x: np.ndarray, sigmas: float, position: int = 0) -> tuple[np.ndarray, float]:
    """``x`` with ``x.flat[position]`` replaced by ``sigmas`` standard deviations of ``x``
    (a copy; ``x`` itself when ``sigmas`` is 0). Returns ``(array, outlier value)``."""
    if not np.isfinite(sigmas) or sigmas < 0:
        raise ValueError(f"outlier magnitude must be finite and >= 0, got {sigmas}")
    if sigmas == 0:
        return x, 0.0
    value = float(np.float32(sigmas * float(np.std(x, dtype=np.float64))))
    y = np.array(x, dtype=np.float32, copy=True)
    y.flat[position] = value
    return y, value


@dataclasses.dataclass(frozen=True)
class Control:
    """One setting of an explorer and the widget that edits it.

    ``kind``: ``"dropdown"`` / ``"selection"`` (``options``: values, or (label, value)
    pairs), ``"int"`` / ``"float"`` (a slider from ``lo`` to ``hi`` by ``step``),
    ``"text"`` or ``"checkbox"``.
    """

    name: str
    label: str
    kind: str
    options: tuple = ()
    lo: float | None = None
    hi: float | None = None
    step: float | None = None

    def option_values(self) -> list:
        return [o[1] if isinstance(o, tuple) else o for o in self.options]

    def check(self, value):
        if self.kind in ("dropdown", "selection"):
            if value not in self.option_values():
                raise ValueError(f"{self.name} must be one of {self.option_values()}; got {value!r}")
        elif self.kind in ("int", "float"):
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise TypeError(f"{self.name} must be a number, got {value!r}")
            if self.kind == "int" and int(value) != value:
                raise ValueError(f"{self.name} must be an integer, got {value!r}")
            if not self.lo <= value <= self.hi:
                raise ValueError(f"{self.name} must be in [{self.lo}, {self.hi}]; got {value!r}")
            value = int(value) if self.kind == "int" else float(value)
        elif self.kind == "checkbox":
            if not isinstance(value, (bool, np.bool_)):
                raise TypeError(f"{self.name} must be True or False, got {value!r}")
            value = bool(value)
        elif self.kind == "text" and not isinstance(value, str):
            raise TypeError(f"{self.name} must be a string, got {value!r}")
        return value

    def sweep(self) -> list:
        """The values a test drives this control through: every option, or the ends and
        a few points of a slider's range (a checkbox: both)."""
        if self.kind in ("dropdown", "selection"):
            return self.option_values()
        if self.kind == "checkbox":
            return [True, False]
        if self.kind in ("int", "float"):
            pts = np.linspace(self.lo, self.hi, 5)
            if self.kind == "int":
                return sorted({round(float(p)) for p in pts})
            return [float(p) for p in pts]
        return []

    def make_widget(self, value):
        import ipywidgets as w

        style = {"description_width": "initial"}
        common = {"description": self.label, "value": value, "style": style}
        if self.kind == "dropdown":
            return w.Dropdown(options=list(self.options), **common)
        if self.kind == "selection":
            return w.SelectionSlider(options=list(self.options), continuous_update=False, **common)
        if self.kind == "int":
            return w.IntSlider(min=int(self.lo), max=int(self.hi), step=int(self.step or 1),
                               continuous_update=False, **common)
        if self.kind == "float":
            digits = max(0, -math.floor(math.log10(self.step))) if self.step else 3
            return w.FloatSlider(min=self.lo, max=self.hi, step=self.step, readout_format=f".{digits}f",
                                 continuous_update=False, **common)
        if self.kind == "checkbox":
            return w.Checkbox(**common)
        if self.kind == "text":
            return w.Text(continuous_update=False, layout=w.Layout(width="95%"), **common)
        raise ValueError(f"unknown control kind {self.kind!r}")


def clear_axes(ax) -> None:
    """Remove what an explorer drew on ``ax`` but keep the axes, so that redrawing reuses
    its ticks and position (much faster than a new figure)."""
    for artist in [*ax.lines, *ax.patches, *ax.collections, *ax.images, *ax.texts]:
        artist.remove()
    if ax.legend_ is not None:
        ax.legend_.remove()
    ax.int4ref_alt = ""


class Explorer:
    """Base class: settings, validation, the widget and its update loop."""

    title = ""
    NCOLS = 2
    FIGSIZE = (9.6, 3.7)
    #: settings that have no control (sizes, seeds), with their defaults
    FIXED: ClassVar[dict] = {}

    # -- settings ------------------------------------------------------------------------
    @classmethod
    def controls(cls) -> tuple[Control, ...]:
        return ()

    @classmethod
    def _control_defaults(cls) -> dict:
        return {}

    @classmethod
    def defaults(cls) -> dict:
        return {**cls._control_defaults(), **cls.FIXED}

    @classmethod
    def validate(cls, settings: dict, base: dict | None = None) -> dict:
        """``settings`` on top of ``base`` (default: :meth:`defaults`), each value checked."""
        out = dict(cls.defaults() if base is None else base)
        unknown = set(settings) - set(out)
        if unknown:
            raise TypeError(f"{cls.__name__} has no setting(s) {sorted(unknown)}; settings: {sorted(out)}")
        out.update(settings)
        for c in cls.controls():
            out[c.name] = c.check(out[c.name])
        return out

    def __init__(self, **settings):
        self.settings = self.validate(settings)
        self.result: dict | None = None
        self.figure: Figure | None = None
        self.error: str | None = None
        self.widgets: dict = {}
        self.image = self.numbers_view = self.box = None
        self._syncing = False

    # -- the two halves --------------------------------------------------------------------
    def compute(self, **settings) -> dict:
        return self._compute(self.validate(settings))

    def _compute(self, s: dict) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def render(self, result: dict | None = None, fig: Figure | None = None) -> Figure:
        """Draw ``result`` (default: ``compute`` of the current settings) on a new figure,
        or into ``fig`` (a figure this explorer made earlier), and return the figure."""
        if result is None:
            result = self.compute(**self.settings)
        if fig is None:
            fig = Figure(figsize=self.FIGSIZE, layout="constrained")
            fig.subplots(1, self.NCOLS)
        else:
            for ax in fig.axes:
                clear_axes(ax)
        self._draw(fig, fig.axes, result)
        fig.int4ref_numbers = self.numbers(result)
        return fig

    def _draw(self, fig, axes, result) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def frames(self, name: str, values, dpi: int = WIDGET_DPI, **settings) -> viz.FrameSlider:
        """The explorer's figure for each value of control ``name`` (other settings: the
        current ones, updated by ``settings``), behind a slider that needs no kernel: the
        static site's stand-in for one control of the live widget."""
        control = {c.name: c for c in self.controls()}.get(name)
        if control is None:
            raise ValueError(f"{type(self).__name__} has no control {name!r}")
        base = self.validate(settings, base=self.settings)
        frames, fig = [], None
        for v in values:
            r = self.compute(**{**base, name: v})
            fig = self.render(r, fig=fig)
            frames.append((format_value(v), viz.to_png(fig, dpi), viz.alt_text(fig)))
        return viz.FrameSlider(frames, name=control.label)

    def numbers(self, result: dict) -> dict:
        """The scalar results the widget shows, by label."""
        return {}

    def numbers_html(self, result: dict) -> str:
        rows = "".join(
            f"<tr><td style='padding-right:1em'>{html.escape(k)}</td><td style='text-align:right'>"
            f"<code>{html.escape(format_value(v))}</code></td></tr>"
            for k, v in self.numbers(result).items()
        )
        return f"<table>{rows}</table>"

    # -- the widget ------------------------------------------------------------------------
    def widget(self):
        """The explorer as an ipywidgets box (display it, or make it a cell's last value)."""
        import ipywidgets as w

        if self.box is not None:
            return self.box
        for c in self.controls():
            ctl = c.make_widget(self.settings[c.name])
            ctl.observe(self._on_change, names="value")
            ctl.int4ref_name = c.name
            self.widgets[c.name] = ctl
        self.image = w.Image(format="png", layout=w.Layout(max_width="100%", height="auto"))
        self.numbers_view = w.HTML()
        self._extra_widgets()
        self.update()
        header = w.HTML(f"<b>{html.escape(self.title)}</b>")
        self.box = w.VBox([header, w.HBox([w.VBox(list(self.widgets.values())), self.numbers_view]),
                           *self._views()])
        return self.box

    def picture(self):
        """What the live widget shows now: PNG bytes (the inspector: its HTML)."""
        return None if self.image is None else bytes(self.image.value)

    def _extra_widgets(self) -> None:
        pass

    def _views(self) -> list:
        return [self.image]

    def _adjust(self, settings: dict, changed: str) -> dict:
        """Hook: make dependent settings consistent after ``changed`` changed."""
        return settings

    def _on_change(self, change) -> None:
        if self._syncing:
            return
        name = change["owner"].int4ref_name
        try:
            settings = self._adjust({**self.settings, name: change["new"]}, name)
            self.settings = self.validate(settings, base=self.settings)
        except (TypeError, ValueError) as exc:
            self._show_error(exc)
            return
        self._sync_widgets()
        self.update()

    def _sync_widgets(self) -> None:
        """Set control widgets to the current settings without triggering updates."""
        self._syncing = True
        try:
            for name, ctl in self.widgets.items():
                if name in self.settings and ctl.value != self.settings[name]:
                    ctl.value = self.settings[name]
            self._sync_extra()
        finally:
            self._syncing = False

    def _sync_extra(self) -> None:
        pass

    def _show_error(self, exc) -> None:
        self.error = f"{type(exc).__name__}: {exc}"
        if self.numbers_view is not None:
            self.numbers_view.value = f"<pre style='color:#D55E00'>{html.escape(self.error)}</pre>"

    def update(self) -> dict | None:
        """Recompute with the current settings and redraw (figure, numbers)."""
        try:
            result = self.compute(**self.settings)
        except (TypeError, ValueError, KeyError, FileNotFoundError) as exc:
            self._show_error(exc)
            return None
        self.error = None
        self.result = result
        self._redraw(result)
        if self.numbers_view is not None:
            self.numbers_view.value = self.numbers_html(result)
        return result

    def _redraw(self, result) -> None:
        if self.figure is None:
            import matplotlib

            # titles at a fixed height: matplotlib otherwise measures every tick label on
            # each draw to place them (a fifth of the drawing time)
            with matplotlib.rc_context({"axes.titley": 1.0}):
                fig = self.render(result)
            for ax in fig.axes:
                for axis in (ax.xaxis, ax.yaxis):
                    if type(axis.get_major_locator()).__name__ == "AutoLocator":
                        axis.set_major_locator(MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]))
            fig.set_dpi(WIDGET_DPI)
            png = viz.draw_png(fig)  # runs the constrained layout once...
            fig.set_layout_engine("none")  # ...then freezes it: redraws keep the axes where they are
            self.figure = fig
        else:
            self.render(result, fig=self.figure)
            png = viz.draw_png(self.figure)
        if self.image is not None:
            self.image.value = png


def format_value(v) -> str:
    """A number (or flag, or text) as the widgets and the static explorers show it."""
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    if isinstance(v, (float, np.floating)):
        if not np.isfinite(v):
            return str(v)
        return f"{v:.4g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.3e}"
    return str(v)


def format_options() -> tuple:
    """The format names an explorer's "format" menu offers (every format of int4ref.formats)."""
    return tuple(FORMATS)
