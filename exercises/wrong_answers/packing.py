"""Plausible wrong answers for exercises/packing.md (see exercises/wrong_answers/README.md)."""

WRONG = {
    "q1": [
        ("high and low nibble swapped (element 2k in the LOW nibble)",
         "def pack_bnb(codes):\n"
         "    c = np.asarray(codes, dtype=np.uint8).reshape(-1)\n"
         "    if c.size % 2:\n"
         "        c = np.append(c, np.uint8(0))\n"
         "    return (c[0::2] | (c[1::2] << 4)).astype(np.uint8)\n"),
        ("no padding for an odd count (only visible with odd n)",
         "def pack_bnb(codes):\n"
         "    c = np.asarray(codes, dtype=np.uint8).reshape(-1)\n"
         "    return ((c[0::2] << 4) | c[1::2]).astype(np.uint8)\n"),
    ],
    "q2": [
        ("takes the high nibble with a mask but no shift: codes 16, 32, ..., 240",
         "def unpack_bnb(packed, n):\n"
         "    p = np.asarray(packed, dtype=np.uint8).reshape(-1)\n"
         "    out = np.empty(2 * p.size, dtype=np.uint8)\n"
         "    out[0::2] = p & 0xF0\n"
         "    out[1::2] = p & 0x0F\n"
         "    return out[:n]\n"),
        ("fixes the order but returns every nibble: an odd count gets the padding code back",
         "def unpack_bnb(packed, n):\n"
         "    p = np.asarray(packed, dtype=np.uint8).reshape(-1)\n"
         "    out = np.empty(2 * p.size, dtype=np.uint8)\n"
         "    out[0::2] = p >> 4\n"
         "    out[1::2] = p & 0x0F\n"
         "    return out\n"),
    ],
    "q3": [
        ("neighbours in one byte (low nibble first), not j and j + 16",
         "def pack_ggml(codes):\n"
         "    c = np.asarray(codes, dtype=np.uint8).reshape(-1)\n"
         "    return c[0::2] | (c[1::2] << 4)\n"),
    ],
    "q4": [
        ("bitsandbytes-style interleaved nibbles instead of j / j + 16",
         "def dequantize_q4_0(data):\n"
         "    blocks = np.asarray(data, dtype=np.uint8).reshape(-1, 18)\n"
         "    d = blocks[:, :2].copy().view('<f2').astype(np.float32)\n"
         "    qs = blocks[:, 2:]\n"
         "    codes = np.stack([qs & 0x0F, qs >> 4], axis=-1).reshape(-1, 32)\n"
         "    return (d * (codes.astype(np.float32) - np.float32(8))).reshape(-1)\n"),
        ("reads the float16 scale big-endian",
         "def dequantize_q4_0(data):\n"
         "    blocks = np.asarray(data, dtype=np.uint8).reshape(-1, 18)\n"
         "    d = blocks[:, :2].copy().view('>f2').astype(np.float32)\n"
         "    qs = blocks[:, 2:]\n"
         "    codes = np.concatenate([qs & 0x0F, qs >> 4], axis=1)\n"
         "    return (d * (codes.astype(np.float32) - np.float32(8))).reshape(-1)\n"),
    ],
    "q5": [
        ("sequential (GPTQ) order instead of AWQ's",
         "def pack_awq(codes):\n"
         "    c = np.asarray(codes, dtype=np.uint32)\n"
         "    c = c.reshape(c.shape[0], -1, 8)\n"
         "    words = np.zeros(c.shape[:2], dtype=np.uint32)\n"
         "    for i in range(8):\n"
         "        words |= c[:, :, i] << np.uint32(4 * i)\n"
         "    return words.view(np.int32)\n"),
    ],
    "q6": [
        ("a flat array of n/2 bytes, float16 absmax",
         "packed_shape = (11008 * 4096 // 2,)\nabsmax_nbytes = 11008 * 4096 // 64 * 2\n"),
    ],
    "q7": [
        ("masks the top nibble with 0x7: drops the top bit of codes 8..15",
         "def unpack_gptq_words(words):\n"
         "    words = np.asarray(words)\n"
         "    slots = [(words >> (4 * i)) & 0xF for i in range(7)]\n"
         "    slots.append((words >> 28) & 0x7)\n"
         "    return np.stack(slots, axis=-1).reshape(*words.shape[:-1], -1).astype(np.uint8)\n"),
    ],
}

WRONG["q1"] += [
    ("keeps the input's integer dtype: int64 'bytes' when the codes were int64",
     "def pack_bnb(codes):\n"
     "    c = np.asarray(codes).reshape(-1)\n"
     "    if c.size % 2:\n"
     "        c = np.append(c, 0)\n"
     "    return (c[0::2] << 4) | c[1::2]\n"),
    ("calls int4ref's packer instead of implementing it",
     "def pack_bnb(codes):\n"
     "    return int4ref.packing.pack_nibbles(np.asarray(codes, dtype=np.uint8))\n"),
]
WRONG["q3"] += [
    ("keeps the input's integer dtype: int64 'bytes' when the codes were int64",
     "def pack_ggml(codes):\n"
     "    blocks = np.asarray(codes).reshape(-1, 32)\n"
     "    return (blocks[:, :16] | (blocks[:, 16:] << 4)).reshape(-1)\n"),
    ("calls int4ref's packer instead of implementing it",
     "def pack_ggml(codes):\n"
     "    return int4ref.packing.pack_nibbles(codes, layout='ggml')\n"),
]
WRONG["q4"] += [
    ("computes in float64: d * (q - 8) with d as a Python float",
     "def dequantize_q4_0(data):\n"
     "    blocks = np.asarray(data, dtype=np.uint8).reshape(-1, 18)\n"
     "    d = blocks[:, :2].copy().view('<f2').astype(np.float64)\n"
     "    qs = blocks[:, 2:]\n"
     "    codes = np.concatenate([qs & 0x0F, qs >> 4], axis=1)\n"
     "    return (d * (codes.astype(np.float64) - 8)).reshape(-1)\n"),
    ("calls int4ref's GGUF reader instead of implementing it",
     "def dequantize_q4_0(data):\n"
     "    return gguf.dequantize(data, 'Q4_0').reshape(-1).astype(np.float32)\n"),
]
WRONG["q5"] += [
    ("the right bits in uint32 words (no view as int32)",
     "def pack_awq(codes):\n"
     "    c = np.asarray(codes, dtype=np.uint32)\n"
     "    c = c.reshape(c.shape[0], -1, 8)[:, :, AWQ_ORDER]\n"
     "    words = np.zeros(c.shape[:2], dtype=np.uint32)\n"
     "    for i in range(8):\n"
     "        words |= c[:, :, i] << np.uint32(4 * i)\n"
     "    return words\n"),
]
WRONG["q6"] += [
    ("the right shape as a list", "packed_shape = [11008 * 4096 // 2, 1]\nabsmax_nbytes = 11008 * 4096 // 64 * 4\n"),
    ("the right byte count as a float",
     "packed_shape = (11008 * 4096 // 2, 1)\nabsmax_nbytes = 11008 * 4096 / 64 * 4\n"),
]
WRONG["q7"] += [
    ("the fix, but codes returned as int32 (no cast)",
     "def unpack_gptq_words(words):\n"
     "    words = np.asarray(words)\n"
     "    slots = [(words >> (4 * i)) & 0xF for i in range(8)]\n"
     "    return np.stack(slots, axis=-1).reshape(*words.shape[:-1], -1)\n"),
]
