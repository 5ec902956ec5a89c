// Causal row softmax of attention scores. CPU twin: kernels/attention.c.
#include <math.h>

#include "cuda_common.cuh"
#include "gpu.h"

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

extern "C" void gpu_causal_softmax(bf16_t* p, bf16_t* p_lo, float* lse, const float* s, int nb, int T) {
    long rows = (long)nb * T;
    causal_softmax_kernel<<<ceil_div(rows, 8), 256>>>((__nv_bfloat16*)p, (__nv_bfloat16*)p_lo, lse, s, T, rows);
    cudaCheck(cudaGetLastError());
}
