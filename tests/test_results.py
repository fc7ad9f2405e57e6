"""int4ref.results: finding the committed measurement files."""
import json

import pytest

from int4ref import results


def test_finds_the_committed_sweep_from_the_package_checkout(monkeypatch, tmp_path):
    monkeypatch.delenv("INT4REF_RESULTS", raising=False)
    monkeypatch.chdir(tmp_path)  # not from the working directory
    path = results.find("bench-cpu.json")
    assert path.parent.name == "results" and path.is_file()
    assert results.load("bench-cpu.json") == json.loads(path.read_text())


def test_environment_variable_comes_first(monkeypatch, tmp_path):
    (tmp_path / "bench-cpu.json").write_text('{"mine": 1}')
    monkeypatch.setenv("INT4REF_RESULTS", str(tmp_path))
    assert results.load("bench-cpu.json") == {"mine": 1}


def test_missing_and_bad_names(monkeypatch, tmp_path):
    monkeypatch.setenv("INT4REF_RESULTS", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no-such.json.*looked in"):
        results.find("no-such.json")
    for bad in ("", "../results/x.json", None):
        with pytest.raises(ValueError, match="file name"):
            results.find(bad)
