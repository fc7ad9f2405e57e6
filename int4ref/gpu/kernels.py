"""The CUDA sources, their template instantiations, and how they are compiled.

The kernels live in ``int4ref/gpu/*.cu`` (package data). ``common.cu`` is a header that
the others include; :func:`source` pastes it in, so that the string handed to the
compiler is complete (CuPy's kernel cache hashes the source string, not the files it
includes).

Two ways to compile:

* :func:`module` - a ``cupy.RawModule`` for the current device (needs a GPU). CuPy
  compiles with NVRTC and picks ``-arch`` from the device.
* :func:`compile_nvrtc` - NVRTC directly, for an explicit ``sm_XX``, to a cubin, with the
  ptxas report (registers, spills). Needs no GPU and no driver, only the NVRTC library
  and the CUDA headers (``pip install "cupy-cuda12x[ctk]"``). The test suite uses it to
  compile every kernel for every architecture in :data:`ARCHS`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

#: Kernel sources, in the order the book presents them. ``common.cu`` is their header.
KERNEL_FILES = ("quantize.cu", "dequantize.cu", "gemv.cu")
HEADER = "common.cu"
#: Architectures the test suite compiles for: T4 (Colab), A100, A10/3090, L4/4090, H100.
ARCHS = (75, 80, 86, 89, 90)
#: Options that make the float arithmetic match numpy's float32 bit for bit (no FMA
#: contraction, subnormals kept, IEEE division). No fast math anywhere.
COMPILE_OPTIONS = ("--fmad=false", "--ftz=false", "--prec-div=true", "--prec-sqrt=true")

INCLUDE_LINE = re.compile(r'^#include "(?P<name>[\w.]+)"\s*$', re.MULTILINE)

#: Threads per warp (WARP_SIZE in common.cu).
WARP_SIZE = 32
GEMV_M_MAX = (1, 4, 16)  # gemv_v3 instantiations; M = 2..3 runs the M_MAX = 4 one
GEMV_VERSIONS = ("v1", "v2", "v3")


def gemv_v3_rows(m_max: int) -> int:
    """Rows per warp of gemv_v3<S, M_MAX, U> (GEMV_V3_ROWS in gemv.cu)."""
    return 2 if m_max >= 16 else 4


def _types(*names: str) -> str:
    return ", ".join(names)


def quantize_expr(in_type: str, int_sym: bool, vec: int) -> str:
    return f"quantize_groups<{_types(in_type, 'true' if int_sym else 'false', str(vec))}>"


def dequantize_expr(scale_type: str, out_type: str, nbytes: int) -> str:
    return f"dequantize_groups<{_types(scale_type, out_type, str(nbytes))}>"


def gemv_expr(version: str, scale_type: str, m_max: int = 16, uniform: bool = False) -> str:
    if version == "v3":
        return f"gemv_v3<{_types(scale_type, str(m_max), 'true' if uniform else 'false')}>"
    return f"gemv_{version}<{scale_type}>"


def _all_expressions() -> dict[str, tuple[str, ...]]:
    types = ("float", "__half")
    quant = []
    for t, vec in (("float", 4), ("__half", 8)):
        for int_sym in (False, True):
            for v in (2, vec):
                quant.append(quantize_expr(t, int_sym, v))
    quant.append("double_quantize_scales")
    deq = [dequantize_expr(s, o, b) for s in types for o in types for b in (1, 8)] + ["decode_scales"]
    gemv = [gemv_expr(v, s) for v in ("v1", "v2") for s in types]
    gemv += [gemv_expr("v3", s, m, u) for s in types for m in GEMV_M_MAX for u in (False, True)]
    return {"quantize.cu": tuple(quant), "dequantize.cu": tuple(deq), "gemv.cu": tuple(gemv)}


#: Every kernel (name expression) of every file: what gets compiled and tested.
KERNELS: dict[str, tuple[str, ...]] = _all_expressions()


def raw_source(name: str) -> str:
    """The text of one kernel file as shipped in the package."""
    return resources.files("int4ref.gpu").joinpath(name).read_text(encoding="utf-8")


@cache
def source(name: str) -> str:
    """The file with ``#include "common.cu"`` replaced by the header's text."""
    text = raw_source(name)

    def paste(match: re.Match) -> str:
        included = match.group("name")
        if included != HEADER:
            raise ValueError(f"{name}: only {HEADER} may be included, found {included!r}")
        return f"// ---- begin {HEADER} ----\n{raw_source(HEADER)}\n// ---- end {HEADER} ----"

    return INCLUDE_LINE.sub(paste, text)


def excerpt(name: str, kernel: str) -> str:
    """The lines of ``name`` between ``// ==== kernel ====`` and ``// ==== end kernel ====``."""
    text = raw_source(name)
    begin, end = f"// ==== {kernel} ====\n", f"// ==== end {kernel} ===="
    try:
        i = text.index(begin) + len(begin)
        j = text.index(end, i)
    except ValueError:
        raise ValueError(f"{name} has no section marked '// ==== {kernel} ===='") from None
    return text[i:j].rstrip() + "\n"


# ---------------------------------------------------------------------------------------
# NVRTC without a GPU


class CompileError(RuntimeError):
    """NVRTC rejected a kernel file; the message holds the compiler log."""


def include_options() -> tuple[str, ...]:
    """The include paths and language options CuPy itself passes to NVRTC."""
    try:
        from cupy._core.core import assemble_cupy_compiler_options  # what RawModule uses

        return tuple(assemble_cupy_compiler_options(()))
    except Exception:  # a CuPy without that helper: find the CUDA headers ourselves
        opts = ["--std=c++17"]
        try:
            from cuda.pathfinder import find_nvidia_header_directory

            path = find_nvidia_header_directory("cudart")
            if path:
                opts.append(f"-I{path}")
        except Exception:
            pass
        return tuple(opts)


@dataclass(frozen=True)
class KernelReport:
    """ptxas' report for one kernel on one architecture."""

    expression: str
    mangled: str
    arch: int
    registers: int
    spill_stores: int
    spill_loads: int
    stack_frame: int
    shared_bytes: int


@dataclass(frozen=True)
class CompileResult:
    name: str
    arch: int
    cubin: bytes
    log: str
    reports: dict[str, KernelReport]  # by name expression


def _nvrtc():
    from cupy_backends.cuda.libs import nvrtc

    return nvrtc


def nvrtc_version() -> tuple[int, int]:
    return tuple(_nvrtc().getVersion())


def compile_nvrtc(name: str, arch: int, expressions=None, extra_options=(), code: str | None = None) -> CompileResult:
    """Compile kernel file ``name`` to a cubin for ``sm_<arch>`` and parse ptxas' report.

    ``expressions`` defaults to every instantiation in :data:`KERNELS`; ``code`` replaces
    the file's text (tests use it to check that a broken kernel is caught).
    """
    nvrtc = _nvrtc()
    expressions = tuple(KERNELS[name] if expressions is None else expressions)
    text = source(name) if code is None else code
    options = COMPILE_OPTIONS + include_options() + (f"-arch=sm_{arch}", "--ptxas-options=-v") + tuple(extra_options)
    prog = nvrtc.createProgram(text, name, (), ())
    try:
        for expr in expressions:
            nvrtc.addNameExpression(prog, expr)
        try:
            nvrtc.compileProgram(prog, options)
        except nvrtc.NVRTCError as exc:
            log = nvrtc.getProgramLog(prog)
            raise CompileError(f"NVRTC failed on {name} for sm_{arch}: {exc}\n{log}") from None
        log = nvrtc.getProgramLog(prog)
        cubin = nvrtc.getCUBIN(prog)
        lowered = {expr: nvrtc.getLoweredName(prog, expr) for expr in expressions}
    finally:
        nvrtc.destroyProgram(prog)
    by_mangled = parse_ptxas_log(log, arch)
    reports = {}
    for expr, mangled in lowered.items():
        if mangled not in by_mangled:
            raise CompileError(f"ptxas reported nothing for {expr} ({mangled}) on sm_{arch}:\n{log}")
        reports[expr] = KernelReport(expr, mangled, arch, **by_mangled[mangled])
    return CompileResult(name, arch, cubin, log, reports)


_ENTRY = re.compile(r"Compiling entry function '(?P<name>[^']+)' for 'sm_(?P<arch>\d+)'")
_PROPS = re.compile(r"(?P<stack>\d+) bytes stack frame, (?P<st>\d+) bytes spill stores, (?P<ld>\d+) bytes spill loads")
_USED = re.compile(r"Used (?P<regs>\d+) registers")
_SMEM = re.compile(r"(?P<smem>\d+) bytes smem")


def parse_ptxas_log(log: str, arch: int) -> dict[str, dict]:
    """``{mangled entry name: registers, spill_stores, spill_loads, stack_frame, shared_bytes}``.

    ptxas prints, per entry function, a "Compiling entry function" line, then its
    "Function properties" (stack frame and spills) and "Used N registers" lines.
    """
    out: dict[str, dict] = {}
    current = None
    for line in log.splitlines():
        m = _ENTRY.search(line)
        if m:
            if int(m.group("arch")) != arch:
                raise CompileError(f"ptxas compiled for sm_{m.group('arch')}, expected sm_{arch}")
            current = m.group("name")
            out[current] = {"registers": -1, "spill_stores": -1, "spill_loads": -1, "stack_frame": -1,
                            "shared_bytes": 0}
            continue
        if current is None:
            continue
        m = _PROPS.search(line)
        if m and out[current]["spill_stores"] < 0:
            out[current].update(stack_frame=int(m.group("stack")), spill_stores=int(m.group("st")),
                                spill_loads=int(m.group("ld")))
            continue
        m = _USED.search(line)
        if m:
            out[current]["registers"] = int(m.group("regs"))
            s = _SMEM.search(line)
            if s:
                out[current]["shared_bytes"] = int(s.group("smem"))
    for name, r in out.items():
        if min(r["registers"], r["spill_stores"], r["spill_loads"]) < 0:
            raise CompileError(f"incomplete ptxas report for {name}:\n{log}")
    return out


# ---------------------------------------------------------------------------------------
# CuPy (needs a GPU)


@cache
def module(name: str):
    """``cupy.RawModule`` of one kernel file for the current device (compiled on first use)."""
    import cupy

    return cupy.RawModule(code=source(name), options=COMPILE_OPTIONS, name_expressions=list(KERNELS[name]))


def function(name: str, expression: str):
    if expression not in KERNELS[name]:
        raise KeyError(f"{expression} is not instantiated in {name}; known: {', '.join(KERNELS[name])}")
    return module(name).get_function(expression)
