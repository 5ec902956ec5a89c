#include "knapsack.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../engine/util.h"

static int64_t gcd64(int64_t a, int64_t b) {
    while (b) {
        int64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

// Lexicographic order of solutions: score, then bf16 params, then cost.
static int better(double s, int64_t b, int64_t c, double s0, int64_t b0, int64_t c0) {
    if (s != s0) return s < s0;
    if (b != b0) return b < b0;
    return c < c0;
}

// Backward DP: f_i(c) = best over items i..n-1 with capacity c. Solving walks
// forward from item 0, so the choice table answers every capacity at once.
int ks_build(Knapsack* ks, const KsItem* items, int n, int64_t max_cost, int64_t max_states) {
    memset(ks, 0, sizeof(*ks));
    ks->n = n;
    ks->items = items;
    int64_t g = 0;
    ks->min_cost = 0;
    for (int i = 0; i < n; i++) {
        int64_t mn = INT64_MAX;
        for (int j = 0; j < items[i].n_choices; j++) {
            g = gcd64(g, items[i].cost[j]);
            if (items[i].cost[j] < mn) mn = items[i].cost[j];
        }
        ks->min_cost += mn;
    }
    ks->unit = g ? g : 1;
    int64_t cap = max_cost / ks->unit;
    if (cap < 0) cap = 0;
    if (cap >= max_states / (n + 1)) return -1; // (cap + 1) * (n + 1) > max_states, without overflow
    ks->cap = cap;
    size_t W = (size_t)cap + 1;
    ks->choice = xmalloc((size_t)n * W);
    double* f = xmalloc(sizeof(double) * W);
    int64_t* fb = xcalloc(W, sizeof(int64_t));
    int64_t* fc = xcalloc(W, sizeof(int64_t));
    double* nf = xmalloc(sizeof(double) * W);
    int64_t* nb = xmalloc(sizeof(int64_t) * W);
    int64_t* nc = xmalloc(sizeof(int64_t) * W);
    for (size_t c = 0; c < W; c++) f[c] = 0.0; // no items left: score 0
    for (int i = n - 1; i >= 0; i--) {
        const KsItem* it = &items[i];
        for (size_t c = 0; c < W; c++) {
            double bs = INFINITY;
            int64_t bb = INT64_MAX, bc = INT64_MAX;
            int bj = 255;
            for (int j = 0; j < it->n_choices; j++) {
                int64_t w = it->cost[j] / ks->unit;
                if (w > (int64_t)c || isinf(f[c - w])) continue;
                double s = f[c - w] + it->score[j];
                int64_t b = fb[c - w] + it->bf16[j], cc = fc[c - w] + it->cost[j];
                if (bj == 255 || better(s, b, cc, bs, bb, bc)) bs = s, bb = b, bc = cc, bj = j;
            }
            nf[c] = bj == 255 ? INFINITY : bs;
            nb[c] = bb;
            nc[c] = bc;
            ks->choice[(size_t)i * W + c] = (uint8_t)bj;
        }
        memcpy(f, nf, sizeof(double) * W);
        memcpy(fb, nb, sizeof(int64_t) * W);
        memcpy(fc, nc, sizeof(int64_t) * W);
    }
    ks->best = f;
    ks->best_bf16 = fb;
    ks->best_cost = fc;
    free(nf);
    free(nb);
    free(nc);
    return 0;
}

int ks_solve(const Knapsack* ks, int64_t cap_cost, int* out, double* total_score, int64_t* total_cost) {
    int64_t c = cap_cost / ks->unit;
    if (c > ks->cap) c = ks->cap;
    if (c < 0 || isinf(ks->best[c])) return -1;
    size_t W = (size_t)ks->cap + 1;
    double s = 0;
    int64_t cost = 0;
    for (int i = 0; i < ks->n; i++) {
        int j = ks->choice[(size_t)i * W + c];
        if (j == 255) return -1;
        out[i] = j;
        s += ks->items[i].score[j];
        cost += ks->items[i].cost[j];
        c -= ks->items[i].cost[j] / ks->unit;
    }
    *total_score = s;
    *total_cost = cost;
    return 0;
}

void ks_free(Knapsack* ks) {
    free(ks->choice);
    free(ks->best);
    free(ks->best_bf16);
    free(ks->best_cost);
    memset(ks, 0, sizeof(*ks));
}

int ks_brute(const KsItem* items, int n, int64_t cap_cost, int* out, double* total_score, int64_t* total_cost) {
    int* cur = xcalloc(n, sizeof(int));
    int found = 0;
    double bs = INFINITY;
    int64_t bb = 0, bc = 0;
    for (;;) {
        double s = 0;
        int64_t b = 0, c = 0;
        // Sum in the DP's order (item n-1 first) so float ties compare the same way.
        for (int i = n - 1; i >= 0; i--) s += items[i].score[cur[i]];
        for (int i = 0; i < n; i++) b += items[i].bf16[cur[i]], c += items[i].cost[cur[i]];
        if (c <= cap_cost && (!found || better(s, b, c, bs, bb, bc))) {
            found = 1, bs = s, bb = b, bc = c;
            memcpy(out, cur, sizeof(int) * n);
        }
        int i = 0;
        while (i < n && ++cur[i] == items[i].n_choices) cur[i++] = 0;
        if (i == n) break;
    }
    free(cur);
    if (!found) return -1;
    *total_score = 0;
    *total_cost = 0;
    for (int i = 0; i < n; i++) *total_score += items[i].score[out[i]], *total_cost += items[i].cost[out[i]];
    return 0;
}
