"""Plausible wrong answers for exercises/limits.md (see exercises/wrong_answers/README.md)."""

_HAD = ("def hadamard_matrix(n):\n"
        "{check}"
        "    signs = np.ones((1, 1))\n"
        "    while signs.shape[0] < n:\n"
        "        signs = np.block([[signs, signs], [signs, -signs]])\n"
        "    return {ret}\n")
_CHECK = ("    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1 or n & (n - 1):\n"
          "        raise ValueError(f\"n must be a positive power of two, got {n!r}\")\n")
_RATIO = ("def channel_max_ratio(X):\n"
          "    X = np.asarray(X, dtype=np.float32)\n"
          "    peak = {peak}\n"
          "    return float(peak.max() / {middle})\n")
_ZEROED = ("def zeroed_fraction(X, ordinary):\n"
           "    X = np.asarray(X, dtype=np.float32)\n"
           "    ordinary = np.asarray(ordinary, dtype=bool)\n"
           "    s = {s}\n"
           "    safe = np.where(s == 0, np.float32(1), s)\n"
           "    q = np.clip({round}, -7, 7)\n"
           "    zeroed = {zeroed}\n"
           "    return {ret}\n")
_S_ROW = "np.abs(X).max(axis=1, keepdims=True) / np.float32(7)"
_RINT = "np.rint(X / safe)"
_KV = ("def kv_cache_bytes(arch, tokens, bits=16):\n"
       "    head_dim = arch[\"d_model\"] // arch[{hd}]\n"
       "    return {ret}\n")

WRONG = {
    "q1": [
        ("forgets to normalise: entries are +-1, not +-1/sqrt(n)",
         _HAD.format(check=_CHECK, ret="signs.astype(np.float32)")),
        ("normalises by n instead of sqrt(n) (H H^T is then I / n)",
         _HAD.format(check=_CHECK, ret="(signs / n).astype(np.float32)")),
        ("returns the Walsh (sequency-ordered) matrix: rows sorted by their number of sign changes",
         _HAD.format(check=_CHECK, ret="(signs[np.argsort((np.diff(signs, axis=1) != 0).sum(axis=1), kind='stable')]"
                                       " / np.sqrt(n)).astype(np.float32)")),
        ("no check of n: 12 silently gives a 16 x 16 matrix, 0 a 1 x 1",
         _HAD.format(check="", ret="(signs / np.sqrt(n)).astype(np.float32)")),
        ("calls scipy.linalg.hadamard instead of building it",
         "from scipy.linalg import hadamard\n\n\n"
         "def hadamard_matrix(n):\n"
         "    return (hadamard(n) / np.sqrt(n)).astype(np.float32)\n"),
    ],
    "q2": [
        ("maximum over the channels of each token (axis=1) instead of over the tokens of each channel",
         _RATIO.format(peak="np.abs(X).max(axis=1)", middle="np.median(peak)")),
        ("largest value instead of largest magnitude: a negative outlier channel is missed",
         _RATIO.format(peak="X.max(axis=0)", middle="np.median(peak)")),
        ("divides by the mean channel maximum instead of the median (the outliers pull it up)",
         _RATIO.format(peak="np.abs(X).max(axis=0)", middle="peak.mean()")),
        ("takes the upper middle element as the median of an even number of channels",
         _RATIO.format(peak="np.abs(X).max(axis=0)", middle="np.sort(peak)[peak.size // 2]")),
    ],
    "q3": [
        ("the outlier stays where it was: a rotation does not change the largest value",
         "rotated_max = 64.0\n"),
        ("divides by n instead of sqrt(n): 64 / 1024",
         "rotated_max = 0.0625\n"),
    ],
    "q4": [
        ("rounds ties away from zero (floor(x / s + 0.5)): x / s = 0.5 is not zeroed",
         _ZEROED.format(s=_S_ROW, round="np.floor(X / safe + np.float32(0.5))",
                        zeroed="(q == 0) & (X != 0)", ret="float(np.mean(zeroed[:, ordinary]))")),
        ("counts the entries that were zero already",
         _ZEROED.format(s=_S_ROW, round=_RINT, zeroed="q == 0", ret="float(np.mean(zeroed[:, ordinary]))")),
        ("divides by the non-zero ordinary entries instead of all of them",
         _ZEROED.format(s=_S_ROW, round=_RINT, zeroed="(q == 0) & (X != 0)",
                        ret="float(zeroed[:, ordinary].sum() / np.count_nonzero(X[:, ordinary]))")),
        ("one scale for the whole tensor instead of one per token",
         _ZEROED.format(s="np.abs(X).max() / np.float32(7)", round=_RINT, zeroed="(q == 0) & (X != 0)",
                        ret="float(np.mean(zeroed[:, ordinary]))")),
        ("computes the scale and the quotient in float64: where the float32 scale was rounded up, x / s "
         "misses the tie at 0.5",
         "def zeroed_fraction(X, ordinary):\n"
         "    X = np.asarray(X, dtype=np.float64)\n"
         "    s = np.abs(X).max(axis=1, keepdims=True) / 7\n"
         "    q = np.clip(np.rint(X / np.where(s == 0, 1, s)), -7, 7)\n"
         "    return float(np.mean(((q == 0) & (X != 0))[:, ordinary]))\n"),
        ("scale absmax / 8: the step is too small by 8/7",
         _ZEROED.format(s="np.abs(X).max(axis=1, keepdims=True) / np.float32(8)", round=_RINT,
                        zeroed="(q == 0) & (X != 0)", ret="float(np.mean(zeroed[:, ordinary]))")),
        ("calls int4ref instead of implementing the per-token quantizer",
         "def zeroed_fraction(X, ordinary):\n"
         "    X = np.asarray(X, dtype=np.float32)\n"
         "    Xh = int4ref.dequantize(int4ref.quantize(X, \"int4_sym\", group_size=\"row\"))\n"
         "    return float(np.mean((Xh[:, ordinary] == 0) & (X[:, ordinary] != 0)))\n"),
    ],
    "q5": [
        ("uses the attention heads instead of the key/value heads (ignores grouped-query attention)",
         _KV.format(hd='"heads"', ret='2 * arch["layers"] * arch["heads"] * head_dim * tokens * bits // 8')),
        ("forgets that keys and values are both cached",
         _KV.format(hd='"heads"', ret='arch["layers"] * arch["kv_heads"] * head_dim * tokens * bits // 8')),
        ("head_dim from the key/value heads: d_model // kv_heads",
         _KV.format(hd='"kv_heads"', ret='2 * arch["layers"] * arch["kv_heads"] * head_dim * tokens * bits // 8')),
        ("divides by 8 with /: the byte count comes back as a float",
         _KV.format(hd='"heads"', ret='2 * arch["layers"] * arch["kv_heads"] * head_dim * tokens * bits / 8')),
    ],
}
