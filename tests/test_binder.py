"""Binder's recipe works, and the notebooks read like the site there: a fresh virtual
environment set up by binder/postBuild executes every notebook in notebooks/ from a fresh
kernel (nbclient), as a Binder user would run it; then nbconvert's HTML exporter renders
each executed notebook as JupyterLab shows it (hidden inputs hidden), and the render must
hold no raw MyST and at least as many images as the site's page (or, without a built
site, one per ``{glue:figure}`` of the chapter, each with its alt text).

Slow (it installs the book's dependencies from PyPI into a new venv), so it is marked
``binder``; ``make test`` runs it, and CI with it. The venv and the executed notebooks are
made once per module (``binder_run``).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from notebook_checks import output_images, raw_myst, render_html, site_images, source_figures  # noqa: E402

pytestmark = pytest.mark.binder
NOTEBOOKS = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "notebooks").glob("*.ipynb"))

EXECUTE = textwrap.dedent(
    """
    import sys, nbformat
    from nbclient import NotebookClient
    out_dir, paths = sys.argv[1], sys.argv[2:]
    failures = []
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        try:
            NotebookClient(nb, timeout=600, kernel_name="python3",
                           resources={"metadata": {"path": "notebooks"}}).execute()
            print("ok", path, flush=True)
        except Exception as exc:  # report every failing notebook, not just the first
            failures.append(f"{path}: {type(exc).__name__}: {str(exc)[-2000:]}")
        nbformat.write(nb, f"{out_dir}/{path.split('/')[-1]}")
    print("\\n".join(failures))
    sys.exit(1 if failures else 0)
    """
)


@pytest.fixture(scope="module")
def binder_run(tmp_path_factory):
    """(venv, env, executed notebooks' folder, the nbclient run)."""
    assert NOTEBOOKS, "no notebooks to run"
    tmp = tmp_path_factory.mktemp("binder")
    venv = tmp / "binder-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = dict(os.environ, PATH=f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}", VIRTUAL_ENV=str(venv))
    env.pop("PYTHONPATH", None)
    setup = subprocess.run(["bash", "binder/postBuild"], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=1500)
    assert setup.returncode == 0, f"binder/postBuild failed:\n{setup.stdout[-3000:]}\n{setup.stderr[-3000:]}"
    executed = tmp / "executed"
    executed.mkdir()
    run = subprocess.run([str(venv / "bin" / "python"), "-c", EXECUTE, str(executed), *NOTEBOOKS], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=1800)
    return venv, env, executed, run


def test_binder_environment_runs_every_notebook(binder_run):
    _, _, _, run = binder_run
    assert run.returncode == 0, (
        f"notebooks failed in the Binder environment:\n{run.stdout[-6000:]}\n{run.stderr[-3000:]}")
    assert run.stdout.count("ok ") == len(NOTEBOOKS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: Path(p).stem)
def test_rendered_notebook_reads_like_the_site(binder_run, path):
    import nbformat

    _, _, executed, _ = binder_run
    done = executed / Path(path).name
    assert done.is_file(), f"{path} was not executed"
    nb = nbformat.read(done, as_version=4)
    html = render_html(nb)
    raw = raw_myst(html)
    assert not raw, f"{path}: raw MyST in what a learner sees: {sorted(set(raw))[:10]}"
    page = nb.metadata["int4book"]["generated_from"].removesuffix(".md")
    images = output_images(nb)
    on_site = site_images(page)
    expected = on_site if on_site is not None else source_figures(page)
    assert len(images) >= expected, (f"{path}: {len(images)} figures, the site's page shows {expected}"
                                     + ("" if on_site is not None else " (glue:figure count; no built site)"))
    for cell in nb.cells:  # every pasted figure: an image with its alt text, then its caption
        if "int4book-figure" in cell.metadata.get("tags", []):
            kinds = [sorted(o.get("data", {})) or [o.get("output_type")] for o in cell.outputs]  # bundle order varies
            assert len(kinds) == 2 and "text/html" in kinds[0] and "text/markdown" in kinds[1], (
                f"{path}: figure cell outputs {kinds}")
            [alt] = output_images(nbformat.from_dict({"cells": [cell]}))
            assert alt, f"{path}: a figure without alt text"
            assert cell.outputs[1]["data"]["text/markdown"].startswith("**Figure ")
    json.dumps(nb)
