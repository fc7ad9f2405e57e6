import numpy as np
import pytest
from scipy import integrate
from scipy.stats import norm

from int4ref import codebooks as cb


def test_nf4_table_shape_and_asymmetry():
    t = cb.NF4
    assert t.dtype == np.float32 and t.shape == (16,)
    assert np.all(np.diff(t) > 0)
    assert t[0] == -1 and t[15] == 1 and t[7] == 0
    assert (t > 0).sum() == 8 and (t < 0).sum() == 7  # not "8 negative, 9 positive"


def test_nf4_derivation_reproduces_bitsandbytes_table_exactly():
    assert cb.nf4_from_quantiles().tobytes() == cb.NF4.tobytes()


def test_nf4_float64_derivation_moves_a_code():
    derived = cb.nf4_from_quantiles(float32_linspace=False)
    changed = np.flatnonzero(derived != cb.NF4)
    assert changed.size >= 1 and 1 in changed
    assert np.max(np.abs(derived - cb.NF4)) < 1e-6  # a last-bits difference, not a different format


def test_nf4_offset_arithmetic():
    assert abs(cb.NF4_OFFSET - (1 - (1 / 32 + 1 / 30) / 2)) < 1e-7
    assert abs(norm.ppf(cb.NF4_OFFSET) - 1.8481) < 1e-4


def test_fp4_bnb_is_not_e2m1():
    smallest = lambda t: np.min(np.abs(t[t != 0]))  # noqa: E731
    assert smallest(cb.FP4_BNB) == np.float32(0.0625) / np.float32(12)
    assert smallest(cb.FP4_E2M1) == np.float32(0.5) / np.float32(6)
    assert set(np.abs(cb.FP4_BNB) * 12) == {0, 0.0625, 2, 3, 4, 6, 8, 12}
    assert set(np.abs(cb.FP4_E2M1) * 6) == {0, 0.5, 1, 1.5, 2, 3, 4, 6}
    # bit 3 is the sign in both
    assert np.all(cb.FP4_BNB[8:] == -cb.FP4_BNB[:8]) and np.all(cb.FP4_E2M1[8:] == -cb.FP4_E2M1[:8])
    assert not np.signbit(cb.FP4_BNB[8]) and np.signbit(cb.FP4_E2M1[8])


def test_dynamic_map():
    m = cb.dynamic_map()
    assert m.shape == (256,) and np.all(np.diff(m) > 0)
    assert m[127] == 0 and m[255] == 1
    assert m[0] == np.float32(-0.99296875)
    assert np.min(np.abs(m[m != 0])) < 1e-6
    with pytest.raises(ValueError, match="max_exponent_bits"):
        cb.dynamic_map(max_exponent_bits=9)


def test_uniform_map():
    assert cb.uniform_map(4).tolist() == np.linspace(-1, 1, 16).astype(np.float32).tolist()
    with pytest.raises(ValueError):
        cb.uniform_map(0)


def test_lloyd_max_optimality_conditions():
    levels, thresholds, mse = cb.lloyd_max_gaussian(16)
    assert np.all(np.diff(levels) > 0) and np.allclose(levels, -levels[::-1])
    assert np.allclose(thresholds, (levels[:-1] + levels[1:]) / 2)
    edges = np.r_[-np.inf, thresholds, np.inf]
    for i, c in enumerate(levels):  # each level is the mean of N(0,1) on its cell
        mass = norm.cdf(edges[i + 1]) - norm.cdf(edges[i])
        mean = integrate.quad(lambda x: x * norm.pdf(x), edges[i], edges[i + 1])[0] / mass
        assert abs(mean - c) < 1e-9
    quad_mse = sum(
        integrate.quad(lambda x, c=c: (x - c) ** 2 * norm.pdf(x), edges[i], edges[i + 1], epsabs=1e-14)[0]
        for i, c in enumerate(levels)
    )
    assert abs(quad_mse - mse) < 1e-10
    # Max (1960), 16 levels: outermost level 2.733
    assert abs(levels[-1] - 2.733) < 1e-3


def test_lloyd_max_beats_uniform_on_gaussian():
    _, _, lm = cb.lloyd_max_gaussian(16)
    x = norm.ppf(np.linspace(1e-6, 1 - 1e-6, 200001))
    for step in np.linspace(0.2, 0.5, 31):  # every uniform 16-level quantizer we try is worse
        q = np.clip(np.floor(x / step) + 0.5, -8 + 0.5, 7 + 0.5) * step
        assert np.mean((x - q) ** 2) > lm
