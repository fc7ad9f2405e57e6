"""Figures for the book: what a 4-bit format does to a tensor, drawn with matplotlib.

Every function returns a :class:`matplotlib.figure.Figure` built without pyplot (so it
works under any backend, Agg included, and nothing accumulates in pyplot's figure
list). Each figure has a title, labelled axes with units, and a text description for
screen readers in ``fig.int4ref_alt`` (also returned by :func:`alt_text`);
:func:`show` displays a figure in a notebook as an ``<img>`` carrying that alt text.
Functions that take ``ax=`` draw into an existing axes instead (and return its figure).

All numbers come from int4ref itself (:func:`int4ref.quantize`, :func:`int4ref.dequantize`,
:mod:`int4ref.metrics`, ``QuantizedTensor.bits_per_weight``, :mod:`int4ref.packing`);
nothing here re-implements a format. Colours are the Okabe-Ito palette, which stays
distinguishable under the common colour-vision deficiencies; formats also differ by
marker and line style so that no plot relies on colour alone.
"""
from __future__ import annotations

import base64
import html
import io
import math

import numpy as np
from matplotlib.figure import Figure

from .. import metrics, packing
from .._checks import as_float_array
from ..formats import FORMATS, dequantize_groups, get_format
from ..quant import QuantizedTensor, dequantize, quantize

#: Okabe & Ito (2008), "Color Universal Design": eight colours distinguishable with
#: protanopia, deuteranopia and tritanopia.
OKABE_ITO = {
    "black": "#000000",
    "orange": "#E69F00",
    "sky_blue": "#56B4E9",
    "bluish_green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "reddish_purple": "#CC79A7",
}
#: Colour, marker and line style of each format, used by every figure.
FORMAT_STYLE = {
    "int4_sym": (OKABE_ITO["blue"], "o", "-"),
    "int4_q4_0": (OKABE_ITO["sky_blue"], "s", "--"),
    "int4_asym": (OKABE_ITO["orange"], "^", "-."),
    "int4_gptq_sym": (OKABE_ITO["yellow"], "<", ":"),
    "nf4": (OKABE_ITO["vermillion"], "D", "-"),
    "fp4_bnb": (OKABE_ITO["bluish_green"], "v", ":"),
    "fp4_e2m1": (OKABE_ITO["reddish_purple"], "P", "--"),
    "lloyd_max": (OKABE_ITO["black"], "X", "-."),
}
#: Colour of each quantization method in :func:`method_tradeoff` (formats there differ by
#: marker and line style).
METHOD_COLOR = {"rtn": OKABE_ITO["blue"], "gptq": OKABE_ITO["vermillion"], "awq": OKABE_ITO["bluish_green"]}
DATA_COLOR = OKABE_ITO["sky_blue"]
LEVEL_COLOR = OKABE_ITO["vermillion"]
ERROR_COLOR = OKABE_ITO["blue"]

VALUE_LABEL = "weight value (tensor units)"
ERROR_LABEL = "error ŵ − w (tensor units)"
DENSITY_LABEL = "density (1 / tensor unit)"

__all__ = [
    "OKABE_ITO", "FORMAT_STYLE", "alt_text", "show", "img_tag", "to_png", "draw_png", "FrameSlider", "group_levels",
    "level_usage", "error_sweep",
    "weight_histogram", "error_histogram", "error_vs_value", "error_tradeoff", "sqnr_vs_group_size",
    "sqnr_vs_bits", "scale_heatmap", "plot_level_usage", "outlier_effect", "outlier_numbers", "nibble_map",
    "bit_layout", "METHOD_COLOR", "method_tradeoff",
]


# --------------------------------------------------------------------------------------
# figure plumbing


def _figure(ax=None, ncols=1, nrows=1, figsize=(6.4, 4.0), **kwargs):
    """(figure, list of axes): a new constrained-layout figure, or ``ax`` and its figure."""
    if ax is not None:
        return ax.figure, [ax]
    fig = Figure(figsize=figsize, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kwargs)
    return fig, list(axes.ravel())


def _finish(fig, ax, alt: str):
    """Attach ``alt`` to ``ax`` and recompute the figure's alt text from all its axes."""
    ax.int4ref_alt = alt
    fig.int4ref_alt = " ".join(a.int4ref_alt for a in fig.axes if getattr(a, "int4ref_alt", None))
    return fig


def alt_text(fig) -> str:
    """The text description of a figure made here (empty string for other figures)."""
    return getattr(fig, "int4ref_alt", "")


def to_png(fig, dpi=100) -> bytes:
    """The figure as PNG bytes (Agg, whatever the current backend)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def img_tag(png: bytes, alt: str, size: tuple[int, int] | None = None) -> str:
    """An ``<img>`` with the PNG inline (base64), its alt text and, if given, its (width, height)."""
    data = base64.b64encode(png).decode("ascii")
    wh = f' width="{size[0]}" height="{size[1]}"' if size else ""
    return (f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt, quote=True)}"{wh} '
            'style="max-width: 100%; height: auto;"/>')


def draw_png(fig, compress_level: int = 1, hinting: str = "no_hinting") -> bytes:
    """Draw ``fig`` once with Agg at its own dpi and return PNG bytes, fast.

    ``savefig`` draws a figure twice when it has a layout engine (even the placeholder
    one left after switching layout off); this draws once, without font hinting (a
    quarter of the drawing time goes to hinting glyphs) and encodes with light zlib
    compression: what a live widget needs. The figure's canvas becomes Agg.
    """
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image

    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    with matplotlib.rc_context({"text.hinting": hinting}):
        canvas.draw()
    buf = io.BytesIO()
    Image.fromarray(np.asarray(canvas.buffer_rgba())).save(buf, format="png", compress_level=compress_level)
    return buf.getvalue()


def stairs(ax, counts, edges, *, fill=True, color=None, alpha=1.0, linewidth=1.0, label=None):
    """A histogram outline (and fill) without ``ax.stairs``' slow data-limit update.

    The caller sets the axis limits. Returns the artist (a PolyCollection or a Line2D).
    """
    from matplotlib.collections import PolyCollection
    from matplotlib.lines import Line2D

    x = np.repeat(np.asarray(edges, dtype=np.float64), 2)[1:-1]
    y = np.repeat(np.asarray(counts, dtype=np.float64), 2)
    if fill:
        verts = np.column_stack([np.concatenate([[x[0]], x, [x[-1]]]), np.concatenate([[0.0], y, [0.0]])])
        art = PolyCollection([verts], facecolors=[color], edgecolors=[color], alpha=alpha, linewidths=0.5,
                             label=label)
        ax.add_collection(art, autolim=False)
    else:
        art = Line2D(x, y, color=color, linewidth=linewidth, alpha=alpha, label=label)
        ax.add_line(art)
    return art


class show:
    """Display a figure in a notebook as ``<img alt=...>`` (the alt text of :func:`alt_text`).

    ``show(fig)`` as the last line of a cell: HTML outputs get the image with its
    description (what the book's pages use); PNG-only front ends get the image.
    """

    def __init__(self, fig, alt: str | None = None, dpi: int = 100):
        self.fig, self.dpi = fig, dpi
        self.alt = alt if alt is not None else alt_text(fig)
        self._png = None

    def _repr_png_(self):
        if self._png is None:  # both front-end formats use the same drawing: draw once
            self._png = to_png(self.fig, self.dpi)
        return self._png

    def _repr_html_(self):
        w, h = (self.fig.get_size_inches() * self.dpi).round().astype(int)
        return img_tag(self._repr_png_(), self.alt, (int(w), int(h)))


class FrameSlider:
    """Precomputed pictures behind an HTML range slider: interaction without a kernel.

    ``frames``: ``(label, png bytes, alt text)`` per position. ``_repr_html_`` writes the
    pictures inline (base64) with a few lines of JavaScript that swap them as the slider
    moves; it works on a static page, and the slider is keyboard accessible.
    """

    _count = 0

    def __init__(self, frames, name: str = "value", start: int = 0):
        self.frames = list(frames)
        if not self.frames:
            raise ValueError("FrameSlider needs at least one frame")
        if not 0 <= start < len(self.frames):
            raise ValueError(f"start must index a frame (0..{len(self.frames) - 1}); got {start}")
        self.name, self.start = name, start

    def _repr_html_(self):
        import json

        FrameSlider._count += 1
        uid = f"int4ref-frames-{FrameSlider._count}-{id(self):x}"
        labels = [str(f[0]) for f in self.frames]
        srcs = ["data:image/png;base64," + base64.b64encode(f[1]).decode("ascii") for f in self.frames]
        alts = [f[2] for f in self.frames]
        first = self.start
        return (
            f'<div id="{uid}">'
            f'<img src="{srcs[first]}" alt="{html.escape(alts[first], quote=True)}" '
            f'style="max-width: 100%; height: auto;"/><br/>'
            f'<label>{html.escape(self.name)}: <input type="range" min="0" max="{len(srcs) - 1}" step="1" '
            f'value="{first}" style="width: 50%; vertical-align: middle;"/> '
            f'<output>{html.escape(labels[first])}</output></label>'
            f"<script>(function() {{"
            f"var root = document.getElementById({json.dumps(uid)});"
            f"var src = {json.dumps(srcs)}, alt = {json.dumps(alts)}, lab = {json.dumps(labels)};"
            f"var img = root.querySelector('img'), out = root.querySelector('output');"
            f"root.querySelector('input').addEventListener('input', function(e) {{"
            f"var i = +e.target.value; img.src = src[i]; img.alt = alt[i]; out.textContent = lab[i]; }});"
            f"}})();</script></div>"
        )


def _fmt_name(fmt) -> str:
    return get_format(fmt).name


def _style(name):
    return FORMAT_STYLE.get(name, (OKABE_ITO["black"], "o", "-"))


def _check_pair(x, x_hat):
    a = as_float_array(x, "x")
    b = as_float_array(x_hat, "x_hat")
    if a.shape != b.shape:
        raise ValueError(f"x and x_hat must have the same shape; got {a.shape} and {b.shape}")
    return a, b


def _quantized(x, format, group_size, qt):
    """(x as array, QuantizedTensor of x): ``qt`` when given (checked against x), else quantized."""
    arr = as_float_array(x, "x")
    if qt is None:
        return arr, quantize(arr, format, group_size)
    if not isinstance(qt, QuantizedTensor):
        raise TypeError(f"qt must be a QuantizedTensor, got {type(qt).__name__}")
    if tuple(qt.shape) != arr.shape:
        raise ValueError(f"qt has shape {qt.shape} but x has shape {arr.shape}")
    return arr, qt


# --------------------------------------------------------------------------------------
# numbers behind the figures (all from int4ref)


def group_levels(qt: QuantizedTensor, group: int) -> np.ndarray:
    """The values group ``group`` of ``qt`` can take, sorted: int4ref's dequantization of
    every code with that group's scale (and zero-point). Codes a format never produces
    (``int4_sym``'s code 0) are left out."""
    if not 0 <= group < qt.n_groups:
        raise IndexError(f"group {group} out of range: the tensor has {qt.n_groups} groups")
    fmt = get_format(qt.format)
    codes = np.arange(16, dtype=np.uint8)[~np.isnan(fmt.levels())][None, :]
    scales = qt.scale_values()[group : group + 1]
    zeros = None if qt.zeros is None else qt.zeros[group : group + 1]
    return np.sort(dequantize_groups(codes, scales, zeros, fmt).ravel())


def _all_levels(qt: QuantizedTensor) -> np.ndarray:
    fmt = get_format(qt.format)
    codes = np.arange(16, dtype=np.uint8)[~np.isnan(fmt.levels())]
    return dequantize_groups(np.broadcast_to(codes, (qt.n_groups, codes.size)), qt.scale_values(), qt.zeros, fmt)


def _representative_group(qt: QuantizedTensor, group) -> int:
    if isinstance(group, (int, np.integer)) and not isinstance(group, bool):
        if not 0 <= group < qt.n_groups:
            raise IndexError(f"group {group} out of range: the tensor has {qt.n_groups} groups")
        return int(group)
    mags = np.abs(qt.scale_values())
    if group == "median":
        return int(np.argsort(mags, kind="stable")[(mags.size - 1) // 2])
    if group == "max":
        return int(np.argmax(mags))
    raise ValueError(f"group must be an index, 'median' or 'max'; got {group!r}")


def level_usage(qt) -> dict:
    """How a quantized tensor uses its 16 codes.

    ``qt``: a QuantizedTensor or an integer array of codes. Returns ``counts`` (16,),
    ``share`` (fractions), ``used`` (number of codes that occur) and ``entropy_bits``
    (Shannon entropy of the code histogram: what an ideal entropy coder would need per
    weight, at most 4).
    """
    codes = qt.codes if isinstance(qt, QuantizedTensor) else np.asarray(qt)
    if codes.dtype.kind not in "iu" or codes.size == 0 or codes.min() < 0 or codes.max() > 15:
        raise ValueError("level_usage needs a non-empty array of 4-bit codes (integers 0..15)")
    counts = np.bincount(codes.ravel(), minlength=16)
    share = counts / counts.sum()
    nz = share[share > 0]
    return {"counts": counts, "share": share, "used": int((counts > 0).sum()),
            "entropy_bits": float(-(nz * np.log2(nz)).sum())}


_METRICS = {"sqnr_db": ("SQNR (dB)", metrics.sqnr_db), "rmse": ("RMSE (tensor units)", metrics.rmse)}


def _metric(metric):
    if metric not in _METRICS:
        raise ValueError(f"metric must be one of {sorted(_METRICS)}; got {metric!r}")
    return _METRICS[metric]


def error_sweep(x, formats=("int4_sym", "int4_asym", "nf4", "fp4_e2m1"), group_sizes=(16, 32, 64, 128, 256),
                scale_dtype=np.float32, double_quant=False) -> list[dict]:
    """Quantize ``x`` with every format and group size; one row per pair with
    ``format, group_size, bits_per_weight, rmse, sqnr_db`` (all from int4ref)."""
    arr = as_float_array(x, "x")
    if not formats or not group_sizes:
        raise ValueError("need at least one format and one group size")
    rows = []
    for name in formats:
        name = _fmt_name(name)
        for g in group_sizes:
            qt = quantize(arr, name, g, scale_dtype=scale_dtype, double_quant=double_quant)
            x_hat = dequantize(qt)
            rows.append({"format": name, "group_size": qt.group_size, "bits_per_weight": qt.bits_per_weight(),
                         "rmse": metrics.rmse(arr, x_hat), "sqnr_db": metrics.sqnr_db(arr, x_hat)})
    return rows


def outlier_numbers(values=None, format="int4_sym", outlier=20.0, position=0, seed=0, size=64) -> dict:
    """One group with and without a single outlier (numbers behind :func:`outlier_effect`).

    ``values``: the group (default: ``size`` N(0, 1) samples from ``seed``). The outlier
    replaces ``values[position]`` by ``outlier`` (in the units of the values). Returns the
    arrays (``clean``, ``spiked``, their reconstructions and level sets) and the RMSE of
    the OTHER values (all but ``position``) in both cases, and how many distinct levels
    those other values use.
    """
    if values is None:
        values = np.random.default_rng(seed).standard_normal(size).astype(np.float32)
    clean = as_float_array(values, "values").astype(np.float32).ravel()
    if not np.isfinite(outlier):
        raise ValueError(f"outlier must be finite, got {outlier}")
    if not isinstance(position, (int, np.integer)) or not 0 <= position < clean.size:
        raise ValueError(f"position must be an index into the {clean.size} values, got {position!r}")
    spiked = clean.copy()
    spiked[position] = outlier
    others = np.arange(clean.size) != position
    out = {"format": _fmt_name(format), "position": int(position), "outlier": float(outlier)}
    for key, v in (("clean", clean), ("spiked", spiked)):
        qt = quantize(v, format, group_size="tensor")
        v_hat = dequantize(qt)
        out[key], out[key + "_hat"], out[key + "_levels"] = v, v_hat, group_levels(qt, 0)
        out[key + "_rmse_others"] = metrics.rmse(v[others], v_hat[others])
        out[key + "_levels_used_by_others"] = int(np.unique(qt.codes[others]).size)
    return out


def nibble_map(layout: str, n: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Where :func:`int4ref.packing.pack_nibbles` puts each of ``n`` codes.

    Returns ``(byte, high)``: for element ``i``, the byte index and whether it is the high
    nibble. Found by packing a single nonzero code at each position, so it shows what the
    packing code does rather than restating it.
    """
    byte, high = np.empty(n, dtype=np.int64), np.empty(n, dtype=bool)
    for i in range(n):
        probe = np.zeros(n, dtype=np.uint8)
        probe[i] = 0xF
        packed = packing.pack_nibbles(probe, layout)
        (k,) = np.flatnonzero(packed)
        byte[i], high[i] = k, packed[k] == 0xF0
    return byte, high


# --------------------------------------------------------------------------------------
# plots


def weight_histogram(x, format="nf4", group_size=64, *, qt=None, group="median", extra_groups=(),
                     extra_note="", levels="group", bins=120, value_range=None, ax=None, title=None, title_size=None):
    """Histogram of ``x`` with the 16 levels of ``format`` overlaid.

    The levels depend on each group's scale, so ``levels="group"`` draws those of one
    representative group (``group``: ``"median"`` scale, ``"max"`` scale, or an index) as
    vertical lines, and ``extra_groups`` (indices) adds others, dashed (``extra_note`` is
    appended to their legend entry). ``levels="density"``
    instead draws where the levels of all groups lie (a histogram of every group's 16
    levels): the resolution the format offers across the tensor. ``qt`` reuses an existing
    quantization of ``x``. ``value_range`` (lo, hi) fixes the histogram range.
    """
    arr, qt = _quantized(x, format, group_size, qt)
    name = qt.format
    if levels not in ("group", "density"):
        raise ValueError(f"levels must be 'group' or 'density'; got {levels!r}")
    fig, (ax,) = _figure(ax)
    flat = arr.ravel()
    lo, hi = value_range if value_range is not None else (float(flat.min()), float(flat.max()))
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    counts, edges = np.histogram(flat, bins=bins, range=(lo, hi), density=True)
    stairs(ax, counts, edges, color=DATA_COLOR, alpha=0.6, label="weights")
    top = float(counts.max()) * 1.08 if counts.size else 1.0
    g = _representative_group(qt, group)
    if levels == "group":
        lv = group_levels(qt, g)
        ax.vlines(lv, 0, top, colors=LEVEL_COLOR, linewidth=1.0,
                  label=f"{lv.size} levels of group {g} (scale {qt.scale_values()[g]:.3g})")
        for e in extra_groups:
            lv_e = group_levels(qt, int(e))
            ax.vlines(lv_e, 0, top * 0.8, colors=OKABE_ITO["black"], linestyles="dashed", linewidth=1.0,
                      label=f"levels of group {int(e)} (scale {qt.scale_values()[int(e)]:.3g}){extra_note}")
        what = f"the {lv.size} levels of group {g} as vertical lines from {lv.min():.3g} to {lv.max():.3g}"
    else:
        all_lv = _all_levels(qt).ravel()
        c2, e2 = np.histogram(all_lv, bins=bins, range=(lo, hi), density=True)
        stairs(ax, c2, e2, fill=False, color=LEVEL_COLOR, linewidth=1.2, label=f"levels of all {qt.n_groups} groups")
        top = max(top, float(c2.max()) * 1.08)
        what = f"the density of the levels of all {qt.n_groups} groups as a line"
    ax.set_xlim(lo, hi)
    ax.set_ylim(0, top)
    ax.set_xlabel(VALUE_LABEL)
    ax.set_ylabel(DENSITY_LABEL)
    ax.set_title(title or f"{name}, group size {qt.group_size}: weights and levels", fontsize=title_size)
    ax.legend(loc="upper right", fontsize="x-small", frameon=True, framealpha=0.85, edgecolor="none")
    alt = (f"Histogram of {flat.size} weight values between {lo:.3g} and {hi:.3g}, "
           f"overlaid with {what} for format {name} at group size {qt.group_size}.")
    return _finish(fig, ax, alt)


def error_histogram(x, x_hat, *, bins=101, ax=None, title=None, title_size=None, color=ERROR_COLOR, label=None):
    """Histogram of the quantization error ``x_hat - x``, with its RMSE in the title."""
    a, b = _check_pair(x, x_hat)
    err = (b.astype(np.float64) - a.astype(np.float64)).ravel()
    m = float(np.abs(err).max()) or 1.0
    fig, (ax,) = _figure(ax)
    counts, edges = np.histogram(err, bins=bins, range=(-m, m))
    stairs(ax, counts, edges, color=color, alpha=0.7, label=label)
    ax.set_xlim(-m, m)
    ax.set_ylim(0, max(1, counts.max()) * 1.05)
    ax.set_xlabel(ERROR_LABEL)
    ax.set_ylabel("count (weights per bin)")
    rmse = metrics.rmse(a, b)
    ax.set_title(title or f"Quantization error, RMSE {rmse:.3g}", fontsize=title_size)
    if label:
        ax.legend(loc="upper right", fontsize="small", frameon=False)
    alt = (f"Histogram of the quantization error of {err.size} values, from {-m:.3g} to {m:.3g}; "
           f"RMSE {rmse:.3g}, max absolute error {float(np.abs(err).max()):.3g}.")
    return _finish(fig, ax, alt)


def error_vs_value(x, x_hat, *, max_points=20000, seed=0, ax=None, title=None):
    """Scatter of the error ``x_hat - x`` against ``x`` (a random subset of ``max_points``)."""
    a, b = _check_pair(x, x_hat)
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    if a.size > max_points:
        idx = np.random.default_rng(seed).choice(a.size, max_points, replace=False)
        a_s, b_s = a[idx], b[idx]
    else:
        a_s, b_s = a, b
    fig, (ax,) = _figure(ax)
    ax.scatter(a_s, b_s - a_s, s=2, color=ERROR_COLOR, alpha=0.4, linewidths=0, rasterized=True)
    ax.axhline(0, color=OKABE_ITO["black"], linewidth=0.6)
    ax.set_xlabel(VALUE_LABEL)
    ax.set_ylabel(ERROR_LABEL)
    ax.set_title(title or "Error against value")
    alt = (f"Scatter plot of the quantization error against the original value for {a_s.size} of {a.size} "
           f"values; the error ranges from {float((b - a).min()):.3g} to {float((b - a).max()):.3g}.")
    return _finish(fig, ax, alt)


def error_tradeoff(x, formats=("int4_sym", "int4_asym", "nf4", "fp4_e2m1"), group_sizes=(16, 32, 64, 128, 256), *,
                   against="bits_per_weight", metric="sqnr_db", scale_dtype=np.float32, rows=None, ax=None,
                   title=None):
    """SQNR (or RMSE) of several formats on one axis, against group size or bits per weight.

    ``against``: ``"group_size"`` (log2 axis) or ``"bits_per_weight"`` (every stored bit:
    codes, scales, zero-points, from ``QuantizedTensor.bits_per_weight``). ``rows``: a
    precomputed :func:`error_sweep`.
    """
    ylabel, _ = _metric(metric)
    if against not in ("group_size", "bits_per_weight"):
        raise ValueError(f"against must be 'group_size' or 'bits_per_weight'; got {against!r}")
    if rows is None:
        rows = error_sweep(x, formats, group_sizes, scale_dtype=scale_dtype)
    fig, (ax,) = _figure(ax)
    names = list(dict.fromkeys(r["format"] for r in rows))
    for name in names:
        rs = sorted((r for r in rows if r["format"] == name), key=lambda r: r[against])
        color, marker, ls = _style(name)
        ax.plot([r[against] for r in rs], [r[metric] for r in rs], color=color, marker=marker, linestyle=ls,
                label=name, markersize=5)
    if against == "group_size":
        ax.set_xscale("log", base=2)
        ax.set_xlabel("group size (weights per scale)")
    else:
        ax.set_xlabel("bits per weight (bits, scales included)")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small", frameon=False)
    metric_name = "SQNR" if metric == "sqnr_db" else "RMSE"
    ax.set_title(title or f"{metric_name} against {'group size' if against == 'group_size' else 'bits per weight'}")
    best = max(rows, key=lambda r: r["sqnr_db"])
    sizes = sorted({r["group_size"] for r in rows})
    alt = (f"Line plot of {metric_name} against {against.replace('_', ' ')} for formats {', '.join(names)} "
           f"at group sizes {', '.join(map(str, sizes))}. The highest SQNR, {best['sqnr_db']:.2f} dB, "
           f"is {best['format']} at group size {best['group_size']} ({best['bits_per_weight']:.3f} bits per weight).")
    return _finish(fig, ax, alt)


def sqnr_vs_group_size(x, formats=("int4_sym", "int4_asym", "nf4", "fp4_e2m1"), group_sizes=(16, 32, 64, 128, 256),
                       **kwargs):
    """:func:`error_tradeoff` against group size."""
    return error_tradeoff(x, formats, group_sizes, against="group_size", **kwargs)


def sqnr_vs_bits(x, formats=("int4_sym", "int4_asym", "nf4", "fp4_e2m1"), group_sizes=(16, 32, 64, 128, 256),
                 **kwargs):
    """:func:`error_tradeoff` against bits per weight."""
    return error_tradeoff(x, formats, group_sizes, against="bits_per_weight", **kwargs)


def scale_heatmap(w, format="nf4", group_size=64, *, ax=None, title=None, cmap=None):
    """Heat map of the per-group scales of a weight matrix ``w`` of shape ``(out, in)``.

    Groups run along each row (``in`` must be a multiple of ``group_size``), so the map
    has ``out`` rows and ``in / group_size`` columns. Formats with signed scales
    (``int4_q4_0``) get a diverging colour map centred at 0.
    """
    arr = as_float_array(w, "w")
    if arr.ndim != 2:
        raise ValueError(f"scale_heatmap needs a 2-D weight matrix (out, in); got shape {arr.shape}")
    if not isinstance(group_size, (int, np.integer)) or group_size <= 0 or arr.shape[1] % group_size:
        raise ValueError(f"group_size must be a positive divisor of the row length {arr.shape[1]}; got {group_size!r}")
    qt = quantize(arr, format, int(group_size))
    scales = qt.scale_values().reshape(arr.shape[0], arr.shape[1] // group_size)
    fig, (ax,) = _figure(ax, figsize=(6.4, 4.8))
    signed = bool((scales < 0).any())
    if signed:
        m = float(np.abs(scales).max())
        im = ax.imshow(scales, aspect="auto", interpolation="nearest", cmap=cmap or "PuOr", vmin=-m, vmax=m)
    else:
        im = ax.imshow(scales, aspect="auto", interpolation="nearest", cmap=cmap or "cividis")
    fig.colorbar(im, ax=ax, label="scale (tensor units per level step)" if qt.format.startswith("int4")
                 else "scale = group absmax (tensor units)")
    ax.set_xlabel(f"group index along the input dimension ({group_size} inputs per group)")
    ax.set_ylabel("output row (index)")
    ax.set_title(title or f"Per-group scales, {qt.format}, group size {group_size}")
    alt = (f"Heat map of the {scales.size} per-group scales of a {arr.shape[0]} by {arr.shape[1]} weight matrix "
           f"({qt.format}, group size {group_size}): {scales.shape[0]} rows by {scales.shape[1]} groups, "
           f"scales from {float(scales.min()):.3g} to {float(scales.max()):.3g}, "
           f"median {float(np.median(scales)):.3g}.")
    return _finish(fig, ax, alt)


def plot_level_usage(x, formats=tuple(FORMATS), group_size=64, *, title=None):
    """Bar charts of how often each of the 16 codes occurs, one panel per format, with the
    number of codes used and the entropy of the code histogram (bits per weight an
    ideal entropy coder would need)."""
    arr = as_float_array(x, "x")
    names = [_fmt_name(f) for f in formats]
    if not names:
        raise ValueError("need at least one format")
    ncols = min(4, len(names))
    nrows = math.ceil(len(names) / ncols)
    fig, axes = _figure(None, ncols=ncols, nrows=nrows, figsize=(2.6 * ncols + 0.6, 2.3 * nrows + 0.6),
                        sharey=True)
    parts = []
    for ax, name in zip(axes, names):
        u = level_usage(quantize(arr, name, group_size))
        color, _, _ = _style(name)
        ax.bar(np.arange(16), 100 * u["share"], color=color, width=0.8)
        ax.set_title(f"{name}: {u['used']}/16 codes, H = {u['entropy_bits']:.2f} bits", fontsize="small")
        ax.set_xticks([0, 4, 8, 12, 15])
        ax.set_xlabel("code (0–15)")
        parts.append(f"{name} uses {u['used']} of 16 codes with entropy {u['entropy_bits']:.2f} bits")
        ax.int4ref_alt = ""
    for ax in axes[len(names):]:
        ax.set_visible(False)
    for ax in axes[::ncols]:
        ax.set_ylabel("share of weights (%)")
    fig.suptitle(title or f"Code usage at group size {group_size} ({arr.size} weights)")
    alt = (f"Bar charts of the share of weights per 4-bit code, one per format, for {arr.size} weights: "
           + "; ".join(parts) + ".")
    return _finish(fig, axes[0], alt)


def outlier_effect(values=None, format="int4_sym", outlier=20.0, position=0, *, seed=0, size=64, numbers=None,
                   axes=None, title=None):
    """One group quantized without and with a single outlier, side by side.

    Each panel shows the values (dots), their reconstruction (crosses) and the group's
    levels (horizontal lines); the titles give the RMSE of the other values. One large
    value stretches the group's scale, so the levels spread out and the other values
    share a handful of them. ``numbers``: a precomputed :func:`outlier_numbers`.
    """
    n = numbers or outlier_numbers(values, format, outlier, position, seed, size)
    if axes is None:
        fig, axes = _figure(None, ncols=2, figsize=(9.0, 3.8))
    else:
        fig = axes[0].figure
    idx = np.arange(n["clean"].size)
    lim = max(float(np.abs(n["spiked"]).max()), float(np.abs(n["clean"]).max())) * 1.08
    for ax, key, label in ((axes[0], "clean", "without outlier"), (axes[1], "spiked", f"with outlier {outlier:g}")):
        ax.hlines(n[key + "_levels"], -0.5, idx.size - 0.5, colors=OKABE_ITO["black"], linewidth=0.5, alpha=0.35)
        ax.plot(idx, n[key], "o", color=DATA_COLOR, markersize=4, label="value")
        ax.plot(idx, n[key + "_hat"], "x", color=LEVEL_COLOR, markersize=5, label="dequantized")
        ax.set_ylim(-lim, lim)
        ax.set_xlim(-0.5, idx.size - 0.5)
        ax.set_xlabel("position in the group (index)")
        ax.set_ylabel(VALUE_LABEL)
        ax.set_title(f"{label}: RMSE of the others {n[key + '_rmse_others']:.3g}\n"
                     f"({n[key + '_levels_used_by_others']} levels used by them)", fontsize="medium")
        ax.int4ref_alt = ""
    axes[1].legend(loc="lower right", fontsize="small", frameon=False)
    fig.suptitle(title or f"{n['format']}: one outlier in a group of {idx.size}")
    alt = (f"Two panels for format {n['format']}, a group of {idx.size} values and its dequantized values with the "
           f"group's levels as horizontal lines. Without an outlier the other values reconstruct with RMSE "
           f"{n['clean_rmse_others']:.3g} using {n['clean_levels_used_by_others']} levels; with value {outlier:g} "
           f"at position {n['position']} the scale grows and their RMSE is {n['spiked_rmse_others']:.3g} using "
           f"{n['spiked_levels_used_by_others']} levels.")
    fig.int4ref_numbers = n
    return _finish(fig, axes[0], alt)


_LAYOUT_TITLES = {
    "bnb": "bitsandbytes: x[2k] high, x[2k+1] low",
    "ggml": "GGML Q4_0 block: x[j] low, x[j+16] high",
}


def bit_layout(codes=None, layouts=("bnb", "ggml"), *, axes=None, title=None):
    """The bytes that 32 four-bit codes pack into, in each layout side by side.

    One row per byte (offset 0 at the top, its value in hex beside it), split into the
    high nibble (bits 7–4) and the low nibble (bits 3–0); each nibble shows which element
    it holds and its bits. Colours tell the first 16 elements (blue) from the last 16
    (orange), lighter for odd elements. Uses :func:`int4ref.packing.pack_nibbles`.
    """
    c = np.arange(32, dtype=np.uint8) % 16 if codes is None else np.asarray(codes)
    if c.shape != (32,) or c.dtype.kind not in "iu" or c.min() < 0 or c.max() > 15:
        raise ValueError(f"bit_layout needs 32 integer codes in 0..15 (one GGML block); got shape {c.shape}")
    c = c.astype(np.uint8)
    layouts = list(layouts)
    for lay in layouts:
        if lay not in _LAYOUT_TITLES:
            raise ValueError(f"unknown layout {lay!r}; expected some of {sorted(_LAYOUT_TITLES)}")
    if axes is None:
        fig, axes = _figure(None, ncols=len(layouts), figsize=(4.4 * len(layouts), 6.2))
    else:
        fig = axes[0].figure
    palette = {(0, 0): "#0072B2", (0, 1): "#8CC4E8", (1, 0): "#D55E00", (1, 1): "#F2B58C"}
    text_color = {(0, 0): "white", (0, 1): "black", (1, 0): "white", (1, 1): "black"}
    parts = []
    for ax, lay in zip(axes, layouts):
        packed = packing.pack_nibbles(c, lay)
        byte, high = nibble_map(lay, 32)
        rgb = np.zeros((packed.size, 2, 3))
        for i in range(32):
            key = (i // 16, i % 2)
            rgb[byte[i], 0 if high[i] else 1] = [int(palette[key][k : k + 2], 16) / 255 for k in (1, 3, 5)]
        ax.imshow(rgb, aspect="auto", interpolation="nearest", extent=(-0.5, 1.5, packed.size - 0.5, -0.5))
        for i in range(32):
            col = 0 if high[i] else 1
            ax.text(col, byte[i], f"x[{i}] {c[i]:04b}", ha="center", va="center", family="monospace",
                    fontsize=8.5, color=text_color[(i // 16, i % 2)], clip_on=True, in_layout=False)
        ax.vlines(0.5, -0.5, packed.size - 0.5, colors="white", linewidth=2)
        ax.hlines(np.arange(packed.size) + 0.5, -0.5, 1.5, colors="white", linewidth=1)
        ax.set_xlim(-0.5, 1.5)
        ax.set_ylim(packed.size - 0.5, -0.5)
        ax.set_xticks([0, 1], ["high nibble\n(bits 7–4)", "low nibble\n(bits 3–0)"])
        ax.set_yticks(np.arange(packed.size), [f"{k}: 0x{b:02X}" for k, b in enumerate(packed)], family="monospace")
        ax.set_ylabel("byte offset: value (hex)")
        ax.set_xlabel("nibble of the byte (4 bits each)")
        ax.set_title(_LAYOUT_TITLES[lay], fontsize="medium")
        ax.int4ref_alt = ""
        parts.append(f"{lay}: byte 0 holds x[{int(np.flatnonzero((byte == 0) & high)[0])}] in the high nibble and "
                     f"x[{int(np.flatnonzero((byte == 0) & ~high)[0])}] in the low nibble, bytes "
                     + " ".join(f"{b:02X}" for b in packed))
    fig.suptitle(title or "32 four-bit codes packed into 16 bytes")
    alt = ("Byte maps of 32 four-bit codes packed two per byte, one panel per layout. " + "; ".join(parts) + ".")
    return _finish(fig, axes[0], alt)


METRIC_LABELS = {
    "mean_cos": "mean cosine similarity to float32 embeddings",
    "min_cos": "minimum cosine similarity to float32 embeddings",
    "recall_at_1": "recall@1 (fraction of queries)",
    "mrr": "mean reciprocal rank",
}


def method_tradeoff(rows, metric="mean_cos", *, baseline=None, errors=None, ax=None, title=None):
    """A quality metric of whole quantized models against bits per weight, one line per
    method and format (the rows of ``results/minilm-sweep.json``, or any dicts with
    ``method``, ``format``, ``bits_per_weight`` and ``metric``).

    ``baseline``: the float32 value, drawn as a horizontal line. ``errors``: optional dict
    ``id(row) -> (low, high)`` of an interval to draw around each point (e.g. a bootstrap
    interval of recall@1).
    """
    if metric not in METRIC_LABELS:
        raise ValueError(f"metric must be one of {', '.join(METRIC_LABELS)}; got {metric!r}")
    rows = [r for r in rows if r["method"] in METHOD_COLOR]
    if not rows:
        raise ValueError("no rows of a known method (rtn, gptq, awq) to plot")
    fig, (ax,) = _figure(ax, figsize=(6.4, 4.2))
    lines = sorted({(r["method"], r["format"]) for r in rows}, key=lambda k: (list(METHOD_COLOR).index(k[0]), k[1]))
    for method, fmt in lines:
        rs = sorted((r for r in rows if (r["method"], r["format"]) == (method, fmt)),
                    key=lambda r: r["bits_per_weight"])
        _, marker, ls = _style(fmt)
        x = [r["bits_per_weight"] for r in rs]
        y = [r[metric] for r in rs]
        ax.plot(x, y, color=METHOD_COLOR[method], marker=marker, linestyle=ls, markersize=5,
                label=f"{method.upper()} {fmt}")
        if errors:
            lo = [y_i - errors[id(r)][0] for r, y_i in zip(rs, y)]
            hi = [errors[id(r)][1] - y_i for r, y_i in zip(rs, y)]
            ax.errorbar(x, y, yerr=[lo, hi], fmt="none", ecolor=METHOD_COLOR[method], alpha=0.5, capsize=2)
    if baseline is not None:
        ax.axhline(baseline, color=OKABE_ITO["black"], linestyle=":", linewidth=1, label="float32")
    ax.set_xlabel("bits per weight (codes, scales and zero-points)")
    ax.set_ylabel(METRIC_LABELS[metric])
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small", frameon=False, ncol=2)
    ax.set_title(title or f"{metric.replace('_', ' ')} against bits per weight")
    best = max(rows, key=lambda r: r[metric])
    worst = min(rows, key=lambda r: r[metric])
    alt = (f"Line plot of {METRIC_LABELS[metric]} against bits per weight for "
           f"{', '.join(m.upper() + ' ' + f for m, f in lines)}. Highest: {best[metric]:.4f} "
           f"({best['method'].upper()} {best['format']}, {best['bits_per_weight']:.3f} bits per weight); lowest: "
           f"{worst[metric]:.4f} ({worst['method'].upper()} {worst['format']}, {worst['bits_per_weight']:.3f} bits)."
           + (f" The float32 model scores {baseline:.4f}." if baseline is not None else ""))
    return _finish(fig, ax, alt)
