// The exact search against brute force on random instances, and its properties.

#include "check.h"
#include "search/knapsack.h"

static unsigned g_seed = 7;
static unsigned rnd(void) {
    g_seed = g_seed * 1103515245u + 12345u;
    return (g_seed >> 8) & 0xffffff;
}

static void make(KsItem* it, int n, int nf) {
    static const int bits[3] = {4, 8};
    for (int i = 0; i < n; i++) {
        int64_t params = 1024 * (1 + rnd() % 12);
        it[i].n_choices = nf + 1;
        it[i].cost[0] = 16 * params, it[i].score[0] = 0, it[i].bf16[0] = params;
        for (int f = 0; f < nf; f++) {
            it[i].cost[f + 1] = bits[f] * params;
            // Some exact ties (integers) to exercise the tie-break.
            it[i].score[f + 1] = (rnd() % 4 == 0) ? (double)(rnd() % 3) : (rnd() % 100000) / 1000.0 / (f + 1);
            it[i].bf16[f + 1] = 0;
        }
    }
}

int main(void) {
    int agree = 0, sparse_agree = 0, trials = 0, monotone = 1, within = 1;
    for (int trial = 0; trial < 300; trial++) {
        int nf = 1 + trial % 2;
        int n = nf == 1 ? 1 + rnd() % 20 : 1 + rnd() % 12; // brute force: 2^20 or 3^12 combinations at most
        KsItem it[20];
        make(it, n, nf);
        int64_t total = 0;
        for (int i = 0; i < n; i++) total += it[i].bf16[0];
        Knapsack ks, sp;
        if (ks_build(&ks, it, n, 16 * total, 1LL << 30) != 0) continue;
        if (ks_build_sparse(&sp, it, n, 16 * total, 1LL << 30) != 0) continue;
        double prev = INFINITY;
        for (int b = 4; b <= 16; b++) {
            int64_t cap = b * total - (int64_t)(rnd() % 2048);
            int x[20], y[20];
            double sx, sy, sz;
            int64_t cx, cy, cz;
            int rx = ks_solve(&ks, cap, x, &sx, &cx), ry = ks_brute(it, n, cap, y, &sy, &cy);
            int z[20], rz = ks_solve(&sp, cap, z, &sz, &cz);
            trials++;
            // the sparse frontier gives the dense table's objective (score, bf16 params, cost)
            int64_t bz = 0, bd = 0;
            for (int i = 0; rz == 0 && rx == 0 && i < n; i++) bz += it[i].bf16[z[i]], bd += it[i].bf16[x[i]];
            sparse_agree += rz == rx && (rz != 0 || (sz == sx && bz == bd && cz == cx));
            // Equal objectives (score, then bf16 params, then cost); equivalent choice vectors may differ.
            int64_t bx = 0, by = 0;
            for (int i = 0; rx == 0 && ry == 0 && i < n; i++) bx += it[i].bf16[x[i]], by += it[i].bf16[y[i]];
            if (rx == ry && (rx != 0 || (sx == sy && bx == by && cx == cy)))
                agree++;
            else if (rx == 0 && ry == 0)
                printf("  trial %d budget %d: dp %.9g brute %.9g\n", trial, b, sx, sy);
            if (rx == 0) {
                within &= cx <= cap;
                monotone &= sx <= prev;
                prev = sx;
            }
        }
        ks_free(&ks);
        ks_free(&sp);
    }
    CHECK(sparse_agree == trials, "sparse Pareto table equals the dense one (1-2 formats, up to 20 groups)",
          "%d of %d agree", sparse_agree, trials);
    CHECK(agree == trials, "knapsack equals brute force (1-2 formats, up to 20 groups, ties included)",
          "%d of %d agree", agree, trials);
    CHECK(monotone, "optimum never worsens as the budget grows", "violated");
    CHECK(within, "returned cost never exceeds the budget", "violated");
    // A Qwen3-8B-shaped instance in true bits (4 x in x out + 16 x out per quantized linear): 144 groups
    // of four shapes, where the dense table still fits; the sparse frontiers must find its optimum.
    {
        KsItem big[144];
        static const int64_t shape[4][2] = {
            {6144, 4096}, {4096, 4096}, {24576, 4096}, {4096, 12288}}; // out, in
        int64_t total = 0;
        for (int i = 0; i < 144; i++) {
            int64_t out = shape[i % 4][0], in = shape[i % 4][1], p = out * in;
            big[i] = (KsItem){2, {16 * p, 4 * p + 16 * out}, {0, (rnd() % 100000) / 1000.0}, {p, 0}};
            total += p;
        }
        Knapsack d, sp;
        int64_t cap = (int64_t)(4.8 * total);
        int rd = ks_build(&d, big, 144, cap, 1LL << 30), rs = ks_build_sparse(&sp, big, 144, cap, 1LL << 30);
        int xd[144], xs[144];
        double sd = 0, ss = 1;
        int64_t cd = 0, cs = 1;
        if (rd == 0 && rs == 0 && !d.sparse) ks_solve(&d, cap, xd, &sd, &cd), ks_solve(&sp, cap, xs, &ss, &cs);
        CHECK(rd == 0 && rs == 0 && !d.sparse && sd == ss && cd == cs,
              "Qwen3-8B shape, true bits, 4.8: the sparse frontiers give the dense table's optimum",
              "dense %.6f (%lld), sparse %.6f (%lld)", sd, (long long)cd, ss, (long long)cs);
        if (rd == 0) ks_free(&d);
        if (rs == 0) ks_free(&sp);
    }
    // Infeasible: below the all-4-bit cost.
    KsItem one = {2, {16 * 100, 4 * 100}, {0, 1}, {100, 0}};
    Knapsack ks;
    ks_build(&ks, &one, 1, 1600, 1 << 20);
    int x;
    double s;
    int64_t c;
    CHECK(ks_solve(&ks, 399, &x, &s, &c) == -1 && ks.min_cost == 400, "infeasible budget detected", "min %lld",
          (long long)ks.min_cost);
    CHECK(ks_solve(&ks, 400, &x, &s, &c) == 0 && x == 1, "exactly the minimum budget is feasible", "x=%d", x);
    ks_free(&ks);
    return g_fail ? 1 : 0;
}
