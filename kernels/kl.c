#include <math.h>

#include "kernels.h"

// KL(P||Q) = sum_v p_v (a_v - b_v) - lse(a) + lse(b), with a, b the logits.
// Maxima first, then one pass of exponentials in float (vectorised), summed
// in float blocks of 256 and then in double: the two log-sum-exps nearly
// cancel, so the totals need more than float precision.
double kl_row(const float* a, const float* b, int V) {
    float ma = -INFINITY, mb = -INFINITY;
    for (int v = 0; v < V; v++) {
        ma = a[v] > ma ? a[v] : ma;
        mb = b[v] > mb ? b[v] : mb;
    }
    double sa = 0.0, sb = 0.0, ta = 0.0;
    for (int v0 = 0; v0 < V; v0 += 256) {
        int v1 = v0 + 256 < V ? v0 + 256 : V;
        float fa = 0.0f, fb = 0.0f, ft = 0.0f;
#pragma omp simd reduction(+ : fa, fb, ft)
        for (int v = v0; v < v1; v++) {
            float ea = expf(a[v] - ma);
            fa += ea;
            ft += ea * (a[v] - b[v]);
            fb += expf(b[v] - mb);
        }
        sa += fa;
        sb += fb;
        ta += ft;
    }
    return ta / sa - (ma + log(sa)) + (mb + log(sb));
}

double kl_rows(const float* a, const float* b, int rows, int V) {
    double total = 0.0;
#pragma omp parallel for reduction(+ : total)
    for (int i = 0; i < rows; i++) total += kl_row(a + (long)i * V, b + (long)i * V, V);
    return total;
}

double cross_entropy(float* dlogits, const float* logits, const int* ids, int T, int V) {
    double total = 0.0;
    int n = T - 1;
#pragma omp parallel for reduction(+ : total)
    for (int t = 0; t < T; t++) {
        const float* x = logits + (long)t * V;
        float* d = dlogits ? dlogits + (long)t * V : 0;
        if (t == T - 1) {
            if (d)
                for (int v = 0; v < V; v++) d[v] = 0.0f;
            continue;
        }
        double m = -INFINITY, s = 0.0;
        for (int v = 0; v < V; v++) m = x[v] > m ? x[v] : m;
        for (int v = 0; v < V; v++) s += exp(x[v] - m);
        double lse = m + log(s);
        int y = ids[t + 1];
        total += lse - x[y];
        if (d) {
            for (int v = 0; v < V; v++) d[v] = (float)(exp(x[v] - lse) / n);
            d[y] -= 1.0f / n;
        }
    }
    return total / n;
}
