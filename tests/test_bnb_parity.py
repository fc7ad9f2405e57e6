"""int4ref.interop.bitsandbytes against bitsandbytes' own outputs.

Two sources of truth: outputs recorded from bitsandbytes 0.50 (tests/data/bnb_parity.npz,
made by tools/make_bnb_fixtures.py; runs everywhere), and, where bitsandbytes and torch
are installed, the live library on random inputs (hypothesis). A last section pins down a
bitsandbytes CPU decoding bug (0.49.0 to 0.50.2, AVX-512 only) that int4ref does not copy.
"""
import json
import platform
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from int4ref.interop import bitsandbytes as bnb_ref

FIXTURES = Path(__file__).parent / "data" / "bnb_parity.npz"


def same_bytes(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def same_values(a, b):
    """Equal values; the sign of zero is ignored (bitsandbytes' own CPU paths disagree on it:
    its C++ kernel decodes FP4 code 8 as -0.0, its Python fallback as +0.0)."""
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b)


def load_cases():
    data = np.load(FIXTURES)
    meta = json.loads(str(data["meta"]))
    return data, meta


DATA, META = load_cases()


@pytest.mark.parametrize("case", META["cases"], ids=lambda c: f"{c['name']}-{c['quant_type']}-{c['blocksize']}-"
                         f"{'dq' if c['compress_statistics'] else 'plain'}")
def test_recorded_bitsandbytes_outputs(case):
    key = case["key"]
    x = DATA["x_" + case["name"]]
    packed, state = bnb_ref.quantize_4bit(
        x, blocksize=case["blocksize"], quant_type=case["quant_type"],
        compress_statistics=case["compress_statistics"], torch_cpu=(META["simd_width"], META["num_threads"]),
    )
    assert same_bytes(packed, DATA[key + "_packed"])
    assert same_bytes(state.absmax, DATA[key + "_absmax"])
    if case["compress_statistics"]:
        assert same_bytes(np.float32(state.offset), DATA[key + "_offset"])
        assert same_bytes(state.state2.absmax, DATA[key + "_absmax2"])
    assert same_values(bnb_ref.dequantize_4bit(packed, state), DATA[key + "_deq"])


def test_fixture_covers_the_promised_cases():
    names = {c["name"] for c in META["cases"]}
    assert {"odd_length", "partial_block", "zero_blocks", "all_zero", "ties", "fp16"} <= names
    assert META["bitsandbytes"].startswith("0.50")


# ---- live parity, only where the real library is installed --------------------------------

def _live():
    torch = pytest.importorskip("torch")
    F = pytest.importorskip("bitsandbytes.functional")
    return torch, F


@pytest.mark.peer
@given(
    n=st.integers(1, 3000),
    blocksize=st.sampled_from(bnb_ref.BLOCKSIZES),
    quant_type=st.sampled_from(["nf4", "fp4"]),
    cs=st.booleans(),
    fp16=st.booleans(),
    log_scale=st.floats(-3, 3),
    zero_frac=st.sampled_from([0.0, 0.0, 0.3, 1.0]),
    seed=st.integers(0, 2**32 - 1),
)
def test_live_bitsandbytes(n, blocksize, quant_type, cs, fp16, log_scale, zero_frac, seed):
    torch, F = _live()
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n) * 10 ** (min(log_scale, 1) if fp16 else log_scale)
    x[rng.random(n) < zero_frac] = 0
    x = x.astype(np.float16 if fp16 else np.float32)
    p, s = F.quantize_4bit(torch.from_numpy(x), blocksize=blocksize, quant_type=quant_type, compress_statistics=cs)
    packed, state = bnb_ref.quantize_4bit(x, blocksize, quant_type, cs)
    assert same_bytes(packed, p.numpy())
    assert same_bytes(state.absmax, s.absmax.numpy())
    if cs:
        assert same_bytes(np.float32(state.offset), np.float32(s.offset.item()))
        assert same_bytes(state.state2.absmax, s.state2.absmax.numpy())
    expected = F.dequantize_4bit(p, s).numpy().reshape(x.shape)
    assert same_values(bnb_ref.dequantize_4bit(packed, state), expected)


@pytest.mark.peer
def test_live_torch_mean_summation_order():
    """bitsandbytes' offset is torch's float32 mean: int4ref.torchmath must add in torch's order.

    8 lanes on AVX2 and AVX-512 machines alike: ATen's SumKernel.cpp registers its kernel with
    REGISTER_DISPATCH, which leaves the AVX-512 slot empty, so the AVX2 kernel runs there."""
    torch, _ = _live()
    from int4ref import torchmath

    if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        pytest.skip("the 8-lane order is only claimed for x86 builds of torch")
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            for n in (1000, 40000, 262144):  # below, just above and far above ATen's GRAIN_SIZE
                for seed in range(3):
                    x = np.abs(np.random.default_rng(seed).standard_normal((n, 64), dtype=np.float32)).max(axis=1)
                    got = np.float32(torch.from_numpy(x).mean().item())
                    assert same_bytes(got, torchmath.mean32(x, 8, threads)), (threads, n, seed)
    finally:
        torch.set_num_threads(before)


# ---- a bitsandbytes CPU decoding bug that int4ref does not copy -----------------------------
#
# bitsandbytes 0.49.0 (PR #1789) to 0.50.2, csrc/cpu_ops.cpp, dequantizeBlockwise4bitCpu: on a
# CPU with AVX-512F, when the last dimension n is a multiple of 16, the kernel decodes the
# tensor as m = prod(shape[:-1]) rows of n values and scales values 16j..16j+15 of row r by
# absmax[r * (n // blocksize) + 16j // blocksize]. The absmax values belong to flat blocks of
# the whole tensor, so that is right only when every row is a whole number of blocks (or the
# tensor is one block). The Python wrapper (bitsandbytes/backends/cpu/ops.py) sends odd n, and
# blocksize >= 2048 when torch reports AVX512, to its flat torch code instead; the scalar
# branch (every x86 CPU without AVX-512F) and the ARM NEON branch (which checks
# n % blocksize == 0) decode flat. Checked here against the real library where it runs; on
# an AVX2 machine the live test can only see the flat branch.
BNB_ROWWISE_VERSIONS = frozenset({"0.49.0", "0.49.1", "0.49.2", "0.50.0", "0.50.1", "0.50.2"})


def _nibbles(packed, count):
    packed = np.asarray(packed, np.uint8).reshape(-1)
    return np.stack([packed >> 4, packed & 15], axis=-1).reshape(-1)[:count]  # high nibble first


def flat_decode(packed, absmax, table, blocksize, shape):
    """code[nibble] * absmax[flat index // blocksize]: the format's definition."""
    n = int(np.prod(shape))
    scales = np.repeat(np.asarray(absmax, np.float32), blocksize)[:n]
    return (np.asarray(table, np.float32)[_nibbles(packed, n)] * scales).reshape(shape)


def rowwise_decode(packed, absmax, table, blocksize, shape):
    """What the AVX-512 branch of bitsandbytes 0.49.0-0.50.2's CPU kernel computes (see above)."""
    n = shape[-1]
    m = int(np.prod(shape)) // n
    assert n % 16 == 0, "the AVX-512 branch only runs when the last dimension is a multiple of 16"
    block = np.arange(m)[:, None] * (n // blocksize) + (np.arange(n) // 16 * 16 // blocksize)[None, :]
    values = np.asarray(table, np.float32)[_nibbles(packed, m * n)].reshape(m, n)
    return (values * np.asarray(absmax, np.float32)[block]).reshape(shape)


def _cpu_has_avx512f():
    """True/False on Linux x86-64 (read from /proc/cpuinfo); None where we cannot tell."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    return any("avx512f" in line.split() for line in text.splitlines() if line.startswith("flags"))


@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
def test_int4ref_decodes_flat_not_row_by_row(quant_type):
    x = np.random.default_rng(5).standard_normal((64, 64)).astype(np.float32)
    for blocksize in (128, 256, 512, 1024):  # rows of 64 values: shorter than a block
        packed, state = bnb_ref.quantize_4bit(x, blocksize, quant_type)
        out = bnb_ref.dequantize_4bit(packed, state)
        assert same_values(out, flat_decode(packed, state.absmax, state.code, blocksize, x.shape))
        rows = rowwise_decode(packed, state.absmax, state.code, blocksize, x.shape)
        assert np.abs(out - rows).max() > 0.1  # the bug's values are far off, not a rounding matter
    packed, state = bnb_ref.quantize_4bit(x, 64, quant_type)  # a row is one whole block: the two agree
    assert same_values(rowwise_decode(packed, state.absmax, state.code, 64, x.shape),
                       bnb_ref.dequantize_4bit(packed, state))


@pytest.mark.peer
@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
def test_live_cpu_dequantize_rows_shorter_than_a_block(quant_type):
    torch, F = _live()
    import bitsandbytes
    from bitsandbytes.cextension import ErrorHandlerMockBNBNativeLibrary, lib

    avx512f = _cpu_has_avx512f()
    if avx512f is None:
        pytest.skip("cannot tell whether this CPU has AVX-512F")
    native = not isinstance(lib, ErrorHandlerMockBNBNativeLibrary)
    torch_avx512 = torch.backends.cpu.get_cpu_capability() == "AVX512"
    version = bitsandbytes.__version__.split("+")[0]
    try:  # bitsandbytes' own flat decoder in torch (0.50 name), called eagerly
        from bitsandbytes.backends.default.ops import _dequantize_4bit_compute as default_decode
        default_decode = getattr(default_decode, "__wrapped__", default_decode)
    except ImportError:
        default_decode = None

    x = np.random.default_rng(5).standard_normal((64, 64)).astype(np.float32)
    for blocksize in bnb_ref.BLOCKSIZES:
        p, s = F.quantize_4bit(torch.from_numpy(x), blocksize=blocksize, quant_type=quant_type)
        packed, state = bnb_ref.quantize_4bit(x, blocksize, quant_type)
        assert same_bytes(packed, p.numpy()) and same_bytes(state.absmax, s.absmax.numpy())
        code = F.get_4bit_type(quant_type, device="cpu")
        assert same_values(state.code, code.numpy()[:16])
        flat = flat_decode(p.numpy(), s.absmax.numpy(), code.numpy(), blocksize, x.shape)
        assert same_values(bnb_ref.dequantize_4bit(packed, state), flat)
        if default_decode is not None:
            d = default_decode(p.reshape(-1), s.absmax, code, blocksize, list(x.shape), torch.float32)
            assert same_values(d.numpy(), flat)

        live = F.dequantize_4bit(p, s).numpy()
        rowwise_branch = native and avx512f and not (torch_avx512 and blocksize >= 2048)
        if rowwise_branch and version in BNB_ROWWISE_VERSIONS:
            rows = rowwise_decode(p.numpy(), s.absmax.numpy(), code.numpy(), blocksize, x.shape)
            assert same_values(live, rows), (
                f"bitsandbytes {version} on this AVX-512 CPU no longer decodes row by row at blocksize "
                f"{blocksize}: max |live - flat| = {np.abs(live - flat).max()}; update BNB_ROWWISE_VERSIONS, "
                "the int4ref.interop.bitsandbytes docstring and the double-quantization chapter")
        else:
            assert same_values(live, flat), (
                f"bitsandbytes {version} decodes differently from codes x absmax at blocksize {blocksize} "
                f"(max |live - flat| = {np.abs(live - flat).max()}); if it equals rowwise_decode, the AVX-512 "
                "bug is still there: add the version to BNB_ROWWISE_VERSIONS")


# ---- our own guarantees -------------------------------------------------------------------

def test_layout_high_nibble_first():
    packed, state = bnb_ref.quantize_4bit(np.array([-1.0, 1.0], np.float32), 64, "nf4")
    assert packed.shape == (1, 1) and packed[0, 0] == 0x0F
    assert state.absmax.tolist() == [1.0]


def test_all_zero_block_bytes_and_values():
    packed, state = bnb_ref.quantize_4bit(np.zeros(128, np.float32), 64, "nf4")
    assert (packed == 0x77).all() and state.absmax.tolist() == [0.0, 0.0]
    out = bnb_ref.dequantize_4bit(packed, state)
    assert (out == 0).all()


def test_dequantize_keeps_shape_and_dtype():
    x = np.random.default_rng(0).standard_normal((3, 5, 7)).astype(np.float16)
    packed, state = bnb_ref.quantize_4bit(x, 32, "fp4", True)
    out = bnb_ref.dequantize_4bit(packed, state)
    assert out.shape == x.shape and out.dtype == np.float16


def test_to_quantized_tensor_bits_per_weight():
    x = np.random.default_rng(1).standard_normal((64, 256)).astype(np.float32)
    qt = bnb_ref.to_quantized_tensor(*bnb_ref.quantize_4bit(x, 64, "nf4"))
    assert qt.bits_per_weight() == 4 + 32 / 64
    qt = bnb_ref.to_quantized_tensor(*bnb_ref.quantize_4bit(x, 64, "nf4", True))
    n = x.size
    expected = (4 * n + 8 * (n // 64) + 32 * (n // 64 // 256) + 32) / n
    assert qt.bits_per_weight() == expected
    # QLoRA's 4 + 0.127 bits, plus the one float32 offset spread over the tensor
    assert qt.bits_per_weight() == pytest.approx(4 + 8 / 64 + 32 / (64 * 256) + 32 / n, rel=1e-12)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(blocksize=48), ValueError, "blocksize must be one of"),
        (dict(blocksize=0), ValueError, "blocksize must be one of"),
        (dict(quant_type="int4"), ValueError, "quant_type must be 'nf4' or 'fp4'"),
    ],
)
def test_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        bnb_ref.quantize_4bit(np.ones(64, np.float32), **kwargs)


@pytest.mark.parametrize(
    "x, exc, match",
    [
        (np.array([1.0, np.nan], np.float32), ValueError, "NaN"),
        (np.array([np.inf, 1.0], np.float32), ValueError, "Inf"),
        (np.zeros(0, np.float32), ValueError, "empty"),
        (np.ones(4, np.int32), TypeError, "integer"),
        (np.ones(4, np.float64), TypeError, "float64"),
        (np.ones(4, np.complex64), TypeError, "complex"),
    ],
)
def test_bad_input(x, exc, match):
    with pytest.raises(exc, match=match):
        bnb_ref.quantize_4bit(x)


def test_wrong_packed_length():
    packed, state = bnb_ref.quantize_4bit(np.ones(10, np.float32))
    with pytest.raises(ValueError, match="bytes; expected 5"):
        bnb_ref.dequantize_4bit(packed[:4], state)
    with pytest.raises(TypeError, match="uint8"):
        bnb_ref.dequantize_4bit(packed.astype(np.int16), state)


def test_torch_sum_lanes_default_to_8_on_every_x86_cpu():
    """torch 2.13 runs its AVX2 sum kernel on AVX-512 CPUs too (SumKernel.cpp registers no
    AVX-512 variant): int4ref's default must not guess 16 lanes from /proc/cpuinfo."""
    from int4ref import torchmath

    assert torchmath.torch_defaults()[0] == 8
