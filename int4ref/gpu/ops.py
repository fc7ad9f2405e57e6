"""Quantize, dequantize and GEMV on a backend (CuPy on a GPU, or the CPU emulator).

Every function here takes the backend as its first argument; :mod:`int4ref.gpu` binds
the CuPy one. The arithmetic lives in the kernels; this module validates input, picks a
kernel and its launch configuration, and raises the same errors as the numpy reference.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .. import codebooks
from .._checks import check_positive_int
from ..formats import Format, SymmetricInt, get_format, store_scales
from ..packing import pack_nibbles
from ..quant import QuantizedTensor, ScaleState, resolve_group_size
from . import kernels

f32, f16 = np.dtype(np.float32), np.dtype(np.float16)

#: Formats with GPU kernels: the table formats (nearest of 16 values, ties to the lower)
#: except the sign-magnitude fp4_e2m1, and uniform symmetric INT4.
SUPPORTED_FORMATS = ("nf4", "fp4_bnb", "lloyd_max", "int4_sym")
#: Largest activation batch of the GEMV.
GEMV_MAX_M = 16
DQ_BLOCKSIZE = 256  # double quantization: scales per second-level block (bitsandbytes' choice)

#: Error bits the quantize kernel sets in its flags word (FLAG_* in common.cu).
FLAG_NONFINITE, FLAG_SCALE_OVERFLOW, FLAG_SCALE_UNDERFLOW = 1, 2, 4
#: The CUDA C type of each dtype the kernels read or write.
CTYPE = {f32: "float", f16: "__half"}


def is_device_array(x) -> bool:
    """True for GPU arrays (anything with ``__cuda_array_interface__`` that is not numpy)."""
    return hasattr(x, "__cuda_array_interface__") and not isinstance(x, np.ndarray)


def gpu_format(name) -> Format:
    fmt = get_format(name)
    if fmt.name not in SUPPORTED_FORMATS:
        raise ValueError(f"format {fmt.name!r} has no GPU kernel; GPU formats: {', '.join(SUPPORTED_FORMATS)} "
                         f"(quantize a numpy copy with int4ref.quantize for the others)")
    return fmt


def uses_int_sym_kernel(fmt: Format) -> bool:
    """True when the kernels run ``fmt`` with their ``INT_SYM`` branch (scale absmax/7,
    codes rint(x/s) + 8: :class:`~int4ref.formats.SymmetricInt`), False for the table branch."""
    return isinstance(fmt, SymmetricInt)


def format_tables(fmt: Format) -> tuple[np.ndarray, np.ndarray, int]:
    """``(values, midpoints, order)`` as the kernels take them.

    ``values``: float32 (16,), the value of each code (int4_sym: code - 8, exact).
    ``midpoints``: float32 (16,), the 15 midpoints between sorted values that
    :meth:`TableFormat.nearest` searches, padded with +inf. ``order``: the code of each sorted
    position, 4 bits per position (position p in bits 4p..4p+3).
    """
    return fmt.kernel_tables()


def dynamic_map_tables() -> tuple[np.ndarray, np.ndarray]:
    """The 8-bit dynamic map and its 255 midpoints (padded to 256), as double_quantize uses them."""
    table = np.asarray(codebooks.dynamic_map(), dtype=np.float32)
    mids = (table[:-1] + table[1:]) / np.float32(2)  # int4ref.quant._nearest_sorted's arithmetic
    return table, np.append(mids, np.float32(np.inf)).astype(np.float32)


class _DeviceTables:
    """Per-backend cache of the small constant arrays the kernels read."""

    def __init__(self):
        self._cache = {}

    def get(self, be, key, make):
        k = (id(be), key)
        if k not in self._cache:
            self._cache[k] = (be, be.asarray(make()))  # keep be alive with its arrays
        return self._cache[k][1]


_TABLES = _DeviceTables()


def device_values(be, fmt):
    """The 16 code values of ``fmt`` (:func:`format_tables`) on the device, cached per backend."""
    return _TABLES.get(be, ("values", fmt.name), lambda: format_tables(fmt)[0])


def device_midpoints(be, fmt):
    """The midpoints of ``fmt`` (:func:`format_tables`) on the device, cached per backend."""
    return _TABLES.get(be, ("midpoints", fmt.name), lambda: format_tables(fmt)[1])


# ---------------------------------------------------------------------------------------
# the quantized tensor on the device


@dataclass(frozen=True, eq=False)
class GpuScaleState:
    """Double-quantized scales on the device (see :class:`int4ref.ScaleState`).

    ``codes`` uint8 (n_scales,), ``absmax`` float32 (ceil(n_scales / 256),) on the device;
    ``offset`` a numpy float32, ``table`` the numpy float32 dynamic map (256,).
    """

    codes: object
    absmax: object
    offset: np.float32
    table: np.ndarray
    blocksize: int = DQ_BLOCKSIZE
    bits: int = 8

    def storage_bits(self) -> int:
        return 8 * math.ceil(self.codes.size * self.bits / 8) + 32 * self.absmax.size + 32


@dataclass(frozen=True, eq=False)
class GpuQuantizedTensor:
    """A 4-bit tensor on the device, codes packed two per byte.

    * ``packed``: uint8 ``((size + 1) // 2,)``, the flattened tensor's codes, element 2k in
      the HIGH nibble of byte k (bitsandbytes' layout), an odd count padded with code 0;
    * ``scales``: float32 or float16 ``(n_groups,)``, or None when double-quantized (then
      ``scale_state`` holds them);
    * ``shape``, ``group_size`` (groups of consecutive values of the flattened tensor, the
      last one possibly shorter), ``dtype`` (what :func:`dequantize` returns by default).

    ``to_cpu()`` gives the equal :class:`int4ref.QuantizedTensor` (numpy, codes unpacked).
    """

    format: str
    packed: object
    scales: object
    shape: tuple
    group_size: int
    dtype: np.dtype
    scale_state: GpuScaleState | None = None
    backend: object = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        gpu_format(self.format)
        check_positive_int(self.group_size, "group_size")
        if self.packed.dtype != np.uint8 or self.packed.shape != ((self.size + 1) // 2,):
            raise ValueError(f"packed must be uint8 of shape ({(self.size + 1) // 2},), got "
                             f"{self.packed.dtype} {self.packed.shape}")
        if (self.scales is None) == (self.scale_state is None):
            raise ValueError("exactly one of scales and scale_state must be given")
        if self.scales is not None:
            if self.scales.dtype not in (f32, f16) or self.scales.shape != (self.n_groups,):
                raise ValueError(f"scales must be float32 or float16 of shape ({self.n_groups},), got "
                                 f"{self.scales.dtype} {self.scales.shape}")

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def n_groups(self) -> int:
        return math.ceil(self.size / self.group_size)

    @property
    def codes(self):
        """Unpacked codes, uint8 of ``shape``, on the device."""
        xp = self.backend.xp
        out = xp.empty(2 * self.packed.size, dtype=np.uint8)
        out[0::2] = self.packed >> 4
        out[1::2] = self.packed & 15
        return out[: self.size].reshape(self.shape)

    def scale_values(self):
        """float32 scales on the device (decoded when double-quantized)."""
        if self.scale_state is None:
            return self.scales.astype(np.float32)
        return decode_scales(self.backend, self.scale_state, self.n_groups)

    def storage_bits(self) -> dict[str, int]:
        parts = {"codes": 8 * math.ceil(self.size / 2)}
        if self.scale_state is None:
            parts["scales"] = self.n_groups * self.scales.dtype.itemsize * 8
        else:
            parts["scales"] = self.scale_state.storage_bits()
        return parts

    def bits_per_weight(self) -> float:
        return sum(self.storage_bits().values()) / self.size

    def to_cpu(self) -> QuantizedTensor:
        """The same tensor as a numpy :class:`int4ref.QuantizedTensor`."""
        host = self.backend.to_host
        codes = np.asarray(host(self.codes))
        if self.scale_state is None:
            return QuantizedTensor(self.format, codes, np.asarray(host(self.scales)), None, tuple(self.shape),
                                   self.group_size, np.dtype(self.dtype))
        st = self.scale_state
        state = ScaleState(np.asarray(host(st.codes)), np.asarray(host(st.absmax)), np.float32(st.offset),
                           st.table, st.blocksize, st.bits)
        return QuantizedTensor(self.format, codes, None, None, tuple(self.shape), self.group_size,
                               np.dtype(self.dtype), state)


def to_device(be, qt: QuantizedTensor) -> GpuQuantizedTensor:
    """Copy a numpy :class:`int4ref.QuantizedTensor` to the device (codes packed)."""
    if not isinstance(qt, QuantizedTensor):
        raise TypeError(f"to_device takes an int4ref.QuantizedTensor, got {type(qt).__name__}")
    fmt = gpu_format(qt.format)
    _check_even_group(qt.group_size)
    packed = be.asarray(pack_nibbles(qt.codes))
    if qt.scale_state is None:
        return GpuQuantizedTensor(fmt.name, packed, be.asarray(qt.scales), tuple(qt.shape), qt.group_size,
                                  np.dtype(qt.dtype), None, be)
    st = qt.scale_state
    if st.bits != 8 or st.blocksize != DQ_BLOCKSIZE:
        raise ValueError(f"GPU double quantization uses 8 bits in blocks of {DQ_BLOCKSIZE}; got {st.bits} bits, "
                         f"blocks of {st.blocksize}")
    state = GpuScaleState(be.asarray(st.codes), be.asarray(st.absmax.astype(np.float32)), np.float32(st.offset),
                          np.asarray(st.table, np.float32), st.blocksize, st.bits)
    return GpuQuantizedTensor(fmt.name, packed, None, tuple(qt.shape), qt.group_size, np.dtype(qt.dtype), state, be)


# ---------------------------------------------------------------------------------------
# quantize


def _check_even_group(g: int) -> None:
    if g % 2:
        raise ValueError(f"the GPU kernels need an even group_size (two codes per byte, a byte never spans two "
                         f"groups); got {g}")
    if g >= 2**31:
        raise ValueError(f"group_size {g} does not fit the kernels' 32-bit group size")


def _check_input(be, x, name="x"):
    """dtype, emptiness; returns a C-contiguous float16/float32 device array (flattened)."""
    xp = be.xp
    dt = np.dtype(x.dtype)
    if dt.kind == "c":
        raise TypeError(f"{name} has complex dtype {dt}; 4-bit quantization needs real floats")
    if dt.kind in "biu":
        raise TypeError(f"{name} has integer/bool dtype {dt}; pass floating-point values "
                        f"(convert with .astype(cupy.float32) if that is what you mean)")
    if dt not in (f16, f32, np.dtype(np.float64)):
        raise TypeError(f"{name} has dtype {dt}; expected one of: float16, float32, float64")
    if x.size == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)}); nothing to quantize")
    flat = xp.ascontiguousarray(x).reshape(-1)
    if dt == np.float64:  # numpy's order: NaN/Inf first, then the float32 range
        _raise_nonfinite(be, flat, name)
        big = xp.abs(flat) > np.finfo(np.float32).max
        if bool(big.any()):
            i = int(xp.flatnonzero(big)[0])
            raise ValueError(f"{name}[{i}] = {float(flat[i]):.3g} does not fit in float32, which int4ref computes in")
        flat = flat.astype(np.float32)
    return flat


def _raise_nonfinite(be, flat, name):
    xp = be.xp
    bad = ~xp.isfinite(flat)
    count = int(bad.sum())
    if count:
        first = int(xp.flatnonzero(bad)[0])
        kind = "NaN" if bool(xp.isnan(flat[first])) else "Inf"
        raise ValueError(f"{name} contains {count} non-finite value(s) (first: {kind} at flat index {first}); "
                         f"4-bit formats cannot represent NaN or Inf")


def next_pow2(v: int) -> int:
    """The smallest power of two >= v (1 for v <= 1)."""
    return 1 << max(0, (v - 1).bit_length())


def quantize_plan(n: int, group_size: int, itemsize: int, aligned: bool) -> dict:
    """Kernel choice and launch configuration of :func:`quantize` (exposed for tests and
    the benchmark): VEC values per lane per step, lanes per group, grid and block."""
    vec = 16 // itemsize
    if not (aligned and group_size % vec == 0 and n % vec == 0):
        vec = 2
    lpg = min(kernels.WARP_SIZE, next_pow2(math.ceil(group_size / vec)))
    n_groups = math.ceil(n / group_size)
    groups_per_block = (256 // kernels.WARP_SIZE) * (kernels.WARP_SIZE // lpg)
    return {"vec": vec, "lanes_per_group": lpg, "grid": (math.ceil(n_groups / groups_per_block),), "block": (256,)}


def quantize(be, x, format="nf4", group_size=64, scale_dtype=np.float32, double_quant=False) -> GpuQuantizedTensor:
    """Group-wise 4-bit quantization on the device; bit-identical to :func:`int4ref.quantize`.

    ``x``: device array of any shape, float16/32/64 (float64 is checked to fit float32,
    then converted, as numpy does). ``group_size``: even positive int, ``"row"`` or
    ``"tensor"``. ``scale_dtype``: float32 or float16 (a float16 overflow or underflow is a
    ValueError, as in numpy). ``double_quant``: QLoRA's double quantization of the scales.
    """
    fmt = gpu_format(format)
    sdt = np.dtype(scale_dtype if scale_dtype is not None else np.float32)
    if sdt not in (f32, f16):
        raise TypeError(f"scale_dtype must be float32 or float16, got {sdt}")
    flat = _check_input(be, x)
    in_dtype = np.dtype(x.dtype)  # what dequantize returns by default, as in numpy
    g = resolve_group_size(group_size, tuple(x.shape))
    _check_even_group(g)
    n = flat.size
    plan = quantize_plan(n, g, flat.dtype.itemsize, be.ptr(flat) % 16 == 0)
    packed = be.empty((n + 1) // 2, np.uint8)
    scales = be.empty(math.ceil(n / g), sdt)
    flags = be.zeros(1, np.int32)
    _, _, order = format_tables(fmt)
    expr = kernels.quantize_expr(CTYPE[np.dtype(flat.dtype)], uses_int_sym_kernel(fmt), plan["vec"])
    be.launch("quantize.cu", expr, plan["grid"], plan["block"],
              (flat, np.int64(n), np.int32(g), np.int32(plan["lanes_per_group"]), device_midpoints(be, fmt),
               np.uint64(order), packed, scales, np.int32(sdt == f16), flags))
    bits = int(be.to_host(flags)[0])
    if bits & FLAG_NONFINITE:
        _raise_nonfinite(be, flat, "x")
    if bits & (FLAG_SCALE_OVERFLOW | FLAG_SCALE_UNDERFLOW):
        _raise_scale_error(be, flat, g, fmt)
    state = None
    if double_quant:
        state = double_quantize(be, scales)
        scales = None
    return GpuQuantizedTensor(fmt.name, packed, scales, tuple(x.shape), g, in_dtype, state, be)


def _raise_scale_error(be, flat, g, fmt):
    """Recompute the float32 scales and let the numpy reference's _store raise its error."""
    xp = be.xp
    n = flat.size
    pad = -n % g
    groups = xp.concatenate([flat, xp.zeros(pad, flat.dtype)]) if pad else flat
    absmax = xp.abs(groups.reshape(-1, g)).max(axis=1).astype(np.float32)
    scales = fmt.scale_from_absmax(absmax) if uses_int_sym_kernel(fmt) else absmax
    store_scales(np.asarray(be.to_host(scales), dtype=np.float32), np.float16)
    raise AssertionError("a kernel flagged a float16 scale error that the reference does not see")


def double_quantize(be, scales) -> GpuScaleState:
    """QLoRA double quantization of first-level ``scales`` (device, float32 or float16),
    as :func:`int4ref.double_quantize` with its defaults (8-bit dynamic map, blocks of 256).

    The offset is the float64 mean of the scales rounded to float32. numpy sums pairwise
    and the GPU in another order; the two float64 sums are equal whenever they are exact
    (scales within a factor of about 2**(29 - log2(n)) of each other), and otherwise
    differ in the last float64 bits, which changes the float32 offset only if the mean
    lies within about 1e-16 (relative) of a float32 rounding boundary.
    """
    xp = be.xp
    s32 = scales.astype(np.float32)
    offset = np.float32(float(xp.mean(s32, dtype=np.float64)))
    n = scales.size
    codes = be.empty(n, np.uint8)
    absmax = be.empty(math.ceil(n / DQ_BLOCKSIZE), np.float32)
    table, mids = dynamic_map_tables()
    mids_dev = _TABLES.get(be, ("dq_midpoints",), lambda: mids)
    be.launch("quantize.cu", "double_quantize_scales", (absmax.size,), (DQ_BLOCKSIZE,),
              (scales, np.int32(np.dtype(scales.dtype) == f16), np.int64(n), offset, mids_dev, codes, absmax))
    return GpuScaleState(codes, absmax, offset, table, DQ_BLOCKSIZE, 8)


def decode_scales(be, state: GpuScaleState, n: int):
    """float32 scales of a double-quantized tensor, as ScaleState.decode computes them."""
    out = be.empty(n, np.float32)
    table = _TABLES.get(be, ("dq_table", state.table.tobytes()), lambda: state.table)
    be.launch("dequantize.cu", "decode_scales", (math.ceil(n / 256),), (256,),
              (state.codes, np.int64(n), table, state.absmax, np.int32(state.blocksize), np.float32(state.offset),
               out))
    return out


# ---------------------------------------------------------------------------------------
# dequantize


def dequantize_plan(n: int, group_size: int, aligned: bool) -> dict:
    nbytes = 8 if (aligned and group_size % 16 == 0 and n % 16 == 0) else 1
    threads = math.ceil(math.ceil(n / 2) / nbytes)
    return {"bytes": nbytes, "grid": (math.ceil(threads / 256),), "block": (256,)}


def dequantize(be, qt: GpuQuantizedTensor, dtype=None):
    """Values of ``qt`` on the device, shape ``qt.shape``, dtype ``dtype`` (default
    ``qt.dtype``; float16, float32 or float64); bit-identical to :func:`int4ref.dequantize`."""
    if not isinstance(qt, GpuQuantizedTensor):
        raise TypeError(f"dequantize takes a GpuQuantizedTensor, got {type(qt).__name__}")
    dtype = np.dtype(dtype or qt.dtype)
    if dtype not in (f16, f32, np.dtype(np.float64)):
        raise TypeError(f"dequantize returns float16, float32 or float64, not {dtype}")
    fmt = gpu_format(qt.format)
    n, g = qt.size, qt.group_size
    scales = qt.scales if qt.scale_state is None else decode_scales(be, qt.scale_state, qt.n_groups)
    out_dt = f16 if dtype == f16 else f32
    plan = dequantize_plan(n, g, be.ptr(qt.packed) % 8 == 0)
    out = be.empty(n, out_dt)
    expr = kernels.dequantize_expr(CTYPE[np.dtype(scales.dtype)], CTYPE[out_dt], plan["bytes"])
    be.launch("dequantize.cu", expr, plan["grid"], plan["block"],
              (qt.packed, np.int64(n), np.int32(g), device_values(be, fmt), scales, out))
    out = out.reshape(qt.shape)
    return out.astype(dtype) if dtype != out_dt else out


# ---------------------------------------------------------------------------------------
# GEMV


def check_gemv(x_shape, x_dtype, w_shape, group_size, fmt_name, version=None, out_dtype=np.float16):
    """Validate a GEMV call (both paths); returns ``(M, N, K, version, out_dtype, squeeze)``."""
    gpu_format(fmt_name)
    if len(w_shape) != 2:
        raise ValueError(f"the GEMV weight must be 2-D (N out, K in); got shape {tuple(w_shape)}")
    N, K = (int(v) for v in w_shape)
    if K % group_size:
        raise ValueError(f"group_size {group_size} does not divide K = {K}: GEMV groups run along K and must "
                         f"not span two rows")
    if np.dtype(x_dtype) != f16:
        raise TypeError(f"x must be float16 (W4A16), got {np.dtype(x_dtype)}; convert with .astype(float16)")
    squeeze = len(x_shape) == 1
    if len(x_shape) not in (1, 2):
        raise ValueError(f"x must be (K,) or (M, K); got shape {tuple(x_shape)}")
    M = 1 if squeeze else int(x_shape[0])
    if int(x_shape[-1]) != K:
        raise ValueError(f"x has {x_shape[-1]} columns but the weight has K = {K}")
    if not 1 <= M <= GEMV_MAX_M:
        raise ValueError(f"the GEMV takes M = 1..{GEMV_MAX_M} activation rows, got M = {M} (use a GEMM)")
    out_dtype = np.dtype(out_dtype)
    if out_dtype not in (f16, f32):
        raise TypeError(f"out_dtype must be float16 or float32, got {out_dtype}")
    fast_ok = K % 32 == 0 and group_size % 32 == 0
    if version is None:
        version = "v3" if fast_ok else "v1"
    if version not in kernels.GEMV_VERSIONS:
        raise ValueError(f"version must be one of {kernels.GEMV_VERSIONS} or None, got {version!r}")
    if version != "v1" and not fast_ok:
        raise ValueError(f"gemv {version} needs K and group_size to be multiples of 32 (K = {K}, "
                         f"group_size = {group_size}); use version='v1'")
    return M, N, K, version, out_dtype, squeeze


def gemv_plan(version: str, M: int, N: int) -> dict:
    if version == "v1":
        return {"grid": (math.ceil(N / 128),), "block": (128,)}
    if version == "v2":
        return {"grid": (math.ceil(N / 4),), "block": (128,)}
    m_max = next(m for m in kernels.GEMV_M_MAX if m >= M)
    rows_per_block = 4 * kernels.gemv_v3_rows(m_max)
    return {"grid": (math.ceil(N / rows_per_block),), "block": (128,), "m_max": m_max}


def gemv(be, x, w: GpuQuantizedTensor, version=None, out_dtype=np.float16):
    """``y = x @ W^T`` with the 4-bit ``w`` dequantized on the fly; see :func:`int4ref.gpu.gemv`."""
    if not isinstance(w, GpuQuantizedTensor):
        raise TypeError(f"w must be a GpuQuantizedTensor (int4ref.quantize of a CuPy array), got {type(w).__name__}")
    M, N, K, version, out_dtype, squeeze = check_gemv(tuple(x.shape), x.dtype, w.shape, w.group_size, w.format,
                                                      version, out_dtype)
    fmt = gpu_format(w.format)
    xp = be.xp
    x2 = xp.ascontiguousarray(x).reshape(M, K)
    if be.ptr(x2) % 16:
        x2 = x2.copy()  # a fresh allocation is 256-byte aligned
        if be.ptr(x2) % 16:
            raise ValueError("could not get a 16-byte aligned copy of x")
    scales = w.scales if w.scale_state is None else decode_scales(be, w.scale_state, w.n_groups)
    y = be.empty((M, N), out_dtype)
    run_gemv(be, version, w.packed, scales, device_values(be, fmt), x2, y, M, N, K, w.group_size,
             uses_int_sym_kernel(fmt))
    return y.reshape(N) if squeeze else y


def run_gemv(be, version, packed, scales, values, x, y, M, N, K, group_size, uniform):
    """Launch one GEMV kernel on prepared device arrays (no validation: the benchmark's entry)."""
    plan = gemv_plan(version, M, N)
    s_type = CTYPE[np.dtype(scales.dtype)]
    if version == "v3":
        expr = kernels.gemv_expr("v3", s_type, plan["m_max"], uniform)
    else:
        expr = kernels.gemv_expr(version, s_type)
    be.launch("gemv.cu", expr, plan["grid"], plan["block"],
              (packed, scales, values, x, y, np.int32(np.dtype(y.dtype) == f16), np.int32(M), np.int32(N),
               np.int32(K), np.int32(group_size)))


def gemv_reference(x, w: QuantizedTensor, version=None, out_dtype=np.float16):
    """The CPU path: ``x @ dequantize(w)^T`` in float32 with numpy (same checks as the GPU)."""
    if not isinstance(w, QuantizedTensor):
        raise TypeError(f"w must be an int4ref.QuantizedTensor for numpy x, got {type(w).__name__}")
    x = np.asarray(x)
    M, N, K, version, out_dtype, squeeze = check_gemv(x.shape, x.dtype, w.shape, w.group_size, w.format,
                                                      version, out_dtype)
    from ..quant import dequantize as dequantize_cpu

    y = x.reshape(M, K).astype(np.float32) @ dequantize_cpu(w, np.float32).T
    y = y.astype(out_dtype)
    return y.reshape(N) if squeeze else y
