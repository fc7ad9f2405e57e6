"""AWQ (int4ref.awq): the scale search, the clipping search, folding the scales, and that it
beats round-to-nearest on the layer's output."""
import numpy as np
import pytest
from synthetic import correlated_layer, out_err

import int4ref as q
from int4ref.awq import AWQResult, _clip_search, awq_dequantize, awq_quantize, awq_scales

f32 = np.float32
FORMATS = ["int4_asym", "int4_sym", "nf4"]
GROUPS = [32, 64, 128, "row"]


def calib_mse(x, W, W_hat):
    x = x.astype(np.float64)
    return np.mean((x @ (W.astype(np.float64) - W_hat).T) ** 2)


# ---- the scale search ----------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("g", GROUPS)
def test_uniform_activations_pick_ratio_zero_and_equal_rtn(fmt, g):
    # Every channel has the same mean |x| (the same magnitudes, random signs), so every
    # ratio gives s = c**r / sqrt(c**r * c**r) = 1 exactly, every loss is the same, and the
    # first grid point (ratio 0) wins the tie, as in the reference (strict <).
    rng = np.random.default_rng(1)
    W = rng.standard_normal((32, 128)).astype(f32)
    magnitudes = rng.uniform(0.5, 3, (256, 1))
    x = (magnitudes * rng.choice([-1.0, 1.0], (256, 128))).astype(f32)
    result = awq_quantize(W, x, format=fmt, group_size=g, clip=False)
    assert result.ratio == 0 and np.all(result.scales == 1)
    assert np.all(result.losses == result.losses[0])
    rtn = q.quantize(W, fmt, group_size=g)
    np.testing.assert_array_equal(result.qt.codes, rtn.codes)
    np.testing.assert_array_equal(result.qt.scales, rtn.scales)
    np.testing.assert_array_equal(result.dequantize(), q.dequantize(rtn))


@pytest.mark.parametrize("fmt,g", [("int4_asym", 128), ("nf4", 32), ("int4_sym", "row")])
def test_losses_are_the_output_mse_of_each_grid_point(fmt, g):
    # recompute every grid point from the paper's recipe with int4ref.quantize: loss(r) =
    # mean((x W^T - x (Q(W s_r) / s_r)^T)^2); ratio 0 is exactly RTN; the chosen ratio is the argmin
    W, x, _ = correlated_layer(2, n_out=32, n_in=128)
    result = awq_quantize(W, x, format=fmt, group_size=g, clip=False)
    x_mean = np.abs(x.astype(np.float64)).mean(axis=0)
    for k in range(20):
        s = np.maximum(x_mean ** (k / 20), 1e-4)
        s = (s / np.sqrt(s.max() * s.min())).astype(f32)
        np.testing.assert_array_equal(awq_scales(x_mean, k / 20), s)
        W_hat = q.dequantize(q.quantize(W * s, fmt, group_size=g)) / s
        assert result.losses[k] == pytest.approx(calib_mse(x, W, W_hat), rel=1e-12)
    rtn = q.dequantize(q.quantize(W, fmt, group_size=g))
    assert result.losses[0] == pytest.approx(calib_mse(x, W, rtn), rel=1e-12)
    assert result.ratio == np.argmin(result.losses) / 20 > 0
    np.testing.assert_array_equal(result.scales, awq_scales(x_mean, result.ratio))
    assert result.scales.max() * result.scales.min() == pytest.approx(1, rel=1e-6)


def test_folding_the_scales_leaves_the_layer_output_unchanged():
    # deployed: (x / s) @ Q(W s)^T; equivalent weight: Q(W s) / s
    W, x, _ = correlated_layer(3, n_out=32, n_in=128)
    result = awq_quantize(W, x, group_size=64)
    assert isinstance(result, AWQResult) and result.scales.dtype == np.float32
    assert result.scales.shape == (128,) and result.qt.shape == W.shape
    deployed = (x / result.scales) @ q.dequantize(result.qt).T
    np.testing.assert_allclose(deployed, x @ result.dequantize().T, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(awq_dequantize(result.qt, result.scales), result.dequantize())
    exact = (x / result.scales) @ (W * result.scales).T  # scaling alone changes nothing
    np.testing.assert_allclose(exact, x @ W.T, rtol=1e-4, atol=1e-3)


# ---- the clipping search -------------------------------------------------------------------------

def group_errors(x, W_ref, W_hat, g):
    """mean over tokens of each (row, group)'s squared share of the output error."""
    t, n_in = x.shape
    d = (W_ref.astype(np.float64) - W_hat).reshape(W_ref.shape[0], n_in // g, g)
    xg = x.astype(np.float64).reshape(t, n_in // g, g)
    return np.mean(np.einsum("tgk,ogk->otg", xg, d) ** 2, axis=1)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("g", [32, "row"])
def test_clipping_never_hurts_a_group(fmt, g):
    # Student-t weights: a few large ones per group, so clipping pays. The clip grid starts at
    # shrink 1 (no clipping), so every (row, group) error on the scaled calibration data is at
    # most the unclipped one; the thresholds lie on the grid m * (1 - i/20), i < 10.
    rng = np.random.default_rng(4)
    W = rng.standard_t(3, (32, 128)).astype(f32)
    _, x, _ = correlated_layer(4, n_out=1, n_in=128, n_calib=256)
    clipped = awq_quantize(W, x, format=fmt, group_size=g)
    plain = awq_quantize(W, x, format=fmt, group_size=g, clip=False)
    s, gs = clipped.scales, 128 if g == "row" else g
    np.testing.assert_array_equal(s, plain.scales)
    W_s, x_s = W * s, x.astype(np.float64) / s  # what the search saw
    err_clipped = group_errors(x_s, W_s, q.dequantize(clipped.qt), gs)
    err_plain = group_errors(x_s, W_s, q.dequantize(plain.qt), gs)
    assert np.all(err_clipped <= err_plain * (1 + 1e-9))
    assert np.any(err_clipped < 0.9 * err_plain)
    org_max = np.abs(W_s.reshape(32, -1, gs)).max(axis=2)
    shrink = clipped.clip_max / org_max
    assert np.any(shrink < 1) and np.all(shrink > 0.5 - 1e-6) and np.all(shrink <= 1)
    np.testing.assert_allclose(shrink * 20, np.round(shrink * 20), atol=1e-4)
    # qt is the quantization of the clipped scaled weight, nothing else
    limit = np.repeat(clipped.clip_max, gs, axis=1)
    expected = q.quantize(np.clip(W_s, -limit, limit), fmt, group_size=g)
    np.testing.assert_array_equal(clipped.qt.codes, expected.codes)
    assert plain.clip_max is None


def test_clip_is_symmetric_even_with_a_zero_point():
    # The reference clips to +-m*(1 - i/20) and then fits min-max to what is left, so a group
    # whose negative side is small keeps it and only the large side is cut. Here the outlier
    # weight sees no input, so cutting it is free and helps the others: the search takes the
    # largest shrink on the grid, 1 - 9/20.
    W = np.array([[4.0, -0.5, 0.3, 0.2, -0.1, 0.4, 0.1, -0.2]], dtype=f32)
    x = np.random.default_rng(5).standard_normal((64, 8))
    x[:, 0] = 0
    clipped, clip_max = _clip_search(W, x, "int4_asym", 8, n_grid=20, max_shrink=0.5, scale_dtype=f32)
    assert clip_max[0, 0] == 4 * f32(0.55)
    np.testing.assert_array_equal(clipped, np.where(W > clip_max, clip_max, W))
    qt = q.quantize(clipped, "int4_asym", group_size=8)
    assert qt.scales[0] == pytest.approx((4 * 0.55 + 0.5) / 15)
    assert q.dequantize(qt)[0, 1] == pytest.approx(-0.5, abs=float(qt.scales[0]) / 2)


# ---- better than round-to-nearest ----------------------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("g", GROUPS)
def test_beats_rtn_on_layer_output(fmt, g):
    W, x, x_test = correlated_layer(9)
    rtn = q.dequantize(q.quantize(W, fmt, group_size=g))
    result = awq_quantize(W, x, format=fmt, group_size=g)
    # the scale search alone (losses are before clipping; losses[0] is RTN) already helps
    assert result.ratio > 0 and result.losses.min() < 0.8 * result.losses[0]
    W_hat = result.dequantize()
    assert out_err(x, W, W_hat) < 0.8 * out_err(x, W, rtn)  # calibration data
    assert out_err(x_test, W, W_hat) < 0.8 * out_err(x_test, W, rtn)  # held out


def test_result_plugs_into_int4ref():
    W, x, _ = correlated_layer(10, n_out=16, n_in=128)
    result = awq_quantize(W.astype(np.float16), x, group_size=32, scale_dtype=np.float16)
    assert result.qt.dtype == np.float16 and result.qt.scales.dtype == np.float16
    assert result.dequantize().dtype == np.float16
    assert result.qt.bits_per_weight() == q.quantize(W, "int4_asym", 32, np.float16).bits_per_weight()
    words = q.packing.pack_int32(result.qt.codes, "awq", axis=-1)  # AutoAWQ packs along a row
    np.testing.assert_array_equal(q.packing.unpack_int32(words, "awq", axis=-1), result.qt.codes)
    assert result.losses.shape == (20,) and result.clip_max.shape == (16, 4)


# ---- input validation ----------------------------------------------------------------------------

def test_input_errors():
    W, x, _ = correlated_layer(11, n_out=8, n_in=128, n_calib=32)
    with pytest.raises(ValueError, match="in_features=128"):
        awq_quantize(W, x[:, :64])
    with pytest.raises(ValueError, match="2-D"):
        awq_quantize(W[None], x)
    with pytest.raises(ValueError, match=r"n_samples, in_features"):
        awq_quantize(W, x[0])
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        awq_quantize(W, bad)
    with pytest.raises(ValueError, match="at least 2 calibration samples"):
        awq_quantize(W, x[:1])
    with pytest.raises(ValueError, match="does not divide in_features=128"):
        awq_quantize(W, x, group_size=96)
    with pytest.raises(ValueError, match="not supported here"):
        awq_quantize(W, x, format="int4_q4_0")
    with pytest.raises(ValueError, match="max_shrink"):
        awq_quantize(W, x, max_shrink=1.0)
    with pytest.raises(ValueError, match="n_grid"):
        awq_quantize(W, x, n_grid=0)
    with pytest.raises(TypeError, match="x has"):
        awq_quantize(W, x.astype(np.int64))
