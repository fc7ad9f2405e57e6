"""Error metrics between a reference tensor and its quantized version.

All take ``(reference, approximation)`` arrays of the same shape, compute in float64 and
return Python floats. SQNR is ``10 log10(sum(x^2) / sum((x - x_hat)^2))`` in dB (infinite
for an exact match).
"""
from __future__ import annotations

import numpy as np

from ._checks import as_float_array


def _pair(x, x_hat):
    a = as_float_array(x, "reference").astype(np.float64)
    b = as_float_array(x_hat, "approximation").astype(np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: reference {a.shape} vs approximation {b.shape}")
    return a, b


def mse(x, x_hat) -> float:
    a, b = _pair(x, x_hat)
    return float(np.mean((a - b) ** 2))


def rmse(x, x_hat) -> float:
    return float(np.sqrt(mse(x, x_hat)))


def max_abs_error(x, x_hat) -> float:
    a, b = _pair(x, x_hat)
    return float(np.max(np.abs(a - b)))


def relative_error(x, x_hat) -> float:
    """Frobenius-norm relative error ``||x - x_hat|| / ||x||``."""
    a, b = _pair(x, x_hat)
    norm = np.linalg.norm(a)
    if norm == 0:
        raise ValueError("relative error is undefined for an all-zero reference")
    return float(np.linalg.norm(a - b) / norm)


def sqnr_db(x, x_hat) -> float:
    a, b = _pair(x, x_hat)
    signal = np.sum(a**2)
    noise = np.sum((a - b) ** 2)
    if signal == 0:
        raise ValueError("SQNR is undefined for an all-zero reference")
    return float("inf") if noise == 0 else float(10 * np.log10(signal / noise))


def layer_output_error(activations, weight, weight_hat, metric: str = "relative") -> float:
    """Error of a linear layer's output ``y = x W`` when ``W`` is replaced by ``W_hat``.

    ``activations``: (tokens, in_features); ``weight`` and ``weight_hat``: (in_features,
    out_features). ``metric``: ``"relative"``, ``"mse"``, ``"rmse"`` or ``"sqnr_db"``.
    """
    x = as_float_array(activations, "activations").astype(np.float64)
    w, w_hat = _pair(weight, weight_hat)
    if x.ndim != 2 or w.ndim != 2 or x.shape[1] != w.shape[0]:
        raise ValueError(
            f"need activations (tokens, in) and weights (in, out); got {x.shape} and {w.shape}"
        )
    funcs = {"relative": relative_error, "mse": mse, "rmse": rmse, "sqnr_db": sqnr_db}
    if metric not in funcs:
        raise ValueError(f"unknown metric {metric!r}; expected one of {sorted(funcs)}")
    return funcs[metric](x @ w, x @ w_hat)
