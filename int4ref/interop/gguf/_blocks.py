"""What every GGUF block type shares: the :class:`BlockType` interface, the thread-pool
driver and the numpy tools the fast kernels are built from.

Private to :mod:`int4ref.interop.gguf`: its format modules (``q4``, ``iq4``, ``q8_0``,
``q4_k``, ``q6_k``, ``fp4``) import these names; nothing outside the package does.
"""
from __future__ import annotations

import threading

import numpy as np

from ... import parallel
from ...packing import pack_nibbles, unpack_nibbles

F32 = np.float32
#: Blocks per work item of the fast kernels (2 MiB of float32 for 32-value blocks):
#: numpy calls cost microseconds each, so work items must be large.
CHUNK = 16384
NIBBLES = np.uint64(0x0F0F0F0F0F0F0F0F)
BIT0S = np.uint64(0x0101010101010101)
FOUR = np.uint64(4)
SIGN = np.uint32(0x80000000)


class BlockType:
    """A GGUF block type: each run of ``block_size`` values of a row is stored as
    ``type_size`` bytes.

    ``block_dtype`` is the numpy record of one block (``scale_fields`` names its float16
    fields in front of the codes, for the 32-value types). ``float16_fields`` lists
    ``(field, byte offset)`` of every float16 scale, which :func:`int4ref.interop.gguf.quantize`
    checks for overflow.

    ``quantize_blocks`` / ``dequantize_blocks`` are the short literal references,
    (n, block_size) float32 <-> (n, type_size) uint8; ``quantize_chunk(x, out, scratch,
    quant_weights)`` / ``dequantize_chunk(b, out, scratch)`` are the fast in-place kernels that
    :func:`~int4ref.interop.gguf.quantize` and :func:`~int4ref.interop.gguf.dequantize` run on
    chunks of blocks on int4ref's thread pool. ``quant_weights`` is None, or, for a type with
    ``accepts_imatrix``, the importance weights of each block's columns, float32
    (n, block_size). ``group_format`` names the :mod:`int4ref.formats` format with the same
    per-group rule, where there is one.
    """

    name = ""
    block_size = 32
    type_size = 0
    scale_fields: tuple[str, ...] = ()
    float16_fields: tuple[tuple[str, int], ...] = ()
    block_dtype: np.dtype
    group_format: str | None = None
    accepts_imatrix = False
    #: The largest magnitude ggml's quantizer handles without silently wrong bytes (None: any
    #: finite float32); quantize() refuses larger inputs, naming the limit and why.
    max_abs_input: float | None = None
    max_abs_reason = ""

    @classmethod
    def quantize_blocks(cls, blocks: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    @classmethod
    def dequantize_blocks(cls, blocks: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    @staticmethod
    def quantize_chunk(x, out, scratch, quant_weights=None):
        raise NotImplementedError

    @staticmethod
    def dequantize_chunk(b, out, scratch):
        raise NotImplementedError

    @classmethod
    def chunk_blocks(cls) -> int:
        """Blocks per work item of the fast kernels."""
        return CHUNK

    @classmethod
    def bits_per_weight(cls) -> float:
        return 8 * cls.type_size / cls.block_size


def block_record(*scale_fields):
    """A 32-value block as a numpy record: the float16 scale field(s) and the 16 code bytes
    as one opaque 16-byte item, so whole blocks are moved with single cheap copies."""
    return np.dtype([(f, "<f2") for f in scale_fields] + [("qs", "V16")])


def run_chunks(kernel, src, dst, chunk, weights=None):
    """Apply ``kernel(src_chunk, dst_chunk, scratch[, weights_chunk])`` to row chunks of
    ``src``/``dst`` on int4ref's thread pool (:mod:`int4ref.parallel`).

    ``weights``: None, or a function ``(start, stop) -> (stop - start, block_size)`` float32
    giving the importance weights of those blocks.
    """
    spans = [(a, min(a + chunk, len(src))) for a in range(0, len(src), chunk)]

    def call(a, b, scratch):
        if weights is None:
            kernel(src[a:b], dst[a:b], scratch)
        else:
            kernel(src[a:b], dst[a:b], scratch, weights(a, b))

    if len(spans) == 1 or parallel.THREADS == 1:
        scratch = {}
        for a, b in spans:
            call(a, b, scratch)
        return
    local = threading.local()  # one scratch dict per worker thread, freed with the call

    def work(span):
        if not hasattr(local, "scratch"):
            local.scratch = {}
        call(span[0], span[1], local.scratch)

    for _ in parallel.pool().map(work, spans):  # numpy releases the GIL
        pass


# ---------------------------------------------------------------------------------------
# Literal references: whole blocks in, whole blocks out.
# ---------------------------------------------------------------------------------------

def pack_reference(scales, codes):
    """Concatenate float16 scale columns and the ggml nibble packing of ``codes`` (n, 32)."""
    packed = pack_nibbles(codes, layout="ggml").reshape(len(codes), 16)
    with np.errstate(over="ignore"):  # a scale beyond float16 range is stored as inf
        parts = [np.asarray(s, dtype="<f2").reshape(-1, 1).view(np.uint8) for s in scales]
    return np.concatenate(parts + [packed], axis=1)


def codes_reference(blocks, offset):
    """The 32 codes of each 32-value block (n, type_size) whose 16 code bytes start at ``offset``."""
    n = len(blocks)
    return unpack_nibbles(np.ascontiguousarray(blocks[:, offset:offset + 16]), 32 * n, layout="ggml").reshape(n, 32)


# ---------------------------------------------------------------------------------------
# Fast-kernel tools. A kernel(src_chunk, dst_chunk, scratch) fills dst_chunk in place, doing
# the same float32 operations as its reference; ``scratch`` holds the worker's reusable work
# arrays (fresh large temporaries cost a page fault per 4 KiB, which dominated otherwise).
# numpy's per-row reductions (argmax/max along a 32-long axis) cost ~40 ns per block, so
# block maxima come from pairwise trees over the float bit patterns instead.
# ---------------------------------------------------------------------------------------

def buf(scratch, key, shape, dtype):
    """Work array ``key`` of ``shape``/``dtype`` from ``scratch`` (contents undefined)."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    raw = scratch.get(key)
    if raw is None or raw.size < nbytes:
        raw = scratch[key] = np.empty(nbytes, dtype=np.uint8)
    return raw[:nbytes].view(dtype).reshape(shape)


def tree(op, values, n, work):
    """Reduce each consecutive run of ``len(values) // n`` (a power of two) in the 1-D
    ``values`` with ``op``: -> (n,).

    Halves pairwise, writing the levels into ``work`` (at least ``len(values) - n`` items);
    exact for max/min, whose result does not depend on the order.
    """
    pos = 0
    while values.size > n:
        half = values.size // 2
        values = op(values[0::2], values[1::2], out=work[pos:pos + half])
        pos += half
    return values.copy()


def max_bits(x, scratch):
    """For blocks ``x`` (n, k) float32: (max over int32 bits, max over uint32 bits).

    As int32, sign-bit-clear floats order by magnitude above every sign-bit one, so the first
    is the largest non-negative value (negative if the block has none). As uint32, sign-bit
    floats order by magnitude above every other, so the second is the most negative value
    (below 0x80000000 if the block has none).
    """
    bits = x.reshape(-1).view(np.int32)
    work = buf(scratch, "tree", (x.size,), np.int32)
    top = tree(np.maximum, bits, len(x), work)
    neg = tree(np.maximum, bits.view(np.uint32), len(x), work.view(np.uint32))
    return top, neg


def signed_absmax(x, scratch):
    """First value of largest magnitude in each block of ``x`` (n, k), sign kept (float32)."""
    top, neg = max_bits(x, scratch)
    top = top.view(np.uint32)
    # top ^ SIGN and neg both read "0x80000000 + magnitude" when the block has such a value
    # and something below 0x80000000 when it has none, so they compare as magnitudes.
    pos_key = top ^ SIGN
    vbits = np.where(pos_key > neg, top, neg)
    tie = np.flatnonzero(pos_key == neg)  # +v and -v both present: the first one wins
    if tie.size:
        rows = x[tie]
        vbits[tie] = rows.view(np.uint32)[np.arange(tie.size), np.abs(rows).argmax(axis=1)]
    return vbits.view(np.float32)


class NonFinite(Exception):
    """Raised by a kernel that meets NaN or Inf; quantize() turns it into a clear error."""


def require_finite(block_extremes):
    """Raise :class:`NonFinite` unless every value is finite.

    A block holding NaN or Inf has it as its largest bit pattern, hence in its extremes."""
    if not np.isfinite(block_extremes).all():
        raise NonFinite


def store_codes(codes, qs, scratch):
    """Pack ``codes`` (n, 32) uint8 in [0, 16] (16 is clamped to 15) into ``qs`` (n,) V16.

    Works on eight codes at a time as uint64 lanes: a code never exceeds one nibble,
    so shifting a whole word by 4 moves every code into its byte's high nibble.
    """
    words = codes.view(np.uint64)
    over = np.right_shift(words, FOUR, out=buf(scratch, "over", words.shape, np.uint64))
    over &= BIT0S
    words -= over  # 16 -> 15, others unchanged
    halves = codes.view("V16")  # column 0: elements 0..15, column 1: elements 16..31
    low = buf(scratch, "low", (len(codes),), "V16")
    high = buf(scratch, "high", (len(codes),), "V16")
    low[...] = halves[:, 0]
    high[...] = halves[:, 1]
    low64, high64 = low.view(np.uint64), high.view(np.uint64)
    high64 <<= FOUR
    low64 |= high64
    qs[...] = low


def load_codes(qs, scratch):
    """Unpack ``qs`` (n,) V16 into (n, 32) uint8 codes, the inverse of store_codes."""
    n = len(qs)
    words = buf(scratch, "words", (n,), "V16")
    words[...] = qs
    words = words.view(np.uint64)
    codes = buf(scratch, "codes", (n, 32), np.uint8)
    halves = codes.view("V16")
    high = buf(scratch, "high", (2 * n,), np.uint64)
    np.right_shift(words, FOUR, out=high)
    high &= NIBBLES
    words &= NIBBLES
    halves[:, 0] = words.view("V16")
    halves[:, 1] = high.view("V16")
    return codes


def reciprocal(d):
    """``1/d`` in float32, 0 where ``d == 0`` (the ``id = d ? 1/d : 0`` of ggml)."""
    inv = np.zeros_like(d)
    np.divide(F32(1), d, out=inv, where=d != 0)
    return inv


def sum_in_order(a, acc):
    """Sum the rows of ``a`` (k, n) into ``acc`` (n,) in order j = 0, 1, ..., k-1, in float32.

    This is the left-to-right order of the C loop ``float s = 0; s += ...``. (np.sum may
    sum pairwise, e.g. over a single block, and a different order rounds differently.)
    """
    acc[...] = 0
    for row in a:
        acc += row
    return acc.copy()
