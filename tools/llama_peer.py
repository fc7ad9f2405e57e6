"""llama.cpp's own quantizer (libllama's ``llama_model_quantize``) as a live test peer.

The mix of tensor types in a "Q4_K_M" file is decided by llama.cpp's src/llama-quant.cpp;
int4ref restates those rules in ``int4ref.interop.gguf.mix``. To check the restatement
against the real thing, ``build`` compiles libllama (CPU only, Release, shared; no
tools, tests, examples or common library) from the same pinned llama-cpp-python sdist that
tools/ggml_peer.py uses, and ``load`` wraps, with ctypes:

* ``quantize(src, dst, ftype, nthread=1)``: ``llama_model_quantize`` with
  ``llama_model_quantize_default_params()`` and the given ftype ("Q4_K_M" = 15,
  "Q4_K_S" = 14, ... from ``enum llama_ftype`` in include/llama.h), what the
  ``llama-quantize`` tool runs.

``write_synthetic_model`` writes a small LLaMA- or Qwen2-shaped float32 GGUF model with
gguf-py (the metadata ``llama_model_quantize`` reads: architecture, block count, context,
embedding and feed-forward lengths, head counts, RMS norm epsilon) whose values
``synthetic_values(name, shape)`` derives from the tensor name.

Usage::

    python tools/llama_peer.py build       # once; reuses ggml_peer's sdist download
    python tools/llama_peer.py info

The cache folder is ``llama/`` inside ggml_peer's cache (``.cache/ggml-peer/llama/``), or
``$INT4REF_LLAMA_PEER_DIR``. Compiling libllama takes a while (llama.cpp's src/ is ~50k lines of C++ plus ggml): about
10 minutes with 2 jobs on 2 shared, busy cores (581 s measured once, noisy).
"""
from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ggml_peer  # noqa: E402

CACHE_ENV = "INT4REF_LLAMA_PEER_DIR"
_PREFIX = f"llama_cpp_python-{ggml_peer.SDIST_VERSION}/vendor/llama.cpp/"
# What the library build reads: top-level files, cmake/, ggml/, include/, src/, vendor/, licenses/.
_KEEP_DIRS = ("cmake/", "ggml/", "include/", "src/", "vendor/", "licenses/")
_LIBS = ("libggml-base.so", "libggml-cpu.so", "libggml.so", "libllama.so")  # load order
_CMAKE_OPTIONS = {
    "CMAKE_BUILD_TYPE": "Release",
    "BUILD_SHARED_LIBS": "ON",
    "GGML_NATIVE": "OFF",
    "GGML_OPENMP": "OFF",
    "GGML_CUDA": "OFF",
    "GGML_BLAS": "OFF",
    "GGML_METAL": "OFF",
    "GGML_VULKAN": "OFF",
    "GGML_CCACHE": "OFF",
    "LLAMA_BUILD_COMMON": "OFF",
    "LLAMA_BUILD_TESTS": "OFF",
    "LLAMA_BUILD_TOOLS": "OFF",
    "LLAMA_BUILD_EXAMPLES": "OFF",
    "LLAMA_BUILD_SERVER": "OFF",
    "LLAMA_BUILD_APP": "OFF",
    "LLAMA_OPENSSL": "OFF",
}


class PeerUnavailable(RuntimeError):
    """libllama is not built (or cannot be loaded here); the message says why."""


def cache_dir(path=None) -> Path:
    if path is not None:
        return Path(path).resolve()
    env = os.environ.get(CACHE_ENV)
    return Path(env).resolve() if env else ggml_peer.cache_dir() / "llama"


def _log(msg, t0=None):
    tail = f" ({time.monotonic() - t0:.1f} s)" if t0 is not None else ""
    print(f"llama_peer: {msg}{tail}", flush=True)


def _stamp() -> dict:
    return {"sdist": ggml_peer.SDIST_NAME, "sha256": ggml_peer.SDIST_SHA256, "cmake": _CMAKE_OPTIONS}


def _built(root: Path) -> bool:
    lib = root / "lib"
    try:
        stamp = json.loads((lib / "peer.json").read_text())
    except (OSError, ValueError):
        return False
    return stamp.get("build") == _stamp() and all((lib / n).is_file() for n in (*_LIBS, "llama.h"))


def _keep(rel: str, is_dir: bool) -> bool:
    """Of vendor/llama.cpp, only the top-level files and the folders libllama's build reads."""
    if rel == ".git" or ("/" in rel.rstrip("/") and not rel.startswith(_KEEP_DIRS)):
        return False
    return not is_dir or rel.rstrip("/") + "/" in _KEEP_DIRS


def build(path=None, jobs=None, force=False) -> Path:
    """Build libllama (and its ggml) into ``<cache>/lib`` unless there; returns that folder."""
    root = cache_dir(path)
    lib = root / "lib"
    if _built(root) and not force:
        _log(f"already built in {lib}")
        return lib
    t_all = time.monotonic()
    root.mkdir(parents=True, exist_ok=True)
    src = ggml_peer.extract(ggml_peer.download(), root / "src", _PREFIX, _keep)  # the sdist of ggml_peer's cache
    build_dir = root / "build"
    ggml_peer.cmake_build(src, build_dir, _CMAKE_OPTIONS, ("llama",), jobs, _log)
    ggml_peer.copy_libraries(build_dir, _LIBS, lib)
    shutil.copy2(src / "include" / "llama.h", lib / "llama.h")
    (lib / "peer.json").write_text(json.dumps({"build": _stamp()}, indent=1) + "\n")
    _log(f"built {', '.join(_LIBS)} in {lib}", t_all)
    return lib


# ---------------------------------------------------------------------------------------
# ctypes
# ---------------------------------------------------------------------------------------

class _QuantizeParams(ctypes.Structure):  # struct llama_model_quantize_params (include/llama.h)
    _fields_ = [("nthread", ctypes.c_int32), ("ftype", ctypes.c_int), ("output_tensor_type", ctypes.c_int),
                ("token_embedding_type", ctypes.c_int), ("allow_requantize", ctypes.c_bool),
                ("quantize_output_tensor", ctypes.c_bool), ("only_copy", ctypes.c_bool), ("pure", ctypes.c_bool),
                ("keep_split", ctypes.c_bool), ("dry_run", ctypes.c_bool), ("imatrix", ctypes.c_void_p),
                ("kv_overrides", ctypes.c_void_p), ("tt_overrides", ctypes.c_void_p),
                ("prune_layers", ctypes.c_void_p), ("max_buf_size", ctypes.c_size_t)]


_log_callback_t = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)


def _parse_ftypes(header: str) -> dict:
    """``enum llama_ftype`` of llama.h as {"Q4_K_M": 15, ...}."""
    body = re.search(r"enum\s+llama_ftype\s*\{(.*?)\};", header, re.S)
    if body is None:
        raise PeerUnavailable("llama.h has no enum llama_ftype")
    text = re.sub(r"//[^\n]*", "", body.group(1))
    return {m.group(2): int(m.group(3))
            for m in re.finditer(r"LLAMA_FTYPE_(MOSTLY_|ALL_)?(\w+)\s*=\s*(\d+)", text)}


class LlamaPeer:
    """ctypes handle on libllama; see the module docstring."""

    def __init__(self, lib_dir: Path):
        self.lib_dir = Path(lib_dir)
        self.ftypes = _parse_ftypes((self.lib_dir / "llama.h").read_text())
        handles = [ctypes.CDLL(str(self.lib_dir / name), mode=ctypes.RTLD_GLOBAL) for name in _LIBS]
        self.lib = lib = handles[-1]
        self.log: list[str] = []

        def keep(level, text, user_data):
            self.log.append((text or b"").decode(errors="replace"))

        self._callback = _log_callback_t(keep)  # referenced here so ctypes does not free it
        lib.llama_log_set.restype = None
        lib.llama_log_set.argtypes = [_log_callback_t, ctypes.c_void_p]
        lib.llama_log_set(self._callback, None)
        lib.llama_backend_init.restype = None
        lib.llama_backend_init.argtypes = []
        lib.llama_backend_init()
        lib.llama_model_quantize_default_params.restype = _QuantizeParams
        lib.llama_model_quantize_default_params.argtypes = []
        lib.llama_model_quantize.restype = ctypes.c_uint32
        lib.llama_model_quantize.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(_QuantizeParams)]

    def quantize(self, src, dst, ftype: str, nthread: int = 1, dry_run: bool = False) -> None:
        """``llama_model_quantize(src, dst, params)`` with default params and ``ftype``
        (a name of enum llama_ftype without its LLAMA_FTYPE_MOSTLY_ prefix, e.g. "Q4_K_M").

        ``dry_run``: only log each tensor's type and size (``self.log``; nothing is written,
        no tensor data is read)."""
        if ftype not in self.ftypes:
            raise ValueError(f"unknown llama ftype {ftype!r}; llama.h has {', '.join(self.ftypes)}")
        src, dst = Path(src), Path(dst)
        if not src.is_file():
            raise FileNotFoundError(src)
        params = self.lib.llama_model_quantize_default_params()
        params.ftype = self.ftypes[ftype]
        params.nthread = int(nthread)
        params.dry_run = bool(dry_run)
        self.log.clear()
        rc = self.lib.llama_model_quantize(os.fsencode(src), os.fsencode(dst), ctypes.byref(params))
        if rc != 0:
            tail = "".join(self.log[-20:])
            raise RuntimeError(f"llama_model_quantize({src.name}, {ftype}) returned {rc}:\n{tail}")


    _TENSOR_LINE = re.compile(r"^\[\s*\d+/\s*\d+\]\s+(\S+)\s+- \[[^\]]*\], type =\s*(\w+), size =\s*[\d.]+ MiB"
                              r"(?: ->\s*[\d.]+ MiB \((\w+)\))?", re.M)
    _QUANT_SIZE = re.compile(r"quant size\s*=\s*([\d.]+) MiB \(([\d.]+) BPW\)")

    def dry_run_types(self, src, ftype: str, nthread: int = 1) -> tuple[dict, float, float]:
        """``quantize(src, <unused>, ftype, dry_run=True)`` read back from llama.cpp's log:
        ({tensor name: GGUF type name}, quant size in MiB, bits per weight), as llama.cpp
        prints them (MiB with 2 decimals, BPW with 2)."""
        self.quantize(src, Path(src).with_suffix(".dry-run.gguf"), ftype, nthread=nthread, dry_run=True)
        text = "".join(self.log)
        types = {m.group(1): (m.group(3) or m.group(2)).upper() for m in self._TENSOR_LINE.finditer(text)}
        size = self._QUANT_SIZE.search(text)
        if not types or size is None:
            raise RuntimeError(f"no tensor lines or quant size in llama.cpp's dry-run log:\n{text[-2000:]}")
        return types, float(size.group(1)), float(size.group(2))


def load(path=None) -> LlamaPeer:
    root = cache_dir(path)
    if not _built(root):
        raise PeerUnavailable(f"libllama is not built in {root} (run: python tools/llama_peer.py build)")
    try:
        return LlamaPeer(root / "lib")
    except OSError as exc:
        raise PeerUnavailable(f"cannot load libllama from {root / 'lib'}: {exc}") from exc


# ---------------------------------------------------------------------------------------
# synthetic models
# ---------------------------------------------------------------------------------------

def synthetic_values(name: str, shape) -> np.ndarray:
    """Deterministic float32 values for tensor ``name`` (normal, scale 0.02; norms 1.0)."""
    seed = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")
    if name.endswith("norm.weight"):
        return np.ones(shape, dtype=np.float32)
    return (np.random.default_rng(seed).standard_normal(shape) * 0.02).astype(np.float32)


def _add_hparams(writer, tensors, n_head, n_head_kv, n_ff, n_ctx, n_expert):
    n_layer = 1 + max(int(n.split(".")[1]) for n in tensors if n.startswith("blk."))
    writer.add_context_length(n_ctx)
    writer.add_embedding_length(tensors["token_embd.weight"][1])
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head_kv)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(tensors["token_embd.weight"][0])
    writer.add_file_type(0)  # LLAMA_FTYPE_ALL_F32
    if n_expert:
        writer.add_expert_count(n_expert)
        writer.add_expert_used_count(min(2, n_expert))


def write_synthetic_model(path, arch: str, tensors: dict, n_head: int, n_head_kv: int, n_ff: int,
                          n_ctx: int = 256, n_expert: int = 0) -> None:
    """Write a float32 GGUF model: ``tensors`` name -> shape (numpy order; see
    ``int4ref.interop.gguf.mix.llama_shaped_tensors``), values ``synthetic_values``, and the
    hyper-parameters that ``llama_model_quantize`` reads for ``arch`` ("llama", "qwen2", "qwen3")."""
    import gguf

    writer = gguf.GGUFWriter(os.fspath(path), arch)
    try:
        _add_hparams(writer, tensors, n_head, n_head_kv, n_ff, n_ctx, n_expert)
        for name, shape in tensors.items():
            writer.add_tensor(name, synthetic_values(name, shape))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()


def write_shape_only_model(path, arch: str, tensors: dict, n_head: int, n_head_kv: int, n_ff: int,
                           n_ctx: int = 4096, n_expert: int = 0) -> int:
    """Like ``write_synthetic_model``, but the float32 data is a hole of zeros (a sparse file
    that takes no disk space): enough for ``quantize(..., dry_run=True)`` on full-size shapes
    such as a 7B model. Returns the file's length in bytes."""
    import gguf

    writer = gguf.GGUFWriter(os.fspath(path), arch)
    try:
        _add_hparams(writer, tensors, n_head, n_head_kv, n_ff, n_ctx, n_expert)
        data = 0
        for name, shape in tensors.items():
            nbytes = 4 * int(np.prod(shape))
            writer.add_tensor_info(name, shape, np.dtype(np.float32), nbytes)
            data += writer.ggml_pad(nbytes, writer.data_alignment)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        writer.fout[0].flush()
        start = writer.ggml_pad(writer.fout[0].tell(), writer.data_alignment)
    finally:
        writer.close()
    os.truncate(path, start + data)
    return start + data


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["build", "info"])
    parser.add_argument("--cache", help=f"cache folder (default ${CACHE_ENV} or <ggml_peer cache>/llama)")
    parser.add_argument("--jobs", type=int, help="parallel compile jobs (default: all cores)")
    parser.add_argument("--force", action="store_true", help="rebuild even if the cache holds a build")
    args = parser.parse_args(argv)
    if args.command == "build":
        build(args.cache, jobs=args.jobs, force=args.force)
        return 0
    try:
        peer = load(args.cache)
    except PeerUnavailable as exc:
        print(exc, file=sys.stderr)
        return 1
    print(json.dumps({"lib_dir": str(peer.lib_dir), "ftypes": peer.ftypes}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
