"""GPU benchmark: ``python -m int4ref.bench gpu [--json PATH] [--quick] [--repeats 15] [--budget S]``.

Measures, on the current CUDA device:

1. device-to-device copy bandwidth (bytes read + written per second): the yardstick;
2. dequantize (every version: 1 and 8 packed bytes per thread) to float16 and float32:
   effective bandwidth (packed bytes + scale bytes read + output bytes written) as a
   fraction of the copy bandwidth; goal >= 0.8;
3. quantize (every version: 2 values per lane, and one 16-byte vector per lane) from
   float16 and float32: effective bandwidth (input read + codes and scales written) as a
   fraction of the copy bandwidth; goal >= 0.6;
4. the fused GEMV (every version v1, v2, v3) against an fp16 GEMV through cuBLAS
   (``cupy.matmul``) for W of shape (N, K) = 8192x8192, 8192x28672, 4096x4096, 28672x8192
   (in that order) and M = 1, 4, 16 activation rows, for NF4 (group 64, float32 absmax,
   bitsandbytes' layout) and INT4 (int4_sym, group 128, float16 scales). Goal at M = 1
   (best version): >= 2.5x at 8192x8192, >= 3.0x at 8192x28672 and 28672x8192.

Method: CUDA events; a warm-up; the timed calls are captured in a CUDA graph (so that
CuPy's launch overhead, several microseconds, does not hide kernels of a few
microseconds; plain back-to-back launches where capture fails, marked in the result);
each sample times a batch of calls and divides; the table reports the median of the
samples. Inputs rotate through enough copies to overflow L2 four times (H100: 50 MB of
L2 would otherwise hold a 4096x4096 INT4 matrix), so every call reads from DRAM.

``--json PATH`` writes every row with the device, driver, CUDA, NVRTC and CuPy versions,
the commit and the date; it is rewritten after every stage (``"complete": false`` until
the end), so a run that is cut short still leaves what it measured. ``--budget S``
starts no new stage after S seconds (the skipped stages are listed in the file).
The commit is ``git rev-parse HEAD`` of the checkout, or the ``INT4REF_COMMIT``
environment variable where the checkout has no ``.git`` (a copy of the tree).

Without a GPU the command exits with status 2 and says why. ``--emulator`` runs the same
code (stages, launches, table, JSON record) on the CPU emulator with tiny shapes: a
check of the benchmark's code, marked ``"emulated": true``, never a measurement.
``--environment`` prints what the benchmark would run with (versions, device, NVRTC and
the CUDA headers it finds) as JSON and exits.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import statistics
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

# (N out, K in); the two shapes the goals name first, so that a run cut short by its budget has them
GEMV_SHAPES = ((8192, 8192), (8192, 28672), (4096, 4096), (28672, 8192))
GEMV_MS = (1, 4, 16)
#: (label, format, group size, scale dtype)
GEMV_FORMATS = (("NF4 g64 fp32 absmax", "nf4", 64, np.float32), ("INT4 g128 fp16 scale", "int4_sym", 128, np.float16))
GEMV_GOALS = {(8192, 8192): 2.5, (8192, 28672): 3.0, (28672, 8192): 3.0}  # minimum speedup at M = 1
DEQUANT_GOAL, QUANT_GOAL = 0.8, 0.6
BULK_SHAPE = (8192, 8192)  # quantize / dequantize tensor


@dataclass
class Row:
    kernel: str  # "copy", "dequantize", "quantize", "gemv", "fp16 gemv (cuBLAS)"
    version: str
    config: str
    shape: list
    M: int | None
    ms: float
    samples_ms: list
    timing: str
    bytes: int | None = None
    gbps: float | None = None
    fraction_of_copy: float | None = None
    baseline_ms: float | None = None
    speedup: float | None = None
    goal: float | None = None
    meets_goal: bool | None = None
    extra: dict = field(default_factory=dict)


@dataclass
class Bench:
    """What the measurements need from the machine (a CuPy GPU, or a stand-in for tests)."""

    be: object  # a backend of int4ref.gpu (xp, empty, launch, ...)
    timer: object  # timer(fn, rotations) -> (median ms, samples, method); fn(i) runs call i
    matmul: object  # matmul(x, w_t, out): out = x @ w_t (the fp16 baseline)
    copy: object  # copy(dst, src): device-to-device copy of equal-sized buffers
    l2_bytes: int
    max_bytes: int  # memory the rotating buffers may take


def rotations(bench: Bench, nbytes: int) -> int:
    """Copies of an input needed so that consecutive calls never find it in L2 (4x L2)."""
    k = max(2, math.ceil(4 * bench.l2_bytes / max(nbytes, 1)))
    return int(max(1, min(k, 64, bench.max_bytes // max(nbytes, 1))))


def _randn(bench: Bench, shape, dtype, seed: int):
    xp = bench.be.xp
    if xp is np:
        return np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    return xp.random.RandomState(seed).standard_normal(shape, dtype=np.float32).astype(dtype)


def _copies(bench: Bench, a, k: int) -> list:
    return [a] + [a.copy() for _ in range(k - 1)]


# ---------------------------------------------------------------------------------------
# measurements


def measure_copy(bench: Bench, nbytes: int) -> Row:
    xp = bench.be.xp
    src = xp.zeros(nbytes, dtype=np.uint8)
    dst = xp.empty_like(src)
    med, samples, method = bench.timer(lambda i: bench.copy(dst, src), 1)
    moved = 2 * nbytes
    size = f"{nbytes / 2**20:.0f} MiB" if nbytes >= 2**20 else f"{nbytes / 2**10:.0f} KiB"
    return Row("copy", "device-to-device", size, [nbytes], None, med, samples, method,
               bytes=moved, gbps=moved / med / 1e6, fraction_of_copy=1.0)


def measure_dequantize(bench: Bench, copy_gbps: float, shape, fmt: str, g: int, scale_dtype, out_dtype) -> list[Row]:
    from . import kernels, ops

    be = bench.be
    w = _randn(bench, shape, np.float32, 1)
    qt = ops.quantize(be, w, fmt, g, scale_dtype)
    del w
    n = qt.size
    out = be.empty(n, out_dtype)
    in_bytes = qt.packed.nbytes + qt.scales.nbytes
    k = rotations(bench, in_bytes)
    packs, scales = _copies(bench, qt.packed, k), _copies(bench, qt.scales, k)
    values = ops.device_values(be, ops.gpu_format(fmt))
    moved = in_bytes + out.nbytes
    rows = []
    for nbytes in (1, 8):
        plan = ops.dequantize_plan(n, g, True)
        if nbytes == 8 and plan["bytes"] != 8:
            continue
        grid = (math.ceil(math.ceil(n / 2) / nbytes / 256),)
        expr = kernels.dequantize_expr(ops.CTYPE[np.dtype(scale_dtype)], ops.CTYPE[np.dtype(out_dtype)], nbytes)
        args = [(packs[i], np.int64(n), np.int32(g), values, scales[i], out) for i in range(k)]
        med, samples, method = bench.timer(lambda i: be.launch("dequantize.cu", expr, grid, (256,), args[i % k]), k)
        gbps = moved / med / 1e6
        frac = gbps / copy_gbps
        rows.append(Row("dequantize", f"{nbytes} packed byte{'s' if nbytes > 1 else ''}/thread",
                        f"{fmt} g{g} {np.dtype(scale_dtype).name} scales -> {np.dtype(out_dtype).name}",
                        list(shape), None, med, samples, method, bytes=moved, gbps=gbps, fraction_of_copy=frac,
                        goal=DEQUANT_GOAL, meets_goal=frac >= DEQUANT_GOAL, extra={"rotations": k}))
    return rows


def measure_quantize(bench: Bench, copy_gbps: float, shape, in_dtype, fmt: str, g: int, scale_dtype) -> list[Row]:
    from . import kernels, ops

    be = bench.be
    fmt_obj = ops.gpu_format(fmt)
    x = _randn(bench, shape, in_dtype, 2).reshape(-1)
    n = x.size
    k = rotations(bench, x.nbytes)
    xs = _copies(bench, x, k)
    packed = be.empty((n + 1) // 2, np.uint8)
    n_groups = math.ceil(n / g)
    scales = be.empty(n_groups, scale_dtype)
    flags = be.zeros(1, np.int32)
    _, _, order = ops.format_tables(fmt_obj)
    mids = ops.device_midpoints(be, fmt_obj)
    moved = x.nbytes + packed.nbytes + scales.nbytes
    rows = []
    full = ops.quantize_plan(n, g, x.dtype.itemsize, True)["vec"]
    for vec in sorted({2, full}):
        lpg = min(32, ops.next_pow2(math.ceil(g / vec)))
        grid = (math.ceil(n_groups / (8 * (32 // lpg))),)
        expr = kernels.quantize_expr(ops.CTYPE[np.dtype(in_dtype)], ops.uses_int_sym_kernel(fmt_obj), vec)
        args = [(xs[i], np.int64(n), np.int32(g), np.int32(lpg), mids, np.uint64(order), packed, scales,
                 np.int32(np.dtype(scale_dtype) == np.float16), flags) for i in range(k)]
        med, samples, method = bench.timer(lambda i: be.launch("quantize.cu", expr, grid, (256,), args[i % k]), k)
        gbps = moved / med / 1e6
        frac = gbps / copy_gbps
        rows.append(Row("quantize", f"{vec} values/lane" + (" (16-byte loads)" if vec > 2 else ""),
                        f"{np.dtype(in_dtype).name} -> {fmt} g{g} {np.dtype(scale_dtype).name} scales",
                        list(shape), None, med, samples, method, bytes=moved, gbps=gbps, fraction_of_copy=frac,
                        goal=QUANT_GOAL, meets_goal=frac >= QUANT_GOAL, extra={"rotations": k}))
    return rows


def measure_gemv(bench: Bench, shape, ms=GEMV_MS, formats=GEMV_FORMATS, versions=("v1", "v2", "v3")) -> list[Row]:
    from . import ops

    be, xp = bench.be, bench.be.xp
    N, K = shape
    w = _randn(bench, (N, K), np.float32, 3)
    # fp16 baseline, two layouts (cuBLAS picks its kernel per layout; the faster one counts)
    w16 = w.astype(np.float16)
    k16 = rotations(bench, w16.nbytes)
    w16s = _copies(bench, w16, k16)
    w16t = xp.ascontiguousarray(w16.T)
    w16ts = _copies(bench, w16t, k16)
    del w16, w16t
    xs = {M: _randn(bench, (M, K), np.float16, 4 + M) for M in ms}
    quantized, references = [], {}
    for label, fmt, g, sdt in formats:
        qt = ops.quantize(be, w, fmt, g, sdt)
        k = rotations(bench, qt.packed.nbytes + qt.scales.nbytes)
        quantized.append((label, fmt, g, qt, _copies(bench, qt.packed, k), _copies(bench, qt.scales, k), k))
        deq = ops.dequantize(be, qt, np.float32)  # float32 reference on the dequantized weights
        for M, x in xs.items():
            references[label, M] = x.astype(np.float32) @ deq.T
        del deq
    del w
    rows = []
    for M in ms:
        x = xs[M]
        y = be.empty((M, N), np.float16)
        base = {}
        for layout, ws in (("x @ W.T, W (N, K)", [a.T for a in w16s]), ("x @ Wt, Wt (K, N) contiguous", w16ts)):
            med, samples, method = bench.timer(lambda i, ws=ws: bench.matmul(x, ws[i % k16], y), k16)
            base[layout] = med
            rows.append(Row("fp16 gemv (cuBLAS)", layout, "float16 weights", [N, K], M, med, samples, method,
                            bytes=2 * N * K, gbps=2 * N * K / med / 1e6, extra={"rotations": k16}))
        baseline = min(base.values())
        for label, fmt, g, qt, packs, scales, k in quantized:
            values = ops.device_values(be, ops.gpu_format(fmt))
            moved = qt.packed.nbytes + qt.scales.nbytes
            best = None
            for version in versions:
                med, samples, method = bench.timer(
                    lambda i, version=version: ops.run_gemv(be, version, packs[i % k], scales[i % k], values, x, y,
                                                             M, N, K, g, fmt == "int4_sym"), k)
                speedup = baseline / med
                ops.run_gemv(be, version, packs[0], scales[0], values, x, y, M, N, K, g, fmt == "int4_sym")
                ref = references[label, M]
                err = float(xp.abs(y.astype(np.float32) - ref).max() / xp.abs(ref).max())
                rows.append(Row("gemv", version, label, [N, K], M, med, samples, method, bytes=moved,
                                gbps=moved / med / 1e6, baseline_ms=baseline, speedup=speedup,
                                extra={"rotations": k, "max_abs_err_over_max_abs_ref": err}))
                best = rows[-1] if best is None or med < best.ms else best
            goal = GEMV_GOALS.get((N, K)) if M == 1 else None
            if goal is not None and best is not None:
                best.goal, best.meets_goal = goal, best.speedup >= goal
    return rows


# ---------------------------------------------------------------------------------------
# the CuPy machine


def cupy_bench(repeats: int, warmup: int = 3, use_graphs: bool = True) -> Bench:
    import cupy as cp

    from .backend import cupy_backend

    be = cupy_backend()
    dev = cp.cuda.Device()
    l2 = int(dev.attributes.get("L2CacheSize", 50 * 2**20))
    free, _total = cp.cuda.runtime.memGetInfo()

    def timer(fn, k):
        for i in range(warmup):
            fn(i)
        dev.synchronize()
        start, end = cp.cuda.Event(), cp.cuda.Event()
        start.record()
        fn(0)
        end.record()
        end.synchronize()
        one = max(cp.cuda.get_elapsed_time(start, end), 1e-3)  # ms, launch overhead included
        inner = int(min(500, max(k, math.ceil(2.0 / one))))  # about 2 ms of work per sample, all rotations
        samples, method = [], "cuda-graph"
        if use_graphs:
            stream = cp.cuda.Stream(non_blocking=True)
            try:
                with stream:
                    stream.begin_capture()
                    try:
                        for j in range(inner):
                            fn(j)
                    finally:
                        graph = stream.end_capture()
                    graph.launch(stream)  # warm
                    stream.synchronize()
                    for _ in range(repeats):
                        start.record(stream)
                        graph.launch(stream)
                        end.record(stream)
                        end.synchronize()
                        samples.append(cp.cuda.get_elapsed_time(start, end) / inner)
            except Exception as exc:  # capture not supported for this call: plain launches
                samples, method = [], f"events ({type(exc).__name__} in graph capture)"
        if not samples:
            method = method if use_graphs else "events"
            for _ in range(repeats):
                start.record()
                for j in range(inner):
                    fn(j)
                end.record()
                end.synchronize()
                samples.append(cp.cuda.get_elapsed_time(start, end) / inner)
        return statistics.median(samples), samples, method

    def matmul(x, w_t, out):
        cp.matmul(x, w_t, out=out)

    def copy(dst, src):
        dst.data.copy_from_device_async(src.data, src.nbytes)

    return Bench(be, timer, matmul, copy, l2, int(free * 0.6))


def device_info() -> dict:
    import cupy as cp

    from . import kernels

    dev = cp.cuda.Device()
    props = cp.cuda.runtime.getDeviceProperties(dev.id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])

    def ver(v):
        return f"{v // 1000}.{(v % 1000) // 10}"

    return {
        "name": name,
        "compute_capability": f"{props['major']}.{props['minor']}",
        "multiprocessors": props["multiProcessorCount"],
        "memory_GiB": round(props["totalGlobalMem"] / 2**30, 1),
        "l2_MiB": round(dev.attributes.get("L2CacheSize", 0) / 2**20, 1),
        "driver": ver(cp.cuda.runtime.driverGetVersion()),
        "cuda_runtime": ver(cp.cuda.runtime.runtimeGetVersion()),
        "nvrtc": ".".join(map(str, kernels.nvrtc_version())),
        "cupy": cp.__version__,
    }


# ---------------------------------------------------------------------------------------
# the CPU emulator (no GPU): the same code, tiny shapes, wall-clock times that mean nothing


def emulator_bench() -> Bench:
    """A :class:`Bench` on the CPU emulator: checks the benchmark's launches, never times a GPU."""
    from .emulator import EmulatorBackend

    be = EmulatorBackend()

    def timer(fn, k):
        t = time.perf_counter()
        fn(0)
        ms = max((time.perf_counter() - t) * 1e3, 1e-6)
        return ms, [ms], "wall clock, one call (CPU emulator: not a GPU time)"

    return Bench(be, timer, lambda x, w, out: np.matmul(x, w, out=out), lambda d, s: np.copyto(d, s),
                 l2_bytes=2**14, max_bytes=2**24)


def emulator_info() -> dict:
    from .emulator import find_compiler

    return {"name": "CPU emulator (int4ref.gpu.emulator), not a GPU", "compute_capability": None,
            "compiler": find_compiler(), "cpu": platform.processor() or platform.machine()}


# ---------------------------------------------------------------------------------------
# stages: what a run measures, in order

#: What each profile measures: the copy buffer, the quantize / dequantize tensor, the GEMV
#: shapes and activation rows. "emulator": the same stages on shapes the CPU emulator runs
#: in seconds (K a multiple of 128, as INT4 with groups of 128 needs).
PROFILES = {
    "full": {"copy_bytes": 1024 * 2**20, "bulk": BULK_SHAPE, "gemv_shapes": GEMV_SHAPES, "ms": GEMV_MS},
    "quick": {"copy_bytes": 64 * 2**20, "bulk": (1024, 1024), "gemv_shapes": ((1024, 1024),), "ms": (1, 4)},
    "emulator": {"copy_bytes": 2**12, "bulk": (8, 256), "gemv_shapes": ((20, 256),), "ms": GEMV_MS},
}
#: (format, group size, scale dtype) of the quantize / dequantize stages
BULK_FORMATS = (("nf4", 64, np.float32), ("int4_sym", 128, np.float16))


def stages(bench: Bench, profile: str = "full") -> list:
    """The measurements of a run, in order: ``[(name, fn(copy_gbps) -> rows), ...]``."""
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {', '.join(PROFILES)}, got {profile!r}")
    p = PROFILES[profile]
    out = [("copy", lambda _: [measure_copy(bench, p["copy_bytes"])])]
    for fmt, g, sdt in BULK_FORMATS:
        def bulk(copy_gbps, fmt=fmt, g=g, sdt=sdt):
            rows = []
            for out_dtype in (np.float16, np.float32):
                rows += measure_dequantize(bench, copy_gbps, p["bulk"], fmt, g, sdt, out_dtype)
            for in_dtype in (np.float16, np.float32):
                rows += measure_quantize(bench, copy_gbps, p["bulk"], in_dtype, fmt, g, sdt)
            return rows

        out.append((f"dequantize and quantize {fmt}", bulk))
    for shape in p["gemv_shapes"]:
        out.append((f"gemv {shape[0]}x{shape[1]}", lambda _, shape=shape: measure_gemv(bench, shape, p["ms"])))
    return out


def run_stages(bench: Bench, profile: str = "full", budget_s: float | None = None,
               on_stage=None) -> tuple[list[Row], list[str], list[str]]:
    """Run the stages in order; after ``budget_s`` seconds start no new one.

    Returns ``(rows, skipped, failed)``: ``skipped`` names each stage left out by the budget,
    ``failed`` each stage that raised (with the error; the stages after it still run, except
    after a failed copy, which every fraction needs). ``on_stage(rows, skipped, failed, name)``
    is called after every stage (the JSON checkpoint).
    """
    if budget_s is not None and not budget_s > 0:
        raise ValueError(f"budget_s must be a positive number of seconds, got {budget_s!r}")
    t0 = time.perf_counter()
    rows, skipped, failed, copy_gbps = [], [], [], None
    for name, fn in stages(bench, profile):
        elapsed = time.perf_counter() - t0
        if name != "copy" and budget_s is not None and elapsed > budget_s:
            skipped.append(f"{name} (the time budget of {budget_s:.0f} s was spent after {elapsed:.0f} s)")
            continue
        try:
            new = fn(copy_gbps)
        except Exception as exc:  # recorded and reported; one broken stage must not cost the others
            failed.append(f"{name}: {type(exc).__name__}: {exc}")
            print(f"stage '{name}' FAILED:\n{traceback.format_exc()}", file=sys.stderr, flush=True)
            if name == "copy":
                break
            new = []
        if name == "copy":
            copy_gbps = new[0].gbps
        rows += new
        if on_stage is not None:
            on_stage(rows, skipped, failed, name)
    return rows, skipped, failed


def run(bench: Bench, quick: bool = False) -> list[Row]:
    rows, _, failed = run_stages(bench, "quick" if quick else "full")
    if failed:
        raise RuntimeError("benchmark stages failed: " + "; ".join(failed))
    return rows


# ---------------------------------------------------------------------------------------
# the record (results/bench-gpu.json) and what the book shows of it

METHOD = ("CUDA events around CUDA-graph batches of calls (see 'timing' per row), median of samples; "
          "inputs rotate through copies totalling >= 4x L2")
WRONG_RESULT = 1e-3  # a GEMV whose max |error| / max |reference| exceeds this is wrong, not slow


def environment() -> dict:
    """What the benchmark runs with: versions, the device, NVRTC and where it finds the CUDA headers."""
    import importlib

    from . import device_status, kernels
    from .emulator import find_compiler

    env = {"python": platform.python_version(), "executable": sys.executable, "platform": platform.platform()}
    for name in ("numpy", "scipy", "pytest", "hypothesis", "cupy"):
        try:
            env[name] = importlib.import_module(name).__version__
        except Exception as exc:  # reported, not raised: this is a diagnosis
            env[name] = f"not available ({type(exc).__name__}: {exc})"
    ok, why = device_status()
    env["gpu_available"], env["gpu"] = ok, why
    try:
        env["nvrtc"] = ".".join(map(str, kernels.nvrtc_version()))
        dirs = [o[2:] for o in kernels.include_options() if o.startswith("-I")]
        found = [d for d in dirs if (Path(d) / "cuda_fp16.h").is_file()]
        env["cuda_fp16_h"] = found[0] if found else f"NOT FOUND in {dirs} (the kernels will not compile)"
    except Exception as exc:
        env["nvrtc"] = f"not available ({type(exc).__name__}: {exc})"
    env["emulator_compiler"] = find_compiler()
    env["CUDA_PATH"] = os.environ.get("CUDA_PATH")
    return env


def provenance() -> dict:
    """``{"commit", "commit_source"}``: git of this checkout, else ``$INT4REF_COMMIT`` (a copied tree)."""
    from ..results import commit

    root = Path(__file__).resolve().parents[2]
    env = os.environ.get("INT4REF_COMMIT", "").strip() or None
    git = commit() if (root / ".git").exists() else None  # no .git: a parent repository is not ours
    if git:
        out = {"commit": git, "commit_source": "git rev-parse HEAD"}
        if env and not git.startswith(env):
            out["commit_env"] = env  # the caller said otherwise: keep both
        return out
    if env:
        return {"commit": env, "commit_source": "INT4REF_COMMIT (no git repository in the measured tree)"}
    return {"commit": None, "commit_source": "unknown: no .git and no INT4REF_COMMIT"}


def make_record(rows: list[Row], device: dict, *, profile: str = "full", skipped=(), failed=(), complete: bool = True,
                emulated: bool = False, method: str = METHOD, elapsed_s: float | None = None,
                env: dict | None = None) -> dict:
    """The JSON record of a run (what ``--json`` writes and the book renders)."""
    import int4ref

    copy = next((r for r in rows if r.kernel == "copy"), None)
    return {
        "benchmark": "gpu",
        "emulated": bool(emulated),
        "profile": profile,
        "quick": profile == "quick",
        "complete": bool(complete),
        "skipped": list(skipped),
        "failed": list(failed),
        "device": device,
        "versions": {"int4ref": int4ref.__version__, "numpy": np.__version__, "python": platform.python_version()},
        **provenance(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "elapsed_s": None if elapsed_s is None else round(elapsed_s, 1),
        "method": method,
        "copy_GBps": None if copy is None else copy.gbps,
        "goals": {"dequantize_fraction_of_copy": DEQUANT_GOAL, "quantize_fraction_of_copy": QUANT_GOAL,
                  "gemv_speedup_at_M1": {f"{n}x{k}": v for (n, k), v in GEMV_GOALS.items()}},
        "rows": [asdict(r) for r in rows],
        "table": format_table(rows),
        "environment": env,
    }


def wrong_rows(rows) -> list:
    """GEMV rows (Row or dict) whose result is wrong (relative error above WRONG_RESULT)."""
    out = []
    for r in rows:
        extra = r["extra"] if isinstance(r, dict) else r.extra
        err = extra.get("max_abs_err_over_max_abs_ref")
        if err is not None and not err <= WRONG_RESULT:
            out.append(r)
    return out


def _shape(r: dict) -> str:
    return "x".join(str(v) for v in r["shape"])


def report(record: dict) -> dict[str, str]:
    """Markdown for the book from a record: ``provenance``, ``bandwidth``, ``gemv``, ``goals``."""
    if not isinstance(record, dict) or record.get("benchmark") != "gpu" or "rows" not in record:
        raise ValueError("not a GPU benchmark record (python -m int4ref.bench gpu --json writes one)")
    d = record.get("device") or {}
    rows = record["rows"]
    emulated = bool(record.get("emulated"))
    parts = []
    if record.get("emulated"):
        parts.append("**Not a measurement.** This record comes from the CPU emulator (`--emulator`): it checks "
                     "the benchmark's code on tiny shapes, and its times are CPU wall-clock times that say "
                     "nothing about a GPU.")
    if record.get("quick"):
        parts.append("**Quick run** (small shapes): a smoke test, not a result.")
    if not record.get("complete", True):
        missing = "; ".join(record.get("skipped") or []) or "the stages after the last one listed below"
        parts.append(f"**Incomplete run.** Not measured: {missing}.")
    if record.get("failed"):
        parts.append("**Failed stages** (no rows): " + "; ".join(record["failed"]) + ".")
    cc = d.get("compute_capability")
    where = d.get("name", "an unnamed device") + (f" (compute capability {cc})" if cc else "")
    details = ", ".join(template.format(d[key]) for key, template in (
        ("memory_GiB", "{} GiB of memory"), ("l2_MiB", "{} MiB of L2"), ("driver", "driver {}"),
        ("cuda_runtime", "CUDA runtime {}"), ("nvrtc", "NVRTC {}"), ("cupy", "CuPy {}")) if d.get(key) is not None)
    commit = record.get("commit")
    commit_text = f"`{commit}`" if commit else "unknown"
    parts.append(f"Device: **{where}**" + (f"; {details}" if details else "") + f". int4ref commit {commit_text} "
                 f"({record.get('commit_source', 'source not recorded')}); measured {record.get('date', '?')}.")
    if record.get("copy_GBps"):
        parts.append(f"Copy bandwidth measured in the same run (bytes read + written): "
                     f"{record['copy_GBps']:.0f} GB/s. Every fraction below is of this figure.")
    timings = sorted({r["timing"] for r in rows})
    parts.append("Timing: " + "; ".join(timings) + ".")
    out = {"provenance": "\n\n".join(parts)}

    lines = ["| kernel | version | configuration | shape | time (us) | GB/s | fraction of copy | goal |",
             "|---|---|---|---|---:|---:|---:|---|"]
    for r in rows:
        if r["kernel"] not in ("copy", "dequantize", "quantize"):
            continue
        goal = "" if r.get("goal") is None or emulated else (
            f">= {r['goal']:.1f}: " + ("met" if r.get("meets_goal") else "missed"))
        shape = _shape(r) if r["kernel"] != "copy" else r["config"]
        lines.append(f"| {r['kernel']} | {r['version']} | {r['config'] if r['kernel'] != 'copy' else ''} | {shape} "
                     f"| {1e3 * r['ms']:.1f} | {r['gbps']:.0f} | {r['fraction_of_copy']:.2f} | {goal} |")
    out["bandwidth"] = "\n".join(lines)

    gemv = [r for r in rows if r["kernel"] == "gemv"]
    base = {}
    for r in rows:
        if r["kernel"] == "fp16 gemv (cuBLAS)":
            key = (tuple(r["shape"]), r["M"])
            base[key] = min(base.get(key, r["ms"]), r["ms"])
    order = {tuple(s): i for i, s in enumerate(GEMV_SHAPES)}
    shapes = sorted({tuple(r["shape"]) for r in gemv}, key=lambda s: (order.get(s, len(order)), s))
    versions = sorted({r["version"] for r in gemv})
    lines = ["| W (N x K) | weights | M | cuBLAS fp16 (us) | " + " | ".join(
        f"{v}: speedup (us)" for v in versions) + " | goal at M = 1 |",
             "|---|---|---:|---:|" + "---:|" * len(versions) + "---|"]
    wrong = {id(r) for r in wrong_rows(gemv)}
    for shape in shapes:
        configs = sorted({r["config"] for r in gemv if tuple(r["shape"]) == shape})
        for config in configs:
            for M in sorted({r["M"] for r in gemv if tuple(r["shape"]) == shape}):
                cells, goal = [], ""
                for v in versions:
                    hit = [r for r in gemv if (tuple(r["shape"]), r["config"], r["M"], r["version"]) == (
                        shape, config, M, v)]
                    if not hit:
                        cells.append("")
                        continue
                    r = hit[0]
                    cell = f"{r['speedup']:.2f}x ({1e3 * r['ms']:.1f})"
                    if id(r) in wrong:
                        cell += " WRONG RESULT"
                    cells.append(cell)
                    if r.get("goal") is not None and not emulated:
                        goal = f">= {r['goal']:.1f}x: " + ("met" if r.get("meets_goal") else "missed") + f" ({v})"
                b = base.get((shape, M))
                lines.append(f"| {shape[0]}x{shape[1]} | {config} | {M} | {'' if b is None else f'{1e3 * b:.1f}'} | "
                             + " | ".join(cells) + f" | {goal} |")
    out["gemv"] = "\n".join(lines)

    goals = []
    best = {}
    for r in rows:
        if r.get("goal") is None:
            continue
        key = (r["kernel"], r["config"], _shape(r), r["M"])
        value = r["speedup"] if r["kernel"] == "gemv" else r["fraction_of_copy"]
        if key not in best or value > best[key][0]:
            best[key] = (value, r)
    for (kernel, config, shape, _M), (value, r) in ({} if emulated else best).items():
        met = "met" if value >= r["goal"] else "missed"
        if kernel == "gemv":
            goals.append(f"- GEMV at M = 1, W {shape}, {config}: {value:.2f}x over cuBLAS fp16 at best "
                         f"(version {r['version']}); goal {r['goal']:.1f}x, **{met}**.")
        else:
            goals.append(f"- {kernel.capitalize()}, {config}, {shape}: {value:.2f} of copy bandwidth at best "
                         f"(version: {r['version']}); goal {r['goal']:.1f}, **{met}**.")
    if emulated:
        goals.append("- Goals are not judged on an emulator record.")
    if wrong:
        goals.append(f"- **{len(wrong)} GEMV row(s) gave a WRONG RESULT** (relative error above {WRONG_RESULT:g}); "
                     "their times do not count.")
    out["goals"] = "\n".join(goals) if goals else "No row of this record carries a goal."
    return out


def format_table(rows: list[Row]) -> str:
    lines = [f"{'kernel':20s} {'version':30s} {'config':36s} {'shape':>12s} {'M':>3s} {'ms':>9s} {'GB/s':>7s} "
             f"{'of copy':>7s} {'vs fp16':>8s} {'goal':>6s}"]
    for r in rows:
        shape = "x".join(str(s) for s in r.shape) if r.kernel != "copy" else ""
        frac = f"{r.fraction_of_copy:7.2f}" if r.fraction_of_copy is not None else f"{'':7s}"
        speed = f"{r.speedup:7.2f}x" if r.speedup is not None else f"{'':8s}"
        gbps = f"{r.gbps:7.0f}" if r.gbps is not None else f"{'':7s}"
        goal = ""
        if r.goal is not None:
            goal = (f">={r.goal:.1f}" if r.kernel != "gemv" else f">={r.goal:.1f}x") + (
                " ok" if r.meets_goal else " MISSED")
        err = r.extra.get("max_abs_err_over_max_abs_ref")
        if err is not None and not err <= WRONG_RESULT:
            goal += f" WRONG RESULT (error {err:.1e})"
        lines.append(f"{r.kernel:20s} {r.version:30s} {r.config:36s} {shape:>12s} {'' if r.M is None else r.M:>3} "
                     f"{r.ms:9.4f} {gbps} {frac} {speed} {goal}")
    return "\n".join(lines)


def main(argv=None, prog: str = "python -m int4ref.bench gpu") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument("--repeats", type=int, default=15, help="timed samples per measurement (median reported)")
    parser.add_argument("--quick", action="store_true", help="small shapes only (a smoke test, not a result)")
    parser.add_argument("--no-graphs", action="store_true", help="time plain launches instead of CUDA graphs")
    parser.add_argument("--budget", type=float, metavar="SECONDS",
                        help="start no new stage after this many seconds (the skipped ones are recorded)")
    parser.add_argument("--emulator", action="store_true",
                        help="run the benchmark's code on the CPU emulator, tiny shapes (a check, not a measurement)")
    parser.add_argument("--environment", action="store_true",
                        help="print versions, device, NVRTC, CUDA headers and commit as JSON (and write it to "
                             "--json), and exit")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    if args.budget is not None and not args.budget > 0:
        parser.error(f"--budget must be a positive number of seconds, got {args.budget}")

    from ..results import write_record

    if args.environment:
        env = {**environment(), **provenance()}
        print(json.dumps(env, indent=1))
        if args.json:
            write_record(args.json, env)
        return 0
    env = environment()
    if args.emulator:
        if env["emulator_compiler"] is None:
            print("python -m int4ref.bench gpu --emulator: no C++ compiler (g++ or clang++) for the CPU emulator",
                  file=sys.stderr)
            return 2
        info, profile, method = emulator_info(), "emulator", "wall clock around one call on the CPU emulator"
        print("CPU emulator: checks the benchmark's code on tiny shapes; the times mean nothing about a GPU")
        bench = emulator_bench()
    else:
        from . import device_status

        ok, why = device_status()
        if not ok:
            print(f"python -m int4ref.bench gpu: no GPU to measure on: {why}", file=sys.stderr)
            return 2
        info, profile, method = device_info(), "quick" if args.quick else "full", METHOD
        print(f"{info['name']} (sm_{info['compute_capability'].replace('.', '')}), driver {info['driver']}, "
              f"CUDA {info['cuda_runtime']}, NVRTC {info['nvrtc']}, CuPy {info['cupy']}")
        bench = cupy_bench(args.repeats, use_graphs=not args.no_graphs)
    t0 = time.perf_counter()

    def checkpoint(rows, skipped, failed, name):
        state = "FAILED" if failed and failed[-1].startswith(name + ":") else "done"
        print(f"[{time.perf_counter() - t0:6.1f} s] {name}: {state}", flush=True)
        if args.json:
            write_record(args.json, make_record(rows, info, profile=profile, skipped=skipped, failed=failed,
                                                complete=False, emulated=args.emulator, method=method,
                                                elapsed_s=time.perf_counter() - t0, env=env))

    rows, skipped, failed = run_stages(bench, profile, args.budget, checkpoint)
    elapsed = time.perf_counter() - t0
    table = format_table(rows)
    print(table)
    for s in skipped:
        print(f"skipped: {s}")
    for f in failed:
        print(f"FAILED: {f}", file=sys.stderr)
    print(f"({elapsed:.0f} s)")
    if args.json:
        write_record(args.json, make_record(rows, info, profile=profile, skipped=skipped, failed=failed,
                                            complete=not skipped and not failed, emulated=args.emulator,
                                            method=method, elapsed_s=elapsed, env=env))
    wrong = wrong_rows(rows)
    if wrong:
        print(f"{len(wrong)} GEMV result(s) WRONG (relative error above {WRONG_RESULT:g})", file=sys.stderr)
    return 1 if wrong or failed else 0


if __name__ == "__main__":
    sys.exit(main())
