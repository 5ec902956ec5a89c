// Mixture-of-experts routing on the CPU. Every loop runs over tokens (or rows), each computed whole
// by one thread in a fixed order, so results are bit-identical for any OMP_NUM_THREADS.
#include "moe.h"

#include <math.h>
#include <string.h>

void moe_route_forward(float* probs, int* idx, float* w, const float* logits, int T, int E, int K, int renorm) {
#pragma omp parallel for schedule(static)
    for (int t = 0; t < T; t++) {
        const float* x = logits + (long)t * E;
        float* p = probs + (long)t * E;
        float mx = x[0], sum = 0;
        for (int e = 1; e < E; e++) mx = x[e] > mx ? x[e] : mx;
        for (int e = 0; e < E; e++) sum += p[e] = expf(x[e] - mx);
        for (int e = 0; e < E; e++) p[e] /= sum;
        int* id = idx + (long)t * K;
        float* wt = w + (long)t * K;
        float s = 0;
        for (int k = 0; k < K; k++) { // selection: strict > keeps the lowest index among ties
            int best = -1;
            for (int e = 0; e < E; e++) {
                int taken = 0;
                for (int j = 0; j < k && !taken; j++) taken = id[j] == e;
                if (!taken && (best < 0 || p[e] > p[best])) best = e;
            }
            id[k] = best;
            s += wt[k] = p[best];
        }
        for (int k = 0; renorm && k < K; k++) wt[k] /= s;
    }
}

void moe_route_backward(float* dlogits, const float* dw, const float* probs, const int* idx, int T, int E,
                        int K, int renorm) {
#pragma omp parallel for schedule(static)
    for (int t = 0; t < T; t++) {
        const float* p = probs + (long)t * E;
        const int* id = idx + (long)t * K;
        const float* g = dw + (long)t * K;
        float* dl = dlogits + (long)t * E;
        // w_k = p_k / S (S the sum of the selected probabilities) gives dp_k = (dw_k - sum_j dw_j w_j) / S
        float s = 0, gw = 0;
        for (int k = 0; k < K; k++) s += p[id[k]];
        for (int k = 0; k < K; k++) gw += g[k] * (p[id[k]] / s);
        // softmax: dlogit_e = p_e (dp_e - sum_j dp_j p_j), dp zero off the selected experts
        float dot = 0;
        for (int k = 0; k < K; k++) dot += (renorm ? (g[k] - gw) / s : g[k]) * p[id[k]];
        for (int e = 0; e < E; e++) dl[e] = -p[e] * dot;
        for (int k = 0; k < K; k++) dl[id[k]] += p[id[k]] * (renorm ? (g[k] - gw) / s : g[k]);
    }
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
