// KL(P || Q) per row of logits, summed. CPU twin: kernels/kl.c.
#include <math.h>

#include "cuda_common.cuh"
#include "gpu.h"

// Running maxima and sums of one thread, rescaled when a maximum grows, so each row is read once.
struct KlAcc {
    float ma, fa, ft, mb, fb; // max and sum of exp(a - ma), sum of exp(a - ma) (a - b); the same for b
};

__device__ inline void kl_add(KlAcc& s, float a, float b) {
    if (a > s.ma) {
        float r = expf(s.ma - a);
        s.fa *= r, s.ft *= r, s.ma = a;
    }
    float ea = expf(a - s.ma);
    s.fa += ea, s.ft += ea * (a - b);
    if (b > s.mb) s.fb *= expf(s.mb - b), s.mb = b;
    s.fb += expf(b - s.mb);
}

// One block per row; sums combined in double. Rows of V % 4 == 0 floats are read 16 bytes at a time.
__global__ void kl_rows_kernel(double* out, const float* p, const float* q, int V) {
    const float* a = p + (long)blockIdx.x * V;
    const float* b = q + (long)blockIdx.x * V;
    KlAcc s = {-INFINITY, 0.0f, 0.0f, -INFINITY, 0.0f};
    if (V % 4 == 0) {
        for (int v = 4 * threadIdx.x; v < V; v += 4 * blockDim.x) {
            float4 x = *(const float4*)(a + v), y = *(const float4*)(b + v);
            kl_add(s, x.x, y.x), kl_add(s, x.y, y.y), kl_add(s, x.z, y.z), kl_add(s, x.w, y.w);
        }
    } else {
        for (int v = threadIdx.x; v < V; v += blockDim.x) kl_add(s, a[v], b[v]);
    }
    float ma = block_max(s.ma), mb = block_max(s.mb);
    float ra = s.ma == -INFINITY ? 0.0f : expf(s.ma - ma), rb = s.mb == -INFINITY ? 0.0f : expf(s.mb - mb);
    double sa = block_sum((double)(s.fa * ra)), ta = block_sum((double)(s.ft * ra));
    double sb = block_sum((double)(s.fb * rb));
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
