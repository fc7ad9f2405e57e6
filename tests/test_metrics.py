import numpy as np
import pytest

from int4ref import metrics as m


def test_values():
    x = np.array([1.0, -2.0, 3.0, 0.0])
    y = np.array([1.5, -2.0, 2.0, 0.0])
    assert m.mse(x, y) == pytest.approx((0.25 + 1.0) / 4)
    assert m.rmse(x, y) == pytest.approx(np.sqrt(1.25 / 4))
    assert m.max_abs_error(x, y) == 1.0
    assert m.relative_error(x, y) == pytest.approx(np.sqrt(1.25) / np.sqrt(14))
    assert m.sqnr_db(x, y) == pytest.approx(10 * np.log10(14 / 1.25))
    assert m.sqnr_db(x, x) == float("inf")


def test_layer_output_error_is_the_error_of_x_at_w():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 8))
    w = rng.standard_normal((8, 3))
    w_hat = w + 0.01 * rng.standard_normal((8, 3))
    assert m.layer_output_error(x, w, w_hat) == pytest.approx(
        np.linalg.norm(x @ w - x @ w_hat) / np.linalg.norm(x @ w)
    )
    assert m.layer_output_error(x, w, w_hat, "mse") == pytest.approx(np.mean((x @ w - x @ w_hat) ** 2))


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: m.mse(np.ones(3), np.ones(4)), ValueError, "shapes differ"),
        (lambda: m.sqnr_db(np.zeros(3), np.ones(3)), ValueError, "all-zero reference"),
        (lambda: m.relative_error(np.zeros(3), np.ones(3)), ValueError, "all-zero reference"),
        (lambda: m.rmse(np.array([np.nan]), np.ones(1)), ValueError, "NaN"),
        (lambda: m.layer_output_error(np.ones((2, 3)), np.ones((4, 2)), np.ones((4, 2))), ValueError,
         "need activations"),
        (lambda: m.layer_output_error(np.ones((2, 3)), np.ones((3, 2)), np.ones((3, 2)), "psnr"), ValueError,
         "unknown metric"),
    ],
)
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
