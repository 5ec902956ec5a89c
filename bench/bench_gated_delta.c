// CPU time of the Gated DeltaNet core (kernels/gated_delta.c) per window, forward and forward + backward,
// on a Qwen3.5-35B-A3B-like linear-attention layer by default (Hk 16, Hv 32, dk 128, dv 128, K 4).
//   build/bench/bench_gated_delta [T] [samples] [Hk Hv dk dv K]
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#include "engine/util.h"
#include "kernels/gated_delta.h"

static float* filled(long n, float scale, unsigned seed) {
    float* x = xmalloc(sizeof(float) * n);
    for (long i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        x[i] = scale * (((seed >> 8) / 16777216.0f) * 2.0f - 1.0f);
    }
    return x;
}

int main(int argc, char** argv) {
    GdnShape s = {512, 16, 32, 128, 128, 4, 1e-6f};
    int S = 3;
    if (argc > 1) s.T = atoi(argv[1]);
    if (argc > 2) S = atoi(argv[2]);
    if (argc > 7)
        s.Hk = atoi(argv[3]), s.Hv = atoi(argv[4]), s.dk = atoi(argv[5]), s.dv = atoi(argv[6]),
        s.K = atoi(argv[7]);
    if (s.T < 1 || S < 1 || s.Hk < 1 || s.Hv % s.Hk || s.dk < 1 || s.dv < 1 || s.K < 1) {
        fprintf(stderr, "usage: bench_gated_delta [T] [samples] [Hk Hv dk dv K] (Hv a multiple of Hk)\n");
        return 2;
    }
    long C = gdn_channels(&s), vd = (long)s.T * s.Hv * s.dv, hv = (long)s.T * s.Hv;
    float *qkv = filled(s.T * C, 2, 1), *z = filled(vd, 2, 2), *b = filled(hv, 2, 3), *a = filled(hv, 2, 4);
    float *w = filled(C * s.K, 0.5f, 5), *A_log = filled(s.Hv, 1, 6), *dt = filled(s.Hv, 0.5f, 7);
    float *nw = filled(s.dv, 0.2f, 8), *dout = filled(vd, 1, 9), *out = xmalloc(sizeof(float) * vd);
    float *dqkv = xmalloc(sizeof(float) * s.T * C), *dz = xmalloc(sizeof(float) * vd);
    float *db = xmalloc(sizeof(float) * hv), *da = xmalloc(sizeof(float) * hv);
    for (int j = 0; j < s.dv; j++) nw[j] += 1;
    GdnParams p = {w, A_log, dt, nw};
    GdnCache* c = gdn_cache_init(&s);
    gdn_forward(&s, &p, qkv, z, b, a, out, c); // warm-up
    double t0 = time_now();
    for (int i = 0; i < S; i++) gdn_forward(&s, &p, qkv, z, b, a, out, c);
    double fwd = (time_now() - t0) / S;
    t0 = time_now();
    for (int i = 0; i < S; i++) {
        gdn_forward(&s, &p, qkv, z, b, a, out, c);
        gdn_backward(&s, &p, c, dout, dqkv, dz, db, da);
    }
    double both = (time_now() - t0) / S;
    // the delta rule's multiply-adds per token and value head: forward 4 dk dv, backward 11 dk dv (with the
    // recomputed states)
    double fl = 2.0 * s.T * s.Hv * s.dk * s.dv;
    printf("gated delta core: T %d, Hk %d, Hv %d, dk %d, dv %d, K %d; %d threads, %d samples\n", s.T, s.Hk,
           s.Hv, s.dk, s.dv, s.K, omp_get_max_threads(), S);
    printf("  forward             %8.1f ms/window  %6.1f GFLOP/s (4 dk dv multiply-adds per token, head)\n",
           fwd * 1e3, 4 * fl / fwd / 1e9);
    printf("  forward + backward  %8.1f ms/window  %6.1f GFLOP/s (15 dk dv)\n", both * 1e3,
           15 * fl / both / 1e9);
    gdn_cache_free(c);
    free(qkv), free(z), free(b), free(a), free(w), free(A_log), free(dt), free(nw), free(dout), free(out);
    free(dqkv), free(dz), free(db), free(da);
    return 0;
}
