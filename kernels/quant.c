#include "quant.h"

#include <math.h>

#include "quant_math.h"

float quant_value(float x, float amax, QuantSpec q) { return qm_int(x, amax, q); }
float quant_scale(float amax, QuantSpec q) { return qm_int_scale(amax, q); }
void quant_bounds(QuantSpec q, float* lo, float* hi) { qm_int_bounds(q, lo, hi); }
float quant_value_scaled(float x, float scale, QuantSpec q) { return qm_int_scaled(x, scale, q); }
float fp8_e4m3_round(float x) { return qm_e4m3(x); }
float fp4_e2m1_round(float x) { return qm_e2m1(x); }
float mx_e8m0_unscale(float amax) { return qm_e8m0_unscale(amax); }

static float amax_of(const float* x, long n) {
    float amax = 0.0f;
    for (long j = 0; j < n; j++) amax = fmaxf(amax, fabsf(x[j]));
    return amax;
}

// Each row in blocks of q.block values (the last may be shorter: ModelOpt pads it with zeros, which
// leaves its amax unchanged), or as one block. tensor_amax >= 0 is an NVFP4 weight's global amax;
// < 0 takes each row's own amax (dynamic inputs).
static void quant_rows(float* out, const float* x, int rows, int cols, QuantSpec q, float tensor_amax) {
    int bs = q.block > 0 ? q.block : cols;
#pragma omp parallel for
    for (int i = 0; i < rows; i++) {
        const float* xi = x + (long)i * cols;
        float* oi = out + (long)i * cols;
        float gs = 0.0f;
        if (q.kind == QUANT_FP4_E2M1 && q.scale == QSCALE_E4M3)
            gs = qm_nvfp4_global(tensor_amax >= 0.0f ? tensor_amax : amax_of(xi, cols));
        for (int j0 = 0; j0 < cols; j0 += bs) {
            int n = cols - j0 < bs ? cols - j0 : bs;
            float amax = amax_of(xi + j0, n);
            for (int j = j0; j < j0 + n; j++) oi[j] = qm_value(xi[j], amax, gs, q);
        }
    }
}

void quant_weight_rows(float* out, const float* w, int rows, int cols, QuantSpec q) {
    float t = -1.0f;
    if (q.kind == QUANT_FP4_E2M1 && q.scale == QSCALE_E4M3) t = amax_of(w, (long)rows * cols);
    quant_rows(out, w, rows, cols, q, t);
}

void quant_input_rows(float* out, const float* x, int rows, int cols, QuantSpec q) {
    quant_rows(out, x, rows, cols, q, -1.0f);
}

void quant_kv_tensor(float* out, const float* x, int rows, int cols, QuantSpec q) {
    if (q.block == 0) { // one per-tensor scale: the whole tensor as one row
        long n = (long)rows * cols;
        float amax = amax_of(x, n);
#pragma omp parallel for
        for (long i = 0; i < n; i++) out[i] = qm_value(x[i], amax, 0.0f, q);
        return;
    }
    quant_weight_rows(out, x, rows, cols, q);
}
