"""Plausible wrong answers for exercises/nf4.md (see exercises/wrong_answers/README.md)."""

WRONG = {
    "q1": [
        ("symmetric table from 16 evenly spaced quantiles: no exact zero",
         "def nf4_table(offset=0.9677083):\n"
         "    values = norm.ppf(np.linspace(1 - offset, offset, 16))\n"
         "    return (values / values.max()).astype(np.float32)\n"),
        ("hard-codes bitsandbytes' table (ignores offset)",
         "def nf4_table(offset=0.9677083):\n"
         "    return int4ref.codebooks.NF4.copy()\n"),
    ],
    "q2": [
        ("np.searchsorted rounds up to the next level instead of to the nearest",
         "def nf4_quantize_block(x):\n"
         "    x = np.asarray(x, dtype=np.float32)\n"
         "    absmax = np.abs(x).max()\n"
         "    codes = np.minimum(np.searchsorted(NF4, x * (np.float32(1) / absmax)), 15).astype(np.uint8)\n"
         "    return codes, absmax\n"),
    ],
    "q3": [
        ("high and low nibble swapped (GGML-style low nibble first)",
         "def dequantize_bnb_nf4(packed, absmax, n, blocksize):\n"
         "    p = np.asarray(packed, dtype=np.uint8).reshape(-1)\n"
         "    codes = np.empty(2 * p.size, dtype=np.uint8)\n"
         "    codes[0::2] = p & 0x0F\n"
         "    codes[1::2] = p >> 4\n"
         "    per_value = np.repeat(np.asarray(absmax, dtype=np.float32), blocksize)[:n]\n"
         "    return NF4[codes[:n]] * per_value\n"),
        ("forgets to cut to n: the odd count's padding code and a partial block's end leak out",
         "def dequantize_bnb_nf4(packed, absmax, n, blocksize):\n"
         "    p = np.asarray(packed, dtype=np.uint8).reshape(-1)\n"
         "    codes = np.empty(2 * p.size, dtype=np.uint8)\n"
         "    codes[0::2] = p >> 4\n"
         "    codes[1::2] = p & 0x0F\n"
         "    per_value = np.repeat(np.asarray(absmax, dtype=np.float32), blocksize)[: codes.size]\n"
         "    return NF4[codes] * per_value\n"),
    ],
    "q4": [
        ("expects the uniform grid to win", "nf4_gain_db = -1.0\n"),
    ],
    "q5": [
        ("takes the table value but forgets the block's absmax",
         "def dequantize_nf4(codes, absmax, blocksize):\n"
         "    return NF4[codes]\n"),
    ],
}

WRONG["q1"] += [
    ("the right table in float64",
     "def nf4_table(offset=0.9677083):\n"
     "    positive = norm.ppf(np.linspace(offset, 0.5, 9)[:-1])\n"
     "    negative = -norm.ppf(np.linspace(offset, 0.5, 8)[:-1])\n"
     "    values = np.sort(np.concatenate([positive, [0.0], negative]))\n"
     "    return values / values.max()\n"),
    ("calls int4ref's derivation instead of implementing it",
     "def nf4_table(offset=0.9677083):\n"
     "    return int4ref.codebooks.nf4_from_quantiles(offset, float32_linspace=False).astype(np.float32)\n"),
]
WRONG["q2"] += [
    ("nearest level by argmin of float32 distances: disagrees with the midpoint rule at some midpoints",
     "def nf4_quantize_block(x):\n"
     "    x = np.asarray(x, dtype=np.float32)\n"
     "    absmax = np.abs(x).max()\n"
     "    normalized = x * (np.float32(1) / absmax)\n"
     "    codes = np.abs(normalized[:, None] - NF4[None, :]).argmin(axis=1).astype(np.uint8)\n"
     "    return codes, absmax\n"),
    ("a tie goes to the upper level (side='right')",
     "def nf4_quantize_block(x):\n"
     "    x = np.asarray(x, dtype=np.float32)\n"
     "    absmax = np.abs(x).max()\n"
     "    midpoints = (NF4[:-1] + NF4[1:]) / np.float32(2)\n"
     "    codes = np.searchsorted(midpoints, x * (np.float32(1) / absmax), side='right').astype(np.uint8)\n"
     "    return codes, absmax\n"),
    ("codes as int64 (np.searchsorted's own dtype)",
     "def nf4_quantize_block(x):\n"
     "    x = np.asarray(x, dtype=np.float32)\n"
     "    absmax = np.abs(x).max()\n"
     "    midpoints = (NF4[:-1] + NF4[1:]) / np.float32(2)\n"
     "    return np.searchsorted(midpoints, x * (np.float32(1) / absmax)), absmax\n"),
]
WRONG["q3"] += [
    ("unpacks with int4ref instead of implementing it",
     "def dequantize_bnb_nf4(packed, absmax, n, blocksize):\n"
     "    codes = int4ref.packing.unpack_nibbles(packed, n)\n"
     "    return NF4[codes] * np.repeat(np.asarray(absmax, dtype=np.float32), blocksize)[:n]\n"),
]
WRONG["q4"] += [
    ("a number in a one-element array", "nf4_gain_db = np.array([1.4])\n"),
]
