"""bitsandbytes' 4-bit format on numpy arrays, byte for byte, without torch.

Mirrors ``bitsandbytes.functional.quantize_4bit`` / ``dequantize_4bit`` (0.50, CPU
backend) step by step:

1. flatten the tensor row-major and convert to float32; cut it into blocks of
   ``blocksize`` (the last one may be shorter);
2. ``absmax`` per block; full blocks are multiplied by ``1 / max(absmax, 1e-38)``, the
   partial last block is divided by ``max(absmax, 1e-38)`` (so an all-zero partial block
   stores absmax 1e-38, a float32 subnormal, where an all-zero full block stores 0);
3. clamp to [-1, 1] and take the nearest table value, a tie going to the lower one
   (``torch.bucketize`` on the midpoints); FP4 maps the sorted position back to its bit
   pattern;
4. pack two codes per byte, element ``2k`` in the HIGH nibble; an odd count is padded with
   the code of 0. Packed shape ``((n + 1) // 2, 1)``, uint8;
5. with ``compress_statistics=True``: ``offset = absmax.mean()`` (torch's float32 summation
   order, see :mod:`int4ref._torchmath`), then ``absmax - offset`` in blocks of 256 to the
   signed 8-bit dynamic map with the CPU kernel's 65536-point lookup rounding.

Differences on purpose: NaN or Inf input raises ValueError (bitsandbytes returns NaN
blocks), and :func:`dequantize_4bit` always returns ``state.shape`` (bitsandbytes returns
``(1, n)`` for a 1-D tensor on its CPU path).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import codebooks
from .._checks import as_float_array, check_packed
from ..formats import get_format
from ..packing import pack_nibbles, unpack_nibbles
from ..quant import QuantizedTensor, ScaleState, double_quantize

f32 = np.float32
BLOCKSIZES = (32, 64, 128, 256, 512, 1024, 2048, 4096)
_FORMAT = {"nf4": "nf4", "fp4": "fp4_bnb"}


@dataclass
class QuantState2:
    """Second-level state (``state.state2``): float32 absmax per 256 first-level values."""

    absmax: np.ndarray
    code: np.ndarray
    blocksize: int = 256


@dataclass
class QuantState:
    """The fields of bitsandbytes' ``QuantState`` that 4-bit quantization fills.

    ``absmax`` is float32 (n_blocks,), or uint8 second-level codes when ``nested``.
    """

    absmax: np.ndarray
    shape: tuple
    dtype: np.dtype
    blocksize: int
    quant_type: str
    code: np.ndarray
    offset: np.float32 | None = None
    state2: QuantState2 | None = None

    @property
    def nested(self) -> bool:
        return self.state2 is not None


def _check_args(blocksize, quant_type):
    if quant_type not in _FORMAT:
        raise ValueError(f"quant_type must be 'nf4' or 'fp4', got {quant_type!r}")
    if blocksize not in BLOCKSIZES:
        raise ValueError(f"blocksize must be one of {BLOCKSIZES} (bitsandbytes' allowed sizes), got {blocksize!r}")


def quantize_4bit(A, blocksize: int = 64, quant_type: str = "nf4", compress_statistics: bool = False,
                  *, torch_cpu: tuple[int, int] | None = None):
    """Quantize ``A`` (float16 or float32, any shape) like bitsandbytes; returns ``(packed, state)``.

    ``torch_cpu=(simd_width, num_threads)``: the torch CPU build whose float32 mean to
    reproduce for ``state.offset`` (8 lanes on AVX2, 16 on AVX-512; threads only matter
    above 32768 blocks); default: what torch would use on this machine.

    Note: bitsandbytes' own default is ``quant_type="fp4"``; this reference defaults to NF4,
    the format people mean when they say "4-bit bitsandbytes".
    """
    _check_args(blocksize, quant_type)
    arr = as_float_array(A, "A", allowed=(np.float16, np.float32))
    fmt = get_format(_FORMAT[quant_type])
    flat = arr.reshape(-1).astype(f32)
    n = flat.size
    full = n - n % blocksize

    blocks = flat[:full].reshape(-1, blocksize)
    absmax = np.abs(blocks).max(axis=1) if full else np.zeros(0, f32)
    inv = f32(1) / np.maximum(absmax, f32(1e-38))
    scaled = [np.clip(blocks * inv[:, None], -1, 1).reshape(-1)]
    if full < n:
        tail_absmax = max(np.abs(flat[full:]).max(), f32(1e-38))
        absmax = np.append(absmax, f32(tail_absmax))
        scaled.append(np.clip(flat[full:] / f32(tail_absmax), -1, 1))
    codes = fmt.nearest(np.concatenate(scaled))
    packed = pack_nibbles(np.append(codes, fmt.nearest(np.zeros(1, f32))) if n % 2 else codes)
    state = QuantState(absmax.astype(f32), tuple(arr.shape), arr.dtype, blocksize, quant_type, fmt.table.copy())
    if compress_statistics:
        state = _compress(state, torch_cpu or True)
    return packed.reshape(-1, 1), state


def _compress(state: QuantState, torch_cpu) -> QuantState:
    dq = double_quantize(_as_qt_scales(state.absmax), bits=8, blocksize=256, table="dynamic", bnb_cpu=torch_cpu)
    s = dq.scale_state
    return QuantState(
        absmax=s.codes,
        shape=state.shape,
        dtype=state.dtype,
        blocksize=state.blocksize,
        quant_type=state.quant_type,
        code=state.code,
        offset=s.offset,
        state2=QuantState2(absmax=s.absmax, code=s.table.copy(), blocksize=256),
    )


def _as_qt_scales(absmax: np.ndarray) -> QuantizedTensor:
    # A QuantizedTensor that only carries scales, to reuse double_quantize on them.
    return QuantizedTensor("nf4", np.zeros(absmax.size, np.uint8), absmax, None, (absmax.size,), 1, np.dtype(f32))


def _absmax_values(state: QuantState) -> np.ndarray:
    if not state.nested:
        return np.asarray(state.absmax, dtype=f32)
    s2 = state.state2
    decoded = ScaleState(np.asarray(state.absmax, np.uint8), s2.absmax, f32(state.offset), s2.code, s2.blocksize, 8)
    return decoded.decode()


def dequantize_4bit(packed, state: QuantState) -> np.ndarray:
    """Values of a bitsandbytes 4-bit tensor: ``code[nibble] * absmax[block]`` in float32,
    then cast to ``state.dtype``; shape ``state.shape``."""
    _check_args(state.blocksize, state.quant_type)
    n = int(np.prod(state.shape, dtype=np.int64))
    codes = unpack_nibbles(check_packed(packed, (n + 1) // 2), n)
    absmax = _absmax_values(state)
    n_blocks = -(-n // state.blocksize)
    if absmax.shape != (n_blocks,):
        raise ValueError(f"state has {absmax.size} absmax values; {n} values in blocks of {state.blocksize} need {n_blocks}")
    table = get_format(_FORMAT[state.quant_type]).table
    values = table[codes] * np.repeat(absmax, state.blocksize)[:n]
    return values.astype(state.dtype).reshape(state.shape)


def to_quantized_tensor(packed, state: QuantState) -> QuantizedTensor:
    """The same tensor as an :class:`int4ref.QuantizedTensor` (for metrics and bits/weight)."""
    n = int(np.prod(state.shape, dtype=np.int64))
    codes = unpack_nibbles(check_packed(packed, (n + 1) // 2), n).reshape(state.shape)
    fmt = _FORMAT[state.quant_type]
    if state.nested:
        s2 = state.state2
        ss = ScaleState(np.asarray(state.absmax, np.uint8), s2.absmax, f32(state.offset), s2.code, s2.blocksize, 8)
        return QuantizedTensor(fmt, codes, None, None, tuple(state.shape), state.blocksize, np.dtype(state.dtype), ss)
    return QuantizedTensor(fmt, codes, np.asarray(state.absmax, f32), None, tuple(state.shape), state.blocksize,
                           np.dtype(state.dtype))  # fmt: skip


__all__ = ["BLOCKSIZES", "QuantState", "QuantState2", "dequantize_4bit", "quantize_4bit", "to_quantized_tensor"]
_ = codebooks  # the tables live in int4ref.codebooks (NF4, FP4_BNB, dynamic_map)
