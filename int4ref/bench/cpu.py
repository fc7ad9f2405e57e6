"""The CPU benchmark: ``python -m int4ref.bench cpu [--size 4096] [--repeats 7] [--json PATH]``.

Every figure is a ratio against a peer library measured in the same process, on the same
data, with the runs of the two interleaved (ours, peer, ours, peer, ...) so that a
change in machine load hits both; the table reports medians. Peers: the ``gguf``
package's numpy code for every GGUF block type (dequantize, and quantize where gguf-py
has a quantizer), ggml's own C quantizers (``ggml_quantize_chunk`` on one thread, built by
``python tools/ggml_peer.py build``), and bitsandbytes' CPU backend for NF4. A peer that is
missing skips its rows, with the reason.

Goals (issues 2 and 16): Q4_0 and Q4_1 quantize and dequantize at most 0.5x gguf's time;
Q4_K, IQ4_XS and NVFP4 quantize at most 1.0x ggml's C, MXFP4 at most 2.0x; Q4_K, IQ4_XS,
MXFP4 and NVFP4 dequantize at most 0.5x gguf's; NF4 blocksize 64 quantize at most 0.25x
bitsandbytes', dequantize at most 1.0x.

``--json PATH`` writes the table with the device, library versions, commit and date, for
the book to render.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..results import commit, machine, write_record

__all__ = ["Row", "commit", "format_table", "ggml_rows", "gguf_rows", "machine", "main", "run_cpu", "write_record"]


@dataclass
class Row:
    name: str
    ours_ms: float | None
    peer: str
    peer_ms: float | None
    goal: float | None  # maximum ratio ours / peer
    skipped: str | None = None

    @property
    def ratio(self) -> float | None:
        if self.ours_ms is None or self.peer_ms is None:
            return None
        return self.ours_ms / self.peer_ms

    @property
    def meets_goal(self) -> bool | None:
        return None if self.goal is None or self.ratio is None else self.ratio <= self.goal


def _interleaved(ours, peer, repeats: int) -> tuple[float, float]:
    ours(), peer()  # warm-up (table builds, thread pool start, allocator)
    a, b = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        ours()
        t1 = time.perf_counter()
        peer()
        t2 = time.perf_counter()
        a.append(t1 - t0)
        b.append(t2 - t1)
    return float(np.median(a) * 1e3), float(np.median(b) * 1e3)


#: Goals (issues 2 and 16): int4ref's time at most this many times the peer's.
#: Quantize against ggml's single-threaded C, dequantize against gguf-py's numpy.
QUANTIZE_GOALS_VS_C = {"Q4_K": 1.0, "IQ4_XS": 1.0, "NVFP4": 1.0, "MXFP4": 2.0}
QUANTIZE_GOALS_VS_GGUF = {"Q4_0": 0.5, "Q4_1": 0.5}
DEQUANTIZE_GOALS_VS_GGUF = {"Q4_0": 0.5, "Q4_1": 0.5, "Q4_K": 0.5, "IQ4_XS": 0.5, "MXFP4": 0.5, "NVFP4": 0.5}


def gguf_rows(x: np.ndarray, repeats: int) -> list[Row]:
    """Every GGUF block type of int4ref.interop.gguf against gguf-py's numpy code."""
    from ..interop import gguf as ours

    names = [t for t in ours.BLOCK_TYPES if t != "Q8_0"]
    try:
        import gguf
        from gguf import quants
    except ImportError as exc:
        return [Row(f"{t} {op}", None, "gguf (numpy)", None, None, f"gguf not installed ({exc})")
                for t in names for op in ("quantize", "dequantize")]
    rows = []
    version = getattr(gguf, "__version__", None) or _dist_version("gguf")
    peer = f"gguf {version} (numpy)"
    for type_name in names:
        qtype = gguf.GGMLQuantizationType[type_name]
        goal = QUANTIZE_GOALS_VS_GGUF.get(type_name)
        if x.shape[-1] % ours.block_type(type_name).block_size:
            rows += [Row(f"{type_name} {op}", None, peer, None, None, _misfit(x, ours, type_name))
                     for op in ("quantize", "dequantize")]
            continue
        data = ours.quantize(x, type_name)
        try:
            quants.quantize(x[:1], qtype)
        except NotImplementedError:  # gguf-py dequantizes IQ4_NL, the K-quants, ... but cannot quantize them
            rows.append(Row(f"{type_name} quantize", None, peer, None, goal, f"{peer} has no {type_name} quantizer"))
        else:
            q_ours, q_peer = _interleaved(lambda: ours.quantize(x, type_name), lambda: quants.quantize(x, qtype),
                                          repeats)
            rows.append(Row(f"{type_name} quantize", q_ours, peer, q_peer, goal))
        d_ours, d_peer = _interleaved(lambda: ours.dequantize(data, type_name),
                                      lambda: quants.dequantize(data, qtype), repeats)
        rows.append(Row(f"{type_name} dequantize", d_ours, peer, d_peer, DEQUANTIZE_GOALS_VS_GGUF.get(type_name)))
    return rows


def _misfit(x, gguf_module, type_name) -> str:
    block = gguf_module.block_type(type_name).block_size
    return f"rows of {x.shape[-1]} values are not a multiple of {type_name}'s block of {block}"


def _load_ggml_peer():
    """tools/ggml_peer.py's ``load()`` from the repository int4ref is installed from (editable
    installs): ggml's C built by ``python tools/ggml_peer.py build``. Raises with the reason."""
    import importlib.util

    script = Path(__file__).resolve().parents[2] / "tools" / "ggml_peer.py"
    if not script.is_file():
        raise RuntimeError("tools/ggml_peer.py not found (int4ref is not installed from its repository)")
    spec = importlib.util.spec_from_file_location("int4ref_ggml_peer_tool", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.load()


def ggml_rows(x: np.ndarray, repeats: int) -> list[Row]:
    """Quantize with int4ref against ggml's own C (``ggml_quantize_chunk``, one thread)."""
    from .. import parallel
    from ..interop import gguf as ours

    names = [t for t in ours.BLOCK_TYPES if t != "Q8_0"]
    try:
        peer_lib = _load_ggml_peer()
    except Exception as exc:
        reason = f"ggml's C not available ({type(exc).__name__}: {exc}); run python tools/ggml_peer.py build"
        return [Row(f"{t} quantize vs C", None, "ggml C", None, QUANTIZE_GOALS_VS_C.get(t), reason) for t in names]
    peer = f"ggml C (ggml_quantize_chunk, 1 thread; int4ref {parallel.THREADS} threads)"
    rows = []
    for type_name in names:
        if x.shape[-1] % ours.block_type(type_name).block_size:
            rows.append(Row(f"{type_name} quantize vs C", None, peer, None, None, _misfit(x, ours, type_name)))
            continue
        q_ours, q_peer = _interleaved(lambda: ours.quantize(x, type_name),
                                      lambda: peer_lib.quantize_chunk(type_name, x), repeats)
        rows.append(Row(f"{type_name} quantize vs C", q_ours, peer, q_peer, QUANTIZE_GOALS_VS_C.get(type_name)))
    return rows


def bnb_rows(x: np.ndarray, repeats: int) -> list[Row]:
    from ..interop import bitsandbytes as ours

    names = ["NF4 blocksize 64 quantize", "NF4 blocksize 64 dequantize"]
    try:
        import bitsandbytes
        import bitsandbytes.functional as F
        import torch
    except Exception as exc:  # ImportError, or bitsandbytes failing to load its library
        reason = f"bitsandbytes/torch not available ({type(exc).__name__}: {exc}); install int4ref[peers]"
        return [Row(n, None, "bitsandbytes (CPU)", None, g, reason) for n, g in zip(names, (0.25, 1.0))]
    peer = (f"bitsandbytes {bitsandbytes.__version__} (CPU, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads)")
    xt = torch.from_numpy(x)
    p, s = F.quantize_4bit(xt, blocksize=64, quant_type="nf4")
    packed, state = ours.quantize_4bit(x, 64, "nf4")
    q_ours, q_peer = _interleaved(lambda: ours.quantize_4bit(x, 64, "nf4"),
                                  lambda: F.quantize_4bit(xt, blocksize=64, quant_type="nf4"), repeats)
    d_ours, d_peer = _interleaved(lambda: ours.dequantize_4bit(packed, state), lambda: F.dequantize_4bit(p, s), repeats)
    return [Row(names[0], q_ours, peer, q_peer, 0.25), Row(names[1], d_ours, peer, d_peer, 1.0)]


def core_rows(x: np.ndarray, repeats: int) -> list[Row]:
    """int4ref's own generic path, for scale (no peer)."""
    from .. import dequantize, quantize

    rows = []
    for fmt in ("nf4", "int4_sym", "int4_asym"):
        qt = quantize(x, fmt, group_size=64)
        tq, td = _interleaved(lambda: quantize(x, fmt, group_size=64), lambda: dequantize(qt), repeats)
        rows.append(Row(f"int4ref.quantize {fmt} g64", tq, "-", None, None))
        rows.append(Row(f"int4ref.dequantize {fmt} g64", td, "-", None, None))
    return rows


def _dist_version(name: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:
        return None


def format_table(rows: list[Row]) -> str:
    lines = [f"{'operation':32s} {'int4ref ms':>11s} {'peer ms':>9s} {'ratio':>7s} {'goal':>6s}  peer / note"]
    for r in rows:
        if r.skipped:
            lines.append(f"{r.name:32s} {'-':>11s} {'-':>9s} {'-':>7s} {'':>6s}  skipped: {r.skipped}")
            continue
        peer_ms = f"{r.peer_ms:9.1f}" if r.peer_ms is not None else f"{'-':>9s}"
        ratio = f"{r.ratio:6.2f}x" if r.ratio is not None else f"{'-':>7s}"
        goal = f"<={r.goal:.2f}" if r.goal is not None else ""
        mark = {True: "  ok", False: "  MISSED", None: ""}[r.meets_goal]
        lines.append(f"{r.name:32s} {r.ours_ms:11.1f} {peer_ms} {ratio} {goal:>6s}{mark}  {r.peer}")
    return "\n".join(lines)


def run_cpu(size: int, repeats: int) -> dict:
    x = np.random.default_rng(0).standard_normal((size, size)).astype(np.float32)
    rows = gguf_rows(x, repeats) + ggml_rows(x, repeats) + bnb_rows(x, repeats) + core_rows(x, repeats)
    return {
        "benchmark": "cpu",
        "shape": [size, size],
        "dtype": "float32",
        "repeats": repeats,
        "machine": machine(),
        "commit": commit(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "rows": [asdict(r) | {"ratio": r.ratio, "meets_goal": r.meets_goal} for r in rows],
        "table": format_table(rows),
    }


def main(argv=None, prog: str = "python -m int4ref.bench cpu") -> int:
    """``python -m int4ref.bench cpu [--size 4096] [--repeats 7] [--json PATH]``."""
    parser = argparse.ArgumentParser(prog=prog, description="numpy paths against gguf, ggml's C and bitsandbytes (CPU)")
    parser.add_argument("--size", type=int, default=4096, help="matrix side (default 4096)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    result = run_cpu(args.size, args.repeats)
    m = result["machine"]
    print(f"{args.size}x{args.size} float32 on {m['cpu']} ({m['cores']} cores), commit {result['commit']}")
    print(result["table"])
    if args.json:
        write_record(args.json, result)
    return 0
