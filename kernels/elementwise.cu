// Gathers, conversions and pointwise ops. CPU twins: engine/forward.c (embed,
// residual add), kernels/swiglu.c.
#include "cuda_common.cuh"
#include "gpu.h"

__global__ void embed_kernel(float* h, const __nv_bfloat16* table, const int* ids, int M, int D) {
    long i = blockIdx.x * (long)blockDim.x + threadIdx.x;
    if (i >= (long)M * D) return;
    int t = (int)(i / D), d = (int)(i % D);
    h[i] = __bfloat162float(table[(long)ids[t] * D + d]);
}

// x = hi + lo with both in bf16: hi carries 8 mantissa bits, lo the next 8.
__global__ void split_bf16_kernel(__nv_bfloat16* hi, __nv_bfloat16* lo, const float* x, long n) {
    long i = blockIdx.x * (long)blockDim.x + threadIdx.x;
    if (i >= n) return;
    __nv_bfloat16 h = __float2bfloat16(x[i]);
    hi[i] = h;
    if (lo) lo[i] = __float2bfloat16(x[i] - __bfloat162float(h));
}

__global__ void add_kernel(float* h, const float* y, long n) {
    long i = blockIdx.x * (long)blockDim.x + threadIdx.x;
    if (i < n) h[i] += y[i];
}

__global__ void swiglu_kernel(float* out, const float* g, const float* u, long n) {
    long i = blockIdx.x * (long)blockDim.x + threadIdx.x;
    if (i >= n) return;
    float s = g[i] / (1.0f + expf(-g[i]));
    out[i] = s * u[i];
}

extern "C" void gpu_embed(float* h, const bf16_t* table, const int* ids, int M, int D) {
    long n = (long)M * D;
    embed_kernel<<<ceil_div(n, 256), 256>>>(h, (const __nv_bfloat16*)table, ids, M, D);
    cudaCheck(cudaGetLastError());
}

extern "C" void gpu_split_bf16(bf16_t* hi, bf16_t* lo, const float* x, long n) {
    split_bf16_kernel<<<ceil_div(n, 256), 256>>>((__nv_bfloat16*)hi, (__nv_bfloat16*)lo, x, n);
    cudaCheck(cudaGetLastError());
}

extern "C" void gpu_add(float* h, const float* y, long n) {
    add_kernel<<<ceil_div(n, 256), 256>>>(h, y, n);
    cudaCheck(cudaGetLastError());
}

extern "C" void gpu_swiglu(float* out, const float* g, const float* u, long n) {
    swiglu_kernel<<<ceil_div(n, 256), 256>>>(out, g, u, n);
    cudaCheck(cudaGetLastError());
}
