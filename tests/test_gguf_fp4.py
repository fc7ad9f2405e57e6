"""MXFP4 and NVFP4 GGUF blocks (int4ref.interop.gguf.fp4): layout, fast == reference, gguf-py,
and (marked ``peer``) byte-for-byte against ggml's C on cases chosen by rule, not tuned.

The golden bytes below were produced by ggml 0.25.3's ``ggml_quantize_chunk`` (tools/ggml_peer.py)
on the input of :func:`_golden_input`, so the unit tests check the C's output without the peer.
"""
import ctypes
import ctypes.util
import sys
from pathlib import Path

import numpy as np
import pytest

from int4ref.interop import gguf as g
from int4ref.interop.gguf import fp4

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import ggml_peer  # noqa: E402

f32 = np.float32
TYPES = ("MXFP4", "NVFP4")
BLOCK = {"MXFP4": 32, "NVFP4": 64}
SIZE = {"MXFP4": 17, "NVFP4": 36}

GOLDEN = {
    "MXFP4": "80cecebebebdbdadadadad9d9d9c9c0c0c7f6060616162727373747474757575757679dfcececececebebebeaeaead9d9d9d"
             "0d7950505151515262626363636464646464896757575757474747373727261616060689e0e9e9eafafbfbfcfcfcfdfdfdfd"
             "fefe",
    "NVFP4": "3b33323aefefefefefdedededfdfcfcebeae9e9d5061626263747475656576767676767607030307efefefefefdedededfdfdf"
             "cfbfbeae9e506162637374757565656565767676767e7e7e7e77777777777777776757574737271706f9fafbfcfdfdfefeff"
             "ffffffffffffff",
}


def _golden_input():
    """Quarter steps from -8 to 7.75 (every E2M1 midpoint of a power-of-two scale), and the
    same times 0.01 and reversed times 1000 (NVFP4's UE4M3 rounding and its saturation)."""
    base = (np.arange(64, dtype=f32) - 32) / f32(4)
    return np.stack([base, base * f32(0.01), base[::-1] * f32(1000)]).astype(f32)


def _bits(a):
    return np.ascontiguousarray(a, dtype=f32).view(np.uint32)


# --- layout and tables --------------------------------------------------------------------

def test_block_geometry_and_table():
    assert (fp4.MXFP4.block_size, fp4.MXFP4.type_size, fp4.MXFP4.block_dtype.itemsize) == (32, 17, 17)
    assert (fp4.NVFP4.block_size, fp4.NVFP4.type_size, fp4.NVFP4.block_dtype.itemsize) == (64, 36, 36)
    assert fp4.MXFP4.bits_per_weight() == 4.25 and fp4.NVFP4.bits_per_weight() == 4.5
    assert g.TYPE_SIZE["MXFP4"] == 17 and g.TYPE_SIZE["NVFP4"] == 36
    # ggml-common.h kvalues_fp4 (= kvalues_mxfp4)
    assert fp4.E2M1_DOUBLED.tolist() == [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12]
    for t in (fp4.MXFP4, fp4.NVFP4):
        assert t.float16_fields == () and t.accepts_imatrix is False


@pytest.mark.parametrize("type_name", TYPES)
def test_golden_bytes_from_ggml(type_name):
    x = _golden_input()
    want = bytes.fromhex(GOLDEN[type_name])
    assert g.quantize(x, type_name).tobytes() == want
    bt = g.block_type(type_name)
    assert bt.quantize_blocks(x.reshape(-1, bt.block_size)).tobytes() == want


def test_e8m0_half_decoding():
    e = np.arange(256, dtype=np.uint8)
    d = fp4.e8m0_to_float_half(e).astype(np.float64)
    assert np.array_equal(d, np.ldexp(1.0, np.arange(256) - 128))  # 2^(e-128), e = 0, 1 subnormal
    assert fp4.e8m0_to_float_half(np.uint8(255)) == f32(2.0**127)


def test_mxfp4_exponent_edges():
    below16 = np.nextafter(f32(16), f32(0))
    tiny = f32(2.0**-125)
    cases = {
        0.0: 0,  # a block of zeros
        16.0: 4 - 2 + 127,
        float(below16): 4 - 2 + 127,  # log2f rounds the largest float below 16 up to 4
        float(np.nextafter(below16, f32(0))): 3 - 2 + 127,
        float(tiny): 0,
        float(np.nextafter(tiny, f32(0))): 0,  # log2f rounds up to -125 here too
        2.0**-126: 255,  # floor(log2) = -126: e = -1 wraps to 255 (x86)
        1e-40: 248,
        1e-45: (-149 + 125) % 256,
        float(np.finfo(f32).max): 253,  # log2f(max) rounds to 128
    }
    for amax, e in cases.items():
        assert int(fp4.mxfp4_exponent(f32(amax))) == e, amax


def _libm_log2f():
    name = ctypes.util.find_library("m")
    if name is None:
        pytest.skip("no C math library to compare log2f with")
    lib = ctypes.CDLL(name)
    lib.log2f.restype = ctypes.c_float
    lib.log2f.argtypes = [ctypes.c_float]
    return lib.log2f


def test_floor_log2f_matches_libm_near_every_power_of_two():
    """floorf(log2f(a)) differs from the exponent of ``a`` only just below powers of two:
    check every float within 100 ulps below and 3 above each of them."""
    log2f = _libm_log2f()
    values = []
    for k in range(-148, 129):
        top = f32(2.0**k) if k < 128 else f32(np.inf)
        a = top
        for _ in range(100):
            a = np.nextafter(a, f32(0))
            values.append(a)
        if k < 128:
            values += [top, np.nextafter(top, f32(np.inf)), np.nextafter(np.nextafter(top, f32(np.inf)), f32(np.inf))]
    values = np.array([v for v in values if v > 0], dtype=f32)
    want = np.array([np.floor(log2f(float(v))) for v in values])
    assert np.array_equal(fp4.floor_log2f(values), want)


def test_ue4m3_encoding_matches_gguf_py_and_rules():
    gq = pytest.importorskip("gguf.quants")
    rng = np.random.default_rng(3)
    x = np.concatenate([
        np.exp(rng.uniform(np.log(1e-5), np.log(3000), 20000)),
        np.arange(0, 4096) / f32(512 * 64),  # the subnormal grid and its half steps
        [0, -1, 448, 449, 255.9, 256, 300, 447, 2.0**-6, 0.0146484375, 0.015625 - 2**-20, 1 / 1024, 0.5 / 512],
    ]).astype(f32)
    ours = fp4.ue4m3_from_float(x)
    assert np.array_equal(ours, gq.NVFP4.fp32_to_ue4m3(x.copy()))
    assert fp4.ue4m3_from_float(f32(300)) == 0x7E  # [256, 448] all store 448
    assert fp4.ue4m3_from_float(f32(0.0146484375)) == 7  # subnormal cap: not 8 (2^-6)
    assert fp4.ue4m3_from_float(f32(np.nan)) == 0
    decoded = fp4.ue4m3_to_float_half(np.arange(256, dtype=np.uint8))
    assert np.array_equal(decoded, gq.NVFP4.ue4m3_to_fp32(np.arange(256, dtype=np.uint8)).astype(f32))


# --- fast kernels == literal references ----------------------------------------------------

def _inputs(block, seed):
    rng = np.random.default_rng(seed)
    n = 8 * block
    rows = [
        rng.standard_normal((40, n)),
        rng.standard_t(1.3, (40, n)),  # heavy tails
        rng.standard_normal((8, n)) * np.exp(rng.uniform(-100, 80, (8, 1))),  # tiny to huge
        rng.integers(-48, 49, (16, n)) / 8.0,  # E2M1 midpoints of power-of-two scales
        np.zeros((2, n)),
        np.full((2, n), -0.0),
        np.full((2, n), 0.3),
        rng.standard_normal((4, n)) * 1e-42,  # subnormal
        rng.standard_normal((4, n)) * 3e38,
        rng.uniform(-1, 1, (2, n)) * np.finfo(f32).max,  # MXFP4 e = 253: 8 * d overflows in the C
    ]
    with np.errstate(over="ignore"):
        x = np.concatenate(rows).astype(f32)
    x[~np.isfinite(x)] = f32(3e38)
    x[-2:, ::7] = np.finfo(f32).max
    return x


@pytest.mark.parametrize("type_name", TYPES)
def test_fast_equals_reference(type_name):
    bt = g.block_type(type_name)
    x = _inputs(bt.block_size, 5)
    fast = g.quantize(x, type_name)
    ref = bt.quantize_blocks(x.reshape(-1, bt.block_size)).reshape(fast.shape)
    assert np.array_equal(fast, ref)
    assert np.array_equal(_bits(g.dequantize(fast, type_name)),
                          _bits(bt.dequantize_blocks(fast.reshape(-1, bt.type_size)).reshape(x.shape)))


@pytest.mark.parametrize("type_name", TYPES)
def test_fast_kernels_several_chunks(type_name, monkeypatch):
    """Work split over several chunks (threads) gives the same bytes as one call."""
    bt = g.block_type(type_name)
    x = np.random.default_rng(9).standard_normal((64, 4 * bt.block_size)).astype(f32)
    whole = g.quantize(x, type_name)
    monkeypatch.setattr(bt, "chunk_blocks", classmethod(lambda cls: 7))
    assert np.array_equal(g.quantize(x, type_name), whole)
    assert np.array_equal(_bits(g.dequantize(whole, type_name)),
                          _bits(bt.dequantize_blocks(whole.reshape(-1, bt.type_size)).reshape(x.shape)))


def test_mxfp4_never_writes_negative_zero_and_ties_go_toward_zero():
    d = f32(2.0**-3)  # amax 1.75: floor(log2(1.75)) = 0 -> e = 125, d = 2^(125-128); levels * d
    x = np.zeros((1, 32), f32)
    x[0, :8] = np.array([1.75, 0.75 / 4, 1.75 / 4, 3.5 / 4, -0.75 / 4, -1e-9, 0.25 / 4, 5 / 4], f32)
    q = g.quantize(x, "MXFP4")
    assert q[0, 0] == 125
    codes = np.concatenate([q[0, 1:] & 15, q[0, 1:] >> 4])
    # each value after the first lies midway between two levels (1.5 d between 1 and 2, 3.5 d
    # between 3 and 4, 7 d between 6 and 8, 10 d between 8 and 12): the smaller magnitude wins
    # (OCP round-half-to-even would pick 2, 4 (code 4), 8 (code 6) and 8 for these);
    # -1e-9 rounds to code 0, not 8 (-0)
    assert codes[:8].tolist() == [7, 1, 3, 5, 9, 0, 0, 6]
    assert d * 12 == f32(1.5)


def _saturating_row():
    x = np.zeros((1, 64), f32)
    x[0, :5] = [1e30, -7, 5000, 2688, 3000]
    return x


def test_nvfp4_saturates_and_absorbs_huge_values():
    """No per-tensor scale: the UE4M3 scale tops out at 448 (d = 224), so values clip at
    12 * 224 = 2688; and 1e30 - level * 224 rounds to 1e30 for every level, so all tie and
    code 0 wins: 1e30 decodes as 0 (ggml's C does the same: test_quantize_matches_ggml_c)."""
    q = g.quantize(_saturating_row(), "NVFP4")
    assert q[0, 0] == 0x7E
    assert g.dequantize(q, "NVFP4")[0, :5].tolist() == [0, 0, 2688, 2688, 2688]


@pytest.mark.parametrize("type_name", TYPES)
def test_dequantize_equals_gguf_py_on_random_bytes(type_name):
    gguf = pytest.importorskip("gguf")
    from gguf.quants import dequantize as gguf_dequantize

    rng = np.random.default_rng(11)
    size = SIZE[type_name]
    data = rng.integers(0, 256, (300, 4 * size), dtype=np.uint8)
    if type_name == "MXFP4":
        data.reshape(-1, size)[:256, 0] = np.arange(256)  # every scale byte, 255 included
    else:
        data.reshape(-1, size)[:64, :4] = np.arange(256).reshape(64, 4)
    ours = g.dequantize(data, type_name)
    with np.errstate(all="ignore"):
        theirs = gguf_dequantize(data, gguf.GGMLQuantizationType[type_name])
    assert np.array_equal(_bits(ours), _bits(theirs))


@pytest.mark.parametrize("type_name", TYPES)
def test_bad_input_is_refused(type_name):
    n = BLOCK[type_name]
    for bad in (np.nan, np.inf, -np.inf):
        x = np.ones((2, n), f32)
        x[1, 3] = bad
        with pytest.raises(ValueError, match="non-finite"):
            g.quantize(x, type_name)
    with pytest.raises(ValueError, match=f"not a multiple of {n}"):
        g.quantize(np.ones((2, n + 16), f32), type_name)
    with pytest.raises(ValueError, match="without an importance matrix"):
        g.quantize(np.ones((2, n), f32), type_name, imatrix=np.ones(n, f32))
    with pytest.raises(ValueError, match="not a multiple"):
        g.dequantize(np.zeros((1, SIZE[type_name] + 1), np.uint8), type_name)


@pytest.mark.parametrize("type_name", TYPES)
def test_gguf_file_round_trip(type_name, tmp_path):
    pytest.importorskip("gguf")
    x = np.random.default_rng(2).standard_normal((3, 2 * BLOCK[type_name])).astype(f32)
    q = g.quantize(x, type_name)
    g.write_gguf(tmp_path / "t.gguf", {"w": (q, type_name, x.shape)})
    data, name, shape = g.read_gguf(tmp_path / "t.gguf")["w"]
    assert name == type_name and shape == x.shape and np.array_equal(data.reshape(q.shape), q)


# --- live against ggml's C ----------------------------------------------------------------

@pytest.fixture(scope="module")
def peer():
    try:
        return ggml_peer.load()
    except ggml_peer.PeerUnavailable as exc:
        pytest.skip(f"ggml C peer unavailable: {exc}")


def _edge_rows(type_name):
    """Rows built by rule: scales at and around every E8M0 / UE4M3 boundary."""
    n = BLOCK[type_name]
    rng = np.random.default_rng(21)
    rows = []
    if type_name == "MXFP4":
        for k in list(range(-149, 128, 3)) + [-127, -126, -125, -124, 126, 127]:
            top = f32(2.0**k) if k < 128 else np.finfo(f32).max
            for amax in (top, np.nextafter(top, f32(0)), np.nextafter(np.nextafter(top, f32(0)), f32(0))):
                row = (rng.uniform(-1, 1, n) * amax).astype(f32)
                row[rng.integers(n)] = amax * rng.choice([-1, 1])
                rows.append(row)
        rows.append(np.full(n, np.finfo(f32).max, f32))
    else:
        e4m3 = np.unique(fp4.UE4M3_HALF[:0x7F] * 2)  # every UE4M3 value
        for s in e4m3:
            for amax in (s * 6, np.nextafter(f32(s * 6), f32(0)), f32(s * 6.25), f32(s * 6.5)):
                row = (rng.uniform(-1, 1, n) * amax).astype(f32)
                row[rng.integers(n)] = amax
                rows.append(row)
        for amax in (2688, 2689, 3584, 3585, 1e4, 1e30, 1e-3, 1e-40):
            rows.append((rng.uniform(-1, 1, n) * amax).astype(f32))
        row = np.zeros(n, f32)
        row[::16] = f32(1e30)
        row[1::16] = f32(-7)
        rows.append(row)
        rows.append(_saturating_row()[0])
    return np.stack(rows).astype(f32)


def _peer_cases(type_name):
    n = BLOCK[type_name]
    rng = np.random.default_rng(31)
    mids = rng.integers(-48, 49, (24, 4 * n)) / f32(8)  # E2M1 midpoints
    with np.errstate(over="ignore"):
        cases = {
            "normal": rng.standard_normal((32, 8 * n)),
            "outliers": rng.standard_normal((32, 8 * n)) * np.where(rng.random((32, 8 * n)) < 0.01, 1000, 1),
            "heavy": rng.standard_t(1.1, (32, 8 * n)),
            "zeros": np.where(rng.random((8, 2 * n)) < 0.5, -0.0, 0.0),
            "repeated": np.repeat(rng.standard_normal((8, 1)), 2 * n, axis=1),
            "ties": mids * np.exp2(rng.integers(-20, 20, (24, 1))),
            "ties_sixth": mids * f32(1 / 6) * np.exp2(rng.integers(-10, 10, (24, 1))),
            "subnormal": rng.standard_normal((8, 2 * n)) * 1e-41,
            "tiny": rng.standard_normal((8, 2 * n)) * 1e-30,
            "huge": rng.standard_normal((8, 2 * n)) * 1e37,
            "mixed_scales": rng.standard_normal((16, 4 * n)) * np.exp(rng.uniform(-60, 60, (16, 4 * n))),
            "edges": _edge_rows(type_name),
        }
    for k in (1, 2, 3, 5, 16):  # row lengths: k blocks, incl. the smallest
        cases[f"len{k}"] = rng.standard_normal((5, k * n))
    out = {}
    for k, v in cases.items():
        v = np.asarray(v, dtype=f32)
        v[~np.isfinite(v)] = f32(1e38)
        out[k] = v
    return out


@pytest.mark.peer
@pytest.mark.parametrize("type_name", TYPES)
def test_quantize_matches_ggml_c(peer, type_name):
    bt = g.block_type(type_name)
    for name, x in _peer_cases(type_name).items():
        want = peer.quantize_chunk(type_name, x)
        assert np.array_equal(g.quantize(x, type_name), want), name
        assert np.array_equal(bt.quantize_blocks(x.reshape(-1, bt.block_size)).reshape(want.shape), want), name
        back = peer.to_float(type_name, want.reshape(-1), x.size).reshape(x.shape)
        assert np.array_equal(_bits(g.dequantize(want, type_name)), _bits(back)), name


@pytest.mark.peer
@pytest.mark.parametrize("type_name", TYPES)
def test_dequantize_matches_ggml_to_float_on_random_bytes(peer, type_name):
    rng = np.random.default_rng(41)
    size, n = SIZE[type_name], BLOCK[type_name]
    data = rng.integers(0, 256, (512, size), dtype=np.uint8)
    data[:256, 0] = np.arange(256)
    if type_name == "NVFP4":
        data[:64, :4] = np.arange(256).reshape(64, 4)
    want = peer.to_float(type_name, data.reshape(-1), 512 * n)
    assert np.array_equal(_bits(g.dequantize(data.reshape(-1), type_name)), _bits(want))


@pytest.mark.peer
def test_mxfp4_gguf_py_agrees_with_c_except_on_nan(peer):
    """gguf-py's numpy MXFP4 quantizer gives the C's bytes on finite input (int4ref matches
    both); on a block holding NaN they part: the C's ``amax < fabsf(v)`` skips NaN, numpy's
    max returns it. int4ref refuses NaN."""
    gguf = pytest.importorskip("gguf")
    from gguf.quants import quantize as gguf_quantize

    for name, x in _peer_cases("MXFP4").items():
        with np.errstate(all="ignore"):
            theirs = gguf_quantize(x, gguf.GGMLQuantizationType.MXFP4)
        assert np.array_equal(theirs.reshape(-1), peer.quantize_chunk("MXFP4", x).reshape(-1)), name
    x = np.linspace(-3, 3, 32, dtype=f32).reshape(1, 32)
    x[0, 5] = np.nan
    c = peer.quantize_chunk("MXFP4", x)
    with np.errstate(all="ignore"):
        py = gguf_quantize(x, gguf.GGMLQuantizationType.MXFP4)
    assert c[0, 0] == int(fp4.mxfp4_exponent(f32(3)))  # NaN skipped: the scale of the finite values
    assert py[0, 0] != c[0, 0]
    with pytest.raises(ValueError, match="non-finite"):
        g.quantize(x, "MXFP4")
