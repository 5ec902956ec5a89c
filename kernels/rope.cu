// The per-head q/k norm fused with RoPE, forward and backward. CPU twins: kernels/rmsnorm.c + kernels/rope.c.
#include <math.h>

#include "cuda_common.cuh"
#include "rope.h"

// Two consecutive values at i (even) with one 8- or 4-byte access.
__device__ inline void load2(const float* p, long i, float* a, float* b) {
    float2 v = *(const float2*)(p + i);
    *a = v.x, *b = v.y;
}
__device__ inline void load2(const __nv_bfloat16* p, long i, float* a, float* b) {
    float2 v = __bfloat1622float2(*(const __nv_bfloat162*)(p + i));
    *a = v.x, *b = v.y;
}

// One warp per (row, head) item; lane owns the RoPE pairs (i, i + hd/2) and (i + 1, i + 1 + hd/2) for
// i = 2 lane, 2 lane + 64, ... (hd % 4 == 0, hd <= 256), all read before any write, so hi may be x
// (in place). Rows of x and the outputs are ld elements apart.
template <typename T>
__global__ void qk_norm_rope_kernel(float* out, __nv_bfloat16* hi, __nv_bfloat16* lo, float* rstd, const T* x,
                                    const __nv_bfloat16* w, const float* cos_t, const float* sin_t, int T_,
                                    long items, int nh, int hd, long ld, float eps, int f16) {
    long it = blockIdx.x * (long)(blockDim.x / 32) + threadIdx.x / 32;
    if (it >= items) return;
    int lane = threadIdx.x % 32, half = hd / 2, t = (int)(it / nh % T_), n = 0;
    long o = it / nh * ld + it % nh * hd;
    float a[4], b[4], ss = 0.0f; // a[n], a[n + 1]: elements i, i + 1; b: i + half, i + 1 + half
    for (int i = 2 * lane; i < half; i += 64, n += 2) {
        load2(x, o + i, &a[n], &a[n + 1]);
        load2(x, o + i + half, &b[n], &b[n + 1]);
        ss += a[n] * a[n] + a[n + 1] * a[n + 1] + b[n] * b[n] + b[n + 1] * b[n + 1];
    }
    float r = rsqrtf(warp_sum(ss) / hd + eps);
    if (rstd && lane == 0) rstd[it] = r;
    n = 0;
    for (int i = 2 * lane; i < half; i += 64, n += 2)
        for (int k = 0; k < 2; k++) {
            int j = i + k;
            float wa = __bfloat162float(w[j]) * (a[n + k] * r),
                  wb = __bfloat162float(w[j + half]) * (b[n + k] * r);
            float c = cos_t[(long)t * half + j], s = sin_t[(long)t * half + j];
            float ra = wa * c - wb * s, rb = wb * c + wa * s;
            if (out) out[o + j] = ra, out[o + j + half] = rb;
            store_split(hi, lo, o + j, ra, f16);
            store_split(hi, lo, o + j + half, rb, f16);
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

static void check_head_dim(int hd) {
    if (hd > 256 || hd % 4) {
        fprintf(stderr, "autoq: head_dim %d not supported by the CUDA q/k norm (a multiple of 4, up to 256)\n",
                hd);
        exit(1);
    }
}

extern "C" void gpu_qk_norm_rope(float* out, bf16_t* hi, bf16_t* lo, float* rstd, const float* x,
                                 const bf16_t* w, const float* cos_t, const float* sin_t, int rows, int T,
                                 int nh, int hd, float eps, int f16) {
    check_head_dim(hd);
    long items = (long)rows * nh;
    qk_norm_rope_kernel<float><<<ceil_div(items, 4), 128>>>(out, (__nv_bfloat16*)hi, (__nv_bfloat16*)lo, rstd,
                                                            x, (const __nv_bfloat16*)w, cos_t, sin_t, T, items,
                                                            nh, hd, (long)nh * hd, eps, f16);
    cudaCheck(cudaGetLastError());
}

extern "C" void gpu_qk_norm_rope_bf16(bf16_t* x, long ld, float* rstd, const bf16_t* w, const float* cos_t,
                                      const float* sin_t, int rows, int T, int nh, int hd, float eps) {
    check_head_dim(hd);
    long items = (long)rows * nh;
    qk_norm_rope_kernel<__nv_bfloat16>
        <<<ceil_div(items, 4), 128>>>(NULL, (__nv_bfloat16*)x, NULL, rstd, (const __nv_bfloat16*)x,
                                      (const __nv_bfloat16*)w, cos_t, sin_t, T, items, nh, hd, ld, eps, 0);
    cudaCheck(cudaGetLastError());
}

extern "C" void gpu_qk_norm_rope_backward(float* d, const float* xlin, const bf16_t* w, const float* rstd,
                                          const float* cos_t, const float* sin_t, int rows, int T, int nh,
                                          int hd) {
    qk_norm_rope_bwd_kernel<<<rows * nh, hd / 2>>>(d, xlin, (const __nv_bfloat16*)w, rstd, cos_t, sin_t, T, nh,
                                                   hd);
    cudaCheck(cudaGetLastError());
}
