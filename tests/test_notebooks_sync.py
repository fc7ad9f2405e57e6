"""notebooks/*.ipynb (what Binder and Colab open) must match the chapters in book/.

Fix a failure with `make notebooks` (python tools/sync_notebooks.py) and commit the result.
"""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("jupytext")

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "sync_notebooks.py"


def run_sync(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *args],
                          capture_output=True, text=True, timeout=120)


def test_notebooks_in_sync_with_book():
    proc = run_sync("--check")
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.fixture
def repo_copy(tmp_path):
    """The parts of the repository the script reads, in a scratch directory."""
    for name in ("book", "notebooks"):
        shutil.copytree(ROOT / name, tmp_path / name)
    for name in ("_config.yml", "pyproject.toml"):  # the repository, the requirements
        shutil.copy(ROOT / name, tmp_path / name)
    return tmp_path


def test_check_reports_edited_chapter_and_sync_repairs_it(repo_copy):
    index = repo_copy / "book" / "index.md"
    index.write_text(index.read_text(encoding="utf-8") + "\nOne more sentence.\n", encoding="utf-8")
    proc = run_sync("--check", "--root", str(repo_copy))
    assert proc.returncode == 1
    assert "notebooks/index.ipynb: out of date with book/index.md" in proc.stdout

    assert run_sync("--root", str(repo_copy)).returncode == 0
    assert run_sync("--check", "--root", str(repo_copy)).returncode == 0


def test_install_cell_follows_the_repository_in_config(repo_copy):
    yaml = pytest.importorskip("yaml")
    config = repo_copy / "_config.yml"
    text = config.read_text(encoding="utf-8")
    repo = yaml.safe_load(text)["repository"]
    assert f"url: {repo['url']}" in text
    config.write_text(text.replace(f"url: {repo['url']}", "url: https://github.com/someone/fork"),
                      encoding="utf-8")
    assert run_sync("--check", "--root", str(repo_copy)).returncode == 1
    assert run_sync("--root", str(repo_copy)).returncode == 0
    import json

    nb = json.loads((repo_copy / "notebooks" / "index.ipynb").read_text(encoding="utf-8"))
    install = "".join(next(c for c in nb["cells"] if c["cell_type"] == "code")["source"])
    branch = repo["branch"]
    assert f'"--branch", "{branch}",' in install
    assert '"https://github.com/someone/fork", "int4book"' in install


def test_stale_notebook_is_reported_and_removed(repo_copy):
    shutil.copy(repo_copy / "notebooks" / "index.ipynb", repo_copy / "notebooks" / "gone.ipynb")
    proc = run_sync("--check", "--root", str(repo_copy))
    assert proc.returncode == 1 and "notebooks/gone.ipynb: stale" in proc.stdout
    assert run_sync("--root", str(repo_copy)).returncode == 0
    assert not (repo_copy / "notebooks" / "gone.ipynb").exists()


def test_chapter_without_install_cell_is_an_error(repo_copy):
    (repo_copy / "book" / "nocell.md").write_text(
        "---\nkernelspec:\n  name: python3\n  display_name: Python 3\n---\n\n# No install cell\n\n"
        "```{code-cell} ipython3\nprint(1)\n```\n", encoding="utf-8")
    proc = run_sync("--check", "--root", str(repo_copy))
    assert proc.returncode == 2 and "book/nocell.md" in proc.stderr


def test_run_and_saved_notebook_still_counts_as_in_sync(repo_copy):
    import json

    path = repo_copy / "notebooks" / "index.ipynb"
    nb = json.loads(path.read_text(encoding="utf-8"))
    for i, cell in enumerate(c for c in nb["cells"] if c["cell_type"] == "code"):
        cell["execution_count"] = i + 1
        cell["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["x\n"]}]
        cell["metadata"]["colab"] = {"base_uri": "https://localhost:8080/"}
    nb["metadata"]["colab"] = {"provenance": []}
    path.write_text(json.dumps(nb, indent=1), encoding="utf-8")
    assert run_sync("--check", "--root", str(repo_copy)).returncode == 0
