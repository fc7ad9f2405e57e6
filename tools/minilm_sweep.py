"""Sweep 4-bit quantization of all-MiniLM-L6-v2 on a real retrieval task.

All 36 linear layers are quantized (:func:`int4ref.model.modelquant.quantize_model`) with RTN,
GPTQ and AWQ, formats int4_asym and nf4, group sizes 32, 64, 128 and "row", plus the
float32 baseline. Each config is scored with :mod:`int4ref.model.evaluate` on the whole
evaluation split of the docstring corpus: retrieval (summary -> body; recall@1, MRR, and
every query's rank, so that two configs can be compared query by query) and the cosine
similarity of its embeddings to the float32 model's on the same texts (summaries and bodies).

Calibration: ``--n-calib`` calibration-split docstrings (disjoint from the evaluation
texts). GPTQ runs with ``calibration="sequential"`` (each encoder layer calibrated on the
outputs of the already-quantized layers before it, as the GPTQ reference does) and AWQ with
``"float"`` (inputs from the float model, as AWQ's reference does). An ablation
runs each with the other choice at group sizes 64 and 128.

``bits_per_weight``: storage bits of the quantized linear weights (codes, scales at float32,
zero-points), summed over the 36 layers and divided by their weight count. AWQ's per-input-
channel scales are not counted (in deployment they are folded into the preceding LayerNorm
or linear layer); biases and embeddings stay float32 and are not counted either.

Times: ``calib_time_s`` (forward passes capturing the calibration inputs, Hessians),
``quant_time_s`` (the quantizers), ``eval_time_s`` (embedding the evaluation texts), and
``load_1min``, the machine's load average when the row finished (other work on the machine
slows every timing).

Usage: PYTHONPATH=. python3 tools/minilm_sweep.py [--n-eval N] [--n-calib 64] [--out results/minilm-sweep.json]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from int4ref import bench  # noqa: E402
from int4ref.model.evaluate import (  # noqa: E402
    calibration_texts,
    docstring_corpus,
    fidelity_metrics,
    library_versions,
    rank_metrics,
    retrieval_ranks,
)
from int4ref.model.minilm import MiniLM  # noqa: E402
from int4ref.model.modelquant import quantize_model  # noqa: E402

FORMATS = ("int4_asym", "nf4")
GROUP_SIZES = (32, 64, 128, "row")
#: Each method's calibration in the main sweep (that of its reference code), and the
#: ablation: the other calibration at these group sizes.
MAIN_CALIBRATION = {"rtn": None, "gptq": "sequential", "awq": "float"}
ABLATION = {"gptq": "float", "awq": "sequential"}
ABLATION_GROUP_SIZES = (64, 128)


def configs(methods=("rtn", "gptq", "awq")):
    """``(method, calibration, format, group_size)`` of every quantized row, in run order."""
    out = []
    for method in methods:
        out += [(method, MAIN_CALIBRATION[method], f, g) for f in FORMATS for g in GROUP_SIZES]
    for method in methods:
        if method in ABLATION:
            out += [(method, ABLATION[method], f, g) for f in FORMATS for g in ABLATION_GROUP_SIZES]
    return out


def machine() -> dict:
    """The machine, as int4ref.bench records it (here under the key cpu_model)."""
    info = bench.machine()
    return {"cpu_model": info["cpu"], "cores": info["cores"], "platform": info["platform"],
            "machine": platform.machine()}


def git_commit() -> str | None:
    return bench.commit()  # the HEAD commit, "+dirty" when tracked files were changed


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-eval", type=int, default=None, help="evaluation queries (default: the whole split)")
    ap.add_argument("--n-calib", type=int, default=64)
    ap.add_argument("--out", default=str(ROOT / "results" / "minilm-sweep.json"))
    ap.add_argument("--methods", default="rtn,gptq,awq")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()

    model = MiniLM()
    corpus = docstring_corpus(args.n_eval)
    calib = calibration_texts(args.n_calib)
    summaries = [s for _, s, _ in corpus]
    bodies = [b for _, _, b in corpus]
    eval_names = {n for n, _, _ in corpus}
    assert not eval_names & {n for n, _, _ in docstring_corpus(args.n_calib, split="calib")}
    n_calib_tokens = int(model.tokenize(calib)[1].sum())

    def evaluate(m):
        t = time.perf_counter()
        q_emb, d_emb = m.embed(summaries), m.embed(bodies)
        return q_emb, d_emb, time.perf_counter() - t

    def score(q_emb, d_emb):
        ranks = retrieval_ranks(q_emb, d_emb)
        fid = fidelity_metrics(ref_all, np.concatenate([q_emb, d_emb]))
        return {**rank_metrics(ranks), **fid, "ranks": ranks.tolist()}

    ref_q, ref_d, eval_s = evaluate(model)
    ref_all = np.concatenate([ref_q, ref_d])
    rows = [{"method": "float32", "calibration": None, "format": "float32", "group_size": None,
             "bits_per_weight": 32.0, **score(ref_q, ref_d), "calib_time_s": 0.0, "quant_time_s": 0.0,
             "eval_time_s": round(eval_s, 2), "load_1min": round(os.getloadavg()[0], 2)}]
    print({k: v for k, v in rows[0].items() if k != "ranks"}, flush=True)

    result = {
        "description": ("all-MiniLM-L6-v2, all 36 linear layers quantized; docstring retrieval "
                        "(summary -> body) and embedding fidelity vs float32. See tools/minilm_sweep.py, "
                        "int4ref/model/modelquant.py and int4ref/model/evaluate.py."),
        "schema": {"rows": ("method, calibration (sequential|float|null), format, group_size, bits_per_weight, "
                            "recall_at_1, mrr, mean_cos, min_cos, ranks (rank of the right document for each "
                            "query, in corpus order), calib_time_s, quant_time_s, eval_time_s, load_1min")},
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "machine": machine(),
        "versions": library_versions(),
        "corpus": {"n_eval": len(corpus), "n_calib": len(calib), "n_calib_tokens": n_calib_tokens,
                   "fidelity_texts": "the eval summaries and bodies (2 * n_eval texts)",
                   "chance_recall_at_1": 1 / len(corpus)},
        "n_linear_weights": int(sum(w.size for w in model.linear_weights().values())),
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    for method, calibration, fmt, gs in configs(args.methods.split(",")):
        r = quantize_model(model, method, fmt, gs, calib, calibration=calibration or "float")
        q_q, q_d, eval_s = evaluate(r.model)
        row = {"method": method, "calibration": calibration, "format": fmt, "group_size": gs,
               "bits_per_weight": r.bits_per_weight, **score(q_q, q_d),
               "calib_time_s": round(r.calib_s, 2), "quant_time_s": round(r.quant_s, 2),
               "eval_time_s": round(eval_s, 2), "load_1min": round(os.getloadavg()[0], 2)}
        rows.append(row)
        print({k: v for k, v in row.items() if k != "ranks"}, flush=True)
        result["total_time_s"] = round(time.perf_counter() - t_start, 1)
        out.write_text(json.dumps(result, indent=1) + "\n")
    result["total_time_s"] = round(time.perf_counter() - t_start, 1)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out} in {result['total_time_s']} s")


if __name__ == "__main__":
    main()
