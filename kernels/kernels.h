// CPU reference kernels (fp32). Each CUDA kernel in kernels/*.cu has its
// twin here; tests compare them. Row-major throughout.
#pragma once
#include <stdint.h>

// --- matmul.c: y = x W^T, the shape of every nn.Linear ---
// out (M, N) = in (M, K) . w (N, K)^T ; beta 0 overwrites, 1 accumulates
void matmul_forward(float* out, const float* in, const float* w, int M, int K, int N, float beta);
// din (M, K) = dout (M, N) . w (N, K) ; beta 0 overwrites, 1 accumulates
void matmul_backward_input(float* din, const float* dout, const float* w, int M, int K, int N, float beta);

// --- rmsnorm.c ---
// out (M, C) = w * x / sqrt(mean(x^2) + eps); rstd (M) saved for backward
void rmsnorm_forward(float* out, float* rstd, const float* x, const float* w, int M, int C, float eps);
// dx (M, C) += gradient of rmsnorm given dout; accumulate selects += vs =
void rmsnorm_backward(float* dx, const float* dout, const float* x, const float* w, const float* rstd, int M,
                      int C, int accumulate);

// --- rope.c: rotate_half layout, pairs (i, i + hd/2), positions 0..T-1 ---
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

// --- attention.c: causal softmax(q k^T / sqrt(hd)) v with GQA ---
// q (T, H, hd), k v (T, KV, hd) -> out (T, H, hd); lse (H, T) saved
void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v, int T, int H,
                       int KV, int hd);
// dq (T, H, hd), dk dv (T, KV, hd), overwritten
void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                        const float* v, const float* lse, int T, int H, int KV, int hd);

// --- swiglu.c: out = silu(g) * u ---
void swiglu_forward(float* out, const float* g, const float* u, long n);
void swiglu_backward(float* dg, float* du, const float* dout, const float* g, const float* u, long n);

// --- quant.c: SPEC §4 fake quantization ---
typedef struct {
    int bits;   // 4 or 8
    int narrow; // clamp to [-(2^(b-1)-1), 2^(b-1)-1] instead of [-2^(b-1), 2^(b-1)-1]
    int ct;     // compressed-tensors numerics: scale amax / (2^(b-1) - 0.5)
} QuantSpec;
// Per output channel (row) of w (rows, cols).
void quant_weight_rows(float* out, const float* w, int rows, int cols, QuantSpec q);
// Per token (row) of x (rows, cols), dynamic; out may alias x.
void quant_input_rows(float* out, const float* x, int rows, int cols, QuantSpec q);
// One value with a given amax: the scalar the two functions above apply.
float quant_value(float x, float amax, QuantSpec q);

// --- kl.c: streaming log-softmax statistics over the vocabulary ---
// KL(P || Q) of one row of logits, in one pass with online log-sum-exp.
double kl_row(const float* p_logits, const float* q_logits, int V);
// Sum over rows of kl_row.
double kl_rows(const float* p_logits, const float* q_logits, int rows, int V);
// Next-token cross-entropy: mean over the T-1 predictions of -log softmax(logits_t)[ids_{t+1}].
// dlogits (T, V), when not NULL, gets d(mean CE)/d(logits); row T-1 is zero.
double cross_entropy(float* dlogits, const float* logits, const int* ids, int T, int V);
