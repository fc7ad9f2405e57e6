"""The GPU kernels against the numpy reference: bit for bit (codes, scales, dequantized
values), and the GEMV within 1e-3 of a float32 product on the dequantized weights.

Every kernel test runs on two backends:

* ``cupy``: a real GPU through ``cupy.RawModule``; skipped, with the reason, when
  ``cupy.cuda.runtime.getDeviceCount()`` raises or returns 0;
* ``emulator``: the same CUDA source compiled for the CPU with the SIMT emulator of
  :mod:`int4ref.gpu.emulator` (every CUDA thread a fiber; shuffles and barriers
  synchronise for real; out-of-bounds reads, misaligned vector accesses and writes past
  a buffer are errors). Skipped only without a C++ compiler.

The emulator proves indexing, packing, reductions and the float32 arithmetic on a
machine without a GPU; it says nothing about speed. Tests marked ``needs_gpu`` check
what only a GPU can (the public CuPy API end to end, large tensors, the benchmark).
CI sets INT4REF_REQUIRE_EMULATOR=1: there a missing C++ compiler is a failure, not a skip.
tools/device_check.sh sets INT4REF_REQUIRE_GPU=1 on the device machine: there a missing GPU
fails the ``cupy`` and ``needs_gpu`` tests instead of skipping them.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import int4ref
from int4ref.gpu import kernels, ops
from int4ref.gpu.backend import NoDeviceError, cupy_backend, device_status
from int4ref.gpu.emulator import EmulatorBackend, EmulatorError, find_compiler
from int4ref.packing import pack_nibbles

HAVE_GPU, GPU_REASON = device_status()
# tools/device_check.sh sets this on the device machine: there a GPU test that cannot run fails
REQUIRE_GPU = os.environ.get("INT4REF_REQUIRE_GPU") == "1"
no_gpu_only = pytest.mark.skipif(HAVE_GPU, reason="checks the behaviour without a GPU")
FORMATS = ops.SUPPORTED_FORMATS
f16, f32 = np.float16, np.float32


def skip_without_gpu():
    if not HAVE_GPU:
        if REQUIRE_GPU:
            pytest.fail(f"INT4REF_REQUIRE_GPU=1 but no GPU: {GPU_REASON}")
        pytest.skip(f"no GPU: {GPU_REASON}")


@pytest.fixture
def gpu():
    skip_without_gpu()


needs_gpu = pytest.mark.usefixtures("gpu")


def skip_without_compiler():
    if find_compiler() is None:
        reason = "no C++ compiler (g++/clang++) for the CPU emulator"
        if os.environ.get("INT4REF_REQUIRE_EMULATOR") == "1":
            pytest.fail(f"INT4REF_REQUIRE_EMULATOR=1 but {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def emulator():
    skip_without_compiler()
    return EmulatorBackend()


@pytest.fixture(scope="module", params=["emulator", "cupy"])
def be(request):
    if request.param == "emulator":
        return request.getfixturevalue("emulator")
    skip_without_gpu()
    return cupy_backend()


def same_bits(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def check_quantize(be, x, fmt, g, sdt=f32, dq=False, x_dev=None):
    """Quantize on the backend and on the CPU; everything must be the same bits."""
    ref = int4ref.quantize(x, fmt, g, sdt, double_quant=dq)
    got = ops.quantize(be, be.asarray(x) if x_dev is None else x_dev, fmt, g, sdt, dq)
    host = got.to_cpu()
    assert same_bits(be.to_host(got.packed), pack_nibbles(ref.codes)), "packed codes"
    assert same_bits(host.codes, ref.codes) and host.dtype == ref.dtype and host.shape == ref.shape
    if dq:
        s, r = host.scale_state, ref.scale_state
        assert same_bits(s.codes, r.codes) and same_bits(s.absmax, r.absmax)
        assert same_bits(np.float32(s.offset), np.float32(r.offset))
        assert same_bits(be.to_host(got.scale_values()), ref.scale_values())
    else:
        assert same_bits(host.scales, ref.scales), "scales"
    for dtype in (f16, f32):
        with np.errstate(over="ignore"):  # values beyond float16's range become inf on both sides
            expected = int4ref.dequantize(ref, dtype)
        assert same_bits(be.to_host(ops.dequantize(be, got, dtype)), expected), dtype
    assert got.bits_per_weight() == ref.bits_per_weight()
    return got, ref


def normal(shape, dtype=f32, seed=0, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(dtype)


# ---------------------------------------------------------------------------------------
# quantize / dequantize: bit-exact


CASES = [  # (group_size, n): vector paths, partial last groups, odd n, non-power-of-two groups
    (64, 64 * 40), (32, 999), (6, 601), (128, 128 * 9 + 64), (96, 96 * 5 + 8), (2, 5), (256, 512), (1024, 2048 + 8),
]


@pytest.mark.parametrize("in_dtype", [f32, f16], ids=["f32", "f16"])
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("g,n", CASES, ids=[f"g{g}-n{n}" for g, n in CASES])
def test_quantize_bit_exact(be, fmt, in_dtype, g, n):
    check_quantize(be, normal(n, in_dtype, seed=n + g, scale=2.0), fmt, g, f32 if n % 2 else f16)


@pytest.mark.parametrize("fmt", FORMATS)
def test_quantize_float64_input_and_shapes(be, fmt):
    x = normal((7, 3, 20), np.float64, seed=3)
    got, ref = check_quantize(be, x, fmt, 10)
    assert got.shape == (7, 3, 20) and got.dtype == np.float64
    assert ops.dequantize(be, got).dtype == np.float64
    check_quantize(be, normal((12, 34), f32, seed=4), fmt, "row")
    check_quantize(be, normal((12, 34), f32, seed=5), fmt, "tensor")


@pytest.mark.parametrize("fmt", ["nf4", "fp4_bnb", "lloyd_max"])
def test_table_ties_go_to_the_lower_code(be, fmt):
    """Values exactly on a midpoint (group absmax 1, so v = x): the lower entry wins."""
    f = int4ref.get_format(fmt)
    mids = f._midpoints
    x = np.concatenate([[1.0], mids, -mids, np.nextafter(mids, np.inf), np.nextafter(mids, -np.inf), [0.0, -0.0]])
    x = np.concatenate([x, np.zeros(-x.size % 64)]).astype(f32)
    got, ref = check_quantize(be, x, fmt, 64)
    codes = got.to_cpu().codes[1:16]
    values = f.table[codes]
    below = np.sort(f.table)[:-1]
    assert np.array_equal(values, below[: values.size])  # each midpoint maps to the entry below it


def test_int4_sym_rounds_half_to_even(be):
    # absmax 7 -> scale 1: x / s are exact half-integers, rint goes to the even neighbour
    x = np.array([7.0, -7.0, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3.5, 6.5, -6.5, 0.0] + [0.0] * 4, dtype=f32)
    got, _ = check_quantize(be, x, "int4_sym", 16)
    q = got.to_cpu().codes.astype(int) - 8
    assert list(q[:12]) == [7, -7, 0, 2, 2, 0, -2, -2, 4, 6, -6, 0]


@pytest.mark.parametrize("fmt", FORMATS)
def test_special_groups(be, fmt):
    """All-zero groups, signed zeros, subnormals, absmax below 1e-38, huge values."""
    tiny = np.float32(1e-40)  # float32 subnormal, below the 1e-38 clamp
    groups = [
        np.zeros(8),
        np.array([-0.0, 0.0, -0.0, 0.0, 0, 0, 0, 0]),
        np.array([tiny, -tiny, tiny / 2, 0, 0, 0, 0, 0]),
        np.array([1e-38, -3e-39, 5e-39, 0, 1e-39, 0, 0, 0]),
        np.array([3e38, -3e38, 1e38, 1, -1, 0, 2e37, -1e30]),
        np.array([5.0, -5.0, 5.0, -5.0, 2.5, -2.5, 1.25, -1.25]),
    ]
    x = np.concatenate(groups).astype(f32)
    check_quantize(be, x, fmt, 8)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("sdt", [f32, f16], ids=["scale32", "scale16"])
def test_double_quantization_bit_exact(be, fmt, sdt):
    # 64 * 300 + 30 values -> 301 scales: two second-level blocks of 256, the last partial
    x = normal(64 * 300 + 30, f32, seed=7) * np.repeat(np.linspace(0.5, 2.0, 301), 64)[: 64 * 300 + 30]
    check_quantize(be, x.astype(f32), fmt, 64, sdt, dq=True)


def test_unaligned_input_takes_the_scalar_path(be):
    x = normal(64 * 17 + 1, f32, seed=9)
    x_dev = be.asarray(x)[1:]  # 4 bytes past a 256-byte boundary: no 16-byte loads
    assert be.ptr(x_dev) % 16 == 4
    check_quantize(be, x[1:], "nf4", 64, x_dev=x_dev)
    if isinstance(be, EmulatorBackend):
        last = [expr for name, expr, *_ in be.launches if name == "quantize.cu"][-1]
        assert last == kernels.quantize_expr("float", False, 2)


@pytest.mark.parametrize("fmt", FORMATS)
def test_to_device_round_trip(be, fmt):
    ref = int4ref.quantize(normal((40, 64), f32, seed=11), fmt, 32, f16, double_quant=fmt == "nf4")
    dev = ops.to_device(be, ref)
    back = dev.to_cpu()
    assert same_bits(back.codes, ref.codes)
    assert same_bits(be.to_host(ops.dequantize(be, dev, f32)), int4ref.dequantize(ref, f32))


@settings(max_examples=25)
@given(
    fmt=st.sampled_from(FORMATS),
    half_g=st.integers(1, 80),
    n=st.integers(1, 700),
    in16=st.booleans(),
    s16=st.booleans(),
    scale=st.sampled_from([1e-3, 1.0, 300.0]),
    seed=st.integers(0, 2**31 - 1),
)
def test_quantize_property(emulator, fmt, half_g, n, in16, s16, scale, seed):
    x = normal(n, f16 if in16 else f32, seed=seed, scale=scale)
    check_quantize(emulator, x, fmt, 2 * half_g, f16 if s16 else f32)


def test_bitsandbytes_recorded_outputs(be):
    """Full blocks, no double quantization: int4ref's GPU bytes equal bitsandbytes' own."""
    from pathlib import Path

    data = np.load(Path(__file__).parent / "data" / "bnb_parity.npz")
    meta = json.loads(str(data["meta"]))
    checked = 0
    for case in meta["cases"]:
        x = data["x_" + case["name"]]
        if case["compress_statistics"] or x.size % case["blocksize"] or x.size % 2:
            continue  # partial blocks: bitsandbytes divides instead of multiplying (see interop)
        fmt = {"nf4": "nf4", "fp4": "fp4_bnb"}[case["quant_type"]]
        got = ops.quantize(be, be.asarray(x), fmt, case["blocksize"])
        key = case["key"]
        assert same_bits(be.to_host(got.packed), data[key + "_packed"].reshape(-1)), key
        assert same_bits(be.to_host(got.scales), data[key + "_absmax"]), key
        deq = be.to_host(ops.dequantize(be, got, f32)).astype(x.dtype)
        assert np.array_equal(deq, data[key + "_deq"]), key
        checked += 1
    assert checked >= 8


# ---------------------------------------------------------------------------------------
# errors: the same messages as the numpy reference


def numpy_error(x, *args):
    """(exception type, message) of the numpy reference, or None when it accepts x."""
    try:
        int4ref.quantize(x, *args)
    except (ValueError, TypeError) as exc:
        return type(exc), str(exc)
    return None


@pytest.mark.parametrize("x,args", [
    (np.array([1.0, np.nan, 2.0, np.inf], f32), ("nf4", 2)),
    (np.array([1.0, 2.0, np.inf, 3.0], f16), ("int4_sym", 2)),
    (np.array([1.0, 1e5, 3.0, 4.0], f32), ("nf4", 2, f16)),  # float16 scale overflow
    (np.array([1e5, 2.0, 3.0, 4.0], f32), ("int4_sym", 2, f16)),  # 1e5 / 7 still fits: no error
    (np.array([1e-9, 2e-9, 1.0, 1.0], f32), ("int4_sym", 2, f16)),  # float16 scale underflow
    (np.array([1.0, 1e300, 1.0, 1.0], np.float64), ("nf4", 2)),
    (np.array([1.0, np.nan, 1.0, 1.0], np.float64), ("nf4", 2)),
], ids=["nan", "inf-f16", "f16-overflow", "f16-fits", "f16-underflow", "f64-range", "f64-nan"])
def test_bad_values_raise_like_numpy(be, x, args):
    expected = numpy_error(x, *args)
    if expected is None:  # numpy accepts it: so must the GPU, with the same bits
        check_quantize(be, x, *args)
        return
    kind, message = expected
    with pytest.raises(kind) as info:
        ops.quantize(be, be.asarray(x), *args)
    assert str(info.value) == message


@pytest.mark.parametrize("kwargs,exc,match", [
    ({"format": "int4_asym"}, ValueError, "has no GPU kernel"),
    ({"format": "fp4_e2m1"}, ValueError, "has no GPU kernel"),
    ({"format": "q8"}, ValueError, "unknown format"),
    ({"group_size": 7}, ValueError, "even group_size"),
    ({"group_size": 0}, ValueError, "positive"),
    ({"group_size": "col"}, ValueError, "group_size"),
    ({"scale_dtype": np.float64}, TypeError, "scale_dtype"),
])
def test_bad_arguments(emulator, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        ops.quantize(emulator, emulator.asarray(np.ones(16, f32)), **kwargs)


@pytest.mark.parametrize("x,exc,match", [
    (np.ones(4, np.int32), TypeError, "integer"),
    (np.ones(4, np.complex64), TypeError, "complex"),
    (np.ones(0, f32), ValueError, "empty"),
])
def test_bad_input(emulator, x, exc, match):
    with pytest.raises(exc, match=match):
        ops.quantize(emulator, x, "nf4", 2)


def test_quantized_tensor_validation(emulator):
    qt = ops.quantize(emulator, emulator.asarray(np.ones(10, f32)), "nf4", 4)
    with pytest.raises(ValueError, match="packed"):
        ops.GpuQuantizedTensor("nf4", qt.packed[:-1], qt.scales, (10,), 4, np.dtype(f32), None, emulator)
    with pytest.raises(ValueError, match="scales"):
        ops.GpuQuantizedTensor("nf4", qt.packed, qt.scales[:-1], (10,), 4, np.dtype(f32), None, emulator)
    with pytest.raises(ValueError, match="exactly one"):
        ops.GpuQuantizedTensor("nf4", qt.packed, None, (10,), 4, np.dtype(f32), None, emulator)
    with pytest.raises(TypeError, match="GpuQuantizedTensor"):
        ops.dequantize(emulator, qt.to_cpu())
    with pytest.raises(TypeError, match="float16, float32 or float64"):
        ops.dequantize(emulator, qt, np.int8)


def test_public_functions_check_where_the_data_is():
    with pytest.raises(TypeError, match="CuPy array"):
        int4ref.gpu.quantize(np.ones(8, f32))
    with pytest.raises(TypeError, match="GpuQuantizedTensor"):
        int4ref.gpu.dequantize(int4ref.quantize(np.ones(8, f32)))


class FakeDeviceArray:
    """Looks like a GPU array to the dispatch (has __cuda_array_interface__)."""

    __cuda_array_interface__ = {"shape": (4,), "typestr": "<f4", "data": (0, False), "version": 3}
    dtype = np.dtype(f32)
    shape = (4,)
    size = 4


@no_gpu_only
def test_without_a_gpu_the_error_says_why():
    with pytest.raises(NoDeviceError, match="CUDA|CuPy"):
        int4ref.gpu.quantize(FakeDeviceArray())


@no_gpu_only
def test_int4ref_quantize_sends_device_arrays_to_the_gpu():
    import inspect

    if "gpu" not in inspect.getsource(int4ref.quant):
        pytest.skip("int4ref/quant.py does not dispatch to int4ref.gpu yet (shared-file diff of issue 6)")
    with pytest.raises(NoDeviceError):
        int4ref.quantize(FakeDeviceArray(), "nf4", 2)
    assert int4ref.quantize(np.ones(4, f32), "nf4", 2).codes.dtype == np.uint8  # numpy stays on the CPU


# ---------------------------------------------------------------------------------------
# GEMV


GEMV_FORMATS = [("nf4", 64, f32), ("int4_sym", 128, f16), ("fp4_bnb", 32, f32), ("int4_sym", 32, f32)]


def gemv_reference(x, qt_cpu):
    w = int4ref.dequantize(qt_cpu, np.float64)
    return x.astype(np.float64) @ w.T


def rel_err(y, ref):
    return float(np.abs(np.asarray(y, np.float64) - ref).max() / np.abs(ref).max())


@pytest.mark.parametrize("version", kernels.GEMV_VERSIONS)
@pytest.mark.parametrize("fmt,g,sdt", GEMV_FORMATS, ids=[f"{f}-g{g}-{np.dtype(s).name}" for f, g, s in GEMV_FORMATS])
@pytest.mark.parametrize("M", [1, 3, 16])
def test_gemv_matches_float32_reference(be, version, fmt, g, sdt, M):
    N, K = 21, 256  # N not a multiple of any rows-per-block: the last block is partial
    w = normal((N, K), f32, seed=M)
    qt = ops.quantize(be, be.asarray(w), fmt, g, sdt)
    x = normal((M, K), f16, seed=100 + M)
    ref = gemv_reference(x, qt.to_cpu())
    y16 = be.to_host(ops.gemv(be, be.asarray(x), qt, version))
    assert y16.dtype == f16 and y16.shape == (M, N)
    assert rel_err(y16, ref) <= 1e-3
    y32 = be.to_host(ops.gemv(be, be.asarray(x), qt, version, np.float32))
    assert y32.dtype == f32 and rel_err(y32, ref) <= 1e-5  # float32 sums: only the order differs


@pytest.mark.parametrize("N", [1, 5, 16, 17])
@pytest.mark.parametrize("M", [1, 2, 5])
def test_gemv_every_row_and_batch_size(be, N, M):
    K = 64
    qt = ops.quantize(be, be.asarray(normal((N, K), f32, seed=N)), "nf4", 32)
    x = normal((M, K), f16, seed=M)
    ref = gemv_reference(x, qt.to_cpu())
    for version in kernels.GEMV_VERSIONS:
        assert rel_err(be.to_host(ops.gemv(be, be.asarray(x), qt, version, f32)), ref) <= 1e-5, version


def test_gemv_small_groups_use_v1(be):
    N, K, g = 9, 60, 6  # K and group_size not multiples of 32: only the naive version applies
    qt = ops.quantize(be, be.asarray(normal((N, K), f32, seed=1)), "int4_sym", g)
    x = normal(K, f16, seed=2)
    y = be.to_host(ops.gemv(be, be.asarray(x), qt))
    assert y.shape == (N,)
    assert rel_err(y, gemv_reference(x[None], qt.to_cpu())[0]) <= 1e-3
    with pytest.raises(ValueError, match="multiples of 32"):
        ops.gemv(be, be.asarray(x), qt, "v3")


def test_gemv_double_quantized_weights(be):
    qt = ops.quantize(be, be.asarray(normal((48, 512), f32, seed=3)), "nf4", 64, double_quant=True)
    x = normal((2, 512), f16, seed=4)
    assert rel_err(be.to_host(ops.gemv(be, be.asarray(x), qt)), gemv_reference(x, qt.to_cpu())) <= 1e-3


def test_gemv_cpu_path_is_the_reference():
    qt = int4ref.quantize(normal((20, 64), f32, seed=5), "nf4", 32)
    x = normal((3, 64), f16, seed=6)
    y = int4ref.gpu.gemv(x, qt, out_dtype=np.float32)
    assert y.dtype == f32 and rel_err(y, gemv_reference(x, qt)) <= 1e-6


@pytest.mark.parametrize("x_shape,x_dtype,w_shape,g,kwargs,exc,match", [
    ((17, 64), f16, (8, 64), 32, {}, ValueError, "M = 1..16"),
    ((0, 64), f16, (8, 64), 32, {}, ValueError, "M = 1..16"),
    ((1, 64), f32, (8, 64), 32, {}, TypeError, "float16"),
    ((1, 32), f16, (8, 64), 32, {}, ValueError, "K = 64"),
    ((1, 96), f16, (8, 96), 64, {}, ValueError, "does not divide"),
    ((1, 64), f16, (2, 8, 64), 32, {}, ValueError, "2-D"),
    ((1, 1, 64), f16, (8, 64), 32, {}, ValueError, r"\(M, K\)"),
    ((1, 64), f16, (8, 64), 32, {"version": "v4"}, ValueError, "version"),
    ((1, 48), f16, (8, 48), 16, {"version": "v2"}, ValueError, "multiples of 32"),
    ((1, 64), f16, (8, 64), 32, {"out_dtype": np.float64}, TypeError, "out_dtype"),
])
def test_gemv_validation(x_shape, x_dtype, w_shape, g, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        ops.check_gemv(x_shape, x_dtype, w_shape, g, "nf4", **kwargs)
    if len(w_shape) == 2 and w_shape[1] % g == 0 and np.prod(x_shape) > 0:  # the CPU path says the same
        w = int4ref.quantize(np.ones(w_shape, f32), "nf4", g)
        with pytest.raises(exc, match=match):
            int4ref.gpu.gemv(np.ones(x_shape, x_dtype), w, **kwargs)


def test_gemv_rejects_mixed_devices(emulator):
    qt = ops.quantize(emulator, emulator.asarray(np.ones((4, 32), f32)), "nf4", 32)
    with pytest.raises(TypeError, match="numpy"):
        int4ref.gpu.gemv(np.ones((1, 32), f16), qt)
    with pytest.raises(TypeError, match="GpuQuantizedTensor"):
        ops.gemv(emulator, np.ones((1, 32), f16), qt.to_cpu())


# ---------------------------------------------------------------------------------------
# the emulator catches what would crash or corrupt on a GPU

BROKEN = r"""
extern "C" __global__ void read_past_end(const float* x, float* y, int n) {
    y[threadIdx.x] = __ldg(x + threadIdx.x + n);
}
extern "C" __global__ void misaligned(const float* x, float* y) {
    uint4 v = load16(x + 1);
    y[threadIdx.x] = __uint_as_float(v.x);
}
extern "C" __global__ void shuffle_after_exit(float* y) {
    if (threadIdx.x % 32 == 5) return;
    y[threadIdx.x] = warp_sum(1.0f);
}
extern "C" __global__ void barrier_in_a_branch(float* y) {  // lane 0 waits for the block,
    if (threadIdx.x == 0) __syncthreads();                     // lanes 1..31 for lane 0
    else y[threadIdx.x] = warp_sum(1.0f);
}
extern "C" __global__ void write_past_end(float* y, int n) {
    y[threadIdx.x + n] = 1.0f;
}
extern "C" __global__ void fine(const float* x, float* y) {
    y[threadIdx.x] = warp_sum(__ldg(x + threadIdx.x));
}
"""


@pytest.fixture(scope="module")
def broken():
    skip_without_compiler()
    names = ("read_past_end", "misaligned", "shuffle_after_exit", "barrier_in_a_branch", "write_past_end", "fine")
    return EmulatorBackend(kernels={"broken.cu": (BROKEN, names)})


@pytest.mark.parametrize("kernel,args,match", [
    ("read_past_end", lambda be: (be.zeros(32, f32), be.empty(32, f32), np.int32(1)), "outside every argument"),
    ("misaligned", lambda be: (be.zeros(32, f32), be.empty(32, f32)), "misaligned"),
    ("shuffle_after_exit", lambda be: (be.empty(32, f32),), "exited"),
    ("barrier_in_a_branch", lambda be: (be.empty(32, f32),), "deadlock"),
    ("write_past_end", lambda be: (be.empty(32, f32), np.int32(8)), "wrote outside"),
    ("fine", lambda be: (be.zeros(32, f32), np.int32(3)), "argument"),  # wrong argument list
])
def test_emulator_catches_kernel_bugs(broken, kernel, args, match):
    with pytest.raises((EmulatorError, TypeError), match=match):
        broken.launch("broken.cu", kernel, (1,), (32,), args(broken))


def test_emulator_runs_a_correct_kernel(broken):
    x = broken.asarray(np.arange(32, dtype=f32))
    y = broken.empty(32, f32)
    broken.launch("broken.cu", "fine", (1,), (32,), (x, y))
    assert np.all(y == np.float32(np.arange(32).sum()))


# ---------------------------------------------------------------------------------------
# GPU only: the public API on CuPy arrays, a large tensor, the benchmark


@needs_gpu
def test_public_api_on_cupy_arrays():
    import cupy

    x = normal((256, 512), f32, seed=12)
    qt = int4ref.gpu.quantize(cupy.asarray(x), "nf4", 64)
    ref = int4ref.quantize(x, "nf4", 64)
    assert isinstance(qt, int4ref.gpu.GpuQuantizedTensor)
    assert same_bits(cupy.asnumpy(qt.codes), ref.codes)
    assert same_bits(cupy.asnumpy(int4ref.gpu.dequantize(qt, f16)), int4ref.dequantize(ref, f16))
    xa = normal((4, 512), f16, seed=13)
    y = int4ref.gpu.gemv(cupy.asarray(xa), qt)
    assert isinstance(y, cupy.ndarray) and rel_err(cupy.asnumpy(y), gemv_reference(xa, ref)) <= 1e-3
    qt2 = int4ref.gpu.to_device(ref)
    assert same_bits(cupy.asnumpy(qt2.packed), cupy.asnumpy(qt.packed))


@needs_gpu
def test_int4ref_dispatches_cupy_arrays():
    import cupy

    x = normal((64, 128), f32, seed=14)
    qt = int4ref.quantize(cupy.asarray(x), "int4_sym", 128, np.float16)
    assert isinstance(qt, int4ref.gpu.GpuQuantizedTensor)
    out = int4ref.dequantize(qt)
    assert isinstance(out, cupy.ndarray)
    assert same_bits(cupy.asnumpy(out), int4ref.dequantize(int4ref.quantize(x, "int4_sym", 128, np.float16)))


@needs_gpu
@pytest.mark.parametrize("fmt,g,sdt", [("nf4", 64, f32), ("int4_sym", 128, f16)])
def test_large_tensor_bit_exact(fmt, g, sdt):
    be = cupy_backend()
    check_quantize(be, normal((4096, 4096), f16, seed=15), fmt, g, sdt)


@needs_gpu
def test_benchmark_quick_run(tmp_path):
    from int4ref.gpu import bench as bench_gpu

    out = tmp_path / "bench.json"
    assert bench_gpu.main(["--quick", "--repeats", "3", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["device"]["name"] and result["device"]["driver"] and result["device"]["cupy"]
    kinds = {(r["kernel"], r["version"]) for r in result["rows"]}
    for version in kernels.GEMV_VERSIONS:
        assert ("gemv", version) in kinds
    assert all(r["extra"].get("max_abs_err_over_max_abs_ref", 0) <= 1e-3 for r in result["rows"])
    assert result["complete"] and not result["emulated"] and result["quick"]
    assert bench_gpu.report(result)["gemv"].count("\n") >= 2


@no_gpu_only
def test_benchmark_fails_clearly_without_a_gpu(capsys):
    from int4ref.gpu import bench as bench_gpu

    assert bench_gpu.main([]) == 2
    assert "no GPU" in capsys.readouterr().err


def test_benchmark_code_runs_on_the_emulator(emulator):
    """The benchmark's launch code (argument lists, rotations, versions), tiny and untimed."""
    import time

    from int4ref.gpu import bench as bench_gpu

    def timer(fn, k):
        t = time.perf_counter()
        fn(0)
        ms = (time.perf_counter() - t) * 1e3
        return ms, [ms], "wall clock (emulator)"

    bench = bench_gpu.Bench(emulator, timer, lambda x, w, out: np.matmul(x, w, out=out),
                            lambda d, s: np.copyto(d, s), l2_bytes=2**14, max_bytes=2**24)
    rows = [bench_gpu.measure_copy(bench, 2**12)]
    rows += bench_gpu.measure_dequantize(bench, rows[0].gbps, (16, 64), "nf4", 64, f32, f16)
    rows += bench_gpu.measure_quantize(bench, rows[0].gbps, (16, 64), f16, "int4_sym", 64, f16)
    rows += bench_gpu.measure_gemv(bench, (20, 64), ms=(1, 2), formats=(("NF4", "nf4", 32, f32),
                                                                          ("INT4", "int4_sym", 64, f16)))
    assert {r.version for r in rows if r.kernel == "dequantize"} == {"1 packed byte/thread", "8 packed bytes/thread"}
    assert len([r for r in rows if r.kernel == "quantize"]) == 2
    gemv_rows = [r for r in rows if r.kernel == "gemv"]
    assert len(gemv_rows) == 2 * 2 * 3
    assert all(r.extra["max_abs_err_over_max_abs_ref"] <= 1e-3 for r in gemv_rows)
    assert "gemv" in bench_gpu.format_table(rows)
