// GPU time of the Gated DeltaNet core (kernels/gated_delta.cu) for one layer, forward and backward, over
// nb windows at once, the plain kernels (AUTOQ_GDN_FAST=0, the first version: one thread per output, fp32
// loops over global memory) against the fast ones (511: shared memory, 3xTF32 tensor cores); also the
// largest difference between the two's outputs. Qwen3.5-35B-A3B's linear-attention layer by default.
//   build/bench/gdn_bench [windows] [T] [samples] [Hk Hv dk dv K]
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "engine/gpu.h"
#include "engine/util.h"
#include "kernels/gated_delta.h"

#ifndef AUTOQ_CUDA
int main(void) {
    printf("gdn_bench: built without CUDA\n");
    return 0;
}
#else
#include <cuda_runtime.h>

static float* dev_filled(long n, float scale, float shift, unsigned seed) {
    float* x = xmalloc(sizeof(float) * n);
    for (long i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        x[i] = shift + scale * (((seed >> 8) / 16777216.0f) * 2.0f - 1.0f);
    }
    float* d;
    if (cudaMalloc((void**)&d, sizeof(float) * n) != cudaSuccess) {
        fprintf(stderr, "gdn_bench: out of GPU memory\n");
        exit(1);
    }
    cudaMemcpy(d, x, sizeof(float) * n, cudaMemcpyHostToDevice);
    free(x);
    return d;
}

static float* dev_zeros(long n) {
    float* d;
    if (cudaMalloc((void**)&d, sizeof(float) * n) != cudaSuccess) {
        fprintf(stderr, "gdn_bench: out of GPU memory\n");
        exit(1);
    }
    cudaMemset(d, 0, sizeof(float) * n);
    return d;
}

// largest |a - b| / max |b| of two device arrays
static double rel_diff(const float* a, const float* b, long n) {
    float *x = xmalloc(sizeof(float) * n), *y = xmalloc(sizeof(float) * n);
    cudaMemcpy(x, a, sizeof(float) * n, cudaMemcpyDeviceToHost);
    cudaMemcpy(y, b, sizeof(float) * n, cudaMemcpyDeviceToHost);
    double w = 0, m = 0;
    for (long i = 0; i < n; i++) w = fmax(w, fabs(x[i] - y[i])), m = fmax(m, fabs(y[i]));
    free(x), free(y);
    return w / (m > 0 ? m : 1);
}

int main(int argc, char** argv) {
    GdnShape s = {512, 16, 32, 128, 128, 4, 1e-6f};
    int nb = 8, S = 10;
    if (argc > 1) nb = atoi(argv[1]);
    if (argc > 2) s.T = atoi(argv[2]);
    if (argc > 3) S = atoi(argv[3]);
    if (argc > 8)
        s.Hk = atoi(argv[4]), s.Hv = atoi(argv[5]), s.dk = atoi(argv[6]), s.dv = atoi(argv[7]),
        s.K = atoi(argv[8]);
    if (nb < 1 || s.T < 1 || S < 1 || s.Hk < 1 || s.Hv % s.Hk || s.dk < 1 || s.dv < 1 || s.K < 1) {
        fprintf(stderr, "usage: gdn_bench [windows] [T] [samples] [Hk Hv dk dv K] (Hv a multiple of Hk)\n");
        return 2;
    }
    if (gpu_device_count() == 0) {
        printf("gdn_bench: no CUDA device\n");
        return 0;
    }
    long C = gdn_channels(&s), rows = (long)nb * s.T, nv = rows * s.Hv * s.dv, nh = rows * s.Hv;
    float *qkv = dev_filled(rows * C, 2, 0, 1), *z = dev_filled(nv, 2, 0, 2), *b = dev_filled(nh, 3, 0, 3);
    float *a = dev_filled(nh, 3, 0, 4), *dout = dev_filled(nv, 1, 0, 5);
    GdnParams p = {dev_filled(C * s.K, 0.8f, 0, 6), dev_filled(s.Hv, 2, -3, 7), dev_filled(s.Hv, 0.5f, 0, 8),
                   dev_filled(s.dv, 0.3f, 1, 9)};
    float *out[2], *dqkv[2], *dz = dev_zeros(nv), *db = dev_zeros(nh), *da = dev_zeros(nh);
    GdnGpuCache* c = gpu_gdn_cache_init(&s, nb);
    printf("gated delta core on %s: windows %d, T %d, Hk %d, Hv %d, dk %d, dv %d, K %d; %d samples\n",
           gpu_name(), nb, s.T, s.Hk, s.Hv, s.dk, s.dv, s.K, S);
    static const char *masks[2] = {"0", "511"}, *names[2] = {"plain (before)", "fast (after)"};
    double ms[2][2];
    for (int m = 0; m < 2; m++) {
        setenv("AUTOQ_GDN_FAST", masks[m], 1);
        out[m] = dev_zeros(nv), dqkv[m] = dev_zeros(rows * C);
        gpu_gdn_forward(&s, nb, &p, qkv, z, b, a, out[m], c); // warm-up
        gpu_gdn_backward(&s, nb, &p, c, dout, dqkv[m], dz, db, da);
        cudaEvent_t e0, e1, e2;
        cudaEventCreate(&e0), cudaEventCreate(&e1), cudaEventCreate(&e2);
        float f = 0, bw = 0;
        for (int i = 0; i < S; i++) {
            cudaEventRecord(e0, 0);
            gpu_gdn_forward(&s, nb, &p, qkv, z, b, a, out[m], c);
            cudaEventRecord(e1, 0);
            gpu_gdn_backward(&s, nb, &p, c, dout, dqkv[m], dz, db, da);
            cudaEventRecord(e2, 0);
            cudaEventSynchronize(e2);
            float x, y;
            cudaEventElapsedTime(&x, e0, e1), cudaEventElapsedTime(&y, e1, e2);
            f += x, bw += y;
        }
        ms[m][0] = f / S, ms[m][1] = bw / S;
        cudaError_t e = cudaGetLastError();
        if (e != cudaSuccess) printf("  CUDA error: %s\n", cudaGetErrorString(e));
        printf("  %-15s forward %8.3f ms (%.3f ms/window), backward %8.3f ms (%.3f ms/window)\n", names[m],
               ms[m][0], ms[m][0] / nb, ms[m][1], ms[m][1] / nb);
        cudaEventDestroy(e0), cudaEventDestroy(e1), cudaEventDestroy(e2);
    }
    printf("  speed-up: forward %.1fx, backward %.1fx; fast vs plain: out %.2g, dqkv %.2g (largest difference "
           "/ largest value)\n",
           ms[0][0] / ms[1][0], ms[0][1] / ms[1][1], rel_diff(out[1], out[0], nv),
           rel_diff(dqkv[1], dqkv[0], rows * C));
    gpu_gdn_cache_free(c);
    return 0;
}
#endif
