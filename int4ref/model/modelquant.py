"""Quantize every linear layer of a :class:`~int4ref.model.minilm.MiniLM` with RTN, GPTQ or AWQ.

:func:`quantize_model` is the loop the GPTQ and AWQ papers run over a transformer, written
for the numpy MiniLM:

* ``method="rtn"``: :func:`int4ref.quantize` on each weight; no calibration data.
* ``method="gptq"``: :func:`int4ref.gptq_quantize` with the Hessian ``2/n X^T X`` of the
  layer's calibration inputs (query, key and value share their input, so their Hessian is
  computed once).
* ``method="awq"``: :func:`int4ref.awq_quantize` on the same inputs.

Where the calibration inputs come from (``calibration``):

* ``"sequential"`` (what the GPTQ reference does, block by block): encoder layer ``i``'s
  inputs are captured from the model whose layers ``0 .. i-1`` are *already quantized*, so
  each layer compensates for the error that reaches it. Inside a layer all six linears are
  quantized from one capture (the reference's default; its ``--true-sequential`` option
  goes further and re-captures inside the block).
* ``"float"``: every layer's inputs are captured once from the float model. This is cheaper
  (one forward pass instead of one per layer) and is what AWQ's reference does: it computes
  the next block's inputs with the original float block, before scaling and clipping it.

``calib_s`` in the result is the time spent in the forward passes that capture inputs and in
the Hessians; ``quant_s`` the time spent in the quantizers themselves.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from ..awq import awq_quantize
from ..gptq import gptq_hessian, gptq_quantize
from ..quant import QuantizedTensor, quantize

METHODS = ("rtn", "gptq", "awq")
CALIBRATIONS = ("sequential", "float")


@dataclass(frozen=True, eq=False)
class ModelQuantResult:
    """What :func:`quantize_model` returns.

    * ``model``: the quantized model (a :class:`~int4ref.model.minilm.MiniLM` whose linear weights
      are the dequantized ones; the input model is unchanged).
    * ``layers``: linear weight name -> :class:`~int4ref.quant.QuantizedTensor` (RTN),
      :class:`~int4ref.gptq.GPTQResult` or :class:`~int4ref.awq.AWQResult`.
    * ``storage_bits``: bits stored for all quantized linear weights (codes, scales,
      zero-points, as :meth:`QuantizedTensor.storage_bits`); AWQ's per-channel scales are not
      counted (deployed, they are folded into the layer that produces the input).
    * ``n_weights``: the number of quantized weights.
    * ``calib_s``, ``quant_s``: seconds in calibration (capture and Hessians) and in the
      quantizers.
    """

    model: object
    layers: dict
    storage_bits: int
    n_weights: int
    calib_s: float
    quant_s: float

    @property
    def bits_per_weight(self) -> float:
        return self.storage_bits / self.n_weights


def _qt(result) -> QuantizedTensor:
    return result if isinstance(result, QuantizedTensor) else result.qt


def quantize_model(model, method: str, format: str = "int4_asym", group_size=128,
                   calib_texts: Sequence[str] | None = None, *, calibration: str = "sequential",
                   batch_size: int = 32, **method_kwargs) -> ModelQuantResult:
    """Quantize all linear layers of ``model`` (a :class:`~int4ref.model.minilm.MiniLM`).

    ``method``: ``"rtn"``, ``"gptq"`` or ``"awq"``; ``format`` and ``group_size`` as for
    :func:`int4ref.quantize` (GPTQ and AWQ accept ``"int4_asym"``, ``"int4_sym"``, ``"nf4"``).
    ``calib_texts``: a list of strings (needed by GPTQ and AWQ, ignored by RTN).
    ``calibration``: ``"sequential"`` or ``"float"`` (see the module docstring).
    ``method_kwargs`` go to :func:`~int4ref.gptq_quantize` / :func:`~int4ref.awq_quantize`
    (e.g. ``act_order=True``) or :func:`~int4ref.quantize` (e.g. ``scale_dtype``).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    if calibration not in CALIBRATIONS:
        raise ValueError(f"calibration must be one of {', '.join(CALIBRATIONS)}; got {calibration!r}")
    weights = model.linear_weights()
    n_weights = sum(w.size for w in weights.values())

    if method == "rtn":
        t = time.perf_counter()
        layers = {name: quantize(w, format, group_size, **method_kwargs) for name, w in weights.items()}
        quant_s = time.perf_counter() - t
        return _result(model, layers, n_weights, 0.0, quant_s)

    if calib_texts is None or isinstance(calib_texts, (str, bytes)) or len(calib_texts) == 0:
        raise ValueError(f"{method} needs calib_texts, a non-empty list of strings (the calibration text)")
    calib_texts = list(calib_texts)

    def quantize_one(name, w, x, hessians):
        if method == "gptq":
            key = name.rsplit(".", 2)[0] if ".attention.self." in name else name  # q/k/v share x
            if key not in hessians:
                t = time.perf_counter()
                hessians[key] = gptq_hessian(x)
                timing["calib"] += time.perf_counter() - t
            t = time.perf_counter()
            out = gptq_quantize(w, hessian=hessians[key], format=format, group_size=group_size, **method_kwargs)
        else:
            t = time.perf_counter()
            out = awq_quantize(w, x, format=format, group_size=group_size, **method_kwargs)
        timing["quant"] += time.perf_counter() - t
        return out

    timing = {"calib": 0.0, "quant": 0.0}
    layers: dict = {}
    current = model
    n_layers = model.config["num_hidden_layers"]
    blocks = [list(range(n_layers))] if calibration == "float" else [[i] for i in range(n_layers)]
    for block in blocks:
        t = time.perf_counter()
        inputs = current.capture_linear_inputs(calib_texts, batch_size=batch_size, layers=block)
        timing["calib"] += time.perf_counter() - t
        hessians: dict = {}
        new = {name: quantize_one(name, weights[name], x, hessians) for name, x in inputs.items()}
        del inputs, hessians
        layers.update(new)
        if calibration == "sequential":
            current = current.with_weights(new)
    return _result(model, layers, n_weights, timing["calib"], timing["quant"])


def _result(model, layers, n_weights, calib_s, quant_s) -> ModelQuantResult:
    bits = sum(sum(_qt(q).storage_bits().values()) for q in layers.values())
    return ModelQuantResult(model=model.with_weights(layers), layers=layers, storage_bits=int(bits),
                            n_weights=int(n_weights), calib_s=float(calib_s), quant_s=float(quant_s))


__all__ = ["CALIBRATIONS", "METHODS", "ModelQuantResult", "quantize_model"]
