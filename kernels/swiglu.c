// SwiGLU on the CPU. CUDA twin: kernels/swiglu.cu.
#include <math.h>

#include "swiglu.h"

// expf vectorises (libmvec), and a vector lane can round differently from the scalar remainder
// loop. Fixed chunks put the vector / scalar split at the same elements whatever the thread count,
// so the output, and every score after it, is bit-identical for any OMP_NUM_THREADS.
#define SWIGLU_CHUNK 1024

void swiglu_forward(float* out, const float* g, const float* u, long n) {
#pragma omp parallel for schedule(static)
    for (long c = 0; c < n; c += SWIGLU_CHUNK) {
        long end = c + SWIGLU_CHUNK < n ? c + SWIGLU_CHUNK : n;
        for (long i = c; i < end; i++) {
            float s = g[i] / (1.0f + expf(-g[i]));
            out[i] = s * u[i];
        }
    }
}

void swiglu_backward(float* dg, float* du, const float* dout, const float* g, const float* u, long n) {
#pragma omp parallel for schedule(static)
    for (long c = 0; c < n; c += SWIGLU_CHUNK) {
        long end = c + SWIGLU_CHUNK < n ? c + SWIGLU_CHUNK : n;
        for (long i = c; i < end; i++) {
            float sig = 1.0f / (1.0f + expf(-g[i]));
            float silu = g[i] * sig;
            du[i] = dout[i] * silu;
            dg[i] = dout[i] * u[i] * sig * (1.0f + g[i] * (1.0f - sig));
        }
    }
}
