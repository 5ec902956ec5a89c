// Backward kernels of the activation-only gradient (SPEC §6). CPU twins:
// kernels/rmsnorm.c, rope.c, swiglu.c, attention.c and kl.c (cross-entropy).
#include <math.h>

#include "cuda_common.cuh"
#include "gpu.h"

__global__ void rmsnorm_bwd_kernel(float* dx, const float* dout, const float* x, const __nv_bfloat16* w,
                                   const float* rstd, int C, int accumulate) {
    long base = (long)blockIdx.x * C;
    float r = rstd[blockIdx.x];
    double dot = 0.0;
    for (int j = threadIdx.x; j < C; j += blockDim.x)
        dot += (double)(__bfloat162float(w[j]) * dout[base + j]) * x[base + j];
    dot = block_sum(dot);
    float c = (float)(dot * r * r * r / C);
    for (int j = threadIdx.x; j < C; j += blockDim.x) {
        float g = __bfloat162float(w[j]) * dout[base + j] * r - x[base + j] * c;
        dx[base + j] = accumulate ? dx[base + j] + g : g;
    }
}

// Inverse RoPE, then the per-head RMSNorm backward; d holds the gradient of the
// rotated output on entry and of the pre-norm input (the linear's output) on exit.
__global__ void qk_norm_rope_bwd_kernel(float* d, const float* xlin, const __nv_bfloat16* w, const float* rstd,
                                        const float* cos_t, const float* sin_t, int T, int nh, int hd) {
    int row = blockIdx.x / nh, head = blockIdx.x % nh, i = threadIdx.x, half = hd / 2;
    long o = ((long)row * nh + head) * hd;
    int t = row % T;
    float c = cos_t[(long)t * half + i], s = sin_t[(long)t * half + i];
    float da = d[o + i], db = d[o + i + half];
    float ga = da * c + db * s, gb = db * c - da * s; // rotation by -angle
    float wa = __bfloat162float(w[i]), wb = __bfloat162float(w[i + half]);
    float xa = xlin[o + i], xb = xlin[o + i + half], r = rstd[(long)row * nh + head];
    __shared__ float red[128];
    red[i] = wa * ga * xa + wb * gb * xb;
    __syncthreads();
    for (int k = blockDim.x / 2; k > 0; k >>= 1) {
        if (i < k) red[i] += red[i + k];
        __syncthreads();
    }
    float cc = red[0] * r * r * r / hd;
    d[o + i] = wa * ga * r - xa * cc;
    d[o + i + half] = wb * gb * r - xb * cc;
}

__global__ void swiglu_bwd_kernel(float* dg, float* du, const float* dout, const float* g, const float* u,
                                  long n) {
    long i = blockIdx.x * (long)blockDim.x + threadIdx.x;
    if (i >= n) return;
    float sig = 1.0f / (1.0f + expf(-g[i]));
    du[i] = dout[i] * g[i] * sig;
    dg[i] = dout[i] * u[i] * sig * (1.0f + g[i] * (1.0f - sig));
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
    float m = -INFINITY;
    for (int v = threadIdx.x; v < V; v += blockDim.x) m = fmaxf(m, x[v]);
    m = block_max(m);
    double s = 0.0;
    for (int v = threadIdx.x; v < V; v += blockDim.x) s += expf(x[v] - m);
    s = block_sum(s);
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

// dS = P (dP - rowsum(P dP)) * scale from the recomputed scores s (masked, softmax in place)
// and dP; writes P and dS as bf16 hi + lo. One block per (head, t).
__global__ void attn_ds_kernel(__nv_bfloat16* p_hi, __nv_bfloat16* p_lo, __nv_bfloat16* ds_hi,
                               __nv_bfloat16* ds_lo, const float* s, const float* dp, int T, float scale) {
    int h = blockIdx.x / T, t = blockIdx.x % T;
    long o = ((long)h * T + t) * T;
    float m = -INFINITY;
    for (int j = threadIdx.x; j <= t; j += blockDim.x) m = fmaxf(m, s[o + j]);
    m = block_max(m);
    double sum = 0.0;
    for (int j = threadIdx.x; j <= t; j += blockDim.x) sum += expf(s[o + j] - m);
    sum = block_sum(sum);
    float inv = (float)(1.0 / sum);
    double D = 0.0;
    for (int j = threadIdx.x; j <= t; j += blockDim.x) D += (double)(expf(s[o + j] - m) * inv) * dp[o + j];
    D = block_sum(D);
    for (int j = threadIdx.x; j < T; j += blockDim.x) {
        float p = j <= t ? expf(s[o + j] - m) * inv : 0.0f;
        float g = j <= t ? p * (dp[o + j] - (float)D) * scale : 0.0f;
        __nv_bfloat16 ph = __float2bfloat16(p), gh = __float2bfloat16(g);
        p_hi[o + j] = ph;
        ds_hi[o + j] = gh;
        if (p_lo) p_lo[o + j] = __float2bfloat16(p - __bfloat162float(ph));
        if (ds_lo) ds_lo[o + j] = __float2bfloat16(g - __bfloat162float(gh));
    }
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

__global__ void sum_parts_kernel(double* total, const double* part, int n) {
    double s = 0.0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) s += part[i];
    s = block_sum(s);
    if (threadIdx.x == 0) *total += s;
}

extern "C" void gpu_rmsnorm_backward(float* dx, const float* dout, const float* x, const bf16_t* w,
                                     const float* rstd, int M, int C, int accumulate) {
    rmsnorm_bwd_kernel<<<M, 256>>>(dx, dout, x, (const __nv_bfloat16*)w, rstd, C, accumulate);
    cudaCheck(cudaGetLastError());
}

extern "C" void gpu_qk_norm_rope_backward(float* d, const float* xlin, const bf16_t* w, const float* rstd,
                                          const float* cos_t, const float* sin_t, int rows, int T, int nh,
                                          int hd) {
    qk_norm_rope_bwd_kernel<<<rows * nh, hd / 2>>>(d, xlin, (const __nv_bfloat16*)w, rstd, cos_t, sin_t, T, nh,
                                                   hd);
    cudaCheck(cudaGetLastError());
}

extern "C" void gpu_swiglu_backward(float* dg, float* du, const float* dout, const float* g, const float* u,
                                    long n) {
    swiglu_bwd_kernel<<<ceil_div(n, 256), 256>>>(dg, du, dout, g, u, n);
    cudaCheck(cudaGetLastError());
}

extern "C" void gpu_cross_entropy_backward(bf16_t* dhi, bf16_t* dlo, double* loss_rows, const float* logits,
                                           const int* ids, int M, int T, int V) {
    ce_bwd_kernel<<<M, 512>>>((__nv_bfloat16*)dhi, (__nv_bfloat16*)dlo, loss_rows, logits, ids, T, V);
    cudaCheck(cudaGetLastError());
}

extern "C" void gpu_attention_ds(bf16_t* p_hi, bf16_t* p_lo, bf16_t* ds_hi, bf16_t* ds_lo, const float* s,
                                 const float* dp, int nb, int T, float scale) {
    attn_ds_kernel<<<nb * T, 128>>>((__nv_bfloat16*)p_hi, (__nv_bfloat16*)p_lo, (__nv_bfloat16*)ds_hi,
                                    (__nv_bfloat16*)ds_lo, s, dp, T, scale);
    cudaCheck(cudaGetLastError());
}

extern "C" void gpu_grad_score(double* total, double* scratch, const float* dy, const int32_t* acc,
                               const float* sx, const float* sw, const float* y, int M, int N) {
    int blocks = 1024;
    grad_score_kernel<<<blocks, 256>>>(scratch, dy, acc, sx, sw, y, N, (long)M * N);
    cudaCheck(cudaGetLastError());
    sum_parts_kernel<<<1, 1024>>>(total, scratch, blocks);
    cudaCheck(cudaGetLastError());
}
