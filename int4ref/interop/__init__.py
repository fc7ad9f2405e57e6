"""Byte-exact bridges between int4ref and real libraries: bitsandbytes (4-bit NF4/FP4), GGUF (Q4_0, Q4_1,
IQ4_NL) and ggml's CPU product of Q4_0 weights with Q8_0 activations (ggml_dot)."""
from . import bitsandbytes, ggml_dot, gguf  # noqa: F401
