"""Constants that the CUDA sources (int4ref/gpu/*.cu) and the Python that launches them
(int4ref.gpu.ops, int4ref.gpu.kernels) must agree on, read from the .cu text and compared;
and the "Measured:" placeholders of gemv.cu point at files that exist.

No GPU and no compiler needed: the .cu files are parsed as text.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from int4ref.gpu import kernels, ops

ROOT = Path(__file__).resolve().parents[1]


def defines() -> dict[str, str]:
    """``#define NAME value`` of every kernel file and the header (object-like macros)."""
    out = {}
    for name in (kernels.HEADER, *kernels.KERNEL_FILES):
        for m in re.finditer(r"^#define\s+(\w+)\s+([^\n]+?)\s*(?://.*)?$", kernels.raw_source(name), re.M):
            assert m.group(1) not in out, f"{m.group(1)} defined twice"
            out[m.group(1)] = m.group(2)
    return out


def launch_bounds() -> dict[str, int]:
    """Kernel name -> its ``__launch_bounds__`` (the most threads per block it may launch with)."""
    out = {}
    for name in kernels.KERNEL_FILES:
        for m in re.finditer(r"__launch_bounds__\((\d+)\)\s*\n?\s*(\w+)\s*\(", kernels.raw_source(name)):
            out[m.group(2)] = int(m.group(1))
    return out


def test_error_flags():
    d = defines()
    assert int(d["FLAG_NONFINITE"]) == ops.FLAG_NONFINITE
    assert int(d["FLAG_SCALE_OVERFLOW"]) == ops.FLAG_SCALE_OVERFLOW
    assert int(d["FLAG_SCALE_UNDERFLOW"]) == ops.FLAG_SCALE_UNDERFLOW
    flags = (ops.FLAG_NONFINITE, ops.FLAG_SCALE_OVERFLOW, ops.FLAG_SCALE_UNDERFLOW)
    assert all(f > 0 and f & (f - 1) == 0 for f in flags) and len(set(flags)) == 3  # distinct bits


def test_warp_size_and_gemv_batch():
    d = defines()
    assert int(d["WARP_SIZE"]) == kernels.WARP_SIZE == 32
    assert int(d["GEMV_MAX_M"]) == ops.GEMV_MAX_M == max(kernels.GEMV_M_MAX)


def test_gemv_v3_rows_per_warp():
    m = re.search(r"^#define\s+GEMV_V3_ROWS\(M_MAX\)\s+\(\(M_MAX\)\s*>=\s*(\d+)\s*\?\s*(\d+)\s*:\s*(\d+)\)",
                  kernels.raw_source("gemv.cu"), re.M)
    assert m, "GEMV_V3_ROWS in gemv.cu no longer has the form ((M_MAX) >= T ? A : B): update this test"
    threshold, above, below = map(int, m.groups())
    for m_max in range(1, ops.GEMV_MAX_M + 1):
        assert kernels.gemv_v3_rows(m_max) == (above if m_max >= threshold else below), m_max


def test_tiny_absmax_is_numpys_1e_38():
    m = re.fullmatch(r"__int_as_float\(0x([0-9a-fA-F]{8})\)", defines()["TINY_ABSMAX"])
    assert m and int(m.group(1), 16) == int(np.array(1e-38, dtype=np.float32).view(np.uint32))


def test_launch_configurations_fit_the_launch_bounds():
    bounds = launch_bounds()
    assert set(bounds) == {"quantize_groups", "double_quantize_scales", "dequantize_groups", "decode_scales",
                           "gemv_v1", "gemv_v2", "gemv_v3"}
    for n, g, itemsize in ((4096, 64, 4), (1000, 10, 2), (64, 64, 4)):
        assert ops.quantize_plan(n, g, itemsize, True)["block"] == (bounds["quantize_groups"],)
        assert ops.dequantize_plan(n, g, True)["block"] == (bounds["dequantize_groups"],)
    assert ops.DQ_BLOCKSIZE == bounds["double_quantize_scales"]  # one thread per scale of a block
    for version in kernels.GEMV_VERSIONS:
        for M in (1, 4, ops.GEMV_MAX_M):
            assert ops.gemv_plan(version, M, 4096)["block"] == (bounds[f"gemv_{version}"],)
    # gemv_v3: 4 warps of R rows each per block
    for M in range(1, ops.GEMV_MAX_M + 1):
        plan = ops.gemv_plan("v3", M, 4096)
        rows = bounds["gemv_v3"] // kernels.WARP_SIZE * kernels.gemv_v3_rows(plan["m_max"])
        assert plan["grid"] == (-(-4096 // rows),)


@pytest.mark.parametrize("name", kernels.KERNEL_FILES + (kernels.HEADER,))
def test_paths_named_in_the_sources_exist(name):
    """The placeholders for measurements name where they will be: existing files, and the
    results file that the benchmark writes and the chapter reads."""
    text = kernels.raw_source(name)
    for path in set(re.findall(r"\b(?:tools|book|int4ref|results|tests)/[\w./-]*\w", text)):
        if path == "results/bench-gpu.json":  # written on a GPU, not committed yet
            assert "--json results/bench-gpu.json" in (ROOT / "Makefile").read_text()
            assert 'results.find("bench-gpu.json")' in (ROOT / "book" / "gpu-kernels.md").read_text()
        else:
            assert (ROOT / path).exists(), f"{name} names {path}, which does not exist"
    for m in re.finditer(r"^// Measured:.*$", text, re.M):
        assert "not yet" not in m.group(0) or "tools/device_check.sh" in text[m.start():m.start() + 400]
