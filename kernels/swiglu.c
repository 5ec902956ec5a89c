#include <math.h>

#include "kernels.h"

void swiglu_forward(float* out, const float* g, const float* u, long n) {
#pragma omp parallel for
    for (long i = 0; i < n; i++) {
        float s = g[i] / (1.0f + expf(-g[i]));
        out[i] = s * u[i];
    }
}

void swiglu_backward(float* dg, float* du, const float* dout, const float* g, const float* u, long n) {
#pragma omp parallel for
    for (long i = 0; i < n; i++) {
        float sig = 1.0f / (1.0f + expf(-g[i]));
        float silu = g[i] * sig;
        du[i] = dout[i] * silu;
        dg[i] = dout[i] * u[i] * sig * (1.0f + g[i] * (1.0f - sig));
    }
}
