"""Plausible wrong answers for exercises/memory.md (see exercises/wrong_answers/README.md).

question -> list of (pitfall, the whole answer cell as a student would write it).
"""

WRONG = {
    "q1": [
        ("GiB (2**30 bytes) instead of GB (10**9 bytes)",
         "def weight_gb(n_params, bits_per_weight):\n"
         "    return n_params * bits_per_weight / 8 / 2**30\n"),
        ("bits instead of bytes: forgets the 8",
         "def weight_gb(n_params, bits_per_weight):\n"
         "    return n_params * bits_per_weight / 1e9\n"),
        ("the right value as a float32 (np.float32 arithmetic)",
         "def weight_gb(n_params, bits_per_weight):\n"
         "    return np.float32(n_params) * np.float32(bits_per_weight) / np.float32(8e9)\n"),
    ],
    "q2": [
        ("forgets the zero-point (only visible with zero_bits > 0)",
         "def bits_per_weight(group_size, scale_bits=16, zero_bits=0):\n"
         "    return 4 + scale_bits / group_size\n"),
        ("integer division: exact only when group_size divides the bits",
         "def bits_per_weight(group_size, scale_bits=16, zero_bits=0):\n"
         "    return float(4 + scale_bits // group_size + zero_bits // group_size)\n"),
        ("calls int4ref's formula instead of implementing it",
         "def bits_per_weight(group_size, scale_bits=16, zero_bits=0):\n"
         "    return float(int4ref.bits_per_weight_formula(group_size, scale_bits, zero_bits))\n"),
    ],
    "q3": [
        ("floor division: the partial last group has no scale, an odd count loses its last nibble",
         "def storage_bytes(n_values, group_size, scale_bytes=4, zero_points=False):\n"
         "    n_groups = n_values // group_size\n"
         "    total = n_values // 2 + n_groups * scale_bytes\n"
         "    if zero_points:\n"
         "        total += n_groups // 2\n"
         "    return total\n"),
        ("the right count as a float (math.ceil of true divisions, then / 2)",
         "def storage_bytes(n_values, group_size, scale_bytes=4, zero_points=False):\n"
         "    n_groups = np.ceil(n_values / group_size)\n"
         "    total = np.ceil(n_values / 2) + n_groups * scale_bytes\n"
         "    if zero_points:\n"
         "        total += np.ceil(n_groups / 2)\n"
         "    return total\n"),
        ("one byte per zero-point instead of two per byte",
         "def storage_bytes(n_values, group_size, scale_bytes=4, zero_points=False):\n"
         "    n_groups = -(-n_values // group_size)\n"
         "    total = -(-n_values // 2) + n_groups * scale_bytes\n"
         "    if zero_points:\n"
         "        total += n_groups\n"
         "    return total\n"),
    ],
    "q4": [
        ("counts only the codes", "q4_0_bpw = 4.0\n"),
        ("the right number as a string", "q4_0_bpw = '4.5'\n"),
    ],
    "q5": [
        ("GiB instead of GB, and 4 bits per weight, no scales",
         "fp16_gb = 6.74e9 * 2 / 2**30\nq4_0_gb = 6.74e9 * 0.5 / 2**30\n"),
        ("forgets Q4_0's scales (4 bits per weight)",
         "fp16_gb = 6.74e9 * 2 / 1e9\nq4_0_gb = 6.74e9 * 0.5 / 1e9\n"),
    ],
}
