"""GPU benchmark: ``python -m int4ref.bench gpu [--json PATH] [--quick] [--repeats 15]``.

Measures, on the current CUDA device:

1. device-to-device copy bandwidth (bytes read + written per second): the yardstick;
2. dequantize (every version: 1 and 8 packed bytes per thread) to float16 and float32:
   effective bandwidth (packed bytes + scale bytes read + output bytes written) as a
   fraction of the copy bandwidth; goal >= 0.8;
3. quantize (every version: 2 values per lane, and one 16-byte vector per lane) from
   float16 and float32: effective bandwidth (input read + codes and scales written) as a
   fraction of the copy bandwidth; goal >= 0.6;
4. the fused GEMV (every version v1, v2, v3) against an fp16 GEMV through cuBLAS
   (``cupy.matmul``) for W of shape (N, K) = 4096x4096, 8192x8192, 8192x28672, 28672x8192
   and M = 1, 4, 16 activation rows, for NF4 (group 64, float32 absmax, bitsandbytes'
   layout) and INT4 (int4_sym, group 128, float16 scales). Goal at M = 1 (best version):
   >= 2.5x at 8192x8192, >= 3.0x at 8192x28672 and 28672x8192.

Method: CUDA events; a warm-up; the timed calls are captured in a CUDA graph (so that
CuPy's launch overhead, several microseconds, does not hide kernels of a few
microseconds; plain back-to-back launches where capture fails, marked in the result);
each sample times a batch of calls and divides; the table reports the median of the
samples. Inputs rotate through enough copies to overflow L2 four times (H100: 50 MB of
L2 would otherwise hold a 4096x4096 INT4 matrix), so every call reads from DRAM.

``--json PATH`` writes every row with the device, driver, CUDA, NVRTC and CuPy versions,
the commit and the date. Without a GPU the command exits with status 2 and says why.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import math
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

GEMV_SHAPES = ((4096, 4096), (8192, 8192), (8192, 28672), (28672, 8192))  # (N out, K in)
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
    return Row("copy", "device-to-device", f"{nbytes / 2**20:.0f} MiB", [nbytes], None, med, samples, method,
               bytes=moved, gbps=moved / med / 1e6, fraction_of_copy=1.0)


def measure_dequantize(bench: Bench, copy_gbps: float, shape, fmt: str, g: int, scale_dtype, out_dtype) -> list[Row]:
    from .gpu import _api, _kernels

    be = bench.be
    w = _randn(bench, shape, np.float32, 1)
    qt = _api.quantize(be, w, fmt, g, scale_dtype)
    del w
    n = qt.size
    out = be.empty(n, out_dtype)
    in_bytes = qt.packed.nbytes + qt.scales.nbytes
    k = rotations(bench, in_bytes)
    packs, scales = _copies(bench, qt.packed, k), _copies(bench, qt.scales, k)
    values = _api._values(be, _api.gpu_format(fmt))
    moved = in_bytes + out.nbytes
    rows = []
    for nbytes in (1, 8):
        plan = _api.dequantize_plan(n, g, True)
        if nbytes == 8 and plan["bytes"] != 8:
            continue
        grid = (math.ceil(math.ceil(n / 2) / nbytes / 256),)
        expr = _kernels.dequantize_expr(_api._CTYPE[np.dtype(scale_dtype)], _api._CTYPE[np.dtype(out_dtype)], nbytes)
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
    from .gpu import _api, _kernels

    be = bench.be
    fmt_obj = _api.gpu_format(fmt)
    x = _randn(bench, shape, in_dtype, 2).reshape(-1)
    n = x.size
    k = rotations(bench, x.nbytes)
    xs = _copies(bench, x, k)
    packed = be.empty((n + 1) // 2, np.uint8)
    n_groups = math.ceil(n / g)
    scales = be.empty(n_groups, scale_dtype)
    flags = be.zeros(1, np.int32)
    _, _, order = _api.format_tables(fmt_obj)
    mids = _api._midpoints(be, fmt_obj)
    moved = x.nbytes + packed.nbytes + scales.nbytes
    rows = []
    full = _api.quantize_plan(n, g, x.dtype.itemsize, True)["vec"]
    for vec in sorted({2, full}):
        lpg = min(32, _api._next_pow2(math.ceil(g / vec)))
        grid = (math.ceil(n_groups / (8 * (32 // lpg))),)
        expr = _kernels.quantize_expr(_api._CTYPE[np.dtype(in_dtype)], fmt_obj.kind == "int_sym", vec)
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
    from .gpu import _api

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
        qt = _api.quantize(be, w, fmt, g, sdt)
        k = rotations(bench, qt.packed.nbytes + qt.scales.nbytes)
        quantized.append((label, fmt, g, qt, _copies(bench, qt.packed, k), _copies(bench, qt.scales, k), k))
        deq = _api.dequantize(be, qt, np.float32)  # float32 reference on the dequantized weights
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
            values = _api._values(be, _api.gpu_format(fmt))
            moved = qt.packed.nbytes + qt.scales.nbytes
            best = None
            for version in versions:
                med, samples, method = bench.timer(
                    lambda i, version=version: _api.run_gemv(be, version, packs[i % k], scales[i % k], values, x, y,
                                                             M, N, K, g, fmt == "int4_sym"), k)
                speedup = baseline / med
                _api.run_gemv(be, version, packs[0], scales[0], values, x, y, M, N, K, g, fmt == "int4_sym")
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

    from .gpu._backend import cupy_backend

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

    from .gpu import _kernels

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
        "nvrtc": ".".join(map(str, _kernels.nvrtc_version())),
        "cupy": cp.__version__,
    }


def run(bench: Bench, quick: bool = False) -> list[Row]:
    rows = [measure_copy(bench, (64 if quick else 1024) * 2**20)]
    copy_gbps = rows[0].gbps
    bulk = (1024, 1024) if quick else BULK_SHAPE
    for fmt, g, sdt in (("nf4", 64, np.float32), ("int4_sym", 128, np.float16)):
        for out in (np.float16, np.float32):
            rows += measure_dequantize(bench, copy_gbps, bulk, fmt, g, sdt, out)
        for in_dtype in (np.float16, np.float32):
            rows += measure_quantize(bench, copy_gbps, bulk, in_dtype, fmt, g, sdt)
    for shape in ((1024, 1024),) if quick else GEMV_SHAPES:
        rows += measure_gemv(bench, shape, (1, 4) if quick else GEMV_MS)
    return rows


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
        if err is not None and err > 1e-3:
            goal += f" WRONG RESULT (error {err:.1e})"
        lines.append(f"{r.kernel:20s} {r.version:30s} {r.config:36s} {shape:>12s} {'' if r.M is None else r.M:>3} "
                     f"{r.ms:9.4f} {gbps} {frac} {speed} {goal}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m int4ref.bench gpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument("--repeats", type=int, default=15, help="timed samples per measurement (median reported)")
    parser.add_argument("--quick", action="store_true", help="small shapes only (a smoke test, not a result)")
    parser.add_argument("--no-graphs", action="store_true", help="time plain launches instead of CUDA graphs")
    args = parser.parse_args(argv)

    from .bench import commit, write_record
    from .gpu import device_status

    ok, why = device_status()
    if not ok:
        print(f"python -m int4ref.bench gpu: no GPU to measure on: {why}", file=sys.stderr)
        return 2
    info = device_info()
    print(f"{info['name']} (sm_{info['compute_capability'].replace('.', '')}), driver {info['driver']}, "
          f"CUDA {info['cuda_runtime']}, NVRTC {info['nvrtc']}, CuPy {info['cupy']}")
    t0 = time.perf_counter()
    rows = run(cupy_bench(args.repeats, use_graphs=not args.no_graphs), quick=args.quick)
    table = format_table(rows)
    print(table)
    print(f"({time.perf_counter() - t0:.0f} s)")
    if args.json:
        import int4ref

        result = {
            "benchmark": "gpu",
            "quick": args.quick,
            "device": info,
            "versions": {"int4ref": int4ref.__version__, "numpy": np.__version__, "python": platform.python_version()},
            "commit": commit(),
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "method": "CUDA events around CUDA-graph batches of calls (see 'timing' per row), median of samples; "
                      "inputs rotate through copies totalling >= 4x L2",
            "goals": {"dequantize_fraction_of_copy": DEQUANT_GOAL, "quantize_fraction_of_copy": QUANT_GOAL,
                      "gemv_speedup_at_M1": {f"{n}x{k}": v for (n, k), v in GEMV_GOALS.items()}},
            "rows": [asdict(r) for r in rows],
            "table": table,
        }
        write_record(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
