// The Gated DeltaNet token mixer's core (Qwen3-Next, Qwen3.5 / 3.6 linear-attention layers), between
// its input projections and out_proj, as transformers 5.17 computes it (README §3):
//   qkv = conv1d_causal_depthwise(in_proj_qkv x) then SiLU; split into q (Hk dk) | k (Hk dk) | v (Hv dv)
//   q, k L2-normalised per head (eps 1e-6), repeated to the Hv value heads (head j uses key head
//   j / (Hv / Hk)), q scaled by 1 / sqrt(dk)
//   beta = sigmoid(b); g = -exp(A_log) * softplus(a + dt_bias)            (b, a: (T, Hv))
//   per value head, state S (dk, dv) from zero:  S = exp(g_t) S;  S += k_t (beta_t (v_t - S^T k_t))^T;
//   o_t = S^T q_t
//   out = norm_w * rmsnorm(o per head, eps) * silu(z)                   (z: (T, Hv dv))
// The linears around it (in_proj_qkv/qkvz, in_proj_z, in_proj_b/ba, in_proj_a, out_proj) are the
// engine's, so quantization of those stays where every other linear's is. fp32 on the CPU; the
// backward is with respect to activations only (the gradient score never needs weight gradients).
#pragma once
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int T;     // tokens of one window
    int Hk;    // linear_num_key_heads
    int Hv;    // linear_num_value_heads, a multiple of Hk
    int dk;    // linear_key_head_dim
    int dv;    // linear_value_head_dim
    int K;     // linear_conv_kernel_dim
    float eps; // rms_norm_eps, for the gated RMSNorm
} GdnShape;

// C = 2 Hk dk + Hv dv: the conv's channels, in the order q | k | v, each head after head.
static inline int gdn_channels(const GdnShape* s) { return 2 * s->Hk * s->dk + s->Hv * s->dv; }

typedef struct {
    const float* conv_w;  // (C, K) conv1d.weight [C, 1, K]; no bias
    const float* A_log;   // (Hv)
    const float* dt_bias; // (Hv)
    const float* norm_w;  // (dv) the gated RMSNorm's weight, used as stored (w, not 1 + w)
} GdnParams;

// What the backward needs from the forward (owned; gdn_cache_init / gdn_cache_free).
typedef struct GdnCache GdnCache;
GdnCache* gdn_cache_init(const GdnShape* s);
void gdn_cache_free(GdnCache* c);

// qkv (T, C) in_proj_qkv output (q | k | v order); z (T, Hv dv); b, a (T, Hv); out (T, Hv dv).
// cache may be NULL (no backward follows).
void gdn_forward(const GdnShape* s, const GdnParams* p, const float* qkv, const float* z, const float* b,
                 const float* a, float* out, GdnCache* cache);
// dout (T, Hv dv) -> dqkv (T, C), dz (T, Hv dv), db, da (T, Hv); overwritten, not accumulated.
void gdn_backward(const GdnShape* s, const GdnParams* p, const GdnCache* cache, const float* dout, float* dqkv,
                  float* dz, float* db, float* da);

// GPU (kernels/gated_delta.cu): the same computation on device buffers (p's pointers too), fp32, for nb
// windows at once (each from a zero state; inputs and outputs window after window, e.g. qkv (nb, T, C)),
// the delta rule in chunked form (chunks of GDN_GPU_CHUNK tokens, the WY representation: within a chunk
// the UT transform (I + strictly-lower(beta k k^T with decays))^-1, between chunks the state). Within
// fp32 rounding of the CPU's token-by-token result, not bit-equal to it. The cache holds the forward's
// intermediates and the backward's scratch for up to its nb windows (gpu_gdn_cache_bytes: its size);
// unlike the CPU's it is required. Runs on the default stream.
#define GDN_GPU_CHUNK 64
typedef struct GdnGpuCache GdnGpuCache;
size_t gpu_gdn_cache_bytes(const GdnShape* s, int nb);
GdnGpuCache* gpu_gdn_cache_init(const GdnShape* s, int nb);
void gpu_gdn_cache_free(GdnGpuCache* c);
void gpu_gdn_forward(const GdnShape* s, int nb, const GdnParams* p, const float* qkv, const float* z,
                     const float* b, const float* a, float* out, GdnGpuCache* cache);
void gpu_gdn_backward(const GdnShape* s, int nb, const GdnParams* p, GdnGpuCache* cache, const float* dout,
                      float* dqkv, float* dz, float* db, float* da);

#ifdef __cplusplus
}
#endif
