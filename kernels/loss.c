// KL of logit rows, next-token cross-entropy and the gradient score term on the CPU.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "loss.h"

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

// Sums of per-row (or per-chunk) values in one fixed order, whatever the OpenMP thread count, so
// that scores are bit-identical for any OMP_NUM_THREADS (and a resumed run equals an unbroken one).
static double sum_in_order(const double* x, long n) {
    double total = 0.0;
    for (long i = 0; i < n; i++) total += x[i];
    return total;
}

static double* row_buffer(long n) {
    double* r = malloc(sizeof(double) * (n > 0 ? n : 1));
    if (!r) {
        fprintf(stderr, "autoq: out of memory\n");
        exit(1);
    }
    return r;
}

double kl_rows(const float* a, const float* b, int rows, int V) {
    double* r = row_buffer(rows);
#pragma omp parallel for
    for (int i = 0; i < rows; i++) r[i] = kl_row(a + (long)i * V, b + (long)i * V, V);
    double total = sum_in_order(r, rows);
    free(r);
    return total;
}

double cross_entropy(float* dlogits, const float* logits, const int* ids, int T, int V) {
    double* r = row_buffer(T);
    int n = T - 1;
    r[T - 1] = 0.0;
#pragma omp parallel for
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
        r[t] = lse - x[y];
        if (d) {
            for (int v = 0; v < V; v++) d[v] = (float)(exp(x[v] - lse) / n);
            d[y] -= 1.0f / n;
        }
    }
    double total = sum_in_order(r, n);
    free(r);
    return total / n;
}

double grad_score(const float* dy, const int32_t* acc, const float* sx, const float* sw, const float* y, int M,
                  int N) {
    double total = 0;
    for (long i = 0; i < (long)M * N; i++) {
        float yq = (float)acc[i] * (sx[i / N] * sw[i % N]);
        double d = (double)dy[i] * ((double)yq - y[i]);
        total += d * d;
    }
    return total;
}

double sq_diff_dot(const float* dy, const float* yq, const float* y, long n) {
    enum { CHUNK = 4096 };
    long nc = (n + CHUNK - 1) / CHUNK;
    double* part = row_buffer(nc);
#pragma omp parallel for
    for (long c = 0; c < nc; c++) {
        double acc = 0.0;
        long end = (c + 1) * CHUNK < n ? (c + 1) * CHUNK : n;
        for (long i = c * CHUNK; i < end; i++) {
            double d = (double)dy[i] * ((double)yq[i] - y[i]);
            acc += d * d;
        }
        part[c] = acc;
    }
    double total = sum_in_order(part, nc);
    free(part);
    return total;
}
