// y = x W^T, the shape of every nn.Linear, and what feeds the GPU's GEMMs. CPU matmul.c (OpenBLAS);
// the GPU GEMMs are cuBLAS calls in the engine, matmul.cu holds the conversions around them.
#pragma once
#include <stdint.h>

#include "bf16.h"

#ifdef __cplusplus
extern "C" {
#endif

// out (M, N) = in (M, K) . w (N, K)^T ; beta 0 overwrites, 1 accumulates
void matmul_forward(float* out, const float* in, const float* w, int M, int K, int N, float beta);
// din (M, K) = dout (M, N) . w (N, K) ; beta 0 overwrites, 1 accumulates
void matmul_backward_input(float* din, const float* dout, const float* w, int M, int K, int N, float beta);

// x = hi + lo, both bf16 (lo may be NULL): bf16 GEMMs on both halves keep ~16 mantissa bits of x.
// Producers of a GEMM input also write it as bf16 hi (+ lo) when hi is not NULL.
void gpu_split_bf16(bf16_t* hi, bf16_t* lo, const float* x, long n);
void gpu_add(float* h, const float* y, long n); // h += y (a residual add)

#ifdef __cplusplus
}
#endif
