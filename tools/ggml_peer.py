"""ggml's own C quantizers as a live test peer (``make test-peers``).

The llama-cpp-python source distribution on PyPI vendors llama.cpp, and with it ggml.
``build`` downloads that sdist (pinned: ``SDIST_VERSION``) into a cache folder, extracts
only ``vendor/llama.cpp/ggml`` and builds ggml's CPU libraries with cmake (Release, shared,
no OpenMP, no GPU or BLAS backends). Nothing of llama.cpp is committed here; only this
script. ``load`` opens the libraries with ctypes and wraps the few functions the parity
tests call:

* ``quantize_chunk(type, x2d, imatrix=None)``: ``ggml_quantize_chunk``, what
  ``llama-quantize`` runs (libggml-base);
* ``to_float(type, data, n)``: the type traits' dequantizer (libggml-base);
* ``cpu_from_float(type, x)`` and ``vec_dot(type, n, x, y)``: the CPU backend's activation
  quantizer and dot product (libggml-cpu, compiled for AVX2/FMA/F16C, as GGML_NATIVE=OFF
  builds it on x86-64).

Shapes and types are checked in Python first: a failed C assertion kills the process.

Usage::

    python tools/ggml_peer.py build        # once; reused while the cache holds it
    python tools/ggml_peer.py info         # where it is and how it was built

The cache folder is ``.cache/ggml-peer/`` in the repository, or ``$INT4REF_GGML_PEER_DIR``.
"""
from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np

#: The pinned source distribution: llama-cpp-python 0.3.36 vendors ggml 0.25.3.
SDIST_VERSION = "0.3.36"
SDIST_NAME = f"llama_cpp_python-{SDIST_VERSION}.tar.gz"
#: sha256 of that file as PyPI serves it (checked after every download and before a build).
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
CACHE_ENV = "INT4REF_GGML_PEER_DIR"
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = REPO_ROOT / ".cache" / "ggml-peer"

_GGML_PREFIX = f"llama_cpp_python-{SDIST_VERSION}/vendor/llama.cpp/ggml/"
_LIBS = ("libggml-base.so", "libggml-cpu.so", "libggml.so")
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
    "GGML_BUILD_TESTS": "OFF",
    "GGML_BUILD_EXAMPLES": "OFF",
    "CMAKE_EXPORT_COMPILE_COMMANDS": "ON",
}
# The sdist's ggml/CMakeLists.txt wants ggml.pc.in (missing from the sdist) only when it is
# the top-level project, so a two-line wrapper project includes it as a subdirectory.
_WRAPPER = """cmake_minimum_required(VERSION 3.14)
project(int4ref_ggml_peer C CXX)
add_subdirectory("{ggml}" ggml)
"""
# ggml_quantize_chunk's switch (ggml/src/ggml.c); any other type hits assert(false) there.
CHUNK_TYPES = frozenset({
    "Q1_0", "Q2_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "MXFP4", "NVFP4",
    "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "TQ1_0", "TQ2_0",
    "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ3_S", "IQ2_S", "IQ1_S", "IQ1_M", "IQ4_NL", "IQ4_XS",
    "F16", "BF16", "F32",
})
# x86 extensions libggml-cpu is compiled for when GGML_NATIVE=OFF (GGML_AVX/AVX2/FMA/F16C/
# BMI2/SSE42 default to ON then): loading it on a CPU without them would die of SIGILL.
_CPU_FLAGS = ("avx", "avx2", "fma", "f16c", "bmi2", "sse4_2")


class PeerUnavailable(RuntimeError):
    """The ggml peer is not built (or cannot run here); the message says why."""


def cache_dir(path=None) -> Path:
    """The cache folder: ``path``, else ``$INT4REF_GGML_PEER_DIR``, else ``.cache/ggml-peer``."""
    if path is not None:
        return Path(path).resolve()
    env = os.environ.get(CACHE_ENV)
    return Path(env).resolve() if env else DEFAULT_CACHE


def _log(msg, t0=None):
    tail = f" ({time.monotonic() - t0:.1f} s)" if t0 is not None else ""
    print(f"ggml_peer: {msg}{tail}", flush=True)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _stamp() -> dict:
    return {"sdist": SDIST_NAME, "sha256": SDIST_SHA256, "cmake": _CMAKE_OPTIONS}


def _built(root: Path) -> bool:
    lib = root / "lib"
    try:
        stamp = json.loads((lib / "peer.json").read_text())
    except (OSError, ValueError):
        return False
    return stamp.get("build") == _stamp() and all((lib / name).is_file() for name in (*_LIBS, "ggml.h"))


def download(root: Path | None = None) -> Path:
    """The pinned sdist in ``root`` (default: the cache folder), downloaded from PyPI if absent
    and checked against :data:`SDIST_SHA256`."""
    root = cache_dir() if root is None else root
    root.mkdir(parents=True, exist_ok=True)
    tarball = root / SDIST_NAME
    if tarball.is_file():
        if _sha256(tarball) == SDIST_SHA256:
            return tarball
        tarball.unlink()  # a partial or foreign file: pip would keep it
    t0 = time.monotonic()
    _log(f"downloading {SDIST_NAME} from PyPI")
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                    f"llama-cpp-python=={SDIST_VERSION}", "-d", str(root)], check=True)
    got = _sha256(tarball)
    if got != SDIST_SHA256:
        raise RuntimeError(f"{tarball}: sha256 {got}, expected {SDIST_SHA256}; delete it and retry")
    _log("downloaded", t0)
    return tarball


def extract(tarball: Path, dest: Path, prefix: str = _GGML_PREFIX, keep=None) -> Path:
    """Extract the members of the sdist under ``prefix`` into ``dest`` (replacing it), with
    ``prefix`` stripped from their names; ``keep(relative_name, is_dir)``, if given, picks
    which of them. Returns dest."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    with tarfile.open(tarball) as tf:
        members = []
        for m in tf.getmembers():
            if not m.name.startswith(prefix) or not (m.isfile() or m.isdir()):
                continue
            rel = m.name[len(prefix):]
            if not rel or rel.startswith("/") or ".." in Path(rel).parts:
                continue
            if keep is not None and not keep(rel, m.isdir()):
                continue
            m.name = rel
            members.append(m)
        if not members:
            raise RuntimeError(f"{tarball} holds no {prefix}")
        if hasattr(tarfile, "data_filter"):
            tf.extractall(dest, members=members, filter="data")
        else:  # pragma: no cover - Python < 3.11.4; names were checked above
            tf.extractall(dest, members=members)
    return dest


def cmake_build(source: Path, build_dir: Path, options: dict, targets, jobs=None, log=None) -> None:
    """Configure ``source`` into a fresh ``build_dir`` with ``options`` (-D) and build ``targets``
    (Ninja when present), quietly; ``log(message, t0)`` reports the two steps' times."""
    cmake = shutil.which("cmake")
    if cmake is None:
        raise RuntimeError("cmake not found: install it (Debian: apt-get install cmake)")
    log = log or _log
    if build_dir.exists():
        shutil.rmtree(build_dir)
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    t0 = time.monotonic()
    subprocess.run([cmake, "-S", str(source), "-B", str(build_dir), *generator, "-Wno-dev",
                    *[f"-D{k}={v}" for k, v in options.items()]], check=True, stdout=subprocess.DEVNULL)
    log("configured", t0)
    t0 = time.monotonic()
    jobs = jobs or os.cpu_count() or 1
    subprocess.run([cmake, "--build", str(build_dir), "--target", *targets, "-j", str(jobs)],
                   check=True, stdout=subprocess.DEVNULL)
    log(f"compiled with {jobs} jobs", t0)


def copy_libraries(build_dir: Path, names, lib: Path) -> None:
    """Copy each built library ``names`` found under ``build_dir`` into a fresh ``lib``."""
    if lib.exists():
        shutil.rmtree(lib)
    lib.mkdir()
    for name in names:
        found = sorted(build_dir.rglob(name))
        if not found:
            raise RuntimeError(f"the build produced no {name} under {build_dir}")
        shutil.copy2(found[0], lib / name)  # follows the versioned symlink


def build(path=None, jobs=None, force=False) -> Path:
    """Build ggml's CPU libraries into ``<cache>/lib`` unless they are there; returns that folder."""
    root = cache_dir(path)
    lib = root / "lib"
    if _built(root) and not force:
        _log(f"already built in {lib}")
        return lib
    t_all = time.monotonic()
    root.mkdir(parents=True, exist_ok=True)
    tarball = download(root)
    t0 = time.monotonic()
    ggml = extract(tarball, root / "src" / "ggml")
    _log("extracted vendor/llama.cpp/ggml", t0)
    wrapper = root / "wrapper"
    wrapper.mkdir(exist_ok=True)
    (wrapper / "CMakeLists.txt").write_text(_WRAPPER.format(ggml=ggml.as_posix()))
    build_dir = root / "build"
    cmake_build(wrapper, build_dir, _CMAKE_OPTIONS, ("ggml-base", "ggml-cpu", "ggml"), jobs)
    copy_libraries(build_dir, _LIBS, lib)
    shutil.copy2(ggml / "include" / "ggml.h", lib / "ggml.h")
    flags = {}
    try:
        for entry in json.loads((build_dir / "compile_commands.json").read_text()):
            for src in ("ggml-quants.c", "ggml-cpu/arch/x86/quants.c"):
                if entry["file"].endswith("/" + src):
                    cmd = entry.get("command") or " ".join(entry.get("arguments", []))
                    flags[src] = sorted({a for a in cmd.split() if a.startswith(("-O", "-m", "-f"))})
    except (OSError, ValueError, KeyError):
        pass
    (lib / "peer.json").write_text(json.dumps({"build": _stamp(), "compile_flags": flags}, indent=1) + "\n")
    _log(f"built {', '.join(_LIBS)} in {lib}", t_all)
    return lib


# ---------------------------------------------------------------------------------------
# ctypes
# ---------------------------------------------------------------------------------------

_to_float_t = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)
_from_float_t = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)
_vec_dot_t = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p,
                              ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)


class _TypeTraits(ctypes.Structure):  # struct ggml_type_traits (ggml.h)
    _fields_ = [("type_name", ctypes.c_char_p), ("blck_size", ctypes.c_int64),
                ("blck_size_interleave", ctypes.c_int64), ("type_size", ctypes.c_size_t),
                ("is_quantized", ctypes.c_bool), ("to_float", ctypes.c_void_p),
                ("from_float_ref", ctypes.c_void_p)]


class _CpuTypeTraits(ctypes.Structure):  # struct ggml_type_traits_cpu (ggml-cpu.h)
    _fields_ = [("from_float", ctypes.c_void_p), ("vec_dot", ctypes.c_void_p),
                ("vec_dot_type", ctypes.c_int), ("nrows", ctypes.c_int64)]


def _parse_types(header: str) -> dict:
    """``enum ggml_type`` of ggml.h as {"Q4_0": 2, ...} (comments skipped)."""
    body = re.search(r"enum\s+ggml_type\s*\{(.*?)\};", header, re.S)
    if body is None:
        raise PeerUnavailable("ggml.h has no enum ggml_type")
    text = re.sub(r"//[^\n]*", "", body.group(1))
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"GGML_TYPE_(\w+)\s*=\s*(\d+)", text)}


class GgmlPeer:
    """ctypes handle on the built libraries; see the module docstring."""

    def __init__(self, lib_dir: Path):
        self.lib_dir = Path(lib_dir)
        self.info = json.loads((self.lib_dir / "peer.json").read_text())
        types = _parse_types((self.lib_dir / "ggml.h").read_text())
        self._count = types.pop("COUNT")
        self.types = types
        # libggml-cpu needs libggml-base.so.0 (its soname): loading base first, globally, satisfies it.
        self.base = ctypes.CDLL(str(self.lib_dir / "libggml-base.so"), mode=ctypes.RTLD_GLOBAL)
        b = self.base
        b.ggml_get_type_traits.restype = ctypes.POINTER(_TypeTraits)
        b.ggml_get_type_traits.argtypes = [ctypes.c_int]
        b.ggml_quantize_chunk.restype = ctypes.c_size_t
        b.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                          ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
        b.ggml_quantize_init.restype = None
        b.ggml_quantize_init.argtypes = [ctypes.c_int]
        b.ggml_quantize_requires_imatrix.restype = ctypes.c_bool
        b.ggml_quantize_requires_imatrix.argtypes = [ctypes.c_int]
        self._cpu = None
        for name, tid in types.items():  # the header and the library must agree
            got = self.traits(name)["type_name"]
            if got.lower() != name.lower() and got != "DEPRECATED":
                raise PeerUnavailable(f"ggml.h says GGML_TYPE_{name} = {tid}, the library calls it {got!r}")

    # --- libggml-base ----------------------------------------------------------------------
    def type_id(self, type_name: str) -> int:
        if not isinstance(type_name, str) or type_name.upper() not in self.types:
            raise ValueError(f"unknown ggml type {type_name!r}")
        return self.types[type_name.upper()]

    def traits(self, type_name: str) -> dict:
        t = self.base.ggml_get_type_traits(self.type_id(type_name)).contents
        return {"type_name": (t.type_name or b"").decode(), "blck_size": int(t.blck_size),
                "type_size": int(t.type_size), "is_quantized": bool(t.is_quantized),
                "to_float": t.to_float, "from_float_ref": t.from_float_ref}

    def _shape(self, type_name, n):
        tr = self.traits(type_name)
        if tr["blck_size"] <= 0 or tr["type_size"] <= 0:
            raise ValueError(f"{type_name} is not a storable ggml type")
        if n <= 0 or n % tr["blck_size"]:
            raise ValueError(f"{type_name}: length {n} is not a positive multiple of its block size {tr['blck_size']}")
        return tr, n // tr["blck_size"] * tr["type_size"]

    def row_size(self, type_name: str, n: int) -> int:
        return self._shape(type_name, int(n))[1]

    def quantize_chunk(self, type_name: str, x2d, imatrix=None) -> np.ndarray:
        """``ggml_quantize_chunk`` of the float32 rows ``x2d`` (nrows, n_per_row): uint8 (nrows, row bytes)."""
        name = type_name.upper() if isinstance(type_name, str) else type_name
        if name not in CHUNK_TYPES:
            raise ValueError(f"ggml_quantize_chunk has no case for {type_name!r}")
        x = np.asarray(x2d)
        if x.dtype != np.float32 or x.ndim != 2 or x.size == 0:
            raise ValueError(f"x2d must be a non-empty 2-D float32 array, got {x.dtype} {x.shape}")
        x = np.ascontiguousarray(x)
        nrows, n_per_row = x.shape
        _, row_bytes = self._shape(name, n_per_row)
        tid = self.type_id(name)
        if imatrix is None:
            if self.base.ggml_quantize_requires_imatrix(tid):
                raise ValueError(f"{name} needs an importance matrix")
            imp = None
        else:
            imatrix = np.ascontiguousarray(imatrix)
            if imatrix.dtype != np.float32 or imatrix.shape != (n_per_row,):
                raise ValueError(f"imatrix must be float32 of shape ({n_per_row},), "
                                 f"got {imatrix.dtype} {imatrix.shape}")
            imp = imatrix.ctypes.data
        self.base.ggml_quantize_init(tid)  # the IQ types' lookup tables (chunk calls it too)
        out = np.zeros((nrows, row_bytes), dtype=np.uint8)
        got = self.base.ggml_quantize_chunk(tid, x.ctypes.data, out.ctypes.data, 0, nrows, n_per_row, imp)
        if got != out.size:
            raise RuntimeError(f"ggml_quantize_chunk wrote {got} bytes, expected {out.size}")
        return out

    def to_float(self, type_name: str, data, n: int) -> np.ndarray:
        """The type traits' ``to_float`` of ``n`` values stored in ``data`` (uint8): float32 (n,)."""
        tr, nbytes = self._shape(type_name, int(n))
        raw = np.ascontiguousarray(data)
        if raw.dtype != np.uint8 or raw.size != nbytes:
            raise ValueError(f"{type_name}: {n} values take {nbytes} bytes of uint8, got {raw.dtype} size {raw.size}")
        if not tr["to_float"]:
            raise ValueError(f"{type_name} has no to_float")
        out = np.empty(int(n), dtype=np.float32)
        _to_float_t(tr["to_float"])(raw.ctypes.data, out.ctypes.data, int(n))
        return out

    # --- libggml-cpu -----------------------------------------------------------------------
    @property
    def cpu(self):
        if self._cpu is None:
            if sys.platform.startswith("linux") and os.uname().machine == "x86_64":
                flags = set()
                with open("/proc/cpuinfo") as f:
                    for line in f:
                        if line.startswith("flags"):
                            flags = set(line.split(":", 1)[1].split())
                            break
                missing = [f for f in _CPU_FLAGS if f not in flags]
                if missing:
                    raise PeerUnavailable(f"libggml-cpu was built for AVX2; this CPU lacks {', '.join(missing)}")
            cpu = ctypes.CDLL(str(self.lib_dir / "libggml-cpu.so"), mode=ctypes.RTLD_GLOBAL)
            cpu.ggml_cpu_init.restype = None
            cpu.ggml_cpu_init.argtypes = []
            cpu.ggml_cpu_init()
            cpu.ggml_get_type_traits_cpu.restype = ctypes.POINTER(_CpuTypeTraits)
            cpu.ggml_get_type_traits_cpu.argtypes = [ctypes.c_int]
            self._cpu = cpu
        return self._cpu

    def cpu_traits(self, type_name: str) -> dict:
        t = self.cpu.ggml_get_type_traits_cpu(self.type_id(type_name)).contents
        names = {v: k for k, v in self.types.items()}
        return {"from_float": t.from_float, "vec_dot": t.vec_dot,
                "vec_dot_type": names.get(t.vec_dot_type, t.vec_dot_type), "nrows": int(t.nrows)}

    def cpu_from_float(self, type_name: str, x) -> np.ndarray:
        """The CPU backend's ``from_float`` (e.g. AVX2 ``quantize_row_q8_0``) of float32 ``x`` (n,)."""
        arr = np.ascontiguousarray(x)
        if arr.dtype != np.float32 or arr.ndim != 1:
            raise ValueError(f"x must be 1-D float32, got {arr.dtype} {arr.shape}")
        _, nbytes = self._shape(type_name, arr.size)
        fn = self.cpu_traits(type_name)["from_float"]
        if not fn:
            raise ValueError(f"{type_name} has no CPU from_float")
        out = np.zeros(nbytes, dtype=np.uint8)
        _from_float_t(fn)(arr.ctypes.data, out.ctypes.data, arr.size)
        return out

    def vec_dot(self, type_name: str, n: int, x, y) -> float:
        """The CPU backend's ``vec_dot`` for ``type_name``: ``x`` holds n values of that type,
        ``y`` n values of its ``vec_dot_type`` (both uint8 block bytes); one row (nrc = 1)."""
        tr = self.cpu_traits(type_name)
        if not tr["vec_dot"]:
            raise ValueError(f"{type_name} has no CPU vec_dot")
        _, nx = self._shape(type_name, int(n))
        _, ny = self._shape(tr["vec_dot_type"], int(n))
        xa, ya = np.ascontiguousarray(x), np.ascontiguousarray(y)
        if xa.dtype != np.uint8 or xa.size != nx or ya.dtype != np.uint8 or ya.size != ny:
            raise ValueError(f"vec_dot {type_name}: need {nx} and {ny} uint8 bytes, got {xa.dtype} {xa.size}, "
                             f"{ya.dtype} {ya.size}")
        s = np.zeros(1, dtype=np.float32)
        _vec_dot_t(tr["vec_dot"])(int(n), s.ctypes.data, 0, xa.ctypes.data, 0, ya.ctypes.data, 0, 1)
        return s[0]


def load(path=None) -> GgmlPeer:
    """Open the built peer in the cache folder; raises PeerUnavailable (with the reason) if absent."""
    root = cache_dir(path)
    if not _built(root):
        raise PeerUnavailable(f"the ggml peer is not built in {root} (run: python tools/ggml_peer.py build)")
    try:
        return GgmlPeer(root / "lib")
    except OSError as exc:
        raise PeerUnavailable(f"cannot load the ggml libraries from {root / 'lib'}: {exc}") from exc


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["build", "info"])
    parser.add_argument("--cache", help=f"cache folder (default ${CACHE_ENV} or {DEFAULT_CACHE})")
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
    print(json.dumps({"lib_dir": str(peer.lib_dir), **peer.info}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
