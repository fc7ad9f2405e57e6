"""Binder's recipe works: a fresh virtual environment set up by binder/postBuild executes
every notebook in notebooks/ from a fresh kernel (nbclient), as a Binder user would run it.

Slow (it installs the book's dependencies from PyPI into a new venv), so it is marked
``binder``; ``make test`` runs it, and CI with it.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.binder

EXECUTE = textwrap.dedent(
    """
    import sys, nbformat
    from nbclient import NotebookClient
    failures = []
    for path in sys.argv[1:]:
        nb = nbformat.read(path, as_version=4)
        try:
            NotebookClient(nb, timeout=600, kernel_name="python3",
                           resources={"metadata": {"path": "notebooks"}}).execute()
            print("ok", path, flush=True)
        except Exception as exc:  # report every failing notebook, not just the first
            failures.append(f"{path}: {type(exc).__name__}: {str(exc)[-2000:]}")
    print("\\n".join(failures))
    sys.exit(1 if failures else 0)
    """
)


def test_binder_environment_runs_every_notebook(tmp_path):
    notebooks = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert notebooks, "no notebooks to run"
    venv = tmp_path / "binder-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = dict(os.environ, PATH=f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}", VIRTUAL_ENV=str(venv))
    env.pop("PYTHONPATH", None)
    setup = subprocess.run(["bash", "binder/postBuild"], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=1500)
    assert setup.returncode == 0, f"binder/postBuild failed:\n{setup.stdout[-3000:]}\n{setup.stderr[-3000:]}"
    run = subprocess.run([str(venv / "bin" / "python"), "-c", EXECUTE, *notebooks], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=1800)
    assert run.returncode == 0, f"notebooks failed in the Binder environment:\n{run.stdout[-6000:]}\n{run.stderr[-3000:]}"
    assert run.stdout.count("ok ") == len(notebooks)
