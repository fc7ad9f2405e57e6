// quantize.cu: blockwise (group-wise) 4-bit quantization, bit-identical to
// int4ref.quantize(x, format, group_size) for nf4, fp4_bnb, lloyd_max and int4_sym.
//
// Layout. x (n values, float32 or float16) is the flattened tensor, cut into groups of
// group_size consecutive values (group_size even; the last group may be shorter).
// Outputs:
//   packed  u8 [(n + 1) / 2]   two codes per byte, bitsandbytes' order: element 2k in the
//                              HIGH nibble of byte k, element 2k+1 in the low nibble; an
//                              odd n is padded with code 0 (int4ref.packing.pack_nibbles)
//   scales     [n_groups]      float32, or float16 when scales_are_half: absmax (table
//                              formats) or absmax / 7 (int4_sym), rounded to that type
//   flags   int                FLAG_* bits (common.cu); the host raises on any of them
//
// Arithmetic, as int4ref.formats.quantize_groups does it in float32:
//   table formats: inv = 1 / max(scale, float32(1e-38));  v = clamp(x * inv, -1, 1);
//                  code = the table entry nearest to v, a tie going to the LOWER value:
//                  position = number of midpoints strictly below v, code = order[position]
//   int4_sym:      q = scale != 0 ? rint(x / scale) : 0  (round half to even);
//                  code = clamp(q, -7, 7) + 8
// where scale is the value as stored (after rounding to float16 if so stored), so that
// dequantization uses the scale the codes were chosen for.

#include "common.cu"

// float32(1e-38) is a subnormal; this is the bit pattern numpy gives np.float32(1e-38)
#define TINY_ABSMAX __int_as_float(0x006ce3ee)

// ==== table_code ====
// Nearest table entry for the table formats. s_mid holds the 15 midpoints between
// consecutive SORTED table values (float32, non-decreasing), `order` the code of each
// sorted position, 4 bits per position. A 4-step binary search counts the midpoints
// strictly below v, so v exactly on a midpoint goes to the lower entry (bitsandbytes).
__device__ __forceinline__ int table_code(float v, const float* s_mid, unsigned long long order) {
    int pos = 0;
    if (v > s_mid[7]) pos = 8;
    if (v > s_mid[pos + 3]) pos += 4;
    if (v > s_mid[pos + 1]) pos += 2;
    if (v > s_mid[pos]) pos += 1;
    return (int)((order >> (4 * pos)) & 15ull);
}
// ==== end table_code ====

// ==== int_sym_code ====
// int4_sym: round half to even (rintf), clamp, offset by 8
__device__ __forceinline__ int int_sym_code(float v, float scale) {
    float q = scale != 0.0f ? rintf(__fdiv_rn(v, scale)) : 0.0f;
    q = fminf(fmaxf(q, -7.0f), 7.0f);
    return (int)q + 8;
}
// ==== end int_sym_code ====
// Load VEC values starting at element i as float32.
// VEC = 2: two scalar loads; element i + 1 may lie past the end (odd n) and reads as 0.
template <typename T>
__device__ __forceinline__ void load_values(const T* x, long long i, long long n, float (&v)[2]) {
    v[0] = to_f32(__ldg(x + i));
    v[1] = i + 1 < n ? to_f32(__ldg(x + i + 1)) : 0.0f;
}
// VEC = 16 / sizeof(T): one 16-byte load (the host checks alignment and that n and
// group_size are multiples of VEC, so it never reads past the end)
__device__ __forceinline__ void load_values(const float* x, long long i, long long, float (&v)[4]) {
    uint4 r = load16(x + i);
    v[0] = __uint_as_float(r.x); v[1] = __uint_as_float(r.y);
    v[2] = __uint_as_float(r.z); v[3] = __uint_as_float(r.w);
}
__device__ __forceinline__ void load_values(const __half* x, long long i, long long, float (&v)[8]) {
    halves8_to_float(load16(x + i), v);
}

// Store VEC / 2 packed bytes (byte k in bits 8k..8k+7, little-endian memory order)
__device__ __forceinline__ void store_packed(u8* p, unsigned int bytes, int n_bytes) {
    if (n_bytes == 1) {
        *p = (u8)bytes;
    } else if (n_bytes == 2) {
        INT4REF_ASSERT_ALIGNED(p, 2);
        *reinterpret_cast<unsigned short*>(p) = (unsigned short)bytes;
    } else {
        INT4REF_ASSERT_ALIGNED(p, 4);
        *reinterpret_cast<unsigned int*>(p) = bytes;
    }
}

// ---------------------------------------------------------------------------------
// ==== quantize_groups ====
// quantize_groups: one aligned segment of `lanes_per_group` lanes (a power of two <= 32)
// per group; a warp holds 32 / lanes_per_group groups. Each lane handles VEC consecutive
// values per step.
//   pass 1: absmax over the group (segment-wide max by shuffles), NaN/Inf check
//   scale:  computed by every lane of the segment (same value), stored by the first
//   pass 2: re-read the values (they are in L1 now; a lane whose share of the group is
//           a single vector keeps it in registers), choose codes, pack, store
// Launch: blockDim.x = 256, gridDim.x = ceil(n_groups / (8 * (32 / lanes_per_group))).
template <typename T, bool INT_SYM, int VEC>
__global__ void __launch_bounds__(256)
quantize_groups(const T* __restrict__ x, long long n, int group_size, int lanes_per_group,
                const float* __restrict__ midpoints, unsigned long long order,
                u8* __restrict__ packed, void* __restrict__ scales, int scales_are_half,
                int* __restrict__ flags) {
    __shared__ float s_mid[16];
    if (!INT_SYM && threadIdx.x < 15) s_mid[threadIdx.x] = midpoints[threadIdx.x];
    __syncthreads();

    const int lane = threadIdx.x % WARP_SIZE;
    const int lpg = lanes_per_group;
    const long long warp = (blockIdx.x * (long long)blockDim.x + threadIdx.x) / WARP_SIZE;
    const long long group = warp * (WARP_SIZE / lpg) + lane / lpg;
    const int sub = lane % lpg;  // this lane's rank inside its group's segment
    const long long n_groups = (n + group_size - 1) / group_size;
    const long long start = group * group_size;
    // lanes past the last group still take part in the shuffles, with an empty group
    const int len = group < n_groups ? (int)(n - start < group_size ? n - start : group_size) : 0;
    const int stride = lpg * VEC;

    // pass 1: absmax (and a NaN/Inf check: fmaxf would silently skip a NaN)
    float first[VEC];  // this lane's first vector, kept for pass 2
    float amax = 0.0f;
    bool finite = true;
    for (int i = sub * VEC; i < len; i += stride) {
        float v[VEC];
        load_values(x, start + i, n, v);
#pragma unroll
        for (int j = 0; j < VEC; j++) {
            amax = fmaxf(amax, fabsf(v[j]));
            finite = finite && isfinite(v[j]);
            if (i == sub * VEC) first[j] = v[j];
        }
    }
    if (!finite) atomicOr(flags, FLAG_NONFINITE);
    amax = segment_max(amax, lpg);
    if (len == 0) return;  // after the last shuffle

    // the group's scale, as stored and as the float32 value the codes are chosen for
    const float scale = INT_SYM ? __fdiv_rn(amax, 7.0f) : amax;
    const float stored = scales_are_half ? __half2float(__float2half_rn(scale)) : scale;
    if (sub == 0) {
        if (scales_are_half) {
            store_as(static_cast<__half*>(scales) + group, scale);
            if (scale > 65504.0f) atomicOr(flags, FLAG_SCALE_OVERFLOW);
            if (stored == 0.0f && scale != 0.0f) atomicOr(flags, FLAG_SCALE_UNDERFLOW);
        } else {
            store_as(static_cast<float*>(scales) + group, scale);
        }
    }
    const float inv = __fdiv_rn(1.0f, fmaxf(stored, TINY_ABSMAX));  // table formats

    // pass 2: codes, two per byte, VEC / 2 bytes per store
    for (int i = sub * VEC; i < len; i += stride) {
        float v[VEC];
        if (i == sub * VEC) {
#pragma unroll
            for (int j = 0; j < VEC; j++) v[j] = first[j];
        } else {
            load_values(x, start + i, n, v);
        }
        unsigned int bytes = 0;
#pragma unroll
        for (int j = 0; j < VEC; j += 2) {
            int c[2];
#pragma unroll
            for (int h = 0; h < 2; h++) {
                if (INT_SYM) {
                    c[h] = int_sym_code(v[j + h], stored);
                } else {
                    const float t = fminf(fmaxf(__fmul_rn(v[j + h], inv), -1.0f), 1.0f);
                    c[h] = table_code(t, s_mid, order);
                }
            }
            if (start + i + j + 1 >= n) c[1] = 0;  // the padding nibble of an odd n
            bytes |= (unsigned int)((c[0] << 4) | c[1]) << (4 * j);  // byte j / 2
        }
        store_packed(packed + (start + i) / 2, bytes, VEC / 2);
    }
}
// ==== end quantize_groups ====

// ---------------------------------------------------------------------------------
// ==== double_quantize_scales ====
// double_quantize_scales: QLoRA's double quantization of the first-level scales, as
// int4ref.double_quantize (the default, not bnb_cpu) computes it:
//   centered = scale - offset                       (float32; offset = mean of the scales)
//   absmax2  = max |centered| per block of 256      (zero padding past the end)
//   v        = absmax2 > 0 ? centered / absmax2 : 0
//   code     = number of the 255 midpoints of the 8-bit dynamic map strictly below v
// One block of 256 threads per block of 256 scales, one scale per thread.
// Launch: blockDim.x = 256, gridDim.x = ceil(n_scales / 256).
extern "C" __global__ void __launch_bounds__(256)
double_quantize_scales(const void* __restrict__ scales, int scales_are_half, long long n_scales,
                       float offset, const float* __restrict__ midpoints, u8* __restrict__ codes,
                       float* __restrict__ absmax2) {
    __shared__ float s_mid[256];
    __shared__ float s_warp_max[256 / WARP_SIZE];
    for (int i = threadIdx.x; i < 255; i += blockDim.x) s_mid[i] = midpoints[i];

    const long long i = blockIdx.x * 256LL + threadIdx.x;
    float scale = 0.0f;
    if (i < n_scales) {
        scale = scales_are_half ? __half2float(static_cast<const __half*>(scales)[i])
                                : static_cast<const float*>(scales)[i];
    }
    const float centered = i < n_scales ? __fsub_rn(scale, offset) : 0.0f;
    const float wmax = segment_max(fabsf(centered), WARP_SIZE);
    if (threadIdx.x % WARP_SIZE == 0) s_warp_max[threadIdx.x / WARP_SIZE] = wmax;
    __syncthreads();  // also publishes s_mid
    float amax = 0.0f;
#pragma unroll
    for (int w = 0; w < 256 / WARP_SIZE; w++) amax = fmaxf(amax, s_warp_max[w]);

    const float v = amax > 0.0f ? __fdiv_rn(centered, amax) : 0.0f;
    int pos = 0;
#pragma unroll
    for (int step = 128; step > 0; step >>= 1) {
        if (v > s_mid[pos + step - 1]) pos += step;
    }
    if (i < n_scales) codes[i] = (u8)pos;
    if (threadIdx.x == 0) absmax2[blockIdx.x] = amax;
}
// ==== end double_quantize_scales ====
