"""GPTQ (Frantar et al. 2022, arXiv 2210.17323): quantize a linear layer's weight column by
column, pushing each column's rounding error onto the columns not yet quantized so that the
layer's *output* on calibration data changes as little as possible.

Layout: ``weight`` is ``(out_features, in_features)`` (torch's ``nn.Linear``), the layer
computes ``y = x @ weight.T``, and the calibration activations ``x`` are ``(n_samples,
in_features)``. The result is an ordinary :class:`~int4ref.quant.QuantizedTensor`, so
:func:`~int4ref.quant.dequantize`, :mod:`~int4ref.packing` and ``bits_per_weight`` apply.

The algorithm follows the reference code (IST-DASLab/gptq, ``gptq.py`` and ``quant.py``):

1. ``H = 2/n X^T X``. A column whose diagonal entry is 0 (an input that is always zero) is
   *dead*: ``H[i, i] = 1`` and ``W[:, i] = 0``. With fewer samples than ``in_features`` H is
   singular and only the damping keeps it invertible (it still works, with less benefit).
2. ``act_order``: process columns by decreasing ``H[i, i]``; the permutation is undone at
   the end (see :class:`GPTQResult` for act-order with groups).
3. Damping: add ``damp * mean(diag H)`` to the diagonal; ``U`` = upper Cholesky factor of
   ``H^-1`` (``H^-1 = U^T U``).
4. For each column ``i``: quantize it with its group's scale (and zero-point), then
   ``err = (w - q) / U[i, i]`` and ``W[:, j] -= err * U[i, j]`` for every ``j > i``. Inside a
   lazy block of ``block_size`` columns the update touches only the block; the rest of the
   matrix receives the block's updates in one matrix product when the block ends.
5. Groups: a group's scale/zero-point are fitted (min-max, like :func:`int4ref.quantize`)
   when its first column comes up, on the weights as updated so far (but see ``group_fit``).

H, its factor and the weight updates are float64; the quantizer sees float32 values and
does exactly what :func:`int4ref.quantize` does with them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._checks import as_float32_input, as_float_array, check_positive_int
from .formats import GroupParams, KBitAsymmetricInt, KBitSymmetricInt, get_format
from .quant import QuantizedTensor, dequantize

f32 = np.float32

#: Formats GPTQ and AWQ accept as their per-group quantizer.
SUPPORTED_FORMATS = ("int4_asym", "int4_gptq_sym", "int4_sym", "nf4")
#: Fewer calibration rows than this is refused: one row gives a rank-one Hessian (and is
#: usually a single vector passed where a matrix was meant).
MIN_CALIBRATION_SAMPLES = 2


@dataclass(frozen=True, eq=False)
class GPTQResult:
    """What :func:`gptq_quantize` returns.

    * ``qt``: the quantized weight, shape ``(out_features, in_features)``, ``group_size``
      values per group along each row, dtype (of :func:`dequantize`) that of the weight.
    * ``perm``: ``None`` when ``qt``'s columns line up with the weight's. Otherwise (only
      ``act_order=True`` with an integer ``group_size``) an int64 array ``(in_features,)``:
      column ``k`` of ``qt`` quantizes column ``perm[k]`` of the weight, because the groups
      are runs of consecutive columns *in processing order*. Compute ``y = x[:, perm] @
      dequantize(qt).T``, or use :meth:`dequantize`.
    * ``loss``: ``sum((w - q)**2 / U[i, i]**2) / 2`` summed as GPTQ goes (the reference
      prints it as ``error``). It equals ``1/2 sum over rows of (w - w_hat) H (w - w_hat)^T``
      with the damped H, i.e. ``||x (W - W_hat)^T||^2 / n`` plus the damping term.
    """

    qt: QuantizedTensor
    perm: np.ndarray | None
    loss: float

    def dequantize(self, dtype=None) -> np.ndarray:
        """The quantized weight ``W_hat`` (out_features, in_features), columns in the original order."""
        return gptq_dequantize(self.qt, self.perm, dtype)

    @property
    def g_idx(self) -> np.ndarray:
        """int32 (in_features,): the group (within its row) of each original input column,
        as GPTQ checkpoints store it."""
        n_in = self.qt.shape[1]
        g_idx = (np.arange(n_in) // self.qt.group_size).astype(np.int32)
        if self.perm is not None:
            g_idx[self.perm] = g_idx.copy()
        return g_idx


def gptq_dequantize(qt: QuantizedTensor, perm=None, dtype=None) -> np.ndarray:
    """``dequantize(qt)`` with its columns put back in the original order (``perm`` as in
    :class:`GPTQResult`; ``None`` = already in order)."""
    w = dequantize(qt, dtype)
    if perm is None:
        return w
    unpermuted = np.empty_like(w)
    unpermuted[:, perm] = w
    return unpermuted


def gptq_hessian(x) -> np.ndarray:
    """``H = 2/n X^T X`` (float64, ``(in_features, in_features)``) of activations ``x``
    ``(n_samples, in_features)`` (or ``(..., in_features)``, flattened)."""
    x = check_activations(x)
    x = x.astype(np.float64)
    return (2.0 / x.shape[0]) * (x.T @ x)


def gptq_quantize(
    weight,
    x=None,
    *,
    hessian=None,
    format: str = "int4_asym",
    group_size=128,
    act_order: bool = False,
    block_size: int = 128,
    damp: float = 0.01,
    group_fit: str = "reference",
    scale_dtype=np.float32,
) -> GPTQResult:
    """Quantize ``weight`` (out_features, in_features; float16/32/64) with GPTQ.

    Give the calibration activations ``x`` (n_samples, in_features; leading axes are
    flattened), or the Hessian directly as ``hessian`` (in_features, in_features), e.g.
    :func:`gptq_hessian` of each batch averaged with weights proportional to its rows.

    * ``format``: ``"int4_asym"`` (the reference's quantizer: min-max over a range that
      includes 0, integer zero-point, round half to even), ``"int4_gptq_sym"`` (the reference
      with ``sym=True``, AutoGPTQ's default: zero-point fixed at 8), ``"int4_sym"`` or ``"nf4"`` (a
      column is quantized with its group's absmax and the nearest NF4 level).
    * ``group_size``: a positive integer dividing ``in_features`` (32, 64, 128, ...), each
      group being consecutive columns of one row; or ``"row"``: one scale per row, fitted once
      on the weight as given (the reference's ``groupsize=-1``).
    * ``act_order``: columns in order of decreasing ``H[i, i]`` (stable for ties). With
      integer groups the groups are consecutive columns in that order (the reference with
      ``static_groups=False``), so ``qt`` holds permuted columns: see :class:`GPTQResult`.
    * ``block_size``: columns per lazy batch update; changes only float rounding, except as
      ``group_fit`` says.
    * ``damp``: fraction of ``mean(diag H)`` added to the diagonal (the reference's percdamp).
    * ``group_fit``: ``"reference"`` fits a group that starts inside a lazy block on the
      weights as they were when the block started (they lack the updates from the block's
      earlier columns), as the reference and its descendants do; this matters only when a
      group starts inside a block (``group_size`` < ``block_size``). ``"updated"`` also ends
      a block at every group start, so that each group is fitted on fully updated weights
      and the result does not depend on ``block_size``.
    * ``scale_dtype``: float32 or float16 for the stored scales; codes are chosen against
      the stored scale.
    """
    fmt = check_format(format)
    w_in = check_weight(weight)
    n_out, n_in = w_in.shape
    if (x is None) == (hessian is None):
        raise ValueError("give exactly one of x (calibration activations) and hessian")
    H = gptq_hessian(check_activations(x, n_in)) if hessian is None else check_hessian(hessian, n_in)
    g = check_group_size(group_size, n_in)
    block_size = check_positive_int(block_size, "block_size")
    if not (isinstance(damp, (int, float)) and 0 < damp and np.isfinite(damp)):
        raise ValueError(f"damp must be a positive number, got {damp!r}")
    if group_fit not in ("reference", "updated"):
        raise ValueError(f"group_fit must be 'reference' or 'updated', got {group_fit!r}")
    per_row = group_size == "row"
    n_groups = n_in // g

    W = w_in.astype(np.float64)  # working copy, updated in place
    scales = np.empty((n_out, n_groups), dtype=scale_dtype)
    zeros = np.zeros((n_out, n_groups), dtype=np.uint8)  # kept only for formats with a zero-point

    def fit_group(k, cols):  # scale (and zero-point) of group k in every row, fitted on cols
        scales[:, k], z = _fit(cols, fmt, scale_dtype)
        if z is not None:
            zeros[:, k] = z

    def params(k):  # group k's parameters for every row, as fmt.encode/decode take them
        return GroupParams(scales[:, k], zeros[:, k] if fmt.has_zero_point else None)

    if per_row:  # the reference fits the per-row quantizer before dead columns are zeroed
        fit_group(0, W)

    dead = np.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    perm = np.argsort(-np.diag(H), kind="stable") if act_order else None
    if perm is not None:
        W, H = W[:, perm], H[np.ix_(perm, perm)]
    H[np.diag_indices(n_in)] += damp * np.mean(np.diag(H))
    U = inverse_cholesky_upper(H)

    codes = np.empty((n_out, n_in), dtype=np.uint8)
    loss = 0.0
    starts = set(range(0, n_in, block_size))
    if group_fit == "updated" and not per_row:
        starts |= set(range(0, n_in, g))
    bounds = sorted(starts) + [n_in]
    for b0, b1 in zip(bounds[:-1], bounds[1:]):
        W_blk = W[:, b0:b1].copy()  # W itself keeps the block's starting state (see group_fit)
        Err = np.empty((n_out, b1 - b0))
        for j in range(b0, b1):
            k = j // g
            if not per_row and j % g == 0:
                fit_group(k, W[:, j : j + g])
            w = W_blk[:, j - b0]
            p = params(k)
            codes[:, j] = fmt.encode(w.astype(f32)[:, None], p)[:, 0]  # the format's own encode, one column
            q = fmt.decode(codes[:, j : j + 1], p)[:, 0]
            d = U[j, j]
            err = (w - q) / d
            W_blk[:, j - b0 + 1 :] -= np.outer(err, U[j, j + 1 : b1])
            Err[:, j - b0] = err
            loss += float(np.sum((w - q) ** 2)) / d**2 / 2
        W[:, b1:] -= Err @ U[b0:b1, b1:]  # the lazy update of all later columns

    if perm is not None and per_row:  # one group per row: the permutation can be undone exactly
        codes[:, perm] = codes.copy()
        perm = None
    qt = QuantizedTensor(
        format=fmt.name,
        codes=codes,
        scales=scales.reshape(-1),
        zeros=zeros.reshape(-1) if fmt.has_zero_point else None,
        shape=(n_out, n_in),
        group_size=g,
        dtype=w_in.dtype,
    )
    return GPTQResult(qt=qt, perm=perm, loss=loss)


# ---- the per-group quantizer ----------------------------------------------------------------


def _fit(cols: np.ndarray, fmt, scale_dtype):
    """Scale (and zero-point) per row of ``cols`` (rows, k): ``fmt.fit``, exactly as
    int4ref.quantize fits a group of k values."""
    return fmt.fit(np.ascontiguousarray(cols, dtype=f32), scale_dtype)


def inverse_cholesky_upper(H: np.ndarray) -> np.ndarray:
    """Upper triangular U with ``H^-1 = U^T U``, via the Cholesky factor L of H (``H^-1 =
    L^-T L^-1``), like the reference's cholesky -> cholesky_inverse -> cholesky(upper=True).

    numpy.linalg only: mixing scipy's and numpy's OpenBLAS thread pools makes small
    factorizations 10-50x slower on a busy machine (their idle threads spin against each other).
    """
    try:
        L_inv = np.linalg.inv(np.linalg.cholesky(H))
        return np.linalg.cholesky(L_inv.T @ L_inv).T
    except np.linalg.LinAlgError as e:
        raise ValueError(
            f"the damped Hessian is not positive definite ({e}); pass a valid Hessian or a larger damp"
        ) from None


# ---- input checks shared with int4ref.awq ---------------------------------------------------


def check_format(format):
    """The :class:`~int4ref.formats.Format` named ``format``, if GPTQ and AWQ support it."""
    fmt = get_format(format)
    if fmt.name not in SUPPORTED_FORMATS and not isinstance(fmt, (KBitAsymmetricInt, KBitSymmetricInt)):
        raise ValueError(f"format {fmt.name!r} is not supported here; use one of {', '.join(SUPPORTED_FORMATS)} "
                         f"or a k-bit int{{k}}_asym / int{{k}}_sym")
    return fmt


def check_weight(weight) -> np.ndarray:
    """``weight`` as a 2-D (out_features, in_features) float array that fits in float32."""
    w = as_float32_input(weight, "weight")
    if w.ndim != 2:
        raise ValueError(f"weight must be 2-D (out_features, in_features), got shape {w.shape}")
    return w


def check_activations(x, n_in: int | None = None) -> np.ndarray:
    """x as a 2-D (n_samples, in_features) array; leading axes are flattened."""
    x = as_float_array(x, "x")
    if x.ndim < 2:
        raise ValueError(f"x must be (n_samples, in_features), got shape {x.shape}")
    if n_in is not None and x.shape[-1] != n_in:
        raise ValueError(f"x has {x.shape[-1]} features (shape {x.shape}) but the weight has in_features={n_in}")
    x = x.reshape(-1, x.shape[-1])
    if x.shape[0] < MIN_CALIBRATION_SAMPLES:
        raise ValueError(
            f"need at least {MIN_CALIBRATION_SAMPLES} calibration samples (rows of x), got {x.shape[0]}"
        )
    return x


def check_hessian(hessian, n_in: int) -> np.ndarray:
    """A float64 copy of ``hessian``, checked to be (n_in, n_in), symmetric, diagonal >= 0."""
    H = as_float_array(hessian, "hessian").astype(np.float64)  # a copy: it is modified
    if H.shape != (n_in, n_in):
        raise ValueError(f"hessian must be ({n_in}, {n_in}) for in_features={n_in}, got {H.shape}")
    if not np.allclose(H, H.T, rtol=1e-6, atol=0):
        raise ValueError("hessian must be symmetric")
    if np.any(np.diag(H) < 0):
        raise ValueError("hessian has a negative diagonal entry; it must be positive semi-definite")
    return H


def check_group_size(group_size, n_in: int) -> int:
    """``group_size`` (a divisor of ``n_in`` or ``"row"``) as an int; groups never span rows."""
    if group_size == "row":
        return n_in
    if isinstance(group_size, str):
        raise ValueError(f"group_size must be a positive integer or 'row', got {group_size!r}")
    g = check_positive_int(group_size, "group_size")
    if n_in % g:
        raise ValueError(
            f"group_size={g} does not divide in_features={n_in}; groups must not span rows (use 'row' or a divisor)"
        )
    return g
