"""Benchmarks, one entry: ``python -m int4ref.bench {cpu,widgets,gpu} [options]``.

=================================  ===========================================================
``python -m int4ref.bench cpu``     int4ref's numpy paths against gguf-py, ggml's C and
                                   bitsandbytes, interleaved in one process
                                   (:mod:`int4ref.bench.cpu`)
``python -m int4ref.bench widgets`` how long an explorer takes to update
                                   (:mod:`int4ref.bench.widgets`)
``python -m int4ref.bench gpu``     the CUDA kernels against copy bandwidth and cuBLAS fp16; needs
                                   a GPU, exits with status 2 and the reason without one
                                   (:mod:`int4ref.gpu.bench`, beside the kernels it measures)
=================================  ===========================================================

Each writes, with ``--json PATH``, a record that says on which machine and commit it was
measured (:func:`int4ref.results.write_record`); the book renders the committed ones under
``results/``. Importing this package imports none of the benchmarks.
"""
from __future__ import annotations

import sys

COMMANDS = {
    "cpu": "numpy paths against gguf, ggml's C and bitsandbytes (CPU)",
    "widgets": "update time of the interactive explorers",
    "gpu": "the CUDA kernels against copy bandwidth and cuBLAS fp16 (needs a GPU)",
}


def main(argv=None) -> int:
    """Run ``python -m int4ref.bench WHICH [options]``; each benchmark parses its own options."""
    argv = sys.argv[1:] if argv is None else list(argv)
    which, rest = (argv[0], argv[1:]) if argv else (None, [])
    if which == "cpu":
        from .cpu import main as run
    elif which == "widgets":
        from .widgets import main as run
    elif which == "gpu":
        from ..gpu.bench import main as run
    else:
        usage = "\n".join(f"  {name:8s} {text}" for name, text in COMMANDS.items())
        print(f"usage: python -m int4ref.bench {{{','.join(COMMANDS)}}} [options]\n{usage}", file=sys.stderr)
        return 0 if which in ("-h", "--help") else 2
    return run(rest, prog=f"python -m int4ref.bench {which}")
