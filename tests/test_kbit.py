"""The k-bit uniform formats int{k}_sym / int{k}_asym (k = 2..8) used by the bit sweep."""
import numpy as np
import pytest

import int4ref
from int4ref.formats import FORMATS, KBitAsymmetricInt, KBitSymmetricInt, get_format, kbit_format
from int4ref.quant import dequantize, quantize


def weights(shape=(8, 256), seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_four_bits_are_the_registered_int4_formats():
    assert kbit_format(4) is FORMATS["int4_asym"] and kbit_format(4, symmetric=True) is FORMATS["int4_sym"]
    w = weights()
    for name in ("int4_asym", "int4_sym"):  # the k-bit classes at k = 4 compute the same codes
        cls = KBitAsymmetricInt if name.endswith("asym") else KBitSymmetricInt
        groups = w.reshape(-1, 64)
        ref = FORMATS[name].quantize(groups)
        new = cls(4).quantize(groups)
        np.testing.assert_array_equal(new[0], ref[0])
        np.testing.assert_array_equal(new[1], ref[1])


def test_three_bit_asym_by_hand():
    # group [-1, 0, 2.5, 6]: s = (6 - -1) / 7 = 1, z = round(1) = 1; codes = rint(x) + 1, clipped to 0..7
    fmt = get_format("int3_asym")
    codes, scales, zeros = fmt.quantize(np.array([[-1.0, 0.0, 2.5, 6.0]], np.float32))
    assert scales[0] == 1.0 and zeros[0] == 1
    np.testing.assert_array_equal(codes[0], [0, 1, 3, 7])  # 2.5 rounds half to even -> 2, code 3
    np.testing.assert_array_equal(fmt.decode(codes, fmt.fit(np.array([[-1.0, 0.0, 2.5, 6.0]], np.float32)))[0],
                                  [-1.0, 0.0, 2.0, 6.0])


def test_two_bit_sym_keeps_three_levels():
    fmt = get_format("int2_sym")  # s = absmax / 1, codes 1..3 -> -s, 0, +s
    groups = np.array([[-3.0, -1.4, 0.2, 1.6, 3.0]], np.float32)
    codes, scales, _ = fmt.quantize(groups)
    assert scales[0] == 3.0
    np.testing.assert_array_equal(codes[0], [1, 2, 2, 3, 3])
    assert np.isnan(fmt.levels()[0]) and fmt.levels().size == 4


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 8])
@pytest.mark.parametrize("sym", [False, True])
def test_error_falls_with_bits_and_codes_fit_the_width(bits, sym):
    w = weights()
    name = f"int{bits}_{'sym' if sym else 'asym'}"
    qt = quantize(w, name, 128)
    assert qt.codes.max() < 2**bits
    err = np.abs(dequantize(qt) - w).max(axis=1)
    scale = qt.scales.reshape(8, 2).max(axis=1)
    assert np.all(err <= 0.5 * scale * (1 + 1e-5) + 1e-7)  # round to nearest: at most half a step
    # storage: k-bit codes, float32 scales (and k-bit zeros) per group of 128
    assert qt.bits_per_weight() == pytest.approx(bits + (32 + (0 if sym else bits)) / 128)
    assert qt.bits_per_weight() == pytest.approx(get_format(name).bits_per_weight(128))


def test_mse_strictly_falls_from_2_to_8_bits():
    w = weights((16, 512), seed=1)
    mse = [float(np.mean((int4ref.dequantize(int4ref.quantize(w, f"int{k}_asym", 128)) - w) ** 2))
           for k in (2, 3, 4, 5, 8)]
    assert all(a > 2 * b for a, b in zip(mse, mse[1:]))  # each extra bit at least halves the error here


def test_gptq_and_awq_take_kbit_formats():
    rng = np.random.default_rng(2)
    w, x = weights((16, 128)), rng.standard_normal((256, 128)).astype(np.float32)
    g = int4ref.gptq_quantize(w, x, format="int3_asym", group_size=64)
    a = int4ref.awq_quantize(w, x, format="int3_asym", group_size=64)
    rtn = dequantize(quantize(w, "int3_asym", 64))
    assert g.qt.codes.max() <= 7 and a.qt.codes.max() <= 7
    out_err = lambda v: float(np.mean((x @ (w - v).T) ** 2))  # noqa: E731
    assert out_err(g.dequantize()) < out_err(rtn)  # GPTQ lowers the output error it minimises


def test_bad_widths_and_names():
    for bad in (1, 9, 2.5, True, "3"):
        with pytest.raises(ValueError, match="bits must be an integer from 2 to 8"):
            kbit_format(bad)
    for name in ("int9_asym", "int1_sym", "int3_foo", "uint3_asym"):
        with pytest.raises(ValueError, match="unknown format"):
            get_format(name)
    qt = quantize(weights(), "int3_asym", 128)
    with pytest.raises(ValueError, match="out of range for 3-bit codes"):
        type(qt)(format="int3_asym", codes=np.full(qt.shape, 8, np.uint8), scales=qt.scales, zeros=qt.zeros,
                 shape=qt.shape, group_size=128, dtype=qt.dtype)
    assert "int3_asym" not in FORMATS  # the registry of 4-bit formats is unchanged
