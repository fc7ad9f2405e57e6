"""Find, read and write the committed measurement files under ``results/`` (benchmarks, the
MiniLM sweep), which the book's chapters render instead of re-measuring.

Each file is JSON and records on which machine (:func:`machine`) and at which commit
(:func:`commit`) it was measured; :func:`write_record` writes one.
:func:`find` looks in, in order: the folder named by the ``INT4REF_RESULTS`` environment
variable; ``results/`` of the checkout int4ref is installed from (an editable install, as
``make book``, Binder and the Colab install cell do); ``results/`` in the working directory and
in its parent (a chapter runs from ``book/`` or ``notebooks/``).
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path

import numpy as np

from .parallel import cpu_count


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


def machine() -> dict:
    """The CPU (model, cores this process may use), platform, Python and numpy of this run."""
    model = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    cores = cpu_count()
    return {"cpu": model, "cores": cores, "platform": platform.platform(), "python": platform.python_version(),
            "numpy": np.__version__}


def commit() -> str | None:
    """The checkout's HEAD commit, with ``+dirty`` when tracked files differ; None outside git."""
    try:
        root = Path(__file__).resolve().parent.parent
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "") if out.returncode == 0 else None
    except Exception:
        return None


def write_record(path: Path, record: dict) -> None:
    """Write a measurement record as indented JSON (the files under results/)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {path}")
