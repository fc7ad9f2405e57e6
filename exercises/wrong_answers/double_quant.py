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
