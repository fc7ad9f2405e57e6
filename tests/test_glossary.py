"""The glossary defines every term a page links with {term}, and the terms the issue on
teaching names as ones the chapters rely on."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROLE = re.compile(r"\{term\}`([^`]+)`")


def glossary_terms(text: str) -> set[str]:
    body = text.split("```{glossary}", 1)[1].split("\n```", 1)[0]
    return {line.strip().lower() for line in body.splitlines()
            if line and not line[0].isspace() and not line.startswith(":")}


def term_target(role: str) -> str:
    """{term}`text <target>` links to target; {term}`target` to itself."""
    m = re.fullmatch(r"(?s).*<([^<>]+)>\s*", role)
    return (m.group(1) if m else role).strip().lower()


def used_terms() -> dict[str, set[str]]:
    pages = [*ROOT.glob("book/*.md"), *ROOT.glob("exercises/book/*.md")]
    return {p.relative_to(ROOT).as_posix(): {term_target(r) for r in ROLE.findall(p.read_text())} for p in pages}


def test_every_term_role_names_a_defined_term():
    defined = glossary_terms((ROOT / "book" / "glossary.md").read_text())
    missing = {page: sorted(t - defined) for page, t in used_terms().items() if t - defined}
    assert not missing, missing


def test_the_glossary_covers_what_the_chapters_rely_on():
    defined = glossary_terms((ROOT / "book" / "glossary.md").read_text())
    needed = {"lloyd-max quantizer", "kurtosis", "entropy", "iq4_nl", "hessian", "cholesky factorization",
              "optimal brain surgeon", "gemv", "gemm", "roofline", "warp", "prefill", "decode", "perplexity",
              "recall@1", "mrr", "bootstrap", "mcnemar test", "hadamard rotation", "smoothquant", "qlora", "nf4",
              "double quantization", "absmax", "zero-point", "q8_0", "w4a8", "w4a16",
              "super-block", "importance matrix", "iq4_xs", "q4_k_m", "mxfp4", "nvfp4", "e8m0", "e4m3",
              "kl divergence"}
    assert needed <= defined, sorted(needed - defined)


def test_the_checks_can_fail():
    text = "```{glossary}\n:sorted:\n\nalpha\n  the first.\n\nbeta\n  the second.\n```\n"
    assert glossary_terms(text) == {"alpha", "beta"}
    assert term_target("Alpha") == "alpha" and term_target("the first one <alpha>") == "alpha"
    used = {term_target(r) for r in ROLE.findall("see {term}`gamma` and {term}`x <beta>`")}
    assert used - {"alpha", "beta"} == {"gamma"}


def test_every_term_is_preceded_by_an_empty_line():
    """Sphinx's glossary needs a blank line before each term (a -W build fails otherwise)."""
    body = (ROOT / "book" / "glossary.md").read_text().split("```{glossary}", 1)[1].split("\n```", 1)[0]
    lines = body.splitlines()
    def is_term(line):
        return bool(line) and not line[0].isspace() and not line.startswith(":")

    glued = [line for prev, line in zip(lines, lines[1:])
             if is_term(line) and prev.strip() and not prev.startswith(":")]
    assert not glued, f"terms without an empty line before them: {glued}"
