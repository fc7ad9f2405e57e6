"""The CUDA kernels compile for every target architecture, without register spills.

Runs without a GPU: NVRTC (from the ``cupy-cuda12x[ctk]`` wheels) compiles each kernel
file to a cubin for sm_75 (T4, Colab), sm_80, sm_86, sm_89 and sm_90 with
``--ptxas-options=-v``, and ptxas' report must show, for every instantiated kernel,
"0 bytes spill stores, 0 bytes spill loads" and no stack frame. Skipped (with the reason)
only where NVRTC or the CUDA headers are not installed.

Also here, CPU-only: the sources ship with the package, the report parser is not
vacuous (a kernel forced to spill is caught, a syntax error fails), and the default path
uses no sm_80+ feature.

CI sets INT4REF_REQUIRE_NVRTC=1: there a missing NVRTC is a failure, not a skip.
"""
from __future__ import annotations

import fnmatch
import os
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path

import pytest

from int4ref.gpu import kernels

ROOT = Path(__file__).resolve().parents[1]


def _nvrtc_status():
    try:
        from cupy_backends.cuda.libs import nvrtc

        nvrtc.getVersion()
    except Exception as exc:
        return f"NVRTC not available ({type(exc).__name__}: {exc}); pip install 'cupy-cuda12x[ctk]'"
    return None


NVRTC_MISSING = _nvrtc_status()
if NVRTC_MISSING and os.environ.get("INT4REF_REQUIRE_NVRTC") == "1":
    raise RuntimeError(f"INT4REF_REQUIRE_NVRTC=1 but {NVRTC_MISSING}")
needs_nvrtc = pytest.mark.skipif(NVRTC_MISSING is not None, reason=NVRTC_MISSING or "")


@pytest.fixture(scope="module")
def compiled():
    """Every (file, arch) compiled once, two at a time (NVRTC releases the GIL)."""
    if NVRTC_MISSING:
        pytest.skip(NVRTC_MISSING)
    jobs = [(name, arch) for arch in kernels.ARCHS for name in kernels.KERNEL_FILES]
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda job: kernels.compile_nvrtc(*job), jobs))
    return {(r.name, r.arch): r for r in results}


@needs_nvrtc
@pytest.mark.parametrize("arch", kernels.ARCHS)
@pytest.mark.parametrize("name", kernels.KERNEL_FILES)
def test_every_kernel_compiles_without_spills(compiled, name, arch):
    result = compiled[name, arch]
    assert len(result.cubin) > 0
    assert set(result.reports) == set(kernels.KERNELS[name])
    bad = []
    for expr, rep in result.reports.items():
        assert 0 < rep.registers <= 255, (expr, rep)
        if rep.spill_stores or rep.spill_loads or rep.stack_frame:
            bad.append(f"{expr}: {rep.spill_stores} bytes spill stores, {rep.spill_loads} bytes spill loads, "
                       f"{rep.stack_frame} bytes stack frame")
    assert not bad, f"sm_{arch}, {name}:\n" + "\n".join(bad) + "\n\nptxas log:\n" + result.log


@needs_nvrtc
def test_ptxas_report_lines_are_the_ones_parsed(compiled):
    """Guard against a silently empty parse: the raw log has one spill line per kernel."""
    result = compiled["gemv.cu", 75]
    spill_lines = re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", result.log)
    assert len(spill_lines) >= len(kernels.KERNELS["gemv.cu"])
    assert all(a == "0" and b == "0" for a, b in spill_lines)


@needs_nvrtc
def test_a_spilling_kernel_is_reported():
    """Force the largest GEMV into 32 registers: ptxas must report spills, and we must see them.
    (__launch_bounds__ overrides --maxrregcount, so it is taken out of this copy.)"""
    expr = kernels.gemv_expr("v3", "float", 16, False)
    code = re.sub(r"__launch_bounds__\(\d+\)", "", kernels.source("gemv.cu"))
    result = kernels.compile_nvrtc("gemv.cu", 75, [expr], extra_options=("--maxrregcount=32",), code=code)
    rep = result.reports[expr]
    assert rep.registers <= 32
    assert rep.spill_stores > 0 and rep.spill_loads > 0


@needs_nvrtc
def test_a_syntax_error_fails_the_compile():
    code = kernels.source("dequantize.cu").replace("const float t = __ldg(", "const float t = __ldg((", 1)
    with pytest.raises(kernels.CompileError, match="NVRTC failed on dequantize.cu"):
        kernels.compile_nvrtc("dequantize.cu", 75, ["decode_scales"], code=code)


@needs_nvrtc
def test_a_missing_instantiation_fails():
    with pytest.raises(kernels.CompileError):
        kernels.compile_nvrtc("gemv.cu", 75, ["gemv_v4<float>"])


def test_parser_on_a_recorded_log():
    log = """ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function '_Z7gemv_v1IfEvPKhPKT_PKfPK6__halfPviiiii' for 'sm_75'
ptxas info    : Function properties for _Z7gemv_v1IfEvPKhPKT_PKfPK6__halfPviiiii
ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 53 registers, 64 bytes smem, 400 bytes cmem[0]
ptxas info    : Compiling entry function 'decode_scales' for 'sm_75'
ptxas info    : Function properties for decode_scales
ptxas         .     8 bytes stack frame, 12 bytes spill stores, 4 bytes spill loads
ptxas info    : Used 18 registers, 400 bytes cmem[0]
"""
    parsed = kernels.parse_ptxas_log(log, 75)
    assert parsed["_Z7gemv_v1IfEvPKhPKT_PKfPK6__halfPviiiii"] == {
        "registers": 53, "spill_stores": 0, "spill_loads": 0, "stack_frame": 0, "shared_bytes": 64}
    assert parsed["decode_scales"] == {
        "registers": 18, "spill_stores": 12, "spill_loads": 4, "stack_frame": 8, "shared_bytes": 0}
    with pytest.raises(kernels.CompileError, match="sm_80"):
        kernels.parse_ptxas_log(log.replace("'sm_75'", "'sm_80'"), 75)
    with pytest.raises(kernels.CompileError, match="incomplete"):
        kernels.parse_ptxas_log(log.replace("Used 18 registers", "Used registers"), 75)


def test_compile_options_keep_float_arithmetic_exact():
    opts = kernels.COMPILE_OPTIONS
    assert "--fmad=false" in opts and "--ftz=false" in opts and "--prec-div=true" in opts
    assert not any("fast" in o for o in opts)


# ---------------------------------------------------------------------------------------
# sources and packaging (CPU only)


def test_kernel_sources_are_package_resources():
    files = resources.files("int4ref.gpu")
    for name in (*kernels.KERNEL_FILES, kernels.HEADER):
        text = files.joinpath(name).read_text(encoding="utf-8")
        assert "__global__" in text or name == kernels.HEADER
    for name in kernels.KERNEL_FILES:
        src = kernels.source(name)
        assert not kernels.INCLUDE_LINE.search(src) and "warp_sum" in src


@pytest.mark.skipif(sys.version_info < (3, 11), reason="tomllib is new in Python 3.11")
def test_package_data_ships_every_kernel_file():
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = config["tool"]["setuptools"]["package-data"]["int4ref"]
    find = config["tool"]["setuptools"]["packages"]["find"]["include"]
    assert any(fnmatch.fnmatch("int4ref.gpu", p) for p in find), "int4ref.gpu is not a packaged package"
    gpu_dir = ROOT / "int4ref" / "gpu"
    shipped = sorted(p.name for p in gpu_dir.iterdir() if not p.name.endswith((".py", ".pyc")) and p.is_file())
    for name in shipped:
        rel = f"gpu/{name}"
        assert any(Path(rel).match(p) for p in patterns), f"{rel} is not matched by package-data {patterns}"
    assert {*kernels.KERNEL_FILES, kernels.HEADER} <= set(shipped)


def test_every_instantiation_names_a_kernel_of_its_file():
    for name, exprs in kernels.KERNELS.items():
        text = kernels.raw_source(name)
        for expr in exprs:
            kernel = expr.split("<")[0]
            assert re.search(rf"\b{kernel}\(", text), (name, expr)


def test_default_path_has_no_sm80_only_features():
    """Colab's T4 is sm_75: no cp.async, ldmatrix, mma, bf16, wgmma or TMA in the kernels."""
    banned = ["cp.async", "__pipeline", "ldmatrix", "mma.sync", "wgmma", "__nv_bfloat16", "cuda::memcpy_async",
              "cp.async.bulk", "__cluster", "asm("]
    for name in (*kernels.KERNEL_FILES, kernels.HEADER):
        text = kernels.raw_source(name)
        for word in banned:
            assert word not in text, f"{name} uses {word}"


def test_every_gemv_version_says_what_it_measured():
    """Each version's comment carries a "Measured:" line: a result, or the marked placeholder."""
    for version in kernels.GEMV_VERSIONS:
        section = kernels.excerpt("gemv.cu", f"gemv_{version}")
        assert re.search(r"Measured: \S", section), version
        assert section.count("__global__") == 1
