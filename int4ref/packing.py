"""Nibble packing: two 4-bit codes per byte, or eight per 32-bit word.

Layouts (``codes`` are integers in [0, 15]):

* ``"bnb"`` (bitsandbytes): the flattened tensor, element ``2k`` in the HIGH nibble of
  byte ``k`` and element ``2k+1`` in the LOW nibble. An odd count is padded with a zero
  code. ``[a, b]`` packs to ``(a << 4) | b``.
* ``"ggml"`` (GGUF Q4_0 / Q4_1 / IQ4_NL): blocks of 32; within a block, byte ``j`` holds
  element ``j`` in the LOW nibble and element ``j + 16`` in the HIGH nibble.
* ``pack_int32`` orders, 8 codes per int32 word, slot ``i`` in bits ``4i .. 4i+3``:
  ``"sequential"`` (GPTQ / exllama checkpoints: element ``i`` in slot ``i``) and
  ``"awq"`` (AutoAWQ: slot ``i`` holds element ``[0, 2, 4, 6, 1, 3, 5, 7][i]``).
"""
from __future__ import annotations

import numpy as np

from ._checks import check_codes, check_packed

AWQ_ORDER = np.array([0, 2, 4, 6, 1, 3, 5, 7])
INT32_ORDERS = {"sequential": np.arange(8), "awq": AWQ_ORDER}


def pack_nibbles(codes, layout: str = "bnb") -> np.ndarray:
    """Pack 4-bit codes (any shape, flattened row-major) into a 1-D uint8 array.

    ``layout="bnb"`` gives ``ceil(n / 2)`` bytes; ``layout="ggml"`` needs ``n`` to be a
    multiple of 32 and gives ``n // 2`` bytes (16 per block).
    """
    c = check_codes(codes).astype(np.uint8, copy=False).reshape(-1)
    if layout == "bnb":
        if c.size % 2:
            c = np.append(c, np.uint8(0))
        return (c[0::2] << 4) | c[1::2]
    if layout == "ggml":
        if c.size % 32:
            raise ValueError(f"ggml layout packs blocks of 32 codes; got {c.size} codes (not a multiple of 32)")
        blocks = c.reshape(-1, 32)
        return (blocks[:, :16] | (blocks[:, 16:] << 4)).reshape(-1)
    raise ValueError(f"unknown nibble layout {layout!r}; expected 'bnb' or 'ggml'")


def unpack_nibbles(packed, n: int, layout: str = "bnb") -> np.ndarray:
    """Inverse of :func:`pack_nibbles`: return ``n`` codes as a 1-D uint8 array."""
    if layout == "bnb":
        p = check_packed(packed, (n + 1) // 2)
        out = np.empty(2 * p.size, dtype=np.uint8)
        out[0::2] = p >> 4
        out[1::2] = p & 0x0F
        return out[:n]
    if layout == "ggml":
        if n % 32:
            raise ValueError(f"ggml layout holds blocks of 32 codes; n={n} is not a multiple of 32")
        p = check_packed(packed, n // 2).reshape(-1, 16)
        return np.concatenate([p & 0x0F, p >> 4], axis=1).reshape(-1)
    raise ValueError(f"unknown nibble layout {layout!r}; expected 'bnb' or 'ggml'")


def pack_int32(codes, order: str = "sequential", axis: int = -1) -> np.ndarray:
    """Pack 8 codes per int32 along ``axis`` (its length must be a multiple of 8).

    GPTQ checkpoints pack a ``(in_features, out_features)`` code matrix along axis 0
    (``order="sequential"``); AWQ packs along the output axis with ``order="awq"``.
    Returns an int32 array whose ``axis`` is 8 times shorter.
    """
    if order not in INT32_ORDERS:
        raise ValueError(f"unknown int32 order {order!r}; expected one of {sorted(INT32_ORDERS)}")
    c = np.moveaxis(check_codes(codes).astype(np.uint32), axis, -1)
    if c.shape[-1] % 8:
        raise ValueError(f"pack_int32 needs the packed axis to be a multiple of 8, got length {c.shape[-1]}")
    c = c.reshape(*c.shape[:-1], -1, 8)[..., INT32_ORDERS[order]]
    words = np.bitwise_or.reduce(c << (4 * np.arange(8, dtype=np.uint32)), axis=-1)
    return np.moveaxis(words.view(np.int32), -1, axis)


def unpack_int32(words, order: str = "sequential", axis: int = -1) -> np.ndarray:
    """Inverse of :func:`pack_int32`: uint8 codes, ``axis`` 8 times longer."""
    if order not in INT32_ORDERS:
        raise ValueError(f"unknown int32 order {order!r}; expected one of {sorted(INT32_ORDERS)}")
    w = np.asarray(words)
    if w.dtype not in (np.int32, np.uint32):
        raise TypeError(f"words must be int32 or uint32, got dtype {w.dtype}")
    w = np.moveaxis(w.view(np.uint32), axis, -1)
    slots = ((w[..., None] >> (4 * np.arange(8, dtype=np.uint32))) & 0xF).astype(np.uint8)
    codes = np.empty_like(slots)
    codes[..., INT32_ORDERS[order]] = slots
    return np.moveaxis(codes.reshape(*w.shape[:-1], -1), -1, axis)
