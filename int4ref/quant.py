"""Group-wise round-to-nearest quantization of whole tensors, double quantization, and
exact memory accounting.

Layout: the tensor is flattened row-major and cut into consecutive groups of
``group_size`` values, like bitsandbytes (groups may span rows of a matrix). The last
group may be shorter and has its own scale. ``group_size="row"`` makes each row of the
last axis a group (per-channel quantization of a weight stored ``(out, in)``);
``group_size="tensor"`` makes the whole tensor one group.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import codebooks, torchmath
from ._checks import as_float32_input, check_codes, check_positive_int
from .formats import GroupParams, get_format
from .parallel import map_rows

f32 = np.float32


@dataclass(frozen=True, eq=False)
class ScaleState:
    """Second-level quantization of the per-group scales ("double quantization").

    ``scales = table[codes] * absmax[i // blocksize] + offset`` (float32): the scales
    minus their mean are cut into blocks of ``blocksize``, each block scaled by its own
    float32 absmax and mapped to the nearest of ``2**bits`` table values.
    """

    codes: np.ndarray  # uint8, (n_scales,)
    absmax: np.ndarray  # float32, (ceil(n_scales / blocksize),)
    offset: np.float32
    table: np.ndarray  # float32, (2**bits,), sorted, in [-1, 1]
    blocksize: int
    bits: int

    def decode(self) -> np.ndarray:
        """The float32 scales this state stands for."""
        per_value = np.repeat(self.absmax, self.blocksize)[: self.codes.size]
        return (self.table[self.codes] * per_value + self.offset).astype(f32)

    def storage_bits(self) -> int:
        return 8 * math.ceil(self.codes.size * self.bits / 8) + 32 * self.absmax.size + 32


@dataclass(frozen=True, eq=False)
class QuantizedTensor:
    """A tensor in a 4-bit format, codes unpacked (one uint8 per value) for readability.

    * ``codes``: uint8, shape ``shape``, values 0..15 (0..2**k - 1 for a k-bit format ``int{k}_*``).
    * ``scales``: (n_groups,) float32 or float16, or None when double-quantized (then
      ``scale_state`` holds them).
    * ``zeros``: (n_groups,) uint8 zero-points in 0..15 for ``int4_asym`` (in the code range
      of ``int{k}_asym``), else None.
    * ``group_size``: values per group along the flattened tensor (the last group may be
      shorter); ``dtype``: the dtype :func:`dequantize` returns by default.
    """

    format: str
    codes: np.ndarray
    scales: np.ndarray | None
    zeros: np.ndarray | None
    shape: tuple
    group_size: int
    dtype: np.dtype
    scale_state: ScaleState | None = None

    def __post_init__(self):
        fmt = get_format(self.format)
        check_codes(self.codes, bits=fmt.bits)
        if tuple(self.codes.shape) != tuple(self.shape):
            raise ValueError(f"codes have shape {self.codes.shape}, expected {self.shape}")
        check_positive_int(self.group_size, "group_size")
        n_groups = self.n_groups
        if (self.scales is None) == (self.scale_state is None):
            raise ValueError("exactly one of scales and scale_state must be given")
        if self.scales is not None and self.scales.shape != (n_groups,):
            raise ValueError(f"scales have shape {self.scales.shape}, expected ({n_groups},) for {self.size} values")
        if fmt.has_zero_point != (self.zeros is not None):
            raise ValueError(f"format {fmt.name} {'needs' if fmt.has_zero_point else 'has no'} zero-points")
        if self.zeros is not None:
            check_codes(self.zeros, bits=fmt.bits, name="zeros")
            if self.zeros.shape != (n_groups,):
                raise ValueError(f"zeros have shape {self.zeros.shape}, expected ({n_groups},)")

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def n_groups(self) -> int:
        return math.ceil(self.size / self.group_size)

    def scale_values(self) -> np.ndarray:
        """float32 scales used by dequantization (decoded when double-quantized)."""
        return self.scales.astype(f32) if self.scale_state is None else self.scale_state.decode()

    def storage_bits(self) -> dict[str, int]:
        """Bits needed to store this tensor packed, by part.

        Codes are packed two per byte (k bits each for a k-bit format; the last byte padded), scales
        at their dtype's width, zero-points packed two per byte, a second-level state as
        its codes plus float32 absmax per block plus the float32 offset. Codebooks are
        constants of the format and are not counted.
        """
        bits = get_format(self.format).bits  # 4, or k for the k-bit uniform formats
        parts = {"codes": 8 * math.ceil(self.size * bits / 8)}
        if self.scale_state is None:
            parts["scales"] = self.n_groups * self.scales.dtype.itemsize * 8
        else:
            parts["scales"] = self.scale_state.storage_bits()
        if self.zeros is not None:
            parts["zeros"] = 8 * math.ceil(self.n_groups * bits / 8)
        return parts

    def bits_per_weight(self) -> float:
        return sum(self.storage_bits().values()) / self.size


def resolve_group_size(group_size, shape) -> int:
    """``group_size`` (a positive int, ``"row"`` or ``"tensor"``) as the number of values per group."""
    n = int(np.prod(shape, dtype=np.int64))
    if group_size == "row":
        return int(shape[-1]) if len(shape) else 1
    if group_size == "tensor":
        return n
    if isinstance(group_size, str):
        raise ValueError(f"group_size must be a positive integer, 'row' or 'tensor'; got {group_size!r}")
    return check_positive_int(group_size, "group_size")


def _groups(flat: np.ndarray, group_size: int) -> np.ndarray:
    """(n_groups, group_size) view of ``flat``, zero-padded at the end when needed.

    The zero padding never changes a group's scale: absmax and the signed max by magnitude
    ignore zeros, and the asymmetric range always contains 0.
    """
    pad = -flat.size % group_size
    if pad:
        flat = np.concatenate([flat, np.zeros(pad, dtype=f32)])
    return flat.reshape(-1, group_size)


def quantize(x, format="nf4", group_size=64, scale_dtype=np.float32, double_quant=False) -> QuantizedTensor:
    """Quantize ``x`` (any shape, float16/32/64) group-wise to a 4-bit ``format``.

    ``format``: one of :data:`int4ref.formats.FORMATS` (``"nf4"``, ``"fp4_bnb"``,
    ``"fp4_e2m1"``, ``"lloyd_max"``, ``"int4_sym"``, ``"int4_q4_0"``, ``"int4_asym"``).
    ``group_size``: positive int, ``"row"`` or ``"tensor"``. ``scale_dtype``: float32 or
    float16 (an overflowing float16 scale is an error). ``double_quant=True`` compresses the
    scales the QLoRA way (see :func:`double_quantize`). Computation is in float32.

    This is the numpy reference; :func:`int4ref.quantize` also takes CuPy arrays (and sends
    them to :func:`int4ref.gpu.quantize`).
    """
    if hasattr(x, "__cuda_array_interface__") and not isinstance(x, np.ndarray):
        raise TypeError(f"int4ref.quant.quantize is the numpy reference and got a GPU array "
                        f"({type(x).__module__}.{type(x).__name__}); int4ref.quantize or int4ref.gpu.quantize "
                        f"quantize it on the GPU")
    fmt = get_format(format)
    arr = as_float32_input(x)
    g = resolve_group_size(group_size, arr.shape)
    groups = _groups(arr.reshape(-1).astype(f32, copy=False), g)
    codes = np.empty(groups.shape, dtype=np.uint8)
    scales = np.empty(groups.shape[0], dtype=np.dtype(scale_dtype) if scale_dtype is not None else f32)
    zeros = np.empty(groups.shape[0], dtype=np.uint8) if fmt.has_zero_point else None
    if scales.dtype not in (np.float32, np.float16):
        raise TypeError(f"scale_dtype must be float32 or float16, got {scales.dtype}")

    def work(rows: slice) -> None:
        c, s, z = fmt.quantize(groups[rows], scales.dtype, fast=True)  # fit + encode, fast lookups
        codes[rows], scales[rows] = c, s
        if zeros is not None:
            zeros[rows] = z

    map_rows(work, groups.shape[0], g)
    qt = QuantizedTensor(
        format=fmt.name,
        codes=codes.reshape(-1)[: arr.size].reshape(arr.shape),
        scales=scales,
        zeros=zeros,
        shape=tuple(arr.shape),
        group_size=g,
        dtype=arr.dtype,
    )
    return double_quantize(qt) if double_quant else qt


def dequantize(qt: QuantizedTensor, dtype=None) -> np.ndarray:
    """Values of ``qt`` as an array of ``qt.shape`` and ``dtype`` (default: ``qt.dtype``).

    This is the numpy reference; :func:`int4ref.dequantize` also takes an
    :class:`int4ref.gpu.GpuQuantizedTensor` (dequantized on the GPU, a CuPy array).
    """
    if not isinstance(qt, QuantizedTensor):
        hint = ("; a GpuQuantizedTensor goes to int4ref.dequantize or int4ref.gpu.dequantize"
                if type(qt).__name__ == "GpuQuantizedTensor" else "")
        raise TypeError(f"dequantize takes a QuantizedTensor, got {type(qt).__name__}{hint}")
    fmt = get_format(qt.format)
    n, g = qt.size, qt.group_size
    scales = qt.scale_values()
    flat_codes = qt.codes.reshape(-1)
    out = np.empty(qt.n_groups * g, dtype=f32)
    full = n // g  # groups without padding

    def work(rows: slice) -> None:
        lo, hi = rows.start * g, rows.stop * g
        out[lo:hi] = fmt.decode(
            flat_codes[lo:hi].reshape(-1, g), GroupParams(scales[rows], None if qt.zeros is None else qt.zeros[rows])
        ).reshape(-1)

    map_rows(work, full, g)
    if full < qt.n_groups:  # the partial last group
        last = slice(full, full + 1)
        tail = fmt.decode(
            flat_codes[full * g :][None, :], GroupParams(scales[last], None if qt.zeros is None else qt.zeros[last])
        )
        out[full * g : n] = tail.reshape(-1)
    return out[:n].reshape(qt.shape).astype(dtype or qt.dtype, copy=False)


def _nearest_sorted(values: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Index of the nearest entry of the sorted ``table``; a tie goes to the lower entry."""
    midpoints = (table[:-1] + table[1:]) / f32(2)
    return np.searchsorted(midpoints, values, side="left").astype(np.uint8)


def _nearest_bnb_cpu_lut(values: np.ndarray, table: np.ndarray) -> np.ndarray:
    """bitsandbytes' CPU rounding for 8-bit blockwise codes (0.50, ``cpu_ops.cpp``).

    A value in [-1, 1] is first rounded to one of 65536 evenly spaced points,
    ``uint16((v + 1) * 0.5 * 65535 + 0.5)``, and that point's nearest code is looked up in a
    precomputed table. Where the code spacing is finer than the grid (the dynamic map near
    0), this is not the nearest code; we reproduce it to be byte-identical.
    """
    grid = (f32(-1) + (f32(2) * np.arange(65536, dtype=f32)) / f32(65535)).astype(f32)
    lut = np.searchsorted((f32(0.5) * (table[:-1] + table[1:])).astype(f32), grid, side="left").astype(np.uint8)
    v = np.clip(values, -1, 1).astype(f32)
    index = np.trunc((v + f32(1)) * f32(0.5) * f32(65535) + f32(0.5)).astype(np.int64)
    return lut[index]


def double_quantize(qt: QuantizedTensor, bits: int = 8, blocksize: int = 256, table="dynamic", bnb_cpu=False):
    """Quantize the scales of ``qt`` a second time (QLoRA's double quantization).

    Default: bitsandbytes' scheme: ``offset = mean(scales)``; ``scales - offset`` in blocks of
    256, each divided by its absmax and rounded to the signed 8-bit dynamic map. ``table``
    may be ``"dynamic"`` (8 bits only), ``"uniform"`` (``2**bits`` evenly spaced values in
    [-1, 1], for teaching other bit widths) or an explicit sorted array.

    ``bnb_cpu=True`` reproduces bitsandbytes' CPU arithmetic bit for bit: torch's float32
    summation order for the mean and its 65536-point lookup rounding; the default uses a
    correctly rounded mean and exact nearest rounding. torch's summation order is 8 float32
    lanes on x86 (AVX2 and AVX-512 alike) and depends on torch's thread count above 32768
    scales; pass ``bnb_cpu=(simd_width, num_threads)`` to reproduce a given torch run
    (``True`` uses this machine's defaults). The grid rounding is that of bitsandbytes
    0.50.0 to 0.50.2; 0.49.x rounds to the exact nearest code.
    """
    if qt.scale_state is not None:
        raise ValueError("this tensor's scales are already double-quantized")
    check_positive_int(blocksize, "blocksize")
    if isinstance(table, str):
        if table == "dynamic":
            if bits != 8:
                raise ValueError(f"the dynamic map has 8 bits; got bits={bits} (use table='uniform')")
            table = codebooks.dynamic_map()
        elif table == "uniform":
            table = codebooks.uniform_map(bits)
        else:
            raise ValueError(f"table must be 'dynamic', 'uniform' or an array; got {table!r}")
    table = np.asarray(table, dtype=f32)
    if table.size != 2**bits or np.any(np.diff(table) <= 0):
        raise ValueError(f"table must hold 2**bits = {2**bits} strictly increasing values")
    scales = qt.scales.astype(f32)
    if bnb_cpu:
        simd, threads = bnb_cpu if isinstance(bnb_cpu, tuple) else (None, None)
        offset = torchmath.mean32(scales, simd, threads)
    else:
        offset = f32(np.mean(scales, dtype=np.float64))
    centered = (scales - offset).astype(f32)
    blocks = _groups(centered, blocksize)
    absmax = np.abs(blocks).max(axis=1)
    normalized = np.zeros_like(blocks)
    np.divide(blocks, absmax[:, None], out=normalized, where=absmax[:, None] > 0)
    if bnb_cpu:
        inv = np.zeros_like(absmax)
        np.divide(f32(1), absmax, out=inv, where=absmax > 0)
        codes = _nearest_bnb_cpu_lut(blocks * inv[:, None], table)
        codes[absmax == 0] = 0  # bitsandbytes writes code 0 for an all-zero block
    else:
        codes = _nearest_sorted(normalized, table)
    state = ScaleState(
        codes=codes.reshape(-1)[: scales.size],
        absmax=absmax.astype(f32),
        offset=f32(offset),
        table=table,
        blocksize=blocksize,
        bits=bits,
    )
    return QuantizedTensor(qt.format, qt.codes, None, qt.zeros, qt.shape, qt.group_size, qt.dtype, state)


def bits_per_weight_formula(group_size: int, scale_bits: int = 32, zero_bits: int = 0, double_quant=None) -> float:
    """Asymptotic bits per weight: ``4 + scale_bits/g + zero_bits/g``.

    With ``double_quant=(bits, blocksize)`` the scales cost ``bits/g + 32/(g*blocksize)``
    instead of ``scale_bits/g`` (QLoRA: 8/64 + 32/(64*256) = 0.127).
    """
    g = check_positive_int(group_size, "group_size")
    if double_quant is not None:
        bits, block = double_quant
        return 4 + bits / g + 32 / (g * block) + zero_bits / g
    return 4 + scale_bits / g + zero_bits / g
