// The reductions scores are made of: KL divergence between two rows of logits, next-token
// cross-entropy and its gradient, and the gradient score's (dY . dYq)^2 term. CPU loss.c, CUDA loss.cu.
#pragma once
#include <stdint.h>

#include "bf16.h"

#ifdef __cplusplus
extern "C" {
#endif

// KL(P || Q) of one row of logits, in one pass with online log-sum-exp.
double kl_row(const float* p_logits, const float* q_logits, int V);
// Sum over rows of kl_row.
double kl_rows(const float* p_logits, const float* q_logits, int rows, int V);
// Next-token cross-entropy: mean over the T-1 predictions of -log softmax(logits_t)[ids_{t+1}].
// dlogits (T, V), when not NULL, gets d(mean CE)/d(logits); row T-1 is zero.
double cross_entropy(float* dlogits, const float* logits, const int* ids, int T, int V);
// sum over (M, N) of (dy (acc * sx (M) * sw (N) - y))^2: the gradient score of one quantized linear
double grad_score(const float* dy, const int32_t* acc, const float* sx, const float* sw, const float* y, int M,
                  int N);
// sum over n of (dy (yq - y))^2 with yq already dequantized: the CPU scorer's form. Every sum here is
// taken in a fixed order (chunks combined in index order), so results do not depend on the thread count.
double sq_diff_dot(const float* dy, const float* yq, const float* y, long n);

// GPU. Adds the sum over rows of KL(softmax(p) || softmax(q)) to *total (device double), in a fixed
// order (deterministic); scratch holds rows doubles.
void gpu_kl_rows(double* total, double* scratch, const float* p, const float* q, int rows, int V);
// d(sum over windows of mean next-token CE)/d(logits) as bf16 hi + lo (dlo may be NULL); loss per row
void gpu_cross_entropy_backward(bf16_t* dhi, bf16_t* dlo, double* loss_rows, const float* logits,
                                const int* ids, int M, int T, int V);
// *total += grad_score(...) over (M, N), deterministic; scratch holds 1024 doubles
void gpu_grad_score(double* total, double* scratch, const float* dy, const int32_t* acc, const float* sx,
                    const float* sw, const float* y, int M, int N);
// out[w * stride] += Σ of rows[w T .. w T + T - 1], w = 0 .. nb - 1 (one window's share of gpu_kl_rows' per-row
// values, which it leaves in its scratch), deterministic
void gpu_sum_windows(double* out, long stride, const double* rows, int nb, int T);
// *total += Σ over the nb windows of their mean next-token NLL (cross_entropy's value; device ids (nb, T),
// logits (nb T, V)), deterministic; scratch holds nb T doubles
void gpu_nll_windows(double* total, double* scratch, const float* logits, const int* ids, int nb, int T, int V);
// *total += sq_diff_dot(dy, yq, y, n), deterministic; scratch holds 1024 doubles
void gpu_sq_diff_dot(double* total, double* scratch, const float* dy, const float* yq, const float* y, long n);

#ifdef __cplusplus
}
#endif
