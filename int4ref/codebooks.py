"""The 16-level codebooks of the 4-bit formats, and where each one comes from.

Table formats store a 4-bit index into a table of 16 values in [-1, 1]; a group is
scaled by its absmax so that its largest magnitude lands on +-1. Uniform INT4 formats
(``int4_sym``, ``int4_q4_0``, ``int4_asym``) are integers times a scale and are defined in
:mod:`int4ref.formats`; their normalised levels are given here for plots and comparisons.

Everything here is float32, in code-index order (index = the stored 4-bit value).
"""
from __future__ import annotations

from functools import cache

import numpy as np

from .torchmath import linspace32

f32 = np.float32

#: bitsandbytes' NF4 table, index 0..15, exactly as ``bitsandbytes.functional.get_4bit_type("nf4")``.
NF4 = np.array(
    [
        -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
        -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
        0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
        0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
    ],
    dtype=f32,
)  # fmt: skip

#: The NF4 offset used by bitsandbytes' ``create_normal_map``. Arithmetically it equals
#: 1 - (1/32 + 1/30) / 2 to 7 digits; the source gives no derivation.
NF4_OFFSET = 0.9677083


def nf4_from_quantiles(offset: float = NF4_OFFSET, float32_linspace: bool = True, *, n_positive: int = 8) -> np.ndarray:
    """Derive the NF4 table from normal quantiles (QLoRA's construction, as bitsandbytes builds it).

    Eight positive levels are ``norm.ppf`` at 8 evenly spaced probabilities from ``offset``
    towards 0.5 (0.5 itself excluded), seven negative levels are the mirror image of 7 such
    probabilities, plus an exact 0: 16 values, asymmetric (8 positive, 7 negative). The
    result is divided by its maximum so that it spans [-1, 1].

    With ``float32_linspace=True`` the probabilities are computed exactly as torch's float32
    ``linspace`` computes them, and the result equals :data:`NF4` bit for bit. With
    ``False`` they come from numpy's float64 ``linspace``: the probabilities are then
    slightly different and half of the codes move by a few float32 ulps (the NF4 chapter
    computes which). The exact table depends on that rounding, which is why real formats ship
    the table as constants and why tests must compare against :data:`NF4`.

    ``n_positive`` (1..14) moves the split: ``n_positive`` positive and ``15 - n_positive``
    negative levels by the same recipe (the NF4 builder widget explores it); 8 is NF4's.
    """
    from scipy.stats import norm

    if not 0.5 < offset < 1.0:
        raise ValueError(f"offset must be in (0.5, 1), got {offset}")
    if isinstance(n_positive, bool) or not isinstance(n_positive, (int, np.integer)) or not 1 <= n_positive <= 14:
        raise ValueError(f"n_positive must be an integer in 1..14, got {n_positive!r}")
    space = linspace32 if float32_linspace else (lambda a, b, n: np.linspace(a, b, n))
    positive = norm.ppf(space(offset, 0.5, int(n_positive) + 1)[:-1])
    negative = -norm.ppf(space(offset, 0.5, 16 - int(n_positive))[:-1])
    values = np.sort(np.concatenate([positive, [0.0], negative]).astype(f32))
    return (values / values.max()).astype(f32)


#: bitsandbytes' FP4 in bit-pattern order: bit 3 is the sign, the 3 low bits index
#: [0, 0.0625, 8, 12, 4, 6, 2, 3] (a 2-bit exponent with bias 2 and 1 mantissa bit,
#: bitsandbytes' own encoding), all divided by 12 so that the table spans [-1, 1].
_FP4_BNB_RAW = [0, 0.0625, 8.0, 12.0, 4.0, 6.0, 2.0, 3.0]
FP4_BNB = (np.array(_FP4_BNB_RAW + [-v for v in _FP4_BNB_RAW], dtype=f32) / f32(12)).astype(f32)
# Index 8 (sign bit set, magnitude 0) is +0.0 in bitsandbytes' table: its source writes the
# integer -0, which is plain 0. (E2M1 below keeps a true -0.0 for that bit pattern.)

#: OCP Microscaling FP4 E2M1 (1 sign, 2 exponent bits with bias 1, 1 mantissa bit): the
#: magnitudes 0, 0.5, 1, 1.5, 2, 3, 4, 6 in bit-pattern order, divided by 6 so that the
#: table spans [-1, 1]. It is NOT bitsandbytes' FP4: same bit budget, different values
#: (E2M1's smallest nonzero is 0.5/6 = 0.083, bitsandbytes' 0.0625/12 = 0.0052).
_E2M1_RAW = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]
FP4_E2M1 = (np.array(_E2M1_RAW + [-v for v in _E2M1_RAW], dtype=f32) / f32(6)).astype(f32)
FP4_E2M1[8] = -0.0


def dynamic_map(signed: bool = True, max_exponent_bits: int = 7, total_bits: int = 8) -> np.ndarray:
    """bitsandbytes' "dynamic" 8-bit map (``create_dynamic_map``), used for double quantization.

    Each value is ``10**e * m`` where the decimal exponent ``e`` runs from
    ``-(max_exponent_bits - 1)`` to 0 and the fraction ``m`` is the midpoint of a float32
    linspace over [0.1, 1] that gets twice as many points per step up in exponent; plus 0
    and 1. Returns ``2**total_bits`` sorted float32 values (for the default signed map:
    index 127 is 0.0 and the range is -0.99296875 .. 1.0).
    """
    non_sign_bits = total_bits - 1
    if not (1 <= max_exponent_bits <= non_sign_bits and 2 <= total_bits <= 8):
        raise ValueError(
            f"need 2 <= total_bits <= 8 and 1 <= max_exponent_bits <= total_bits - 1; "
            f"got total_bits={total_bits}, max_exponent_bits={max_exponent_bits}"
        )
    extra = 2 ** (non_sign_bits - max_exponent_bits) - 1
    values: list[float] = []

    def add(points: int, decade: float) -> None:
        b = linspace32(0.1, 1, points)
        means = (b[:-1] + b[1:]) / f32(2)
        for m in (f32(decade) * means).tolist():
            values.append(m)
            if signed:
                values.append(-m)

    for i in range(max_exponent_bits):
        points = 2 ** (i + non_sign_bits - max_exponent_bits + (0 if signed else 1)) + 1
        add(points, 10.0 ** (-(max_exponent_bits - 1) + i))
    if extra > 0:
        add(extra + 1, 10.0 ** (-(max_exponent_bits - 1) + max_exponent_bits - 1))
    values += [0.0, 1.0]
    if len(values) != 2**total_bits:
        raise ValueError(
            f"max_exponent_bits={max_exponent_bits}, total_bits={total_bits} gives {len(values)} values, "
            f"not {2**total_bits}"
        )
    return np.sort(np.array(values, dtype=f32))


def uniform_map(bits: int) -> np.ndarray:
    """``2**bits`` evenly spaced float32 values from -1 to 1 (both included)."""
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be in 1..8, got {bits}")
    return np.linspace(-1, 1, 2**bits).astype(f32)


@cache
def lloyd_max_gaussian(n_levels: int = 16, tol: float = 1e-13, max_iter: int = 100_000):
    """The Lloyd-Max quantizer of a standard normal: MSE-optimal levels for N(0, 1) data.

    Alternates the two optimality conditions until they hold to ``tol``: every threshold
    is the midpoint of its two levels, every level is the mean of N(0, 1) between its
    thresholds, ``(pdf(a) - pdf(b)) / (cdf(b) - cdf(a))``. Returns ``(levels, thresholds,
    mse)`` in units of the standard deviation (float64), levels sorted, as tabulated by
    Max (1960). The MSE is the best any 16-level scalar quantizer can reach on Gaussian
    data of known standard deviation: the yardstick for NF4 and friends.
    """
    from scipy.special import ndtr, ndtri  # the N(0,1) cdf and its inverse (lighter than scipy.stats)

    if n_levels < 2:
        raise ValueError(f"n_levels must be at least 2, got {n_levels}")

    def pdf(t):
        return np.exp(-0.5 * np.square(t)) / np.sqrt(2 * np.pi)  # 0 at +-inf

    levels = ndtri((np.arange(n_levels) + 0.5) / n_levels)  # start at the quantile midpoints
    for _ in range(max_iter):
        t = np.concatenate([[-np.inf], (levels[:-1] + levels[1:]) / 2, [np.inf]])
        new = (pdf(t[:-1]) - pdf(t[1:])) / (ndtr(t[1:]) - ndtr(t[:-1]))
        if np.max(np.abs(new - levels)) < tol:
            levels = new
            break
        levels = new
    else:
        raise RuntimeError("Lloyd-Max iteration did not converge")
    t = np.concatenate([[-np.inf], (levels[:-1] + levels[1:]) / 2, [np.inf]])
    # E[(X - c_i)^2 ; a < X < b] = E[X^2] - 2 c_i E[X] + c_i^2 P, over each cell
    p = ndtr(t[1:]) - ndtr(t[:-1])
    ex = pdf(t[:-1]) - pdf(t[1:])
    ta = np.where(np.isfinite(t[:-1]), t[:-1], 0.0)
    tb = np.where(np.isfinite(t[1:]), t[1:], 0.0)
    ex2 = p + ta * pdf(t[:-1]) - tb * pdf(t[1:])
    mse = float(np.sum(ex2 - 2 * levels * ex + levels**2 * p))
    return levels, t[1:-1], mse


def lloyd_max_table() -> np.ndarray:
    """The 16 Lloyd-Max levels divided by the largest, as a [-1, 1] table for absmax scaling.

    Runs the iteration (:func:`lloyd_max_gaussian`); :data:`LLOYD_MAX` is its result, stored.
    """
    levels, _, _ = lloyd_max_gaussian(16)
    return (levels / levels.max()).astype(f32)


#: :func:`lloyd_max_table` as float32 bit patterns, stored so that importing int4ref does
#: not run the Lloyd-Max iteration (tests/test_codebooks.py recomputes it and compares the
#: bits). Code order: index 0 is -1, index 15 is +1.
LLOYD_MAX = np.array(
    [
        0xBF800000, 0xBF41D578, 0xBF1795C9, 0xBEEB60AA, 0xBEB09083, 0xBE761C82, 0xBE116A6C, 0xBD4074FF,
        0x3D4074FF, 0x3E116A6C, 0x3E761C82, 0x3EB09083, 0x3EEB60AA, 0x3F1795C9, 0x3F41D578, 0x3F800000,
    ],
    dtype=np.uint32,
).view(f32)  # fmt: skip
