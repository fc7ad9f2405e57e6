"""tools/device_check.sh, the one command a device session runs (issue 17), and the
benchmark record it leaves, checked on a machine without a GPU.

* The script, run on a copy of the tree without ``.git`` (as on the device machine, where
  the commit comes from ``INT4REF_COMMIT``): the CPU-side path (tests on the CPU emulator,
  the benchmark's own code on the emulator, the real benchmark refusing without a GPU),
  its files and exit status, with ``--dry-run`` and without; a failing test fails the run
  but does not stop the benchmark; the GPU branch, with a stand-in python that reports a
  GPU and runs the benchmark on the emulator.
* ``int4ref.gpu.bench``: the commit (git, or ``INT4REF_COMMIT``), the time budget, a stage
  that raises, and :func:`report` on a synthetic record written by the benchmark's own
  writer; the GPU chapter renders that record without an error.
"""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from int4ref.gpu import bench as bench_gpu
from int4ref.gpu.emulator import find_compiler
from int4ref.results import write_record

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = "tools/device_check.sh"
# small selections, so that each run of the script takes seconds (a device run takes the defaults)
GPU_TESTS = ("tests/test_gpu.py::test_benchmark_code_runs_on_the_emulator "
             "tests/test_gpu.py::test_emulator_runs_a_correct_kernel "
             "tests/test_gpu.py::test_benchmark_fails_clearly_without_a_gpu")
COMPILE_TESTS = ("tests/test_gpu_compile.py::test_parser_on_a_recorded_log "
                 "tests/test_gpu_compile.py::test_every_gemv_version_says_what_it_measured")

needs_tools = pytest.mark.skipif(shutil.which("bash") is None or find_compiler() is None,
                                 reason="needs bash and a C++ compiler (the CPU emulator)")


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """What the device machine gets: the working tree, without .git."""
    dst = tmp_path_factory.mktemp("tree")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis", ".pytest_cache")
    for name in ("int4ref", "tools"):
        shutil.copytree(ROOT / name, dst / name, ignore=ignore)
    (dst / "tests").mkdir()
    for name in ("conftest.py", "test_gpu.py", "test_gpu_compile.py"):
        shutil.copy(ROOT / "tests" / name, dst / "tests" / name)
    shutil.copy(ROOT / "pyproject.toml", dst / "pyproject.toml")
    (dst / "tests" / "test_passes_on_purpose.py").write_text("def test_passes():\n    assert True\n")
    (dst / "tests" / "test_fails_on_purpose.py").write_text("def test_fails():\n    assert 1 == 2\n")
    assert not (dst / ".git").exists()
    return dst


def run_script(tree, out, *args, python=None, env=None, timeout=300):
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("INT4REF_", "PYTEST_"))}
    environ.update({"OUT": str(out), "INT4REF_PYTHON": python or sys.executable, "CUDA_VISIBLE_DEVICES": ""})
    environ.update(env or {})
    return subprocess.run(["bash", SCRIPT, *args], cwd=tree, env=environ, capture_output=True, text=True,
                          timeout=timeout)


def summary(out) -> dict:
    return json.loads((out / "summary.json").read_text())


def stage_exits(out) -> dict:
    return {s["stage"]: s["exit"] for s in summary(out)["stages"]}


# ---------------------------------------------------------------------------------------
# the script


@needs_tools
def test_dry_run_on_a_tree_without_git(tree, tmp_path):
    out = tmp_path / "out"
    proc = run_script(tree, out, "--dry-run", "--gpu-tests", GPU_TESTS, "--compile-tests", COMPILE_TESTS,
                      env={"INT4REF_COMMIT": "0123abcd"})
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log
    assert "NO GPU: --dry-run hides it" in log and "PASSED (dry run" in log
    s = summary(out)
    assert s["exit"] == 0 and s["gpu"] is False and s["dry_run"] is True and s["commit"] == "0123abcd"
    assert stage_exits(out) == {"environment": 0,
                                "pytest tests/test_gpu.py::test_benchmark_code_runs_on_the_emulator": 0,
                                "benchmark code (CPU emulator)": 0, "benchmark refuses without GPU": 2,
                                "pytest tests/test_gpu_compile.py::test_parser_on_a_recorded_log": 0}
    env = json.loads((out / "env.json").read_text())
    assert env["gpu_available"] is False and env["commit"] == "0123abcd"
    assert env["commit_source"].startswith("INT4REF_COMMIT")
    for name in ("numpy", "scipy", "pytest", "hypothesis", "cupy", "emulator_compiler"):
        assert name in env
    junit = (out / "pytest-gpu.xml").read_text()
    assert 'tests="3"' in junit and 'failures="0"' in junit and 'errors="0"' in junit
    assert "no GPU to measure on" in (out / "bench-gpu-nogpu.log").read_text()
    assert not (out / "bench-gpu.json").exists()  # nothing that could pass for a measurement

    record = json.loads((out / "bench-gpu-emulator.json").read_text())
    assert record["emulated"] is True and record["complete"] is True and record["commit"] == "0123abcd"
    gemv = {(r["version"], r["M"]) for r in record["rows"] if r["kernel"] == "gemv"}
    assert gemv == {(v, m) for v in ("v1", "v2", "v3") for m in (1, 4, 16)}
    assert {r["kernel"] for r in record["rows"]} == {"copy", "dequantize", "quantize", "gemv", "fp16 gemv (cuBLAS)"}
    assert "Not a measurement" in bench_gpu.report(record)["provenance"]


@needs_tools
def test_without_a_gpu_and_without_dry_run_the_exit_status_says_so(tree, tmp_path):
    out = tmp_path / "out"
    proc = run_script(tree, out, "--gpu-tests", "tests/test_passes_on_purpose.py",
                      "--compile-tests", "tests/test_passes_on_purpose.py")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert summary(out)["verdict"].startswith("NO GPU") and "nothing measured" in proc.stdout
    assert summary(out)["commit"] == ""  # no .git, no INT4REF_COMMIT: unknown, not invented
    assert json.loads((out / "env.json").read_text())["commit"] is None


@needs_tools
def test_a_failing_test_fails_the_run_but_the_benchmark_still_runs(tree, tmp_path):
    out = tmp_path / "out"
    proc = run_script(tree, out, "--dry-run", "--gpu-tests", "tests/test_fails_on_purpose.py",
                      "--compile-tests", "tests/test_passes_on_purpose.py")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    exits = stage_exits(out)
    assert exits["pytest tests/test_fails_on_purpose.py"] == 1
    assert exits["benchmark code (CPU emulator)"] == 0 and exits["pytest tests/test_passes_on_purpose.py"] == 0
    assert (out / "bench-gpu-emulator.json").is_file()
    assert summary(out)["verdict"] == "FAILED" and "FAILED (exit 1)" in (out / "summary.txt").read_text()


STAND_IN = """#!{python}
# python for device_check.sh that reports a GPU and runs the benchmark on the CPU emulator
import json, os, subprocess, sys
real, args = {python!r}, sys.argv[1:]
if args[:3] == ["-m", "int4ref.bench", "gpu"]:
    if "--environment" in args:
        rc = subprocess.call([real] + args)
        path = args[args.index("--json") + 1]
        env = json.load(open(path))
        env.update(gpu_available=True, gpu="stand-in GPU (sm_90)")
        json.dump(env, open(path, "w"))
        sys.exit(rc)
    with open(os.environ["STAND_IN_LOG"], "a") as f:
        f.write(" ".join(args) + "\\n")
    args = args[:3] + ["--emulator"] + args[3:]
os.execv(real, [real] + args)
"""


@needs_tools
def test_the_gpu_branch_with_a_stand_in_python(tree, tmp_path):
    fake = tmp_path / "python-with-gpu"
    fake.write_text(STAND_IN.format(python=sys.executable))
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    calls = tmp_path / "calls.log"
    out = tmp_path / "out"
    proc = run_script(tree, out, "--gpu-tests", "tests/test_passes_on_purpose.py", "--compile-tests",
                      "tests/test_passes_on_purpose.py", "--budget", "300", python=str(fake),
                      env={"STAND_IN_LOG": str(calls), "INT4REF_COMMIT": "feedbeef"})
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log
    assert "GPU: stand-in GPU (sm_90)" in log and summary(out)["verdict"] == "PASSED (GPU)"
    assert stage_exits(out)["benchmark (GPU)"] == 0
    bench_call = calls.read_text().split()
    assert bench_call[:5] == ["-m", "int4ref.bench", "gpu", "--json", str(out / "bench-gpu.json")]
    budget = int(bench_call[bench_call.index("--budget") + 1])
    assert 30 <= budget < 300
    record = json.loads((out / "bench-gpu.json").read_text())
    assert record["commit"] == "feedbeef" and record["complete"]
    assert "Not a measurement" in (out / "goals.md").read_text()  # the summary prints the report


@needs_tools
@pytest.mark.parametrize("args,message", [
    (["--budget", "60"], "too short"),
    (["--budget", "5m"], "whole number"),
    (["--bogus"], "unknown option"),
])
def test_bad_options_are_refused(tree, tmp_path, args, message):
    proc = run_script(tree, tmp_path / "out", *args)
    assert proc.returncode == 64 and message in proc.stderr


# ---------------------------------------------------------------------------------------
# the benchmark's record


def provenance_in(root, env):
    code = "import json; from int4ref.gpu import bench as bench_gpu; print(json.dumps(bench_gpu.provenance()))"
    environ = {k: v for k, v in os.environ.items() if k != "INT4REF_COMMIT"}
    environ.update(env, PYTHONPATH=str(root))
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, env=environ, capture_output=True, text=True,
                          timeout=60, check=True)
    return json.loads(proc.stdout)


def test_commit_comes_from_git_else_from_the_caller(tree):
    assert provenance_in(tree, {"INT4REF_COMMIT": "abc123"}) == {
        "commit": "abc123", "commit_source": "INT4REF_COMMIT (no git repository in the measured tree)"}
    assert provenance_in(tree, {})["commit"] is None
    if (ROOT / ".git").exists() and shutil.which("git"):
        here = provenance_in(ROOT, {"INT4REF_COMMIT": "not-this-one"})
        assert here["commit_source"] == "git rev-parse HEAD" and len(here["commit"].split("+")[0]) == 40
        assert here["commit_env"] == "not-this-one"  # both kept when they disagree


@pytest.fixture(scope="module")
def emulator_bench():
    if find_compiler() is None:
        pytest.skip("no C++ compiler for the CPU emulator")
    return bench_gpu.emulator_bench()


def test_the_budget_skips_the_later_stages(emulator_bench):
    seen = []
    rows, skipped, failed = bench_gpu.run_stages(emulator_bench, "emulator", budget_s=1e-9,
                                                 on_stage=lambda r, s, f, name: seen.append(name))
    assert seen == ["copy"] and not failed and {r.kernel for r in rows} == {"copy"}
    assert [s.split(" (")[0] for s in skipped] == ["dequantize and quantize nf4", "dequantize and quantize int4_sym",
                                                   "gemv 20x256"]
    assert all("time budget" in s for s in skipped)
    with pytest.raises(ValueError, match="positive"):
        bench_gpu.run_stages(emulator_bench, "emulator", budget_s=0)
    with pytest.raises(ValueError, match="profile"):
        bench_gpu.stages(emulator_bench, "huge")


def test_a_failing_stage_is_recorded_and_the_others_run(emulator_bench, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("kernel exploded")

    monkeypatch.setattr(bench_gpu, "measure_quantize", broken)
    rows, skipped, failed = bench_gpu.run_stages(emulator_bench, "emulator")
    assert failed == [f"dequantize and quantize {f}: RuntimeError: kernel exploded" for f in ("nf4", "int4_sym")]
    assert {r.kernel for r in rows} == {"copy", "gemv", "fp16 gemv (cuBLAS)"} and not skipped
    record = bench_gpu.make_record(rows, bench_gpu.emulator_info(), profile="emulator", failed=failed,
                                   complete=False, emulated=True)
    assert "**Failed stages**" in bench_gpu.report(record)["provenance"]
    monkeypatch.setitem(bench_gpu.PROFILES, "quick", bench_gpu.PROFILES["emulator"])
    with pytest.raises(RuntimeError, match="benchmark stages failed: dequantize and quantize nf4: RuntimeError"):
        bench_gpu.run(emulator_bench, quick=True)


DEVICE = {"name": "NVIDIA H100 80GB HBM3 (synthetic record)", "compute_capability": "9.0", "multiprocessors": 132,
          "memory_GiB": 79.1, "l2_MiB": 50.0, "driver": "13.0", "cuda_runtime": "13.0", "nvrtc": "13.0",
          "cupy": "14.2.0"}
SPEEDUP_V3_M1 = {(8192, 8192): 2.4, (8192, 28672): 3.2}  # below and above the goals 2.5 and 3.0


def synthetic_rows(wrong=False) -> list:
    """Rows as measure_* make them, with made-up times (a stand-in for a GPU run)."""
    R = bench_gpu.Row
    copy_gbps = 3000.0
    rows = [R("copy", "device-to-device", "1024 MiB", [2**30], None, 0.716, [0.716], "cuda-graph", bytes=2**31,
              gbps=copy_gbps, fraction_of_copy=1.0)]
    for config, best in (("nf4 g64 float32 scales -> float16", 0.85), ("int4_sym g128 float16 scales -> float16", 0.7)):
        for version, frac in (("1 packed byte/thread", 0.3), ("8 packed bytes/thread", best)):
            rows.append(R("dequantize", version, config, [8192, 8192], None, 0.05, [0.05], "cuda-graph", bytes=10**8,
                          gbps=frac * copy_gbps, fraction_of_copy=frac, goal=0.8, meets_goal=frac >= 0.8))
    rows.append(R("quantize", "8 values/lane (16-byte loads)", "float16 -> nf4 g64 float32 scales", [8192, 8192],
                  None, 0.1, [0.1], "cuda-graph", bytes=10**8, gbps=0.65 * copy_gbps, fraction_of_copy=0.65,
                  goal=0.6, meets_goal=True))
    for (N, K), top in SPEEDUP_V3_M1.items():
        for M in (1, 4, 16):
            base = 2 * N * K / 2.3e9  # ms at 2.3 TB/s
            for layout, factor in (("x @ W.T, W (N, K)", 1.0), ("x @ Wt, Wt (K, N) contiguous", 1.1)):
                rows.append(R("fp16 gemv (cuBLAS)", layout, "float16 weights", [N, K], M, base * factor, [base],
                              "cuda-graph", bytes=2 * N * K, gbps=2 * N * K / base / 1e6))
            for label in ("NF4 g64 fp32 absmax", "INT4 g128 fp16 scale"):
                for version, speedup in (("v1", 0.5), ("v2", 2.0), ("v3", top)):
                    err = 0.5 if wrong and (N, label, version, M) == (K, "NF4 g64 fp32 absmax", "v2", 4) else 1e-4
                    rows.append(R("gemv", version, label, [N, K], M, base / speedup, [base / speedup], "cuda-graph",
                                  bytes=N * K // 2, gbps=N * K / 2 / (base / speedup) / 1e6, baseline_ms=base,
                                  speedup=speedup, extra={"max_abs_err_over_max_abs_ref": err}))
                if M == 1:
                    best = rows[-1]
                    best.goal = bench_gpu.GEMV_GOALS[N, K]
                    best.meets_goal = best.speedup >= best.goal
    return rows


def written_record(tmp_path, rows=None, **kwargs) -> tuple[Path, dict]:
    """A record written and read back the way `--json` does it."""
    path = tmp_path / "bench-gpu.json"
    write_record(path, bench_gpu.make_record(synthetic_rows() if rows is None else rows, DEVICE, **kwargs))
    return path, json.loads(path.read_text())


def test_report_of_a_synthetic_record(tmp_path):
    _, record = written_record(tmp_path, elapsed_s=123.4)
    out = bench_gpu.report(record)
    prov = out["provenance"]
    assert DEVICE["name"] in prov and "compute capability 9.0" in prov and "CuPy 14.2.0" in prov
    assert record["date"] in prov and "3000 GB/s" in prov
    assert (f"`{record['commit']}`" in prov) if record["commit"] else ("commit unknown" in prov)
    assert "Not a measurement" not in prov and "Incomplete" not in prov and "Quick" not in prov

    bandwidth = out["bandwidth"].splitlines()
    assert len(bandwidth) == 2 + 1 + 4 + 1  # header, copy, four dequantize rows, one quantize row
    assert any("| 0.85 | >= 0.8: met |" in line for line in bandwidth)
    assert any("| 0.70 | >= 0.8: missed |" in line for line in bandwidth)

    gemv = out["gemv"].splitlines()
    assert gemv[0].startswith("| W (N x K) | weights | M | cuBLAS fp16 (us) | v1: speedup (us) | v2:")
    body = gemv[2:]
    assert len(body) == 2 * 2 * 3  # two shapes, two formats, M = 1, 4, 16
    assert [line.split(" | ")[0] for line in body] == ["| 8192x8192"] * 6 + ["| 8192x28672"] * 6  # goal shapes first
    m1 = [line for line in body if line.split(" | ")[2] == "1"]
    assert all("missed (v3)" in line for line in m1 if line.startswith("| 8192x8192 "))
    assert all("met (v3)" in line for line in m1 if line.startswith("| 8192x28672 "))
    assert "| 0.50x (" in body[0] and "| 2.40x (" in body[0]

    goals = out["goals"]
    assert ("W 8192x8192, NF4 g64 fp32 absmax: 2.40x over cuBLAS fp16 at best (version v3); "
            "goal 2.5x, **missed**") in goals
    assert ("W 8192x28672, INT4 g128 fp16 scale: 3.20x over cuBLAS fp16 at best (version v3); "
            "goal 3.0x, **met**") in goals
    assert "0.85 of copy bandwidth at best (version: 8 packed bytes/thread); goal 0.8, **met**" in goals
    assert "0.70 of copy bandwidth at best (version: 8 packed bytes/thread); goal 0.8, **missed**" in goals
    assert "WRONG" not in goals


def test_report_flags_what_is_not_a_full_result(tmp_path):
    _, wrong = written_record(tmp_path, rows=synthetic_rows(wrong=True))
    out = bench_gpu.report(wrong)
    assert len(bench_gpu.wrong_rows(wrong["rows"])) == 1
    assert "1 GEMV row(s) gave a WRONG RESULT" in out["goals"] and out["gemv"].count("WRONG RESULT") == 1
    _, partial = written_record(tmp_path, skipped=["gemv 28672x8192 (the time budget of 150 s was spent)"],
                                complete=False, profile="quick")
    prov = bench_gpu.report(partial)["provenance"]
    assert "**Incomplete run.** Not measured: gemv 28672x8192" in prov and "**Quick run**" in prov
    for bad in (None, {}, {"benchmark": "cpu", "rows": []}, {"benchmark": "gpu"}):
        with pytest.raises(ValueError, match="not a GPU benchmark record"):
            bench_gpu.report(bad)


def test_the_chapter_renders_a_record(tmp_path, monkeypatch):
    """book/gpu-kernels.md executed with a synthetic results/bench-gpu.json: no error, the figures shown."""
    for module in ("jupytext", "nbclient", "myst_nb", "matplotlib", "ipykernel"):
        pytest.importorskip(module)
    import jupytext
    from nbclient import NotebookClient

    results = tmp_path / "results"
    results.mkdir()
    _, record = written_record(results)
    monkeypatch.setenv("INT4REF_RESULTS", str(results))
    nb = jupytext.read(ROOT / "book" / "gpu-kernels.md")
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT / "book")}}).execute()
    texts = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            assert output["output_type"] != "error", output
            texts.append(output.get("text", "") + "".join(output.get("data", {}).get("text/markdown", "")))
    shown = "\n".join(texts)
    assert "Traceback" not in shown and "Error:" not in shown
    assert DEVICE["name"] in shown and record["date"] in shown and "No GPU measurement yet" not in shown
    assert "| 8192x28672 | NF4 g64 fp32 absmax | 1 |" in shown and "**met**" in shown and "**missed**" in shown
    assert any("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
    assert np.isfinite(record["copy_GBps"])
