// Causal row softmax of attention scores. CPU twin: kernels/attention.c.
#include <math.h>

#include "cuda_common.cuh"
#include "gpu.h"

// One block per (head, query row t); s holds scaled scores.
__global__ void causal_softmax_kernel(__nv_bfloat16* p, __nv_bfloat16* p_lo, float* lse, const float* s,
                                      int T) {
    int h = blockIdx.x / T, t = blockIdx.x % T;
    const float* row = s + ((long)h * T + t) * T;
    __nv_bfloat16* out = p + ((long)h * T + t) * T;
    __nv_bfloat16* out_lo = p_lo ? p_lo + ((long)h * T + t) * T : NULL;
    float m = -INFINITY;
    for (int j = threadIdx.x; j <= t; j += blockDim.x) m = fmaxf(m, row[j]);
    m = block_max(m);
    float sum = 0.0f;
    for (int j = threadIdx.x; j <= t; j += blockDim.x) sum += expf(row[j] - m);
    sum = block_sum(sum);
    float inv = 1.0f / sum;
    for (int j = threadIdx.x; j < T; j += blockDim.x) {
        float v = j <= t ? expf(row[j] - m) * inv : 0.0f;
        __nv_bfloat16 hv = __float2bfloat16(v);
        out[j] = hv;
        if (out_lo) out_lo[j] = __float2bfloat16(v - __bfloat162float(hv));
    }
    if (threadIdx.x == 0) lse[(long)h * T + t] = m + logf(sum);
}

extern "C" void gpu_causal_softmax(bf16_t* p, bf16_t* p_lo, float* lse, const float* s, int nb, int T) {
    causal_softmax_kernel<<<nb * T, 128>>>((__nv_bfloat16*)p, (__nv_bfloat16*)p_lo, lse, s, T);
    cudaCheck(cudaGetLastError());
}
