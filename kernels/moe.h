// Mixture-of-experts routing (README §3): the router's softmax and top-k, the renormalisation of
// the top-k weights, and moving rows between tokens and experts, each with its backward. CPU
// moe.c; the CUDA twin comes with the GPU engine's MoE layers.
#pragma once

#ifdef __cplusplus
extern "C" {
#endif

// probs (T, E) = softmax(logits (T, E)) in fp32; idx (T, K) the top-k experts, largest first, ties
// to the lowest index (torch.topk); w (T, K) their probabilities, divided by their sum when renorm.
void moe_route_forward(float* probs, int* idx, float* w, const float* logits, int T, int E, int K, int renorm);
// dlogits (T, E) = dL/dlogits from dw (T, K) = dL/dw, through the renormalisation and the softmax
// (the choice of experts itself has no gradient, as in PyTorch).
void moe_route_backward(float* dlogits, const float* dw, const float* probs, const int* idx, int T, int E,
                        int K, int renorm);
// Assignments a = t K + k grouped by expert: order (T K) lists them expert after expert, tokens
// ascending within one; offs (E+1) where each expert's rows start; pos (T K) the row of assignment a.
void moe_sort(int* order, int* offs, int* pos, const int* idx, int T, int E, int K);
// rows (n, D): row r is x's row order[r] / K (the token of assignment order[r]).
void moe_gather(float* rows, const float* x, const int* order, int n, int K, int D);
// dx (T, D) += sum over k of drows' row pos[t K + k], k in rank order: the backward of moe_gather.
void moe_gather_backward(float* dx, const float* drows, const int* pos, int T, int K, int D);
// y (T, D) = sum over k, in rank order, of w[t, k] * ye's row pos[t K + k]: the experts' outputs
// weighted and added back to their tokens, in an order fixed whatever the thread count.
void moe_scatter(float* y, const float* ye, const float* w, const int* pos, int T, int K, int D);
// The backward of moe_scatter: dye's row pos[a] = w[a] dy[t]; dw[a] = dy[t] . ye's row pos[a].
void moe_scatter_backward(float* dye, float* dw, const float* dy, const float* ye, const float* w,
                          const int* pos, int T, int K, int D);

#ifdef __cplusplus
}
#endif
