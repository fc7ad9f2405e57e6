"""AWQ (Lin et al. 2023, arXiv 2306.00978): activation-aware weight quantization of a linear
layer. Input channels that see large activations matter more, so AWQ scales them up before
quantizing (their relative rounding error shrinks) and divides the activations by the same
factor, which leaves the layer's exact output unchanged:

    x @ W.T == (x / s) @ (W * s).T,    deployed as (x / s) @ Q(W * s).T

Layout: ``weight`` is ``(out_features, in_features)``, ``y = x @ weight.T``, activations
``x`` are ``(n_samples, in_features)``; ``s`` has one entry per input channel.

Following the reference code (mit-han-lab/llm-awq ``auto_scale.py``, ``auto_clip.py``):

1. Scale search. ``x_mean`` = mean of ``|x|`` per input channel. For each ratio ``r`` in
   ``0, 1/n_grid, ..., (n_grid-1)/n_grid``: ``s = max(x_mean**r, 1e-4)``, normalised by
   ``sqrt(max(s) * min(s))``; ``W_hat = Q(W * s) / s``; the loss is the mean squared
   difference of ``x @ W.T`` and ``x @ W_hat.T`` over the calibration set. The first ratio
   with the smallest loss wins (ratio 0 gives ``s = 1``: plain round-to-nearest).
2. Clipping search, on the scaled weight ``W * s`` and scaled inputs ``x / s``. For every
   row and group, try clipping the weights to ``+-m * (1 - i/n_grid)`` (``m`` = the group's
   max ``|w|``, ``i = 0 .. max_shrink*n_grid - 1``), quantize, and keep the threshold with the
   smallest mean squared error of that group's share of the output. The clip is symmetric
   even for the zero-point format (the reference's rule); the quantizer then fits min-max to
   the clipped values.

The result holds ``Q(clip(W * s))`` as a :class:`~int4ref.quant.QuantizedTensor` and ``s``;
``s`` must be folded into whatever produces ``x`` (a LayerNorm's weight and bias, or the
previous linear layer's output rows) by dividing by it.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ._checks import check_positive_int
from .gptq import check_activations, check_format, check_group_size, check_weight
from .quant import QuantizedTensor, dequantize, quantize

f32 = np.float32


@dataclass(frozen=True, eq=False)
class AWQResult:
    """What :func:`awq_quantize` returns.

    * ``qt``: ``Q(clip(W * s))``, shape ``(out_features, in_features)``, groups along rows.
    * ``scales``: ``s``, float32 ``(in_features,)``. The layer is deployed as ``(x / s) @
      dequantize(qt).T``; :meth:`dequantize` gives the equivalent weight ``dequantize(qt) / s``.
    * ``ratio``: the chosen exponent (``s = x_mean**ratio``, normalised).
    * ``losses``: float64 ``(n_grid,)``, the output MSE of ratio ``k / n_grid`` (clipping off).
    * ``clip_max``: float32 ``(out_features, in_features // group_size)``, the clip threshold
      chosen for each row and group of ``W * s``; ``None`` when ``clip=False``.
    """

    qt: QuantizedTensor
    scales: np.ndarray
    ratio: float
    losses: np.ndarray
    clip_max: np.ndarray | None

    def dequantize(self, dtype=None) -> np.ndarray:
        """The effective weight ``W_hat = dequantize(qt) / s`` (out_features, in_features)."""
        return awq_dequantize(self.qt, self.scales, dtype)


def awq_dequantize(qt: QuantizedTensor, scales, dtype=None) -> np.ndarray:
    """``dequantize(qt) / scales`` (scales per input channel, the last axis) in ``dtype``
    (default ``qt.dtype``), computed in float32."""
    w_hat = dequantize(qt, f32) / np.asarray(scales, dtype=f32)
    return w_hat.astype(dtype or qt.dtype, copy=False)


def awq_scales(x_mean: np.ndarray, ratio: float) -> np.ndarray:
    """AWQ's per-channel scales for one grid ratio: ``max(x_mean**ratio, 1e-4)`` divided by
    ``sqrt(max * min)`` (so that the largest and smallest are reciprocal). float32."""
    s = np.maximum(x_mean.astype(np.float64) ** ratio, 1e-4)
    return (s / np.sqrt(s.max() * s.min())).astype(f32)


def awq_quantize(
    weight,
    x,
    *,
    format: str = "int4_asym",
    group_size=128,
    n_grid: int = 20,
    clip: bool = True,
    max_shrink: float = 0.5,
    n_sample_tokens: int = 512,
    scale_dtype=np.float32,
) -> AWQResult:
    """Quantize ``weight`` (out_features, in_features; float16/32/64) with AWQ, using the
    calibration activations ``x`` (n_samples, in_features) (leading axes are flattened).

    * ``format``: ``"int4_asym"`` (the reference's zero-point quantizer), ``"int4_sym"`` or
      ``"nf4"``; ``group_size``: a positive integer dividing ``in_features``, or ``"row"``.
    * ``n_grid``: grid points of the scale search (ratios ``k / n_grid``) and of the clipping
      search (shrink steps of ``1 / n_grid``); ``max_shrink``: the clip threshold goes down to
      ``1 - max_shrink`` (exclusive) of each group's max ``|w|``; ``clip=False`` skips it.
    * ``n_sample_tokens``: the clipping search uses every ``n // n_sample_tokens``-th row of
      ``x`` (the reference's subsampling; all rows when ``n < 2 * n_sample_tokens``).
    """
    fmt = check_format(format)
    W = check_weight(weight)
    n_out, n_in = W.shape
    x = check_activations(x, n_in).astype(np.float64)
    g = check_group_size(group_size, n_in)
    if not (isinstance(max_shrink, (int, float)) and 0 <= max_shrink < 1):
        raise ValueError(f"max_shrink must be in [0, 1), got {max_shrink!r}")
    n_grid = check_positive_int(n_grid, "n_grid")
    n_sample_tokens = check_positive_int(n_sample_tokens, "n_sample_tokens")
    W32 = W.astype(f32)
    W64 = W.astype(np.float64)

    x_mean = np.abs(x).mean(axis=0)
    losses = np.empty(n_grid)
    best = 0
    for k in range(n_grid):
        s = awq_scales(x_mean, k / n_grid)
        w_hat = dequantize(quantize(W32 * s, fmt.name, g, scale_dtype)) / s
        losses[k] = np.mean((x @ (W64 - w_hat).T) ** 2)
        if losses[k] < losses[best]:
            best = k
    s = awq_scales(x_mean, best / n_grid)

    W_scaled = W32 * s
    clip_max = None
    if clip and int(max_shrink * n_grid) > 0:
        x_scaled = (x / s)[:: max(1, x.shape[0] // n_sample_tokens)]
        W_scaled, clip_max = _clip_search(W_scaled, x_scaled, fmt.name, g, n_grid, max_shrink, scale_dtype)
    qt = replace(quantize(W_scaled, fmt.name, g, scale_dtype), dtype=W.dtype)
    return AWQResult(qt=qt, scales=s, ratio=best / n_grid, losses=losses, clip_max=clip_max)


def _clip_search(W, x, format, g, n_grid, max_shrink, scale_dtype):
    """Per (row, group) clip threshold of ``W`` (float32 (out, in)) minimising the MSE over the
    rows of ``x`` (float64 (t, in)) of the group's partial output. Returns the clipped W and
    the thresholds (out, in // g)."""
    n_out, n_in = W.shape
    n_groups = n_in // g
    w = W.reshape(n_out, n_groups, g)
    org_max = np.abs(w).max(axis=2, keepdims=True)
    x_groups = x.reshape(x.shape[0], n_groups, g).transpose(1, 0, 2)  # (groups, t, g)
    best_err = np.full((n_out, n_groups), np.inf)
    best_max = org_max.copy()
    for i in range(int(max_shrink * n_grid)):
        max_val = org_max * f32(1 - i / n_grid)
        q = dequantize(quantize(np.clip(w, -max_val, max_val).reshape(n_out, n_in), format, g, scale_dtype))
        err = _group_output_mse(x_groups, w.astype(np.float64) - q.reshape(n_out, n_groups, g))
        better = err < best_err
        best_err[better] = err[better]
        best_max[better] = max_val[better]
    return np.clip(w, -best_max, best_max).reshape(n_out, n_in), best_max[:, :, 0]


def _group_output_mse(x_groups, diff):
    """mean over tokens of (x_g @ diff[o, g])**2 for every row o and group g: (out, groups).

    x_groups (groups, t, g) and diff (out, groups, g), float64. Rows go in chunks so that the
    (groups, t, rows) intermediate stays near 2**24 values.
    """
    n_groups, t, _ = x_groups.shape
    n_out = diff.shape[0]
    out = np.empty((n_out, n_groups))
    step = max(1, (1 << 24) // (n_groups * t))
    for r in range(0, n_out, step):
        partial = x_groups @ diff[r : r + step].transpose(1, 2, 0)  # (groups, t, rows)
        out[r : r + step] = np.mean(partial**2, axis=1).T
    return out
