// Rotary position embedding (rotate_half layout, pairs (i, i + hd/2), positions 0..T-1) and the
// per-head q/k RMSNorm that precedes it. CPU rope.c; CUDA rope.cu fuses the norm and the rotation.
#pragma once
#include <stdint.h>

#include "bf16.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int T, hd;
    float* cos; // (T, hd/2)
    float* sin; // (T, hd/2)
} RopeTable;
void rope_init(RopeTable* r, int T, int hd, double theta);
void rope_free(RopeTable* r);
// x (T, nh, hd) rotated in place; backward applies the inverse rotation
void rope_forward(float* x, const RopeTable* r, int T, int nh);
void rope_backward(float* dx, const RopeTable* r, int T, int nh);
// Partial RoPE: x (T, nh, hd) with r->hd <= hd; the first r->hd of each head rotated, the rest kept
void rope_forward_heads(float* x, const RopeTable* r, int T, int nh, int hd);
void rope_backward_heads(float* dx, const RopeTable* r, int T, int nh, int hd);

// GPU: per-head norm then RoPE of x (B*T, nh, hd) into out (may be x); writes the per-head rstd
// (rows * nh) when not NULL; positions t = row % T; out may be NULL (bf16 halves only); f16: fp16 in hi
void gpu_qk_norm_rope(float* out, bf16_t* hi, bf16_t* lo, float* rstd, const float* x, const bf16_t* w,
                      const float* cos_t, const float* sin_t, int rows, int T, int nh, int hd, float eps,
                      int f16);
// the same on bf16 x with rows ld elements apart, in place (the bf16-activation forward)
void gpu_qk_norm_rope_bf16(bf16_t* x, long ld, float* rstd, const bf16_t* w, const float* cos_t,
                           const float* sin_t, int rows, int T, int nh, int hd, float eps);
// d: gradient of the rotated q/k (rows, nh, hd) in, gradient of the q_proj/k_proj output (xlin) out
void gpu_qk_norm_rope_backward(float* d, const float* xlin, const bf16_t* w, const float* rstd,
                               const float* cos_t, const float* sin_t, int rows, int T, int nh, int hd);

#ifdef __cplusplus
}
#endif
