"""int4ref.interop.gguf.mix: the tensor types of llama.cpp's Q4_K_M / Q4_K_S files.

The unit tests check the rules as read in llama.cpp's src/llama-quant.cpp (llama-cpp-python
0.3.36 sdist) on hand-made cases; the ``@pytest.mark.peer`` test runs llama.cpp's own
``llama_model_quantize`` (libllama, built by tools/llama_peer.py) on small synthetic GGUF
models and compares the type of every tensor of its output with :func:`mix.tensor_types`.
"""
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from int4ref.interop import gguf as g
from int4ref.interop.gguf import mix

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import llama_peer  # noqa: E402

LLAMA2_7B = {"n_layer": 32, "n_embd": 4096, "n_ff": 11008, "n_vocab": 32000, "n_head": 32}
SMOLLM2_135M = {"n_layer": 30, "n_embd": 576, "n_ff": 1536, "n_vocab": 49152, "n_head": 9, "n_head_kv": 3,
                "tied_embeddings": True}


def layers_of(types, part, wanted):
    return [int(name.split(".")[1]) for name, t in types.items() if f".{part}." in name and t == wanted]


def test_use_more_bits_matches_the_c_formula_by_hand():
    # n = 32: i < 4, i >= 28, or (i - 4) % 3 == 2
    assert [i for i in range(32) if mix.use_more_bits(i, 32)] == [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27,
                                                                   28, 29, 30, 31]
    # n = 4: n/8 = 0, 7n/8 = 3: i >= 3, or i % 3 == 2
    assert [i for i in range(4) if mix.use_more_bits(i, 4)] == [2, 3]
    assert [i for i in range(1) if mix.use_more_bits(i, 1)] == [0]  # 7*1/8 = 0: every layer


def test_llama2_7b_q4_k_m():
    t = mix.llama_shaped_tensors(**LLAMA2_7B)
    types = mix.tensor_types(t, "Q4_K_M")
    assert list(types) == sorted(t, key=lambda n: (int(n.split(".")[1]) if n.startswith("blk.") else -1, n))
    more = [i for i in range(32) if mix.use_more_bits(i, 32)]
    assert layers_of(types, "attn_v", "Q6_K") == more
    assert layers_of(types, "ffn_down", "Q6_K") == more
    assert types["output.weight"] == "Q6_K" and types["token_embd.weight"] == "Q4_K"  # untied
    assert types["output_norm.weight"] == "F32" and types["blk.7.ffn_norm.weight"] == "F32"
    assert {types[f"blk.5.{p}.weight"] for p in ("attn_q", "attn_k", "attn_output", "ffn_gate", "ffn_up")} == {"Q4_K"}
    assert Counter(types.values()) == {"Q4_K": 32 * 7 - 2 * len(more) + 1, "Q6_K": 2 * len(more) + 1, "F32": 65}
    # bytes by hand: Q4_K = 144 bytes per 256 weights, Q6_K = 210, F32 = 4 per weight
    attn, ffn, embd = 4096 * 4096, 4096 * 11008, 32000 * 4096
    n_more = len(more)
    q6 = n_more * (attn + ffn) + embd  # attn_v and ffn_down of the "more bits" layers, output
    q4 = 32 * (4 * attn + 3 * ffn) - n_more * (attn + ffn) + embd  # the rest and token_embd
    f32 = 65 * 4096
    assert mix.file_bytes(t) == q4 // 256 * 144 + q6 // 256 * 210 + 4 * f32
    assert 4.8 < mix.file_bits_per_weight(t) < 4.9  # not the 4.5 of Q4_K alone


def test_llama2_7b_q4_k_s():
    t = mix.llama_shaped_tensors(**LLAMA2_7B)
    types = mix.tensor_types(t, "Q4_K_S")
    assert layers_of(types, "attn_v", "Q5_K") == [0, 1, 2, 3]
    assert layers_of(types, "ffn_down", "Q5_K") == [0, 1, 2, 3]  # i < 32/8
    assert types["output.weight"] == "Q6_K"
    assert Counter(types.values()) == {"Q4_K": 32 * 7 - 8 + 1, "Q5_K": 8, "Q6_K": 1, "F32": 65}
    assert mix.file_bits_per_weight(t, "Q4_K_S") < mix.file_bits_per_weight(t, "Q4_K_M")


def test_tied_embeddings_take_the_output_rule():
    t = mix.llama_shaped_tensors(4, 512, 1024, 1000, 8, tied_embeddings=True)
    assert mix.tensor_types(t)["token_embd.weight"] == "Q6_K"
    t = mix.llama_shaped_tensors(4, 512, 1024, 1000, 8)
    assert mix.tensor_types(t)["token_embd.weight"] == "Q4_K"


def test_rows_not_a_multiple_of_256_fall_back():
    t = mix.llama_shaped_tensors(**SMOLLM2_135M)  # rows of 576 = 2.25 * 256 (= 18 * 32)
    rules = mix.tensor_type_rules(t)
    types = {n: r[0] for n, r in rules.items()}
    assert types["token_embd.weight"] == "Q8_0" and "row % 256" in rules["token_embd.weight"][1]
    more = [i for i in range(30) if mix.use_more_bits(i, 30)]
    assert layers_of(types, "attn_v", "Q8_0") == more  # Q6_K -> Q8_0
    assert layers_of(types, "attn_q", "Q5_0") == list(range(30))  # Q4_K -> Q5_0
    assert layers_of(types, "ffn_down", "Q6_K") == more  # rows of n_ff = 1536 = 6 * 256: no fallback
    assert layers_of(types, "ffn_down", "Q4_K") == [i for i in range(30) if i not in more]
    assert "tensor_type_fallback" in rules["blk.0.attn_q.weight"][1]
    odd = {"blk.0.attn_q.weight": (64, 100), "blk.0.attn_v.weight": (64, 100), "output.weight": (10, 100),
           "blk.0.ffn_down.weight": (64, 320), "blk.0.attn_norm.weight": (100,)}
    assert mix.tensor_types(odd, "Q4_K_M") == {"output.weight": "F16", "blk.0.attn_norm.weight": "F32",
                                               "blk.0.attn_q.weight": "F16", "blk.0.attn_v.weight": "F16",
                                               "blk.0.ffn_down.weight": "Q8_0"}
    assert mix.tensor_types(odd, "Q4_K_S")["blk.0.ffn_down.weight"] == "Q5_0"  # i < 1/8 is false: Q4_K -> Q5_0


def test_qwen2_biases_and_qwen3_norms_stay_f32():
    t = mix.llama_shaped_tensors(4, 512, 1024, 1000, 8, 2, qkv_bias=True)
    types = mix.tensor_types(t, arch="qwen2")
    assert {types[f"blk.1.attn_{p}.bias"] for p in "qkv"} == {"F32"}
    t = mix.llama_shaped_tensors(4, 512, 1024, 1000, 8, 2, qk_norm=True)
    assert mix.tensor_types(t, arch="qwen3")["blk.2.attn_k_norm.weight"] == "F32"


def test_70b_moves_attn_v_to_q5_k():
    t = mix.llama_shaped_tensors(80, 512, 1024, 1000, 8, 1)  # GQA: a LLaMA "70B"
    types = mix.tensor_types(t)
    more = [i for i in range(80) if mix.use_more_bits(i, 80)]
    assert layers_of(types, "attn_v", "Q6_K") == more
    assert layers_of(types, "attn_v", "Q5_K") == [i for i in range(80) if i not in more]
    no_gqa = mix.tensor_types(mix.llama_shaped_tensors(80, 512, 1024, 1000, 8))  # "65B": no change
    assert layers_of(no_gqa, "attn_v", "Q5_K") == []
    assert layers_of(mix.tensor_types(t, "Q4_K_S"), "attn_v", "Q5_K") == list(range(80))
    assert layers_of(mix.tensor_types(mix.llama_shaped_tensors(80, 512, 1024, 1000, 8), arch="qwen2"),
                     "attn_v", "Q5_K") != []  # Qwen2 with 80 layers is 70B whatever its heads


def test_eight_experts():
    t = mix.llama_shaped_tensors(8, 512, 1024, 1000, 8, 2)
    types = mix.tensor_types(t, n_expert=8)
    assert {types[f"blk.3.{p}.weight"] for p in ("attn_v", "attn_k")} == {"Q8_0"}
    assert types["blk.3.attn_output.weight"] == "Q5_K"
    assert mix.tensor_types(t, n_expert=4)["blk.3.attn_k.weight"] == "Q4_K"


def test_sizes_agree_with_block_types_and_gguf_py():
    gguf = pytest.importorskip("gguf")
    for name in ("F32", "F16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q4_K", "Q5_K", "Q6_K"):
        assert mix.type_size(name) == tuple(gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[name]])
        if name in g.BLOCK_TYPES:
            assert mix.type_size(name) == (g.BLOCK_TYPES[name].block_size, g.BLOCK_TYPES[name].type_size)
    assert mix.tensor_bytes((3, 512), "Q6_K") == 3 * 2 * 210


def test_bad_input_is_refused():
    t = mix.llama_shaped_tensors(2, 256, 512, 100, 4)
    with pytest.raises(ValueError, match="ftype"):
        mix.tensor_types(t, "Q4_K_L")
    with pytest.raises(ValueError, match="arch"):
        mix.tensor_types(t, arch="falcon")
    with pytest.raises(ValueError, match="n_layer"):
        mix.tensor_types(t, n_layer=1)
    with pytest.raises(ValueError, match="positive"):
        mix.tensor_types({"blk.0.attn_q.weight": (0, 256)})
    with pytest.raises(ValueError, match="n_layer"):
        mix.tensor_types({"output.weight": (10, 256)})
    with pytest.raises(ValueError, match="blocks of 256"):
        mix.tensor_bytes((2, 100), "Q4_K")


# --- live against llama.cpp's quantizer ------------------------------------------------------

SYNTHETIC = [  # (arch, n_layer, n_embd, n_ff, n_vocab, n_head, n_head_kv, tied, n_expert)
    ("llama", 1, 256, 512, 300, 4, 4, False, 0),
    ("llama", 4, 256, 768, 300, 4, 2, False, 0),
    ("llama", 8, 256, 512, 300, 4, 1, True, 0),
    ("llama", 13, 256, 512, 300, 4, 4, False, 0),
    ("llama", 32, 256, 512, 300, 4, 2, False, 0),
    ("qwen2", 4, 256, 512, 300, 4, 2, True, 0),
    ("qwen2", 13, 512, 768, 300, 8, 2, False, 0),
    ("qwen2", 32, 256, 512, 300, 4, 2, True, 0),
    ("llama", 6, 320, 512, 300, 5, 5, False, 0),  # rows of 320: not a multiple of 256 -> fallbacks
    ("qwen2", 5, 288, 544, 300, 4, 2, True, 0),  # rows of 288 and 544 (ffn_down)
    ("llama", 3, 272, 512, 300, 4, 4, False, 0),  # rows of 272: not a multiple of 32 either -> F16
    ("llama", 80, 256, 256, 300, 4, 2, False, 0),  # llama.cpp calls this a 70B (80 layers, GQA)
    ("llama", 80, 256, 256, 300, 4, 4, False, 0),  # ... and this a 65B
    ("qwen2", 80, 256, 256, 300, 4, 4, True, 0),  # Qwen2 with 80 layers: 70B
    ("llama", 8, 256, 512, 300, 4, 2, False, 8),  # expert_count = 8 (the rules read only the count)
]


@pytest.fixture(scope="module")
def llama():
    try:
        return llama_peer.load()
    except llama_peer.PeerUnavailable as exc:
        pytest.skip(f"libllama peer unavailable: {exc}")


@pytest.mark.peer
@pytest.mark.parametrize("ftype", ["Q4_K_M", "Q4_K_S"])
@pytest.mark.parametrize("spec", SYNTHETIC, ids=lambda s: f"{s[0]}-{s[1]}L-{s[2]}-kv{s[6]}-e{s[8]}")
def test_types_match_llama_model_quantize(llama, tmp_path, spec, ftype):
    arch, n_layer, n_embd, n_ff, n_vocab, n_head, n_head_kv, tied, n_expert = spec
    shapes = mix.llama_shaped_tensors(n_layer, n_embd, n_ff, n_vocab, n_head, n_head_kv,
                                      tied_embeddings=tied, qkv_bias=arch == "qwen2")
    src = tmp_path / "f32.gguf"
    llama_peer.write_synthetic_model(src, arch, shapes, n_head=n_head, n_head_kv=n_head_kv, n_ff=n_ff,
                                     n_expert=n_expert)
    dst = tmp_path / f"{ftype}.gguf"
    llama.quantize(src, dst, ftype)
    written = g.read_gguf(dst)
    got = {name: type_name for name, (_, type_name, _) in written.items()}
    assert got == mix.tensor_types(shapes, ftype, arch, n_expert=n_expert)
    assert sum(data.nbytes for data, _, _ in written.values()) == mix.file_bytes(shapes, ftype, arch,
                                                                                n_expert=n_expert)
    for name, (data, type_name, shape) in written.items():  # the Q6_K tensors decode like int4ref's
        if type_name == "Q6_K":
            x = llama_peer.synthetic_values(name, shape)
            np.testing.assert_array_equal(data, g.quantize(x, "Q6_K"))


FULL_SIZE = {  # label: (arch, llama_shaped_tensors arguments)
    "llama2-7b": ("llama", LLAMA2_7B),
    "smollm2-135m": ("llama", SMOLLM2_135M),
    "qwen2-24L-896": ("qwen2", {"n_layer": 24, "n_embd": 896, "n_ff": 4864, "n_vocab": 151936, "n_head": 14,
                                "n_head_kv": 2, "tied_embeddings": True, "qkv_bias": True}),
}


@pytest.mark.peer
@pytest.mark.parametrize("ftype", ["Q4_K_M", "Q4_K_S"])
@pytest.mark.parametrize("label", sorted(FULL_SIZE))
def test_full_size_models_match_llama_dry_run(llama, tmp_path, label, ftype):
    """Real model shapes, through llama.cpp's --dry-run (a sparse input file, no data read):
    every tensor's type and the size llama.cpp prints."""
    arch, kwargs = FULL_SIZE[label]
    shapes = mix.llama_shaped_tensors(**kwargs)
    src = tmp_path / "shape-only.gguf"
    llama_peer.write_shape_only_model(src, arch, shapes, n_head=kwargs["n_head"],
                                      n_head_kv=kwargs.get("n_head_kv", kwargs["n_head"]), n_ff=kwargs["n_ff"])
    types, mib, bpw = llama.dry_run_types(src, ftype)
    assert types == mix.tensor_types(shapes, ftype, arch)
    assert round(mix.file_bytes(shapes, ftype, arch) / 2**20, 2) == mib
    assert round(mix.file_bits_per_weight(shapes, ftype, arch), 2) == bpw
