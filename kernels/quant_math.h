// The scalar rules of every fake-quantizer (README §4), shared by kernels/quant.c and its CUDA twin
// kernels/quant.cu so both round the same way. Each block of values shares one scale; `blk_*` quantize
// one value of a block whose scale was derived from the block's amax (and, for NVFP4, a global scale).
#pragma once
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "quant.h"

#ifdef __CUDACC__
#define QHD __host__ __device__ static inline
#else
#define QHD static inline
#endif

// Below this amax an integer row is all zeros; FP8 uses amax <= it (ModelOpt's two tests differ).
#define QUANT_AMAX_MIN 5.9604644775390625e-08f // 2^-24
#define E4M3_MAX 448.0f
#define E2M1_MAX 6.0f

QHD float qm_e4m3(float x) {
    if (x != x) return x;
    float a = fabsf(x), r;
    if (a >= E4M3_MAX) {
        r = E4M3_MAX; // satfinite, as CUDA's __nv_fp8_e4m3 and cvt.rn.satfinite
    } else if (a < 0.015625f) {
        r = rintf(a * 512.0f) * 0.001953125f; // subnormals: multiples of 2^-9
    } else {
        int e;
        frexpf(a, &e);                              // a = m 2^e, m in [0.5, 1): 3 mantissa bits -> ulp 2^(e-4)
        r = ldexpf(rintf(ldexpf(a, 4 - e)), e - 4); // exact scalings around one round-half-even
    }
    return copysignf(r, x);
}

// Round to even at the midpoints 0.25 0.75 1.25 1.75 2.5 3.5 5 (ModelOpt's table and Triton kernel).
QHD float qm_e2m1(float x) {
    float a = fabsf(x), v;
    if (!(a == a) || a > 5.0f)
        v = 6.0f;
    else if (a <= 0.25f)
        v = 0.0f;
    else if (a < 0.75f)
        v = 0.5f;
    else if (a <= 1.25f)
        v = 1.0f;
    else if (a < 1.75f)
        v = 1.5f;
    else if (a <= 2.5f)
        v = 2.0f;
    else if (a < 3.5f)
        v = 3.0f;
    else
        v = 4.0f;
    return x < 0.0f ? -v : v;
}

// ModelOpt's compute_scale_e8m0_NV: the exponent of amax / 6 rounded up, read from its bits.
QHD float qm_e8m0_unscale(float amax) {
    float ratio = amax / E2M1_MAX;
    uint32_t u;
    memcpy(&u, &ratio, 4);
    uint32_t ex = (u >> 23) & 0xff, sig = u & 0x7fffff;
    int e = (sig > 0 && ex != 0xfe && !(ex == 0 && sig <= 0x400000)) ? (int)ex - 126 : (int)ex - 127;
    return ldexpf(1.0f, e);
}

// Integer codes' range [lo, hi]: narrow (ModelOpt's narrow_range) drops -2^(b-1).
QHD void qm_int_bounds(QuantSpec q, float* lo, float* hi) {
    float m = (float)((1 << (q.bits - 1)) - 1); // 7 or 127
    *hi = m;
    *lo = (q.narrow && !q.ct) ? -m : -m - 1.0f;
}

// Integer scale s = amax / maxb (compressed-tensors: amax / 7.5, amax / 127.5); 0 (all zeros) when amax is
// below QUANT_AMAX_MIN.
QHD float qm_int_scale(float amax, QuantSpec q) {
    if (!(amax >= QUANT_AMAX_MIN)) return 0.0f;
    float m = (float)((1 << (q.bits - 1)) - 1);
    return amax / (q.ct ? m + 0.5f : m);
}

// One value under a given scale (GPTQ fixes each row's scale first): the clamped code times s.
QHD float qm_int_scaled(float x, float s, QuantSpec q) {
    if (!(s > 0.0f)) return 0.0f;
    float lo, hi;
    qm_int_bounds(q, &lo, &hi);
    float r = rintf(x / s); // default rounding mode: half to even
    r = r < lo ? lo : (r > hi ? hi : r);
    return r * s;
}

// Integer, one scale per row or token.
QHD float qm_int(float x, float amax, QuantSpec q) { return qm_int_scaled(x, qm_int_scale(amax, q), q); }

// Integer blocks (w4a16's groups) in ModelOpt's own arithmetic: r = rint(x * (m / amax)), clamped, then
// r / (m / amax); zeros for amax <= 2^-24. It differs from qm_int only where x m / amax lies within an ulp of
// a rounding midpoint; the per-row formats keep qm_int, which the existing scores were made with.
QHD float qm_int_modelopt(float x, float amax, QuantSpec q) {
    if (amax <= QUANT_AMAX_MIN) return 0.0f;
    float m = (float)((1 << (q.bits - 1)) - 1);
    float lo = q.narrow ? -m : -m - 1.0f, scale = m / amax;
    float r = rintf(x * scale);
    r = r < lo ? lo : (r > m ? m : r);
    return r / scale;
}

// FP8 E4M3 with one scale: ModelOpt multiplies by 448 / amax and back by its fp32 inverse;
// compressed-tensors divides by amax / 448 and multiplies by it.
QHD float qm_fp8(float x, float amax, int ct) {
    if (amax <= QUANT_AMAX_MIN) return 0.0f;
    if (ct) {
        float s = amax / E4M3_MAX;
        return qm_e4m3(fminf(fmaxf(x / s, -E4M3_MAX), E4M3_MAX)) * s;
    }
    float scale = E4M3_MAX / amax, inv = 1.0f / scale;
    return qm_e4m3(fminf(fmaxf(x * scale, -E4M3_MAX), E4M3_MAX)) * inv;
}

// NVFP4's block scale: amax_b / 6 in E4M3 under the global scale gs = global amax / (6 * 448).
QHD float qm_nvfp4_scale(float amax_b, float gs) {
    if (!(gs > 0.0f)) return 0.0f;
    return qm_e4m3(fminf(amax_b / (6.0f * gs), E4M3_MAX)) * gs;
}

QHD float qm_nvfp4_global(float global_amax) { return global_amax / 2688.0f; } // 6 * 448

// One value of a block: amax is the block's (or row's) amax, gs the NVFP4 global scale.
QHD float qm_value(float x, float amax, float gs, QuantSpec q) {
    if (q.kind == QUANT_INT) return q.block && !q.ct ? qm_int_modelopt(x, amax, q) : qm_int(x, amax, q);
    if (q.kind == QUANT_FP8_E4M3) return qm_fp8(x, amax, q.ct);
    if (q.scale == QSCALE_E8M0) {
        if (!(amax > 0.0f)) return 0.0f * x;
        float un = qm_e8m0_unscale(amax), sc = 1.0f / un; // both powers of two: exact
        return qm_e2m1(fabsf(x) * sc) * un * (x < 0.0f ? -1.0f : 1.0f);
    }
    float s = qm_nvfp4_scale(amax, gs);
    if (s == 0.0f) return 0.0f;
    float v = qm_e2m1(fabsf(x) / s) * s;
    return x >= 0.0f ? v : -v;
}
