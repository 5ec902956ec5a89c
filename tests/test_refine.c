// search --refine (README §7) on small cases: the quadratic knapsack (GLPK, pairwise products linearised)
// against brute force over every assignment, and the refinement against a known "measured" function whose
// pairwise interaction makes the additive optimum wrong: it must find the true optimum, measure it, and
// never end worse than the plain recipe.
#include <math.h>
#include <string.h>

#include "check.h"
#include "synth_table.h"
#include "search/refine.h"

enum { NG = 4, NF = 2, NC = NF + 1 };
// kl scores summed over 2 windows: w8a8 helps group 1 a little more than group 2
static const double k_score[NF][NG] = {{1.0, 2.0, 1.9, 0.5}, {0.1, 0.2, 0.2, 0.05}};

static void make_table(ScoreTable* t) {
    synth_table_init(t, "tests/refine-case", NG, 2);
    for (int g = 0; g < NG; g++)
        for (int f = 0; f < NF; f++) t->score[f * NG + g] = k_score[f][g];
}

static int64_t cost_of(const SearchCtx* c, const int* sel) {
    int64_t s = 0;
    for (int g = 0; g < NG; g++) s += search_choice_cost(c, g, sel[g]);
    return s;
}

// Every assignment (3^4), the best value of lin + terms within the budget.
static double brute_quadratic(const SearchCtx* c, double budget, const double* lin, const QuadTerm* q, int nt,
                              int* best) {
    double bv = INFINITY;
    int sel[NG];
    for (int code = 0; code < 81; code++) {
        for (int g = 0, x = code; g < NG; g++, x /= NC) sel[g] = x % NC - 1;
        if (cost_of(c, sel) > search_cap(c, budget)) continue;
        double v = 0;
        for (int g = 0; g < NG; g++) v += lin[g * NC + sel[g] + 1];
        for (int i = 0; i < nt; i++) v += sel[q[i].g] == q[i].k && sel[q[i].h] == q[i].l ? q[i].coef : 0;
        if (v < bv) bv = v, memcpy(best, sel, sizeof(sel));
    }
    return bv;
}

static void test_quadratic(const SearchCtx* c) {
    uint64_t x = 0x2545f4914f6cdd1dull;
#define RND() (x ^= x << 13, x ^= x >> 7, x ^= x << 17, (double)(x % 20001) / 10000.0 - 1.0)
    int bad = 0, cases = 0;
    char first[256] = "";
    const double budgets[] = {4.07, 5.07, 6.1, 8.07, 10.0, 16.0};
    for (int rep = 0; rep < 20; rep++)
        for (size_t b = 0; b < sizeof(budgets) / sizeof(budgets[0]); b++) {
            double lin[NG * NC];
            for (int g = 0; g < NG; g++) {
                lin[g * NC] = 0; // bf16
                for (int k = 1; k < NC; k++) lin[g * NC + k] = 2.0 + RND();
            }
            QuadTerm q[6];
            int nt = 0;
            for (int g = 0; g < NG; g++)
                for (int h = g + 1; h < NG && nt < 6; h++)
                    q[nt++] = (QuadTerm){g, (int)(x % NC) - 1, h, (int)((x >> 8) % NC) - 1, 1.5 * RND()};
            int sel[NG], bsel[NG];
            double v, bv = brute_quadratic(c, budgets[b], lin, q, nt, bsel);
            int rc = milp_solve_quadratic(c, budgets[b], lin, q, nt, sel, &v);
            cases++;
            if (rc != 0 || fabs(v - bv) > 1e-9 * (1 + fabs(bv)) || cost_of(c, sel) > search_cap(c, budgets[b]))
                if (!bad++)
                    snprintf(first, sizeof(first), "rep %d budget %g: GLPK %d %.12g, brute force %.12g", rep,
                             budgets[b], rc, v, bv);
        }
    CHECK(bad == 0, "quadratic knapsack (GLPK) equals brute force", "%d of %d: %s", bad, cases, first);
}

// --objective max's programme: the largest of two domains' quadratic models, against brute force.
static void test_quadratic_max(const SearchCtx* c) {
    uint64_t x = 0x9e3779b97f4a7c15ull;
    int bad = 0, cases = 0;
    char first[256] = "";
    const double budgets[] = {4.07, 5.07, 6.1, 8.07, 16.0};
    for (int rep = 0; rep < 20; rep++)
        for (size_t b = 0; b < sizeof(budgets) / sizeof(budgets[0]); b++) {
            enum { ND = 2, NT = 4 };
            double lin[ND * NG * NC], off[ND], coefs[ND * NT];
            QuadTerm q[NT];
            for (int d = 0; d < ND; d++) {
                off[d] = RND();
                for (int g = 0; g < NG; g++) {
                    lin[(d * NG + g) * NC] = 0;
                    for (int k = 1; k < NC; k++) lin[(d * NG + g) * NC + k] = 2.0 + RND();
                }
            }
            for (int i = 0; i < NT; i++) {
                int g = i % (NG - 1);
                q[i] = (QuadTerm){g, (int)(x % NC) - 1, g + 1, (int)((x >> 8) % NC) - 1, 0};
                for (int d = 0; d < ND; d++) coefs[d * NT + i] = 1.5 * RND();
                (void)RND();
            }
            double bv = INFINITY;
            int sel[NG], bsel[NG];
            for (int code = 0; code < 81; code++) {
                for (int g = 0, y = code; g < NG; g++, y /= NC) sel[g] = y % NC - 1;
                if (cost_of(c, sel) > search_cap(c, budgets[b])) continue;
                double v = -INFINITY;
                for (int d = 0; d < ND; d++) {
                    double w = off[d];
                    for (int g = 0; g < NG; g++) w += lin[(d * NG + g) * NC + sel[g] + 1];
                    for (int i = 0; i < NT; i++)
                        w += sel[q[i].g] == q[i].k && sel[q[i].h] == q[i].l ? coefs[d * NT + i] : 0;
                    v = w > v ? w : v;
                }
                if (v < bv) bv = v, memcpy(bsel, sel, sizeof(sel));
            }
            double z;
            int rc = milp_solve_quadratic_max(c, budgets[b], ND, lin, off, q, coefs, NT, sel, &z);
            cases++;
            if (rc != 0 || fabs(z - bv) > 1e-9 * (1 + fabs(bv)) || cost_of(c, sel) > search_cap(c, budgets[b]))
                if (!bad++)
                    snprintf(first, sizeof(first), "rep %d budget %g: GLPK %d %.12g, brute force %.12g", rep,
                             budgets[b], rc, z, bv);
        }
    CHECK(bad == 0, "max of two domains' quadratic models (GLPK, epigraph) equals brute force", "%d of %d: %s",
          bad, cases, first);
}

// The "measured" KL: the additive scores plus a penalty when group 1 takes w8a8 while group 3 keeps w4a8.
static int g_calls;
static double truth(const ScoreTable* t, const int* sel) {
    double v = 0;
    for (int g = 0; g < NG; g++)
        if (sel[g] >= 0) v += t->score[sel[g] * NG + g];
    if (sel[1] == 1 && sel[3] == 0) v += 0.5;
    return v;
}

static void measure(void* ctx, const int* sel, VerifyResult* r, double* dkl) {
    (void)dkl;
    memset(r, 0, sizeof(*r));
    r->kl = truth(ctx, sel);
    r->nll_ref = 2.0, r->nll_q = 2.0 + r->kl / 100;
    g_calls++;
}

static void test_refine(const SearchCtx* c) {
    double budget = 5.07; // one group w8a8, the rest w4a8
    Solution s;
    search_solve(c, &budget, 1, &s);
    CHECK(s.sel[1] == 1 && s.sel[0] == 0 && s.sel[2] == 0 && s.sel[3] == 0,
          "the additive optimum gives group 1 w8a8", "sel %d %d %d %d", s.sel[0], s.sel[1], s.sel[2], s.sel[3]);
    Objective sum = {OBJ_SUM, {0}};
    RefineOpts o = {3, 4, 2, 8, 0, {0}}; // windows = the scores' windows: additive KL in the measured units
    Refine r;
    refine_run(&r, c, &sum, &s, measure, (void*)c->t, &o);
    const RefineTry *p = &r.tries[0], *b = &r.tries[r.best];
    CHECK(fabs(p->pred_kl - 3.6) < 1e-12 && fabs(p->v.kl - 4.1) < 1e-12,
          "the plain recipe: predicted and measured", "%g %g", p->pred_kl, p->v.kl);
    int want[NG] = {0, 0, 1, 0};
    CHECK(!memcmp(b->sel, want, sizeof(want)) && fabs(b->v.kl - 3.7) < 1e-12 && b->in_budget,
          "refine finds the true optimum the interaction hides", "best %d %d %d %d, KL %g", b->sel[0],
          b->sel[1], b->sel[2], b->sel[3], b->v.kl);
    int ok = 1;
    for (int i = 0; i < r.n; i++) {
        ok &= fabs(r.tries[i].v.kl - truth(c->t, r.tries[i].sel)) < 1e-12;
        ok &= r.tries[i].in_budget == (cost_of(c, r.tries[i].sel) <= search_cap(c, budget));
        ok &= !r.tries[i].in_budget || r.tries[i].v.kl >= b->v.kl;
    }
    CHECK(ok && g_calls == r.n && r.n > 2, "every recipe tried is measured once; the best in budget is kept",
          "%d tries, %d measurements", r.n, g_calls);
    printf("  refine: %d recipes measured, %d rounds, stopped: %s, %d interaction terms\n", r.n, r.rounds,
           r.stop, r.nterms);
    refine_free(&r);
    solution_free(&s);
}

// One KV-cache format for the model (--kv-uniform, README §7): 2 linear groups (w4a8) and the KV caches of 3
// layers (kv_fp8, kv_nvfp4), a byte budget.
enum { UG = 5, UF = 3, UC = UF + 1 };
static const double k_uscore[UF][UG] = {{1.0, 2.0, 0, 0, 0}, {0, 0, 0.1, 0.1, 0.1}, {0, 0, 0.2, 0.2, 0.2}};

static void make_kv_table(ScoreTable* t) {
    synth_table_init(t, "tests/refine-kv-case", UG, 2);
    synth_table_kv(t, 3);
    memcpy(t->score, k_uscore, sizeof(k_uscore));
}

static int64_t ucost(const SearchCtx* c, const int* sel) {
    int64_t s = 0;
    for (int g = 0; g < UG; g++) s += search_choice_cost(c, g, sel[g]);
    return s;
}

// Every assignment whose KV-cache groups share one choice (linears bf16 or w4a8, KV caches bf16, kv_fp8 or
// kv_nvfp4), with nd models (nd 0: one, lin (UG, UC); else lin (nd, UG, UC), off and coefs per domain, the
// largest minimised). The best value within cap, INFINITY when none fits.
static double brute_uniform(const SearchCtx* c, int64_t cap, int nd, const double* lin, const double* off,
                            const QuadTerm* q, const double* coefs, int nt, int* best) {
    double bv = INFINITY;
    for (int code = 0; code < 12; code++) {
        int sel[UG] = {code % 2 - 1, code / 2 % 2 - 1, code / 4 - 1, code / 4 - 1, code / 4 - 1};
        for (int g = 0; g < 2; g++) sel[g] = sel[g] < 0 ? -1 : 0;
        for (int g = 2; g < UG; g++) sel[g] = sel[g] < 0 ? -1 : sel[g] + 1;
        if (ucost(c, sel) > cap) continue;
        double v = -INFINITY;
        for (int d = 0; d < (nd ? nd : 1); d++) {
            double w = nd ? off[d] : 0;
            for (int g = 0; g < UG; g++) w += lin[((size_t)d * UG + g) * UC + sel[g] + 1];
            for (int i = 0; i < nt; i++)
                w += sel[q[i].g] == q[i].k && sel[q[i].h] == q[i].l ? (nd ? coefs[d * nt + i] : q[i].coef) : 0;
            v = w > v ? w : v;
        }
        if (v < bv) bv = v, memcpy(best, sel, sizeof(sel));
    }
    return bv;
}

static int uniform_kv(const int* sel) { return sel[2] == sel[3] && sel[3] == sel[4]; }

// The refinement's programmes with --kv-uniform against brute force over the uniform assignments.
static void test_quadratic_uniform(const SearchCtx* c, int64_t fixed) {
    uint64_t x = 0x5851f42d4c957f2dull;
    int bad = 0, cases = 0;
    char first[256] = "";
    int64_t lo = ucost(c, (int[]){0, 0, 2, 2, 2}), hi = ucost(c, (int[]){-1, -1, -1, -1, -1});
    for (int rep = 0; rep < 20; rep++)
        for (int b = 0; b <= 6; b++) {
            double budget = (double)((fixed + lo + (hi - lo) * b / 6 + 7) / 8);
            int64_t cap = search_cap(c, budget);
            enum { ND = 2, NT = 4 };
            double lin[ND * UG * UC], off[ND], coefs[ND * NT];
            QuadTerm q[NT];
            for (int d = 0; d < ND; d++) {
                off[d] = RND();
                for (int g = 0; g < UG; g++) {
                    lin[(d * UG + g) * UC] = 0;
                    for (int k = 1; k < UC; k++) lin[(d * UG + g) * UC + k] = 1.0 + RND();
                }
            }
            for (int i = 0; i < NT; i++) { // a linear and a KV cache, or two KV caches
                int g = i % 2, h = 2 + i % 3;
                q[i] = (QuadTerm){g, 0, h, 1 + (int)(x % 2), 1.5 * RND()};
                if (i == 3) q[i] = (QuadTerm){2, 1 + (int)(x % 2), 4, 1 + (int)((x >> 4) % 2), 1.5 * RND()};
                for (int d = 0; d < ND; d++) coefs[d * NT + i] = 1.5 * RND();
            }
            for (int nd = 0; nd <= ND; nd += ND) {
                int sel[UG], bsel[UG];
                double v, bv = brute_uniform(c, cap, nd, lin, off, q, coefs, NT, bsel);
                int rc = nd ? milp_solve_quadratic_max(c, budget, nd, lin, off, q, coefs, NT, sel, &v)
                            : milp_solve_quadratic(c, budget, lin, q, NT, sel, &v);
                if (!isfinite(bv)) continue;
                cases++;
                if (rc != 0 || fabs(v - bv) > 1e-9 * (1 + fabs(bv)) || ucost(c, sel) > cap || !uniform_kv(sel))
                    if (!bad++)
                        snprintf(first, sizeof(first),
                                 "rep %d budget %g nd %d: GLPK %d %.12g, brute force %.12g", rep, budget, nd,
                                 rc, v, bv);
            }
        }
    CHECK(bad == 0 && cases > 100,
          "--kv-uniform: the quadratic programmes (one model, max of two) equal brute force", "%d of %d: %s",
          bad, cases, first);
}

// The "measured" KL: additive, plus 3 while layers 0 and 1 both hold kv_nvfp4 caches.
static double utruth(const ScoreTable* t, const int* sel) {
    double v = 0;
    for (int g = 0; g < UG; g++)
        if (sel[g] >= 0) v += t->score[sel[g] * UG + g];
    return v + (sel[2] == 2 && sel[3] == 2 ? 3.0 : 0.0);
}

static void umeasure(void* ctx, const int* sel, VerifyResult* r, double* dkl) {
    (void)dkl;
    memset(r, 0, sizeof(*r));
    r->kl = utruth(ctx, sel);
    r->nll_ref = 2.0, r->nll_q = 2.0 + r->kl / 100;
}

// The plain recipe keeps linear 1 bf16 and every KV cache kv_nvfp4 (the budget's slack buys linear 1 or kv_fp8
// for every layer, and the additive model prefers linear 1); the measurements say kv_nvfp4 costs more than it
// predicts: the refinement must move every KV cache together to kv_fp8, and measure only uniform recipes.
static void test_refine_uniform(const SearchCtx* c, int64_t fixed) {
    int plain[UG] = {0, -1, 2, 2, 2};
    double budget = (double)((fixed + ucost(c, plain) + 7) / 8);
    Solution s;
    search_solve(c, &budget, 1, &s);
    CHECK(!memcmp(s.sel, plain, sizeof(plain)), "--kv-uniform: the plain recipe", "sel %d %d %d %d %d",
          s.sel[0], s.sel[1], s.sel[2], s.sel[3], s.sel[4]);
    Objective sum = {OBJ_SUM, {0}};
    RefineOpts o = {3, 4, 2, 8, 0, {0}};
    Refine r;
    refine_run(&r, c, &sum, &s, umeasure, (void*)c->t, &o);
    int ok = 1;
    for (int i = 0; i < r.n; i++) ok &= uniform_kv(r.tries[i].sel);
    const RefineTry* b = &r.tries[r.best];
    int want[UG] = {0, 0, 1, 1, 1};
    CHECK(ok && !memcmp(b->sel, want, sizeof(want)) && fabs(b->v.kl - 3.3) < 1e-12 && b->in_budget &&
              b->v.kl <= r.tries[0].v.kl,
          "--kv-uniform: refine moves every KV cache together to the measured optimum",
          "every try uniform %d, best %d %d %d %d %d KL %g", ok, b->sel[0], b->sel[1], b->sel[2], b->sel[3],
          b->sel[4], b->v.kl);
    refine_free(&r);
    solution_free(&s);
}

static void test_kv_uniform(void) {
    ScoreTable t;
    make_kv_table(&t);
    SearchCtx c;
    synth_search_bytes(&c, &t, 256);
    c.kv_uniform = 1;
    int64_t fixed = c.mem_fixed[0] + c.mem_fixed[1] + c.mem_fixed[2] + c.mem_fixed[3];
    test_quadratic_uniform(&c, fixed);
    test_refine_uniform(&c, fixed);
    search_free(&c);
    table_free(&t);
}

int main(void) {
    ScoreTable t;
    make_table(&t);
    SearchCtx c;
    search_init(&c, &t, SCOPE_CANDIDATES, COST_MEMORY, BITS_TRUE);
    c.quiet = 1;
    test_quadratic(&c);
    test_quadratic_max(&c);
    test_refine(&c);
    search_free(&c);
    table_free(&t);
    test_kv_uniform();
    return g_fail != 0;
}
