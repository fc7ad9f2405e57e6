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
* every autograded question declares what it returns (``returns:`` in its config), and
  its hidden tests check it: for each kind in ``exbuild.MUTANT_KINDS`` the solution is
  planted with its results given a wrong dtype (float32 -> float64, uint8 -> int64, a
  uint8 zero-point as float32, an int as a float, a float as np.float32), or a wrong shape
  or Python type (a numpy scalar or a number as a one-element array, a 2-D array flattened,
  a 1-D one as a row, a shape tuple as a list), same values; each such mutant must lose
  points on a hidden test;
* every public test case carries points (a question's ``points:`` list gives none a 0);
* no student file contains solution code, a hidden test, or a hidden-test marker;
* the book pages in exercises/book/ are in sync with the masters.

Needs otter-grader (``pip install -e ".[exercises]"``); skipped without it. Runtime: about
ten minutes for the eleven assignments on 2 cores shared with other work (every otter run
starts a kernel; they run 2 at a time). The course-edition test also needs the book extra
(myst-parser, sphinx-exercise).
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

    Returns {(name, "solution" | "blank" | "wrong<i>" | "type-<kind>"): results.json, or the
    exception}.
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
        returns = exbuild.question_returns(name)
        sol_cells = exbuild.answer_cells(solution)
        for kind in exbuild.MUTANT_KINDS:  # type mutants: the solution, its results retyped
            answers = {q: exbuild.type_mutant_source(solution.cells[sol_cells[q]].source, r, kind)
                       for q, r in returns.items() if any(exbuild.mutant_applies(d, kind) for d in r.values())}
            path = work / f"{name}-type-{kind}" / f"{name}.ipynb"
            path.parent.mkdir()
            nbformat.write(exbuild.make_submission(student, solution, answers), path)
            subs[f"type-{kind}"] = path
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


def zip_case_points(zip_path: Path) -> dict[str, list[tuple[bool, float]]]:
    """question -> [(hidden, points)] for each of its test cases, in order, as otter scores them:
    a list of ``points:`` gives each case its own value, a single number is split evenly."""
    out = {}
    with zipfile.ZipFile(zip_path) as z:
        for item in z.namelist():
            if item.startswith("tests/") and item.endswith(".py"):
                env: dict = {}
                exec(z.read(item).decode(), env)
                test = env["test"]
                cases = [c for s in test["suites"] for c in s["cases"]]
                points = test.get("points")
                if isinstance(points, list):
                    values = [float(p) for p in points]
                else:
                    values = [float(1 if points is None else points) / len(cases)] * len(cases)
                out[test["name"]] = [(bool(c["hidden"]), v) for c, v in zip(cases, values)]
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
def test_public_tests_carry_points(built, name):
    """Every public test case is worth points (issue 14): an answer of the wrong type, which
    the public tests check, loses points there too, not only on the hidden tests."""
    zero = [f"{q} public case {i}" for q, cases in zip_case_points(exbuild.autograder_zip(built[name])).items()
            for i, (hidden, points) in enumerate(cases) if not hidden and points <= 0]
    assert not zero, f"{name}: public test cases worth no points: {zero}"


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


def _not_caught(results, cases, q) -> str | None:
    """Why question ``q`` let a variant through (full marks, or no hidden test failed), else None."""
    got, full = exbuild.question_scores(results)[q]
    failed = failed_cases(results, q)
    if got >= full:
        return f"full marks {got}/{full}"
    if not any(cases[q][i]["hidden"] for i in failed or []):
        return f"no hidden test failed (failed cases {failed})"
    return None


@pytest.mark.parametrize("name", NAMES)
def test_wrong_answers_are_caught_by_hidden_tests(built, graded, name):
    cases = zip_tests(exbuild.autograder_zip(built[name]))
    problems = []
    for q, wrongs in wrong_answers(name).items():
        for r, (pitfall, _code) in enumerate(wrongs):
            why = _not_caught(_result(graded, name, f"wrong{r}"), cases, q)
            if why:
                problems.append(f"{q} round {r} ({pitfall}): {why}")
    assert not problems, f"{name}:\n" + "\n".join(problems)


@pytest.mark.parametrize("name", NAMES)
def test_questions_declare_what_they_return(name):
    """Each autograded question's config says what it asks for (``returns:``: name ->
    type), and its solution cell defines those names."""
    returns = exbuild.question_returns(name)  # raises on a missing or unknown declaration
    nb = exbuild.read_master(name)
    solutions = {}
    q = None
    for cell in nb.cells:
        kind = exbuild._raw_kind(cell)
        if kind == ("BEGIN", "QUESTION"):
            q = exbuild._question_config(cell)["name"]
        elif cell.cell_type == "code" and q in returns and "SOLUTION" in cell.source:
            solutions[q] = solutions.get(q, "") + cell.source
    for q, r in returns.items():
        for n in r:
            assert re.search(rf"^(def {n}\(|{n}\s*=)", solutions.get(q, ""), re.M), f"{name} {q}: {n} is not defined"


def test_type_mutants_change_what_they_should():
    """The mutants themselves: same values, another dtype / shape / type."""
    import numpy as np

    env: dict = {}
    exec(exbuild.MUTANT_HELPER, env)
    mutate = env["_int4book_mutate"]
    v = (np.arange(6, dtype=np.uint8).reshape(2, 3), np.float32(0.5), np.uint8(3))
    d = "(uint8[], float32, uint8)"
    c, s, z = mutate(v, d, "dtype")
    assert (c.dtype, type(s), type(z)) == (np.int64, np.float64, np.float32) and np.array_equal(c, v[0])
    c, s, z = mutate(v, d, "shape")
    assert (c.shape, s.shape, z.shape) == ((6,), (1,), (1,)) and s[0] == v[1]
    assert mutate(7, "int", "dtype") == 7 and type(mutate(7, "int", "dtype")) is float
    assert type(mutate(0.25, "float", "dtype")) is np.float32 and mutate((1, 2), "tuple", "shape") == [1, 2]
    assert mutate(np.zeros(3, np.float32), "float32[]", "shape").shape == (1, 3)
    assert not exbuild.mutant_applies("number", "dtype") and exbuild.mutant_applies("number", "shape")
    with pytest.raises(exbuild.BuildError):
        exbuild.parse_returns("(uint8[], float33)")


@pytest.mark.parametrize("name", NAMES)
def test_hidden_tests_check_what_each_question_returns(built, graded, name):
    """A question whose hidden tests let the solution through with a wrong dtype, shape
    or Python type of what it returns (same values) fails here."""
    cases = zip_tests(exbuild.autograder_zip(built[name]))
    problems = []
    for kind in exbuild.MUTANT_KINDS:
        results = _result(graded, name, f"type-{kind}")
        for q, r in exbuild.question_returns(name).items():
            if not any(exbuild.mutant_applies(d, kind) for d in r.values()):
                continue
            why = _not_caught(results, cases, q)
            if why:
                problems.append(f"{q} ({kind} of {r}): {why}")
    assert not problems, f"{name}: hidden tests do not check what the question returns:\n" + "\n".join(problems)


# ---------------------------------------------------------------------------------------
# the course edition (INT4BOOK_HIDE_SOLUTIONS=1)
# ---------------------------------------------------------------------------------------

def _build_exercise_pages(out: Path, hide: bool) -> dict[str, str]:
    """Build exercises/book/*.md alone with Sphinx, the extensions the book uses for them
    (myst-parser, sphinx-exercise, tools/int4book_sphinx.py, whose config hook reads
    INT4BOOK_HIDE_SOLUTIONS), and return {name: the page's text, tags stripped}."""
    import html as _html
    import shutil
    import subprocess
    import sys

    src = out / "src"
    (src / "exercises" / "book").mkdir(parents=True)
    for p in (EXERCISES / "book").glob("*.md"):
        shutil.copy(p, src / "exercises" / "book" / p.name)
    (src / "index.md").write_text("# Exercises\n\n```{toctree}\n:glob:\nexercises/book/*\n```\n", encoding="utf-8")
    (src / "conf.py").write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(ROOT / 'tools')!r})\n"
        "extensions = ['myst_parser', 'sphinx_exercise', 'int4book_sphinx']\n"
        "myst_enable_extensions = ['colon_fence', 'dollarmath']\n"
        "suppress_warnings = ['myst.xref_missing', 'ref.doc']\n",
        encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "INT4BOOK_HIDE_SOLUTIONS"}
    if hide:
        env["INT4BOOK_HIDE_SOLUTIONS"] = "1"
    proc = subprocess.run([sys.executable, "-m", "sphinx", "-q", "-b", "html", str(src), str(out / "html")],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    pages = {}
    for p in (out / "html" / "exercises" / "book").glob("*.html"):
        body = p.read_text(encoding="utf-8")
        body = re.sub(r"<script.*?</script>", "", body, flags=re.S)
        pages[p.stem] = " ".join(_html.unescape(re.sub(r"<[^>]+>", "", body)).split())
    return pages


def test_course_edition_has_no_solution_text(tmp_path):
    """INT4BOOK_HIDE_SOLUTIONS=1: no solution code or written answer in any exercise page.

    The same pages built without it contain every snippet looked for (the search has teeth)."""
    pytest.importorskip("sphinx_exercise", reason="the book extra (sphinx-exercise) is not installed")
    pytest.importorskip("myst_parser", reason="the book extra (myst-parser) is not installed")
    full = _build_exercise_pages(tmp_path / "full", hide=False)
    course = _build_exercise_pages(tmp_path / "course", hide=True)
    assert sorted(full) == sorted(course) == sorted(exbuild.ASSIGNMENTS)
    for name in exbuild.ASSIGNMENTS:
        code = [" ".join(c.split()) for c in _solution_snippets(name)]
        # the written answers and the rubrics' example answers, as rendered (no markup)
        master = " ".join((EXERCISES / f"{name}.md").read_text(encoding="utf-8").split())
        written = [re.sub(r"[`*]", "", m).strip() for m in
                   re.findall(r'\*\*Answer\.\*\* ([^`*$]{30,60})|Example: "([^`*$"]{25,50})', master) for m in m if m]
        assert code and len(written) >= 3, (name, written)
        snippets = code + written
        missing = [s for s in snippets if s not in full[name]]
        assert not missing, f"{name}: the full edition lacks {missing[:3]} (the search would have no teeth)"
        leaked = [s for s in snippets if s in course[name]]
        assert not leaked, f"{name}: the course edition shows solution text {leaked[:3]}"
        assert "Solution to" not in course[name] and "Solution to" in full[name]
