"""int4ref.interop.ggml_dot: Q8_0 activations (byte-exact with gguf-py) and ggml's Q4_0 x Q8_0 product."""
import numpy as np
import pytest

from int4ref.interop import ggml_dot
from int4ref.interop import gguf as ggml

f32 = np.float32


def test_q8_0_bytes_match_gguf_py():
    gq = pytest.importorskip("gguf")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((7, 256)).astype(f32) * rng.uniform(0.01, 100, (7, 1)).astype(f32)
    x[0, :32] = 0                                    # an all-zero block: d = 0, codes 0
    x[1, :32] = np.arange(32, dtype=f32) - 15.5     # ties at .5 after scaling (amax/127 steps)
    x[2, :32] = np.linspace(-127, 127, 32, dtype=f32) * f32(0.5)
    x[3, 5] = -np.abs(x[3]).max() * 2                # a negative extreme
    x[4, :32] = np.r_[127, np.arange(31) - 15.5].astype(f32)   # d = 1: exact ties at every .5
    d, qs = ggml_dot.quantize_q8_0(x)
    assert qs[4, 0, 1:].tolist() == [-16, -15, -14, -13, -12, -11, -10, -9, -8, -7, -6, -5, -4, -3, -2, -1,
                                     1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]   # half away from zero
    ours = ggml_dot.q8_0_bytes(d, qs)
    theirs = gq.quants.quantize(x, gq.GGMLQuantizationType.Q8_0)
    assert ours.dtype == np.uint8 and ours.shape == theirs.shape == (7, 8 * ggml_dot.Q8_0_SIZE)
    np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(ggml_dot.dequantize_q8_0(*ggml_dot.quantize_q8_0(x)),
                                  gq.quants.dequantize(theirs, gq.GGMLQuantizationType.Q8_0))


def test_the_two_roundings_differ_only_at_ties_and_the_last_bit_of_id():
    # 127 / amax * x with x = amax * k / 254 lands on k / 2: ties for odd k
    amax = f32(1.0)
    x = np.zeros(32, f32)
    x[0] = amax
    x[1:6] = [f32(1 / 254), f32(3 / 254), f32(5 / 254), f32(-1 / 254), f32(0.25)]
    _, ref = ggml_dot.quantize_q8_0(x, "reference")
    _, avx = ggml_dot.quantize_q8_0(x, "avx2")
    assert ref[0, 0] == avx[0, 0] == 127
    scaled = x * (f32(127) / amax)
    ties = np.abs(scaled - np.trunc(scaled)) == 0.5
    assert ties.any()
    # away from zero vs to even, where the scaled value is an exact tie in both
    assert np.all(np.abs(ref[0][ties].astype(int)) >= np.abs(avx[0][ties].astype(int)))
    assert np.array_equal(ref[0][~ties & (np.abs(scaled - np.rint(scaled)) < 0.49)],
                          avx[0][~ties & (np.abs(scaled - np.rint(scaled)) < 0.49)])


def test_matmul_equals_the_integer_formula_and_approximates_float():
    rng = np.random.default_rng(1)
    W = rng.standard_normal((5, 128)).astype(f32)
    X = rng.standard_normal((3, 128)).astype(f32)
    wq = ggml.quantize(W, "Q4_0")
    y = ggml_dot.matmul_q4_0_q8_0(wq, X)
    assert y.dtype == f32 and y.shape == (3, 5)
    # the same sum in float64 from the dequantized operands: equal up to float32 accumulation
    d_x, q_x = ggml_dot.quantize_q8_0(X)
    exact = ggml_dot.dequantize_q8_0(d_x, q_x).astype(np.float64) @ ggml.dequantize(wq, "Q4_0").astype(np.float64).T
    np.testing.assert_allclose(y, exact, rtol=1e-5, atol=1e-5)
    # one entry by hand, literally as ggml's generic C loop computes it
    blocks = wq[2].reshape(-1, 18)
    acc = f32(0)
    for b in range(4):
        d_w = blocks[b, :2].copy().view("<f2")[0].astype(f32)
        qs = blocks[b, 2:]
        sumi = sum((int(qs[j] & 15) - 8) * int(q_x[1, b, j]) + (int(qs[j] >> 4) - 8) * int(q_x[1, b, j + 16])
                   for j in range(16))
        acc = f32(acc + f32(f32(sumi) * d_w) * d_x[1, b].astype(f32))
    assert y[1, 2] == acc
    # and close to the float product of the unquantized operands (4-bit weights dominate)
    rel = np.linalg.norm(y - X @ W.T) / np.linalg.norm(X @ W.T)
    assert rel < 0.2


@pytest.mark.parametrize("bad, match", [
    (np.zeros((2, 33), f32), "multiple of 32"),
    (np.array([np.nan] * 32, f32), "NaN"),
    (np.zeros((2, 32), np.int32), "integer"),
])
def test_bad_activations_are_refused(bad, match):
    with pytest.raises((ValueError, TypeError), match=match):
        ggml_dot.quantize_q8_0(bad)


def test_bad_weights_and_mismatched_shapes_are_refused():
    wq = ggml.quantize(np.ones((2, 64), f32), "Q4_0")
    with pytest.raises(ValueError, match="Q4_0 blocks"):
        ggml_dot.matmul_q4_0_q8_0(wq.astype(np.int16), np.ones((1, 64), f32))
    with pytest.raises(ValueError, match=r"shape \(tokens, 64\)"):
        ggml_dot.matmul_q4_0_q8_0(wq, np.ones((1, 96), f32))
    with pytest.raises(ValueError, match="rounding"):
        ggml_dot.quantize_q8_0(np.ones(32, f32), rounding="nearest")
