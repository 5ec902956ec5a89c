// CUDA kernels, callable from C. Each has a CPU twin in kernels/*.c;
// tests/test_gpu.c compares them. Pointers are device pointers; shapes as
// in kernels.h. bf16 is stored as uint16_t on the C side.
#pragma once
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif
#include "kernels.h"

typedef uint16_t bf16_t;

// embed.cu: h (M, D) fp32 = table[ids] (bf16)
void gpu_embed(float* h, const bf16_t* table, const int* ids, int M, int D);
// Producers of a GEMM input also write it as bf16 hi (+ lo) when hi is not NULL (see gpu_split_bf16).
// norm.cu: out (M, C) = w * x * rstd; out and rstd (M) may be NULL
void gpu_rmsnorm(float* out, bf16_t* hi, bf16_t* lo, float* rstd, const float* x, const bf16_t* w, int M, int C,
                 float eps);
// norm.cu: per-head norm then RoPE of x (B*T, nh, hd) into out (may be x); writes the per-head rstd
// (rows * nh) when not NULL; positions t = row % T; out may be NULL (bf16 halves only)
void gpu_qk_norm_rope(float* out, bf16_t* hi, bf16_t* lo, float* rstd, const float* x, const bf16_t* w,
                      const float* cos_t, const float* sin_t, int rows, int T, int nh, int hd, float eps);
// the same on bf16 x with rows ld elements apart, in place (the bf16-activation forward)
void gpu_qk_norm_rope_bf16(bf16_t* x, long ld, float* rstd, const bf16_t* w, const float* cos_t,
                           const float* sin_t, int rows, int T, int nh, int hd, float eps);
// elementwise.cu
// x = hi + lo, both bf16 (lo may be NULL): bf16 GEMMs on both halves keep ~16 mantissa bits of x
void gpu_split_bf16(bf16_t* hi, bf16_t* lo, const float* x, long n);
void gpu_add(float* h, const float* y, long n); // h += y
void gpu_swiglu(float* out, bf16_t* hi, bf16_t* lo, const float* g, const float* u, long n);
void gpu_swiglu_bf16(bf16_t* out, const bf16_t* g, const bf16_t* u, long n);
// out (rows, nkv, hd) = sum over r of in (rows, nkv * rep + r, hd): the query heads sharing a kv head
void gpu_sum_heads(float* out, const float* in, long rows, int nkv, int rep, int hd);
// softmax.cu: causal softmax of s (T, T) fp32 per head (nb heads), writes p bf16 (and its low half
// when p_lo is not NULL) and lse (nb, T)
void gpu_causal_softmax(bf16_t* p, bf16_t* p_lo, float* lse, const float* s, int nb, int T);
// flash.cu: causal attention without the score matrix, for nb windows of T tokens; q (nb*T, H, hd),
// k and v (nb*T, KV, hd) bf16 with rows ldq / ldk elements apart (k and v alike); o fp32 and/or o16
// bf16 (nb*T, H, hd), either may be NULL. Needs gpu_flash_supported(T, hd): T % 64 == 0, hd 64 or 128.
int gpu_flash_supported(int T, int hd);
void gpu_flash_attention(float* o, bf16_t* o16, const bf16_t* q, long ldq, const bf16_t* k, const bf16_t* v,
                         long ldk, int nb, int T, int H, int KV, int hd);
// quant.cu: per-row fake quantization as integers: q (rows, cols) int8, scale (rows) fp32
void gpu_quant_rows_f32(int8_t* q, float* scale, const float* x, int rows, int cols, QuantSpec spec);
void gpu_quant_rows_bf16(int8_t* q, float* scale, const bf16_t* x, int rows, int cols, QuantSpec spec);
// y (M, N) (+)= acc (M, N) int32 * sx (M) * sw (N), or y16 = that in bf16 when y16 is not NULL
void gpu_dequant(float* y, bf16_t* y16, const int32_t* acc, const float* sx, const float* sw, int M, int N,
                 int accumulate);
// kl.cu: adds the sum over rows of KL(softmax(p) || softmax(q)) to *total (device double), in a
// fixed order (deterministic); scratch holds rows doubles
void gpu_kl_rows(double* total, double* scratch, const float* p, const float* q, int rows, int V);

// backward.cu (activation gradients only)
void gpu_rmsnorm_backward(float* dx, const float* dout, const float* x, const bf16_t* w, const float* rstd,
                          int M, int C, int accumulate);
// d: gradient of the rotated q/k (rows, nh, hd) in, gradient of the q_proj/k_proj output out
void gpu_qk_norm_rope_backward(float* d, const float* xlin, const bf16_t* w, const float* rstd,
                               const float* cos_t, const float* sin_t, int rows, int T, int nh, int hd);
void gpu_swiglu_backward(float* dg, float* du, const float* dout, const float* g, const float* u, long n);
// d(sum over windows of mean next-token CE)/d(logits) as bf16 hi + lo (dlo may be NULL); loss per row
void gpu_cross_entropy_backward(bf16_t* dhi, bf16_t* dlo, double* loss_rows, const float* logits,
                                const int* ids, int M, int T, int V);
// from recomputed scores s and dP (nb heads of T x T): P and dS = P (dP - rowsum(P dP)) * scale
void gpu_attention_ds(bf16_t* p_hi, bf16_t* p_lo, bf16_t* ds_hi, bf16_t* ds_lo, const float* s, const float* dp,
                      int nb, int T, float scale);
// *total += sum (dy (yq - y))^2 over (M, N) with yq = acc * sx (M) * sw (N), deterministic; scratch
// holds 1024 doubles
void gpu_grad_score(double* total, double* scratch, const float* dy, const int32_t* acc, const float* sx,
                    const float* sw, const float* y, int M, int N);

#ifdef __cplusplus
}
#endif
