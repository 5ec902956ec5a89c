// Shared by the CUDA sources: error-checking macros that report file and line.
#pragma once
#include <cublas_v2.h>
#include <cuda_bf16.h>
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

// Writes v as the bf16 pair hi + lo (next GEMM's input) when hi is not NULL; lo may be NULL.
__device__ inline void store_split(__nv_bfloat16* hi, __nv_bfloat16* lo, long i, float v) {
    if (!hi) return;
    __nv_bfloat16 h = __float2bfloat16(v);
    hi[i] = h;
    if (lo) lo[i] = __float2bfloat16(v - __bfloat162float(h));
}
#endif
