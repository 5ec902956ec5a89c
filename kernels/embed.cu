// Embedding gather. CPU twin: kernels/embed.c.
#include <math.h>

#include "cuda_common.cuh"
#include "embed.h"

__global__ void embed_kernel(float* h, const __nv_bfloat16* table, const int* ids, int M, int D) {
    long i = blockIdx.x * (long)blockDim.x + threadIdx.x;
    if (i >= (long)M * D) return;
    int t = (int)(i / D), d = (int)(i % D);
    h[i] = __bfloat162float(table[(long)ids[t] * D + d]);
}

extern "C" void gpu_embed(float* h, const bf16_t* table, const int* ids, int M, int D) {
    long n = (long)M * D;
    embed_kernel<<<ceil_div(n, 256), 256>>>(h, (const __nv_bfloat16*)table, ids, M, D);
    cudaCheck(cudaGetLastError());
}
