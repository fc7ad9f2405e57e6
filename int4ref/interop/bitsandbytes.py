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
   order, see :mod:`int4ref.torchmath`), then ``absmax - offset`` in blocks of 256 to the
   signed 8-bit dynamic map with the CPU kernel's 65536-point lookup rounding. That lookup
   arrived in bitsandbytes 0.50.0 (PR #1968, ``csrc/cpu_ops.cpp``, ``quantize_cpu_impl``);
   0.49.x rounds to the exact nearest code on the CPU, so its nested ``absmax`` codes can
   differ from these in a few places (the 4-bit codes and the float32 ``absmax`` do not).

Differences on purpose: NaN or Inf input raises ValueError (bitsandbytes returns NaN
blocks), and :func:`dequantize_4bit` always returns ``state.shape`` (bitsandbytes returns
``(1, n)`` for a 1-D tensor on its CPU path).

A bitsandbytes bug we do not copy: :func:`dequantize_4bit` always decodes flat,
``code[nibble] * absmax[i // blocksize]`` for the ``i``-th value of the flattened tensor, which
is how bitsandbytes lays the tensor out when it quantizes. bitsandbytes 0.49.0 (PR #1789) to
0.50.2 decode differently on a CPU with AVX-512F: the AVX-512 branch of
``dequantizeBlockwise4bitCpu`` (``csrc/cpu_ops.cpp``) walks the tensor as
``m = prod(shape[:-1])`` rows of ``n = shape[-1]`` values and scales values ``16j .. 16j+15``
of row ``r`` by ``absmax[r * (n // blocksize) + 16j // blocksize]``, which is the right block
only when each row holds a whole number of blocks. It runs when ``n`` is a multiple of 16, for
NF4 and FP4 alike; the Python wrapper sends odd ``n``, and ``blocksize >= 2048`` when torch
reports AVX512, to a flat torch decoder, and the scalar branch (x86 without AVX-512F) and the
ARM NEON branch (which checks ``n % blocksize == 0``) are flat. So a 64 x 64 tensor quantized
with blocksize 128 to 1024 comes back wrong by up to the difference of two block maxima
(1.57 at blocksize 128 for ``default_rng(0).standard_normal((64, 64))``), while a 1-D tensor,
or rows that are whole blocks (``n % blocksize == 0``, as for most LLM weights at blocksize
64), decode correctly. bitsandbytes' own quantized bytes, its torch fallback decoder and this
module agree with the flat decode. ``tests/test_bnb_parity.py`` models the branch and checks
the live library against it where it runs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import _fast
from .._checks import as_float_array, check_packed
from ..formats import get_format
from ..packing import pack_nibbles, unpack_nibbles
from ..parallel import map_rows
from ..quant import QuantizedTensor, ScaleState, double_quantize

f32 = np.float32
BLOCKSIZES = (32, 64, 128, 256, 512, 1024, 2048, 4096)
_FORMAT = {"nf4": "nf4", "fp4": "fp4_bnb"}
_MAGNITUDE = {2: np.uint16(0x7FFF), 4: np.uint32(0x7FFFFFFF)}


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

    ``torch_cpu=(simd_width, num_threads)``: the torch CPU run whose float32 mean to
    reproduce for ``state.offset``: the float32 lanes of torch's sum kernel (8 for torch 2.13
    on x86, AVX-512 machines included, since ``SumKernel.cpp`` registers no AVX-512 variant)
    and torch's thread count, which only matters above 32768 blocks; default: what
    :func:`int4ref.torchmath.torch_defaults` guesses for this machine.

    Note: bitsandbytes' own default is ``quant_type="fp4"``; this reference defaults to NF4,
    the format people mean when they say "4-bit bitsandbytes".
    """
    _check_args(blocksize, quant_type)
    arr = as_float_array(A, "A", allowed=(np.float16, np.float32))
    fmt = get_format(_FORMAT[quant_type])
    flat = arr.reshape(-1)
    n = flat.size
    n_full = n // blocksize
    absmax = np.empty(-(-n // blocksize), dtype=f32)
    packed = np.empty((n + 1) // 2, dtype=np.uint8)

    def full_blocks(rows: slice) -> None:  # steps 2-4 on whole blocks, a cache-sized slice at a time
        blocks = flat[rows.start * blocksize : rows.stop * blocksize].reshape(-1, blocksize)
        # absmax from the bit patterns: clearing the sign bit orders finite floats like |x|
        amax = (blocks.view(np.uint16 if blocks.dtype == np.float16 else np.uint32) & _MAGNITUDE[blocks.dtype.itemsize]
                ).max(axis=1).view(blocks.dtype).astype(f32)
        scaled = np.multiply(blocks, (f32(1) / np.maximum(amax, f32(1e-38)))[:, None], dtype=f32)
        # No clamp needed here: |x * (1/absmax)| <= 1 + 2**-23, which lies in the same 16-bit
        # bucket as +-1 (see int4ref._fast), so the codes equal those of the clamped values.
        codes = _fast.nearest(fmt, scaled)
        absmax[rows] = amax
        pairs = codes.view(np.uint16)  # element 2k in the low byte, 2k+1 in the high byte
        packed[rows.start * blocksize // 2 : rows.stop * blocksize // 2] = (
            (pairs << 4) | (pairs >> 8)
        ).astype(np.uint8).reshape(-1)

    map_rows(full_blocks, n_full, blocksize)
    if n_full * blocksize < n:  # the partial last block: divided, not multiplied
        tail = flat[n_full * blocksize :].astype(f32)
        absmax[-1] = max(np.abs(tail).max(), f32(1e-38))
        codes = fmt.nearest(np.clip(tail / absmax[-1], -1, 1))
        if n % 2:
            codes = np.append(codes, fmt.nearest(np.zeros(1, f32)))
        packed[n_full * blocksize // 2 :] = pack_nibbles(codes)
    state = QuantState(absmax, tuple(arr.shape), arr.dtype, blocksize, quant_type, fmt.table.copy())
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
    packed = check_packed(packed, (n + 1) // 2)  # flat uint8 of the right length
    absmax = _absmax_values(state)
    n_blocks = -(-n // state.blocksize)
    if absmax.shape != (n_blocks,):
        raise ValueError(f"state has {absmax.size} absmax values; {n} values in blocks of {state.blocksize} "
                         f"need {n_blocks}")
    table = get_format(_FORMAT[state.quant_type]).table
    out = np.empty(2 * packed.size, dtype=f32)
    bs = state.blocksize

    def blocks(rows: slice) -> None:  # decode a slice of whole blocks and scale it in cache
        lo, hi = rows.start * bs, min(rows.stop * bs, out.size)
        chunk = out[lo:hi]
        _fast.decode_pairs(packed[lo // 2 : hi // 2], table, chunk)
        full = (hi - lo) // bs
        chunk[: full * bs].reshape(full, bs)[:] *= absmax[rows.start : rows.start + full, None]
        if full * bs < hi - lo:
            chunk[full * bs :] *= absmax[rows.start + full]

    map_rows(blocks, n_blocks, bs)
    return out[:n].astype(state.dtype, copy=False).reshape(state.shape)


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
