"""Score a (quantized) MiniLM on real text nobody in this project wrote: the docstrings of
numpy, scipy and the Python standard library, all available offline.

**Task.** Each selected function gives a pair ``(summary, body)``: the summary line of its
docstring is the *query*, the rest of the docstring (the *body*) is the *document*. Every
query is embedded, every document is embedded, and the query should find its own document
by cosine similarity among all documents of the corpus: :func:`retrieval_scores` reports
recall@1 and the mean reciprocal rank (MRR). :func:`embedding_fidelity` compares the
embeddings of a quantized model with the float32 model's on the same texts (mean and
minimum cosine similarity).

**Selection** (:func:`candidates`, deterministic for given library versions):

1. For each module of :data:`MODULES` (a fixed, sorted list) the public names (no leading
   underscore) in ``dir(module)``, sorted; keep the routines (``inspect.isroutine``, or a
   numpy ufunc). The qualified name is ``module.name``. For ``sys``'s replaceable hooks
   (``excepthook``, ``displayhook``, ...) the original (``sys.__excepthook__``) is read, so
   that a Jupyter kernel, which installs its own, sees the same corpus as plain Python.
2. ``inspect.getdoc``; the summary is the first line, which must be followed by a blank line,
   have 3 to 30 words and not look like a call signature (``name(...)``, as numpy ufuncs and
   C functions start their docstrings); the body is everything after the blank line,
   whitespace-collapsed, and must have at least :data:`MIN_BODY_WORDS` (40) words.
3. Sort by qualified name and drop every entry whose summary or *truncated* body (the
   document, see below) was already seen (the same function re-exported under several
   names, or shared boilerplate such as scipy's ``Parameters ---------- A : (N, N)
   array_like ...``), so no two entries share a query or a document.
4. Split by a hash of the qualified name: ``sha256(name) % 8 == 0`` goes to the
   *calibration* split (GPTQ/AWQ calibration text), everything else to the *evaluation*
   split. The splits are disjoint by construction, and stay so whatever ``n`` is asked.
5. Within a split, entries are ordered by ``sha256(name)`` (a fixed pseudo-random order that
   mixes the libraries) and the first ``n`` are returned; ``seed=int`` instead shuffles the
   sorted split with ``numpy.random.default_rng(seed)``.

The document is the body truncated to its first :data:`BODY_WORDS` (50) words: MiniLM reads
at most 256 tokens anyway, and the sweep embeds the corpus once per quantized model on 2 CPU
cores. The corpus depends on the installed numpy, scipy and Python: record
:func:`library_versions` with any result.
"""
from __future__ import annotations

import hashlib
import importlib
import inspect
import platform
import re
import sys
import warnings
from functools import lru_cache

import numpy as np

#: Modules whose public functions are read, sorted. Standard-library modules only where
#: importing them has no side effects.
MODULES = tuple(sorted([
    "numpy", "numpy.fft", "numpy.linalg", "numpy.ma", "numpy.polynomial.polynomial", "numpy.random",
    "scipy.cluster.hierarchy", "scipy.fft", "scipy.integrate", "scipy.interpolate", "scipy.linalg",
    "scipy.ndimage", "scipy.optimize", "scipy.signal", "scipy.sparse", "scipy.sparse.csgraph",
    "scipy.sparse.linalg", "scipy.spatial", "scipy.special", "scipy.stats",
    "base64", "bisect", "calendar", "collections", "contextlib", "copy", "csv", "datetime", "difflib",
    "email.utils", "fnmatch", "functools", "glob", "gzip", "hashlib", "heapq", "html", "inspect",
    "ipaddress", "itertools", "json", "locale", "logging", "math", "operator", "os", "os.path",
    "pathlib", "pickle", "pkgutil", "platform", "pprint", "random", "re", "shlex", "shutil",
    "socket", "statistics", "string", "struct", "subprocess", "sys", "sysconfig", "tarfile",
    "tempfile", "textwrap", "threading", "time", "tokenize", "traceback", "types", "typing",
    "unicodedata", "urllib.parse", "uuid", "warnings", "zipfile", "zlib",
]))
MIN_BODY_WORDS = 40
BODY_WORDS = 50
#: ``sha256(name) % CALIB_MODULUS == 0``: the calibration split.
CALIB_MODULUS = 8

_SIGNATURE = re.compile(r"^[\w.]+\s*\(")


def library_versions() -> dict:
    """Versions the corpus depends on (numpy, scipy, Python) and the selection parameters."""
    import scipy

    return {"numpy": np.__version__, "scipy": scipy.__version__, "python": platform.python_version(),
            "modules": list(MODULES), "min_body_words": MIN_BODY_WORDS, "body_words": BODY_WORDS,
            "calib_modulus": CALIB_MODULUS}


def _hash(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big")


def _split_doc(doc: str | None):
    """``(summary, body)`` of a docstring, or None when it does not qualify."""
    if not doc:
        return None
    lines = doc.strip("\n").split("\n")
    if len(lines) < 3 or lines[1].strip():
        return None
    summary = " ".join(lines[0].split())
    if not 3 <= len(summary.split()) <= 30 or _SIGNATURE.match(summary):
        return None
    body = " ".join("\n".join(lines[2:]).split())
    if len(body.split()) < MIN_BODY_WORDS:
        return None
    return summary, body


@lru_cache(maxsize=1)
def candidates() -> tuple[tuple[str, str, str], ...]:
    """Every qualifying ``(qualified_name, summary, body)`` (body not truncated), sorted by
    name, deduplicated (steps 1-3 of the module docstring)."""
    found = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for mod_name in MODULES:
            try:
                mod = importlib.import_module(mod_name)
            except Exception:  # a module missing from this Python: the versions record it
                continue
            for attr in sorted(dir(mod)):
                if attr.startswith("_"):
                    continue
                try:
                    obj = getattr(mod, attr)
                    if mod_name == "sys" and hasattr(sys, f"__{attr}__"):
                        obj = getattr(sys, f"__{attr}__")  # the original hook, not e.g. Jupyter's excepthook
                except Exception:
                    continue
                if not (inspect.isroutine(obj) or isinstance(obj, np.ufunc)):
                    continue
                parts = _split_doc(inspect.getdoc(obj))
                if parts is not None:
                    found.append((f"{mod_name}.{attr}", *parts))
    found.sort()
    seen_s, seen_b, out = set(), set(), []
    for name, summary, body in found:
        doc = _truncate(body)  # many scipy bodies share their first words ("Parameters ---- A : ...")
        if summary in seen_s or doc in seen_b:
            continue
        seen_s.add(summary)
        seen_b.add(doc)
        out.append((name, summary, body))
    return tuple(out)


def _truncate(body: str) -> str:
    return " ".join(body.split()[:BODY_WORDS])


def docstring_corpus(n: int | None = 300, seed: int | None = None, *,
                     split: str = "eval") -> list[tuple[str, str, str]]:
    """``n`` entries ``(qualified_name, summary, body)`` of the ``split`` (``"eval"`` or
    ``"calib"``), body truncated to :data:`BODY_WORDS` words. ``n=None``: the whole split.
    Order: by ``sha256(name)``, or a ``default_rng(seed)`` shuffle of the sorted split. Asking
    for more than the split holds is an error."""
    if split not in ("eval", "calib"):
        raise ValueError(f"split must be 'eval' or 'calib', got {split!r}")
    want_calib = split == "calib"
    pool = [c for c in candidates() if (_hash(c[0]) % CALIB_MODULUS == 0) == want_calib]
    if seed is None:
        pool.sort(key=lambda c: (_hash(c[0]), c[0]))
    else:
        pool = [pool[i] for i in np.random.default_rng(seed).permutation(len(pool))]
    if n is None:
        n = len(pool)
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer or None, got {n!r}")
    if n > len(pool):
        raise ValueError(f"the {split} split holds {len(pool)} functions with these library versions; asked for {n}")
    return [(name, summary, _truncate(body)) for name, summary, body in pool[:n]]


def calibration_texts(n: int = 64) -> list[str]:
    """``summary + " " + body`` of the first ``n`` calibration-split entries: text for
    :meth:`int4ref.model.minilm.MiniLM.capture_linear_inputs`, disjoint from the evaluation split."""
    return [f"{s} {b}" for _, s, b in docstring_corpus(n, split="calib")]


# --------------------------------------------------------------------- metrics
def retrieval_metrics(queries: np.ndarray, documents: np.ndarray) -> dict:
    """Recall@1 and MRR when query ``i`` should retrieve document ``i``. Rows are embeddings
    (normalised here, so the score is cosine similarity). The rank of the right document is
    1 + the number of documents scoring strictly higher (ties resolved in its favour); see
    :func:`retrieval_ranks`."""
    return rank_metrics(retrieval_ranks(queries, documents))


def rank_metrics(ranks) -> dict:
    """Recall@1 and MRR from the rank of the right document for each query."""
    ranks = np.asarray(ranks)
    return {"recall_at_1": float(np.mean(ranks == 1)), "mrr": float(np.mean(1.0 / ranks))}


def retrieval_ranks(queries: np.ndarray, documents: np.ndarray) -> np.ndarray:
    """int64 ``(n,)``: the rank of document ``i`` among all documents for query ``i`` (1 =
    retrieved first), by cosine similarity, ties resolved in its favour. Keep the ranks to
    compare two models query by query (paired), not only by their averages."""
    q = np.asarray(queries, dtype=np.float64)
    d = np.asarray(documents, dtype=np.float64)
    if q.ndim != 2 or q.shape != d.shape:
        raise ValueError(f"queries and documents must be matching (n, dim) arrays, got {q.shape} and {d.shape}")
    q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    d = d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)
    sim = q @ d.T
    right = np.diag(sim)
    return 1 + (sim > right[:, None]).sum(axis=1)


def retrieval_scores(model, corpus, batch_size: int = 32) -> dict:
    """Recall@1 and MRR of ``model`` (anything with ``embed(list_of_str)``) retrieving each
    body of ``corpus`` (from :func:`docstring_corpus`) from its summary."""
    summaries = [s for _, s, _ in corpus]
    bodies = [b for _, _, b in corpus]
    return retrieval_metrics(model.embed(summaries, batch_size=batch_size),
                             model.embed(bodies, batch_size=batch_size))


def fidelity_metrics(ref: np.ndarray, emb: np.ndarray) -> dict:
    """Mean and min row-wise cosine similarity between two ``(n, dim)`` embedding arrays."""
    a = np.asarray(ref, dtype=np.float64)
    b = np.asarray(emb, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"embeddings must be matching (n, dim) arrays, got {a.shape} and {b.shape}")
    cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-24)
    return {"mean_cos": float(cos.mean()), "min_cos": float(cos.min())}


def embedding_fidelity(model_ref, model_q, texts, batch_size: int = 32) -> dict:
    """Mean and min cosine similarity of ``model_q``'s embeddings of ``texts`` to
    ``model_ref``'s (1.0 = identical directions)."""
    texts = list(texts)
    return fidelity_metrics(model_ref.embed(texts, batch_size=batch_size),
                            model_q.embed(texts, batch_size=batch_size))


def compare_recall(ranks_a, ranks_b, *, n_boot: int = 10_000, confidence: float = 0.95, seed: int = 0) -> dict:
    """Is model A's recall@1 really different from model B's on the same queries?

    ``ranks_a``, ``ranks_b``: the rank of the right document for each query (from
    :func:`retrieval_ranks`), same queries in the same order. Returns

    * ``diff``: recall@1 of A minus recall@1 of B;
    * ``ci_low``, ``ci_high``: a paired percentile-bootstrap interval for ``diff``
      (``n_boot`` resamples of the queries, ``seed`` fixed);
    * ``a_only``, ``b_only``: queries that only A (only B) gets right at rank 1;
    * ``p_value``: exact two-sided McNemar test (binomial on the ``a_only + b_only``
      discordant queries, p = 1/2); 1.0 when there are none.
    """
    a = np.asarray(ranks_a)
    b = np.asarray(ranks_b)
    if a.ndim != 1 or a.shape != b.shape or a.size == 0:
        raise ValueError(f"ranks must be two non-empty 1-D arrays of equal length, got shapes {a.shape} and {b.shape}")
    if not (np.issubdtype(a.dtype, np.integer) and np.issubdtype(b.dtype, np.integer)) or min(a.min(), b.min()) < 1:
        raise ValueError("ranks must be integers >= 1 (1 = the right document came first)")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence!r}")
    n_boot = int(n_boot)
    if n_boot < 1:
        raise ValueError(f"n_boot must be positive, got {n_boot!r}")
    from scipy.stats import binomtest

    hit_a, hit_b = a == 1, b == 1
    per_query = hit_a.astype(np.float64) - hit_b
    idx = np.random.default_rng(seed).integers(0, a.size, size=(n_boot, a.size))
    boot = per_query[idx].mean(axis=1)
    tail = (1 - confidence) / 2
    a_only, b_only = int(np.sum(hit_a & ~hit_b)), int(np.sum(hit_b & ~hit_a))
    p = binomtest(a_only, a_only + b_only, 0.5).pvalue if a_only + b_only else 1.0
    return {"diff": float(per_query.mean()), "ci_low": float(np.quantile(boot, tail)),
            "ci_high": float(np.quantile(boot, 1 - tail)), "a_only": a_only, "b_only": b_only,
            "p_value": float(p)}
