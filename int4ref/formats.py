"""The 4-bit formats: how one group of values becomes 16 possible codes and back.

Every format here works on a 2-D float32 array ``groups`` of shape ``(n_groups,
group_size)`` (one row per group) and returns integer codes of the same shape plus one
scale (and, for ``int4_asym`` and ``int4_gptq_sym``, one zero-point) per group. :mod:`int4ref.quant` cuts a
tensor into groups and calls these.

=============  =======================================  ===================================
name           code -> value                            scale per group
=============  =======================================  ===================================
``int4_sym``   ``(q - 8) * s``, q in 1..15 (0 unused)   ``s = absmax / 7``
``int4_q4_0``  ``(q - 8) * d``, q in 0..15              ``d = m / -8``, m = signed value of
                                                        largest magnitude (GGUF's Q4_0 rule)
``int4_asym``  ``(q - z) * s``, q in 0..15              ``s = (max - min) / 15`` over a range
                                                        that includes 0; ``z = round(-min/s)``
``int4_gptq_   ``(q - 8) * s``, q in 0..15, z = 8        ``s = 2 * absmax / 15`` (GPTQ and
sym``          stored as a zero-point                   AutoGPTQ ``sym=True``; see below)
``nf4``        ``NF4[q] * absmax``                      ``absmax``
``fp4_bnb``    ``FP4_BNB[q] * absmax``                  ``absmax``
``fp4_e2m1``   ``FP4_E2M1[q] * absmax``                 ``absmax``
``lloyd_max``  ``LLOYD_MAX[q] * absmax``                ``absmax``
=============  =======================================  ===================================

Table formats scale a group by multiplying with ``1 / max(absmax, 1e-38)`` (float32),
exactly as bitsandbytes does for its full blocks. A group whose absmax is below 1e-38 (only
float32 subnormals) is therefore scaled by 1e38 rather than 1/absmax: it is quantized
against a range wider than itself, with an absolute error under 1e-38, and re-quantizing
its dequantized values need not give the same codes.

``int4_gptq_sym`` is the quantizer of GPTQ's reference code and AutoGPTQ with ``sym=True``
(AutoGPTQ's default, so most published GPTQ checkpoints): the range is widened to include
0, then made symmetric, ``s = (xmax - xmin) / 15`` with ``xmin = -xmax``, and the zero-point
is fixed at ``(15 + 1) / 2 = 8`` and stored like an asymmetric one. Both extremes sit on a
tie, ``absmax / s = 7.5`` up to the float32 rounding of ``s``: ``+absmax`` ends at code 15
either way and comes back as ``7 s = 0.933 absmax``; ``-absmax`` goes to code 0, ``-8 s =
-1.067 absmax``, when the tie is exact (half to even) and to code 1, ``-0.933 absmax``, when
``s`` rounded up. The reference makes ``xmin = -xmax`` only when ``xmin < 0``: a group with
no negative value keeps ``xmin = 0`` and gets ``s = max / 15``, so its codes 8..15 reach
only ``7/15`` of its maximum (reproduced here as the reference does it). An all-zero group
gets the reference's fallback range [-1, 1]: ``s = 2/15``, every code 8.
Rounding rules: ``int4_sym``, ``int4_asym`` and ``int4_gptq_sym`` round half to even (``np.rint``, as
GPTQ's reference code does with ``torch.round``); ``int4_q4_0`` computes ``trunc(x * (1/d)
+ 8.5)`` with float32 ``1/d``, exactly like GGUF (half away from the low end); table formats pick the nearest table
value, and a value exactly half-way between two goes to the LOWER one (bitsandbytes'
rule); ``fp4_e2m1`` is sign-magnitude: the magnitude rounds (ties toward zero) and the
sign bit is the input's. Codes are computed against the scale as stored (after rounding to
``scale_dtype``), so that dequantization uses the scale the codes were chosen for.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import codebooks

f32 = np.float32


@dataclass(frozen=True)
class Format:
    """A 4-bit format. ``table`` (float32, 16 values in code order) is set for table formats."""

    name: str
    kind: str  # "table", "int_sym", "int_q4_0", "int_asym" or "int_gptq_sym"
    description: str
    table: np.ndarray | None = None
    has_zero_point: bool = False
    sign_magnitude: bool = False  # table formats: bit 3 is the sign of the value
    _order: np.ndarray | None = field(default=None, repr=False, compare=False)
    _midpoints: np.ndarray | None = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        if self.table is not None:
            order = np.argsort(self.table, kind="stable")  # equal values keep code order (+-0)
            sorted_values = self.table[order]
            object.__setattr__(self, "_order", order.astype(np.uint8))
            object.__setattr__(self, "_midpoints", ((sorted_values[:-1] + sorted_values[1:]) / f32(2)).astype(f32))

    def levels(self) -> np.ndarray:
        """The 16 representable values of a group whose scale (or absmax) is 1, in code order.

        For ``int4_sym`` code 0 would be -8/7, outside [-1, 1]; it is never produced and is
        returned as NaN. ``int4_q4_0`` is shown for a group whose largest-magnitude value
        is -1 (d = 1/8); ``int4_gptq_sym`` for a group with absmax 1 (s = 2/15: code 0 is -16/15,
        and +1 rounds to code 15, 14/15). ``int4_asym`` is shown for the range [-1, 1] (z = 8, rounded from 7.5).
        """
        if self.table is not None:
            return self.table.copy()
        q = np.arange(16, dtype=f32)
        if self.kind == "int_sym":
            lv = (q - 8) / f32(7)
            lv[0] = np.nan
            return lv
        if self.kind == "int_q4_0":
            return (q - 8) / f32(8)
        if self.kind == "int_gptq_sym":
            return (q - 8) * (f32(2) / f32(15))
        return (q - 8) * f32(2 / 15)

    def nearest(self, normalized: np.ndarray) -> np.ndarray:
        """Table formats: index of the nearest table value (ties to the lower value).

        A sign-magnitude format rounds the magnitude (ties toward zero) and keeps the sign
        bit of the input, so -0.0 and tiny negatives get the negative-zero code.
        """
        if self.table is None:
            raise TypeError(f"{self.name} is not a table format")
        if self.sign_magnitude:
            mags = self.table[:8]
            idx = np.searchsorted((mags[:-1] + mags[1:]) / f32(2), np.abs(normalized), side="left")
            return (idx | (np.signbit(normalized) << 3)).astype(np.uint8)
        return self._order[np.searchsorted(self._midpoints, normalized, side="left")]


FORMATS: dict[str, Format] = {
    f.name: f
    for f in [
        Format("int4_sym", "int_sym", "symmetric INT4, scale = absmax/7, 15 levels (code 0 unused)"),
        Format("int4_q4_0", "int_q4_0", "symmetric INT4 with GGUF Q4_0's rule d = max/-8, all 16 levels"),
        Format("int4_asym", "int_asym", "asymmetric INT4, min-max scale and integer zero-point", has_zero_point=True),
        Format("int4_gptq_sym", "int_gptq_sym", "symmetric INT4 as GPTQ/AutoGPTQ sym=True: scale 2*absmax/15, "
               "zero-point fixed at 8", has_zero_point=True),
        Format("nf4", "table", "NormalFloat4, bitsandbytes' table (QLoRA)", table=codebooks.NF4),
        Format("fp4_bnb", "table", "bitsandbytes' FP4 (its own encoding, not OCP E2M1)", table=codebooks.FP4_BNB),
        Format("fp4_e2m1", "table", "OCP MX FP4 E2M1 values scaled by absmax/6", table=codebooks.FP4_E2M1,
               sign_magnitude=True),
        Format("lloyd_max", "table", "16-level Lloyd-Max quantizer of N(0,1), scaled to [-1, 1]",
               table=codebooks.LLOYD_MAX),
    ]
}  # fmt: skip


def get_format(name) -> Format:
    if isinstance(name, Format):
        return name
    try:
        return FORMATS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown format {name!r}; expected one of: {', '.join(FORMATS)}") from None


def safe_divide(x: np.ndarray, s: np.ndarray) -> np.ndarray:
    """x / s per row, with 0 where s == 0 (an all-zero group), and no warnings."""
    out = np.zeros_like(x)
    np.divide(x, s[:, None], out=out, where=s[:, None] != 0)
    return out


def quantize_groups(groups: np.ndarray, fmt: Format, scale_dtype=np.float32, nearest=None):
    """Quantize each row of ``groups`` (float32, shape (n_groups, group_size)).

    ``nearest(fmt, normalized)`` may replace ``fmt.nearest`` for table formats (int4ref
    passes the equal but faster lookup of :mod:`int4ref._fast`).

    Returns ``(codes uint8 (n_groups, group_size), scales scale_dtype (n_groups,),
    zeros uint8 (n_groups,) or None)``. Raises ValueError when a scale does not fit
    ``scale_dtype`` (overflow to inf, or a nonzero scale that underflows to 0).
    """
    if fmt.kind == "int_asym":
        lo = np.minimum(groups.min(axis=1), 0)  # the range must contain 0 so that 0 is exact
        hi = np.maximum(groups.max(axis=1), 0)
        scales = store_scales(((hi - lo) / f32(15)).astype(f32), scale_dtype)
        s = scales.astype(f32)
        zeros = np.clip(np.rint(safe_divide(-lo[:, None], s)[:, 0]), 0, 15).astype(np.uint8)
        q = np.rint(safe_divide(groups, s)) + zeros[:, None]
        return np.clip(q, 0, 15).astype(np.uint8), scales, zeros
    if fmt.kind == "int_gptq_sym":
        # GPTQ's Quantizer.find_params with sym=True, in float32 like the reference's torch code
        lo = np.minimum(groups.min(axis=1), 0)
        hi = np.maximum(np.maximum(groups.max(axis=1), 0), np.abs(lo))
        lo = np.where(lo < 0, -hi, lo)            # only groups with a negative value become symmetric
        empty = (lo == 0) & (hi == 0)             # all zero: the reference's fallback range [-1, 1]
        lo, hi = np.where(empty, f32(-1), lo), np.where(empty, f32(1), hi)
        scales = store_scales(((hi - lo) / f32(15)).astype(f32), scale_dtype)
        zeros = np.full(groups.shape[0], 8, dtype=np.uint8)
        q = np.rint(safe_divide(groups, scales.astype(f32))) + f32(8)
        return np.clip(q, 0, 15).astype(np.uint8), scales, zeros
    if fmt.kind == "int_q4_0":
        rows = np.arange(groups.shape[0])
        signed_max = groups[rows, np.argmax(np.abs(groups), axis=1)]
        scales = store_scales((signed_max / f32(-8)).astype(f32), scale_dtype)
        d = scales.astype(f32)
        inv = np.zeros_like(d)
        with np.errstate(over="ignore"):
            np.divide(f32(1), d, out=inv, where=d != 0)  # GGUF multiplies by 1/d; x/d can round differently
        tiny = ~np.isfinite(inv)  # |d| below ~3e-39: 1/d overflows (GGUF then stores garbage codes)
        inv[tiny] = 0
        q = groups * inv[:, None] + f32(8.5)
        if tiny.any():  # divide instead for those groups
            q[tiny] = safe_divide(groups[tiny], d[tiny]) + f32(8.5)
        q = np.trunc(q)
        return np.clip(q, 0, 15).astype(np.uint8), scales, None
    absmax = np.abs(groups).max(axis=1)
    if fmt.kind == "int_sym":
        scales = store_scales((absmax / f32(7)).astype(f32), scale_dtype)
        q = np.rint(safe_divide(groups, scales.astype(f32)))
        return (np.clip(q, -7, 7) + 8).astype(np.uint8), scales, None
    scales = store_scales(absmax, scale_dtype)  # table formats
    # multiply by the reciprocal, clamped like bitsandbytes, so that full groups give its codes
    inv = f32(1) / np.maximum(scales.astype(f32), f32(1e-38))
    normalized = np.clip(groups * inv[:, None], -1, 1)
    codes = fmt.nearest(normalized) if nearest is None else nearest(fmt, normalized)
    return codes, scales, None


def dequantize_groups(codes: np.ndarray, scales: np.ndarray, zeros: np.ndarray | None, fmt: Format) -> np.ndarray:
    """Inverse of :func:`quantize_groups`: float32 array of ``codes``' shape."""
    s = scales.astype(f32)[:, None]
    if fmt.kind == "table":
        return fmt.table[codes] * s
    if fmt.kind in ("int_asym", "int_gptq_sym"):
        return (codes.astype(f32) - zeros.astype(f32)[:, None]) * s
    return (codes.astype(f32) - f32(8)) * s


def store_scales(scales: np.ndarray, scale_dtype) -> np.ndarray:
    """float32 ``scales`` as stored in ``scale_dtype`` (float32, or float16 when no scale
    overflows it or rounds from nonzero to 0: either is a ValueError)."""
    dtype = np.dtype(scale_dtype)
    if dtype == np.float32:
        return scales
    if dtype != np.float16:
        raise TypeError(f"scale_dtype must be float32 or float16, got {dtype}")
    finfo = np.finfo(np.float16)
    too_big = np.abs(scales) > finfo.max
    if too_big.any():
        g = int(np.flatnonzero(too_big)[0])
        raise ValueError(
            f"scale {float(scales[g]):.6g} of group {g} overflows float16 (max {float(finfo.max)}); "
            f"use scale_dtype=np.float32 or rescale the tensor"
        )
    stored = scales.astype(np.float16)
    lost = (stored == 0) & (scales != 0)
    if lost.any():
        g = int(np.flatnonzero(lost)[0])
        raise ValueError(
            f"scale {float(scales[g]):.3g} of group {g} underflows to 0 in float16 (smallest subnormal "
            f"{float(finfo.smallest_subnormal):.3g}); use scale_dtype=np.float32"
        )
    return stored
