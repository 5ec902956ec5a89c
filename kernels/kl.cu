// KL(P || Q) per row of logits, summed. CPU twin: kernels/kl.c.
#include <math.h>

#include "cuda_common.cuh"
#include "gpu.h"

// One block per row: maxima, then exponentials in float, sums in double.
__global__ void kl_rows_kernel(double* out, const float* p, const float* q, int V) {
    const float* a = p + (long)blockIdx.x * V;
    const float* b = q + (long)blockIdx.x * V;
    float ma = -INFINITY, mb = -INFINITY;
    for (int v = threadIdx.x; v < V; v += blockDim.x) {
        ma = fmaxf(ma, a[v]);
        mb = fmaxf(mb, b[v]);
    }
    ma = block_max(ma);
    mb = block_max(mb);
    float fa = 0.0f, fb = 0.0f, ft = 0.0f;
    for (int v = threadIdx.x; v < V; v += blockDim.x) {
        float ea = expf(a[v] - ma);
        fa += ea;
        ft += ea * (a[v] - b[v]);
        fb += expf(b[v] - mb);
    }
    double sa = block_sum((double)fa), sb = block_sum((double)fb), ta = block_sum((double)ft);
    if (threadIdx.x == 0) out[blockIdx.x] = ta / sa - (ma + log(sa)) + (mb + log(sb));
}

// Deterministic: one block adds the per-row values in a fixed order.
__global__ void sum_rows_kernel(double* total, const double* rows, int n) {
    double s = 0.0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) s += rows[i];
    s = block_sum(s);
    if (threadIdx.x == 0) *total += s;
}

extern "C" void gpu_kl_rows(double* total, double* scratch, const float* p, const float* q, int rows, int V) {
    kl_rows_kernel<<<rows, 512>>>(scratch, p, q, V);
    cudaCheck(cudaGetLastError());
    sum_rows_kernel<<<1, 1024>>>(total, scratch, rows);
    cudaCheck(cudaGetLastError());
}
