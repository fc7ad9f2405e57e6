"""The package's one thread pool and its one CPU count.

numpy releases the GIL inside its loops, so independent slices of an array can be worked
on by threads. Every parallel loop of int4ref goes through :func:`pool` (one
``ThreadPoolExecutor``, started on first use and shared) or :func:`map_rows` (cache-sized
slices of rows on that pool), and every "how many CPUs" question is answered by
:func:`cpu_count`.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

#: Values handled per task: big enough to amortise numpy's per-call overhead and the
#: thread hand-off, small enough to stay in cache (1 MiB of float32; measured best of
#: 2**14..2**20 on a 2-core machine, see int4ref.bench).
CHUNK_ELEMENTS = 1 << 18
#: Most worker threads of the pool (beyond 8, memory bandwidth, not cores, is the limit).
MAX_THREADS = 8


def cpu_count() -> int:
    """CPUs this process may run on: its affinity mask where the OS has one (Linux; a
    container's or ``taskset``'s limit), else ``os.cpu_count()``; at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


#: Worker threads of :func:`pool`.
THREADS = max(1, min(MAX_THREADS, cpu_count()))
_POOL: ThreadPoolExecutor | None = None


def pool() -> ThreadPoolExecutor:
    """The shared pool (:data:`THREADS` workers), created on first use."""
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="int4ref")
    return _POOL


def row_chunks(n_rows: int, row_len: int, chunk_elements: int | None = None) -> list[slice]:
    """Consecutive slices of ``range(n_rows)`` holding about ``chunk_elements`` values each."""
    step = max(1, (chunk_elements or CHUNK_ELEMENTS) // max(1, row_len))
    return [slice(i, min(i + step, n_rows)) for i in range(0, n_rows, step)]


def map_rows(fn, n_rows: int, row_len: int, threads: bool = True, chunk_elements: int | None = None) -> None:
    """Call ``fn(row_slice)`` over cache-sized slices of rows, on the shared pool.

    Every format works group by group, so slicing by rows of groups never changes a
    result. ``threads=False`` (or one CPU, or one slice) runs the slices in order here.
    """
    chunks = row_chunks(n_rows, row_len, chunk_elements)
    if not threads or THREADS == 1 or len(chunks) < 2:
        for sl in chunks:
            fn(sl)
        return
    for future in [pool().submit(fn, sl) for sl in chunks]:
        future.result()
