"""4-bit kernels on the GPU: CUDA C compiled at run time by CuPy (``cupy.RawModule``).

The kernel sources ship with the package (``int4ref/gpu/*.cu``) and are meant to be
read: ``quantize.cu`` (group-wise absmax, nearest code, nibble packing, double
quantization), ``dequantize.cu`` (to float16 / float32), ``gemv.cu`` (fused dequantize +
matrix-vector product, W4A16, three versions from naive to fast).

Usage (``pip install "int4ref[gpu]"``; a CUDA GPU)::

    import cupy, int4ref
    w = cupy.random.standard_normal((4096, 4096), dtype=cupy.float32)
    qt = int4ref.quantize(w, "nf4", group_size=64)        # a GpuQuantizedTensor
    w_hat = int4ref.dequantize(qt, cupy.float16)          # cupy array, same bits as numpy
    x = cupy.random.standard_normal((1, 4096)).astype(cupy.float16)
    y = int4ref.gpu.gemv(x, qt)                           # (1, 4096) float16 = x @ w_hat.T

``int4ref.quantize`` / ``int4ref.dequantize`` send CuPy arrays here and keep numpy arrays
on the CPU. Results are bit-identical to the numpy reference for codes, scales and
dequantized values (formats ``nf4``, ``fp4_bnb``, ``lloyd_max``, ``int4_sym``; even group
sizes). :func:`gemv` agrees with a float32 product on the dequantized weights up to the
order of the float32 sums.

GEMV layout: ``W`` is (N out, K in), quantized row-major with groups along K
(``group_size`` divides K); ``x`` is (M, K) float16 with M = 1..16, or (K,);
``y = x @ W^T`` is (M, N) (or (N,)), float16 by default, accumulated in float32.

Importing this module needs neither CuPy nor a GPU; the functions that run kernels raise
:class:`NoDeviceError` with the reason when there is none.
"""
from __future__ import annotations

import numpy as np

from . import ops
from .backend import NoDeviceError, cupy_backend, device_available, device_status
from .kernels import ARCHS, COMPILE_OPTIONS, GEMV_VERSIONS, KERNEL_FILES, KERNELS, excerpt, raw_source
from .ops import (
    GEMV_MAX_M,
    SUPPORTED_FORMATS,
    GpuQuantizedTensor,
    GpuScaleState,
    format_tables,
    is_device_array,
)

__all__ = [
    "ARCHS",
    "COMPILE_OPTIONS",
    "GEMV_MAX_M",
    "GEMV_VERSIONS",
    "GpuQuantizedTensor",
    "GpuScaleState",
    "KERNELS",
    "KERNEL_FILES",
    "NoDeviceError",
    "SUPPORTED_FORMATS",
    "dequantize",
    "device_available",
    "device_status",
    "excerpt",
    "format_tables",
    "gemv",
    "is_device_array",
    "quantize",
    "raw_source",
    "to_device",
]


def quantize(x, format="nf4", group_size=64, scale_dtype=np.float32, double_quant=False) -> GpuQuantizedTensor:
    """Quantize a CuPy array group-wise on the GPU; same arguments and bits as :func:`int4ref.quantize`.

    ``x``: CuPy array, any shape, float16/float32/float64. ``format``: one of
    :data:`SUPPORTED_FORMATS`. ``group_size``: an even positive int, ``"row"`` or
    ``"tensor"``. ``scale_dtype``: float32 or float16. ``double_quant``: compress the scales
    (8-bit dynamic map, blocks of 256, as QLoRA). Returns a :class:`GpuQuantizedTensor`.
    """
    if not is_device_array(x):
        raise TypeError(f"int4ref.gpu.quantize takes a CuPy array, got {type(x).__name__}; "
                        f"numpy arrays go to int4ref.quantize")
    return ops.quantize(cupy_backend(), x, format, group_size, scale_dtype, double_quant)


def dequantize(qt: GpuQuantizedTensor, dtype=None):
    """Values of a :class:`GpuQuantizedTensor` as a CuPy array of ``qt.shape``.

    ``dtype``: float16, float32 or float64 (default: the dtype that was quantized).
    """
    if not isinstance(qt, GpuQuantizedTensor):
        raise TypeError(f"int4ref.gpu.dequantize takes a GpuQuantizedTensor, got {type(qt).__name__}")
    return ops.dequantize(qt.backend, qt, dtype)


def gemv(x, w, version=None, out_dtype=np.float16):
    """``y = x @ W^T`` for 4-bit weights ``w``, dequantized on the fly (W4A16, float32 sums).

    ``x``: float16, (M, K) with M = 1..16, or (K,). ``w``: a :class:`GpuQuantizedTensor`
    of shape (N, K) whose ``group_size`` divides K (the GPU path), or an
    :class:`int4ref.QuantizedTensor` with a numpy ``x`` (the CPU reference, float32 numpy).
    ``version``: ``"v1"`` (naive), ``"v2"`` (warp per row), ``"v3"`` (the fastest; the
    default when K and group_size are multiples of 32, else ``"v1"``). ``out_dtype``:
    float16 or float32. Returns (M, N), or (N,) for a 1-D ``x``.
    """
    if is_device_array(x):
        return ops.gemv(w.backend if isinstance(w, GpuQuantizedTensor) else cupy_backend(), x, w, version,
                         out_dtype)
    if isinstance(w, GpuQuantizedTensor):
        raise TypeError("x is a numpy array but w is on the GPU; pass a CuPy x (cupy.asarray(x))")
    return ops.gemv_reference(x, w, version, out_dtype)


def to_device(qt) -> GpuQuantizedTensor:
    """Copy a numpy :class:`int4ref.QuantizedTensor` to the GPU (codes packed two per byte)."""
    return ops.to_device(cupy_backend(), qt)
