// Mixture-of-experts routing (README §3): the router's softmax and top-k, the renormalisation of
// the top-k weights, and moving rows between tokens and experts, each with its backward. CPU
// moe.c, CUDA moe.cu.
#pragma once
#include <math.h>

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

// GPU twins (device pointers; same shapes and orders as above).
void gpu_moe_route_forward(float* probs, int* idx, float* w, const float* logits, int T, int E, int K,
                           int renorm);
void gpu_moe_route_backward(float* dlogits, const float* dw, const float* probs, const int* idx, int T, int E,
                            int K, int renorm);
// moe_sort on the device, the same stable order (no host round trip); scratch holds
// moe_sort_scratch(T K, E) ints.
#define MOE_SORT_CHUNK 1024
long moe_sort_scratch(long n, int E);
void gpu_moe_sort(int* order, int* offs, int* pos, const int* idx, int T, int E, int K, int* scratch);
// The grouped GEMMs' tiles from the device offs (E+1): (3, cap) as matmul_grouped_tiles lays out
// (3, nt), then tiles of 0 rows up to cap (cap >= T K / GROUPED_ROWS + E). counts (E), when not
// NULL, += each expert's rows.
void gpu_moe_tiles(int* tiles, int cap, long long* counts, const int* offs, int E);
// rows (n, row_bytes) = src's row order[r] / K: one kernel for fp32, bf16 and int8 rows and their
// per-row scales (row_bytes a multiple of 4).
void gpu_moe_gather(void* rows, const void* src, const int* order, int n, int K, int row_bytes);
void gpu_moe_gather_backward(float* dx, const float* drows, const int* pos, int T, int K, int D);
// y (T, D) = moe_scatter's sum (y may be NULL); h (T, D) += that sum when h is not NULL (the
// residual add of the block output, h + y as the CPU adds y + h).
void gpu_moe_scatter(float* y, float* h, const float* ye, const float* w, const int* pos, int T, int K, int D);
void gpu_moe_scatter_backward(float* dye, float* dw, const float* dy, const float* ye, const float* w,
                              const int* pos, int T, int K, int D);

// One token's routing and its backward: the loop bodies of moe_route_forward / _backward. The
// backward is shared by the CPU loop and the CUDA kernel (one thread per token) so that the two
// cannot drift apart; the forward's CUDA kernel (a warp per token) repeats its arithmetic in the
// same order, and tests/test_gpu_ops.c holds it to the same expert choices.
#ifdef __CUDACC__
#define MOE_HD __host__ __device__
#else
#define MOE_HD
#endif
static inline MOE_HD void moe_route_token(long t, float* probs, int* idx, float* w, const float* logits, int E,
                                          int K, int renorm) {
    const float* x = logits + t * E;
    float* p = probs + t * E;
    float mx = x[0], sum = 0;
    for (int e = 1; e < E; e++) mx = x[e] > mx ? x[e] : mx;
    for (int e = 0; e < E; e++) sum += p[e] = expf(x[e] - mx);
    for (int e = 0; e < E; e++) p[e] /= sum;
    int* id = idx + t * K;
    float* wt = w + t * K;
    float s = 0;
    for (int k = 0; k < K; k++) { // selection: strict > keeps the lowest index among ties
        int best = -1;
        for (int e = 0; e < E; e++) {
            int taken = 0;
            for (int j = 0; j < k && !taken; j++) taken = id[j] == e;
            if (!taken && (best < 0 || p[e] > p[best])) best = e;
        }
        id[k] = best;
        s += wt[k] = p[best];
    }
    for (int k = 0; renorm && k < K; k++) wt[k] /= s;
}

static inline MOE_HD void moe_route_token_backward(long t, float* dlogits, const float* dw, const float* probs,
                                                   const int* idx, int E, int K, int renorm) {
    const float* p = probs + t * E;
    const int* id = idx + t * K;
    const float* g = dw + t * K;
    float* dl = dlogits + t * E;
    // w_k = p_k / S (S the sum of the selected probabilities) gives dp_k = (dw_k - sum_j dw_j w_j) / S
    float s = 0, gw = 0;
    for (int k = 0; k < K; k++) s += p[id[k]];
    for (int k = 0; k < K; k++) gw += g[k] * (p[id[k]] / s);
    // softmax: dlogit_e = p_e (dp_e - sum_j dp_j p_j), dp zero off the selected experts
    float dot = 0;
    for (int k = 0; k < K; k++) dot += (renorm ? (g[k] - gw) / s : g[k]) * p[id[k]];
    for (int e = 0; e < E; e++) dl[e] = -p[e] * dot;
    for (int k = 0; k < K; k++) dl[id[k]] += p[id[k]] * (renorm ? (g[k] - gw) / s : g[k]);
}

#ifdef __cplusplus
}
#endif
