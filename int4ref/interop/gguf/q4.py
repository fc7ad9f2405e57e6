"""GGUF's first 4-bit block types, Q4_0 and Q4_1: 32 values, float16 scale (and minimum).

The bytes are those of ggml's own C code, ``ggml_quantize_chunk`` with no importance
matrix (``quantize_row_q4_0_ref`` / ``quantize_row_q4_1_ref`` in ggml/src/ggml-quants.c),
in strict float32 as the C code computes; the values match ggml's ``to_float`` bit for bit.
Layouts (little-endian)::

    Q4_0   18 bytes  [0:2] d  float16   [2:18] 32 codes        value  d * (c - 8)
    Q4_1   20 bytes  [0:2] d  float16   [2:4] m float16   [4:20]   value  d * c + m

The 16 code bytes hold element ``j`` in the low nibble of byte ``j`` and element ``j + 16``
in the high nibble (``packing.pack_nibbles(..., layout="ggml")``).
"""
from __future__ import annotations

import numpy as np

from ._blocks import (
    F32,
    SIGN,
    BlockType,
    block_record,
    buf,
    codes_reference,
    load_codes,
    max_bits,
    pack_reference,
    reciprocal,
    require_finite,
    signed_absmax,
    store_codes,
    tree,
)

__all__ = ["Q4_0", "Q4_1", "TYPES"]


def _quantize_q4_0_reference(blocks):
    """Q4_0 of ``blocks`` (n, 32) float32 -> (n, 18) uint8.

    ``d = v / -8`` where ``v`` is the first value of largest magnitude in the block (with
    its sign), so ``v`` itself gets code 0 and the opposite extreme may reach code 16,
    which is clamped to 15. Codes use the float32 ``d``; the stored ``d`` is rounded
    to float16 afterwards. As in ggml's C, ``v`` starts at +0.0 and only a strictly larger
    magnitude replaces it, so a block of zeros (of either sign) stores ``d = +0 / -8 = -0.0``
    and codes 8 (gguf-py takes ``v`` from the block: +0.0 when its first zero is -0.0).
    """
    imax = np.abs(blocks).argmax(axis=1)
    vmax = np.take_along_axis(blocks, imax[:, None], axis=1)[:, 0]
    vmax = np.where(vmax == 0, F32(0), vmax)  # never -0.0
    d = vmax / F32(-8)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        inv = np.where(d == 0, F32(0), F32(1) / d)
        codes = np.trunc(blocks * inv[:, None] + F32(8.5)).astype(np.uint8)
    return pack_reference([d], np.minimum(codes, 15))


def _quantize_q4_1_reference(blocks):
    """Q4_1 of ``blocks`` (n, 32) float32 -> (n, 20) uint8.

    ``m = min``, ``d = (max - min) / 15``, ``code = trunc((x - m) / d + 0.5)`` computed
    with float32 ``d`` and ``1/d``; ``d`` and ``m`` are then rounded to float16. As in
    ggml's C (strict ``<`` and ``>`` scans), ``min`` and ``max`` are the first such element of
    the block, which decides the sign of a zero: ``m`` is the block's first zero when the
    minimum is 0, and a block of zeros stores ``d = (z - z) / 15 = +0.0``.
    """
    # argmin/argmax return the first of equal values, and -0.0 == +0.0
    lo = np.take_along_axis(blocks, blocks.argmin(axis=1)[:, None], axis=1)[:, 0]
    hi = np.take_along_axis(blocks, blocks.argmax(axis=1)[:, None], axis=1)[:, 0]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        d = (hi - lo) / F32(15)
        inv = np.where(d == 0, F32(0), F32(1) / d)
        codes = np.trunc((blocks - lo[:, None]) * inv[:, None] + F32(0.5)).astype(np.uint8)
    return pack_reference([d, lo], np.minimum(codes, 15))


def _dequantize_q4_0_reference(blocks):
    """(n, 18) uint8 Q4_0 blocks -> (n, 32) float32."""
    d = blocks[:, 0:2].copy().view("<f2").astype(F32)
    return d * (codes_reference(blocks, 2).astype(F32) - F32(8))


def _dequantize_q4_1_reference(blocks):
    """(n, 20) uint8 Q4_1 blocks -> (n, 32) float32."""
    d = blocks[:, 0:2].copy().view("<f2").astype(F32)
    m = blocks[:, 2:4].copy().view("<f2").astype(F32)
    return d * codes_reference(blocks, 4).astype(F32) + m


def _quantize_q4_0_chunk(x, out, scratch, quant_weights=None):
    blk = out.view(Q4_0.block_dtype)[:, 0]
    t = buf(scratch, "t", x.shape, F32)
    codes = buf(scratch, "codes", x.shape, np.uint8)
    vmax = signed_absmax(x, scratch)
    require_finite(vmax)
    vmax[vmax == 0] = 0  # a block of zeros: +0.0, whatever its zeros' signs (ggml's C)
    with np.errstate(all="ignore"):
        d = vmax / F32(-8)
        inv = reciprocal(d)
        np.multiply(x, inv[:, None], out=t)
        t += F32(8.5)
        np.copyto(codes, t, casting="unsafe")  # truncation; every value here lies in [0, 17)
        blk["d"] = d.astype("<f2")  # converting contiguously first is about twice as fast
    store_codes(codes, blk["qs"], scratch)
    bad = ~np.isfinite(inv)  # tiny blocks where 1/d overflows: let the reference decide
    if bad.any():
        out[bad] = _quantize_q4_0_reference(x[bad])


def _quantize_q4_1_chunk(x, out, scratch, quant_weights=None):
    blk = out.view(Q4_1.block_dtype)[:, 0]
    t = buf(scratch, "t", x.shape, F32)
    codes = buf(scratch, "codes", x.shape, np.uint8)
    top, neg = max_bits(x, scratch)
    low = tree(np.minimum, x.reshape(-1).view(np.uint32), len(x), buf(scratch, "tree", (31 * len(x),), np.uint32))
    hi = np.where(top >= 0, top.view(np.uint32), low).view(F32)  # all negative: the one nearest 0
    lo = np.where(neg >= SIGN, neg, low).view(F32)  # none negative: the smallest
    require_finite(hi)
    require_finite(lo)
    zero = np.flatnonzero(lo == 0)  # ggml's C keeps the block's first zero as min (and max)
    if zero.size:
        rows = x[zero]
        first = rows[np.arange(zero.size), (rows == 0).argmax(axis=1)]
        lo[zero] = first
        hi[zero] = np.where(hi[zero] == 0, first, hi[zero])  # all zeros: d = first - first = +0.0
    with np.errstate(all="ignore"):
        d = (hi - lo) / F32(15)
        inv = reciprocal(d)
        np.subtract(x, lo[:, None], out=t)
        t *= inv[:, None]
        t += F32(0.5)
        np.copyto(codes, t, casting="unsafe")
        blk["d"] = d.astype("<f2")
        blk["m"] = lo.astype("<f2")
    store_codes(codes, blk["qs"], scratch)
    bad = ~(np.isfinite(d) & np.isfinite(inv))
    if bad.any():
        out[bad] = _quantize_q4_1_reference(x[bad])


def _dequantize_q4_0_chunk(b, out, scratch):
    blk = b.view(Q4_0.block_dtype)[:, 0]
    np.copyto(out, load_codes(blk["qs"], scratch), casting="unsafe")
    out -= F32(8)
    with np.errstate(all="ignore"):  # an inf scale times code 8 gives NaN, as in gguf
        out *= blk["d"].astype(F32)[:, None]


def _dequantize_q4_1_chunk(b, out, scratch):
    blk = b.view(Q4_1.block_dtype)[:, 0]
    np.copyto(out, load_codes(blk["qs"], scratch), casting="unsafe")
    with np.errstate(all="ignore"):
        out *= blk["d"].astype(F32)[:, None]
        out += blk["m"].astype(F32)[:, None]


class Q4_0(BlockType):
    """Q4_0: ``d * (c - 8)``, ``d = v / -8`` with v the block's first value of largest
    magnitude (ggml ``quantize_row_q4_0_ref`` / ``dequantize_row_q4_0``). 18 bytes: d, 16 code
    bytes. The same rule on any group size is the ``int4_q4_0`` format
    (:class:`int4ref.formats.Q4_0Rule`)."""

    name = "Q4_0"
    type_size = 18
    scale_fields = ("d",)
    float16_fields = (("d", 0),)
    block_dtype = block_record("d")
    group_format = "int4_q4_0"
    quantize_chunk = staticmethod(_quantize_q4_0_chunk)
    dequantize_chunk = staticmethod(_dequantize_q4_0_chunk)
    quantize_blocks = staticmethod(_quantize_q4_0_reference)
    dequantize_blocks = staticmethod(_dequantize_q4_0_reference)


class Q4_1(BlockType):
    """Q4_1: ``d * c + m``, ``m = min``, ``d = (max - min) / 15`` (ggml
    ``quantize_row_q4_1_ref`` / ``dequantize_row_q4_1``). 20 bytes: d, m, 16 code bytes."""

    name = "Q4_1"
    type_size = 20
    scale_fields = ("d", "m")
    float16_fields = (("d", 0), ("m", 2))
    block_dtype = block_record("d", "m")
    quantize_chunk = staticmethod(_quantize_q4_1_chunk)
    dequantize_chunk = staticmethod(_dequantize_q4_1_chunk)
    quantize_blocks = staticmethod(_quantize_q4_1_reference)
    dequantize_blocks = staticmethod(_dequantize_q4_1_reference)


#: The block types this module defines.
TYPES = (Q4_0, Q4_1)
