"""int4ref.model.llm_eval: llama.cpp-style perplexity, KL divergence and top-1 agreement on cases
computable by hand, whole-model quantization of a small random LLaMA, and the capture hook of
int4ref.model.smollm (checked on the real SmolLM2 when it is installed)."""
import math

import numpy as np
import pytest

from int4ref.model import llm_eval, smollm
from int4ref.quant import dequantize, quantize

f32 = np.float32


# ---------------------------------------------------------------------------------------
# A bigram "model": the logits after token t are log B[t], so every number is known by hand
# ---------------------------------------------------------------------------------------

class Bigram:
    """hidden_states(ids) = one-hot rows of ids, output_weight() = log(B).T: logits[t] = log B[ids[t]]."""

    def __init__(self, table):
        self.table = np.asarray(table, dtype=np.float64)
        self.calls = []

    def hidden_states(self, ids):
        self.calls.append(np.asarray(ids).copy())
        return np.eye(self.table.shape[0], dtype=np.float64)[np.asarray(ids)]

    def output_weight(self):
        return np.log(self.table).T


def test_windows_drop_the_remainder_and_score_the_second_half():
    w = llm_eval.eval_windows(np.arange(11), 4)
    np.testing.assert_array_equal(w, [[0, 1, 2, 3], [4, 5, 6, 7]])  # 8..10 dropped
    assert llm_eval.scored_positions(4) == slice(2, 3)  # one logit row (position 2) predicts token 3
    assert llm_eval.scored_positions(512) == slice(256, 511)  # 255 scored tokens, as llama.cpp
    with pytest.raises(ValueError, match="hold 2 windows of 4; 3 needed"):
        llm_eval.eval_windows(np.arange(11), 4, n_windows=3)
    with pytest.raises(ValueError, match="at least 4"):
        llm_eval.eval_windows(np.arange(11), 2)
    with pytest.raises(ValueError, match="1-D integer"):
        llm_eval.eval_windows(np.zeros(8), 4)


def test_perplexity_by_hand_and_only_the_second_half_counts():
    # two tokens; after 0 the model says P(1) = 0.8, after 1 it says P(0) = 0.5
    model = Bigram([[0.2, 0.8], [0.5, 0.5]])
    windows = np.array([[0, 1, 0, 1, 1, 0]])  # n_ctx 6: rows 3, 4 predict tokens 4, 5 (1 -> 1, 1 -> 0)
    ref, targets = llm_eval.reference_log_probs(model, windows)
    np.testing.assert_array_equal(targets, [1, 0])
    per = llm_eval.compare_log_probs(ref, ref, targets)
    np.testing.assert_allclose(per["nll"], [math.log(2), math.log(2)], rtol=1e-6)
    # exp(ln 2): the first half (0 -> 1 at 0.8) is not scored
    assert llm_eval.summarize(per)["ppl"] == pytest.approx(2.0, rel=1e-6)


def test_kld_top1_and_delta_ppl_by_hand():
    p = np.log(np.array([[0.75, 0.25], [0.5, 0.5], [0.9, 0.1]]))
    q = np.log(np.array([[0.25, 0.75], [0.5, 0.5], [0.6, 0.4]]))
    targets = np.array([0, 1, 0])
    per = llm_eval.compare_log_probs(p, q, targets)
    expected_kld = [0.5 * math.log(3), 0.0, 0.9 * math.log(0.9 / 0.6) + 0.1 * math.log(0.1 / 0.4)]
    np.testing.assert_allclose(per["kld"], expected_kld, rtol=1e-12)
    np.testing.assert_array_equal(per["same_top"], [False, True, True])
    np.testing.assert_allclose(per["nll"], [math.log(4), math.log(2), -math.log(0.6)])
    np.testing.assert_allclose(per["p_diff"], [0.25 - 0.75, 0.0, 0.6 - 0.9])
    s = llm_eval.summarize(per)
    assert s["same_top"] == pytest.approx(2 / 3)
    assert s["same_top_se"] == pytest.approx(math.sqrt((2 / 3) * (1 / 3) / 2))
    assert s["kld_mean"] == pytest.approx(np.mean(expected_kld))
    assert s["kld_se"] == pytest.approx(np.std(expected_kld, ddof=1) / math.sqrt(3))
    ppl_q = math.exp(np.mean([math.log(4), math.log(2), -math.log(0.6)]))
    ppl_p = math.exp(np.mean([-math.log(0.75), math.log(2), -math.log(0.9)]))
    assert s["delta_ppl"] == pytest.approx(ppl_q - ppl_p) and s["ppl_ratio"] == pytest.approx(ppl_q / ppl_p)
    assert s["kld_max"] == pytest.approx(max(expected_kld))


def test_kld_is_zero_only_for_the_same_distribution_and_asymmetric():
    rng = np.random.default_rng(0)
    p = llm_eval.log_softmax(rng.standard_normal((50, 7)))
    q = llm_eval.log_softmax(rng.standard_normal((50, 7)))
    t = rng.integers(0, 7, 50)
    assert np.all(llm_eval.compare_log_probs(p, p, t)["kld"] == 0)
    forward, backward = llm_eval.compare_log_probs(p, q, t)["kld"], llm_eval.compare_log_probs(q, p, t)["kld"]
    assert np.all(forward > 0) and not np.allclose(forward, backward)


def test_paired_uncertainty_is_smaller_than_unpaired():
    # a model whose nll tracks the reference's token by token: the difference is tight
    rng = np.random.default_rng(1)
    nll_base = rng.exponential(2.0, 2000)
    per = {"nll": nll_base + 0.01 + 0.01 * rng.standard_normal(2000), "nll_base": nll_base,
           "kld": np.full(2000, 0.01), "same_top": np.ones(2000, bool), "p_diff": np.zeros(2000)}
    s = llm_eval.summarize(per)
    assert s["delta_ppl"] > 0 and s["delta_ppl_se"] < 0.1 * s["ppl_se"]
    assert s["delta_ppl"] / s["delta_ppl_se"] > 10  # clearly resolved, though ppl_se alone would hide it


def test_bad_inputs_are_named():
    p = np.log(np.full((2, 4), 0.25))
    with pytest.raises(ValueError, match="equal shape"):
        llm_eval.compare_log_probs(p, p[:1], np.array([0, 1]))
    with pytest.raises(ValueError, match="not log-probabilities"):
        llm_eval.compare_log_probs(p, np.zeros((2, 4)), np.array([0, 1]))  # logits, not log-probs
    with pytest.raises(ValueError, match="token ids"):
        llm_eval.compare_log_probs(p, p, np.array([0, 4]))
    with pytest.raises(ValueError, match="at least 2"):
        llm_eval.summarize({"nll": [1.0], "nll_base": [1.0], "kld": [0.0], "same_top": [True], "p_diff": [0.0]})


# ---------------------------------------------------------------------------------------
# Whole-model quantization on a small random LLaMA (fast, no download)
# ---------------------------------------------------------------------------------------

def tiny_model(seed=0, n_layers=2, d=64, d_ffn=128):
    cfg = smollm.LlamaConfig(name="tiny", n_layers=n_layers, d_model=d, d_ffn=d_ffn, n_heads=4, n_kv_heads=2,
                             head_dim=16, rope_base=10000.0, rms_eps=1e-5, context_length=128, vocab_size=97,
                             bos_id=0, eos_id=1)
    rng = np.random.default_rng(seed)
    weights = {name: (rng.standard_normal(shape) * (1.0 if len(shape) == 1 else 0.3)).astype(f32)
               for name, shape in smollm.expected_shapes(cfg).items()}
    for name in weights:
        if name.endswith("norm.weight"):
            weights[name] = np.abs(weights[name]) + f32(0.5)
    return smollm.SmolLM(cfg, weights, tokenizer=None, source="tiny")


def test_capture_hook_sees_the_inputs_of_each_linear():
    model = tiny_model()
    ids = np.arange(3, 40)
    captured = model.capture_linear_inputs([ids, ids[:10]], layers=[1])
    assert sorted(captured) == sorted(n for n in model.linear_names() if n.startswith("blk.1."))
    assert captured["blk.1.attn_q.weight"] is captured["blk.1.attn_v.weight"]
    assert captured["blk.1.ffn_down.weight"].shape == (47, 128)
    # the input of ffn_down, pushed through it and added to the residual, gives the block's output
    x, cos, sin = model.embed(ids)
    x1 = model.block(0, x, cos, sin)
    cap: dict = {}
    x2 = model.block(1, x1, cos, sin, capture=cap)
    h = smollm.rms_norm(x1 + cap["blk.1.attn_output.weight"] @ model.weights["blk.1.attn_output.weight"].T,
                        model.weights["blk.1.ffn_norm.weight"], model.config.rms_eps)
    np.testing.assert_allclose(cap["blk.1.ffn_gate.weight"], h, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(captured["blk.1.ffn_down.weight"][:37], cap["blk.1.ffn_down.weight"], rtol=1e-6)
    np.testing.assert_allclose(x2, x1 + cap["blk.1.attn_output.weight"] @ model.weights["blk.1.attn_output.weight"].T
                               + cap["blk.1.ffn_down.weight"] @ model.weights["blk.1.ffn_down.weight"].T,
                               rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="block indices"):
        model.capture_linear_inputs([ids], layers=[2])


def test_quantize_lm_rtn_matches_quantize_and_counts_bits():
    model = tiny_model()
    q = llm_eval.quantize_lm(model, "rtn", "int3_asym", 32)
    w = model.weights["blk.0.ffn_up.weight"]
    np.testing.assert_array_equal(q.model.weights["blk.0.ffn_up.weight"],
                                  dequantize(quantize(w, "int3_asym", 32, np.float16), np.float32))
    assert q.bits_per_weight == pytest.approx(3 + (16 + 3) / 32)
    assert q.model.weights["token_embd.weight"] is model.weights["token_embd.weight"]  # embeddings untouched
    with pytest.raises(ValueError, match="method must be"):
        llm_eval.quantize_lm(model, "hqq", "int4_asym")
    with pytest.raises(ValueError, match="needs calib_sequences"):
        llm_eval.quantize_lm(model, "gptq", "int4_asym", 32, [])


def test_gguf_roundtrip_joins_rows_only_when_needed():
    rng = np.random.default_rng(3)
    w = rng.standard_normal((8, 576)).astype(f32)
    v0, j0 = llm_eval.gguf_roundtrip(w, "Q4_0")
    v, j = llm_eval.gguf_roundtrip(w, "Q4_K")
    assert j0 == 1 and j == 4 and v.shape == w.shape
    assert np.abs(v - w).max() < 0.25 * np.abs(w).max() and np.abs(v0 - w).max() < 0.25 * np.abs(w).max()
    q41, _ = llm_eval.gguf_roundtrip(w, "Q4_1")
    np.testing.assert_array_equal(llm_eval.gguf_roundtrip(q41, "Q4_1")[0], q41)  # Q4_1 of Q4_1 is lossless
    with pytest.raises(ValueError, match="4 rows joined"):
        llm_eval.gguf_roundtrip(w[:6], "Q4_K")
    assert llm_eval.gguf_bits_per_weight("Q4_K") == 4.5 and llm_eval.gguf_bits_per_weight("Q4_1") == 5.0


def test_gptq_sequential_and_awq_beat_rtn_on_the_tiny_model():
    model = tiny_model(seed=1)
    calib = [np.arange(2, 98) % 97, (np.arange(96) * 7 + 5) % 97]
    windows = llm_eval.eval_windows((np.arange(256) * 13 + 3) % 97, 64)
    ref, _ = llm_eval.reference_log_probs(model, windows)
    kld = {}
    for method, calibration in (("rtn", "float"), ("gptq", "sequential"), ("gptq", "float"), ("awq", "float")):
        q = llm_eval.quantize_lm(model, method, "int3_asym", 32, calib, calibration=calibration)
        kld[method, calibration] = llm_eval.evaluate_against(q.model, ref, windows)["kld_mean"]
    assert kld["gptq", "sequential"] < kld["rtn", "float"] and kld["awq", "float"] < kld["rtn", "float"]
    assert kld["gptq", "sequential"] != kld["gptq", "float"]  # the two calibrations differ


# ---------------------------------------------------------------------------------------
# The real SmolLM2 (skipped when it is not installed)
# ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def real():
    if not smollm.smollm_available():
        pytest.skip(f"SmolLM2-135M-Instruct not installed ({smollm.SMOLLM_INSTALL})")
    return smollm.load()


def test_real_model_scores_itself_and_a_2_bit_copy(real):
    ids = real.encode("def add(a, b):\n    \"\"\"Return the sum of a and b.\"\"\"\n    return a + b\n" * 4)
    windows = llm_eval.eval_windows(ids, 64, 1)
    ref, targets = llm_eval.reference_log_probs(real, windows)
    same = llm_eval.evaluate_against(real, ref, windows)
    assert same["kld_mean"] < 1e-6 and same["same_top"] == 1.0 and abs(same["delta_ppl"]) < 1e-4
    # the ppl of the scored half equals smollm.perplexity on those tokens' nll
    full = smollm.perplexity(real, windows[0], window=64)["token_nll"]
    assert same["ppl"] == pytest.approx(math.exp(full[32:].mean()), rel=1e-4)
    names = [n for n in real.linear_names() if n.startswith("blk.0.")]
    broken = real.with_weights({n: dequantize(quantize(real.weights[n], "int2_asym", 64)) for n in names})
    worse = llm_eval.evaluate_against(broken, ref, windows)
    assert worse["kld_mean"] > 1e-3 and worse["kld_mean"] > 3 * worse["kld_se"]
