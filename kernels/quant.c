#include <math.h>

#include "quant.h"

// Below this amax a row is treated as all zeros (README §4).
#define AMAX_MIN 5.9604644775390625e-08f // 2^-24

static void bounds(QuantSpec q, float* maxb, float* lo, float* hi) {
    float m = (float)((1 << (q.bits - 1)) - 1); // 7 or 127
    *hi = m;
    *lo = (q.narrow && !q.ct) ? -m : -m - 1.0f;
    *maxb = q.ct ? m + 0.5f : m; // compressed-tensors: amax / 7.5, amax / 127.5
}

void quant_bounds(QuantSpec q, float* lo, float* hi) {
    float maxb;
    bounds(q, &maxb, lo, hi);
}

float quant_scale(float amax, QuantSpec q) {
    if (!(amax >= AMAX_MIN)) return 0.0f;
    float maxb, lo, hi;
    bounds(q, &maxb, &lo, &hi);
    return amax / maxb;
}

float quant_value_scaled(float x, float s, QuantSpec q) {
    if (!(s > 0.0f)) return 0.0f;
    float maxb, lo, hi;
    bounds(q, &maxb, &lo, &hi);
    float r = rintf(x / s); // default rounding mode: half to even
    r = r < lo ? lo : (r > hi ? hi : r);
    return r * s;
}

float quant_value(float x, float amax, QuantSpec q) { return quant_value_scaled(x, quant_scale(amax, q), q); }

static void quant_rows(float* out, const float* x, int rows, int cols, QuantSpec q) {
#pragma omp parallel for
    for (int i = 0; i < rows; i++) {
        const float* xi = x + (long)i * cols;
        float* oi = out + (long)i * cols;
        float amax = 0.0f;
        for (int j = 0; j < cols; j++) amax = fmaxf(amax, fabsf(xi[j]));
        for (int j = 0; j < cols; j++) oi[j] = quant_value(xi[j], amax, q);
    }
}

void quant_weight_rows(float* out, const float* w, int rows, int cols, QuantSpec q) {
    quant_rows(out, w, rows, cols, q);
}

void quant_input_rows(float* out, const float* x, int rows, int cols, QuantSpec q) {
    quant_rows(out, x, rows, cols, q);
}
