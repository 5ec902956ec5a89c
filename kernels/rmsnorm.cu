// RMSNorm forward (with optional bf16 halves of its output) and backward. CPU twin: kernels/rmsnorm.c.
#include <math.h>

#include "cuda_common.cuh"
#include "rmsnorm.h"

// One block per row; four consecutive values per thread (C % 4 == 0, checked by the caller).
__global__ void rmsnorm_kernel(float* out, __nv_bfloat16* hi, __nv_bfloat16* lo, float* rstd, const float* x,
                               const __nv_bfloat16* w, float w_add, int C, float eps, int f16) {
    long base = (long)blockIdx.x * C;
    float ss = 0.0f, v[4], wv[4];
    for (int j = 4 * threadIdx.x; j < C; j += 4 * blockDim.x) {
        load4(x, base + j, v);
        ss += v[0] * v[0] + v[1] * v[1] + v[2] * v[2] + v[3] * v[3];
    }
    float r = rsqrtf(block_sum(ss) / C + eps);
    if (rstd && threadIdx.x == 0) rstd[blockIdx.x] = r;
    for (int j = 4 * threadIdx.x; j < C; j += 4 * blockDim.x) {
        load4(x, base + j, v);
        load4(w, j, wv);
        for (int k = 0; k < 4; k++) {
            v[k] = (wv[k] + w_add) * (v[k] * r);
            store_split(hi, lo, base + j + k, v[k], f16);
        }
        if (out) *(float4*)(out + base + j) = make_float4(v[0], v[1], v[2], v[3]);
    }
}

__global__ void rmsnorm_bwd_kernel(float* dx, const float* dout, const float* x, const __nv_bfloat16* w,
                                   float w_add, const float* rstd, int C, int accumulate) {
    long base = (long)blockIdx.x * C;
    float r = rstd[blockIdx.x];
    double dot = 0.0;
    for (int j = threadIdx.x; j < C; j += blockDim.x)
        dot += (double)((__bfloat162float(w[j]) + w_add) * dout[base + j]) * x[base + j];
    dot = block_sum(dot);
    float c = (float)(dot * r * r * r / C);
    for (int j = threadIdx.x; j < C; j += blockDim.x) {
        float g = (__bfloat162float(w[j]) + w_add) * dout[base + j] * r - x[base + j] * c;
        dx[base + j] = accumulate ? dx[base + j] + g : g;
    }
}

extern "C" void gpu_rmsnorm_add(float* out, bf16_t* hi, bf16_t* lo, float* rstd, const float* x,
                                const bf16_t* w, float w_add, int M, int C, float eps, int f16) {
    if (C % 4) {
        fprintf(stderr, "autoq: hidden size %d not supported by the CUDA RMSNorm (a multiple of 4)\n", C);
        exit(1);
    }
    rmsnorm_kernel<<<M, 256>>>(out, (__nv_bfloat16*)hi, (__nv_bfloat16*)lo, rstd, x, (const __nv_bfloat16*)w,
                               w_add, C, eps, f16);
    cudaCheck(cudaGetLastError());
}

extern "C" void gpu_rmsnorm(float* out, bf16_t* hi, bf16_t* lo, float* rstd, const float* x, const bf16_t* w,
                            int M, int C, float eps, int f16) {
    gpu_rmsnorm_add(out, hi, lo, rstd, x, w, 0.0f, M, C, eps, f16);
}

extern "C" void gpu_rmsnorm_backward_add(float* dx, const float* dout, const float* x, const bf16_t* w,
                                         float w_add, const float* rstd, int M, int C, int accumulate) {
    rmsnorm_bwd_kernel<<<M, 256>>>(dx, dout, x, (const __nv_bfloat16*)w, w_add, rstd, C, accumulate);
    cudaCheck(cudaGetLastError());
}

extern "C" void gpu_rmsnorm_backward(float* dx, const float* dout, const float* x, const bf16_t* w,
                                     const float* rstd, int M, int C, int accumulate) {
    gpu_rmsnorm_backward_add(dx, dout, x, w, 0.0f, rstd, M, C, accumulate);
}
