"""Q8_0: 32 values as int8 codes times a float16 scale (ggml's 8-bit block type).

GGUF files keep some tensors in Q8_0 (SmolLM2's token embeddings, for one), and ggml's CPU
quantizes activations to it before a Q4_0 dot product (:mod:`int4ref.interop.ggml_dot`).
The bytes are those of ggml's ``quantize_row_q8_0_ref`` (what ``ggml_quantize_chunk`` runs,
and gguf-py's ``Q8_0``): ``d = amax / 127``, ``id = 1 / d`` (0 for a block of zeros), codes
``roundf(x * id)``, rounded half away from zero; ``d`` is stored as float16::

    Q8_0   34 bytes  [0:2] d  float16   [2:34] 32 int8 codes     value  d * q
"""
from __future__ import annotations

import numpy as np

from ._blocks import F32, BlockType, require_finite

__all__ = ["Q8_0", "TYPES", "q8_0_codes"]


def q8_0_codes(blocks, rounding: str = "reference"):
    """Scale and codes of float32 ``blocks`` (..., 32): ``(d float32 (...), q int8 (..., 32))``.

    ``rounding="reference"``: ggml's ``quantize_row_q8_0_ref`` (``id = 1 / (amax / 127)``,
    half away from zero); ``"avx2"``: ggml's x86 SIMD ``quantize_row_q8_0`` (``id = 127 /
    amax``, half to even). The codes use the float32 ``d``; ggml stores it as float16.
    """
    amax = np.abs(blocks).max(axis=-1, keepdims=True)
    d = amax / F32(127)
    with np.errstate(divide="ignore", invalid="ignore"):
        if rounding == "reference":
            inv = np.where(d == 0, F32(0), F32(1) / d)
            scaled = blocks * inv
            # roundf: nearest, ties away from zero (np.rint is right everywhere but at ties)
            ties = np.abs(scaled - np.trunc(scaled)) == F32(0.5)
            codes = np.where(ties, np.trunc(scaled) + np.sign(scaled), np.rint(scaled))
        elif rounding == "avx2":
            inv = np.where(amax == 0, F32(0), F32(127) / amax)
            codes = np.rint(blocks * inv)  # half to even
        else:
            raise ValueError(f"rounding must be 'reference' or 'avx2', got {rounding!r}")
    return d[..., 0], codes.astype(np.int8)


def _quantize_q8_0_reference(blocks):
    """Q8_0 of ``blocks`` (n, 32) float32 -> (n, 34) uint8."""
    d, q = q8_0_codes(np.asarray(blocks, dtype=F32))
    with np.errstate(over="ignore"):
        d16 = d.astype("<f2").reshape(-1, 1).view(np.uint8)
    return np.concatenate([d16, q.view(np.uint8)], axis=1)


def _dequantize_q8_0_reference(blocks):
    """(n, 34) uint8 Q8_0 blocks -> (n, 32) float32."""
    d = blocks[:, 0:2].copy().view("<f2").astype(F32)
    return d * np.ascontiguousarray(blocks[:, 2:]).view(np.int8).astype(F32)


def _quantize_q8_0_chunk(x, out, scratch, quant_weights=None):
    require_finite(x.max(axis=1))
    require_finite(x.min(axis=1))
    out[...] = _quantize_q8_0_reference(x)


def _dequantize_q8_0_chunk(b, out, scratch):
    with np.errstate(invalid="ignore"):  # an inf scale times code 0 gives NaN, as in gguf
        out[...] = _dequantize_q8_0_reference(b)


class Q8_0(BlockType):
    """Q8_0: ``d * q``, int8 ``q``, ``d = amax / 127`` (ggml ``quantize_row_q8_0_ref`` /
    ``dequantize_row_q8_0``). 34 bytes: d, 32 int8 codes."""

    name = "Q8_0"
    type_size = 34
    scale_fields = ("d",)
    float16_fields = (("d", 0),)
    block_dtype = np.dtype([("d", "<f2"), ("qs", "i1", (32,))])
    quantize_chunk = staticmethod(_quantize_q8_0_chunk)
    dequantize_chunk = staticmethod(_dequantize_q8_0_chunk)
    quantize_blocks = staticmethod(_quantize_q8_0_reference)
    dequantize_blocks = staticmethod(_dequantize_q8_0_reference)


#: The block types this module defines.
TYPES = (Q8_0,)
