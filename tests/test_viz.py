"""int4ref.explore.viz: every figure has a title, labelled axes and alt text, shows int4ref's own
numbers, and rejects bad input with a clear error."""
import base64
import re

import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

import int4ref  # noqa: E402
from int4ref import metrics, packing  # noqa: E402
from int4ref.explore import viz  # noqa: E402

RNG = np.random.default_rng(0)
W = RNG.standard_normal((64, 256)).astype(np.float32)


def check_figure(fig, min_alt=40):
    """Title, axis labels with units on every visible axes, alt text; renders to PNG."""
    assert isinstance(fig, Figure)
    titles = [fig._suptitle.get_text() if fig._suptitle else ""] + [ax.get_title() for ax in fig.axes]
    assert any(t.strip() for t in titles), "figure has no title"
    for ax in fig.axes:
        if not ax.get_visible() or ax.get_label() == "<colorbar>":
            continue
        ylabel = ax.get_ylabel() or next(  # small multiples label the shared y axis once per row
            (s.get_ylabel() for s in ax.get_shared_y_axes().get_siblings(ax) if s.get_ylabel()), "")
        assert ax.get_xlabel().strip() and ylabel.strip(), f"axes {ax.get_title()!r} lacks a label"
        assert "(" in ax.get_xlabel() and "(" in ylabel, "axis labels carry units in parentheses"
    alt = viz.alt_text(fig)
    assert alt == fig.int4ref_alt and len(alt) >= min_alt
    assert viz.to_png(fig, dpi=40)[:8] == b"\x89PNG\r\n\x1a\n"
    return alt


def test_palette_is_okabe_ito_and_formats_have_distinct_styles():
    assert len(set(viz.OKABE_ITO.values())) == 8
    assert set(viz.FORMAT_STYLE) == set(int4ref.FORMATS)
    styles = list(viz.FORMAT_STYLE.values())
    assert len({s[0] for s in styles}) == len(styles) and len({s[1] for s in styles}) == len(styles)
    assert {s[0] for s in styles} <= set(viz.OKABE_ITO.values())


@pytest.mark.parametrize("fmt", list(int4ref.FORMATS))
def test_weight_histogram_draws_the_levels_of_the_group(fmt):
    qt = int4ref.quantize(W, fmt, 64)
    fig = viz.weight_histogram(W, qt=qt, group=5)
    alt = check_figure(fig)
    assert fmt in alt and "group 5" in alt
    ax = fig.axes[0]
    (lines,) = ax.collections[1:2]  # the vlines of the levels, after the histogram
    xs = np.array([seg[0, 0] for seg in lines.get_segments()])
    levels = viz.group_levels(qt, 5)
    np.testing.assert_array_equal(np.sort(xs), levels)
    # every dequantized value of that group is one of the drawn levels
    group_values = int4ref.dequantize(qt).ravel()[5 * 64 : 6 * 64]
    assert np.isin(group_values, levels).all()
    assert levels.size == (15 if fmt == "int4_sym" else 16)


def test_weight_histogram_options_and_errors():
    check_figure(viz.weight_histogram(W, "int4_asym", 32, levels="density"))
    fig = viz.weight_histogram(W, "nf4", 64, group="max", extra_groups=(0, 1))
    assert len(fig.axes[0].collections) == 4
    qt = int4ref.quantize(W, "nf4", 64)
    assert viz._representative_group(qt, "max") == int(np.argmax(qt.scales))
    with pytest.raises(ValueError, match="levels must be"):
        viz.weight_histogram(W, levels="all")
    with pytest.raises(ValueError, match="group must be"):
        viz.weight_histogram(W, group="mean")
    with pytest.raises(IndexError, match="out of range"):
        viz.weight_histogram(W, group=10_000)
    with pytest.raises(ValueError, match="shape"):
        viz.weight_histogram(W[:2], qt=qt)
    with pytest.raises(ValueError, match="unknown format"):
        viz.weight_histogram(W, "int3")
    with pytest.raises(ValueError, match="non-finite"):
        viz.weight_histogram(np.array([1.0, np.nan], dtype=np.float32))
    with pytest.raises(TypeError, match="integer"):
        viz.weight_histogram(np.arange(10))


def test_error_plots():
    qt = int4ref.quantize(W, "nf4", 64)
    w_hat = int4ref.dequantize(qt)
    alt = check_figure(viz.error_histogram(W, w_hat))
    assert f"{metrics.rmse(W, w_hat):.3g}" in alt
    fig = viz.error_vs_value(W, w_hat, max_points=1000)
    check_figure(fig)
    pts = fig.axes[0].collections[0].get_offsets()
    assert len(pts) == 1000
    # each plotted point is (w, w_hat - w) of some weight
    pairs = set(zip(W.ravel().astype(np.float64).round(6), (w_hat - W).ravel().astype(np.float64).round(6)))
    assert all((round(float(a), 6), round(float(b), 6)) in pairs for a, b in pts[:50])
    with pytest.raises(ValueError, match="same shape"):
        viz.error_histogram(W, w_hat[:3])
    with pytest.raises(ValueError, match="non-finite"):
        viz.error_vs_value(W, np.full_like(W, np.inf))


def test_error_sweep_numbers_are_int4ref_metrics():
    rows = viz.error_sweep(W, ("int4_sym", "nf4"), (32, 128))
    assert [(r["format"], r["group_size"]) for r in rows] == [("int4_sym", 32), ("int4_sym", 128), ("nf4", 32),
                                                              ("nf4", 128)]
    for r in rows:
        qt = int4ref.quantize(W, r["format"], r["group_size"])
        w_hat = int4ref.dequantize(qt)
        assert r["sqnr_db"] == metrics.sqnr_db(W, w_hat)
        assert r["rmse"] == metrics.rmse(W, w_hat)
        assert r["bits_per_weight"] == qt.bits_per_weight() == 4 + 32 / r["group_size"]
    with pytest.raises(ValueError, match="at least one"):
        viz.error_sweep(W, (), (64,))


@pytest.mark.parametrize("against", ["group_size", "bits_per_weight"])
@pytest.mark.parametrize("metric", ["sqnr_db", "rmse"])
def test_error_tradeoff_plots_the_sweep(against, metric):
    rows = viz.error_sweep(W, ("int4_sym", "int4_asym", "nf4"), (16, 64, 256))
    fig = viz.error_tradeoff(W, rows=rows, against=against, metric=metric)
    alt = check_figure(fig)
    assert "int4_asym" in alt
    ax = fig.axes[0]
    assert len(ax.lines) == 3
    for line, name in zip(ax.lines, ("int4_sym", "int4_asym", "nf4")):
        expect = sorted((r for r in rows if r["format"] == name), key=lambda r: r[against])
        np.testing.assert_array_equal(line.get_xdata(), [r[against] for r in expect])
        np.testing.assert_array_equal(line.get_ydata(), [r[metric] for r in expect])
        assert line.get_color().upper() == viz.FORMAT_STYLE[name][0].upper()
    assert ax.get_xscale() == ("log" if against == "group_size" else "linear")


def test_tradeoff_wrappers_and_errors():
    check_figure(viz.sqnr_vs_group_size(W, ("nf4",), (32, 64)))
    check_figure(viz.sqnr_vs_bits(W, ("nf4", "fp4_e2m1"), (32, 64), metric="rmse"))
    with pytest.raises(ValueError, match="metric must be"):
        viz.error_tradeoff(W, metric="snr")
    with pytest.raises(ValueError, match="against must be"):
        viz.error_tradeoff(W, against="bytes")


@pytest.mark.parametrize("fmt", ["nf4", "int4_q4_0", "int4_asym"])
def test_scale_heatmap_shows_the_scales(fmt):
    fig = viz.scale_heatmap(W, fmt, 32)
    alt = check_figure(fig)
    assert "64 by 256" in alt and "8 groups" in alt
    img = fig.axes[0].images[0].get_array()
    qt = int4ref.quantize(W, fmt, 32)
    np.testing.assert_array_equal(img, qt.scale_values().reshape(64, 8))
    if fmt == "int4_q4_0":  # signed scales: a diverging map centred at 0
        lo, hi = fig.axes[0].images[0].get_clim()
        assert lo == -hi


def test_scale_heatmap_errors():
    with pytest.raises(ValueError, match="2-D"):
        viz.scale_heatmap(W.ravel())
    with pytest.raises(ValueError, match="divisor"):
        viz.scale_heatmap(W, group_size=48)
    with pytest.raises(ValueError, match="divisor"):
        viz.scale_heatmap(W, group_size="row")


def test_level_usage_counts_codes():
    qt = int4ref.quantize(W, "int4_sym", 64)
    u = viz.level_usage(qt)
    np.testing.assert_array_equal(u["counts"], np.bincount(qt.codes.ravel(), minlength=16))
    assert u["counts"][0] == 0 and u["used"] == 15  # int4_sym never uses code 0
    p = u["counts"][u["counts"] > 0] / W.size
    assert u["entropy_bits"] == pytest.approx(-(p * np.log2(p)).sum())
    assert viz.level_usage(np.full(10, 3, dtype=np.uint8))["entropy_bits"] == 0.0
    assert viz.level_usage(np.arange(16, dtype=np.uint8))["entropy_bits"] == pytest.approx(4.0)
    with pytest.raises(ValueError, match="4-bit codes"):
        viz.level_usage(np.array([16]))
    with pytest.raises(ValueError, match="4-bit codes"):
        viz.level_usage(np.array([0.5]))


def test_plot_level_usage():
    fig = viz.plot_level_usage(W, ("int4_sym", "nf4", "fp4_bnb"), 64)
    alt = check_figure(fig)
    assert "int4_sym uses 15 of 16 codes" in alt
    bars = [p.get_height() for p in fig.axes[0].patches]
    u = viz.level_usage(int4ref.quantize(W, "int4_sym", 64))
    np.testing.assert_allclose(bars, 100 * u["share"])
    assert "15/16" in fig.axes[0].get_title()
    fig = viz.plot_level_usage(W)  # every format, spare panels hidden
    assert sum(ax.get_visible() for ax in fig.axes) == len(int4ref.FORMATS)
    with pytest.raises(ValueError, match="at least one"):
        viz.plot_level_usage(W, ())


def test_outlier_effect():
    n = viz.outlier_numbers(format="int4_sym", outlier=20.0, position=3)
    assert n["spiked"][3] == 20.0 and n["clean"][3] != 20.0
    others = np.arange(64) != 3
    np.testing.assert_array_equal(n["spiked"][others], n["clean"][others])
    # the numbers are int4ref's: recompute them
    for key in ("clean", "spiked"):
        v = n[key]
        v_hat = int4ref.dequantize(int4ref.quantize(v, "int4_sym", group_size="tensor"))
        np.testing.assert_array_equal(n[key + "_hat"], v_hat)
        assert n[key + "_rmse_others"] == metrics.rmse(v[others], v_hat[others])
    assert n["spiked_rmse_others"] > 3 * n["clean_rmse_others"]
    assert n["spiked_levels_used_by_others"] < n["clean_levels_used_by_others"]
    fig = viz.outlier_effect(numbers=n, outlier=20.0)
    alt = check_figure(fig)
    assert f"{n['spiked_rmse_others']:.3g}" in alt and f"{n['spiked_rmse_others']:.3g}" in fig.axes[1].get_title()
    with pytest.raises(ValueError, match="position"):
        viz.outlier_numbers(position=64)
    with pytest.raises(ValueError, match="finite"):
        viz.outlier_numbers(outlier=float("inf"))


def test_nibble_map_matches_the_documented_layouts():
    byte, high = viz.nibble_map("bnb")
    np.testing.assert_array_equal(byte, np.arange(32) // 2)
    np.testing.assert_array_equal(high, np.arange(32) % 2 == 0)
    byte, high = viz.nibble_map("ggml")
    np.testing.assert_array_equal(byte, np.arange(32) % 16)
    np.testing.assert_array_equal(high, np.arange(32) >= 16)


def test_bit_layout_shows_the_packed_bytes():
    codes = RNG.integers(0, 16, 32).astype(np.uint8)
    fig = viz.bit_layout(codes)
    alt = check_figure(fig)
    for ax, lay in zip(fig.axes, ("bnb", "ggml")):
        packed = packing.pack_nibbles(codes, lay)
        assert " ".join(f"{b:02X}" for b in packed) in alt
        labels = [t.get_text() for t in ax.get_yticklabels()]
        assert labels == [f"{k}: 0x{b:02X}" for k, b in enumerate(packed)]
        texts = {t.get_text() for t in ax.texts}
        assert texts == {f"x[{i}] {codes[i]:04b}" for i in range(32)}
        byte, high = viz.nibble_map(lay)
        for t in ax.texts:  # each element's text sits in its byte's row and nibble's column
            i = int(re.match(r"x\[(\d+)\]", t.get_text()).group(1))
            assert t.get_position() == (0 if high[i] else 1, byte[i])


def test_bit_layout_errors():
    with pytest.raises(ValueError, match="32 integer codes"):
        viz.bit_layout(np.arange(31))
    with pytest.raises(ValueError, match="32 integer codes"):
        viz.bit_layout(np.arange(32))  # 16..31 are not 4-bit codes
    with pytest.raises(ValueError, match="unknown layout"):
        viz.bit_layout(layouts=("gptq",))


def test_show_embeds_png_with_alt_text():
    fig = viz.error_histogram(W, W * 0.9)
    shown = viz.show(fig, dpi=30)
    html = shown._repr_html_()
    assert html.startswith("<img ") and 'alt="Histogram of the quantization error' in html
    data = re.search(r'src="data:image/png;base64,([^"]+)"', html).group(1)
    assert base64.b64decode(data)[:4] == b"\x89PNG"
    assert viz.show(fig, alt='a "quoted" <b>').alt == 'a "quoted" <b>'
    assert "&quot;quoted&quot; &lt;b&gt;" in viz.show(fig, alt='a "quoted" <b>', dpi=20)._repr_html_()
    assert viz.draw_png(viz.error_histogram(W, W * 0.9))[:4] == b"\x89PNG"
    assert viz.alt_text(Figure()) == ""


def test_figures_do_not_touch_pyplot():
    import sys

    before = sys.modules.get("matplotlib.pyplot")
    viz.weight_histogram(W)
    if before is None:
        assert "matplotlib.pyplot" not in sys.modules
    else:
        assert before.get_fignums() == []


def test_frame_slider_html():
    png = viz.to_png(viz.error_histogram(W, W * 0.9), dpi=20)
    fs = viz.FrameSlider([("a", png, 'first "alt"'), ("b", png, "second <alt>")], name="knob", start=1)
    html = fs._repr_html_()
    assert html.count("data:image/png;base64,") == 3  # the shown frame, then both in the script
    assert 'alt="second &lt;alt&gt;"' in html and "knob" in html and 'max="1"' in html
    assert '"first \\"alt\\""' in html  # JSON-escaped inside the script
    assert fs._repr_html_() != html  # each rendering gets its own element id
    with pytest.raises(ValueError, match="at least one"):
        viz.FrameSlider([])
    with pytest.raises(ValueError, match="start"):
        viz.FrameSlider([("a", png, "x")], start=1)


def test_method_tradeoff_draws_one_line_per_method_and_format():
    rows = [{"method": m, "format": f, "bits_per_weight": b, "mean_cos": c, "recall_at_1": 0.5}
            for m, off in (("rtn", 0.0), ("gptq", 0.01)) for f in ("nf4", "int4_asym")
            for b, c in ((4.25, 0.96 + off), (4.5, 0.97 + off), (5.0, 0.975 + off))]
    rows.append({"method": "float32", "format": "float32", "bits_per_weight": 32.0, "mean_cos": 1.0,
                 "recall_at_1": 0.6})
    fig = viz.method_tradeoff(rows, "mean_cos", baseline=1.0)
    ax = fig.axes[0]
    assert len(ax.lines) == 5  # four method/format lines and the float32 baseline
    xs, ys = ax.lines[0].get_data()
    assert list(xs) == [4.25, 4.5, 5.0] and list(ys) == [0.96, 0.97, 0.975]
    assert "GPTQ nf4" in viz.alt_text(fig) and "0.9850" in viz.alt_text(fig) and "1.0000" in viz.alt_text(fig)
    errs = {id(r): (r["recall_at_1"] - 0.1, r["recall_at_1"] + 0.1) for r in rows}
    fig = viz.method_tradeoff(rows, "recall_at_1", errors=errs)
    assert len(fig.axes[0].collections) == 4  # one error-bar set per line
    with pytest.raises(ValueError, match="metric"):
        viz.method_tradeoff(rows, "accuracy")
    with pytest.raises(ValueError, match="no rows"):
        viz.method_tradeoff(rows[-1:])
