"""Plausible wrong answers for exercises/groups.md (see exercises/wrong_answers/README.md)."""

WRONG = {
    "q1": [
        ("groups along each row instead of the flattened tensor (same result when rows are a multiple of the group)",
         "def group_quantize(x, group_size):\n"
         "    x = np.asarray(x, dtype=np.float32)\n"
         "    rows = x.reshape(-1, x.shape[-1])\n"
         "    codes = np.empty(rows.shape, np.uint8)\n"
         "    scales = []\n"
         "    for r, row in enumerate(rows):\n"
         "        for start in range(0, row.size, group_size):\n"
         "            g = row[start:start + group_size]\n"
         "            s = np.float32(np.abs(g).max() / np.float32(7))\n"
         "            scales.append(s)\n"
         "            q = np.rint(g / s) if s else np.zeros_like(g)\n"
         "            codes[r, start:start + group_size] = np.clip(q, -7, 7) + 8\n"
         "    return codes.reshape(x.shape), np.array(scales, dtype=np.float32)\n"),
        ("drops the partial last group (its codes stay 8, it has no scale)",
         "def group_quantize(x, group_size):\n"
         "    x = np.asarray(x, dtype=np.float32)\n"
         "    flat = x.reshape(-1)\n"
         "    n_groups = flat.size // group_size\n"
         "    groups = flat[: n_groups * group_size].reshape(n_groups, group_size)\n"
         "    scales = (np.abs(groups).max(axis=1) / np.float32(7)).astype(np.float32)\n"
         "    safe = np.where(scales == 0, np.float32(1), scales)\n"
         "    codes = np.full(flat.size, 8, np.uint8)\n"
         "    codes[: n_groups * group_size] = (np.clip(np.rint(groups / safe[:, None]), -7, 7) + 8).reshape(-1)\n"
         "    return codes.reshape(x.shape), scales\n"),
    ],
    "q2": [
        ("np.tile instead of np.repeat: scales cycle per value instead of per group",
         "def group_dequantize(codes, scales, group_size):\n"
         "    codes = np.asarray(codes)\n"
         "    values = codes.reshape(-1).astype(np.float32) - np.float32(8)\n"
         "    per_value = np.tile(np.asarray(scales, dtype=np.float32), group_size)[: values.size]\n"
         "    return (values * per_value).reshape(codes.shape)\n"),
    ],
    "q3": [
        ("expects groups not to matter", "zero_frac_tensor = 0.5\nzero_frac_g64 = 0.5\n"),
    ],
    "q4": [
        ("right axis but no keepdims: broadcasts the row scales over columns (silent on square matrices)",
         "def quantize_per_channel(W):\n"
         "    W = np.asarray(W, dtype=np.float32)\n"
         "    scales = (np.abs(W).max(axis=1) / np.float32(7)).astype(np.float32)\n"
         "    codes = (np.clip(np.rint(W / scales), -7, 7) + 8).astype(np.uint8)\n"
         "    return codes, scales.reshape(-1)\n"),
    ],
    "q5": [
        ("always adds one group: an empty group when the size is a multiple of group_size",
         "def group_scales(x, group_size):\n"
         "    flat = np.asarray(x, dtype=np.float32).reshape(-1)\n"
         "    n_groups = flat.size // group_size + 1\n"
         "    return np.array([np.abs(flat[i * group_size:(i + 1) * group_size]).max() / np.float32(7)\n"
         "                     for i in range(n_groups)], dtype=np.float32)\n"),
    ],
}

WRONG["q1"] += [
    ("pads by repeating the data (np.resize) instead of with zeros: wrong when the wrapped values are large",
     "def group_quantize(x, group_size):\n"
     "    x = np.asarray(x, dtype=np.float32)\n"
     "    flat = x.reshape(-1)\n"
     "    n_groups = -(-flat.size // group_size)\n"
     "    groups = np.resize(flat, n_groups * group_size).reshape(n_groups, group_size)\n"
     "    scales = (np.abs(groups).max(axis=1) / np.float32(7)).astype(np.float32)\n"
     "    safe = np.where(scales == 0, np.float32(1), scales)\n"
     "    q = np.clip(np.rint(groups / safe[:, None]), -7, 7) + 8\n"
     "    return q.astype(np.uint8).reshape(-1)[: flat.size].reshape(x.shape), scales\n"),
    ("divides by the scale without a guard: an all-zero group gives 0 / 0 and code 0",
     "def group_quantize(x, group_size):\n"
     "    x = np.asarray(x, dtype=np.float32)\n"
     "    flat = x.reshape(-1)\n"
     "    n_groups = -(-flat.size // group_size)\n"
     "    padded = np.zeros(n_groups * group_size, dtype=np.float32)\n"
     "    padded[: flat.size] = flat\n"
     "    groups = padded.reshape(n_groups, group_size)\n"
     "    scales = (np.abs(groups).max(axis=1) / np.float32(7)).astype(np.float32)\n"
     "    with np.errstate(invalid='ignore', divide='ignore'):\n"
     "        q = np.nan_to_num(np.clip(np.rint(groups / scales[:, None]), -7, 7), nan=-8) + 8\n"
     "    return q.astype(np.uint8).reshape(-1)[: flat.size].reshape(x.shape), scales\n"),
    ("scales in float64 (right values, wrong dtype)",
     "def group_quantize(x, group_size):\n"
     "    x = np.asarray(x, dtype=np.float32)\n"
     "    flat = x.reshape(-1)\n"
     "    n_groups = -(-flat.size // group_size)\n"
     "    padded = np.zeros(n_groups * group_size, dtype=np.float32)\n"
     "    padded[: flat.size] = flat\n"
     "    groups = padded.reshape(n_groups, group_size)\n"
     "    scales = (np.abs(groups).max(axis=1) / np.float32(7)).astype(np.float32)\n"
     "    safe = np.where(scales == 0, np.float32(1), scales)\n"
     "    q = np.clip(np.rint(groups / safe[:, None]), -7, 7) + 8\n"
     "    return q.astype(np.uint8).reshape(-1)[: flat.size].reshape(x.shape), scales.astype(np.float64)\n"),
]
WRONG["q2"] += [
    ("calls int4ref (its format's levels) instead of implementing it",
     "def group_dequantize(codes, scales, group_size):\n"
     "    codes = np.asarray(codes)\n"
     "    levels = int4ref.get_format('int4_sym').levels() * np.float32(7)\n"
     "    per_value = np.repeat(np.asarray(scales, dtype=np.float32), group_size)[: codes.size]\n"
     "    return (levels[codes.reshape(-1)] * per_value).reshape(codes.shape)\n"),
]
WRONG["q4"] += [
    ("the fixed scales, but no guard for an all-zero row: 0 / 0 casts to code 0",
     "def quantize_per_channel(W):\n"
     "    W = np.asarray(W, dtype=np.float32)\n"
     "    scales = (np.abs(W).max(axis=1, keepdims=True) / np.float32(7)).astype(np.float32)\n"
     "    with np.errstate(invalid='ignore', divide='ignore'):\n"
     "        q = np.nan_to_num(np.clip(np.rint(W / scales), -7, 7), nan=-8)\n"
     "    return (q + 8).astype(np.uint8), scales.reshape(-1)\n"),
]
WRONG["q5"] += [
    ("the right scales, returned as a list",
     "def group_scales(x, group_size):\n"
     "    flat = np.asarray(x, dtype=np.float32).reshape(-1)\n"
     "    n_groups = -(-flat.size // group_size)\n"
     "    return [np.abs(flat[i * group_size:(i + 1) * group_size]).max() / np.float32(7) for i in range(n_groups)]\n"),
]
