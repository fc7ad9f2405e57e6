"""Is a quantized language model still the same model? Perplexity, KL divergence and top-1
agreement as llama.cpp's perplexity tool reports them, and whole-model quantization of a
:class:`~int4ref.model.smollm.SmolLM` (RTN, GPTQ, AWQ, GGUF block types).

**Windows** (:func:`eval_windows`). The evaluation tokens are cut into consecutive,
non-overlapping windows of ``n_ctx`` tokens (the remainder is dropped); each window is run
from position 0 on its own. Only the **second half** of each window is scored: with
``first = n_ctx // 2``, the logits at positions ``first .. n_ctx - 2`` predict the tokens at
``first + 1 .. n_ctx - 1``, so ``n_ctx - 1 - n_ctx // 2`` tokens per window, each with at
least ``n_ctx // 2`` tokens of context. This is what llama.cpp's ``llama-perplexity`` does
(``tools/perplexity/perplexity.cpp``, ``first = n_ctx/2``); no BOS token is inserted (the
SmolLM2 GGUF sets ``add_bos_token`` false, where llama.cpp would replace each window's
first token by BOS).

**Per scored token** (:func:`compare_log_probs`), with ``P`` the reference model's
next-token distribution and ``Q`` the quantized one's:

* ``nll = -log Q(actual token)`` and ``nll_base = -log P(actual token)``;
* ``kld = sum_v P(v) (log P(v) - log Q(v))`` (natural log; exact over the whole
  vocabulary, in float64; llama.cpp stores ``log P`` as 16-bit codes and skips terms with
  ``log P < -16``, which changes the value in the 4th digit or so);
* ``same_top``: whether ``argmax P == argmax Q`` (the first index on a tie);
* ``p_diff = Q(actual) - P(actual)``.

**Statistics** (:func:`summarize`), llama.cpp's formulas: the uncertainty of a mean is its
standard error ``sqrt((mean(x^2) - mean(x)^2) / (n - 1))``; ``ppl = exp(mean nll)`` with
uncertainty ``ppl * se(nll)``; the difference ``ppl - ppl_base`` and ratio use the
covariance of the paired ``nll`` and ``nll_base`` (the same tokens, so most of the noise
cancels); the top-1 agreement ``p`` has uncertainty ``sqrt(p (1 - p) / (n - 1))``. Every
``*_se`` is one standard error, as llama.cpp prints it after ``±``; a 95% interval is about
``± 1.96`` of them. KLD percentiles interpolate linearly (numpy's default, llama.cpp's rule).
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .._checks import check_positive_int
from ..awq import awq_quantize
from ..gptq import gptq_hessian, gptq_quantize
from ..interop import gguf as gguf_blocks
from ..quant import dequantize, quantize

#: 95% two-sided normal quantile, for intervals from standard errors.
Z95 = 1.959963984540054
#: KLD percentiles reported (fractions), as llama.cpp prints them (a subset).
KLD_PERCENTILES = (0.5, 0.9, 0.95, 0.99, 0.999)


# ---------------------------------------------------------------------------------------
# Windows and log-probabilities
# ---------------------------------------------------------------------------------------

def eval_windows(token_ids, n_ctx: int, n_windows: int | None = None) -> np.ndarray:
    """``token_ids`` (1-D ints) cut into consecutive windows of ``n_ctx`` tokens: int64
    (n_windows, n_ctx). The tokens after the last full window are dropped; ``n_windows``
    keeps only the first ones. ValueError when not even one window (or not ``n_windows``) fits."""
    ids = np.asarray(token_ids)
    if ids.ndim != 1 or ids.dtype.kind not in "iu":
        raise ValueError(f"token_ids must be a 1-D integer sequence, got dtype {ids.dtype} shape {ids.shape}")
    n_ctx = check_positive_int(n_ctx, "n_ctx")
    if n_ctx < 4:
        raise ValueError(f"n_ctx must be at least 4 (half a window of context, then tokens to score), got {n_ctx}")
    available = ids.size // n_ctx
    want = available if n_windows is None else check_positive_int(n_windows, "n_windows")
    if available == 0 or want > available:
        raise ValueError(f"{ids.size} tokens hold {available} windows of {n_ctx}; {max(want, 1)} needed")
    return ids[: want * n_ctx].reshape(want, n_ctx).astype(np.int64)


def scored_positions(n_ctx: int) -> slice:
    """The logit rows scored in a window of ``n_ctx`` tokens: ``n_ctx // 2 .. n_ctx - 2``
    (they predict the tokens ``n_ctx // 2 + 1 .. n_ctx - 1``)."""
    return slice(n_ctx // 2, n_ctx - 1)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """``log softmax`` over the last axis, float64 (computed stably)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def window_log_probs(model, window: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The scored half of one window: ``(log_probs, targets)``, float32 (n_scored, vocab)
    next-token log-probabilities at the positions of :func:`scored_positions` and int64
    (n_scored,) the tokens that actually follow. ``model``: anything with
    ``hidden_states(ids)`` (T, d) and ``output_weight()`` (vocab, d), e.g. a
    :class:`~int4ref.model.smollm.SmolLM`; only the scored rows go through the output layer."""
    window = np.asarray(window)
    rows = scored_positions(window.size)
    hidden = model.hidden_states(window)[rows]
    logits = hidden @ model.output_weight().T
    return log_softmax(logits).astype(np.float32), window[rows.start + 1:]


def compare_log_probs(ref_log_probs: np.ndarray, log_probs: np.ndarray, targets: np.ndarray) -> dict:
    """Per-token comparison of a model's next-token log-probabilities with the reference's.

    ``ref_log_probs``, ``log_probs``: (n, vocab) natural-log probabilities (each row a
    distribution); ``targets``: (n,) the actual next tokens. Returns float64/bool arrays of
    length n: ``nll``, ``nll_base``, ``kld`` (KL(P_ref || Q)), ``same_top``, ``p_diff`` (see
    the module docstring). ValueError on mismatched shapes or rows that are not distributions.
    """
    p_log = np.asarray(ref_log_probs, dtype=np.float64)
    q_log = np.asarray(log_probs, dtype=np.float64)
    targets = np.asarray(targets)
    if p_log.ndim != 2 or p_log.shape != q_log.shape or targets.shape != (p_log.shape[0],):
        raise ValueError(f"expected (n, vocab) log-probabilities of equal shape and (n,) targets; got "
                         f"{p_log.shape}, {q_log.shape} and {targets.shape}")
    if targets.dtype.kind not in "iu" or targets.size and (targets.min() < 0 or targets.max() >= p_log.shape[1]):
        raise ValueError(f"targets must be token ids in [0, {p_log.shape[1]})")
    for name, arr in (("ref_log_probs", p_log), ("log_probs", q_log)):
        total = np.exp(arr).sum(axis=1)
        if not np.all(np.abs(total - 1) < 1e-3):
            raise ValueError(f"{name} are not log-probabilities: a row's probabilities sum to "
                             f"{total[np.argmax(np.abs(total - 1))]:.6g} (pass log_softmax(logits))")
    rows = np.arange(targets.size)
    p = np.exp(p_log)
    with np.errstate(invalid="ignore"):  # 0 * (-inf - x): a token the reference never picks adds nothing
        terms = p * (p_log - q_log)
    kld = np.where(p > 0, terms, 0.0).sum(axis=1)
    nll, nll_base = -q_log[rows, targets], -p_log[rows, targets]
    return {"nll": nll, "nll_base": nll_base, "kld": kld,
            "same_top": np.argmax(p_log, axis=1) == np.argmax(q_log, axis=1),
            "p_diff": np.exp(-nll) - np.exp(-nll_base)}


def mean_and_se(values) -> tuple[float, float]:
    """Mean and standard error ``sqrt((mean(x^2) - mean(x)^2) / (n - 1))`` (llama.cpp's
    ``mean_and_uncertainty``; 0 for fewer than 2 values)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("no values")
    mean = float(x.mean())
    var = float(np.mean(x * x) - mean * mean)
    return mean, (math.sqrt(var / (x.size - 1)) if x.size > 1 and var > 0 else 0.0)


def summarize(per_token: dict) -> dict:
    """llama.cpp's summary of :func:`compare_log_probs`' arrays (concatenated over windows).

    Keys: ``n_tokens``; ``ppl``, ``ppl_se``, ``ppl_base``, ``ppl_base_se``; ``delta_ppl``,
    ``delta_ppl_se`` (``ppl - ppl_base``), ``ln_ppl_ratio``, ``ln_ppl_ratio_se``,
    ``ppl_ratio``; ``kld_mean``, ``kld_se``, ``kld_median``, ``kld_p90`` ... ``kld_p99_9``,
    ``kld_max``; ``same_top``, ``same_top_se`` (fractions); ``rms_p_diff``. Each ``*_se`` is
    one standard error (see the module docstring).
    """
    nll, nll_base = np.asarray(per_token["nll"], np.float64), np.asarray(per_token["nll_base"], np.float64)
    n = nll.size
    if n < 2:
        raise ValueError(f"need at least 2 scored tokens, got {n}")
    log_ppl, log_ppl_se = mean_and_se(nll)
    log_base, log_base_se = mean_and_se(nll_base)
    cov = float(np.mean(nll * nll_base) - nll.mean() * nll_base.mean()) / (n - 1)
    ppl, ppl_base = math.exp(log_ppl), math.exp(log_base)
    ppl_se, ppl_base_se = ppl * log_ppl_se, ppl_base * log_base_se
    ratio_se = math.sqrt(max(log_ppl_se ** 2 + log_base_se ** 2 - 2 * cov, 0.0))
    diff_se = math.sqrt(max(ppl_se ** 2 + ppl_base_se ** 2 - 2 * ppl * ppl_base * cov, 0.0))
    kld = np.asarray(per_token["kld"], np.float64)
    kld_mean, kld_se = mean_and_se(kld)
    same = float(np.mean(per_token["same_top"]))
    out = {"n_tokens": int(n), "ppl": ppl, "ppl_se": ppl_se, "ppl_base": ppl_base, "ppl_base_se": ppl_base_se,
           "delta_ppl": ppl - ppl_base, "delta_ppl_se": diff_se,
           "ln_ppl_ratio": log_ppl - log_base, "ln_ppl_ratio_se": ratio_se, "ppl_ratio": ppl / ppl_base,
           "kld_mean": kld_mean, "kld_se": kld_se}
    for q in KLD_PERCENTILES:
        key = "kld_median" if q == 0.5 else f"kld_p{q * 100:g}".replace(".", "_")
        out[key] = float(np.quantile(kld, q))
    out.update({"kld_max": float(kld.max()), "same_top": same,
                "same_top_se": math.sqrt(same * (1 - same) / (n - 1)),
                "rms_p_diff": float(np.sqrt(np.mean(np.asarray(per_token["p_diff"], np.float64) ** 2)))})
    return out


def reference_log_probs(model, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`window_log_probs` of every window, stacked: float32 (n_windows * n_scored, vocab)
    and the int64 targets. Kept in memory once to compare every quantized model with."""
    parts = [window_log_probs(model, w) for w in windows]
    return np.concatenate([p for p, _ in parts]), np.concatenate([t for _, t in parts])


def evaluate_against(model, ref_log_probs: np.ndarray, windows: np.ndarray) -> dict:
    """:func:`summarize` of ``model`` against the reference's :func:`reference_log_probs` on
    the same ``windows`` (computed window by window, so only one window's log-probs is held)."""
    per_window = []
    n_scored = scored_positions(windows.shape[1])
    n_scored = n_scored.stop - n_scored.start
    for k, w in enumerate(windows):
        log_probs, targets = window_log_probs(model, w)
        per_window.append(compare_log_probs(ref_log_probs[k * n_scored:(k + 1) * n_scored], log_probs, targets))
    return summarize({key: np.concatenate([d[key] for d in per_window]) for key in per_window[0]})


# ---------------------------------------------------------------------------------------
# Quantizing the whole model
# ---------------------------------------------------------------------------------------

def gguf_roundtrip(w: np.ndarray, type_name: str) -> tuple[np.ndarray, int]:
    """Quantize ``w`` (out, in) float32 to the GGUF block type ``type_name`` and back.

    A GGUF block never crosses a row. When ``in`` is not a multiple of the type's block (SmolLM2's
    576-wide rows and the 256-value super-blocks of Q4_K and IQ4_XS), ``j`` consecutive rows
    are joined into one row of ``j * in`` values (j = block / gcd(in, block); 4 rows of 576 =
    2304 = 9 super-blocks), so some super-blocks hold weights of two output channels, which
    llama.cpp never does (it would fall back to another type for such a tensor). Returns the
    dequantized float32 (out, in) and ``j`` (1 when no rows were joined)."""
    block = gguf_blocks.block_type(type_name).block_size
    out_f, in_f = w.shape
    join = block // math.gcd(in_f, block)
    if out_f % join:
        raise ValueError(f"{type_name}: rows of {in_f} need {join} rows joined, but the matrix has {out_f} rows")
    rows = np.ascontiguousarray(w, dtype=np.float32).reshape(out_f // join, in_f * join)
    values = gguf_blocks.dequantize(gguf_blocks.quantize(rows, type_name), type_name)
    return values.reshape(out_f, in_f), join


def gguf_bits_per_weight(type_name: str) -> float:
    """Storage bits per weight of a GGUF block type (its block bytes * 8 / its block size)."""
    t = gguf_blocks.block_type(type_name)
    return 8 * t.type_size / t.block_size


@dataclass(frozen=True, eq=False)
class QuantizedLM:
    """What :func:`quantize_lm` returns: ``model`` with the dequantized linear weights,
    ``bits_per_weight`` (storage of the quantized linear weights / their count; AWQ's
    per-channel scales not counted, as in :mod:`int4ref.model.modelquant`), ``calib_s`` (forward
    passes and Hessians) and ``quant_s`` (the quantizers), seconds; ``joined_rows``: names of
    the weights quantized with joined rows (:func:`gguf_roundtrip`)."""

    model: object
    bits_per_weight: float
    calib_s: float
    quant_s: float
    joined_rows: tuple[str, ...] = ()


def quantize_lm(model, method: str, format: str, group_size=128, calib_sequences: Sequence | None = None, *,
                calibration: str = "sequential", scale_dtype=np.float16, awq_max_tokens: int | None = None,
                progress: Callable[[int, int], None] | None = None, **method_kwargs) -> QuantizedLM:
    """Quantize every linear weight of ``model`` (a :class:`~int4ref.model.smollm.SmolLM`; embeddings
    and norms stay as they are).

    * ``method="rtn"``: :func:`int4ref.quant.quantize` with ``format`` (any int4ref format,
      including ``int{k}_asym`` / ``int{k}_sym``), ``group_size``, ``scale_dtype``.
    * ``method="gguf"``: ``format`` is a GGUF block type (``"Q4_0"``, ``"Q4_K"``, ...) and
      :func:`gguf_roundtrip` quantizes with llama.cpp's own rule (group size is the type's).
    * ``method="gptq"`` / ``"awq"``: :func:`int4ref.gptq_quantize` / :func:`int4ref.awq_quantize`
      on the inputs each layer sees for ``calib_sequences`` (1-D token id sequences).
      ``calibration="sequential"``: block ``i``'s inputs come from the model whose blocks
      ``0..i-1`` are already quantized (the GPTQ reference's order; the seven linears of a
      block share one capture); ``"float"``: from the unquantized model (AWQ's reference).
      Both walk the blocks once, carrying each sequence's hidden states.
      ``awq_max_tokens`` keeps every k-th calibration row for AWQ's searches, at most that many.
    ``progress(done, total)`` is called after each block (or weight, for RTN/GGUF).
    """
    names = model.linear_names()
    n_weights = sum(model.weights[n].size for n in names)
    if method in ("rtn", "gguf"):
        t, new, bits, joined = time.perf_counter(), {}, 0.0, []
        for k, name in enumerate(names):
            w = model.weights[name]
            if method == "rtn":
                qt = quantize(w, format, group_size, scale_dtype)
                new[name], bits = dequantize(qt, np.float32), bits + sum(qt.storage_bits().values())
            else:
                new[name], join = gguf_roundtrip(w, format)
                bits += gguf_bits_per_weight(format) * w.size
                if join > 1:
                    joined.append(name)
            if progress:
                progress(k + 1, len(names))
        return QuantizedLM(model.with_weights(new), bits / n_weights, 0.0, time.perf_counter() - t, tuple(joined))
    if method not in ("gptq", "awq"):
        raise ValueError(f"method must be 'rtn', 'gguf', 'gptq' or 'awq'; got {method!r}")
    if calibration not in ("sequential", "float"):
        raise ValueError(f"calibration must be 'sequential' or 'float'; got {calibration!r}")
    if calib_sequences is None or len(calib_sequences) == 0:
        raise ValueError(f"{method} needs calib_sequences: a non-empty list of 1-D token id sequences")
    timing = {"calib": 0.0, "quant": 0.0}
    t = time.perf_counter()
    states = [model.embed(ids) for ids in calib_sequences]
    timing["calib"] += time.perf_counter() - t
    current, new_all, bits = model, {}, 0.0
    for i in range(model.config.n_layers):
        t = time.perf_counter()
        captured = [{} for _ in states]
        outputs = [current.block(i, x, cos, sin, capture=cap) for (x, cos, sin), cap in zip(states, captured)]
        inputs: dict[str, np.ndarray] = {}
        for name in captured[0]:  # stack each distinct input once (q/k/v and gate/up share theirs)
            same = next((k for k in inputs if captured[0][k] is captured[0][name]), None)
            inputs[name] = inputs[same] if same else np.concatenate([c[name] for c in captured])
        hessians: dict[int, np.ndarray] = {}
        if method == "gptq":
            for name in inputs:
                hessians.setdefault(id(inputs[name]), None)
            hessians = {key: gptq_hessian(next(x for x in inputs.values() if id(x) == key)) for key in hessians}
        timing["calib"] += time.perf_counter() - t
        t = time.perf_counter()
        new = {}
        for name, x in inputs.items():
            w = model.weights[name]
            if method == "gptq":
                result = gptq_quantize(w, hessian=hessians[id(x)], format=format, group_size=group_size,
                                       scale_dtype=scale_dtype, **method_kwargs)
            else:
                step = max(1, math.ceil(x.shape[0] / awq_max_tokens)) if awq_max_tokens else 1
                result = awq_quantize(w, x[::step], format=format, group_size=group_size, scale_dtype=scale_dtype,
                                      **method_kwargs)
            new[name] = result.dequantize(np.float32).astype(np.float32)
            bits += sum(result.qt.storage_bits().values())
        timing["quant"] += time.perf_counter() - t
        t = time.perf_counter()
        new_all.update(new)
        if calibration == "sequential":
            current = current.with_weights(new)
            outputs = [current.block(i, x, cos, sin) for x, cos, sin in states]
        states = [(out, cos, sin) for out, (_, cos, sin) in zip(outputs, states)]
        timing["calib"] += time.perf_counter() - t
        if progress:
            progress(i + 1, model.config.n_layers)
    return QuantizedLM(model.with_weights(new_all), bits / n_weights, timing["calib"], timing["quant"])


__all__ = ["KLD_PERCENTILES", "QuantizedLM", "Z95", "compare_log_probs", "eval_windows", "evaluate_against",
           "gguf_bits_per_weight", "gguf_roundtrip", "log_softmax", "mean_and_se", "quantize_lm",
           "reference_log_probs", "scored_positions", "summarize", "window_log_probs"]
