"""A Colab-like runtime: Python 3.12 (Colab's) with Colab's ipywidgets 7.7.1, numpy 2.0.2 and
matplotlib 3.10 preinstalled. A notebook's install cell (its git clone replaced by this
checkout, placed where the cell clones to) must install what is missing and leave those
versions exactly as they were; then every explorer builds and reacts to a control with
ipywidgets 7.7, and one chapter executes from a fresh kernel.

Slow (a venv from PyPI, about a minute), so it is marked ``binder`` like the Binder test.
Without a python3.12 on PATH it uses this interpreter and says so in the output.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.binder

# What Colab ships (its runtime image, 2025): the front end's widgets are ipywidgets 7.7.1.
COLAB = ["ipywidgets==7.7.1", "numpy==2.0.2", "matplotlib==3.10.0"]
KERNEL = ["ipykernel", "nbclient", "nbformat"]  # Colab's kernel; nbclient drives it here
CHAPTER = "notebooks/uniform-int4.ipynb"
COPY_IGNORE = shutil.ignore_patterns(".venv", "_build", ".git", ".cache", ".hypothesis", ".pytest_cache",
                                     "*.egg-info", "build", "__pycache__", "notebooks", "exercises")

VERSIONS = "import importlib.metadata as m; print({n: m.version(n) for n in ('ipywidgets', 'numpy', 'matplotlib')})"

EXPLORERS = textwrap.dedent("""
    import ipywidgets, matplotlib
    matplotlib.use("Agg")
    from int4ref import explore
    assert ipywidgets.__version__.startswith("7.7"), ipywidgets.__version__
    for cls in (explore.FormatExplorer, explore.NF4Builder, explore.DoubleQuantExplorer, explore.NibbleInspector):
        ex = cls()
        box = ex.widget()
        assert isinstance(box, ipywidgets.VBox)
        before = ex.numbers_view.value
        name, ctl = next((n, c) for n, c in ex.widgets.items()
                         if isinstance(c, (ipywidgets.IntSlider, ipywidgets.FloatSlider, ipywidgets.Dropdown,
                                           ipywidgets.SelectionSlider)))
        options = getattr(ctl, "options", None)
        if options:
            values = [o[1] if isinstance(o, tuple) else o for o in options]
            ctl.value = next(v for v in values if v != ctl.value)
        else:
            ctl.value = ctl.max if ctl.value != ctl.max else ctl.min
        assert ex.error is None, ex.error
        assert ex.numbers_view.value != before, f"{cls.__name__}: {name} changed nothing"
        print("explorer ok", cls.__name__, name)
""")

RUN_CHAPTER = textwrap.dedent("""
    import sys, nbformat
    from nbclient import NotebookClient
    nb = nbformat.read(sys.argv[1], as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": "."}}).execute()
    print("chapter ok")
""")


def _python312() -> str:
    """A Python 3.12 that runs: on PATH, or one pyenv installed; else this interpreter."""
    pyenv = sorted(map(str, Path.home().glob(".pyenv/versions/3.12*/bin/python3.12")))
    candidates = [shutil.which("python3.12"), *pyenv]
    for exe in filter(None, candidates):
        if subprocess.run([exe, "-c", "import venv"], capture_output=True).returncode == 0:
            return exe
    print(f"no Python 3.12 found: the Colab-like venv uses {sys.version.split()[0]}")
    return sys.executable


def test_colab_like_runtime(tmp_path):
    venv = tmp_path / "colab-venv"
    subprocess.run([_python312(), "-m", "venv", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    env = dict(os.environ, PATH=f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}", VIRTUAL_ENV=str(venv))
    env.pop("PYTHONPATH", None)
    pip = subprocess.run([py, "-m", "pip", "install", "-q", *COLAB, *KERNEL], env=env,
                         capture_output=True, text=True, timeout=900)
    assert pip.returncode == 0, pip.stdout[-3000:] + pip.stderr[-3000:]
    subprocess.run([py, "-m", "ipykernel", "install", "--sys-prefix", "--name", "python3"], env=env,
                   check=True, capture_output=True, timeout=120)
    before = subprocess.run([py, "-c", VERSIONS], env=env, capture_output=True, text=True, check=True).stdout

    # Colab's working directory, with the checkout where the install cell would clone it.
    work = tmp_path / "content"
    shutil.copytree(ROOT, work / "int4book", ignore=COPY_IGNORE)
    shutil.copy(ROOT / CHAPTER, work / "chapter.ipynb")
    run = subprocess.run([py, "-c", RUN_CHAPTER, "chapter.ipynb"], cwd=work, env=env, capture_output=True,
                         text=True, timeout=1500)
    assert run.returncode == 0, f"{CHAPTER} failed in the Colab-like venv:\n{run.stdout[-4000:]}\n{run.stderr[-4000:]}"

    after = subprocess.run([py, "-c", VERSIONS], env=env, capture_output=True, text=True, check=True).stdout
    assert after == before, f"the install cell changed Colab's packages: {before.strip()} -> {after.strip()}"
    assert "'ipywidgets': '7.7.1'" in after
    explorers = subprocess.run([py, "-c", EXPLORERS], cwd=work, env=env, capture_output=True, text=True,
                               timeout=600)
    assert explorers.returncode == 0, explorers.stdout[-3000:] + explorers.stderr[-3000:]
    assert explorers.stdout.count("explorer ok") == 4
