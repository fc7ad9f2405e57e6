"""IQ4_NL and IQ4_XS: 4-bit codes on a fixed non-uniform table of 16 levels times fitted scales.

The bytes are those of ggml's ``quantize_iq4_nl`` / ``quantize_iq4_xs`` (what
``ggml_quantize_chunk`` and ``llama-quantize`` run; ggml's ``quantize_row_iq4_nl_ref`` is a
different, single-pass variant), with or without an importance matrix, in strict float32;
values match ggml's ``to_float`` and gguf-py bit for bit. Both types come from one C function,
``quantize_row_iq4_nl_impl(super_block_size, block_size = 32, ...)``, which this module
shares the same way: IQ4_NL is one 32-value block under its own float16 scale, IQ4_XS a
super-block of 256 values, eight 32-value sub-blocks whose fitted scales are rounded to 6 bits
under one float16 scale::

    IQ4_NL  18 bytes  [0:2] d float16   [2:18] 32 codes               value  d * IQ4_NL_VALUES[c]
    IQ4_XS 136 bytes  [0:2] d float16   [2:4] scales_h uint16   [4:8] scales_l   [8:136] 256 codes
                      sub-block ib has the 6-bit scale s = low/high nibble of scales_l[ib // 2]
                      + 16 * bits 2ib..2ib+1 of scales_h;   value  (d * (s - 32)) * IQ4_NL_VALUES[c]

(In each 32-value (sub-)block's 16 code bytes, element ``j`` sits in the low nibble of byte
``j`` and element ``j + 16`` in the high nibble.)
"""
from __future__ import annotations

import numpy as np

from ._blocks import (
    F32,
    BlockType,
    block_record,
    buf,
    codes_reference,
    load_codes,
    pack_reference,
    reciprocal,
    require_finite,
    signed_absmax,
    store_codes,
    sum_in_order,
)

__all__ = ["IQ4_NL", "IQ4_NL_VALUES", "IQ4_XS", "TYPES"]

#: The 16 levels of IQ4_NL and IQ4_XS (ggml's ``kvalues_iq4nl``), as int8.
IQ4_NL_VALUES = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], dtype=np.int8)
IQ4_NL_VALUES.setflags(write=False)

_IQ4_NL_F32 = IQ4_NL_VALUES.astype(F32)
_IQ4_NTRY = 7  # ggml's quantize_iq4_nl/_xs try scales (itry - 127) / max for itry in [-7, 7]
_IQ4_EPS = F32(1e-15)  # GROUP_MAX_EPS: (sub-)blocks with max |x| below it get scale 0
_SUB = 32  # values per (sub-)block: the block_size argument of quantize_row_iq4_nl_impl
_XS_SUBS = 8  # sub-blocks per IQ4_XS super-block
_XS_SCALE_BIAS = 32  # IQ4_XS stores 6-bit sub-block scales l + 32, l in [-32, 31]


# ---------------------------------------------------------------------------------------
# Literal references (whole blocks, numpy over blocks, the C loops' float32 order)
# ---------------------------------------------------------------------------------------

def _best_index_reference(v):
    """ggml's ``best_index_int8(16, kvalues_iq4nl, v)`` for float32 ``v`` (any shape) -> intp codes.

    At or below the first level: 0; at or above the last: 15; otherwise the nearer of the two
    levels around ``v``, compared as ``v - lo < hi - v`` in float32 (a tie goes up). NaN
    fails every comparison of the C binary search and gets 15.
    """
    upper = np.clip(np.searchsorted(_IQ4_NL_F32, v, side="right"), 1, 15)  # first level > v
    lo, hi = _IQ4_NL_F32[upper - 1], _IQ4_NL_F32[upper]
    codes = np.where(v - lo < hi - v, upper - 1, upper)
    codes = np.where(v <= _IQ4_NL_F32[0], 0, codes)
    return np.where(v >= _IQ4_NL_F32[-1], 15, codes)


def _sum_left_to_right(a):
    """Float32 sums over the last axis of ``a``, added in index order like ``s += a[j]`` in C."""
    return np.add.accumulate(a, axis=-1, dtype=F32)[..., -1]


def _nearest_int(v):
    """ggml's ``nearest_int``: the int32 bits of float32 ``v + 12582912`` (1.5 * 2**23), less the
    magic number: round half to even for |v| < 2**22 (ggml only asserts that range)."""
    bits = (np.asarray(v, F32) + F32(12582912)).view(np.int32)
    return (bits & 0x7FFFFF) - 0x400000


def _weights_reference(blocks, quant_weights):
    """The search weights of ``blocks`` (n, super_block_size) float32: ``x*x`` without an imatrix;
    with one, ``qw * sqrt(sigma2 + x*x)``, ``sigma2 = sum(x*x) * 2 / super_block_size`` per block."""
    x2 = blocks * blocks
    if quant_weights is None:
        return x2
    sigma2 = _sum_left_to_right(x2) * F32(2 / blocks.shape[1])
    return np.asarray(quant_weights, F32) * np.sqrt(sigma2[:, None] + x2)


def _search_scales_reference(xb, weight):
    """ggml's scale search for 32-value (sub-)blocks ``xb`` (..., 32) float32 with ``weight``
    (..., 32): the fitted scale of each, (...) float32.

    ``max`` is the first value of largest magnitude. Start from ``1/d = 127 / max`` (code 0 for
    ``max``): pick the nearest level ``q`` for each ``x/d`` and fit ``d = sum(w q x) / sum(w q q)``;
    then for ``1/d = (itry - 127) / max``, itry = -7..7, keep the fit that increases
    ``sum(w q x)^2 / sum(w q q)`` most. A (sub-)block with max |x| < 1e-15 gets 0.
    """
    at = np.abs(xb).argmax(axis=-1)[..., None]
    vmax = np.take_along_axis(xb, at, axis=-1)[..., 0]
    live = np.abs(vmax) >= _IQ4_EPS
    vmax = np.where(live, vmax, F32(1))  # dead blocks get 0 below; avoid dividing by 0

    def fit(inv):
        q = _IQ4_NL_F32[_best_index_reference(inv[..., None] * xb)]
        wq = weight * q
        return _sum_left_to_right(wq * xb), _sum_left_to_right(wq * q)

    sum_qx, sum_q2 = fit(F32(1) / (-vmax / _IQ4_NL_F32[0]))
    d = np.where(sum_q2 > 0, sum_qx / sum_q2, F32(0))
    best = d * sum_qx
    for itry in range(-_IQ4_NTRY, _IQ4_NTRY + 1):
        sum_qx, sum_q2 = fit(F32(itry + int(IQ4_NL_VALUES[0])) / vmax)
        better = (sum_q2 > 0) & (sum_qx * sum_qx > best * sum_q2)
        d = np.where(better, sum_qx / sum_q2, d)
        best = np.where(better, d * sum_qx, best)
    return np.where(live, d, F32(0))


def _quantize_iq4_nl_reference(blocks, quant_weights=None):
    """IQ4_NL of ``blocks`` (n, 32) float32 [with importance weights (n, 32)] -> (n, 18) uint8.

    The fitted scale ``d`` is stored as float16; the codes are the nearest levels of
    ``x * (1/d)`` with the float32 ``d``.
    """
    blocks = np.asarray(blocks, F32)
    with np.errstate(all="ignore"):
        d = _search_scales_reference(blocks, _weights_reference(blocks, quant_weights))
        codes = _best_index_reference(np.where(d != 0, F32(1) / d, F32(0))[:, None] * blocks)
    return pack_reference([d], codes)


def _quantize_iq4_xs_reference(blocks, quant_weights=None):
    """IQ4_XS of ``blocks`` (n, 256) float32 [with importance weights (n, 256)] -> (n, 136) uint8.

    Each 32-value sub-block gets its fitted scale as in IQ4_NL (the imatrix weights use the
    whole super-block's ``sigma2``). ``max_scale`` = the first sub-block scale of largest
    magnitude; ``d = -max_scale / 32`` (float16); sub-block scale ``l = nearest_int(scale / d)``
    clamped to [-32, 31]; then every code is picked again against the rounded scale ``d * l``.
    """
    blocks = np.asarray(blocks, F32)
    n = len(blocks)
    x = blocks.reshape(n, _XS_SUBS, _SUB)
    with np.errstate(all="ignore"):
        weight = _weights_reference(blocks, quant_weights).reshape(x.shape)
        scales = _search_scales_reference(x, weight)  # (n, 8)
        max_scale = np.zeros(n, F32)
        amax_scale = np.zeros(n, F32)
        for ib in range(_XS_SUBS):  # strictly larger |scale| wins; NaN never does
            larger = np.abs(scales[:, ib]) > amax_scale
            amax_scale = np.where(larger, np.abs(scales[:, ib]), amax_scale)
            max_scale = np.where(larger, scales[:, ib], max_scale)
        d = -max_scale / F32(32)
        inv = np.where(d != 0, F32(1) / d, F32(0))
        sub_scale = np.clip(_nearest_int(inv[:, None] * scales), -32, 31)
        dl = d[:, None] * sub_scale.astype(F32)
        idl = np.where(dl != 0, F32(1) / dl, F32(0))
        codes = _best_index_reference(idl[:, :, None] * x).astype(np.uint8)  # (n, 8, 32)
        d16 = d.astype("<f2")
    biased = (sub_scale + _XS_SCALE_BIAS).astype(np.uint16)  # 0..63
    scales_l = ((biased[:, 0::2] & 15) | ((biased[:, 1::2] & 15) << 4)).astype(np.uint8)
    scales_h = np.zeros(n, np.uint16)
    for ib in range(_XS_SUBS):
        scales_h |= (biased[:, ib] >> 4) << (2 * ib)
    qs = (codes[:, :, :16] | (codes[:, :, 16:] << 4)).reshape(n, 128)
    return np.concatenate([d16.reshape(n, 1).view(np.uint8), scales_h.astype("<u2").reshape(n, 1).view(np.uint8),
                           scales_l, qs], axis=1)


def _dequantize_iq4_nl_reference(blocks):
    """(n, 18) uint8 IQ4_NL blocks -> (n, 32) float32."""
    d = blocks[:, 0:2].copy().view("<f2").astype(F32)
    return d * _IQ4_NL_F32[codes_reference(blocks, 2)]


def _xs_sub_scales(scales_h, scales_l):
    """The eight 6-bit sub-block scales minus 32, (n, 8) int: from ``scales_h`` (n,) uint16 and
    ``scales_l`` (n, 4) uint8 (sub-block ib: nibble ib % 2 of scales_l[ib // 2], bits 2ib of scales_h)."""
    low = np.stack([scales_l & 15, scales_l >> 4], axis=2).reshape(-1, _XS_SUBS).astype(np.int32)
    high = (scales_h[:, None].astype(np.int32) >> (2 * np.arange(_XS_SUBS))) & 3
    return (low | (high << 4)) - _XS_SCALE_BIAS


def _dequantize_iq4_xs_reference(blocks):
    """(n, 136) uint8 IQ4_XS blocks -> (n, 256) float32: ``(d * (s - 32)) * level``."""
    n = len(blocks)
    d = blocks[:, 0:2].copy().view("<f2").astype(F32)
    scales_h = blocks[:, 2:4].copy().view("<u2")[:, 0]
    codes = codes_reference(np.ascontiguousarray(blocks[:, 8:]).reshape(n * _XS_SUBS, 16), 0)
    with np.errstate(all="ignore"):  # inf/NaN scales decode to inf/NaN, as in ggml
        dl = d * _xs_sub_scales(scales_h, blocks[:, 4:8]).astype(F32)  # (n, 8)
        return (dl.reshape(-1, 1) * _IQ4_NL_F32[codes]).reshape(n, 256)


# ---------------------------------------------------------------------------------------
# Fast kernels
# ---------------------------------------------------------------------------------------
# ggml's best_index_int8 picks level j+1 over level j when 2*v >= values[j] + values[j+1]
# (ties go up). The sums are integers, so floor(2*v) alone decides the code: two tables
# indexed by floor(2*v), clamped to [_LO2, _HI2], give code and level.
_LO2, _HI2 = -232, 202
_MID2 = IQ4_NL_VALUES[:-1].astype(np.int64) + IQ4_NL_VALUES[1:]
_IQ4_CODE = np.searchsorted(_MID2, np.arange(_LO2, _HI2 + 1), side="right").astype(np.uint8)
_IQ4_LEVEL = _IQ4_NL_F32[_IQ4_CODE]
_IQ4_CHUNK = 2048  # 32-value (sub-)blocks per work item


def _iq4_table_index(scaled, index):
    """Write into ``index`` (intp) the table rows for ``scaled`` = x / d (float32, overwritten).

    fmin/fmax return the non-NaN operand, so NaN lands on the clamp applied first: the top
    row, code 15, as in ggml's best_index_int8 (NaN only arises in blocks whose scale
    overflowed, which quantize() rejects).
    """
    scaled += scaled  # exact doubling
    np.floor(scaled, out=scaled)
    np.fmin(scaled, F32(_HI2), out=scaled)
    np.fmax(scaled, F32(_LO2), out=scaled)
    scaled -= F32(_LO2)
    np.copyto(index, scaled, casting="unsafe")
    return index


def _iq4_weights(xt, w, scratch, quant_weights, super_subs):
    """Fill ``w`` (32, m) with the search weights of the sub-blocks ``xt`` (32, m) (column
    ``super_subs * i + ib``: sub-block ib of super-block i): ``x*x``, or with ``quant_weights``
    (m / super_subs, 32 * super_subs) ``qw * sqrt(sigma2 + x*x)``, sigma2 summed over each
    super-block in element order."""
    np.multiply(xt, xt, out=w)
    if quant_weights is None:
        return
    m = xt.shape[1]
    acc = buf(scratch, "sigma2", (m // super_subs,), F32)
    acc[...] = 0
    by_sub = w.reshape(_SUB, m // super_subs, super_subs)
    for ib in range(super_subs):
        for row in by_sub[:, :, ib]:
            acc += row
    acc *= F32(2 / (_SUB * super_subs))
    qwt = buf(scratch, "qwt", (_SUB, m), F32)
    np.copyto(qwt, np.asarray(quant_weights, F32).reshape(m, _SUB).T)
    sigma2 = np.repeat(acc, super_subs) if super_subs > 1 else acc
    w += sigma2
    np.sqrt(w, out=w)
    w *= qwt


def _iq4_search(xt, w, vmax, scratch):
    """The fitted scale of each sub-block, (m,) float32: ggml's search (see
    :func:`_search_scales_reference`) on the columns of ``xt`` (32, m) with weights ``w``
    (32, m); ``vmax`` (m,) is each column's first value of largest magnitude. Sums run left
    to right in float32, as the C loops do, one row at a time."""
    m = xt.shape[1]
    s = buf(scratch, "s", (_SUB, m), F32)
    level = buf(scratch, "level", (_SUB, m), F32)
    index = buf(scratch, "index", (_SUB, m), np.intp)
    acc = buf(scratch, "acc", (m,), F32)
    live = np.abs(vmax) >= _IQ4_EPS

    def fit(inv):
        np.multiply(xt, inv, out=s)
        np.take(_IQ4_LEVEL, _iq4_table_index(s, index), out=level, mode="clip")
        np.multiply(w, level, out=level)  # level now holds w*q ...
        np.multiply(level, xt, out=s)
        sum_qx = sum_in_order(s, acc)
        np.take(_IQ4_LEVEL, index, out=s, mode="clip")  # ... and s holds q again
        np.multiply(level, s, out=s)
        return sum_qx, sum_in_order(s, acc)

    sum_qx, sum_q2 = fit(np.where(live, F32(1) / (-vmax / _IQ4_NL_F32[0]), F32(0)))
    d = np.where(sum_q2 > 0, sum_qx / sum_q2, F32(0))
    best = d * sum_qx
    for itry in range(-_IQ4_NTRY, _IQ4_NTRY + 1):
        sum_qx, sum_q2 = fit(np.where(live, F32(itry + int(IQ4_NL_VALUES[0])) / vmax, F32(0)))
        better = (sum_q2 > 0) & (sum_qx * sum_qx > best * sum_q2)
        d_try = sum_qx / sum_q2
        d = np.where(better, d_try, d)
        best = np.where(better, d_try * sum_qx, best)
    return np.where(live, d, F32(0))


def _subblocks_transposed(x, scratch):
    """Sub-blocks of ``x`` (n, 32 k) as columns: (xt (32, n k), vmax (n k,)); raises NonFinite."""
    sub = x.reshape(-1, _SUB)
    vmax = signed_absmax(sub, scratch)
    require_finite(vmax)
    xt = buf(scratch, "xt", (_SUB, len(sub)), F32)
    np.copyto(xt, sub.T)
    return xt, vmax


def _codes_into(xt, inv, scratch):
    """Codes (m, 32) uint8 of the sub-blocks ``xt`` (32, m) scaled by ``inv`` (m,)."""
    m = xt.shape[1]
    s = buf(scratch, "s", (_SUB, m), F32)
    np.multiply(xt, inv, out=s)
    codes_t = _IQ4_CODE[_iq4_table_index(s, buf(scratch, "index", (_SUB, m), np.intp))]
    codes = buf(scratch, "codes", (m, _SUB), np.uint8)
    np.copyto(codes, codes_t.T)
    return codes


def _quantize_iq4_nl_chunk(x, out, scratch, quant_weights=None):
    """ggml quantize_iq4_nl on a chunk of blocks ``x`` (n, 32) float32 [weights (n, 32)] into
    ``out`` (n, 18) uint8: the search of each block, its float16 ``d``, the codes at 1/d."""
    blk = out.view(IQ4_NL.block_dtype)[:, 0]
    xt, vmax = _subblocks_transposed(x, scratch)
    w = buf(scratch, "w", xt.shape, F32)
    with np.errstate(all="ignore"):
        _iq4_weights(xt, w, scratch, quant_weights, 1)
        d = _iq4_search(xt, w, vmax, scratch)
        codes = _codes_into(xt, reciprocal(d), scratch)
        blk["d"] = d.astype("<f2")
    store_codes(codes, blk["qs"], scratch)


def _quantize_iq4_xs_chunk(x, out, scratch, quant_weights=None):
    """ggml quantize_iq4_xs on a chunk of super-blocks ``x`` (n, 256) float32 [weights
    (n, 256)] into ``out`` (n, 136) uint8 (see :func:`_quantize_iq4_xs_reference`)."""
    n = len(x)
    blk = out.view(IQ4_XS.block_dtype)[:, 0]
    xt, vmax = _subblocks_transposed(x, scratch)
    w = buf(scratch, "w", xt.shape, F32)
    with np.errstate(all="ignore"):
        _iq4_weights(xt, w, scratch, quant_weights, _XS_SUBS)
        scales = _iq4_search(xt, w, vmax, scratch).reshape(n, _XS_SUBS)
        max_scale = np.zeros(n, F32)
        amax_scale = np.zeros(n, F32)
        for ib in range(_XS_SUBS):
            mag = np.abs(scales[:, ib])
            larger = mag > amax_scale
            np.copyto(amax_scale, mag, where=larger)
            np.copyto(max_scale, scales[:, ib], where=larger)
        d = -max_scale / F32(32)
        sub_scale = np.clip(_nearest_int(reciprocal(d)[:, None] * scales), -32, 31)  # (n, 8) int32
        inv = reciprocal(d[:, None] * sub_scale.astype(F32))
        codes = _codes_into(xt, inv.reshape(-1), scratch)
        blk["d"] = d.astype("<f2")
    biased = (sub_scale + _XS_SCALE_BIAS).astype(np.uint8)
    blk["scales_l"] = (biased[:, 0::2] & 15) | (biased[:, 1::2] << 4)
    high = (biased >> 4).astype(np.uint16) << (2 * np.arange(_XS_SUBS, dtype=np.uint16))
    blk["scales_h"] = np.bitwise_or.reduce(high, axis=1)
    qs = buf(scratch, "qs", (n * _XS_SUBS,), "V16")
    store_codes(codes, qs, scratch)
    blk["qs"] = qs.reshape(n, _XS_SUBS)


def _dequantize_iq4_nl_chunk(b, out, scratch):
    blk = b.view(IQ4_NL.block_dtype)[:, 0]
    np.take(_IQ4_NL_F32, load_codes(blk["qs"], scratch), out=out, mode="clip")
    with np.errstate(all="ignore"):
        out *= blk["d"].astype(F32)[:, None]


def _dequantize_iq4_xs_chunk(b, out, scratch):
    n = len(b)
    blk = b.view(IQ4_XS.block_dtype)[:, 0]
    with np.errstate(all="ignore"):
        dl = blk["d"].astype(F32)[:, None] * _xs_sub_scales(blk["scales_h"], blk["scales_l"]).astype(F32)
    qs = buf(scratch, "qs", (n, _XS_SUBS), "V16")
    qs[...] = blk["qs"]
    values = out.reshape(n * _XS_SUBS, _SUB)
    np.take(_IQ4_NL_F32, load_codes(qs.reshape(-1), scratch), out=values, mode="clip")
    with np.errstate(all="ignore"):
        values *= dl.reshape(-1, 1)


class IQ4_NL(BlockType):
    """IQ4_NL: ``d * IQ4_NL_VALUES[c]`` with a fitted ``d`` (ggml ``quantize_iq4_nl`` with or
    without an importance matrix / ``dequantize_row_iq4_nl``). 18 bytes: d, 16 code bytes.

    ``quantize_blocks(blocks, quant_weights=None)`` is the literal reference (numpy over
    blocks); ``tests/test_gguf.py`` also checks the fast kernel against a scalar transcription
    of the C and golden bytes from ggml."""

    name = "IQ4_NL"
    type_size = 18
    scale_fields = ("d",)
    float16_fields = (("d", 0),)
    block_dtype = block_record("d")
    accepts_imatrix = True
    quantize_chunk = staticmethod(_quantize_iq4_nl_chunk)
    dequantize_chunk = staticmethod(_dequantize_iq4_nl_chunk)
    quantize_blocks = staticmethod(_quantize_iq4_nl_reference)
    dequantize_blocks = staticmethod(_dequantize_iq4_nl_reference)

    @classmethod
    def chunk_blocks(cls):
        return _IQ4_CHUNK


class IQ4_XS(BlockType):
    """IQ4_XS: 256-value super-blocks, ``(d * (s - 32)) * IQ4_NL_VALUES[c]`` with a 6-bit
    scale ``s`` per 32-value sub-block (ggml ``quantize_iq4_xs`` with or without an importance
    matrix / ``dequantize_row_iq4_xs``). 136 bytes: d (float16), scales_h (uint16, the high
    2 bits of each ``s``), scales_l (4 bytes, the low nibbles), 8 x 16 code bytes: 4.25 bits
    per weight. ``quantize_blocks(blocks, quant_weights=None)`` is the literal reference."""

    name = "IQ4_XS"
    block_size = 256
    type_size = 136
    float16_fields = (("d", 0),)
    block_dtype = np.dtype([("d", "<f2"), ("scales_h", "<u2"), ("scales_l", "u1", (4,)), ("qs", "V16", (_XS_SUBS,))])
    accepts_imatrix = True
    quantize_chunk = staticmethod(_quantize_iq4_xs_chunk)
    dequantize_chunk = staticmethod(_dequantize_iq4_xs_chunk)
    quantize_blocks = staticmethod(_quantize_iq4_xs_reference)
    dequantize_blocks = staticmethod(_dequantize_iq4_xs_reference)

    @classmethod
    def chunk_blocks(cls):
        return _IQ4_CHUNK // _XS_SUBS


#: The block types this module defines.
TYPES = (IQ4_NL, IQ4_XS)
