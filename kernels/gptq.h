// GPTQ (README, "GPTQ"): int4 / int8 per-channel weights whose rounding errors are compensated
// column by column through the inverse Hessian of the layer's inputs, as llm-compressor's
// GPTQModifier does for a channel-wise scheme. CPU gptq.c is the reference (LAPACK for the
// factorisations); CUDA gptq.cu is its twin (cuSOLVER + cuBLAS).
#pragma once
#include "quant.h"

#ifdef __cplusplus
extern "C" {
#endif

// Activation ordering: none, or columns by descending Hessian diagonal. With per-channel scales
// llm-compressor's "static" and "group" (alias "weight") orders quantize identically.
typedef enum { GPTQ_ORDER_NONE, GPTQ_ORDER_STATIC, GPTQ_ORDER_GROUP } GptqOrder;

typedef struct {
    double damp;     // added to the diagonal, as a fraction of its mean (llm-compressor dampening_frac)
    GptqOrder order; // default GPTQ_ORDER_STATIC, llm-compressor's default
    int block;       // columns per lazy-update block (128)
} GptqOpts;
extern const GptqOpts gptq_defaults;

// The input statistics of one linear (or of linears sharing an input): xtx (n, n) = sum of x x^T
// over every token seen (upper triangle kept), tokens their count. The Hessian is 2 xtx / tokens.
typedef struct {
    int n;
    long tokens;
    float* xtx; // (n, n) row-major, upper triangle (j >= i) valid
} Hessian;
void hessian_init(Hessian* h, int n);
void hessian_free(Hessian* h);
// x (T, n): adds T tokens.
void hessian_add(Hessian* h, const float* x, int T);
// h (n, n) full symmetric = 2 xtx / tokens (what gptq_quantize takes).
void hessian_get(const Hessian* h, float* out);

// wq (rows, cols) = GPTQ-quantized w (rows, cols): dequantized values code * scale, scale (rows)
// given (a checkpoint's scales in its dtype) or NULL for RTN's scale of each original row, as
// llm-compressor's observer fixes it before GPTQ; under the Hessian h (cols, cols, symmetric; any
// positive multiple gives the same result). Dead columns (zero diagonal) come out zero. Returns 1
// when the dampened Hessian is not positive definite: wq is then round-to-nearest, as
// llm-compressor falls back to; 0 otherwise.
int gptq_quantize(float* wq, const float* w, const float* h, int rows, int cols, QuantSpec q, GptqOpts o,
                  const float* scale);

// The steps gptq_quantize shares with its CUDA twin.
// perm (cols): the column order (identity, or descending diagonal of h, ties by index).
void gptq_order(int* perm, const float* h, int cols, GptqOrder order);
// hp (cols, cols) double = h permuted, dead diagonal set to 1 and dampened; dead (cols) marks
// the permuted columns whose diagonal was zero.
void gptq_prepare(double* hp, unsigned char* dead, const float* h, const int* perm, int cols, double damp);
// scale (rows): given, or RTN's of each original row of w.
void gptq_row_scales(float* out, const float* given, const float* w, int rows, int cols, QuantSpec q);

// GPU twin, host pointers in and out (uploads, runs, downloads); same contract as gptq_quantize.
int gpu_gptq_quantize(float* wq, const float* w, const float* h, int rows, int cols, QuantSpec q, GptqOpts o,
                      const float* scale);

#ifdef __cplusplus
}
#endif
