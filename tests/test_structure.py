"""The package's structure: its import graph has no cycle, nothing reaches into another
module's private parts, one thread pool, and ``import int4ref`` does no heavy work.

The rules the import tests enforce (read from the source with ``ast``, so every import
counts, at module level or inside a function, executed or not):

1. **No cycle.** Module A depends on module B when A imports B or a name from B. ``from P
   import x`` depends on ``P.x`` when that is a module, else on ``P``; the implicit
   initialisation of the parent packages of B is not counted (every submodule would
   otherwise form a cycle with the ``__init__`` that imports it), but an explicit import of
   a package (``from int4ref import quantize``) is. The graph of int4ref's modules must
   have no strongly connected component larger than one module, and no self-import.
2. **Private modules stay in their package.** A module is private when a part of its
   dotted name starts with ``_`` (``int4ref._checks``, ``int4ref._fast``): only modules of
   the package that contains it (that package's directory and below) import it. So
   ``int4ref._checks`` serves all of int4ref, and a private module of ``int4ref.gpu``
   would serve ``int4ref.gpu`` only.
3. **Private names stay in their module.** No module of int4ref imports a name starting
   with ``_`` from another module (``from .x import _y``) or reads one off an imported
   module (``x._y``); dunder names (``__version__``) are public. What is shared is
   promoted to a public name.
4. **Outside the package** (the book's pages ``book/*.md``, ``tools/``, the exercises),
   nothing imports a private module or name of int4ref, or mentions one (``int4ref._x``
   in prose, which readers copy). The tests under ``tests/`` are exempt: they test
   internals on purpose.
"""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "int4ref"


# --- reading the imports ---------------------------------------------------------------

def module_names(package_dir: Path) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is_package) for every .py file under ``package_dir``."""
    out = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        out[".".join(parts)] = (path, is_pkg)
    return out


def _absolute(module: str, is_pkg: bool, level: int, name: str | None) -> str:
    base = module.split(".")
    if not is_pkg:
        base = base[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def _private(part: str) -> bool:
    return part.startswith("_") and not (part.startswith("__") and part.endswith("__"))


def imports_of(tree: ast.AST, module: str, is_pkg: bool, modules, root: str = "int4ref"):
    """(target module, imported name or None, line) for every import of ``root`` in
    ``tree``, plus (module, attribute, line) for every ``alias._attr`` read off a module
    bound by an import."""
    found, aliases = [], {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name == root or a.name.startswith(root + "."):
                    found.append((a.name, None, node.lineno))
                    aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else root
        elif isinstance(node, ast.ImportFrom):
            target = _absolute(module, is_pkg, node.level, node.module) if node.level else node.module
            if not target or not (target == root or target.startswith(root + ".")):
                continue
            for a in node.names:
                sub = f"{target}.{a.name}"
                if sub in modules:  # a submodule
                    found.append((sub, None, node.lineno))
                    aliases[a.asname or a.name] = sub
                else:  # a name defined in (or re-exported by) target
                    found.append((target, a.name, node.lineno))
    for node in ast.walk(tree):  # x._y where x names an imported int4ref module
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            if _private(node.attr):
                found.append((aliases[node.value.id], node.attr, node.lineno))
    return found


def import_graph(package_dir: Path = PACKAGE):
    modules = module_names(package_dir)
    root = package_dir.name
    graph, edges = {m: set() for m in modules}, []
    for m, (path, is_pkg) in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for target, name, line in imports_of(tree, m, is_pkg, modules, root):
            edges.append((m, target, name, line))
            if target in modules and target != m or (target == m and name is None):
                graph[m].add(target)
    return modules, graph, edges


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module, or a module importing itself
    (Tarjan's algorithm)."""
    index, low, stack, on_stack, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph[v]:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def private_violations(package_dir: Path = PACKAGE) -> list[str]:
    """Rules 2 and 3 inside the package."""
    modules, _, edges = import_graph(package_dir)
    bad = []
    for src, target, name, line in edges:
        where = f"{modules[src][0].relative_to(package_dir.parent)}:{line}"
        if name is not None and _private(name) and target != src:
            bad.append(f"{where}: {src} uses the private name {name} of {target}")
        parts = target.split(".")
        for i, part in enumerate(parts):
            if _private(part):
                owner = ".".join(parts[:i])  # the package the private module belongs to
                if not (src == owner or src.startswith(owner + ".")):
                    bad.append(f"{where}: {src} imports {target}, private to {owner}")
                break
    return bad


_CODE_CELL = re.compile(r"^```\{code-cell\}[^\n]*\n(.*?)^```", re.S | re.M)
_PROSE_PRIVATE = re.compile(r"\bint4ref(?:\.\w+)*\.(_(?!_)\w*)")


def outside_violations(text: str, label: str, markdown: bool) -> list[str]:
    """Rule 4 for one file: the private int4ref modules and names its code imports or reads,
    and the ``int4ref.….__x`` it mentions anywhere."""
    bad = [f"{label}: mentions int4ref's private {m.group(0)}" for m in _PROSE_PRIVATE.finditer(text)]
    sources = [c for c in _CODE_CELL.findall(text)] if markdown else [text]
    for code in sources:
        code = "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in code.splitlines())
        try:
            tree = ast.parse(code)
        except SyntaxError:
            if markdown:
                continue  # a cell that is not plain Python (the prose check above still applies)
            raise
        for target, name, _line in imports_of(tree, "__outside__", False, _public_and_private_modules()):
            if any(_private(p) for p in target.split(".")) or (name and _private(name)):
                bad.append(f"{label}: imports {target}{'.' + name if name else ''}")
    return bad


def _public_and_private_modules():
    return module_names(PACKAGE)


def outside_files() -> list[Path]:
    files = sorted((ROOT / "book").glob("*.md")) + sorted((ROOT / "tools").glob("*.py"))
    files += sorted((ROOT / "exercises").rglob("*.md")) + sorted((ROOT / "exercises").rglob("*.py"))
    return [f for f in files if f.name != "README.md"]


# --- the rules ---------------------------------------------------------------------------

def test_the_package_has_no_import_cycle():
    _, graph, _ = import_graph()
    assert cycles(graph) == []


def test_the_numpy_core_does_not_import_the_gpu_package():
    _, graph, _ = import_graph()
    for core in ("int4ref.quant", "int4ref.formats", "int4ref.codebooks"):
        assert not any(t == "int4ref.gpu" or t.startswith("int4ref.gpu.") for t in graph[core]), core


# Which tier may import which (the subpackage after ``int4ref.``; None: the top-level core).
# The core and interop need numpy and scipy only; gpu adds CuPy; model the models' packages;
# explore matplotlib and ipywidgets; bench may time anything. dispatch's import of gpu is
# lazy, for CuPy arrays only (test_top_level_dispatch_sends_device_arrays_to_the_gpu_package).
TIER_MAY_IMPORT = {
    None: {None, "interop", "gpu"},
    "interop": {None, "interop"},
    "gpu": {None, "gpu"},
    "model": {None, "interop", "model"},
    "explore": {None, "interop", "model", "explore"},
    "bench": {None, "interop", "gpu", "model", "explore", "bench"},
}


def tier(module: str):
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in TIER_MAY_IMPORT) else None


def tier_violations(graph) -> list[str]:
    return [f"{src} ({tier(src) or 'core'}) imports {dst} ({tier(dst) or 'core'})"
            for src in sorted(graph) for dst in sorted(graph[src]) if tier(dst) not in TIER_MAY_IMPORT[tier(src)]]


def test_each_tier_imports_only_the_tiers_below_it():
    modules, graph, _ = import_graph()
    assert {tier(m) for m in modules} == set(TIER_MAY_IMPORT)  # every subpackage has its rule
    assert tier("int4ref.quant") is None and tier("int4ref.explore") == "explore"
    assert tier("int4ref.gpu.bench") == "gpu" and tier("int4ref.interop.gguf.q4") == "interop"
    assert tier_violations(graph) == []
    assert tier_violations({"int4ref.quant": {"int4ref.explore.viz"}, "int4ref.dispatch": {"int4ref.gpu.ops"}}) == [
        "int4ref.quant (core) imports int4ref.explore.viz (explore)"]  # the check can fail


def test_no_module_reaches_into_another_modules_private_parts():
    assert private_violations() == []


def test_book_tools_and_exercises_use_only_public_int4ref():
    files = outside_files()
    assert any(f.name == "gpu-kernels.md" for f in files) and any(f.parent.name == "tools" for f in files)
    bad = []
    for f in files:
        bad += outside_violations(f.read_text(encoding="utf-8"), str(f.relative_to(ROOT)), f.suffix == ".md")
    assert bad == []


def test_the_checks_catch_a_cycle_and_private_imports(tmp_path):
    """The rules above on a made-up package that breaks each of them: they can fail."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from . import a\n")
    (pkg / "a.py").write_text("from ._hidden import helper\n\ndef f():\n    from . import b\n")
    (pkg / "b.py").write_text("from .a import _secret\n")  # a -> b (in a function) -> a
    (pkg / "_hidden.py").write_text("helper = 1\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "_inner.py").write_text("")
    (pkg / "c.py").write_text("from .sub import _inner\nfrom . import a\nx = a._private\n")
    (pkg / "d.py").write_text("from pkg import a\n")
    _, graph, _ = import_graph(pkg)
    assert cycles(graph) == [["pkg.a", "pkg.b"]]
    bad = private_violations(pkg)
    assert any("pkg.b uses the private name _secret of pkg.a" in b for b in bad)
    assert any("pkg.c imports pkg.sub._inner, private to pkg.sub" in b for b in bad)
    assert any("pkg.c uses the private name _private of pkg.a" in b for b in bad)
    assert not any("pkg._hidden" in b for b in bad)  # private to pkg, used inside pkg: allowed
    assert not any(b.startswith("pkg/d.py") for b in bad)
    page = "Text `int4ref._fast`.\n\n```{code-cell} ipython3\n%matplotlib inline\nfrom int4ref.gpu import ops\n" \
           "import int4ref\nint4ref.formats._x\nops._y\n```\n"
    found = outside_violations(page, "p.md", True)
    assert found == ["p.md: mentions int4ref's private int4ref._fast",
                     "p.md: mentions int4ref's private int4ref.formats._x",
                     "p.md: imports int4ref.gpu.ops._y"]
    assert outside_violations("from int4ref import quantize\nimport int4ref.gpu\n", "t.py", False) == []


# --- one thread pool, one CPU count ------------------------------------------------------

# Files still carrying their own thread pool or CPU count, to be moved to int4ref.parallel.
PENDING: set[str] = set()


def test_one_thread_pool_and_one_cpu_count():
    """Every other module asks int4ref.parallel (pool, map_rows, cpu_count)."""
    pattern = re.compile(r"ThreadPoolExecutor\(|ProcessPoolExecutor\(|sched_getaffinity|os\.cpu_count|multiprocessing")
    users = {str(p.relative_to(ROOT)) for p in PACKAGE.rglob("*.py") if pattern.search(p.read_text(encoding="utf-8"))}
    assert users - PENDING == {"int4ref/parallel.py"}


def test_parallel_map_rows_covers_every_row_once():
    from int4ref import parallel

    assert parallel.cpu_count() >= 1 and 1 <= parallel.THREADS <= parallel.MAX_THREADS
    seen = []
    parallel.map_rows(lambda sl: seen.extend(range(sl.start, sl.stop)), 1000, 64, chunk_elements=64 * 7)
    assert sorted(seen) == list(range(1000))
    assert parallel.row_chunks(10, 3, 9) == [slice(0, 3), slice(3, 6), slice(6, 9), slice(9, 10)]


# --- import int4ref is light ---------------------------------------------------------------

def test_import_does_not_run_the_lloyd_max_iteration():
    code = ("import int4ref, sys\n"
            "from int4ref import codebooks\n"
            "info = codebooks.lloyd_max_gaussian.cache_info()\n"
            "print(info.hits + info.misses, 'int4ref.gpu' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.split() == ["0", "False"]  # no call; and the GPU package is not loaded either


def test_stored_lloyd_max_table_is_the_iteration_bit_for_bit():
    import numpy as np

    from int4ref import FORMATS, codebooks

    assert codebooks.LLOYD_MAX.dtype == np.float32
    assert np.array_equal(codebooks.LLOYD_MAX.view(np.uint32), codebooks.lloyd_max_table().view(np.uint32))
    assert FORMATS["lloyd_max"].table is codebooks.LLOYD_MAX


@pytest.mark.parametrize("name", ["quantize", "dequantize"])
def test_quant_rejects_gpu_arrays_and_points_at_the_dispatch(name):
    from int4ref import quant

    class FakeDeviceArray:
        __cuda_array_interface__ = {"shape": (4,), "typestr": "<f4", "data": (0, False), "version": 3}

    class GpuQuantizedTensor:  # the name the dispatch looks for
        pass

    arg = FakeDeviceArray() if name == "quantize" else GpuQuantizedTensor()
    with pytest.raises(TypeError, match=r"int4ref\.(de)?quantize or int4ref\.gpu\.(de)?quantize"):
        getattr(quant, name)(arg)


def test_top_level_dispatch_sends_device_arrays_to_the_gpu_package(monkeypatch):
    """int4ref.quantize / dequantize: CuPy-like input to int4ref.gpu (checked here without a
    GPU by standing in for int4ref.gpu's functions), numpy input to the reference."""
    import numpy as np

    import int4ref
    from int4ref import gpu

    class FakeDeviceArray:
        __cuda_array_interface__ = {"shape": (4,), "typestr": "<f4", "data": (0, False), "version": 3}

    calls = []
    monkeypatch.setattr(gpu, "quantize", lambda *a: calls.append(("quantize", a)) or "gpu-qt")
    monkeypatch.setattr(gpu, "dequantize", lambda *a: calls.append(("dequantize", a)) or "gpu-values")
    x = FakeDeviceArray()
    assert int4ref.quantize(x, "int4_sym", 32, np.float16, True) == "gpu-qt"
    assert calls == [("quantize", (x, "int4_sym", 32, np.float16, True))]
    qt = object.__new__(gpu.GpuQuantizedTensor)
    assert int4ref.dequantize(qt, np.float32) == "gpu-values" and calls[-1] == ("dequantize", (qt, np.float32))
    w = np.linspace(-1, 1, 64, dtype=np.float32)
    ref = int4ref.quant.quantize(w, "nf4", 16)
    got = int4ref.quantize(w, "nf4", 16)
    assert np.array_equal(got.codes, ref.codes)
    assert np.array_equal(int4ref.dequantize(got), int4ref.quant.dequantize(ref))
    assert len(calls) == 2
