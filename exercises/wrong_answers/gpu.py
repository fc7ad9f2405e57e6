"""Plausible wrong answers for exercises/gpu.md (see exercises/wrong_answers/README.md)."""

_LANE = ("def lane_weights(packed_row, lane, step, table, scales, group_size):\n"
         "    packed_row = np.asarray(packed_row, dtype=np.uint8)\n"
         "    c = {chunk}\n"
         "{check}"
         "    chunk = packed_row[{start}: {start} + 16]\n"
         "    codes = np.empty(32, dtype=np.uint8)\n"
         "    codes[0::2] = chunk {even}\n"
         "    codes[1::2] = chunk {odd}\n"
         "    scale = np.float32(np.asarray(scales, dtype=np.float32)[{group}])\n"
         "    return np.asarray(table, dtype=np.float32)[codes] * scale\n")
_CHECK = ("    if not 0 <= 16 * c < packed_row.size:\n"
          "        raise ValueError(f'chunk {c} lies past the row')\n")
_RIGHT = dict(chunk="lane + 32 * step", check=_CHECK, start="16 * c", even=">> 4", odd="& 0x0F",
              group="(32 * c) // group_size")
_ROOF = ("def intensity(M, N, K, b_w):\n"
         "    return {flops} / ({moved})\n\n\n"
         "def roofline_time(M, N, K, b_w, bandwidth, peak):\n"
         "    return float({combine}(({moved}) / bandwidth, {flops} / peak))\n")
_MOVED = "N * K * b_w + 2 * M * K + 2 * M * N"
_CROSS = ("def crossover_rows(N, K, b_w, bandwidth, peak_4bit, peak_fp16, max_rows=4096):\n"
          "    for M in range(1, max_rows + 1):\n"
          "        if {cond}:\n"
          "            return {ret}\n"
          "{end}")
_T4 = "roofline_time(M, N, K, b_w, bandwidth, peak_4bit)"
_T16 = "roofline_time(M, N, K, 2.0, bandwidth, peak_fp16)"
_RAISE = "    raise ValueError('no crossover up to max_rows')\n"

WRONG = {
    "q1": [
        ("counts the span from the lowest to the highest address, not the aligned segments touched",
         "def bytes_moved(addresses, segment=32):\n"
         "    a = np.asarray(addresses)\n"
         "    return int(segment * -(-(a.max() - a.min() + 4) // segment))\n"),
        ("one segment per lane, whether or not lanes share it",
         "def bytes_moved(addresses, segment=32):\n"
         "    return segment * len(addresses)\n"),
        ("counts the bytes the lanes use (4 per distinct address), not the segments moved",
         "def bytes_moved(addresses, segment=32):\n"
         "    return 4 * len(np.unique(np.asarray(addresses)))\n"),
        ("segments counted from the first lane's address, not from aligned boundaries",
         "def bytes_moved(addresses, segment=32):\n"
         "    a = np.asarray(addresses)\n"
         "    return segment * len(np.unique((a - a.min()) // segment))\n"),
    ],
    "q2": [
        ("low nibble first (GGUF's and AWQ's habit), not bitsandbytes' high nibble first",
         _LANE.format(**{**_RIGHT, "even": "& 0x0F", "odd": ">> 4"})),
        ("each lane walks a contiguous run of chunks (c = lane * chunks_per_lane + step): not coalesced, and "
         "not the kernel's assignment",
         _LANE.format(**{**_RIGHT, "chunk": "lane * max(1, packed_row.size // 16 // 32) + step"})),
        ("byte offset 32 c: counts weights where bytes are meant",
         _LANE.format(**{**_RIGHT, "start": "32 * c", "check": _CHECK.replace("16 * c", "32 * c")})),
        ("scale index from the chunk number (c // group_size) instead of the weight index",
         _LANE.format(**{**_RIGHT, "group": "c // group_size"})),
        ("the end-of-row check compares weights with bytes (32 c against the byte count): lanes in the "
         "second half of the row refuse their chunk",
         _LANE.format(**{**_RIGHT, "check": _CHECK.replace("16 * c", "32 * c")})),
    ],
    "q3": [
        ("the bytes the threads use, one per lane",
         "v1_bytes_moved = 32\n"),
        ("as if the lanes read consecutive 4-byte words: four segments",
         "v1_bytes_moved = 128\n"),
    ],
    "q4": [
        ("counts only the weights' bytes, not the activations and results",
         _ROOF.format(flops="2 * M * N * K", moved="N * K * b_w", combine="max")),
        ("one operation per multiply-add: M N K instead of 2 M N K",
         _ROOF.format(flops="M * N * K", moved=_MOVED, combine="max")),
        ("activations and results in float32 (4 bytes) instead of float16",
         _ROOF.format(flops="2 * M * N * K", moved="N * K * b_w + 4 * M * K + 4 * M * N", combine="max")),
        ("adds the memory and compute times instead of taking the larger",
         _ROOF.format(flops="2 * M * N * K", moved=_MOVED, combine="(lambda a, b: a + b)")),
    ],
    "q5": [
        ("strictly slower (>) instead of no faster (>=): an exact tie is missed",
         _CROSS.format(cond=f"{_T4} > {_T16}", ret="M", end=_RAISE)),
        ("returns the last M at which 4 bits still win (one too few)",
         _CROSS.format(cond=f"{_T4} >= {_T16}", ret="M - 1", end=_RAISE)),
        ("compares against fp16 on the 4-bit kernel's cores (peak_4bit for both)",
         _CROSS.format(cond=f"{_T4} >= roofline_time(M, N, K, 2.0, bandwidth, peak_4bit)", ret="M", end=_RAISE)),
        ("the ridge point of the 4-bit kernel instead of the comparison of times",
         _CROSS.format(cond="intensity(M, N, K, b_w) >= peak_4bit / bandwidth", ret="M", end=_RAISE)),
        ("returns max_rows when there is no crossover instead of raising",
         _CROSS.format(cond=f"{_T4} >= {_T16}", ret="M", end="    return max_rows\n")),
    ],
}
