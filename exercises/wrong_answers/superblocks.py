"""Plausible wrong answers for exercises/superblocks.md (see exercises/wrong_answers/README.md)."""

# q1: pack and unpack in one answer cell; {fields} replaced per pitfall.
_SCALES = ("def pack_scales_mins(sc, m):\n"
           "    sc, m = np.asarray(sc).astype(np.int64), np.asarray(m).astype(np.int64)\n"
           "{check}"
           "    out = np.empty((len(sc), 12), dtype=np.int64)\n"
           "    out[:, 0:4] = {b0}\n"
           "    out[:, 4:8] = {b4}\n"
           "    out[:, 8:12] = {b8}\n"
           "    return {ret}\n\n\n"
           "def unpack_scales_mins(b):\n"
           "    b = np.asarray(b, dtype=np.uint8)\n"
           "    sc = np.concatenate([{sc_lo}, {sc_hi}], axis=1)\n"
           "    m = np.concatenate([{m_lo}, {m_hi}], axis=1)\n"
           "    return sc, m\n")
_CHECK = ("    if sc.min(initial=0) < 0 or m.min(initial=0) < 0 or sc.max(initial=0) > 63 or m.max(initial=0) > 63:\n"
          "        raise ValueError('6-bit scales and mins must lie in 0..63')\n")
_RIGHT1 = dict(
    check=_CHECK,
    b0="sc[:, 0:4] | ((sc[:, 4:8] >> 4) << 6)",
    b4="m[:, 0:4] | ((m[:, 4:8] >> 4) << 6)",
    b8="(sc[:, 4:8] & 0xF) | ((m[:, 4:8] & 0xF) << 4)",
    ret="out.astype(np.uint8)",
    sc_lo="b[:, 0:4] & 63", sc_hi="(b[:, 8:12] & 0xF) | ((b[:, 0:4] >> 6) << 4)",
    m_lo="b[:, 4:8] & 63", m_hi="(b[:, 8:12] >> 4) | ((b[:, 4:8] >> 6) << 4)",
)
_SEQUENTIAL = (
    "def pack_scales_mins(sc, m):\n"
    "    sc, m = np.asarray(sc).astype(np.int64), np.asarray(m).astype(np.int64)\n"
    + _CHECK +
    "    values = np.concatenate([sc, m], axis=1)          # 16 six-bit fields, one after the other\n"
    "    bits = (values[:, :, None] >> np.arange(6)) & 1\n"
    "    bits = bits.reshape(len(values), 12, 8)\n"
    "    return (bits << np.arange(8)).sum(axis=2).astype(np.uint8)\n\n\n"
    "def unpack_scales_mins(b):\n"
    "    b = np.asarray(b, dtype=np.uint8).astype(np.int64)\n"
    "    bits = ((b[:, :, None] >> np.arange(8)) & 1).reshape(len(b), 16, 6)\n"
    "    values = (bits << np.arange(6)).sum(axis=2).astype(np.uint8)\n"
    "    return values[:, :8], values[:, 8:]\n"
)

# q2: {codes} builds q (8, 32) from chunks (4, 32); {d}, {dmin}, {combine} vary. The scale bytes are
# decoded inline (right), so that each pitfall is caught on its own, whatever q1's answer.
_Q4K = ("def dequantize_q4_k_block(block):\n"
        "    b = np.asarray(block, dtype=np.uint8).reshape(-1)\n"
        "{check}"
        "    d = b[{d}].copy().view('<f2'){to32}[0]\n"
        "    dmin = b[{dmin}].copy().view('<f2'){to32}[0]\n"
        "    s = b[4:16].reshape(1, 12)\n"
        "    sc = np.concatenate([s[:, 0:4] & 63, (s[:, 8:12] & 0xF) | ((s[:, 0:4] >> 6) << 4)], axis=1)\n"
        "    m = np.concatenate([s[:, 4:8] & 63, (s[:, 8:12] >> 4) | ((s[:, 4:8] >> 6) << 4)], axis=1)\n"
        "    chunks = b[16:].reshape(4, 32)\n"
        "    q = {codes}\n"
        "    scale = d * sc[0]{cast}\n"
        "    offset = dmin * m[0]{cast}\n"
        "    return ({combine}).reshape(-1){final}\n")
_Q4K_CHECK = ("    if b.size != 144:\n"
              "        raise ValueError('a Q4_K super-block is 144 bytes')\n")
_RIGHT2 = dict(check=_Q4K_CHECK, d="0:2", dmin="2:4", to32=".astype(np.float32)", cast=".astype(np.float32)",
               codes="np.stack([chunks & 0x0F, chunks >> 4], axis=1).reshape(8, 32).astype(np.float32)",
               combine="scale[:, None] * q - offset[:, None]", final="")

# q3: both functions in one cell.
_MX = ("def e8m0_to_float(e):\n"
       "    e = np.asarray(e, dtype=np.uint8)\n"
       "    with np.errstate(over='ignore'):\n"
       "        out = {e8m0}\n"
       "    return {e8m0_ret}\n\n\n"
       "def dequantize_mxfp4(data):\n"
       "    blocks = np.asarray(data, dtype=np.uint8).reshape(-1, 17)\n"
       "    magnitudes = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6], dtype=np.float32)\n"
       "    table = {table}\n"
       "    codes = {codes}\n"
       "    scale = np.ldexp(np.float32(1), blocks[:, :1].astype(np.int32) - {bias}).astype(np.float32)\n"
       "    with np.errstate(over='ignore'):\n"
       "        return (table[codes] * scale).reshape(-1)\n")
_RIGHT3 = dict(
    e8m0="np.ldexp(np.float32(1), e.astype(np.int32) - 127).astype(np.float32)",
    e8m0_ret="np.where(e == 255, np.float32(np.nan), out).astype(np.float32)",
    table="np.concatenate([magnitudes, -magnitudes]) + np.float32(0)",
    codes="np.concatenate([blocks[:, 1:] & 0x0F, blocks[:, 1:] >> 4], axis=1)",
    bias="127",
)

# q4: {q} rounds x / step to an integer; {pre} and {post} adjust the input and the codes.
_E4M3 = ("def encode_e4m3(x):\n"
         "    x = np.asarray(x, dtype=np.float32)\n"
         "{check}"
         "{pre}"
         "    _, k = np.frexp(x)\n"
         "    exponent = np.maximum(k.astype(np.int32) - 1, -6)\n"
         "    step = np.ldexp(np.float32(1), exponent - 3).astype(np.float32)\n"
         "    q = {q}\n"
         "    normal = x >= np.float32(2.0 ** -6)\n"
         "    codes = np.where(normal, 8 * (exponent + 7) + q - 8, {sub})\n"
         "    return {ret}\n")
_E4M3_CHECK = ("    if not np.isfinite(x).all() or (x < 0).any():\n"
               "        raise ValueError('E4M3 scales are finite and non-negative')\n")
_RIGHT4 = dict(check=_E4M3_CHECK, pre="    x = np.minimum(x, np.float32(448))\n",
               q="np.round(x / step).astype(np.int32)", sub="q", ret="codes.astype(np.uint8)")

# q5: the predictions, from the parameter counts of the question.
_Q5 = ("n_q6k_tensors = {n}\n"
       "params_q6k = {p6}\n"
       "params_f32 = 768 + 12 * 2 * 768\n"
       "params_all = 2 * 32000 * 768 + params_f32 + 12 * (4 * 768 * 768 + 3 * 2048 * 768)\n"
       "q4km_bpw = {bpw}\n")
_BPW = ("8 * (params_q6k * 210 / 256 + (params_all - params_q6k - params_f32) * 144 / 256 + params_f32 * 4) "
        "/ params_all")
_LAYER_Q6K = "768 * 768 + 768 * 2048"

WRONG = {
    "q1": [
        ("the top two bits of sc[j + 4] in byte j + 4 and those of m[j + 4] in byte j (the wrong byte; "
         "round-trips its own packer)",
         _SCALES.format(**{**_RIGHT1, "b0": "sc[:, 0:4] | ((m[:, 4:8] >> 4) << 6)",
                           "b4": "m[:, 0:4] | ((sc[:, 4:8] >> 4) << 6)",
                           "sc_hi": "(b[:, 8:12] & 0xF) | ((b[:, 4:8] >> 6) << 4)",
                           "m_hi": "(b[:, 8:12] >> 4) | ((b[:, 0:4] >> 6) << 4)"})),
        ("sequential packing: the 16 six-bit fields one after the other, 96 bits little-endian",
         _SEQUENTIAL),
        ("mins and scales swapped: mins in bytes 0-3 and in the low nibbles, scales in bytes 4-7",
         _SCALES.format(**{**_RIGHT1, "b0": "m[:, 0:4] | ((m[:, 4:8] >> 4) << 6)",
                           "b4": "sc[:, 0:4] | ((sc[:, 4:8] >> 4) << 6)",
                           "b8": "(m[:, 4:8] & 0xF) | ((sc[:, 4:8] & 0xF) << 4)",
                           "sc_lo": "b[:, 4:8] & 63", "m_lo": "b[:, 0:4] & 63",
                           "sc_hi": "(b[:, 8:12] >> 4) | ((b[:, 4:8] >> 6) << 4)",
                           "m_hi": "(b[:, 8:12] & 0xF) | ((b[:, 0:4] >> 6) << 4)"})),
        ("the right bits in int64 'bytes' (no cast to uint8)",
         _SCALES.format(**{**_RIGHT1, "ret": "out"})),
        ("the low four bits of sc[j + 4] in the HIGH nibble of byte j + 8, those of m[j + 4] in the low one",
         _SCALES.format(**{**_RIGHT1, "b8": "((sc[:, 4:8] & 0xF) << 4) | (m[:, 4:8] & 0xF)",
                           "sc_hi": "(b[:, 8:12] >> 4) | ((b[:, 0:4] >> 6) << 4)",
                           "m_hi": "(b[:, 8:12] & 0xF) | ((b[:, 4:8] >> 6) << 4)"})),
        ("unpack forgets to mask bytes 0-7 with 63: the top bits of sc[j + 4] stay in sc[j]",
         _SCALES.format(**{**_RIGHT1, "sc_lo": "b[:, 0:4]", "m_lo": "b[:, 4:8]"})),
        ("no range check: a value of 64 or more spills into the neighbouring field",
         _SCALES.format(**{**_RIGHT1, "check": ""})),
        ("calls int4ref's q4_k helpers instead of implementing them",
         "def pack_scales_mins(sc, m):\n"
         "    return q4_k.pack_scales_mins(sc, m)\n\n\n"
         "def unpack_scales_mins(b):\n"
         "    return q4_k.unpack_scales_mins(np.asarray(b, dtype=np.uint8))\n"),
    ],
    "q2": [
        ("neighbours in one byte (element 2i low, 2i + 1 high), the bitsandbytes habit, not sub-blocks 2c and 2c + 1",
         _Q4K.format(**{**_RIGHT2, "codes": "np.stack([chunks & 0x0F, chunks >> 4], axis=-1).reshape(8, 32)"
                                            ".astype(np.float32)"})),
        ("low nibbles of all 128 bytes first (sub-blocks 0-3), then the high nibbles (sub-blocks 4-7)",
         _Q4K.format(**{**_RIGHT2, "codes": "np.concatenate([chunks & 0x0F, chunks >> 4]).reshape(8, 32)"
                                            ".astype(np.float32)"})),
        ("adds the minimum: + dmin * m instead of - dmin * m",
         _Q4K.format(**{**_RIGHT2, "combine": "scale[:, None] * q + offset[:, None]"})),
        ("computes in float16: d and dmin left as float16 (numpy keeps float16 * uint8 in float16), "
         "cast to float32 at the end",
         _Q4K.format(**{**_RIGHT2, "to32": "", "cast": "",
                        "codes": "np.stack([chunks & 0x0F, chunks >> 4], axis=1).reshape(8, 32)",
                        "final": ".astype(np.float32)"})),
        ("d and dmin read from each other's bytes",
         _Q4K.format(**{**_RIGHT2, "d": "2:4", "dmin": "0:2"})),
        ("no size check: 143 bytes or two blocks decode to something",
         _Q4K.format(**{**_RIGHT2, "check": "    b = np.resize(b, 144)\n"})),
        ("float64 arithmetic and a float64 result (the values are the same here: every product is exact)",
         _Q4K.format(**{**_RIGHT2, "to32": ".astype(np.float64)", "cast": ".astype(np.float64)"})),
        ("calls int4ref's GGUF reader instead of implementing it",
         "def dequantize_q4_k_block(block):\n"
         "    return gguf.dequantize(np.asarray(block, dtype=np.uint8).reshape(-1), 'Q4_K').reshape(-1)\n"),
    ],
    "q3": [
        ("subtracts 127 from a uint8 exponent: e - 127 wraps around below 127",
         _MX.format(**{**_RIGHT3, "e8m0": "(np.float32(2) ** (e - 127)).astype(np.float32)"})),
        ("e = 0 taken as zero, the IEEE habit (E8M0 has no zero: it is 2^-127)",
         _MX.format(**{**_RIGHT3, "e8m0_ret": "np.where(e == 0, np.float32(0), "
                                              "np.where(e == 255, np.float32(np.nan), out)).astype(np.float32)"})),
        ("e = 255 decoded as 2^128 (inf), not E8M0's NaN",
         _MX.format(**{**_RIGHT3, "e8m0_ret": "out"})),
        ("ggml's half scale 2^(e - 128) with the plain E2M1 table (ggml doubles the table): values halved",
         _MX.format(**{**_RIGHT3, "bias": "128"})),
        ("neighbours in one byte (element 2j low, 2j + 1 high), not j and j + 16",
         _MX.format(**{**_RIGHT3, "codes": "np.stack([blocks[:, 1:] & 0x0F, blocks[:, 1:] >> 4], axis=-1)"
                                           ".reshape(-1, 32)"})),
        ("code 8 decoded as -0.0 (E2M1's own value; ggml decodes +0.0)",
         _MX.format(**{**_RIGHT3, "table": "np.concatenate([magnitudes, -magnitudes])"})),
        ("the sign taken from bit 0 instead of bit 3",
         _MX.format(**{**_RIGHT3, "table": "np.stack([magnitudes, -magnitudes], axis=1).reshape(-1) + np.float32(0)"})),
        ("calls int4ref's GGUF reader instead of implementing it",
         _MX.format(**_RIGHT3).split("def dequantize_mxfp4")[0]
         + "def dequantize_mxfp4(data):\n"
           "    return gguf.dequantize(np.asarray(data, dtype=np.uint8).reshape(-1, 17), 'MXFP4').reshape(-1)\n"),
    ],
    "q4": [
        ("ggml's rounding: ties up (floor(v + 0.5)) instead of to even",
         _E4M3.format(**{**_RIGHT4, "q": "np.floor(x / step + np.float32(0.5)).astype(np.int32)"})),
        ("truncates the mantissa instead of rounding",
         _E4M3.format(**{**_RIGHT4, "q": "np.floor(x / step).astype(np.int32)"})),
        ("flushes subnormals (below 2^-6) to zero",
         _E4M3.format(**{**_RIGHT4, "sub": "0"})),
        ("no saturation: from 464 up the value rounds past 448 into the NaN byte 0x7F",
         _E4M3.format(**{**_RIGHT4, "pre": "", "ret": "np.minimum(codes, 0x7F).astype(np.uint8)"})),
        ("ggml's UE4M3 overflow: everything from 256 up stored as 448",
         _E4M3.format(**{**_RIGHT4, "ret": "np.where(x >= 256, 0x7E, codes).astype(np.uint8)"})),
        ("the right codes as int32 (no cast to uint8)",
         _E4M3.format(**{**_RIGHT4, "ret": "codes"})),
        ("takes |x| instead of refusing a negative scale, and lets NaN through",
         _E4M3.format(**{**_RIGHT4, "check": "    x = np.abs(np.nan_to_num(x, posinf=448.0))\n"})),
    ],
    "q5": [
        ("forgets output.weight (Q6_K: the largest matrix of a small model)",
         _Q5.format(n="2 * 6", p6=f"6 * ({_LAYER_Q6K})", bpw=_BPW)),
        ("use_more_bits read as the first and last eighth only (layers 0, 10, 11), not every third between",
         _Q5.format(n="1 + 2 * 3", p6=f"32000 * 768 + 3 * ({_LAYER_Q6K})", bpw=_BPW)),
        ("bits per weight over the quantized matrices only (norms left out of both counts)",
         _Q5.format(n="1 + 2 * 6", p6=f"32000 * 768 + 6 * ({_LAYER_Q6K})",
                    bpw=_BPW.replace(" + params_f32 * 4", "").replace("/ params_all", "/ (params_all - params_f32)"))),
        ("'Q4_K_M is 4.5 bits': no tensor in Q6_K",
         "n_q6k_tensors = 0\nq4km_bpw = 4.5\n"),
        ("the token embedding counted as Q6_K too (only the output matrix is)",
         _Q5.format(n="2 + 2 * 6", p6=f"2 * 32000 * 768 + 6 * ({_LAYER_Q6K})", bpw=_BPW)),
    ],
}
