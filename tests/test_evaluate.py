"""int4ref.model.evaluate: the docstring corpus (deterministic, calibration disjoint from
evaluation), the retrieval and fidelity metrics on hand-made examples, the float MiniLM on a
small corpus, and the schema of results/minilm-sweep.json."""
import json
import math
from pathlib import Path

import numpy as np
import pytest

from int4ref.model import evaluate as ev

RESULTS = Path(__file__).resolve().parents[1] / "results" / "minilm-sweep.json"


# ---------------------------------------------------------------- corpus
def test_corpus_is_deterministic():
    a = ev.docstring_corpus(50)
    ev.candidates.cache_clear()
    b = ev.docstring_corpus(50)
    assert a == b
    assert ev.docstring_corpus(20) == a[:20]  # a prefix of the same order
    assert ev.docstring_corpus(30, seed=1) == ev.docstring_corpus(30, seed=1)
    assert ev.docstring_corpus(30, seed=1) != ev.docstring_corpus(30, seed=2)


def test_corpus_entries_qualify():
    corpus = ev.docstring_corpus(None)
    assert len(corpus) >= 300, "the sweep evaluates on 300 functions"
    names = [n for n, _, _ in corpus]
    assert len(set(names)) == len(names)
    assert len({s for _, s, _ in corpus}) == len(corpus) and len({b for _, _, b in corpus}) == len(corpus)
    for name, summary, body in corpus:
        assert name.split(".")[0] in {m.split(".")[0] for m in ev.MODULES}
        assert 3 <= len(summary.split()) <= 30 and "\n" not in summary
        assert ev.MIN_BODY_WORDS <= len(body.split()) <= ev.BODY_WORDS


def test_calibration_disjoint_from_evaluation():
    ev_all = ev.docstring_corpus(None)
    cal_all = ev.docstring_corpus(None, split="calib")
    assert len(cal_all) >= 64
    assert not {n for n, _, _ in ev_all} & {n for n, _, _ in cal_all}
    eval_texts = {s for _, s, _ in ev_all} | {b for _, _, b in ev_all}
    for text in ev.calibration_texts(64):
        assert text not in eval_texts
        assert not any(t in text for t in (b for _, _, b in ev_all[:300]))


def test_corpus_rejects_bad_arguments():
    with pytest.raises(ValueError):
        ev.docstring_corpus(0)
    with pytest.raises(ValueError):
        ev.docstring_corpus(10, split="train")
    with pytest.raises(ValueError):
        ev.docstring_corpus(10**6)


# ---------------------------------------------------------------- metrics
def test_identity_embeddings_retrieve_perfectly():
    e = np.eye(5)
    assert ev.retrieval_metrics(e, e) == {"recall_at_1": 1.0, "mrr": 1.0}
    assert ev.retrieval_metrics(3 * e, e)["recall_at_1"] == 1.0  # scale does not matter (cosine)


def test_permuted_example_known_mrr():
    q = np.eye(3)
    d = np.eye(3)[[0, 2, 1]]  # doc 1 points where query 2 does and vice versa: ranks 1, 2, 2
    m = ev.retrieval_metrics(q, d)
    assert m["recall_at_1"] == pytest.approx(1 / 3)
    assert m["mrr"] == pytest.approx((1 + 0.5 + 0.5) / 3)
    # a graded example with cosine similarities worked out by hand
    q = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    d = np.array([[0.2, 1.0], [0.0, 1.0], [1.0, 0.0]])
    # q0 sims: [.196, 0, 1] -> rank 2; q1: [.98, 1, 0] -> rank 1; q2: [.83, .71, .71] -> doc2 .71 < .83 -> rank 2
    m = ev.retrieval_metrics(q, d)
    assert m["recall_at_1"] == pytest.approx(1 / 3)
    assert m["mrr"] == pytest.approx((0.5 + 1 + 0.5) / 3)


def test_fidelity_metrics():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((10, 8))
    f = ev.fidelity_metrics(a, 2 * a)
    assert f["mean_cos"] == pytest.approx(1.0) and f["min_cos"] == pytest.approx(1.0)
    b = a.copy()
    b[3] = -b[3]
    f = ev.fidelity_metrics(a, b)
    assert f["min_cos"] == pytest.approx(-1.0) and f["mean_cos"] == pytest.approx(0.8)
    with pytest.raises(ValueError):
        ev.fidelity_metrics(a, a[:5])


# ---------------------------------------------------------------- the model
@pytest.fixture(scope="module")
def model():
    pytest.importorskip("tokenizers", reason="int4ref.model.minilm tokenises with the tokenizers package")
    from int4ref.model.data import MINILM_INSTALL, minilm_available

    if not minilm_available():
        pytest.skip(f"all-MiniLM-L6-v2 weights not installed ({MINILM_INSTALL})")
    from int4ref.model.minilm import MiniLM

    return MiniLM()


def test_fidelity_of_same_model_is_one(model):
    texts = [s for _, s, _ in ev.docstring_corpus(8)]
    f = ev.embedding_fidelity(model, model, texts)
    assert f["mean_cos"] == pytest.approx(1.0, abs=1e-6) and f["min_cos"] == pytest.approx(1.0, abs=1e-6)


def test_float_model_retrieves_far_above_chance(model):
    corpus = ev.docstring_corpus(40)
    m = ev.retrieval_scores(model, corpus)
    assert m["recall_at_1"] >= 10 / len(corpus)  # chance is 1/40
    assert m["mrr"] >= m["recall_at_1"]


# ---------------------------------------------------------------- results file
ROW_KEYS = {"method", "calibration", "format", "group_size", "bits_per_weight", "recall_at_1", "mrr",
            "mean_cos", "min_cos", "ranks", "calib_time_s", "quant_time_s", "eval_time_s", "load_1min"}


def test_results_file_schema():
    if not RESULTS.is_file():
        pytest.skip(f"{RESULTS} not written yet (tools/minilm_sweep.py)")
    data = json.loads(RESULTS.read_text())
    for key in ("date", "git_commit", "machine", "versions", "corpus", "rows"):
        assert key in data, key
    assert {"cpu_model", "cores"} <= set(data["machine"])
    assert {"numpy", "scipy", "python"} <= set(data["versions"])
    n_eval = data["corpus"]["n_eval"]
    rows = data["rows"]
    assert rows[0]["method"] == "float32"
    for row in rows:
        assert ROW_KEYS <= set(row), row
        assert 0 <= row["recall_at_1"] <= row["mrr"] <= 1
        assert -1 <= row["min_cos"] <= row["mean_cos"] <= 1 + 1e-9
        assert math.isfinite(row["bits_per_weight"]) and row["bits_per_weight"] > 4
        assert row["group_size"] in (None, 32, 64, 128, "row")
        ranks = np.array(row["ranks"])  # the averages must follow from the per-query ranks
        assert ranks.shape == (n_eval,) and ranks.min() >= 1 and ranks.max() <= n_eval
        assert row["recall_at_1"] == pytest.approx(np.mean(ranks == 1))
        assert row["mrr"] == pytest.approx(np.mean(1 / ranks))
        if isinstance(row["group_size"], int):  # codes + float32 scale (+ 4-bit zero-point)
            g = row["group_size"]
            assert row["bits_per_weight"] == pytest.approx(4 + 32 / g + (4 / g if row["format"] == "int4_asym" else 0))
    quantized = rows[1:]
    assert {r["method"] for r in quantized} <= {"rtn", "gptq", "awq"}
    assert {r["format"] for r in quantized} <= {"int4_asym", "nf4"}
    assert all((r["calibration"] is None) == (r["method"] == "rtn") for r in quantized)
    base = rows[0]
    assert all(base["mean_cos"] >= r["mean_cos"] - 1e-9 for r in quantized)
    assert all(base["min_cos"] >= r["min_cos"] - 1e-9 for r in quantized)


# ---------------------------------------------------------------- paired comparison
def test_retrieval_ranks_match_metrics():
    rng = np.random.default_rng(3)
    q, d = rng.standard_normal((30, 8)), rng.standard_normal((30, 8))
    ranks = ev.retrieval_ranks(q, d)
    assert ranks.dtype.kind == "i" and ranks.min() >= 1 and ranks.max() <= 30
    sim = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (d / np.linalg.norm(d, axis=1, keepdims=True)).T
    assert ranks[0] == 1 + np.sum(sim[0] > sim[0, 0])
    m = ev.retrieval_metrics(q, d)
    assert m["recall_at_1"] == np.mean(ranks == 1) and m["mrr"] == pytest.approx(np.mean(1 / ranks))


def test_compare_recall_counts_and_tests():
    a = np.array([1] * 40 + [2] * 60)
    b = np.array([1] * 30 + [3] * 10 + [1] * 5 + [2] * 55)  # A alone right on 10, B alone on 5
    c = ev.compare_recall(a, b, n_boot=2000)
    assert (c["a_only"], c["b_only"]) == (10, 5)
    assert c["diff"] == pytest.approx(0.05)
    assert c["ci_low"] < 0.05 < c["ci_high"]
    from scipy.stats import binomtest
    assert c["p_value"] == pytest.approx(binomtest(10, 15, 0.5).pvalue)
    same = ev.compare_recall(a, a)
    assert same["diff"] == same["ci_low"] == same["ci_high"] == 0 and same["p_value"] == 1.0
    # a large, consistent difference is significant and its interval excludes 0
    big = ev.compare_recall(np.ones(200, int), np.array([1] * 100 + [2] * 100))
    assert big["p_value"] < 1e-20 and big["ci_low"] > 0.4


def test_compare_recall_rejects_bad_input():
    for a, b in (([], []), ([1, 2], [1]), ([0, 1], [1, 1]), ([1.5, 1], [1, 1])):
        with pytest.raises(ValueError, match="ranks"):
            ev.compare_recall(np.array(a), np.array(b))
    with pytest.raises(ValueError, match="confidence"):
        ev.compare_recall(np.array([1]), np.array([1]), confidence=1.5)


def test_corpus_ignores_replaced_sys_hooks(monkeypatch):
    """A Jupyter kernel replaces sys.excepthook with a documented function; the corpus must
    not change with it (the committed sweep's ranks refer to one corpus)."""
    before = [c[0] for c in ev.docstring_corpus(None)]

    def excepthook(etype, value, tb):
        """Handle an exception the way a notebook kernel does, with a long docstring.

        This docstring has the shape the corpus selects: a summary line of several words, a
        blank line, and a body of more than forty words, so that it would be picked up if the
        corpus read the current hook instead of the interpreter's original one. It is padded
        with enough words to pass the minimum length of the body in every configuration."""

    monkeypatch.setattr("sys.excepthook", excepthook)
    ev.candidates.cache_clear()
    try:
        after = [c[0] for c in ev.docstring_corpus(None)]
    finally:
        ev.candidates.cache_clear()
    assert after == before and "sys.excepthook" not in after
