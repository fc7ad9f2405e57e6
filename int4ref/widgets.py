"""Interactive explorers for the book (ipywidgets + matplotlib).

Four explorers, each a class with

* ``compute(**settings) -> dict``: pure; numbers (Python floats/ints) and arrays for the
  given settings, every number from int4ref (quantize, dequantize, metrics,
  ``bits_per_weight``, packing). Missing settings take :meth:`Explorer.defaults`.
* ``render(result=None, fig=None) -> Figure``: draws a result (default: the explorer's
  current settings) on a new figure, or redraws it into ``fig``.
* ``widget()``: the controls, the figure and the numbers, wired together. Each change
  of a control calls ``compute`` and redraws into the same figure (``update``).

=========================  =======================================================
:class:`FormatExplorer`    data x format x group size x outlier: histogram with the
                           levels, error histogram, RMSE / SQNR / bits per weight
:class:`NF4Builder`        NF4 from normal quantiles: offset and positive/negative
                           split, beside bitsandbytes' table, and the error on N(0, 1)
:class:`DoubleQuantExplorer`  block sizes and bits of both levels: bits saved against
                           error added
:class:`NibbleInspector`   type values or flip bits: codes, bytes, both nibble layouts
=========================  =======================================================

In a notebook::

    from int4ref.widgets import FormatExplorer
    FormatExplorer().widget()

``python -m int4ref.bench_widgets`` measures how long an update takes. On a page without a
kernel, :class:`int4ref.static_explorer.StaticExplorer` shows precomputed states of an
explorer behind sliders and menus.
"""
from __future__ import annotations

import dataclasses
import html
import math
from functools import lru_cache
from typing import ClassVar

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullLocator

from . import codebooks, data, metrics, packing, viz
from ._checks import as_float_array
from .formats import FORMATS, TableFormat, dequantize_groups, quantize_groups
from .quant import bits_per_weight_formula, dequantize, double_quantize, quantize

__all__ = [
    "Control", "Explorer", "FormatExplorer", "NF4Builder", "DoubleQuantExplorer", "NibbleInspector", "EXPLORERS",
    "sample", "with_outlier", "nf4_levels", "parse_values", "format_value",
]

WIDGET_DPI = 72  # PNG resolution of the live figures (the static page uses viz.show's 100)

# ======================================================================================
# data


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


# ======================================================================================
# controls and the explorer base class


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


def _clear(ax) -> None:
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
                _clear(ax)
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


def _format_options():
    return tuple(FORMATS)


# ======================================================================================
# 1. format explorer


class FormatExplorer(Explorer):
    """A format on a data set: the histogram with the format's levels, the error histogram
    and the numbers (RMSE, SQNR, max error, bits per weight, codes used).

    ``outlier`` (in standard deviations of the data) replaces the first value, so group 0
    holds it; its levels are drawn dashed and ``rmse_outlier_group`` is the RMSE of the
    other values of that group.
    """

    title = "Format explorer"
    FIXED: ClassVar[dict] = {"n": 65536, "seed": 0}

    @classmethod
    def controls(cls):
        kinds = [(label, k) for k, label in DATA_KINDS.items() if k != "minilm" or data.minilm_available()]
        return (
            Control("data", "data", "dropdown", tuple(kinds)),
            Control("format", "format", "dropdown", _format_options()),
            Control("group_size", "group size", "selection", (16, 32, 64, 128, 256, 1024)),
            Control("outlier", "outlier (σ)", "float", lo=0.0, hi=100.0, step=1.0),
            Control("scale_dtype", "scales", "dropdown", ("float32", "float16")),
            Control("layer", "MiniLM layer", "dropdown", data.MINILM_LINEAR_NAMES),
        )

    @classmethod
    def _control_defaults(cls):
        return {"data": "gaussian", "format": "nf4", "group_size": 64, "outlier": 0.0, "scale_dtype": "float32",
                "layer": DEFAULT_LAYER}

    @classmethod
    def validate(cls, settings, base=None):
        if settings.get("data") == "minilm":
            data.find_minilm_safetensors()  # FileNotFoundError with the install command
        return super().validate(settings, base)

    def _compute(self, s):
        clean = sample(s["data"], s["n"], s["seed"], s["layer"])
        x, outlier_value = with_outlier(clean, s["outlier"])
        qt = quantize(x, s["format"], s["group_size"], scale_dtype=np.dtype(s["scale_dtype"]))
        x_hat = dequantize(qt)
        usage = viz.level_usage(qt)
        g = qt.group_size
        first = slice(1, min(g, x.size))  # group 0 without its first value (the outlier's slot)
        return {
            "settings": s, "x": x, "x_hat": x_hat, "qt": qt,
            "value_range": (float(clean.min()), float(clean.max())),
            "rmse": metrics.rmse(x, x_hat),
            "sqnr_db": metrics.sqnr_db(x, x_hat),
            "max_abs_error": metrics.max_abs_error(x, x_hat),
            "bits_per_weight": qt.bits_per_weight(),
            "n_values": int(x.size), "n_groups": qt.n_groups,
            "codes_used": usage["used"], "entropy_bits": usage["entropy_bits"],
            "outlier_value": outlier_value,
            "rmse_outlier_group": metrics.rmse(x.ravel()[first], x_hat.ravel()[first]) if x.size > 1 else 0.0,
        }

    def numbers(self, r):
        return {
            "values": r["n_values"], "groups": r["n_groups"], "RMSE": r["rmse"], "SQNR (dB)": r["sqnr_db"],
            "max |error|": r["max_abs_error"], "bits / weight": r["bits_per_weight"],
            "codes used (of 16)": r["codes_used"], "code entropy (bits)": r["entropy_bits"],
            "outlier value": r["outlier_value"], "RMSE, rest of group 0": r["rmse_outlier_group"],
        }

    def _draw(self, fig, axes, r):
        s = r["settings"]
        extra = (0,) if s["outlier"] > 0 else ()
        lo, hi = r["value_range"]
        note = f",\nholds the outlier {r['outlier_value']:.3g}" + (" (off scale)" if not lo <= r["outlier_value"] <= hi
                                                                   else "")
        viz.weight_histogram(r["x"], qt=r["qt"], group="median", extra_groups=extra, value_range=r["value_range"],
                             extra_note=note,
                             ax=axes[0], title=f"{DATA_KINDS[s['data']]}: weights and levels", title_size="medium")
        viz.error_histogram(r["x"], r["x_hat"], ax=axes[1], title_size="medium",
                            title=f"Error: RMSE {r['rmse']:.3g}, SQNR {r['sqnr_db']:.2f} dB")
        fig.suptitle(f"{s['format']}, group size {r['qt'].group_size}, {s['scale_dtype']} scales: "
                     f"{r['bits_per_weight']:.3f} bits per weight, {r['codes_used']}/16 codes used")


# ======================================================================================
# 2. NF4 builder


def nf4_levels(offset: float = codebooks.NF4_OFFSET, n_positive: int = 8, float32_linspace: bool = True) -> np.ndarray:
    """16 levels built like NF4 with ``n_positive`` positive and ``15 - n_positive``
    negative normal quantiles plus an exact 0, scaled to [-1, 1] (sorted, float32).

    This is :func:`int4ref.codebooks.nf4_from_quantiles` with ``n_positive``; the default
    split (8 positive, 7 negative) is NF4's own.
    """
    if isinstance(n_positive, bool) or not isinstance(n_positive, (int, np.integer)) or not 1 <= n_positive <= 14:
        raise ValueError(
            f"n_positive must be an integer in 1..14 (15 - n_positive negative levels); got {n_positive!r}")
    return codebooks.nf4_from_quantiles(offset, float32_linspace=float32_linspace, n_positive=int(n_positive))


class NF4Builder(Explorer):
    """NF4 from normal quantiles: the offset and the split between positive and negative
    levels, the derived table beside bitsandbytes' :data:`int4ref.codebooks.NF4`, and the
    error of both on Gaussian data (group-wise absmax scaling)."""

    title = "NF4 builder"
    FIXED: ClassVar[dict] = {"n": 65536, "seed": 0, "group_size": 64}

    @classmethod
    def controls(cls):
        return (
            Control("offset", "quantile offset", "float", lo=0.90, hi=0.999, step=0.0001),
            Control("n_positive", "positive levels", "int", lo=1, hi=14, step=1),
            Control("float32_linspace", "float32 linspace (as torch)", "checkbox"),
        )

    @classmethod
    def _control_defaults(cls):
        return {"offset": codebooks.NF4_OFFSET, "n_positive": 8, "float32_linspace": True}

    def _compute(self, s):
        levels = nf4_levels(s["offset"], s["n_positive"], s["float32_linspace"])
        x = sample("gaussian", s["n"], s["seed"])
        g = s["group_size"]
        if x.size % g:
            raise ValueError(f"n={x.size} must be a multiple of group_size={g}")
        groups = x.reshape(-1, g)
        # a table format that is not registered in FORMATS: int4ref's group functions take it directly
        derived = TableFormat("nf4_derived", "NF4-style levels from the builder", levels)
        codes, scales, _ = quantize_groups(groups, derived)
        x_derived = dequantize_groups(codes, scales, None, derived).reshape(x.shape)
        x_nf4 = dequantize(quantize(x, "nf4", g))
        diff = (levels.astype(np.float64) - codebooks.NF4.astype(np.float64))
        return {
            "settings": s, "levels": levels, "nf4": codebooks.NF4.copy(), "diff": diff,
            "n_positive": s["n_positive"], "n_negative": 15 - s["n_positive"],
            "identical_to_nf4": bool(np.array_equal(levels, codebooks.NF4)),
            "max_abs_diff": float(np.abs(diff).max()),
            "rmse_derived": metrics.rmse(x, x_derived), "rmse_nf4": metrics.rmse(x, x_nf4),
            "sqnr_derived": metrics.sqnr_db(x, x_derived), "sqnr_nf4": metrics.sqnr_db(x, x_nf4),
            "codes_used": viz.level_usage(codes)["used"],
        }

    def numbers(self, r):
        return {
            "positive / negative levels": f"{r['n_positive']} / {r['n_negative']}",
            "identical to bitsandbytes NF4": r["identical_to_nf4"],
            "max |derived − NF4|": r["max_abs_diff"],
            "RMSE derived": r["rmse_derived"], "RMSE NF4": r["rmse_nf4"],
            "SQNR derived (dB)": r["sqnr_derived"], "SQNR NF4 (dB)": r["sqnr_nf4"],
        }

    def _draw(self, fig, axes, r):
        s = r["settings"]
        code = np.arange(16)
        ax = axes[0]
        ax.axhline(0, color=viz.OKABE_ITO["black"], linewidth=0.5)
        ax.plot(code, r["nf4"], linestyle="none", marker="D", markersize=7, color=viz.OKABE_ITO["vermillion"],
                label="bitsandbytes NF4")
        ax.plot(code, r["levels"], linestyle="none", marker="o", markersize=4, color=viz.OKABE_ITO["blue"],
                label=f"derived ({r['n_positive']}+/{r['n_negative']}−)")
        ax.set_xlim(-0.5, 15.5)
        ax.set_ylim(-1.12, 1.12)
        ax.set_xlabel("code (4-bit index)")
        ax.set_ylabel("level (fraction of group absmax)")
        ax.set_title(f"Levels, offset {s['offset']:.5f}", fontsize="medium")
        ax.legend(loc="upper left", fontsize="small", frameon=False)
        ax.int4ref_alt = (f"Scatter of the 16 levels by code: bitsandbytes NF4 as diamonds and the derived table "
                          f"({r['n_positive']} positive, {r['n_negative']} negative levels, offset {s['offset']:.5f}) "
                          f"as dots, from -1 to 1.")
        ax = axes[1]
        d = r["diff"]
        m = max(float(np.abs(d).max()), 1e-9) * 1.15
        ax.axhline(0, color=viz.OKABE_ITO["black"], linewidth=0.5)
        ax.vlines(code, 0, d, colors=viz.OKABE_ITO["blue"], linewidth=2)
        ax.plot(code, d, linestyle="none", marker="o", markersize=4, color=viz.OKABE_ITO["blue"])
        ax.set_xlim(-0.5, 15.5)
        ax.set_ylim(-m, m)
        ax.set_xlabel("code (4-bit index)")
        ax.set_ylabel("derived − NF4 (fraction of absmax)")
        ax.set_title(f"Difference, max {r['max_abs_diff']:.3g}", fontsize="medium")
        ax.int4ref_alt = (f"Stem plot of the derived level minus the NF4 level per code; the largest difference "
                          f"is {r['max_abs_diff']:.3g}.")
        fig.suptitle(f"Gaussian data, group size {s['group_size']}: RMSE derived {r['rmse_derived']:.4f} vs "
                     f"NF4 {r['rmse_nf4']:.4f} (SQNR {r['sqnr_derived']:.2f} vs {r['sqnr_nf4']:.2f} dB)")
        fig.int4ref_alt = " ".join(a.int4ref_alt for a in axes)


# ======================================================================================
# 3. double quantization


class DoubleQuantExplorer(Explorer):
    """Double quantization: group size of the 4-bit codes (first level), block size, bits
    and table of the second level that compresses the scales. Shows the bits per weight
    saved against the error added, next to float32 and float16 scales and a sweep over
    the second level's bits."""

    title = "Double-quantization explorer"
    FIXED: ClassVar[dict] = {"n": 1 << 16, "seed": 0, "data": "gaussian"}
    #: the second-level settings of the sweep drawn beside the current one
    SWEEP = ((2, "uniform"), (3, "uniform"), (4, "uniform"), (6, "uniform"), (8, "uniform"), (8, "dynamic"))

    @classmethod
    def controls(cls):
        return (
            Control("format", "format", "dropdown", _format_options()),
            Control("group_size", "group size (level 1)", "selection", (16, 32, 64, 128, 256)),
            Control("dq_blocksize", "block size (level 2)", "selection", (16, 32, 64, 128, 256, 512, 1024, 4096)),
            Control("dq_table", "level-2 table", "dropdown", ("dynamic", "uniform")),
            Control("dq_bits", "level-2 bits", "int", lo=2, hi=8, step=1),
        )

    @classmethod
    def _control_defaults(cls):
        return {"format": "nf4", "group_size": 64, "dq_blocksize": 256, "dq_table": "dynamic", "dq_bits": 8}

    def _adjust(self, settings, changed):
        if changed == "dq_table" and settings["dq_table"] == "dynamic":
            settings["dq_bits"] = 8  # the dynamic map exists only with 8 bits
        elif changed == "dq_bits" and settings["dq_bits"] != 8:
            settings["dq_table"] = "uniform"
        return settings

    def _sync_extra(self):
        if "dq_bits" in self.widgets:
            self.widgets["dq_bits"].disabled = self.settings["dq_table"] == "dynamic"

    def _extra_widgets(self):
        self._sync_extra()

    def _compute(self, s):
        x = sample(s["data"], s["n"], s["seed"])
        g, block = s["group_size"], s["dq_blocksize"]
        qt = quantize(x, s["format"], g)
        x32 = dequantize(qt)
        qt16 = quantize(x, s["format"], g, scale_dtype=np.float16)
        x16 = dequantize(qt16)
        qdq = double_quantize(qt, bits=s["dq_bits"], blocksize=block, table=s["dq_table"])
        xdq = dequantize(qdq)
        scales, decoded = qt.scale_values(), qdq.scale_values()
        nz = scales != 0
        sweep = []
        for bits, table in sorted({*self.SWEEP, (s["dq_bits"], s["dq_table"])}):
            if (bits, table) == (s["dq_bits"], s["dq_table"]):
                q, xr = qdq, xdq
            else:
                q = double_quantize(qt, bits=bits, blocksize=block, table=table)
                xr = dequantize(q)
            sweep.append({"bits": bits, "table": table, "bits_per_weight": q.bits_per_weight(),
                          "rmse": metrics.rmse(x, xr)})
        rmse32, rmsedq = metrics.rmse(x, x32), metrics.rmse(x, xdq)
        return {
            "settings": s, "scales": scales, "decoded_scales": decoded,
            "scale_rel_error_pct": 100 * (decoded[nz] - scales[nz]) / scales[nz],
            "scale_relative_error": metrics.relative_error(scales, decoded),
            "bpw_fp32": qt.bits_per_weight(), "bpw_fp16": qt16.bits_per_weight(), "bpw_dq": qdq.bits_per_weight(),
            "bpw_dq_formula": bits_per_weight_formula(g, zero_bits=4 if qt.zeros is not None else 0,
                                                      double_quant=(s["dq_bits"], block)),
            "rmse_fp32": rmse32, "rmse_fp16": metrics.rmse(x, x16), "rmse_dq": rmsedq,
            "bits_saved": qt.bits_per_weight() - qdq.bits_per_weight(),
            "bits_saved_vs_fp16": qt16.bits_per_weight() - qdq.bits_per_weight(),
            "rmse_added": rmsedq - rmse32, "rmse_added_pct": 100 * (rmsedq - rmse32) / rmse32,
            "n_scales": int(scales.size), "n_blocks": int(qdq.scale_state.absmax.size), "sweep": sweep,
        }

    def numbers(self, r):
        return {
            "scales (blocks)": f"{r['n_scales']:,} ({r['n_blocks']:,})",
            "bits/weight, float32 scales": r["bpw_fp32"], "bits/weight, float16 scales": r["bpw_fp16"],
            "bits/weight, double-quantized": r["bpw_dq"], "bits saved vs float32": r["bits_saved"],
            "RMSE, float32 scales": r["rmse_fp32"], "RMSE, double-quantized": r["rmse_dq"],
            "RMSE added (%)": r["rmse_added_pct"], "scale relative error": r["scale_relative_error"],
        }

    def _draw(self, fig, axes, r):
        s = r["settings"]
        ax = axes[0]
        e = r["scale_rel_error_pct"]
        m = max(float(np.abs(e).max()), 1e-6) * 1.05
        counts, edges = np.histogram(e, bins=61, range=(-m, m))
        viz.stairs(ax, counts, edges, color=viz.OKABE_ITO["blue"], alpha=0.7)
        ax.set_xlim(-m, m)
        ax.set_ylim(0, max(1, counts.max()) * 1.08)
        ax.set_xlabel("decoded scale − scale (% of the scale)")
        ax.set_ylabel("count (scales per bin)")
        ax.set_title(f"Scale error: {s['dq_bits']}-bit {s['dq_table']}, blocks of {s['dq_blocksize']}",
                     fontsize="medium")
        ax.int4ref_alt = (f"Histogram of the relative error of {e.size} double-quantized scales, "
                          f"within ±{m:.3g} percent.")
        ax = axes[1]
        base = r["rmse_fp32"]
        floor = 1e-5  # percent; a log axis cannot show 0 (float32 scales are the baseline)

        def added(rmse):
            return max(100 * (rmse - base) / base, floor)

        uni = [row for row in r["sweep"] if row["table"] == "uniform"]
        dyn = [row for row in r["sweep"] if row["table"] == "dynamic"]
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # no mathtext: 3x faster to draw
        ax.yaxis.set_minor_locator(NullLocator())  # dozens of minor ticks cost a third of the drawing
        ax.plot([u["bits_per_weight"] for u in uni], [added(u["rmse"]) for u in uni], color=viz.OKABE_ITO["blue"],
                marker="o", markersize=4, label="uniform level 2 (2, 3, 4, 6, 8 bits)")
        ax.plot([d["bits_per_weight"] for d in dyn], [added(d["rmse"]) for d in dyn],
                color=viz.OKABE_ITO["vermillion"], marker="D", linestyle="none", label="dynamic 8-bit (QLoRA)")
        ax.plot([r["bpw_fp16"]], [added(r["rmse_fp16"])], marker="^", linestyle="none",
                color=viz.OKABE_ITO["orange"], label="float16 scales, no level 2")
        ax.plot([r["bpw_dq"]], [added(r["rmse_dq"])], marker="o", markersize=13, markerfacecolor="none",
                linestyle="none", markeredgewidth=1.5, color=viz.OKABE_ITO["bluish_green"], label="current setting")
        xs = [row["bits_per_weight"] for row in r["sweep"]] + [r["bpw_fp16"]]
        ys = [added(row["rmse"]) for row in r["sweep"]] + [added(r["rmse_fp16"])]
        dx = (max(xs) - min(xs)) or 0.01
        ax.set_xlim(min(xs) - 0.08 * dx, max(xs) + 0.08 * dx)
        ax.set_ylim(min(ys) / 3, max(ys) * 30)
        ax.set_xlabel(f"bits per weight (bits; float32 scales: {r['bpw_fp32']:.3f})")
        ax.set_ylabel("RMSE added vs float32 scales (%)")
        ax.set_title("Bits against error", fontsize="medium")
        ax.legend(loc="upper right", fontsize="x-small", frameon=False)
        ax.int4ref_alt = (f"Plot, log scale, of the RMSE added by compressing the scales (percent of the RMSE with "
                          f"float32 scales) against bits per weight, for a uniform second level of 2 to 8 bits, the "
                          f"8-bit dynamic map and float16 scales; the current setting is {r['bpw_dq']:.4f} bits "
                          f"per weight with {r['rmse_added_pct']:.3g} % more RMSE.")
        fig.suptitle(f"{s['format']}, group size {s['group_size']}: double quantization saves "
                     f"{r['bits_saved']:.4f} bits/weight, adds {r['rmse_added_pct']:.3f} % RMSE")
        fig.int4ref_alt = " ".join(a.int4ref_alt for a in axes)


# ======================================================================================
# 4. nibble inspector

DEFAULT_VALUES = ("0, 0.3, -0.27, -0.89, -0.45, -0.99, 0.06, 1.34, -0.49, -0.62, 0.49, 0.36, 0.11, -0.93, -0.03, 0.7, "
                  "-1.34, -0.46, -1.9, -1.29, -1.84, -0.24, -1.27, 0.27, 0.16, -0.19, -2.52, -0.54, -0.05, 0.11, "
                  "-1.53, -0.48")


def parse_values(text) -> tuple[np.ndarray, int]:
    """Up to 32 numbers (a string separated by commas/spaces, or a sequence) as float32,
    zero-padded to 32 (one GGML block). Returns ``(values, how many were given)``."""
    if isinstance(text, str):
        parts = [p for p in text.replace(",", " ").replace(";", " ").split() if p]
        try:
            vals = [float(p) for p in parts]
        except ValueError:
            bad = next(p for p in parts if not _is_float(p))
            raise ValueError(f"not a number: {bad!r} (type up to 32 numbers separated by commas)") from None
    else:
        vals = list(np.asarray(text, dtype=np.float64).ravel())
    if not 1 <= len(vals) <= 32:
        raise ValueError(f"type 1 to 32 values (one block); got {len(vals)}")
    x = np.zeros(32, dtype=np.float32)
    x[: len(vals)] = as_float_array(np.asarray(vals, dtype=np.float64), "values").astype(np.float32)
    return x, len(vals)


def _is_float(p) -> bool:
    try:
        float(p)
        return True
    except ValueError:
        return False


class NibbleInspector(Explorer):
    """Type up to 32 values (one block) or flip bits of the codes: see the codes, the
    dequantized values and the bytes in the bitsandbytes and GGML layouts.

    ``overrides``: ``((element, code), ...)`` replacing quantized codes (what clicking bits
    does). The live widget shows the bytes as an HTML table (:meth:`render_html`), which
    updates instantly; :meth:`render` draws the same as a matplotlib figure.
    """

    title = "Nibble inspector"
    NCOLS = 2
    FIGSIZE = (9.2, 6.4)
    FIXED: ClassVar[dict] = {"overrides": ()}

    @classmethod
    def controls(cls):
        return (
            Control("values", "values", "text"),
            Control("format", "format", "dropdown", _format_options()),
            Control("element", "element", "int", lo=0, hi=31, step=1),
        )

    @classmethod
    def _control_defaults(cls):
        return {"values": DEFAULT_VALUES, "format": "int4_sym", "element": 0}

    @classmethod
    def validate(cls, settings, base=None):
        out = super().validate(settings, base)
        ov = []
        for item in out["overrides"] or ():
            try:
                i, c = (int(v) for v in item)
            except (TypeError, ValueError):
                raise ValueError(f"overrides are (element, code) pairs; got {item!r}") from None
            if not (0 <= i < 32 and 0 <= c < 16):
                raise ValueError(f"override {item!r}: element must be in 0..31 and code in 0..15")
            ov.append((i, c))
        out["overrides"] = tuple(sorted(dict(ov).items()))
        return out

    def _compute(self, s):
        x, n_given = parse_values(s["values"])
        qt = quantize(x, s["format"], group_size=32)
        codes = qt.codes.copy()
        for i, c in s["overrides"]:
            codes[i] = c
        qt_shown = dataclasses.replace(qt, codes=codes)
        x_hat = dequantize(qt_shown)
        packed = {lay: packing.pack_nibbles(codes, lay) for lay in ("bnb", "ggml")}
        roundtrip = all(np.array_equal(packing.unpack_nibbles(p, 32, lay), codes) for lay, p in packed.items())
        maps = {lay: viz.nibble_map(lay, 32) for lay in packed}
        return {
            "settings": s, "x": x, "n_given": n_given, "quantized_codes": qt.codes, "codes": codes, "x_hat": x_hat,
            "scale": float(qt.scale_values()[0]), "zero": None if qt.zeros is None else int(qt.zeros[0]),
            "bytes_bnb": packed["bnb"], "bytes_ggml": packed["ggml"], "maps": maps, "roundtrip_ok": roundtrip,
            "rmse": metrics.rmse(x[:n_given], x_hat[:n_given]),
            "hex_bnb": packed["bnb"].tobytes().hex(" "), "hex_ggml": packed["ggml"].tobytes().hex(" "),
            "n_flipped": int((codes != qt.codes).sum()),
        }

    def numbers(self, r):
        out = {"values typed": r["n_given"], "scale": r["scale"]}
        if r["zero"] is not None:
            out["zero-point"] = r["zero"]
        out.update({"codes changed by hand": r["n_flipped"], "RMSE of the typed values": r["rmse"],
                    "bitsandbytes bytes": r["hex_bnb"], "GGML bytes": r["hex_ggml"],
                    "unpack(pack(codes)) == codes": r["roundtrip_ok"]})
        return out

    def _draw(self, fig, axes, r):
        viz.bit_layout(r["codes"], axes=axes, title=f"{r['settings']['format']}: 32 codes, "
                       f"scale {r['scale']:.4g}, in both nibble layouts")

    def render_html(self, r=None) -> str:
        """Both layouts as HTML tables (byte, hex, high and low nibble with element and bits),
        then a table of element, value, code and dequantized value."""
        if r is None:
            r = self.compute(**self.settings)
        sel = r["settings"]["element"]
        colors = {(0, 0): ("#0072B2", "white"), (0, 1): ("#8CC4E8", "black"),
                  (1, 0): ("#D55E00", "white"), (1, 1): ("#F2B58C", "black")}

        def cell(i):
            bg, fg = colors[(i // 16, i % 2)]
            border = "3px solid #000" if i == sel else "1px solid #fff"
            return (f"<td style='background:{bg};color:{fg};border:{border};padding:1px 6px;font-family:monospace'>"
                    f"x[{i}] {r['codes'][i]:04b}</td>")

        tables = []
        for lay, title in (("bnb", "bitsandbytes"), ("ggml", "GGML block")):
            byte, high = r["maps"][lay]
            packed = r[f"bytes_{lay}"]
            rows = []
            for k, b in enumerate(packed):
                hi_el = int(np.flatnonzero((byte == k) & high)[0])
                lo_el = int(np.flatnonzero((byte == k) & ~high)[0])
                rows.append(f"<tr><td style='font-family:monospace;padding-right:6px'>{k:2d}: 0x{b:02X}</td>"
                            f"{cell(hi_el)}{cell(lo_el)}</tr>")
            tables.append(f"<table style='border-collapse:collapse;margin-right:2em'><caption>{title}</caption>"
                          f"<tr><th>byte</th><th>bits 7–4</th><th>bits 3–0</th></tr>{''.join(rows)}</table>")
        bold = " style='font-weight:bold'"
        vals = "".join(
            f"<tr{bold if i == sel else ''}><td>{i}</td><td>{r['x'][i]:.4g}</td>"
            f"<td style='font-family:monospace'>{r['codes'][i]:2d} = {r['codes'][i]:04b}</td>"
            f"<td>{r['x_hat'][i]:.4g}</td></tr>"
            for i in range(32)
        )
        values = (f"<table style='border-collapse:collapse'><caption>values</caption><tr><th>x</th><th>value</th>"
                  f"<th>code</th><th>dequantized</th></tr>{vals}</table>")
        return f"<div style='display:flex;align-items:flex-start'>{''.join(tables)}{values}</div>"

    # widget: the inspector's live view is the HTML above, plus bit toggles for one element
    def _extra_widgets(self):
        import ipywidgets as w

        self.html_view = w.HTML()
        self.bit_buttons = [w.ToggleButton(description=f"bit {b}", layout=w.Layout(width="5em")) for b in (3, 2, 1, 0)]
        for btn, b in zip(self.bit_buttons, (3, 2, 1, 0)):
            btn.int4ref_bit = b
            btn.observe(self._on_bit, names="value")
        self.reset_button = w.Button(description="reset flipped bits")
        self.reset_button.on_click(lambda _: self._set_overrides(()))

    def picture(self):
        return None if self.box is None else self.html_view.value

    def _views(self):
        import ipywidgets as w

        return [w.HBox([w.HTML("code bits of the selected element:"), *self.bit_buttons, self.reset_button]),
                self.html_view]

    def _adjust(self, settings, changed):
        if changed in ("values", "format"):
            settings["overrides"] = ()  # new codes: hand-flipped bits no longer apply
        return settings

    def _sync_extra(self):
        if self.result is None or not getattr(self, "bit_buttons", None):
            return
        code = int(self.result["codes"][self.settings["element"]])
        for btn in self.bit_buttons:
            btn.value = bool(code >> btn.int4ref_bit & 1)

    def _on_bit(self, change):
        if self._syncing or self.result is None:
            return
        i = self.settings["element"]
        code = int(self.result["codes"][i]) ^ (1 << change["owner"].int4ref_bit)
        ov = dict(self.settings["overrides"])
        if code == int(self.result["quantized_codes"][i]):
            ov.pop(i, None)
        else:
            ov[i] = code
        self._set_overrides(tuple(ov.items()))

    def _set_overrides(self, overrides):
        self.settings = self.validate({"overrides": overrides}, base=self.settings)
        self.update()

    def flip_bit(self, element: int, bit: int):
        """Flip one bit of one element's code, as clicking its toggle does."""
        if not (0 <= bit <= 3):
            raise ValueError(f"bit must be in 0..3, got {bit}")
        if self.box is not None:
            self.widgets["element"].value = element
            btn = next(b for b in self.bit_buttons if b.int4ref_bit == bit)
            btn.value = not btn.value
            return self.result
        self.settings = self.validate({"element": element}, base=self.settings)
        r = self.result or self.compute(**self.settings)
        code = int(r["codes"][element]) ^ (1 << bit)
        self._set_overrides(tuple({**dict(self.settings["overrides"]), element: code}.items()))
        return self.result

    def _redraw(self, result):
        if self.box is None and self.image is None:  # no widget: keep a figure for render()
            self.figure = self.render(result)
            return
        self.html_view.value = self.render_html(result)
        self._syncing = True
        try:
            self._sync_extra()
        finally:
            self._syncing = False


EXPLORERS = {
    "format": FormatExplorer,
    "nf4": NF4Builder,
    "double_quant": DoubleQuantExplorer,
    "nibble": NibbleInspector,
}
