"""How ggml multiplies Q4_0 weights on the CPU: the activations go to 8 bits too.

llama.cpp does not run a GGUF ``Q4_0`` matrix as W4A16 (dequantize the weights, multiply
in 16 or 32 bits). ggml's CPU type traits give ``Q4_0`` the ``vec_dot_type`` ``Q8_0``: each
row of activations is first quantized to ``Q8_0`` blocks of 32 (an int8 code per value and
one float16 scale per block), and the dot product of a weight row with an activation row
is an integer sum per block, scaled by the two blocks' float16 scales::

    y = sum over blocks b of  sumi_b * d_w[b] * d_x[b],   sumi_b = sum_j (c_j - 8) * q_j

with ``c`` the weight's 4-bit codes and ``q`` the activation's int8 codes
(``ggml_vec_dot_q4_0_q8_0_generic`` in ggml/src/ggml-cpu/quants.c; the sum over blocks is
a float32 accumulation in block order there, SIMD builds accumulate in several lanes).

``Q8_0`` has two roundings in ggml. The reference ``quantize_row_q8_0_ref`` (and
gguf-py's ``Q8_0``, which this module matches byte for byte) computes ``d = amax / 127``,
``id = 1 / d`` and ``roundf(x * id)``, half away from zero. The x86 AVX/AVX2 build that
most CPUs run computes ``id = 127 / amax`` and rounds half to even
(``_mm256_round_ps(..., _MM_ROUND_NEAREST)``), and ARM NEON also rounds half to even; they
differ from the reference only on ties and on the last bit of ``id``. On CUDA, ggml
quantizes activations to ``Q8_1`` (``Q8_0`` plus the block's sum) instead.

Shapes: ``x`` (..., n) float32 with ``n`` a multiple of 32 gives ``Q8_0`` blocks as
``(d float16 (..., n // 32), qs int8 (..., n // 32, 32))``; see :func:`quantize_q8_0`.
"""
from __future__ import annotations

import numpy as np

from .._checks import as_float_array
from ..packing import unpack_nibbles
from . import gguf
from .gguf.q8_0 import q8_0_codes

__all__ = ["Q8_0_SIZE", "quantize_q8_0", "q8_0_bytes", "dequantize_q8_0", "matmul_q4_0_q8_0"]

#: Bytes per Q8_0 block of 32 values: a float16 scale and 32 int8 codes.
Q8_0_SIZE = gguf.Q8_0.type_size
_F32 = np.float32


def quantize_q8_0(x, rounding: str = "reference"):
    """Quantize ``x`` (float32/16/64, shape (..., n), n a multiple of 32) to Q8_0.

    ``rounding``: ``"reference"`` (ggml's ``quantize_row_q8_0_ref`` and gguf-py:
    ``id = 1 / (amax / 127)``, half away from zero) or ``"avx2"`` (ggml's x86 SIMD
    ``quantize_row_q8_0``: ``id = 127 / amax``, half to even). Returns ``(d, qs)``:
    ``d`` float16 of shape (..., n // 32), ``qs`` int8 of shape (..., n // 32, 32).
    The codes are computed with the float32 ``d``; the stored ``d`` is rounded to float16,
    as in ggml.
    """
    if rounding not in ("reference", "avx2"):
        raise ValueError(f"rounding must be 'reference' or 'avx2', got {rounding!r}")
    arr = as_float_array(x, "x").astype(_F32, copy=False)
    if arr.ndim == 0 or arr.shape[-1] == 0 or arr.shape[-1] % gguf.BLOCK_SIZE:
        raise ValueError(f"the last axis of x must be a positive multiple of {gguf.BLOCK_SIZE}, got shape {arr.shape}")
    blocks = arr.reshape(*arr.shape[:-1], -1, gguf.BLOCK_SIZE)
    d, codes = q8_0_codes(blocks, rounding)
    return d.astype(np.float16), codes


def q8_0_bytes(d, qs) -> np.ndarray:
    """The Q8_0 blocks ``(d, qs)`` of :func:`quantize_q8_0` as GGUF bytes: uint8 of shape
    (..., n_blocks * 34), each block ``[0:2] d float16, [2:34] 32 int8 codes``."""
    d = np.asarray(d, dtype="<f2")
    qs = np.asarray(qs, dtype=np.int8)
    out = np.concatenate([d[..., None].view(np.uint8), qs.view(np.uint8)], axis=-1)
    return out.reshape(*d.shape[:-1], -1)


def dequantize_q8_0(d, qs) -> np.ndarray:
    """float32 values ``qs * d`` of shape (..., n_blocks * 32)."""
    values = np.asarray(qs).astype(_F32) * np.asarray(d).astype(_F32)[..., None]
    return values.reshape(*values.shape[:-2], -1)


def matmul_q4_0_q8_0(w_q4_0, x, rounding: str = "reference") -> np.ndarray:
    """``x @ W.T`` the way ggml's CPU computes it for a Q4_0 weight.

    ``w_q4_0``: uint8 Q4_0 bytes of shape (out_features, in_features // 32 * 18), as
    :func:`int4ref.interop.gguf.quantize` writes them. ``x``: activations (tokens,
    in_features). The activations are quantized to Q8_0 (``rounding`` as in
    :func:`quantize_q8_0`), each block product is an integer sum times ``d_w * d_x`` in
    float32, and the blocks are accumulated in float32 in order (ggml's generic C; its SIMD
    kernels add in another order, so the last bits may differ there). Returns float32
    (tokens, out_features).
    """
    w = np.asarray(w_q4_0)
    if w.dtype != np.uint8 or w.ndim != 2 or w.shape[1] % gguf.TYPE_SIZE["Q4_0"]:
        raise ValueError(f"w_q4_0 must be uint8 Q4_0 blocks of shape (out, n_blocks * 18), got {w.dtype} {w.shape}")
    n_blocks = w.shape[1] // gguf.TYPE_SIZE["Q4_0"]
    d_x, q_x = quantize_q8_0(x, rounding)
    if q_x.ndim != 3 or q_x.shape[1] != n_blocks:
        raise ValueError(f"x must have shape (tokens, {n_blocks * gguf.BLOCK_SIZE}), got {np.shape(x)}")
    blocks = w.reshape(w.shape[0], n_blocks, gguf.TYPE_SIZE["Q4_0"])
    d_w = blocks[..., :2].copy().view("<f2")[..., 0].astype(_F32)           # (out, n_blocks)
    codes = unpack_nibbles(np.ascontiguousarray(blocks[..., 2:]), w.shape[0] * n_blocks * gguf.BLOCK_SIZE, "ggml")
    c = codes.reshape(w.shape[0], n_blocks, gguf.BLOCK_SIZE).astype(np.int32) - 8
    sumi = np.einsum("obj,tbj->tob", c, q_x.astype(np.int32))                # exact integers
    per_block = (sumi.astype(_F32) * d_w[None]) * d_x.astype(_F32)[:, None, :]
    acc = np.zeros(per_block.shape[:2], dtype=_F32)
    for b in range(n_blocks):                                                 # float32, block order
        acc += per_block[..., b]
    return acc
