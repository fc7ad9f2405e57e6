"""Input validation shared by every public entry point.

Each check raises with a message that names what is wrong, so that bad input never
turns into a silent NaN or a wrong answer further down.
"""
from __future__ import annotations

import numpy as np

FLOAT_DTYPES = (np.float16, np.float32, np.float64)


def as_float_array(x, name: str = "x", allowed=FLOAT_DTYPES) -> np.ndarray:
    """Return ``x`` as a numpy array after checking dtype, emptiness and finiteness.

    Raises TypeError for non-float dtypes (integers, bools, complex, objects) and
    ValueError for empty arrays and for NaN or Inf values (with a count and the first
    flat index).
    """
    if hasattr(x, "__cuda_array_interface__") and not isinstance(x, np.ndarray):
        raise TypeError(f"{name} is a GPU array; this function takes numpy arrays")
    arr = np.asarray(x)
    if arr.dtype.kind == "c":
        raise TypeError(f"{name} has complex dtype {arr.dtype}; 4-bit quantization needs real floats")
    if arr.dtype.kind in "biu":
        raise TypeError(
            f"{name} has integer/bool dtype {arr.dtype}; pass floating-point values "
            f"(convert with .astype(np.float32) if that is what you mean)"
        )
    if arr.dtype.type not in allowed:
        names = ", ".join(np.dtype(t).name for t in allowed)
        raise TypeError(f"{name} has dtype {arr.dtype}; expected one of: {names}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape}); nothing to quantize")
    finite = np.isfinite(arr)
    if not finite.all():
        bad = np.flatnonzero(~finite.ravel())
        first = int(bad[0])
        kind = "NaN" if np.isnan(arr.ravel()[first]) else "Inf"
        raise ValueError(
            f"{name} contains {bad.size} non-finite value(s) (first: {kind} at flat index {first}); "
            f"4-bit formats cannot represent NaN or Inf"
        )
    return arr


def as_float32_input(x, name: str = "x") -> np.ndarray:
    """:func:`as_float_array`, and every value fits in float32 (which int4ref computes in).

    The dtype is kept (float64 stays float64); a float64 value beyond float32's range is a
    ValueError rather than an Inf after the cast.
    """
    arr = as_float_array(x, name)
    if arr.dtype == np.float64:
        big = np.abs(arr) > np.finfo(np.float32).max
        if big.any():
            i = int(np.flatnonzero(big.ravel())[0])
            raise ValueError(f"{name}[{i}] = {arr.ravel()[i]:.3g} does not fit in float32, which int4ref computes in")
    return arr


def check_codes(codes, bits: int = 4, name: str = "codes") -> np.ndarray:
    """Check that ``codes`` is an integer array with every value in [0, 2**bits)."""
    arr = np.asarray(codes)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must be an integer array, got dtype {arr.dtype}")
    if arr.size and (arr.min() < 0 or arr.max() >= 2**bits):
        bad = np.flatnonzero((arr.ravel() < 0) | (arr.ravel() >= 2**bits))
        raise ValueError(
            f"{name} out of range for {bits}-bit codes [0, {2**bits - 1}]: "
            f"{bad.size} value(s), first {int(arr.ravel()[bad[0]])} at flat index {int(bad[0])}"
        )
    return arr


def check_positive_int(value, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return int(value)


def check_packed(packed, expected_bytes: int, name: str = "packed") -> np.ndarray:
    arr = np.asarray(packed)
    if arr.dtype != np.uint8:
        raise TypeError(f"{name} must be a uint8 array, got dtype {arr.dtype}")
    if arr.size != expected_bytes:
        raise ValueError(f"{name} has {arr.size} bytes; expected {expected_bytes} for this shape and layout")
    return arr.reshape(-1)
