"""The formats of the super-blocks chapter on the whole all-MiniLM-L6-v2 model.

Every one of the 36 linear layers is quantized and dequantized with each format (round to
nearest where the format has no search of its own; llama.cpp's search for the GGUF types),
and the model is scored as in tools/minilm_sweep.py: retrieval on the evaluation split of
the docstring corpus (summary -> body; recall@1, MRR, every query's rank) and the cosine
similarity of its embeddings to the float32 model's on the same texts.

Row lengths: a GGUF block never crosses a row, and MiniLM's rows hold 384 or 1536 weights.
384 is a multiple of the 32- and 64-value blocks but not of the K-quants' and IQ4_XS's 256,
where llama.cpp would fall back to another type. To compare every format at its own block
size, a matrix whose rows are not a multiple of the block is quantized as if pairs of rows
were one row of 768 (3 super-blocks); the importance matrix is repeated to match. Such a
super-block holds weights of two output channels, which llama.cpp never does; the record
says so (``joined_rows``).

Importance matrices (``+ imatrix`` rows): the mean squared input of each linear layer over
the calibration split's texts (what llama.cpp's llama-imatrix computes), disjoint from the
evaluation texts.

Usage: PYTHONPATH=. python3 tools/superblocks_sweep.py [--n-eval 300] [--n-calib 64]
       [--out results/superblocks-minilm.json]
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import int4ref  # noqa: E402
from int4ref import results  # noqa: E402
from int4ref.interop import gguf  # noqa: E402
from int4ref.model.evaluate import (  # noqa: E402
    calibration_texts,
    docstring_corpus,
    fidelity_metrics,
    library_versions,
    rank_metrics,
    retrieval_ranks,
)
from int4ref.model.minilm import MiniLM  # noqa: E402

#: (label, kind, name, group size or None, with importance matrix)
FORMATS = (
    ("Q4_0", "gguf", "Q4_0", None, False),
    ("IQ4_NL", "gguf", "IQ4_NL", None, False),
    ("NF4, blocks of 64", "int4ref", "nf4", 64, False),
    ("INT4 asym, groups of 128", "int4ref", "int4_asym", 128, False),
    ("Q4_K", "gguf", "Q4_K", None, False),
    ("Q4_K + imatrix", "gguf", "Q4_K", None, True),
    ("IQ4_XS", "gguf", "IQ4_XS", None, False),
    ("IQ4_XS + imatrix", "gguf", "IQ4_XS", None, True),
    ("MXFP4", "gguf", "MXFP4", None, False),
    ("NVFP4", "gguf", "NVFP4", None, False),
)


def gguf_roundtrip(w: np.ndarray, type_name: str, imatrix=None) -> tuple[np.ndarray, bool]:
    """Quantize and dequantize ``w`` (out, in) with a GGUF type, joining rows when ``in`` is not
    a multiple of the block size (see the module docstring). Returns (values, rows_joined)."""
    block = gguf.block_type(type_name).block_size
    out_f, in_f = w.shape
    join = block // math.gcd(in_f, block)
    if out_f % join:
        raise ValueError(f"{type_name}: cannot join {join} rows of a matrix with {out_f} rows")
    rows = w.reshape(out_f // join, in_f * join)
    imat = None if imatrix is None else np.tile(imatrix, join)
    values = gguf.dequantize(gguf.quantize(rows, type_name, imatrix=imat), type_name)
    return values.reshape(out_f, in_f), join > 1


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-eval", type=int, default=300, help="evaluation queries (default 300)")
    ap.add_argument("--n-calib", type=int, default=64)
    ap.add_argument("--out", default=str(ROOT / "results" / "superblocks-minilm.json"))
    args = ap.parse_args(argv)
    t_start = time.perf_counter()

    model = MiniLM()
    corpus = docstring_corpus(args.n_eval)
    summaries = [s for _, s, _ in corpus]
    bodies = [b for _, _, b in corpus]
    calib = calibration_texts(args.n_calib)
    assert not {n for n, _, _ in corpus} & {n for n, _, _ in docstring_corpus(args.n_calib, split="calib")}
    linear = model.linear_weights()
    print(f"capturing the inputs of {len(linear)} layers on {len(calib)} calibration texts", flush=True)
    x = model.capture_linear_inputs(calib)
    imatrix = {n: (x[n].astype(np.float64) ** 2).mean(axis=0).astype(np.float32) for n in linear}
    del x

    def evaluate(m):
        t = time.perf_counter()
        q_emb, d_emb = m.embed(summaries), m.embed(bodies)
        return q_emb, d_emb, time.perf_counter() - t

    ref_q, ref_d, eval_s = evaluate(model)
    ref_all = np.concatenate([ref_q, ref_d])

    def score(q_emb, d_emb):
        ranks = retrieval_ranks(q_emb, d_emb)
        return {**rank_metrics(ranks), **fidelity_metrics(ref_all, np.concatenate([q_emb, d_emb])),
                "ranks": ranks.tolist()}

    rows = [{"format": "float32", "bits_per_weight": 32.0, **score(ref_q, ref_d), "joined_rows": [],
             "quant_time_s": 0.0, "eval_time_s": round(eval_s, 2), "load_1min": round(os.getloadavg()[0], 2)}]
    record = {
        "description": ("all-MiniLM-L6-v2, all 36 linear layers quantized with the formats of book/superblocks.md; "
                        "docstring retrieval (summary -> body) and embedding fidelity vs float32. See "
                        "tools/superblocks_sweep.py."),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": results.commit(),
        "machine": results.machine(),
        "versions": library_versions(),
        "corpus": {"n_eval": len(corpus), "n_calib": len(calib),
                   "fidelity_texts": "the eval summaries and bodies (2 * n_eval texts)"},
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    n_weights = sum(w.size for w in linear.values())
    for i, (label, kind, name, group_size, with_imatrix) in enumerate(FORMATS, 1):
        t = time.perf_counter()
        replaced, joined = {}, []
        for layer, w in linear.items():
            if kind == "gguf":
                replaced[layer], was_joined = gguf_roundtrip(w, name, imatrix[layer] if with_imatrix else None)
                if was_joined:
                    joined.append(layer)
            else:
                replaced[layer] = int4ref.dequantize(int4ref.quantize(w, name, group_size=group_size))
        if kind == "gguf":
            bpw = gguf.block_type(name).bits_per_weight()
        else:
            qt = int4ref.quantize(next(iter(linear.values())), name, group_size=group_size)
            bpw = qt.bits_per_weight()
        quant_s = time.perf_counter() - t
        q_q, q_d, eval_s = evaluate(model.with_weights(replaced))
        row = {"format": label, "bits_per_weight": bpw, **score(q_q, q_d), "joined_rows": joined,
               "quant_time_s": round(quant_s, 2), "eval_time_s": round(eval_s, 2),
               "load_1min": round(os.getloadavg()[0], 2)}
        rows.append(row)
        elapsed = time.perf_counter() - t_start
        print(f"[{i}/{len(FORMATS)}] {label}: recall@1 {row['recall_at_1']:.4f}, mean cos {row['mean_cos']:.5f} "
              f"({elapsed / 60:.1f} min, about {elapsed / i * (len(FORMATS) - i) / 60:.1f} min left)", flush=True)
        record["total_time_s"] = round(elapsed, 1)
        out.write_text(json.dumps(record, indent=1) + "\n")
    record["n_linear_weights"] = int(n_weights)
    record["total_time_s"] = round(time.perf_counter() - t_start, 1)
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {out} in {record['total_time_s']} s")


if __name__ == "__main__":
    main()
