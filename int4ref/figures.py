"""Concept pictures for the book, drawn from real runs of int4ref's algorithms.

A concept picture shows what an algorithm does at one moment, so it needs the algorithm's
intermediate state, which the production functions do not expose. Where that is so, this
module replays the algorithm step by step and checks that the replay ends exactly where the
production function does (same codes), so that the picture is what the code does.

Every figure is a :class:`matplotlib.figure.Figure` built without pyplot, with its text
description for screen readers in ``fig.int4ref_alt`` (read by :func:`int4ref.viz.alt_text`
and shown by :class:`int4ref.viz.show`), computed from the same numbers as the drawing.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from .formats import GroupParams
from .gptq import (
    check_activations,
    check_format,
    check_group_size,
    check_weight,
    gptq_hessian,
    gptq_quantize,
    inverse_cholesky_upper,
)

__all__ = ["GPTQSweepState", "gptq_sweep", "gptq_sweep_alt", "gptq_sweep_figure"]

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

