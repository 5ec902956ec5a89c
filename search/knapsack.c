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

// The frontier of items i..n-1 from that of items i+1..n-1 (prev): every state extended by every choice
// of item i, kept when within max_cost and strictly better than every cheaper candidate (the best with
// cost <= c is then the last state with cost <= c, as the dense table's f_i(c)). Scores add item i last,
// in the dense table's order. Returns the count, or -1 past limit.
static int cmp_state(const void* a, const void* b) {
    const KsState *x = a, *y = b;
    if (x->cost != y->cost) return x->cost < y->cost ? -1 : 1;
    if (better(x->score, x->bf16, x->cost, y->score, y->bf16, y->cost)) return -1;
    if (better(y->score, y->bf16, y->cost, x->score, x->bf16, x->cost)) return 1;
    return x->prev != y->prev ? (x->prev < y->prev ? -1 : 1) : (int)x->choice - (int)y->choice;
}

static int64_t front_extend(KsState** out, const KsState* prev, int64_t np, const KsItem* it, int64_t max_cost,
                            int64_t limit) {
    int64_t m = 0;
    if (np * it->n_choices > limit) return -1; // the candidates alone would pass the limit
    KsState* c = xmalloc(sizeof(KsState) * (size_t)(np * it->n_choices + 1));
    for (int64_t p = 0; p < np; p++)
        for (int j = 0; j < it->n_choices; j++) {
            int64_t cost = prev[p].cost + it->cost[j];
            if (cost > max_cost) continue;
            c[m++] = (KsState){cost, prev[p].bf16 + it->bf16[j], prev[p].score + it->score[j], (int32_t)p,
                               (uint8_t)j};
        }
    qsort(c, (size_t)m, sizeof(KsState), cmp_state);
    int64_t k = 0;
    for (int64_t i = 0; i < m; i++)
        if (k == 0 || better(c[i].score, c[i].bf16, c[i].cost, c[k - 1].score, c[k - 1].bf16, c[k - 1].cost)) {
            if (k > 0 && c[i].cost == c[k - 1].cost) continue; // sorted best-first within a cost
            c[k++] = c[i];
        }
    *out = c;
    return k;
}

static void front_free(Knapsack* ks) {
    for (int i = 0; ks->front && i <= ks->n; i++) free(ks->front[i]);
    free(ks->front);
    free(ks->n_front);
    ks->front = NULL;
    ks->n_front = NULL;
}

static int64_t cost_gcd(const KsItem* items, int n, int64_t* min_cost) {
    int64_t g = 0;
    *min_cost = 0;
    for (int i = 0; i < n; i++) {
        int64_t mn = INT64_MAX;
        for (int j = 0; j < items[i].n_choices; j++) {
            g = gcd64(g, items[i].cost[j]);
            if (items[i].cost[j] < mn) mn = items[i].cost[j];
        }
        *min_cost += mn;
    }
    return g ? g : 1;
}

int ks_build_sparse(Knapsack* ks, const KsItem* items, int n, int64_t max_cost, int64_t max_states) {
    memset(ks, 0, sizeof(*ks));
    ks->n = n;
    ks->items = items;
    ks->unit = cost_gcd(items, n, &ks->min_cost);
    ks->sparse = 1;
    int64_t limit = max_states / (int64_t)sizeof(KsState);
    ks->front = xcalloc((size_t)n + 1, sizeof(KsState*));
    ks->n_front = xcalloc((size_t)n + 1, sizeof(int64_t));
    ks->front[n] = xcalloc(1, sizeof(KsState)); // nothing chosen: cost 0, score 0
    ks->n_front[n] = 1;
    int64_t total = 1;
    for (int i = n - 1; i >= 0; i--) {
        int64_t k = front_extend(&ks->front[i], ks->front[i + 1], ks->n_front[i + 1], &ks->items[i], max_cost,
                                 limit - total);
        if (k < 0 || k > INT32_MAX) {
            front_free(ks);
            return -1;
        }
        ks->n_front[i] = k;
        total += k;
    }
    return 0;
}

// Backward DP: f_i(c) = best over items i..n-1 with capacity c. Solving walks
// forward from item 0, so the choice table answers every capacity at once.
int ks_build(Knapsack* ks, const KsItem* items, int n, int64_t max_cost, int64_t max_states) {
    memset(ks, 0, sizeof(*ks));
    ks->n = n;
    ks->items = items;
    ks->unit = cost_gcd(items, n, &ks->min_cost);
    int64_t cap = max_cost / ks->unit;
    if (cap < 0) cap = 0;
    // (cap + 1) * (n + 1) > max_states, without overflow
    if (cap >= max_states / (n + 1)) return ks_build_sparse(ks, items, n, max_cost, max_states);
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

// The last state of the whole frontier with cost <= cap_cost, then back through the frontiers.
static int ks_solve_sparse(const Knapsack* ks, int64_t cap_cost, int* out, double* total_score,
                           int64_t* total_cost) {
    const KsState* f = ks->front[0];
    int64_t lo = 0, hi = ks->n_front[0]; // first state with cost > cap_cost
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (f[mid].cost <= cap_cost)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == 0) return -1;
    const KsState* st = &f[lo - 1];
    *total_cost = st->cost;
    double s = 0;
    for (int i = 0; i < ks->n; i++) {
        out[i] = st->choice;
        s += ks->items[i].score[st->choice];
        st = &ks->front[i + 1][st->prev];
    }
    *total_score = s;
    return 0;
}

int ks_solve(const Knapsack* ks, int64_t cap_cost, int* out, double* total_score, int64_t* total_cost) {
    if (ks->sparse) return ks_solve_sparse(ks, cap_cost, out, total_score, total_cost);
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
    front_free(ks);
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
