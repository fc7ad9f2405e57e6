"""Plausible wrong answers for exercises/gptq_awq.md (see exercises/wrong_answers/README.md)."""

WRONG = {
    "q1": [
        ("ratio of the norms instead of the squared norms (an amplitude, not an energy)",
         "def relative_output_error(W, W_hat, X):\n"
         "    X = np.asarray(X, dtype=np.float64)\n"
         "    W = np.asarray(W, dtype=np.float64)\n"
         "    diff = W - np.asarray(W_hat, dtype=np.float64)\n"
         "    return float(np.linalg.norm(X @ diff.T) / np.linalg.norm(X @ W.T))\n"),
        ("weight error instead of output error: ignores the inputs",
         "def relative_output_error(W, W_hat, X):\n"
         "    W = np.asarray(W, dtype=np.float64)\n"
         "    return float(np.sum((W - W_hat) ** 2) / np.sum(W ** 2))\n"),
    ],
    "q2": [
        ("forgets the factor 2 of H = 2/n X^T X",
         "def damped_hessian(X, damp=0.01):\n"
         "    X = np.asarray(X, dtype=np.float64)\n"
         "    H = X.T @ X / X.shape[0]\n"
         "    H[np.diag_indices_from(H)] += damp * np.mean(np.diag(H))\n"
         "    return H\n"
         "\n"
         "\n"
         "def inverse_cholesky_upper(H):\n"
         "    return np.linalg.cholesky(np.linalg.inv(H)).T\n"),
        ("adds damp itself to the diagonal instead of damp times its mean",
         "def damped_hessian(X, damp=0.01):\n"
         "    X = np.asarray(X, dtype=np.float64)\n"
         "    H = 2 / X.shape[0] * (X.T @ X)\n"
         "    H[np.diag_indices_from(H)] += damp\n"
         "    return H\n"
         "\n"
         "\n"
         "def inverse_cholesky_upper(H):\n"
         "    return np.linalg.cholesky(np.linalg.inv(H)).T\n"),
        ("returns numpy's lower factor L of H^-1 (H^-1 = L L^T), not U = L^T",
         "def damped_hessian(X, damp=0.01):\n"
         "    X = np.asarray(X, dtype=np.float64)\n"
         "    H = 2 / X.shape[0] * (X.T @ X)\n"
         "    H[np.diag_indices_from(H)] += damp * np.mean(np.diag(H))\n"
         "    return H\n"
         "\n"
         "\n"
         "def inverse_cholesky_upper(H):\n"
         "    return np.linalg.cholesky(np.linalg.inv(H))\n"),
    ],
    "q3": [
        ("fits each group's scales on the original weights, not the updated ones (what the reference "
         "does when a group starts inside a lazy block)",
         "def gptq_int4_sym(W, X, group_size=16, damp=0.01):\n"
         "    W0 = np.array(W, dtype=np.float64)\n"
         "    W = W0.copy()\n"
         "    n_out, n_in = W.shape\n"
         "    X = np.asarray(X, dtype=np.float64)\n"
         "    H = 2 / X.shape[0] * (X.T @ X)\n"
         "    H[np.diag_indices(n_in)] += damp * np.mean(np.diag(H))\n"
         "    U = np.linalg.cholesky(np.linalg.inv(H)).T\n"
         "    W_hat = np.empty((n_out, n_in), dtype=np.float32)\n"
         "    for j in range(n_in):\n"
         "        if j % group_size == 0:\n"
         "            s = np.abs(W0[:, j:j + group_size]).max(axis=1).astype(f32) / f32(7)\n"
         "        W_hat[:, j] = np.clip(np.rint(W[:, j].astype(f32) / s), -7, 7) * s\n"
         "        err = (W[:, j] - W_hat[:, j]) / U[j, j]\n"
         "        W[:, j + 1:] -= np.outer(err, U[j, j + 1:])\n"
         "    return W_hat\n"),
        ("updates the working copy but quantizes the original columns: round-to-nearest in disguise",
         "def gptq_int4_sym(W, X, group_size=16, damp=0.01):\n"
         "    W0 = np.asarray(W, dtype=np.float64)\n"
         "    W = W0.copy()\n"
         "    n_out, n_in = W.shape\n"
         "    X = np.asarray(X, dtype=np.float64)\n"
         "    H = 2 / X.shape[0] * (X.T @ X)\n"
         "    H[np.diag_indices(n_in)] += damp * np.mean(np.diag(H))\n"
         "    U = np.linalg.cholesky(np.linalg.inv(H)).T\n"
         "    W_hat = np.empty((n_out, n_in), dtype=np.float32)\n"
         "    for j in range(n_in):\n"
         "        if j % group_size == 0:\n"
         "            s = np.abs(W0[:, j:j + group_size]).max(axis=1).astype(f32) / f32(7)\n"
         "        W_hat[:, j] = np.clip(np.rint(W0[:, j].astype(f32) / s), -7, 7) * s\n"
         "        err = (W[:, j] - W_hat[:, j]) / U[j, j]\n"
         "        W[:, j + 1:] -= np.outer(err, U[j, j + 1:])\n"
         "    return W_hat\n"),
        ("calls int4ref's GPTQ instead of implementing it",
         "def gptq_int4_sym(W, X, group_size=16, damp=0.01):\n"
         "    return int4ref.gptq_quantize(W, X, format=\"int4_sym\", group_size=group_size, damp=damp,\n"
         "                                 group_fit=\"updated\").dequantize()\n"),
    ],
    "q4": [
        ("expects GPTQ to help as much as on correlated inputs", "gptq_over_rtn_uncorrelated = 0.2\n"),
    ],
    "q5": [
        ("divides by U[j, j] squared (the diagonal of H^-1, as in the Optimal Brain Surgeon formula)",
         "def gptq_nf4_row(W, U):\n"
         "    W = np.array(W, dtype=np.float64)\n"
         "    n_out, n_in = W.shape\n"
         "    absmax = np.abs(W).max(axis=1).astype(f32)\n"
         "    W_hat = np.empty((n_out, n_in), dtype=np.float32)\n"
         "    for j in range(n_in):\n"
         "        x = W[:, j].astype(f32) / absmax\n"
         "        W_hat[:, j] = NF4[np.abs(x[:, None] - NF4).argmin(axis=1)] * absmax\n"
         "        err = (W[:, j] - W_hat[:, j]) / U[j, j] ** 2\n"
         "        W[:, j + 1:] -= np.outer(err, U[j, j + 1:])\n"
         "    return W_hat\n"),
        ("leaves the bug in: no division by U[j, j]",
         "def gptq_nf4_row(W, U):\n"
         "    W = np.array(W, dtype=np.float64)\n"
         "    n_out, n_in = W.shape\n"
         "    absmax = np.abs(W).max(axis=1).astype(f32)\n"
         "    W_hat = np.empty((n_out, n_in), dtype=np.float32)\n"
         "    for j in range(n_in):\n"
         "        x = W[:, j].astype(f32) / absmax\n"
         "        W_hat[:, j] = NF4[np.abs(x[:, None] - NF4).argmin(axis=1)] * absmax\n"
         "        err = W[:, j] - W_hat[:, j]\n"
         "        W[:, j + 1:] -= np.outer(err, U[j, j + 1:])\n"
         "    return W_hat\n"),
    ],
    "q6": [
        ("normalises the scales by their largest entry instead of sqrt(max * min) (the losses do not "
         "change: the quantizers are scale-invariant)",
         "def awq_scale(x_mean, ratio):\n"
         "    s = np.maximum(np.asarray(x_mean, dtype=np.float64) ** ratio, 1e-4)\n"
         "    return (s / s.max()).astype(np.float32)\n"
         "\n"
         "\n"
         "def awq_loss(W, X, ratio, fmt=\"int4_sym\", group_size=16):\n"
         "    X = np.asarray(X, dtype=np.float64)\n"
         "    s = awq_scale(np.abs(X).mean(axis=0), ratio)\n"
         "    W = np.asarray(W, dtype=np.float32)\n"
         "    W_hat = int4ref.dequantize(int4ref.quantize(W * s, fmt, group_size)) / s\n"
         "    return float(np.mean((X @ (W.astype(np.float64) - W_hat).T) ** 2))\n"),
        ("forgets to divide the dequantized weight by s",
         "def awq_scale(x_mean, ratio):\n"
         "    s = np.maximum(np.asarray(x_mean, dtype=np.float64) ** ratio, 1e-4)\n"
         "    return (s / np.sqrt(s.max() * s.min())).astype(np.float32)\n"
         "\n"
         "\n"
         "def awq_loss(W, X, ratio, fmt=\"int4_sym\", group_size=16):\n"
         "    X = np.asarray(X, dtype=np.float64)\n"
         "    s = awq_scale(np.abs(X).mean(axis=0), ratio)\n"
         "    W = np.asarray(W, dtype=np.float32)\n"
         "    W_hat = int4ref.dequantize(int4ref.quantize(W * s, fmt, group_size))\n"
         "    return float(np.mean((X @ (W.astype(np.float64) - W_hat).T) ** 2))\n"),
        ("root mean square of x per channel instead of the mean of |x|",
         "def awq_scale(x_mean, ratio):\n"
         "    s = np.maximum(np.asarray(x_mean, dtype=np.float64) ** ratio, 1e-4)\n"
         "    return (s / np.sqrt(s.max() * s.min())).astype(np.float32)\n"
         "\n"
         "\n"
         "def awq_loss(W, X, ratio, fmt=\"int4_sym\", group_size=16):\n"
         "    X = np.asarray(X, dtype=np.float64)\n"
         "    s = awq_scale(np.sqrt(np.mean(X ** 2, axis=0)), ratio)\n"
         "    W = np.asarray(W, dtype=np.float32)\n"
         "    W_hat = int4ref.dequantize(int4ref.quantize(W * s, fmt, group_size)) / s\n"
         "    return float(np.mean((X @ (W.astype(np.float64) - W_hat).T) ** 2))\n"),
    ],
}

WRONG["q1"] += [
    ("the right ratio as a numpy float32 (computed in float32)",
     "def relative_output_error(W, W_hat, X):\n"
     "    X = np.asarray(X, dtype=np.float32)\n"
     "    diff = np.asarray(W, dtype=np.float32) - np.asarray(W_hat, dtype=np.float32)\n"
     "    return np.sum((X @ diff.T) ** 2) / np.sum((X @ np.asarray(W, dtype=np.float32).T) ** 2)\n"),
    ("calls int4ref's metric instead of implementing it",
     "def relative_output_error(W, W_hat, X):\n"
     "    return float(int4ref.metrics.layer_output_error(X, np.asarray(W).T, np.asarray(W_hat).T) ** 2)\n"),
]
WRONG["q3"] += [
    ("returns the working float64 result (right values, float64)",
     "def gptq_int4_sym(W, X, group_size=16, damp=0.01):\n"
     "    W = np.array(W, dtype=np.float64)\n"
     "    n_out, n_in = W.shape\n"
     "    X = np.asarray(X, dtype=np.float64)\n"
     "    H = 2 / X.shape[0] * (X.T @ X)\n"
     "    H[np.diag_indices(n_in)] += damp * np.mean(np.diag(H))\n"
     "    U = np.linalg.cholesky(np.linalg.inv(H)).T\n"
     "    W_hat = np.empty((n_out, n_in), dtype=np.float64)\n"
     "    for j in range(n_in):\n"
     "        if j % group_size == 0:\n"
     "            s = np.abs(W[:, j:j + group_size]).max(axis=1).astype(f32) / f32(7)\n"
     "        W_hat[:, j] = np.clip(np.rint(W[:, j].astype(f32) / s), -7, 7) * s\n"
     "        err = (W[:, j] - W_hat[:, j]) / U[j, j]\n"
     "        W[:, j + 1:] -= np.outer(err, U[j, j + 1:])\n"
     "    return W_hat\n"),
]
WRONG["q6"] += [
    ("the loss as a numpy float32",
     "def awq_scale(x_mean, ratio):\n"
     "    s = np.maximum(np.asarray(x_mean, dtype=np.float64) ** ratio, 1e-4)\n"
     "    return (s / np.sqrt(s.max() * s.min())).astype(np.float32)\n"
     "\n"
     "\n"
     "def awq_loss(W, X, ratio, fmt=\"int4_sym\", group_size=16):\n"
     "    X = np.asarray(X, dtype=np.float64)\n"
     "    s = awq_scale(np.abs(X).mean(axis=0), ratio)\n"
     "    W = np.asarray(W, dtype=np.float32)\n"
     "    W_hat = int4ref.dequantize(int4ref.quantize(W * s, fmt, group_size)) / s\n"
     "    return np.float32(np.mean((X @ (W.astype(np.float64) - W_hat).T) ** 2))\n"),
]
