"""Q6_K: llama.cpp's 6-bit K-quant, 256 values in 16 sub-blocks of 16 with int8 sub-scales.

Reading a real "Q4_K_M" file needs it: llama.cpp's quantizer stores the output matrix and
some attn_v / ffn_down matrices of such files as Q6_K (see :mod:`int4ref.interop.gguf.mix`).

The bytes are those of ggml's ``ggml_quantize_chunk(GGML_TYPE_Q6_K, ...)``, which calls
``quantize_q6_K``: without an importance matrix it runs ``quantize_row_q6_K_ref`` on all
rows, with one ``quantize_row_q6_K_impl`` row by row; the two differ only in the weights of
the sub-block fit (``x*x``, or the imatrix). Values match ggml's ``dequantize_row_q6_K``
(the type's ``to_float``) and gguf-py bit for bit. Layout (ggml-common.h ``block_q6_K``)::

    Q6_K  210 bytes  [0:128] ql   low 4 bits of the 256 codes
                     [128:192] qh high 2 bits of the codes
                     [192:208] scales  16 x int8, one per 16 values
                     [208:210] d  float16
    value  d * scales[j // 16] * (c_j - 32),   c_j in [0, 63]

Codes are stored per half of 128 values: within a half, value ``32*k + l`` (k = 0..3,
l = 0..31) keeps its low nibble in ``ql[l + 32*(k % 2)]`` (low nibble for k < 2, high for
k >= 2) and its two high bits at bits ``2k, 2k+1`` of ``qh[l]``.

The quantizer (float32 throughout, in the C's order of operations):

1. Each sub-block of 16 gets a scale from ``make_qx_quants(16, 32, x, L, rmse_type=1, qw)``:
   with ``max`` the sub-block's first value of largest magnitude, try ``1/s = -32/max`` and
   then ``-(32 + 0.1*is)/max`` for is = -9..9 (not 0); for each, codes
   ``l = clamp(round(x/s), -32, 31)`` and the weighted least-squares scale
   ``sum(w x l) / sum(w l l)`` (weights ``w = x*x``, or the imatrix), keeping the try that
   most increases ``sum(w x l)^2 / sum(w l l)``. A sub-block with max |x| < 1e-15 gets scale 0.
2. The block's ``d = max_scale / -128`` (float16), ``max_scale`` the first sub-block scale of
   largest magnitude; each sub-scale ``min(127, round(-128 * scale / max_scale))`` (int8).
   A block whose scales are all below 1e-15 in magnitude is stored as zeros.
3. Codes ``clamp(round(x / (d * scale_j)), -32, 31) + 32``, with the float16 ``d``; a
   sub-block whose ``d * scale_j`` is 0 keeps the codes of step 1.

A value whose square overflows float32 (|x| > about 1.8e19) makes its sub-block's fit NaN;
the C then gives that sub-block the int8 scale 0, so all 16 of its values decode as 0 (a
block of such sub-blocks is stored as zeros); its float32 sums overflow for much smaller
values already (about 1e18 for a lone large value). The bytes here do the same, and
:func:`int4ref.interop.gguf.quantize` refuses every value beyond what Q6_K can store
(``Q6_K.max_abs_input``, 65504 * 128 * 32).

Rounding is ggml's ``nearest_int`` (add 1.5 * 2**23 in float32, keep the low mantissa
bits): round half to even for |v| < 2**22.
"""
from __future__ import annotations

import numpy as np

from ._blocks import F32, BlockType, NonFinite, buf, require_finite, signed_absmax, sum_in_order

__all__ = ["Q6_K", "TYPES"]

QK_K = 256
SUB = 16  # values per sub-block
NMAX = 32  # make_qx_quants(n=16, nmax=32): codes l in [-32, 31]
GROUP_MAX_EPS = F32(1e-15)
_MAGIC = F32(12582912.0)  # 1.5 * 2**23
_TRIES = [F32(NMAX) + F32(0.1) * F32(i) for i in range(-9, 10) if i != 0]  # nmax + 0.1f*is
_Q6_CHUNK = 1024


def _nearest_int(v):
    """ggml's ``nearest_int`` of float32 ``v``, elementwise: int32.

    ``v + 12582912.f`` in float32, then the low 23 mantissa bits minus 2**22 (round half to
    even while |v| < 2**22; what the C computes beyond that too)."""
    with np.errstate(invalid="ignore", over="ignore"):
        val = np.asarray(v, dtype=F32) + _MAGIC
    return (val.view(np.int32) & 0x007FFFFF) - 0x00400000


def _float16_to_float32(h):
    """float16 bytes (n, 2) uint8 -> float32 (n,)."""
    return np.ascontiguousarray(h).view("<f2")[:, 0].astype(F32)


# ---------------------------------------------------------------------------------------
# Literal reference
# ---------------------------------------------------------------------------------------

def _make_qx_quants_reference(x, qw):
    """``make_qx_quants(16, 32, x, L, 1, qw)`` for many sub-blocks at once.

    ``x`` (m, 16) float32; ``qw`` None or (m, 16) float32. Returns (scale (m,) float32,
    L (m, 16) int32 in [0, 63]). Loops run as in the C: element sums left to right.
    """
    m = len(x)
    amax = np.zeros(m, F32)
    vmax = np.zeros(m, F32)
    for i in range(SUB):  # first element of largest magnitude (strict >)
        ax = np.abs(x[:, i])
        bigger = ax > amax
        amax = np.where(bigger, ax, amax)
        vmax = np.where(bigger, x[:, i], vmax)
    live = amax >= GROUP_MAX_EPS
    safe_max = np.where(live, vmax, F32(1))
    with np.errstate(over="ignore", under="ignore"):
        w = qw if qw is not None else x * x

    def fit(iscale):
        levels = np.clip(_nearest_int(iscale[:, None] * x), -NMAX, NMAX - 1)
        lf = levels.astype(F32)
        sumlx = np.zeros(m, F32)
        suml2 = np.zeros(m, F32)
        for i in range(SUB):
            sumlx += w[:, i] * x[:, i] * lf[:, i]
            suml2 += w[:, i] * lf[:, i] * lf[:, i]
        return levels + NMAX, sumlx, suml2

    with np.errstate(all="ignore"):
        L, sumlx, suml2 = fit(F32(-NMAX) / safe_max)
        scale = np.where(suml2 != 0, sumlx / suml2, F32(0))
        best = scale * sumlx
        for nmax_try in _TRIES:
            L_try, sumlx, suml2 = fit(-nmax_try / safe_max)
            better = (suml2 > 0) & (sumlx * sumlx > best * suml2)
            L = np.where(better[:, None], L_try, L)
            scale = np.where(better, sumlx / suml2, scale)
            best = np.where(better, scale * sumlx, best)
    scale = np.where(live, scale, F32(0))
    L = np.where(live[:, None], L, 0)
    return scale, L


def _pack_q6_k(codes):
    """Codes (n, 256) in [0, 63] -> (ql (n, 128), qh (n, 64)) uint8 in ggml's order."""
    n = len(codes)
    c = codes.astype(np.uint8).reshape(n, 2, 4, 32)  # [half, k, l]: value 128*half + 32*k + l
    low = c & 0x0F
    ql = low[:, :, 0:2] | (low[:, :, 2:4] << 4)  # byte l + 32*(k%2): k in low, k+2 in high nibble
    qh = np.zeros((n, 2, 32), np.uint8)
    for k in range(4):
        qh |= (c[:, :, k] >> 4) << (2 * k)
    return ql.reshape(n, 128), qh.reshape(n, 64)


def _unpack_q6_k(blocks):
    """(n, 210) uint8 -> codes (n, 256) uint8 in [0, 63]."""
    n = len(blocks)
    ql = blocks[:, 0:128].reshape(n, 2, 2, 32)
    qh = blocks[:, 128:192].reshape(n, 2, 1, 32)
    low = np.concatenate([ql & 0x0F, ql >> 4], axis=2)  # k = 0, 1, 2, 3
    high = (qh >> np.array([0, 2, 4, 6], np.uint8)[:, None]) & 0x03
    return (low | (high << 4)).reshape(n, QK_K)


def _quantize_q6_k_reference(blocks, quant_weights=None):
    """Q6_K of ``blocks`` (n, 256) float32 -> (n, 210) uint8; ``quant_weights`` None or the
    importance of each value, (n, 256) float32 (``quantize_row_q6_K_impl``'s ``qw``)."""
    x = np.ascontiguousarray(blocks, dtype=F32)
    n = len(x)
    xs = x.reshape(n * 16, SUB)
    qw = None if quant_weights is None else np.asarray(quant_weights, F32).reshape(n * 16, SUB)
    scales, L = _make_qx_quants_reference(xs, qw)
    scales, L = scales.reshape(n, 16), L.reshape(n, QK_K)

    max_abs = np.zeros(n, F32)
    max_scale = np.zeros(n, F32)
    for ib in range(16):  # first sub-block scale of largest magnitude (strict >; NaN never wins)
        a = np.abs(scales[:, ib])
        bigger = a > max_abs
        max_abs = np.where(bigger, a, max_abs)
        max_scale = np.where(bigger, scales[:, ib], max_scale)
    live = max_abs >= GROUP_MAX_EPS
    with np.errstate(all="ignore"):
        iscale = F32(-128) / np.where(live, max_scale, F32(1))
        d16 = (F32(1) / iscale).astype("<f2")
        sc = np.minimum(127, _nearest_int(iscale[:, None] * scales)).astype(np.int8)
        d_sub = d16.astype(F32)[:, None] * sc.astype(F32)  # (n, 16)
        xq = x.reshape(n, 16, SUB) / d_sub[:, :, None]
    fresh = np.clip(_nearest_int(xq), -NMAX, NMAX - 1) + NMAX
    L = np.where((d_sub != 0)[:, :, None], fresh, L.reshape(n, 16, SUB)).reshape(n, QK_K)

    ql, qh = _pack_q6_k(L)
    out = np.concatenate([ql, qh, sc.view(np.uint8), d16.reshape(n, 1).view(np.uint8)], axis=1)
    out[~live] = 0  # memset; d = +0.0
    return out


def _dequantize_q6_k_reference(blocks):
    """(n, 210) uint8 Q6_K blocks -> (n, 256) float32: ``(d * scale) * (c - 32)``."""
    n = len(blocks)
    d = _float16_to_float32(blocks[:, 208:210])
    sc = blocks[:, 192:208].view(np.int8).astype(F32)
    q = (_unpack_q6_k(blocks).astype(np.int16) - 32).astype(F32).reshape(n, 16, SUB)
    with np.errstate(all="ignore"):
        return ((d[:, None] * sc)[:, :, None] * q).reshape(n, QK_K)


# ---------------------------------------------------------------------------------------
# Fast kernels
# ---------------------------------------------------------------------------------------

def _quantize_q6_k_chunk(x, out, scratch, quant_weights=None):
    """The reference on a chunk of blocks, faster: sub-blocks transposed to (16, m) so that
    each in-order sum is 16 vector adds; the search keeps the winning ``1/s`` per sub-block
    instead of its codes (the codes are recomputed only where step 3 keeps them).

    In the search |x/s| <= 32.9, where np.rint equals ggml's nearest_int."""
    n = len(x)
    m = 16 * n
    xs = x.reshape(m, SUB)
    vmax = signed_absmax(xs, scratch)
    require_finite(vmax)
    live = np.abs(vmax) >= GROUP_MAX_EPS
    safe_max = np.where(live, vmax, F32(1))
    xt = buf(scratch, "xt", (SUB, m), F32)
    wx = buf(scratch, "wx", (SUB, m), F32)
    w = buf(scratch, "w", (SUB, m), F32)
    lev = buf(scratch, "lev", (SUB, m), F32)
    t = buf(scratch, "t", (SUB, m), F32)
    acc = buf(scratch, "acc", (m,), F32)
    np.copyto(xt, xs.T)
    with np.errstate(all="ignore"):
        if quant_weights is None:
            np.multiply(xt, xt, out=w)
        else:
            np.copyto(w, quant_weights.reshape(m, SUB).T)
        np.multiply(w, xt, out=wx)

        def fit(iscale):
            np.multiply(xt, iscale, out=lev)
            np.rint(lev, out=lev)
            np.clip(lev, F32(-NMAX), F32(NMAX - 1), out=lev)
            np.multiply(wx, lev, out=t)
            sumlx = sum_in_order(t, acc)
            np.multiply(w, lev, out=t)
            np.multiply(t, lev, out=t)
            return sumlx, sum_in_order(t, acc)

        best_iscale = F32(-NMAX) / safe_max
        sumlx, suml2 = fit(best_iscale)
        scale = np.where(suml2 != 0, sumlx / suml2, F32(0))
        best = scale * sumlx
        for nmax_try in _TRIES:
            iscale = -nmax_try / safe_max
            sumlx, suml2 = fit(iscale)
            better = (suml2 > 0) & (sumlx * sumlx > best * suml2)
            if better.any():
                best_iscale = np.where(better, iscale, best_iscale)
                scale = np.where(better, sumlx / suml2, scale)
                best = np.where(better, scale * sumlx, best)
        scale = np.where(live, scale, F32(0)).reshape(n, 16)

        max_abs = np.zeros(n, F32)
        max_scale = np.zeros(n, F32)
        for ib in range(16):
            a = np.abs(scale[:, ib])
            bigger = a > max_abs
            max_abs = np.where(bigger, a, max_abs)
            max_scale = np.where(bigger, scale[:, ib], max_scale)
        block_live = max_abs >= GROUP_MAX_EPS
        iscale = F32(-128) / np.where(block_live, max_scale, F32(1))
        d16 = (F32(1) / iscale).astype("<f2")
        sc = np.minimum(127, _nearest_int(iscale[:, None] * scale)).astype(np.int8)
        d_sub = (d16.astype(F32)[:, None] * sc.astype(F32)).reshape(m)
        np.divide(xt, d_sub, out=t)
        codes_t = _nearest_int(t)
    np.clip(codes_t, -NMAX, NMAX - 1, out=codes_t)
    codes_t += NMAX
    kept = np.flatnonzero(d_sub == 0)  # these sub-blocks keep make_qx_quants' codes
    if kept.size:
        with np.errstate(all="ignore"):
            old = np.clip(np.rint(xt[:, kept] * best_iscale[kept]), -NMAX, NMAX - 1) + NMAX
        codes_t[:, kept] = np.where(live[kept], old, 0)
    ql, qh = _pack_q6_k(codes_t.T.reshape(n, QK_K))
    out[:, 0:128] = ql
    out[:, 128:192] = qh
    out[:, 192:208] = sc.view(np.uint8)
    out[:, 208:210] = d16.reshape(n, 1).view(np.uint8)
    out[~block_live] = 0


def _dequantize_q6_k_chunk(b, out, scratch):
    n = len(b)
    d = _float16_to_float32(b[:, 208:210])
    sc = b[:, 192:208].view(np.int8).astype(F32)
    q = _unpack_q6_k(b).view(np.int8)
    q -= 32
    with np.errstate(all="ignore"):
        np.multiply((d[:, None] * sc)[:, :, None], q.reshape(n, 16, SUB), out=out.reshape(n, 16, SUB))


class Q6_K(BlockType):
    """Q6_K: 256 values, ``d * scales[j // 16] * (c - 32)`` with 6-bit codes, 16 int8
    sub-scales and a float16 ``d`` (ggml ``quantize_q6_K`` / ``dequantize_row_q6_K``).
    210 bytes: ql[128], qh[64], scales[16], d; 6.5625 bits per weight. Takes an
    importance matrix (the weights of the sub-block fit)."""

    name = "Q6_K"
    block_size = QK_K
    type_size = 210
    float16_fields = (("d", 208),)
    block_dtype = np.dtype([("ql", "V128"), ("qh", "V64"), ("scales", "i1", (16,)), ("d", "<f2")])
    accepts_imatrix = True
    max_abs_input = 65504.0 * 128 * 32  # largest float16 d x largest |int8 scale| x largest |code - 32|
    max_abs_reason = ("Q6_K cannot store such values (float16 d times int8 scale times 6-bit code), and ggml's "
                      "fit then stores inf or, once its float32 sums overflow, silently zeros")
    quantize_chunk = staticmethod(_quantize_q6_k_chunk)
    dequantize_chunk = staticmethod(_dequantize_q6_k_chunk)

    @classmethod
    def quantize_blocks(cls, blocks, quant_weights=None):
        if not np.isfinite(blocks).all():
            raise NonFinite
        return _quantize_q6_k_reference(blocks, quant_weights)

    dequantize_blocks = staticmethod(_dequantize_q6_k_reference)

    @classmethod
    def chunk_blocks(cls):
        return _Q6_CHUNK


#: The block types this module defines.
TYPES = (Q6_K,)
