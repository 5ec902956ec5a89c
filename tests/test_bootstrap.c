// search --bootstrap (README §7) against a direct computation on a small case: 3 groups x 2 formats x 3
// windows; each resample's scores summed by hand and its recipe found by brute force over every assignment.
// With --write WITH.h5 WITHOUT.h5: writes the case as scores files, with and without per-window scores
// (tests/test_bootstrap.sh runs autoq search on them).
#include <string.h>

#include "check.h"
#include "search/bootstrap.h"

enum { NG = 3, NF = 2, NW = 3 };
// wscore[w][f][g]: group 1 and 2 gain about as much from w8a8, so which one gets it turns on the sample
static const double k_ws[NW][NF][NG] = {
    {{1.0, 2.0, 2.2}, {0.10, 0.20, 0.25}},
    {{1.2, 2.6, 1.9}, {0.12, 0.21, 0.20}},
    {{0.9, 1.7, 2.4}, {0.09, 0.19, 0.26}},
};

static char* dup(const char* s) { return strdup(s); }

static void make_table(ScoreTable* t, int windows) {
    memset(t, 0, sizeof(*t));
    snprintf(t->model, sizeof(t->model), "tests/bootstrap-case");
    snprintf(t->method, sizeof(t->method), "kl");
    snprintf(t->numerics, sizeof(t->numerics), "modelopt");
    snprintf(t->quantizer, sizeof(t->quantizer), "rtn");
    snprintf(t->disabled_csv, sizeof(t->disabled_csv), "*lm_head*");
    t->nf = NF;
    format_load(&t->fmts[0], "w4a8", 0);
    format_load(&t->fmts[1], "w8a8", 0);
    t->num_samples = NW;
    t->seq_len = 8;
    t->ng = t->nl = NG;
    t->gname = calloc(NG, sizeof(char*));
    t->gmembers = calloc(NG, sizeof(char*));
    t->lname = calloc(NG, sizeof(char*));
    t->params = calloc(NG, sizeof(long));
    t->active = calloc(NG, sizeof(long));
    t->disabled = calloc(NG, 1);
    t->score = calloc(NF * NG, sizeof(double));
    t->lshape = calloc(2 * NG, sizeof(long));
    t->lgroup = calloc(NG, sizeof(int));
    for (int g = 0; g < NG; g++) {
        char name[64];
        snprintf(name, sizeof(name), "model.layers.%d.mlp.down_proj", g);
        t->gname[g] = dup(name);
        t->gmembers[g] = dup(name);
        t->lname[g] = dup(name);
        t->params[g] = t->active[g] = 128 * 256;
        t->lshape[2 * g] = 128, t->lshape[2 * g + 1] = 256;
        t->lgroup[g] = g;
        for (int f = 0; f < NF; f++)
            for (int w = 0; w < NW; w++) t->score[f * NG + g] += k_ws[w][f][g];
    }
    if (!windows) return;
    t->nw = NW;
    t->wscore = malloc(sizeof(k_ws));
    memcpy(t->wscore, k_ws, sizeof(k_ws));
}

// The best assignment by brute force: ModelOpt's bits (cost = bits x params, bf16 16), within budget.
static void brute(const double sc[NF][NG], double budget, int* sel) {
    double best = INFINITY;
    for (int code = 0; code < 27; code++) {
        int c[NG], x = code;
        double cost = 0, s = 0;
        for (int g = 0; g < NG; g++, x /= 3) {
            c[g] = x % 3 - 1; // -1 bf16, 0 w4a8, 1 w8a8
            cost += c[g] < 0 ? 16 : c[g] == 0 ? 4 : 8;
            s += c[g] < 0 ? 0 : sc[c[g]][g];
        }
        if (cost / NG <= budget + 1e-12 && s < best) {
            best = s;
            memcpy(sel, c, sizeof(c));
        }
    }
}

static int cmp_d(const void* a, const void* b) {
    double x = *(const double*)a, y = *(const double*)b;
    return (x > y) - (x < y);
}

int main(int argc, char** argv) {
    ScoreTable t;
    if (argc == 4 && strcmp(argv[1], "--write") == 0) {
        for (int k = 0; k < 2; k++) {
            make_table(&t, k == 0);
            table_h5_finish(table_h5_create(&t, argv[2 + k]), argv[2 + k]);
            table_free(&t);
        }
        return 0;
    }
    int counts[NW], again[NW], other[NW], differ = 0, sums = 1;
    for (int r = 0; r < 50; r++) {
        boot_counts(11, r, NW, counts);
        boot_counts(11, r, NW, again);
        boot_counts(12, r, NW, other);
        sums &= counts[0] + counts[1] + counts[2] == NW && !memcmp(counts, again, sizeof(counts));
        differ |= memcmp(counts, other, sizeof(counts)) != 0;
    }
    CHECK(sums && differ, "bootstrap_counts", "draws do not sum to the windows, repeat, or depend on the seed");

    make_table(&t, 1);
    SearchCtx c;
    search_init(&c, &t, SCOPE_CANDIDATES, COST_MEMORY, BITS_MODELOPT);
    c.quiet = 1;
    double budget = 16.0 / 3; // two groups w4a8, one w8a8
    Solution s;
    search_solve(&c, &budget, 1, &s);
    enum { N = 64 };
    Bootstrap b;
    bootstrap_run(&b, &c, &s, N, 11);
    // The same statistics, computed directly
    double draws[NF][NG][N], freq[NF + 1][NG] = {{0}}, same[NG] = {0}, all = 0;
    for (int r = 0; r < N; r++) {
        boot_counts(11, r, NW, counts);
        double sc[NF][NG] = {{0}};
        for (int f = 0; f < NF; f++)
            for (int g = 0; g < NG; g++) {
                for (int w = 0; w < NW; w++) sc[f][g] += counts[w] * k_ws[w][f][g];
                draws[f][g][r] = sc[f][g];
            }
        int sel[NG], whole = 1;
        brute(sc, budget, sel);
        for (int g = 0; g < NG; g++) {
            freq[sel[g] + 1][g] += 1.0 / N;
            same[g] += sel[g] == s.sel[g] ? 1.0 / N : 0;
            whole &= sel[g] == s.sel[g];
        }
        all += whole;
    }
    double err = fabs(all / N - b.all_same);
    int flipped = 0;
    for (int g = 0; g < NG; g++) {
        err = fmax(err, fabs(same[g] - b.same[g]));
        flipped |= same[g] < 1;
        for (int k = 0; k <= NF; k++) err = fmax(err, fabs(freq[k][g] - b.freq[k * NG + g]));
        for (int f = 0; f < NF; f++) {
            qsort(draws[f][g], N, sizeof(double), cmp_d);
            // 2.5%: position 0.025 x 63 = 1.575; 97.5%: 61.425
            double lo = draws[f][g][1] + 0.575 * (draws[f][g][2] - draws[f][g][1]);
            double hi = draws[f][g][61] + 0.425 * (draws[f][g][62] - draws[f][g][61]);
            err = fmax(err, fmax(rel_diff(lo, b.lo[f * NG + g]), rel_diff(hi, b.hi[f * NG + g])));
        }
    }
    CHECK(err < 1e-12 && flipped, "bootstrap_direct", "largest difference %g, a decision flipped: %d", err,
          flipped);
    int noisy_ok = 1;
    for (int g = 0; g < NG; g++) noisy_ok &= b.noisy[g] == (same[g] < BOOT_STABLE);
    CHECK(noisy_ok && b.n_noisy > 0, "bootstrap_noisy_rule", "noisy flags differ from agreement < %.2f",
          BOOT_STABLE);
    Bootstrap b2;
    bootstrap_run(&b2, &c, &s, N, 11);
    int same_seed = !memcmp(b.lo, b2.lo, sizeof(double) * NF * NG) &&
                    !memcmp(b.freq, b2.freq, sizeof(double) * (NF + 1) * NG);
    bootstrap_free(&b2);
    bootstrap_run(&b2, &c, &s, N, 12);
    int other_seed = memcmp(b.lo, b2.lo, sizeof(double) * NF * NG) != 0;
    CHECK(same_seed && other_seed, "bootstrap_seeded", "same seed same result: %d, other seed differs: %d",
          same_seed, other_seed);
    bootstrap_free(&b2);
    bootstrap_free(&b);
    solution_free(&s);
    search_free(&c);
    table_free(&t);
    return g_fail != 0;
}
