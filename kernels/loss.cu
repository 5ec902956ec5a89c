// KL of logit rows, cross-entropy backward and the gradient score term. CPU twin: kernels/loss.c.
#include <math.h>

#include "cuda_common.cuh"
#include "loss.h"

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

// A row's log-sum-exp over the block, as *m and the returned sum of exp(x - m) in double: every thread calls
// it (block_max, block_sum) and gets both. The exponentials in float (the gradient's, expf) or in double
// (dexp: the NLL that search --refine measures, gpu_nll_windows).
template <bool dexp> __device__ inline double row_sum_exp(const float* x, int V, float* m) {
    float mx = -INFINITY;
    for (int v = threadIdx.x; v < V; v += blockDim.x) mx = fmaxf(mx, x[v]);
    mx = block_max(mx);
    double s = 0.0;
    for (int v = threadIdx.x; v < V; v += blockDim.x) {
        if (dexp)
            s += exp((double)x[v] - mx);
        else
            s += expf(x[v] - mx);
    }
    *m = mx;
    return block_sum(s);
}

// One block per row of logits: loss of the next token and d(mean CE of the sample)/d(logits),
// written as bf16 hi + lo halves for the lm_head backward GEMM. The last row of each window is zero.
__global__ void ce_bwd_kernel(__nv_bfloat16* dhi, __nv_bfloat16* dlo, double* loss, const float* logits,
                              const int* ids, int T, int V) {
    long row = blockIdx.x;
    int t = (int)(row % T);
    const float* x = logits + row * V;
    __nv_bfloat16* h = dhi + row * V;
    __nv_bfloat16* l = dlo ? dlo + row * V : NULL;
    if (t == T - 1) {
        for (int v = threadIdx.x; v < V; v += blockDim.x) {
            h[v] = __float2bfloat16(0.0f);
            if (l) l[v] = __float2bfloat16(0.0f);
        }
        if (threadIdx.x == 0) loss[row] = 0.0;
        return;
    }
    float m;
    double s = row_sum_exp<false>(x, V, &m);
    float lse = m + (float)log(s), inv_n = 1.0f / (T - 1);
    int y = ids[row + 1];
    for (int v = threadIdx.x; v < V; v += blockDim.x) {
        float g = (expf(x[v] - lse) - (v == y ? 1.0f : 0.0f)) * inv_n;
        __nv_bfloat16 hv = __float2bfloat16(g);
        h[v] = hv;
        if (l) l[v] = __float2bfloat16(g - __bfloat162float(hv));
    }
    if (threadIdx.x == 0) loss[row] = (double)lse - x[y];
}

// Partial sums of (dy (yq - y))^2 per block, in double; yq = acc * sx[row] * sw[col] is the int8
// GEMM's result, dequantized here rather than written out and read back.
__global__ void grad_score_kernel(double* part, const float* dy, const int32_t* iacc, const float* sx,
                                  const float* sw, const float* y, int N, long n) {
    double acc = 0.0;
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        float yq = (float)iacc[i] * (sx[i / N] * sw[i % N]);
        double d = (double)dy[i] * ((double)yq - (double)y[i]);
        acc += d * d;
    }
    acc = block_sum(acc);
    if (threadIdx.x == 0) part[blockIdx.x] = acc;
}

__global__ void sq_diff_dot_kernel(double* part, const float* dy, const float* yq, const float* y, long n) {
    double acc = 0.0;
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        double d = (double)dy[i] * ((double)yq[i] - (double)y[i]);
        acc += d * d;
    }
    acc = block_sum(acc);
    if (threadIdx.x == 0) part[blockIdx.x] = acc;
}

extern "C" void gpu_kl_rows(double* total, double* scratch, const float* p, const float* q, int rows, int V) {
    kl_rows_kernel<<<rows, 512>>>(scratch, p, q, V);
    cudaCheck(cudaGetLastError());
    sum_rows_kernel<<<1, 1024>>>(total, scratch, rows);
    cudaCheck(cudaGetLastError());
}

__global__ void sum_windows_kernel(double* out, long stride, const double* rows, int T) {
    double acc = 0.0;
    for (int i = threadIdx.x; i < T; i += blockDim.x) acc += rows[(long)blockIdx.x * T + i];
    acc = block_sum(acc);
    if (threadIdx.x == 0) out[(long)blockIdx.x * stride] += acc;
}

extern "C" void gpu_sum_windows(double* out, long stride, const double* rows, int nb, int T) {
    sum_windows_kernel<<<nb, 256>>>(out, stride, rows, T);
    cudaCheck(cudaGetLastError());
}

// One block per row: (lse - x[next token]) / (T - 1), 0 for each window's last row.
__global__ void nll_rows_kernel(double* out, const float* logits, const int* ids, int T, int V) {
    long row = blockIdx.x;
    const float* x = logits + row * V;
    if ((int)(row % T) == T - 1) {
        if (threadIdx.x == 0) out[row] = 0.0;
        return;
    }
    float m;
    double s = row_sum_exp<true>(x, V, &m);
    if (threadIdx.x == 0) out[row] = ((double)m + log(s) - x[ids[row + 1]]) / (T - 1);
}

extern "C" void gpu_nll_windows(double* total, double* scratch, const float* logits, const int* ids, int nb,
                                int T, int V) {
    nll_rows_kernel<<<nb * T, 512>>>(scratch, logits, ids, T, V);
    cudaCheck(cudaGetLastError());
    sum_rows_kernel<<<1, 1024>>>(total, scratch, nb * T);
    cudaCheck(cudaGetLastError());
}

extern "C" void gpu_cross_entropy_backward(bf16_t* dhi, bf16_t* dlo, double* loss_rows, const float* logits,
                                           const int* ids, int M, int T, int V) {
    ce_bwd_kernel<<<M, 512>>>((__nv_bfloat16*)dhi, (__nv_bfloat16*)dlo, loss_rows, logits, ids, T, V);
    cudaCheck(cudaGetLastError());
}

extern "C" void gpu_grad_score(double* total, double* scratch, const float* dy, const int32_t* acc,
                               const float* sx, const float* sw, const float* y, int M, int N) {
    int blocks = 1024;
    grad_score_kernel<<<blocks, 256>>>(scratch, dy, acc, sx, sw, y, N, (long)M * N);
    cudaCheck(cudaGetLastError());
    sum_rows_kernel<<<1, 1024>>>(total, scratch, blocks);
    cudaCheck(cudaGetLastError());
}

extern "C" void gpu_sq_diff_dot(double* total, double* scratch, const float* dy, const float* yq,
                                const float* y, long n) {
    int blocks = 1024;
    sq_diff_dot_kernel<<<blocks, 256>>>(scratch, dy, yq, y, n);
    cudaCheck(cudaGetLastError());
    sum_rows_kernel<<<1, 1024>>>(total, scratch, blocks);
    cudaCheck(cudaGetLastError());
}
