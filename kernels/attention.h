// Causal attention with grouped-query heads: softmax(q k^T / sqrt(hd)) v, head j reading kv head
// j / (H / KV). CPU attention.c; CUDA attention.cu (a fused flash-style kernel, and the softmax,
// dS and head-sum kernels of the cuBLAS path and of the backward).
#pragma once
#include <stdint.h>

#include "bf16.h"

#ifdef __cplusplus
extern "C" {
#endif

// q (T, H, hd), k v (T, KV, hd) -> out (T, H, hd); lse (H, T) saved
void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v, int T, int H,
                       int KV, int hd);
// dq (T, H, hd), dk dv (T, KV, hd), overwritten
void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                        const float* v, const float* lse, int T, int H, int KV, int hd);

// GPU. Causal softmax of s (T, T) fp32 per head (nb heads): p bf16 (and its low half when p_lo is not
// NULL) and lse (nb, T)
void gpu_causal_softmax(bf16_t* p, bf16_t* p_lo, float* lse, const float* s, int nb, int T);
// Fused causal attention without the score matrix, for nb windows of T tokens; q (nb*T, H, hd), k and v
// (nb*T, KV, hd) bf16 with rows ldq / ldk elements apart (k and v alike); o fp32 and/or o16 bf16
// (nb*T, H, hd), either may be NULL. Needs gpu_flash_supported(T, hd): T % 64 == 0, hd 64 or 128. With
// f16, q, k, v and o16 hold fp16 values instead (the fp16 mode) and P enters P.V in fp16.
int gpu_flash_supported(int T, int hd);
void gpu_flash_attention(float* o, bf16_t* o16, const bf16_t* q, long ldq, const bf16_t* k, const bf16_t* v,
                         long ldk, int nb, int T, int H, int KV, int hd, int f16);
// Backward: from recomputed scores s and dP (nb heads of T x T): P and dS = P (dP - rowsum(P dP)) * scale
void gpu_attention_ds(bf16_t* p_hi, bf16_t* p_lo, bf16_t* ds_hi, bf16_t* ds_lo, const float* s, const float* dp,
                      int nb, int T, float scale);
// out (rows, nkv, hd) = sum over r of in (rows, nkv * rep + r, hd): the query heads sharing a kv head
void gpu_sum_heads(float* out, const float* in, long rows, int nkv, int rep, int hd);

#ifdef __cplusplus
}
#endif
