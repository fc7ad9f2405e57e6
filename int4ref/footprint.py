"""Will it fit? The memory a decoder-only language model needs at inference, by part.

The book's chapter "Why four bits: memory arithmetic" teaches the arithmetic; this module
holds it so that the chapter, the tests and the explorers compute the same numbers.

Three parts, in bytes (floats: a format of 4.5 bits per weight needs fractional bytes
for a single weight, never for a whole model):

* **weights**: the linear layers of the transformer blocks in the chosen format, the rest
  (token embeddings, output head, norms, biases) at ``other_bits`` (16 by default);
* **KV cache**: ``2 x layers x kv_heads x head_dim x context x batch`` values at the KV
  cache's bits per value;
* **activations**: a deliberately simple model of the largest transient working set during
  prefill (see :func:`activation_bytes`).

A weight format is given as a number of bits per weight, as the name of a format in
:data:`WEIGHT_FORMATS`, or as an object with ``weight_bytes(arch, other_bits) -> float``
(:class:`UniformBits`, :class:`TensorMix`) or a callable ``arch -> bytes``.

Bits per weight of a block format follow from its layout (:class:`BlockLayout`): the
bits of a code plus, for every piece of metadata, its bits divided by the number of
weights it serves. Per-tensor constants (bitsandbytes' float32 offset under double
quantization, NVFP4's float32 tensor scale) are left out: 32 bits spread over millions of
weights.

Units: ``GB = 10**9`` bytes, ``GiB = 2**30`` bytes. GPU memory (:data:`GPUS`) is named in
GB by its vendor but counted in binary units, as JEDEC counts semiconductor memory, so
the GPUs' capacities here are in GiB and :func:`smallest_gpu` compares GiB with GiB.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterator
from dataclasses import dataclass

__all__ = [
    "GB", "GiB", "Architecture", "Tensor", "ParamCounts", "MODELS", "get_model",
    "BlockLayout", "LAYOUTS", "GGUF_BITS", "KV_DTYPES",
    "WeightFormat", "UniformBits", "TensorMix", "CallableFormat", "WEIGHT_FORMATS", "resolve_format",
    "GPU", "GPUS", "smallest_gpu",
    "kv_cache_bytes", "activation_bytes", "Footprint", "footprint",
]

GB = 10**9
GiB = 2**30


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _nonnegative_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def _positive_bits(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number of bits, got {value!r}")
    return float(value)


# ======================================================================================
# architectures


@dataclass(frozen=True)
class Tensor:
    """One parameter tensor: its GGUF-style name (``blk.3.attn_q.weight``), its shape
    ``(out_features, in_features)`` for a matrix or ``(n,)`` for a vector, the block it
    belongs to (``None`` outside the blocks) and whether it is a linear layer of a block
    (what 4-bit formats quantize)."""

    name: str
    shape: tuple[int, ...]
    layer: int | None
    block_linear: bool

    @property
    def size(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class ParamCounts:
    """Parameters of a model: ``linear`` (the linear layers of the blocks), ``other``
    (embeddings, output head, norms, biases) and ``total``."""

    linear: int
    other: int

    @property
    def total(self) -> int:
        return self.linear + self.other


@dataclass(frozen=True)
class Architecture:
    """The hyperparameters of a Llama-style decoder (RMSNorm, gated MLP, rotary positions).

    ``context`` is the longest sequence the configuration allows
    (``max_position_embeddings``); ``qkv_bias``: the query, key and value projections have
    biases (Qwen2); ``tied_embeddings``: the output head shares the embedding table;
    ``source``: the bibliography key of the configuration file.
    """

    name: str
    layers: int
    d_model: int
    heads: int
    kv_heads: int
    d_ff: int
    vocab: int
    context: int
    qkv_bias: bool = False
    tied_embeddings: bool = False
    source: str = ""

    def __post_init__(self):
        for field in ("layers", "d_model", "heads", "kv_heads", "d_ff", "vocab", "context"):
            _positive_int(getattr(self, field), f"{self.name}: {field}")
        if self.d_model % self.heads:
            raise ValueError(f"{self.name}: d_model {self.d_model} is not a multiple of heads {self.heads}")
        if self.heads % self.kv_heads:
            raise ValueError(f"{self.name}: heads {self.heads} is not a multiple of kv_heads {self.kv_heads}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.heads

    def tensors(self) -> Iterator[Tensor]:
        """Every parameter tensor, named as in GGUF files (``token_embd``, ``blk.N.attn_q``,
        ..., ``output_norm``, ``output``); the sizes add up to :meth:`param_counts`."""
        d, kv = self.d_model, self.kv_heads * self.head_dim
        yield Tensor("token_embd.weight", (self.vocab, d), None, False)
        for i in range(self.layers):
            blk = f"blk.{i}."
            yield Tensor(blk + "attn_norm.weight", (d,), i, False)
            yield Tensor(blk + "attn_q.weight", (d, d), i, True)
            yield Tensor(blk + "attn_k.weight", (kv, d), i, True)
            yield Tensor(blk + "attn_v.weight", (kv, d), i, True)
            if self.qkv_bias:
                yield Tensor(blk + "attn_q.bias", (d,), i, False)
                yield Tensor(blk + "attn_k.bias", (kv,), i, False)
                yield Tensor(blk + "attn_v.bias", (kv,), i, False)
            yield Tensor(blk + "attn_output.weight", (d, d), i, True)
            yield Tensor(blk + "ffn_norm.weight", (d,), i, False)
            yield Tensor(blk + "ffn_gate.weight", (self.d_ff, d), i, True)
            yield Tensor(blk + "ffn_up.weight", (self.d_ff, d), i, True)
            yield Tensor(blk + "ffn_down.weight", (d, self.d_ff), i, True)
        yield Tensor("output_norm.weight", (d,), None, False)
        if not self.tied_embeddings:
            yield Tensor("output.weight", (self.vocab, d), None, False)

    def param_counts(self) -> ParamCounts:
        """Parameters, split into the blocks' linear layers and the rest (in closed form;
        the tests check it against the sum over :meth:`tensors`)."""
        d, kv = self.d_model, self.kv_heads * self.head_dim
        attention = 2 * d * d + 2 * d * kv             # q and output; k and v
        mlp = 3 * d * self.d_ff                        # gate, up and down projections
        linear = self.layers * (attention + mlp)
        embeddings = (1 if self.tied_embeddings else 2) * self.vocab * d
        norms = (2 * self.layers + 1) * d
        biases = self.layers * (d + 2 * kv) if self.qkv_bias else 0
        return ParamCounts(linear=linear, other=embeddings + norms + biases)

    def kv_values_per_token(self) -> int:
        """Values the KV cache keeps per token: a key and a value vector per layer and
        key/value head."""
        return 2 * self.layers * self.kv_heads * self.head_dim


MODELS: dict[str, Architecture] = {a.name: a for a in [
    # Llama 2 and Llama 3: config.json of the checkpoints on the Hugging Face Hub
    Architecture("Llama-2-7B", 32, 4096, 32, 32, 11008, 32000, 4096, source="meta2023llama2_7b"),
    Architecture("Llama-2-13B", 40, 5120, 40, 40, 13824, 32000, 4096, source="meta2023llama2_13b"),
    Architecture("Llama-2-70B", 80, 8192, 64, 8, 28672, 32000, 4096, source="meta2023llama2_70b"),
    Architecture("Llama-3-8B", 32, 4096, 32, 8, 14336, 128256, 8192, source="meta2024llama3_8b"),
    Architecture("Llama-3-70B", 80, 8192, 64, 8, 28672, 128256, 8192, source="meta2024llama3_70b"),
    # Llama 3.1 8B: Llama 3 8B's shapes, max_position_embeddings 131072
    Architecture("Llama-3.1-8B", 32, 4096, 32, 8, 14336, 128256, 131072, source="meta2024llama31_8b"),
    # Qwen2.5-7B-Instruct: biases on q, k and v; untied embeddings
    Architecture("Qwen2.5-7B", 28, 3584, 28, 4, 18944, 152064, 32768, qkv_bias=True,
                 source="qwen2024qwen25_7b"),
]}


def get_model(model) -> Architecture:
    """``model`` as an :class:`Architecture`: one already, or the name of one in :data:`MODELS`."""
    if isinstance(model, Architecture):
        return model
    if isinstance(model, str) and model in MODELS:
        return MODELS[model]
    raise ValueError(f"unknown model {model!r}; known: {sorted(MODELS)} (or pass an Architecture)")


# ======================================================================================
# formats: bits per weight from the block layout


@dataclass(frozen=True)
class BlockLayout:
    """What a block format stores: ``code_bits`` per weight, and ``metadata``, a tuple of
    ``(what, bits, weights)``: a field of ``bits`` bits stored once per ``weights`` weights.

    ``bits_per_weight = code_bits + sum(bits / weights)``.
    """

    name: str
    code_bits: int
    metadata: tuple[tuple[str, int, int], ...] = ()
    source: str = ""

    def __post_init__(self):
        _positive_int(self.code_bits, f"{self.name}: code_bits")
        for what, bits, weights in self.metadata:
            _positive_int(bits, f"{self.name}: bits of {what!r}")
            _positive_int(weights, f"{self.name}: weights served by {what!r}")

    def bits_per_weight(self) -> float:
        return self.code_bits + sum(bits / weights for _, bits, weights in self.metadata)

    def block_bytes(self) -> int | None:
        """Bytes of one block of ``max(weights)`` weights when every field fits a whole
        number of times into it and the block is a whole number of bytes, else None."""
        n = max((w for _, _, w in self.metadata), default=1)
        if any(n % w for _, _, w in self.metadata):
            return None
        bits = self.code_bits * n + sum(b * (n // w) for _, b, w in self.metadata)
        return bits // 8 if bits % 8 == 0 else None


LAYOUTS: dict[str, BlockLayout] = {b.name: b for b in [
    BlockLayout("INT4 g128 (GPTQ/AWQ)", 4, (("float16 scale", 16, 128), ("4-bit zero-point", 4, 128)),
                "frantar2023gptq"),
    BlockLayout("NF4 (bitsandbytes)", 4, (("float32 absmax", 32, 64),), "bnb2025"),
    BlockLayout("NF4 + double quant", 4, (("8-bit absmax code", 8, 64), ("float32 absmax of the codes", 32, 64 * 256)),
                "dettmers2023qlora"),
    BlockLayout("Q4_0", 4, (("float16 d", 16, 32),), "ggml2024common"),
    BlockLayout("Q4_1", 4, (("float16 d", 16, 32), ("float16 m", 16, 32)), "ggml2024common"),
    BlockLayout("Q4_K", 4, (("6-bit scale", 6, 32), ("6-bit min", 6, 32), ("float16 d", 16, 256),
                            ("float16 dmin", 16, 256)), "ggml2023kquants"),
    BlockLayout("IQ4_XS", 4, (("6-bit scale", 6, 32), ("float16 d", 16, 256)), "ggml2024common"),
    BlockLayout("MXFP4", 4, (("E8M0 scale", 8, 32),), "ocp2023mx"),
    BlockLayout("NVFP4", 4, (("E4M3 scale", 8, 16),), "ggml2024common"),
]}

# GGUF types a mixed file (Q4_K_M) uses besides Q4_K, and the KV-cache types, as layouts.
# Q6_K: 6-bit codes (low 4 bits + high 2 bits), an 8-bit scale per 16, a float16 d per 256.
_GGUF_EXTRA = [
    BlockLayout("Q5_0", 5, (("float16 d", 16, 32),)),
    BlockLayout("Q5_1", 5, (("float16 d", 16, 32), ("float16 m", 16, 32))),
    BlockLayout("Q5_K", 5, (("6-bit scale", 6, 32), ("6-bit min", 6, 32), ("float16 d", 16, 256),
                            ("float16 dmin", 16, 256))),
    BlockLayout("Q6_K", 6, (("8-bit scale", 8, 16), ("float16 d", 16, 256))),
    BlockLayout("Q8_0", 8, (("float16 d", 16, 32),)),
    BlockLayout("IQ4_NL", 4, (("float16 d", 16, 32),)),
]
#: bits per weight of GGUF tensor types, by ggml type name
GGUF_BITS: dict[str, float] = {
    "F32": 32.0, "F16": 16.0, "BF16": 16.0,
    **{name: LAYOUTS[name].bits_per_weight() for name in ("Q4_0", "Q4_1", "Q4_K", "IQ4_XS", "MXFP4", "NVFP4")},
    **{b.name: b.bits_per_weight() for b in _GGUF_EXTRA},
}

#: bits per stored value of the KV cache: 16-bit floats, 8-bit floats (vLLM's
#: ``--kv-cache-dtype fp8``), and llama.cpp's ``--cache-type-k/-v q8_0`` and ``q4_0``,
#: blocks of 32 values with a float16 scale
KV_DTYPES: dict[str, float] = {"fp16": 16.0, "fp8": 8.0, "q8_0": GGUF_BITS["Q8_0"], "q4_0": GGUF_BITS["Q4_0"]}


# ======================================================================================
# weight formats: how many bytes a model's weights take


class WeightFormat:
    """A way of storing a model's weights: ``name`` and ``weight_bytes(arch, other_bits)``."""

    name: str

    def weight_bytes(self, arch: Architecture, other_bits: float = 16) -> float:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass(frozen=True)
class UniformBits(WeightFormat):
    """Every linear layer of the blocks at ``bits`` bits per weight, the rest (embeddings,
    output head, norms, biases) at ``other_bits``."""

    name: str
    bits: float

    def __post_init__(self):
        _positive_bits(self.bits, f"{self.name}: bits")

    def weight_bytes(self, arch: Architecture, other_bits: float = 16) -> float:
        p = arch.param_counts()
        return (p.linear * self.bits + p.other * _positive_bits(other_bits, "other_bits")) / 8


@dataclass(frozen=True)
class TensorMix(WeightFormat):
    """A per-tensor mix: ``bits_of(tensor, arch)`` gives each tensor's bits per weight, or
    None to leave the tensor at ``other_bits``. This is how GGUF's mixed file types
    (``Q4_K_M``: most tensors in Q4_K, some in Q6_K) are counted."""

    name: str
    bits_of: Callable[[Tensor, Architecture], float | None]

    def tensor_bits(self, arch: Architecture, other_bits: float = 16) -> dict[str, float]:
        """Bits per weight of every tensor, by name."""
        other_bits = _positive_bits(other_bits, "other_bits")
        out = {}
        for t in arch.tensors():
            bits = self.bits_of(t, arch)
            out[t.name] = other_bits if bits is None else _positive_bits(bits, f"{self.name}: bits of {t.name}")
        return out

    def weight_bytes(self, arch: Architecture, other_bits: float = 16) -> float:
        bits = self.tensor_bits(arch, other_bits)
        return sum(t.size * bits[t.name] for t in arch.tensors()) / 8


@dataclass(frozen=True)
class CallableFormat(WeightFormat):
    """A format given as a function ``fn(arch) -> bytes`` of the whole model's weights
    (``other_bits`` is then the function's business)."""

    name: str
    fn: Callable[[Architecture], float]

    def weight_bytes(self, arch: Architecture, other_bits: float = 16) -> float:
        value = self.fn(arch)
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
            raise ValueError(f"{self.name}: weight bytes must be a non-negative finite number, got {value!r}")
        return float(value)


WEIGHT_FORMATS: dict[str, WeightFormat] = {
    "FP16": UniformBits("FP16", 16.0),
    "Q8_0": UniformBits("Q8_0", GGUF_BITS["Q8_0"]),
    **{name: UniformBits(name, layout.bits_per_weight()) for name, layout in LAYOUTS.items()},
}

def llama_cpp_mix(ftype: str) -> TensorMix:
    """A mixed GGUF file type of llama.cpp ("Q4_K_M", "Q4_K_S") as a :class:`TensorMix`: each
    tensor at the bits of the type llama.cpp's quantizer gives it
    (:func:`int4ref.interop.gguf.mix.tensor_types`, checked against libllama itself). A real
    "Q4_K_M" file keeps the output head and some attn_v and ffn_down tensors in Q6_K, and
    the norms in F32, so it is not 4.5 bits per weight."""
    types_by_arch: dict[Architecture, dict[str, str]] = {}

    def bits_of(tensor: Tensor, arch: Architecture) -> float:
        if arch not in types_by_arch:
            from .interop.gguf import mix  # only this format needs the GGUF rules

            shapes = {t.name: t.shape for t in arch.tensors()}
            family = "qwen2" if arch.qkv_bias else "llama"
            types_by_arch[arch] = mix.tensor_types(shapes, ftype, family, n_layer=arch.layers)
        return GGUF_BITS[types_by_arch[arch][tensor.name]]

    return TensorMix(ftype, bits_of)


WEIGHT_FORMATS["Q4_K_M"] = llama_cpp_mix("Q4_K_M")
WEIGHT_FORMATS["Q4_K_S"] = llama_cpp_mix("Q4_K_S")


def resolve_format(fmt) -> WeightFormat:
    """``fmt`` as a :class:`WeightFormat`: a number of bits per weight (every linear layer
    at that width), a name in :data:`WEIGHT_FORMATS`, a WeightFormat (or any object with
    ``weight_bytes``), or a callable ``arch -> bytes``."""
    if isinstance(fmt, str):
        if fmt in WEIGHT_FORMATS:
            return WEIGHT_FORMATS[fmt]
        raise ValueError(f"unknown weight format {fmt!r}; known: {list(WEIGHT_FORMATS)} "
                         "(or pass bits per weight as a number)")
    if isinstance(fmt, numbers.Real) and not isinstance(fmt, bool):
        bits = _positive_bits(fmt, "bits per weight")
        return UniformBits(f"{bits:g} bits per weight", bits)
    if hasattr(fmt, "weight_bytes"):
        return fmt
    if callable(fmt):
        return CallableFormat(getattr(fmt, "__name__", "custom format"), fmt)
    raise TypeError(f"a weight format must be bits per weight, a name in WEIGHT_FORMATS, an object with "
                    f"weight_bytes(arch, other_bits) or a callable arch -> bytes; got {fmt!r}")


# ======================================================================================
# GPUs


@dataclass(frozen=True)
class GPU:
    """A GPU and its memory as the vendor names it (``memory_gb``, counted in binary units:
    ``memory_bytes = memory_gb * 2**30``); ``source``: the bibliography key."""

    name: str
    memory_gb: int
    source: str

    @property
    def memory_bytes(self) -> int:
        return self.memory_gb * GiB


#: common NVIDIA GPUs, by memory (smallest first)
GPUS: tuple[GPU, ...] = (
    GPU("GeForce RTX 3060", 12, "nvidia2021rtx3060"),
    GPU("T4", 16, "nvidia2018t4"),
    GPU("GeForce RTX 4090", 24, "nvidia2022rtx4090"),
    GPU("GeForce RTX 5090", 32, "nvidia2025rtx5090"),
    GPU("A100 40GB", 40, "nvidia2020a100"),
    GPU("A100 / H100 80GB", 80, "nvidia2022h100"),
    GPU("H200", 141, "nvidia2024h200"),
)


def smallest_gpu(total_bytes: float, gpus=GPUS) -> GPU | None:
    """The GPU with the least memory that still holds ``total_bytes`` (None: none does).
    Nominal memory: what the driver, the CUDA context and the framework take is not
    subtracted."""
    if isinstance(total_bytes, bool) or not isinstance(total_bytes, numbers.Real) or not total_bytes >= 0:
        raise ValueError(f"total_bytes must be a non-negative number, got {total_bytes!r}")
    fits = [g for g in gpus if total_bytes <= g.memory_bytes]
    return min(fits, key=lambda g: g.memory_bytes) if fits else None


# ======================================================================================
# the parts


def _kv_bits(kv_dtype) -> float:
    if isinstance(kv_dtype, str):
        if kv_dtype in KV_DTYPES:
            return KV_DTYPES[kv_dtype]
        raise ValueError(f"unknown KV-cache dtype {kv_dtype!r}; known: {list(KV_DTYPES)} (or bits per value)")
    return _positive_bits(kv_dtype, "KV-cache bits per value")


def kv_cache_bytes(model, context: int, batch: int = 1, kv_dtype="fp16") -> float:
    """``2 x layers x kv_heads x head_dim x context x batch x bits / 8``. ``kv_dtype``: a
    name in :data:`KV_DTYPES` or bits per value."""
    arch = get_model(model)
    context = _nonnegative_int(context, "context")
    batch = _positive_int(batch, "batch")
    return arch.kv_values_per_token() * context * batch * _kv_bits(kv_dtype) / 8


def activation_bytes(model, context: int, batch: int = 1, bits: float = 16) -> float:
    """A rough size of the largest transient working set during prefill, under stated
    assumptions: the prompt goes through in one pass, one layer at a time; attention never
    builds the full score matrix (fused kernels); alive at once are the residual stream and
    its normalized copy (2 x d_model per token) and the MLP's gate and up projections
    (2 x d_ff per token) at ``bits``; the logits of the last position only, in float32."""
    arch = get_model(model)
    context = _nonnegative_int(context, "context")
    batch = _positive_int(batch, "batch")
    per_token = 2 * arch.d_model + 2 * arch.d_ff
    return batch * context * per_token * _positive_bits(bits, "activation bits") / 8 + batch * arch.vocab * 4


@dataclass(frozen=True)
class Footprint:
    """The memory of one configuration, in bytes by part."""

    model: str
    format: str
    context: int
    kv_dtype: str
    batch: int
    weights: float
    kv_cache: float
    activations: float

    @property
    def total(self) -> float:
        return self.weights + self.kv_cache + self.activations

    def parts(self, unit: int = 1) -> dict[str, float]:
        """``weights``, ``KV cache``, ``activations`` and ``total`` divided by ``unit``
        (1: bytes, :data:`GB` or :data:`GiB`)."""
        values = {"weights": self.weights, "KV cache": self.kv_cache, "activations": self.activations,
                  "total": self.total}
        return {k: v / unit for k, v in values.items()}

    def gib(self) -> dict[str, float]:
        return self.parts(GiB)

    @property
    def gpu(self) -> GPU | None:
        """The smallest GPU of :data:`GPUS` that holds the total (None: none does)."""
        return smallest_gpu(self.total)


def footprint(model, weight_format, context: int | None = None, kv_dtype="fp16", batch: int = 1,
              other_bits: float = 16) -> Footprint:
    """Memory of ``model`` (a name in :data:`MODELS` or an :class:`Architecture`) with its
    weights in ``weight_format`` (see :func:`resolve_format`), a KV cache of ``context``
    tokens (default: the model's longest context; 0: none) per sequence in ``kv_dtype``,
    for ``batch`` sequences.

    >>> f = footprint("Llama-2-7B", 16, context=0)
    >>> f.weights == MODELS["Llama-2-7B"].param_counts().total * 2
    True
    """
    arch = get_model(model)
    context = arch.context if context is None else _nonnegative_int(context, "context")
    if context > arch.context:
        raise ValueError(f"context {context} is longer than {arch.name}'s {arch.context} tokens")
    batch = _positive_int(batch, "batch")
    fmt = resolve_format(weight_format)
    kv_name = kv_dtype if isinstance(kv_dtype, str) else f"{_kv_bits(kv_dtype):g} bits"
    return Footprint(
        model=arch.name, format=fmt.name, context=context, kv_dtype=kv_name, batch=batch,
        weights=float(fmt.weight_bytes(arch, other_bits)),
        kv_cache=kv_cache_bytes(arch, context, batch, kv_dtype),
        activations=activation_bytes(arch, context, batch),
    )
