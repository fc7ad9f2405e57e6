"""Byte-exact bridges between int4ref and real libraries: bitsandbytes (4-bit NF4/FP4), GGUF
(every 4-bit block type of ggml: Q4_0, Q4_1, IQ4_NL, IQ4_XS, Q4_K, MXFP4, NVFP4, and Q6_K,
Q8_0 around them; the Q4_K_M tensor mix), ggml's CPU product of Q4_0 weights with Q8_0
activations (ggml_dot), and the MXFP4 / NVFP4 checkpoint layouts of gpt-oss and
compressed-tensors (fp4_checkpoint)."""
from . import bitsandbytes, fp4_checkpoint, ggml_dot, gguf  # noqa: F401
