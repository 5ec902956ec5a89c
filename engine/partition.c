#include "partition.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

void partition_windows(int n, int parts, int i, int* lo, int* hi) {
    int base = n / parts, extra = n % parts;
    *lo = i * base + (i < extra ? i : extra);
    *hi = *lo + base + (i < extra ? 1 : 0);
}

// Dynamic programming over (stages used, layers placed): best[s][i] is the smallest largest-work of
// layers 0..i-1 on stages 0..s-1, the last of them ending at i. O(parts L^2): L is at most a few hundred.
int partition_layers(const LayerSplit* p, int* bounds) {
    int L = p->L, n = p->parts;
    if (n < 1 || n > L) return 0;
    double *pw = xcalloc(L + 1, sizeof(double)), *pb = xcalloc(L + 1, sizeof(double));
    for (int l = 0; l < L; l++) pw[l + 1] = pw[l] + p->work[l], pb[l + 1] = pb[l] + p->bytes[l];
    double* best = xmalloc(sizeof(double) * (n + 1) * (L + 1));
    int* from = xcalloc((size_t)(n + 1) * (L + 1), sizeof(int));
    for (int k = 0; k < (n + 1) * (L + 1); k++) best[k] = INFINITY;
    best[0] = 0;
    for (int s = 1; s <= n; s++)
        for (int i = s; i <= L; i++) {
            double* b = &best[s * (L + 1) + i];
            for (int j = s - 1; j < i; j++) {
                double prev = best[(s - 1) * (L + 1) + j];
                double w = pw[i] - pw[j] + (s == 1 ? p->head_work : 0) + (s == n ? p->tail_work : 0);
                double by = pb[i] - pb[j] + (s == 1 ? p->head_bytes : 0) + (s == n ? p->tail_bytes : 0);
                if (prev == INFINITY || by > p->cap[s - 1]) continue;
                double v = prev > w ? prev : w;
                if (v < *b) *b = v, from[s * (L + 1) + i] = j;
            }
        }
    int ok = best[n * (L + 1) + L] != INFINITY;
    if (ok) {
        bounds[n] = L;
        for (int s = n; s > 0; s--) bounds[s - 1] = from[s * (L + 1) + bounds[s]];
    }
    free(pw), free(pb), free(best), free(from);
    return ok;
}

void partition_place_rows(double* full, const double* own, int lo, int hi, long n) {
    if (hi > lo) memcpy(full + (size_t)lo * n, own, sizeof(double) * (size_t)(hi - lo) * n);
}
