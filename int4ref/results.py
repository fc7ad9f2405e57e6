"""Find and read the committed measurement files under ``results/`` (benchmarks, the MiniLM
sweep), which the book's chapters render instead of re-measuring.

Each file is JSON and records on which machine and at which commit it was measured.
:func:`find` looks in, in order: the folder named by the ``INT4REF_RESULTS`` environment
variable; ``results/`` of the checkout int4ref is installed from (an editable install, as
``make book``, Binder and the Colab install cell do); ``results/`` in the working directory and
in its parent (a chapter runs from ``book/`` or ``notebooks/``).
"""
from __future__ import annotations

import json
import os
from pathlib import Path


def _candidates(name: str) -> list[Path]:
    dirs = []
    if os.environ.get("INT4REF_RESULTS"):
        dirs.append(Path(os.environ["INT4REF_RESULTS"]))
    dirs += [Path(__file__).resolve().parents[1] / "results", Path.cwd() / "results", Path.cwd().parent / "results"]
    return [d / name for d in dirs]


def find(name: str) -> Path:
    """The path of the result file ``name`` (e.g. ``"minilm-sweep.json"``); FileNotFoundError
    naming every place looked in when there is none."""
    if not isinstance(name, str) or not name or "/" in name or "\\" in name:
        raise ValueError(f"name must be a file name such as 'minilm-sweep.json', got {name!r}")
    places = _candidates(name)
    for p in places:
        if p.is_file():
            return p
    raise FileNotFoundError(
        f"no result file {name!r}; looked in: {', '.join(str(p.parent) for p in places)}. It is committed "
        "in the repository's results/ folder: work from a clone (pip install -e .) or set INT4REF_RESULTS.")


def load(name: str) -> dict:
    """The result file ``name`` read as JSON (see :func:`find`)."""
    return json.loads(find(name).read_text(encoding="utf-8"))
