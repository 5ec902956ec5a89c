// KL(P || Q) per row of logits, summed. CPU twin: kernels/kl.c.
#include <math.h>

#include "cuda_common.cuh"
#include "gpu.h"

__device__ double block_sum_d(double v) {
    __shared__ double warp[32];
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
    int lane = threadIdx.x % 32, w = threadIdx.x / 32;
    __syncthreads();
    if (lane == 0) warp[w] = v;
    __syncthreads();
    int nw = (blockDim.x + 31) / 32;
    v = threadIdx.x < nw ? warp[threadIdx.x] : 0.0;
    if (w == 0)
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
    __shared__ double res;
    if (threadIdx.x == 0) res = v;
    __syncthreads();
    return res;
}

__device__ float block_max2(float v) {
    __shared__ float warp[32];
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffff, v, o));
    int lane = threadIdx.x % 32, w = threadIdx.x / 32;
    __syncthreads();
    if (lane == 0) warp[w] = v;
    __syncthreads();
    int nw = (blockDim.x + 31) / 32;
    v = threadIdx.x < nw ? warp[threadIdx.x] : -INFINITY;
    if (w == 0)
        for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffff, v, o));
    __shared__ float res;
    if (threadIdx.x == 0) res = v;
    __syncthreads();
    return res;
}

// One block per row: maxima, then exponentials in float, sums in double.
__global__ void kl_rows_kernel(double* out, const float* p, const float* q, int V) {
    const float* a = p + (long)blockIdx.x * V;
    const float* b = q + (long)blockIdx.x * V;
    float ma = -INFINITY, mb = -INFINITY;
    for (int v = threadIdx.x; v < V; v += blockDim.x) {
        ma = fmaxf(ma, a[v]);
        mb = fmaxf(mb, b[v]);
    }
    ma = block_max2(ma);
    mb = block_max2(mb);
    float fa = 0.0f, fb = 0.0f, ft = 0.0f;
    for (int v = threadIdx.x; v < V; v += blockDim.x) {
        float ea = expf(a[v] - ma);
        fa += ea;
        ft += ea * (a[v] - b[v]);
        fb += expf(b[v] - mb);
    }
    double sa = block_sum_d(fa), sb = block_sum_d(fb), ta = block_sum_d(ft);
    if (threadIdx.x == 0) out[blockIdx.x] = ta / sa - (ma + log(sa)) + (mb + log(sb));
}

// Deterministic: one block adds the per-row values in a fixed order.
__global__ void sum_rows_kernel(double* total, const double* rows, int n) {
    double s = 0.0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) s += rows[i];
    s = block_sum_d(s);
    if (threadIdx.x == 0) *total += s;
}

extern "C" void gpu_kl_rows(double* total, double* scratch, const float* p, const float* q, int rows, int V) {
    kl_rows_kernel<<<rows, 512>>>(scratch, p, q, V);
    cudaCheck(cudaGetLastError());
    sum_rows_kernel<<<1, 1024>>>(total, scratch, rows);
    cudaCheck(cudaGetLastError());
}
