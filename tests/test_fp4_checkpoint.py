"""FP4 checkpoint layouts (int4ref.interop.fp4_checkpoint): gpt-oss MXFP4 and NVFP4
(compressed-tensors), their conversions to and from ggml's blocks, and (marked ``peer``) live
checks against transformers' MXFP4 dequantization and compressed-tensors' NVFP4 compressor on
CPU with torch.
"""
import numpy as np
import pytest

from int4ref.interop import fp4_checkpoint as fc
from int4ref.interop import gguf as g

f32 = np.float32


def _bits(a):
    return np.ascontiguousarray(a, dtype=f32).view(np.uint32)


# --- tables --------------------------------------------------------------------------------

def test_e2m1_values_are_transformers_table():
    # transformers.integrations.mxfp4.FP4_VALUES, signed zero included
    want = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6], f32)
    assert np.array_equal(_bits(fc.E2M1_VALUES), _bits(want))


def test_e4m3fn_round_trip_and_ties_to_even():
    codes = np.arange(256, dtype=np.uint8)
    values = fc.e4m3fn_to_float(codes)
    finite = np.isfinite(values)
    assert (~finite).sum() == 2 and values[0x7E] == 448 and values[0x01] == f32(2.0**-9)
    assert np.array_equal(fc.e4m3fn_from_float(values[finite]), codes[finite])  # -0.0 stays 0x80
    pos = values[:0x7F]  # 0x00 .. 0x7E: increasing
    mids = ((pos[:-1].astype(np.float64) + pos[1:]) / 2).astype(f32)  # exact: few significant bits
    got = fc.e4m3fn_from_float(mids)
    lower, upper = np.arange(len(mids)), np.arange(1, len(mids) + 1)
    assert np.array_equal(got, np.where(lower % 2 == 0, lower, upper))  # the even code wins
    with pytest.raises(ValueError, match="448"):
        fc.e4m3fn_from_float(f32(449))


# --- gpt-oss MXFP4 -------------------------------------------------------------------------

def test_gpt_oss_nibble_order():
    x = np.zeros((1, 32), f32)
    x[0, :4] = [1.5, -6.0, 0.5, 4.0]  # amax 6: e = 2 - 2 + 127, levels at E2M1 exactly
    blocks, scales = fc.quantize_gpt_oss(x)
    assert blocks.shape == (1, 1, 16) and scales.shape == (1, 1) and scales[0, 0] == 127
    assert blocks[0, 0, 0] == (0x3 | 0xF << 4) and blocks[0, 0, 1] == (0x1 | 0x6 << 4)
    assert np.array_equal(fc.dequantize_gpt_oss(blocks, scales), x)


def test_gpt_oss_and_ggml_mxfp4_convert_losslessly():
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (3, 5, 4 * 17), dtype=np.uint8)
    blocks, scales = fc.ggml_mxfp4_to_gpt_oss(data)
    assert blocks.shape == (3, 5, 4, 16) and scales.shape == (3, 5, 4)
    assert np.array_equal(fc.gpt_oss_to_ggml_mxfp4(blocks, scales), data)
    assert np.array_equal(fc.ggml_mxfp4_to_gpt_oss(fc.gpt_oss_to_ggml_mxfp4(blocks, scales))[0], blocks)
    # the same values, but for scale byte 255 (E8M0 NaN), which the two read differently
    ours, ggml = fc.dequantize_gpt_oss(blocks, scales), g.dequantize(data, "MXFP4")
    ok = np.repeat(scales != 255, 32, axis=-1)
    codes = np.concatenate([(data.reshape(3, 5, 4, 17)[..., 1:] & 15), data.reshape(3, 5, 4, 17)[..., 1:] >> 4], -1)
    zero_code8 = (codes.reshape(ours.shape) == 8)  # E2M1 -0: -0.0 in gpt-oss, +0.0 in ggml
    assert np.array_equal(ours[ok], ggml[ok])
    assert np.array_equal(_bits(ours[ok & ~zero_code8]), _bits(ggml[ok & ~zero_code8]))


def test_quantize_gpt_oss_matches_ggml_values():
    x = np.random.default_rng(1).standard_normal((2, 3, 128)).astype(f32)
    blocks, scales = fc.quantize_gpt_oss(x)
    assert np.array_equal(fc.dequantize_gpt_oss(blocks, scales), g.dequantize(g.quantize(x, "MXFP4"), "MXFP4"))


def test_gpt_oss_shape_errors():
    with pytest.raises(ValueError, match="blocks"):
        fc.dequantize_gpt_oss(np.zeros((2, 16), np.uint8), np.zeros(3, np.uint8))
    with pytest.raises(TypeError, match="uint8"):
        fc.dequantize_gpt_oss(np.zeros((2, 16), np.int16), np.zeros(2, np.uint8))
    with pytest.raises(ValueError, match="17"):
        fc.ggml_mxfp4_to_gpt_oss(np.zeros((2, 18), np.uint8))


# --- NVFP4 checkpoints ---------------------------------------------------------------------

def test_nvfp4_quantize_shapes_and_error():
    x = np.random.default_rng(2).standard_normal((8, 64)).astype(f32)
    ck = fc.quantize_nvfp4(x)
    assert ck.weight_packed.shape == (8, 32) and ck.weight_scale.shape == (8, 4)
    assert ck.weight_global_scale.shape == (1,)
    assert ck.weight_global_scale[0] == (f32(1) / np.abs(x).max()) * f32(2688)
    back = fc.dequantize_nvfp4(*ck)
    assert np.abs(back - x).max() <= 0.25 * np.abs(x).max()  # half the widest E2M1 gap (2) in units of amax/6
    assert np.corrcoef(back.ravel(), x.ravel())[0, 1] > 0.99


def test_nvfp4_zero_tensor_and_signs():
    ck = fc.quantize_nvfp4(np.zeros((1, 16), f32))
    assert ck.weight_global_scale[0] == 1 and (ck.weight_scale == 0x20).all()  # eps scale 0.125
    x = np.zeros((1, 16), f32)
    x[0, 0], x[0, 1], x[0, 2] = 6.0, -1e-6, -0.0
    ck = fc.quantize_nvfp4(x, global_scale=1.0)
    codes = np.stack([ck.weight_packed[0] & 15, ck.weight_packed[0] >> 4], axis=1).ravel()
    assert codes[:3].tolist() == [7, 8, 0]  # a negative rounding to 0 keeps its sign; -0.0 does not


def test_nvfp4_ties_round_to_even():
    x = np.zeros((1, 16), f32)
    x[0, :8] = [6.0, 0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0]  # scale 1: every E2M1 midpoint
    ck = fc.quantize_nvfp4(x, global_scale=1.0)
    assert fc.e4m3fn_to_float(ck.weight_scale)[0, 0] == 1
    assert np.array_equal(fc.dequantize_nvfp4(*ck)[0, :8], [6, 0, 1, 1, 2, 2, 4, 4])


def test_nvfp4_bad_input():
    with pytest.raises(ValueError, match="16"):
        fc.quantize_nvfp4(np.ones((2, 24), f32))
    with pytest.raises(ValueError, match="non-finite"):
        fc.quantize_nvfp4(np.array([[np.nan] + [1.0] * 15], f32))
    with pytest.raises(ValueError, match="global_scale"):
        fc.quantize_nvfp4(np.ones((1, 16), f32), global_scale=0.0)
    with pytest.raises(ValueError, match="weight_scale"):
        fc.dequantize_nvfp4(np.zeros((2, 8), np.uint8), np.zeros((2, 2), np.uint8), f32(1))


def test_ggml_nvfp4_to_checkpoint_keeps_values():
    rng = np.random.default_rng(3)
    data = rng.integers(0, 256, (12, 3 * 36), dtype=np.uint8)
    blk = data.reshape(-1, 36)
    blk[:, :4][blk[:, :4] == 0xFF] = 0xFE
    blk[:32, :4] = np.arange(128).reshape(32, 4)  # every UE4M3 byte (bit 7 set on the others)
    ck = fc.ggml_nvfp4_to_checkpoint(data)
    assert ck.weight_packed.shape == (12, 96) and ck.weight_scale.shape == (12, 12) and ck.weight_global_scale[0] == 1
    ours, ggml = fc.dequantize_nvfp4(*ck), g.dequantize(data, "NVFP4")
    assert np.array_equal(ours, ggml)  # equal up to the sign of zero (code 8 is -0.0 here, +0.0 in ggml)
    nonzero = ggml != 0
    assert np.array_equal(_bits(ours[nonzero]), _bits(ggml[nonzero]))
    clean = data.copy()
    s = clean.reshape(-1, 36)[:, :4]
    s &= 0x7F
    s[s == 0x7F] = 0
    assert np.array_equal(fc.nvfp4_checkpoint_to_ggml(*ck), clean)
    data.reshape(-1, 36)[0, 0] = 0xFF
    with pytest.raises(ValueError, match="480"):
        fc.ggml_nvfp4_to_checkpoint(data)


def test_checkpoint_to_ggml_only_where_lossless():
    x = np.random.default_rng(4).standard_normal((4, 128)).astype(f32)
    ck = fc.quantize_nvfp4(x)
    with pytest.raises(ValueError, match="no per-tensor scale"):
        fc.nvfp4_checkpoint_to_ggml(*ck)
    data, gs = fc.nvfp4_checkpoint_to_ggml(*ck, keep_global_scale=True)
    assert gs[0] == ck.weight_global_scale[0]
    np.testing.assert_allclose(g.dequantize(data, "NVFP4") / gs[0], fc.dequantize_nvfp4(*ck), rtol=2**-23, atol=0)
    one = fc.quantize_nvfp4(x, global_scale=1.0)
    data = fc.nvfp4_checkpoint_to_ggml(*one)
    assert np.array_equal(g.dequantize(data, "NVFP4"), fc.dequantize_nvfp4(*one))
    back = fc.ggml_nvfp4_to_checkpoint(data)
    assert all(np.array_equal(a, b) for a, b in zip(back, one, strict=True))
    short = fc.quantize_nvfp4(x[:, :48], global_scale=1.0)
    with pytest.raises(ValueError, match="64"):
        fc.nvfp4_checkpoint_to_ggml(*short)


def test_global_scale_from_modelopt():
    assert fc.global_scale_from_modelopt(f32(0.25))[0] == 4


# --- live peers: transformers (gpt-oss MXFP4) and compressed-tensors (NVFP4) --------------

@pytest.mark.peer
def test_dequantize_gpt_oss_matches_transformers():
    torch = pytest.importorskip("torch")
    mx = pytest.importorskip("transformers.integrations.mxfp4")
    rng = np.random.default_rng(5)
    experts, rows, groups = 3, 16, 8
    blocks = rng.integers(0, 256, (experts, rows, groups, 16), dtype=np.uint8)
    scales = rng.permutation(np.resize(np.arange(256, dtype=np.uint8), experts * rows * groups))
    scales = scales.reshape(experts, rows, groups).astype(np.uint8)
    theirs = mx.convert_moe_packed_tensors(torch.from_numpy(blocks), torch.from_numpy(scales), dtype=torch.float32)
    ours = fc.dequantize_gpt_oss(blocks, scales)
    assert np.array_equal(_bits(np.swapaxes(ours, -1, -2)), _bits(theirs.numpy()))
    # and on blocks quantized from data, via ggml's quantizer
    x = rng.standard_normal((2, 8, 96)).astype(f32)
    b, s = fc.quantize_gpt_oss(x)
    theirs = mx.convert_moe_packed_tensors(torch.from_numpy(b), torch.from_numpy(s), dtype=torch.float32)
    assert np.array_equal(_bits(np.swapaxes(g.dequantize(g.quantize(x, "MXFP4"), "MXFP4"), -1, -2)),
                          _bits(theirs.numpy()))


def _ct():
    torch = pytest.importorskip("torch")
    pytest.importorskip("compressed_tensors")
    from compressed_tensors.compressors.nvfp4.base import NVFP4PackedCompressor
    from compressed_tensors.compressors.nvfp4.helpers import unpack_fp4_from_uint8
    from compressed_tensors.quantization import QuantizationScheme
    from compressed_tensors.quantization.lifecycle.forward import dequantize
    from compressed_tensors.quantization.quant_scheme import NVFP4
    from compressed_tensors.quantization.utils.helpers import calculate_qparams, generate_gparam

    scheme = QuantizationScheme(targets=["Linear"], **NVFP4)

    def compress(x, global_scale=None):
        w = torch.from_numpy(x)
        gs = generate_gparam(w.min(), w.max()) if global_scale is None else torch.tensor([global_scale])
        groups = w.unflatten(-1, (w.shape[-1] // 16, 16))
        scale, _ = calculate_qparams(groups.amin(-1), groups.amax(-1), scheme.weights, global_scale=gs)
        out = NVFP4PackedCompressor.compress({"weight": w, "weight_scale": scale, "weight_global_scale": gs}, scheme)
        return out["weight_packed"], out["weight_scale"], gs

    def decompress(packed, scale, gs):
        return NVFP4PackedCompressor.decompress(
            {"weight_packed": packed, "weight_scale": scale, "weight_global_scale": gs}, scheme)["weight"]

    def dequantize_f32(packed, scale, gs):
        m, half = packed.shape
        q = unpack_fp4_from_uint8(packed, m, 2 * half, dtype=torch.float32)
        return dequantize(x_q=q, scale=scale.to(torch.float32), args=scheme.weights, global_scale=gs,
                          dtype=torch.float32)

    return torch, compress, decompress, dequantize_f32


def _nvfp4_cases():
    rng = np.random.default_rng(6)
    scale = f32(2.0) ** rng.integers(-6, 7, (16, 1)).astype(f32)
    mids = rng.choice(np.array([0, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 1.75, 2, 2.5, 3, 3.5, 4, 5, 6], f32), (16, 64))
    mids *= rng.choice(np.array([-1, 1], f32), mids.shape)
    mids[:, ::16] = 6  # each group's amax: 6 * its scale
    cases = {
        "normal": (rng.standard_normal((32, 128)), None),
        "heavy": (rng.standard_t(1.2, (32, 128)), None),
        "rows_of_many_scales": (rng.standard_normal((32, 64)) * np.exp(rng.uniform(-25, 8, (32, 1))), None),
        "groups_of_many_scales": (rng.standard_normal((16, 256)) * np.exp(rng.uniform(-30, 5, (16, 256))), None),
        "zeros": (np.where(rng.random((4, 32)) < 0.5, -0.0, 0.0), None),
        "one_value": (np.full((4, 32), -0.37), None),
        "tiny": (rng.standard_normal((8, 64)) * 1e-30, None),
        "subnormal": (rng.standard_normal((8, 64)) * 1e-40, None),
        "huge": (rng.standard_normal((8, 64)) * 1e30, None),
        "small_negatives": (-np.abs(rng.standard_normal((8, 64))) * np.where(rng.random((8, 64)) < 0.3, 1e-4, 1), None),
        "ties_gs1": (mids * scale, 1.0),
        "ties_gs_pow2": (mids * scale, 4.0),
        "gs_given": (rng.standard_normal((8, 64)), 123.456),
    }
    return {k: (np.asarray(v, dtype=f32), gs) for k, (v, gs) in cases.items()}


@pytest.mark.peer
def test_quantize_nvfp4_matches_compressed_tensors():
    torch, compress, decompress, dequantize_f32 = _ct()
    for name, (x, gs) in _nvfp4_cases().items():
        packed, scale, gs_t = compress(x, gs)
        ours = fc.quantize_nvfp4(x, global_scale=gs)
        assert np.array_equal(_bits(ours.weight_global_scale), _bits(gs_t.numpy())), name
        assert np.array_equal(ours.weight_scale, scale.view(torch.uint8).numpy()), name
        assert np.array_equal(ours.weight_packed, packed.numpy()), name
        f32_theirs = dequantize_f32(packed, scale, gs_t).numpy()
        assert np.array_equal(_bits(fc.dequantize_nvfp4(*ours)), _bits(f32_theirs)), name
        bf16 = torch.from_numpy(fc.dequantize_nvfp4(*ours)).to(torch.bfloat16)
        assert torch.equal(bf16.view(torch.int16), decompress(packed, scale, gs_t).view(torch.int16)), name


@pytest.mark.peer
def test_dequantize_nvfp4_matches_compressed_tensors_on_random_bytes():
    torch, _, _, dequantize_f32 = _ct()
    rng = np.random.default_rng(7)
    packed = rng.integers(0, 256, (64, 32), dtype=np.uint8)
    scale = rng.integers(0, 0x7F, (64, 4), dtype=np.uint8)  # non-negative, non-NaN E4M3
    scale.reshape(-1)[:127] = np.arange(127)
    for gs in (1.0, 2688 / 3.7, 1e-3):
        gs_t = torch.tensor([gs], dtype=torch.float32)
        theirs = dequantize_f32(torch.from_numpy(packed), torch.from_numpy(scale).view(torch.float8_e4m3fn), gs_t)
        assert np.array_equal(_bits(fc.dequantize_nvfp4(packed, scale, gs_t.numpy())), _bits(theirs.numpy()))


@pytest.mark.peer
def test_e4m3fn_from_float_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(8)
    x = np.concatenate([
        rng.uniform(-448, 448, 50000), np.exp(rng.uniform(-16, 6.1, 50000)),
        np.arange(-2048, 2049) / 2.0**10, np.arange(0, 1025) / 2.0**10 / 2**4,  # subnormal grid and half steps
    ])
    x = np.clip(x, -448, 448).astype(f32)
    theirs = torch.from_numpy(x).to(torch.float8_e4m3fn).view(torch.uint8).numpy()
    assert np.array_equal(fc.e4m3fn_from_float(x), theirs)
