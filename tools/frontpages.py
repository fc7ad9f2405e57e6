"""The lists on the book's front pages, generated from what they describe.

book/index.md and book/preface.md call these functions in hidden code cells, so that
adding, moving or renaming a chapter, an assignment or an int4ref module changes the front
pages at the next build; tests/test_front_pages.py checks them.

* :func:`chapter_list`: the "Chapters" part of _toc.yml in sidebar order, each chapter's
  title (the first ``# `` heading of its source) linked to its page, with its line from
  :data:`SUMMARIES`; :func:`other_parts` names the pages of the other parts.
* :func:`assignments`: the assignment masters in exercises/ (``exercises/<name>.md``).
* :func:`module_table`: every public int4ref module, the first sentence of its docstring,
  and the chapters whose source uses it.

The Markdown they return uses relative ``.md`` links. A notebook's Markdown output is
parsed as CommonMark by default, and Sphinx then leaves such links dead; the cells that
print it set ``mystnb: {markdown_format: myst}`` in their metadata, which makes the MyST
parser turn them into links to the pages (and fails a ``-W`` build when one is missing).

The two pages set ``mystnb: {execution_mode: force}`` in their front matter: their code
does not change when a chapter, an assignment or a module does, so a cached run would be
reused and show the old lists.
"""
from __future__ import annotations

import importlib
import os
import pkgutil
import re
from pathlib import Path, PurePosixPath

ROOT = Path(__file__).resolve().parents[1]  # the repository: tools/ sits in it
CHAPTERS_CAPTION = "Chapters"

#: One line per page of the "Chapters" part of _toc.yml: (short name, what the page does).
#: The short name labels the page in the module table. tests/test_front_pages.py fails
#: when a chapter has no line or a line has no chapter. No counts or measurements here:
#: they belong on the chapter pages, computed.
SUMMARIES = {
    "book/preface": (
        "How to use",
        "reading the chapters on this site, on Binder, on Colab or on your own machine, and "
        "where their code lives in `int4ref`"),
    "book/memory": (
        "Memory",
        "what a 4-bit format really costs per weight once its scales and zero-points are "
        "stored, what the KV cache and the activations add, and which GPU a model fits on"),
    "book/uniform-int4": (
        "Uniform INT4",
        "evenly spaced levels, a scale and sometimes a zero-point: rounding, the three "
        "symmetric conventions, clipping on purpose, and the error to expect"),
    "book/group-quant": (
        "Groups",
        "one scale per small group of weights instead of one per tensor or per row, measured "
        "on real pretrained weights, and what the scales cost in bits per weight"),
    "book/nf4": (
        "NF4",
        "QLoRA's NormalFloat table rebuilt from the quantiles of a normal distribution, and "
        "measured against INT4, FP4 and the Lloyd-Max quantizer"),
    "book/double-quant": (
        "Double quantization",
        "quantizing the scales themselves: what QLoRA's double quantization saves, what it "
        "costs, and two surprises in bitsandbytes' CPU path"),
    "book/packing": (
        "Packing",
        "two codes per byte or eight per 32-bit word: the bitsandbytes, GGML, GPTQ and AWQ "
        "orders side by side, and a real GGUF file written and read back"),
    "book/superblocks": (
        "Super-blocks and shared exponents",
        "the formats people download: Q4_K and IQ4_XS byte by byte, why llama.cpp searches for "
        "its scales, MXFP4 and NVFP4, and what a Q4_K_M file really holds"),
    "book/gptq-awq": (
        "GPTQ and AWQ",
        "choosing the codes with calibration data: GPTQ's error feedback and AWQ's "
        "activation-aware scaling, built from scratch on a layer of a real transformer"),
    "book/evaluate": (
        "Evaluation",
        "a whole transformer quantized with RTN, GPTQ and AWQ, scored by how close its "
        "embeddings stay to the original and by a retrieval task on real text"),
    "book/generative": (
        "A generative model",
        "SmolLM2-135M in numpy, verified against transformers: perplexity, KL divergence and "
        "top-1 agreement for RTN, GPTQ, AWQ and the GGUF formats, from 8 bits down to the cliff at 2"),
    "book/limits": (
        "Limits",
        "what weight-only quantization leaves alone: activations with outlier channels, the "
        "KV cache, and where 4-bit arithmetic exists in hardware"),
    "book/gpu-kernels": (
        "GPU kernels",
        "CUDA kernels that quantize, dequantize and multiply while dequantizing, checked "
        "bit for bit against numpy, and the memory-bandwidth limit they run into"),
    "book/explorers": (
        "Explorers",
        "interactive instruments over `int4ref`: change a format, a group size or a bit "
        "layout and watch the codes, the errors and the bytes follow"),
}


# --- _toc.yml and the page sources ------------------------------------------------------

def toc_parts(root: Path = ROOT) -> list[tuple[str, list[str]]]:
    """(caption, [file, ...]) for each part of _toc.yml, in order; files as written there
    (repo-relative, without ``.md``, e.g. ``book/nf4``). The root page is in no part."""
    import yaml

    toc = yaml.safe_load((root / "_toc.yml").read_text(encoding="utf-8")) or {}
    parts = toc.get("parts")
    if not isinstance(parts, list) or not parts:
        raise ValueError(f"{root / '_toc.yml'}: expected a jb-book toc with `parts:`")
    out = []
    for part in parts:
        caption = part.get("caption")
        files = [re.sub(r"\.md$", "", str(c.get("file") or "")) for c in part.get("chapters") or []]
        if not caption or not files or not all(files):
            raise ValueError(f"{root / '_toc.yml'}: every part needs a caption and chapters with a `file:`")
        out.append((caption, files))
    return out


def toc_chapters(root: Path = ROOT) -> list[str]:
    """The files of the "Chapters" part of _toc.yml, in sidebar order."""
    for caption, files in toc_parts(root):
        if caption == CHAPTERS_CAPTION:
            return files
    raise ValueError(f"{root / '_toc.yml'}: no part with caption {CHAPTERS_CAPTION!r}")


def source_of(file: str, root: Path = ROOT) -> Path:
    """The source of a toc entry (``book/nf4`` -> ``book/nf4.md``)."""
    path = root / f"{file}.md"
    if not path.is_file():
        raise FileNotFoundError(f"_toc.yml lists {file!r}, but there is no {file}.md")
    return path


def _body_lines(text: str):
    """Lines of a MyST page outside its front matter and outside fenced blocks."""
    lines = text.splitlines()
    if lines and lines[0].strip() == "---":
        end = next((i for i, line in enumerate(lines[1:], 1) if line.strip() == "---"), None)
        lines = lines[end + 1:] if end is not None else lines
    fence = None
    for line in lines:
        stripped = line.lstrip()
        m = re.match(r"(`{3,}|~{3,})", stripped)
        if fence is None and m:
            fence = m.group(1)
        elif fence is not None and stripped.startswith(fence) and not stripped[len(fence):].strip():
            fence = None
        elif fence is None:
            yield line


def title_of(file: str, root: Path = ROOT) -> str:
    """The first ``# `` heading of a page's source, outside code."""
    path = source_of(file, root)
    for line in _body_lines(path.read_text(encoding="utf-8")):
        if line.startswith("# "):
            return line[2:].strip()
    raise ValueError(f"{path}: no `# ` title heading")


def _link(file: str, text: str, page: str) -> str:
    """A Markdown link to toc entry ``file`` from the page ``page`` (both toc-style)."""
    target = os.path.relpath(f"{file}.md", str(PurePosixPath(page).parent)).replace(os.sep, "/")
    text = text.replace("[", r"\[").replace("]", r"\]")
    return f"[{text}]({target})"


def chapter_list(page: str = "book/index", root: Path = ROOT) -> str:
    """A Markdown bullet list of the "Chapters" part of _toc.yml, in sidebar order: each
    title linked (relative to ``page``) and followed by its line from SUMMARIES."""
    files = toc_chapters(root)
    missing = [f for f in files if f not in SUMMARIES]
    if missing:
        raise KeyError(f"no SUMMARIES line in tools/frontpages.py for {missing}")
    return "\n".join(
        f"- **{_link(f, title_of(f, root), page)}**: {SUMMARIES[f][1]}." for f in files
    ) + "\n"


def other_parts(page: str = "book/index", root: Path = ROOT) -> str:
    """One Markdown paragraph per part of _toc.yml after "Chapters": the caption, then its
    pages as links. A title that repeats the caption (``Exercises: NF4``) loses it."""
    lines = []
    for caption, files in toc_parts(root):
        if caption == CHAPTERS_CAPTION:
            continue
        links = []
        for f in files:
            title = title_of(f, root)
            if title.startswith(f"{caption}: "):
                title = title[len(caption) + 2:]
            links.append(_link(f, title, page))
        lines.append(f"**{caption}:** " + ", ".join(links) + ".")
    return "\n\n".join(lines) + "\n"


# --- exercises --------------------------------------------------------------------------

def assignments(root: Path = ROOT) -> list[str]:
    """The assignment masters: exercises/<name>.md, README.md excepted, sorted by name."""
    return sorted(p.stem for p in (root / "exercises").glob("*.md") if p.name != "README.md")


NUMBER_WORDS = ["no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
                "ten", "eleven", "twelve"]


def in_words(n: int) -> str:
    """``7`` -> ``"seven"`` up to twelve, digits above (book style)."""
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"expected a count >= 0, got {n!r}")
    return NUMBER_WORDS[n] if n < len(NUMBER_WORDS) else str(n)


# --- int4ref modules --------------------------------------------------------------------

def public_modules() -> list[str]:
    """Every importable module of int4ref whose dotted name has no part starting with "_",
    sorted (the package itself excluded)."""
    import int4ref

    names = []
    for info in pkgutil.walk_packages(int4ref.__path__, "int4ref."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            names.append(info.name)
    return sorted(names)


#: The package's tiers, in the order the module tables list them: the subpackage (None for
#: the top level) and what a module of the tier needs beyond numpy and scipy.
TIERS = (
    (None, "core: numpy, scipy"),
    ("interop", "interop: the peer libraries only to compare with"),
    ("gpu", "gpu: CuPy and a CUDA GPU (or the CPU emulator)"),
    ("model", "model: tokenizers, gguf, the weights' packages"),
    ("explore", "book support: matplotlib, ipywidgets"),
    ("bench", "benchmarks: the peers they time"),
)


def tier_of(module: str) -> str:
    """The tier (its description in :data:`TIERS`) of an int4ref module."""
    sub = module.split(".")[1] if module.count(".") else None
    for name, description in TIERS:
        if name == sub:
            return description
    return TIERS[0][1]


def by_tier(modules: list[str]) -> list[str]:
    """``modules`` in the tables' order: by tier (:data:`TIERS`), then by name."""
    order = [d for _, d in TIERS]
    return sorted(modules, key=lambda m: (order.index(tier_of(m)), m))


def _rst_to_md(text: str) -> str:
    text = re.sub(r":[a-z]+:`~?(?:[\w.]+\.)?([^`<]+?)`", r"`\1`", text)  # :class:`~a.B` -> `B`
    return text.replace("``", "`")


def first_sentence(module: str) -> str:
    """The first sentence of a module's docstring, as Markdown on one line."""
    doc = (importlib.import_module(module).__doc__ or "").strip()
    if not doc:
        raise ValueError(f"{module} has no docstring")
    para = " ".join(doc.split("\n\n")[0].split())
    m = re.search(r"(?<!\be\.g)(?<!\bi\.e)(?<!\bet al)\.(\s|$)", para)
    sentence = para[: m.start() + 1] if m else para
    return _rst_to_md(sentence).replace("|", r"\|")


_IMPORT = re.compile(r"^\s*from\s+int4ref((?:\.\w+)*)\s+import\s+([^#\n]+)", re.M)
_ATTRIBUTE = re.compile(r"\bint4ref((?:\.\w+)+)")


def _resolve(dotted: str, modules: set[str]) -> str | None:
    """``int4ref.<dotted>`` -> the public module it names or a name of it comes from."""
    import int4ref

    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):  # the longest module prefix: interop.gguf.foo -> interop.gguf
        name = "int4ref." + ".".join(parts[:i])
        if name in modules:
            return name
    obj = getattr(int4ref, parts[0], None)  # a re-export: int4ref.quantize -> int4ref.quant
    home = getattr(obj, "__module__", None)
    return home if home in modules else None


def modules_used(file: str, root: Path = ROOT) -> set[str]:
    """The public int4ref modules a page's source names (``int4ref.x.y``, ``from int4ref
    import x``, ``from int4ref.x import y``), re-exports traced to their module."""
    modules = set(public_modules())
    text = source_of(file, root).read_text(encoding="utf-8")
    used = set()
    for m in _IMPORT.finditer(text):
        package = m.group(1).lstrip(".")
        for item in m.group(2).replace("(", " ").replace(")", " ").split(","):
            name = item.split(" as ")[0].strip()
            if re.fullmatch(r"\w+", name):
                found = _resolve(f"{package}.{name}" if package else name, modules)
                if found:
                    used.add(found)
    for m in _ATTRIBUTE.finditer(_IMPORT.sub("", text)):  # `from int4ref.x import y` done above
        found = _resolve(m.group(1).lstrip("."), modules)
        if found:
            used.add(found)
    return used


def module_table(page: str = "book/preface", root: Path = ROOT) -> str:
    """A Markdown table: every public int4ref module, the first sentence of its docstring,
    and the chapters (short names from SUMMARIES, in sidebar order) whose source uses it
    (for a package: it or a module in it); ``-`` where no chapter does."""
    chapters = [f for f in toc_chapters(root) if f != page]
    uses = {f: modules_used(f, root) for f in chapters}
    rows = ["| module | tier | what it is | used in |", "| --- | --- | --- | --- |"]
    for module in by_tier(public_modules()):
        where = ", ".join(_link(f, SUMMARIES[f][0], page) for f in chapters  # a package: or a module in it
                          if any(u == module or u.startswith(f"{module}.") for u in uses[f]))
        rows.append(f"| `{module}` | {tier_of(module).split(':')[0]} | {first_sentence(module)} | {where or '-'} |")
    return "\n".join(rows) + "\n"


# --- README.md ----------------------------------------------------------------------------

README_START = "<!-- module table: generated by `python tools/frontpages.py readme`; do not edit -->"
README_END = "<!-- end of module table -->"


def readme_module_table() -> str:
    """README.md's module table: every public int4ref module and the first sentence of its
    docstring (the same source as the preface's table, without the chapter links)."""
    rows = ["| module | tier | what it is |", "| --- | --- | --- |"]
    rows += [f"| `{module}` | {tier_of(module).split(':')[0]} | {first_sentence(module)} |"
             for module in by_tier(public_modules())]
    return "\n".join(rows) + "\n"


def readme_with_table(text: str) -> str:
    """``text`` (README.md) with the part between the two markers replaced by the table."""
    if text.count(README_START) != 1 or text.count(README_END) != 1:
        raise ValueError(f"README.md must hold the markers {README_START!r} and {README_END!r} once each")
    head, rest = text.split(README_START)
    _, tail = rest.split(README_END)
    return f"{head}{README_START}\n{readme_module_table()}{README_END}{tail}"


if __name__ == "__main__":
    import sys

    if sys.argv[1:] != ["readme"]:
        sys.exit("usage: python tools/frontpages.py readme   (rewrites README.md's module table)")
    path = ROOT / "README.md"
    path.write_text(readme_with_table(path.read_text(encoding="utf-8")), encoding="utf-8")
    print(f"wrote the module table of {path}")
