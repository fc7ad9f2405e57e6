// common.cu: helpers shared by quantize.cu, dequantize.cu and gemv.cu.
//
// This file is a header. int4ref.gpu pastes it in place of the line
// `#include "common.cu"` before compiling (so that CuPy's kernel cache, which hashes
// the source string, sees every line), and it carries the .cu suffix so that the
// package's data rule ships it with the other kernel sources.
//
// Bit-exactness. The quantize and dequantize kernels must give the same bits as
// int4ref's numpy reference. Every float operation whose rounding matters is written
// with an explicit round-to-nearest-even intrinsic (__fmul_rn, __fadd_rn, __fsub_rn,
// __fdiv_rn: IEEE-754 single precision, like numpy's float32 ufuncs), and the modules
// are compiled with --fmad=false --ftz=false --prec-div=true, so that nothing is fused
// into an FMA and subnormals are kept, exactly as on the CPU. The GEMV uses fmaf() on
// purpose: an explicit fmaf is still an FMA under --fmad=false.
#pragma once

#ifndef INT4REF_EMULATE
#include <cuda_fp16.h>
#endif

#define WARP_SIZE 32
#define FULL_MASK 0xffffffffu

typedef unsigned char u8;

// The CPU emulator used by the test suite checks vector-load alignment here; on the
// GPU a misaligned 16-byte load is a hard fault, so the host code checks before launch.
#ifndef INT4REF_ASSERT_ALIGNED
#define INT4REF_ASSERT_ALIGNED(ptr, bytes)
#endif

// Error flags a kernel can raise (atomicOr into an int the host reads back).
#define FLAG_NONFINITE 1        // NaN or Inf in the input
#define FLAG_SCALE_OVERFLOW 2   // a float16 scale would be > 65504
#define FLAG_SCALE_UNDERFLOW 4  // a nonzero scale rounds to 0 in float16

// ---------------------------------------------------------------------------------
// conversions

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(__half v) { return __half2float(v); }

// float -> storage type; float16 rounds to nearest even, like numpy's astype
__device__ __forceinline__ void store_as(float* p, float v) { *p = v; }
__device__ __forceinline__ void store_as(__half* p, float v) { *p = __float2half_rn(v); }


// the two float16 values packed in a 32-bit word, low half first (memory order)
__device__ __forceinline__ float2 halves_to_float2(unsigned int w) {
    return make_float2(__half2float(__ushort_as_half((unsigned short)(w & 0xffffu))),
                       __half2float(__ushort_as_half((unsigned short)(w >> 16))));
}

// eight float16 values (one 16-byte vector) to float32
__device__ __forceinline__ void halves8_to_float(uint4 r, float (&f)[8]) {
    float2 a = halves_to_float2(r.x), b = halves_to_float2(r.y);
    float2 c = halves_to_float2(r.z), d = halves_to_float2(r.w);
    f[0] = a.x; f[1] = a.y; f[2] = b.x; f[3] = b.y;
    f[4] = c.x; f[5] = c.y; f[6] = d.x; f[7] = d.y;
}

// ---------------------------------------------------------------------------------
// loads

// 16 bytes through the read-only data cache (one 128-bit load)
__device__ __forceinline__ uint4 load16(const void* p) {
    INT4REF_ASSERT_ALIGNED(p, 16);
    return __ldg(reinterpret_cast<const uint4*>(p));
}

// 16 bytes that are read once: "evict first", so that data that is reused (the
// activations) keeps its place in L1
__device__ __forceinline__ uint4 load16_stream(const void* p) {
    INT4REF_ASSERT_ALIGNED(p, 16);
    return __ldcs(reinterpret_cast<const uint4*>(p));
}

// ---------------------------------------------------------------------------------
// warp reductions (every lane gets the result)

__device__ __forceinline__ float warp_sum(float v) {
    for (int offset = WARP_SIZE / 2; offset > 0; offset >>= 1) {
        v += __shfl_xor_sync(FULL_MASK, v, offset);
    }
    return v;
}

// maximum over aligned segments of `width` lanes (a power of two, at most 32):
// lanes [0, width) reduce together, lanes [width, 2 width) together, and so on
__device__ __forceinline__ float segment_max(float v, int width) {
    for (int offset = width / 2; offset > 0; offset >>= 1) {
        v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, offset));
    }
    return v;
}
