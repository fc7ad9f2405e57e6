// gemv.cu: fused dequantize + matrix-vector product for 4-bit weights and float16
// activations (W4A16), float32 accumulation, batch of M = 1..16 activation rows.
//
//   y[m, n] = sum_k x[m, k] * W[n, k]          (y = x @ W^T)
//   W[n, k] = table[code(n, k)] * scale[n, k / group_size]
//
// Layout:
//   W       u8  [N, K / 2]            the (N out, K in) weight matrix quantized row-major,
//                                     groups along K (group_size divides K), packed two
//                                     codes per byte, element 2j in the HIGH nibble of
//                                     byte j (bitsandbytes' order, what quantize.cu writes)
//   scales  S   [N, K / group_size]   float32 or float16 (the template parameter S)
//   table   f32 [16]                  the format's values in code order
//   x       f16 [M, K]                row-major
//   y           [M, N]                float32, or float16 when y_is_half (rounded once,
//                                     at the end)
// The weights are dequantized exactly as dequantize.cu does (table value times scale,
// one float32 rounding), so y differs from x @ dequantize(W)^T only by the order of the
// float32 sums.
//
// Three versions, in the order of llm.c's dev/cuda: each keeps what works and changes
// one idea. Timings are filled in from `python -m int4ref.bench gpu`; the book chapter
// reads results/bench-gpu.json.

#include "common.cu"

#define GEMV_MAX_M 16

// value of code c: a table lookup, or for uniform INT4 (int4_sym: c - 8) the 2^23 trick:
// the float with bit pattern 0x4B000000 | c is 8388608 + c exactly, so subtracting
// 8388616 gives c - 8 with no table and no int-to-float conversion
template <bool UNIFORM>
__device__ __forceinline__ float code_value(unsigned int c, const float* s_table) {
    if (UNIFORM) return __fsub_rn(__int_as_float(0x4B000000u | c), 8388616.0f);
    return s_table[c];
}

// the 8 weights of a 32-bit word (4 packed bytes), scaled: byte k holds weights 2k (high
// nibble) and 2k + 1 (low nibble); byte 0 is the lowest-addressed (little-endian)
template <bool UNIFORM>
__device__ __forceinline__ void decode8(unsigned int w, const float* s_table, float s, float* v) {
#pragma unroll
    for (int k = 0; k < 4; k++) {
        const unsigned int b = (w >> (8 * k)) & 0xffu;
        v[2 * k] = __fmul_rn(code_value<UNIFORM>(b >> 4, s_table), s);
        v[2 * k + 1] = __fmul_rn(code_value<UNIFORM>(b & 15u, s_table), s);
    }
}

// y[i] = v as float32, or rounded to float16 (y_is_half: the same for every thread)
__device__ __forceinline__ void store_y(void* y, int y_is_half, long long i, float v) {
    if (y_is_half) {
        store_as(static_cast<__half*>(y) + i, v);
    } else {
        store_as(static_cast<float*>(y) + i, v);
    }
}

// ==== gemv_v1 ====
// Version 1, naive: one thread per output row n, computing all M outputs of that row.
// The thread walks its row one byte (two weights) at a time and reads x with scalar
// loads. Neighbouring threads read bytes K/2 apart, so a warp's 32 loads touch 32
// different memory segments: nothing is coalesced, and the L1 cache is what keeps it
// from being hopeless. Works for any even group_size that divides K.
// Launch: blockDim.x = 128, gridDim.x = ceil(N / 128).
// Measured: not yet on a GPU. tools/device_check.sh runs the benchmark that times this
// version (python -m int4ref.bench gpu); its bench-gpu.json, once committed as
// results/bench-gpu.json, is rendered in the Results section of book/gpu-kernels.md.
template <typename S>
__global__ void __launch_bounds__(128)
gemv_v1(const u8* __restrict__ W, const S* __restrict__ scales, const float* __restrict__ table,
        const __half* __restrict__ x, void* __restrict__ y, int y_is_half, int M, int N, int K, int group_size) {
    __shared__ float s_table[16];
    if (threadIdx.x < 16) s_table[threadIdx.x] = table[threadIdx.x];
    __syncthreads();

    const int n = blockIdx.x * blockDim.x + threadIdx.x;
    if (n >= N) return;
    const u8* row = W + (long long)n * (K / 2);
    const S* row_scales = scales + (long long)n * (K / group_size);

    float acc[GEMV_MAX_M];
#pragma unroll
    for (int m = 0; m < GEMV_MAX_M; m++) acc[m] = 0.0f;

    for (int k = 0; k < K; k += 2) {
        const unsigned int b = __ldg(row + k / 2);
        const float s = to_f32(__ldg(row_scales + k / group_size));
        const float w0 = __fmul_rn(s_table[b >> 4], s);
        const float w1 = __fmul_rn(s_table[b & 15u], s);
#pragma unroll
        for (int m = 0; m < GEMV_MAX_M; m++) {
            if (m < M) {
                acc[m] = fmaf(w0, __half2float(__ldg(x + m * K + k)), acc[m]);
                acc[m] = fmaf(w1, __half2float(__ldg(x + m * K + k + 1)), acc[m]);
            }
        }
    }
#pragma unroll
    for (int m = 0; m < GEMV_MAX_M; m++) {
        if (m < M) store_y(y, y_is_half, (long long)m * N + n, acc[m]);
    }
}
// ==== end gemv_v1 ====

// ==== gemv_v2 ====
// Version 2: one warp per output row, 16-byte loads (bitsandbytes' 4-bit GEMV).
// Lane l reads bytes [16c, 16c + 16) of the row for c = l, l + 32, ...: a warp reads 512
// contiguous bytes per step, one 128-bit load per lane, fully coalesced. The 32 weights
// of a load share one scale (group_size is a multiple of 32). The lane's partial sums
// are combined by a shuffle reduction at the end. x is read through the read-only cache,
// 64 bytes per m per step; the weights with evict-first loads.
// Needs K % 32 == 0 and group_size % 32 == 0.
// Launch: blockDim.x = 128 (4 rows per block), gridDim.x = ceil(N / 4).
// Measured: not yet on a GPU. tools/device_check.sh runs the benchmark that times this
// version (python -m int4ref.bench gpu); its bench-gpu.json, once committed as
// results/bench-gpu.json, is rendered in the Results section of book/gpu-kernels.md.
template <typename S>
__global__ void __launch_bounds__(128)
gemv_v2(const u8* __restrict__ W, const S* __restrict__ scales, const float* __restrict__ table,
        const __half* __restrict__ x, void* __restrict__ y, int y_is_half, int M, int N, int K, int group_size) {
    __shared__ float s_table[16];
    if (threadIdx.x < 16) s_table[threadIdx.x] = table[threadIdx.x];
    __syncthreads();

    const int lane = threadIdx.x % WARP_SIZE;
    const int n = blockIdx.x * (blockDim.x / WARP_SIZE) + threadIdx.x / WARP_SIZE;
    if (n >= N) return;  // the whole warp leaves together
    const u8* row = W + (long long)n * (K / 2);
    const S* row_scales = scales + (long long)n * (K / group_size);

    float acc[GEMV_MAX_M];
#pragma unroll
    for (int m = 0; m < GEMV_MAX_M; m++) acc[m] = 0.0f;

    for (int c = lane; c < K / 32; c += WARP_SIZE) {  // chunk c: weights [32c, 32c + 32)
        const uint4 q = load16_stream(row + 16 * c);
        const float s = to_f32(__ldg(row_scales + (32 * c) / group_size));
        float w[32];
        decode8<false>(q.x, s_table, s, w);
        decode8<false>(q.y, s_table, s, w + 8);
        decode8<false>(q.z, s_table, s, w + 16);
        decode8<false>(q.w, s_table, s, w + 24);
#pragma unroll
        for (int m = 0; m < GEMV_MAX_M; m++) {
            if (m < M) {
                const __half* xm = x + m * K + 32 * c;
                float a = acc[m];
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    float xf[8];
                    halves8_to_float(load16(xm + 8 * j), xf);
#pragma unroll
                    for (int t = 0; t < 8; t++) a = fmaf(w[8 * j + t], xf[t], a);
                }
                acc[m] = a;
            }
        }
    }
#pragma unroll
    for (int m = 0; m < GEMV_MAX_M; m++) {
        if (m < M) {  // M is the same for every lane: no divergence around the shuffles
            const float sum = warp_sum(acc[m]);
            if (lane == 0) store_y(y, y_is_half, (long long)m * N + n, sum);
        }
    }
}
// ==== end gemv_v2 ====

// ==== gemv_v3 ====
// Version 3: several rows per warp, x reused from registers, M known at compile time,
// no table lookup for uniform INT4.
//  * A warp computes R rows at once (R = 4; 2 when M_MAX = 16, where R * M_MAX float
//    accumulators per lane would crowd out everything else): each lane loads 16 bytes of
//    each row (R loads in flight per lane instead of 1) and every 8 activations it loads
//    are used for R rows, so the activation traffic through L1 drops R times. In
//    version 2 that traffic (64 bytes of x per 16 bytes of weights at M = 1) competes
//    with the table lookups for the load/store units.
//  * M_MAX (1, 4 or 16; M = 2..3 runs the 4 and M = 5..15 the 16 instantiation) is a
//    template parameter: the accumulators acc[R][M_MAX] stay in registers and the loops
//    over m unroll completely.
//  * UNIFORM (int4_sym): codes become floats with the 2^23 trick (code_value above):
//    integer and float-add instructions instead of a shared-memory lookup per weight.
//  * Activations are converted 8 at a time from one 16-byte load; the weights are
//    decoded 8 at a time (one 32-bit word per row), so the live registers stay
//    R * 8 weights + 8 activations + R * M_MAX accumulators.
// Rows past N (the last warp) are computed on row N - 1 and not stored, so the loop has
// no branch on the row. Needs K % 32 == 0 and group_size % 32 == 0.
// Launch: blockDim.x = 128 (4 warps, 4 * R rows per block), gridDim.x = ceil(N / (4 * R)).
// Measured: not yet on a GPU. tools/device_check.sh runs the benchmark that times this
// version (python -m int4ref.bench gpu); its bench-gpu.json, once committed as
// results/bench-gpu.json, is rendered in the Results section of book/gpu-kernels.md.
#define GEMV_V3_ROWS(M_MAX) ((M_MAX) >= 16 ? 2 : 4)

template <typename S, int M_MAX, bool UNIFORM>
__global__ void __launch_bounds__(128)
gemv_v3(const u8* __restrict__ W, const S* __restrict__ scales, const float* __restrict__ table,
        const __half* __restrict__ x, void* __restrict__ y, int y_is_half, int M, int N, int K, int group_size) {
    constexpr int R = GEMV_V3_ROWS(M_MAX);
    __shared__ float s_table[16];
    if (threadIdx.x < 16) s_table[threadIdx.x] = table[threadIdx.x];
    __syncthreads();

    const int lane = threadIdx.x % WARP_SIZE;
    const int n0 = (blockIdx.x * (blockDim.x / WARP_SIZE) + threadIdx.x / WARP_SIZE) * R;
    if (n0 >= N) return;  // the whole warp leaves together
    const int groups_per_row = K / group_size;

    const u8* rows[R];
    const S* row_scales[R];
#pragma unroll
    for (int r = 0; r < R; r++) {
        const int n = n0 + r < N ? n0 + r : N - 1;
        rows[r] = W + (long long)n * (K / 2);
        row_scales[r] = scales + (long long)n * groups_per_row;
    }

    float acc[R][M_MAX];
#pragma unroll
    for (int r = 0; r < R; r++) {
#pragma unroll
        for (int m = 0; m < M_MAX; m++) acc[r][m] = 0.0f;
    }

    for (int c = lane; c < K / 32; c += WARP_SIZE) {  // chunk c: weights [32c, 32c + 32)
        uint4 q[R];
        float s[R];
#pragma unroll
        for (int r = 0; r < R; r++) {
            q[r] = load16_stream(rows[r] + 16 * c);
            s[r] = to_f32(__ldg(row_scales[r] + (32 * c) / group_size));
        }
#pragma unroll
        for (int j = 0; j < 4; j++) {  // 32-bit word j: weights [32c + 8j, 32c + 8j + 8)
            float w[R][8];
#pragma unroll
            for (int r = 0; r < R; r++) {
                const unsigned int word = j == 0 ? q[r].x : j == 1 ? q[r].y : j == 2 ? q[r].z : q[r].w;
                decode8<UNIFORM>(word, s_table, s[r], w[r]);
            }
#pragma unroll
            for (int m = 0; m < M_MAX; m++) {
                if (m < M) {
                    float xf[8];
                    halves8_to_float(load16(x + m * K + 32 * c + 8 * j), xf);
#pragma unroll
                    for (int r = 0; r < R; r++) {
#pragma unroll
                        for (int t = 0; t < 8; t++) acc[r][m] = fmaf(w[r][t], xf[t], acc[r][m]);
                    }
                }
            }
        }
    }
#pragma unroll
    for (int r = 0; r < R; r++) {
#pragma unroll
        for (int m = 0; m < M_MAX; m++) {
            if (m < M) {
                const float sum = warp_sum(acc[r][m]);
                if (lane == 0 && n0 + r < N) store_y(y, y_is_half, (long long)m * N + n0 + r, sum);
            }
        }
    }
}
// ==== end gemv_v3 ====
