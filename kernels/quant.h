// Fake quantization (README, "Numerics"): int4 / int8 symmetric, per output channel for weights and
// per token (dynamic) for inputs. CPU quant.c returns q * scale; CUDA quant.cu keeps integers and
// scales apart so the quantized linear runs as an exact int8 GEMM.
#pragma once
#include <stdint.h>

#include "bf16.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int bits;   // 4 or 8
    int narrow; // clamp to [-(2^(b-1)-1), 2^(b-1)-1] instead of [-2^(b-1), 2^(b-1)-1]
    int ct;     // compressed-tensors numerics: scale amax / (2^(b-1) - 0.5)
} QuantSpec;
// Per output channel (row) of w (rows, cols).
void quant_weight_rows(float* out, const float* w, int rows, int cols, QuantSpec q);
// Per token (row) of x (rows, cols), dynamic; out may alias x.
void quant_input_rows(float* out, const float* x, int rows, int cols, QuantSpec q);
// One value with a given amax: the scalar the two functions above apply.
float quant_value(float x, float amax, QuantSpec q);
// The scale quant_value uses for amax (0 for a row treated as zeros): values are code * scale.
float quant_scale(float amax, QuantSpec q);
// The codes' range: [lo, hi].
void quant_bounds(QuantSpec q, float* lo, float* hi);
// One value with a given scale (0: zero): the clamped, rounded code times the scale.
float quant_value_scaled(float x, float scale, QuantSpec q);

// GPU: per-row quantization as integers: q (rows, cols) int8, scale (rows) fp32
void gpu_quant_rows_f32(int8_t* q, float* scale, const float* x, int rows, int cols, QuantSpec spec);
void gpu_quant_rows_bf16(int8_t* q, float* scale, const bf16_t* x, int rows, int cols, QuantSpec spec);
// y (M, N) (+)= acc (M, N) int32 * sx (M) * sw (N), or y16 = that in bf16 when y16 is not NULL
void gpu_dequant(float* y, bf16_t* y16, const int32_t* acc, const float* sx, const float* sw, int M, int N,
                 int accumulate);

#ifdef __cplusplus
}
#endif
