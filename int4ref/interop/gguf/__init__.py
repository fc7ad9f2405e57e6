"""GGUF's block formats in plain numpy, byte-exact with ggml's own C code.

One module per format family, one class per block type (a :class:`BlockType`, in the style
of gguf-py's ``quants.py``; :data:`BLOCK_TYPES` lists them by GGUF name):

* :mod:`~int4ref.interop.gguf.q4`: ``Q4_0``, ``Q4_1`` (32 values, float16 scale [and min]);
* :mod:`~int4ref.interop.gguf.iq4`: ``IQ4_NL`` (32 values on a non-uniform table) and
  ``IQ4_XS`` (the same table in 256-value super-blocks with 6-bit sub-block scales);
* :mod:`~int4ref.interop.gguf.q8_0`: ``Q8_0`` (32 int8 values, float16 scale);
* :mod:`~int4ref.interop.gguf.q4_k`, :mod:`~int4ref.interop.gguf.q6_k`: the K-quants
  (256-value super-blocks); :mod:`~int4ref.interop.gguf.mix`: which tensor of a model gets
  which type in llama.cpp's mixed file types (Q4_K_M, Q4_K_S), checked against libllama;
* :mod:`~int4ref.interop.gguf.fp4`: MXFP4 (32 E2M1 values, a power-of-two scale) and NVFP4
  (64 values, an FP8 scale per 16); their checkpoint layouts (gpt-oss, compressed-tensors)
  are in :mod:`int4ref.interop.fp4_checkpoint`.

Each class holds its byte layout (``block_size``, ``type_size``, the numpy record
``block_dtype``), its short literal reference ``quantize_blocks`` / ``dequantize_blocks``
(one block per row) and the chunked, in-place fast kernels that :func:`quantize` and
:func:`dequantize` run on a few threads. The tests check reference and fast agree byte for
byte, and ``make test-peers`` checks both against ggml's compiled C (tools/ggml_peer.py,
ggml 0.25.3): the bytes are those of ``ggml_quantize_chunk`` (what ``llama-quantize`` runs),
with or without an importance matrix where the type takes one, and the values those of
ggml's ``to_float``, bit for bit.

gguf-py (``gguf.quants``, checked with 0.19.0) dequantizes bit for bit the same. Where it
quantizes at all, its Q4_0 / Q4_1 bytes differ from the C only in the sign bit of a zero
scale: for a Q4_0 block of zeros gguf-py stores ``d = -(first element) / 8``, so +0.0 when
the block starts with -0.0, where C always stores -0.0; for Q4_1 gguf-py takes ``min`` and
``max`` from numpy's reductions, whose choice between -0.0 and +0.0 depends on numpy's SIMD
order, where C keeps the block's first zero as ``m``. Decoded values are equal either way,
up to the sign of zero. This package does not import ``gguf``; only :func:`write_gguf` and
:func:`read_gguf` do.

An array of shape ``(..., n)`` (``n`` a multiple of the type's ``block_size``) quantizes to
a uint8 array of shape ``(..., n // block_size * type_size)``, the shape gguf-py uses.
"""
from __future__ import annotations

import os

import numpy as np

from ..._checks import as_float_array
from . import fp4, iq4, q4, q4_k, q6_k, q8_0
from ._blocks import F32, BlockType, NonFinite, run_chunks
from .fp4 import MXFP4, NVFP4
from .iq4 import IQ4_NL, IQ4_NL_VALUES, IQ4_XS
from .q4 import Q4_0, Q4_1
from .q4_k import Q4_K
from .q6_k import Q6_K
from .q8_0 import Q8_0

__all__ = [
    "BLOCK_SIZE",
    "BLOCK_TYPES",
    "BlockType",
    "IQ4_NL",
    "IQ4_XS",
    "MXFP4",
    "NVFP4",
    "Q4_0",
    "Q4_1",
    "Q4_K",
    "Q6_K",
    "Q8_0",
    "TYPE_SIZE",
    "block_type",
    "IQ4_NL_VALUES",
    "quantize",
    "dequantize",
    "write_gguf",
    "read_gguf",
]

#: Values per block of the 32-value types (Q4_0, Q4_1, IQ4_NL, Q8_0, MXFP4); the K-quants
#: and IQ4_XS use 256, NVFP4 64: see each class's ``block_size``.
BLOCK_SIZE = 32

#: The block types by GGUF name.
BLOCK_TYPES: dict[str, type[BlockType]] = {
    t.name: t for module in (q4, iq4, q8_0, q4_k, q6_k, fp4) for t in module.TYPES
}
#: Bytes per block, by GGUF name.
TYPE_SIZE = {name: t.type_size for name, t in BLOCK_TYPES.items()}


def block_type(type_name) -> type[BlockType]:
    """The :class:`BlockType` of ``type_name`` ("Q4_0", a GGMLQuantizationType, ...)."""
    return BLOCK_TYPES[_type_name(type_name)]


def _type_name(type_name) -> str:
    if not isinstance(type_name, str) and hasattr(type_name, "name"):  # a GGMLQuantizationType
        type_name = type_name.name
    if not isinstance(type_name, str):
        raise TypeError(f"type_name must be a string such as 'Q4_0', got {type(type_name).__name__}")
    name = type_name.upper()
    if name not in TYPE_SIZE:
        raise ValueError(f"unknown GGUF type {type_name!r}; this module supports {', '.join(TYPE_SIZE)}")
    return name


# ---------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------

def _checked_input(x):
    """``as_float_array(x)`` minus its separate NaN/Inf pass over large arrays.

    The dtype checks run on one element; the kernels notice non-finite values on the way
    (they compute every block's extremes anyway) and quantize() then calls
    as_float_array on the whole array to word the error.
    """
    if not isinstance(x, np.ndarray) or x.size <= 1:
        return as_float_array(x, "x")
    as_float_array(x[(slice(0, 1),) * x.ndim], "x")
    return x


def _checked_imatrix(imatrix, name: str, n: int) -> np.ndarray:
    """The importance matrix as float32 (n,): one non-negative finite weight per column."""
    bt = BLOCK_TYPES[name]
    if not bt.accepts_imatrix:
        takers = ", ".join(t for t, c in BLOCK_TYPES.items() if c.accepts_imatrix) or "none"
        raise ValueError(f"int4ref quantizes {name} without an importance matrix only "
                         f"(types that take one here: {takers})")
    w = as_float_array(imatrix, "imatrix")
    if w.ndim != 1 or w.shape[0] != n:
        raise ValueError(f"imatrix must be 1-D with one weight per column of x ({n}), got shape {w.shape}")
    w = w.astype(F32)
    if (w < 0).any():
        raise ValueError(f"imatrix has {(w < 0).sum()} negative weight(s) (first at column "
                         f"{int(np.flatnonzero(w < 0)[0])}); importance weights are mean squared activations, >= 0")
    return w


def quantize(x, type_name: str, imatrix=None) -> np.ndarray:
    """Quantize ``x`` to GGUF ``type_name`` blocks (see :data:`BLOCK_TYPES` for the names).

    ``x``: float32, float16 or float64 array of shape ``(..., n)`` with ``n`` a multiple of
    the type's ``block_size`` (float16/float64 are converted to float32 first, as gguf-py
    does). ``imatrix``: None, or for types that take one (``accepts_imatrix``) the
    importance of each of the ``n`` columns (llama.cpp's ``--imatrix``: mean squared
    activations), as ``ggml_quantize_chunk`` takes it. Returns uint8 of shape
    ``(..., n // block_size * type_size)``, byte-identical to ``ggml_quantize_chunk`` (and,
    where gguf-py has a quantizer, to ``gguf.quants.quantize`` but for the sign of zero
    scales, see the module docstring). A float16 scale beyond the float16 range (Q4_0: a
    block whose largest magnitude exceeds 8 * 65504 = 524032) raises ValueError, where
    ggml and gguf silently store inf.
    """
    name = _type_name(type_name)
    out = _quantize_raw(x, name, imatrix)
    _check_input_range(x, name)
    _check_scales_fit_float16(out.reshape(-1, TYPE_SIZE[name]), name)
    return out


def _check_input_range(x, name):
    bt = BLOCK_TYPES[name]
    if bt.max_abs_input is None:
        return
    with np.errstate(over="ignore"):
        blocks = np.asarray(x, dtype=F32).reshape(-1, bt.block_size)
    big = np.flatnonzero(np.abs(blocks).max(axis=1) > bt.max_abs_input)
    if big.size:
        raise ValueError(f"x has values of magnitude above {bt.max_abs_input:.3g} (first in {name} block "
                         f"{int(big[0])}): {bt.max_abs_reason}; rescale the tensor")


def _quantize_raw(x, name: str, imatrix=None) -> np.ndarray:
    """:func:`quantize` without the float16 overflow check: the C bytes, inf scales included."""
    arr = _checked_input(x)
    bt = BLOCK_TYPES[name]
    if arr.ndim == 0:
        raise ValueError(f"x is a scalar; GGUF quantizes arrays whose last axis holds blocks of "
                         f"{bt.block_size} values")
    n = arr.shape[-1]
    if n == 0:
        raise ValueError(f"x has an empty last dimension (shape {arr.shape}); nothing to quantize")
    if n % bt.block_size:
        raise ValueError(
            f"x has last dimension {n}, not a multiple of {bt.block_size}: {name} stores each row as "
            f"blocks of {bt.block_size} values and gguf requires the row length to be a multiple of the block "
            f"size (pad the rows, e.g. with zeros)"
        )
    weights = None
    if imatrix is not None:
        per_block = _checked_imatrix(imatrix, name, n).reshape(-1, bt.block_size)
        blocks_per_row = len(per_block)

        def weights(a, b):
            return per_block[np.arange(a, b) % blocks_per_row]

    with np.errstate(over="ignore"):  # float64 beyond float32 range becomes inf, reported below
        x32 = np.ascontiguousarray(arr, dtype=F32)
    blocks = x32.reshape(-1, bt.block_size)
    out = np.empty((len(blocks), bt.type_size), dtype=np.uint8)
    try:
        run_chunks(bt.quantize_chunk, blocks, out, bt.chunk_blocks(), weights)
    except NonFinite:
        as_float_array(arr, "x")  # raises, naming the NaN/Inf, unless float32 conversion made it
        raise ValueError(f"x ({arr.dtype}) has values beyond the float32 range (about 3.4e38); "
                         f"GGUF quantizes float32") from None
    return out.reshape(*arr.shape[:-1], n // bt.block_size * bt.type_size)


def _check_scales_fit_float16(out, name):
    bt = BLOCK_TYPES[name]
    for field, offset in bt.float16_fields:
        bits = out[:, offset : offset + 2].copy().view("<u2").reshape(-1)
        bad = np.flatnonzero((bits & 0x7C00) == 0x7C00)  # float16 exponent all ones: inf
        if bad.size:
            first = bt.block_size * int(bad[0])
            raise ValueError(
                f"{name} block {int(bad[0])} (values {first}..{first + bt.block_size - 1} of the flattened "
                f"input) needs {field} beyond the float16 range (max 65504); {bad.size} block(s) affected. "
                f"ggml (and gguf) would store inf there; rescale the tensor"
            )


def dequantize(data, type_name: str) -> np.ndarray:
    """Decode GGUF ``type_name`` blocks back to float32.

    ``data``: uint8 of shape ``(..., k * type_size)`` (what :func:`quantize` and
    :func:`read_gguf` return). Returns float32 of shape ``(..., k * block_size)``, bitwise
    equal to ggml's ``to_float`` and to ``gguf.quants.dequantize(data, GGMLQuantizationType[type_name])``.
    """
    name = _type_name(type_name)
    bt = BLOCK_TYPES[name]
    arr = np.asarray(data)
    if arr.dtype != np.uint8:
        raise TypeError(f"data has dtype {arr.dtype}; expected uint8 block bytes "
                        f"(as returned by quantize or read_gguf)")
    if arr.ndim == 0 or arr.size == 0:
        raise ValueError(f"data is empty or a scalar (shape {arr.shape}); nothing to dequantize")
    size = bt.type_size
    if arr.shape[-1] % size:
        raise ValueError(
            f"data has last dimension {arr.shape[-1]} bytes, not a multiple of the {name} block size of "
            f"{size} bytes (one block of {bt.block_size} values); is the type right?"
        )
    blocks = np.ascontiguousarray(arr).reshape(-1, size)
    out = np.empty((len(blocks), bt.block_size), dtype=F32)
    run_chunks(bt.dequantize_chunk, blocks, out, bt.chunk_blocks())
    return out.reshape(*arr.shape[:-1], arr.shape[-1] // size * bt.block_size)


# ---------------------------------------------------------------------------------------
# .gguf files (these two import gguf)
# ---------------------------------------------------------------------------------------

_FLOAT_TYPES = {"F32": np.float32, "F16": np.float16}


def _import_gguf():
    try:
        import gguf
    except ImportError as exc:  # pragma: no cover - exercised only without gguf
        raise ImportError("reading and writing .gguf files needs the gguf package: pip install gguf") from exc
    return gguf


def _check_tensor(name, spec):
    if not isinstance(name, str):
        raise TypeError(f"tensor names must be strings, got {name!r}")
    try:
        data, type_name, shape = spec
    except (TypeError, ValueError):
        raise TypeError(f"tensor {name!r}: expected a (data, type_name, shape) tuple") from None
    shape = tuple(int(s) for s in shape)
    if not shape or min(shape) <= 0:
        raise ValueError(f"tensor {name!r}: shape {shape} must have at least one dimension, all positive")
    data = np.asarray(data)
    if isinstance(type_name, str) and type_name.upper() in _FLOAT_TYPES:
        type_name = type_name.upper()
        want = _FLOAT_TYPES[type_name]
        if data.dtype != want or data.shape != shape:
            raise ValueError(f"tensor {name!r}: {type_name} data must be {np.dtype(want)} of shape {shape}, "
                             f"got {data.dtype} {data.shape}")
        return data, type_name, shape
    type_name = _type_name(type_name)
    bt = BLOCK_TYPES[type_name]
    if shape[-1] % bt.block_size:
        raise ValueError(f"tensor {name!r}: last dimension {shape[-1]} is not a multiple of {bt.block_size}")
    byte_shape = (*shape[:-1], shape[-1] // bt.block_size * bt.type_size)
    if data.dtype != np.uint8 or data.size != int(np.prod(byte_shape)):
        raise ValueError(f"tensor {name!r}: {type_name} data of logical shape {shape} must be uint8 with "
                         f"shape {byte_shape}, got {data.dtype} {data.shape}")
    return data.reshape(byte_shape), type_name, shape


def write_gguf(path, tensors: dict, arch: str = "int4ref") -> None:
    """Write tensors to a .gguf file with gguf-py's GGUFWriter.

    ``tensors`` maps name -> ``(data, type_name, shape)``: for a block type (see
    :data:`BLOCK_TYPES`), ``data`` is the uint8 output of :func:`quantize` and ``shape`` the
    logical (numpy order) shape of the float tensor; for "F32"/"F16", ``data`` is the float
    array itself. GGUF records dimensions innermost first; :func:`read_gguf` turns them back.
    """
    gguf = _import_gguf()
    checked = {name: _check_tensor(name, spec) for name, spec in tensors.items()}
    writer = gguf.GGUFWriter(os.fspath(path), arch)
    try:
        for name, (data, type_name, _shape) in checked.items():
            if type_name in _FLOAT_TYPES:
                writer.add_tensor(name, np.ascontiguousarray(data))
            else:  # GGUFWriter derives the element shape from the byte shape and raw_dtype
                writer.add_tensor(name, np.ascontiguousarray(data), raw_dtype=gguf.GGMLQuantizationType[type_name])
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()


def read_gguf(path) -> dict:
    """Read every tensor of a .gguf file: name -> ``(data, type_name, shape)``.

    ``shape`` is the logical numpy-order shape; ``data`` is a copy of the stored array
    (uint8 blocks of shape ``(..., n // block_size * type_size)`` for quantized types, the
    float array for F32/F16). Types this module does not know keep gguf's name and raw data.
    """
    gguf = _import_gguf()
    reader = gguf.GGUFReader(os.fspath(path))
    result = {}
    for t in reader.tensors:
        shape = tuple(int(s) for s in reversed(t.shape.tolist()))
        result[t.name] = (np.array(t.data), t.tensor_type.name, shape)
    del reader
    return result
