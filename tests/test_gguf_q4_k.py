"""Q4_K (int4ref/interop/gguf/q4_k.py): against its literal reference, gguf-py, and (marked
``peer``) ggml's own C ``ggml_quantize_chunk`` / ``to_float`` built by tools/ggml_peer.py.

Bytes must be identical to ggml's, with and without an importance matrix; values bitwise
equal to ggml's and gguf-py's dequantizers. The inputs below are built from seeds and rules
(zeros, subnormals, ties, outliers, flat and mixed sub-blocks, every row length from the
smallest), not tuned to int4ref's output.
"""
import hashlib
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from int4ref.interop import gguf as g
from int4ref.interop.gguf import q4_k
from int4ref.interop.gguf.q4_k import Q4_K, pack_scales_mins, quantize_q4_k_rtn, unpack_scales_mins

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import ggml_peer  # noqa: E402

f32 = np.float32


@pytest.fixture(scope="module")
def peer():
    try:
        return ggml_peer.load()
    except ggml_peer.PeerUnavailable as exc:
        pytest.skip(f"ggml C peer unavailable: {exc}")


@pytest.fixture(scope="module")
def gguf():
    return pytest.importorskip("gguf")


def same_bits(a, b):
    """Equal float32 arrays bit for bit (sign of zero included); NaNs only in the same places."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype == f32 and a.shape == b.shape
    nan = np.isnan(a)
    np.testing.assert_array_equal(nan, np.isnan(b))
    np.testing.assert_array_equal(a.view(np.uint32)[~nan], b.view(np.uint32)[~nan])


# --- inputs: rows of 256-value blocks -------------------------------------------------------

def _rng(seed):
    return np.random.default_rng(seed)


def zero_rows():
    rng = _rng(1)
    rows = [np.zeros(256), np.full(256, -0.0)]
    rows += list(np.where(rng.random((6, 256)) < 0.5, -0.0, 0.0))
    return np.array(rows, f32)


def signed_zero_rows():
    """Zeros of both signs beside nonzero values; all >= 0, all <= 0, a single nonzero."""
    rng = _rng(2)
    x = np.abs(rng.standard_normal((24, 256))) * (rng.random((24, 256)) < 0.6)
    x[8:16] *= -1
    x[16:] = 0
    x[16:, rng.integers(0, 256, 8)] = rng.standard_normal(8)
    signs = np.where(rng.random(x.shape) < 0.5, -1.0, 1.0)
    return np.where(x == 0, 0.0 * signs, x).astype(f32)


def subnormal_rows():
    """Float32 subnormals (1/scale overflows: the kernel's fallback path) up to float16-subnormal
    scales, signed and one-signed."""
    rng = _rng(3)
    rows = []
    for scale in (1e-45, 1e-42, 1e-40, 1e-38, 1e-36, 1e-30, 1e-20, 1e-9, 1e-7, 3e-6):
        rows.append(rng.standard_normal(256) * scale)
        rows.append(np.abs(rng.standard_normal(256)) * scale)
    with np.errstate(under="ignore"):
        return np.array(rows).astype(f32)


def mixed_subblock_rows():
    """Sub-blocks of very different size in one block: small ones get 6-bit scale 0 (their codes
    then come from the search), zero, flat negative and flat positive sub-blocks beside normal ones."""
    rng = _rng(4)
    x = rng.standard_normal((16, 8, 32))
    x[0:4, 1] *= 1e-4
    x[4:8, 2] = 0
    x[8:10, 3] = -0.75  # flat negative: max == min, scale 0, min kept
    x[10:12, 5] = 2.5  # flat positive: min clipped to 0, not flat
    x[12:14, :4] *= 1e3
    x[14:16] = np.abs(x[14:16])  # all positive: every min 0
    return x.reshape(16, 256).astype(f32)


def tie_rows():
    """Integers and half-integers: codes land on nearest_int's ties."""
    rng = _rng(5)
    rows = [rng.integers(-8, 8, 256).astype(float), rng.integers(0, 16, 256).astype(float),
            rng.integers(-15, 16, 256) / 2.0, np.tile(np.arange(32.0) - 15.5, 8),
            np.tile(np.arange(16.0), 16), np.tile(np.r_[np.arange(16.0), np.arange(16.0) + 0.5], 8)]
    for e in (-14, -3, 6):
        rows.append(rng.integers(0, 31, 256) / 2.0 * 2.0**e)
    return np.array(rows, f32)


def extreme_rows():
    """Outliers, one-signed blocks with one extreme, equal magnitudes of both signs."""
    rng = _rng(6)
    x = rng.standard_normal((20, 256))
    x[:5, rng.integers(0, 256, 5)] *= 100
    x[5:10] = -np.abs(x[5:10])
    x[5:10, 7] *= 30
    x[10:15] = np.abs(x[10:15])
    x[10:15, 200] *= 30
    x[15:20, 0], x[15:20, 255] = 6.0, -6.0
    return x.astype(f32)


def constant_rows():
    return np.array([np.full(256, v) for v in (1.0, -1.0, 3.25, -7.5, 1e-30, -1e-30, 6e4, -6e4, 1e-5)], f32)


def gaussian(n, rows, seed, scale=1.0):
    return (_rng(seed).standard_normal((rows, n)) * scale).astype(f32)


def heavy_tailed(n, rows, seed):
    rng = _rng(seed)
    x = rng.standard_t(1.5, (rows, n))
    x[::2] = rng.standard_cauchy((len(x[::2]), n)) * 0.01
    return x.astype(f32)


def wide_range():
    """Rows at scales 1e-8 .. 1e7: from 1e6 up, d exceeds float16 (ggml stores inf)."""
    rng = _rng(7)
    scales = 10.0 ** np.arange(-8, 8)
    return (rng.standard_normal((len(scales), 256)) * scales[:, None]).astype(f32)


def huge_rows():
    """Up to float32's largest values: squares, ranges and scales overflow to inf on the way."""
    rng = _rng(8)
    rows = []
    for scale in (1e15, 1e20, 1e30, 1e36, 3e37, 1e38):
        rows += [rng.standard_normal(256) * scale, np.abs(rng.standard_normal(256)) * scale]
    rows += [np.zeros(256), np.full(256, 3.4e38), rng.standard_normal(256)]
    rows[-3][5:7] = 3.4e38, -3.4e38
    rows[-1][17] = 3e38
    return np.clip(np.array(rows), -3.4e38, 3.4e38).astype(f32)


OVERFLOWS = ("wide_range", "huge")  # the cases where ggml stores an inf float16 scale

CASES = {
    "zeros": zero_rows,
    "signed_zeros": signed_zero_rows,
    "subnormal": subnormal_rows,
    "mixed_subblocks": mixed_subblock_rows,
    "ties": tie_rows,
    "extremes": extreme_rows,
    "constant": constant_rows,
    "gauss_n256": lambda: gaussian(256, 64, 10),
    "gauss_n512": lambda: gaussian(512, 16, 11),
    "gauss_n768": lambda: gaussian(768, 8, 12),
    "gauss_n4096": lambda: gaussian(4096, 72, 13, 0.02),  # 1152 blocks: more than one chunk
    "heavy_n256": lambda: heavy_tailed(256, 32, 14),
    "heavy_n4096": lambda: heavy_tailed(4096, 4, 15),
    "wide_range": wide_range,
    "huge": huge_rows,
}
# cases small enough for the literal reference in every test run
SMALL = ("zeros", "signed_zeros", "subnormal", "mixed_subblocks", "ties", "extremes", "constant", "heavy_n256",
         "huge")


def imatrices(n):
    """Importance matrices of length n: random positive, with zeros, constant, all zero, tiny."""
    rng = _rng(100 + n)
    return {
        "random": (rng.random(n) * 10).astype(f32),
        "with_zeros": np.where(rng.random(n) < 0.3, 0, rng.exponential(1.0, n)).astype(f32),
        "constant": np.ones(n, f32),
        "all_zero": np.zeros(n, f32),
        "tiny": (rng.random(n) * 1e-30).astype(f32),
    }


def per_block(imatrix, n_rows):
    """The imatrix entries of every block's 256 columns, as quantize() hands them to kernels."""
    return np.tile(imatrix, n_rows).reshape(-1, 256)


def fast_bytes(x, quant_weights=None):
    """The fast kernel on all blocks of x at once (one chunk, whatever its size)."""
    blocks = np.ascontiguousarray(x, f32).reshape(-1, 256)
    out = np.empty((len(blocks), 144), np.uint8)
    Q4_K.quantize_chunk(blocks, out, {}, quant_weights)
    return out


# --- the 6-bit scales and mins ------------------------------------------------------------

def get_scale_min_k4(j, q):
    """ggml's get_scale_min_k4, one block's 12 bytes ``q`` (ints), written out as in the C."""
    if j < 4:
        return q[j] & 63, q[j + 4] & 63
    return (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4)


def test_pack_unpack_round_trip_every_pair_at_every_position():
    a, b = np.meshgrid(np.arange(64), np.arange(64), indexing="ij")
    pairs = np.stack([a.ravel(), b.ravel()], axis=1)  # all 4096 (sc, m) pairs
    for shift in range(8):  # each position j sees every pair, beside different neighbours
        sc = np.stack([np.roll(pairs[:, 0], 97 * k) for k in range(8)], axis=1)
        m = np.stack([np.roll(pairs[:, 1], 97 * k + shift) for k in range(8)], axis=1)
        packed = pack_scales_mins(sc, m)
        assert packed.shape == (4096, 12) and packed.dtype == np.uint8
        sc2, m2 = unpack_scales_mins(packed)
        assert sc2.dtype == m2.dtype == np.uint8
        np.testing.assert_array_equal(sc2, sc)
        np.testing.assert_array_equal(m2, m)


def test_unpack_is_ggmls_get_scale_min_k4_and_pack_inverts_it():
    raw = _rng(20).integers(0, 256, (300, 12), dtype=np.uint8)
    sc, m = unpack_scales_mins(raw)
    for row in range(len(raw)):
        q = [int(v) for v in raw[row]]
        assert [get_scale_min_k4(j, q) for j in range(8)] == list(zip(sc[row].tolist(), m[row].tolist()))
    np.testing.assert_array_equal(pack_scales_mins(sc, m), raw)  # all 96 bits are used once


def test_pack_documented_layout():
    sc = np.array([[1, 2, 3, 4, 0x15, 0x26, 0x37, 0x3F]])
    m = np.array([[5, 6, 7, 8, 0x2A, 0x1B, 0x0C, 0x30]])
    expected = [1 | 1 << 6, 2 | 2 << 6, 3 | 3 << 6, 4 | 3 << 6,
                5 | 2 << 6, 6 | 1 << 6, 7 | 0 << 6, 8 | 3 << 6,
                0x5 | 0xA << 4, 0x6 | 0xB << 4, 0x7 | 0xC << 4, 0xF | 0x0 << 4]
    assert pack_scales_mins(sc, m).tolist() == [expected]


def test_pack_refuses_bad_input():
    ok = np.zeros((2, 8), int)
    with pytest.raises(ValueError, match="outside 0..63"):
        pack_scales_mins(ok + 64, ok)
    with pytest.raises(ValueError, match="outside 0..63"):
        pack_scales_mins(ok, ok - 1)
    with pytest.raises(ValueError, match=r"shape \(n, 8\)"):
        pack_scales_mins(np.zeros((2, 7), int), np.zeros((2, 7), int))
    with pytest.raises(TypeError, match="integer"):
        pack_scales_mins(ok.astype(float), ok)
    with pytest.raises(ValueError, match="same shape"):
        pack_scales_mins(ok, np.zeros((3, 8), int))
    with pytest.raises(ValueError, match=r"uint8 of shape \(n, 12\)"):
        unpack_scales_mins(np.zeros((2, 11), np.uint8))


# --- fast kernel == literal reference -------------------------------------------------------

def test_nearest_int_matches_ggmls_magic_number_trick():
    v = np.array([0.5, 1.5, 2.5, -0.5, -1.5, 15.49, 4194303.0, 0.0, -0.0, 1e7, -1e7, np.inf, -np.inf, np.nan], f32)
    with np.errstate(invalid="ignore"):
        got = q4_k._nearest_int(v)
    # round half to even inside the asserted range; the C's bit arithmetic outside it
    assert got[:9].tolist() == [0, 2, 2, 0, -2, 15, 4194303, 0, 0]
    bits = (v[9:] + f32(12582912.0)).view(np.int32)
    np.testing.assert_array_equal(got[9:], (bits & 0x7FFFFF) - 0x400000)
    assert got[11] == -0x400000 and got[13] == 0  # inf -> clamped to code 0 by the callers; NaN -> 0


@pytest.mark.parametrize("imatrix", [None, "random", "with_zeros", "all_zero"])
@pytest.mark.parametrize("case", SMALL)
def test_fast_equals_reference(case, imatrix):
    x = CASES[case]()
    qw = None if imatrix is None else per_block(imatrices(x.shape[1])[imatrix], len(x))
    with np.errstate(all="ignore"):
        expected = Q4_K.quantize_blocks(x.reshape(-1, 256), qw)
    np.testing.assert_array_equal(fast_bytes(x, qw), expected)


def test_fast_kernel_with_explicit_row_sums(monkeypatch):
    """Where numpy's axis-0 reduce were not row after row, the kernel adds rows itself."""
    monkeypatch.setattr(q4_k, "_column_sums_in_order_check", lambda: False)
    x = np.concatenate([gaussian(512, 4, 33), heavy_tailed(512, 2, 34)])
    qw = per_block(imatrices(512)["random"], len(x))
    for weights in (None, qw):
        np.testing.assert_array_equal(fast_bytes(x, weights), Q4_K.quantize_blocks(x.reshape(-1, 256), weights))


@given(
    x=hnp.arrays(np.float32, st.tuples(st.integers(1, 3), st.just(256)),
                 elements=st.floats(-1e4, 1e4, width=32, allow_subnormal=True)),
    scale=st.sampled_from([1.0, 1e-3, 1e-38, 1e3]),
    weights=st.sampled_from([None, "random", "with_zeros"]),
)
def test_fast_equals_reference_hypothesis(x, scale, weights):
    with np.errstate(all="ignore"):
        x = (x * f32(scale)).astype(f32)
        qw = None if weights is None else per_block(imatrices(256)[weights], len(x))
        expected = Q4_K.quantize_blocks(x, qw)
    np.testing.assert_array_equal(fast_bytes(x, qw), expected)


def test_fast_dequantize_equals_reference_on_any_bytes():
    raw = _rng(21).integers(0, 256, (2000, 144), dtype=np.uint8)
    specials = np.array([0x7C00, 0xFC00, 0x7E00, 0x8000, 0x0000, 0x0001, 0x83FF, 0x7BFF], "<u2").view(np.uint8)
    raw[:8, 0:2] = specials.reshape(-1, 2)
    raw[8:16, 2:4] = specials.reshape(-1, 2)
    with np.errstate(all="ignore"):
        expected = Q4_K.dequantize_blocks(raw)
        same_bits(g.dequantize(raw, "Q4_K"), expected)


def test_golden_bytes_from_ggml():
    """sha256 of ggml's C bytes (ggml 0.25.3, tools/ggml_peer.py) for fixed inputs, so the
    exactness is checked even where the peer is not built."""
    x = gaussian(1024, 16, 42)
    imatrix = (_rng(43).random(1024) * 4).astype(f32)
    plain = hashlib.sha256(g.quantize(x, "Q4_K").tobytes()).hexdigest()
    weighted = hashlib.sha256(g.quantize(x, "Q4_K", imatrix=imatrix).tobytes()).hexdigest()
    assert plain == GOLDEN_PLAIN
    assert weighted == GOLDEN_IMATRIX


GOLDEN_PLAIN = "1e5051bc760a0a59b446a93352bfda151ef8727c483892827ce65bee775d0a15"
GOLDEN_IMATRIX = "28374e9f3a04a7d15e0530c3bce11ddaa2d0c440929534f7726cbebced80110a"


# --- the public entry points ------------------------------------------------------------------

def test_registered_with_the_package():
    bt = g.block_type("Q4_K")
    assert bt is Q4_K and g.TYPE_SIZE["Q4_K"] == 144 and bt.block_size == 256
    assert bt.accepts_imatrix and bt.float16_fields == (("d", 0), ("dmin", 2))
    assert Q4_K.block_dtype.itemsize == 144 and Q4_K.bits_per_weight() == 4.5
    assert [Q4_K.block_dtype.fields[f][1] for f in ("d", "dmin", "scales", "qs")] == [0, 2, 4, 16]


def test_quantize_entry_point_runs_the_kernels_per_block_and_row():
    x = gaussian(768, 5, 30)
    imatrix = imatrices(768)["with_zeros"]
    q = g.quantize(x, "Q4_K")
    assert q.shape == (5, 3 * 144) and q.dtype == np.uint8
    np.testing.assert_array_equal(q.reshape(-1, 144), fast_bytes(x))
    qi = g.quantize(x, "Q4_K", imatrix=imatrix)
    np.testing.assert_array_equal(qi.reshape(-1, 144), fast_bytes(x, per_block(imatrix, 5)))
    assert not np.array_equal(q, qi)
    y = g.dequantize(q, "Q4_K")
    assert y.shape == x.shape and y.dtype == f32


def test_chunks_and_threads_do_not_change_the_bytes():
    x = gaussian(4096, 72, 32)  # 1152 blocks: two chunks of Q4_K.chunk_blocks() or more
    assert len(x) * 16 > Q4_K.chunk_blocks()
    imatrix = imatrices(4096)["random"]
    np.testing.assert_array_equal(g.quantize(x, "Q4_K").reshape(-1, 144), fast_bytes(x))
    np.testing.assert_array_equal(g.quantize(x, "Q4_K", imatrix=imatrix).reshape(-1, 144),
                                  fast_bytes(x, per_block(imatrix, len(x))))


def test_quantize_refuses_bad_input():
    with pytest.raises(ValueError, match="multiple of 256"):
        g.quantize(np.zeros((2, 128), f32), "Q4_K")
    with pytest.raises(ValueError, match="NaN|nan|finite"):
        g.quantize(np.full((1, 256), np.nan, f32), "Q4_K")
    with pytest.raises(ValueError, match="one weight per column"):
        g.quantize(np.zeros((1, 256), f32), "Q4_K", imatrix=np.ones(255, f32))
    with pytest.raises(ValueError, match="negative"):
        g.quantize(np.zeros((1, 256), f32), "Q4_K", imatrix=-np.ones(256, f32))
    with pytest.raises(ValueError, match="beyond the float16 range"):
        g.quantize(np.full((1, 256), 1e9, f32), "Q4_K")
    with pytest.raises(ValueError, match="multiple of 256"):
        quantize_q4_k_rtn(np.zeros(100, f32))
    with pytest.raises(ValueError, match="NaN or Inf"):
        quantize_q4_k_rtn(np.full(256, np.inf, f32))
    with pytest.raises(TypeError, match="float array"):
        quantize_q4_k_rtn(np.zeros(256, np.int32))
    with pytest.raises(ValueError, match="beyond the float16 range"):
        quantize_q4_k_rtn(np.full(256, -1e9, f32))


def test_write_read_gguf_round_trip(tmp_path, gguf):
    x = gaussian(512, 6, 31)
    q = g.quantize(x, "Q4_K")
    path = tmp_path / "q4k.gguf"
    g.write_gguf(path, {"blk.0.w": (q, "Q4_K", x.shape)})
    data, type_name, shape = g.read_gguf(path)["blk.0.w"]
    assert type_name == "Q4_K" and shape == x.shape
    np.testing.assert_array_equal(data.reshape(q.shape), q)
    with np.errstate(all="ignore"):
        theirs = gguf.quants.dequantize(data, gguf.GGMLQuantizationType.Q4_K)
    same_bits(theirs.reshape(x.shape), g.dequantize(q, "Q4_K"))


def test_dequantize_equals_gguf_py_on_any_bytes(gguf):
    """Every bit pattern a file may hold, NaN/inf/subnormal/-0.0 float16 scales included."""
    raw = _rng(22).integers(0, 256, (4096, 144), dtype=np.uint8)
    specials = np.array([0x7C00, 0xFC00, 0x7E00, 0x8000, 0x0000, 0x0001, 0x83FF, 0x7BFF], "<u2").view(np.uint8)
    raw[:8, 0:2] = specials.reshape(-1, 2)
    raw[8:16, 2:4] = specials.reshape(-1, 2)
    with np.errstate(all="ignore"):
        theirs = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType.Q4_K)
        same_bits(g.dequantize(raw, "Q4_K"), theirs)
        same_bits(Q4_K.dequantize_blocks(raw), theirs)


# --- round to nearest, for teaching ----------------------------------------------------------

def weighted_error(x, q):
    """ggml's objective: sum over sub-blocks of sum (av_x + |x|) * (x - x_hat)^2 (float64)."""
    xs = x.reshape(-1, 32).astype(np.float64)
    y = g.dequantize(q, "Q4_K").reshape(-1, 32).astype(np.float64)
    w = np.sqrt((xs**2).mean(axis=1, keepdims=True)) + np.abs(xs)
    return float((w * (xs - y) ** 2).sum())


def test_rtn_decodes_to_the_nearest_point_of_its_grid():
    """Round to nearest: with the stored scales, every value decodes to the nearest of its
    sub-block's 16 levels d*sc_j*k - dmin*m_j (up to float32 rounding of the division)."""
    x = np.concatenate([gaussian(512, 20, 40), heavy_tailed(512, 4, 44)])
    q = quantize_q4_k_rtn(x)
    assert q.shape == (24, 2 * 144) and q.dtype == np.uint8
    y = g.dequantize(q, "Q4_K").reshape(-1, 8, 32).astype(np.float64)
    b = q.reshape(-1, 144)
    sc, m = unpack_scales_mins(b[:, 4:16])
    d = b[:, 0:2].copy().view("<f2")[:, 0].astype(np.float64)
    dmin = b[:, 2:4].copy().view("<f2")[:, 0].astype(np.float64)
    levels = (d[:, None] * sc)[:, :, None] * np.arange(16) - (dmin[:, None] * m)[:, :, None]  # (n, 8, 16)
    xs = x.reshape(-1, 8, 32).astype(np.float64)
    nearest = np.abs(xs[..., None] - levels[:, :, None, :]).min(axis=3)
    assert (sc > 0).all()  # Gaussian sub-blocks: no 6-bit scale rounds to 0 here
    np.testing.assert_allclose(np.abs(xs - y), nearest, rtol=1e-5, atol=1e-6 * np.abs(xs).max())


def test_rtn_zero_and_flat_blocks():
    x = np.zeros((1, 512), f32)
    x[0, 256:288] = -3.0  # a flat negative sub-block: min -3, scale 0
    y = g.dequantize(quantize_q4_k_rtn(x), "Q4_K")
    np.testing.assert_array_equal(y[0, :256], 0)
    np.testing.assert_allclose(y[0, 256:288], -3.0, rtol=1e-3)


def test_search_beats_round_to_nearest_on_its_objective():
    """ggml's search starts each sub-block from the round-to-nearest fit (scale (max - min)/15,
    the same min) and keeps a refitted candidate only where it lowers the weighted squared
    error; both then go through the same 6-bit rounding. Summed over many random blocks its
    weighted error must therefore be lower (and so its plain squared error, on Gaussian data)."""
    x = gaussian(4096, 16, 41)
    search, rtn = g.quantize(x, "Q4_K"), quantize_q4_k_rtn(x)
    assert weighted_error(x, search) < weighted_error(x, rtn)
    mse = [float(((g.dequantize(q, "Q4_K") - x).astype(np.float64) ** 2).mean()) for q in (search, rtn)]
    assert mse[0] < mse[1]


# --- live against ggml's C (make test-peers) ------------------------------------------------

@pytest.mark.peer
@pytest.mark.parametrize("case", sorted(CASES))
def test_quantize_matches_ggml_without_imatrix(peer, case):
    x = CASES[case]()
    theirs = peer.quantize_chunk("Q4_K", x)
    ours = g._quantize_raw(x, "Q4_K")  # the bytes before quantize() refuses an inf scale
    assert ours.shape == theirs.shape == (len(x), x.shape[1] // 256 * 144)
    np.testing.assert_array_equal(ours, theirs, err_msg=case)
    if case in SMALL:
        with np.errstate(all="ignore"):
            np.testing.assert_array_equal(Q4_K.quantize_blocks(x.reshape(-1, 256)), theirs.reshape(-1, 144))
    scales = theirs.reshape(-1, 144)[:, :4].copy().view("<u2")
    overflow = ((scales & 0x7C00) == 0x7C00).any()
    if overflow:
        with pytest.raises(ValueError, match="beyond the float16 range"):
            g.quantize(x, "Q4_K")
    else:
        np.testing.assert_array_equal(g.quantize(x, "Q4_K"), theirs)
    assert overflow == (case in OVERFLOWS)  # the inputs reach that branch where meant to


@pytest.mark.peer
@pytest.mark.parametrize("imatrix", ["random", "with_zeros", "constant", "all_zero", "tiny"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_quantize_matches_ggml_with_imatrix(peer, case, imatrix):
    x = CASES[case]()
    w = imatrices(x.shape[1])[imatrix]
    theirs = peer.quantize_chunk("Q4_K", x, imatrix=w)
    ours = g._quantize_raw(x, "Q4_K", imatrix=w)
    np.testing.assert_array_equal(ours, theirs, err_msg=f"{case} {imatrix}")
    if case in SMALL:
        with np.errstate(all="ignore"):
            ref = Q4_K.quantize_blocks(x.reshape(-1, 256), per_block(w, len(x)))
        np.testing.assert_array_equal(ref, theirs.reshape(-1, 144))
    if case not in OVERFLOWS:
        np.testing.assert_array_equal(g.quantize(x, "Q4_K", imatrix=w), theirs)


@pytest.mark.peer
def test_the_imatrix_changes_ggmls_bytes(peer):
    """Both of ggml's quantizers are exercised: with an imatrix the C bytes differ."""
    x = gaussian(256, 8, 50)
    assert not np.array_equal(peer.quantize_chunk("Q4_K", x), peer.quantize_chunk("Q4_K", x, imatrix=np.ones(256, f32)))


@pytest.mark.peer
@pytest.mark.parametrize("case", sorted(CASES))
def test_dequantize_matches_ggml_to_float(peer, case):
    q = peer.quantize_chunk("Q4_K", CASES[case]())
    theirs = peer.to_float("Q4_K", q.reshape(-1), q.size // 144 * 256)
    with np.errstate(all="ignore"):
        same_bits(g.dequantize(q, "Q4_K").reshape(-1), theirs)


@pytest.mark.peer
def test_dequantize_any_bytes_matches_ggml_to_float(peer):
    raw = _rng(23).integers(0, 256, (4096, 144), dtype=np.uint8)
    specials = np.array([0x7C00, 0xFC00, 0x7E00, 0x8000, 0x0000, 0x0001, 0x83FF, 0x7BFF], "<u2").view(np.uint8)
    raw[:8, 0:2] = specials.reshape(-1, 2)
    raw[8:16, 2:4] = specials.reshape(-1, 2)
    theirs = peer.to_float("Q4_K", raw.reshape(-1), 4096 * 256)
    with np.errstate(all="ignore"):
        same_bits(g.dequantize(raw, "Q4_K").reshape(-1), theirs)


@pytest.mark.peer
def test_golden_bytes_are_ggmls(peer):
    x = gaussian(1024, 16, 42)
    imatrix = (_rng(43).random(1024) * 4).astype(f32)
    assert hashlib.sha256(peer.quantize_chunk("Q4_K", x).tobytes()).hexdigest() == GOLDEN_PLAIN
    assert hashlib.sha256(peer.quantize_chunk("Q4_K", x, imatrix=imatrix).tobytes()).hexdigest() == GOLDEN_IMATRIX
