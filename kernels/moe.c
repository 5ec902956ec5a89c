// Mixture-of-experts routing on the CPU. Every loop runs over tokens (or rows), each computed whole
// by one thread in a fixed order, so results are bit-identical for any OMP_NUM_THREADS.
#include "moe.h"

#include <math.h>
#include <string.h>

void moe_route_forward(float* probs, int* idx, float* w, const float* logits, int T, int E, int K, int renorm) {
#pragma omp parallel for schedule(static)
    for (int t = 0; t < T; t++) moe_route_token((long)t, probs, idx, w, logits, E, K, renorm);
}

void moe_route_backward(float* dlogits, const float* dw, const float* probs, const int* idx, int T, int E,
                        int K, int renorm) {
#pragma omp parallel for schedule(static)
    for (int t = 0; t < T; t++) moe_route_token_backward((long)t, dlogits, dw, probs, idx, E, K, renorm);
}

void moe_sort(int* order, int* offs, int* pos, const int* idx, int T, int E, int K) {
    memset(offs, 0, sizeof(int) * ((size_t)E + 1));
    long n = (long)T * K;
    for (long a = 0; a < n; a++) offs[idx[a] + 1]++;
    for (int e = 0; e < E; e++) offs[e + 1] += offs[e];
    for (long a = 0; a < n; a++) { // counting sort, stable: tokens ascending within an expert
        int r = offs[idx[a]]++;
        order[r] = (int)a;
        pos[a] = r;
    }
    for (int e = E; e > 0; e--) offs[e] = offs[e - 1];
    offs[0] = 0;
}

void moe_gather(float* rows, const float* x, const int* order, int n, int K, int D) {
#pragma omp parallel for schedule(static)
    for (int r = 0; r < n; r++) memcpy(rows + (long)r * D, x + (long)(order[r] / K) * D, sizeof(float) * D);
}

void moe_gather_backward(float* dx, const float* drows, const int* pos, int T, int K, int D) {
#pragma omp parallel for schedule(static)
    for (int t = 0; t < T; t++)
        for (int k = 0; k < K; k++) {
            const float* d = drows + (long)pos[(long)t * K + k] * D;
            float* o = dx + (long)t * D;
            for (int i = 0; i < D; i++) o[i] += d[i];
        }
}

void moe_scatter(float* y, const float* ye, const float* w, const int* pos, int T, int K, int D) {
#pragma omp parallel for schedule(static)
    for (int t = 0; t < T; t++) {
        float* o = y + (long)t * D;
        memset(o, 0, sizeof(float) * D);
        for (int k = 0; k < K; k++) {
            long a = (long)t * K + k;
            const float* r = ye + (long)pos[a] * D;
            for (int i = 0; i < D; i++) o[i] += r[i] * w[a];
        }
    }
}

void moe_scatter_backward(float* dye, float* dw, const float* dy, const float* ye, const float* w,
                          const int* pos, int T, int K, int D) {
#pragma omp parallel for schedule(static)
    for (int t = 0; t < T; t++)
        for (int k = 0; k < K; k++) {
            long a = (long)t * K + k;
            const float* g = dy + (long)t * D;
            const float* r = ye + (long)pos[a] * D;
            float* d = dye + (long)pos[a] * D;
            double dot = 0;
            for (int i = 0; i < D; i++) {
                d[i] = w[a] * g[i];
                dot += (double)g[i] * r[i];
            }
            dw[a] = (float)dot;
        }
}

long moe_sort_scratch(long n, int E) { return (n + MOE_SORT_CHUNK - 1) / MOE_SORT_CHUNK * (long)E; }
