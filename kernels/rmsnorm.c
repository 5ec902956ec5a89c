#include <math.h>

#include "rmsnorm.h"

void rmsnorm_forward(float* out, float* rstd, const float* x, const float* w, int M, int C, float eps) {
#pragma omp parallel for
    for (int i = 0; i < M; i++) {
        const float* xi = x + (long)i * C;
        float* oi = out + (long)i * C;
        float ss = 0.0f;
        for (int j = 0; j < C; j++) ss += xi[j] * xi[j];
        float r = 1.0f / sqrtf(ss / C + eps);
        if (rstd) rstd[i] = r;
        for (int j = 0; j < C; j++) oi[j] = w[j] * (xi[j] * r);
    }
}

void rmsnorm_backward(float* dx, const float* dout, const float* x, const float* w, const float* rstd, int M,
                      int C, int accumulate) {
#pragma omp parallel for
    for (int i = 0; i < M; i++) {
        const float* xi = x + (long)i * C;
        const float* di = dout + (long)i * C;
        float* dxi = dx + (long)i * C;
        float r = rstd[i];
        double dot = 0.0; // sum of (w * dout) * x
        for (int j = 0; j < C; j++) dot += (double)(w[j] * di[j]) * xi[j];
        float c = (float)(dot * r * r * r / C);
        for (int j = 0; j < C; j++) {
            float g = w[j] * di[j] * r - xi[j] * c;
            dxi[j] = accumulate ? dxi[j] + g : g;
        }
    }
}
