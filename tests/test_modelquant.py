"""int4ref.model.modelquant: quantizing every linear layer of the numpy MiniLM with RTN, GPTQ and
AWQ, and where the calibration inputs come from (sequential vs float). The model is cut to
its first two encoder layers to keep the tests fast; the loop does not care how many there are."""
import numpy as np
import pytest

pytest.importorskip("tokenizers", reason="int4ref.model.minilm tokenises with the tokenizers package (int4ref[model])")

from int4ref.model.data import MINILM_INSTALL, minilm_available

if not minilm_available():
    pytest.skip(f"all-MiniLM-L6-v2 weights not installed ({MINILM_INSTALL})", allow_module_level=True)

from int4ref import AWQResult, GPTQResult, awq_quantize, dequantize, gptq_quantize, quantize
from int4ref.model.evaluate import calibration_texts
from int4ref.model.minilm import MiniLM
from int4ref.model.modelquant import quantize_model

CALIB = calibration_texts(6)


@pytest.fixture(scope="module")
def full_model():
    return MiniLM()


@pytest.fixture(scope="module")
def model(full_model):
    m = full_model.with_weights({})
    m.config = {**full_model.config, "num_hidden_layers": 2}
    assert len(m.linear_names()) == 12
    return m


def names_of(model, layer):
    return [n for n in model.linear_names() if n.startswith(f"encoder.layer.{layer}.")]


def test_capture_of_one_layer_equals_full_capture(full_model):
    full = full_model.capture_linear_inputs(CALIB[:3])
    part = full_model.capture_linear_inputs(CALIB[:3], layers=[3])
    assert sorted(part) == sorted(names_of(full_model, 3))
    for name, x in part.items():
        np.testing.assert_array_equal(x, full[name])
    for bad in ([], [6], [-1], ["1"]):
        with pytest.raises(ValueError, match="layers"):
            full_model.capture_linear_inputs(CALIB[:1], layers=bad)


def test_hidden_states_n_layers(full_model):
    ids, mask = full_model.tokenize(CALIB[:2])
    h0 = full_model.hidden_states(ids, mask, n_layers=0)
    h6 = full_model.hidden_states(ids, mask, n_layers=6)
    np.testing.assert_array_equal(h6, full_model.hidden_states(ids, mask))
    assert not np.allclose(h0, h6)
    with pytest.raises(ValueError, match="n_layers"):
        full_model.hidden_states(ids, mask, n_layers=7)


def test_rtn_is_quantize_on_every_layer(model):
    r = quantize_model(model, "rtn", "nf4", 64)
    assert sorted(r.layers) == sorted(model.linear_names())
    for name, w in model.linear_weights().items():
        np.testing.assert_array_equal(dequantize(r.layers[name]), dequantize(quantize(w, "nf4", 64)))
        np.testing.assert_array_equal(r.model.weights[name], dequantize(r.layers[name]))
    assert r.bits_per_weight == pytest.approx(4 + 32 / 64)  # codes + a float32 absmax per 64
    assert r.calib_s == 0.0
    # the input model is untouched
    assert all(np.array_equal(model.weights[n], w) for n, w in model.linear_weights().items())


def test_float_and_sequential_gptq_agree_on_layer0_and_differ_after(model):
    flt = quantize_model(model, "gptq", "int4_asym", 64, CALIB, calibration="float")
    seq = quantize_model(model, "gptq", "int4_asym", 64, CALIB, calibration="sequential")
    for name in names_of(model, 0):  # layer 0 sees the same (float) embeddings either way
        assert isinstance(seq.layers[name], GPTQResult)
        np.testing.assert_array_equal(seq.layers[name].dequantize(), flt.layers[name].dequantize())
    differ = [not np.array_equal(seq.layers[n].dequantize(), flt.layers[n].dequantize()) for n in names_of(model, 1)]
    assert all(differ)
    assert seq.bits_per_weight == flt.bits_per_weight == pytest.approx(4 + 32 / 64 + 4 / 64)


def test_sequential_calibrates_layer1_on_the_quantized_layer0(model):
    seq = quantize_model(model, "gptq", "nf4", 128, CALIB, calibration="sequential")
    prefix = model.with_weights({n: seq.layers[n] for n in names_of(model, 0)})
    x = prefix.capture_linear_inputs(CALIB, layers=[1])
    name = "encoder.layer.1.intermediate.dense.weight"
    expect = gptq_quantize(model.weights[name], x[name], format="nf4", group_size=128)
    np.testing.assert_array_equal(seq.layers[name].dequantize(), expect.dequantize())


def test_awq_through_quantize_model(model):
    r = quantize_model(model, "awq", "int4_asym", 128, CALIB, calibration="float", n_grid=4, clip=False)
    name = "encoder.layer.1.output.dense.weight"
    assert isinstance(r.layers[name], AWQResult)
    x = model.capture_linear_inputs(CALIB, layers=[1])[name]
    expect = awq_quantize(model.weights[name], x, format="int4_asym", group_size=128, n_grid=4, clip=False)
    np.testing.assert_array_equal(r.model.weights[name], expect.dequantize())
    assert r.quant_s > 0 and r.calib_s > 0


def test_bad_arguments(model):
    with pytest.raises(ValueError, match="method"):
        quantize_model(model, "smoothquant", "nf4", 64, CALIB)
    with pytest.raises(ValueError, match="calibration"):
        quantize_model(model, "gptq", "nf4", 64, CALIB, calibration="online")
    for bad in (None, [], "one string"):
        with pytest.raises(ValueError, match="calib_texts"):
            quantize_model(model, "gptq", "nf4", 64, bad)
    with pytest.raises(ValueError, match="group"):
        quantize_model(model, "rtn", "nf4", 0)
