"""Synthetic layers shared by the GPTQ and AWQ tests."""
import numpy as np

from int4ref.metrics import layer_output_error

f32 = np.float32


def correlated_layer(seed, n_out=48, n_in=256, n_calib=512, n_test=2048, n_outliers=4):
    """W (n_out, n_in) and calibration / held-out activations from one distribution:
    correlated channels (a random mixing matrix) with a few outlier channels 20x larger."""
    rng = np.random.default_rng(seed)
    mix = 0.5 * np.eye(n_in) + rng.standard_normal((n_in, n_in)) / np.sqrt(n_in)
    gain = np.ones(n_in)
    gain[rng.choice(n_in, n_outliers, replace=False)] = 20.0

    def draw(n):
        return ((rng.standard_normal((n, n_in)) @ mix) * gain).astype(f32)

    W = rng.standard_normal((n_out, n_in)).astype(f32)
    return W, draw(n_calib), draw(n_test)


def out_err(x, W, W_hat):
    return layer_output_error(x, W.T, W_hat.T)
