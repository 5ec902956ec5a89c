// Causal attention kernels: the row softmax and dS of the cuBLAS path and the backward, the GQA head sum,
// and a fused flash-style forward (per block 64 queries of one head, key tiles of 64 streamed through
// shared memory with cp.async, online softmax with fp32 statistics, bf16 tensor-core products (mma.sync
// m16n8k16) with fp32 accumulation). CPU twin: kernels/attention.c.
#include <math.h>

#include "cuda_common.cuh"
#include "attention.h"

// One warp per row r = (head, query t): no block barriers; s holds scaled scores.
__global__ void causal_softmax_kernel(__nv_bfloat16* p, __nv_bfloat16* p_lo, float* lse, const float* s, int T,
                                      long rows) {
    long r = blockIdx.x * (long)(blockDim.x / 32) + threadIdx.x / 32;
    if (r >= rows) return;
    int lane = threadIdx.x % 32, t = (int)(r % T);
    const float* row = s + r * T;
    float m = -INFINITY;
    for (int j = lane; j <= t; j += 32) m = fmaxf(m, row[j]);
    m = warp_max(m);
    float sum = 0.0f;
    for (int j = lane; j <= t; j += 32) sum += expf(row[j] - m);
    sum = warp_sum(sum);
    float inv = 1.0f / sum;
    for (int j = lane; j < T; j += 32) {
        float v = j <= t ? expf(row[j] - m) * inv : 0.0f;
        store_split(p, p_lo, r * T + j, v);
    }
    if (lane == 0) lse[r] = m + logf(sum);
}

// dS = P (dP - rowsum(P dP)) * scale from the recomputed scores s (masked, softmax in place)
// and dP; writes P and dS as bf16 hi + lo. One block per (head, t).
__global__ void attn_ds_kernel(__nv_bfloat16* p_hi, __nv_bfloat16* p_lo, __nv_bfloat16* ds_hi,
                               __nv_bfloat16* ds_lo, const float* s, const float* dp, int T, float scale) {
    int h = blockIdx.x / T, t = blockIdx.x % T;
    long o = ((long)h * T + t) * T;
    float m = -INFINITY;
    for (int j = threadIdx.x; j <= t; j += blockDim.x) m = fmaxf(m, s[o + j]);
    m = block_max(m);
    double sum = 0.0;
    for (int j = threadIdx.x; j <= t; j += blockDim.x) sum += expf(s[o + j] - m);
    sum = block_sum(sum);
    float inv = (float)(1.0 / sum);
    double D = 0.0;
    for (int j = threadIdx.x; j <= t; j += blockDim.x) D += (double)(expf(s[o + j] - m) * inv) * dp[o + j];
    D = block_sum(D);
    for (int j = threadIdx.x; j < T; j += blockDim.x) {
        float p = j <= t ? expf(s[o + j] - m) * inv : 0.0f;
        float g = j <= t ? p * (dp[o + j] - (float)D) * scale : 0.0f;
        __nv_bfloat16 ph = __float2bfloat16(p), gh = __float2bfloat16(g);
        p_hi[o + j] = ph;
        ds_hi[o + j] = gh;
        if (p_lo) p_lo[o + j] = __float2bfloat16(p - __bfloat162float(ph));
        if (ds_lo) ds_lo[o + j] = __float2bfloat16(g - __bfloat162float(gh));
    }
}

// Grouped-query attention: the rep query heads of one kv head each have a gradient for it.
__global__ void sum_heads_kernel(float* out, const float* in, long rows, int nkv, int rep, int hd) {
    long i = blockIdx.x * (long)blockDim.x + threadIdx.x;
    if (i >= rows * nkv * hd) return;
    long row = i / ((long)nkv * hd);
    int kv = (int)(i / hd % nkv), d = (int)(i % hd);
    const float* src = in + (row * nkv * rep + (long)kv * rep) * hd + d;
    float s = 0.0f;
    for (int r = 0; r < rep; r++) s += src[(long)r * hd];
    out[i] = s;
}

extern "C" void gpu_causal_softmax(bf16_t* p, bf16_t* p_lo, float* lse, const float* s, int nb, int T) {
    long rows = (long)nb * T;
    causal_softmax_kernel<<<ceil_div(rows, 8), 256>>>((__nv_bfloat16*)p, (__nv_bfloat16*)p_lo, lse, s, T, rows);
    cudaCheck(cudaGetLastError());
}

extern "C" void gpu_attention_ds(bf16_t* p_hi, bf16_t* p_lo, bf16_t* ds_hi, bf16_t* ds_lo, const float* s,
                                 const float* dp, int nb, int T, float scale) {
    attn_ds_kernel<<<nb * T, 128>>>((__nv_bfloat16*)p_hi, (__nv_bfloat16*)p_lo, (__nv_bfloat16*)ds_hi,
                                    (__nv_bfloat16*)ds_lo, s, dp, T, scale);
    cudaCheck(cudaGetLastError());
}

extern "C" void gpu_sum_heads(float* out, const float* in, long rows, int nkv, int rep, int hd) {
    long n = rows * nkv * hd;
    sum_heads_kernel<<<ceil_div(n, 256), 256>>>(out, in, rows, nkv, rep, hd);
    cudaCheck(cudaGetLastError());
}

#define FA_BQ 64 // queries per block: 4 warps of 16
#define FA_BK 64 // keys per tile

// Two floats as one bf16x2 register, a in the low half (the lower k index of an mma fragment).
// With F16, as one fp16x2 register.
template <int F16> __device__ inline uint32_t pack16(float a, float b) {
    if (F16) {
        __half2 v = __floats2half2_rn(a, b);
        return *(uint32_t*)&v;
    }
    __nv_bfloat162 v = __floats2bfloat162_rn(a, b);
    return *(uint32_t*)&v;
}

template <int F16> __device__ inline void mma16(float c[4], const uint32_t a[4], const uint32_t b[2]) {
    if (F16)
        mma_f16(c, a, b);
    else
        mma_bf16(c, a, b);
}

// Grid (T / 64, H, windows), 128 threads. q (B*T, H, HD), k and v (B*T, KV, HD) bf16; o fp32 and/or
// o16 bf16 (B*T, H, HD). scale_log2 = log2(e) / sqrt(HD): exponentials in base 2. With F16, q, k, v,
// o16 and the probabilities are fp16 instead (the fp16 mode), in the same buffers.
template <int HD, int F16>
__global__ void __launch_bounds__(128)
    flash_kernel(float* o, __nv_bfloat16* o16, const __nv_bfloat16* q, const __nv_bfloat16* k,
                 const __nv_bfloat16* v, long ldq, long ldk, int T, int H, int KV, float scale_log2) {
    // keys and values of two tiles (the next one loads while this one computes), row-major; +8 puts
    // consecutive rows 16 bytes apart in the banks
    extern __shared__ __align__(16) unsigned char smem[];
    typedef __nv_bfloat16 Tile[FA_BK][HD + 8];
    Tile* ks = (Tile*)smem;
    Tile* vs = ks + 2;
    int qt = gridDim.x - 1 - blockIdx.x; // the longest rows first
    int h = blockIdx.y, b = blockIdx.z, kvh = h / (H / KV);
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t4 = lane % 4;
    long ldo = (long)H * HD;
    const __nv_bfloat16* qb = q + (long)b * T * ldq + (long)h * HD;
    const __nv_bfloat16* kb = k + (long)b * T * ldk + (long)kvh * HD;
    const __nv_bfloat16* vb = v + (long)b * T * ldk + (long)kvh * HD;
    int r0 = qt * FA_BQ + warp * 16 + g; // this lane's rows: r0 and r0 + 8
    uint32_t qf[HD / 16][4];
    for (int kc = 0; kc < HD / 16; kc++) {
        int c = kc * 16 + 2 * t4;
        qf[kc][0] = *(const uint32_t*)(qb + r0 * ldq + c);
        qf[kc][1] = *(const uint32_t*)(qb + (r0 + 8) * ldq + c);
        qf[kc][2] = *(const uint32_t*)(qb + r0 * ldq + c + 8);
        qf[kc][3] = *(const uint32_t*)(qb + (r0 + 8) * ldq + c + 8);
    }
    float acc[HD / 8][4];
    for (int n = 0; n < HD / 8; n++) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f; // running max and (per-lane) sum
    for (int kt = 0; kt <= qt + 1; kt++) {
        if (kt <= qt) { // issue the loads of tile kt; compute tile kt - 1
            for (int i = threadIdx.x; i < FA_BK * HD / 8; i += blockDim.x) {
                int row = i / (HD / 8), c8 = i % (HD / 8) * 8;
                long src = (long)(kt * FA_BK + row) * ldk + c8;
                cp_async16(&ks[kt % 2][row][c8], kb + src);
                cp_async16(&vs[kt % 2][row][c8], vb + src);
            }
            cp_commit();
        }
        if (kt == 0) continue;
        if (kt <= qt)
            cp_wait<1>();
        else
            cp_wait<0>();
        __syncthreads();
        int cur = (kt - 1) % 2, kv0 = (kt - 1) * FA_BK;
        int mi = lane / 8, mr = lane % 8; // this lane's ldmatrix row
        float s[FA_BK / 8][4];
        for (int j = 0; j < FA_BK / 8; j++) {
            s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
            for (int kc = 0; kc < HD / 16; kc += 2) { // B fragments of k chunks kc, kc + 1: keys j*8.. by hd
                uint32_t bf[4];
                ldsm4(bf, &ks[cur][j * 8 + mr][kc * 16 + mi * 8]);
                mma16<F16>(s[j], qf[kc], bf);
                mma16<F16>(s[j], qf[kc + 1], bf + 2);
            }
        }
        float mx0 = -INFINITY, mx1 = -INFINITY;
        for (int j = 0; j < FA_BK / 8; j++)
            for (int e = 0; e < 4; e++) {
                int key = kv0 + j * 8 + 2 * t4 + (e & 1), row = r0 + (e >= 2 ? 8 : 0);
                float x = key > row ? -INFINITY : s[j][e] * scale_log2; // causal mask
                s[j][e] = x;
                if (e < 2)
                    mx0 = fmaxf(mx0, x);
                else
                    mx1 = fmaxf(mx1, x);
            }
        for (int w = 1; w <= 2; w <<= 1) { // the 4 lanes of a row
            mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffff, mx0, w));
            mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffff, mx1, w));
        }
        float mn0 = fmaxf(m0, mx0), mn1 = fmaxf(m1, mx1); // finite: key 0 of tile 0 is never masked
        float al0 = exp2f(m0 - mn0), al1 = exp2f(m1 - mn1);
        m0 = mn0, m1 = mn1;
        uint32_t pf[FA_BK / 16][4]; // P as the A fragments of P . V
        float rs0 = 0.0f, rs1 = 0.0f;
        for (int j = 0; j < FA_BK / 8; j++) {
            float p0 = exp2f(s[j][0] - m0), p1 = exp2f(s[j][1] - m0);
            float p2 = exp2f(s[j][2] - m1), p3 = exp2f(s[j][3] - m1);
            rs0 += p0 + p1, rs1 += p2 + p3;
            pf[j / 2][(j % 2) * 2] = pack16<F16>(p0, p1);
            pf[j / 2][(j % 2) * 2 + 1] = pack16<F16>(p2, p3);
        }
        l0 = l0 * al0 + rs0, l1 = l1 * al1 + rs1;
        for (int n = 0; n < HD / 8; n++) acc[n][0] *= al0, acc[n][1] *= al0, acc[n][2] *= al1, acc[n][3] *= al1;
        for (int kc = 0; kc < FA_BK / 16; kc++)
            for (int n = 0; n < HD / 8; n += 2) { // B fragments of n tiles n, n + 1: keys kc*16.. by hd
                uint32_t bf[4];
                ldsm4_t(bf, &vs[cur][kc * 16 + (mi % 2) * 8 + mr][(n + mi / 2) * 8]);
                mma16<F16>(acc[n], pf[kc], bf);
                mma16<F16>(acc[n + 1], pf[kc], bf + 2);
            }
        __syncthreads(); // buffer cur is loaded again at kt + 1
    }
    for (int w = 1; w <= 2; w <<= 1) {
        l0 += __shfl_xor_sync(0xffffffff, l0, w);
        l1 += __shfl_xor_sync(0xffffffff, l1, w);
    }
    float i0 = 1.0f / l0, i1 = 1.0f / l1;
    for (int n = 0; n < HD / 8; n++) {
        int col = n * 8 + 2 * t4;
        long a = ((long)b * T + r0) * ldo + (long)h * HD + col, c = a + 8 * ldo;
        if (o) {
            *(float2*)(o + a) = make_float2(acc[n][0] * i0, acc[n][1] * i0);
            *(float2*)(o + c) = make_float2(acc[n][2] * i1, acc[n][3] * i1);
        }
        if (o16) {
            *(uint32_t*)(o16 + a) = pack16<F16>(acc[n][0] * i0, acc[n][1] * i0);
            *(uint32_t*)(o16 + c) = pack16<F16>(acc[n][2] * i1, acc[n][3] * i1);
        }
    }
}

extern "C" int gpu_flash_supported(int T, int hd) { return T % FA_BQ == 0 && (hd == 64 || hd == 128); }

template <int HD, int F16>
static void flash_launch(dim3 grid, size_t smem, float* o, bf16_t* o16, const bf16_t* q, long ldq,
                         const bf16_t* k, const bf16_t* v, long ldk, int T, int H, int KV, float sl2) {
    // above 48 KiB of dynamic shared memory needs an opt-in (per device: set at every launch)
    if (smem > 48 * 1024)
        cudaCheck(cudaFuncSetAttribute(flash_kernel<HD, F16>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       (int)smem));
    flash_kernel<HD, F16><<<grid, 128, smem>>>(o, (__nv_bfloat16*)o16, (const __nv_bfloat16*)q,
                                               (const __nv_bfloat16*)k, (const __nv_bfloat16*)v, ldq, ldk, T, H,
                                               KV, sl2);
}

extern "C" void gpu_flash_attention(float* o, bf16_t* o16, const bf16_t* q, long ldq, const bf16_t* k,
                                    const bf16_t* v, long ldk, int nb, int T, int H, int KV, int hd, int f16) {
    if (!gpu_flash_supported(T, hd)) {
        fprintf(stderr, "autoq: flash attention needs T %% 64 == 0 and head_dim 64 or 128 (T %d, hd %d)\n", T,
                hd);
        exit(1);
    }
    dim3 grid(T / FA_BQ, H, nb);
    size_t smem = 4L * FA_BK * (hd + 8) * sizeof(__nv_bfloat16);
    float sl2 = 1.4426950408889634f / sqrtf((float)hd);
    if (hd == 128 && f16)
        flash_launch<128, 1>(grid, smem, o, o16, q, ldq, k, v, ldk, T, H, KV, sl2);
    else if (hd == 128)
        flash_launch<128, 0>(grid, smem, o, o16, q, ldq, k, v, ldk, T, H, KV, sl2);
    else if (f16)
        flash_launch<64, 1>(grid, smem, o, o16, q, ldq, k, v, ldk, T, H, KV, sl2);
    else
        flash_launch<64, 0>(grid, smem, o, o16, q, ldq, k, v, ldk, T, H, KV, sl2);
    cudaCheck(cudaGetLastError());
}
