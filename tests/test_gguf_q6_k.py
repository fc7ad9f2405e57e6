"""Q6_K (int4ref.interop.gguf.q6_k): fast kernels against the literal reference, values
against gguf-py, golden bytes made with ggml's C, and (``@pytest.mark.peer``) live parity
with ggml's ``ggml_quantize_chunk`` / ``to_float`` built by tools/ggml_peer.py.

The inputs are built from seeds and rules (not from int4ref's output) and cover what the C
treats specially: all-zero and constant blocks, sub-blocks whose int8 scale rounds to 0
(their codes come from the sub-block fit), float16 ``d`` that is subnormal or rounds to 0,
the 1e-15 thresholds, values whose squares overflow float32, exact .5 ties, outliers, and
importance matrices that are random, constant, or zero in places.
"""
import hashlib
import sys
from pathlib import Path

import numpy as np
import pytest

from int4ref.interop import gguf as g
from int4ref.interop.gguf import q6_k

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import ggml_peer  # noqa: E402

f32 = np.float32
QK = 256


def _rng(seed):
    return np.random.default_rng(seed)


def gaussian(rows, n, seed, scale=1.0):
    return (_rng(seed).standard_normal((rows, n)) * scale).astype(f32)


def heavy_tailed(rows, n, seed):
    return _rng(seed).standard_t(1.5, (rows, n)).astype(f32)


def outliers(seed):
    x = gaussian(4, 512, seed)
    rng = _rng(seed + 1)
    for r in range(4):  # one value 100-1000x the rest in each block
        x[r, rng.integers(0, 512, 2)] = rng.choice([-1, 1], 2) * rng.uniform(100, 1000, 2)
    return x


def zero_and_constant_blocks():
    rows = [np.zeros(QK), np.full(QK, -0.0), np.full(QK, 0.37), np.full(QK, -5.0), np.full(QK, 1e-3),
            np.full(QK, 65504.0 * 64)]
    return np.array(rows, dtype=f32)


def mixed_sub_blocks(seed):
    """Blocks whose sub-blocks differ wildly in size: zero sub-blocks, sub-blocks 1e-3..1e-6 of
    the largest (their int8 scale rounds to 0, so the C keeps the fit's codes), sign flips."""
    rng = _rng(seed)
    x = rng.standard_normal((6, QK)).reshape(6, 16, 16)
    factors = 10.0 ** -rng.integers(0, 7, (6, 16))
    factors[:, ::5] = 0
    factors[:, 3] = 1.0
    return (x * factors[:, :, None]).reshape(6, QK).astype(f32)


def tiny_blocks(seed):
    """Magnitudes around the float16 subnormal d (d ~ max/4096), the 1e-15 cut-offs and the
    float32 subnormals (where x*x underflows to 0)."""
    base = _rng(seed).standard_normal((8, QK))
    mags = [1e-1, 1e-3, 2.4e-4, 1e-5, 1.2e-15, 1e-14, 1e-20, 1e-39]
    return np.array([b * m for b, m in zip(base, mags, strict=True)], dtype=f32)


def huge_blocks(seed):
    """Magnitudes where x*x overflows float32 (the C's fit turns NaN) and the float16 d
    overflows; float32 extremes."""
    base = _rng(seed).standard_normal((4, QK))
    rows = [base[0] * 1e18, base[1] * 1e25, base[2] * 3e37, np.full(QK, 3.4e38)]
    return np.array(rows, dtype=f32)


def tie_blocks(seed):
    """Integer and half-integer grids: x/d lands on exact .5 ties."""
    rng = _rng(seed)
    ints = rng.integers(-32, 33, (3, QK)).astype(f32)
    halves = rng.integers(-64, 64, (3, QK)).astype(f32) / f32(2)
    ints[:, 0] = -32  # the block max decides 1/s = -32/max: make it a clean power of two
    halves[:, 0] = 31.5
    return np.concatenate([ints, halves])


CASES = {
    "normal_256": lambda: gaussian(3, 256, 1),
    "normal_512x5": lambda: gaussian(5, 512, 2),
    "normal_1280": lambda: gaussian(2, 1280, 3, scale=0.02),
    "heavy": lambda: heavy_tailed(4, 768, 4),
    "outliers": lambda: outliers(5),
    "zero_const": zero_and_constant_blocks,
    "mixed_sub_blocks": lambda: mixed_sub_blocks(6),
    "tiny": lambda: tiny_blocks(7),
    "huge": lambda: huge_blocks(8),
    "ties": lambda: tie_blocks(9),
}


def imatrices(n, seed):
    rng = _rng(seed)
    with_zeros = rng.random(n).astype(f32)
    with_zeros[rng.random(n) < 0.3] = 0
    with_zeros[16:32] = 0  # a whole sub-block without weight
    return {
        "none": None,
        "random": (rng.random(n) * 10).astype(f32),
        "with_zeros": with_zeros,
        "constant": np.full(n, 0.25, f32),
        "all_zero": np.zeros(n, f32),
    }


def _block_weights(imatrix, rows):
    return None if imatrix is None else np.tile(imatrix.reshape(-1, QK), (rows, 1))


def assert_same_bits(a, b):
    assert a.dtype == b.dtype == np.float32 and a.shape == b.shape
    nan = np.isnan(a)
    np.testing.assert_array_equal(nan, np.isnan(b))
    np.testing.assert_array_equal(a.view(np.uint32)[~nan], b.view(np.uint32)[~nan])


# --- no peer needed ------------------------------------------------------------------------

def test_layout_constants():
    bt = g.block_type("Q6_K")
    assert (bt.block_size, bt.type_size, bt.float16_fields, bt.accepts_imatrix) == (256, 210, (("d", 208),), True)
    assert bt.block_dtype.itemsize == 210 and bt.block_dtype.fields["d"][1] == 208
    assert bt.bits_per_weight() == 6.5625


@pytest.mark.parametrize("case", sorted(CASES))
def test_fast_kernel_equals_reference(case):
    x = CASES[case]()
    rows, n = x.shape
    for name, imatrix in imatrices(n, 11).items():
        fast = g._quantize_raw(x, "Q6_K", imatrix=imatrix).reshape(-1, 210)
        ref = q6_k.Q6_K.quantize_blocks(x.reshape(-1, QK), _block_weights(imatrix, rows))
        np.testing.assert_array_equal(fast, ref, err_msg=f"{case}, imatrix {name}")


def test_fast_kernel_equals_reference_across_chunks():
    x = gaussian(q6_k._Q6_CHUNK + 7, QK, 12)  # more blocks than one work item
    x[::9] *= f32(1e-4)
    np.testing.assert_array_equal(g._quantize_raw(x, "Q6_K"), q6_k.Q6_K.quantize_blocks(x))


def test_mixed_sub_blocks_reach_the_kept_codes_path():
    """The case list must exercise sub-blocks with a zero int8 scale but non-zero codes
    (the fit's codes, kept by the C): otherwise it cannot catch a wrong rule there."""
    q = g._quantize_raw(CASES["mixed_sub_blocks"](), "Q6_K").reshape(-1, 210)
    scales = q[:, 192:208].view(np.int8)
    codes = q6_k._unpack_q6_k(q).reshape(-1, 16, 16)
    kept = (scales == 0) & (codes != 32).any(axis=2) & (codes != 0).any(axis=2)
    assert kept.any()


def test_zero_block_is_all_zero_bytes():
    q = g.quantize(np.zeros((1, QK), f32), "Q6_K")
    assert q.shape == (1, 210) and not q.any()


def test_dequantize_is_d_times_scale_times_code():
    rng = _rng(13)
    q = rng.integers(0, 256, (4, 210), dtype=np.uint8)
    q[:, 208:210] = np.array([0.5, -0.125, 3.0, 1e-4], "<f2").view(np.uint8).reshape(4, 2)
    d = q[:, 208:210].copy().view("<f2").astype(f32)[:, 0]
    codes = q6_k._unpack_q6_k(q).astype(f32) - 32
    expected = (d[:, None] * q[:, 192:208].view(np.int8).astype(f32))[:, :, None] * codes.reshape(4, 16, 16)
    assert_same_bits(g.dequantize(q, "Q6_K"), expected.reshape(4, QK))
    # the bit layout, by hand: value 128*h + 32*k + l has its low nibble in ql[64*h + l + 32*(k % 2)]
    # (high nibble when k >= 2) and bits 2k, 2k+1 of qh[32*h + l]
    c = q6_k._unpack_q6_k(q)
    for h, k, lo in [(0, 0, 0), (0, 3, 31), (1, 1, 5), (1, 2, 17)]:
        byte = q[:, 64 * h + lo + 32 * (k % 2)]
        nib = byte & 15 if k < 2 else byte >> 4
        hi = (q[:, 128 + 32 * h + lo] >> (2 * k)) & 3
        np.testing.assert_array_equal(c[:, 128 * h + 32 * k + lo], nib | (hi << 4))


def test_dequantize_equals_gguf_py_on_any_bytes():
    gguf = pytest.importorskip("gguf")
    rng = _rng(14)
    data = rng.integers(0, 256, (3, 40 * 210), dtype=np.uint8)  # every field random, inf/NaN d included
    data[0, 208:210] = [0x00, 0x7C]  # +inf d
    data[0, 418:420] = [0x01, 0x7E]  # NaN d
    data[1, 208:210] = [0x01, 0x00]  # smallest subnormal d
    with np.errstate(all="ignore"):
        theirs = gguf.quants.dequantize(data, gguf.GGMLQuantizationType.Q6_K)
    ours = g.dequantize(data, "Q6_K")
    assert_same_bits(ours, theirs)
    assert_same_bits(q6_k.Q6_K.dequantize_blocks(data.reshape(-1, 210)), theirs.reshape(-1, QK))


def test_round_trip_through_a_gguf_file(tmp_path):
    pytest.importorskip("gguf")
    x = gaussian(3, 512, 15)
    q = g.quantize(x, "Q6_K")
    path = tmp_path / "q6.gguf"
    g.write_gguf(path, {"w": (q, "Q6_K", x.shape)})
    data, type_name, shape = g.read_gguf(path)["w"]
    assert (type_name, shape) == ("Q6_K", x.shape)
    np.testing.assert_array_equal(data, q)
    err = np.abs(g.dequantize(data, "Q6_K") - x).max()
    assert err < 0.02 * np.abs(x).max()  # 6 bits: about 1/64 of the block range at worst


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="not a multiple of 256"):
        g.quantize(np.ones((2, 320), f32), "Q6_K")
    x = gaussian(1, 256, 16)
    x[0, 7] = np.nan
    with pytest.raises(ValueError, match="NaN|finite"):
        g.quantize(x, "Q6_K")
    with pytest.raises(ValueError, match="imatrix must be 1-D"):
        g.quantize(gaussian(1, 512, 17), "Q6_K", imatrix=np.ones(256, f32))
    with pytest.raises(ValueError, match="negative"):
        g.quantize(gaussian(1, 256, 18), "Q6_K", imatrix=-np.ones(256, f32))
    with pytest.raises(ValueError, match="cannot store"):
        g.quantize(gaussian(1, 256, 19, scale=1e9), "Q6_K")  # beyond 65504 * 128 * 32


# Golden bytes from ggml's C (ggml_quantize_chunk, llama-cpp-python 0.3.36 sdist, ggml 0.25.3):
# sha256 of the concatenated outputs for the case list without and with the "random" imatrix.
GOLDEN_SHA256 = {
    "none": "2a800a70c841f8516a921409a7c4ed0b0d0c3a75eacfb4d99aeb6b51e3c10c22",
    "random": "06688b3b026806df0d2211911d9abc960a6dbbc18d86f209aa7af4ab9daf7486",
}


def _all_case_bytes(imatrix_name):
    parts = []
    for case in sorted(CASES):
        x = CASES[case]()
        parts.append(g._quantize_raw(x, "Q6_K", imatrix=imatrices(x.shape[1], 11)[imatrix_name]))
    return b"".join(p.tobytes() for p in parts)


@pytest.mark.parametrize("imatrix_name", sorted(GOLDEN_SHA256))
def test_golden_bytes_from_ggml(imatrix_name):
    assert hashlib.sha256(_all_case_bytes(imatrix_name)).hexdigest() == GOLDEN_SHA256[imatrix_name]


# --- live against ggml's C -----------------------------------------------------------------

@pytest.fixture(scope="module")
def peer():
    try:
        return ggml_peer.load()
    except ggml_peer.PeerUnavailable as exc:
        pytest.skip(f"ggml C peer unavailable: {exc}")


@pytest.mark.peer
@pytest.mark.parametrize("case", sorted(CASES))
def test_quantize_matches_ggml_quantize_chunk(peer, case):
    x = CASES[case]()
    for name, imatrix in imatrices(x.shape[1], 11).items():
        theirs = peer.quantize_chunk("Q6_K", x, imatrix=imatrix)
        ours = g._quantize_raw(x, "Q6_K", imatrix=imatrix)
        np.testing.assert_array_equal(ours, theirs, err_msg=f"{case}, imatrix {name}")


@pytest.mark.peer
@pytest.mark.parametrize("case", sorted(CASES))
def test_dequantize_matches_ggml_to_float(peer, case):
    x = CASES[case]()
    q = peer.quantize_chunk("Q6_K", x)
    assert_same_bits(g.dequantize(q, "Q6_K").reshape(-1), peer.to_float("Q6_K", q.reshape(-1), x.size))


@pytest.mark.peer
def test_dequantize_any_bytes_matches_ggml_to_float(peer):
    data = _rng(19).integers(0, 256, 64 * 210, dtype=np.uint8)
    data[208:210] = [0x00, 0xFC]  # -inf d
    data[418:420] = [0x01, 0x7E]  # NaN d
    assert_same_bits(g.dequantize(data, "Q6_K"), peer.to_float("Q6_K", data, 64 * QK))


@pytest.mark.peer
def test_golden_bytes_are_ggml_s(peer):
    """The golden hashes above are those of the C's own output on the same inputs."""
    for imatrix_name, digest in GOLDEN_SHA256.items():
        parts = []
        for case in sorted(CASES):
            x = CASES[case]()
            parts.append(peer.quantize_chunk("Q6_K", x, imatrix=imatrices(x.shape[1], 11)[imatrix_name]))
        assert hashlib.sha256(b"".join(p.tobytes() for p in parts)).hexdigest() == digest


def test_quantize_refuses_values_q6_k_cannot_store():
    """Beyond 65504 * 128 * 32, ggml stores inf scales or (once its float32 sums overflow, from about
    1e18) silently decodes the sub-block as zeros; quantize() names the problem instead."""
    limit = 65504.0 * 128 * 32
    for big in (np.float32(1e18), np.float32(3e19), np.nextafter(np.float32(limit), np.float32(np.inf))):
        x = np.zeros((2, 256), np.float32)
        x[1, 40] = big
        assert g._quantize_raw(x, "Q6_K").size  # the C's bytes are still available
        with pytest.raises(ValueError, match=r"above 2.68e\+08 \(first in Q6_K block 1\).*cannot store"):
            g.quantize(x, "Q6_K")
    x = np.zeros((1, 256), np.float32)
    x[0, 40] = np.float32(2e8)  # storable: no error, and it decodes close
    assert abs(g.dequantize(g.quantize(x, "Q6_K"), "Q6_K")[0, 40] / np.float32(2e8) - 1) < 0.05
