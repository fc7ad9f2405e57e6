"""Q4_K: llama.cpp's 4-bit K-quant. 256 values per super-block, 8 sub-blocks of 32, each with
its own 6-bit scale and 6-bit min under two float16 super-scales.

The bytes are those of ggml's ``ggml_quantize_chunk(GGML_TYPE_Q4_K, ...)`` (what
``llama-quantize`` runs; ggml/src/ggml-quants.c ``quantize_q4_K``), in strict float32 as the C
computes; the values match ggml's ``dequantize_row_q4_K`` and gguf-py bit for bit. Layout of
one 144-byte block (``block_q4_K`` in ggml-common.h, little-endian)::

    [0:2]   d      float16   super-scale of the 8 sub-block scales
    [2:4]   dmin   float16   super-scale of the 8 sub-block mins
    [4:16]  scales 12 bytes  8 scales sc_j and 8 mins m_j, 6 bits each (pack_scales_mins)
    [16:144] qs    128 bytes four 32-byte chunks; chunk c holds sub-block 2c in its low
                             nibbles and sub-block 2c + 1 in its high nibbles

    value of element i of sub-block j:   d * sc_j * q_i  -  dmin * m_j       (q_i in 0..15)

So each sub-block is an affine 4-bit code whose offset is never above zero (``-dmin * m_j``
with ``m_j >= 0``): a sub-block of positive values is coded from 0 upwards.

ggml runs one of two quantizers (``quantize_q4_K``):

* no importance matrix: ``quantize_row_q4_K_ref``. Each sub-block's scale and min come from
  ``make_qkx2_quants`` with weights ``av_x + |x|`` (``av_x`` the sub-block's root mean
  square). It starts from the plain fit (``min`` = the smallest value but at most 0,
  ``1/scale = 15 / (max - min)``, codes rounded), then tries 21 more ``1/scale = (14 + 0.1 *
  is) / (max - min)``, is = 0..20: codes rounded, scale and min refitted by weighted least
  squares, kept if the weighted squared error drops, in which case the refitted min is the
  ``min`` of the next tries. The 8 scales and the 8 mins are then rounded to 6 bits against
  their largest (``d = max_scale / 63``, ``dmin = max_min / 63``).
* with an importance matrix ``qw``: ``quantize_row_q4_K_impl``. Weights
  ``qw * sqrt(sigma2 + x**2)`` (``sigma2`` = twice the mean square of the super-block),
  ``make_qkx3_quants`` with 37 tries ``(14.1 + 0.05 * is) / (max - min)``, and the 6-bit
  scales and mins fitted by ``make_qp_quants`` (a weighted search of its own, weighted by
  each sub-block's summed weights).

Either way the 4-bit codes are finally recomputed from the stored (rounded) scales:
``q = clamp(nearest_int((x + dmin * m_j) / (d * sc_j)), 0, 15)``; a sub-block whose
``d * sc_j`` is 0 keeps the codes of its search. (Sources: ggml 0.25.3 as vendored by
llama-cpp-python 0.3.36, ggml/src/ggml-quants.c: ``nearest_int``, ``make_qkx2_quants``,
``make_qkx3_quants``, ``make_qp_quants``, ``get_scale_min_k4``, ``quantize_row_q4_K_ref``,
``quantize_row_q4_K_impl``, ``quantize_q4_K``, ``dequantize_row_q4_K``.)

:func:`quantize_q4_k_rtn` is the plain round-to-nearest fit in the same layout, for
comparison; :func:`pack_scales_mins` / :func:`unpack_scales_mins` are the 12-byte packing.
"""
from __future__ import annotations

import functools

import numpy as np

from ._blocks import F32, BlockType, buf, require_finite

__all__ = ["Q4_K", "TYPES", "pack_scales_mins", "unpack_scales_mins", "quantize_q4_k_rtn"]

QK_K = 256  #: values per super-block
SUB = 32  #: values per sub-block
NSUB = QK_K // SUB  #: sub-blocks per super-block

_MAGIC = F32(12582912.0)  # 1.5 * 2**23: ggml's nearest_int adds it and reads the low mantissa bits
_GROUP_MAX_EPS = F32(1e-15)
_BLOCK_DTYPE = np.dtype([("d", "<f2"), ("dmin", "<f2"), ("scales", "u1", (12,)), ("qs", "u1", (128,))])

# make_qkx*_quants(n, nmax, ..., rmin, rdelta, nstep, use_mad=false) as quantize_q4_K calls them
_SEARCH_NO_IMATRIX = (15, -1.0, 0.1, 20, False)  # make_qkx2_quants, quantize_row_q4_K_ref
_SEARCH_IMATRIX = (15, -0.9, 0.05, 36, True)  # make_qkx3_quants, quantize_row_q4_K_impl


def _nearest_int(v):
    """ggml's ``nearest_int``, elementwise on float32: round half to even for ``|v| <= 2**22``
    (its asserted range); outside it (and for inf / NaN) the same bits the C reads. -> int32."""
    with np.errstate(all="ignore"):
        s = np.asarray(v, dtype=F32) + _MAGIC
    return (s.view(np.int32) & np.int32(0x007FFFFF)) - np.int32(0x00400000)


def _candidate_numerators(nmax, rmin, rdelta, nstep):
    """``rmin + rdelta*is + nmax`` in float32 for is = 0..nstep (the C's order of operations)."""
    return [F32(rmin) + F32(rdelta) * F32(i) + F32(nmax) for i in range(nstep + 1)]


# ---------------------------------------------------------------------------------------
# The 12 bytes of 6-bit scales and mins
# ---------------------------------------------------------------------------------------

def _pack_scales_mins_c(ls, lm):
    """ggml's packing loop for any uint8 ``ls``, ``lm`` (n, 8), bits above the 6th included
    (they spill as in the C): -> (n, 12) uint8."""
    ls = np.asarray(ls).astype(np.int32)
    lm = np.asarray(lm).astype(np.int32)
    out = np.empty((len(ls), 12), dtype=np.int32)
    out[:, 0:4] = ls[:, 0:4] | ((ls[:, 4:8] >> 4) << 6)
    out[:, 4:8] = lm[:, 0:4] | ((lm[:, 4:8] >> 4) << 6)
    out[:, 8:12] = (ls[:, 4:8] & 0xF) | ((lm[:, 4:8] & 0xF) << 4)
    return (out & 0xFF).astype(np.uint8)


def pack_scales_mins(sc, m):
    """Pack 8 six-bit scales and 8 six-bit mins per block into Q4_K's 12 bytes.

    ``sc``, ``m``: integer arrays (n, 8) with values in 0..63. Returns uint8 (n, 12)::

        byte 0..3    sc_j (bits 0-5)  | high 2 bits of sc_{j+4} (bits 6-7)     j = 0..3
        byte 4..7    m_j  (bits 0-5)  | high 2 bits of m_{j+4}  (bits 6-7)     j = 0..3
        byte 8..11   low 4 bits of sc_{j+4} (bits 0-3) | low 4 bits of m_{j+4} (bits 4-7)

    (ggml-quants.c: the packing in ``quantize_row_q4_K_ref``; ``get_scale_min_k4`` reads it.)
    """
    sc, m = np.asarray(sc), np.asarray(m)
    for name, a in (("sc", sc), ("m", m)):
        if a.ndim != 2 or a.shape[1] != NSUB:
            raise ValueError(f"{name} must have shape (n, 8), got {a.shape}")
        if not np.issubdtype(a.dtype, np.integer):
            raise TypeError(f"{name} must be an integer array, got {a.dtype}")
        if a.size and (a.min() < 0 or a.max() > 63):
            raise ValueError(f"{name} holds values outside 0..63 (6 bits): min {a.min()}, max {a.max()}")
    if sc.shape != m.shape:
        raise ValueError(f"sc and m must have the same shape, got {sc.shape} and {m.shape}")
    return _pack_scales_mins_c(sc, m)


def unpack_scales_mins(b):
    """The 8 scales and 8 mins of Q4_K's 12 scale bytes ``b`` (n, 12) uint8 -> ``(sc, m)``,
    each uint8 (n, 8) in 0..63 (ggml's ``get_scale_min_k4``; layout in :func:`pack_scales_mins`)."""
    b = np.asarray(b)
    if b.dtype != np.uint8 or b.ndim != 2 or b.shape[1] != 12:
        raise ValueError(f"scale bytes must be uint8 of shape (n, 12), got {b.dtype} {b.shape}")
    sc = np.empty((len(b), NSUB), dtype=np.uint8)
    m = np.empty((len(b), NSUB), dtype=np.uint8)
    sc[:, 0:4] = b[:, 0:4] & 63
    m[:, 0:4] = b[:, 4:8] & 63
    sc[:, 4:8] = (b[:, 8:12] & 0xF) | ((b[:, 0:4] >> 6) << 4)
    m[:, 4:8] = (b[:, 8:12] >> 4) | ((b[:, 4:8] >> 6) << 4)
    return sc, m


# ---------------------------------------------------------------------------------------
# Literal reference: the C loops, one element at a time, vectorised only across (sub-)blocks
# ---------------------------------------------------------------------------------------

def _make_qkx_reference(x, weights, nmax, rmin, rdelta, nstep, qkx3):
    """ggml's ``make_qkx2_quants`` (``qkx3=False``) / ``make_qkx3_quants`` with use_mad=false,
    on sub-blocks ``x`` (m, 32) float32 with ``weights`` (m, 32) float32.

    Returns ``(scale, the_min, L)``: float32 (m,), float32 (m,) (>= 0, the min negated) and
    int32 (m, 32) codes in 0..nmax.
    """
    n = x.shape[1]
    with np.errstate(all="ignore"):
        lo = x[:, 0].copy()
        hi = x[:, 0].copy()
        sum_w = weights[:, 0].copy()
        sum_x = sum_w * x[:, 0]
        for i in range(1, n):
            lo = np.where(x[:, i] < lo, x[:, i], lo)
            hi = np.where(x[:, i] > hi, x[:, i], hi)
            sum_w = sum_w + weights[:, i]
            sum_x = sum_x + weights[:, i] * x[:, i]
        lo = np.where(lo > 0, F32(0), lo)  # the C's `min`: a better try replaces it below
        flat = hi <= lo if qkx3 else hi == lo  # the C returns scale 0, codes 0 there

        def codes(iscale):  # uses the current `lo`, as the C uses the current `min`
            return np.clip(_nearest_int(iscale[:, None] * (x - lo[:, None])), 0, nmax)

        def error(scale, mn, q):
            total = np.zeros(len(x), dtype=F32)
            for i in range(n):
                diff = scale * q[:, i].astype(F32) + mn - x[:, i]
                total = total + weights[:, i] * (diff * diff)
            return total

        iscale = F32(nmax) / (hi - lo)
        scale = F32(1) / iscale
        L = codes(iscale)
        best_error = error(scale, lo, L)
        for num in _candidate_numerators(nmax, rmin, rdelta, nstep):
            iscale = num / (hi - lo)
            laux = codes(iscale)
            sum_l = np.zeros(len(x), dtype=F32)
            sum_l2 = np.zeros(len(x), dtype=F32)
            sum_xl = np.zeros(len(x), dtype=F32)
            for i in range(n):
                wl = weights[:, i] * laux[:, i].astype(F32)
                sum_l = sum_l + wl
                sum_l2 = sum_l2 + wl * laux[:, i].astype(F32)
                sum_xl = sum_xl + wl * x[:, i]
            D = sum_w * sum_l2 - sum_l * sum_l
            this_scale = (sum_w * sum_xl - sum_x * sum_l) / D
            this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D
            clipped = this_min > 0
            this_min = np.where(clipped, F32(0), this_min)
            this_scale = np.where(clipped, sum_xl / sum_l2, this_scale)
            cur_error = error(this_scale, this_min, laux)
            better = (D > 0) & (cur_error < best_error)
            L = np.where(better[:, None], laux, L)
            best_error = np.where(better, cur_error, best_error)
            scale = np.where(better, this_scale, scale)
            lo = np.where(better, this_min, lo)
    L = np.where(flat[:, None], 0, L)
    scale = np.where(flat, F32(0), scale)
    return scale, -lo, L


def _make_qp_quants(x, nmax, quant_weights):
    """ggml's ``make_qp_quants(n, nmax, x, L, quant_weights)`` on rows ``x`` (nb, n) float32
    (non-negative: scales or mins) with weights (nb, n) float32.

    Returns ``(scale, L)``: float32 (nb,) and int32 (nb, n) holding the C's uint8 codes.
    Loops over the n elements in C order; vectorised across the nb rows.
    """
    nb, n = x.shape
    w = quant_weights
    with np.errstate(all="ignore"):
        mx = np.zeros(nb, dtype=F32)
        for i in range(n):
            mx = np.where(x[:, i] > mx, x[:, i], mx)  # MAX(max, x[i])
        zero = mx < _GROUP_MAX_EPS
        iscale = F32(nmax) / mx
        L = _nearest_int(iscale[:, None] * x) & 0xFF
        scale = F32(1) / iscale
        best_mse = np.zeros(nb, dtype=F32)
        for i in range(n):
            diff = x[:, i] - scale * L[:, i].astype(F32)
            best_mse = best_mse + w[:, i] * diff * diff
        for k in (-4, -3, -2, -1, 1, 2, 3, 4):
            iscale_k = (F32(0.1) * F32(k) + F32(nmax)) / mx
            scale_k = F32(1) / iscale_k
            mse = np.zeros(nb, dtype=F32)
            for i in range(n):
                lk = np.minimum(nmax, _nearest_int(iscale_k * x[:, i]))
                diff = x[:, i] - scale_k * lk.astype(F32)
                mse = mse + w[:, i] * diff * diff
            better = mse < best_mse
            best_mse = np.where(better, mse, best_mse)
            iscale = np.where(better, iscale_k, iscale)
        sumlx = np.zeros(nb, dtype=F32)
        suml2 = np.zeros(nb, dtype=F32)
        for i in range(n):
            li = np.minimum(nmax, _nearest_int(iscale * x[:, i]))
            L[:, i] = li & 0xFF
            lf = li.astype(F32)
            sumlx = sumlx + w[:, i] * x[:, i] * lf
            suml2 = suml2 + w[:, i] * lf * lf
        # Up to 5 passes of single-code moves. The C stops after a pass that changes nothing;
        # such a pass leaves the state as it was, so running all 5 gives the same result.
        for _ in range(5):
            for i in range(n):
                wi, xi = w[:, i], x[:, i]
                li = L[:, i].astype(F32)
                slx = sumlx - wi * xi * li
                sl2 = suml2 - wi * li * li
                ok = (slx > 0) & (sl2 > 0)
                new_l = np.minimum(nmax, _nearest_int(xi * sl2 / slx))
                nf = new_l.astype(F32)
                slx = slx + wi * xi * nf
                sl2 = sl2 + wi * nf * nf
                take = ok & (new_l != L[:, i]) & (slx * slx * suml2 > sumlx * sumlx * sl2)
                L[:, i] = np.where(take, new_l & 0xFF, L[:, i])
                sumlx = np.where(take, slx, sumlx)
                suml2 = np.where(take, sl2, suml2)
        scale = np.where(suml2 > 0, sumlx / suml2, F32(0))
    L = np.where(zero[:, None], 0, L)
    return np.where(zero, F32(0), scale), L


def _six_bit_scales_no_imatrix(scales, mins):
    """quantize_row_q4_K_ref: 6-bit codes of the 8 scales and mins against their largest.
    ``scales``, ``mins`` (n, 8) float32 -> (ls, lm int32 (n, 8), d, dmin float16 (n,))."""
    max_scale = np.zeros(len(scales), dtype=F32)
    max_min = np.zeros(len(scales), dtype=F32)
    for j in range(NSUB):
        max_scale = np.where(scales[:, j] > max_scale, scales[:, j], max_scale)
        max_min = np.where(mins[:, j] > max_min, mins[:, j], max_min)
    with np.errstate(all="ignore"):
        inv_scale = np.where(max_scale > 0, F32(63) / max_scale, F32(0))
        inv_min = np.where(max_min > 0, F32(63) / max_min, F32(0))
        # uint8_t ls = nearest_int(...); ls = MIN(63, ls): the int is cut to 8 bits first
        ls = np.minimum(63, _nearest_int(inv_scale[:, None] * scales) & 0xFF)
        lm = np.minimum(63, _nearest_int(inv_min[:, None] * mins) & 0xFF)
        d = (max_scale / F32(63)).astype("<f2")
        dmin = (max_min / F32(63)).astype("<f2")
    return ls, lm, d, dmin


def _assemble(x, d, dmin, ls, lm, search_codes):
    """The last step shared by every path: pack the scales, recompute the 4-bit codes from
    the stored scales and write the blocks.

    ``x`` (n, 8, 32) float32; ``d``, ``dmin`` float16 (n,); ``ls``, ``lm`` (n, 8) int codes;
    ``search_codes(mask)`` -> int codes (k, 32) of the k sub-blocks selected by the boolean
    (n, 8) ``mask``, used where ``d * sc_j`` is 0. -> (n, 144) uint8.
    """
    n = len(x)
    out = np.empty(n, dtype=_BLOCK_DTYPE)
    out["d"] = d
    out["dmin"] = dmin
    out["scales"] = _pack_scales_mins_c(ls, lm)
    sc, m = unpack_scales_mins(out["scales"])
    with np.errstate(all="ignore"):
        dj = d.astype(F32)[:, None] * sc.astype(F32)
        dm = dmin.astype(F32)[:, None] * m.astype(F32)
        q = np.clip(_nearest_int((x + dm[:, :, None]) / dj[:, :, None]), 0, 15)
    skip = dj == 0
    if skip.any():
        q[skip] = search_codes(skip)
    q = q.astype(np.uint8).reshape(n, 4, 2, SUB)
    out["qs"] = (q[:, :, 0, :] | (q[:, :, 1, :] << 4)).reshape(n, 128)
    return out.view(np.uint8).reshape(n, Q4_K.type_size)


def _quantize_q4_k_reference(blocks, quant_weights=None):
    """Q4_K of ``blocks`` (n, 256) float32 -> (n, 144) uint8, as ggml's ``quantize_q4_K``.

    ``quant_weights``: None (``quantize_row_q4_K_ref``) or the importance matrix entries of
    each block's 256 columns, (n, 256) float32 (``quantize_row_q4_K_impl``).
    """
    x = np.ascontiguousarray(blocks, dtype=F32)
    n = len(x)
    xs = x.reshape(n * NSUB, SUB)
    with np.errstate(all="ignore"):
        if quant_weights is None:
            sum_x2 = np.zeros(n * NSUB, dtype=F32)
            for i in range(SUB):
                sum_x2 = sum_x2 + xs[:, i] * xs[:, i]
            av_x = np.sqrt(sum_x2 / F32(SUB))
            weights = av_x[:, None] + np.abs(xs)
            nmax, rmin, rdelta, nstep, qkx3 = _SEARCH_NO_IMATRIX
        else:
            qw = np.ascontiguousarray(quant_weights, dtype=F32).reshape(n * NSUB, SUB)
            sum_x2 = np.zeros(n, dtype=F32)
            for i in range(QK_K):
                sum_x2 = sum_x2 + x[:, i] * x[:, i]
            sigma2 = F32(2) * sum_x2 / F32(QK_K)
            weights = qw * np.sqrt(np.repeat(sigma2, NSUB)[:, None] + xs * xs)
            sw = np.zeros(n * NSUB, dtype=F32)
            for i in range(SUB):
                sw = sw + weights[:, i]
            nmax, rmin, rdelta, nstep, qkx3 = _SEARCH_IMATRIX
    scales, mins, L = _make_qkx_reference(xs, weights, nmax, rmin, rdelta, nstep, qkx3)
    scales, mins = scales.reshape(n, NSUB), mins.reshape(n, NSUB)
    if quant_weights is None:
        ls, lm, d, dmin = _six_bit_scales_no_imatrix(scales, mins)
    else:
        d_block, ls = _make_qp_quants(scales, 63, sw.reshape(n, NSUB))
        m_block, lm = _make_qp_quants(mins, 63, sw.reshape(n, NSUB))
        with np.errstate(over="ignore"):
            d, dmin = d_block.astype("<f2"), m_block.astype("<f2")
    return _assemble(x.reshape(n, NSUB, SUB), d, dmin, ls, lm, lambda mask: L.reshape(n, NSUB, SUB)[mask])


def _dequantize_q4_k_reference(blocks):
    """(n, 144) uint8 Q4_K blocks -> (n, 256) float32 (ggml ``dequantize_row_q4_K``)."""
    b = np.ascontiguousarray(blocks).view(_BLOCK_DTYPE)[:, 0]
    sc, m = unpack_scales_mins(b["scales"])
    with np.errstate(all="ignore"):
        d = b["d"].astype(F32)[:, None] * sc.astype(F32)  # (n, 8)
        dm = b["dmin"].astype(F32)[:, None] * m.astype(F32)
        qs = b["qs"].reshape(-1, 4, 1, SUB) >> np.array([0, 4], dtype=np.uint8).reshape(1, 1, 2, 1)
        q = (qs & 0xF).reshape(-1, NSUB, SUB).astype(F32)
        return (d[:, :, None] * q - dm[:, :, None]).reshape(-1, QK_K)


# ---------------------------------------------------------------------------------------
# Fast kernels: the same float32 operations on a whole chunk at once. Sub-blocks are laid
# out as columns of (32, m) arrays, so a sum over a sub-block is a reduction down axis 0,
# which numpy performs row after row: the C's left-to-right order (checked on first use).
# ---------------------------------------------------------------------------------------

@functools.cache
def _column_sums_in_order_check():
    """True when np.add.reduce(a, axis=0) on a C-contiguous (k, m) float32 array, m >= 2,
    adds the rows one after another (what the kernels need); probed on values where the
    order matters, for a few shapes."""
    rng = np.random.default_rng(12345)
    for k, m in ((SUB, 2), (SUB, 3), (SUB, 8), (SUB, 64), (SUB, 1000), (SUB, 9000), (QK_K, 5), (QK_K, 1100)):
        a = (rng.standard_normal((k, m)) * 10.0 ** rng.integers(-7, 8, (k, m))).astype(F32)
        seq = np.zeros(m, dtype=F32)
        for row in a:
            seq += row
        if not (np.add.reduce(a, axis=0).view(np.uint32) == seq.view(np.uint32)).all():
            return False
    return True



def _column_sums(a, out):
    """Sum the rows of ``a`` (k, m) float32 in order into ``out`` (m,); returns ``out``.
    (The same as starting from 0 as the C does, up to the sign of an all-zero sum.)"""
    if a.shape[1] >= 2 and _column_sums_in_order_check():  # one column is reduced pairwise
        return np.add.reduce(a, axis=0, out=out)
    out[...] = a[0]
    for row in a[1:]:
        out += row
    return out


def _quantize_q4_k_chunk(x, out, scratch, quant_weights=None):
    """ggml's quantize_q4_K on a chunk of blocks ``x`` (n, 256) float32 -> ``out`` (n, 144).

    The weighted search of every sub-block runs at once on (32, 8n) arrays, one candidate
    scale after another. Codes are rounded with np.rint, which equals ggml's nearest_int
    for magnitudes below 2**22; sub-blocks where a candidate's ``1/scale`` is not a positive
    finite float32 (ranges below about 1e-37) or a scaled value could reach 2**21 are redone
    by the literal reference.
    """
    n = len(x)
    m = NSUB * n
    xt = buf(scratch, "xt", (SUB, m), F32)
    w = buf(scratch, "w", (SUB, m), F32)
    t = buf(scratch, "t", (SUB, m), F32)
    wl = buf(scratch, "wl", (SUB, m), F32)
    tmp = buf(scratch, "tmp", (SUB, m), F32)
    acc = buf(scratch, "acc", (m,), F32)
    np.copyto(xt, x.reshape(m, SUB).T)
    lo = np.minimum.reduce(xt, axis=0)
    hi = np.maximum.reduce(xt, axis=0)
    require_finite(lo)
    require_finite(hi)
    with np.errstate(all="ignore"):
        if quant_weights is None:
            np.multiply(xt, xt, out=tmp)
            av_x = np.sqrt(_column_sums(tmp, acc) / F32(SUB))
            np.abs(xt, out=w)
            w += av_x
            nmax, rmin, rdelta, nstep, qkx3 = _SEARCH_NO_IMATRIX
        else:
            sq = np.square(x).T  # (256, n): the C sums a block's 256 squares in order
            sigma2 = F32(2) * _column_sums(np.ascontiguousarray(sq), np.empty(n, F32)) / F32(QK_K)
            np.copyto(w, np.asarray(quant_weights, dtype=F32).reshape(m, SUB).T)
            np.multiply(xt, xt, out=tmp)
            tmp += np.repeat(sigma2, NSUB)
            np.sqrt(tmp, out=tmp)
            w *= tmp
            nmax, rmin, rdelta, nstep, qkx3 = _SEARCH_IMATRIX
        sum_w = _column_sums(w, np.empty(m, F32))
        np.multiply(w, xt, out=tmp)
        sum_x = _column_sums(tmp, np.empty(m, F32))
        lo = np.where(lo > 0, F32(0), lo)
        flat = hi <= lo if qkx3 else hi == lo
        fmax = F32(nmax)

        def error(scale, mn, q):
            np.multiply(q, scale, out=tmp)
            np.add(tmp, mn, out=tmp)
            np.subtract(tmp, xt, out=tmp)
            np.multiply(tmp, tmp, out=tmp)
            np.multiply(tmp, w, out=tmp)
            return _column_sums(tmp, np.empty(m, F32))

        def rounded_codes(iscale, mn):
            np.subtract(xt, mn, out=t)
            np.multiply(t, iscale, out=t)
            np.rint(t, out=t)
            return np.clip(t, F32(0), fmax, out=t)

        # As in the C, a better candidate also moves the min, which the next candidates'
        # scales and codes are then computed from; the best codes are re-derived at the end
        # from the best candidate's (iscale, min), where they are needed at all.
        # |scaled value| <= max(hi - mn, |mn - lo|) * iscale, which is at most about 16
        # where mn <= lo and at most (hi - lo) * iscale where lo < mn < hi; where mn >= hi,
        # iscale <= 0. So a sub-block whose iscales all lie in (0, 2**21 / (hi - lo)) never
        # leaves nearest_int's range; the others are flagged (NaN propagates through the
        # running min/max and flags too). Flat sub-blocks are flagged harmlessly: the C
        # returns before any search there.
        mn = lo.copy()
        iscale = fmax / (hi - lo)
        iscale_lo, iscale_hi = iscale.copy(), iscale.copy()
        best_iscale, best_shift = iscale.copy(), lo.copy()
        scale = F32(1) / iscale
        best_error = error(scale, mn, rounded_codes(iscale, mn))
        sum_l = np.empty(m, F32)
        sum_l2 = np.empty(m, F32)
        sum_xl = np.empty(m, F32)
        for num in _candidate_numerators(nmax, rmin, rdelta, nstep):
            iscale = num / (hi - mn)
            np.minimum(iscale_lo, iscale, out=iscale_lo)
            np.maximum(iscale_hi, iscale, out=iscale_hi)
            q = rounded_codes(iscale, mn)
            np.multiply(w, q, out=wl)
            _column_sums(wl, sum_l)
            np.multiply(wl, q, out=tmp)
            _column_sums(tmp, sum_l2)
            np.multiply(wl, xt, out=tmp)
            _column_sums(tmp, sum_xl)
            D = sum_w * sum_l2 - sum_l * sum_l
            this_scale = (sum_w * sum_xl - sum_x * sum_l) / D
            this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D
            clipped = this_min > 0
            if clipped.any():
                this_min[clipped] = 0
                this_scale[clipped] = sum_xl[clipped] / sum_l2[clipped]
            cur_error = error(this_scale, this_min, q)
            better = cur_error < best_error
            better &= D > 0
            np.copyto(best_error, cur_error, where=better)
            np.copyto(scale, this_scale, where=better)
            np.copyto(best_iscale, iscale, where=better)
            np.copyto(best_shift, mn, where=better)
            np.copyto(mn, this_min, where=better)
        scale[flat] = 0
        mn[flat] = lo[flat]
        unsafe = ~((iscale_lo > 0) & (iscale_hi * (hi - lo) < F32(2**21))) & ~flat
    scales = scale.reshape(n, NSUB)
    mins = (-mn).reshape(n, NSUB)
    xb = x.reshape(n, NSUB, SUB)

    def search_codes(mask):
        cols = np.flatnonzero(mask.reshape(-1))
        with np.errstate(all="ignore"):
            q = np.clip(_nearest_int(best_iscale[cols, None] * (xt[:, cols].T - best_shift[cols, None])), 0, nmax)
        return np.where(flat[cols, None], 0, q)

    if quant_weights is None:
        ls, lm, d, dmin = _six_bit_scales_no_imatrix(scales, mins)
    else:
        sw = sum_w.reshape(n, NSUB)  # the C's sumw: the same in-order sum of the same weights
        d_block, ls = _make_qp_quants(scales, 63, sw)
        m_block, lm = _make_qp_quants(mins, 63, sw)
        with np.errstate(over="ignore"):
            d, dmin = d_block.astype("<f2"), m_block.astype("<f2")
    out[...] = _assemble(xb, d, dmin, ls, lm, search_codes)
    bad = np.flatnonzero(unsafe.reshape(n, NSUB).any(axis=1))
    if bad.size:
        qw = None if quant_weights is None else np.asarray(quant_weights, dtype=F32)[bad]
        out[bad] = _quantize_q4_k_reference(x[bad], qw)


_NIBBLES = np.uint64(0x0F0F0F0F0F0F0F0F)


def _unpack_scale_words(b):
    """:func:`unpack_scales_mins` on contiguous (n, 12) uint8, four 6-bit fields at a time
    as uint32 words (bytes 0-3, 4-7, 8-11): -> (sc, m), uint8 (n, 8)."""
    w = b.view("<u4")
    w0, w1, w2 = w[:, 0], w[:, 1], w[:, 2]
    low6, low4, bits45 = np.uint32(0x3F3F3F3F), np.uint32(0x0F0F0F0F), np.uint32(0x30303030)
    sc = np.empty((len(b), 2), "<u4")
    m = np.empty((len(b), 2), "<u4")
    sc[:, 0] = w0 & low6
    m[:, 0] = w1 & low6
    sc[:, 1] = (w2 & low4) | ((w0 >> np.uint32(2)) & bits45)  # (b >> 6) << 4 of each byte
    m[:, 1] = ((w2 >> np.uint32(4)) & low4) | ((w1 >> np.uint32(2)) & bits45)
    return sc.view(np.uint8), m.view(np.uint8)


def _dequantize_q4_k_chunk(b, out, scratch):
    n = len(b)
    blk = b.view(_BLOCK_DTYPE)[:, 0]
    sc, m = _unpack_scale_words(np.ascontiguousarray(blk["scales"]))
    with np.errstate(all="ignore"):
        d = blk["d"].astype(F32)[:, None] * sc.astype(F32)  # (n, 8): d * sc_j, as the C
        dm = blk["dmin"].astype(F32)[:, None] * m.astype(F32)
    words = buf(scratch, "words", (n, 16), np.uint64)
    np.copyto(words, blk["qs"].view(np.uint64).reshape(n, 16))
    high = buf(scratch, "high", (n, 16), np.uint64)
    np.right_shift(words, np.uint64(4), out=high)
    high &= _NIBBLES
    words &= _NIBBLES
    o = out.reshape(n, 4, 2, SUB)  # chunk c: sub-block 2c from the low nibbles, 2c + 1 from the high
    np.copyto(o[:, :, 0, :], words.view(np.uint8).reshape(n, 4, SUB), casting="unsafe")
    np.copyto(o[:, :, 1, :], high.view(np.uint8).reshape(n, 4, SUB), casting="unsafe")
    flat = out.reshape(-1)
    with np.errstate(all="ignore"):  # full-length operands: broadcasting over 32 values is slower
        flat *= np.repeat(d.reshape(-1), SUB)
        flat -= np.repeat(dm.reshape(-1), SUB)


# ---------------------------------------------------------------------------------------
# Round to nearest, for comparison
# ---------------------------------------------------------------------------------------

def quantize_q4_k_rtn(x):
    """Q4_K bytes by plain round to nearest: no search, for comparison with ggml's quantizer.

    ``x``: float32-convertible, shape (..., k * 256). Per sub-block of 32: ``min`` = the
    smallest value but at most 0 (Q4_K stores ``-min >= 0`` as ``dmin * m``), ``scale = (max
    - min) / 15``; then the same 6-bit rounding of the 8 scales and mins against their
    largest as ggml's quantizer (``d = max_scale / 63``), and the codes ``nearest_int((x +
    dmin*m_j) / (d*sc_j))`` from the stored scales. Returns uint8 (..., k * 144) in Q4_K's
    layout, readable by :func:`int4ref.interop.gguf.dequantize` and any GGUF reader.
    Non-finite input, or a block whose ``d`` or ``dmin`` overflows float16, raises.
    """
    arr = np.asarray(x)
    if arr.ndim == 0 or arr.shape[-1] == 0 or arr.shape[-1] % QK_K:
        raise ValueError(f"x must have a last dimension that is a positive multiple of {QK_K}, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(f"x must be a float array, got dtype {arr.dtype}")
    with np.errstate(over="ignore"):
        blocks = np.ascontiguousarray(arr, dtype=F32).reshape(-1, NSUB, SUB)
    if not np.isfinite(blocks).all():
        raise ValueError(f"x holds {int((~np.isfinite(blocks)).sum())} NaN or Inf value(s) as float32; "
                         f"Q4_K quantizes finite float32 values")
    lo = np.minimum(blocks.min(axis=2), F32(0))
    hi = blocks.max(axis=2)
    with np.errstate(all="ignore"):
        scales = (hi - lo) / F32(15)
        ls, lm, d, dmin = _six_bit_scales_no_imatrix(scales, -lo)
        iscale = np.where(scales > 0, F32(1) / scales, F32(0))

    def codes(mask):
        with np.errstate(all="ignore"):
            return np.clip(_nearest_int((blocks[mask] - lo[mask][:, None]) * iscale[mask][:, None]), 0, 15)

    overflow = ~(np.isfinite(d.astype(F32)) & np.isfinite(dmin.astype(F32)))
    if overflow.any():
        raise ValueError(f"{int(overflow.sum())} block(s) need a super-scale beyond the float16 range (max 65504), "
                         f"first block {int(np.flatnonzero(overflow)[0])}; rescale the tensor")
    out = _assemble(blocks, d, dmin, ls, lm, codes)
    return out.reshape(*arr.shape[:-1], arr.shape[-1] // QK_K * Q4_K.type_size)


class Q4_K(BlockType):
    """Q4_K: 256 values as 8 sub-blocks of 32, ``d*sc_j*q - dmin*m_j`` with 6-bit ``sc_j``,
    ``m_j`` and float16 ``d``, ``dmin`` (ggml ``quantize_q4_K`` / ``dequantize_row_q4_K``).
    144 bytes: d, dmin, 12 scale bytes, 128 code bytes (module docstring). Takes an
    importance matrix (ggml then runs its other quantizer, ``quantize_row_q4_K_impl``)."""

    name = "Q4_K"
    block_size = QK_K
    type_size = 144
    block_dtype = _BLOCK_DTYPE
    float16_fields = (("d", 0), ("dmin", 2))
    accepts_imatrix = True
    quantize_chunk = staticmethod(_quantize_q4_k_chunk)
    dequantize_chunk = staticmethod(_dequantize_q4_k_chunk)
    dequantize_blocks = staticmethod(_dequantize_q4_k_reference)

    @classmethod
    def quantize_blocks(cls, blocks, quant_weights=None):
        """(n, 256) float32 [, importance weights (n, 256)] -> (n, 144) uint8; the literal,
        slow reference of :meth:`quantize_chunk`."""
        return _quantize_q4_k_reference(blocks, quant_weights)

    @classmethod
    def chunk_blocks(cls):
        return 1024  # 8192 sub-blocks: (32, 8192) float32 work arrays of 1 MiB (measured best of 128..1024)


#: The block types this module defines.
TYPES = (Q4_K,)
