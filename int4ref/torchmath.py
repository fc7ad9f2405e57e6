"""Two pieces of torch's float32 CPU arithmetic, reproduced in numpy.

bitsandbytes builds its tables with ``torch.linspace`` and computes the double-quantization
offset with ``absmax.mean()``. Both round differently from numpy's functions in the last
bit, and a last-bit difference in the offset moves quantization codes. To be byte-for-byte
identical without importing torch, we reproduce the order of torch's float32 operations:

* ``linspace``: ``start + step * i`` for the first half and ``end - step * (steps - i - 1)``
  for the second, each a fused multiply-add (one rounding), with ``step`` in float32
  (ATen ``RangeFactoriesKernel.cpp``; the compiler contracts ``a + b * c`` to an FMA).
* ``sum`` / ``mean`` of a contiguous float32 vector: ATen's ``cascade_sum``: 4 independent
  SIMD accumulators of ``simd_width`` lanes, a 4-level cascade every ``2**max(4,
  ceil(log2(n_rows)) // 4)`` rows, lanes folded in order at the end; above 32768
  elements the vector is split into one contiguous chunk per thread, whose partial sums
  are added in thread order (``SumKernel.cpp``, ``TensorIteratorReduce.cpp``).

The lanes are 8 on x86 CPUs with AVX2 and with AVX-512 alike: ``SumKernel.cpp`` registers
its kernel with ``REGISTER_DISPATCH``, which leaves the AVX-512 slot empty, and ATen's
dispatcher then runs the AVX2 build (``DispatchStub.h``; checked against torch 2.13, where
16 lanes would mismatch on AVX-512 machines). The order does depend on torch's thread count
above 32768 elements, so bitsandbytes' offset for a large tensor can differ in the last bit
between runs with different ``torch.set_num_threads``; :func:`torch_defaults` gives what
torch uses here by default, and ``(simd_width, num_threads)`` targets another run.
"""
from __future__ import annotations

import sys

import numpy as np

from .parallel import cpu_count

f32 = np.float32
GRAIN_SIZE = 32768


def _fma32(a, b, c) -> np.float32:
    # a*b is exact in float64 for float32 a and a small integer b; one rounding to float32
    return f32(np.float64(a) * np.float64(b) + np.float64(c))


def linspace32(start: float, end: float, steps: int) -> np.ndarray:
    """``torch.linspace(start, end, steps, dtype=torch.float32)`` on the CPU, bit for bit."""
    start, end = f32(start), f32(end)
    if steps == 1:
        return np.array([start], dtype=f32)
    step = f32(f32(end - start) / f32(steps - 1))
    half = steps // 2
    return np.array(
        [_fma32(step, i, start) if i < half else _fma32(-step, steps - i - 1, end) for i in range(steps)],
        dtype=f32,
    )


def _ceil_log2(x: int) -> int:
    return 0 if x <= 1 else int(x - 1).bit_length()


def _multi_row_sum(rows: np.ndarray) -> np.ndarray:
    """ATen's multi_row_sum: rows (size, lanes) float32 -> (lanes,) with a 4-level cascade."""
    size, lanes = rows.shape
    power = max(4, _ceil_log2(size) // 4)
    step, mask = 1 << power, (1 << power) - 1
    acc = np.zeros((4, lanes), dtype=f32)
    i = 0
    while i + step <= size:
        acc[0] = np.cumsum(rows[i : i + step], axis=0, dtype=f32)[-1]  # sequential adds
        i += step
        for j in range(1, 4):
            acc[j] += acc[j - 1]
            acc[j - 1] = 0
            if i & (mask << (j * power)):
                break
    if i < size:
        acc[0] += np.cumsum(rows[i:], axis=0, dtype=f32)[-1]
    for j in range(1, 4):
        acc[0] += acc[j]
    return acc[0]


def _row_sum(x: np.ndarray, simd_width: int) -> np.float32:
    n = x.size
    if n >= simd_width:  # vectorised inner sum
        n_vec = n // simd_width
        vecs = x[: n_vec * simd_width].reshape(n_vec, simd_width)
        n_ilp = n_vec // 4
        partial = np.zeros((4, simd_width), dtype=f32)
        if n_ilp:
            partial = _multi_row_sum(vecs[: n_ilp * 4].reshape(n_ilp, 4 * simd_width)).reshape(4, simd_width)
        for v in vecs[n_ilp * 4 :]:
            partial[0] += v
        lanes = partial[0] + partial[1]
        lanes += partial[2]
        lanes += partial[3]
        total = f32(0)
        for t in x[n_vec * simd_width :]:
            total = f32(total + t)
        for lane in lanes:
            total = f32(total + lane)
        return total
    n_ilp = n // 4  # scalar inner sum, 4 accumulators
    partial = _multi_row_sum(x[: n_ilp * 4].reshape(n_ilp, 4)) if n_ilp else np.zeros(4, dtype=f32)
    for t in x[n_ilp * 4 :]:
        partial[0] = f32(partial[0] + t)
    return f32(f32(f32(partial[0] + partial[1]) + partial[2]) + partial[3])


def torch_defaults() -> tuple[int, int]:
    """(simd_width, num_threads) of torch's float32 sum here: 8 lanes (AVX2 and AVX-512 CPUs
    both run ATen's AVX2 sum kernel, see the module docstring) and torch's thread count."""
    torch = sys.modules.get("torch")
    if torch is not None:  # already imported by the caller: ask it
        return 8, torch.get_num_threads()
    return 8, cpu_count()


def mean32(x, simd_width: int | None = None, num_threads: int | None = None) -> np.float32:
    """``torch.mean`` of a contiguous float32 vector on the CPU, bit for bit (see module doc)."""
    dw, dt = torch_defaults()
    simd_width = simd_width or dw
    num_threads = num_threads or dt
    x = np.ascontiguousarray(x, dtype=f32).reshape(-1)
    n = x.size
    if n < GRAIN_SIZE or num_threads == 1:
        total = _row_sum(x, simd_width)
    else:
        tasks = min(num_threads, -(-n // GRAIN_SIZE))
        chunk = -(-n // tasks)
        parts = [_row_sum(x[b : b + chunk], simd_width) for b in range(0, n, chunk)]
        parts += [f32(0)] * (num_threads - len(parts))
        total = _row_sum(np.array(parts, dtype=f32), simd_width)
    return f32(total / f32(n))
