"""GGUF's 4-bit float block types, MXFP4 and NVFP4: E2M1 codes under a shared scale.

Both store E2M1 codes (1 sign bit, 2 exponent bits, 1 mantissa bit: magnitudes 0, 0.5, 1, 1.5,
2, 3, 4, 6, bit 3 the sign), the ``fp4_e2m1`` table of :mod:`int4ref.codebooks`. ggml keeps
them doubled as small integers (``kvalues_mxfp4`` = :data:`E2M1_DOUBLED`) and folds the 1/2
into the scale decoders. Layouts (ggml/src/ggml-common.h, ``block_mxfp4`` / ``block_nvfp4``)::

    MXFP4  17 bytes / 32 values   [0] e  E8M0 (2^(e-127); ggml decodes d = 2^(e-128))
                                  [1:17] codes, element j low nibble of byte j, j+16 high
                                  value  E2M1_DOUBLED[c] * d
    NVFP4  36 bytes / 64 values   [0:4] d[s]  UE4M3 (unsigned, exponent bias 7, 3 mantissa bits),
                                  one per 16-value sub-block s; ggml decodes half its value
                                  [4:36] codes, 8 bytes per sub-block: its element j in the low
                                  nibble of byte 8s+j, element j+8 in the high nibble
                                  value  E2M1_DOUBLED[c] * ue4m3_half(d[s])

The bytes are those of ggml's ``quantize_row_mxfp4_ref`` / ``quantize_row_nvfp4_ref`` (what
``ggml_quantize_chunk`` runs for these types: it ignores an importance matrix, so
``accepts_imatrix`` is False), in strict float32; values match ggml's ``to_float`` and
gguf-py's ``dequantize`` bit for bit. The rules, read from ggml 0.25.3's ggml-quants.c and
ggml-impl.h:

* each code is ``best_index_mxfp4(x, d)``: the first of the 16 levels with the smallest
  float32 ``|level * d - x|``. In exact arithmetic that is the nearest E2M1 value with ties
  toward zero (0.75 -> 0.5, 1.75 -> 1.5, 3.5 -> 3: not the OCP round-half-to-even), and 0,
  never -0 (code 8), for a value that rounds to zero;
* MXFP4: ``e = floor(log2f(amax)) - 2 + 127`` (amax the block's largest magnitude, e = 0 for
  a block of zeros), so the largest magnitude lands in [4, 8) times ``2^(e-127)`` and may
  round up to 6 (values above 6 * 2^(e-127) saturate to 6). ``log2f`` rounds to float32, so a
  value just below a power of two (e.g. the largest float below 16) counts as that power
  (:func:`floor_log2f`). The C cast of a negative float to ``uint8_t`` is undefined
  behaviour; x86-64 builds (and numpy, so gguf-py) wrap it modulo 256, so blocks whose
  largest magnitude is below 2^-125 get e = 232..255 and all-zero codes (:func:`mxfp4_exponent`
  does the same);
* NVFP4: ``d = ggml_fp32_to_ue4m3(amax / 6)`` per 16 values: mantissa rounded half up (not to
  even), everything at or above 256 (after clamping to 448) stored as 448 (0x7E), values below
  2^-6 rounded on the subnormal grid ``round(512 x)`` but capped at 7 (so [0.0146, 0.0156)
  rounds down to 7/512, not up to 2^-6), and below 1/1024 to 0, which zeroes the sub-block.
  There is no per-tensor scale: sub-blocks whose amax exceeds 6 * 448 = 2688 saturate, and
  values far above ``12 * d`` hit float32 absorption in ``|level * d - x|`` (every level
  ties, so code 0 wins: such a value becomes 0, exactly as in ggml's C).

gguf-py 0.19's MXFP4 quantizer (``gguf.quants.quantize(x, MXFP4)``) gives the same bytes as
the C on finite input here (tests/test_gguf_fp4.py); the two differ on a block holding NaN
(C skips NaN in its max, numpy's max propagates it) and could differ where numpy's float32
``log2`` is not glibc's ``log2f`` (numpy may use its own SIMD log2 on AVX-512 machines) just
below powers of two. int4ref follows the C (its ``floor_log2f`` is checked against glibc's
``log2f``) and rejects NaN and Inf. gguf-py has no NVFP4 quantizer (dequantize only).
"""
from __future__ import annotations

import numpy as np

from ...codebooks import FP4_E2M1
from ...packing import pack_nibbles
from ._blocks import F32, BlockType, buf, codes_reference, require_finite, store_codes, tree

__all__ = [
    "E2M1_DOUBLED",
    "MXFP4",
    "NVFP4",
    "TYPES",
    "e8m0_to_float_half",
    "floor_log2f",
    "mxfp4_exponent",
    "ue4m3_from_float",
    "ue4m3_to_float_half",
]

#: ggml's ``kvalues_mxfp4``: the E2M1 value of each 4-bit code, doubled, as int8 (code 8,
#: E2M1's -0, is the integer 0, so it decodes to +0.0 as in ggml and gguf-py).
E2M1_DOUBLED = np.rint(FP4_E2M1 * F32(12)).astype(np.int8)
E2M1_DOUBLED.setflags(write=False)
_LEVELS = E2M1_DOUBLED.astype(F32)
#: Decision points between neighbouring doubled magnitudes 0, 1, 2, 3, 4, 6, 8, 12: a
#: magnitude above the i-th gets at least code i + 1 (ties go to the smaller magnitude).
_MIDPOINTS = ((_LEVELS[1:8] + _LEVELS[0:7]) / F32(2)).astype(F32)

_MAGNITUDE = np.uint32(0x7FFFFFFF)


# ---------------------------------------------------------------------------------------
# Scale encodings
# ---------------------------------------------------------------------------------------

def _log2f_round_up_table():
    """``table[k + 149]``: the smallest float32 in [2^(k-1), 2^k) whose float32 log2 is k.

    ``log2f(a)`` for ``a`` a few ulps below 2^k is within half a float32 ulp of k and so
    rounds to k. The window below each power of two is at most a few dozen floats; log2 is
    evaluated in float64 (error ~1e-16) and rounded to float32, away from any tie.
    """
    ks = np.arange(-148, 129)
    table = np.full(len(ks) + 1, np.inf, dtype=F32)  # index 0 (k = -149) never rounds up
    window = 96
    with np.errstate(over="ignore"):
        tops = np.ldexp(np.float64(1), ks).astype(F32)  # 2^128 -> inf
    cand = np.empty((len(ks), window), dtype=F32)
    a = tops
    for i in range(window):
        a = np.nextafter(a, F32(0))
        cand[:, i] = a
    with np.errstate(divide="ignore"):  # the smallest binades reach 0
        rounds_up = np.log2(cand.astype(np.float64)).astype(F32) >= ks[:, None]
    if rounds_up[:, -1].any():
        raise AssertionError("log2f round-up window too small")
    count = rounds_up.sum(axis=1)
    has = count > 0
    idx = ks[has] + 149
    table[idx] = cand[has, count[has] - 1]
    return table


_LOG2F_ROUND_UP = _log2f_round_up_table()


def floor_log2f(a):
    """``floorf(log2f(a))`` of positive finite float32 ``a`` (any shape) as int32.

    The binary exponent of ``a``, plus one when ``a`` lies so close below a power of two that
    the float32 ``log2f`` rounds up to it (glibc's log2f does; checked in the tests).
    """
    a = np.asarray(a, dtype=F32)
    if not (np.isfinite(a) & (a > 0)).all():
        raise ValueError("floor_log2f takes positive finite values")
    _, k = np.frexp(a)  # a = m * 2^k, m in [0.5, 1)
    k = k.astype(np.int32)
    return k - 1 + (a >= _LOG2F_ROUND_UP[k + 149]).astype(np.int32)


def mxfp4_exponent(amax):
    """ggml's MXFP4 scale byte for blocks of largest magnitude ``amax`` (float32, >= 0): uint8.

    ``(uint8_t)(floorf(log2f(amax)) - 2 + 127)``, 0 for ``amax == 0``. Below 2^-125 the
    float is negative and the cast wraps modulo 256 as on x86-64 (C leaves it undefined).
    """
    amax = np.asarray(amax, dtype=F32)
    e = np.zeros(amax.shape, dtype=np.int32)
    pos = amax > 0
    e[pos] = floor_log2f(amax[pos]) + 125
    return (e & 0xFF).astype(np.uint8)


def e8m0_to_float_half(e):
    """ggml's ``GGML_E8M0_TO_FP32_HALF``: 2^(e-128) as float32 for E8M0 bytes ``e`` (e = 0
    and 1 give the subnormals 2^-128 and 2^-127; 255, E8M0's NaN, gives 2^127)."""
    e = np.asarray(e, dtype=np.uint8).astype(np.uint32)
    bits = np.where(e < 2, np.uint32(0x00200000) << e, (e - np.uint32(1)) << np.uint32(23))
    return bits.astype(np.uint32).view(F32)


def _ue4m3_half_table():
    """``ggml_ue4m3_to_fp32`` for every byte: ldexp(man, -9) or ldexp(1 + man/8, exp-7),
    times 0.5; bytes 0x00 and 0x7F give 0; bit 7 is ignored (0x80 | b decodes as b, except
    0xFF, which is not 0x7F and decodes as 240)."""
    b = np.arange(256)
    exp = (b >> 3) & 0xF
    man = b & 7
    raw = np.where(exp == 0, np.ldexp(man.astype(np.float64), -9), np.ldexp(1 + man / 8, exp - 7))
    raw[(b == 0) | (b == 0x7F)] = 0
    return (raw * 0.5).astype(F32)  # exact: at most 4 significant bits


#: ``ggml_ue4m3_to_fp32`` of each byte (half the UE4M3 value), float32 (256,).
UE4M3_HALF = _ue4m3_half_table()
UE4M3_HALF.setflags(write=False)


def ue4m3_to_float_half(u):
    """ggml's ``ggml_ue4m3_to_fp32``: half the UE4M3 value of bytes ``u``, float32."""
    return UE4M3_HALF[np.asarray(u, dtype=np.uint8)]


def ue4m3_from_float(x):
    """ggml's ``ggml_fp32_to_ue4m3`` of float32 ``x`` (any shape): uint8 UE4M3 bytes.

    Not positive (or NaN) -> 0; clamped to 448; below 2^-6: ``(int)(x * 512 + 0.5)`` in
    float32, capped at 7, 0 if below 1; otherwise the float32 mantissa cut to 3 bits and
    rounded half up on bit 19, with exponents that reach 15 stored as 0x7E (448).
    """
    x = np.asarray(x, dtype=F32)
    with np.errstate(invalid="ignore"):
        x = np.where(x > F32(448), F32(448), x)
    bits = x.view(np.int32)  # x >= 0 where it matters: the sign bit is clear
    ue_exp = ((bits >> 23) & 0xFF) - 127 + 7
    man = ((bits >> 20) & 7) + ((bits >> 19) & 1)
    carry = man > 7
    rounded_exp = ue_exp + carry
    normal = np.where(rounded_exp >= 15, 0x7E, (rounded_exp << 3) | np.where(carry, 0, man))
    with np.errstate(invalid="ignore"):
        sub = np.minimum(np.trunc(x * F32(512) + F32(0.5)), F32(7))  # float32, as in the C
        sub = np.where(sub >= 1, sub, 0).astype(np.int32)
        out = np.where(ue_exp <= 0, sub, np.where(ue_exp >= 15, 0x7E, normal))
        out = np.where(x > 0, out, 0)  # !(x > 0): 0, NaN included
    return out.astype(np.uint8)


# ---------------------------------------------------------------------------------------
# Literal references
# ---------------------------------------------------------------------------------------

def _best_index_reference(x, d):
    """``best_index_mxfp4(x, d)`` for float32 ``x`` (n, k) and ``d`` (n,): uint8 codes.

    The float32 errors ``|level * d - x|`` of all 16 levels; argmin returns the first
    smallest, as the C loop's strict ``<`` does (so 0 beats -0, and ties go to the smaller
    magnitude).
    """
    with np.errstate(over="ignore", invalid="ignore"):
        errs = np.abs(d[:, None, None] * _LEVELS - x[:, :, None])
    return errs.argmin(axis=2).astype(np.uint8)


def _quantize_mxfp4_reference(blocks):
    """MXFP4 of ``blocks`` (n, 32) float32 -> (n, 17) uint8."""
    blocks = np.asarray(blocks, dtype=F32)
    e = mxfp4_exponent(np.abs(blocks).max(axis=1))
    codes = _best_index_reference(blocks, e8m0_to_float_half(e))
    return np.concatenate([e[:, None], pack_nibbles(codes, layout="ggml").reshape(-1, 16)], axis=1)


def _dequantize_mxfp4_reference(blocks):
    """(n, 17) uint8 MXFP4 blocks -> (n, 32) float32."""
    d = e8m0_to_float_half(blocks[:, 0])
    with np.errstate(over="ignore"):
        return _LEVELS[codes_reference(blocks, 1)] * d[:, None]


def _nvfp4_codes(codes):
    """(n, 4, 16) codes -> (n, 32) bytes: per sub-block, element j low nibble of byte j,
    element j + 8 high nibble."""
    return (codes[..., :8] | (codes[..., 8:] << 4)).reshape(len(codes), 32)


def _quantize_nvfp4_reference(blocks):
    """NVFP4 of ``blocks`` (n, 64) float32 -> (n, 36) uint8."""
    subs = np.asarray(blocks, dtype=F32).reshape(-1, 16)
    ue = ue4m3_from_float(np.abs(subs).max(axis=1) / F32(6))
    codes = _best_index_reference(subs, UE4M3_HALF[ue]).reshape(-1, 4, 16)
    return np.concatenate([ue.reshape(-1, 4), _nvfp4_codes(codes)], axis=1)


def _dequantize_nvfp4_reference(blocks):
    """(n, 36) uint8 NVFP4 blocks -> (n, 64) float32."""
    n = len(blocks)
    d = UE4M3_HALF[blocks[:, :4]].reshape(n, 4, 1)
    qs = blocks[:, 4:].reshape(n, 4, 8)
    codes = np.concatenate([qs & 0x0F, qs >> 4], axis=2)
    return (_LEVELS[codes] * d).reshape(n, 64)


# ---------------------------------------------------------------------------------------
# Fast kernels
# ---------------------------------------------------------------------------------------

def _codes_from_thresholds(mag, x_bits, thresholds, scratch):
    """Codes of magnitudes ``mag`` (k, m) float32 against per-row ``thresholds`` (7 arrays
    broadcastable to ``mag``, increasing): the number of thresholds strictly below the
    magnitude, plus 8 for a negative ``x_bits`` (int32 view of the values) whose code is not 0.
    """
    codes = buf(scratch, "codes", mag.shape, np.uint8)
    above = buf(scratch, "above", mag.shape, np.bool_)
    np.greater(mag, thresholds[0], out=above)
    codes[...] = above
    negative = buf(scratch, "neg", mag.shape, np.bool_)
    np.less(x_bits, 0, out=negative)
    negative &= above
    for t in thresholds[1:]:
        np.greater(mag, t, out=above)
        codes += above.view(np.uint8)
    negative.view(np.uint8)[...] <<= 3
    codes |= negative.view(np.uint8)
    return codes


def _abs_and_max(x, scratch, group):
    """(|x| as float32 (n, k), max |x| per run of ``group`` values (float32))."""
    bits = x.reshape(-1).view(np.uint32)
    mag_bits = buf(scratch, "mag", (x.size,), np.uint32)
    np.bitwise_and(bits, _MAGNITUDE, out=mag_bits)
    amax = tree(np.maximum, mag_bits, x.size // group, buf(scratch, "tree", (x.size,), np.uint32))
    amax = amax.view(F32)
    require_finite(amax)  # NaN and Inf have the largest magnitude bits
    return mag_bits.view(F32).reshape(x.shape), amax


def _quantize_mxfp4_chunk(x, out, scratch, quant_weights=None):
    mag, amax = _abs_and_max(x, scratch, 32)
    e = mxfp4_exponent(amax)
    # |x| * 2^(127-e) is exact (a power of two; results below the first threshold may
    # underflow harmlessly) and puts the E2M1 grid at 0, 0.5, ..., 6 for every block.
    unit = np.ldexp(F32(1), 127 - e.astype(np.int32)).astype(F32)
    t = buf(scratch, "t", x.shape, F32)
    np.multiply(mag, unit[:, None], out=t)
    codes = _codes_from_thresholds(t, x.view(np.int32), _MIDPOINTS / F32(2), scratch)
    out[:, 0] = e
    store_codes(codes, out[:, 1:].view("V16")[:, 0], scratch)
    # e = 253 (amax within a float32 ulp of 2^128): 8 * d overflows to inf in the C's errors.
    bad = np.flatnonzero(e == 253)
    if bad.size:
        out[bad] = _quantize_mxfp4_reference(x[bad])


def _quantize_nvfp4_chunk(x, out, scratch, quant_weights=None):
    subs = x.reshape(-1, 16)
    mag, amax = _abs_and_max(subs, scratch, 16)
    ue = ue4m3_from_float(amax / F32(6))
    d = UE4M3_HALF[ue]
    # Exact comparisons against midpoint * d (at most 7 significant bits: exact in float32).
    # d = 0 (a sub-block below 1/1024 * 6) gives code 0 everywhere in the C: infinite
    # thresholds do the same.
    with np.errstate(divide="ignore"):
        d_eff = np.where(d > 0, d, F32(np.inf))
    thresholds = [(m * d_eff)[:, None] for m in _MIDPOINTS]
    codes = _codes_from_thresholds(mag, subs.view(np.int32), thresholds, scratch).reshape(-1, 4, 16)
    out[:, :4] = ue.reshape(-1, 4)
    words = codes.view(np.uint64)  # (n, 4, 2): codes 0-7 and 8-15 of each sub-block
    packed = out[:, 4:].view(np.uint64)  # (n, 4), unaligned rows: fine for ufuncs
    np.left_shift(words[..., 1], np.uint64(4), out=packed)
    packed |= words[..., 0]
    # Beyond 16 * d, float32 absorption in the C's |level * d - x| can tie every level.
    over = amax > F32(16) * d
    over &= d > 0
    if over.any():
        bad = np.unique(np.flatnonzero(over) // 4)
        out[bad] = _quantize_nvfp4_reference(x[bad])


def _pair_tables():
    """For every pair of code bytes (b0 | b1 << 8): the float32 levels of their low nibbles
    and of their high nibbles, each pair as one uint64 (little-endian: b0's first)."""
    pair = np.arange(65536)
    b0, b1 = pair & 0xFF, pair >> 8
    low = np.stack([_LEVELS[b0 & 15], _LEVELS[b1 & 15]], axis=1)
    high = np.stack([_LEVELS[b0 >> 4], _LEVELS[b1 >> 4]], axis=1)
    return low.view(np.uint64)[:, 0].copy(), high.view(np.uint64)[:, 0].copy()


_LOW_PAIRS, _HIGH_PAIRS = _pair_tables()


def _levels_of_bytes(qs, low_out, high_out):
    """Levels of the low and high nibbles of code bytes ``qs`` (k, m) uint8, m even, into
    float32 ``low_out`` / ``high_out`` (k, m) (row-contiguous views)."""
    idx = qs.view(np.uint16).astype(np.intp)
    np.take(_LOW_PAIRS, idx, out=low_out.view(np.uint64), mode="clip")
    np.take(_HIGH_PAIRS, idx, out=high_out.view(np.uint64), mode="clip")


def _dequantize_mxfp4_chunk(b, out, scratch):
    qs = buf(scratch, "qs", (len(b), 16), np.uint8)
    qs[...] = b[:, 1:]
    low = buf(scratch, "low", (len(b), 16), F32)
    high = buf(scratch, "high", (len(b), 16), F32)
    _levels_of_bytes(qs, low, high)
    d = e8m0_to_float_half(b[:, 0])[:, None]
    with np.errstate(over="ignore"):  # e >= 253: 12 * 2^125 and above are inf, as in ggml
        np.multiply(low, d, out=out[:, :16])
        np.multiply(high, d, out=out[:, 16:])


def _dequantize_nvfp4_chunk(b, out, scratch):
    n = len(b)
    qs = buf(scratch, "qs", (4 * n, 8), np.uint8)
    qs.reshape(n, 32)[...] = b[:, 4:]
    low = buf(scratch, "low", (4 * n, 8), F32)
    high = buf(scratch, "high", (4 * n, 8), F32)
    _levels_of_bytes(qs, low, high)
    d = UE4M3_HALF[b[:, :4]].reshape(-1, 1)
    subs = out.reshape(4 * n, 16)
    np.multiply(low, d, out=subs[:, :8])
    np.multiply(high, d, out=subs[:, 8:])


class MXFP4(BlockType):
    """MXFP4 (OCP Microscaling FP4): 32 E2M1 codes under one E8M0 power-of-two scale
    (ggml ``quantize_row_mxfp4_ref`` / ``dequantize_row_mxfp4``). 17 bytes: e, 16 code bytes.
    4.25 bits per weight. The checkpoint layout of gpt-oss (separate ``blocks`` and
    ``scales`` tensors) is :mod:`int4ref.interop.fp4_checkpoint`."""

    name = "MXFP4"
    block_size = 32
    type_size = 17
    block_dtype = np.dtype([("e", "u1"), ("qs", "V16")])
    float16_fields = ()
    accepts_imatrix = False
    quantize_chunk = staticmethod(_quantize_mxfp4_chunk)
    dequantize_chunk = staticmethod(_dequantize_mxfp4_chunk)
    quantize_blocks = staticmethod(_quantize_mxfp4_reference)
    dequantize_blocks = staticmethod(_dequantize_mxfp4_reference)


class NVFP4(BlockType):
    """NVFP4 as ggml stores it: 64 values as four 16-value sub-blocks, each with a UE4M3 scale
    (ggml ``quantize_row_nvfp4_ref`` / ``dequantize_row_nvfp4``; GGML type 40). 36 bytes:
    d[4], 32 code bytes. 4.5 bits per weight. No per-tensor scale (NVFP4 checkpoints carry
    one: :mod:`int4ref.interop.fp4_checkpoint`)."""

    name = "NVFP4"
    block_size = 64
    type_size = 36
    block_dtype = np.dtype([("d", "u1", (4,)), ("qs", "u1", (32,))])
    float16_fields = ()
    accepts_imatrix = False
    quantize_chunk = staticmethod(_quantize_nvfp4_chunk)
    dequantize_chunk = staticmethod(_dequantize_nvfp4_chunk)
    quantize_blocks = staticmethod(_quantize_nvfp4_reference)
    dequantize_blocks = staticmethod(_dequantize_nvfp4_reference)

    @classmethod
    def chunk_blocks(cls) -> int:
        return 8192  # 2 MiB of float32, as the 32-value types' chunks


#: The block types this module defines.
TYPES = (MXFP4, NVFP4)
