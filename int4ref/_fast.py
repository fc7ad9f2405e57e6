"""Fast numpy paths for table formats, exact equals of the clear versions.

:meth:`int4ref.formats.TableFormat.nearest` finds the nearest table value with a binary
search (``np.searchsorted``), clear but slow on millions of values. The same answer comes
from table lookups (the quantize half lives beside the reference, on the format class, as
:meth:`~int4ref.formats.TableFormat.nearest_fast`; this module is the one entry point the
rest of int4ref calls):

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

from .formats import Format

f32 = np.float32


def nearest(fmt: Format, normalized: np.ndarray) -> np.ndarray:
    """Same result as ``fmt.nearest(normalized)`` for finite float32 input
    (:meth:`int4ref.formats.TableFormat.nearest_fast`, which holds the bucket tables)."""
    return fmt.nearest_fast(normalized)


@cache
def byte_pairs(table_bytes: bytes) -> np.ndarray:
    """(256, 2) float32: the values of a packed byte's high and low nibble."""
    table = np.frombuffer(table_bytes, dtype=f32)
    b = np.arange(256)
    return np.stack([table[b >> 4], table[b & 0x0F]], axis=1).astype(f32)


def decode_pairs(packed: np.ndarray, table: np.ndarray, out: np.ndarray) -> None:
    """``out`` (2 * packed.size float32) = table values of the nibbles, high nibble first."""
    np.take(byte_pairs(table.astype(f32).tobytes()), packed, axis=0, out=out.reshape(-1, 2))
