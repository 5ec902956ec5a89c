// Conversions around the cuBLAS GEMMs: fp32 to bf16 hi + lo pairs, residual adds.
#include <math.h>

#include "cuda_common.cuh"
#include "matmul.h"

// x = hi + lo with both in bf16: hi carries 8 mantissa bits, lo the next 8.
__global__ void split_bf16_kernel(__nv_bfloat16* hi, __nv_bfloat16* lo, const float* x, long n) {
    long i = blockIdx.x * (long)blockDim.x + threadIdx.x;
    if (i >= n) return;
    store_split(hi, lo, i, x[i]);
}

__global__ void add_kernel(float* h, const float* y, long n) {
    long i = blockIdx.x * (long)blockDim.x + threadIdx.x;
    if (i < n) h[i] += y[i];
}

extern "C" void gpu_split_bf16(bf16_t* hi, bf16_t* lo, const float* x, long n) {
    split_bf16_kernel<<<ceil_div(n, 256), 256>>>((__nv_bfloat16*)hi, (__nv_bfloat16*)lo, x, n);
    cudaCheck(cudaGetLastError());
}

extern "C" void gpu_add(float* h, const float* y, long n) {
    add_kernel<<<ceil_div(n, 256), 256>>>(h, y, n);
    cudaCheck(cudaGetLastError());
}
