"""int4ref's GGUF formats against ggml's own C code, compiled from the llama-cpp-python sdist.

tools/ggml_peer.py builds ggml's CPU libraries into a cache folder (``make test-peers`` runs
``python tools/ggml_peer.py build`` first); these tests skip when that build is absent, and
``INT4REF_REQUIRE_PEERS=1`` (set by ``make test-peers``) turns such a skip into a failure.

* Q4_0, Q4_1, IQ4_NL: ``int4ref.interop.gguf`` bytes equal ``ggml_quantize_chunk`` (no
  importance matrix, what llama-quantize runs) and its values equal the type traits'
  ``to_float``, bit for bit, sign of zero included.
* Q8_0: ``ggml_dot.quantize_q8_0(rounding="reference")`` equals ``ggml_quantize_chunk``
  (which calls ``quantize_row_q8_0_ref``); the CPU backend's ``from_float`` (what llama.cpp
  applies to activations) equals ``rounding="avx2"`` on the x86-64 build.
* ``ggml_dot.matmul_q4_0_q8_0`` equals the CPU backend's Q4_0 ``vec_dot`` up to float32
  summation order.
"""
import sys
from pathlib import Path

import numpy as np
import pytest

from int4ref.interop import ggml_dot
from int4ref.interop import gguf as g

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import ggml_peer  # noqa: E402

pytestmark = pytest.mark.peer
f32 = np.float32
TYPES = ("Q4_0", "Q4_1", "IQ4_NL")
EPS = float(np.finfo(f32).eps)


@pytest.fixture(scope="module")
def peer():
    try:
        return ggml_peer.load()
    except ggml_peer.PeerUnavailable as exc:
        pytest.skip(f"ggml C peer unavailable: {exc}")


@pytest.fixture(scope="module")
def cpu(peer):
    try:
        _ = peer.cpu  # loads libggml-cpu (built for AVX2)
    except ggml_peer.PeerUnavailable as exc:
        pytest.skip(f"ggml CPU backend unavailable: {exc}")
    return peer


# --- inputs: built from seeds and rules, not from int4ref's output -------------------------

def _rng(seed):
    return np.random.default_rng(seed)


def zero_blocks():
    rng = _rng(1)
    rows = [np.zeros(32), np.full(32, -0.0), np.tile([-0.0, 0.0], 16), np.tile([0.0, -0.0], 16)]
    rows += list(np.where(rng.random((12, 32)) < 0.5, -0.0, 0.0))  # zeros of random signs
    return np.array(rows, f32)


def signed_zero_blocks():
    """Zeros of both signs beside nonzero values: the minimum (Q4_1) or maximum is a zero."""
    rng = _rng(2)
    x = np.abs(rng.standard_normal((48, 32))) * (rng.random((48, 32)) < 0.6)
    x[16:32] *= -1  # all <= 0: the maximum is a zero
    x[32:] = 0  # a single nonzero among zeros
    x[32:, rng.integers(0, 32, 16)] = rng.standard_normal(16)
    signs = np.where(rng.random(x.shape) < 0.5, -1.0, 1.0)
    x = np.where(x == 0, 0.0 * signs, x)
    return x.astype(f32)


def subnormal_blocks():
    rng = _rng(3)
    rows = []
    for scale in (1e-45, 1e-42, 1e-40, 1e-38):  # float32 subnormal (1/d overflows for the tiniest)
        rows.append(rng.standard_normal(32) * scale)
        rows.append(np.abs(rng.standard_normal(32)) * scale)
    for scale in (1e-20, 1e-16, 1e-9, 1e-7, 3e-6):  # below IQ4_NL's 1e-15 cut; float16 scale subnormal
        rows.append(rng.standard_normal(32) * scale)
    x = np.array(rows)
    with np.errstate(under="ignore"):
        return x.astype(f32)


def tie_blocks():
    """Values that land exactly on a rounding boundary of some format."""
    rng = _rng(4)
    rows = []
    for e in (-14, -3, 0, 6):
        step = 2.0**e
        # Q4_0: extreme -/+8 step makes d = -/+step, and half-integer multiples of step tie
        for sign in (1.0, -1.0):
            r = rng.integers(-15, 16, 32) / 2 * step
            r[rng.integers(0, 32)] = sign * 8 * step
            rows.append(r)
        # Q4_1: min a and max a + 15 step make d = step; a + (k + 1/2) step ties
        a = rng.integers(-20, 5) * step
        r = a + (rng.integers(0, 15, 32) + 0.5) * step
        r[rng.choice(32, 2, replace=False)] = [a, a + 15 * step]
        rows.append(r)
    rows += list(rng.integers(-9, 10, (6, 32)).astype(float))  # small integers: IQ4_NL midpoints
    rows.append(np.r_[127.0, np.arange(31) - 15.5])  # Q8_0: d = 1, a tie at every .5
    return np.array(rows, f32)


def extreme_blocks():
    """Outliers, negative extremes, equal magnitudes of both signs, the clamped other extreme."""
    rng = _rng(5)
    x = rng.standard_normal((40, 32))
    x[:10, rng.integers(0, 32, 10)] *= 100  # outliers
    x[10:20] = -np.abs(x[10:20])  # all negative
    x[10:20, 3] *= 30  # a negative extreme
    for i in range(20, 30):  # +v and -v both present; either comes first
        j, k = sorted(rng.choice(32, 2, replace=False))
        x[i, j], x[i, k] = (6.0, -6.0) if i % 2 else (-6.0, 6.0)
    for i in range(30, 40):  # the opposite extreme x / d >= 7.5: code 16, clamped to 15
        m = np.abs(x[i]).max()
        x[i, 0], x[i, 1] = -m * 1.5, m * 1.5 * (0.94 + 0.01 * (i - 30))
    return x.astype(f32)


def constant_blocks():
    return np.array([np.full(32, v) for v in (1.0, -1.0, 3.25, -7.5, 1e-30, -1e-30, 6e4, 1e-5)], f32)


def gaussian(n, rows, seed):
    return _rng(seed).standard_normal((rows, n)).astype(f32)


def heavy_tailed(n, rows, seed):
    rng = _rng(seed)
    x = rng.standard_t(1.5, (rows, n))
    x[::2] = rng.standard_cauchy((len(x[::2]), n)) * 0.01
    return x.astype(f32)


def wide_range():
    """Rows at scales 1e-8 .. 1e7: the largest overflow the float16 scale (stored as inf)."""
    rng = _rng(6)
    scales = 10.0 ** np.arange(-8, 8)
    return (rng.standard_normal((len(scales), 64)) * scales[:, None]).astype(f32)


CASES = {
    "zeros": zero_blocks,
    "signed_zeros": signed_zero_blocks,
    "subnormal": subnormal_blocks,
    "ties": tie_blocks,
    "extremes": extreme_blocks,
    "constant": constant_blocks,
    "gauss_n32": lambda: gaussian(32, 256, 10),
    "gauss_n64": lambda: gaussian(64, 64, 11),
    "gauss_n96": lambda: gaussian(96, 32, 12),
    "gauss_n4096": lambda: gaussian(4096, 8, 13) * f32(0.02),
    "heavy_n64": lambda: heavy_tailed(64, 64, 14),
    "heavy_n4096": lambda: heavy_tailed(4096, 4, 15),
    "wide_range": wide_range,
}


def same_bits(a, b):
    """Equal float32 arrays bit for bit (sign of zero included); NaNs only in the same places."""
    a, b = np.asarray(a, f32), np.asarray(b, f32)
    assert a.shape == b.shape
    nan = np.isnan(a)
    np.testing.assert_array_equal(nan, np.isnan(b))
    np.testing.assert_array_equal(a.view(np.uint32)[~nan], b.view(np.uint32)[~nan])


# --- Q4_0, Q4_1, IQ4_NL --------------------------------------------------------------------

@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("t", TYPES)
def test_quantize_matches_ggml_quantize_chunk(peer, t, case):
    x = CASES[case]()
    theirs = peer.quantize_chunk(t, x)
    ours = g._quantize_raw(x, t)  # the bytes before quantize() refuses an inf scale
    assert ours.shape == theirs.shape == (x.shape[0], x.shape[1] // 32 * g.TYPE_SIZE[t])
    np.testing.assert_array_equal(ours, theirs, err_msg=f"{t} {case}")
    if t != "IQ4_NL":  # the short reference functions give the same bytes
        ref = {"Q4_0": g.Q4_0.quantize_blocks, "Q4_1": g.Q4_1.quantize_blocks}[t]
        with np.errstate(all="ignore"):
            np.testing.assert_array_equal(ref(x.reshape(-1, 32)), theirs.reshape(-1, g.TYPE_SIZE[t]))
    # quantize() returns these bytes, or refuses exactly where C stored an inf scale
    n_scales = 2 if t == "Q4_1" else 1
    scales = theirs.reshape(-1, g.TYPE_SIZE[t])[:, : 2 * n_scales].copy().view("<u2")
    overflow = ((scales & 0x7C00) == 0x7C00).any()
    if overflow:
        with pytest.raises(ValueError, match="beyond the float16 range"):
            g.quantize(x, t)
    else:
        np.testing.assert_array_equal(g.quantize(x, t), theirs)
    assert overflow == (case == "wide_range")  # the inputs reach that branch where meant to


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("t", TYPES)
def test_dequantize_matches_ggml_to_float(peer, t, case):
    q = peer.quantize_chunk(t, CASES[case]())
    theirs = peer.to_float(t, q.reshape(-1), q.shape[0] * q.shape[1] // g.TYPE_SIZE[t] * 32)
    with np.errstate(all="ignore"):
        same_bits(g.dequantize(q, t).reshape(-1), theirs)


@pytest.mark.parametrize("t", TYPES)
def test_dequantize_any_bytes_matches_ggml_to_float(peer, t):
    """Random bytes: float16 scales that are NaN, inf, subnormal, -0.0 included."""
    rng = _rng(7)
    raw = rng.integers(0, 256, (4096, g.TYPE_SIZE[t]), dtype=np.uint8)
    specials = np.array([0x7C00, 0xFC00, 0x7E00, 0x8000, 0x0000, 0x0001, 0x83FF, 0x7BFF], "<u2").view(np.uint8)
    raw[: len(specials) // 2, :2] = specials.reshape(-1, 2)
    if t == "Q4_1":
        raw[8: 8 + len(specials) // 2, 2:4] = specials.reshape(-1, 2)
    theirs = peer.to_float(t, raw.reshape(-1), 4096 * 32)
    with np.errstate(all="ignore"):
        same_bits(g.dequantize(raw, t).reshape(-1), theirs)


def test_zero_scale_signs_are_ggml_s(peer):
    """The rule int4ref follows, stated on the C output itself: a Q4_0 block of zeros stores
    d = -0.0 whatever its zeros' signs; Q4_1 stores its first zero as m and d = +0.0."""
    x = zero_blocks()
    d = peer.quantize_chunk("Q4_0", x)[:, :2].copy().view("<u2")[:, 0]
    assert (d == 0x8000).all()
    q1 = peer.quantize_chunk("Q4_1", x).reshape(-1, 20)
    assert (q1[:, :2].copy().view("<u2") == 0).all()
    np.testing.assert_array_equal(q1[:, 2:4].copy().view("<u2")[:, 0] >> 15, np.signbit(x[:, 0]))


def test_the_peer_refuses_bad_shapes_before_c_asserts(peer):
    with pytest.raises(ValueError, match="multiple of its block size 32"):
        peer.quantize_chunk("Q4_0", np.zeros((2, 48), f32))
    with pytest.raises(ValueError, match="2-D float32"):
        peer.quantize_chunk("Q4_0", np.zeros(64, f32))
    with pytest.raises(ValueError, match="2-D float32"):
        peer.quantize_chunk("Q4_0", np.zeros((1, 64)))
    with pytest.raises(ValueError, match="importance matrix"):
        peer.quantize_chunk("IQ2_XXS", np.zeros((1, 256), f32))
    with pytest.raises(ValueError, match="no case"):
        peer.quantize_chunk("Q8_1", np.zeros((1, 32), f32))
    with pytest.raises(ValueError, match="imatrix must be float32 of shape"):
        peer.quantize_chunk("IQ4_NL", np.zeros((1, 64), f32), imatrix=np.ones(32, f32))
    with pytest.raises(ValueError, match="take 36 bytes"):
        peer.to_float("Q4_0", np.zeros(18, np.uint8), 64)
    assert peer.traits("IQ4_NL")["type_name"] == "iq4_nl" and peer.type_id("Q4_0") == 2
    assert peer.type_id("Q8_0") == 8 and peer.type_id("NVFP4") == 40


# --- Q8_0 and ggml's Q4_0 x Q8_0 dot product -----------------------------------------------

def q8_0_rows(x):
    """The rows of ``x`` whose Q8_0 codes C defines: where 0 < amax < 127 / FLT_MAX, 1/d or
    127/amax overflows to inf, and C then converts inf or NaN to int8 (undefined behaviour)."""
    amax = np.abs(x.reshape(len(x), -1, 32)).max(axis=2)
    ok = ~((amax > 0) & (amax < 127 / np.finfo(f32).max)).any(axis=1)
    return x[ok]


@pytest.mark.parametrize("case", sorted(CASES))
def test_q8_0_reference_rounding_matches_ggml_quantize_chunk(peer, case):
    x = q8_0_rows(CASES[case]())
    theirs = peer.quantize_chunk("Q8_0", x)  # quantize_q8_0 -> quantize_row_q8_0_ref
    with np.errstate(over="ignore"):  # wide_range: d beyond float16, stored as inf on both sides
        ours = ggml_dot.q8_0_bytes(*ggml_dot.quantize_q8_0(x, "reference"))
    np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(g._quantize_raw(x, "Q8_0"), theirs)  # the GGUF block type, same bytes
    with np.errstate(all="ignore"):
        same_bits(g.dequantize(theirs, "Q8_0").reshape(-1), peer.to_float("Q8_0", theirs.reshape(-1), x.size))
    with np.errstate(all="ignore"):
        same_bits(ggml_dot.dequantize_q8_0(*ggml_dot.quantize_q8_0(x)).reshape(-1),
                  peer.to_float("Q8_0", theirs.reshape(-1), x.size))


def test_activations_use_the_cpu_backends_from_float_rounding(cpu):
    """What llama.cpp applies to activations before a Q4_0 dot product: the CPU type traits'
    from_float for Q4_0's vec_dot_type. On this x86-64 build that is the AVX2
    quantize_row_q8_0 (id = 127 / amax, ties to even): int4ref's rounding="avx2"."""
    assert cpu.cpu_traits("Q4_0")["vec_dot_type"] == "Q8_0"
    differs_from_reference = 0
    for case in sorted(CASES):
        for row in q8_0_rows(CASES[case]()):
            theirs = cpu.cpu_from_float("Q8_0", row)
            with np.errstate(over="ignore"):
                avx2 = ggml_dot.q8_0_bytes(*ggml_dot.quantize_q8_0(row, "avx2"))
                ref = ggml_dot.q8_0_bytes(*ggml_dot.quantize_q8_0(row, "reference"))
            np.testing.assert_array_equal(avx2, theirs, err_msg=case)
            differs_from_reference += int(not np.array_equal(ref, theirs))
    assert differs_from_reference > 0  # the inputs tell the two roundings apart


@pytest.mark.parametrize("n, rows, tokens", [(32, 16, 3), (96, 8, 2), (4096, 16, 2)])
def test_matmul_q4_0_q8_0_matches_ggml_vec_dot(cpu, n, rows, tokens):
    """Same integers per block, same float16 scales; only the float32 order differs: ggml's
    AVX2 kernel multiplies d_w * d_x first and accumulates 8 lanes with FMA, int4ref sums
    (sumi * d_w) * d_x over blocks in order. The bound: a few roundings of sum |terms|."""
    rng = _rng(8 + n)
    W = rng.standard_normal((rows, n)).astype(f32)
    X = (rng.standard_normal((tokens, n)) * rng.uniform(0.1, 10, (tokens, 1))).astype(f32)
    wq = g.quantize(W, "Q4_0")
    ours = ggml_dot.matmul_q4_0_q8_0(wq, X, rounding="avx2")
    theirs = np.array([[cpu.vec_dot("Q4_0", n, wq[o], cpu.cpu_from_float("Q8_0", X[t])) for o in range(rows)]
                       for t in range(tokens)], f32)
    # sum of |per-block terms|, in float64, from the same operands
    d_x, q_x = ggml_dot.quantize_q8_0(X, "avx2")
    w_abs = np.abs(g.dequantize(wq, "Q4_0").astype(np.float64))
    mag = np.abs(ggml_dot.dequantize_q8_0(d_x, q_x).astype(np.float64)) @ w_abs.T
    bound = (n // 32 + 8) * 2 * EPS * mag
    assert (np.abs(ours.astype(np.float64) - theirs) <= bound).all()
    assert np.abs(ours - theirs).max() <= 1e-4 * np.abs(theirs).max()
