"""int4ref.interop.gguf against gguf-py (Q4_0, Q4_1 bytes; all dequantized values) and
against ggml's C quantize_iq4_nl (IQ4_NL bytes, which gguf-py cannot produce).

int4ref writes ggml's C bytes (tests/test_ggml_peer.py checks them against the compiled C);
gguf-py's Q4_0 / Q4_1 bytes equal them except for the sign bit of a zero scale, and
``assert_same_as_gguf_py`` allows exactly that. Float32 values are compared bit for bit.
"""
import hashlib
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from int4ref import parallel
from int4ref.interop import gguf as g
from int4ref.interop.gguf import _blocks as gguf_blocks

TYPES = ("Q4_0", "Q4_1", "IQ4_NL")
GGUF_QUANTIZES = ("Q4_0", "Q4_1")  # gguf-py raises NotImplementedError for IQ4_NL
HYPOTHESIS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def gguf():
    return pytest.importorskip("gguf")


def gguf_quantize(gguf, x, type_name):
    with np.errstate(all="ignore"):  # gguf warns on its own inf/NaN intermediates
        return gguf.quants.quantize(x, gguf.GGMLQuantizationType[type_name])


def gguf_dequantize(gguf, data, type_name):
    with np.errstate(all="ignore"):
        return gguf.quants.dequantize(data, gguf.GGMLQuantizationType[type_name])


def assert_same_floats(ours, theirs):
    """Equal shapes, float32, same NaN positions, identical bits everywhere else."""
    assert ours.dtype == theirs.dtype == np.float32
    assert ours.shape == theirs.shape
    nan = np.isnan(ours)
    np.testing.assert_array_equal(nan, np.isnan(theirs))
    np.testing.assert_array_equal(ours.view(np.uint32)[~nan], theirs.view(np.uint32)[~nan])


def quantize_checked(x, t, expected=None):
    """g.quantize(x, t), or None when it refuses a float16 scale overflow. Then ``expected``
    (gguf's bytes, or the reference's) must hold an inf scale: we refuse exactly where gguf
    would store inf. Otherwise the raw bytes equal the checked ones."""
    try:
        ours = g.quantize(x, t)
    except ValueError as exc:
        if "beyond the float16 range" not in str(exc):
            raise
        raw = g._quantize_raw(x, t) if expected is None else expected
        scales = raw.reshape(-1, g.TYPE_SIZE[t])[:, : 4 if t == "Q4_1" else 2].copy().view("<u2")
        assert ((scales & 0x7C00) == 0x7C00).any(), f"{t}: refused, but no scale is inf"
        return None
    np.testing.assert_array_equal(ours, g._quantize_raw(x, t))
    return ours


def scale_bits(q, t, field):
    """The float16 bit patterns of scale ``field`` ("d" or "m") of every block in ``q``."""
    offset = {"d": 0, "m": 2}[field]
    return q.reshape(-1, g.TYPE_SIZE[t])[:, offset:offset + 2].copy().view("<u2")[:, 0]


def assert_same_as_gguf_py(ours, theirs, t, x):
    """int4ref follows ggml's C; gguf-py differs from it in the sign bit of a zero scale only.

    Q4_0: C starts the signed maximum at +0.0, so a block of zeros stores d = +0/-8 = -0.0;
    gguf-py takes the block's first element, so such a block starting with -0.0 stores +0.0.
    These blocks must differ, and no other. Q4_1: C keeps the block's first zero as m (and d
    of a zero block is z - z = +0.0); gguf-py's m is whichever zero numpy's min returns (its
    SIMD order decides), so m or d may differ in sign where it is zero, and nowhere else.
    """
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype == np.uint8
    a, b = ours.reshape(-1, g.TYPE_SIZE[t]), theirs.reshape(-1, g.TYPE_SIZE[t])
    blocks = np.ascontiguousarray(x, dtype=np.float32).reshape(-1, 32)
    fields = ("d",) if t == "Q4_0" else ("d", "m")
    n_scale = 2 * len(fields)
    np.testing.assert_array_equal(a[:, n_scale:], b[:, n_scale:], err_msg=f"{t}: codes differ")
    for field in fields:
        mine, other = scale_bits(a, t, field), scale_bits(b, t, field)
        differ = mine != other
        assert np.all(mine[differ] ^ other[differ] == 0x8000), f"{t}: {field} differs beyond its sign bit"
        assert np.all(mine[differ] & 0x7FFF == 0), f"{t}: {field} differs in sign where it is not zero"
    if t == "Q4_0":
        zero_first_neg = (blocks == 0).all(axis=1) & np.signbit(blocks[:, 0])
        np.testing.assert_array_equal(scale_bits(a, t, "d") != scale_bits(b, t, "d"), zero_first_neg)
        assert np.all(scale_bits(a, t, "d")[(blocks == 0).all(axis=1)] == 0x8000)  # C: always -0.0
    else:
        zero_min = blocks.min(axis=1) == 0
        first_zero = blocks[np.arange(len(blocks)), (blocks == 0).argmax(axis=1)]
        np.testing.assert_array_equal(scale_bits(a, t, "m")[zero_min] >> 15, np.signbit(first_zero[zero_min]))
        assert np.all(scale_bits(a, t, "d")[(blocks == 0).all(axis=1)] == 0)  # C: +0.0


def check_parity(gguf, x):
    for t in TYPES:
        theirs = gguf_quantize(gguf, x, t) if t in GGUF_QUANTIZES else None
        ours = quantize_checked(x, t, theirs)
        if ours is None:
            continue
        assert ours.dtype == np.uint8
        if theirs is not None:
            assert_same_as_gguf_py(ours, theirs, t, x)
        assert_same_floats(g.dequantize(ours, t), gguf_dequantize(gguf, ours, t))


def check_against_references(x):
    """Fast kernels vs the short reference functions (no gguf needed)."""
    blocks = np.ascontiguousarray(x, dtype=np.float32).reshape(-1, 32)
    for t, qref, dref in (
        ("Q4_0", g.Q4_0.quantize_blocks, g.Q4_0.dequantize_blocks),
        ("Q4_1", g.Q4_1.quantize_blocks, g.Q4_1.dequantize_blocks),
    ):
        with np.errstate(all="ignore"):
            expected_q = qref(blocks)
        q = g._quantize_raw(x, t).reshape(-1, g.TYPE_SIZE[t])
        np.testing.assert_array_equal(q, expected_q, err_msg=t)
        quantize_checked(x, t, expected_q)
        with np.errstate(all="ignore"):
            expected = dref(q)
        assert_same_floats(g.dequantize(q, t), expected)
    q = g._quantize_raw(x, "IQ4_NL").reshape(-1, 18)
    quantize_checked(x, "IQ4_NL", q)
    with np.errstate(all="ignore"):
        expected = g.IQ4_NL.dequantize_blocks(q)
    assert_same_floats(g.dequantize(q, "IQ4_NL"), expected)


# --- hand-made blocks ------------------------------------------------------------------

def q4_0_tie_blocks():
    """x/d + 8.5 lands exactly on every integer 1..16 (d a power of two, either sign)."""
    half_steps = np.arange(1, 17) - 8.5  # -7.5 .. 7.5
    rows = []
    for e in (-20, -3, 0, 5):
        for sign in (1.0, -1.0):
            d = sign * 2.0**e
            rows.append(np.concatenate([[-8.0], half_steps, half_steps[::-1][:15]]) * d)
    return np.array(rows, dtype=np.float32)


def q4_1_tie_blocks():
    """(x - min)/d + 0.5 lands exactly on every integer 1..15 (d a power of two)."""
    rows = []
    for e in (-12, 0, 4):
        for low in (-8.0, 0.0, 3.0):
            steps = np.concatenate([[0.0, 15.0], np.arange(1, 16) - 0.5, np.arange(1, 16) - 0.5])
            rows.append((low + steps) * 2.0**e)
    return np.array(rows, dtype=np.float32)


def special_blocks():
    rows = [
        np.zeros(32),                           # all +0.0
        np.full(32, -0.0),                      # all -0.0
        np.tile([0.0, -0.0], 16),               # mixed signed zeros, + first
        np.tile([-0.0, 0.0], 16),               # mixed signed zeros, - first
        np.full(32, 3.25), np.full(32, -3.25),  # constant blocks
        np.full(32, 1e-30),                     # constant and tiny
    ]
    for pos in (0, 7, 16, 31):                  # a single nonzero, either sign
        for v in (2.5, -2.5, 1e-3):
            r = np.zeros(32)
            r[pos] = v
            rows.append(r)
    for first in (1.0, -1.0):                   # equal magnitudes of both signs: first one wins
        r = np.linspace(-0.5, 0.5, 32)
        r[3], r[20] = 4.0 * first, -4.0 * first
        rows.append(r)
    r = np.linspace(-1, 1, 32)
    r[5], r[9], r[30] = -6.0, 6.0, -6.0
    rows.append(r)
    r = np.linspace(0, 1, 32)                   # min exactly 0 with -0.0 around
    r[4], r[11] = -0.0, 0.0
    rows.append(r)
    rows.append(-np.linspace(0, 1, 32))         # max is -0.0 / 0.0
    rows.append(np.linspace(5, 6, 32))          # far from zero: m dominates Q4_1
    rows.append(np.linspace(-1e-40, 2e-40, 32))  # subnormal: 1/d overflows
    rows.append(np.linspace(-3e-38, 3e-38, 32))
    rows.append(np.linspace(-1e-7, 1e-7, 32))   # float16 scale is subnormal
    return np.concatenate([np.array(rows, dtype=np.float32), q4_0_tie_blocks(), q4_1_tie_blocks()])


def random_data(shape, scale, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * scale
    flat = x.reshape(-1)
    flat[rng.integers(0, flat.size, max(1, flat.size // 50))] *= 25  # outliers
    return x.astype(np.float32)


# --- parity with gguf-py -----------------------------------------------------------------

@pytest.mark.parametrize("shape", [(32,), (5, 64), (2, 3, 96), (33, 512)])
@pytest.mark.parametrize("scale", [1e-4, 1e-2, 1.0, 1e2, 1e4])
def test_parity_random(gguf, shape, scale):
    check_parity(gguf, random_data(shape, scale, seed=len(shape) * 1000 + int(np.log10(scale)) + 4))


def test_parity_special_blocks(gguf):
    x = special_blocks()
    check_parity(gguf, x)
    for row in x:  # also one block at a time (1-D input)
        check_parity(gguf, row)


def test_gguf_py_differs_only_in_the_sign_of_zero_scales(gguf):
    zeros = np.array([np.full(32, -0.0), np.zeros(32), np.tile([-0.0, 0.0], 16), np.tile([0.0, -0.0], 16)])
    x = np.concatenate([zeros, random_data((4, 32), 1.0, seed=20)]).astype(np.float32)
    ours, theirs = g.quantize(x, "Q4_0"), gguf_quantize(gguf, x, "Q4_0")
    # ggml's C stores d = -0.0 for every block of zeros; gguf-py +0.0 where the first zero is -0.0
    assert scale_bits(ours, "Q4_0", "d")[:4].tolist() == [0x8000] * 4
    assert scale_bits(theirs, "Q4_0", "d")[:4].tolist() == [0x0000, 0x8000, 0x0000, 0x8000]
    assert_same_as_gguf_py(ours, theirs, "Q4_0", x)
    fixed = theirs.copy()
    fixed[:4, :2] = ours[:4, :2]
    np.testing.assert_array_equal(ours, fixed)  # nothing else differs
    # Q4_1: blocks whose minimum is a zero, zeros of random signs; m must be the first zero
    rng = np.random.default_rng(21)
    x = np.where(rng.random((200, 32)) < 0.5, np.float32(-0.0), np.float32(0.0)).astype(np.float32)
    x[100:] = np.abs(random_data((100, 32), 1.0, seed=22)) * (rng.random((100, 32)) < 0.5)
    x[100:][x[100:] == 0] *= np.where(rng.random(int((x[100:] == 0).sum())) < 0.5, -1, 1).astype(np.float32)
    ours, theirs = g.quantize(x, "Q4_1"), gguf_quantize(gguf, x, "Q4_1")
    assert_same_as_gguf_py(ours, theirs, "Q4_1", x)
    assert_same_floats(np.abs(g.dequantize(ours, "Q4_1")), np.abs(gguf_dequantize(gguf, theirs, "Q4_1")))


def test_parity_other_input_dtypes_and_layouts(gguf):
    x = random_data((6, 128), 1.0, seed=3)
    check_parity(gguf, x.astype(np.float16))   # converted to float32 exactly
    check_parity(gguf, x.astype(np.float64) / 3)  # rounded to float32 first, as gguf does
    check_parity(gguf, np.asfortranarray(x))
    check_parity(gguf, random_data((64, 96), 1.0, seed=4)[::2, ::1])


def small_chunks(monkeypatch):
    """Work items of a few blocks (IQ4_NL: 5, the others: 7), so a small input spans many."""
    for t in g.BLOCK_TYPES.values():
        monkeypatch.setattr(t, "chunk_blocks", classmethod(lambda cls, n=5 if t is g.IQ4_NL else 7: n))


def test_parity_multi_chunk_threaded(gguf, monkeypatch):
    small_chunks(monkeypatch)
    monkeypatch.setattr(parallel, "THREADS", 2)  # the pool path even on one CPU
    x = np.concatenate([random_data((40, 32), 1.0, seed=5), special_blocks()])
    check_parity(gguf, x)
    check_against_references(x)
    x[50, 3] = np.nan  # found by a kernel on a worker thread
    for t in TYPES:
        with pytest.raises(ValueError, match=r"NaN at flat index 1603"):
            g.quantize(x, t)


finite_f32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
interesting = st.one_of(
    st.floats(-8, 8, width=32),
    st.sampled_from([0.0, -0.0, 0.5, -0.5, 1.0, -1.0, 7.5, -7.5, 8.0, -8.0, 1e-40, 65504.0]),
    finite_f32,
)


def block_arrays(max_blocks=3):
    return st.tuples(st.integers(1, 3), st.integers(1, max_blocks)).flatmap(
        lambda rb: hnp.arrays(np.float32, (rb[0], 32 * rb[1]), elements=interesting)
    )


@HYPOTHESIS
@given(x=block_arrays())
def test_parity_property(gguf, x):
    check_parity(gguf, x)


@HYPOTHESIS
@given(x=block_arrays(), scale_exp=st.integers(-30, 30))
def test_fast_matches_reference_property(x, scale_exp):
    with np.errstate(over="ignore"):
        x = x * np.float32(2.0**scale_exp)
    if np.isfinite(x).all():
        check_against_references(x)


def test_fast_matches_reference_special_blocks():
    check_against_references(special_blocks())
    check_against_references(random_data((300, 256), 1.0, seed=6))


def typed_block_bytes():
    return st.sampled_from(TYPES).flatmap(lambda t: st.tuples(st.just(t), hnp.arrays(
        np.uint8, st.tuples(st.integers(1, 3), st.integers(1, 3).map(lambda b: b * g.TYPE_SIZE[t])))))


@HYPOTHESIS
@given(case=typed_block_bytes())
def test_dequantize_any_bytes_matches_gguf(gguf, case):
    """Arbitrary bytes, including float16 scales that are inf, NaN or subnormal."""
    type_name, raw = case
    assert_same_floats(g.dequantize(raw, type_name), gguf_dequantize(gguf, raw, type_name))


def test_exact_expected_bytes():
    q = g.quantize(np.zeros(32, np.float32), "Q4_0")
    assert q.tobytes() == b"\x00\x80" + b"\x88" * 16  # d = 0 / -8 = -0.0, every code 8
    q = g.quantize(np.full(32, -0.0, np.float32), "Q4_0")
    assert q.tobytes() == b"\x00\x80" + b"\x88" * 16  # ggml's C: the max starts at +0.0, so -0.0 too
    assert g.quantize(np.zeros(32, np.float32), "Q4_1").tobytes() == bytes(20)
    # Q4_1: m is the block's first zero, d = +0.0 for a block of zeros
    assert g.quantize(np.full(32, -0.0, np.float32), "Q4_1").tobytes() == b"\x00\x00\x00\x80" + bytes(16)
    assert g.quantize(np.tile(np.float32([0.0, -0.0]), 16), "Q4_1").tobytes() == bytes(20)
    assert g.quantize(np.tile(np.float32([-0.0, 0.0]), 16), "Q4_1").tobytes() == b"\x00\x00\x00\x80" + bytes(16)
    assert g.quantize(np.r_[np.float32([-0.0, 0.0]), np.ones(30, np.float32)], "Q4_1")[2:4].tobytes() == b"\x00\x80"
    assert g.quantize(np.zeros(32, np.float32), "IQ4_NL").tobytes() == b"\x00\x00" + b"\x88" * 16
    # Q4_0 ties: x/d + 8.5 == k gives code k (ties go to the larger code); 16 is clamped to 15
    ties = q4_0_tie_blocks()
    codes = gguf_blocks.codes_reference(g.quantize(ties, "Q4_0"), 2)
    expected = np.concatenate([[0], np.arange(1, 17), np.arange(16, 1, -1)])
    np.testing.assert_array_equal(codes, np.broadcast_to(np.minimum(expected, 15), codes.shape))
    codes = gguf_blocks.codes_reference(g.quantize(q4_1_tie_blocks(), "Q4_1"), 4)
    expected = np.concatenate([[0, 15], np.arange(1, 16), np.arange(1, 16)])
    np.testing.assert_array_equal(codes, np.broadcast_to(expected, codes.shape))


def test_scale_is_float16_of_float32_scale():
    """Codes come from the float32 scale; only the stored scale is rounded to float16."""
    x = random_data((200, 32), 1.0, seed=7)
    q = g.quantize(x, "Q4_0")
    vmax = x[np.arange(len(x)), np.abs(x).argmax(axis=1)]
    d32 = vmax / np.float32(-8)
    np.testing.assert_array_equal(q[:, :2].copy().view("<f2")[:, 0], d32.astype(np.float16))
    codes = gguf_blocks.codes_reference(q, 2)
    np.testing.assert_array_equal(codes, np.minimum(np.trunc(x / d32[:, None] + np.float32(8.5)), 15))


# --- IQ4_NL quantization: ggml's algorithm ------------------------------------------------

def iq4_nl_block_scalar(block):
    """ggml quantize_row_iq4_nl_impl for one block (ntry = 7, no importance weights),
    transcribed loop by loop with float32 scalars."""
    f = np.float32
    values = [int(v) for v in g.IQ4_NL_VALUES]

    def best_index(x):  # ggml's best_index_int8, comparisons as written (NaN ends at 15)
        if x <= values[0]:
            return 0
        if x >= values[-1]:
            return 15
        lo, hi = 0, 15
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if x < values[mid]:
                hi = mid
            else:
                lo = mid
        return hi - 1 if x - f(values[hi - 1]) < f(values[hi]) - x else hi

    x = [f(v) for v in block]
    weight = [v * v for v in x]
    amax = vmax = f(0)
    for v in x:
        if abs(v) > amax:
            amax, vmax = abs(v), v

    def fit(inv):
        sum_qx = sum_q2 = f(0)
        for v, w in zip(x, weight):
            q = f(values[best_index(inv * v)])
            sum_qx += w * q * v
            sum_q2 += w * q * q
        return sum_qx, sum_q2

    d = f(0)
    if amax >= f(1e-15):
        sum_qx, sum_q2 = fit(f(1) / (-vmax / f(values[0])))
        d = sum_qx / sum_q2 if sum_q2 > 0 else f(0)
        best = d * sum_qx
        for itry in range(-7, 8):
            sum_qx, sum_q2 = fit(f(itry + values[0]) / vmax)
            if sum_q2 > 0 and sum_qx * sum_qx > best * sum_q2:
                d = sum_qx / sum_q2
                best = d * sum_qx
    inv = f(1) / d if d != 0 else f(0)
    codes = [best_index(inv * v) for v in x]
    packed = [codes[j] | (codes[j + 16] << 4) for j in range(16)]
    return np.concatenate([np.array([d], "<f2").view(np.uint8), np.array(packed, np.uint8)])


def iq4_nl_scalar(x):
    with np.errstate(all="ignore"):
        return np.stack([iq4_nl_block_scalar(b) for b in np.asarray(x, np.float32).reshape(-1, 32)])


def test_iq4_nl_matches_scalar_transcription():
    x = np.concatenate([special_blocks()[::2], random_data((20, 32), 0.05, seed=8)])
    np.testing.assert_array_equal(g._quantize_raw(x, "IQ4_NL"), iq4_nl_scalar(x))


@HYPOTHESIS
@given(x=block_arrays(max_blocks=1))
def test_iq4_nl_matches_scalar_transcription_property(x):
    np.testing.assert_array_equal(g._quantize_raw(x, "IQ4_NL").reshape(-1, 18), iq4_nl_scalar(x))


def golden_input():
    """64 blocks built with exact integer arithmetic, so every platform gets the same floats."""
    k = np.arange(64 * 32, dtype=np.int64)
    x = ((k * 2654435761 % 2**32 % 20001 - 10000) / 1000.0).astype(np.float32).reshape(64, 32)
    x[1] = 0.0
    x[2, ::2] = -0.0
    x[3] *= np.float32(2.0**-45)  # tiny but above ggml's 1e-15 threshold
    x[4] *= np.float32(2.0**-60)  # below it: d = 0
    x[5] *= np.float32(2.0**30)
    x[6] = np.arange(32) % 9 - 4  # small integers: many exact ties
    x[7] = np.where(np.arange(32) % 2, 3.0, -3.0)
    x[8, 10] = 40.0  # an outlier
    return x


# ggml-org/llama.cpp ggml-quants.c quantize_iq4_nl(src, dst, 64, 32, NULL), compiled with
# gcc -O2 -ffp-contract=off, on golden_input(); checked against 375k random blocks too.
IQ4_NL_GOLDEN_SHA256 = "976b4a1b83ff8fff2604645cb4a86ca5bfa0412abf4616a133e16842c7c8d7c5"
IQ4_NL_GOLDEN_FIRST_BLOCK = "072dd042ebfe85be20c9ec63fd1fa6df31db"


def test_iq4_nl_matches_ggml_c_golden():
    q = g._quantize_raw(golden_input(), "IQ4_NL")  # block 5 has an inf scale (x 2**30), as in ggml
    with pytest.raises(ValueError, match="block 5 .* beyond the float16 range"):
        g.quantize(golden_input(), "IQ4_NL")
    assert q[0].tobytes().hex() == IQ4_NL_GOLDEN_FIRST_BLOCK
    assert hashlib.sha256(q.tobytes()).hexdigest() == IQ4_NL_GOLDEN_SHA256


@pytest.mark.parametrize("n", [1, 2, 5])
def test_sum_in_order_is_sequential(n):
    """IQ4_NL's sums must add left to right like the C loop (pairwise would round differently)."""
    a = np.ones((32, n), np.float32)
    a[0] = 1e8  # sequentially every +1 is lost to rounding; pairwise they would add up to 31
    if n > 1:
        a[:, 1] = np.linspace(-3, 7, 32, dtype=np.float32) ** 3
    expected = np.zeros(n, np.float32)
    for row in a:
        expected += row
    np.testing.assert_array_equal(gguf_blocks.sum_in_order(a, np.empty(n, np.float32)), expected)
    assert gguf_blocks.sum_in_order(a, np.empty(n, np.float32))[0] == np.float32(1e8)


def test_iq4_nl_constant_block():
    """Both scale orientations fit a constant block exactly: float32 rounding of the
    left-to-right sums decides, so one block must not be summed pairwise."""
    for v in (7.0, -7.0, 0.3, 1e-3):
        x = np.full((1, 32), v, np.float32)
        np.testing.assert_array_equal(g._quantize_raw(x, "IQ4_NL"), iq4_nl_scalar(x))
        np.testing.assert_array_equal(g.quantize(np.repeat(x, 3, axis=0), "IQ4_NL"), np.repeat(iq4_nl_scalar(x), 3, 0))


# --- round-trip error bounds -------------------------------------------------------------

@pytest.mark.parametrize("scale", [1e-3, 1.0, 300.0])
def test_q4_0_error_bound(scale):
    """With d = v/-8 (v the signed extreme) and code c = trunc(x/d + 8.5), x/d lies within
    half a step of c - 8, so |x - d16 (c - 8)| <= |d|/2 + 8|d - d16| (d16 = stored scale).
    The exception is the other extreme: x/d in [7.5, 8] gives c = 16, clamped to 15, an
    error of up to one full step |d|. A little slack covers float32 rounding of x/d."""
    x = np.concatenate([random_data((500, 32), scale, seed=9), q4_0_tie_blocks()])
    x[:500:7, 11] = -x[:500:7][np.arange(72), np.abs(x[:500:7]).argmax(axis=1)]  # the other extreme
    q = g.quantize(x, "Q4_0")
    err = np.abs(g.dequantize(q, "Q4_0").astype(np.float64) - x)
    vmax = x[np.arange(len(x)), np.abs(x).argmax(axis=1)].astype(np.float64)
    d = np.broadcast_to(np.abs(vmax / 8)[:, None], x.shape)
    fp16_error = np.broadcast_to(8 * np.abs(np.abs(q[:, :2].copy().view("<f2").astype(np.float64)) - d[:, :1]), x.shape)
    clamped = x / (vmax[:, None] / -8) >= 7.5
    bound = np.where(clamped, d, d / 2) + fp16_error + 1e-5 * d
    assert (err <= bound).all()
    assert (err[clamped] >= 0.99 * d[clamped] - fp16_error[clamped]).any()  # the clamp costs a full step
    ties = slice(500, None)  # power-of-two d: every element but the extreme is exactly half a step off
    np.testing.assert_array_equal(err[ties, 1:], d[ties, 1:] / 2)


@pytest.mark.parametrize("scale", [1e-3, 1.0, 300.0])
def test_q4_1_error_bound(scale):
    """c = trunc((x - m)/d + 0.5) never needs clamping, so |x - (d16 c + m16)| is at most
    d/2 plus the float16 rounding of both: 15|d - d16| + |m - m16|."""
    x = np.concatenate([random_data((500, 32), scale, seed=10), q4_1_tie_blocks() * np.float32(scale),
                        random_data((50, 32), scale, seed=11) + np.float32(5 * scale)])
    q = g.quantize(x, "Q4_1")
    err = np.abs(g.dequantize(q, "Q4_1").astype(np.float64) - x)
    lo, hi = x.min(axis=1).astype(np.float64), x.max(axis=1).astype(np.float64)
    d = ((hi - lo) / 15)[:, None]
    d16 = q[:, 0:2].copy().view("<f2").astype(np.float64)
    m16 = q[:, 2:4].copy().view("<f2").astype(np.float64)
    bound = d / 2 + 15 * np.abs(d - d16) + np.abs(lo[:, None] - m16) + 1e-5 * d
    assert (err <= bound).all()


# --- errors ------------------------------------------------------------------------------

def test_error_unknown_type():
    x = np.zeros(32, np.float32)
    with pytest.raises(ValueError, match=r"unknown GGUF type 'Q5_0'.*Q4_0, Q4_1, IQ4_NL"):
        g.quantize(x, "Q5_0")
    with pytest.raises(ValueError, match=r"unknown GGUF type 'F32'"):
        g.dequantize(np.zeros(18, np.uint8), "F32")
    with pytest.raises(TypeError, match="type_name must be a string"):
        g.quantize(x, 2)


def test_type_name_forms(gguf):
    x = random_data((2, 64), 1.0, seed=12)
    expected = g.quantize(x, "Q4_0")
    np.testing.assert_array_equal(g.quantize(x, "q4_0"), expected)
    np.testing.assert_array_equal(g.quantize(x.tolist(), "Q4_0"), expected)  # nested lists too
    np.testing.assert_array_equal(g.quantize(x, gguf.GGMLQuantizationType.Q4_0), expected)


@pytest.mark.parametrize("n", [1, 31, 33, 48, 100])
def test_error_row_not_multiple_of_32(n):
    with pytest.raises(ValueError, match=rf"last dimension {n}, not a multiple of 32.*gguf requires"):
        g.quantize(np.ones((2, n), np.float32), "Q4_0")


@pytest.mark.parametrize("bad, kind, match", [
    (np.ones((2, 32), np.int32), TypeError, "integer"),
    (np.ones((2, 32), bool), TypeError, "integer/bool"),
    (np.ones((2, 32), np.complex64), TypeError, "complex"),
    (np.ones((2, 32), object), TypeError, "dtype object"),
    (np.zeros((0, 32), np.float32), ValueError, "empty"),
    (np.float32(1.0), ValueError, "scalar"),
])
def test_error_bad_input(bad, kind, match):
    for t in TYPES:
        with pytest.raises(kind, match=match):
            g.quantize(bad, t)


@pytest.mark.parametrize("shape", [(1, 32), (64, 4096)])  # small: checked up front; large: by the kernels
@pytest.mark.parametrize("value, word", [(np.nan, "NaN"), (np.inf, "Inf"), (-np.inf, "Inf")])
@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64])
def test_error_non_finite(shape, value, word, dtype):
    x = np.ones(shape, dtype)
    x.flat[x.size // 2 + 3] = value
    for t in TYPES:
        with pytest.raises(ValueError, match=rf"non-finite.*{word} at flat index {x.size // 2 + 3}"):
            g.quantize(x, t)


def test_error_float64_beyond_float32():
    x = np.ones((4, 64))
    x[2, 7] = 1e39
    for t in TYPES:
        with pytest.raises(ValueError, match="beyond the float32 range"):
            g.quantize(x, t)


def test_error_dequantize_input():
    with pytest.raises(TypeError, match="data has dtype int8; expected uint8"):
        g.dequantize(np.zeros(18, np.int8), "Q4_0")
    with pytest.raises(TypeError, match="data has dtype float32; expected uint8"):
        g.dequantize(np.zeros(32, np.float32), "Q4_0")
    with pytest.raises(ValueError, match="last dimension 18 bytes, not a multiple of the Q4_1 block size of 20"):
        g.dequantize(np.zeros((3, 18), np.uint8), "Q4_1")
    with pytest.raises(ValueError, match="empty"):
        g.dequantize(np.zeros((0, 18), np.uint8), "Q4_0")


def test_inputs_are_not_modified():
    x = random_data((3, 64), 1.0, seed=13)
    x_copy = x.copy()
    for t in TYPES:
        q = g.quantize(x, t)
        q_copy = q.copy()
        g.dequantize(q, t)
        g.dequantize(q[0], t)  # a single row: views that need no copy
        np.testing.assert_array_equal(q, q_copy)
    np.testing.assert_array_equal(x, x_copy)


# --- .gguf files -------------------------------------------------------------------------

def test_gguf_file_round_trip(gguf, tmp_path):
    x = random_data((3, 4, 96), 1.0, seed=14)
    w = random_data((64, 32), 0.1, seed=15)
    tensors = {
        "blk.0.q4_0": (g.quantize(x, "Q4_0"), "Q4_0", x.shape),
        "blk.0.q4_1": (g.quantize(w, "Q4_1"), "Q4_1", w.shape),
        "blk.0.iq4_nl": (g.quantize(x[0, 0], "IQ4_NL"), "IQ4_NL", (96,)),
        "norm.f32": (x[0], "F32", x[0].shape),
        "norm.f16": (w.astype(np.float16), "F16", w.shape),
    }
    path = tmp_path / "model.gguf"
    g.write_gguf(path, tensors)
    back = g.read_gguf(path)
    assert list(back) == list(tensors)
    for name, (data, type_name, shape) in tensors.items():
        got, got_type, got_shape = back[name]
        assert got_type == type_name and got_shape == shape
        assert got.dtype == data.dtype and got.shape == data.shape
        np.testing.assert_array_equal(got, data)
        if type_name in TYPES:
            assert_same_floats(g.dequantize(got, type_name), g.dequantize(data, type_name))
            assert_same_floats(g.dequantize(got, type_name), gguf_dequantize(gguf, got, type_name))
    # gguf's own reader sees ggml's dimension order (innermost first) and the right types
    reader = gguf.GGUFReader(str(path))
    info = {t.name: (t.tensor_type.name, t.shape.tolist()) for t in reader.tensors}
    assert info["blk.0.q4_0"] == ("Q4_0", [96, 4, 3])
    assert info["blk.0.iq4_nl"] == ("IQ4_NL", [96])


def test_write_gguf_rejects_bad_tensors(gguf, tmp_path):
    q = g.quantize(np.ones((2, 64), np.float32), "Q4_0")
    with pytest.raises(ValueError, match=r"must be uint8 with shape \(2, 36\)"):
        g.write_gguf(tmp_path / "a.gguf", {"t": (q[:, :18], "Q4_0", (2, 64))})
    with pytest.raises(ValueError, match="not a multiple of 32"):
        g.write_gguf(tmp_path / "a.gguf", {"t": (q, "Q4_0", (2, 72))})
    with pytest.raises(ValueError, match="unknown GGUF type"):
        g.write_gguf(tmp_path / "a.gguf", {"t": (q, "Q5_0", (2, 64))})
    with pytest.raises(TypeError, match=r"\(data, type_name, shape\)"):
        g.write_gguf(tmp_path / "a.gguf", {"t": q})
    with pytest.raises(ValueError, match="F32 data must be float32 of shape"):
        g.write_gguf(tmp_path / "a.gguf", {"t": (np.ones(4), "F32", (4,))})


def test_gguf_io_without_gguf_installed(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "gguf", None)  # makes "import gguf" raise ImportError
    with pytest.raises(ImportError, match="pip install gguf"):
        g.write_gguf(tmp_path / "a.gguf", {})
    with pytest.raises(ImportError, match="pip install gguf"):
        g.read_gguf(tmp_path / "a.gguf")


def test_module_does_not_import_gguf():
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(g))
    top_level = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = [a.name for n in top_level for a in n.names] + [n.module or "" for n in top_level
                                                            if isinstance(n, ast.ImportFrom)]
    assert not any(name.split(".")[0] == "gguf" for name in names)


def test_constants():
    assert g.BLOCK_SIZE == 32
    assert {"Q4_0": 18, "Q4_1": 20, "IQ4_NL": 18, "Q8_0": 34}.items() <= g.TYPE_SIZE.items()
    assert g.IQ4_NL_VALUES.dtype == np.int8
    assert g.IQ4_NL_VALUES.tolist() == [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113]


def test_constants_match_gguf(gguf):
    for t, bt in g.BLOCK_TYPES.items():
        assert gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[t]] == (bt.block_size, bt.type_size)
    assert list(gguf.quants.IQ4_NL.kvalues) == g.IQ4_NL_VALUES.tolist()


@pytest.mark.parametrize(
    "row, types",
    [
        (np.linspace(-1e6, 1e6, 32), ("Q4_0", "Q4_1")),   # d beyond float16
        (np.linspace(-70000, 70000, 32), ("Q4_1",)),      # Q4_1's m beyond float16
        (np.linspace(-1e7, 1e7, 32), ("IQ4_NL",)),        # d ~ max / 127 beyond float16
    ],
)
def test_float16_scale_overflow_is_an_error(row, types):
    x = np.concatenate([np.linspace(-1, 1, 32), row]).astype(np.float32)
    for t in types:
        with pytest.raises(ValueError, match=r"block 1 .* beyond the float16 range"):
            g.quantize(x, t)


# --- one class per block type ---------------------------------------------------------------

@pytest.mark.parametrize("name", TYPES)
def test_block_type_class_reference_equals_fast(name, monkeypatch):
    """Each BlockType's literal reference and its chunked fast kernels give the same bytes and
    values (several chunks on the thread pool), and its layout is what gguf-py says."""
    bt = g.block_type(name)
    assert bt is g.BLOCK_TYPES[name] and bt.name == name and g.TYPE_SIZE[name] == bt.type_size
    assert bt.block_dtype.itemsize == bt.type_size and bt.block_size == g.BLOCK_SIZE
    assert bt.bits_per_weight() == {"Q4_0": 4.5, "Q4_1": 5.0, "IQ4_NL": 4.5}[name]
    small_chunks(monkeypatch)
    x = np.concatenate([special_blocks(), random_data((40, 32), 3.0, seed=11)])
    fast = g._quantize_raw(x, name).reshape(-1, bt.type_size)
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(bt.quantize_blocks(x.reshape(-1, 32)), fast)
        assert_same_floats(g.dequantize(fast, name).reshape(-1, 32), bt.dequantize_blocks(fast))
    if bt.group_format is not None:  # the same per-group rule in int4ref.formats, at float32 scales
        import int4ref
        qt = int4ref.quantize(random_data((8, 32), 1.0, seed=12), bt.group_format, 32)
        ref = bt.quantize_blocks(random_data((8, 32), 1.0, seed=12))
        np.testing.assert_array_equal(gguf_blocks.codes_reference(ref, 2), qt.codes)


def test_block_type_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown GGUF type"):
        g.block_type("Q5_K")
