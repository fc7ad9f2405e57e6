"""``int4ref.quantize`` and ``int4ref.dequantize``: numpy arrays to the reference in
:mod:`int4ref.quant`, CuPy arrays to the kernels in :mod:`int4ref.gpu`.

This module sits above both, so that the numpy core never imports the GPU package (which
builds on the core): :mod:`int4ref.quant` works on numpy arrays only and rejects a GPU
array with a TypeError that points here.
"""
from __future__ import annotations

import numpy as np

from . import quant


def _on_device(x) -> bool:
    return hasattr(x, "__cuda_array_interface__") and not isinstance(x, np.ndarray)


def quantize(x, format="nf4", group_size=64, scale_dtype=np.float32, double_quant=False):
    """Quantize ``x`` group-wise to a 4-bit ``format``: :func:`int4ref.quant.quantize` for a
    numpy array (or anything numpy converts), :func:`int4ref.gpu.quantize` for a CuPy array.

    Same arguments and the same bits either way. Returns an :class:`int4ref.QuantizedTensor`
    (numpy) or an :class:`int4ref.gpu.GpuQuantizedTensor` (on the GPU).
    """
    if _on_device(x):
        from . import gpu

        return gpu.quantize(x, format, group_size, scale_dtype, double_quant)
    return quant.quantize(x, format, group_size, scale_dtype, double_quant)


def dequantize(qt, dtype=None):
    """Values of ``qt`` as an array of ``qt.shape`` and ``dtype`` (default: the dtype that was
    quantized): :func:`int4ref.quant.dequantize` for an :class:`int4ref.QuantizedTensor` (a numpy
    array), :func:`int4ref.gpu.dequantize` for an :class:`int4ref.gpu.GpuQuantizedTensor` (a
    CuPy array)."""
    if not isinstance(qt, quant.QuantizedTensor) and type(qt).__name__ == "GpuQuantizedTensor":
        from . import gpu

        if isinstance(qt, gpu.GpuQuantizedTensor):
            return gpu.dequantize(qt, dtype)
    return quant.dequantize(qt, dtype)
