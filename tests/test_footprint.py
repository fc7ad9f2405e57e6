"""int4ref.footprint (the "will it fit?" calculator) and int4ref.explore.fit_explorer.

Checked against: hand-derived totals; the byte counts of real quantized arrays (int4ref,
its bitsandbytes and GGUF re-implementations, gguf-py) scaled to whole models; the block
sizes the gguf package records; monotonicity in every setting (hypothesis); and the
static page's script, run in node, against the Python totals.
"""
from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import int4ref
from int4ref import footprint as fp
from int4ref.interop import bitsandbytes as bnb
from int4ref.interop import gguf as ggml

ROOT = Path(__file__).resolve().parents[1]
G128 = "INT4 g128 (GPTQ/AWQ)"

# A model small enough to count by hand: d = 8, 2 heads of 4, 1 key/value head, d_ff = 16.
TINY = fp.Architecture("tiny", layers=2, d_model=8, heads=2, kv_heads=1, d_ff=16, vocab=10, context=100)


# ---- bits per weight from the layouts -----------------------------------------------------

def test_layout_formula_worked_examples():
    assert fp.LAYOUTS[G128].bits_per_weight() == 4 + 16 / 128 + 4 / 128 == 4.15625
    assert fp.LAYOUTS["NF4 + double quant"].bits_per_weight() == 4 + 8 / 64 + 32 / (64 * 256)
    assert fp.LAYOUTS["NF4 + double quant"].bits_per_weight() == int4ref.bits_per_weight_formula(
        64, double_quant=(8, 256))
    assert fp.LAYOUTS["NF4 (bitsandbytes)"].bits_per_weight() == int4ref.bits_per_weight_formula(64, scale_bits=32)
    assert fp.LAYOUTS["Q4_K"].bits_per_weight() == 4.5
    assert fp.LAYOUTS["IQ4_XS"].bits_per_weight() == fp.LAYOUTS["MXFP4"].bits_per_weight() == 4.25
    assert fp.LAYOUTS["NVFP4"].bits_per_weight() == 4.5
    assert fp.KV_DTYPES == {"fp16": 16.0, "fp8": 8.0, "q8_0": 8.5, "q4_0": 4.5}


def test_gguf_layouts_match_the_block_sizes_gguf_records():
    gguf = pytest.importorskip("gguf")
    checked = 0
    for name, bits in fp.GGUF_BITS.items():
        weights, nbytes = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[name]]
        assert 8 * nbytes / weights == bits, name
        checked += 1
    assert checked >= 12
    for name in ("Q4_0", "Q4_1", "Q4_K", "IQ4_XS", "MXFP4", "NVFP4"):
        weights, nbytes = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[name]]
        layout = fp.LAYOUTS[name]
        assert layout.block_bytes() * weights == nbytes * max(w for _, _, w in layout.metadata), name


def test_block_layout_rejects_bad_fields():
    with pytest.raises(ValueError, match="code_bits"):
        fp.BlockLayout("x", 0)
    with pytest.raises(ValueError, match="weights served by 'scale'"):
        fp.BlockLayout("x", 4, (("scale", 16, 0),))
    assert fp.BlockLayout("x", 3, (("a", 3, 5),)).block_bytes() is None   # 3*5 + 3 = 18 bits: not whole bytes
    assert fp.BlockLayout("x", 4, (("d", 16, 32),)).block_bytes() == 18


# ---- parameters, KV cache, activations -----------------------------------------------------

@pytest.mark.parametrize("name", list(fp.MODELS))
def test_param_counts_closed_form_equals_sum_over_tensors(name):
    arch = fp.MODELS[name]
    tensors = list(arch.tensors())
    p = arch.param_counts()
    assert sum(t.size for t in tensors) == p.total
    assert sum(t.size for t in tensors if t.block_linear) == p.linear
    assert len({t.name for t in tensors}) == len(tensors)


def test_param_counts_published_totals():
    # the totals the model cards give (6.74B, 13.0B, 8.03B, 7.62B), exact from the shapes
    assert fp.MODELS["Llama-2-7B"].param_counts().total == 6_738_415_616
    assert fp.MODELS["Llama-2-13B"].param_counts().total == 13_015_864_320
    assert fp.MODELS["Llama-3-8B"].param_counts().total == 8_030_261_248
    assert fp.MODELS["Qwen2.5-7B"].param_counts().total == 7_615_616_512


def test_tiny_model_by_hand():
    # attention 2*8*8 + 2*8*4 = 192, MLP 3*8*16 = 384: per block 576, two blocks 1152
    p = TINY.param_counts()
    assert p.linear == 1152
    assert p.other == 2 * 10 * 8 + (2 * 2 + 1) * 8 == 200
    tied = fp.Architecture("tied", 2, 8, 2, 1, 16, 10, 100, tied_embeddings=True, qkv_bias=True)
    assert tied.param_counts().other == 10 * 8 + 5 * 8 + 2 * (8 + 2 * 4)
    # KV: 2 * 2 layers * 1 head * 4 dims = 16 values per token
    assert TINY.kv_values_per_token() == 16
    assert fp.kv_cache_bytes(TINY, context=10, batch=3, kv_dtype="fp16") == 16 * 10 * 3 * 2
    assert fp.kv_cache_bytes(TINY, context=10, batch=3, kv_dtype="q4_0") == 16 * 10 * 3 * 4.5 / 8
    assert fp.activation_bytes(TINY, context=10, batch=3) == 3 * 10 * (2 * 8 + 2 * 16) * 2 + 3 * 10 * 4
    f = fp.footprint(TINY, 4.0, context=10, kv_dtype="fp8", batch=3)
    assert f.weights == (1152 * 4 + 200 * 16) / 8 == 976
    assert f.kv_cache == 16 * 10 * 3 * 1 == 480
    assert f.activations == 3 * 10 * 48 * 2 + 3 * 10 * 4 == 3000
    assert f.total == 976 + 480 + 3000
    assert f.parts() == {"weights": 976, "KV cache": 480, "activations": 3000, "total": 4456}
    assert f.gib()["total"] == 4456 / 2**30


def test_known_kv_figures():
    assert fp.kv_cache_bytes("Llama-2-13B", context=1) == 800 * 1024        # Kwon et al. (PagedAttention)
    assert fp.kv_cache_bytes("Llama-2-7B", context=4096) == 2 * 2**30        # 512 KiB x 4096 tokens
    assert fp.kv_cache_bytes("Llama-2-70B", 1) < fp.kv_cache_bytes("Llama-2-7B", 1)   # grouped-query attention


# ---- weights against real quantized arrays ---------------------------------------------------

ROWS = 64  # every out_features of the models below is a multiple of 64


def _measured_bits(kind, w):
    """Bits of one quantized (rows, in_features) float32 matrix, counted from the arrays."""
    if kind == "Q4_0":
        return 8 * ggml.quantize(w, "Q4_0").nbytes
    if kind == "Q4_1":
        return 8 * ggml.quantize(w, "Q4_1").nbytes
    if kind == "NF4 (bitsandbytes)":
        packed, state = bnb.quantize_4bit(w, blocksize=64, quant_type="nf4")
        return 8 * (packed.nbytes + state.absmax.nbytes)
    if kind == "NF4 + double quant":
        packed, state = bnb.quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=True)
        return 8 * (packed.nbytes + state.absmax.nbytes + state.state2.absmax.nbytes + 4)
    if kind == G128:
        return sum(int4ref.quantize(w, "int4_asym", group_size=128, scale_dtype=np.float16).storage_bits().values())
    if kind == "MXFP4":
        gguf = pytest.importorskip("gguf")
        return 8 * gguf.quants.quantize(w, gguf.GGMLQuantizationType.MXFP4).nbytes
    raise AssertionError(kind)


@pytest.mark.parametrize("model", ["Llama-2-7B", "Qwen2.5-7B"])
@pytest.mark.parametrize("kind", ["Q4_0", "Q4_1", "NF4 (bitsandbytes)", G128, "MXFP4", "NF4 + double quant"])
def test_weights_equal_real_quantized_bytes_scaled_to_the_model(model, kind):
    arch = fp.MODELS[model]
    rng = np.random.default_rng(0)
    shapes = {}
    for t in arch.tensors():
        if t.block_linear:
            shapes[t.shape] = shapes.get(t.shape, 0) + 1
    linear_bits = 0.0
    n_tensors = 0
    for (out_features, in_features), count in shapes.items():
        assert out_features % ROWS == 0
        w = rng.standard_normal((ROWS, in_features)).astype(np.float32)
        linear_bits += _measured_bits(kind, w) * (out_features // ROWS) * count
        n_tensors += (out_features // ROWS) * count
    measured = (linear_bits + arch.param_counts().other * 16) / 8
    model_bytes = fp.footprint(arch, kind, context=0).weights
    if kind == "NF4 + double quant":
        # the formula leaves out the per-tensor float32 offset and partly filled blocks of 256
        # absmax codes: at most 32 + 32 bits per quantized slice
        assert model_bytes <= measured <= model_bytes + n_tensors * 8
    else:
        assert measured == model_bytes


# ---- formats ---------------------------------------------------------------------------------

def test_resolve_format_accepts_every_form():
    arch = fp.MODELS["Llama-2-7B"]
    p = arch.param_counts()
    assert fp.resolve_format("Q4_K") is fp.WEIGHT_FORMATS["Q4_K"]
    assert fp.resolve_format(4.5).weight_bytes(arch) == fp.WEIGHT_FORMATS["Q4_K"].weight_bytes(arch)
    assert fp.resolve_format(np.float32(4.5)).weight_bytes(arch) == (p.linear * 4.5 + p.other * 16) / 8

    def gguf_file_size(a):
        return 123.0

    f = fp.resolve_format(gguf_file_size)
    assert f.name == "gguf_file_size" and fp.footprint(arch, gguf_file_size, context=0).weights == 123.0
    mix = fp.TensorMix("block linear at 4.5", lambda t, a: 4.5 if t.block_linear else None)
    assert mix.weight_bytes(arch) == fp.WEIGHT_FORMATS["Q4_K"].weight_bytes(arch)
    assert mix.weight_bytes(arch, other_bits=8) == (p.linear * 4.5 + p.other * 8) / 8
    head_q6 = fp.TensorMix("head in Q6_K", lambda t, a: fp.GGUF_BITS["Q6_K"] if t.name == "output.weight"
                           else 4.5 if t.block_linear else None)
    head = arch.vocab * arch.d_model
    assert head_q6.weight_bytes(arch) == mix.weight_bytes(arch) + head * (fp.GGUF_BITS["Q6_K"] - 16) / 8
    assert head_q6.tensor_bits(arch)["output.weight"] == 6.5625


def test_q4_k_m_is_llama_cpps_mix():
    """Q4_K_M and Q4_K_S are llama.cpp's per-tensor mixes (int4ref.interop.gguf.mix, checked against
    libllama in tests/test_gguf_mix.py): Llama-2-7B's Q4_K_M is the 4.84 bits per weight llama.cpp's
    quantizer prints for it (its dry run: 3891.24 MiB over 6.74 B weights), not Q4_K's 4.5."""
    from int4ref.interop.gguf import mix

    arch = fp.MODELS["Llama-2-7B"]
    bpw = 8 * fp.WEIGHT_FORMATS["Q4_K_M"].weight_bytes(arch) / arch.param_counts().total
    shapes = mix.llama_shaped_tensors(32, 4096, 11008, 32000, 32)
    assert bpw == pytest.approx(mix.file_bits_per_weight(shapes, "Q4_K_M"), rel=1e-12)
    assert round(bpw, 2) == 4.84
    for name in fp.MODELS:
        arch = fp.MODELS[name]
        m = 8 * fp.WEIGHT_FORMATS["Q4_K_M"].weight_bytes(arch) / arch.param_counts().total
        s = 8 * fp.WEIGHT_FORMATS["Q4_K_S"].weight_bytes(arch) / arch.param_counts().total
        assert 4.5 < s < m < fp.GGUF_BITS["Q6_K"], name


@pytest.mark.parametrize("call, match", [
    (lambda: fp.footprint("Llama-2-7B", 4.5, context=-1), "context must be a non-negative integer, got -1"),
    (lambda: fp.footprint("Llama-2-7B", 4.5, context=2.5), "context must be a non-negative integer"),
    (lambda: fp.footprint("Llama-2-7B", 4.5, context=8192), "context 8192 is longer than Llama-2-7B's 4096"),
    (lambda: fp.footprint("Llama-2-7B", 4.5, batch=0), "batch must be a positive integer, got 0"),
    (lambda: fp.footprint("Llama-2-7B", 4.5, batch=True), "batch must be a positive integer"),
    (lambda: fp.footprint("GPT-5", 4.5), r"unknown model 'GPT-5'; known: \["),
    (lambda: fp.footprint("Llama-2-7B", "int3"), r"unknown weight format 'int3'"),
    (lambda: fp.footprint("Llama-2-7B", -4), "bits per weight must be a positive finite number"),
    (lambda: fp.footprint("Llama-2-7B", float("nan")), "bits per weight must be a positive finite number"),
    (lambda: fp.footprint("Llama-2-7B", 4.5, kv_dtype="int2"), r"unknown KV-cache dtype 'int2'; known: \["),
    (lambda: fp.footprint("Llama-2-7B", 4.5, other_bits=0), "other_bits must be a positive finite number"),
    (lambda: fp.footprint("Llama-2-7B", lambda a: -1.0), "weight bytes must be a non-negative finite number"),
    (lambda: fp.smallest_gpu(-1), "total_bytes must be a non-negative number"),
    (lambda: fp.Architecture("bad", 2, 10, 3, 1, 16, 10, 100), "d_model 10 is not a multiple of heads 3"),
    (lambda: fp.Architecture("bad", 2, 12, 3, 2, 16, 10, 100), "heads 3 is not a multiple of kv_heads 2"),
    (lambda: fp.Architecture("bad", 0, 12, 3, 1, 16, 10, 100), "layers must be a positive integer"),
])
def test_bad_input_gets_a_clear_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_a_format_of_the_wrong_kind_is_a_type_error():
    with pytest.raises(TypeError, match="a weight format must be"):
        fp.footprint("Llama-2-7B", [4.5])


# ---- GPUs ----------------------------------------------------------------------------------

def test_smallest_gpu_edges():
    sizes = [g.memory_bytes for g in fp.GPUS]
    assert sizes == sorted(sizes) and fp.GPUS[0].memory_bytes == 12 * 2**30
    for g in fp.GPUS:
        assert fp.smallest_gpu(g.memory_bytes) is g                      # exactly full still fits
    assert fp.smallest_gpu(fp.GPUS[0].memory_bytes + 1) is fp.GPUS[1]
    assert fp.smallest_gpu(0) is fp.GPUS[0]
    assert fp.smallest_gpu(fp.GPUS[-1].memory_bytes + 1) is None
    assert fp.footprint("Llama-2-70B", "FP16").gpu is fp.GPUS[-1]      # 130 GiB: only the H200
    assert all(g.source for g in fp.GPUS) and all(a.source for a in fp.MODELS.values())


def test_every_cited_key_is_in_the_bibliography():
    bib = (ROOT / "book" / "references.bib").read_text(encoding="utf-8")
    keys = {g.source for g in fp.GPUS} | {a.source for a in fp.MODELS.values()} | {
        b.source for b in fp.LAYOUTS.values()}
    missing = [k for k in keys if not re.search(r"@\w+\{" + re.escape(k) + ",", bib)]
    assert not missing


# ---- monotonicity ----------------------------------------------------------------------------

MODEL_NAMES = st.sampled_from(list(fp.MODELS))
FORMATS = st.sampled_from(list(fp.WEIGHT_FORMATS))
KV = st.sampled_from(list(fp.KV_DTYPES))


@settings(max_examples=60, deadline=None)
@given(MODEL_NAMES, FORMATS, KV, st.integers(0, 4096), st.integers(0, 4096), st.integers(1, 64), st.integers(1, 64))
def test_total_grows_with_context_and_batch(model, fmt, kv, c1, c2, b1, b2):
    lo_c, hi_c = sorted((c1, c2))
    lo_b, hi_b = sorted((b1, b2))
    small = fp.footprint(model, fmt, context=lo_c, kv_dtype=kv, batch=lo_b)
    large = fp.footprint(model, fmt, context=hi_c, kv_dtype=kv, batch=hi_b)
    assert small.weights == large.weights
    assert small.kv_cache <= large.kv_cache and small.activations <= large.activations
    assert small.total <= large.total
    if small.gpu is not None and large.gpu is not None:
        assert small.gpu.memory_bytes <= large.gpu.memory_bytes
    if small.gpu is None:
        assert large.gpu is None


@settings(max_examples=60, deadline=None)
@given(MODEL_NAMES, st.floats(0.5, 32), st.floats(0.5, 32), st.integers(0, 4096), st.integers(1, 16))
def test_total_grows_with_bits(model, bits1, bits2, context, batch):
    lo, hi = sorted((bits1, bits2))
    a = fp.footprint(model, lo, context=context, batch=batch)
    b = fp.footprint(model, hi, context=context, batch=batch)
    assert a.weights <= b.weights and a.total <= b.total


@settings(max_examples=30, deadline=None)
@given(MODEL_NAMES, st.integers(1, 4096), st.integers(1, 16))
def test_kv_dtypes_order(model, context, batch):
    kv = {k: fp.kv_cache_bytes(model, context, batch, k) for k in fp.KV_DTYPES}
    assert kv["q4_0"] < kv["fp8"] < kv["q8_0"] < kv["fp16"]
    assert math.isclose(kv["fp16"] / kv["q8_0"], 16 / 8.5)


# ---- the explorer and the static calculator ---------------------------------------------------

def test_footprint_bars_alt_text_from_the_numbers():
    from int4ref.explore.fit_explorer import footprint_bars

    fps = [fp.footprint(m, G128) for m in ("Llama-2-7B", "Llama-3-70B")]
    fig = footprint_bars(fps)
    alt = fig.int4ref_alt
    for f in fps:
        assert f"total {f.gib()['total']:.1f} GiB, smallest GPU {f.gpu.name}" in alt
    with pytest.raises(ValueError, match="at least one"):
        footprint_bars([])
    with pytest.raises(ValueError, match="1 labels for 2 footprints"):
        footprint_bars(fps, labels=["x"])


def test_fit_explorer_drives_every_control():
    pytest.importorskip("ipywidgets")
    from int4ref.explore.fit_explorer import FitExplorer

    ex = FitExplorer()
    ex.widget()
    assert ex.error is None and ex.picture()
    for control in ex.controls():
        for value in control.sweep():
            ex.widgets[control.name].value = value
            assert ex.error is None, (control.name, value, ex.error)
            s = ex.settings
            expected = fp.footprint(s["model"], s["format"], context=s["context"], kv_dtype=s["kv_dtype"],
                                    batch=s["batch"])
            assert ex.result["footprint"] == expected
            assert ex.numbers(ex.result)["total (GiB)"] == expected.gib()["total"]
    # a model with a shorter context pulls the context down to what it allows
    ex.widgets["model"].value = "Llama-3.1-8B"
    ex.widgets["context"].value = 131072
    ex.widgets["model"].value = "Llama-2-7B"
    assert ex.settings["context"] == 4096 and ex.error is None
    ex.widgets["context"].value = 65536
    assert ex.settings["context"] == 4096 and ex.widgets["context"].value == 4096
    with pytest.raises(ValueError, match="longer than Llama-2-7B's"):
        FitExplorer().compute(model="Llama-2-7B", context=8192)


def test_static_calculator_tables_add_up_to_the_footprint():
    from int4ref.explore.fit_explorer import StaticFitCalculator

    calc = StaticFitCalculator(models=["Llama-2-7B", "Llama-3.1-8B"], formats=["FP16", "Q4_K"])
    t = calc.tables()
    for mi, m in enumerate(t["models"]):
        for fi, f in enumerate(t["formats"]):
            for ki, k in enumerate(t["kv_dtypes"]):
                for ci, c in enumerate(t["contexts"]):
                    for bi, b in enumerate(t["batches"]):
                        kv, act = t["kv"][mi][ki][ci][bi], t["act"][mi][ci][bi]
                        if c > fp.MODELS[m].context:
                            assert kv is None and act is None
                            continue
                        ref = fp.footprint(m, f, context=c, kv_dtype=k, batch=b)
                        assert t["weights"][mi][fi] + kv + act == pytest.approx(ref.total, rel=1e-15)
    html = calc._repr_html_()
    assert html.count("<select") == 5 and "int4refFit" in html
    with pytest.raises(ValueError, match="unknown model"):
        StaticFitCalculator(models=["nope"])
    with pytest.raises(ValueError, match="formats must not be empty"):
        StaticFitCalculator(formats=[])


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_static_calculator_script_agrees_with_python():
    from int4ref.explore.fit_explorer import StaticFitCalculator

    calc = StaticFitCalculator()
    t = calc.tables()
    picks = [(0, 0, 0, 4, 0), (5, 2, 3, 9, 0), (4, 3, 0, 5, 3), (2, 0, 0, 4, 6), (0, 1, 1, 9, 0)]
    script = calc.SCRIPT + f"var t = {json.dumps(t)};\nvar picks = {json.dumps(picks)};\n" + (
        "console.log(JSON.stringify(picks.map(function(p) {"
        " return int4refFit(t, {m: p[0], f: p[1], k: p[2], c: p[3], b: p[4]}); })));")
    out = json.loads(subprocess.run(["node", "-e", script], capture_output=True, text=True, check=True).stdout)
    for (m, f, k, c, b), r in zip(picks, out):
        model, context = t["models"][m], t["contexts"][c]
        if context > fp.MODELS[model].context:
            assert r is None
            continue
        ref = fp.footprint(model, t["formats"][f], context=context, kv_dtype=t["kv_dtypes"][k],
                           batch=t["batches"][b])
        assert r["total"] == pytest.approx(ref.total, rel=1e-15)
        assert r["gpu"] == (ref.gpu.name if ref.gpu else None)


# ---- the chapter uses the module ---------------------------------------------------------------

def test_memory_chapter_imports_the_calculator_instead_of_defining_one():
    text = (ROOT / "book" / "memory.md").read_text(encoding="utf-8")
    assert "from int4ref.footprint import" in text
    assert not re.search(r"^def (footprint|kv_cache_bytes|activation_bytes|param_counts)\b", text, re.M)


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_static_calculator_page_script_runs_and_shows_the_default():
    """The page's whole script, run in node against a stand-in for the DOM: it reads the five
    selects and writes the parts, the total and the GPU of the chosen setting."""
    from int4ref.explore.fit_explorer import StaticFitCalculator

    calc = StaticFitCalculator()
    script = re.search(r"<script>(.*)</script>", calc._repr_html_(), re.S).group(1)
    t = calc.tables()
    d = calc.default
    picks = {"m": t["models"].index(d["model"]), "f": t["formats"].index(d["format"]),
             "c": t["contexts"].index(d["context"]), "k": t["kv_dtypes"].index(d["kv_dtype"]),
             "b": t["batches"].index(d["batch"])}
    dom = (
        "var outEl = {textContent: ''}, barEl = {innerHTML: ''};"
        f"var picks = {json.dumps(picks)};"
        "var sels = Object.keys(picks).map(function(k) { return {dataset: {key: k}, value: String(picks[k]),"
        " addEventListener: function() {}}; });"
        "var root = {querySelectorAll: function() { return sels; },"
        " querySelector: function(q) { return q === '.out' ? outEl : barEl; }};"
        "var document = {getElementById: function() { return root; }};"
    )
    run = subprocess.run(["node", "-e", dom + script + "\nconsole.log(outEl.textContent);"],
                         capture_output=True, text=True, check=True)
    ref = fp.footprint(d["model"], d["format"], context=d["context"], kv_dtype=d["kv_dtype"], batch=d["batch"])
    assert f"= {ref.gib()['total']:.2f} GiB ({round(ref.total):,} bytes)" in run.stdout
    assert f"smallest GPU that holds it: {ref.gpu.name}" in run.stdout
