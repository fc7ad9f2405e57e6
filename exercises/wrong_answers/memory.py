"""Plausible wrong answers for exercises/memory.md (see exercises/wrong_answers/README.md).

question -> list of (pitfall, the whole answer cell as a student would write it).
"""

WRONG = {
    "q1": [
        ("GB (10**9 bytes) instead of GiB (2**30 bytes)",
         "def weight_gib(n_params, bits_per_weight):\n"
         "    return n_params * bits_per_weight / 8 / 1e9\n"),
    ],
    "q2": [
        ("forgets the zero-point (only visible with zero_bits > 0)",
         "def bits_per_weight(group_size, scale_bits=16, zero_bits=0):\n"
         "    return 4 + scale_bits / group_size\n"),
    ],
    "q3": [
        ("floor division: the partial last group has no scale, an odd count loses its last nibble",
         "def storage_bytes(n_values, group_size, scale_bytes=4, zero_points=False):\n"
         "    n_groups = n_values // group_size\n"
         "    total = n_values // 2 + n_groups * scale_bytes\n"
         "    if zero_points:\n"
         "        total += n_groups // 2\n"
         "    return total\n"),
    ],
    "q4": [
        ("counts only the codes", "q4_0_bpw = 4.0\n"),
    ],
    "q5": [
        ("decimal GB and 4 bits per weight, no scales",
         "fp16_gib = 6.74e9 * 2 / 1e9\nnf4_gib = 6.74e9 * 0.5 / 1e9\n"),
    ],
    "q6": [
        ("drops the second-level absmax instead of dividing it over group_size * blocksize",
         "def dq_bits_per_weight(group_size=64, code_bits=8, blocksize=256):\n"
         "    return 4 + code_bits / group_size\n"),
    ],
}
