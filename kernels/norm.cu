// RMSNorm and the per-head q/k norm fused with RoPE. CPU twins: kernels/rmsnorm.c, kernels/rope.c.
#include "cuda_common.cuh"
#include "gpu.h"

// Sum over the block; blockDim.x a multiple of 32, at most 1024.
__global__ void rmsnorm_kernel(float* out, float* rstd, const float* x, const __nv_bfloat16* w, int C,
                               float eps) {
    const float* xr = x + (long)blockIdx.x * C;
    float ss = 0.0f;
    for (int j = threadIdx.x; j < C; j += blockDim.x) ss += xr[j] * xr[j];
    float r = rsqrtf(block_sum(ss) / C + eps);
    if (rstd && threadIdx.x == 0) rstd[blockIdx.x] = r;
    for (int j = threadIdx.x; j < C; j += blockDim.x) {
        out[(long)blockIdx.x * C + j] = __bfloat162float(w[j]) * (xr[j] * r);
    }
}

// One block per (row, head), hd/2 threads: thread i owns the RoPE pair (i, i + hd/2).
__global__ void qk_norm_rope_kernel(float* x, float* rstd, const __nv_bfloat16* w, const float* cos_t,
                                    const float* sin_t, int T, int nh, int hd, float eps) {
    int row = blockIdx.x / nh, head = blockIdx.x % nh, i = threadIdx.x, half = hd / 2;
    float* v = x + ((long)row * nh + head) * hd;
    float a = v[i], b = v[i + half];
    __shared__ float red[128];
    red[i] = a * a + b * b;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) { // blockDim is a power of two (hd/2)
        if (i < s) red[i] += red[i + s];
        __syncthreads();
    }
    float r = rsqrtf(red[0] / hd + eps);
    if (rstd && i == 0) rstd[blockIdx.x] = r;
    a = __bfloat162float(w[i]) * (a * r);
    b = __bfloat162float(w[i + half]) * (b * r);
    int t = row % T;
    float c = cos_t[(long)t * half + i], s = sin_t[(long)t * half + i];
    float ra = a * c - b * s, rb = b * c + a * s;
    v[i] = ra;
    v[i + half] = rb;
}

extern "C" void gpu_rmsnorm(float* out, float* rstd, const float* x, const bf16_t* w, int M, int C, float eps) {
    rmsnorm_kernel<<<M, 256>>>(out, rstd, x, (const __nv_bfloat16*)w, C, eps);
    cudaCheck(cudaGetLastError());
}

extern "C" void gpu_qk_norm_rope(float* x, float* rstd, const bf16_t* w, const float* cos_t, const float* sin_t,
                                 int rows, int T, int nh, int hd, float eps) {
    if (hd / 2 > 128 || (hd / 2 & (hd / 2 - 1)) != 0) {
        fprintf(stderr, "autoq: head_dim %d not supported by the CUDA q/k norm (powers of two up to 256)\n",
                hd);
        exit(1);
    }
    qk_norm_rope_kernel<<<rows * nh, hd / 2>>>(x, rstd, (const __nv_bfloat16*)w, cos_t, sin_t, T, nh, hd, eps);
    cudaCheck(cudaGetLastError());
}
