"""Run the CUDA kernels on the CPU: a small SIMT emulator, for tests on machines without a GPU.

The kernel files are compiled by the host C++ compiler (g++ or clang++) together with the
header below, which supplies what the kernels use from CUDA: thread and block indices,
``__syncthreads``, warp shuffles, ``__ldg``, atomics, the round-to-nearest intrinsics and
float16 conversions (through the compiler's ``_Float16``, round to nearest even). Every
CUDA thread of a block is a ``ucontext`` fiber; a fiber runs until it reaches a barrier or
a shuffle, so threads interleave the way the synchronisation allows, and a barrier that
can never complete, or a shuffle in a warp with a missing lane, is reported as an error
instead of hanging. Blocks run one after another.

What it checks beyond the results: reads through ``__ldg``/``__ldcs`` must fall inside
an argument buffer, vector loads and stores must be aligned (``INT4REF_ASSERT_ALIGNED``),
and writes past the end of an output buffer are caught by guard bytes around every
buffer allocated through :class:`EmulatorBackend`.

What it does not model: timing, memory coalescing, caches, the GPU memory model beyond
barrier ordering, and anything a real GPU may do differently from IEEE float32 on the
CPU (the kernels use only correctly rounded operations, so there should be nothing).
It proves the kernels' indexing, packing, reductions and arithmetic, not their speed.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
import weakref
from pathlib import Path

import numpy as np

from .kernels import HEADER, INCLUDE_LINE, KERNEL_FILES, KERNELS, raw_source

SIMT_HEADER = r"""
// ---- int4ref SIMT emulator: CUDA kernels as CPU fibers (see int4ref/gpu/emulator.py) ----
#include <ucontext.h>
#include <math.h>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#define INT4REF_EMULATE 1
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static  // blocks run one at a time, so one copy per kernel is enough

struct uint3 { unsigned x, y, z; };
struct dim3 {
    unsigned x, y, z;
    dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
struct alignas(8) uint2 { unsigned x, y; };
struct alignas(16) uint4 { unsigned x, y, z, w; };
struct alignas(8) float2 { float x, y; };
struct alignas(16) float4 { float x, y, z, w; };
inline float2 make_float2(float a, float b) { return {a, b}; }
inline float4 make_float4(float a, float b, float c, float d) { return {a, b, c, d}; }
inline uint4 make_uint4(unsigned a, unsigned b, unsigned c, unsigned d) { return {a, b, c, d}; }

struct __half { unsigned short bits; };
inline __half __float2half_rn(float f) { _Float16 h = (_Float16)f; __half r; std::memcpy(&r.bits, &h, 2); return r; }
inline float __half2float(__half h) { _Float16 v; std::memcpy(&v, &h.bits, 2); return (float)v; }
inline __half __ushort_as_half(unsigned short u) { __half h; h.bits = u; return h; }
inline unsigned short __half_as_ushort(__half h) { return h.bits; }

// compiled with -ffp-contract=off: each of these is one IEEE operation, rounded to nearest even
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline float __uint_as_float(unsigned u) { float f; std::memcpy(&f, &u, 4); return f; }
inline unsigned __float_as_uint(float f) { unsigned u; std::memcpy(&u, &f, 4); return u; }
using std::isfinite;

namespace emu {
enum State { RUNNABLE, WAITING, DONE };
struct Fiber { ucontext_t ctx; uint3 tid; int warp, lane; State state; };
struct Barrier { int arrived = 0; std::vector<int> waiters; };
struct Ctx {
    std::vector<Fiber> fibers;
    std::vector<std::vector<char>> stacks;
    ucontext_t sched;
    int cur = -1;
    uint3 block_idx;
    uint3 block_dim, grid_dim;
    int alive = 0;
    Barrier block_bar;
    int or_acc = 0, or_result = 0;
    std::vector<int> warp_alive, warp_size;
    std::vector<Barrier> warp_bar;
    std::vector<unsigned long long> slots;
    std::function<void()> body;
    std::string error;
    std::vector<std::pair<uintptr_t, size_t>> ranges;
};
inline Ctx& C() { static Ctx c; return c; }
inline Fiber& cur() { return C().fibers[C().cur]; }
inline void fail(const std::string& msg) {
    Ctx& c = C();
    if (c.error.empty()) {
        char where[160];
        if (c.cur >= 0) {
            std::snprintf(where, sizeof where, " [block (%u,%u,%u) thread (%u,%u,%u)]", c.block_idx.x,
                          c.block_idx.y, c.block_idx.z, cur().tid.x, cur().tid.y, cur().tid.z);
        } else {
            where[0] = 0;
        }
        c.error = msg + where;
    }
}
inline const uint3& thread_idx() { return cur().tid; }

// arrive at a barrier that completes when `expected` fibers are there; the last one releases the rest
inline void arrive(Barrier& b, int expected) {
    Ctx& c = C();
    if (!c.error.empty()) return;  // after an error, run everything to the end without waiting
    b.arrived++;
    b.waiters.push_back(c.cur);
    if (b.arrived >= expected) {
        for (int w : b.waiters) c.fibers[w].state = RUNNABLE;
        b.waiters.clear();
        b.arrived = 0;
        return;
    }
    cur().state = WAITING;
    swapcontext(&cur().ctx, &c.sched);
}
inline void release_if_complete(Barrier& b, int expected) {
    Ctx& c = C();
    if (b.arrived > 0 && b.arrived >= expected) {
        for (int w : b.waiters) c.fibers[w].state = RUNNABLE;
        b.waiters.clear();
        b.arrived = 0;
    }
}
inline int sync_block(int pred) {
    Ctx& c = C();
    c.or_acc |= pred;
    const bool last = c.block_bar.arrived + 1 >= c.alive;
    if (last) { c.or_result = c.or_acc; c.or_acc = 0; }
    arrive(c.block_bar, c.alive);
    return c.or_result;
}
inline void sync_warp() {
    Ctx& c = C();
    const int w = cur().warp;
    arrive(c.warp_bar[w], c.warp_alive[w]);
}
template <class T>
T shuffle(unsigned mask, T v, int src_lane, const char* what) {
    static_assert(sizeof(T) <= 8, "shuffle of a type wider than 8 bytes");
    Ctx& c = C();
    const int w = cur().warp;
    if (mask != 0xffffffffu) fail(std::string(what) + ": only the full mask is emulated");
    if (c.warp_alive[w] != 32) fail(std::string(what) + " in a warp with exited or missing lanes");
    unsigned long long bits = 0;
    std::memcpy(&bits, &v, sizeof(T));
    c.slots[w * 32 + cur().lane] = bits;
    sync_warp();
    bits = c.slots[w * 32 + (src_lane & 31)];
    sync_warp();  // nobody overwrites a slot before every lane has read
    T r;
    std::memcpy(&r, &bits, sizeof(T));
    return r;
}
inline void check_read(const void* p, size_t n, const char* what) {
    Ctx& c = C();
    const uintptr_t a = (uintptr_t)p;
    for (auto& r : c.ranges) {
        if (a >= r.first && a + n <= r.first + r.second) return;
    }
    char msg[128];
    std::snprintf(msg, sizeof msg, "%s: read of %zu bytes at %p outside every argument buffer", what, n, p);
    fail(msg);
}
inline void check_aligned(const void* p, int bytes, const char* expr) {
    if ((uintptr_t)p % bytes) {
        char msg[200];
        std::snprintf(msg, sizeof msg, "misaligned %d-byte access: %s = %p", bytes, expr, p);
        fail(msg);
    }
}

extern "C" void fiber_main() {
    Ctx& c = C();
    c.body();
    Fiber& f = cur();
    f.state = DONE;
    c.alive--;
    c.warp_alive[f.warp]--;
    release_if_complete(c.block_bar, c.alive);
    release_if_complete(c.warp_bar[f.warp], c.warp_alive[f.warp]);
}  // returns to c.sched through uc_link

inline void run_grid(dim3 grid, dim3 block) {
    Ctx& c = C();
    const int nt = (int)(block.x * block.y * block.z);
    const int nw = (nt + 31) / 32;
    const size_t stack_size = 256 * 1024;
    if ((int)c.stacks.size() < nt) c.stacks.resize(nt);
    for (int t = 0; t < nt; t++) {
        if (c.stacks[t].size() < stack_size) c.stacks[t].resize(stack_size);
    }
    c.fibers.assign(nt, Fiber());
    c.block_dim = {block.x, block.y, block.z};
    c.grid_dim = {grid.x, grid.y, grid.z};
    for (unsigned bz = 0; bz < grid.z && c.error.empty(); bz++)
    for (unsigned by = 0; by < grid.y && c.error.empty(); by++)
    for (unsigned bx = 0; bx < grid.x && c.error.empty(); bx++) {
        c.block_idx = {bx, by, bz};
        c.alive = nt;
        c.block_bar = Barrier();
        c.or_acc = c.or_result = 0;
        c.warp_alive.assign(nw, 0);
        c.warp_bar.assign(nw, Barrier());
        c.slots.assign(nw * 32, 0);
        for (int t = 0; t < nt; t++) {
            Fiber& f = c.fibers[t];
            f.tid = {(unsigned)(t % block.x), (unsigned)((t / block.x) % block.y), (unsigned)(t / (block.x * block.y))};
            f.warp = t / 32;
            f.lane = t % 32;
            f.state = RUNNABLE;
            c.warp_alive[f.warp]++;
            getcontext(&f.ctx);
            f.ctx.uc_stack.ss_sp = c.stacks[t].data();
            f.ctx.uc_stack.ss_size = stack_size;
            f.ctx.uc_link = &c.sched;
            makecontext(&f.ctx, (void (*)())fiber_main, 0);
        }
        for (;;) {
            bool ran = false, all_done = true;
            for (int t = 0; t < nt; t++) {
                if (c.fibers[t].state == RUNNABLE) {
                    c.cur = t;
                    swapcontext(&c.sched, &c.fibers[t].ctx);
                    ran = true;
                }
                if (c.fibers[t].state != DONE) all_done = false;
            }
            if (all_done) break;
            if (!ran) {
                bool any_runnable = false;
                for (auto& f : c.fibers) any_runnable = any_runnable || f.state == RUNNABLE;
                if (!any_runnable) {
                    c.cur = -1;
                    fail("deadlock: threads wait at barriers that can never complete");
                    break;  // the waiting fibers are abandoned (their stacks are reused)
                }
            }
        }
        c.cur = -1;
    }
}

template <class... P, size_t... I>
void call_kernel(void (*k)(P...), void** a, std::index_sequence<I...>) {
    k(*static_cast<std::remove_cv_t<std::remove_reference_t<P>>*>(a[I])...);
}
template <class... P>
int launch(void (*k)(P...), dim3 grid, dim3 block, void** args) {
    Ctx& c = C();
    c.error.clear();
    c.body = [=]() { call_kernel(k, args, std::index_sequence_for<P...>{}); };
    run_grid(grid, block);
    return c.error.empty() ? 0 : 1;
}
template <class... P>
int signature(void (*)(P...), long long* sizes) {
    int i = 0;
    ((sizes[i++] = (long long)sizeof(P)), ...);
    return (int)sizeof...(P);
}
}  // namespace emu

#define threadIdx (emu::thread_idx())
#define blockIdx (emu::C().block_idx)
#define blockDim (emu::C().block_dim)
#define gridDim (emu::C().grid_dim)
#define INT4REF_ASSERT_ALIGNED(ptr, bytes) emu::check_aligned((const void*)(ptr), (bytes), #ptr)

inline void __syncthreads() { emu::sync_block(0); }
inline int __syncthreads_or(int p) { return emu::sync_block(p != 0); }
inline void __syncwarp(unsigned = 0xffffffffu) { emu::sync_warp(); }
template <class T> T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int = 32) {
    return emu::shuffle(mask, v, emu::cur().lane ^ lane_mask, "__shfl_xor_sync");
}
template <class T> T __shfl_sync(unsigned mask, T v, int src, int = 32) {
    return emu::shuffle(mask, v, src, "__shfl_sync");
}
template <class T> T __ldg(const T* p) { emu::check_read(p, sizeof(T), "__ldg"); return *p; }
template <class T> T __ldcs(const T* p) { emu::check_read(p, sizeof(T), "__ldcs"); return *p; }
inline int atomicOr(int* p, int v) { int old = *p; *p |= v; return old; }

extern "C" const char* emu_error() { return emu::C().error.c_str(); }
extern "C" void emu_clear_ranges() { emu::C().ranges.clear(); }
extern "C" void emu_add_range(unsigned long long p, unsigned long long n) {
    emu::C().ranges.push_back({(uintptr_t)p, (size_t)n});
}
// ---- end of the emulator; the kernels follow ----
"""

_GUARD = 64  # guard bytes before and after every buffer the emulator backend allocates
_GUARD_BYTE = 0xA5


class EmulatorError(RuntimeError):
    """A kernel did something the emulator caught (out-of-bounds access, deadlock, ...)."""


def find_compiler() -> str | None:
    for name in (os.environ.get("CXX"), "g++", "clang++", "c++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "int4ref" / "emulator"


def emulator_source(kernels: dict[str, tuple[str, tuple[str, ...]]] | None = None) -> tuple[str, list]:
    """The C++ translation unit: the emulator, common.cu once, the kernels, and one launch
    wrapper per name expression.

    ``kernels`` maps a file name to ``(code, expressions)``; the default is the package's
    files with every expression of :data:`int4ref.gpu.KERNELS`.
    """
    if kernels is None:
        kernels = {name: (raw_source(name), KERNELS[name]) for name in KERNEL_FILES}
    parts = [SIMT_HEADER, raw_source(HEADER)]
    index, wrappers = [], []
    for name, (code, expressions) in kernels.items():
        parts.append(f"// ---- {name} ----\n" + INCLUDE_LINE.sub("", code))
        for expr in expressions:
            i = len(index)
            index.append((name, expr))
            wrappers.append(
                f'extern "C" int emu_launch_{i}(unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, '
                f"unsigned bz, void** a) {{ return emu::launch(&{expr}, dim3(gx, gy, gz), dim3(bx, by, bz), a); }}\n"
                f'extern "C" int emu_signature_{i}(long long* s) {{ return emu::signature(&{expr}, s); }}'
            )
    return "\n".join(parts + wrappers) + "\n", index


_BUILD_LOCK = threading.Lock()


def build(compiler: str | None = None, kernels=None) -> tuple[Path, list[tuple[str, str]]]:
    """Compile the emulator library (cached by the hash of its source and the compiler)."""
    compiler = compiler or find_compiler()
    if compiler is None:
        raise EmulatorError("no C++ compiler found (g++ or clang++; set CXX)")
    text, index = emulator_source(kernels)
    flags = ["-std=c++17", "-O1", "-shared", "-fPIC", "-ffp-contract=off", "-fno-fast-math", "-w"]
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True).stdout
    key = hashlib.sha256("\0".join([text, " ".join(flags), version]).encode()).hexdigest()[:20]
    out_dir = _cache_dir() / key
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError:  # no writable home: a per-user folder in the temporary directory
        out_dir = Path(tempfile.gettempdir()) / f"int4ref-emulator-{os.getuid()}" / key
        out_dir.mkdir(parents=True, exist_ok=True)
    lib = out_dir / "libint4ref_emu.so"
    with _BUILD_LOCK:
        if not lib.exists():
            with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
                src = Path(tmp) / "emu.cpp"
                src.write_text(text, encoding="utf-8")
                tmp_lib = Path(tmp) / lib.name
                proc = subprocess.run([compiler, *flags, str(src), "-o", str(tmp_lib)], capture_output=True, text=True)
                if proc.returncode != 0:
                    raise EmulatorError(f"compiling the emulator failed:\n{proc.stderr[-8000:]}")
                os.replace(tmp_lib, lib)  # atomic: a concurrent build writes the same bytes
    return lib, index


class EmulatorBackend:
    """Launches the kernels on the CPU emulator; arrays are numpy arrays.

    The same code in :mod:`int4ref.gpu.ops` drives this backend and the CuPy one, so the
    tests exercise the real launch configuration and argument lists.
    """

    name = "emulator"
    xp = np

    def __init__(self, compiler: str | None = None, kernels=None):
        path, index = build(compiler, kernels)
        self._lib = ctypes.CDLL(str(path))
        self._lib.emu_error.restype = ctypes.c_char_p
        self._lib.emu_add_range.argtypes = [ctypes.c_ulonglong, ctypes.c_ulonglong]
        self._index = {entry: i for i, entry in enumerate(index)}
        self._signatures: dict[int, tuple[int, ...]] = {}
        self._guarded: list[tuple[weakref.ref, int, int]] = []
        self._lock = threading.Lock()
        self.launches: list[tuple[str, str, tuple, tuple]] = []  # (file, expression, grid, block), for tests

    # arrays -------------------------------------------------------------------------
    def empty(self, shape, dtype) -> np.ndarray:
        """Like cudaMalloc: 256-byte aligned, uninitialised (here: guard bytes), with
        _GUARD guard bytes on each side that :meth:`launch` checks afterwards."""
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        raw = np.empty(nbytes + 2 * _GUARD + 256, dtype=np.uint8)
        start = _GUARD + (-(raw.ctypes.data + _GUARD)) % 256
        raw[:] = _GUARD_BYTE
        arr = raw[start : start + nbytes].view(dtype).reshape(shape)
        self._guarded.append((weakref.ref(raw), start, nbytes))
        return arr

    def zeros(self, shape, dtype) -> np.ndarray:
        arr = self.empty(shape, dtype)
        arr[...] = 0
        return arr

    def asarray(self, a, dtype=None) -> np.ndarray:
        a = np.asarray(a, dtype=dtype)
        out = self.empty(a.shape, a.dtype)
        out[...] = a
        return out

    def to_host(self, a) -> np.ndarray:
        return np.asarray(a)

    @staticmethod
    def ptr(a) -> int:
        return a.ctypes.data

    def synchronize(self) -> None:
        pass

    # launches -----------------------------------------------------------------------
    def signature(self, name: str, expression: str) -> tuple[int, ...]:
        i = self._index[(name, expression)]
        if i not in self._signatures:
            sizes = (ctypes.c_longlong * 32)()
            count = getattr(self._lib, f"emu_signature_{i}")(sizes)
            self._signatures[i] = tuple(sizes[:count])
        return self._signatures[i]

    def launch(self, name: str, expression: str, grid: tuple, block: tuple, args: tuple) -> None:
        if (name, expression) not in self._index:
            raise KeyError(f"{expression} is not instantiated in {name}")
        sizes = self.signature(name, expression)
        if len(sizes) != len(args):
            raise TypeError(f"{expression} takes {len(sizes)} arguments, got {len(args)}")
        keep = []
        pointers = (ctypes.c_void_p * len(args))()
        with self._lock:
            self._lib.emu_clear_ranges()
            for k, (arg, size) in enumerate(zip(args, sizes)):
                if isinstance(arg, np.ndarray):
                    if size != 8:
                        raise TypeError(f"{expression}: argument {k} is an array but the kernel takes {size} bytes")
                    if not arg.flags.c_contiguous:
                        raise ValueError(f"{expression}: argument {k} is not C-contiguous")
                    holder = ctypes.c_void_p(arg.ctypes.data)
                    self._lib.emu_add_range(arg.ctypes.data, arg.nbytes)
                elif isinstance(arg, np.generic):
                    if arg.dtype.itemsize != size:
                        raise TypeError(f"{expression}: argument {k} is {arg.dtype} ({arg.dtype.itemsize} bytes) "
                                        f"but the kernel parameter has {size} bytes")
                    holder = ctypes.create_string_buffer(arg.tobytes(), size)
                else:
                    raise TypeError(f"{expression}: argument {k} must be a numpy array or numpy scalar, "
                                    f"got {type(arg).__name__}")
                keep.append(holder)
                pointers[k] = ctypes.addressof(holder)
            grid3 = tuple(grid) + (1,) * (3 - len(grid))
            block3 = tuple(block) + (1,) * (3 - len(block))
            self.launches.append((name, expression, grid3, block3))
            rc = getattr(self._lib, f"emu_launch_{self._index[(name, expression)]}")(
                *(ctypes.c_uint(v) for v in grid3 + block3), pointers)
            if rc:
                raise EmulatorError(f"{expression} grid={grid3} block={block3}: {self._lib.emu_error().decode()}")
            self._check_guards(expression)

    def _check_guards(self, expression: str) -> None:
        alive = []
        for ref, start, nbytes in self._guarded:
            raw = ref()
            if raw is None:
                continue
            alive.append((ref, start, nbytes))
            if (raw[:start] != _GUARD_BYTE).any() or (raw[start + nbytes :] != _GUARD_BYTE).any():
                raise EmulatorError(f"{expression} wrote outside a buffer of {nbytes} bytes")
        self._guarded = alive
