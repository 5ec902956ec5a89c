#include <math.h>

#include "kernels.h"

// KL(P||Q) = sum_v p_v (a_v - b_v) - lse(a) + lse(b), with a, b the logits.
// One pass: running maxima rescale the partial sums as they grow.
double kl_row(const float* a, const float* b, int V) {
    double ma = -INFINITY, sa = 0.0, ta = 0.0, mb = -INFINITY, sb = 0.0;
    for (int v = 0; v < V; v++) {
        double x = a[v], y = b[v];
        if (x > ma) {
            double r = exp(ma - x);
            sa *= r;
            ta *= r;
            ma = x;
        }
        double e = exp(x - ma);
        sa += e;
        ta += e * (x - y);
        if (y > mb) {
            sb *= exp(mb - y);
            mb = y;
        }
        sb += exp(y - mb);
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
