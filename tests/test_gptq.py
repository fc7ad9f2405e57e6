"""GPTQ (int4ref.gptq): exact special cases, the algebra behind the Cholesky trick, lazy
batching, act-order, and that it beats round-to-nearest on the layer's output."""
import numpy as np
import pytest
from synthetic import correlated_layer, out_err

import int4ref as q
from int4ref.gptq import GPTQResult, gptq_dequantize, gptq_hessian, gptq_quantize

f32 = np.float32
FORMATS = ["int4_asym", "int4_gptq_sym", "int4_sym", "nf4"]
GROUPS = [32, 64, 128, "row"]


def same_tensor(a, b):
    """Two QuantizedTensors hold the same codes, scales and zero-points, bit for bit."""
    assert a.format == b.format and a.shape == b.shape and a.group_size == b.group_size
    np.testing.assert_array_equal(a.codes, b.codes)
    np.testing.assert_array_equal(a.scales, b.scales)
    if a.zeros is None:
        assert b.zeros is None
    else:
        np.testing.assert_array_equal(a.zeros, b.zeros)


def damped(H, damp=0.01):
    """The Hessian GPTQ works with: dead columns get 1 on the diagonal, then damping."""
    H = H.copy()
    dead = np.diag(H) == 0
    H[dead, dead] = 1
    H[np.diag_indices(len(H))] += damp * np.mean(np.diag(H))
    return H


# ---- exact special cases ---------------------------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("g", GROUPS)
def test_diagonal_hessian_is_exactly_rtn(fmt, g):
    # With a diagonal H the Cholesky factor U of H^-1 is diagonal with exact zeros off the
    # diagonal, so every error-feedback update adds err * 0 = 0: no weight moves, and the
    # quantizer sees the very float32 values int4ref.quantize sees. Bit-exact equality.
    rng = np.random.default_rng(1)
    W = rng.standard_normal((24, 128)).astype(f32)
    rtn = q.quantize(W, fmt, group_size=g)
    H = np.diag(rng.uniform(0.1, 10, 128))
    same_tensor(gptq_quantize(W, hessian=H, format=fmt, group_size=g).qt, rtn)
    # the same with activations: one nonzero channel per row makes X^T X exactly diagonal
    x = np.zeros((512, 128), dtype=f32)
    x[np.arange(512), np.arange(512) % 128] = rng.standard_normal(512)
    assert np.count_nonzero(gptq_hessian(x) - np.diag(np.diag(gptq_hessian(x)))) == 0
    result = gptq_quantize(W, x, format=fmt, group_size=g)
    assert result.perm is None
    same_tensor(result.qt, rtn)


def test_diagonal_hessian_act_order_per_row_is_rtn():
    # act-order only reorders columns; with one scale per row the permutation is undone
    # exactly (perm is None) and the result is still RTN
    rng = np.random.default_rng(2)
    W = rng.standard_normal((16, 64)).astype(f32)
    result = gptq_quantize(W, hessian=np.diag(rng.uniform(0.1, 10, 64)), format="nf4", group_size="row",
                           act_order=True)
    assert result.perm is None
    same_tensor(result.qt, q.quantize(W, "nf4", group_size="row"))


def sequential_obs(W, H, fmt, g):
    """GPTQ written the slow, obvious way (OBS, paper eq. 2-3): quantize column j with its
    group's parameters, then move the not-yet-quantized columns F by the least-squares
    optimal correction (w_j - q_j) * H[F, F]^-1 H[F, j]. No inverse Cholesky factor, no lazy
    blocks: none of int4ref.gptq's machinery, only int4ref.quantize to fit the groups."""
    W = W.astype(np.float64).copy()
    n_in = W.shape[1]
    out = np.empty_like(W)
    for j in range(n_in):
        if j == 0 or (g != "row" and j % g == 0):  # fit the group on the current weights
            group = q.quantize(W[:, j : n_in if g == "row" else j + g].astype(f32), fmt, group_size="row")
        out[:, j] = value_with_scale(W[:, j], group, fmt)
        rest = slice(j + 1, n_in)
        W[:, rest] += np.outer(W[:, j] - out[:, j], np.linalg.solve(H[rest, rest], H[rest, j]))
    return out


def value_with_scale(w, group, fmt):
    """The value the format gives w (one per row) with that row's group scale (float64)."""
    s = group.scales.astype(np.float64)
    if fmt in ("int4_asym", "int4_gptq_sym"):
        z = group.zeros.astype(np.float64)
        return (np.clip(np.rint(np.divide(w, s, out=np.zeros_like(s), where=s != 0)) + z, 0, 15) - z) * s
    if fmt == "int4_sym":
        return np.clip(np.rint(np.divide(w, s, out=np.zeros_like(s), where=s != 0)), -7, 7) * s
    table = q.FORMATS[fmt].table.astype(np.float64)
    v = np.clip(w / np.maximum(s, 1e-38), -1, 1)
    return table[np.argmin(np.abs(v[:, None] - table[None, :]), axis=1)] * s


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("g", [16, "row"])
def test_equals_sequential_optimal_compensation(fmt, g):
    # The analytic answer: GPTQ's update W[:, j:] -= err * U[j, j:] with U = chol(H^-1)
    # upper is exactly OBS's optimal compensation of the remaining columns. Compared here
    # with an implementation of that formula that shares no code with int4ref.gptq.
    W, x, _ = correlated_layer(3, n_out=12, n_in=48, n_calib=256)
    H = damped(gptq_hessian(x))
    expected = sequential_obs(W, H, fmt, g)
    result = gptq_quantize(W, x, format=fmt, group_size=g, group_fit="updated", block_size=128)
    np.testing.assert_allclose(result.dequantize(), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("fmt,g,act_order", [("int4_asym", 32, False), ("nf4", "row", True), ("int4_sym", 64, True)])
def test_reported_loss_is_the_quadratic_error(fmt, g, act_order):
    # OBS's increments (w - q)^2 / (2 U_jj^2) add up to the final quadratic error
    # 1/2 tr((W - Q) H (W - Q)^T) on the damped Hessian: an exact identity, whatever the
    # quantizer picked. A wrong diagonal, damping or update breaks it. Input channel 5 is
    # dead (always 0): its weights count as 0 and H[5, 5] as 1.
    W, x, _ = correlated_layer(4, n_out=16, n_in=128, n_calib=256)
    x[:, 5] = 0
    result = gptq_quantize(W, x, format=fmt, group_size=g, act_order=act_order)
    W[:, 5] = 0
    delta = W.astype(np.float64) - result.dequantize(np.float64)
    quadratic = 0.5 * np.einsum("oi,ij,oj->", delta, damped(gptq_hessian(x)), delta)
    assert result.loss == pytest.approx(quadratic, rel=1e-9)


def test_dead_input_channel():
    # an input channel that is always 0: H[i, i] = 0, the column is zeroed (then its
    # quantized value is exactly 0 in every format) and the rest is unaffected by it
    W, x, _ = correlated_layer(5, n_out=16, n_in=64, n_calib=256)
    x[:, 7] = 0
    for fmt in FORMATS:
        W_hat = gptq_quantize(W, x, format=fmt, group_size=32).dequantize()
        assert np.all(W_hat[:, 7] == 0) and np.isfinite(W_hat).all()


# ---- lazy batching -------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("g", [32, 128, "row"])
def test_lazy_blocks_change_nothing_but_rounding(fmt, g):
    # block_size=1 applies every update to the whole matrix at once (no laziness); 128 defers
    # updates to later blocks. Same codes and scales; weights agree to float rounding.
    W, x, _ = correlated_layer(6)
    eager = gptq_quantize(W, x, format=fmt, group_size=g, block_size=1, group_fit="updated")
    lazy = gptq_quantize(W, x, format=fmt, group_size=g, block_size=128, group_fit="updated")
    np.testing.assert_array_equal(lazy.qt.codes, eager.qt.codes)
    np.testing.assert_allclose(lazy.qt.scales, eager.qt.scales, rtol=1e-6)
    assert lazy.loss == pytest.approx(eager.loss, rel=1e-9)
    if g in (128, "row"):  # groups start at block starts: the reference mode is the same thing
        same_tensor(gptq_quantize(W, x, format=fmt, group_size=g).qt, lazy.qt)


def test_reference_group_fit_uses_the_block_start_weights():
    # The reference fits a group that starts inside a lazy block on W as of the block's start
    # (W[:, i1+i : i1+i+g], not the updated W1). With g=32 < block_size=128 that differs from
    # fitting on fully updated weights from the second group on; with block_size=32 every
    # group starts a block and the two agree.
    W, x, _ = correlated_layer(7)
    updated = gptq_quantize(W, x, group_size=32, group_fit="updated")
    reference = gptq_quantize(W, x, group_size=32)
    ref_scales, upd_scales = (r.qt.scales.reshape(W.shape[0], -1) for r in (reference, updated))
    np.testing.assert_array_equal(ref_scales[:, 0], upd_scales[:, 0])  # fitted on W itself
    assert np.any(ref_scales[:, 1:4] != upd_scales[:, 1:4])
    aligned = gptq_quantize(W, x, group_size=32, block_size=32)
    np.testing.assert_array_equal(aligned.qt.codes, updated.qt.codes)


# ---- act-order -----------------------------------------------------------------------------------

@pytest.mark.parametrize("g", [32, "row"])
def test_act_order_is_gptq_on_permuted_columns(g):
    W, x, x_test = correlated_layer(8)
    H = gptq_hessian(x)
    perm = np.argsort(-np.diag(H), kind="stable")
    result = gptq_quantize(W, hessian=H, group_size=g, act_order=True)
    by_hand = gptq_quantize(W[:, perm], hessian=H[np.ix_(perm, perm)], group_size=g)
    if g == "row":
        assert result.perm is None  # undone inside: qt lines up with W
        np.testing.assert_array_equal(result.qt.codes[:, perm], by_hand.qt.codes)
    else:  # groups are runs of permuted columns: qt stays permuted, perm says how
        np.testing.assert_array_equal(result.perm, perm)
        np.testing.assert_array_equal(result.qt.codes, by_hand.qt.codes)
        np.testing.assert_array_equal(result.g_idx[perm], np.arange(W.shape[1]) // g)
    W_hat = result.dequantize()
    np.testing.assert_array_equal(W_hat[:, perm], by_hand.dequantize())
    np.testing.assert_array_equal(W_hat, gptq_dequantize(result.qt, result.perm))
    # the permutation is undone: every column of W_hat is nearest to its own column of W
    dist = ((W_hat[:, :, None] - W[:, None, :]) ** 2).sum(axis=0)
    np.testing.assert_array_equal(np.argmin(dist, axis=1), np.arange(W.shape[1]))
    # act-order changes the result, and still beats RTN (by far, with outlier channels)
    plain = gptq_quantize(W, hessian=H, group_size=g).dequantize()
    assert not np.array_equal(W_hat, plain)
    rtn = q.dequantize(q.quantize(W, "int4_asym", group_size=g))
    assert out_err(x_test, W, W_hat) < 0.8 * out_err(x_test, W, rtn)


# ---- better than round-to-nearest ------------------------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("g", GROUPS)
def test_beats_rtn_on_layer_output(fmt, g):
    W, x, x_test = correlated_layer(9)
    rtn = q.dequantize(q.quantize(W, fmt, group_size=g))
    for act_order, factor in [(False, 0.95), (True, 0.8)]:
        W_hat = gptq_quantize(W, x, format=fmt, group_size=g, act_order=act_order).dequantize()
        assert out_err(x, W, W_hat) < factor * out_err(x, W, rtn)  # calibration data
        assert out_err(x_test, W, W_hat) < factor * out_err(x_test, W, rtn)  # held out


# ---- the result is an ordinary QuantizedTensor -----------------------------------------------------

def test_result_plugs_into_int4ref():
    W, x, _ = correlated_layer(10, n_in=128)
    result = gptq_quantize(W.astype(np.float16), x, format="int4_asym", group_size=64, scale_dtype=np.float16)
    assert isinstance(result, GPTQResult) and result.qt.dtype == np.float16
    assert result.qt.scales.dtype == np.float16 and result.qt.zeros.dtype == np.uint8
    assert result.qt.bits_per_weight() == q.quantize(W, "int4_asym", 64, np.float16).bits_per_weight()
    packed = q.packing.pack_nibbles(result.qt.codes)
    np.testing.assert_array_equal(q.packing.unpack_nibbles(packed, W.size).reshape(W.shape), result.qt.codes)
    words = q.packing.pack_int32(result.qt.codes.T, "sequential", axis=0)  # GPTQ checkpoint layout
    np.testing.assert_array_equal(q.packing.unpack_int32(words, "sequential", axis=0), result.qt.codes.T)
    assert result.dequantize().dtype == np.float16


# ---- input validation ----------------------------------------------------------------------------

def test_input_errors():
    W, x, _ = correlated_layer(11, n_out=8, n_in=128, n_calib=32)
    with pytest.raises(ValueError, match="in_features=128"):
        gptq_quantize(W, x[:, :32])
    with pytest.raises(ValueError, match="2-D"):
        gptq_quantize(W[0], x)
    with pytest.raises(ValueError, match=r"n_samples, in_features"):
        gptq_quantize(W, x[0])
    bad = x.copy()
    bad[3, 5] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        gptq_quantize(W, bad)
    bad = W.copy()
    bad[1, 1] = np.inf
    with pytest.raises(ValueError, match="Inf"):
        gptq_quantize(bad, x)
    with pytest.raises(ValueError, match="at least 2 calibration samples"):
        gptq_quantize(W, x[:1])
    with pytest.raises(ValueError, match="does not divide in_features=128"):
        gptq_quantize(W, x, group_size=48)
    with pytest.raises(ValueError, match="'row'"):
        gptq_quantize(W, x, group_size="tensor")
    with pytest.raises(ValueError, match="not supported here"):
        gptq_quantize(W, x, format="fp4_e2m1")
    with pytest.raises(ValueError, match="unknown format"):
        gptq_quantize(W, x, format="int3")
    with pytest.raises(ValueError, match="exactly one of"):
        gptq_quantize(W)
    with pytest.raises(ValueError, match="exactly one of"):
        gptq_quantize(W, x, hessian=gptq_hessian(x))
    with pytest.raises(ValueError, match=r"\(128, 128\)"):
        gptq_quantize(W, hessian=np.eye(32))
    with pytest.raises(ValueError, match="symmetric"):
        gptq_quantize(W, hessian=np.triu(np.ones((128, 128))))
    with pytest.raises(ValueError, match="not positive definite"):
        gptq_quantize(W, hessian=2 * np.eye(128) - np.ones((128, 128)))  # eigenvalue 2 - 128
    with pytest.raises(ValueError, match="damp"):
        gptq_quantize(W, x, damp=0)
    with pytest.raises(ValueError, match="block_size"):
        gptq_quantize(W, x, block_size=0)
    with pytest.raises(ValueError, match="group_fit"):
        gptq_quantize(W, x, group_fit="static")
    with pytest.raises(TypeError, match="integer"):
        gptq_quantize(W.astype(np.int32), x)
