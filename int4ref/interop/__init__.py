"""Byte-exact bridges between int4ref and real libraries: bitsandbytes (4-bit NF4/FP4) and GGUF (Q4_0, Q4_1, IQ4_NL)."""
from . import bitsandbytes, gguf  # noqa: F401
