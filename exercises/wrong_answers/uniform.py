"""Plausible wrong answers for exercises/uniform.md (see exercises/wrong_answers/README.md)."""

_SYM = ("def quantize_int4_sym(x):\n"
        "    x = np.asarray(x, dtype=np.float32)\n"
        "    s = {s}\n"
        "    if s == 0:\n"
        "        return np.full(x.shape, 8, dtype=np.uint8), s\n"
        "    return {codes}, s\n")
_ASYM = ("def quantize_int4_asym(x):\n"
         "    x = np.asarray(x, dtype=np.float32)\n"
         "    lo = min(x.min(), np.float32(0))\n"
         "    hi = max(x.max(), np.float32(0))\n"
         "    s = np.float32((hi - lo) / np.float32(15))\n"
         "    z = {z}\n"
         "    return {codes}, s, z\n")
_ASYM_CODES = "np.clip(np.rint(x / s) + z, 0, 15).astype(np.uint8)"
_Q40 = ("def quantize_q4_0_block(block):\n"
        "    block = np.asarray(block, dtype=np.float32)\n"
        "    {d}\n"
        "    if d == 0:\n"
        "        return np.full(block.shape, 8, dtype=np.uint8), d\n"
        "    codes = np.clip(np.trunc({q} + np.float32(8.5)), 0, 15).astype(np.uint8)\n"
        "    return codes, d\n")
_GSYM = ("def quantize_gptq_sym(x):\n"
         "    x = np.asarray(x, dtype=np.float32)\n"
         "{range}"
         "    s = {s}\n"
         "    codes = {codes}\n"
         "    return codes, s, {z}\n")
_GSYM_RANGE = ("    lo = min(x.min(), np.float32(0))\n"
               "    hi = max(x.max(), np.float32(0), -lo)\n"
               "    if lo < 0:\n"
               "        lo = -hi\n"
               "    if lo == 0 and hi == 0:\n"
               "        lo, hi = np.float32(-1), np.float32(1)\n")
_GSYM_S = "np.float32((hi - lo) / np.float32(15))"
_GSYM_CODES = "np.clip(np.rint(x / s) + np.float32(8), 0, 15).astype(np.uint8)"

WRONG = {
    "q1": [
        ("scale by 8 instead of 7 (absmax/8): the largest value no longer lands on a level",
         _SYM.format(s="np.float32(np.abs(x).max() / np.float32(8))",
                     codes="(np.clip(np.rint(x / s), -7, 7) + 8).astype(np.uint8)")),
        ("rounds ties away from zero (floor(x + 0.5)) instead of to even",
         _SYM.format(s="np.float32(np.abs(x).max() / np.float32(7))",
                     codes="(np.clip(np.floor(x / s + np.float32(0.5)), -7, 7) + 8).astype(np.uint8)")),
        ("divides in float64: x / s rounds differently where the float32 quotient is a tie",
         _SYM.format(s="np.float32(np.abs(x).max() / np.float32(7))",
                     codes="(np.clip(np.rint(x.astype(np.float64) / np.float64(s)), -7, 7) + 8).astype(np.uint8)")),
        ("returns the scale as a Python float (right value, wrong type)",
         _SYM.format(s="float(np.float32(np.abs(x).max() / np.float32(7)))",
                     codes="(np.clip(np.rint(x / np.float32(s)), -7, 7) + 8).astype(np.uint8)")),
        ("calls int4ref instead of implementing it",
         "def quantize_int4_sym(x):\n"
         "    qt = int4ref.quantize(x, \"int4_sym\", group_size=\"tensor\")\n"
         "    return qt.codes, qt.scales[0]\n"),
    ],
    "q2": [
        ("subtracts 8 in uint8: codes below 8 wrap around to 248..255",
         "def dequantize_int4_sym(codes, scale):\n"
         "    return (codes - 8) * np.float32(scale)\n"),
        ("computes in float64 (right values, float64 result)",
         "def dequantize_int4_sym(codes, scale):\n"
         "    return (np.asarray(codes, dtype=np.float64) - 8) * float(scale)\n"),
        ("calls int4ref instead of implementing it",
         "def dequantize_int4_sym(codes, scale):\n"
         "    return int4ref.get_format(\"int4_sym\").levels()[codes] * np.float32(7) * np.float32(scale)\n"),
    ],
    "q3": [
        ("assumes all 16 codes are used", "n_distinct_codes = 16\n"),
        ("the right count as a float", "n_distinct_codes = 12.0\n"),
    ],
    "q4": [
        ("range [min, max] that does not contain 0 (only differs for one-signed data)",
         "def quantize_int4_asym(x):\n"
         "    x = np.asarray(x, dtype=np.float32)\n"
         "    lo, hi = x.min(), x.max()\n"
         "    s = np.float32((hi - lo) / np.float32(15))\n"
         "    z = np.uint8(np.clip(np.rint(-lo / s), 0, 15))\n"
         "    return np.clip(np.rint(x / s) + z, 0, 15).astype(np.uint8), s, z\n"),
        ("rounds half up (floor(v + 0.5)), in the codes and in the zero-point",
         _ASYM.format(z="np.uint8(np.clip(np.floor(-lo / s + np.float32(0.5)), 0, 15))",
                      codes="np.clip(np.floor(x / s + np.float32(0.5)) + z, 0, 15).astype(np.uint8)")),
        ("keeps the zero-point as a float32 (right value, wrong dtype)",
         _ASYM.format(z="np.clip(np.rint(-lo / s), 0, 15).astype(np.float32)",
                      codes="np.clip(np.rint(x / s) + z, 0, 15).astype(np.uint8)")),
        ("codes as int64 (right values, wrong dtype)",
         _ASYM.format(z="np.uint8(np.clip(np.rint(-lo / s), 0, 15))",
                      codes="np.clip(np.rint(x / s) + z, 0, 15).astype(np.int64)")),
    ],
    "q5": [
        ("always negative d = -absmax/8: right for positive maxima, flips blocks whose extreme is negative",
         _Q40.format(d="d = np.float32(np.abs(block).max() / np.float32(-8))",
                     q="block * (np.float32(1) / d)")),
        ("fixes the sign but divides by d instead of multiplying by the float32 1/d",
         _Q40.format(d="d = np.float32(block[np.argmax(np.abs(block))] / np.float32(-8))", q="block / d")),
        ("a +- tie for the largest magnitude resolved to the positive value, wherever it is",
         _Q40.format(d="m = block.max() if block.max() >= -block.min() else block.min()\n"
                       "    d = np.float32(m / np.float32(-8))",
                     q="block * (np.float32(1) / d)")),
    ],
    "q6": [
        ("s = 2 absmax / 15 for every tensor: wrong when there is no negative value",
         _GSYM.format(range="    a = np.abs(x).max()\n    a = a if a > 0 else np.float32(1)\n",
                      s="np.float32(2 * a / np.float32(15))", codes=_GSYM_CODES, z="np.uint8(8)")),
        ("rounds half up: the -max|x| tie goes to code 1 instead of 0",
         _GSYM.format(range=_GSYM_RANGE, s=_GSYM_S,
                      codes="np.clip(np.floor(x / s + np.float32(0.5)) + np.float32(8), 0, 15).astype(np.uint8)",
                      z="np.uint8(8)")),
        ("no fallback for an all-zero tensor: s = 0 and 0 / 0",
         _GSYM.format(range="    lo = min(x.min(), np.float32(0))\n    hi = max(x.max(), np.float32(0), -lo)\n"
                            "    if lo < 0:\n        lo = -hi\n",
                      s=_GSYM_S,
                      codes="np.clip(np.nan_to_num(np.rint(x / s)) + np.float32(8), 0, 15).astype(np.uint8)",
                      z="np.uint8(8)")),
        ("the zero-point as a Python int",
         _GSYM.format(range=_GSYM_RANGE, s=_GSYM_S, codes=_GSYM_CODES, z="8")),
    ],
}
