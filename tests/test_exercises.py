"""The assignments in exercises/: built with otter assign, graded with otter run.

What is checked, per assignment (exercises/<name>.md, built by exercises/build.py):

* the solution notebook scores full marks through the generated autograder zip, graded
  the way an instructor does it (``otter run -a <zip> <notebook>``, with ``--debug`` so
  that any cell raising an error, a "measure" cell too, fails the run);
* the blank student notebook scores zero on every autograded question;
* every autograded question has at least one planted wrong answer
  (exercises/wrong_answers/<name>.py, real pitfalls) and each scores less than full
  marks, with at least one HIDDEN test case failing. Wrong answers are batched: round i
  fills in the i-th wrong answer of every question (the solution elsewhere) and is graded
  once; per-question scores come from otter's results.json;
* no student file contains solution code, a hidden test, or a hidden-test marker;
* the book pages in exercises/book/ are in sync with the masters.

Needs otter-grader (``pip install -e ".[exercises]"``); skipped without it. Runtime: about
a minute and a half on 2 cores (every otter run starts a kernel; they run 2 at a time).
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("otter",
                    reason="otter-grader is not installed: pip install -e '.[exercises]' to test the exercises")
pytest.importorskip("jupytext", reason="jupytext is not installed: pip install -e '.[exercises]'")
nbformat = pytest.importorskip("nbformat")

ROOT = Path(__file__).resolve().parents[1]
EXERCISES = ROOT / "exercises"


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


exbuild = _load(EXERCISES / "build.py", "int4book_exercises_build")
# INT4BOOK_EXERCISES=memory,nf4 restricts the module to some assignments (while writing one).
NAMES = [n for n in os.environ.get("INT4BOOK_EXERCISES", "").split(",") if n] or exbuild.ASSIGNMENTS
WORKERS = max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def wrong_answers(name: str) -> dict[str, list[tuple[str, str]]]:
    return _load(EXERCISES / "wrong_answers" / f"{name}.py", f"int4book_wrong_{name}").WRONG


def read_nb(path: Path):
    return nbformat.read(path, as_version=4)


# ---------------------------------------------------------------------------------------
# one build and one batch of gradings for the whole module
# ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("exercises")
    with ThreadPoolExecutor(WORKERS) as pool:
        dests = list(pool.map(lambda n: exbuild.build(n, out), NAMES))
    return dict(zip(NAMES, dests))


@pytest.fixture(scope="module")
def graded(built, tmp_path_factory):
    """Every otter run of the module, WORKERS (= CPU cores, at most 4) at a time.

    Returns {(name, "solution" | "blank" | "wrong<i>"): results.json, or the exception}.
    The solution is graded with ``otter run --debug``, which fails on any cell that raises.
    """
    work = tmp_path_factory.mktemp("submissions")
    jobs = {}
    for name, dest in built.items():
        student = read_nb(dest / "student" / f"{name}.ipynb")
        solution = read_nb(dest / "autograder" / f"{name}.ipynb")
        subs = {"solution": dest / "autograder" / f"{name}.ipynb", "blank": dest / "student" / f"{name}.ipynb"}
        wrong = wrong_answers(name)
        for r in range(max((len(v) for v in wrong.values()), default=0)):
            answers = {q: v[r][1] for q, v in wrong.items() if r < len(v)}
            path = work / f"{name}-wrong{r}" / f"{name}.ipynb"
            path.parent.mkdir()
            nbformat.write(exbuild.make_submission(student, solution, answers), path)
            subs[f"wrong{r}"] = path
        zip_path = exbuild.autograder_zip(dest)
        for kind, path in subs.items():
            jobs[(name, kind)] = (exbuild.otter_run, zip_path, path, work / "results" / f"{name}-{kind}",
                                  kind == "solution")

    def run(key):
        fn, *args = jobs[key]
        try:
            return key, fn(*args)
        except Exception as exc:  # reported by the test that needs it
            return key, exc

    # wrong-answer rounds first, so that the pool stays busy to the end
    order = sorted(jobs, key=lambda k: (k[1] in ("solution", "blank"), k))
    with ThreadPoolExecutor(WORKERS) as pool:
        return dict(pool.map(run, order))


def _result(graded, name, kind):
    res = graded[(name, kind)]
    if isinstance(res, Exception):
        pytest.fail(f"{name} ({kind}): {res}")
    return res


def zip_tests(zip_path: Path) -> dict[str, list[dict]]:
    """question -> its test cases (dicts with 'code', 'hidden', ...) from the autograder zip."""
    out = {}
    with zipfile.ZipFile(zip_path) as z:
        for item in z.namelist():
            if item.startswith("tests/") and item.endswith(".py"):
                env: dict = {}
                exec(z.read(item).decode(), env)  # OK-format test files: OK_FORMAT, test = {...}
                out[env["test"]["name"]] = [c for s in env["test"]["suites"] for c in s["cases"]]
    return out


_CASE = re.compile(r"^\s*(\S+) - (\d+) result:\s*\n\s*(\u2705|\u274c)", re.M)


def failed_cases(results: dict, question: str) -> list[int] | None:
    """0-based indices of the failing test cases of ``question`` (from otter's output)."""
    for t in results["tests"]:
        if t["name"] == question:
            out = t.get("output", "")
            if "All test cases passed" in out:
                return []
            return [int(m.group(2)) - 1 for m in _CASE.finditer(out)
                    if m.group(1) == question and m.group(3) == "\u274c"]
    return None


# ---------------------------------------------------------------------------------------
# static checks (no grading)
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_assignment_shape(built, name):
    """4 to 8 questions, written and autograded ones, each autograded one with public and
    hidden tests and at least one wrong-answer fixture."""
    dest = built[name]
    questions = [c for c in exbuild.read_master(name).cells
                 if c.cell_type == "raw" and c.source.strip().startswith("# BEGIN QUESTION")]
    assert 4 <= len(questions) <= 8, f"{name}: {len(questions)} questions"
    manual = [q for q in questions if re.search(r"^manual:\s*true", q.source, re.M)]
    assert manual, f"{name}: no written (manually graded) question"
    tests = zip_tests(exbuild.autograder_zip(dest))
    assert len(tests) == len(questions) - len(manual)
    for q, cases in tests.items():
        assert any(c["hidden"] for c in cases), f"{name} {q}: no hidden test"
        assert any(not c["hidden"] for c in cases), f"{name} {q}: no public test"
    wrong = wrong_answers(name)
    assert set(wrong) == set(tests), f"{name}: wrong answers for {sorted(wrong)}, autograded {sorted(tests)}"
    assert all(wrong.values())
    student = read_nb(dest / "student" / f"{name}.ipynb")
    assert set(exbuild.answer_cells(student)) == set(tests)


@pytest.mark.parametrize("name", NAMES)
def test_student_notebook_setup_cell(built, name):
    """First cell: installs int4ref from _config.yml's repository when missing, and otter."""
    url, branch = exbuild.repository()
    nb = read_nb(built[name] / "student" / f"{name}.ipynb")
    first = nb.cells[0]
    assert first.cell_type == "code" and exbuild.SETUP_TAG in first.metadata.get("tags", [])
    assert f'%pip install -q "int4ref @ git+{url}@{branch}"' in first.source
    assert "except ImportError:" in first.source and "otter-grader" in first.source
    assert f'tests_dir="tests/{name}")' in first.source
    assert not list((built[name] / "student").glob("tests")), "public tests live in the setup cell"


def _solution_snippets(name: str) -> list[str]:
    """Lines of the solutions (stripped) not contained in any other line of the master."""
    nb = exbuild.read_master(name)
    inside, other = [], []
    in_block = False
    for cell in nb.cells:
        lines = cell.source.splitlines()
        if cell.cell_type != "code":
            other += lines
            continue
        for line in lines:
            s = line.strip()
            if s.startswith("# BEGIN SOLUTION"):
                in_block = True
            elif s == "# END SOLUTION":
                in_block = False
            elif in_block or s.endswith("# SOLUTION"):
                inside.append(re.sub(r"\s*# SOLUTION$", "", s))
            else:
                other.append(s)
    other = [o.strip() for o in other]
    return [s for s in dict.fromkeys(inside) if len(s) >= 12 and not any(s in o for o in other)]


def _hidden_snippets(name: str) -> list[str]:
    """Lines of hidden tests (stripped) not contained in any other line of the master."""
    nb = exbuild.read_master(name)
    hidden, other = [], []
    for cell in nb.cells:
        lines = [s.strip() for s in cell.source.splitlines()]
        if cell.cell_type == "code" and cell.source.lstrip().startswith("# HIDDEN"):
            hidden += [s for s in lines[1:] if len(s) >= 12]
        else:
            other += lines
    return [s for s in dict.fromkeys(hidden) if not any(s in o for o in other)]


@pytest.mark.parametrize("name", NAMES)
def test_no_solutions_or_hidden_tests_in_student_files(built, name):
    student_dir = built[name] / "student"
    files = [p for p in student_dir.rglob("*") if p.is_file()]
    assert [p.name for p in files] == [f"{name}.ipynb"]
    solutions, hidden = _solution_snippets(name), _hidden_snippets(name)
    assert len(solutions) >= 5 and len(hidden) >= 3, "the search needs snippets to have teeth"
    # the solution notebook does contain them: the search works
    ag_text = (built[name] / "autograder" / f"{name}.ipynb").read_text(encoding="utf-8")
    ag_json = json.dumps(json.loads(ag_text))
    assert all(json.dumps(s)[1:-1] in ag_json for s in solutions)
    for path in files:
        text = json.dumps(json.loads(path.read_text(encoding="utf-8")))  # escaped like the snippets
        leaked = [s for s in solutions if json.dumps(s)[1:-1] in text]
        assert not leaked, f"{path.name} contains solution code: {leaked[:3]}"
        leaked = [s for s in hidden if json.dumps(s)[1:-1] in text]
        assert not leaked, f"{path.name} contains hidden tests: {leaked[:3]}"
        for marker in ("# HIDDEN", "BEGIN TEST CONFIG", "BEGIN SOLUTION", "END SOLUTION", "# SOLUTION",
                       "BEGIN PROMPT", "\\\"hidden\\\": true", "'hidden': True"):
            assert marker not in text, f"{path.name} contains {marker!r}"


def test_book_solutions_leave_out_the_student_prompt():
    """A find-the-bug solution shows the fix, not the fix followed by the buggy prompt line."""
    code = ("def f(x):\n    # BEGIN SOLUTION\n    y = x + 1\n    # END SOLUTION\n"
            '    """ # BEGIN PROMPT\n    y = x - 1  # the bug\n    """ # END PROMPT\n    return y')
    assert exbuild._strip_solution_markers(code) == "def f(x):\n    y = x + 1\n    return y"


def test_book_pages_in_sync():
    assert sorted(p.stem for p in (EXERCISES / "book").glob("*.md")) == sorted(exbuild.ASSIGNMENTS)
    stale = exbuild.write_book_pages(NAMES, check_only=True)
    assert not stale, f"run `python exercises/build.py --book`: stale {stale}"


# ---------------------------------------------------------------------------------------
# grading
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_solution_runs_cleanly_and_scores_full_marks(graded, name):
    scores = exbuild.question_scores(_result(graded, name, "solution"))
    assert scores, f"{name}: no autograded questions in the results"
    assert {q: s for q, s in scores.items() if s[0] != s[1]} == {}


@pytest.mark.parametrize("name", NAMES)
def test_blank_student_notebook_scores_zero(graded, name):
    scores = exbuild.question_scores(_result(graded, name, "blank"))
    assert scores and {q: s for q, s in scores.items() if s[0] != 0} == {}


@pytest.mark.parametrize("name", NAMES)
def test_wrong_answers_are_caught_by_hidden_tests(built, graded, name):
    cases = zip_tests(exbuild.autograder_zip(built[name]))
    problems = []
    for q, wrongs in wrong_answers(name).items():
        for r, (pitfall, _code) in enumerate(wrongs):
            results = _result(graded, name, f"wrong{r}")
            got, full = exbuild.question_scores(results)[q]
            failed = failed_cases(results, q)
            if got >= full:
                problems.append(f"{q} round {r} ({pitfall}): full marks {got}/{full}")
            elif not any(cases[q][i]["hidden"] for i in failed or []):
                problems.append(f"{q} round {r} ({pitfall}): no hidden test failed (failed cases {failed})")
    assert not problems, f"{name}:\n" + "\n".join(problems)
