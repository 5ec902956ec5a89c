// Shared by the CUDA sources: error-checking macros that report file and line.
#pragma once
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>

#define cudaCheck(call)                                                                                        \
    do {                                                                                                       \
        cudaError_t e_ = (call);                                                                               \
        if (e_ != cudaSuccess) {                                                                               \
            fprintf(stderr, "autoq: CUDA error %s at %s:%d: %s\n", cudaGetErrorName(e_), __FILE__, __LINE__,   \
                    cudaGetErrorString(e_));                                                                   \
            exit(1);                                                                                           \
        }                                                                                                      \
    } while (0)

#define cublasCheck(call)                                                                                      \
    do {                                                                                                       \
        cublasStatus_t s_ = (call);                                                                            \
        if (s_ != CUBLAS_STATUS_SUCCESS) {                                                                     \
            fprintf(stderr, "autoq: cuBLAS error %d at %s:%d\n", (int)s_, __FILE__, __LINE__);                 \
            exit(1);                                                                                           \
        }                                                                                                      \
    } while (0)

static inline int ceil_div(long a, long b) { return (int)((a + b - 1) / b); }

#ifdef __CUDACC__
#include <math.h>

// Block-wide reductions (blockDim.x a multiple of 32, at most 1024); every
// thread gets the result. op: 0 sum, 1 max.
template <typename T, int OP> __device__ T block_reduce(T v) {
    __shared__ T warp[32];
    __shared__ T res;
    for (int o = 16; o > 0; o >>= 1) {
        T x = __shfl_xor_sync(0xffffffff, v, o);
        v = OP ? (x > v ? x : v) : v + x;
    }
    int lane = threadIdx.x % 32, w = threadIdx.x / 32, nw = (blockDim.x + 31) / 32;
    __syncthreads(); // warp[] may still be read by a previous call
    if (lane == 0) warp[w] = v;
    __syncthreads();
    T id = OP ? (T)-INFINITY : (T)0;
    v = threadIdx.x < nw ? warp[threadIdx.x] : id;
    if (w == 0)
        for (int o = 16; o > 0; o >>= 1) {
            T x = __shfl_xor_sync(0xffffffff, v, o);
            v = OP ? (x > v ? x : v) : v + x;
        }
    if (threadIdx.x == 0) res = v;
    __syncthreads();
    return res;
}

__device__ inline float block_sum(float v) { return block_reduce<float, 0>(v); }
__device__ inline double block_sum(double v) { return block_reduce<double, 0>(v); }
__device__ inline float block_max(float v) { return block_reduce<float, 1>(v); }

__device__ inline float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffff, v, o));
    return v;
}
__device__ inline float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
    return v;
}

template <typename T> __device__ inline float load(const T* p, long i);
template <> __device__ inline float load<float>(const float* p, long i) { return p[i]; }
template <> __device__ inline float load<__nv_bfloat16>(const __nv_bfloat16* p, long i) {
    return __bfloat162float(p[i]);
}
template <> __device__ inline float load<__half>(const __half* p, long i) { return __half2float(p[i]); }

// Four consecutive values from i (a multiple of 4) with one 16- or 8-byte load.
__device__ inline void load4(const float* p, long i, float v[4]) {
    float4 a = *(const float4*)(p + i);
    v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w;
}
__device__ inline void load4(const __nv_bfloat16* p, long i, float v[4]) {
    uint2 a = *(const uint2*)(p + i);
    const __nv_bfloat16* b = (const __nv_bfloat16*)&a;
    for (int k = 0; k < 4; k++) v[k] = __bfloat162float(b[k]);
}
__device__ inline void load4(const __half* p, long i, float v[4]) {
    uint2 a = *(const uint2*)(p + i);
    const __half* b = (const __half*)&a;
    for (int k = 0; k < 4; k++) v[k] = __half2float(b[k]);
}

// c (16x8 fp32) += a (16x16 bf16, row) . b (16x8 bf16, col); fragment layouts as in the PTX ISA:
// lane = 4 g + t holds rows g and g + 8, columns 2t, 2t + 1 (and + 8 for a's k).
__device__ inline void mma_bf16(float c[4], const uint32_t a[4], const uint32_t b[2]) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
// The same with fp16 a and b.
__device__ inline void mma_f16(float c[4], const uint32_t a[4], const uint32_t b[2]) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// Four 8x8 bf16 matrices from shared memory; lane l gives the address of row l % 8 of matrix l / 8
// and receives of each matrix the pair (row l / 4, columns 2 (l % 4) + 0, 1); .trans: the pair
// (rows 2 (l % 4) + 0, 1, column l / 4).
__device__ inline void ldsm4(uint32_t r[4], const void* p) {
    uint32_t a = (uint32_t)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}
__device__ inline void ldsm4_t(uint32_t r[4], const void* p) {
    uint32_t a = (uint32_t)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}

// 16 bytes global -> shared without a register round trip; completion by groups (cp_wait). With
// ok false nothing is read and the 16 bytes are zeros (src-size 0).
__device__ inline void cp_async16(void* dst, const void* src) {
    uint32_t a = (uint32_t)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(a), "l"(src));
}
__device__ inline void cp_async16_zfill(void* dst, const void* src, bool ok) {
    uint32_t a = (uint32_t)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(a), "l"(src), "r"(ok ? 16 : 0));
}
__device__ inline void cp_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ inline void cp_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

// Writes v as the next GEMM's 16-bit input when hi is not NULL: the bf16 pair hi + lo (lo may be NULL)
// or, with f16 (the fp16 GEMM mode), fp16 bits in hi's buffer and no lo.
__device__ inline void store_split(__nv_bfloat16* hi, __nv_bfloat16* lo, long i, float v, int f16 = 0) {
    if (!hi) return;
    if (f16) {
        ((__half*)hi)[i] = __float2half_rn(v);
        return;
    }
    __nv_bfloat16 h = __float2bfloat16(v);
    hi[i] = h;
    if (lo) lo[i] = __float2bfloat16(v - __bfloat162float(h));
}
#endif
