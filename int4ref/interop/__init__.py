"""Bridges between int4ref and other libraries' 4-bit formats (GGUF / ggml)."""
