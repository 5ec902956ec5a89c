// Fake quantization (README §4). Integers (int4 / int8 symmetric), FP8 E4M3 and FP4 E2M1, with one scale
// per row (per output channel for weights, per token for inputs) or one per block of consecutive values
// along the row (the input dimension); block scales are fp32, E4M3 (NVFP4, under a per-tensor fp32 global
// scale) or E8M0 (MX, powers of two). CPU quant.c returns the dequantized values. CUDA quant.cu keeps
// integers and scales apart for the integer per-row formats, so the quantized linear runs as an exact int8
// GEMM; every other format is fake-quantized in place on the GPU (gpu_fake_quant_*).
#pragma once
#include <stdint.h>

#include "bf16.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { QUANT_INT = 0, QUANT_FP8_E4M3 = 1, QUANT_FP4_E2M1 = 2 } QuantKind;
typedef enum { QSCALE_F32 = 0, QSCALE_E4M3 = 1, QSCALE_E8M0 = 2 } QuantScale;

// Zero-initialised fields give the integer per-row quantizer, so {bits, narrow, ct} keeps its meaning.
typedef struct {
    int bits;   // storage bits: 4 or 8 for QUANT_INT, 8 for E4M3, 4 for E2M1; 0 disables the quantizer
    int narrow; // QUANT_INT: clamp to [-(2^(b-1)-1), 2^(b-1)-1] instead of [-2^(b-1), 2^(b-1)-1]
    int ct;     // compressed-tensors numerics: int scale amax / (2^(b-1) - 0.5); E4M3 scale amax / 448
    int kind;   // QuantKind
    int block;  // 0: one scale per row; else one scale per `block` consecutive values of a row
    int scale;  // QuantScale of the block scales (QSCALE_F32 when block == 0)
} QuantSpec;

// Per output channel (row) of w (rows, cols), or per block of a row; an NVFP4 global scale comes from the
// whole matrix (ModelOpt's per-tensor amax of the weight).
void quant_weight_rows(float* out, const float* w, int rows, int cols, QuantSpec q);
// Per token (row) of x (rows, cols), dynamic, or per block of a row; an NVFP4 global scale comes from the
// token's own amax. out may alias x.
void quant_input_rows(float* out, const float* x, int rows, int cols, QuantSpec q);
// A KV-cache tensor x (rows, cols) (one layer's K or V of a window: rows = tokens x KV heads, cols = head_dim):
// E4M3 (block 0) with one scale from the whole tensor's amax, as ModelOpt's k/v_bmm_quantizer (axis None);
// NVFP4 in blocks of q.block along head_dim under one global scale from the tensor's amax. out may alias x.
void quant_kv_tensor(float* out, const float* x, int rows, int cols, QuantSpec q);
// One value with a given amax under an integer per-row spec: the scalar the two functions above apply.
float quant_value(float x, float amax, QuantSpec q);
// Integer specs only (GPTQ): the scale quant_value uses for amax (0 for a row treated as zeros), the
// codes' range [lo, hi], and one value with a given scale (0: zero): the clamped, rounded code x scale.
float quant_scale(float amax, QuantSpec q);
void quant_bounds(QuantSpec q, float* lo, float* hi);
float quant_value_scaled(float x, float scale, QuantSpec q);
// Round to the nearest FP8 E4M3 (fn) value, ties to even, subnormals down to 2^-9, saturating at +-448.
float fp8_e4m3_round(float x);
// Round to the nearest FP4 E2M1 value {0, 0.5, 1, 1.5, 2, 3, 4, 6} (signed), ties to even, saturating at 6.
float fp4_e2m1_round(float x);
// The E8M0 (power of two) unscale of an MX block of E2M1 values with amax > 0: 2^ceil(log2(amax / 6)),
// as ModelOpt's MX kernel computes it from the bits of amax / 6.
float mx_e8m0_unscale(float amax);
// Whether the GPU runs q as integer codes plus per-row scales (an exact int8 GEMM).
static inline int quant_is_int_rows(QuantSpec q) { return q.kind == QUANT_INT && q.block == 0; }
// Whether the GPU engine emulates a weight / input pair (fake-quantized fp32 operands, an fp32 GEMM)
// instead of the exact int8 GEMM: every format but integer per-row weights with integer per-token inputs.
static inline int quant_gpu_emulated(QuantSpec w, QuantSpec in) {
    return !(quant_is_int_rows(w) && quant_is_int_rows(in) && in.bits > 0);
}

// GPU: per-row integer quantization as integers: q (rows, cols) int8, scale (rows) fp32
void gpu_quant_rows_f32(int8_t* q, float* scale, const float* x, int rows, int cols, QuantSpec spec);
void gpu_quant_rows_bf16(int8_t* q, float* scale, const bf16_t* x, int rows, int cols, QuantSpec spec);
// the same from fp16 values (the fp16 mode's weights, raw bits)
void gpu_quant_rows_f16(int8_t* q, float* scale, const uint16_t* x, int rows, int cols, QuantSpec spec);
// y (M, N) (+)= acc (M, N) int32 * sx (M) * sw (N), or y16 = that in bf16 when y16 is not NULL
void gpu_dequant(float* y, bf16_t* y16, const int32_t* acc, const float* sx, const float* sw, int M, int N,
                 int accumulate);
// GPU twins of quant_weight_rows (weight = 1) and quant_input_rows (weight = 0) for any spec: out (rows,
// cols) fp32 = the fake-quantized x. A weight's NVFP4 global amax is reduced over the whole matrix first.
// spec.bits == 0 (no quantizer) copies x as fp32.
void gpu_fake_quant_f32(float* out, const float* x, int rows, int cols, QuantSpec spec, int weight);
void gpu_fake_quant_bf16(float* out, const bf16_t* x, int rows, int cols, QuantSpec spec, int weight);
void gpu_fake_quant_f16(float* out, const uint16_t* x, int rows, int cols, QuantSpec spec, int weight);
// GPU twin of quant_kv_tensor over nb windows of T rows at once (README §4): x (nb T, width), width = KV heads
// x head_dim, row stride ld, read from xf (fp32) when given, else from hi (+ lo, bf16 halves; lo may be NULL).
// Each window's amax (per tensor) goes to amax (nb floats of device scratch). y (fp32, (nb T, width),
// contiguous) receives x when given; yq receives q(x) when given, else q(x) is written back into hi (+ lo) at
// stride ld.
void gpu_kv_fake_quant(float* yq, float* y, bf16_t* hi, bf16_t* lo, const float* xf, long ld, int nb, int T,
                       int width, QuantSpec q, float* amax);

#ifdef __cplusplus
}
#endif
