"""int4ref: tested numpy reference implementations of 4-bit weight quantization.

Start with :func:`quantize` / :func:`dequantize`; the formats are listed in
:data:`FORMATS`. Byte-exact interop with real libraries lives in
:mod:`int4ref.interop.bitsandbytes` and :mod:`int4ref.interop.gguf`.
"""
from . import codebooks, metrics, packing
from .formats import FORMATS, Format, get_format
from .quant import (
    QuantizedTensor,
    ScaleState,
    bits_per_weight_formula,
    double_quantize,
    dequantize,
    quantize,
)

__version__ = "0.1.0"
__all__ = [
    "FORMATS",
    "Format",
    "QuantizedTensor",
    "ScaleState",
    "bits_per_weight_formula",
    "codebooks",
    "dequantize",
    "double_quantize",
    "get_format",
    "metrics",
    "packing",
    "quantize",
]
