// Conversions around the cuBLAS GEMMs: fp32 to bf16 hi + lo pairs, residual adds.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_common.cuh"
#include "matmul.h"

// x = hi + lo with both in bf16: hi carries 8 mantissa bits, lo the next 8; with f16, x in fp16 in hi.
__global__ void split_bf16_kernel(__nv_bfloat16* hi, __nv_bfloat16* lo, const float* x, long n, int f16) {
    long i = blockIdx.x * (long)blockDim.x + threadIdx.x;
    if (i >= n) return;
    store_split(hi, lo, i, x[i], f16);
}

// In place; counts the values beyond fp16's largest finite one (65504 and the rounding margin above it).
__global__ void bf16_to_f16_kernel(void* w, long n, unsigned long long* over) {
    long i = blockIdx.x * (long)blockDim.x + threadIdx.x;
    if (i >= n) return;
    float v = __bfloat162float(((const __nv_bfloat16*)w)[i]);
    __half h = __float2half_rn(v);
    if (__hisinf(h) && !isinf(v)) atomicAdd(over, 1ULL);
    ((__half*)w)[i] = h;
}

__global__ void add_kernel(float* h, const float* y, long n) {
    long i = blockIdx.x * (long)blockDim.x + threadIdx.x;
    if (i < n) h[i] += y[i];
}

extern "C" void gpu_split_bf16(bf16_t* hi, bf16_t* lo, const float* x, long n) {
    split_bf16_kernel<<<ceil_div(n, 256), 256>>>((__nv_bfloat16*)hi, (__nv_bfloat16*)lo, x, n, 0);
    cudaCheck(cudaGetLastError());
}

extern "C" void gpu_round_f16(uint16_t* out, const float* x, long n) {
    split_bf16_kernel<<<ceil_div(n, 256), 256>>>((__nv_bfloat16*)out, NULL, x, n, 1);
    cudaCheck(cudaGetLastError());
}

extern "C" long gpu_bf16_to_f16(uint16_t* w, long n) {
    unsigned long long* over;
    unsigned long long h = 0;
    cudaCheck(cudaMalloc(&over, sizeof(*over)));
    cudaCheck(cudaMemset(over, 0, sizeof(*over)));
    bf16_to_f16_kernel<<<ceil_div(n, 256), 256>>>(w, n, over);
    cudaCheck(cudaGetLastError());
    cudaCheck(cudaMemcpy(&h, over, sizeof(h), cudaMemcpyDeviceToHost));
    cudaCheck(cudaFree(over));
    return (long)h;
}

extern "C" void gpu_add(float* h, const float* y, long n) {
    add_kernel<<<ceil_div(n, 256), 256>>>(h, y, n);
    cudaCheck(cudaGetLastError());
}

// ---- the experts' grouped GEMM: one CTA per (tile of GROUPED_ROWS rows of one expert, GG_BN output
// columns), 8 warps of GROUPED_ROWS / 2 x 32; mma.sync bf16 with fp32 accumulators, fragments through ldmatrix,
// GG_STAGES-deep cp.async pipeline; hi and lo inputs share the weight's fragments ----
#include <mma.h>
#include <type_traits>
#define GG_BN 128
#define GG_MT (GROUPED_ROWS / 32) // m16 tiles of each warp: 2 warps of GROUPED_ROWS / 2 rows
#define GG_BK 32
#define GG_PAD 8 // keeps rows 16-byte aligned and ldmatrix off shared-memory bank conflicts
#define GG_STAGES 3
#define GG_LDA (GG_BK + GG_PAD)   // A rows (and forward B rows: n-major, k contiguous)
#define GG_LDB_T (GG_BN + GG_PAD) // backward B rows: k-major, n contiguous
#define GG_A_ELEMS (GROUPED_ROWS * GG_LDA)
#define GG_B_ELEMS (GG_BN * GG_LDA > GG_BK * GG_LDB_T ? GG_BN * GG_LDA : GG_BK * GG_LDB_T)
#define GG_STAGE_ELEMS (2 * GG_A_ELEMS + GG_B_ELEMS)

// Whether kernel k (0 bf16, 1 int8) runs on the current device for the first time: kernel
// attributes are per device (several GPUs may share this process, one host thread each).
static int first_use_on_device(int k) {
    static volatile char seen[2][64];
    int d;
    cudaCheck(cudaGetDevice(&d));
    if (d >= 64 || seen[k][d]) return d >= 64; // setting an attribute twice is harmless
    seen[k][d] = 1;
    return 1;
}

// Stage st: A (hi, lo) rows r0.. of x and B = the weight's tile at k0 (zeros outside the tile's
// rows, the weight's columns and K).
template <bool BWD>
__device__ inline void gg_load(__nv_bfloat16* st, const __nv_bfloat16* xhi, const __nv_bfloat16* xlo,
                               const __nv_bfloat16* we, int r0, int rn, int n0, int k0, int K, int N, int tid) {
    for (int v = tid; v < GROUPED_ROWS * GG_BK / 8; v += 256) {
        int row = v / (GG_BK / 8), col = (v % (GG_BK / 8)) * 8;
        bool ok = row < rn && k0 + col < K;
        long off = ok ? (long)(r0 + row) * K + k0 + col : 0;
        cp_async16_zfill(st + row * GG_LDA + col, xhi + off, ok);
        if (xlo) cp_async16_zfill(st + GG_A_ELEMS + row * GG_LDA + col, xlo + off, ok);
    }
    __nv_bfloat16* b = st + 2 * GG_A_ELEMS;
    for (int v = tid; v < GG_BN * GG_BK / 8; v += 256) {
        if (BWD) { // W_e (K, N): rows k0.., columns n0..
            int r = v / (GG_BN / 8), c = (v % (GG_BN / 8)) * 8;
            bool ok = n0 + c < N && k0 + r < K;
            cp_async16_zfill(b + r * GG_LDB_T + c, we + (ok ? (long)(k0 + r) * N + n0 + c : 0), ok);
        } else { // W_e (N, K): rows n0.., columns k0..
            int r = v / (GG_BK / 8), c = (v % (GG_BK / 8)) * 8;
            bool ok = n0 + r < N && k0 + c < K;
            cp_async16_zfill(b + r * GG_LDA + c, we + (ok ? (long)(n0 + r) * K + k0 + c : 0), ok);
        }
    }
}

template <bool BWD, bool F16>
__global__ void __launch_bounds__(256)
    grouped_kernel(float* y, __nv_bfloat16* y16, const __nv_bfloat16* xhi, const __nv_bfloat16* xlo,
                   const __nv_bfloat16* w, long wstride, const int* tiles, int nt, int K, int N, float beta) {
    extern __shared__ __align__(128) __nv_bfloat16 gg_smem[];
    int t = blockIdx.x, e = tiles[t], r0 = tiles[nt + t], rn = tiles[2 * nt + t], n0 = blockIdx.y * GG_BN;
    if (rn == 0) return; // a spare tile of a device-built list (gpu_moe_tiles)
    int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, wm = warp / 4, wn = warp % 4;
    const __nv_bfloat16* we = w + e * wstride;
    int parts = xlo ? 2 : 1, nk = (K + GG_BK - 1) / GG_BK;
    float c[GG_MT][4][4] = {}; // (m16 tile, n8 tile, fragment)
    for (int s = 0; s < GG_STAGES - 1; s++) {
        if (s < nk) gg_load<BWD>(gg_smem + s * GG_STAGE_ELEMS, xhi, xlo, we, r0, rn, n0, s * GG_BK, K, N, tid);
        cp_commit();
    }
    for (int kt = 0; kt < nk; kt++) {
        cp_wait<GG_STAGES - 2>();
        __syncthreads(); // stage kt landed for every thread; stage kt - 1 is free
        int nx = kt + GG_STAGES - 1;
        if (nx < nk)
            gg_load<BWD>(gg_smem + (nx % GG_STAGES) * GG_STAGE_ELEMS, xhi, xlo, we, r0, rn, n0, nx * GG_BK, K,
                         N, tid);
        cp_commit();
        const __nv_bfloat16* st = gg_smem + (kt % GG_STAGES) * GG_STAGE_ELEMS;
        const __nv_bfloat16* bs = st + 2 * GG_A_ELEMS;
        for (int kk = 0; kk < GG_BK && kt * GG_BK + kk < K; kk += 16) {
            uint32_t b[4][2];
#pragma unroll
            for (int np = 0; np < 2; np++) { // two n8 tiles per ldmatrix.x4
                uint32_t r[4];
                int q = lane / 8, n = wn * 32 + np * 16;
                if (BWD) {
                    ldsm4_t(r, bs + (kk + (q % 2) * 8 + lane % 8) * GG_LDB_T + n + (q / 2) * 8);
                } else {
                    ldsm4(r, bs + (n + (q / 2) * 8 + lane % 8) * GG_LDA + kk + (q % 2) * 8);
                }
                b[2 * np][0] = r[0], b[2 * np][1] = r[1], b[2 * np + 1][0] = r[2], b[2 * np + 1][1] = r[3];
            }
#pragma unroll
            for (int p = 0; p < 2; p++)
#pragma unroll
                for (int mt = 0; mt < GG_MT; mt++) {
                    if (p >= parts) break;
                    uint32_t a[4];
                    ldsm4(a, st + p * GG_A_ELEMS + (wm * (GROUPED_ROWS / 2) + mt * 16 + lane % 16) * GG_LDA +
                                 kk + (lane / 16) * 8);
#pragma unroll
                    for (int j = 0; j < 4; j++) {
                        if (F16)
                            mma_f16(c[mt][j], a, b[j]);
                        else
                            mma_bf16(c[mt][j], a, b[j]);
                    }
                }
        }
    }
    cp_wait<0>();
    // fragments straight to global: lane 4 g + t holds rows g, g + 8 and columns 2t, 2t + 1
    int g = lane / 4, tq = lane % 4;
#pragma unroll
    for (int mt = 0; mt < GG_MT; mt++)
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
            for (int h = 0; h < 2; h++) {
                int row = wm * (GROUPED_ROWS / 2) + mt * 16 + g + 8 * h, col = n0 + wn * 32 + j * 8 + 2 * tq;
                if (row >= rn || col >= N) continue;
                long o = (long)(r0 + row) * N + col;
                float v0 = c[mt][j][2 * h], v1 = c[mt][j][2 * h + 1];
                if (y16) {
                    *(__nv_bfloat162*)(y16 + o) = __floats2bfloat162_rn(v0, v1);
                } else {
                    float2 old = beta == 0.0f ? make_float2(0, 0) : *(float2*)(y + o);
                    *(float2*)(y + o) = make_float2(v0 + beta * old.x, v1 + beta * old.y);
                }
            }
}

// ---- the same GEMMs on Hopper's warpgroup MMA (wgmma, sm_90a only): one CTA of two warpgroups per
// (tile of GROUPED_ROWS rows of one expert, 128 output columns), each warpgroup m64n128 of it. Operands
// come through a cp.async pipeline (ragged expert rows and the ends of K zero-filled as above) into
// the 128-byte-swizzled layout wgmma reads from shared memory: rows of 128 bytes (64 bf16 or 128 int8
// of K), 16-byte piece c of row r stored at piece c ^ (r % 8). The backward's W_e (K, N) is read
// MN-major (two 64-column halves of 64 k rows), so no transposed copy of the weights is needed.
// mma.sync above stays for other GPUs and for AUTOQ_MOE_GEMM=mma. ----
#define WG_TILE (GROUPED_ROWS * 128) // bytes of one operand tile: 128 rows of 128 bytes of K
// Measured on an H200 (bench/README.md): 3 stages, no group left running, 2 CTAs per SM gave 331 / 311
// / 308 TFLOP/s on the 30B-A3B gate / down / down-backward shapes, against 311 / 278 / 262 for 4
// stages, one group running, one CTA. (Tuning: bench_grouped rebuilt with -DWG_STAGES=.. etc.)
#ifndef WG_STAGES
#define WG_STAGES 3 // shared-memory stages: 96 KiB for one input, so two CTAs share an SM
#endif
#ifndef WG_INFLIGHT
#define WG_INFLIGHT 0 // wgmma groups left running while the next tile's loads are issued
#endif
#ifndef WG_MINB
#define WG_MINB 2 // CTAs per SM the registers must allow (one CTA's barrier is the other's multiply)
#endif
#define WG_AHEAD (WG_STAGES - 1 - WG_INFLIGHT) // tiles loading ahead of the one multiplying
#define WG_REGS                                                                                                \
    "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, "    \
    "%22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, "     \
    "%42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, "     \
    "%62, %63}"
#define WG_D8(C, i)                                                                                            \
    C(d[i]), C(d[i + 1]), C(d[i + 2]), C(d[i + 3]), C(d[i + 4]), C(d[i + 5]), C(d[i + 6]), C(d[i + 7])
#define WG_D64(C)                                                                                              \
    WG_D8(C, 0), WG_D8(C, 8), WG_D8(C, 16), WG_D8(C, 24), WG_D8(C, 32), WG_D8(C, 40), WG_D8(C, 48), WG_D8(C, 56)
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define WG_ON 1
#endif

// A shared-memory matrix descriptor: start, leading and stride byte offsets (16-byte units), 128-byte
// swizzle. K-major tiles: 8-row groups SBO = 1024 apart (LBO unused); MN-major: 64-wide halves LBO
// apart, 8-k-row groups SBO = 1024 apart.
__device__ inline uint64_t wg_desc(const void* p, uint32_t lbo, uint32_t sbo) {
    uint64_t a = (uint64_t)__cvta_generic_to_shared(p);
    return ((a & 0x3FFFF) >> 4) | ((uint64_t)(lbo >> 4) << 16) | ((uint64_t)(sbo >> 4) << 32) | (1ull << 62);
}

// d (64x128 fp32 per warpgroup) += A (64x16) . B (16x128), bf16 or (F16) fp16; TB: B MN-major
template <int TB, bool F16> __device__ inline void wg_mma_16(float* d, uint64_t a, uint64_t b) {
#ifdef WG_ON
    if constexpr (F16)
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
                     "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 " WG_REGS
                     ", %64, %65, p, 1, 1, 0, %67;\n}\n"
                     : WG_D64("+f")
                     : "l"(a), "l"(b), "r"(1), "n"(TB));
    else
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
                     "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 " WG_REGS
                     ", %64, %65, p, 1, 1, 0, %67;\n}\n"
                     : WG_D64("+f")
                     : "l"(a), "l"(b), "r"(1), "n"(TB));
#endif
}
// d (64x128 int32) += A (64x32 int8) . B (32x128 int8), both K-major
__device__ inline void wg_mma_s8(int* d, uint64_t a, uint64_t b) {
#ifdef WG_ON
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k32.s32.s8.s8 " WG_REGS ", %64, %65, p;\n}\n"
                 : WG_D64("+r")
                 : "l"(a), "l"(b), "r"(1));
#endif
}
__device__ inline void wg_fence() {
#ifdef WG_ON
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}
__device__ inline void wg_commit() {
#ifdef WG_ON
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}
// Waits until at most N groups are in flight; the accumulators are pinned behind the wait.
__device__ inline void wg_pin(float* d) {
    for (int i = 0; i < 64; i++) asm volatile("" : "+f"(d[i])::"memory");
}
__device__ inline void wg_pin(int* d) {
    for (int i = 0; i < 64; i++) asm volatile("" : "+r"(d[i])::"memory");
}
template <int N, typename T> __device__ inline void wg_wait(T* d) {
#ifdef WG_ON
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
#endif
    wg_pin(d);
}

// 128 rows of 128 bytes from src rows r0.. (row length rb bytes, rows < rn valid) at byte column cb.
__device__ inline void wg_load_rows(uint8_t* dst, const uint8_t* src, long rb, int rn, long cb, int tid) {
    for (int v = tid; v < GROUPED_ROWS * 8; v += 256) {
        int r = v / 8, c = v % 8;
        bool ok = r < rn && cb + 16 * c < rb;
        cp_async16_zfill(dst + r * 128 + ((c ^ (r & 7)) << 4), src + (ok ? r * rb + cb + 16 * c : 0), ok);
    }
}
// W_e (K, N) bf16, k rows k0 .. k0 + 63, columns n0 .. n0 + 127, MN-major: half j at j * 8192.
__device__ inline void wg_load_kn(uint8_t* dst, const __nv_bfloat16* we, int k0, int n0, int K, int N,
                                  int tid) {
    for (int v = tid; v < 1024; v += 256) {
        int j = v / 512, r = (v / 8) % 64, c = v % 8, n = n0 + 64 * j + 8 * c;
        bool ok = k0 + r < K && n < N;
        cp_async16_zfill(dst + j * 8192 + r * 128 + ((c ^ (r & 7)) << 4),
                         we + (ok ? (long)(k0 + r) * N + n : 0), ok);
    }
}

// MODE 0: bf16, W_e (N, K); 1: bf16, W_e (K, N) (the backward); 2: int8, W_e (N, K) with the
// dequantizing epilogue; 3, 4: as 0, 1 in fp16 (the fp16 GEMM mode). A stage: A hi, A lo (when xlo), then B,
// one WG_TILE each.
template <int MODE, bool LO>
__global__ void __launch_bounds__(256, WG_MINB)
    grouped_wg_kernel(float* y, __nv_bfloat16* y16, const void* xhi, const void* xlo, const void* w,
                      long wstride, const float* sx, const float* sw, long swstride, const int* tiles, int nt,
                      int K, int N, float beta) {
    extern __shared__ uint8_t wg_raw[];
    uint8_t* smem = (uint8_t*)(((uintptr_t)wg_raw + 1023) & ~(uintptr_t)1023); // the swizzle's alignment
    // blockIdx.x runs over the columns: a tile's rows and an expert's weights are reused from L2 at once
    int t = blockIdx.y, e = tiles[t], r0 = tiles[nt + t], rn = tiles[2 * nt + t], n0 = blockIdx.x * 128;
    if (rn == 0) return;
    const int es = MODE == 2 ? 1 : 2; // bytes per element
    const int parts = LO ? 2 : 1, sb = (parts + 1) * WG_TILE;
    int tid = threadIdx.x, wg = tid / 128;
    long rb = (long)K * es;
    int nk = (int)((rb + 127) / 128);
    const uint8_t *a0 = (const uint8_t*)xhi + r0 * rb, *a1 = LO ? (const uint8_t*)xlo + r0 * rb : NULL;
    const uint8_t* we = (const uint8_t*)w + e * wstride * es;
    typedef typename std::conditional<MODE == 2, int, float>::type acc_t;
    acc_t d[64];
    for (int i = 0; i < 64; i++) d[i] = 0;
    auto load = [&](int kt) {
        uint8_t* st = smem + (kt % WG_STAGES) * sb;
        wg_load_rows(st, a0, rb, rn, kt * 128L, tid);
        if (LO) wg_load_rows(st + WG_TILE, a1, rb, rn, kt * 128L, tid);
        if (MODE == 1 || MODE == 4)
            wg_load_kn(st + parts * WG_TILE, (const __nv_bfloat16*)we, kt * 64, n0, K, N, tid);
        else
            wg_load_rows(st + parts * WG_TILE, we + n0 * rb, rb, N - n0, kt * 128L, tid);
    };
    for (int s = 0; s < WG_AHEAD; s++) {
        if (s < nk) load(s);
        cp_commit();
    }
    for (int kt = 0; kt < nk; kt++) {
        cp_wait<WG_AHEAD - 1>();
        asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); // cp.async's writes, then wgmma's reads
        __syncthreads(); // tile kt landed; the multiplies of the stage loaded next are done everywhere
        if (kt + WG_AHEAD < nk) load(kt + WG_AHEAD);
        cp_commit();
        const uint8_t* st = smem + (kt % WG_STAGES) * sb;
        const uint8_t* b = st + parts * WG_TILE;
        wg_fence();
#pragma unroll
        for (int ks = 0; ks < 4; ks++) { // four k steps of 32 bytes (16 bf16, 32 int8)
            uint64_t db =
                MODE == 1 || MODE == 4 ? wg_desc(b + ks * 2048, 8192, 1024) : wg_desc(b + ks * 32, 16, 1024);
#pragma unroll
            for (int p = 0; p < parts; p++) {
                uint64_t da = wg_desc(st + p * WG_TILE + wg * 8192 + ks * 32, 16, 1024);
                if constexpr (MODE == 2)
                    wg_mma_s8(d, da, db);
                else
                    wg_mma_16<MODE == 1 || MODE == 4, (MODE >= 3)>(d, da, db);
            }
        }
        wg_commit();
        wg_wait<WG_INFLIGHT>(d);
    }
    wg_wait<0>(d);
    // fragments as mma.sync's, per warp of the warpgroup: lane 4 g + q holds rows g, g + 8 of its 16
    // and columns 8 j + 2 q, + 1 for j = 0 .. 15
    int lane = tid % 32, g = lane / 4, q = lane % 4, wr = wg * 64 + (tid % 128) / 32 * 16;
    for (int j = 0; j < 16; j++)
        for (int h = 0; h < 2; h++) {
            int row = wr + g + 8 * h, col = n0 + 8 * j + 2 * q;
            if (row >= rn || col >= N) continue;
            long o = (long)(r0 + row) * N + col;
            float v0 = (float)d[4 * j + 2 * h], v1 = (float)d[4 * j + 2 * h + 1];
            if constexpr (MODE == 2) {
                float s = sx[r0 + row];
                const float* ws = sw + e * swstride + col;
                *(float2*)(y + o) = make_float2(v0 * (s * ws[0]), v1 * (s * ws[1]));
            } else if (y16) {
                *(__nv_bfloat162*)(y16 + o) = __floats2bfloat162_rn(v0, v1);
            } else {
                float2 old = beta == 0.0f ? make_float2(0, 0) : *(float2*)(y + o);
                *(float2*)(y + o) = make_float2(v0 + beta * old.x, v1 + beta * old.y);
            }
        }
}

#include "grouped_tma.cuh"

// Which grouped kernel serves this call: GK_MMA (mma.sync), GK_WGMMA or GK_TMA (the persistent TMA
// kernel); the last two only on a compute capability 9.0 device (their sm_90a code runs there only).
// AUTOQ_MOE_GEMM=mma, wgmma or tma (tma-pingpong, tma-cooperative: its schedule forced) picks one
// (tma falls back to wgmma where the driver has no tensor-map encoder); unset, GROUPED_DEFAULT (tma)
// on sm_90. Also sets the kernels' shared-memory limits once per device.
enum { GK_MMA, GK_WGMMA, GK_TMA };
static __thread const char* gk_last = "";
extern "C" const char* gpu_matmul_grouped_kernel(void) { return gk_last; }
// tma asked for, the descriptors refused: say so once, the sums come from wgmma
static void gk_fallback(int K, int N) {
    static volatile int told;
    if (!told)
        fprintf(stderr, "autoq: grouped GEMM (K %d, N %d): no TMA descriptor for these operands, wgmma\n", K,
                N);
    told = 1;
}
#ifndef GROUPED_DEFAULT
#define GROUPED_DEFAULT GK_TMA
#endif
static int grouped_kind(void) {
    static volatile signed char cc90[64], tma[64];
    const char* how = getenv("AUTOQ_MOE_GEMM");
    if (how && strcmp(how, "mma") == 0) return GK_MMA;
    int dev;
    cudaCheck(cudaGetDevice(&dev));
    if (dev >= 64) return GK_MMA;
    if (cc90[dev] == 0) {
        int ma, mi, on;
        cudaCheck(cudaDeviceGetAttribute(&ma, cudaDevAttrComputeCapabilityMajor, dev));
        cudaCheck(cudaDeviceGetAttribute(&mi, cudaDevAttrComputeCapabilityMinor, dev));
        on = ma == 9 && mi == 0;
        int smem = WG_STAGES * 3 * WG_TILE + 1024;
        if (on) {
            const void* k[] = {
                (const void*)grouped_wg_kernel<0, false>, (const void*)grouped_wg_kernel<0, true>,
                (const void*)grouped_wg_kernel<1, false>, (const void*)grouped_wg_kernel<1, true>,
                (const void*)grouped_wg_kernel<2, false>, (const void*)grouped_wg_kernel<3, false>,
                (const void*)grouped_wg_kernel<4, false>};
            for (int i = 0; i < 7; i++)
                cudaCheck(cudaFuncSetAttribute(k[i], cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
            tma[dev] = tm_setup() ? 1 : -1;
        }
        cc90[dev] = on ? 1 : -1;
    }
    if (cc90[dev] < 0) return GK_MMA;
    int want = how && strncmp(how, "tma", 3) == 0 ? GK_TMA
               : how && strcmp(how, "wgmma") == 0 ? GK_WGMMA
                                                  : GROUPED_DEFAULT;
    return want == GK_TMA && tma[dev] > 0 ? GK_TMA : GK_WGMMA;
}

static void grouped_wg(int mode, float* y, __nv_bfloat16* y16, const void* xhi, const void* xlo, const void* w,
                       long wstride, const float* sx, const float* sw, long swstride, const int* tiles, int nt,
                       int K, int N, float beta) {
    dim3 grid(ceil_div(N, 128), nt);
    size_t smem = WG_STAGES * (xlo ? 3 : 2) * WG_TILE + 1024;
#define WG_LAUNCH(M, L)                                                                                        \
    grouped_wg_kernel<M, L>                                                                                    \
        <<<grid, 256, smem>>>(y, y16, xhi, xlo, w, wstride, sx, sw, swstride, tiles, nt, K, N, beta)
    if (mode == 0 && !xlo) WG_LAUNCH(0, false);
    if (mode == 0 && xlo) WG_LAUNCH(0, true);
    if (mode == 1 && !xlo) WG_LAUNCH(1, false);
    if (mode == 1 && xlo) WG_LAUNCH(1, true);
    if (mode == 2) WG_LAUNCH(2, false);
    if (mode == 3) WG_LAUNCH(3, false);
    if (mode == 4) WG_LAUNCH(4, false);
#undef WG_LAUNCH
    cudaCheck(cudaGetLastError());
}

extern "C" void gpu_matmul_grouped(float* y, bf16_t* y16, const bf16_t* xhi, const bf16_t* xlo, const bf16_t* w,
                                   long wstride, const int* tiles, int nt, int K, int N, int bwd, float beta,
                                   int f16) {
    if (f16 && (xlo || y16)) {
        fprintf(stderr, "autoq: internal: an fp16 grouped GEMM with a low half or a bf16 output\n");
        exit(1);
    }
    if (K % 16 || N % 8) {
        fprintf(stderr, "autoq: internal: grouped GEMM needs K %% 16 == 0 and N %% 8 == 0 (K %d, N %d)\n", K,
                N);
        exit(1);
    }
    if (nt == 0) return;
    int kind = grouped_kind(), mode = (bwd ? 1 : 0) + (f16 ? 3 : 0);
    int pp = tm_pingpong(getenv("AUTOQ_MOE_GEMM"), mode, xlo != NULL, K, N);
    gk_last = kind == GK_TMA ? (pp ? "tma-pingpong" : "tma-cooperative") : kind == GK_WGMMA ? "wgmma" : "mma";
    if (kind == GK_TMA && grouped_tma(pp, mode, y, (__nv_bfloat16*)y16, xhi, xlo, w, wstride, NULL, NULL, 0,
                                      tiles, nt, K, N, beta))
        return;
    if (kind == GK_TMA) gk_fallback(K, N), gk_last = "wgmma";
    if (kind != GK_MMA) {
        grouped_wg(mode, y, (__nv_bfloat16*)y16, xhi, xlo, w, wstride, NULL, NULL, 0, tiles, nt, K, N, beta);
        return;
    }
    dim3 grid(nt, ceil_div(N, GG_BN));
    const __nv_bfloat16 *hi = (const __nv_bfloat16*)xhi, *lo = (const __nv_bfloat16*)xlo;
    const __nv_bfloat16* wb = (const __nv_bfloat16*)w;
    size_t smem = sizeof(__nv_bfloat16) * GG_STAGES * GG_STAGE_ELEMS;
    if (first_use_on_device(0)) { // the pipeline needs more than the default 48 KiB of shared memory
        const void* k[] = {(const void*)grouped_kernel<false, false>, (const void*)grouped_kernel<true, false>,
                           (const void*)grouped_kernel<false, true>, (const void*)grouped_kernel<true, true>};
        for (int i = 0; i < 4; i++)
            cudaCheck(cudaFuncSetAttribute(k[i], cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    }
#define GG_LAUNCH(B, H)                                                                                        \
    grouped_kernel<B, H>                                                                                       \
        <<<grid, 256, smem>>>(y, (__nv_bfloat16*)y16, hi, lo, wb, wstride, tiles, nt, K, N, beta)
    if (bwd && f16) GG_LAUNCH(true, true);
    if (bwd && !f16) GG_LAUNCH(true, false);
    if (!bwd && f16) GG_LAUNCH(false, true);
    if (!bwd && !f16) GG_LAUNCH(false, false);
#undef GG_LAUNCH
    cudaCheck(cudaGetLastError());
}

// The int8 form: WMMA needs 32-byte aligned fragments, so each 16-wide k chunk of a tile is its own
// array of 32-byte rows; two stages of cp.async loads. Epilogue: the int32 sums dequantized with
// per-row and per-column scales.
#define GI_BK 64
#define GI_NC (GI_BK / 16)
struct GiStage {
    int8_t a[GI_NC][GROUPED_ROWS][32];
    int8_t b[GI_NC][GG_BN][32];
};

__device__ inline void gi_load(GiStage* st, const int8_t* xq, const int8_t* we, int r0, int rn, int n0, int k0,
                               int K, int N, int tid) {
    for (int v = tid; v < GROUPED_ROWS * GI_NC; v += 256) {
        int row = v / GI_NC, ch = v % GI_NC, k = k0 + ch * 16;
        bool ok = row < rn && k < K;
        cp_async16_zfill(&st->a[ch][row][0], xq + (ok ? (long)(r0 + row) * K + k : 0), ok);
    }
    for (int v = tid; v < GG_BN * GI_NC; v += 256) {
        int row = v / GI_NC, ch = v % GI_NC, k = k0 + ch * 16;
        bool ok = n0 + row < N && k < K;
        cp_async16_zfill(&st->b[ch][row][0], we + (ok ? (long)(n0 + row) * K + k : 0), ok);
    }
}

__global__ void __launch_bounds__(256)
    grouped_i8_kernel(float* y, const int8_t* xq, const float* sx, const int8_t* wq, long wstride,
                      const float* sw, long swstride, const int* tiles, int nt, int K, int N) {
    using namespace nvcuda;
    extern __shared__ __align__(128) GiStage gi_smem[];
    int t = blockIdx.x, e = tiles[t], r0 = tiles[nt + t], rn = tiles[2 * nt + t], n0 = blockIdx.y * GG_BN;
    if (rn == 0) return;
    int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, wm = warp / 4, wn = warp % 4;
    const int8_t* we = wq + e * wstride;
    int nk = (K + GI_BK - 1) / GI_BK;
    wmma::fragment<wmma::accumulator, 16, 16, 16, int> c[GG_MT][2]; // each warp GROUPED_ROWS / 2 x 32
    for (int i = 0; i < GG_MT; i++)
        for (int j = 0; j < 2; j++) wmma::fill_fragment(c[i][j], 0);
    gi_load(&gi_smem[0], xq, we, r0, rn, n0, 0, K, N, tid);
    cp_commit();
    for (int kt = 0; kt < nk; kt++) {
        if (kt + 1 < nk) gi_load(&gi_smem[(kt + 1) & 1], xq, we, r0, rn, n0, (kt + 1) * GI_BK, K, N, tid);
        cp_commit();
        cp_wait<1>();
        __syncthreads();
        const GiStage* st = &gi_smem[kt & 1];
        for (int ch = 0; ch < GI_NC && kt * GI_BK + ch * 16 < K; ch++) {
            wmma::fragment<wmma::matrix_b, 16, 16, 16, signed char, wmma::col_major> b[2];
            for (int j = 0; j < 2; j++) wmma::load_matrix_sync(b[j], &st->b[ch][wn * 32 + j * 16][0], 32);
            for (int i = 0; i < GG_MT; i++) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, signed char, wmma::row_major> a;
                wmma::load_matrix_sync(a, &st->a[ch][wm * (GROUPED_ROWS / 2) + i * 16][0], 32);
                for (int j = 0; j < 2; j++) wmma::mma_sync(c[i][j], a, b[j], c[i][j]);
            }
        }
        __syncthreads(); // the stage is reloaded next
    }
    cp_wait<0>();
    int* cs = (int*)&gi_smem[0] + warp * 16 * 16; // scratch in the idle stage memory
    for (int i = 0; i < GG_MT; i++)
        for (int j = 0; j < 2; j++) {
            wmma::store_matrix_sync(cs, c[i][j], 16, wmma::mem_row_major);
            __syncwarp();
            int row = wm * (GROUPED_ROWS / 2) + i * 16 + lane / 2, col = n0 + wn * 32 + j * 16 + (lane % 2) * 8;
            if (row < rn && col < N) {
                long o = (long)(r0 + row) * N + col;
                const int* v = cs + (lane / 2) * 16 + (lane % 2) * 8;
                float s = sx[r0 + row];
                const float* w = sw + e * swstride + col;
                for (int q = 0; q < 8; q++) y[o + q] = (float)v[q] * (s * w[q]);
            }
            __syncwarp();
        }
}

extern "C" void gpu_matmul_grouped_i8(float* y, const int8_t* xq, const float* sx, const int8_t* wq,
                                      long wstride, const float* sw, long swstride, const int* tiles, int nt,
                                      int K, int N) {
    if (K % 16 || N % 8) {
        fprintf(stderr, "autoq: internal: int8 grouped GEMM needs K %% 16 == 0 and N %% 8 == 0 (K %d, N %d)\n",
                K, N);
        exit(1);
    }
    if (nt == 0) return;
    int kind = grouped_kind();
    int pp = tm_pingpong(getenv("AUTOQ_MOE_GEMM"), 2, 0, K, N);
    gk_last = kind == GK_TMA ? (pp ? "tma-pingpong" : "tma-cooperative") : kind == GK_WGMMA ? "wgmma" : "mma";
    if (kind == GK_TMA &&
        grouped_tma(pp, 2, y, NULL, xq, NULL, wq, wstride, sx, sw, swstride, tiles, nt, K, N, 0.0f))
        return;
    if (kind == GK_TMA) gk_fallback(K, N), gk_last = "wgmma";
    if (kind != GK_MMA) {
        grouped_wg(2, y, NULL, xq, NULL, wq, wstride, sx, sw, swstride, tiles, nt, K, N, 0.0f);
        return;
    }
    dim3 grid(nt, ceil_div(N, GG_BN));
    size_t smem = 2 * sizeof(GiStage);
    if (first_use_on_device(1))
        cudaCheck(
            cudaFuncSetAttribute(grouped_i8_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    grouped_i8_kernel<<<grid, 256, smem>>>(y, xq, sx, wq, wstride, sw, swstride, tiles, nt, K, N);
    cudaCheck(cudaGetLastError());
}
