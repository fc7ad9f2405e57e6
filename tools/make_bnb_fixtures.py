"""Record bitsandbytes' own outputs on edge cases, so CI (which has no torch) can check parity.

Run with a Python that has bitsandbytes and torch (``pip install -e ".[peers]"``):

    python tools/make_bnb_fixtures.py tests/data/bnb_parity.npz

Each case stores the input, bitsandbytes' packed bytes, absmax, offset, state2 absmax and
dequantized values, and the file records the versions and torch's CPU settings.
"""
from __future__ import annotations

import json
import sys

import bitsandbytes
import bitsandbytes.functional as F
import numpy as np
import torch

from int4ref.codebooks import FP4_BNB, NF4


def cases(rng):
    nf4_mid = (NF4[:-1] + NF4[1:]) / np.float32(2)
    fp4_sorted = np.sort(FP4_BNB)
    fp4_mid = (fp4_sorted[:-1] + fp4_sorted[1:]) / np.float32(2)
    yield "randn_2d", rng.standard_normal((96, 64)).astype(np.float32)
    yield "odd_length", rng.standard_normal(999).astype(np.float32)
    yield "one_value", np.array([0.3], dtype=np.float32)
    yield "two_values", np.array([-1.0, 1.0], dtype=np.float32)
    yield "partial_block", rng.standard_normal(64 * 5 + 17).astype(np.float32)
    z = rng.standard_normal(64 * 8).astype(np.float32)
    z[64:192] = 0
    yield "zero_blocks", z
    yield "all_zero", np.zeros(300, dtype=np.float32)
    zt = rng.standard_normal(64 * 3 + 5).astype(np.float32)
    zt[-5:] = 0
    yield "zero_partial_block", zt
    yield "fp16", rng.standard_normal((33, 65)).astype(np.float16)
    yield "tiny_values", (rng.standard_normal(640) * 1e-30).astype(np.float32)
    yield "huge_values", (rng.standard_normal(640) * 1e30).astype(np.float32)
    # values exactly on the midpoints (ties) with absmax 1 in each block of 32
    ties = np.concatenate([np.r_[nf4_mid, fp4_mid, -nf4_mid][:31], [1.0]]).astype(np.float32)
    yield "ties", np.tile(ties, 8)
    yield "outlier", np.r_[rng.standard_normal(4095), [1000.0]].astype(np.float32)
    yield "constant", np.full(777, 0.25, dtype=np.float32)
    yield "laplace_3d", rng.laplace(size=(4, 50, 37)).astype(np.float32)


def main(path):
    rng = np.random.default_rng(20261122)
    out, index = {}, []
    k = 0
    for name, x in cases(rng):
        out["x_" + name] = x
        for quant_type in ("nf4", "fp4"):
            for blocksize in (32, 64, 256, 4096):
                for cs in (False, True):
                    p, s = F.quantize_4bit(torch.from_numpy(x), blocksize=blocksize, quant_type=quant_type,
                                           compress_statistics=cs)
                    d = F.dequantize_4bit(p, s).numpy().reshape(x.shape)
                    key = f"c{k}"
                    out[key + "_packed"] = p.numpy()
                    out[key + "_absmax"] = s.absmax.numpy()
                    out[key + "_deq"] = d
                    if cs:
                        out[key + "_offset"] = np.float32(s.offset.item())
                        out[key + "_absmax2"] = s.state2.absmax.numpy()
                    index.append(dict(key=key, name=name, quant_type=quant_type, blocksize=blocksize,
                                      compress_statistics=cs))
                    k += 1
    meta = dict(
        bitsandbytes=bitsandbytes.__version__,
        torch=torch.__version__,
        torch_cpu_capability=torch.backends.cpu.get_cpu_capability(),
        simd_width=16 if "AVX512" in torch.backends.cpu.get_cpu_capability() else 8,
        num_threads=torch.get_num_threads(),
        cases=index,
    )
    np.savez_compressed(path, meta=np.array(json.dumps(meta)), **out)
    print(f"wrote {len(index)} cases to {path}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/data/bnb_parity.npz")
