"""Concept pictures for the book, drawn from real runs of int4ref's algorithms.

A concept picture shows what an algorithm does at one moment, so it needs the algorithm's
intermediate state, which the production functions do not expose. Where that is so, this
module replays the algorithm step by step and checks that the replay ends exactly where the
production function does (same codes), so that the picture is what the code does.

* GPTQ's column sweep (:func:`gptq_sweep`, :func:`gptq_sweep_figure`): the gptq-awq chapter;
* the nibble layouts of bitsandbytes, GGML, GPTQ and AWQ side by side (:func:`layout_maps`,
  :func:`packing_layouts`): the packing chapter. :func:`layout_maps` finds where each element
  lands by packing probes with :mod:`int4ref.packing` (one nonzero code at a time), so the
  picture shows what the packing code does rather than restating the rule.

Every figure is a :class:`matplotlib.figure.Figure` built without pyplot, with its text
description for screen readers in ``fig.int4ref_alt`` (read by :func:`int4ref.explore.viz.alt_text`
and shown by :class:`int4ref.explore.viz.show`), computed from the same numbers as the drawing.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from .. import packing
from ..formats import GroupParams
from ..gptq import (
    check_activations,
    check_format,
    check_group_size,
    check_weight,
    gptq_hessian,
    gptq_quantize,
    inverse_cholesky_upper,
)
from . import viz

__all__ = ["GPTQSweepState", "gptq_sweep", "gptq_sweep_alt", "gptq_sweep_figure",
           "BYTE_LAYOUTS", "WORD_LAYOUTS", "byte_slots", "word_slots", "layout_maps", "packing_layouts"]

f32 = np.float32


@dataclass(frozen=True, eq=False)
class GPTQSweepState:
    """GPTQ's weight matrix just before column ``step`` is quantized (see :func:`gptq_sweep`).

    All matrices are ``(out_features, in_features)`` float64 unless stated, columns in the
    weight's order (no act-order).

    * ``original``: the weight as given.
    * ``weights``: the matrix at that moment: columns ``< step`` hold their dequantized
      values; columns ``>= step`` the values GPTQ has updated them to so far. Inside the
      current lazy block (``block``) that includes the updates of the block's columns
      already quantized; after the block it does not (see ``pending``).
    * ``pending``: the change that columns ``>= block[1]`` will receive, in one matrix product,
      when the current block ends: the updates owed for the block's columns already
      quantized. Zero in every column before ``block[1]``.
    * ``fed_error``: ``(out_features, step)``, the error each quantized column fed forward,
      ``e_j = (w_j - q_j) / U[j, j]`` (``w_j`` as updated when column ``j`` came up).
    * ``codes``: ``(out_features, in_features)`` uint8, the codes of the *whole* run (the
      sweep goes on to the end after the snapshot); equal to ``gptq_quantize``'s.
    * ``step``, ``block`` (first column, end column), ``group_size``, ``block_size``, ``format``.
    """

    original: np.ndarray
    weights: np.ndarray
    pending: np.ndarray
    fed_error: np.ndarray
    codes: np.ndarray
    step: int
    block: tuple[int, int]
    group_size: int
    block_size: int
    format: str

    @property
    def updated(self) -> np.ndarray:
        """The change each column not yet quantized has received so far (``weights - original``),
        float64 (out_features, in_features); NaN in the quantized columns (``< step``)."""
        change = self.weights - self.original
        change[:, : self.step] = np.nan
        return change


def gptq_sweep(weight, x, *, step: int, format: str = "int4_asym", group_size: int = 8,
               block_size: int = 8, damp: float = 0.01) -> GPTQSweepState:
    """Replay :func:`int4ref.gptq_quantize` column by column and return its state just before
    column ``step`` (``0 <= step < in_features``) is quantized.

    ``weight`` (out_features, in_features) and calibration activations ``x`` (n_samples,
    in_features), ``format``, ``group_size`` (an integer dividing in_features),
    ``block_size`` and ``damp`` mean what they mean for ``gptq_quantize``, run with
    ``act_order=False`` and ``group_fit="reference"``. Inputs that are always zero (dead
    columns) are refused, to keep the replay short. The replay is checked against
    ``gptq_quantize`` on the same arguments: a RuntimeError says if the codes differ.
    """
    fmt = check_format(format)
    w_in = check_weight(weight)
    n_out, n_in = w_in.shape
    H = gptq_hessian(check_activations(x, n_in))
    if isinstance(group_size, str):
        raise ValueError(f"group_size must be an integer dividing in_features={n_in}, got {group_size!r}")
    g = check_group_size(group_size, n_in)
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or not 0 <= step < n_in:
        raise ValueError(f"step must be a column index in 0..{n_in - 1}, got {step!r}")
    if np.any(np.diag(H) == 0):
        raise ValueError("x has an input that is always zero (a dead column); gptq_sweep does not replay those")
    ref = gptq_quantize(w_in, x, format=fmt.name, group_size=g, block_size=block_size, damp=damp)

    H[np.diag_indices(n_in)] += damp * np.mean(np.diag(H))
    U = inverse_cholesky_upper(H)
    W = w_in.astype(np.float64)
    scales = np.empty((n_out, n_in // g), dtype=f32)
    zeros = np.zeros((n_out, n_in // g), dtype=np.uint8)
    codes = np.empty((n_out, n_in), dtype=np.uint8)
    dequantized = np.empty((n_out, n_in))
    fed_error = np.empty((n_out, n_in))
    snapshot = None

    def params(j):  # the parameters of column j's group, for every row
        k = j // g
        return GroupParams(scales[:, k], zeros[:, k] if fmt.has_zero_point else None)

    for b0 in range(0, n_in, block_size):
        b1 = min(b0 + block_size, n_in)
        W_blk = W[:, b0:b1].copy()      # W keeps the block's starting values until the block ends
        for j in range(b0, b1):
            if j == step:
                weights = W.copy()
                weights[:, b0:b1] = W_blk
                weights[:, :j] = dequantized[:, :j]
                pending = np.zeros((n_out, n_in))
                pending[:, b1:] = -(fed_error[:, b0:j] @ U[b0:j, b1:])
                snapshot = (weights, pending, fed_error[:, :j].copy(), (b0, b1))
            if j % g == 0:              # a group is fitted on the block's starting values (group_fit="reference")
                scales[:, j // g], z = fmt.fit(np.ascontiguousarray(W[:, j : j + g], dtype=f32), f32)
                if z is not None:
                    zeros[:, j // g] = z
            w = W_blk[:, j - b0]
            codes[:, j] = fmt.encode(w.astype(f32)[:, None], params(j))[:, 0]
            q = dequantized[:, j] = fmt.decode(codes[:, j : j + 1], params(j))[:, 0]
            fed_error[:, j] = (w - q) / U[j, j]
            W_blk[:, j - b0 + 1 :] -= np.outer(fed_error[:, j], U[j, j + 1 : b1])
        W[:, b1:] -= fed_error[:, b0:b1] @ U[b0:b1, b1:]

    if not np.array_equal(codes, ref.qt.codes):
        raise RuntimeError(f"the replay differs from gptq_quantize in {int(np.sum(codes != ref.qt.codes))} codes")
    weights, pending, errors, block = snapshot
    return GPTQSweepState(original=w_in.astype(np.float64), weights=weights, pending=pending, fed_error=errors,
                          codes=codes, step=step, block=block, group_size=g, block_size=block_size, format=fmt.name)


def _span(first: int, last: int) -> str:
    return f"column {first}" if first == last else f"columns {first} to {last}"


def gptq_sweep_alt(state: GPTQSweepState) -> str:
    """The text description of :func:`gptq_sweep_figure`, from the same numbers."""
    n_out, n_in = state.original.shape
    j, (b0, b1) = state.step, state.block
    upd = np.abs(state.updated)
    pend = np.abs(state.pending)
    parts = [
        f"Three heat maps of the same {n_out} by {n_in} weight matrix (rows: outputs, columns: inputs), "
        f"at step {j} of GPTQ with {state.format} in groups of {state.group_size} and lazy blocks of "
        f"{state.block_size} columns. A dashed box marks the current block, {_span(b0, b1 - 1)}; "
        f"the current column, {j}, has a thick outline."
    ]
    if j:
        done = (f"{_span(0, j - 1)}, already quantized, hold their dequantized values, from "
                f"{state.weights[:, :j].min():.2f} to {state.weights[:, :j].max():.2f}")
    else:
        done = "no column is quantized yet"
    parts.append(f"Left, the weights: {done}; the {'others' if j else 'columns'} hold their values as updated "
                 f"so far, from {state.weights[:, j:].min():.2f} to {state.weights[:, j:].max():.2f}.")
    if j:
        middle = [f"column {j} has moved by up to {upd[:, j].max():.2f}"]
        if j + 1 < b1:
            middle.append(f"the rest of the block, {_span(j + 1, b1 - 1)}, by up to {upd[:, j + 1 : b1].max():.2f}")
        if b1 < n_in:
            middle.append(f"{_span(b1, n_in - 1)}, after the block, by up to {upd[:, b1:].max():.2f}"
                          + (f", only by the errors of {_span(0, b0 - 1)}, the earlier blocks" if b0 else
                             ", not at all yet"))
        parts.append("Middle, the change the columns not yet quantized have received so far: "
                     + "; ".join(middle) + "; the quantized columns are hatched.")
    else:
        parts.append("Middle, the change received so far: none, since no column is quantized yet.")
    if b1 == n_in:
        parts.append("Right, the change that waits for the end of the block: none, since this is the last block.")
    elif j == b0:
        parts.append("Right, the change that waits for the end of the block: none yet, since no column of the "
                     "block is quantized.")
    else:
        parts.append(f"Right, the change that waits for the end of the block: zero up to column {b1 - 1}, up to "
                     f"{pend[:, b1:].max():.2f} in {_span(b1, n_in - 1)}, the updates owed for {_span(b0, j - 1)} "
                     "of the block, applied in one matrix product when the block ends.")
    return " ".join(parts)


def gptq_sweep_figure(state: GPTQSweepState, *, figsize=(12.5, 5.4)) -> Figure:
    """Three heat maps of GPTQ's weight matrix at one step (a :class:`GPTQSweepState`): the
    weights as they stand (dequantized columns, then the updated ones), the change the
    columns not yet quantized have received, and the change waiting for the lazy block's end.
    Column roles are marked by outlines and hatching as well as labels, not by colour alone;
    the colour maps are diverging ColorBrewer maps that stay readable with colour-vision
    deficiencies. The alt text is :func:`gptq_sweep_alt`."""
    n_out, n_in = state.original.shape
    j, (b0, b1) = state.step, state.block
    fig = Figure(figsize=figsize, layout="constrained")
    axes = fig.subplots(1, 3, sharey=True)
    w_max = float(np.abs(state.weights).max())
    d_max = float(max(np.nanmax(np.abs(state.updated[:, j:])), np.abs(state.pending).max())) or 1.0  # 0 at step 0
    panels = [
        (state.weights, "weights at this step", "PuOr", w_max),
        (state.updated, "change received so far", "BrBG", d_max),
        (state.pending, "change waiting for the block's end", "BrBG", d_max),
    ]
    images = []
    for i, (ax, (data, title, cmap, vmax)) in enumerate(zip(axes, panels)):
        images.append(ax.imshow(np.ma.masked_invalid(data), cmap=cmap, vmin=-vmax, vmax=vmax, aspect="equal",
                                interpolation="nearest"))
        if i > 0 and j:   # the quantized columns take no more updates
            ax.add_patch(Rectangle((-0.5, -0.5), j, n_out, fc="0.85", ec="0.5", hatch="///", lw=0.5))
        ax.add_patch(Rectangle((b0 - 0.5, -0.5), b1 - b0, n_out, fill=False, ec="black", ls="--", lw=1.6))
        ax.add_patch(Rectangle((j - 0.5, -0.5), 1, n_out, fill=False, ec="black", lw=2.0))
        ax.set_title(title, fontsize=11, pad=62)
        ax.set_xticks(sorted({0, j, b0, b1 - 1, n_in - 1}))
        ax.tick_params(labelsize=8)
        ax.set_xlabel("input column", fontsize=9)
        bands = [(0, j - 1, "quantized", 1), (j, j, "current", 2), (j + 1, b1 - 1, "rest of block", 1),
                 (b1, n_in - 1, "after the block", 1)]
        for first, last, name, level in bands:   # the current column's label sits higher: it is narrow
            if first > last:
                continue
            y = -1.0 - 2.2 * (level - 1)
            ax.annotate("", xy=(first - 0.4, y), xytext=(last + 0.4, y), annotation_clip=False,
                        arrowprops=dict(arrowstyle="|-|,widthA=0.25,widthB=0.25", lw=0.8, color="0.2"))
            ax.text((first + last) / 2, y - 0.5, name, ha="center", va="bottom", fontsize=8)
    fig.colorbar(images[0], ax=axes[0], location="bottom", shrink=0.8, aspect=30).set_label(
        "weight value (dequantized where quantized)", fontsize=9)
    fig.colorbar(images[2], ax=axes[1:], location="bottom", shrink=0.6, aspect=40).set_label(
        "change from the original weight (both panels)", fontsize=9)
    axes[0].set_ylabel("output row", fontsize=9)
    fig.suptitle(f"GPTQ on a {n_out} x {n_in} weight, {state.format}, groups of {state.group_size}, lazy blocks of "
                 f"{state.block_size}: the state just before column {j} is quantized", fontsize=11)
    fig.int4ref_alt = gptq_sweep_alt(state)
    return fig


# --- the packing chapter: four nibble layouts side by side ---------------------------------

#: nibble layouts of :func:`int4ref.packing.pack_nibbles`, with their titles
BYTE_LAYOUTS = {"bnb": "bitsandbytes (flattened tensor)", "ggml": "GGML block of 32 (Q4_0, Q4_1, IQ4_NL)"}
#: 32-bit word orders of :func:`int4ref.packing.pack_int32`, by the checkpoints that use them
WORD_LAYOUTS = {"gptq": ("sequential", "GPTQ checkpoint (int32 qweight)"),
                "awq": ("awq", "AWQ checkpoint (int32 qweight)")}


def byte_slots(layout: str, n: int = 32) -> np.ndarray:
    """``(n // 2, 2)`` int array: element held by byte k's high nibble (column 0, bits
    7-4) and low nibble (column 1, bits 3-0) under ``pack_nibbles(..., layout)``."""
    if layout not in BYTE_LAYOUTS:
        raise ValueError(f"unknown nibble layout {layout!r}; expected one of {sorted(BYTE_LAYOUTS)}")
    byte, high = viz.nibble_map(layout, n)
    out = np.full((n // 2, 2), -1, dtype=np.int64)
    out[byte, np.where(high, 0, 1)] = np.arange(n)
    if (out < 0).any():
        raise AssertionError(f"{layout}: some nibble holds no element")  # pack_nibbles lost a code
    return out


def word_slots(layout: str) -> np.ndarray:
    """8 ints: the element that slot i (bits 4i to 4i+3) of a packed int32 holds, found by
    packing one code of 0xF at a time with :func:`int4ref.packing.pack_int32`."""
    if layout not in WORD_LAYOUTS:
        raise ValueError(f"unknown word layout {layout!r}; expected one of {sorted(WORD_LAYOUTS)}")
    order = WORD_LAYOUTS[layout][0]
    slots = np.full(8, -1, dtype=np.int64)
    for element in range(8):
        probe = np.zeros(8, dtype=np.uint8)
        probe[element] = 0xF
        word = int(packing.pack_int32(probe, order=order).view(np.uint32)[0])
        (slot,) = [s for s in range(8) if (word >> (4 * s)) & 0xF]
        slots[slot] = element
    return slots


def layout_maps() -> dict:
    """``{"bnb": byte_slots, "ggml": byte_slots, "gptq": word_slots, "awq": word_slots}``."""
    return {**{lay: byte_slots(lay) for lay in BYTE_LAYOUTS}, **{lay: word_slots(lay) for lay in WORD_LAYOUTS}}


def _describe_bytes(name, slots) -> str:
    def byte(k):
        return f"byte {k} holds element {slots[k, 0]} (high nibble) and {slots[k, 1]} (low nibble)"

    last = len(slots) - 1
    return f"{name}: {byte(0)}, {byte(1)}, and so on to {byte(last)}"


def _describe_word(name, slots) -> str:
    return (f"{name}: one 32-bit word, slots from bits 31-28 down to bits 3-0 hold elements "
            + ", ".join(str(e) for e in slots[::-1]))


def _cell(ax, x, y, w, text, color, fontsize=8):
    ax.add_patch(_rect(x, y, w, color))
    ax.text(x + w / 2, y + 0.5, text, ha="center", va="center", fontsize=fontsize, family="monospace",
            color="white" if color in _DARK else "black")


_BLUE, _LIGHT_BLUE, _ORANGE, _LIGHT_ORANGE = "#0072B2", "#8CC4E8", "#D55E00", "#F2B58C"
_DARK = {_BLUE, _ORANGE}


def _rect(x, y, w, color):
    from matplotlib.patches import Rectangle

    return Rectangle((x, y), w, 1, facecolor=color, edgecolor="white", linewidth=1.5)


def _element_color(element: int, n: int) -> str:
    """First half of the elements blue, second half orange; odd elements lighter."""
    first = element < n // 2
    if element % 2 == 0:
        return _BLUE if first else _ORANGE
    return _LIGHT_BLUE if first else _LIGHT_ORANGE


def packing_layouts(maps: dict | None = None) -> Figure:
    """The four layouts as rows of cells, each cell a nibble labelled with the element it
    holds: bitsandbytes and GGML (16 bytes, high nibble left of low), GPTQ and AWQ (one
    32-bit word, bits 31-28 on the left). Colours: elements 0-15 (0-3 in a word) blue,
    16-31 (4-7) orange, odd elements lighter. Returns the figure; ``fig.int4ref_alt``
    describes the same maps, and ``fig.int4ref_maps`` holds them."""
    maps = layout_maps() if maps is None else maps
    fig = Figure(figsize=(10.0, 5.2), layout="constrained")
    axes = fig.subplots(4, 1, gridspec_kw={"height_ratios": [1, 1, 1, 1]})
    rows = [(lay, BYTE_LAYOUTS[lay]) for lay in BYTE_LAYOUTS] + [(lay, WORD_LAYOUTS[lay][1]) for lay in WORD_LAYOUTS]
    parts = []
    for ax, (lay, title) in zip(axes, rows):
        slots = maps[lay]
        if slots.ndim == 2:                                   # bytes: 16 bytes x (high, low)
            for k, (hi, lo) in enumerate(slots):
                _cell(ax, 2 * k, 0, 1, str(hi), _element_color(int(hi), slots.size))
                _cell(ax, 2 * k + 1, 0, 1, str(lo), _element_color(int(lo), slots.size))
                ax.text(2 * k + 1, -0.15, f"byte {k}", ha="center", va="top", fontsize=7)
            ax.set_xlim(-0.1, 2 * len(slots) + 0.1)
            ax.vlines(np.arange(0, 2 * len(slots) + 1, 2), -0.05, 1.05, colors="black", linewidth=1.2)
            parts.append(_describe_bytes(title, slots))
            ax.set_title(f"{title}: two nibbles per byte, high (bits 7–4) left of low (bits 3–0)",
                         fontsize="medium", loc="left")
        else:                                                 # a word: slot 7 (bits 31-28) first
            width = 32 / 8
            for pos, slot in enumerate(range(7, -1, -1)):
                _cell(ax, pos * width, 0, width, f"element {slots[slot]}", _element_color(int(slots[slot]), 8),
                      fontsize=9)
                ax.text(pos * width + width / 2, -0.15, f"slot {slot}, bits {4 * slot + 3}–{4 * slot}", ha="center",
                        va="top", fontsize=7)
            ax.set_xlim(-0.1, 32.1)
            parts.append(_describe_word(title, slots))
            ax.set_title(f"{title}: eight nibbles in a 32-bit word", fontsize="medium", loc="left")
        ax.set_ylim(-0.7, 1.1)
        ax.set_axis_off()
    fig.suptitle("Which element sits in which nibble (cells: element index; blue: first half, orange: second "
                 "half, lighter: odd)", fontsize="medium")
    fig.int4ref_alt = ("Four rows of nibble cells, each labelled with the element it holds. " + "; ".join(parts) + ".")
    fig.int4ref_maps = maps
    return fig
