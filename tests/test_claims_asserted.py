"""Every value that the claims appendix (book/claims.md) pastes from a chapter is guarded.

A row of the claims table states a verdict ("Wrong", "Almost", "Only for ...") that rests
on numbers glued from the chapters with {glue:text}`chapter.md::name:fmt`. If the data
or the code behind such a number changed, the verdict could silently become false. So the
chapter cell that glues each of those names must hold an ``assert`` that checks what the
verdict says, and that assert must be about the glued value: it has to use a variable of
the glue call's value expression, or a variable computed from one in the same cell. (An
assert about an ingredient of the value, such as a unit constant, does not count.)

The check is static (the chapters are parsed, not executed): it shows that a guard is
there, not that it guards the right thing. Executing the chapters shows the guards hold.
"""
import ast
import builtins
import re
from pathlib import Path

import pytest

BOOK = Path(__file__).resolve().parents[1] / "book"

# {glue:text}`memory.md::c7_at4:.2f` -> ("memory.md", "c7_at4")
CLAIM_REF = re.compile(r"\{glue:text\}`([\w.-]+\.md)::([^`:]+)(?::[^`]*)?`")
CODE_CELL = re.compile(r"^```\{code-cell\}[^\n]*\n(.*?)^```[ \t]*$", re.S | re.M)

# Rows whose chapter has no assert yet in the cell that glues the value. Each entry is a
# known gap, reported to the owner of that chapter; once the assert is there, the strict
# xfail turns into a failure and the entry must be removed.
KNOWN_MISSING: set[tuple[str, str]] = set()


def claim_refs(text):
    refs = sorted(set(CLAIM_REF.findall(text)))
    if not refs:
        raise ValueError("no {glue:text}`chapter.md::name` reference found")
    return refs


def code_cells(markdown):
    """The code cells of a MyST notebook as parsed Python modules, in order."""
    cells = []
    for match in CODE_CELL.finditer(markdown):
        lines = match.group(1).splitlines()
        while lines and lines[0].startswith(":"):          # cell options such as :tags:
            lines.pop(0)
        # IPython magics and shell escapes are not Python; keep the line count
        src = "\n".join("pass" if line.lstrip().startswith(("%", "!")) else line for line in lines)
        cells.append(ast.parse(src))
    return cells


def _names(node):
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _glue_key_pattern(arg):
    """The glue key as a regular expression (an f-string's fields match any text) and its
    number of literal characters, or None for a key that is not written out."""
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return re.compile(re.escape(arg.value) + r"\Z"), len(arg.value)
    if isinstance(arg, ast.JoinedStr):
        parts = [re.escape(v.value) if isinstance(v, ast.Constant) else ".+" for v in arg.values]
        literal = sum(len(v.value) for v in arg.values if isinstance(v, ast.Constant))
        return re.compile("".join(parts) + r"\Z"), literal
    return None


def find_glue(cells, name):
    """(cell, glue call) that glues ``name``; the most specific key wins, so that
    ``glue(f"ent_gauss_{fmt}", ...)`` and not ``glue(f"ent_{fmt}", ...)`` glues ent_gauss_nf4."""
    hits = []
    for cell in cells:
        for node in ast.walk(cell):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "glue" and node.args:
                key = _glue_key_pattern(node.args[0])
                if key and key[0].match(name):
                    hits.append((key[1], cell, node))
    if not hits:
        raise LookupError(f"no glue call for {name!r}")
    hits.sort(key=lambda h: -h[0])
    if len(hits) > 1 and hits[0][0] == hits[1][0]:
        raise LookupError(f"{name!r} is glued by more than one call")
    return hits[0][1], hits[0][2]


def guard_problem(cells, name):
    """None if the glue of ``name`` is guarded by an assert in its cell, else why not."""
    cell, call = find_glue(cells, name)
    asserts = [n for n in ast.walk(cell) if isinstance(n, ast.Assert)]
    if not asserts:
        return f"the cell that glues {name!r} has no assert"
    if len(call.args) < 2:
        return f"glue({name!r}) has no value"
    # names that say nothing about the value: builtins, imports, functions
    ignore = set(dir(builtins))
    for tree in cells:
        for n in ast.walk(tree):
            if isinstance(n, (ast.Import, ast.ImportFrom)):
                ignore |= {(a.asname or a.name).split(".")[0] for a in n.names}
            elif isinstance(n, (ast.FunctionDef, ast.ClassDef)):
                ignore.add(n.name)
    # within the cell: which names each name was computed from (assignments, loop targets);
    # a loop variable stands for the elements of what it iterates over
    deps, loops = {}, {}
    for n in ast.walk(cell):
        if isinstance(n, ast.Assign):
            pairs = [(t, n.value, deps) for t in n.targets]
        elif isinstance(n, (ast.AugAssign, ast.AnnAssign)) and n.value is not None:
            pairs = [(n.target, n.value, deps)]
        elif isinstance(n, (ast.For, ast.comprehension)):
            pairs = [(n.target, n.iter, deps), (n.target, n.iter, loops)]
        else:
            continue
        for target, value, graph in pairs:
            for t in _names(target):
                graph.setdefault(t, set()).update(_names(value))

    def closure(start, graph):
        seen, todo = set(start), list(start)
        while todo:
            for d in graph.get(todo.pop(), ()):
                if d not in seen:
                    seen.add(d)
                    todo.append(d)
        return seen - ignore

    value = closure(_names(call.args[1]), loops)
    checked = set().union(*(_names(a) for a in asserts)) - ignore
    if value & closure(checked, deps):
        return None
    return (f"no assert in the cell that glues {name!r} uses its value "
            f"(names {sorted(value)}) or what it is computed from")


CLAIMS_TEXT = (BOOK / "claims.md").read_text(encoding="utf-8")


def _params():
    for chapter, name in claim_refs(CLAIMS_TEXT):
        marks = [pytest.mark.xfail(strict=True, reason="known gap, reported to the chapter's owner")] \
            if (chapter, name) in KNOWN_MISSING else []
        yield pytest.param(chapter, name, id=f"{chapter}::{name}", marks=marks)


@pytest.mark.parametrize("chapter,name", list(_params()))
def test_claims_value_is_asserted(chapter, name):
    cells = code_cells((BOOK / chapter).read_text(encoding="utf-8"))
    problem = guard_problem(cells, name)
    assert problem is None, f"{chapter}: {problem} (book/claims.md pastes it into a verdict)"


def test_claims_page_references_chapters():
    refs = claim_refs(CLAIMS_TEXT)
    assert {chapter for chapter, _ in refs} >= {"memory.md", "nf4.md", "double-quant.md"}
    for chapter, _ in refs:
        assert (BOOK / chapter).is_file(), chapter


# The checker itself, on small chapters written here: it must be able to fail.

def _chapter(*cells):
    return "\n".join(f"```{{code-cell}} ipython3\n{c}\n```\n\nSome prose.\n" for c in cells)


def test_checker_accepts_guarded_value():
    cells = code_cells(_chapter("import numpy as np\nx = np.ones(3)",
                                "total = x.sum()\nglue('total', total)\nassert total > 2  # the text says so"))
    assert guard_problem(cells, "total") is None


def test_checker_rejects_cell_without_assert():
    cells = code_cells(_chapter("total = 3\nglue('total', total)", "assert total > 2"))
    assert "has no assert" in guard_problem(cells, "total")


def test_checker_rejects_assert_about_something_else():
    cells = code_cells(_chapter("import numpy as np\ntotal, other = 3, 4\nglue('total', total)\n"
                                "assert np.isfinite(other)"))
    assert "uses its value" in guard_problem(cells, "total")
    # nor does an assert about an ingredient that the value was computed from
    cells = code_cells(_chapter("GB = 1e9\nsize = 7e9 / GB\nglue('size', size)\nassert GB > 0"))
    assert "uses its value" in guard_problem(cells, "size")


def test_checker_follows_fstring_keys_and_derived_names():
    cells = code_cells(_chapter(":tags: [remove-input]\n\nrows = {'a': 1.0, 'b': 2.0}\n"
                                "for k, v in rows.items():\n    glue(f'val_{k}', v)\n"
                                "assert max(rows.values()) < 3",
                                "glue(f'other_{k}', 0)",
                                "w = 5\nglue('w_val', w)\ntwice = 2 * w\nassert twice > 1"))
    assert guard_problem(cells, "val_b") is None          # v comes from rows; the assert checks rows
    assert guard_problem(cells, "w_val") is None          # the assert checks a name computed from w
    with pytest.raises(LookupError):
        find_glue(cells, "missing")


def test_claim_refs_parses_formats():
    text = ("x {glue:text}`memory.md::c70_w4_Llama-2-70B:.2f` GB and {glue:text}`nf4.md::n_pos:d` and "
            "{glue:text}`a.md::b`")
    assert claim_refs(text) == [("a.md", "b"), ("memory.md", "c70_w4_Llama-2-70B"), ("nf4.md", "n_pos")]
    with pytest.raises(ValueError):
        claim_refs("no references")
