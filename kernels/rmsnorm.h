// RMSNorm, forward and backward. CPU rmsnorm.c, CUDA rmsnorm.cu.
#pragma once
#include <stdint.h>

#include "bf16.h"

#ifdef __cplusplus
extern "C" {
#endif

// out (M, C) = w * x / sqrt(mean(x^2) + eps); rstd (M) saved for backward
void rmsnorm_forward(float* out, float* rstd, const float* x, const float* w, int M, int C, float eps);
// dx (M, C) (+)= gradient of rmsnorm given dout; accumulate selects += vs =
void rmsnorm_backward(float* dx, const float* dout, const float* x, const float* w, const float* rstd, int M,
                      int C, int accumulate);

// GPU, w bf16: out (M, C) (may be NULL) and its bf16 halves hi, lo (may be NULL), or with f16 its fp16
// values in hi (no lo); rstd (M) may be NULL
void gpu_rmsnorm(float* out, bf16_t* hi, bf16_t* lo, float* rstd, const float* x, const bf16_t* w, int M, int C,
                 float eps, int f16);
void gpu_rmsnorm_backward(float* dx, const float* dout, const float* x, const bf16_t* w, const float* rstd,
                          int M, int C, int accumulate);
// The same with the weight read as w + w_add: the hybrid families' x / rms(x) (1 + w) norms take w_add 1
// (the sum in fp32, as the CPU adds 1 to its fp32 copy at load), every other norm 0.
void gpu_rmsnorm_add(float* out, bf16_t* hi, bf16_t* lo, float* rstd, const float* x, const bf16_t* w,
                     float w_add, int M, int C, float eps, int f16);
void gpu_rmsnorm_backward_add(float* dx, const float* dout, const float* x, const bf16_t* w, float w_add,
                              const float* rstd, int M, int C, int accumulate);

#ifdef __cplusplus
}
#endif
