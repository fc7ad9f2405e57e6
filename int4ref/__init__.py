"""int4ref: tested numpy reference implementations of 4-bit weight quantization.

Start with :func:`quantize` / :func:`dequantize` (numpy arrays, or CuPy arrays on a GPU:
:mod:`int4ref.dispatch`); the formats are listed in
:data:`FORMATS`. :func:`gptq_quantize` (GPTQ) and :func:`awq_quantize` (AWQ) use
calibration activations and return the same :class:`QuantizedTensor`. Byte-exact interop
with real libraries lives in :mod:`int4ref.interop.bitsandbytes` and
:mod:`int4ref.interop.gguf`.
"""
from . import awq, codebooks, gptq, interop, metrics, packing
from .awq import AWQResult, awq_dequantize, awq_quantize
from .dispatch import dequantize, quantize
from .formats import FORMATS, Format, get_format
from .gptq import GPTQResult, gptq_dequantize, gptq_hessian, gptq_quantize
from .quant import QuantizedTensor, ScaleState, bits_per_weight_formula, double_quantize

__version__ = "0.1.0"
__all__ = [
    "AWQResult",
    "FORMATS",
    "Format",
    "GPTQResult",
    "QuantizedTensor",
    "ScaleState",
    "awq",
    "awq_dequantize",
    "awq_quantize",
    "bits_per_weight_formula",
    "codebooks",
    "dequantize",
    "double_quantize",
    "get_format",
    "interop",
    "gptq",
    "gptq_dequantize",
    "gptq_hessian",
    "gptq_quantize",
    "metrics",
    "packing",
    "quantize",
]
