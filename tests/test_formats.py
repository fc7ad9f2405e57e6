"""The format classes of int4ref.formats: each one's rule is consistent (fit, encode, decode),
its fast path equals its reference, and what it says about itself (bits per weight, levels,
GPU tables) matches what the rest of int4ref does with it."""
from __future__ import annotations

import numpy as np
import pytest

import int4ref
from int4ref import codebooks
from int4ref.formats import FORMATS, Format, GroupParams, TableFormat, dequantize_groups, quantize_groups

f32 = np.float32
NAMES = list(FORMATS)
# a table that is not registered, in a different code order than sorted (as the NF4 builder makes them)
SHUFFLED = TableFormat("shuffled", "NF4's values in another code order", codebooks.NF4[np.r_[8:16, 0:8]])


def groups_with_edges(seed: int, n_groups: int = 200, g: int = 32) -> np.ndarray:
    """Random groups of several shapes plus the awkward ones: zeros, -0.0, one sign only,
    ties at the extremes, float32 subnormals."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n_groups, g)) * 10.0 ** rng.integers(-6, 6, (n_groups, 1))).astype(f32)
    x[0] = 0
    x[1] = -0.0
    x[2] = np.abs(x[2])
    x[3] = -np.abs(x[3])
    x[4, :2] = [5, -5]
    x[5] = np.float32(1e-40) * rng.standard_normal(g).astype(f32)
    x[6, ::2] = 0
    assert x.dtype == f32
    return x


@pytest.mark.parametrize("fmt", [*FORMATS.values(), SHUFFLED], ids=[*NAMES, "shuffled"])
@pytest.mark.parametrize("seed", [0, 1])
def test_fast_encode_equals_reference(fmt, seed):
    x = groups_with_edges(seed)
    params = fmt.fit(x)
    # every midpoint and its float32 neighbours, in every group of a second batch
    mids = getattr(fmt, "midpoints", np.zeros(1, f32))
    around = np.concatenate([mids, np.nextafter(mids, f32(-2)), np.nextafter(mids, f32(2)), [-1, 1, 0, -0.0]])
    ones = np.ones(len(around), f32)
    for groups, p in [(x, params), (around[None, :].astype(f32), GroupParams(ones[:1]))]:
        if fmt.has_zero_point:
            p = GroupParams(p.scales, p.zeros if p.zeros is not None else np.full(len(groups), 8, np.uint8))
        np.testing.assert_array_equal(fmt.encode(groups, p, fast=True), fmt.encode(groups, p))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("seed", [0, 3])
def test_codes_are_the_nearest_level_of_the_fitted_group(name, seed):
    """decode(encode(x)) is, for every value, a level of its group at least as close as any
    other (brute force in float64 over the 16 codes, ties either way)."""
    fmt = FORMATS[name]
    x = groups_with_edges(seed)
    p = fmt.fit(x)
    x_hat = fmt.decode(fmt.encode(x, p), p).astype(np.float64)
    all_codes = np.broadcast_to(np.arange(16, dtype=np.uint8), (len(x), 16))
    usable = ~np.isnan(fmt.levels())
    levels = fmt.decode(all_codes, p).astype(np.float64)[:, usable]  # (n_groups, levels)
    best = np.abs(x.astype(np.float64)[:, :, None] - levels[:, None, :]).min(axis=2)
    err = np.abs(x.astype(np.float64) - x_hat)
    # float32 rounding of 1/s; table formats scale a group with absmax below 1e-38 by 1e38 (the
    # module docstring: its error is then only bounded by 1e-38)
    slack = 1e-6 * np.abs(p.scales.astype(np.float64))[:, None] + (1e-38 if fmt.table is not None else 1e-45)
    assert np.all(err <= best + slack), name


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("scale_dtype", [np.float32, np.float16])
def test_wrappers_and_tensor_api_use_the_class(name, scale_dtype):
    fmt = FORMATS[name]
    x = groups_with_edges(5)[7:]  # float16-safe groups (no subnormal scales)
    x = x[np.abs(x).max(axis=1) > 1e-3]
    x = x[np.abs(x).max(axis=1) < 1e3][:64]
    codes, scales, zeros = quantize_groups(x, fmt, scale_dtype)
    c2, s2, z2 = fmt.quantize(x, scale_dtype, fast=True)
    np.testing.assert_array_equal(codes, c2)
    np.testing.assert_array_equal(scales, s2)
    assert (zeros is None) == (not fmt.has_zero_point) and (z2 is None) == (zeros is None)
    qt = int4ref.quantize(x, name, x.shape[1], scale_dtype)
    np.testing.assert_array_equal(qt.codes, codes)
    np.testing.assert_array_equal(int4ref.dequantize(qt), dequantize_groups(codes, scales, zeros, fmt))
    assert fmt.bits_per_weight(x.shape[1], scale_dtype) == qt.bits_per_weight()


def test_bits_per_weight():
    assert FORMATS["nf4"].bits_per_weight(64) == 4.5
    assert FORMATS["int4_asym"].bits_per_weight(128, np.float16) == 4 + 20 / 128
    with pytest.raises(ValueError, match="group_size"):
        FORMATS["nf4"].bits_per_weight(0)


def test_levels_are_the_decoded_codes_at_scale_one():
    for name in ("nf4", "fp4_bnb", "fp4_e2m1", "lloyd_max", "int4_q4_0"):
        fmt = FORMATS[name]
        codes = np.arange(16, dtype=np.uint8)[None, :]
        scale = f32(1) if name != "int4_q4_0" else f32(1 / 8)  # Q4_0's levels: the group whose max is -1
        np.testing.assert_array_equal(fmt.decode(codes, GroupParams(np.array([scale])))[0], fmt.levels())
    for name in ("int4_asym", "int4_gptq_sym"):  # shown for s = 2/15, z = 8
        p = GroupParams(np.array([f32(2 / 15) if name == "int4_asym" else f32(2) / f32(15)]), np.array([8], np.uint8))
        np.testing.assert_array_equal(FORMATS[name].decode(np.arange(16, dtype=np.uint8)[None], p)[0],
                                      FORMATS[name].levels())


def test_every_format_documents_its_library_and_paths():
    for fmt in FORMATS.values():
        assert isinstance(fmt, Format) and fmt.library and fmt.rule and type(fmt).__doc__
        doc = " ".join(type(fmt).__doc__.split())
        assert "Matches:" in doc and "Fast path" in doc and "GPU kernel" in doc
        if fmt.gpu_kernel is None:
            with pytest.raises(ValueError, match="no GPU tables"):
                fmt.kernel_tables()
        else:
            values, mids, _order = fmt.kernel_tables()
            assert values.shape == mids.shape == (16,)


def test_table_format_checks_its_table():
    with pytest.raises(ValueError, match="16 values"):
        TableFormat("bad", "too short", np.zeros(15, f32))
    with pytest.raises(TypeError, match="not a table format"):
        FORMATS["int4_sym"].nearest(np.zeros(3, f32))
