"""How long an explorer takes to update after a control changes.

    python -m int4ref.bench widgets [--repeat N] [--only NAME ...] [--json PATH]

For each explorer of :mod:`int4ref.explore` at its default size this builds the widget
(headless: no kernel is needed), then changes one control back and forth ``N`` times and
times each update end to end: the control's new value, ``compute``, the redraw into the
live figure and its PNG encoding (or, for the nibble inspector, its HTML table). It
prints the median and 90th percentile of the wall-clock time, the median CPU time of the
process (less sensitive to other load on a shared machine; it includes int4ref's worker
threads) and the median of ``compute`` alone. The target is a median under 150 ms on a
2-core machine.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from ..parallel import cpu_count

# control -> the two values toggled between, per explorer
TOGGLES = {
    "format": ("format", ("nf4", "int4_sym")),
    "nf4": ("offset", (0.95, 0.9677083)),
    "double_quant": ("dq_blocksize", (128, 256)),
    "nibble": ("format", ("int4_sym", "nf4")),
}
TARGET_MS = 150.0


def _pct(values, q):
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def measure(name: str, repeat: int = 15) -> dict:
    """Times (ms) of ``repeat`` widget updates of explorer ``name`` and of its compute."""
    from ..explore import EXPLORERS

    cls = EXPLORERS[name]
    ex = cls()
    t0 = time.perf_counter()
    ex.widget()
    first = 1000 * (time.perf_counter() - t0)
    control, values = TOGGLES[name]
    ctl = ex.widgets[control]
    updates, cpu, computes = [], [], []
    for i in range(repeat + 1):
        t, c = time.perf_counter(), time.process_time()
        ctl.value = values[i % 2]
        dt, dc = 1000 * (time.perf_counter() - t), 1000 * (time.process_time() - c)
        if ex.error:
            raise RuntimeError(f"{name}: update failed: {ex.error}")
        if i:  # the first toggle warms caches (data, tables)
            updates.append(dt)
            cpu.append(dc)
    for _ in range(max(3, repeat // 3)):
        t = time.perf_counter()
        ex.compute(**ex.settings)
        computes.append(1000 * (time.perf_counter() - t))
    return {"explorer": name, "first_ms": first, "median_ms": statistics.median(updates),
            "p90_ms": _pct(updates, 0.9), "cpu_ms": statistics.median(cpu),
            "compute_ms": statistics.median(computes), "control": control}


def main(argv=None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=15, help="updates per explorer (default 15)")
    parser.add_argument("--only", nargs="*", choices=sorted(TOGGLES), help="explorers to measure (default: all)")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    os.environ.setdefault("MPLBACKEND", "Agg")
    names = args.only or list(TOGGLES)
    cores = cpu_count()
    print(f"explorer update times, {args.repeat} updates each ({platform.processor() or platform.machine()}, "
          f"{cores} cores, Python {platform.python_version()})")
    print(f"{'explorer':<14}{'control':<14}{'median ms':>10}{'p90 ms':>9}{'CPU ms':>8}{'compute ms':>12}"
          f"{'first ms':>10}")
    slow, results = [], []
    for name in names:
        r = measure(name, args.repeat)
        results.append(r)
        print(f"{name:<14}{r['control']:<14}{r['median_ms']:>10.1f}{r['p90_ms']:>9.1f}{r['cpu_ms']:>8.1f}"
              f"{r['compute_ms']:>12.1f}"
              f"{r['first_ms']:>10.0f}")
        if r["median_ms"] > TARGET_MS:
            slow.append(name)
    if slow:
        print(f"over the {TARGET_MS:.0f} ms target: {', '.join(slow)}")
    if args.json:
        from ..results import commit, machine, write_record  # the same provenance as the CPU benchmark

        record = {"benchmark": "widgets", "machine": machine(), "commit": commit(),
                  "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  "load_average": os.getloadavg(), "cores": cores, "python": platform.python_version(),
                  "target_ms": TARGET_MS, "rows": results}
        write_record(args.json, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
