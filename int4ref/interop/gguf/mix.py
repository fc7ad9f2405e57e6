"""Which GGUF type each tensor gets in a llama.cpp "Q4_K_M" or "Q4_K_S" file, and what the
file then weighs.

"Q4_K_M" names a mix, not one type: llama.cpp's quantizer (``llama_model_quantize``,
src/llama-quant.cpp of llama.cpp as vendored in the llama-cpp-python 0.3.36 sdist) starts
every matrix at the ftype's default type, Q4_K, and then moves some tensors to other types.
This module restates those rules for LLaMA- and Qwen-style models (``arch`` "llama",
"qwen2", "qwen3"), each rule citing the function of llama-quant.cpp it comes from:

* which tensors are quantized at all (``tensor_allows_quantization``): only tensors of two or
  more dimensions whose name ends in "weight" and is not a norm ("_norm.weight") or an
  expert router ("ffn_gate_inp.weight"); the rest (norms, biases: all 1-D) keep the type
  they have in the source file, F32 as convert_hf_to_gguf.py writes them;
* the output matrix, and the token embedding when the model has no ``output.weight``
  (tied embeddings): Q6_K, or Q8_0 when its rows are not a multiple of 256
  (``llama_tensor_get_type_impl``, OUTPUT / TOKEN_EMBD branch); an untied token embedding
  keeps Q4_K;
* attn_v: Q4_K_M gives Q6_K to the layers where ``use_more_bits(i, n)`` holds (the first and
  last eighth of the layers and every third in between), Q4_K_S gives Q5_K to the first 4;
  a 70B model (LLaMA or Qwen2 with 80 layers; LLaMA only with grouped-query attention)
  moves the remaining Q4_K ones to Q5_K, and an 8-expert model gives Q8_0 to all;
* ffn_down: Q4_K_M gives Q6_K where ``use_more_bits(i, n)`` holds, Q4_K_S gives Q5_K to the
  first eighth of the layers;
* 8-expert models only: attn_k Q8_0, attn_output Q5_K;
* last (``tensor_type_fallback``): a type whose block does not divide the row length falls
  back, Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, and to F16 if 32 does not divide it either.

``i`` counts the attn_v (or ffn_down) tensors in the order llama.cpp visits them, which is by
layer number (``weight_name_comparer`` in llama-model-loader.h), so ``i`` is the layer index
in a dense model; ``n`` is the number of attn_v tensors, or for ffn_down the model's layer
count. ``n_gqa`` and whether an importance matrix is given only matter to other mixes
(Q2_K, IQ3_*, IQ4_*, Q4_0 / Q5_0), not to Q4_K_M or Q4_K_S.

Shapes are numpy order, as :func:`int4ref.interop.gguf.read_gguf` returns them: the last
axis is the row (ggml's ``ne[0]``), e.g. ``(n_vocab, n_embd)`` for ``token_embd.weight``.
The byte counts are those of the tensor data (rows times ggml's row size); a file adds its
header (metadata and tokenizer) and alignment padding of under 32 bytes per tensor.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

from . import fp4, iq4, q4, q4_k, q6_k, q8_0

__all__ = [
    "FTYPES",
    "ARCHS",
    "use_more_bits",
    "llama_shaped_tensors",
    "tensor_type_rules",
    "tensor_types",
    "type_size",
    "tensor_bytes",
    "file_bytes",
    "file_bits_per_weight",
]

#: The llama.cpp file types this module knows (enum llama_ftype in include/llama.h:
#: LLAMA_FTYPE_MOSTLY_Q4_K_S = 14, LLAMA_FTYPE_MOSTLY_Q4_K_M = 15).
FTYPES = {"Q4_K_S": 14, "Q4_K_M": 15}
#: Architectures (GGUF ``general.architecture``) whose rules are those restated here.
ARCHS = ("llama", "qwen2", "qwen3")

# (values per block, bytes per block) of ggml's type_traits (ggml/src/ggml.c), for the types
# the mix can produce; int4ref's own BlockType classes must agree (tests/test_gguf_mix.py).
_GGML_TYPE_SIZES = {
    "F32": (1, 4), "F16": (1, 2),
    "Q4_0": (32, 18), "Q4_1": (32, 20), "Q5_0": (32, 22), "Q5_1": (32, 24), "Q8_0": (32, 34),
    "Q4_K": (256, 144), "Q5_K": (256, 176), "Q6_K": (256, 210),
}
_BLOCK_TYPES = {t.name: t for module in (q4, iq4, q8_0, q4_k, q6_k, fp4) for t in module.TYPES}

_LAYER = re.compile(r"blk\.(\d+)\.")
# Name parts that tensor_allows_quantization never quantizes (beyond the "weight" suffix,
# the ".._norm.weight" rule and the dimension count); GLM5-only and multimodal ones omitted.
_NEVER_QUANTIZED = (
    "_norm.weight", "ffn_gate_inp.weight", "ffn_gate_tid2eid.weight", "altup", "laurel",
    "per_layer_model_proj", "ssm_conv1d", "shortconv.conv.weight", "indexer.k_proj.weight",
    "indexer.q_proj.weight", "time_mix_first.weight", "time_mix_w0.weight", "time_mix_w1.weight",
    "time_mix_w2.weight", "time_mix_v0.weight", "time_mix_v1.weight", "time_mix_v2.weight",
    "time_mix_a0.weight", "time_mix_a1.weight", "time_mix_a2.weight", "time_mix_g1.weight",
    "time_mix_g2.weight", "time_mix_decay_w1.weight", "time_mix_decay_w2.weight",
    "time_mix_lerp_fused.weight", "attn_rel_b.weight",
)
_NEVER_QUANTIZED_NAMES = ("position_embd.weight", "token_types.weight")
_FALLBACK = {"Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0"}  # tensor_type_fallback


def use_more_bits(i_layer: int, n_layers: int) -> bool:
    """llama-quant.cpp's ``use_more_bits``: the first and last eighth of the layers, and
    every third layer in between (C integer division; ``%`` of a negative number is never
    2 there, as in Python for these arguments)."""
    eighth = n_layers // 8
    return i_layer < eighth or i_layer >= 7 * n_layers // 8 or (i_layer - eighth) % 3 == 2


def _category(name: str) -> str:
    """``tensor_get_category``: first match wins, by exact name or substring."""
    if name == "output.weight":
        return "output"
    if name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return "token_embd"
    for part, category in (("attn_qkv.weight", "attn_v"), ("attn_kv_b.weight", "attn_v"),
                           ("attn_v.weight", "attn_v"), ("attn_k.weight", "attn_k"),
                           ("attn_q.weight", "attn_q"), ("attn_output.weight", "attn_output"),
                           ("ffn_up", "ffn_up"), ("ffn_gate", "ffn_gate"), ("ffn_down", "ffn_down")):
        if part in name:  # attn_qkv / attn_kv_b count as attn_v (category_is_attn_v)
            return category
    return "other"


def _n_dims(shape) -> int:
    """``ggml_n_dims``: dimensions up to the last one above 1 in ggml order (numpy's first)."""
    dims = list(shape)
    while len(dims) > 1 and dims[0] == 1:
        dims.pop(0)
    return len(dims)


def _allows_quantization(name: str, shape) -> bool:
    """``tensor_allows_quantization`` with llama-quantize's defaults."""
    if _n_dims(shape) < 2 or not name.endswith("weight"):
        return False
    if name in _NEVER_QUANTIZED_NAMES:
        return False
    return not any(part in name for part in _NEVER_QUANTIZED)


def _visit_order(names):
    """The order of ``llama_model_loader::weights_map``: by layer number (-1 for tensors
    outside ``blk.N.``), then by name (``weight_name_comparer``)."""
    def key(name):
        m = _LAYER.match(name)
        return (int(m.group(1)) if m else -1, name)
    return sorted(names, key=key)


def _checked(tensors, ftype, arch, n_layer, n_expert):
    if ftype not in FTYPES:
        raise ValueError(f"ftype must be one of {', '.join(FTYPES)}, got {ftype!r}")
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {', '.join(ARCHS)} (other architectures have other rules, "
                         f"e.g. Falcon's), got {arch!r}")
    if not isinstance(tensors, Mapping) or not tensors:
        raise ValueError("tensors must be a non-empty dict of name -> shape")
    shapes = {}
    for name, shape in tensors.items():
        if not isinstance(name, str):
            raise TypeError(f"tensor names must be strings, got {name!r}")
        try:
            dims = tuple(int(s) for s in shape)
        except TypeError:
            raise TypeError(f"tensor {name!r}: shape must be a sequence of ints, got {shape!r}") from None
        if not dims or min(dims) <= 0:
            raise ValueError(f"tensor {name!r}: shape {dims} must have at least one dimension, all positive")
        shapes[name] = dims
    layers = [int(m.group(1)) for m in map(_LAYER.match, shapes) if m]
    if n_layer is None:
        if not layers:
            raise ValueError("no tensor is named blk.N.*: pass n_layer")
        n_layer = max(layers) + 1
    n_layer = int(n_layer)
    if n_layer <= 0 or (layers and max(layers) >= n_layer):
        raise ValueError(f"n_layer={n_layer} does not fit the tensor names (largest layer index "
                         f"{max(layers) if layers else None})")
    if int(n_expert) < 0:
        raise ValueError(f"n_expert must be >= 0, got {n_expert}")
    return shapes, n_layer, int(n_expert)


def _is_70b(arch, shapes, n_layer, n_expert):
    """``model.type == LLM_TYPE_70B`` as load_arch_hparams sets it (src/models/<arch>.cpp):
    Qwen2 with 80 layers; LLaMA with 80 layers, not 8 experts, and n_head != n_head_kv (read
    here from the rows of attn_q and attn_k)."""
    if n_layer != 80 or arch == "qwen3" or (arch == "llama" and n_expert == 8):
        return False
    if arch == "qwen2":
        return True
    q_rows = {shape[0] for name, shape in shapes.items() if name.endswith("attn_q.weight")}
    k_rows = {shape[0] for name, shape in shapes.items() if name.endswith("attn_k.weight")}
    if not q_rows or not k_rows:
        raise ValueError("an 80-layer llama model needs attn_q / attn_k tensors to tell 70B (GQA) from 65B")
    return q_rows != k_rows


def tensor_type_rules(tensors, ftype="Q4_K_M", arch="llama", n_layer=None, n_expert=0) -> dict:
    """For each tensor: ``(GGUF type name, the rule that chose it)``, in llama.cpp's visiting
    order. Arguments as :func:`tensor_types`."""
    shapes, n_layer, n_expert = _checked(tensors, ftype, arch, n_layer, n_expert)
    order = _visit_order(shapes)
    categories = {name: _category(name) for name in order}
    # init_quantize_state_counters
    n_attention_wv = sum(c == "attn_v" for c in categories.values())
    tied = "output" not in categories.values()
    is_70b = _is_70b(arch, shapes, n_layer, n_expert)
    i_attention_wv = i_ffn_down = 0
    result = {}
    for name in order:
        shape, category = shapes[name], categories[name]
        if not _allows_quantization(name, shape):
            result[name] = ("F32", "tensor_allows_quantization: 1-D, not a weight, or a norm: kept as in the source")
            continue
        new_type, rule = "Q4_K", f"llama_ftype_get_default_type({ftype}) = Q4_K"
        if category == "output" or (tied and category == "token_embd"):
            what = "output" if category == "output" else "token_embd (tied embeddings)"
            if shape[-1] % 256:
                new_type, rule = "Q8_0", f"llama_tensor_get_type_impl: {what}, row % 256 != 0 -> Q8_0"
            else:
                new_type, rule = "Q6_K", f"llama_tensor_get_type_impl: {what} -> Q6_K"
        elif category == "attn_v":
            i = i_attention_wv
            if ftype == "Q4_K_M" and use_more_bits(i, n_attention_wv):
                new_type = "Q6_K"
                rule = f"llama_tensor_get_type_impl: attn_v, Q4_K_M, use_more_bits({i}, {n_attention_wv})"
            elif ftype == "Q4_K_S" and i < 4:
                new_type, rule = "Q5_K", f"llama_tensor_get_type_impl: attn_v, Q4_K_S, i_attention_wv = {i} < 4"
            if is_70b and new_type == "Q4_K":
                new_type, rule = "Q5_K", "llama_tensor_get_type_impl: attn_v of a 70B model, Q4_K -> Q5_K"
            if n_expert == 8:
                new_type, rule = "Q8_0", "llama_tensor_get_type_impl: attn_v, n_expert == 8 -> Q8_0"
            i_attention_wv += 1
        elif category == "attn_k" and n_expert == 8:
            new_type, rule = "Q8_0", "llama_tensor_get_type_impl: attn_k, n_expert == 8 -> Q8_0"
        elif category == "ffn_down":
            i_layer = i_ffn_down
            if max(1, n_expert) > 1:  # layer_info: read the layer from the name
                m = _LAYER.match(name)
                if m is None:
                    raise ValueError(f"{name}: with n_expert > 1 llama.cpp reads the layer from blk.N. in the name")
                i_layer = int(m.group(1))
            if ftype == "Q4_K_M" and use_more_bits(i_layer, n_layer):
                new_type = "Q6_K"
                rule = f"llama_tensor_get_type_impl: ffn_down, Q4_K_M, use_more_bits({i_layer}, {n_layer})"
            elif ftype == "Q4_K_S" and i_layer < n_layer // 8:
                new_type, rule = "Q5_K", f"llama_tensor_get_type_impl: ffn_down, Q4_K_S, layer {i_layer} < {n_layer}/8"
            i_ffn_down += 1
        elif category == "attn_output" and n_expert == 8:
            new_type, rule = "Q5_K", "llama_tensor_get_type_impl: attn_output, n_expert == 8 -> Q5_K"
        # tensor_type_fallback
        row = shape[-1]
        if row % _GGML_TYPE_SIZES[new_type][0]:
            fallback = _FALLBACK.get(new_type, new_type)
            if row % _GGML_TYPE_SIZES[fallback][0]:
                fallback = "F16"
            rule = f"{rule}; tensor_type_fallback: row {row} % {_GGML_TYPE_SIZES[new_type][0]} != 0 -> {fallback}"
            new_type = fallback
        result[name] = (new_type, rule)
    return result


def tensor_types(tensors, ftype="Q4_K_M", arch="llama", n_layer=None, n_expert=0) -> dict:
    """The GGUF type llama.cpp's quantizer gives each tensor.

    ``tensors``: name -> shape (numpy order, last axis = row) of every tensor in the source
    file, named as in GGUF (``token_embd.weight``, ``blk.0.attn_v.weight``, ...).
    ``ftype``: "Q4_K_M" or "Q4_K_S". ``arch``: one of :data:`ARCHS`. ``n_layer``: the
    model's ``block_count`` (default: largest ``blk.N`` + 1). ``n_expert``: the model's
    expert count (0 for a dense model). Returns name -> type name ("Q4_K", "Q6_K", "F32", ...)
    in the order llama.cpp visits the tensors. The sources of the rules: the module docstring
    and :func:`tensor_type_rules`.
    """
    return {name: t for name, (t, _) in tensor_type_rules(tensors, ftype, arch, n_layer, n_expert).items()}


def type_size(type_name: str) -> tuple[int, int]:
    """(values per block, bytes per block) of a GGUF type: int4ref's BlockType where it
    implements the type, else ggml's type_traits."""
    if type_name in _BLOCK_TYPES:
        bt = _BLOCK_TYPES[type_name]
        return bt.block_size, bt.type_size
    if type_name not in _GGML_TYPE_SIZES:
        raise ValueError(f"no size known for GGUF type {type_name!r}")
    return _GGML_TYPE_SIZES[type_name]


def tensor_bytes(shape, type_name: str) -> int:
    """Bytes of a tensor of ``shape`` (numpy order) stored as ``type_name``."""
    block, size = type_size(type_name)
    *outer, row = (int(s) for s in shape)
    if row % block:
        raise ValueError(f"a row of {row} values does not split into {type_name} blocks of {block}")
    n_rows = 1
    for s in outer:
        n_rows *= s
    return n_rows * (row // block) * size


def file_bytes(tensors, ftype="Q4_K_M", arch="llama", n_layer=None, n_expert=0) -> int:
    """Bytes of tensor data in the ``ftype`` file (no header, no alignment padding)."""
    types = tensor_types(tensors, ftype, arch, n_layer, n_expert)
    return sum(tensor_bytes(tensors[name], t) for name, t in types.items())


def file_bits_per_weight(tensors, ftype="Q4_K_M", arch="llama", n_layer=None, n_expert=0) -> float:
    """Bits of tensor data per parameter of the ``ftype`` file, over all tensors (norms
    included, as llama.cpp's own "BPW" counts them)."""
    n_params = 0
    for shape in tensors.values():
        count = 1
        for s in shape:
            count *= int(s)
        n_params += count
    return 8 * file_bytes(tensors, ftype, arch, n_layer, n_expert) / n_params


def llama_shaped_tensors(n_layer: int, n_embd: int, n_ff: int, n_vocab: int, n_head: int,
                         n_head_kv: int | None = None, tied_embeddings: bool = False,
                         qkv_bias: bool = False, qk_norm: bool = False) -> dict:
    """name -> shape of the tensors of a LLaMA-style GGUF model (Qwen2: ``qkv_bias=True``;
    Qwen3: ``qk_norm=True``), numpy order, as convert_hf_to_gguf.py names them."""
    for label, value in (("n_layer", n_layer), ("n_embd", n_embd), ("n_ff", n_ff), ("n_vocab", n_vocab),
                         ("n_head", n_head)):
        if int(value) <= 0:
            raise ValueError(f"{label} must be positive, got {value}")
    n_head_kv = n_head if n_head_kv is None else n_head_kv
    if n_embd % n_head or n_head % n_head_kv:
        raise ValueError(f"n_embd ({n_embd}) must split into n_head ({n_head}) heads, and n_head into "
                         f"n_head_kv ({n_head_kv}) groups")
    head = n_embd // n_head
    kv = head * n_head_kv
    tensors = {"token_embd.weight": (n_vocab, n_embd), "output_norm.weight": (n_embd,)}
    if not tied_embeddings:
        tensors["output.weight"] = (n_vocab, n_embd)
    for i in range(n_layer):
        p = f"blk.{i}."
        tensors.update({
            p + "attn_norm.weight": (n_embd,),
            p + "attn_q.weight": (n_embd, n_embd),
            p + "attn_k.weight": (kv, n_embd),
            p + "attn_v.weight": (kv, n_embd),
            p + "attn_output.weight": (n_embd, n_embd),
            p + "ffn_norm.weight": (n_embd,),
            p + "ffn_gate.weight": (n_ff, n_embd),
            p + "ffn_up.weight": (n_ff, n_embd),
            p + "ffn_down.weight": (n_embd, n_ff),
        })
        if qkv_bias:
            tensors.update({p + "attn_q.bias": (n_embd,), p + "attn_k.bias": (kv,), p + "attn_v.bias": (kv,)})
        if qk_norm:
            tensors.update({p + "attn_q_norm.weight": (head,), p + "attn_k_norm.weight": (head,)})
    return tensors
