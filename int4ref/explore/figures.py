"""Concept pictures for the book, drawn from real runs of int4ref's algorithms.

A concept picture shows what an algorithm does at one moment, so it needs the algorithm's
intermediate state, which the production functions do not expose. Where that is so, this
module replays the algorithm step by step and checks that the replay ends exactly where the
production function does (same codes), so that the picture is what the code does.

* GPTQ's column sweep (:func:`gptq_sweep`, :func:`gptq_sweep_figure`): the gptq-awq chapter;
* the nibble layouts of bitsandbytes, GGML, GPTQ and AWQ side by side (:func:`layout_maps`,
  :func:`packing_layouts`): the packing chapter. :func:`layout_maps` finds where each element
  lands by packing probes with :mod:`int4ref.packing` (one nonzero code at a time), so the
  picture shows what the packing code does rather than restating the rule;
* Q4_K's search for a sub-block's scale and minimum (:func:`q4_k_search`,
  :func:`q4_k_search_figure`): the super-blocks chapter. The replay's codes are checked
  against the bytes int4ref's Q4_K quantizer stores (:func:`q4_k_search_stored_codes`).

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
           "BYTE_LAYOUTS", "WORD_LAYOUTS", "byte_slots", "word_slots", "layout_maps", "packing_layouts",
           "Q4_K_SEARCH", "Q4KSearch", "q4_k_search", "q4_k_search_stored_codes", "q4_k_six_bit", "q4_k_search_alt",
           "q4_k_search_figure"]

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


# --- the superblocks chapter: Q4_K's search for a sub-block's scale and min -----------------

# make_qkx2_quants / make_qkx3_quants as ggml's quantize_q4_K calls them for a sub-block of 32:
# (nmax, rmin, rdelta, nstep); candidate k divides nmax + rmin + rdelta * k by the range, k = 0..nstep.
Q4_K_SEARCH = {False: (15, -1.0, 0.1, 20), True: (15, -0.9, 0.05, 36)}   # keyed by "with an imatrix"
_Q4K_SUB, _Q4K_SUPER = 32, 256
_MAGIC = f32(12582912.0)   # ggml's nearest_int: add 1.5 * 2**23 and read the low mantissa bits


def _ggml_nearest_int(v) -> np.ndarray:
    """ggml's ``nearest_int`` on float32 (round half to even in its range) -> int64."""
    with np.errstate(all="ignore"):
        s = np.asarray(v, dtype=f32) + _MAGIC
    return ((s.view(np.int32) & 0x007FFFFF) - 0x00400000).astype(np.int64)


@dataclass(frozen=True, eq=False)
class Q4KSearch:
    """One run of the search ggml's Q4_K quantizer makes for a sub-block's scale and min
    (see :func:`q4_k_search`). float32 scalars and arrays; mins as the C keeps them, ``<= 0``
    (Q4_K stores ``-min``).

    * ``values``, ``weights``: (32,) the sub-block and the weight of each value in the error.
    * ``imatrix``: whether the weights came from an importance matrix (``make_qkx3_quants``,
      37 candidates) or not (``make_qkx2_quants``, 21 candidates).
    * ``start_scale``, ``start_min``, ``start_codes`` (32,) int64, ``start_error``: the plain
      fit the search starts from (min = the smallest value but at most 0, scale = range / 15,
      codes rounded).
    * ``steps`` (k,): candidate k's numerator ``nmax + rmin + rdelta * k`` (its ``1/scale``
      times the range ``max - min``, the min as it stood when candidate k was tried);
      ``iscales`` (k,) its ``1/scale``; ``scales``, ``mins`` (k,): the weighted least-squares
      fit of the codes it implies (``codes``, (k, 32) int64); ``errors`` (k,): that fit's
      weighted squared error. NaN where the fit is singular (the C skips the candidate).
    * ``chosen``: the index of the candidate kept, or -1 when none beat the start; ``scale``,
      ``min``, ``best_codes`` (32,): what the search returns.
    """

    values: np.ndarray
    weights: np.ndarray
    imatrix: bool
    start_scale: np.float32
    start_min: np.float32
    start_codes: np.ndarray
    start_error: np.float32
    steps: np.ndarray
    iscales: np.ndarray
    scales: np.ndarray
    mins: np.ndarray
    codes: np.ndarray
    errors: np.ndarray
    chosen: int
    scale: np.float32
    min: np.float32
    best_codes: np.ndarray

    @property
    def best_error(self) -> np.float32:
        """The weighted squared error of what the search returns."""
        return self.start_error if self.chosen < 0 else self.errors[self.chosen]


def _q4_k_block_input(super_block, sub_block, imatrix):
    x = np.asarray(super_block)
    if x.shape != (_Q4K_SUPER,) or not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"super_block must be a float array of shape (256,), got {x.dtype} {x.shape}")
    x = x.astype(f32)
    if not np.isfinite(x).all():
        raise ValueError("super_block holds NaN or Inf values")
    if isinstance(sub_block, bool) or not isinstance(sub_block, (int, np.integer)) or not 0 <= sub_block < 8:
        raise ValueError(f"sub_block must be an index in 0..7, got {sub_block!r}")
    if imatrix is not None:
        imatrix = np.asarray(imatrix)
        if imatrix.shape != (_Q4K_SUPER,) or not np.isfinite(imatrix).all() or (imatrix < 0).any():
            raise ValueError(f"imatrix must hold 256 finite values >= 0 (the super-block's columns), "
                             f"got shape {imatrix.shape}")
        imatrix = imatrix.astype(f32)
    return x, int(sub_block), imatrix


def _q4_k_weights(x, j, imatrix):
    """The weights ggml's quantize_row_q4_K_ref (no imatrix) or quantize_row_q4_K_impl gives
    sub-block ``j`` of the float32 super-block ``x``: (32,) float32, sums in C order."""
    xs = x[_Q4K_SUB * j: _Q4K_SUB * (j + 1)]
    if imatrix is None:
        sum_x2 = f32(0)
        for v in xs:
            sum_x2 = f32(sum_x2 + v * v)
        return np.sqrt(f32(sum_x2 / f32(_Q4K_SUB))) + np.abs(xs)
    sum_x2 = f32(0)
    for v in x:
        sum_x2 = f32(sum_x2 + v * v)
    sigma2 = f32(f32(2) * sum_x2 / f32(_Q4K_SUPER))
    return imatrix[_Q4K_SUB * j: _Q4K_SUB * (j + 1)] * np.sqrt(sigma2 + xs * xs)


def _weighted_error(weights, scale, mn, codes, x):
    total = f32(0)
    for w, q, v in zip(weights, codes.astype(f32), x):
        diff = f32(f32(scale * q + mn) - v)
        total = f32(total + w * f32(diff * diff))
    return total


def q4_k_search(super_block, sub_block: int, imatrix=None) -> Q4KSearch:
    """Replay, candidate by candidate, the search ggml's Q4_K quantizer runs for the scale and
    min of sub-block ``sub_block`` (0..7) of ``super_block`` ((256,) floats, taken as float32).

    Without ``imatrix`` this is ``make_qkx2_quants`` with weights ``rms + |x|`` (what
    ``quantize_row_q4_K_ref`` runs); with ``imatrix`` ((256,) values >= 0, the importance of
    the super-block's columns) ``make_qkx3_quants`` with weights ``imatrix * sqrt(sigma2 + x**2)``
    (``quantize_row_q4_K_impl``). float32 in the C's order of operations, so the result is the
    C's bit for bit: the candidate kept is the first with the least error (a later candidate
    must be strictly better to replace it). As in the C, a better candidate also moves the
    min from which the next candidates' ranges and codes are computed. Checked against
    int4ref's quantizer with :func:`q4_k_search_stored_codes`. Returns a :class:`Q4KSearch`.
    """
    x_all, j, qw = _q4_k_block_input(super_block, sub_block, imatrix)
    x = x_all[_Q4K_SUB * j: _Q4K_SUB * (j + 1)]
    weights = _q4_k_weights(x_all, j, qw).astype(f32)
    nmax, rmin, rdelta, nstep = Q4_K_SEARCH[qw is not None]
    with np.errstate(all="ignore"):
        sum_w, sum_x = weights[0], f32(weights[0] * x[0])
        for w, v in zip(weights[1:], x[1:]):
            sum_w, sum_x = f32(sum_w + w), f32(sum_x + w * v)
        lo, hi = f32(min(x.min(), 0)), x.max()
        n_cand = nstep + 1
        nan = np.full(n_cand, np.nan, dtype=f32)
        steps = np.array([f32(f32(rmin) + f32(rdelta) * f32(k)) + f32(nmax) for k in range(n_cand)], dtype=f32)
        if (hi <= lo) if qw is not None else (hi == lo):   # flat: the C returns scale 0 and codes 0
            zero = np.zeros(_Q4K_SUB, dtype=np.int64)
            return Q4KSearch(x, weights, qw is not None, f32(0), lo, zero, f32(0), steps, nan.copy(), nan.copy(),
                             nan.copy(), np.zeros((n_cand, _Q4K_SUB), np.int64), nan.copy(), -1, f32(0), lo, zero)

        def codes(iscale, mn):
            return np.clip(_ggml_nearest_int(iscale * (x - mn)), 0, nmax)

        iscale = f32(f32(nmax) / f32(hi - lo))
        start_scale, start_min = f32(f32(1) / iscale), lo
        start_codes = codes(iscale, lo)
        best_error = start_error = _weighted_error(weights, start_scale, lo, start_codes, x)
        scale, mn, best_codes, chosen = start_scale, lo, start_codes, -1
        iscales, scales, mins, errors = nan.copy(), nan.copy(), nan.copy(), nan.copy()
        all_codes = np.zeros((n_cand, _Q4K_SUB), dtype=np.int64)
        for k in range(n_cand):
            iscales[k] = iscale = f32(steps[k] / f32(hi - mn))
            all_codes[k] = laux = codes(iscale, mn)
            sum_l = sum_l2 = sum_xl = f32(0)
            for w, q, v in zip(weights, laux.astype(f32), x):
                wl = f32(w * q)
                sum_l, sum_l2, sum_xl = f32(sum_l + wl), f32(sum_l2 + wl * q), f32(sum_xl + wl * v)
            D = f32(sum_w * sum_l2 - sum_l * sum_l)
            if not D > 0:
                continue
            this_scale = f32(f32(sum_w * sum_xl - sum_x * sum_l) / D)
            this_min = f32(f32(sum_l2 * sum_x - sum_l * sum_xl) / D)
            if this_min > 0:
                this_min, this_scale = f32(0), f32(sum_xl / sum_l2)
            scales[k], mins[k] = this_scale, this_min
            errors[k] = _weighted_error(weights, this_scale, this_min, laux, x)
            if errors[k] < best_error:
                best_error, scale, mn, best_codes, chosen = errors[k], this_scale, this_min, laux, k
    return Q4KSearch(x, weights, qw is not None, start_scale, start_min, start_codes, start_error, steps, iscales,
                     scales, mins, all_codes, errors, chosen, scale, mn, best_codes)


def q4_k_search_stored_codes(super_block, sub_block: int, imatrix=None) -> tuple[np.ndarray, np.ndarray]:
    """The 32 codes int4ref's Q4_K quantizer keeps from its search for sub-block ``sub_block``
    of ``super_block``, read from its bytes: ``(codes (32,) int64, probe (256,) float32)``.

    Q4_K recomputes every code from the stored 6-bit scale and min, except in a sub-block
    whose stored scale ``d * sc_j`` is 0, which keeps the codes of its search (ggml does the
    same). So the sub-block is quantized inside a *probe* super-block whose other seven
    sub-blocks are it times 1024 (exact in float32): their scales are 1024 times larger, its
    6-bit scale and min round to 0, and its codes in the bytes are the search's. Without an
    importance matrix a sub-block's search depends on its own 32 values only, so the probe's
    search of that sub-block is the real super-block's; with one, the weights depend on the
    whole super-block, and the codes are those of the probe's search (compare them with
    :func:`q4_k_search` of ``probe``). A ``RuntimeError`` says when the probe fails (the
    sub-block's stored scale is not 0). An all-zero sub-block gives codes 0, as the search does.
    """
    from ..interop import gguf  # imported here: the other figures do not need the GGUF code
    from ..interop.gguf import q4_k

    x, j, qw = _q4_k_block_input(super_block, sub_block, imatrix)
    sub = x[_Q4K_SUB * j: _Q4K_SUB * (j + 1)]
    probe = np.tile(sub * f32(1024), 8)
    probe[_Q4K_SUB * j: _Q4K_SUB * (j + 1)] = sub
    qw_probe = None if qw is None else np.tile(qw[_Q4K_SUB * j: _Q4K_SUB * (j + 1)], 8)
    block = gguf.quantize(probe, "Q4_K", imatrix=qw_probe)
    rec = block.view(gguf.block_type("Q4_K").block_dtype)[0]
    sc, _ = q4_k.unpack_scales_mins(rec["scales"][None])
    if np.float32(rec["d"]) * f32(sc[0, j]) != 0:
        raise RuntimeError(f"the probe left sub-block {j} a stored 6-bit scale of {sc[0, j]}, not 0: its codes "
                           "are recomputed from that scale and are not the search's")
    qs = rec["qs"][_Q4K_SUB * (j // 2): _Q4K_SUB * (j // 2 + 1)]
    codes = (qs >> 4) if j % 2 else (qs & 0xF)
    return codes.astype(np.int64), probe


def q4_k_six_bit(scales, mins) -> tuple[np.float16, np.float16, np.ndarray, np.ndarray]:
    """The 6-bit step of ggml's ``quantize_row_q4_K_ref`` (no importance matrix): the 8 float
    scales and 8 mins (``-min >= 0``) of a super-block, float32 (8,) -> ``(d, dmin, sc, m)``:
    float16 super-scales ``max / 63`` and the uint8 (8,) codes ``min(63, nearest_int(63 * v / max))``."""
    scales, mins = np.asarray(scales, dtype=f32), np.asarray(mins, dtype=f32)
    max_scale, max_min = max(f32(0), scales.max()), max(f32(0), mins.max())
    inv_scale = f32(63) / max_scale if max_scale > 0 else f32(0)
    inv_min = f32(63) / max_min if max_min > 0 else f32(0)
    sc = np.minimum(63, _ggml_nearest_int(inv_scale * scales) & 0xFF).astype(np.uint8)
    m = np.minimum(63, _ggml_nearest_int(inv_min * mins) & 0xFF).astype(np.uint8)
    return np.float16(max_scale / f32(63)), np.float16(max_min / f32(63)), sc, m


def q4_k_search_alt(search: Q4KSearch, source: str = "") -> str:
    """The text description of :func:`q4_k_search_figure`, from the same numbers."""
    n = len(search.steps)
    tried = np.isfinite(search.errors)
    kind = ("weights from an importance matrix" if search.imatrix else "weights root mean square plus |x|")
    parts = [f"Two panels about one sub-block of 32 values{' (' + source + ')' if source else ''}, "
             f"{kind}. Left: the weighted squared error of each of the {n} candidate scales Q4_K's "
             f"quantizer tries, against the candidate's 1/scale times the range, from {search.steps[0]:.2f} to "
             f"{search.steps[-1]:.2f}"]
    if tried.any():
        parts[0] += (f"; errors from {search.errors[tried].min():.3g} to {search.errors[tried].max():.3g}."
                     + (f" {n - int(tried.sum())} candidates have no fit and are not drawn." if tried.sum() < n
                        else ""))
    else:
        parts[0] += ": none has a fit (the sub-block is flat), so none is drawn."
    parts.append(f"A dashed line marks the plain min/max fit it starts from, error {search.start_error:.3g}.")
    if search.chosen >= 0:
        parts.append(f"The candidate kept, number {search.chosen + 1} at {search.steps[search.chosen]:.2f}, is "
                     f"circled: error {search.best_error:.3g}, {100 * (1 - search.best_error / search.start_error):.0f}"
                     f"% below the start; scale {search.scale:.3g} instead of {search.start_scale:.3g}, "
                     f"min {search.min:.3g} instead of {search.start_min:.3g}.")
    else:
        parts.append("No candidate beats the start, which is kept.")
    parts.append(f"Right: the 32 values, from {search.values.min():.3g} to {search.values.max():.3g}, with the 16 "
                 "levels of the start (dashed lines) and of the candidate kept (solid lines).")
    return " ".join(parts)


def q4_k_search_figure(search: Q4KSearch, source: str = "", *, figsize=(11.0, 4.0)) -> Figure:
    """Q4_K's search for one sub-block: left, the weighted squared error of every candidate
    against its step (the start, dashed, and the candidate kept, circled); right, the
    sub-block's values with the 16 levels ``scale * q + min`` of the start (dashed) and of
    the candidate kept (solid). ``source`` names where the values come from (alt text).
    The alt text is :func:`q4_k_search_alt`."""
    fig = Figure(figsize=figsize, layout="constrained")
    ax_err, ax_val = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.1, 1]})
    tried = np.isfinite(search.errors)
    ax_err.plot(search.steps[tried], search.errors[tried], "o-", color=_BLUE, markersize=4, lw=1,
                label=f"{len(search.steps)} candidates")
    ax_err.axhline(search.start_error, color="0.3", ls="--", lw=1, label="start: plain min/max fit")
    ax_err.plot([15], [search.start_error], "s", color="0.3", markersize=6)
    if search.chosen >= 0:
        ax_err.plot([search.steps[search.chosen]], [search.best_error], "o", ms=13, mfc="none", mec=_ORANGE,
                    mew=2, label="kept: least error")
    ax_err.set_title("the error of each candidate", fontsize=10)
    ax_err.set_xlabel("candidate: 1/scale times the range (max - min)")
    ax_err.set_ylabel("weighted squared error")
    ax_err.legend(fontsize=8, loc="upper center", frameon=False)
    for side in ("top", "right"):
        ax_err.spines[side].set_visible(False)
    levels = np.arange(16, dtype=f32)
    for scale, mn, style, color, label in ((search.start_scale, search.start_min, "--", "0.45", "the start"),
                                           (search.scale, search.min, "-", _ORANGE, "the candidate kept")):
        for i, lev in enumerate(scale * levels + mn):
            ax_val.axhline(lev, color=color, ls=style, lw=0.8, label=f"levels of {label}" if i == 0 else None)
    ax_val.plot(np.arange(len(search.values)), search.values, "o", color=_BLUE, ms=4, label="values")
    ax_val.set_title("the sub-block's values and the 16 levels", fontsize=10)
    ax_val.set_xlabel("position in the sub-block")
    ax_val.set_ylabel("value")
    ax_val.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    for side in ("top", "right"):
        ax_val.spines[side].set_visible(False)
    fig.int4ref_alt = q4_k_search_alt(search, source)
    return fig

