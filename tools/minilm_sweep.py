"""Sweep 4-bit quantization of all-MiniLM-L6-v2 on a real retrieval task.

All 36 linear layers are quantized with RTN (:func:`int4ref.quantize`), GPTQ
(:func:`int4ref.gptq.gptq_quantize`) and AWQ (:func:`int4ref.awq.awq_quantize`), formats
int4_asym and nf4, group sizes 32, 64, 128 and "row" (plus the float32 baseline). Each
config is scored with :mod:`int4ref.evaluate`: docstring retrieval (summary -> body,
recall@1 and MRR) on the evaluation split and the cosine similarity of its embeddings to
the float32 model's on the same texts (the summaries and the bodies).

Calibration (GPTQ, AWQ): the inputs of every linear layer captured once from the *float*
model on ``--n-calib`` calibration-split docstrings (disjoint from the evaluation texts).
This is a simplification: the GPTQ paper (and AutoGPTQ) quantize sequentially, layer after
layer, feeding each layer the outputs of the already-quantized earlier layers; AWQ's
reference also runs blocks in order. GPTQ gets the Hessian ``2/n X^T X`` precomputed once per
distinct input (query/key/value share theirs); that time is reported as
``calibration.hessian_s``, not in each row's ``quant_time_s``.

``bits_per_weight``: storage bits of the quantized linear weights (codes, scales at float32,
zero-points), summed over the 36 layers and divided by their weight count. AWQ's per-input-
channel scales are not counted (in deployment they are folded into the preceding LayerNorm
or linear layer); biases and embeddings stay float32 and are not counted either.

Usage: PYTHONPATH=. python3 tools/minilm_sweep.py [--n-eval 300] [--n-calib 64] [--out results/minilm-sweep.json]
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from int4ref import bench  # noqa: E402
from int4ref.awq import awq_quantize  # noqa: E402
from int4ref.evaluate import (calibration_texts, docstring_corpus, fidelity_metrics,  # noqa: E402
                              library_versions, retrieval_metrics)
from int4ref.gptq import gptq_hessian, gptq_quantize  # noqa: E402
from int4ref.minilm import MiniLM  # noqa: E402
from int4ref.quant import quantize  # noqa: E402

METHODS = ("rtn", "gptq", "awq")
FORMATS = ("int4_asym", "nf4")
GROUP_SIZES = (32, 64, 128, "row")


def machine() -> dict:
    """The machine, as int4ref.bench records it (here under the key cpu_model)."""
    info = bench.machine()
    return {"cpu_model": info["cpu"], "cores": info["cores"], "platform": info["platform"],
            "machine": platform.machine()}


def git_commit() -> str | None:
    return bench.commit()  # the HEAD commit, "+dirty" when tracked files were changed


def quantize_all(method, fmt, gs, weights, inputs, hessians):
    """name -> quantized object, and the total storage bits."""
    out, bits = {}, 0
    for name, W in weights.items():
        if method == "rtn":
            q = quantize(W, fmt, gs)
            qt = q
        elif method == "gptq":
            q = gptq_quantize(W, hessian=hessians[name], format=fmt, group_size=gs)
            qt = q.qt
        else:
            q = awq_quantize(W, inputs[name], format=fmt, group_size=gs)
            qt = q.qt
        out[name] = q
        bits += sum(qt.storage_bits().values())
    return out, bits


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-eval", type=int, default=300)
    ap.add_argument("--n-calib", type=int, default=64)
    ap.add_argument("--out", default=str(ROOT / "results" / "minilm-sweep.json"))
    ap.add_argument("--methods", default=",".join(METHODS))
    args = ap.parse_args(argv)
    t_start = time.perf_counter()

    model = MiniLM()
    corpus = docstring_corpus(args.n_eval)
    calib = calibration_texts(args.n_calib)
    summaries = [s for _, s, _ in corpus]
    bodies = [b for _, _, b in corpus]
    eval_names = {n for n, _, _ in corpus}
    assert not eval_names & {n for n, _, _ in docstring_corpus(args.n_calib, split="calib")}

    weights = model.linear_weights()
    n_weights = sum(W.size for W in weights.values())

    t = time.perf_counter()
    inputs = model.capture_linear_inputs(calib)
    capture_s = time.perf_counter() - t
    n_calib_tokens = next(iter(inputs.values())).shape[0]
    t = time.perf_counter()
    hessians, by_id = {}, {}
    for name, x in inputs.items():
        key = name.rsplit(".", 3)[0] if ".attention.self." in name else name  # q/k/v share x
        if key not in by_id:
            by_id[key] = gptq_hessian(x)
        hessians[name] = by_id[key]
    hessian_s = time.perf_counter() - t

    def evaluate(m):
        q_emb = m.embed(summaries)
        d_emb = m.embed(bodies)
        return q_emb, d_emb

    t = time.perf_counter()
    ref_q, ref_d = evaluate(model)
    eval_s = time.perf_counter() - t
    ref_all = np.concatenate([ref_q, ref_d])
    rows = [{"method": "float32", "format": "float32", "group_size": None, "bits_per_weight": 32.0,
             **retrieval_metrics(ref_q, ref_d), **fidelity_metrics(ref_all, ref_all),
             "quant_time_s": 0.0, "eval_time_s": round(eval_s, 2)}]
    print(f"float32: {rows[0]}", flush=True)

    result = {
        "description": ("all-MiniLM-L6-v2, all 36 linear layers quantized; docstring retrieval "
                        "(summary -> body) and embedding fidelity vs float32. See tools/minilm_sweep.py "
                        "and int4ref/evaluate.py."),
        "schema": {"rows": "method, format, group_size, bits_per_weight, recall_at_1, mrr, mean_cos, "
                           "min_cos, quant_time_s, eval_time_s"},
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "machine": machine(),
        "versions": library_versions(),
        "corpus": {"n_eval": len(corpus), "n_calib": len(calib), "n_calib_tokens": int(n_calib_tokens),
                   "fidelity_texts": "the eval summaries and bodies (2 * n_eval texts)",
                   "chance_recall_at_1": 1 / len(corpus)},
        "calibration": {"capture_s": round(capture_s, 2), "hessian_s": round(hessian_s, 2),
                        "source": "float model, all layers captured at once (not sequential)"},
        "n_linear_weights": int(n_weights),
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    for method in args.methods.split(","):
        for fmt in FORMATS:
            for gs in GROUP_SIZES:
                t = time.perf_counter()
                qweights, bits = quantize_all(method, fmt, gs, weights, inputs, hessians)
                quant_s = time.perf_counter() - t
                t = time.perf_counter()
                q_q, q_d = evaluate(model.with_weights(qweights))
                eval_s = time.perf_counter() - t
                row = {"method": method, "format": fmt, "group_size": gs,
                       "bits_per_weight": bits / n_weights, **retrieval_metrics(q_q, q_d),
                       **fidelity_metrics(ref_all, np.concatenate([q_q, q_d])),
                       "quant_time_s": round(quant_s, 2), "eval_time_s": round(eval_s, 2)}
                rows.append(row)
                print(row, flush=True)
                result["total_time_s"] = round(time.perf_counter() - t_start, 1)
                out.write_text(json.dumps(result, indent=1) + "\n")
    result["total_time_s"] = round(time.perf_counter() - t_start, 1)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out} in {result['total_time_s']} s")


if __name__ == "__main__":
    main()
