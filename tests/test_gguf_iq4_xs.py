"""IQ4_XS (and IQ4_NL with an importance matrix): int4ref.interop.gguf against ggml's C.

Unit tests (no peer): the fast kernels equal the literal references byte for byte, golden
bytes and hashes made with ggml's ``ggml_quantize_chunk`` (ggml 0.25.3 in the
llama-cpp-python 0.3.36 sdist, -O3, x86-64), dequantize equals gguf-py on random bytes, the
public entry points and the .gguf round trip. Peer tests (``@pytest.mark.peer``, run live
against tools/ggml_peer.py's build): bytes equal ``ggml_quantize_chunk`` with and without an
imatrix on a list of cases built from seeds and rules, values equal ggml's ``to_float``.
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import ggml_peer  # noqa: E402

f32 = np.float32
TYPES = ("IQ4_XS", "IQ4_NL")
XS = g.block_type("IQ4_XS")  # (not yet exported by name from int4ref.interop.gguf)


@pytest.fixture(scope="module")
def peer():
    try:
        return ggml_peer.load()
    except ggml_peer.PeerUnavailable as exc:
        pytest.skip(f"ggml C peer unavailable: {exc}")


@pytest.fixture(scope="module")
def gguf():
    return pytest.importorskip("gguf")


def _rng(seed):
    return np.random.default_rng(seed)


# --- inputs: seeds and rules, nothing tuned to int4ref's output ------------------------------

def _rows(*rows):
    return np.array(rows, dtype=np.float64).astype(f32)


def cases():
    """name -> float32 (rows, n), n a multiple of 256; every value finite, every scale in float16 range."""
    rng = _rng(16)
    out = {}
    out["normal"] = rng.standard_normal((6, 512)).astype(f32)
    out["normal_one_block"] = rng.standard_normal((1, 256)).astype(f32)
    out["normal_long_row"] = rng.standard_normal((2, 4096)).astype(f32)
    x = rng.standard_normal((5, 768))
    x.reshape(-1)[rng.integers(0, x.size, x.size // 50)] *= 25
    out["outliers"] = x.astype(f32)
    t = rng.standard_t(1.5, (4, 1024))
    t[::2] = rng.standard_cauchy((2, 1024)) * 0.01
    out["heavy_tails"] = np.clip(t, -1e6, 1e6).astype(f32)
    out["zeros"] = _rows(np.zeros(256), np.full(256, -0.0), np.tile([0.0, -0.0], 128), np.tile([-0.0, 0.0], 128))
    z = rng.standard_normal((4, 256))
    z[0, 32:96] = 0.0  # zero sub-blocks beside live ones
    z[1, :224] = -0.0  # one live sub-block
    z[2, ::32] = 0.0
    z[3, 64:96] *= 1e-17  # a sub-block below ggml's 1e-15 cut
    out["zero_sub_blocks"] = z.astype(f32)
    out["constant"] = _rows(*[np.full(256, v) for v in (7.0, -7.0, 0.3, 1e-3, -1e-10, 6e4)])
    out["constant_sub_blocks"] = _rows(np.repeat(np.arange(8) - 3.5, 32), np.repeat([1, -1, 2, -2, 4, -4, 8, -8], 32),
                                       np.repeat(rng.standard_normal(8), 32))
    with np.errstate(under="ignore"):
        tiny = [rng.standard_normal(256) * s for s in (1e-45, 1e-40, 1e-38, 1e-20, 2e-15, 1e-12, 1e-7, 3e-6)]
        out["tiny"] = np.array(tiny).astype(f32)
    out["large"] = (rng.standard_normal((3, 256)) * np.array([[1e4], [1e6], [3e7]])).astype(f32)
    ties = [np.arange(256) % 9 - 4, np.where(np.arange(256) % 2, 3.0, -3.0), rng.integers(-9, 10, 256),
            rng.integers(-15, 16, 256) / 2, np.r_[127.0, np.arange(255) % 64 - 31.5]]
    out["ties"] = _rows(*ties)
    one = np.zeros((4, 256))
    for i, (pos, v) in enumerate(((0, 2.5), (37, -2.5), (128, 1e-3), (255, -7.0))):
        one[i, pos] = v
    out["one_nonzero"] = one.astype(f32)
    e = rng.standard_normal((4, 256)) * 0.2
    e[0, 3], e[0, 20] = 4.0, -4.0  # +v and -v: the first one is max
    e[1, 3], e[1, 20] = -4.0, 4.0
    e[2, :32] = e[2, 64:96]  # two sub-blocks with the same scale
    e[3, :32], e[3, 32:64] = e[3, 64:96], -e[3, 64:96]  # opposite sub-blocks
    out["equal_magnitudes"] = e.astype(f32)
    return out


def overflow_cases():
    """Finite input whose float32 sums overflow: the scale is inf or NaN (ggml stores it, quantize() refuses)."""
    rng = _rng(17)
    x = rng.standard_normal((4, 256)) * np.array([[1e9], [1e13], [1e20], [3e38]])
    x[3] = np.clip(x[3], -3.4e38, 3.4e38)
    y = rng.standard_normal((2, 256))
    y[0, 40:64] *= 1e20  # one sub-block overflows, the others are ordinary
    y[1, :32] *= 1e13
    return np.concatenate([x, y]).astype(f32)


def imatrices(n):
    """name -> None or float32 (n,): importance weights as llama.cpp's --imatrix gives them (>= 0)."""
    rng = _rng(n)
    with_zeros = rng.random(n).astype(f32)
    with_zeros[rng.random(n) < 0.3] = 0
    spread = (rng.random(n) ** 4 * 1e3).astype(f32)
    return {"none": None, "random": rng.random(n).astype(f32) + f32(0.01), "with_zeros": with_zeros,
            "constant": np.ones(n, f32), "all_zero": np.zeros(n, f32), "spread": spread}


def weights_per_block(x, imatrix, block_size):
    """The per-block rows of ``imatrix`` that ggml_quantize_chunk gives each block of ``x``."""
    if imatrix is None:
        return None
    return np.tile(imatrix.reshape(-1, block_size), (len(x), 1))


CASES = cases()
CASE_NAMES = sorted(CASES)
IMATRIX_NAMES = ["none", "random", "with_zeros", "constant", "all_zero", "spread"]


# --- layout -----------------------------------------------------------------------------------

def test_layout():
    bt = g.block_type("IQ4_XS")
    assert (bt.block_size, bt.type_size, bt.block_dtype.itemsize) == (256, 136, 136)
    assert bt.bits_per_weight() == 4.25
    assert g.TYPE_SIZE["IQ4_XS"] == 136
    assert bt.float16_fields == (("d", 0),)
    assert bt.accepts_imatrix and g.block_type("IQ4_NL").accepts_imatrix


def test_dequantize_hand_built_block():
    """d = 0.5; sub-block ib has 6-bit scale 32 + (ib - 4) (scales_l nibbles, scales_h bits); codes c = j % 16."""
    s = np.arange(8) + 28  # s - 32 = ib - 4
    block = np.zeros(136, np.uint8)
    block[0:2] = np.array([0.5], "<f2").view(np.uint8)
    block[2:4] = np.array([sum(int(v >> 4) << (2 * ib) for ib, v in enumerate(s))], "<u2").view(np.uint8)
    block[4:8] = (s[0::2] & 15) | ((s[1::2] & 15) << 4)
    block[8:] = np.tile(np.arange(16, dtype=np.uint8) | (np.arange(16, dtype=np.uint8) << 4), 8)
    expected = np.array([0.5 * (ib - 4) * int(g.IQ4_NL_VALUES[j % 16]) for ib in range(8) for j in range(32)], f32)
    np.testing.assert_array_equal(g.dequantize(block, "IQ4_XS"), expected)
    np.testing.assert_array_equal(XS.dequantize_blocks(block[None]), expected[None])


# --- fast kernels == literal references ----------------------------------------------------

@pytest.mark.parametrize("case", CASE_NAMES)
@pytest.mark.parametrize("type_name", TYPES)
def test_fast_matches_reference(case, type_name):
    x = CASES[case]
    bt = g.block_type(type_name)
    for name, imatrix in imatrices(x.shape[1]).items():
        fast = g._quantize_raw(x, type_name, imatrix).reshape(-1, bt.type_size)
        ref = bt.quantize_blocks(x.reshape(-1, bt.block_size), weights_per_block(x, imatrix, bt.block_size))
        np.testing.assert_array_equal(fast, ref, err_msg=f"{type_name} {case} imatrix={name}")


def test_fast_matches_reference_on_overflow():
    """IQ4_XS codes of a block whose scale is inf/NaN follow ggml (NaN -> code 15) in both."""
    x = overflow_cases()
    for imatrix in (None, imatrices(256)["random"]):
        np.testing.assert_array_equal(g._quantize_raw(x, "IQ4_XS", imatrix),
                                      XS.quantize_blocks(x, weights_per_block(x, imatrix, 256)))


interesting = st.one_of(
    st.floats(-8, 8, width=32),
    st.sampled_from([0.0, -0.0, 0.5, -0.5, 1.0, -1.0, 7.5, -7.5, 1e-40, 1e-15, 65504.0]),
    st.floats(width=32, allow_nan=False, allow_infinity=False, min_value=-1e8, max_value=1e8),
)


@given(x=hnp.arrays(np.float32, st.tuples(st.integers(1, 2), st.sampled_from([256, 512])), elements=interesting),
       use_imatrix=st.booleans(), seed=st.integers(0, 2**16))
def test_fast_matches_reference_property(x, use_imatrix, seed):
    imatrix = _rng(seed).random(x.shape[1]).astype(f32) if use_imatrix else None
    for type_name in TYPES:
        bt = g.block_type(type_name)
        np.testing.assert_array_equal(
            g._quantize_raw(x, type_name, imatrix).reshape(-1, bt.type_size),
            bt.quantize_blocks(x.reshape(-1, bt.block_size), weights_per_block(x, imatrix, bt.block_size)))


def test_many_work_items_and_threads(monkeypatch):
    """Chunks of 3 super-blocks straddle rows of 2: each block must still get its own imatrix columns."""
    x = _rng(5).standard_normal((7, 512)).astype(f32)
    imatrix = _rng(6).random(512).astype(f32)
    whole = g.quantize(x, "IQ4_XS", imatrix=imatrix)
    monkeypatch.setattr(XS, "chunk_blocks", classmethod(lambda cls: 3))
    np.testing.assert_array_equal(g.quantize(x, "IQ4_XS", imatrix=imatrix), whole)
    np.testing.assert_array_equal(whole.reshape(-1, 136), XS.quantize_blocks(x.reshape(-1, 256),
                                                                                   weights_per_block(x, imatrix, 256)))


# --- golden bytes from ggml's C (no peer needed) ------------------------------------------

def golden_input():
    """4 rows of 1024, built with exact integer arithmetic so every platform gets the same floats."""
    k = np.arange(16 * 256, dtype=np.int64)
    x = ((k * 2654435761 % 2**32 % 20001 - 10000) / 1000.0).astype(f32).reshape(16, 256)
    x[1] = 0.0
    x[2, 32:64] = 0.0
    x[3] *= f32(2.0**-45)
    x[4, :128] *= f32(2.0**-60)
    x[5] = np.arange(256) % 9 - 4
    x[6, 40] = 400.0
    x[7] = np.repeat(np.arange(8) - 3.5, 32)
    return x.reshape(4, 1024)


def golden_imatrix():
    w = (np.arange(1024, dtype=np.int64) * 40503 % 997 / 100.0).astype(f32)
    w[::7] = 0
    return w


# ggml_quantize_chunk(type, golden_input(), dst, 0, 4, 1024, imatrix) from tools/ggml_peer.py's build:
# sha256 of all bytes and the first 24 bytes of block 0.
GOLDEN = {
    ("IQ4_XS", False): ("44a63bb6a597f9b60a28d5abb0820e4860954debf749cfcad54c45f80417edc5",
                        "3a19f3030fff0f10d042ebfe85be20c9ec63fd1fa6df31db"),
    ("IQ4_XS", True): ("8e9c8dca849d3decc1f3d22b4cd8535a288d0d725b92af93826d979f371b9b90",
                       "789903fc3e21e0de3fce24028b51df4724ad13f16931ce35"),
    ("IQ4_NL", True): ("e12dfd91a9cf30a4c1f3128eefda4b5f1e98087327afdd07fc9c9cbe1a2066a0",
                       "13ad3fce24028b51df4724ad13f16931ce35"),
}


@pytest.mark.parametrize("key", sorted(GOLDEN))
def test_matches_ggml_c_golden(key):
    type_name, with_imatrix = key
    q = g.quantize(golden_input(), type_name, imatrix=golden_imatrix() if with_imatrix else None)
    digest, first = GOLDEN[key]
    assert q.reshape(-1, g.TYPE_SIZE[type_name])[0, :24].tobytes().hex() == first
    assert hashlib.sha256(q.tobytes()).hexdigest() == digest


# --- dequantize: every bit pattern --------------------------------------------------------

#: float16 scales 0, -0, inf, -inf, NaN, the smallest subnormal, the largest finite, 1 as (8, 2) bytes.
SPECIAL_SCALES = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 6e-8, 65504, 1], "<f2").view(np.uint8).reshape(8, 2)


def random_blocks(n, seed):
    return _rng(seed).integers(0, 256, (n, 136), dtype=np.uint8)


def assert_same_floats(ours, theirs):
    """Same shape and dtype, NaN at the same places, identical bits elsewhere (NaN payloads may differ)."""
    assert ours.dtype == theirs.dtype == f32 and ours.shape == theirs.shape
    nan = np.isnan(ours)
    np.testing.assert_array_equal(nan, np.isnan(theirs))
    np.testing.assert_array_equal(ours[~nan].view(np.uint32), theirs[~nan].view(np.uint32))


def test_dequantize_matches_reference_and_gguf_py(gguf):
    blocks = random_blocks(3000, 1)
    blocks[:16, 0:2] = np.tile(SPECIAL_SCALES, (2, 1))
    ours = g.dequantize(blocks, "IQ4_XS")
    assert_same_floats(ours, XS.dequantize_blocks(blocks))
    with np.errstate(all="ignore"):
        theirs = gguf.quants.dequantize(blocks, gguf.GGMLQuantizationType.IQ4_XS)
    assert_same_floats(ours, theirs)
    assert np.isnan(ours).any() and np.isinf(ours).any()  # the special scales were exercised
    # shapes: (..., k * 136) -> (..., k * 256)
    assert g.dequantize(blocks[:6].reshape(2, 3 * 136), "IQ4_XS").shape == (2, 768)


def test_round_trip_error_is_small():
    x = _rng(9).standard_normal((8, 1024)).astype(f32)
    for imatrix in (None, _rng(10).random(1024).astype(f32)):
        err = g.dequantize(g.quantize(x, "IQ4_XS", imatrix=imatrix), "IQ4_XS") - x
        assert np.sqrt(np.mean(err**2)) < 0.12  # 4-bit non-uniform levels: about 0.1 of sigma


# --- the public entry points ------------------------------------------------------------

def test_quantize_shapes_and_input_dtypes():
    x = _rng(11).standard_normal((2, 3, 512))
    q = g.quantize(x.astype(f32), "IQ4_XS")
    assert q.shape == (2, 3, 272) and q.dtype == np.uint8
    np.testing.assert_array_equal(g.quantize(x, "iq4_xs"), q)  # float64 is converted to float32 first
    np.testing.assert_array_equal(g.quantize(x.astype(np.float16), "IQ4_XS"),
                                  g.quantize(x.astype(np.float16).astype(f32), "IQ4_XS"))
    assert g.dequantize(q, "IQ4_XS").shape == (2, 3, 512)


def test_bad_input_errors():
    x = np.ones((2, 512), f32)
    with pytest.raises(ValueError, match="not a multiple of 256"):
        g.quantize(np.ones(128, f32), "IQ4_XS")
    with pytest.raises(ValueError, match=r"imatrix must be 1-D with one weight per column of x \(512\)"):
        g.quantize(x, "IQ4_XS", imatrix=np.ones(256, f32))
    with pytest.raises(ValueError, match="negative weight"):
        g.quantize(x, "IQ4_XS", imatrix=-np.ones(512, f32))
    bad = x.copy()
    bad[1, 300] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        g.quantize(bad, "IQ4_XS")
    with pytest.raises(ValueError, match="beyond the float16 range"):
        g.quantize(np.full((1, 256), 1e9, f32), "IQ4_XS")
    with pytest.raises(ValueError, match="multiple of the IQ4_XS block size of 136 bytes"):
        g.dequantize(np.zeros(100, np.uint8), "IQ4_XS")


def test_gguf_file_round_trip(gguf, tmp_path):
    x = _rng(12).standard_normal((3, 512)).astype(f32)
    q = g.quantize(x, "IQ4_XS", imatrix=_rng(13).random(512).astype(f32))
    path = tmp_path / "iq4_xs.gguf"
    g.write_gguf(path, {"blk.0.ffn_down.weight": (q, "IQ4_XS", (3, 512))})
    data, type_name, shape = g.read_gguf(path)["blk.0.ffn_down.weight"]
    assert (type_name, shape) == ("IQ4_XS", (3, 512))
    np.testing.assert_array_equal(data, q)
    assert_same_floats(g.dequantize(data, "IQ4_XS"),
                       gguf.quants.dequantize(data, gguf.GGMLQuantizationType.IQ4_XS))


# --- live against ggml's C ------------------------------------------------------------------

@pytest.mark.peer
@pytest.mark.parametrize("imatrix_name", IMATRIX_NAMES)
@pytest.mark.parametrize("type_name", TYPES)
def test_quantize_matches_ggml(peer, type_name, imatrix_name):
    for case in CASE_NAMES:
        x = CASES[case]
        imatrix = imatrices(x.shape[1])[imatrix_name]
        theirs = peer.quantize_chunk(type_name, x, imatrix)
        where = f"{type_name} {case} imatrix={imatrix_name}"
        np.testing.assert_array_equal(g._quantize_raw(x, type_name, imatrix), theirs, err_msg=where)
        if np.isfinite(theirs.reshape(-1, g.TYPE_SIZE[type_name])[:, 0:2].copy().view("<f2")).all():
            np.testing.assert_array_equal(g.quantize(x, type_name, imatrix=imatrix), theirs, err_msg=where)
        else:  # ggml stores an inf scale (IQ4_NL: max |x| above about 127 * 65504)
            with pytest.raises(ValueError, match="beyond the float16 range"):
                g.quantize(x, type_name, imatrix=imatrix)


@pytest.mark.peer
@pytest.mark.parametrize("imatrix_name", ["none", "random", "with_zeros"])
def test_quantize_matches_ggml_on_overflow(peer, imatrix_name):
    """Scales that overflow to inf/NaN: quantize() refuses them, the raw bytes still equal ggml's."""
    x = overflow_cases()
    imatrix = imatrices(256)[imatrix_name]
    theirs = peer.quantize_chunk("IQ4_XS", x, imatrix)
    np.testing.assert_array_equal(g._quantize_raw(x, "IQ4_XS", imatrix), theirs)
    d = theirs[:, 0:2].copy().view("<f2")[:, 0]
    assert not np.isfinite(d).all()  # the case list reaches ggml's overflow paths


@pytest.mark.peer
def test_iq4_nl_nan_scale_codes_match_ggml(peer):
    x = np.full((1, 32), 3e38, f32)
    x[0, ::3] *= -1
    np.testing.assert_array_equal(g._quantize_raw(x, "IQ4_NL"), peer.quantize_chunk("IQ4_NL", x))


@pytest.mark.peer
def test_quantize_matches_ggml_random_rows(peer):
    """Many rows of several scales, with an imatrix, through the threaded chunking."""
    rng = _rng(20)
    x = (rng.standard_normal((64, 1024)) * np.exp(rng.normal(0, 4, (64, 1)))).astype(f32)
    imatrix = (rng.random(1024) ** 3).astype(f32)
    for type_name in TYPES:
        for im in (None, imatrix):
            np.testing.assert_array_equal(g.quantize(x, type_name, imatrix=im), peer.quantize_chunk(type_name, x, im))


@pytest.mark.peer
def test_dequantize_matches_ggml_to_float(peer):
    blocks = random_blocks(2000, 2)
    blocks[:8, 0:2] = SPECIAL_SCALES
    assert_same_floats(g.dequantize(blocks, "IQ4_XS").reshape(-1), peer.to_float("IQ4_XS", blocks, 2000 * 256))
    q = peer.quantize_chunk("IQ4_XS", CASES["normal"])
    assert_same_floats(g.dequantize(q, "IQ4_XS").reshape(-1), peer.to_float("IQ4_XS", q, q.size // 136 * 256))
