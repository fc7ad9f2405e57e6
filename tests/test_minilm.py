"""int4ref.model.minilm: the numpy all-MiniLM-L6-v2 against sentence-transformers' own embeddings
(tests/data/minilm_reference.npz, written by tools/make_minilm_reference.py), padding,
weight replacement and the capture of linear-layer inputs."""
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tokenizers", reason="int4ref.model.minilm tokenises with the tokenizers package (int4ref[model])")

import int4ref
from int4ref.model.data import MINILM_INSTALL, MINILM_LINEAR_NAMES, minilm_available

if not minilm_available():
    pytest.skip(f"all-MiniLM-L6-v2 weights not installed ({MINILM_INSTALL})", allow_module_level=True)

from int4ref.model.minilm import MiniLM, gelu, layer_norm

REFERENCE = Path(__file__).parent / "data" / "minilm_reference.npz"
# Short natural-language sentences of the reference set (not "", "   ", "!!!???..." or
# "short " * 300, where a 4-bit model drifts most, nor the 256-token paragraph, for speed).
NATURAL = [0, 1, 2, 3, 4, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18]


@pytest.fixture(scope="module")
def model():
    return MiniLM()


@pytest.fixture(scope="module")
def reference():
    ref = np.load(REFERENCE)
    return {"sentences": [str(s) for s in ref["sentences"]], "embeddings": ref["embeddings"],
            "input_ids": ref["input_ids"], "versions": json.loads(str(ref["versions"]))}


@pytest.fixture(scope="module")
def float_embeddings(model, reference):
    return model.embed(reference["sentences"], batch_size=8)


def cosines(a, b):
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_reference_file_is_small_and_complete(reference):
    assert REFERENCE.stat().st_size < 100_000
    n = len(reference["sentences"])
    assert reference["embeddings"].shape == (n, 384) and reference["embeddings"].dtype == np.float32
    assert {"sentence-transformers", "torch", "transformers", "tokenizers"} <= set(reference["versions"])


def test_tokenization_matches_sentence_transformers(model, reference):
    ids, mask = model.tokenize(reference["sentences"])
    ref_ids = reference["input_ids"]  # -1 at padding
    assert ids.shape == ref_ids.shape  # both pad to the longest, 256 after truncation
    np.testing.assert_array_equal(np.where(mask > 0, ids, -1), ref_ids)
    assert mask.sum(1).max() == 256  # the long sentences were truncated


def test_matches_sentence_transformers(float_embeddings, reference):
    emb, ref = float_embeddings, reference["embeddings"]
    assert emb.dtype == np.float32 and emb.shape == ref.shape
    # Measured: max abs diff 2.5e-7, 1 - min cosine 1.5e-7 (float32 rounding).
    assert np.abs(emb - ref).max() <= 1e-4
    assert cosines(emb, ref).min() >= 0.99999
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-6)


def test_batch_size_and_order_do_not_matter(model, reference, float_embeddings):
    sentences = reference["sentences"][:12]
    for batch_size in (1, 5):
        np.testing.assert_allclose(model.embed(sentences, batch_size=batch_size), float_embeddings[:12], atol=2e-6)
    reversed_ = model.embed(sentences[::-1], batch_size=32)
    np.testing.assert_allclose(reversed_[::-1], float_embeddings[:12], atol=2e-6)


def test_pooling_ignores_padding(model):
    short = "A man is eating food."
    longer = ["A much longer sentence that forces the short one to be padded with many [PAD] tokens " * 3,
              "Another long sentence, about quantization, groups, scales and zero-points, to pad more."]
    alone = model.embed([short])
    in_batch = model.embed([short, *longer], batch_size=32)
    ids, mask = model.tokenize([short, *longer])
    assert mask[0].sum() < mask.shape[1]  # the short one really is padded in that batch
    np.testing.assert_allclose(in_batch[0], alone[0], atol=1e-6)
    hidden = model.hidden_states(ids, mask)
    assert np.all(hidden[mask == 0] == 0)


def test_identity_replacement_is_exact(model, reference):
    same = model.with_weights(model.linear_weights())
    sentences = reference["sentences"][:6]
    np.testing.assert_array_equal(same.embed(sentences), model.embed(sentences))


def test_quantized_model_is_close_but_not_equal(model, reference, float_embeddings):
    originals = model.linear_weights()
    assert list(originals) == list(MINILM_LINEAR_NAMES)
    quantized = {n: int4ref.quantize(w, "nf4", 64) for n, w in originals.items()}
    q_model = model.with_weights(quantized)  # QuantizedTensor values are dequantized
    sentences = [reference["sentences"][i] for i in NATURAL]
    cos = cosines(q_model.embed(sentences, batch_size=8), float_embeddings[NATURAL])
    # Measured: 0.957 .. 0.978 on these sentences (0.884 .. 0.964 on the other five).
    assert cos.min() > 0.9
    assert cos.max() < 0.9999
    # The same weights passed as arrays give the same model; the original is untouched.
    as_arrays = model.with_weights({n: int4ref.dequantize(qt) for n, qt in quantized.items()})
    np.testing.assert_array_equal(as_arrays.embed(sentences[:3]), q_model.embed(sentences[:3]))
    np.testing.assert_allclose(model.embed(sentences[:3]), float_embeddings[NATURAL[:3]], atol=2e-6)
    assert all(model.linear_weights()[n] is w for n, w in originals.items())


def test_capture_linear_inputs(model):
    sentences = ["Hello world", "A cheetah is running behind its prey, fast.", "Ok"]
    _, mask = model.tokenize(sentences)
    n_tokens = int(mask.sum())
    x = model.capture_linear_inputs(sentences, batch_size=2)
    assert list(x) == list(MINILM_LINEAR_NAMES)
    for name, w in model.linear_weights().items():
        assert x[name].shape == (n_tokens, w.shape[1]) and x[name].dtype == np.float32
    # Rows come per sentence in input order, whatever the batching.
    np.testing.assert_allclose(model.capture_linear_inputs(sentences[:1])["encoder.layer.3.output.dense.weight"],
                               x["encoder.layer.3.output.dense.weight"][: mask[0].sum()], atol=1e-5)

    # The hook sees inputs and outputs: output = input @ W.T + b, on the same rows.
    seen = {}
    ids, mask = model.tokenize(sentences)
    hidden = model.hidden_states(ids, mask, linear_hook=lambda n, xi, yi: seen.__setitem__(n, (xi, yi)))
    w, cfg = model.weights, model.config
    for name in MINILM_LINEAR_NAMES:
        xi, yi = seen[name]
        np.testing.assert_allclose(xi, x[name], atol=1e-5)
        np.testing.assert_allclose(xi @ w[name].T + w[name.replace(".weight", ".bias")], yi, atol=1e-5)

    # The captured inputs are the right tensors: recompute each from the previous outputs.
    eps = cfg["layer_norm_eps"]
    real = mask > 0
    emb = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][: ids.shape[1]]
           + w["embeddings.token_type_embeddings.weight"][0])[real]
    expected = layer_norm(emb, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        for k in ("query", "key", "value"):
            np.testing.assert_allclose(x[p + f"attention.self.{k}.weight"], expected, atol=2e-5)
        attn_out = seen[p + "attention.output.dense.weight"][1]
        h = layer_norm(attn_out + expected, w[p + "attention.output.LayerNorm.weight"],
                       w[p + "attention.output.LayerNorm.bias"], eps)
        np.testing.assert_allclose(x[p + "intermediate.dense.weight"], h, atol=2e-5)
        np.testing.assert_allclose(x[p + "output.dense.weight"], gelu(seen[p + "intermediate.dense.weight"][1]),
                                   atol=2e-5)
        expected = layer_norm(seen[p + "output.dense.weight"][1] + h, w[p + "output.LayerNorm.weight"],
                              w[p + "output.LayerNorm.bias"], eps)
    np.testing.assert_allclose(hidden[real], expected, atol=2e-5)


def test_captured_inputs_feed_gptq(model):
    name = "encoder.layer.0.attention.self.query.weight"
    x = model.capture_linear_inputs(["Calibration text for GPTQ, a few dozen tokens long, with numbers 1 2 3.",
                                     "And a second sentence."])[name]
    res = int4ref.gptq_quantize(model.weights[name], x, format="nf4", group_size=64)
    q_model = model.with_weights({name: res})  # GPTQResult values are dequantized
    assert not np.array_equal(q_model.weights[name], model.weights[name])


@pytest.mark.parametrize("bad, error, match", [
    ([], ValueError, "empty"),
    ("a single string", TypeError, "not a single string"),
    (["ok", 3], TypeError, r"sentences\[1\]"),
    (["ok", None], TypeError, r"sentences\[1\]"),
    (42, TypeError, "list of strings"),
])
def test_bad_sentences(model, bad, error, match):
    with pytest.raises(error, match=match):
        model.embed(bad)
    with pytest.raises(error, match=match):
        model.capture_linear_inputs(bad)


def test_bad_arguments(model):
    with pytest.raises(ValueError, match="batch_size"):
        model.embed(["x"], batch_size=0)
    with pytest.raises(KeyError, match="no weight"):
        model.with_weights({"encoder.layer.9.output.dense.weight": np.zeros((384, 1536), np.float32)})
    with pytest.raises(ValueError, match="shape"):
        model.with_weights({MINILM_LINEAR_NAMES[0]: np.zeros((384, 383), np.float32)})
    with pytest.raises(ValueError, match="NaN"):
        model.with_weights({MINILM_LINEAR_NAMES[0]: np.full((384, 384), np.nan, np.float32)})
    with pytest.raises(TypeError, match="float"):
        model.with_weights({MINILM_LINEAR_NAMES[0]: np.zeros((384, 384), np.int8)})
    with pytest.raises(KeyError, match="lack"):
        MiniLM({"embeddings.word_embeddings.weight": np.zeros((30522, 384), np.float32)})
