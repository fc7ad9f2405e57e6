"""IQ4_NL: 32 values on a fixed non-uniform table of 16 levels times a fitted float16 scale.

The bytes are those of ggml's ``quantize_iq4_nl`` with no importance matrix (what
``ggml_quantize_chunk`` and ``llama-quantize`` run; ggml's ``quantize_row_iq4_nl_ref`` is a
different, single-pass variant), in strict float32; values match ggml's ``to_float``::

    IQ4_NL 18 bytes  [0:2] d  float16   [2:18] 32 codes        value  d * IQ4_NL_VALUES[c]

(element ``j`` in the low nibble of byte ``j``, element ``j + 16`` in the high nibble).
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
    reciprocal,
    require_finite,
    signed_absmax,
    store_codes,
    sum_in_order,
)

__all__ = ["IQ4_NL", "IQ4_NL_VALUES", "TYPES"]

#: The 16 levels of IQ4_NL (ggml's ``kvalues_iq4nl``), as int8.
IQ4_NL_VALUES = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], dtype=np.int8)
IQ4_NL_VALUES.setflags(write=False)


def _dequantize_iq4_nl_reference(blocks):
    """(n, 18) uint8 IQ4_NL blocks -> (n, 32) float32."""
    d = blocks[:, 0:2].copy().view("<f2").astype(F32)
    return d * IQ4_NL_VALUES.astype(F32)[codes_reference(blocks, 2)]

def _dequantize_iq4_nl_chunk(b, out, scratch):
    blk = b.view(IQ4_NL.block_dtype)[:, 0]
    np.take(_IQ4_NL_F32, load_codes(blk["qs"], scratch), out=out, mode="clip")
    with np.errstate(all="ignore"):
        out *= blk["d"].astype(F32)[:, None]


# --- IQ4_NL quantization --------------------------------------------------------------
# ggml's best_index_int8 picks level j+1 over level j when 2*v >= values[j] + values[j+1]
# (ties go up, NaN gets code 0). The sums are integers, so floor(2*v) alone decides the
# code: two tables indexed by floor(2*v), clamped to [_LO2, _HI2], give code and level.
_IQ4_NL_F32 = IQ4_NL_VALUES.astype(F32)
_LO2, _HI2 = -232, 202
_MID2 = IQ4_NL_VALUES[:-1].astype(np.int64) + IQ4_NL_VALUES[1:]
_IQ4_CODE = np.searchsorted(_MID2, np.arange(_LO2, _HI2 + 1), side="right").astype(np.uint8)
_IQ4_LEVEL = _IQ4_NL_F32[_IQ4_CODE]
_IQ4_NTRY = 7  # ggml's quantize_iq4_nl tries scales (itry - 127) / max for itry in [-7, 7]
_IQ4_EPS = F32(1e-15)  # GROUP_MAX_EPS: blocks with max |x| below it get d = 0
_IQ4_CHUNK = 2048


def _iq4_nl_table_index(scaled, index):
    """Write into ``index`` (intp) the table rows for ``scaled`` = x / d (float32, overwritten)."""
    scaled += scaled  # exact doubling
    np.floor(scaled, out=scaled)
    np.fmax(scaled, F32(_LO2), out=scaled)  # fmax maps NaN to the lowest code, like ggml
    np.fmin(scaled, F32(_HI2), out=scaled)
    scaled -= F32(_LO2)
    np.copyto(index, scaled, casting="unsafe")
    return index


def _quantize_iq4_nl_chunk(x, out, scratch, quant_weights=None):
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
    xt = buf(scratch, "xt", (32, n), F32)
    w = buf(scratch, "w", (32, n), F32)
    s = buf(scratch, "s", (32, n), F32)
    level = buf(scratch, "level", (32, n), F32)
    index = buf(scratch, "index", (32, n), np.intp)
    acc = buf(scratch, "acc", (n,), F32)
    vmax = signed_absmax(x, scratch)
    require_finite(vmax)
    with np.errstate(all="ignore"):
        live = np.abs(vmax) >= _IQ4_EPS
        np.copyto(xt, x.T)
        np.multiply(xt, xt, out=w)

        def fit(inv):
            np.multiply(xt, inv, out=s)
            np.take(_IQ4_LEVEL, _iq4_nl_table_index(s, index), out=level, mode="clip")
            np.multiply(w, level, out=level)  # level now holds w*q ...
            np.multiply(level, xt, out=s)
            sum_qx = sum_in_order(s, acc)
            np.take(_IQ4_LEVEL, index, out=s, mode="clip")  # ... and s holds q again
            np.multiply(level, s, out=s)
            return sum_qx, sum_in_order(s, acc)

        sum_qx, sum_q2 = fit(np.where(live, F32(1) / (-vmax / F32(-127)), F32(0)))
        d = np.where(sum_q2 > 0, sum_qx / sum_q2, F32(0))
        best = d * sum_qx
        for itry in range(-_IQ4_NTRY, _IQ4_NTRY + 1):
            sum_qx, sum_q2 = fit(np.where(live, F32(itry - 127) / vmax, F32(0)))
            better = (sum_q2 > 0) & (sum_qx * sum_qx > best * sum_q2)
            d_try = sum_qx / sum_q2
            d = np.where(better, d_try, d)
            best = np.where(better, d_try * sum_qx, best)
        d = np.where(live, d, F32(0))
        np.multiply(xt, reciprocal(d), out=s)
        codes_t = _IQ4_CODE[_iq4_nl_table_index(s, index)]
        blk["d"] = d.astype("<f2")
    codes = buf(scratch, "codes", (n, 32), np.uint8)
    np.copyto(codes, codes_t.T)
    store_codes(codes, blk["qs"], scratch)


class IQ4_NL(BlockType):
    """IQ4_NL: ``d * IQ4_NL_VALUES[c]`` with a fitted ``d`` (ggml ``quantize_iq4_nl`` with no
    importance matrix / ``dequantize_row_iq4_nl``). 18 bytes: d, 16 code bytes.

    Its quantizer has no separate literal version here: ``quantize_blocks`` runs the fast
    kernel, and ``tests/test_gguf.py`` checks it against a scalar transcription of the C
    (``iq4_nl_block_scalar``) and against golden bytes from ggml."""

    name = "IQ4_NL"
    type_size = 18
    scale_fields = ("d",)
    float16_fields = (("d", 0),)
    block_dtype = block_record("d")
    quantize_chunk = staticmethod(_quantize_iq4_nl_chunk)
    dequantize_chunk = staticmethod(_dequantize_iq4_nl_chunk)

    @classmethod
    def quantize_blocks(cls, blocks):
        blocks = np.ascontiguousarray(blocks, dtype=F32)
        out = np.empty((len(blocks), cls.type_size), dtype=np.uint8)
        cls.quantize_chunk(blocks, out, {})
        return out

    dequantize_blocks = staticmethod(_dequantize_iq4_nl_reference)

    @classmethod
    def chunk_blocks(cls):
        return _IQ4_CHUNK


#: The block types this module defines.
TYPES = (IQ4_NL,)
