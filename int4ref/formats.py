"""The 4-bit formats: how one group of values becomes 16 possible codes and back.

Every format is one object, an instance of a :class:`Format` subclass, that owns its whole
rule. It works on a 2-D float32 array ``groups`` of shape ``(n_groups, group_size)`` (one
row per group) in three steps:

* ``params = fmt.fit(groups, scale_dtype)``: one scale (and, for ``int4_asym`` and
  ``int4_gptq_sym``, one zero-point) per group, a :class:`GroupParams`;
* ``codes = fmt.encode(groups, params)``: uint8 codes 0..15 of ``groups``' shape, chosen
  against the scales as stored;
* ``values = fmt.decode(codes, params)``: float32 values of ``codes``' shape.

``fmt.quantize(groups, scale_dtype)`` is fit + encode. :mod:`int4ref.quant` cuts a tensor
into groups and calls these; GPTQ (:mod:`int4ref.gptq`) fits once per group and encodes one
column at a time with the same ``encode``. Each class's docstring says which library it
matches, where its fast path is and which GPU kernel section runs it. The classes:

=====================  ==============================================================
class                  formats
=====================  ==============================================================
:class:`TableFormat`   ``nf4``, ``fp4_bnb``, ``lloyd_max`` (and any 16-value table)
:class:`SignMagnitu-   ``fp4_e2m1`` (a table whose bit 3 is the sign)
deTable`
:class:`SymmetricInt`  ``int4_sym``
:class:`Q4_0Rule`      ``int4_q4_0``
:class:`AsymmetricInt` ``int4_asym``
:class:`GPTQSymmet-    ``int4_gptq_sym``
ric`
=====================  ==============================================================

Formats still to come fit the same three steps: ``GroupParams`` is the per-format parameter
record, so a super-block format (Q4_K, IQ4_XS) returns its quantized sub-scales and super
scale from ``fit``, a shared power-of-two scale (MXFP4) or a two-level FP8 + float32 scale
(NVFP4) is a different ``fit`` in front of a table ``encode``, and an importance-weighted fit
is an override of ``fit`` alone.

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

import re
from typing import NamedTuple

import numpy as np

from . import codebooks

f32 = np.float32


class GroupParams(NamedTuple):
    """What ``fit`` finds for each group: ``scales`` as stored (``scale_dtype``, (n_groups,))
    and ``zeros`` (uint8, (n_groups,)) for formats with a zero-point, else None."""

    scales: np.ndarray
    zeros: np.ndarray | None = None


class Format:
    """A 4-bit group format: ``fit`` the scale(s), ``encode`` to codes, ``decode`` to values.

    Subclasses set ``rule`` (one line: code -> value, scale per group), ``library`` (what it
    matches, byte for byte where tested), ``fast_path`` and ``gpu_kernel`` (where the faster
    versions live, or None). ``table`` is the float32 array of 16 values in code order for
    table formats and None for the integer ones.
    """

    rule = ""
    library = ""
    fast_path: str | None = None
    gpu_kernel: str | None = None  # the section of int4ref/gpu/quantize.cu, if one runs it
    has_zero_point = False
    sign_magnitude = False
    table: np.ndarray | None = None
    bits = 4  # code width; only the k-bit uniform formats (int{k}_sym, int{k}_asym) differ

    def __init__(self, name: str, description: str):
        self.name = name
        self.description = description

    def __repr__(self):
        return f"{type(self).__name__}({self.name!r})"

    # ---- the rule --------------------------------------------------------------------
    def fit(self, groups: np.ndarray, scale_dtype=np.float32) -> GroupParams:
        """Scale (and zero-point) of each row of ``groups``, the scale rounded to ``scale_dtype``.

        Raises ValueError when a scale does not fit ``scale_dtype`` (:func:`store_scales`)."""
        raise NotImplementedError

    def encode(self, groups: np.ndarray, params: GroupParams, fast: bool = False) -> np.ndarray:
        """uint8 codes of ``groups`` against ``params`` (one row per group). ``fast=True``
        uses the format's fast path where it has one (same result)."""
        raise NotImplementedError

    def decode(self, codes: np.ndarray, params: GroupParams) -> np.ndarray:
        """float32 values of ``codes`` (one row per group)."""
        return (codes.astype(f32) - f32(8)) * params.scales.astype(f32)[:, None]

    def quantize(self, groups: np.ndarray, scale_dtype=np.float32, fast: bool = False):
        """``fit`` then ``encode``: ``(codes, scales, zeros)``."""
        params = self.fit(groups, scale_dtype)
        return self.encode(groups, params, fast=fast), params.scales, params.zeros

    # ---- describing it -----------------------------------------------------------------
    def levels(self) -> np.ndarray:
        """The 16 representable values of a group whose scale (or absmax) is 1, in code order
        (NaN for a code the format never produces)."""
        raise NotImplementedError

    def bits_per_weight(self, group_size: int, scale_dtype=np.float32) -> float:
        """Storage per weight: a ``bits``-bit code, the group's scale and (if any) its ``bits``-bit
        zero-point, as :meth:`int4ref.QuantizedTensor.bits_per_weight` counts them for full groups."""
        if isinstance(group_size, bool) or not isinstance(group_size, (int, np.integer)) or group_size < 1:
            raise ValueError(f"group_size must be a positive integer, got {group_size!r}")
        scale_bits = 8 * np.dtype(scale_dtype).itemsize
        return self.bits + (scale_bits + (self.bits if self.has_zero_point else 0)) / int(group_size)

    def nearest(self, normalized: np.ndarray) -> np.ndarray:
        raise TypeError(f"{self.name} is not a table format")

    def kernel_tables(self) -> tuple[np.ndarray, np.ndarray, int]:
        """``(values, midpoints, order)`` as the GPU kernels take them (int4ref.gpu.ops)."""
        raise ValueError(f"{self.name} has no GPU tables")


# ==== table formats =====================================================================


class TableFormat(Format):
    """A code indexes a table of 16 values in [-1, 1]; the scale is the group's absmax.

    ``value = table[q] * absmax``. A group is scaled by multiplying with ``1 / max(absmax,
    1e-38)`` (float32) and clipped to [-1, 1], exactly as bitsandbytes does for its full
    blocks, and each value gets the nearest table entry, a tie going to the LOWER entry.

    Matches: bitsandbytes 0.50 CPU ``quantize_4bit`` for ``nf4`` and ``fp4_bnb`` (byte-exact
    through :mod:`int4ref.interop.bitsandbytes`, checked live by ``make test-peers``).
    Reference: :meth:`nearest` (a binary search over the 15 midpoints). Fast path:
    :meth:`nearest_fast` (a 64 Ki-entry lookup on the top 16 bits of each float32;
    :mod:`int4ref._fast` calls it, ``tests/test_fast.py`` proves them equal). GPU kernel:
    ``int4ref/gpu/quantize.cu``, section ``table_code`` (``quantize_groups`` with
    ``INT_SYM=false``), fed by :meth:`kernel_tables`. bitsandbytes' own byte format
    (packed nibbles, float32 absmax, its division for a partial last block) is
    :func:`int4ref.interop.bitsandbytes.quantize_4bit`, which calls the same fast lookup.
    """

    rule = "table[q] * absmax, scale = absmax"
    library = "bitsandbytes 0.50 CPU (nf4, fp4_bnb)"
    fast_path = "TableFormat.nearest_fast (int4ref._fast.nearest)"
    gpu_kernel = "quantize.cu: table_code"

    def __init__(self, name: str, description: str, table: np.ndarray):
        super().__init__(name, description)
        table = np.asarray(table, dtype=f32)
        if table.shape != (16,):
            raise ValueError(f"a table format needs 16 values, got shape {table.shape}")
        self.table = table
        order = np.argsort(table, kind="stable")  # equal values keep code order (+-0)
        sorted_values = table[order]
        #: the code of each sorted position
        self.order = order.astype(np.uint8)
        #: the 15 midpoints between sorted values that :meth:`nearest` searches
        self.midpoints = ((sorted_values[:-1] + sorted_values[1:]) / f32(2)).astype(f32)
        self._buckets = None

    @property
    def _midpoints(self):  # the name older tests use
        return self.midpoints

    @property
    def _order(self):
        return self.order

    def fit(self, groups, scale_dtype=np.float32):
        return GroupParams(store_scales(np.abs(groups).max(axis=1), scale_dtype))

    def normalize(self, groups, params):
        """``groups`` times ``1 / max(scale, 1e-38)``, clipped to [-1, 1] (bitsandbytes' arithmetic)."""
        inv = f32(1) / np.maximum(params.scales.astype(f32), f32(1e-38))
        return np.clip(groups * inv[:, None], -1, 1)

    def encode(self, groups, params, fast=False):
        normalized = self.normalize(groups, params)
        return self.nearest_fast(normalized) if fast else self.nearest(normalized)

    def decode(self, codes, params):
        return self.table[codes] * params.scales.astype(f32)[:, None]

    def levels(self):
        return self.table.copy()

    def nearest(self, normalized: np.ndarray) -> np.ndarray:
        """The reference: index of the nearest table value (ties to the lower value)."""
        return self.order[np.searchsorted(self.midpoints, normalized, side="left")]

    def nearest_fast(self, normalized: np.ndarray) -> np.ndarray:
        """Same result as :meth:`nearest` for finite float32 input, by table lookups.

        The top 16 bits of a float32 (sign, exponent, 7 mantissa bits) name a *bucket*, an
        interval of floats. A bucket is narrow enough to hold at most one of the 15
        midpoints (checked when the tables are built), so per bucket we store the sorted
        position below its midpoint and the midpoint itself: one comparison decides.
        """
        below, mid, order = self.bucket_tables()
        v = np.ascontiguousarray(normalized, dtype=f32)
        bucket = (v.view(np.uint32) >> 16).astype(np.intp)  # sign, exponent, 7 mantissa bits
        position = np.take(below, bucket) + (v > np.take(mid, bucket))  # uint8 + bool: one compare
        return position if order is None else np.take(order, position)

    def bucket_tables(self):
        """Per 16-bit bucket: the sorted position below its midpoint, that midpoint, and the
        code of each sorted position (None when it is the identity). Built once."""
        if self._buckets is None:
            bits = np.arange(1 << 16, dtype=np.uint32) << 16
            small = bits.view(f32)  # smallest magnitude in each bucket
            large = (bits | 0xFFFF).view(f32)  # largest magnitude in each bucket
            with np.errstate(invalid="ignore"):
                low_end = np.where(np.signbit(small), large, small)  # the bucket's lowest value
                high_end = np.where(np.signbit(small), small, large)
                below = np.searchsorted(self.midpoints, low_end, side="left")  # answer at the low end
                above = np.searchsorted(self.midpoints, high_end, side="left")  # answer at the high end
            finite = np.isfinite(low_end) & np.isfinite(high_end)
            if np.any((above - below)[finite] > 1):
                raise ValueError(f"{self.name}: a 16-bit bucket holds two midpoints; use {type(self).__name__}.nearest")
            mid = np.append(self.midpoints, np.inf).astype(f32)[below]
            identity = bool(np.all(self.order == np.arange(16)))
            self._buckets = (below.astype(np.uint8), mid, None if identity else self.order)
        return self._buckets

    def kernel_tables(self):
        mids = np.append(self.midpoints, f32(np.inf)).astype(f32)
        order = sum(int(code) << (4 * pos) for pos, code in enumerate(self.order))
        return self.table.astype(f32), mids, order


class SignMagnitudeTable(TableFormat):
    """A table whose bit 3 is the sign and whose 3 low bits index 8 magnitudes (``fp4_e2m1``).

    The magnitude rounds to the nearest of the 8 (ties toward zero) and the sign bit is the
    input's, so -0.0 and tiny negatives get the negative-zero code. Scale as
    :class:`TableFormat` (absmax, so the E2M1 values are scaled by absmax/6).

    Matches: the OCP Microscaling FP4 E2M1 element encoding, with an absmax scale per group
    (not the MX shared power-of-two scale). Fast path: none (:meth:`nearest_fast` is
    :meth:`nearest`, already a search over 7 midpoints). GPU kernel: none.
    """

    rule = "E2M1[q] * absmax (sign-magnitude codes)"
    library = "OCP MX FP4 E2M1 element values"
    fast_path = None
    gpu_kernel = None
    sign_magnitude = True

    def nearest(self, normalized):
        mags = self.table[:8]
        idx = np.searchsorted((mags[:-1] + mags[1:]) / f32(2), np.abs(normalized), side="left")
        return (idx | (np.signbit(normalized) << 3)).astype(np.uint8)

    def nearest_fast(self, normalized):
        return self.nearest(normalized)

    def kernel_tables(self):
        raise ValueError(f"{self.name} has no GPU tables")


# ==== integer formats ====================================================================


class SymmetricInt(Format):
    """``value = (q - 8) * s`` with ``s = absmax / 7``; codes 1..15 (code 0 is never produced).

    Rounds half to even (``np.rint``). Matches: the textbook symmetric INT4 (no one library's
    bytes). Fast path: none needed (the numpy arithmetic is the fast path). GPU kernel:
    ``int4ref/gpu/quantize.cu``, section ``int_sym_code`` (``quantize_groups`` with
    ``INT_SYM=true``); the GEMV reads :meth:`kernel_tables`' values.
    """

    rule = "(q - 8) * s, s = absmax / 7"
    library = "textbook symmetric INT4"
    gpu_kernel = "quantize.cu: int_sym_code"

    def scale_from_absmax(self, absmax):
        """The scale of a group with this absmax (numpy or CuPy array, float32)."""
        return absmax / f32(7)

    def fit(self, groups, scale_dtype=np.float32):
        absmax = np.abs(groups).max(axis=1)
        return GroupParams(store_scales(self.scale_from_absmax(absmax).astype(f32), scale_dtype))

    def encode(self, groups, params, fast=False):
        q = np.rint(safe_divide(groups, params.scales.astype(f32)))
        return (np.clip(q, -7, 7) + 8).astype(np.uint8)

    def levels(self):
        lv = (np.arange(16, dtype=f32) - 8) / f32(7)
        lv[0] = np.nan
        return lv

    def kernel_tables(self):
        return (np.arange(16, dtype=f32) - f32(8)), np.zeros(16, f32), 0


class Q4_0Rule(Format):
    """``value = (q - 8) * d`` with ``d = m / -8``, m the signed value of largest magnitude.

    Codes are ``trunc(x * (1/d) + 8.5)`` with float32 ``1/d``, clipped to 0..15, as GGUF
    computes them (a group whose ``1/d`` overflows float32 is divided instead). Matches:
    ggml's ``quantize_row_q4_0_ref`` in spirit, with any group size and scale dtype (the byte
    format itself, 32-value blocks with a float16 ``d``, is :class:`int4ref.interop.gguf.Q4_0`).
    Fast path: none needed. GPU kernel: none.
    """

    rule = "(q - 8) * d, d = max / -8"
    library = "ggml Q4_0 rule (any group size)"

    def fit(self, groups, scale_dtype=np.float32):
        rows = np.arange(groups.shape[0])
        signed_max = groups[rows, np.argmax(np.abs(groups), axis=1)]
        return GroupParams(store_scales((signed_max / f32(-8)).astype(f32), scale_dtype))

    def encode(self, groups, params, fast=False):
        d = params.scales.astype(f32)
        inv = np.zeros_like(d)
        with np.errstate(over="ignore"):
            np.divide(f32(1), d, out=inv, where=d != 0)  # GGUF multiplies by 1/d; x/d can round differently
        tiny = ~np.isfinite(inv)  # |d| below ~3e-39: 1/d overflows (GGUF then stores garbage codes)
        inv[tiny] = 0
        q = groups * inv[:, None] + f32(8.5)
        if tiny.any():  # divide instead for those groups
            q[tiny] = safe_divide(groups[tiny], d[tiny]) + f32(8.5)
        q = np.trunc(q)
        return np.clip(q, 0, 15).astype(np.uint8)

    def levels(self):
        return (np.arange(16, dtype=f32) - 8) / f32(8)


class AsymmetricInt(Format):
    """``value = (q - z) * s``: min-max scale ``s = (max - min) / 15`` over a range that
    includes 0, integer zero-point ``z = round(-min / s)``; codes 0..15, half to even.

    Matches: GPTQ's reference quantizer and AutoGPTQ with ``sym=False`` (float32 arithmetic as
    their torch code). Fast path: none needed. GPU kernel: none.
    """

    rule = "(q - z) * s, s = (max - min) / 15, z = round(-min / s)"
    library = "GPTQ reference / AutoGPTQ sym=False"
    has_zero_point = True

    def fit(self, groups, scale_dtype=np.float32):
        lo = np.minimum(groups.min(axis=1), 0)  # the range must contain 0 so that 0 is exact
        hi = np.maximum(groups.max(axis=1), 0)
        scales = store_scales(((hi - lo) / f32(15)).astype(f32), scale_dtype)
        zeros = np.clip(np.rint(safe_divide(-lo[:, None], scales.astype(f32))[:, 0]), 0, 15).astype(np.uint8)
        return GroupParams(scales, zeros)

    def encode(self, groups, params, fast=False):
        q = np.rint(safe_divide(groups, params.scales.astype(f32))) + params.zeros[:, None]
        return np.clip(q, 0, 15).astype(np.uint8)

    def decode(self, codes, params):
        return (codes.astype(f32) - params.zeros.astype(f32)[:, None]) * params.scales.astype(f32)[:, None]

    def levels(self):
        return (np.arange(16, dtype=f32) - 8) * f32(2 / 15)


class GPTQSymmetric(AsymmetricInt):
    """GPTQ/AutoGPTQ ``sym=True``: ``s = 2 * absmax / 15`` and a zero-point fixed at 8, stored.

    ``fit`` is GPTQ's ``Quantizer.find_params`` with ``sym=True`` in float32 (see the module
    docstring for its edge cases); ``encode`` and ``decode`` are :class:`AsymmetricInt`'s.
    Matches: GPTQ's reference code and AutoGPTQ ``sym=True``. Fast path: none needed. GPU
    kernel: none.
    """

    rule = "(q - 8) * s, s = 2 * absmax / 15, z = 8 stored"
    library = "GPTQ reference / AutoGPTQ sym=True"

    def fit(self, groups, scale_dtype=np.float32):
        lo = np.minimum(groups.min(axis=1), 0)
        hi = np.maximum(np.maximum(groups.max(axis=1), 0), np.abs(lo))
        lo = np.where(lo < 0, -hi, lo)            # only groups with a negative value become symmetric
        empty = (lo == 0) & (hi == 0)             # all zero: the reference's fallback range [-1, 1]
        lo, hi = np.where(empty, f32(-1), lo), np.where(empty, f32(1), hi)
        scales = store_scales(((hi - lo) / f32(15)).astype(f32), scale_dtype)
        return GroupParams(scales, np.full(groups.shape[0], 8, dtype=np.uint8))

    def levels(self):
        return (np.arange(16, dtype=f32) - 8) * (f32(2) / f32(15))


# ==== k-bit uniform formats ==============================================================


class KBitSymmetricInt(SymmetricInt):
    """``int{k}_sym``: ``value = (q - 2**(k-1)) * s`` with ``s = absmax / (2**(k-1) - 1)``;
    codes 1..2**k - 1 (code 0 unused), half to even. ``bits`` = k in 2..8.

    The symmetric INT4 rule of :class:`SymmetricInt` with another code width, for the bit
    sweeps (k = 4 gives exactly ``int4_sym``; k = 2 keeps only -s, 0, +s). Codes are uint8,
    one per value, ``2**k`` of them; storage counts k bits per code. Matches: the textbook
    symmetric k-bit integer. Fast path: none needed. GPU kernel: none.
    """

    gpu_kernel = None

    def __init__(self, bits: int):
        bits = check_code_bits(bits)
        super().__init__(f"int{bits}_sym", f"symmetric {bits}-bit integer, scale = absmax/{2 ** (bits - 1) - 1}")
        self.bits = bits
        self.offset = 2 ** (bits - 1)  # the code of 0
        self.rule = f"(q - {self.offset}) * s, s = absmax / {self.offset - 1}"

    def scale_from_absmax(self, absmax):
        return absmax / f32(self.offset - 1)

    def encode(self, groups, params, fast=False):
        q = np.rint(safe_divide(groups, params.scales.astype(f32)))
        return (np.clip(q, 1 - self.offset, self.offset - 1) + self.offset).astype(np.uint8)

    def decode(self, codes, params):
        return (codes.astype(f32) - f32(self.offset)) * params.scales.astype(f32)[:, None]

    def levels(self):
        lv = (np.arange(2**self.bits, dtype=f32) - self.offset) / f32(self.offset - 1)
        lv[0] = np.nan
        return lv

    def kernel_tables(self):
        raise ValueError(f"{self.name} has no GPU tables")


class KBitAsymmetricInt(AsymmetricInt):
    """``int{k}_asym``: ``value = (q - z) * s`` with ``s = (max - min) / (2**k - 1)`` over a range
    that includes 0 and ``z = round(-min / s)``; codes 0..2**k - 1, half to even. ``bits`` = k in 2..8.

    :class:`AsymmetricInt` (GPTQ's min-max quantizer) with another code width: GPTQ's
    reference quantizer with ``wbits=k`` (k = 4 gives exactly ``int4_asym``). Codes and
    zero-points are uint8; storage counts k bits for each. Fast path: none needed. GPU kernel: none.
    """

    def __init__(self, bits: int):
        bits = check_code_bits(bits)
        super().__init__(f"int{bits}_asym", f"asymmetric {bits}-bit integer, min-max scale and integer zero-point")
        self.bits = bits
        self.qmax = 2**bits - 1
        self.rule = f"(q - z) * s, s = (max - min) / {self.qmax}, z = round(-min / s)"

    def fit(self, groups, scale_dtype=np.float32):
        lo = np.minimum(groups.min(axis=1), 0)
        hi = np.maximum(groups.max(axis=1), 0)
        scales = store_scales(((hi - lo) / f32(self.qmax)).astype(f32), scale_dtype)
        zeros = np.clip(np.rint(safe_divide(-lo[:, None], scales.astype(f32))[:, 0]), 0, self.qmax).astype(np.uint8)
        return GroupParams(scales, zeros)

    def encode(self, groups, params, fast=False):
        q = np.rint(safe_divide(groups, params.scales.astype(f32))) + params.zeros[:, None]
        return np.clip(q, 0, self.qmax).astype(np.uint8)

    def levels(self):
        return (np.arange(2**self.bits, dtype=f32) - 2 ** (self.bits - 1)) * f32(2 / self.qmax)


#: Code widths of the k-bit uniform formats.
KBIT_RANGE = range(2, 9)
_KBIT_NAME = re.compile(r"int([0-9]+)_(sym|asym)")
_KBIT_CACHE: dict[str, Format] = {}


def check_code_bits(bits) -> int:
    """``bits`` as an int in :data:`KBIT_RANGE` (2..8), else ValueError."""
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or int(bits) not in KBIT_RANGE:
        raise ValueError(f"bits must be an integer from {KBIT_RANGE.start} to {KBIT_RANGE.stop - 1}, got {bits!r}")
    return int(bits)


def kbit_format(bits: int, symmetric: bool = False) -> Format:
    """The uniform ``bits``-bit integer format: ``int{bits}_sym`` or ``int{bits}_asym``.

    For 4 bits these are the registered ``int4_sym`` / ``int4_asym`` objects; other widths
    (2..8) are :class:`KBitSymmetricInt` / :class:`KBitAsymmetricInt`, made once and reused.
    :func:`get_format` resolves the same names, so ``int4ref.quantize(w, "int3_asym", 128)``,
    GPTQ and AWQ take them.
    """
    return get_format(f"int{check_code_bits(bits)}_{'sym' if symmetric else 'asym'}")


FORMATS: dict[str, Format] = {
    f.name: f
    for f in [
        SymmetricInt("int4_sym", "symmetric INT4, scale = absmax/7, 15 levels (code 0 unused)"),
        Q4_0Rule("int4_q4_0", "symmetric INT4 with GGUF Q4_0's rule d = max/-8, all 16 levels"),
        AsymmetricInt("int4_asym", "asymmetric INT4, min-max scale and integer zero-point"),
        GPTQSymmetric("int4_gptq_sym", "symmetric INT4 as GPTQ/AutoGPTQ sym=True: scale 2*absmax/15, "
                      "zero-point fixed at 8"),
        TableFormat("nf4", "NormalFloat4, bitsandbytes' table (QLoRA)", codebooks.NF4),
        TableFormat("fp4_bnb", "bitsandbytes' FP4 (its own encoding, not OCP E2M1)", codebooks.FP4_BNB),
        SignMagnitudeTable("fp4_e2m1", "OCP MX FP4 E2M1 values scaled by absmax/6", codebooks.FP4_E2M1),
        TableFormat("lloyd_max", "16-level Lloyd-Max quantizer of N(0,1), scaled to [-1, 1]", codebooks.LLOYD_MAX),
    ]
}  # fmt: skip


def get_format(name) -> Format:
    """The :class:`Format` named ``name`` (a format object passes through): one of
    :data:`FORMATS`, or a k-bit uniform format ``int{k}_sym`` / ``int{k}_asym``, k in 2..8."""
    if isinstance(name, Format):
        return name
    if isinstance(name, str) and name in FORMATS:
        return FORMATS[name]
    match = _KBIT_NAME.fullmatch(name) if isinstance(name, str) else None
    if match and int(match.group(1)) in KBIT_RANGE:
        if name not in _KBIT_CACHE:
            cls = KBitSymmetricInt if match.group(2) == "sym" else KBitAsymmetricInt
            _KBIT_CACHE[name] = cls(int(match.group(1)))
        return _KBIT_CACHE[name]
    raise ValueError(f"unknown format {name!r}; expected one of: {', '.join(FORMATS)}, "
                     f"or int{{k}}_sym / int{{k}}_asym with k in 2..8")


def safe_divide(x: np.ndarray, s: np.ndarray) -> np.ndarray:
    """x / s per row, with 0 where s == 0 (an all-zero group), and no warnings."""
    out = np.zeros_like(x)
    np.divide(x, s[:, None], out=out, where=s[:, None] != 0)
    return out


def quantize_groups(groups: np.ndarray, fmt: Format, scale_dtype=np.float32, nearest=None):
    """Quantize each row of ``groups`` (float32, shape (n_groups, group_size)): ``fmt.fit``
    then ``fmt.encode``.

    ``nearest(fmt, normalized)`` may replace ``fmt.nearest`` for table formats (e.g. the
    equal but faster :func:`int4ref._fast.nearest`).

    Returns ``(codes uint8 (n_groups, group_size), scales scale_dtype (n_groups,),
    zeros uint8 (n_groups,) or None)``. Raises ValueError when a scale does not fit
    ``scale_dtype`` (overflow to inf, or a nonzero scale that underflows to 0).
    """
    fmt = get_format(fmt)
    params = fmt.fit(groups, scale_dtype)
    if nearest is not None and fmt.table is not None:
        codes = nearest(fmt, fmt.normalize(groups, params))
    else:
        codes = fmt.encode(groups, params)
    return codes, params.scales, params.zeros


def dequantize_groups(codes: np.ndarray, scales: np.ndarray, zeros: np.ndarray | None, fmt: Format) -> np.ndarray:
    """Inverse of :func:`quantize_groups`: ``fmt.decode``, a float32 array of ``codes``' shape."""
    return get_format(fmt).decode(codes, GroupParams(scales, zeros))


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
