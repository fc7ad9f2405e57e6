"""Fast numpy paths for table formats, exact equals of the clear versions.

:meth:`int4ref.formats.Format.nearest` finds the nearest table value with a binary search
(``np.searchsorted``), clear but slow on millions of values. Here the same answer comes
from table lookups:

* **Quantize** (``nearest``): the top 16 bits of a float32 (sign, exponent, 7 mantissa
  bits) name a *bucket*, an interval of floats. A 16-level table has 15 midpoints, and a
  bucket is narrow enough to hold at most one of them (checked when the table is built),
  so per bucket we store the code below the midpoint, the code above it, and the midpoint
  itself: one comparison decides. 64 Ki entries per array, built once per format.
* **Dequantize** (``decode_pairs``): a 256-entry table maps a packed byte straight to its
  two values (high nibble first, bitsandbytes' order), so unpacking and the codebook
  lookup are a single gather.

``tests/test_fast.py`` proves both agree with the clear versions on every bucket's edges,
every midpoint and its neighbours, and random values.
"""
from __future__ import annotations

from functools import cache

import numpy as np

from .formats import Format, get_format

f32 = np.float32


@cache
def _bucket_tables(name: str):
    """Per 16-bit bucket: the sorted position below its midpoint, and that midpoint."""
    fmt = get_format(name)
    bits = np.arange(1 << 16, dtype=np.uint32) << 16
    small = bits.view(f32)  # smallest magnitude in each bucket
    large = (bits | 0xFFFF).view(f32)  # largest magnitude in each bucket
    with np.errstate(invalid="ignore"):
        low_end = np.where(np.signbit(small), large, small)  # the bucket's lowest value
        high_end = np.where(np.signbit(small), small, large)
        below = np.searchsorted(fmt._midpoints, low_end, side="left")  # answer at the low end
        above = np.searchsorted(fmt._midpoints, high_end, side="left")  # answer at the high end
    finite = np.isfinite(low_end) & np.isfinite(high_end)
    if np.any((above - below)[finite] > 1):
        raise ValueError(f"{fmt.name}: a 16-bit bucket holds two midpoints; use Format.nearest")
    mid = np.append(fmt._midpoints, np.inf).astype(f32)[below]
    identity = bool(np.all(fmt._order == np.arange(16)))
    return below.astype(np.uint8), mid, None if identity else fmt._order


def nearest(fmt: Format, normalized: np.ndarray) -> np.ndarray:
    """Same result as ``fmt.nearest(normalized)`` for finite float32 input."""
    if fmt.sign_magnitude:
        return fmt.nearest(normalized)
    below, mid, order = _bucket_tables(fmt.name)
    v = np.ascontiguousarray(normalized, dtype=f32)
    bucket = (v.view(np.uint32) >> 16).astype(np.intp)  # sign, exponent, 7 mantissa bits
    position = np.take(below, bucket) + (v > np.take(mid, bucket))  # uint8 + bool: one compare
    return position if order is None else np.take(order, position)


@cache
def byte_pairs(table_bytes: bytes) -> np.ndarray:
    """(256, 2) float32: the values of a packed byte's high and low nibble."""
    table = np.frombuffer(table_bytes, dtype=f32)
    b = np.arange(256)
    return np.stack([table[b >> 4], table[b & 0x0F]], axis=1).astype(f32)


def decode_pairs(packed: np.ndarray, table: np.ndarray, out: np.ndarray) -> None:
    """``out`` (2 * packed.size float32) = table values of the nibbles, high nibble first."""
    np.take(byte_pairs(table.astype(f32).tobytes()), packed, axis=0, out=out.reshape(-1, 2))
