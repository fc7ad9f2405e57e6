"""MXFP4 and NVFP4 as model checkpoints store them (safetensors), and to and from ggml's blocks.

Both formats store E2M1 codes (:data:`int4ref.codebooks.FP4_E2M1` times 6: magnitudes 0, 0.5,
1, 1.5, 2, 3, 4, 6, bit 3 the sign) two per byte, **element 2b in the low nibble and 2b + 1 in
the high nibble** (ggml instead pairs element j with j + 16 in MXFP4, j with j + 8 per 16 in
NVFP4), with the scales in separate tensors.

gpt-oss MXFP4 (the expert weights of gpt-oss; read by transformers'
``integrations/mxfp4.py``, ``convert_moe_packed_tensors``)::

    <name>_blocks  uint8 (..., G, 16)   32 codes per group, element 2b low nibble of byte b
    <name>_scales  uint8 (..., G)       E8M0 exponent s, bias 127
    value = E2M1[c] * 2^(s - 127)       (transformers: torch.ldexp of the E2M1 table value)

ggml's MXFP4 block holds the same two things (e = s, ``kvalues * 2^(e-128)`` is the same
number), so :func:`ggml_mxfp4_to_gpt_oss` and :func:`gpt_oss_to_ggml_mxfp4` only move bytes
and nibbles: lossless both ways, and the values agree for every scale byte but 255 (E8M0's
NaN: ggml decodes it as 2^127, transformers as ldexp(v, 128): inf, or 0 for zero codes).
:func:`quantize_gpt_oss` uses ggml's rule (:mod:`int4ref.interop.gguf.fp4`; elements round to
nearest with ties toward zero); it is not checked against gpt-oss's own (GPU, Triton)
quantizer.

NVFP4 checkpoints, as compressed-tensors 0.20.1 writes them (``nvfp4-pack-quantized``)::

    weight_packed        uint8 (..., n/2)    codes, element 2b low nibble of byte b
    weight_scale         float8_e4m3fn (..., n/16), here its uint8 bytes
    weight_global_scale  float32 (1,)        gs = 448 * 6 / max|W| (a reciprocal scale)
    value = E2M1[c] * (weight_scale / gs)    in float32

ModelOpt stores ``weight_scale_2`` = 1/gs instead (compressed-tensors' converter
``entrypoints/convert/converters/modelopt_nvfp4.py`` sets ``weight_global_scale = 1 /
weight_scale_2``: :func:`global_scale_from_modelopt`). The quantizer :func:`quantize_nvfp4`
follows compressed-tensors' CPU path in float32 (``generate_gparam``, ``calculate_qparams``,
``_quantize``, ``cast_to_fp4``, ``pack_fp4_to_uint8``): group scale
``fp8(gs * (amax / 6))`` (round half to even, 0 replaced by 0.125), elements ``x / (scale /
gs)`` clamped to [-6, 6] and rounded half to even onto E2M1; a value that rounds to 0 keeps
the sign of a negative input (code 8, E2M1's -0), except -0.0 itself (``torch.sign(-0.0)`` is 0).

ggml's NVFP4 block has the FP8 scales and codes but no per-tensor scale: a checkpoint maps onto
it without loss only when gs == 1 (and the row length is a multiple of 64, and no scale byte
has its sign bit set or is NaN, which compressed-tensors never writes). Real checkpoints have
gs = 2688 / max|W|, so :func:`nvfp4_checkpoint_to_ggml` refuses them unless asked to carry
gs separately (``keep_global_scale=True``); :func:`ggml_nvfp4_to_checkpoint` always works
(gs = 1).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .._checks import as_float_array
from ..codebooks import FP4_E2M1
from . import gguf

__all__ = [
    "E2M1_VALUES",
    "NVFP4Checkpoint",
    "dequantize_gpt_oss",
    "dequantize_nvfp4",
    "e4m3fn_from_float",
    "e4m3fn_to_float",
    "ggml_mxfp4_to_gpt_oss",
    "ggml_nvfp4_to_checkpoint",
    "global_scale_from_modelopt",
    "gpt_oss_to_ggml_mxfp4",
    "nvfp4_checkpoint_to_ggml",
    "nvfp4_global_scale",
    "quantize_gpt_oss",
    "quantize_nvfp4",
]

F32 = np.float32

#: E2M1 value of each 4-bit code (bit 3 the sign, code 8 is -0.0), float32: the table
#: transformers (``FP4_VALUES``) and compressed-tensors (``kE2M1ToFloat`` with a sign) use.
E2M1_VALUES = (FP4_E2M1 * F32(6)).astype(F32)
E2M1_VALUES.setflags(write=False)
assert np.array_equal(E2M1_VALUES[:8], [0, 0.5, 1, 1.5, 2, 3, 4, 6])

#: E2M1 decision points for round-half-to-even (compressed-tensors' ``cast_to_fp4``): a
#: magnitude above (">") or at-or-above (">=") each moves one code up.
_RNE_STEPS = ((0.25, False), (0.75, True), (1.25, False), (1.75, True), (2.5, False), (3.5, True), (5.0, False))
_E4M3_MAX = F32(448)
_E2M1_MAX = F32(6)


# ---------------------------------------------------------------------------------------
# Nibble orders
# ---------------------------------------------------------------------------------------

def _pack_adjacent(codes):
    """Codes (..., 2k) uint8 -> (..., k) bytes: element 2b low nibble, 2b + 1 high."""
    return codes[..., 0::2] | (codes[..., 1::2] << 4)


def _unpack_adjacent(packed):
    """Inverse of :func:`_pack_adjacent`: bytes (..., k) -> codes (..., 2k)."""
    out = np.empty((*packed.shape[:-1], 2 * packed.shape[-1]), dtype=np.uint8)
    out[..., 0::2] = packed & 0x0F
    out[..., 1::2] = packed >> 4
    return out


def _uint8(a, name):
    a = np.asarray(a)
    if a.dtype != np.uint8:
        raise TypeError(f"{name} must be uint8 bytes, got {a.dtype}")
    if a.ndim == 0:
        raise ValueError(f"{name} must be an array, got a scalar")
    return a


# ---------------------------------------------------------------------------------------
# gpt-oss MXFP4
# ---------------------------------------------------------------------------------------

def _check_gpt_oss(blocks, scales):
    blocks = _uint8(blocks, "blocks")
    scales = _uint8(scales, "scales")
    if blocks.ndim < 2 or blocks.shape[-1] != 16 or blocks.shape[:-1] != scales.shape:
        raise ValueError(f"gpt-oss MXFP4 wants blocks (..., G, 16) and scales (..., G); got blocks "
                         f"{blocks.shape} and scales {scales.shape}")
    return blocks, scales


def ggml_mxfp4_to_gpt_oss(data):
    """ggml MXFP4 bytes (..., G * 17) -> gpt-oss ``(blocks (..., G, 16), scales (..., G))``.

    Lossless: the scale byte is copied, the 32 codes are re-paired (ggml: j with j + 16;
    gpt-oss: 2b with 2b + 1).
    """
    data = _uint8(data, "data")
    if data.shape[-1] % 17:
        raise ValueError(f"ggml MXFP4 rows are blocks of 17 bytes; last dimension {data.shape[-1]} is not a multiple")
    blk = data.reshape(*data.shape[:-1], data.shape[-1] // 17, 17)
    qs = blk[..., 1:]
    codes = np.concatenate([qs & 0x0F, qs >> 4], axis=-1)  # ggml order: elements 0..15, 16..31
    return np.ascontiguousarray(_pack_adjacent(codes)), np.ascontiguousarray(blk[..., 0])


def gpt_oss_to_ggml_mxfp4(blocks, scales):
    """gpt-oss ``blocks (..., G, 16)``, ``scales (..., G)`` -> ggml MXFP4 bytes (..., G * 17).

    The inverse of :func:`ggml_mxfp4_to_gpt_oss`; the result dequantizes with
    ``int4ref.interop.gguf.dequantize(data, "MXFP4")`` (and gguf-py, and ggml).
    """
    blocks, scales = _check_gpt_oss(blocks, scales)
    codes = _unpack_adjacent(blocks)
    qs = codes[..., :16] | (codes[..., 16:] << 4)
    out = np.concatenate([scales[..., None], qs], axis=-1)
    return out.reshape(*scales.shape[:-1], scales.shape[-1] * 17)


def quantize_gpt_oss(x):
    """Quantize ``x`` (..., n), n a multiple of 32, to gpt-oss MXFP4 ``(blocks, scales)``.

    Groups are runs of 32 along the last axis (gpt-oss quantizes each expert matrix along its
    input dimension: ``x`` of shape (experts, out, in)). The rule is ggml's MXFP4 quantizer
    (shared exponent floor(log2 amax) - 2, nearest E2M1 with ties toward zero).
    """
    return ggml_mxfp4_to_gpt_oss(gguf.quantize(x, "MXFP4"))


def _pow2_scales():
    """2^(s - 127) for each E8M0 byte as float64 (exact; 2^128 for s = 255)."""
    return np.ldexp(np.float64(1), np.arange(256) - 127)


_POW2 = _pow2_scales()


def dequantize_gpt_oss(blocks, scales):
    """gpt-oss MXFP4 ``blocks (..., G, 16)``, ``scales (..., G)`` -> float32 (..., G * 32).

    ``E2M1[c] * 2^(s-127)`` rounded once to float32, as ``torch.ldexp`` does in transformers'
    ``convert_moe_packed_tensors`` (s = 255 gives inf for nonzero codes and a signed 0 for
    zero codes; s = 0 the subnormal 2^-127 scale). transformers then transposes the last two
    dimensions of each expert: its result is ``dequantize_gpt_oss(...).swapaxes(-1, -2)``.
    """
    blocks, scales = _check_gpt_oss(blocks, scales)
    values = E2M1_VALUES.astype(np.float64)[_unpack_adjacent(blocks)] * _POW2[scales][..., None]
    with np.errstate(over="ignore"):
        values = values.astype(F32)
    return values.reshape(*scales.shape[:-1], scales.shape[-1] * 32)


# ---------------------------------------------------------------------------------------
# FP8 E4M3 (the OCP "E4M3FN": no infinities, 0x7F / 0xFF NaN, max 448)
# ---------------------------------------------------------------------------------------

def _e4m3fn_table():
    b = np.arange(256)
    exp, man = (b >> 3) & 0xF, b & 7
    mag = np.where(exp == 0, np.ldexp(man.astype(np.float64), -9), np.ldexp(1 + man / 8, exp - 7))
    mag[(b & 0x7F) == 0x7F] = np.nan
    return np.where(b & 0x80, -mag, mag).astype(F32)


_E4M3FN = _e4m3fn_table()


def e4m3fn_to_float(b):
    """Float32 values of FP8 E4M3FN bytes ``b`` (bit 7 sign, bias 7; 0x7F and 0xFF NaN)."""
    return _E4M3FN[_uint8(b, "b")]


def e4m3fn_from_float(x):
    """FP8 E4M3FN bytes of float32 ``x`` in [-448, 448], rounded to nearest, ties to even
    (subnormals on the 2^-9 grid), as ``torch.Tensor.to(torch.float8_e4m3fn)`` does.

    Values beyond 448 or NaN raise ValueError (compressed-tensors clamps to 448 first).
    """
    x = np.asarray(x, dtype=F32)
    if not (np.abs(x) <= _E4M3_MAX).all():
        raise ValueError("e4m3fn_from_float takes finite values in [-448, 448] (clamp first)")
    sign = ((x.view(np.uint32) >> 24) & 0x80).astype(np.uint8)
    mag = np.abs(x)
    bits = mag.view(np.uint32).astype(np.int64)
    normal = ((bits + 0x7FFFF + ((bits >> 20) & 1)) >> 20) - ((127 - 7) << 3)  # mantissa to 3 bits, RNE
    sub = np.rint(mag * F32(512)).astype(np.int64)  # exact product; rint is half to even
    code = np.where(mag < F32(2.0**-6), sub, normal)
    return (code.astype(np.uint8) | sign).astype(np.uint8)


# ---------------------------------------------------------------------------------------
# NVFP4 checkpoints (compressed-tensors layout)
# ---------------------------------------------------------------------------------------

class NVFP4Checkpoint(NamedTuple):
    """One NVFP4 weight as compressed-tensors stores it.

    ``weight_packed`` uint8 (..., n/2); ``weight_scale`` uint8 (..., n/16), the bytes of the
    float8_e4m3fn tensor (``torch.from_numpy(b).view(torch.float8_e4m3fn)``);
    ``weight_global_scale`` float32 (1,).
    """

    weight_packed: np.ndarray
    weight_scale: np.ndarray
    weight_global_scale: np.ndarray


def nvfp4_global_scale(x) -> np.ndarray:
    """compressed-tensors' ``generate_gparam`` for a tensor ``x``: float32 (1,).

    ``(1 / max(max|x|, tiny)) * 2688`` in float32 (``2688.0 / tensor`` is
    ``tensor.reciprocal() * 2688`` in torch), and 1.0 where that overflows (an all-zero or
    tiny tensor).
    """
    x = as_float_array(x, "x").astype(F32)
    amax = max(np.abs(x).max(initial=F32(0)), np.finfo(F32).tiny)
    with np.errstate(over="ignore", divide="ignore"):
        gs = (F32(1) / F32(amax)) * (_E4M3_MAX * _E2M1_MAX)  # 2688 exactly
    if not np.isfinite(gs):
        gs = F32(1)
    return np.array([gs], dtype=F32)


def global_scale_from_modelopt(weight_scale_2) -> np.ndarray:
    """ModelOpt's ``weight_scale_2`` -> compressed-tensors' ``weight_global_scale``: 1 / s2
    in float32 (compressed-tensors' ModelOpt converter)."""
    s2 = np.asarray(weight_scale_2, dtype=F32).reshape(-1)
    with np.errstate(divide="ignore"):
        return (F32(1) / s2).astype(F32)


def _group_scales(groups, gs):
    """compressed-tensors' ``calculate_qparams`` for symmetric FP4 groups (.., 16): float32
    scales already rounded to E4M3 (0 replaced by 0.125), and their E4M3 bytes."""
    amax = np.abs(groups).max(axis=-1)
    with np.errstate(over="ignore"):
        scale = gs * (amax / F32(6))
    scale = np.minimum(scale, _E4M3_MAX)  # clamp(-448, 448); scale >= 0
    code = e4m3fn_from_float(scale)
    code[code == 0] = 0x20  # scales == 0 -> eps 0.125 (E4M3 0x20)
    return _E4M3FN[code], code


def _round_e2m1_rne(v):
    """compressed-tensors' ``cast_to_fp4`` + ``pack_fp4_to_uint8`` code of float32 ``v``
    (already clamped to [-6, 6]): magnitude code from the RNE steps, bit 3 = ``signbit(|q| *
    sign(v))`` (so -0.0 -> code 0, a negative value rounding to 0 -> code 8)."""
    mag = np.abs(v)
    code = np.zeros(v.shape, dtype=np.uint8)
    for step, inclusive in _RNE_STEPS:
        code += (mag >= step) if inclusive else (mag > step)
    code |= np.where(v < 0, np.uint8(8), np.uint8(0))
    return code


def quantize_nvfp4(x, global_scale=None) -> NVFP4Checkpoint:
    """Quantize ``x`` (..., n), n a multiple of 16, to an NVFP4 checkpoint (compressed-tensors).

    ``global_scale``: None (compute it: :func:`nvfp4_global_scale`, max over the whole of
    ``x``, as compressed-tensors' TENSOR_GROUP strategy does for a weight), or a float32 to use.
    Everything is float32, in compressed-tensors' order: scale = fp8(gs * (amax / 6));
    ``x / (scale / gs)``, clamped to [-6, 6], rounded half to even onto E2M1.
    """
    x = as_float_array(x, "x").astype(F32)
    if x.ndim == 0 or x.shape[-1] == 0 or x.shape[-1] % 16:
        raise ValueError(f"NVFP4 groups 16 values along the last axis; got shape {x.shape}")
    if global_scale is None:
        gs = nvfp4_global_scale(x)
    else:
        gs = np.asarray(global_scale, dtype=F32).reshape(-1)
        if gs.size != 1 or not (np.isfinite(gs).all() and gs[0] > 0):
            raise ValueError(f"global_scale must be one positive finite float32, got {global_scale!r}")
    groups = x.reshape(*x.shape[:-1], x.shape[-1] // 16, 16)
    scale, scale_code = _group_scales(groups, gs[0])
    step = (scale / gs[0]).astype(F32)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        v = groups / step[..., None]
    v = np.clip(v, -_E2M1_MAX, _E2M1_MAX)
    codes = _round_e2m1_rne(v).reshape(x.shape)
    return NVFP4Checkpoint(_pack_adjacent(codes), scale_code, gs.astype(F32))


def dequantize_nvfp4(weight_packed, weight_scale, weight_global_scale) -> np.ndarray:
    """NVFP4 checkpoint tensors -> float32 (..., n): ``E2M1[c] * (scale / gs)`` in float32.

    ``weight_scale`` as E4M3FN bytes (uint8); ``weight_global_scale`` float32 (1,) or a scalar.
    compressed-tensors' ``decompress`` computes exactly this and then casts to bfloat16.
    """
    packed = _uint8(weight_packed, "weight_packed")
    scale = _uint8(weight_scale, "weight_scale")
    n = 2 * packed.shape[-1]
    if n % 16 or scale.shape != (*packed.shape[:-1], n // 16):
        raise ValueError(f"weight_packed {packed.shape} holds {n} values per row: weight_scale must be "
                         f"{(*packed.shape[:-1], n // 16)}, got {scale.shape}")
    gs = np.asarray(weight_global_scale, dtype=F32).reshape(-1)
    if gs.size != 1:
        raise ValueError(f"weight_global_scale must hold one value, got shape {np.shape(weight_global_scale)}")
    with np.errstate(divide="ignore", invalid="ignore"):
        step = (_E4M3FN[scale] / gs[0]).astype(F32)
    codes = _unpack_adjacent(packed).reshape(*scale.shape, 16)
    with np.errstate(over="ignore", invalid="ignore"):
        return (E2M1_VALUES[codes] * step[..., None]).reshape(*packed.shape[:-1], n)


def ggml_nvfp4_to_checkpoint(data) -> NVFP4Checkpoint:
    """ggml NVFP4 bytes (..., k * 36) -> an NVFP4 checkpoint with global scale 1.

    Values agree bit for bit with ggml's (``E2M1[c] * e4m3(d)`` either way). ggml's UE4M3
    ignores bit 7 of a scale byte (it is cleared here) and reads 0x7F as 0 (written as 0x00
    here, E4M3FN's 0x7F being NaN); 0xFF, which ggml reads as 480, beyond E4M3FN's 448, raises
    ValueError. ggml's quantizer writes none of these.
    """
    data = _uint8(data, "data")
    if data.shape[-1] % 36:
        raise ValueError(f"ggml NVFP4 rows are blocks of 36 bytes; last dimension {data.shape[-1]} is not a multiple")
    blk = data.reshape(*data.shape[:-1], data.shape[-1] // 36, 36)
    if (blk[..., :4] == 0xFF).any():
        raise ValueError("a ggml NVFP4 scale byte is 0xFF, which ggml decodes as 480: no E4M3FN value holds it")
    scale = blk[..., :4] & 0x7F
    scale = np.where(scale == 0x7F, np.uint8(0), scale).astype(np.uint8)
    qs = blk[..., 4:].reshape(*blk.shape[:-1], 4, 8)
    codes = np.concatenate([qs & 0x0F, qs >> 4], axis=-1)  # per 16: ggml's j / j + 8
    rows = data.shape[:-1]
    return NVFP4Checkpoint(
        np.ascontiguousarray(_pack_adjacent(codes).reshape(*rows, -1)),
        np.ascontiguousarray(scale.reshape(*rows, -1)),
        np.ones(1, dtype=F32),
    )


def nvfp4_checkpoint_to_ggml(weight_packed, weight_scale, weight_global_scale, keep_global_scale=False):
    """NVFP4 checkpoint tensors -> ggml NVFP4 bytes (..., n / 64 * 36).

    Lossless only when the global scale is 1, n is a multiple of 64 and every scale byte is a
    non-negative, non-NaN E4M3FN value: then ggml's values equal :func:`dequantize_nvfp4`'s
    bit for bit. Otherwise ValueError, naming the reason, except that with
    ``keep_global_scale=True`` a global scale other than 1 is allowed and returned:
    ``(data, gs)``, where ggml's values are ``E2M1[c] * scale`` and the checkpoint's are those
    divided by gs, up to one float32 rounding (``E2M1[c] * (scale / gs)`` rounds once in
    compressed-tensors, ``(E2M1[c] * scale) / gs`` would round after an exact product).
    """
    packed = _uint8(weight_packed, "weight_packed")
    scale = _uint8(weight_scale, "weight_scale")
    n = 2 * packed.shape[-1]
    if scale.shape != (*packed.shape[:-1], n // 16) or n % 16:
        raise ValueError(f"weight_scale must be {(*packed.shape[:-1], n // 16)} for weight_packed "
                         f"{packed.shape}, got {scale.shape}")
    if n % 64:
        raise ValueError(f"ggml's NVFP4 block holds 64 values; rows of {n} values do not fit (pad to a multiple of 64)")
    gs = np.asarray(weight_global_scale, dtype=F32).reshape(-1)
    if gs.size != 1:
        raise ValueError("weight_global_scale must hold one value")
    if gs[0] != 1 and not keep_global_scale:
        raise ValueError(f"weight_global_scale is {gs[0]!r}, not 1: ggml's NVFP4 block has no per-tensor scale, "
                         f"so its values would be the checkpoint's times {gs[0]!r}; pass keep_global_scale=True "
                         f"to get the bytes and apply 1/gs yourself")
    if (scale & 0x80).any() or ((scale & 0x7F) == 0x7F).any():
        raise ValueError("weight_scale has negative or NaN E4M3 bytes, which ggml's UE4M3 cannot hold")
    codes = _unpack_adjacent(packed).reshape(*scale.shape, 16)
    qs = codes[..., :8] | (codes[..., 8:] << 4)  # (..., n/16, 8)
    rows = packed.shape[:-1]
    k = n // 64
    out = np.concatenate([scale.reshape(*rows, k, 4), qs.reshape(*rows, k, 32)], axis=-1).reshape(*rows, k * 36)
    return (out, gs.copy()) if keep_global_scale else out
