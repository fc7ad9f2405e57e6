"""int4ref.interop.bitsandbytes against bitsandbytes' own outputs.

Two sources of truth: outputs recorded from bitsandbytes 0.50 (tests/data/bnb_parity.npz,
made by tools/make_bnb_fixtures.py; runs everywhere), and, where bitsandbytes and torch
are installed, the live library on random inputs (hypothesis).
"""
import json
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
