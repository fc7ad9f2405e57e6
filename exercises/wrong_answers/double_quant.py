"""Plausible wrong answers for exercises/double_quant.md (see exercises/wrong_answers/README.md)."""

WRONG = {
    "q1": [
        ("does not subtract the mean: offset 0, only the positive half of the map is used",
         "def double_quantize_scales(scales, blocksize=256):\n"
         "    scales = np.asarray(scales, dtype=np.float32)\n"
         "    n_blocks = -(-scales.size // blocksize)\n"
         "    padded = np.zeros(n_blocks * blocksize, dtype=np.float32)\n"
         "    padded[: scales.size] = scales\n"
         "    blocks = padded.reshape(n_blocks, blocksize)\n"
         "    absmax2 = np.abs(blocks).max(axis=1)\n"
         "    normalized = blocks / np.where(absmax2 == 0, np.float32(1), absmax2)[:, None]\n"
         "    codes = np.searchsorted((DYNAMIC[:-1] + DYNAMIC[1:]) / np.float32(2), normalized).astype(np.uint8)\n"
         "    return codes.reshape(-1)[: scales.size], absmax2, np.float32(0)\n"),
    ],
    "q2": [
        ("forgets to add the offset back",
         "def decode_scales(codes, absmax2, offset, blocksize=256):\n"
         "    per_value = np.repeat(np.asarray(absmax2, dtype=np.float32), blocksize)[: np.size(codes)]\n"
         "    return (DYNAMIC[codes] * per_value).astype(np.float32)\n"),
    ],
    "q3": [
        ("forgets the 8-bit codes that replace the float32 scales", "dq_saving_bpw = 0.5\n"),
    ],
    "q4": [
        ("expects a visible loss", "dq_sqnr_loss_db = 0.5\n"),
    ],
    "q5": [
        ("fixes the offset but keeps the first-level block size for the second level",
         "def nested_absmax(state):\n"
         "    codes = np.asarray(state.absmax)\n"
         "    absmax2 = np.repeat(state.state2.absmax, state.blocksize)[: codes.size]\n"
         "    return state.state2.code[codes] * absmax2 + state.offset\n"),
    ],
}

WRONG["q6"] = [
    ("drops the second-level absmax instead of dividing it over group_size * blocksize",
     "def dq_bits_per_weight(group_size=64, code_bits=8, blocksize=256):\n"
     "    return 4 + code_bits / group_size\n"),
    ("divides the float32 absmax over the weights of one group only",
     "def dq_bits_per_weight(group_size=64, code_bits=8, blocksize=256):\n"
     "    return 4 + code_bits / group_size + 32 / group_size / group_size\n"),
]

WRONG["q1"] += [
    ("the offset as a Python float (mean in float64, not stored as float32)",
     "def double_quantize_scales(scales, blocksize=256):\n"
     "    scales = np.asarray(scales, dtype=np.float32)\n"
     "    offset = float(np.mean(scales, dtype=np.float64))\n"
     "    centered = (scales - np.float32(offset)).astype(np.float32)\n"
     "    n_blocks = -(-centered.size // blocksize)\n"
     "    padded = np.zeros(n_blocks * blocksize, dtype=np.float32)\n"
     "    padded[: centered.size] = centered\n"
     "    blocks = padded.reshape(n_blocks, blocksize)\n"
     "    absmax2 = np.abs(blocks).max(axis=1)\n"
     "    normalized = blocks / np.where(absmax2 == 0, np.float32(1), absmax2)[:, None]\n"
     "    codes = np.searchsorted((DYNAMIC[:-1] + DYNAMIC[1:]) / np.float32(2), normalized).astype(np.uint8)\n"
     "    return codes.reshape(-1)[: scales.size], absmax2, offset\n"),
    ("pads the last block by repeating the scales: a partial block's absmax comes from other scales",
     "def double_quantize_scales(scales, blocksize=256):\n"
     "    scales = np.asarray(scales, dtype=np.float32)\n"
     "    offset = np.float32(np.mean(scales, dtype=np.float64))\n"
     "    centered = (scales - offset).astype(np.float32)\n"
     "    n_blocks = -(-centered.size // blocksize)\n"
     "    blocks = np.resize(centered, n_blocks * blocksize).reshape(n_blocks, blocksize)\n"
     "    absmax2 = np.abs(blocks).max(axis=1)\n"
     "    normalized = blocks / np.where(absmax2 == 0, np.float32(1), absmax2)[:, None]\n"
     "    codes = np.searchsorted((DYNAMIC[:-1] + DYNAMIC[1:]) / np.float32(2), normalized).astype(np.uint8)\n"
     "    return codes.reshape(-1)[: scales.size], absmax2, offset\n"),
]
WRONG["q2"] += [
    ("calls int4ref's decoder instead of implementing it",
     "def decode_scales(codes, absmax2, offset, blocksize=256):\n"
     "    return int4ref.ScaleState(codes=codes, absmax=absmax2, offset=offset, table=DYNAMIC,\n"
     "                              blocksize=blocksize, bits=8).decode()\n"),
    ("decodes in float64",
     "def decode_scales(codes, absmax2, offset, blocksize=256):\n"
     "    per_value = np.repeat(np.asarray(absmax2, dtype=np.float64), blocksize)[: np.size(codes)]\n"
     "    return DYNAMIC[codes].astype(np.float64) * per_value + float(offset)\n"),
]
WRONG["q5"] += [
    ("the right values in float64",
     "def nested_absmax(state):\n"
     "    codes = np.asarray(state.absmax)\n"
     "    absmax2 = np.repeat(state.state2.absmax, state.state2.blocksize)[: codes.size].astype(np.float64)\n"
     "    return state.state2.code[codes] * absmax2 + float(state.offset)\n"),
]
