"""Plausible wrong answers for exercises/uniform.md (see exercises/wrong_answers/README.md)."""

WRONG = {
    "q1": [
        ("scale by 8 instead of 7 (absmax/8): the largest value no longer lands on a level",
         "def quantize_int4_sym(x):\n"
         "    x = np.asarray(x, dtype=np.float32)\n"
         "    s = np.float32(np.abs(x).max() / np.float32(8))\n"
         "    if s == 0:\n"
         "        return np.full(x.shape, 8, dtype=np.uint8), s\n"
         "    return (np.clip(np.rint(x / s), -7, 7) + 8).astype(np.uint8), s\n"),
        ("rounds ties away from zero (floor(x + 0.5)) instead of to even",
         "def quantize_int4_sym(x):\n"
         "    x = np.asarray(x, dtype=np.float32)\n"
         "    s = np.float32(np.abs(x).max() / np.float32(7))\n"
         "    if s == 0:\n"
         "        return np.full(x.shape, 8, dtype=np.uint8), s\n"
         "    return (np.clip(np.floor(x / s + np.float32(0.5)), -7, 7) + 8).astype(np.uint8), s\n"),
    ],
    "q2": [
        ("subtracts 8 in uint8: codes below 8 wrap around to 248..255",
         "def dequantize_int4_sym(codes, scale):\n"
         "    return (codes - 8) * np.float32(scale)\n"),
    ],
    "q3": [
        ("assumes all 16 codes are used", "n_distinct_codes = 16\n"),
    ],
    "q4": [
        ("range [min, max] that does not contain 0 (only differs for one-signed data)",
         "def quantize_int4_asym(x):\n"
         "    x = np.asarray(x, dtype=np.float32)\n"
         "    lo, hi = x.min(), x.max()\n"
         "    s = np.float32((hi - lo) / np.float32(15))\n"
         "    z = np.uint8(np.clip(np.rint(-lo / s), 0, 15))\n"
         "    return np.clip(np.rint(x / s) + z, 0, 15).astype(np.uint8), s, z\n"),
    ],
    "q5": [
        ("always negative d = -absmax/8: right for positive maxima, flips blocks whose extreme is negative",
         "def quantize_q4_0_block(block):\n"
         "    block = np.asarray(block, dtype=np.float32)\n"
         "    d = np.float32(np.abs(block).max() / np.float32(-8))\n"
         "    if d == 0:\n"
         "        return np.full(block.shape, 8, dtype=np.uint8), d\n"
         "    return np.clip(np.trunc(block / d + np.float32(8.5)), 0, 15).astype(np.uint8), d\n"),
    ],
    "q6": [
        ("subtracts the 1 instead of adding it back",
         "def dequantize_gptq_v1(codes, scales, stored_zeros, group_size):\n"
         "    s = np.repeat(scales, group_size)[: codes.size]\n"
         "    z = np.repeat(stored_zeros.astype(np.float32) - 1, group_size)[: codes.size]\n"
         "    return (codes.astype(np.float32) - z) * s\n"),
    ],
}
