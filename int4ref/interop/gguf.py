"""GGUF's 4-bit block formats Q4_0, Q4_1 and IQ4_NL in plain numpy.

The bytes are those of ggml's own C code, ``ggml_quantize_chunk`` with no importance
matrix (what ``llama-quantize`` writes): ``quantize_row_q4_0_ref``, ``quantize_row_q4_1_ref``
and ``quantize_iq4_nl`` in ggml/src/ggml-quants.c, in strict float32 as the C code computes
(ggml's ``quantize_row_iq4_nl_ref`` is a different, single-pass variant). The values match
ggml's ``to_float`` bit for bit. ``make test-peers`` checks both against the compiled C
(tools/ggml_peer.py, ggml 0.25.3).

gguf-py (``gguf.quants``, checked with 0.19.0; it has no IQ4_NL quantizer) dequantizes
bit for bit the same, and its Q4_0 / Q4_1 bytes differ from the C only in the sign bit of
a zero scale: for a Q4_0 block of zeros gguf-py stores ``d = -(first element) / 8``, so
+0.0 when the block starts with -0.0, where C always stores -0.0; for Q4_1 gguf-py takes
``min`` and ``max`` from numpy's reductions, whose choice between -0.0 and +0.0 depends on
numpy's SIMD order, where C keeps the block's first zero as ``m`` (and stores ``d = +0.0``
for a block of zeros). Decoded values are equal either way, up to the sign of zero.
This module does not import ``gguf``; only :func:`write_gguf` and :func:`read_gguf` do.

Every format cuts each row (the last axis) into blocks of ``BLOCK_SIZE = 32`` values.
A block is stored as ``TYPE_SIZE[type]`` bytes, little-endian::

    Q4_0   18 bytes  [0:2] d  float16   [2:18] 32 codes
    Q4_1   20 bytes  [0:2] d  float16   [2:4] m float16   [4:20] 32 codes
    IQ4_NL 18 bytes  [0:2] d  float16   [2:18] 32 codes

The 16 code bytes hold element ``j`` in the low nibble of byte ``j`` and element
``j + 16`` in the high nibble (``packing.pack_nibbles(..., layout="ggml")``).
A code ``c`` in [0, 15] decodes to::

    Q4_0    d * (c - 8)
    Q4_1    d * c + m
    IQ4_NL  d * IQ4_NL_VALUES[c]

An array of shape ``(..., n)`` (``n`` a multiple of 32) quantizes to a uint8 array of
shape ``(..., n // 32 * TYPE_SIZE[type])``, the shape gguf-py uses.

Each block type is one class, :class:`Q4_0`, :class:`Q4_1`, :class:`IQ4_NL` (a
:class:`BlockType`, in the style of gguf-py's ``quants.py``; :data:`BLOCK_TYPES` lists them
by name): its byte layout (``type_size``, ``scale_fields``, the numpy record
``block_dtype``), its short literal reference ``quantize_blocks`` / ``dequantize_blocks``
(one block per row) and the chunked, in-place fast kernels ``quantize_chunk`` /
``dequantize_chunk`` that :func:`quantize` and :func:`dequantize` run on a few threads. The
tests check reference and fast agree byte for byte.
"""
from __future__ import annotations

import os
import threading

import numpy as np

from .. import parallel
from .._checks import as_float_array
from ..packing import pack_nibbles, unpack_nibbles

__all__ = [
    "BLOCK_SIZE",
    "BLOCK_TYPES",
    "BlockType",
    "IQ4_NL",
    "Q4_0",
    "Q4_1",
    "TYPE_SIZE",
    "block_type",
    "IQ4_NL_VALUES",
    "quantize",
    "dequantize",
    "write_gguf",
    "read_gguf",
]

BLOCK_SIZE = 32
#: The 16 levels of IQ4_NL (ggml's ``kvalues_iq4nl``), as int8.
IQ4_NL_VALUES = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], dtype=np.int8)
IQ4_NL_VALUES.setflags(write=False)

_F32 = np.float32


# ---------------------------------------------------------------------------------------
# Reference implementations: (n, 32) float32 blocks <-> (n, TYPE_SIZE) uint8 blocks.
# ---------------------------------------------------------------------------------------

def _pack_reference(scales, codes):
    """Concatenate float16 scale columns and the ggml nibble packing of ``codes``."""
    packed = pack_nibbles(codes, layout="ggml").reshape(len(codes), 16)
    with np.errstate(over="ignore"):  # a scale beyond float16 range is stored as inf
        parts = [np.asarray(s, dtype="<f2").reshape(-1, 1).view(np.uint8) for s in scales]
    return np.concatenate(parts + [packed], axis=1)


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
    vmax = np.where(vmax == 0, _F32(0), vmax)  # never -0.0
    d = vmax / _F32(-8)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        inv = np.where(d == 0, _F32(0), _F32(1) / d)
        codes = np.trunc(blocks * inv[:, None] + _F32(8.5)).astype(np.uint8)
    return _pack_reference([d], np.minimum(codes, 15))


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
        d = (hi - lo) / _F32(15)
        inv = np.where(d == 0, _F32(0), _F32(1) / d)
        codes = np.trunc((blocks - lo[:, None]) * inv[:, None] + _F32(0.5)).astype(np.uint8)
    return _pack_reference([d, lo], np.minimum(codes, 15))


def _codes_reference(blocks, offset):
    n = len(blocks)
    return unpack_nibbles(np.ascontiguousarray(blocks[:, offset:]), 32 * n, layout="ggml").reshape(n, 32)


def _dequantize_q4_0_reference(blocks):
    """(n, 18) uint8 Q4_0 blocks -> (n, 32) float32."""
    d = blocks[:, 0:2].copy().view("<f2").astype(_F32)
    return d * (_codes_reference(blocks, 2).astype(_F32) - _F32(8))


def _dequantize_q4_1_reference(blocks):
    """(n, 20) uint8 Q4_1 blocks -> (n, 32) float32."""
    d = blocks[:, 0:2].copy().view("<f2").astype(_F32)
    m = blocks[:, 2:4].copy().view("<f2").astype(_F32)
    return d * _codes_reference(blocks, 4).astype(_F32) + m


def _dequantize_iq4_nl_reference(blocks):
    """(n, 18) uint8 IQ4_NL blocks -> (n, 32) float32."""
    d = blocks[:, 0:2].copy().view("<f2").astype(_F32)
    return d * IQ4_NL_VALUES.astype(_F32)[_codes_reference(blocks, 2)]


# ---------------------------------------------------------------------------------------
# Fast kernels. kernel(src_chunk, dst_chunk, scratch) fills dst_chunk in place, doing the
# same float32 operations as the references; ``scratch`` holds the worker's reusable work
# arrays (fresh large temporaries cost a page fault per 4 KiB, which dominated otherwise).
# numpy's per-row reductions (argmax/max along a 32-long axis) cost ~40 ns per block, so
# block maxima come from pairwise trees over the float bit patterns instead.
# ---------------------------------------------------------------------------------------

_CHUNK = 16384  # blocks per work item (2 MiB of float32): numpy calls cost microseconds each
_NIBBLES = np.uint64(0x0F0F0F0F0F0F0F0F)
_BIT0S = np.uint64(0x0101010101010101)
_FOUR = np.uint64(4)
_SIGN = np.uint32(0x80000000)
_MAGNITUDE = np.uint32(0x7FFFFFFF)


def _buf(scratch, key, shape, dtype):
    """Work array ``key`` of ``shape``/``dtype`` from ``scratch`` (contents undefined)."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    raw = scratch.get(key)
    if raw is None or raw.size < nbytes:
        raw = scratch[key] = np.empty(nbytes, dtype=np.uint8)
    return raw[:nbytes].view(dtype).reshape(shape)


def _tree(op, values, n, work):
    """Reduce each consecutive run of 32 in the 1-D ``values`` with ``op``: (32n,) -> (n,).

    Halves pairwise five times, writing the levels into ``work`` (31n items); exact for
    max/min, whose result does not depend on the order.
    """
    pos = 0
    while values.size > n:
        half = values.size // 2
        values = op(values[0::2], values[1::2], out=work[pos:pos + half])
        pos += half
    return values.copy()


def _max_bits(x, scratch):
    """For blocks ``x`` (n, 32) float32: (max over int32 bits, max over uint32 bits).

    As int32, sign-bit-clear floats order by magnitude above every sign-bit one, so the first
    is the largest non-negative value (negative if the block has none). As uint32, sign-bit
    floats order by magnitude above every other, so the second is the most negative value
    (below 0x80000000 if the block has none).
    """
    bits = x.reshape(-1).view(np.int32)
    work = _buf(scratch, "tree", (31 * len(x),), np.int32)
    top = _tree(np.maximum, bits, len(x), work)
    neg = _tree(np.maximum, bits.view(np.uint32), len(x), work.view(np.uint32))
    return top, neg


def _signed_absmax(x, scratch):
    """First value of largest magnitude in each block of ``x`` (n, 32), sign kept (float32)."""
    top, neg = _max_bits(x, scratch)
    top = top.view(np.uint32)
    # top ^ SIGN and neg both read "0x80000000 + magnitude" when the block has such a value
    # and something below 0x80000000 when it has none, so they compare as magnitudes.
    pos_key = top ^ _SIGN
    vbits = np.where(pos_key > neg, top, neg)
    tie = np.flatnonzero(pos_key == neg)  # +v and -v both present: the first one wins
    if tie.size:
        rows = x[tie]
        vbits[tie] = rows.view(np.uint32)[np.arange(tie.size), np.abs(rows).argmax(axis=1)]
    return vbits.view(np.float32)


class _NonFinite(Exception):
    """Raised by a kernel that meets NaN or Inf; quantize() turns it into a clear error."""


def _require_finite(block_extremes):
    # A block holding NaN or Inf has it as its largest bit pattern, hence in its extremes.
    if not np.isfinite(block_extremes).all():
        raise _NonFinite


def _store_codes(codes, qs, scratch):
    """Pack ``codes`` (n, 32) uint8 in [0, 16] (16 is clamped to 15) into ``qs`` (n,) V16.

    Works on eight codes at a time as uint64 lanes: a code never exceeds one nibble,
    so shifting a whole word by 4 moves every code into its byte's high nibble.
    """
    words = codes.view(np.uint64)
    over = np.right_shift(words, _FOUR, out=_buf(scratch, "over", words.shape, np.uint64))
    over &= _BIT0S
    words -= over  # 16 -> 15, others unchanged
    halves = codes.view("V16")  # column 0: elements 0..15, column 1: elements 16..31
    low = _buf(scratch, "low", (len(codes),), "V16")
    high = _buf(scratch, "high", (len(codes),), "V16")
    low[...] = halves[:, 0]
    high[...] = halves[:, 1]
    low64, high64 = low.view(np.uint64), high.view(np.uint64)
    high64 <<= _FOUR
    low64 |= high64
    qs[...] = low


def _load_codes(qs, scratch):
    """Unpack ``qs`` (n,) V16 into (n, 32) uint8 codes, the inverse of _store_codes."""
    n = len(qs)
    words = _buf(scratch, "words", (n,), "V16")
    words[...] = qs
    words = words.view(np.uint64)
    codes = _buf(scratch, "codes", (n, 32), np.uint8)
    halves = codes.view("V16")
    high = _buf(scratch, "high", (2 * n,), np.uint64)
    np.right_shift(words, _FOUR, out=high)
    high &= _NIBBLES
    words &= _NIBBLES
    halves[:, 0] = words.view("V16")
    halves[:, 1] = high.view("V16")
    return codes


def _reciprocal(d):
    """``1/d`` in float32, 0 where ``d == 0`` (the ``id = d ? 1/d : 0`` of ggml)."""
    inv = np.zeros_like(d)
    np.divide(_F32(1), d, out=inv, where=d != 0)
    return inv


def _quantize_q4_0_chunk(x, out, scratch):
    blk = out.view(Q4_0.block_dtype)[:, 0]
    t = _buf(scratch, "t", x.shape, _F32)
    codes = _buf(scratch, "codes", x.shape, np.uint8)
    vmax = _signed_absmax(x, scratch)
    _require_finite(vmax)
    vmax[vmax == 0] = 0  # a block of zeros: +0.0, whatever its zeros' signs (ggml's C)
    with np.errstate(all="ignore"):
        d = vmax / _F32(-8)
        inv = _reciprocal(d)
        np.multiply(x, inv[:, None], out=t)
        t += _F32(8.5)
        np.copyto(codes, t, casting="unsafe")  # truncation; every value here lies in [0, 17)
        blk["d"] = d.astype("<f2")  # converting contiguously first is about twice as fast
    _store_codes(codes, blk["qs"], scratch)
    bad = ~np.isfinite(inv)  # tiny blocks where 1/d overflows: let the reference decide
    if bad.any():
        out[bad] = _quantize_q4_0_reference(x[bad])


def _quantize_q4_1_chunk(x, out, scratch):
    blk = out.view(Q4_1.block_dtype)[:, 0]
    t = _buf(scratch, "t", x.shape, _F32)
    codes = _buf(scratch, "codes", x.shape, np.uint8)
    top, neg = _max_bits(x, scratch)
    low = _tree(np.minimum, x.reshape(-1).view(np.uint32), len(x), _buf(scratch, "tree", (31 * len(x),), np.uint32))
    hi = np.where(top >= 0, top.view(np.uint32), low).view(_F32)  # all negative: the one nearest 0
    lo = np.where(neg >= _SIGN, neg, low).view(_F32)  # none negative: the smallest
    _require_finite(hi)
    _require_finite(lo)
    zero = np.flatnonzero(lo == 0)  # ggml's C keeps the block's first zero as min (and max)
    if zero.size:
        rows = x[zero]
        first = rows[np.arange(zero.size), (rows == 0).argmax(axis=1)]
        lo[zero] = first
        hi[zero] = np.where(hi[zero] == 0, first, hi[zero])  # all zeros: d = first - first = +0.0
    with np.errstate(all="ignore"):
        d = (hi - lo) / _F32(15)
        inv = _reciprocal(d)
        np.subtract(x, lo[:, None], out=t)
        t *= inv[:, None]
        t += _F32(0.5)
        np.copyto(codes, t, casting="unsafe")
        blk["d"] = d.astype("<f2")
        blk["m"] = lo.astype("<f2")
    _store_codes(codes, blk["qs"], scratch)
    bad = ~(np.isfinite(d) & np.isfinite(inv))
    if bad.any():
        out[bad] = _quantize_q4_1_reference(x[bad])


def _dequantize_q4_0_chunk(b, out, scratch):
    blk = b.view(Q4_0.block_dtype)[:, 0]
    np.copyto(out, _load_codes(blk["qs"], scratch), casting="unsafe")
    out -= _F32(8)
    with np.errstate(all="ignore"):  # an inf scale times code 8 gives NaN, as in gguf
        out *= blk["d"].astype(_F32)[:, None]


def _dequantize_q4_1_chunk(b, out, scratch):
    blk = b.view(Q4_1.block_dtype)[:, 0]
    np.copyto(out, _load_codes(blk["qs"], scratch), casting="unsafe")
    with np.errstate(all="ignore"):
        out *= blk["d"].astype(_F32)[:, None]
        out += blk["m"].astype(_F32)[:, None]


def _dequantize_iq4_nl_chunk(b, out, scratch):
    blk = b.view(IQ4_NL.block_dtype)[:, 0]
    np.take(_IQ4_NL_F32, _load_codes(blk["qs"], scratch), out=out, mode="clip")
    with np.errstate(all="ignore"):
        out *= blk["d"].astype(_F32)[:, None]


# --- IQ4_NL quantization --------------------------------------------------------------
# ggml's best_index_int8 picks level j+1 over level j when 2*v >= values[j] + values[j+1]
# (ties go up, NaN gets code 0). The sums are integers, so floor(2*v) alone decides the
# code: two tables indexed by floor(2*v), clamped to [_LO2, _HI2], give code and level.
_IQ4_NL_F32 = IQ4_NL_VALUES.astype(_F32)
_LO2, _HI2 = -232, 202
_MID2 = IQ4_NL_VALUES[:-1].astype(np.int64) + IQ4_NL_VALUES[1:]
_IQ4_CODE = np.searchsorted(_MID2, np.arange(_LO2, _HI2 + 1), side="right").astype(np.uint8)
_IQ4_LEVEL = _IQ4_NL_F32[_IQ4_CODE]
_IQ4_NTRY = 7  # ggml's quantize_iq4_nl tries scales (itry - 127) / max for itry in [-7, 7]
_IQ4_EPS = _F32(1e-15)  # GROUP_MAX_EPS: blocks with max |x| below it get d = 0
_IQ4_CHUNK = 2048


def _iq4_nl_table_index(scaled, index):
    """Write into ``index`` (intp) the table rows for ``scaled`` = x / d (float32, overwritten)."""
    scaled += scaled  # exact doubling
    np.floor(scaled, out=scaled)
    np.fmax(scaled, _F32(_LO2), out=scaled)  # fmax maps NaN to the lowest code, like ggml
    np.fmin(scaled, _F32(_HI2), out=scaled)
    scaled -= _F32(_LO2)
    np.copyto(index, scaled, casting="unsafe")
    return index


def _sum_in_order(a, acc):
    """Sum the 32 rows of ``a`` (32, n) into ``acc`` (n,) in order j = 0, 1, ..., 31, in float32.

    This is the left-to-right order of the C loop ``float s = 0; s += ...``. (np.sum may
    sum pairwise, e.g. over a single block, and a different order rounds differently.)
    """
    acc[...] = 0
    for row in a:
        acc += row
    return acc.copy()


def _quantize_iq4_nl_chunk(x, out, scratch):
    """ggml quantize_iq4_nl (no importance weights) on a chunk of blocks.

    Per block: weights ``w = x*x``; ``max`` = first value of largest magnitude. Start with
    ``1/d = 127/max``, pick the nearest level for each ``x/d`` and fit
    ``d = sum(w q x) / sum(w q q)``; then for ``1/d = (itry - 127)/max``, itry = -7..7,
    keep the fit that most increases ``sum(w q x)^2 / sum(w q q)``. The final codes use
    the fitted float32 ``d``; ``d`` is stored as float16. Sums run left to right in
    float32 as the C loops do: the blocks are transposed to (32, n) and summed row by row.
    """
    n = len(x)
    blk = out.view(IQ4_NL.block_dtype)[:, 0]
    xt = _buf(scratch, "xt", (32, n), _F32)
    w = _buf(scratch, "w", (32, n), _F32)
    s = _buf(scratch, "s", (32, n), _F32)
    level = _buf(scratch, "level", (32, n), _F32)
    index = _buf(scratch, "index", (32, n), np.intp)
    acc = _buf(scratch, "acc", (n,), _F32)
    vmax = _signed_absmax(x, scratch)
    _require_finite(vmax)
    with np.errstate(all="ignore"):
        live = np.abs(vmax) >= _IQ4_EPS
        np.copyto(xt, x.T)
        np.multiply(xt, xt, out=w)

        def fit(inv):
            np.multiply(xt, inv, out=s)
            np.take(_IQ4_LEVEL, _iq4_nl_table_index(s, index), out=level, mode="clip")
            np.multiply(w, level, out=level)  # level now holds w*q ...
            np.multiply(level, xt, out=s)
            sum_qx = _sum_in_order(s, acc)
            np.take(_IQ4_LEVEL, index, out=s, mode="clip")  # ... and s holds q again
            np.multiply(level, s, out=s)
            return sum_qx, _sum_in_order(s, acc)

        sum_qx, sum_q2 = fit(np.where(live, _F32(1) / (-vmax / _F32(-127)), _F32(0)))
        d = np.where(sum_q2 > 0, sum_qx / sum_q2, _F32(0))
        best = d * sum_qx
        for itry in range(-_IQ4_NTRY, _IQ4_NTRY + 1):
            sum_qx, sum_q2 = fit(np.where(live, _F32(itry - 127) / vmax, _F32(0)))
            better = (sum_q2 > 0) & (sum_qx * sum_qx > best * sum_q2)
            d_try = sum_qx / sum_q2
            d = np.where(better, d_try, d)
            best = np.where(better, d_try * sum_qx, best)
        d = np.where(live, d, _F32(0))
        np.multiply(xt, _reciprocal(d), out=s)
        codes_t = _IQ4_CODE[_iq4_nl_table_index(s, index)]
        blk["d"] = d.astype("<f2")
    codes = _buf(scratch, "codes", (n, 32), np.uint8)
    np.copyto(codes, codes_t.T)
    _store_codes(codes, blk["qs"], scratch)


# ---------------------------------------------------------------------------------------
# One class per block type (as gguf-py's quants.py): its layout, its reference and its fast
# kernels side by side. tests/test_gguf.py checks reference == fast and both == ggml's C.
# ---------------------------------------------------------------------------------------

def _block_record(*scale_fields):
    """One block as a numpy record: the float16 scale field(s) and the 16 code bytes as one
    opaque 16-byte item, so whole blocks are moved with single cheap copies."""
    return np.dtype([(f, "<f2") for f in scale_fields] + [("qs", "V16")])


class BlockType:
    """A GGUF block type: ``block_size`` values stored as ``type_size`` bytes.

    ``scale_fields``: the float16 fields in front of the 16 code bytes (``block_dtype`` is
    the numpy record of one block). ``quantize_blocks`` / ``dequantize_blocks`` are the short
    literal references, (n, 32) float32 <-> (n, type_size) uint8; ``quantize_chunk`` /
    ``dequantize_chunk`` are the fast in-place kernels that :func:`quantize` and
    :func:`dequantize` run on chunks of blocks on int4ref's thread pool. ``group_format`` names
    the :mod:`int4ref.formats` format with the same per-group rule, where there is one.
    """

    name = ""
    block_size = BLOCK_SIZE
    type_size = 0
    scale_fields: tuple[str, ...] = ()
    block_dtype: np.dtype
    group_format: str | None = None

    @classmethod
    def quantize_blocks(cls, blocks: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    @classmethod
    def dequantize_blocks(cls, blocks: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    @staticmethod
    def quantize_chunk(x, out, scratch):
        raise NotImplementedError

    @staticmethod
    def dequantize_chunk(b, out, scratch):
        raise NotImplementedError

    @classmethod
    def chunk_blocks(cls) -> int:
        """Blocks per work item of the fast kernels."""
        return _CHUNK

    @classmethod
    def bits_per_weight(cls) -> float:
        return 8 * cls.type_size / cls.block_size


class Q4_0(BlockType):
    """Q4_0: ``d * (c - 8)``, ``d = v / -8`` with v the block's first value of largest
    magnitude (ggml ``quantize_row_q4_0_ref`` / ``dequantize_row_q4_0``). 18 bytes: d, 16 code
    bytes. The same rule on any group size is the ``int4_q4_0`` format
    (:class:`int4ref.formats.Q4_0Rule`)."""

    name = "Q4_0"
    type_size = 18
    scale_fields = ("d",)
    block_dtype = _block_record("d")
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
    block_dtype = _block_record("d", "m")
    quantize_chunk = staticmethod(_quantize_q4_1_chunk)
    dequantize_chunk = staticmethod(_dequantize_q4_1_chunk)
    quantize_blocks = staticmethod(_quantize_q4_1_reference)
    dequantize_blocks = staticmethod(_dequantize_q4_1_reference)


class IQ4_NL(BlockType):
    """IQ4_NL: ``d * IQ4_NL_VALUES[c]`` with a fitted ``d`` (ggml ``quantize_iq4_nl`` with no
    importance matrix / ``dequantize_row_iq4_nl``). 18 bytes: d, 16 code bytes.

    Its quantizer has no separate literal version here: ``quantize_blocks`` runs the fast
    kernel, and ``tests/test_gguf.py`` checks it against a scalar transcription of the C
    (``iq4_nl_block_scalar``) and against golden bytes from ggml."""

    name = "IQ4_NL"
    type_size = 18
    scale_fields = ("d",)
    block_dtype = _block_record("d")
    quantize_chunk = staticmethod(_quantize_iq4_nl_chunk)
    dequantize_chunk = staticmethod(_dequantize_iq4_nl_chunk)

    @classmethod
    def quantize_blocks(cls, blocks):
        blocks = np.ascontiguousarray(blocks, dtype=_F32)
        out = np.empty((len(blocks), cls.type_size), dtype=np.uint8)
        cls.quantize_chunk(blocks, out, {})
        return out

    dequantize_blocks = staticmethod(_dequantize_iq4_nl_reference)

    @classmethod
    def chunk_blocks(cls):
        return _IQ4_CHUNK


#: The block types by GGUF name.
BLOCK_TYPES: dict[str, type[BlockType]] = {t.name: t for t in (Q4_0, Q4_1, IQ4_NL)}
#: Bytes per block of 32 values, by GGUF name.
TYPE_SIZE = {name: t.type_size for name, t in BLOCK_TYPES.items()}


def _run_chunks(kernel, src, dst, chunk):
    """Apply ``kernel`` to row chunks of ``src``/``dst`` on int4ref's thread pool (int4ref.parallel)."""
    spans = [(a, min(a + chunk, len(src))) for a in range(0, len(src), chunk)]
    if len(spans) == 1 or parallel.THREADS == 1:
        scratch = {}
        for a, b in spans:
            kernel(src[a:b], dst[a:b], scratch)
        return
    local = threading.local()  # one scratch dict per worker thread, freed with the call

    def work(span):
        if not hasattr(local, "scratch"):
            local.scratch = {}
        kernel(src[span[0]:span[1]], dst[span[0]:span[1]], local.scratch)

    for _ in parallel.pool().map(work, spans):  # numpy releases the GIL
        pass


def block_type(type_name) -> type[BlockType]:
    """The :class:`BlockType` of ``type_name`` ("Q4_0", a GGMLQuantizationType, ...)."""
    return BLOCK_TYPES[_type_name(type_name)]


def _type_name(type_name) -> str:
    if not isinstance(type_name, str) and hasattr(type_name, "name"):  # a GGMLQuantizationType
        type_name = type_name.name
    if not isinstance(type_name, str):
        raise TypeError(f"type_name must be a string such as 'Q4_0', got {type(type_name).__name__}")
    name = type_name.upper()
    if name not in TYPE_SIZE:
        raise ValueError(f"unknown GGUF type {type_name!r}; this module supports {', '.join(TYPE_SIZE)}")
    return name


# ---------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------

def _checked_input(x):
    """``as_float_array(x)`` minus its separate NaN/Inf pass over large arrays.

    The dtype checks run on one element; the kernels notice non-finite values on the way
    (they compute every block's extremes anyway) and quantize() then calls
    as_float_array on the whole array to word the error.
    """
    if not isinstance(x, np.ndarray) or x.size <= 1:
        return as_float_array(x, "x")
    as_float_array(x[(slice(0, 1),) * x.ndim], "x")
    return x


def quantize(x, type_name: str) -> np.ndarray:
    """Quantize ``x`` to GGUF ``type_name`` ("Q4_0", "Q4_1" or "IQ4_NL") blocks.

    ``x``: float32, float16 or float64 array of shape ``(..., n)`` with ``n`` a multiple
    of 32 (float16/float64 are converted to float32 first, as gguf-py does). Returns
    uint8 of shape ``(..., n // 32 * TYPE_SIZE[type_name])``, byte-identical to ggml's
    ``ggml_quantize_chunk`` with no importance matrix (and to
    ``gguf.quants.quantize(x, GGMLQuantizationType[type_name])`` but for the sign of zero
    scales, see the module docstring). A scale beyond the float16 range (Q4_0: a block
    whose largest magnitude exceeds 8 * 65504 = 524032) raises ValueError, where ggml and
    gguf silently store inf.
    """
    name = _type_name(type_name)
    out = _quantize_raw(x, name)
    _check_scales_fit_float16(out.reshape(-1, TYPE_SIZE[name]), name)
    return out


def _quantize_raw(x, name: str) -> np.ndarray:
    """:func:`quantize` without the float16 overflow check: the C bytes, inf scales included."""
    arr = _checked_input(x)
    if arr.ndim == 0:
        raise ValueError("x is a scalar; GGUF quantizes arrays whose last axis holds blocks of 32 values")
    n = arr.shape[-1]
    if n % BLOCK_SIZE:
        raise ValueError(
            f"x has last dimension {n}, not a multiple of {BLOCK_SIZE}: {name} stores each row as blocks "
            f"of {BLOCK_SIZE} values and gguf requires the row length to be a multiple of the block size "
            f"(pad the rows, e.g. with zeros)"
        )
    with np.errstate(over="ignore"):  # float64 beyond float32 range becomes inf, reported below
        x32 = np.ascontiguousarray(arr, dtype=_F32)
    blocks = x32.reshape(-1, BLOCK_SIZE)
    bt = BLOCK_TYPES[name]
    out = np.empty((len(blocks), bt.type_size), dtype=np.uint8)
    try:
        _run_chunks(bt.quantize_chunk, blocks, out, bt.chunk_blocks())
    except _NonFinite:
        as_float_array(arr, "x")  # raises, naming the NaN/Inf, unless float32 conversion made it
        raise ValueError(f"x ({arr.dtype}) has values beyond the float32 range (about 3.4e38); "
                         f"GGUF quantizes float32") from None
    return out.reshape(*arr.shape[:-1], n // BLOCK_SIZE * TYPE_SIZE[name])


def _check_scales_fit_float16(out, name):
    for offset, field in enumerate(BLOCK_TYPES[name].scale_fields):
        bits = out[:, 2 * offset : 2 * offset + 2].copy().view("<u2").reshape(-1)
        bad = np.flatnonzero((bits & 0x7C00) == 0x7C00)  # float16 exponent all ones: inf
        if bad.size:
            raise ValueError(
                f"{name} block {int(bad[0])} (values {32 * int(bad[0])}..{32 * int(bad[0]) + 31} of the flattened "
                f"input) needs {field} beyond the float16 range (max 65504); {bad.size} block(s) affected. "
                f"ggml (and gguf) would store inf there; rescale the tensor"
            )


def dequantize(data, type_name: str) -> np.ndarray:
    """Decode GGUF ``type_name`` blocks back to float32.

    ``data``: uint8 of shape ``(..., k * TYPE_SIZE[type_name])`` (what :func:`quantize`
    and :func:`read_gguf` return). Returns float32 of shape ``(..., k * 32)``, bitwise
    equal to ggml's ``to_float`` and to ``gguf.quants.dequantize(data, GGMLQuantizationType[type_name])``.
    """
    name = _type_name(type_name)
    arr = np.asarray(data)
    if arr.dtype != np.uint8:
        raise TypeError(f"data has dtype {arr.dtype}; expected uint8 block bytes "
                        f"(as returned by quantize or read_gguf)")
    if arr.ndim == 0 or arr.size == 0:
        raise ValueError(f"data is empty or a scalar (shape {arr.shape}); nothing to dequantize")
    size = TYPE_SIZE[name]
    if arr.shape[-1] % size:
        raise ValueError(
            f"data has last dimension {arr.shape[-1]} bytes, not a multiple of the {name} block size of "
            f"{size} bytes (one block of {BLOCK_SIZE} values); is the type right?"
        )
    blocks = np.ascontiguousarray(arr).reshape(-1, size)
    out = np.empty((len(blocks), BLOCK_SIZE), dtype=_F32)
    _run_chunks(BLOCK_TYPES[name].dequantize_chunk, blocks, out, _CHUNK)
    return out.reshape(*arr.shape[:-1], arr.shape[-1] // size * BLOCK_SIZE)


# ---------------------------------------------------------------------------------------
# .gguf files (these two import gguf)
# ---------------------------------------------------------------------------------------

_FLOAT_TYPES = {"F32": np.float32, "F16": np.float16}


def _import_gguf():
    try:
        import gguf
    except ImportError as exc:  # pragma: no cover - exercised only without gguf
        raise ImportError("reading and writing .gguf files needs the gguf package: pip install gguf") from exc
    return gguf


def _check_tensor(name, spec):
    if not isinstance(name, str):
        raise TypeError(f"tensor names must be strings, got {name!r}")
    try:
        data, type_name, shape = spec
    except (TypeError, ValueError):
        raise TypeError(f"tensor {name!r}: expected a (data, type_name, shape) tuple") from None
    shape = tuple(int(s) for s in shape)
    if not shape or min(shape) <= 0:
        raise ValueError(f"tensor {name!r}: shape {shape} must have at least one dimension, all positive")
    data = np.asarray(data)
    if isinstance(type_name, str) and type_name.upper() in _FLOAT_TYPES:
        type_name = type_name.upper()
        want = _FLOAT_TYPES[type_name]
        if data.dtype != want or data.shape != shape:
            raise ValueError(f"tensor {name!r}: {type_name} data must be {np.dtype(want)} of shape {shape}, "
                             f"got {data.dtype} {data.shape}")
        return data, type_name, shape
    type_name = _type_name(type_name)
    if shape[-1] % BLOCK_SIZE:
        raise ValueError(f"tensor {name!r}: last dimension {shape[-1]} is not a multiple of {BLOCK_SIZE}")
    byte_shape = (*shape[:-1], shape[-1] // BLOCK_SIZE * TYPE_SIZE[type_name])
    if data.dtype != np.uint8 or data.size != int(np.prod(byte_shape)):
        raise ValueError(f"tensor {name!r}: {type_name} data of logical shape {shape} must be uint8 with "
                         f"shape {byte_shape}, got {data.dtype} {data.shape}")
    return data.reshape(byte_shape), type_name, shape


def write_gguf(path, tensors: dict, arch: str = "int4ref") -> None:
    """Write tensors to a .gguf file with gguf-py's GGUFWriter.

    ``tensors`` maps name -> ``(data, type_name, shape)``: for "Q4_0", "Q4_1", "IQ4_NL",
    ``data`` is the uint8 output of :func:`quantize` and ``shape`` the logical (numpy
    order) shape of the float tensor; for "F32"/"F16", ``data`` is the float array itself.
    GGUF records dimensions innermost first; :func:`read_gguf` turns them back.
    """
    gguf = _import_gguf()
    checked = {name: _check_tensor(name, spec) for name, spec in tensors.items()}
    writer = gguf.GGUFWriter(os.fspath(path), arch)
    try:
        for name, (data, type_name, _shape) in checked.items():
            if type_name in _FLOAT_TYPES:
                writer.add_tensor(name, np.ascontiguousarray(data))
            else:  # GGUFWriter derives the element shape from the byte shape and raw_dtype
                writer.add_tensor(name, np.ascontiguousarray(data), raw_dtype=gguf.GGMLQuantizationType[type_name])
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()


def read_gguf(path) -> dict:
    """Read every tensor of a .gguf file: name -> ``(data, type_name, shape)``.

    ``shape`` is the logical numpy-order shape; ``data`` is a copy of the stored array
    (uint8 blocks of shape ``(..., n // 32 * TYPE_SIZE)`` for quantized types, the float
    array for F32/F16). Types this module does not know keep gguf's name and raw data.
    """
    gguf = _import_gguf()
    reader = gguf.GGUFReader(os.fspath(path))
    result = {}
    for t in reader.tensors:
        shape = tuple(int(s) for s in reversed(t.shape.tolist()))
        result[t.name] = (np.array(t.data), t.tensor_type.name, shape)
    del reader
    return result
