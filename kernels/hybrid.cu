// The hybrid families' small kernels (formulas in hybrid.h; CPU twins hybrid.c).
#include <math.h>

#include "cuda_common.cuh"
#include "hybrid.h"

#define QK_MAX_HD 256
#define QK_WARPS 4

__device__ inline float sigmoid_h(float x) { return 1.0f / (1.0f + expf(-x)); }

// One warp per (row, head) item; the normed values go through shared memory so that each lane can read
// its RoPE partner (i +- rd / 2).
__global__ void qk_norm_rope_part_kernel(__nv_bfloat16* hi, __nv_bfloat16* lo, float* rstd, const float* x,
                                         long ldx, long hsx, const __nv_bfloat16* w, float w_add,
                                         const float* cos_t, const float* sin_t, int T, long items, int nh,
                                         int hd, int rd, float eps, int f16) {
    __shared__ float nv[QK_WARPS][QK_MAX_HD];
    int wi = threadIdx.x / 32, lane = threadIdx.x % 32;
    long it = blockIdx.x * (long)QK_WARPS + wi;
    if (it >= items) return;
    long row = it / nh;
    int head = (int)(it % nh), t = (int)(row % T), half = rd / 2;
    const float* xi = x + row * ldx + head * hsx;
    float ss = 0.0f;
    for (int j = lane; j < hd; j += 32) ss += xi[j] * xi[j];
    float r = rsqrtf(warp_sum(ss) / hd + eps);
    if (rstd && lane == 0) rstd[it] = r;
    for (int j = lane; j < hd; j += 32) nv[wi][j] = (__bfloat162float(w[j]) + w_add) * (xi[j] * r);
    __syncwarp();
    long o = it * hd;
    for (int j = lane; j < hd; j += 32) {
        float y = nv[wi][j];
        if (j < half) {
            float c = cos_t[(long)t * half + j], s = sin_t[(long)t * half + j];
            y = nv[wi][j] * c - nv[wi][j + half] * s;
        } else if (j < rd) {
            float c = cos_t[(long)t * half + j - half], s = sin_t[(long)t * half + j - half];
            y = nv[wi][j] * c + nv[wi][j - half] * s;
        }
        store_split(hi, lo, o + j, y, f16);
    }
}

// Inverse RoPE (rotation by -angle), then the per-head RMSNorm backward, into dx's strided layout.
__global__ void qk_norm_rope_part_bwd_kernel(float* dx, long ldx, long hsx, const float* d, const float* x,
                                             const __nv_bfloat16* w, float w_add, const float* rstd,
                                             const float* cos_t, const float* sin_t, int T, long items, int nh,
                                             int hd, int rd) {
    __shared__ float gv[QK_WARPS][QK_MAX_HD];
    int wi = threadIdx.x / 32, lane = threadIdx.x % 32;
    long it = blockIdx.x * (long)QK_WARPS + wi;
    if (it >= items) return;
    long row = it / nh;
    int head = (int)(it % nh), t = (int)(row % T), half = rd / 2;
    const float* di = d + it * hd;
    const float* xi = x + row * ldx + head * hsx;
    float* dxi = dx + row * ldx + head * hsx;
    float r = rstd[it], dot = 0.0f;
    for (int j = lane; j < hd; j += 32) {
        float g = di[j];
        if (j < half) {
            float c = cos_t[(long)t * half + j], s = sin_t[(long)t * half + j];
            g = di[j] * c + di[j + half] * s;
        } else if (j < rd) {
            float c = cos_t[(long)t * half + j - half], s = sin_t[(long)t * half + j - half];
            g = di[j] * c - di[j - half] * s;
        }
        gv[wi][j] = g;
        dot += (__bfloat162float(w[j]) + w_add) * g * xi[j];
    }
    float cc = warp_sum(dot) * r * r * r / hd;
    __syncwarp();
    for (int j = lane; j < hd; j += 32) dxi[j] = (__bfloat162float(w[j]) + w_add) * gv[wi][j] * r - xi[j] * cc;
}

static void check_hd(int hd, int rd) {
    if (hd > QK_MAX_HD || rd > hd || rd < 2 || rd % 2) {
        fprintf(stderr, "autoq: head_dim %d / rotary dim %d not supported by the CUDA q/k norm (up to %d)\n",
                hd, rd, QK_MAX_HD);
        exit(1);
    }
}

extern "C" void gpu_qk_norm_rope_part(bf16_t* hi, bf16_t* lo, float* rstd, const float* x, long ldx, long hsx,
                                      const bf16_t* w, float w_add, const float* cos_t, const float* sin_t,
                                      int rows, int T, int nh, int hd, int rd, float eps, int f16) {
    check_hd(hd, rd);
    long items = (long)rows * nh;
    qk_norm_rope_part_kernel<<<ceil_div(items, QK_WARPS), 32 * QK_WARPS>>>(
        (__nv_bfloat16*)hi, (__nv_bfloat16*)lo, rstd, x, ldx, hsx, (const __nv_bfloat16*)w, w_add, cos_t, sin_t,
        T, items, nh, hd, rd, eps, f16);
    cudaCheck(cudaGetLastError());
}

extern "C" void gpu_qk_norm_rope_part_backward(float* dx, long ldx, long hsx, const float* d, const float* x,
                                               const bf16_t* w, float w_add, const float* rstd,
                                               const float* cos_t, const float* sin_t, int rows, int T, int nh,
                                               int hd, int rd) {
    check_hd(hd, rd);
    long items = (long)rows * nh;
    qk_norm_rope_part_bwd_kernel<<<ceil_div(items, QK_WARPS), 32 * QK_WARPS>>>(
        dx, ldx, hsx, d, x, (const __nv_bfloat16*)w, w_add, rstd, cos_t, sin_t, T, items, nh, hd, rd);
    cudaCheck(cudaGetLastError());
}

__global__ void attn_gate_kernel(float* out, __nv_bfloat16* hi, __nv_bfloat16* lo, const float* att,
                                 const float* gate, long ldg, long hsg, long n, int H, int hd, int f16) {
    long o = blockIdx.x * (long)blockDim.x + threadIdx.x;
    if (o >= n) return;
    long t = o / ((long)H * hd);
    int h = (int)(o / hd % H), i = (int)(o % hd);
    float y = att[o] * sigmoid_h(gate[t * ldg + h * hsg + i]);
    if (out) out[o] = y;
    store_split(hi, lo, o, y, f16);
}

__global__ void attn_gate_bwd_kernel(float* datt, float* dgate, const float* dout, const float* att,
                                     const float* gate, long ldg, long hsg, long n, int H, int hd) {
    long o = blockIdx.x * (long)blockDim.x + threadIdx.x;
    if (o >= n) return;
    long t = o / ((long)H * hd);
    int h = (int)(o / hd % H), i = (int)(o % hd);
    long g = t * ldg + h * hsg + i;
    float s = sigmoid_h(gate[g]), d = dout[o];
    dgate[g] = d * att[o] * s * (1.0f - s);
    datt[o] = d * s;
}

extern "C" void gpu_attn_gate(float* out, bf16_t* hi, bf16_t* lo, const float* att, const float* gate, long ldg,
                              long hsg, int M, int H, int hd, int f16) {
    long n = (long)M * H * hd;
    attn_gate_kernel<<<ceil_div(n, 256), 256>>>(out, (__nv_bfloat16*)hi, (__nv_bfloat16*)lo, att, gate, ldg,
                                                hsg, n, H, hd, f16);
    cudaCheck(cudaGetLastError());
}

extern "C" void gpu_attn_gate_backward(float* datt, float* dgate, const float* dout, const float* att,
                                       const float* gate, long ldg, long hsg, int M, int H, int hd) {
    long n = (long)M * H * hd;
    attn_gate_bwd_kernel<<<ceil_div(n, 256), 256>>>(datt, dgate, dout, att, gate, ldg, hsg, n, H, hd);
    cudaCheck(cudaGetLastError());
}

__global__ void gather_cols_kernel(float* out, const float* in, const int* map, long total, int n, long ld_in) {
    long i = blockIdx.x * (long)blockDim.x + threadIdx.x;
    if (i >= total) return;
    out[i] = in[i / n * ld_in + map[i % n]];
}

__global__ void scatter_cols_kernel(float* out, long ld_out, const float* in, const int* map, long total,
                                    int n) {
    long i = blockIdx.x * (long)blockDim.x + threadIdx.x;
    if (i >= total) return;
    out[i / n * ld_out + map[i % n]] = in[i];
}

extern "C" void gpu_gather_cols(float* out, const float* in, const int* map, long M, int n, long ld_in) {
    long total = M * n;
    gather_cols_kernel<<<ceil_div(total, 256), 256>>>(out, in, map, total, n, ld_in);
    cudaCheck(cudaGetLastError());
}

extern "C" void gpu_scatter_cols(float* out, long ld_out, const float* in, const int* map, long M, int n) {
    long total = M * n;
    scatter_cols_kernel<<<ceil_div(total, 256), 256>>>(out, ld_out, in, map, total, n);
    cudaCheck(cudaGetLastError());
}

// One block per row.
__global__ void shared_gate_kernel(float* h, float* s, const float* m, const __nv_bfloat16* w, const float* y,
                                   int D) {
    long base = (long)blockIdx.x * D;
    float z = 0.0f;
    for (int i = threadIdx.x; i < D; i += blockDim.x) z += m[base + i] * __bfloat162float(w[i]);
    float sg = sigmoid_h(block_sum(z));
    if (threadIdx.x == 0) s[blockIdx.x] = sg;
    for (int i = threadIdx.x; i < D; i += blockDim.x) h[base + i] += sg * y[base + i];
}

__global__ void shared_gate_bwd_kernel(float* dy, float* dm, const float* dh, const float* s, const float* y,
                                       const __nv_bfloat16* w, int D) {
    long base = (long)blockIdx.x * D;
    float sg = s[blockIdx.x];
    double dot = 0.0;
    for (int i = threadIdx.x; i < D; i += blockDim.x) {
        dy[base + i] = sg * dh[base + i];
        dot += (double)dh[base + i] * y[base + i];
    }
    float dl = (float)(block_sum(dot) * sg * (1.0 - sg));
    for (int i = threadIdx.x; i < D; i += blockDim.x) dm[base + i] += dl * __bfloat162float(w[i]);
}

extern "C" void gpu_shared_gate(float* h, float* s, const float* m, const bf16_t* w, const float* y, int M,
                                int D) {
    shared_gate_kernel<<<M, 256>>>(h, s, m, (const __nv_bfloat16*)w, y, D);
    cudaCheck(cudaGetLastError());
}

extern "C" void gpu_shared_gate_backward(float* dy, float* dm, const float* dh, const float* s, const float* y,
                                         const bf16_t* w, int M, int D) {
    shared_gate_bwd_kernel<<<M, 256>>>(dy, dm, dh, s, y, (const __nv_bfloat16*)w, D);
    cudaCheck(cudaGetLastError());
}
