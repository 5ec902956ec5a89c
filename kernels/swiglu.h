// SwiGLU: out = silu(g) * u, forward and backward. CPU swiglu.c, CUDA swiglu.cu.
#pragma once
#include <stdint.h>

#include "bf16.h"

#ifdef __cplusplus
extern "C" {
#endif

void swiglu_forward(float* out, const float* g, const float* u, long n);
void swiglu_backward(float* dg, float* du, const float* dout, const float* g, const float* u, long n);

// GPU: out fp32 (may be NULL) and its bf16 halves (fp16 in hi with f16); bf16 in and out; the backward
void gpu_swiglu(float* out, bf16_t* hi, bf16_t* lo, const float* g, const float* u, long n, int f16);
void gpu_swiglu_bf16(bf16_t* out, const bf16_t* g, const bf16_t* u, long n);
void gpu_swiglu_backward(float* dg, float* du, const float* dout, const float* g, const float* u, long n);

#ifdef __cplusplus
}
#endif
