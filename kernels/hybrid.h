// The hybrid families' small pieces around the engine's GEMMs (README §3): the attention output gate, the
// q/k norm with partial RoPE and (1 + w) weights, the columns of Qwen3-Next's fused projections, and the
// shared expert's sigmoid gate. CPU twins (hybrid.c) for tests/test_gpu_ops.c; CUDA hybrid.cu.
#pragma once
#include <stdint.h>

#include "bf16.h"

#ifdef __cplusplus
extern "C" {
#endif

// out (M, H hd) = att (M, H hd) * sigmoid(gate), gate of row t and head h at gate[t ldg + h hsg + i].
void attn_gate_forward(float* out, const float* att, const float* gate, long ldg, long hsg, int M, int H,
                       int hd);
// dout = dL/d(out) -> datt = dout * sigmoid(gate) (into datt) and dL/d(gate) at dgate (same layout as gate).
void attn_gate_backward(float* datt, float* dgate, const float* dout, const float* att, const float* gate,
                        long ldg, long hsg, int M, int H, int hd);
// out (M, n) = in's columns map[0..n) (rows ld_in apart); scatter: out's columns map[j] (rows ld_out apart)
// = in (M, n) column j. map is a permutation of part of in's / out's columns.
void gather_cols(float* out, const float* in, const int* map, long M, int n, long ld_in);
void scatter_cols(float* out, long ld_out, const float* in, const int* map, long M, int n);
// The shared expert's gate (README §3): s = sigmoid(m . w) per row, h += s y; and its backward: dy = s dh,
// dm += (s (1 - s) dh . y) w.
void shared_gate_forward(float* h, float* s, const float* m, const float* w, const float* y, int M, int D);
void shared_gate_backward(float* dy, float* dm, const float* dh, const float* s, const float* y, const float* w,
                          int M, int D);

// GPU. The per-head q/k RMSNorm (weight w + w_add) then RoPE on the first rd of each head's hd values (pairs
// (i, i + rd / 2), cos_t / sin_t (T, rd / 2)): x's head h of row r at x[r ldx + h hsx] (q_proj's query
// part when its rows also carry the gate), outputs compact (rows, nh, hd) as bf16 halves (or fp16 in hi
// with f16); rstd (rows nh) may be NULL. hd <= 256.
void gpu_qk_norm_rope_part(bf16_t* hi, bf16_t* lo, float* rstd, const float* x, long ldx, long hsx,
                           const bf16_t* w, float w_add, const float* cos_t, const float* sin_t, int rows,
                           int T, int nh, int hd, int rd, float eps, int f16);
// d (rows, nh, hd) the gradient of the rotated output -> dx (layout of x) the gradient of x.
void gpu_qk_norm_rope_part_backward(float* dx, long ldx, long hsx, const float* d, const float* x,
                                    const bf16_t* w, float w_add, const float* rstd, const float* cos_t,
                                    const float* sin_t, int rows, int T, int nh, int hd, int rd);
// attn_gate_forward with out's bf16 halves (hi, lo; fp16 in hi with f16) beside it; out may be NULL.
void gpu_attn_gate(float* out, bf16_t* hi, bf16_t* lo, const float* att, const float* gate, long ldg, long hsg,
                   int M, int H, int hd, int f16);
void gpu_attn_gate_backward(float* datt, float* dgate, const float* dout, const float* att, const float* gate,
                            long ldg, long hsg, int M, int H, int hd);
void gpu_gather_cols(float* out, const float* in, const int* map, long M, int n, long ld_in);
void gpu_scatter_cols(float* out, long ld_out, const float* in, const int* map, long M, int n);
// w bf16 (1, D); the dot products in fp32 (forward) and fp64 (backward), as the CPU's.
void gpu_shared_gate(float* h, float* s, const float* m, const bf16_t* w, const float* y, int M, int D);
void gpu_shared_gate_backward(float* dy, float* dm, const float* dh, const float* s, const float* y,
                              const bf16_t* w, int M, int D);

#ifdef __cplusplus
}
#endif
