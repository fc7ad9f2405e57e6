"""Plausible wrong answers for exercises/evaluate.md (see exercises/wrong_answers/README.md)."""

_RANKS = ("def retrieval_ranks(queries, documents):\n"
          "    q = np.asarray(queries, dtype=np.float64)\n"
          "    d = np.asarray(documents, dtype=np.float64)\n"
          "    if q.ndim != 2 or q.shape != d.shape:\n"
          "        raise ValueError('queries and documents must be matching (n, dim) arrays')\n"
          "{normalise}"
          "    similarity = {sim}\n"
          "    right = np.diag(similarity)\n"
          "    return {ret}\n")
_NORMALISE = ("    q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)\n"
              "    d = d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)\n")
_STRICT = "(1 + (similarity > right[:, None]).sum(axis=1)).astype(np.int64)"
_FID = ("def fidelity(ref, emb):\n"
        "    a = np.asarray(ref, dtype={dt})\n"
        "    b = np.asarray(emb, dtype={dt})\n"
        "    cos = {cos}\n"
        "    return float(cos.mean()), float(cos.min())\n")
_COS = "(a * b).sum(axis=1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-24)"
_MC = ("import math\n\n\n"
       "def mcnemar(ranks_a, ranks_b):\n"
       "    hit_a = np.asarray(ranks_a) == 1\n"
       "    hit_b = np.asarray(ranks_b) == 1\n"
       "    a_only, b_only = int(np.sum(hit_a & ~hit_b)), int(np.sum(hit_b & ~hit_a))\n"
       "    n = {n}\n"
       "{guard}"
       "    tail = sum(math.comb(n, k) for k in range(min(a_only, b_only) + 1)) / 2**n\n"
       "    return a_only, b_only, {p}\n")
_GUARD = ("    if a_only + b_only == 0:\n"
          "        return a_only, b_only, 1.0\n")
_BOOT = ("def paired_bootstrap(ranks_a, ranks_b, n_boot=2000, seed=0, confidence=0.95):\n"
         "    hit_a = (np.asarray(ranks_a) == 1).astype(np.float64)\n"
         "    hit_b = (np.asarray(ranks_b) == 1).astype(np.float64)\n"
         "    per_query = hit_a - hit_b\n"
         "    rng = np.random.default_rng(seed)\n"
         "{boot}"
         "    tail = {tail}\n"
         "    return float(per_query.mean()), float(np.quantile(boot, tail)), float(np.quantile(boot, 1 - tail))\n")
_IDX = ("    idx = rng.integers(0, per_query.size, size=(n_boot, per_query.size))\n"
        "    boot = per_query[idx].mean(axis=1)\n")

WRONG = {
    "q1": [
        ("counts ties against the right document (>= instead of >): a duplicate document costs a rank",
         _RANKS.format(normalise=_NORMALISE, sim="q @ d.T",
                       ret="((similarity >= right[:, None]).sum(axis=1)).astype(np.int64)")),
        ("dot product without normalising: a longer document wins",
         _RANKS.format(normalise="", sim="q @ d.T", ret=_STRICT)),
        ("ranks the query among the queries (a column of the similarity matrix) instead of the document",
         _RANKS.format(normalise=_NORMALISE, sim="q @ d.T",
                       ret="(1 + (similarity > right[None, :]).sum(axis=0)).astype(np.int64)")),
        ("position in a stable argsort: ties broken by document index, not in favour of the right one",
         _RANKS.format(normalise=_NORMALISE, sim="q @ d.T",
                       ret="(np.argsort(np.argsort(-similarity, axis=1, kind='stable'), axis=1).diagonal() + 1)"
                           ".astype(np.int64)")),
        ("ranks counted from 0",
         _RANKS.format(normalise=_NORMALISE, sim="q @ d.T",
                       ret="((similarity > right[:, None]).sum(axis=1)).astype(np.int64)")),
    ],
    "q2": [
        ("one cosine of the two flattened arrays instead of one per row",
         _FID.format(dt="np.float64", cos="np.atleast_1d((a * b).sum() / (np.linalg.norm(a) * np.linalg.norm(b)))")),
        ("cosine per column (per embedding dimension) instead of per row",
         _FID.format(dt="np.float64", cos="(a * b).sum(axis=0) / np.maximum(np.linalg.norm(a, axis=0) * "
                                          "np.linalg.norm(b, axis=0), 1e-24)")),
        ("computes in float32: near 1 the cosine is off by about 1e-7",
         _FID.format(dt="np.float32", cos=_COS)),
        ("no guard: an all-zero row gives NaN, and the mean with it",
         _FID.format(dt="np.float64",
                     cos="(a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))")),
    ],
    "q3": [
        ("one-sided p-value: the tail is not doubled",
         _MC.format(n="a_only + b_only", guard=_GUARD, p="float(tail)")),
        ("doubles the tail without capping at 1: as many discordant queries each way gives p > 1",
         _MC.format(n="a_only + b_only", guard=_GUARD, p="float(2 * tail)")),
        ("binomial over all queries instead of the discordant ones",
         _MC.format(n="hit_a.size", guard=_GUARD, p="float(min(1.0, 2 * tail))")),
        ("normal approximation instead of the exact test",
         "from scipy.stats import norm\n\n\n"
         "def mcnemar(ranks_a, ranks_b):\n"
         "    hit_a = np.asarray(ranks_a) == 1\n"
         "    hit_b = np.asarray(ranks_b) == 1\n"
         "    a_only, b_only = int(np.sum(hit_a & ~hit_b)), int(np.sum(hit_b & ~hit_a))\n"
         "    if a_only + b_only == 0:\n"
         "        return a_only, b_only, 1.0\n"
         "    return a_only, b_only, float(2 * norm.sf(abs(a_only - b_only) / np.sqrt(a_only + b_only)))\n"),
        ("no discordant query: divides 0 by 0 or calls binomtest with n = 0",
         "from scipy.stats import binomtest\n\n\n"
         "def mcnemar(ranks_a, ranks_b):\n"
         "    hit_a = np.asarray(ranks_a) == 1\n"
         "    hit_b = np.asarray(ranks_b) == 1\n"
         "    a_only, b_only = int(np.sum(hit_a & ~hit_b)), int(np.sum(hit_b & ~hit_a))\n"
         "    return a_only, b_only, float(binomtest(a_only, a_only + b_only, 0.5).pvalue)\n"),
    ],
    "q4": [
        ("unpaired: resamples the two models' queries independently",
         _BOOT.format(boot="    ia = rng.integers(0, per_query.size, size=(n_boot, per_query.size))\n"
                           "    ib = rng.integers(0, per_query.size, size=(n_boot, per_query.size))\n"
                           "    boot = hit_a[ia].mean(axis=1) - hit_b[ib].mean(axis=1)\n",
                      tail="(1 - confidence) / 2")),
        ("uses 1 - confidence as each tail: a 90% interval reported as 95%",
         _BOOT.format(boot=_IDX, tail="1 - confidence")),
        ("draws the indices as (n, n_boot) and averages along the columns: other resamples",
         _BOOT.format(boot="    idx = rng.integers(0, per_query.size, size=(per_query.size, n_boot))\n"
                           "    boot = per_query[idx].mean(axis=0)\n",
                      tail="(1 - confidence) / 2")),
        ("B minus A: the interval of the wrong difference",
         _BOOT.format(boot=_IDX.replace("per_query[idx]", "(-per_query)[idx]"),
                      tail="(1 - confidence) / 2").replace("float(per_query.mean())", "float(-per_query.mean())")),
    ],
    "q5": [
        ("the same difference gives the same verdict: all three",
         "n_significant = 3\n"),
        ("a difference of 12 queries in 1000 is too small to be significant: none",
         "n_significant = 0\n"),
    ],
}
