// CPU forward throughput and how much of it is GEMM, beside OpenBLAS alone on
// the same shapes in the same run.
//   build/bench/bench_forward MODEL [T] [samples]
#include <stdio.h>
#include <stdlib.h>

#include "engine/forward.h"
#include "engine/util.h"

static double time_gemm(int M, int K, int N, int reps) {
    float* a = xcalloc((size_t)M * K, sizeof(float));
    float* w = xcalloc((size_t)N * K, sizeof(float));
    float* o = xcalloc((size_t)M * N, sizeof(float));
    for (size_t i = 0; i < (size_t)M * K; i++) a[i] = (float)(i % 7) * 0.1f;
    for (size_t i = 0; i < (size_t)N * K; i++) w[i] = (float)(i % 5) * 0.1f;
    matmul_forward(o, a, w, M, K, N, 0.0f);
    double t0 = time_now();
    for (int r = 0; r < reps; r++) matmul_forward(o, a, w, M, K, N, 0.0f);
    double el = (time_now() - t0) / reps;
    free(a);
    free(w);
    free(o);
    return el;
}

int main(int argc, char** argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: bench_forward MODEL [T] [samples]\n");
        return 2;
    }
    int T = argc > 2 ? atoi(argv[2]) : 256, S = argc > 3 ? atoi(argv[3]) : 4;
    double tl = time_now();
    Model m;
    model_load(&m, argv[1]);
    double load = time_now() - tl;
    const Config* c = &m.c;
    RunState s;
    run_init(&s, &m, T, 0);
    int* ids = xmalloc(sizeof(int) * T);
    for (int t = 0; t < T; t++) ids[t] = (t * 7919 + 13) % c->vocab_size;
    model_forward(&m, &s, ids, NULL); // warm-up
    double t0 = time_now();
    for (int i = 0; i < S; i++) model_forward(&m, &s, ids, NULL);
    double fwd = (time_now() - t0) / S;
    // The GEMMs of one forward: every linear, then lm_head, each (T x in) . (out x in)^T.
    double gemm = 0, flops = 0;
    int reps = T * (double)m.n_params < 5e10 ? 5 : 1;
    for (int k = 0; k < LIN_PER_LAYER; k++) {
        const Linear* l = &m.linears[k];
        gemm += c->num_layers * time_gemm(T, l->in, l->out, reps);
        flops += 2.0 * c->num_layers * T * l->in * l->out;
    }
    gemm += time_gemm(T, c->hidden_size, c->vocab_size, reps);
    flops += 2.0 * T * c->hidden_size * c->vocab_size;
    printf("%s: %d layers, hidden %d, vocab %d; T=%d, %d samples; load %.2fs\n", argv[1], c->num_layers,
           c->hidden_size, c->vocab_size, T, S, load);
    printf("  forward      %8.1f tokens/s  %7.1f GFLOP/s (GEMM FLOPs / forward time)\n", T / fwd,
           flops / fwd / 1e9);
    printf("  OpenBLAS     %8.1f tokens/s  %7.1f GFLOP/s (the same GEMMs alone)\n", T / gemm,
           flops / gemm / 1e9);
    printf("  GEMM share of the forward: %.0f%%; the rest is attention, norms, RoPE, SwiGLU\n",
           100 * gemm / fwd);
    free(ids);
    run_free(&s, &m);
    model_free(&m);
    return 0;
}
