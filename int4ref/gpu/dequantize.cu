// dequantize.cu: packed 4-bit codes back to float32 or float16, bit-identical to
// int4ref.dequantize (numpy): value = table[code] * scale in float32, then rounded to the
// output type. int4_sym uses the table (code - 8), whose entries are exact, so
// (code - 8) * scale is the same product numpy computes.
//
// Layout (the one quantize.cu writes):
//   packed  u8  [(n + 1) / 2]  element 2k in the high nibble of byte k, 2k+1 in the low
//   scales  S   [n_groups]     float32 or float16, one per group of group_size values
//   table   f32 [16]           the format's values in code order
//   out     OUT [n]            float32 or float16

#include "common.cu"

// ---------------------------------------------------------------------------------
// ==== dequantize_groups ====
// dequantize_groups. Each thread expands BYTES packed bytes (2 * BYTES values).
//   BYTES = 1: any even group_size, any n (the second value of the last byte of an odd n
//              is not written)
//   BYTES = 8: one 8-byte load and 16 values per thread (two 16-byte stores for float16,
//              four for float32); needs group_size % 16 == 0 and n % 16 == 0, so that the
//              16 values share one scale and every access is aligned
// The 16-entry table is copied to shared memory: all 16 entries sit in different banks,
// so a warp's lookups never conflict.
// Launch: blockDim.x = 256, gridDim.x = ceil(ceil(n / 2) / (256 * BYTES)).

// 16 values of one 8-byte load, scaled, to memory: element 2k from the high nibble
__device__ __forceinline__ void store16(float* out, const float (&v)[16]) {
    INT4REF_ASSERT_ALIGNED(out, 16);
    float4* o = reinterpret_cast<float4*>(out);
#pragma unroll
    for (int q = 0; q < 4; q++) o[q] = make_float4(v[4 * q], v[4 * q + 1], v[4 * q + 2], v[4 * q + 3]);
}
__device__ __forceinline__ void store16(__half* out, const float (&v)[16]) {
    INT4REF_ASSERT_ALIGNED(out, 16);
    unsigned int w[8];
#pragma unroll
    for (int q = 0; q < 8; q++) {
        w[q] = (unsigned int)__half_as_ushort(__float2half_rn(v[2 * q])) |
               ((unsigned int)__half_as_ushort(__float2half_rn(v[2 * q + 1])) << 16);
    }
    uint4* o = reinterpret_cast<uint4*>(out);
    o[0] = make_uint4(w[0], w[1], w[2], w[3]);
    o[1] = make_uint4(w[4], w[5], w[6], w[7]);
}

template <typename S, typename OUT, int BYTES>
__global__ void __launch_bounds__(256)
dequantize_groups(const u8* __restrict__ packed, long long n, int group_size,
                  const float* __restrict__ table, const S* __restrict__ scales,
                  OUT* __restrict__ out) {
    __shared__ float s_table[16];
    if (threadIdx.x < 16) s_table[threadIdx.x] = table[threadIdx.x];
    __syncthreads();

    const long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    const long long e0 = t * 2 * BYTES;  // first value of this thread
    if (e0 >= n) return;
    const float s = to_f32(__ldg(scales + e0 / group_size));  // one group for all 2 * BYTES values

    if (BYTES == 1) {
        const unsigned int b = __ldg(packed + t);
        store_as(out + e0, __fmul_rn(s_table[b >> 4], s));
        if (e0 + 1 < n) store_as(out + e0 + 1, __fmul_rn(s_table[b & 15u], s));
    } else {
        INT4REF_ASSERT_ALIGNED(packed + t * BYTES, 8);
        const uint2 q = __ldg(reinterpret_cast<const uint2*>(packed + t * BYTES));
        float v[16];
#pragma unroll
        for (int k = 0; k < 8; k++) {  // byte k of the 8 (little-endian: byte 0 lowest)
            const unsigned int b = ((k < 4 ? q.x : q.y) >> (8 * (k % 4))) & 0xffu;
            v[2 * k] = __fmul_rn(s_table[b >> 4], s);
            v[2 * k + 1] = __fmul_rn(s_table[b & 15u], s);
        }
        store16(out + e0, v);
    }
}
// ==== end dequantize_groups ====

// ---------------------------------------------------------------------------------
// ==== decode_scales ====
// decode_scales: double-quantized scales back to float32, as ScaleState.decode does:
//   scale[i] = table256[code[i]] * absmax2[i / blocksize] + offset
// two float32 roundings (a product, then a sum; never fused).
// Launch: blockDim.x = 256, gridDim.x = ceil(n / 256).
extern "C" __global__ void __launch_bounds__(256)
decode_scales(const u8* __restrict__ codes, long long n, const float* __restrict__ table256,
              const float* __restrict__ absmax2, int blocksize, float offset,
              float* __restrict__ out) {
    const long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (i >= n) return;
    const float t = __ldg(table256 + __ldg(codes + i));
    out[i] = __fadd_rn(__fmul_rn(t, __ldg(absmax2 + i / blocksize)), offset);
}
// ==== end decode_scales ====
