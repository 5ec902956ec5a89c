// search --bootstrap (README §7) against a direct computation on a small case: 3 groups x 2 formats x 3
// windows; each resample's scores summed by hand and its recipe found by brute force over every assignment.
// The domain objectives (mean, weights, max through GLPK) against brute force on 4 groups x 2 formats x 2
// domains, and with one KV-cache choice for every layer (--kv-uniform) on 5 groups x 3 formats. With --write
// WITH.h5 WITHOUT.h5: writes the case as scores files, with and without per-window scores
// (tests/test_bootstrap.sh runs autoq search on them). --kv-uniform's smallest feasible budget against brute
// force, and search at it and one byte below (a child process each: an infeasible budget exits 2).
#define _GNU_SOURCE
#include <string.h>

#include "check.h"
#include "outputs_common.h"
#include "synth_table.h"
#include "search/bootstrap.h"
#include "search/milp.h"

enum { NG = 3, NF = 2, NW = 3 };
// wscore[w][f][g]: group 1 and 2 gain about as much from w8a8, so which one gets it turns on the sample
static const double k_ws[NW][NF][NG] = {
    {{1.0, 2.0, 2.2}, {0.10, 0.20, 0.25}},
    {{1.2, 2.6, 1.9}, {0.12, 0.21, 0.20}},
    {{0.9, 1.7, 2.4}, {0.09, 0.19, 0.26}},
};

static void make_table(ScoreTable* t, int windows) {
    synth_table_init(t, "tests/bootstrap-case", NG, NW);
    snprintf(t->disabled_csv, sizeof(t->disabled_csv), "*lm_head*");
    for (int g = 0; g < NG; g++)
        for (int f = 0; f < NF; f++)
            for (int w = 0; w < NW; w++) t->score[f * NG + g] += k_ws[w][f][g];
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

// A case with 4 groups, 2 formats and 2 domains (2 and 3 windows) whose domains disagree on which groups
// matter: the max objective trades one against the other.
enum { DG = 4, DD = 2 };
static const double k_ds[DD][NF][DG] = {
    {{3.0, 0.4, 2.0, 0.5}, {0.3, 0.05, 0.2, 0.06}},
    {{0.6, 4.5, 0.7, 2.9}, {0.07, 0.5, 0.08, 0.3}},
};
static const int k_dn[DD] = {2, 3};

static void make_domains(ScoreTable* t) {
    synth_table_init(t, "tests/domains-case", DG, k_dn[0] + k_dn[1]);
    snprintf(t->disabled_csv, sizeof(t->disabled_csv), "*lm_head*");
    t->nd = DD;
    snprintf(t->dname[0], sizeof(t->dname[0]), "code");
    snprintf(t->dname[1], sizeof(t->dname[1]), "prose");
    t->dscore = malloc(sizeof(k_ds));
    memcpy(t->dscore, k_ds, sizeof(k_ds));
    t->params[1] = t->active[1] = 128 * 256 * 2; // one group twice as large
    t->lshape[2] = 128 * 2;
    for (int g = 0; g < DG; g++)
        for (int d = 0; d < DD; d++) {
            t->dsamples[d] = k_dn[d];
            for (int f = 0; f < NF; f++) t->score[f * DG + g] += k_ds[d][f][g];
        }
}

// Brute force over all 3^4 assignments: the smallest objective (max, or weights w) within budget.
static double brute_domains(const ScoreTable* t, double budget, const double* w, int* best_sel) {
    double best = INFINITY, total = 0;
    for (int g = 0; g < DG; g++) total += t->params[g];
    for (int code = 0; code < 81; code++) {
        int c[DG], x = code;
        double cost = 0, loss[DD] = {0};
        for (int g = 0; g < DG; g++, x /= 3) {
            c[g] = x % 3 - 1;
            cost += (c[g] < 0 ? 16 : c[g] == 0 ? 4 : 8) * (double)t->params[g];
            for (int d = 0; d < DD; d++) loss[d] += c[g] < 0 ? 0 : k_ds[d][c[g]][g] / k_dn[d];
        }
        double obj = w ? w[0] * loss[0] + w[1] * loss[1] : fmax(loss[0], loss[1]);
        if (cost <= budget * total + 1e-6 && obj < best) best = obj, memcpy(best_sel, c, sizeof(c));
    }
    return best;
}

static void test_objectives(void) {
    ScoreTable t;
    make_domains(&t);
    SearchCtx c;
    search_init(&c, &t, SCOPE_CANDIDATES, COST_MEMORY, BITS_MODELOPT);
    c.quiet = 1;
    Objective omax, omean, ow;
    objective_parse(&omax, "max", &t);
    objective_parse(&omean, "mean", &t);
    objective_parse(&ow, "weights:code=0.8,prose=0.2", &t);
    const double budgets[] = {4.0, 4.8, 5.6, 6.4, 8.0, 10.0, 12.0, 16.0};
    double err_max = 0, err_mean = 0, err_w = 0;
    int differ = 0, bad_sel = 0;
    for (size_t i = 0; i < sizeof(budgets) / sizeof(budgets[0]); i++) {
        int bsel[DG];
        double half[2] = {0.5, 0.5}, w[2] = {0.8, 0.2}, loss[DD];
        Solution s;
        double want = brute_domains(&t, budgets[i], NULL, bsel);
        objective_solve(&c, &omax, budgets[i], &s);
        objective_losses(&t, s.sel, loss);
        err_max = fmax(err_max, fmax(rel_diff(s.predicted, want), rel_diff(fmax(loss[0], loss[1]), want)));
        int msel[DG];
        memcpy(msel, s.sel, sizeof(msel));
        bad_sel |= s.bits[0] > budgets[i] + 1e-9;
        solution_free(&s);
        double wm = brute_domains(&t, budgets[i], half, bsel);
        objective_solve(&c, &omean, budgets[i], &s);
        objective_losses(&t, s.sel, loss);
        err_mean = fmax(err_mean, fmax(rel_diff(s.predicted, wm), rel_diff(0.5 * loss[0] + 0.5 * loss[1], wm)));
        differ |= memcmp(msel, s.sel, sizeof(msel)) != 0;
        solution_free(&s);
        double ww = brute_domains(&t, budgets[i], w, bsel);
        objective_solve(&c, &ow, budgets[i], &s);
        err_w = fmax(err_w, rel_diff(s.predicted, ww));
        solution_free(&s);
    }
    CHECK(err_max < 1e-9 && !bad_sel, "objective_max_vs_brute_force", "largest relative difference %g",
          err_max);
    CHECK(err_mean < 1e-9 && err_w < 1e-9, "objective_mean_weights_vs_brute_force", "mean %g, weights %g",
          err_mean, err_w);
    CHECK(differ, "objective_max_differs_from_mean", "max and mean chose the same recipe at every budget");
    search_free(&c);
    table_free(&t);
}

// --kv-uniform under --objective max (README §7): 3 linear groups and 2 layers' KV-cache groups, formats w4a8,
// kv_fp8 and kv_nvfp4, 2 domains that disagree on which layer's KV cache matters, a byte budget; the
// mixed-integer programme against brute force over every assignment whose KV-cache groups share one choice,
// with and without a deny table (--target) that refuses kv_nvfp4 to one layer.
enum { KG = 5, KF = 3 };
static const double k_kvs[DD][KF][KG] = {
    {{2.0, 0.5, 1.2, 0, 0}, {0, 0, 0, 0.05, 0.01}, {0, 0, 0, 1.6, 0.2}},
    {{0.4, 2.2, 0.9, 0, 0}, {0, 0, 0, 0.01, 0.06}, {0, 0, 0, 0.1, 1.9}},
};

static void make_kv_table(ScoreTable* t) {
    synth_table_init(t, "tests/kv-uniform-case", KG, k_dn[0] + k_dn[1]);
    synth_table_kv(t, 2);
    t->nd = DD;
    snprintf(t->dname[0], sizeof(t->dname[0]), "code");
    snprintf(t->dname[1], sizeof(t->dname[1]), "prose");
    t->dscore = malloc(sizeof(k_kvs));
    memcpy(t->dscore, k_kvs, sizeof(k_kvs));
    for (int d = 0; d < DD; d++) {
        t->dsamples[d] = k_dn[d];
        for (int f = 0; f < KF; f++)
            for (int g = 0; g < KG; g++) t->score[f * KG + g] += k_kvs[d][f][g];
    }
}

// Brute force over every assignment (each group bf16 or a format it may take: a KV-cache format for a KV-cache
// group, w4a8 for a linear, none that deny refuses), KV-cache groups one choice when uniform: the smallest
// largest domain loss within the capacity. Returns INFINITY when none fits.
static double brute_kv(const SearchCtx* c, int64_t cap, int uniform, const uint8_t* deny, int* best_sel) {
    double best = INFINITY;
    for (int code = 0; code < 1024; code++) { // 4^5
        int x = code, sel[KG], ok = 1;
        for (int g = 0; g < KG; g++, x /= 4) {
            sel[g] = x % 4 - 1;
            int kv = g >= 3;
            if (sel[g] >= 0) ok &= (kv ? sel[g] >= 1 : sel[g] == 0) && !(deny && deny[sel[g] * KG + g]);
        }
        if (!ok || (uniform && sel[3] != sel[4])) continue;
        int64_t cost = 0;
        double loss[DD] = {0};
        for (int g = 0; g < KG; g++) {
            cost += search_choice_cost(c, g, sel[g]);
            for (int d = 0; d < DD; d++) loss[d] += sel[g] < 0 ? 0 : k_kvs[d][sel[g]][g] / k_dn[d];
        }
        double obj = fmax(loss[0], loss[1]);
        if (cost <= cap && obj < best) best = obj, memcpy(best_sel, sel, sizeof(sel));
    }
    return best;
}

static void test_kv_uniform_max(void) {
    ScoreTable t;
    make_kv_table(&t);
    SearchCtx c;
    synth_search_bytes(&c, &t, 256);
    Objective omax;
    objective_parse(&omax, "max", &t);
    uint8_t deny[KF * KG] = {0};
    deny[2 * KG + 4] = 1; // layer 1's KV cache may not be kv_nvfp4
    double err = 0;
    int checked = 0, bad = 0, tighter = 0, mixed = 0;
    for (int dn = 0; dn < 2; dn++) {
        c.deny = dn ? deny : NULL;
        int64_t lo = -1, hi = 0;
        // the budgets: from the smallest uniform recipe's bytes to all bf16
        int s0[KG];
        for (int64_t cap = 0;; cap += 4096)
            if (isfinite(brute_kv(&c, cap, 1, c.deny, s0))) {
                lo = cap;
                break;
            }
        for (int g = 0; g < KG; g++) hi += search_choice_cost(&c, g, -1);
        for (int i = 0; i <= 12; i++) {
            int64_t cap = lo + (hi - lo) * i / 12;
            double budget =
                (double)((cap + c.mem_fixed[0] + c.mem_fixed[1] + c.mem_fixed[2] + c.mem_fixed[3]) / 8);
            cap = search_cap(&c, budget);
            int bu[KG], bp[KG];
            double want = brute_kv(&c, cap, 1, c.deny, bu), free_kv = brute_kv(&c, cap, 0, c.deny, bp);
            if (!isfinite(want)) continue;
            c.kv_uniform = 1;
            Solution s;
            objective_solve(&c, &omax, budget, &s);
            double loss[DD];
            objective_losses(&t, s.sel, loss);
            err = fmax(err, fmax(rel_diff(s.predicted, want), rel_diff(fmax(loss[0], loss[1]), want)));
            int64_t cost = 0;
            for (int g = 0; g < KG; g++) cost += search_choice_cost(&c, g, s.sel[g]);
            bad |= s.sel[3] != s.sel[4] || cost > cap || (dn && s.sel[4] == 2) || s.sel[3] == 0;
            solution_free(&s);
            c.kv_uniform = 0; // per layer: the programme without the ties, against its own brute force
            objective_solve(&c, &omax, budget, &s);
            err = fmax(err, rel_diff(s.predicted, free_kv));
            mixed |= s.sel[3] != s.sel[4];
            solution_free(&s);
            tighter |= want > free_kv * (1 + 1e-9);
            checked++;
        }
    }
    CHECK(err < 1e-9 && !bad && checked >= 20, "objective_max_kv_uniform_vs_brute_force",
          "largest relative difference %g, a non-uniform, denied or over-budget recipe: %d, %d budgets", err,
          bad, checked);
    CHECK(tighter && mixed, "objective_max_kv_uniform_binds",
          "one KV-cache format never cost the max objective anything (uniform worse: %d, per layer mixed: %d)",
          tighter, mixed);
    search_free(&c);
    table_free(&t);
}

// A search at one budget in a child process: exit 0 when its recipe gives the KV-cache groups one choice
// (with --kv-uniform) and fits the budget, 3 when not, 2 (fail_input) when the budget is infeasible.
typedef struct {
    const SearchCtx* c;
    double budget;
} SolveAt;

static void solve_child(const void* arg) {
    const SolveAt* a = arg;
    Solution s;
    search_solve(a->c, &a->budget, 1, &s);
    int64_t cost = 0;
    for (int g = 0; g < KG; g++) cost += search_choice_cost(a->c, g, s.sel[g]);
    exit((a->c->kv_uniform && s.sel[3] != s.sel[4]) || cost > search_cap(a->c, a->budget) ? 3 : 0);
}

// The smallest feasible budget with one KV-cache choice for every layer (README §7) is the cheapest choice the
// KV-cache groups share, not the sum of each one's cheapest: a deny table (--target) that refuses kv_nvfp4 to
// layer 1 (each layer's own cheapest: kv_nvfp4 for layer 0), and a context of one token where layer 0's cache
// of 2 values is cheaper in bf16 (32 bits) than with a format's 64 scale bits while layer 1's of 64 values is
// cheapest in kv_nvfp4. The budget search_min_budget names must be feasible by brute force and solve within
// itself; one byte less infeasible by brute force and exit 2 naming it. Per layer (no --kv-uniform) likewise.
static void test_kv_uniform_min_budget(void) {
    static const struct {
        const char* name;
        long context, values0;
        int deny;
    } cases[] = {{"deny", 256, 64, 1}, {"bf16_cheaper", 1, 2, 0}};
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++)
        for (int uniform = 1; uniform >= 0; uniform--) {
            ScoreTable t;
            make_kv_table(&t);
            t.kvl_values[0] = cases[k].values0;
            SearchCtx c;
            synth_search_bytes(&c, &t, cases[k].context);
            c.kv_uniform = uniform;
            uint8_t deny[KF * KG] = {0};
            deny[2 * KG + 4] = 1; // layer 1's KV cache may not be kv_nvfp4
            c.deny = cases[k].deny ? deny : NULL;
            double minb = search_min_budget(&c);
            int sel[KG];
            int at = isfinite(brute_kv(&c, search_cap(&c, minb), uniform, c.deny, sel)),
                below = isfinite(brute_kv(&c, search_cap(&c, minb - 1), uniform, c.deny, sel));
            char name[128], fragment[128];
            snprintf(name, sizeof(name), "kv_min_budget_%s%s_brute_force", cases[k].name,
                     uniform ? "_uniform" : "");
            CHECK(at && !below, name, "%.0f bytes: feasible %d, one byte less feasible %d", minb, at, below);
            snprintf(name, sizeof(name), "kv_min_budget_%s%s_solves", cases[k].name, uniform ? "_uniform" : "");
            SolveAt a = {&c, minb};
            expect_exit(name, solve_child, &a, 0, "");
            snprintf(name, sizeof(name), "kv_min_budget_%s%s_below_exit2", cases[k].name,
                     uniform ? "_uniform" : "");
            snprintf(fragment, sizeof(fragment), "the smallest feasible is %.0f bytes", minb);
            SolveAt b = {&c, minb - 1};
            expect_exit(name, solve_child, &b, 2, fragment);
            search_free(&c);
            table_free(&t);
        }
}

static int cmp_d(const void* a, const void* b) {
    double x = *(const double*)a, y = *(const double*)b;
    return (x > y) - (x < y);
}

int main(int argc, char** argv) {
    ScoreTable t;
    if (argc == 3 && strcmp(argv[1], "--write-domains") == 0) {
        make_domains(&t);
        table_h5_finish(table_h5_create(&t, argv[2]), argv[2]);
        table_free(&t);
        return 0;
    }
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
    Objective obj = {OBJ_SUM, {0}};
    Bootstrap b;
    bootstrap_run(&b, &c, &obj, &s, N, 11);
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
    bootstrap_run(&b2, &c, &obj, &s, N, 11);
    int same_seed = !memcmp(b.lo, b2.lo, sizeof(double) * NF * NG) &&
                    !memcmp(b.freq, b2.freq, sizeof(double) * (NF + 1) * NG);
    bootstrap_free(&b2);
    bootstrap_run(&b2, &c, &obj, &s, N, 12);
    int other_seed = memcmp(b.lo, b2.lo, sizeof(double) * NF * NG) != 0;
    CHECK(same_seed && other_seed, "bootstrap_seeded", "same seed same result: %d, other seed differs: %d",
          same_seed, other_seed);
    bootstrap_free(&b2);
    bootstrap_free(&b);
    solution_free(&s);
    search_free(&c);
    table_free(&t);
    test_objectives();
    test_kv_uniform_max();
    snprintf(g_dir, sizeof(g_dir), "/tmp/autoq_bootstrap_XXXXXX");
    if (!mkdtemp(g_dir)) return 1;
    test_kv_uniform_min_budget();
    unlink(tmp_path("child.err"));
    rmdir(g_dir);
    return g_fail != 0;
}
