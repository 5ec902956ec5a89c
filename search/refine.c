#include "refine.h"

#include <hdf5.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../engine/util.h"

// LAPACK's minimum-norm least squares (OpenBLAS carries LAPACK).
void dgelsd_(const int* m, const int* n, const int* nrhs, double* a, const int* lda, double* b, const int* ldb,
             double* s, const double* rcond, int* rank, double* work, const int* lwork, int* iwork, int* info);

#define MOVES_PER_SIDE 48 // pairs are formed among the best moves that add bits and the best that save bits

// The fitted model of a recipe's measured KL x (held-out nats):
//   f(x) = m0 + alpha (A(x) - A(plain)) + Σ_{g moved} delta[g][x_g] + Σ_{pairs of moves in x} coef,
// A the additive prediction (objective units), moves counted from the plain recipe.
typedef struct {
    const SearchCtx* c;
    int ng, nc;       // nc = formats + 1 (column 0 bf16)
    const int* plain; // (ng)
    double* lin;      // (ng, nc) the objective's additive score of each choice
    double alpha, m0, a0;
    double* delta; // (ng, nc)
    QuadTerm* terms;
    int nt;
    int64_t cap;
    uint8_t* misfit; // (nf, ng)
} Fit;

static double additive(const Fit* s, const int* sel) {
    double a = 0;
    for (int g = 0; g < s->ng; g++)
        if (!s->c->t->disabled[g]) a += s->lin[(size_t)g * s->nc + sel[g] + 1];
    return a;
}

static double fit_value(const Fit* s, const int* sel) {
    double v = s->m0 + s->alpha * (additive(s, sel) - s->a0);
    for (int g = 0; g < s->ng; g++)
        if (sel[g] != s->plain[g]) v += s->delta[(size_t)g * s->nc + sel[g] + 1];
    for (int i = 0; i < s->nt; i++) {
        const QuadTerm* q = &s->terms[i];
        if (sel[q->g] == q->k && sel[q->h] == q->l) v += q->coef;
    }
    return v;
}

// The fitted models: the objective's one (nd 0), or one per domain whose largest value is the objective
// (--objective max; each domain's measured KL per held-out window).
typedef struct {
    Fit* f; // (nd ? nd : 1)
    int nd;
} Models;

// The objective's value of one fitted quantity (fit_value, additive): with domains the largest domain's.
static double models_max(const Models* M, const int* sel, double (*of)(const Fit*, const int*)) {
    double v = of(&M->f[0], sel);
    for (int d = 1; d < M->nd; d++) {
        double x = of(&M->f[d], sel);
        v = x > v ? x : v;
    }
    return v;
}

static double models_value(const Models* M, const int* sel) { return models_max(M, sel, fit_value); }

// The additive prediction in the objective's units (with domains the largest domain's loss per window).
static double models_additive(const Models* M, const int* sel) { return models_max(M, sel, additive); }

static int64_t recipe_cost(const SearchCtx* c, const int* sel) {
    int64_t cost = 0;
    for (int g = 0; g < c->t->ng; g++)
        if (!c->t->disabled[g]) cost += search_choice_cost(c, g, sel[g]);
    return cost;
}

// --kv-uniform (README §7): a move of one KV-cache group moves every enabled KV-cache group to the same choice,
// so every recipe the refinement measures keeps one KV-cache format for the model. kv_lead is the group that
// stands for them in the moves (the first enabled KV-cache group), -1 without --kv-uniform.
static int kv_lead(const SearchCtx* c) {
    const ScoreTable* t = c->t;
    for (int g = 0; g < t->ng && c->kv_uniform; g++)
        if (!t->disabled[g] && table_kv(t, g)) return g;
    return -1;
}

static int moves_together(const SearchCtx* c, int g) { return c->kv_uniform && table_kv(c->t, g); }

// Sets group g's choice to k in x (with --kv-uniform every enabled KV-cache group's).
static void set_choice(const SearchCtx* c, int* x, int g, int k) {
    const ScoreTable* t = c->t;
    if (!moves_together(c, g)) {
        x[g] = k;
        return;
    }
    for (int h = 0; h < t->ng; h++)
        if (!t->disabled[h] && table_kv(t, h)) x[h] = k;
}

// Whether format k may be group g's choice (for a KV-cache group under --kv-uniform: every one's).
static int move_offered(const SearchCtx* c, const uint8_t* misfit, int g, int k) {
    const ScoreTable* t = c->t;
    if (k < 0) return 1;
    if (!moves_together(c, g)) return !misfit[(size_t)k * t->ng + g];
    for (int h = 0; h < t->ng; h++)
        if (!t->disabled[h] && table_kv(t, h) && misfit[(size_t)k * t->ng + h]) return 0;
    return 1;
}

// The cost change of the move of group g from base to choice k (set_choice's groups).
static int64_t move_cost(const SearchCtx* c, const int* base, int g, int k) {
    const ScoreTable* t = c->t;
    if (!moves_together(c, g)) return search_choice_cost(c, g, k) - search_choice_cost(c, g, base[g]);
    int64_t d = 0;
    for (int h = 0; h < t->ng; h++)
        if (!t->disabled[h] && table_kv(t, h))
            d += search_choice_cost(c, h, k) - search_choice_cost(c, h, base[h]);
    return d;
}

static int find_try(const Refine* r, const int* sel, int ng) {
    for (int i = 0; i < r->n; i++)
        if (!memcmp(r->tries[i].sel, sel, sizeof(int) * ng)) return i;
    return -1;
}

static void add_try(Refine* r, const Models* M, const int* sel, int round, TryKind kind, double pred,
                    RefineMeasure measure, void* ctx) {
    const Fit* s = &M->f[0];
    const SearchCtx* c = s->c;
    if (r->n == r->cap) {
        r->cap = r->cap ? 2 * r->cap : 16;
        r->tries = realloc(r->tries, sizeof(RefineTry) * r->cap);
        if (!r->tries) fail_other("out of memory");
    }
    RefineTry* t = &r->tries[r->n++];
    memset(t, 0, sizeof(*t));
    t->sel = xmalloc(sizeof(int) * s->ng);
    memcpy(t->sel, sel, sizeof(int) * s->ng);
    t->round = round;
    t->kind = kind;
    t->in_budget = recipe_cost(c, sel) <= s->cap;
    Solution tmp;
    memset(&tmp, 0, sizeof(tmp));
    tmp.sel = t->sel;
    search_measure(c, &tmp);
    t->bits = tmp.bits[c->scope];
    t->score = models_additive(M, sel);
    t->pred_kl = pred;
    double t0 = time_now(), dk[MAX_DOMAINS];
    measure(ctx, sel, &t->v, r->nd ? dk : NULL);
    r->seconds += time_now() - t0;
    t->obj = t->v.kl;
    for (int d = 0; d < r->nd; d++) {
        t->dkl[d] = dk[d] / r->dwindows[d];
        t->obj = d == 0 || t->dkl[d] > t->obj ? t->dkl[d] : t->obj;
    }
}

// The moves of every measured recipe from the plain one, and the pairs of moves measured together, fitted by
// minimum-norm least squares to what the additive part leaves unexplained (exact when the system is determined:
// a pair's term is then its measured KL less both moves' alone, plus the base's).
// d: the domain whose measured KL per window is fitted, -1 the summed KL.
static void fit_terms(Fit* s, const Refine* r, int d) {
    int ng = s->ng, nc = s->nc, rows = r->n - 1;
    memset(s->delta, 0, sizeof(double) * ng * nc);
    free(s->terms);
    s->terms = NULL;
    s->nt = 0;
    if (rows <= 0) return;
    int* move_col = xmalloc(sizeof(int) * ng * nc); // feature column of each move, -1 none
    for (int i = 0; i < ng * nc; i++) move_col[i] = -1;
    int nmoves = 0, cap_terms = 16;
    s->terms = xmalloc(sizeof(QuadTerm) * cap_terms);
    for (int i = 1; i < r->n; i++) {
        const int* x = r->tries[i].sel;
        for (int g = 0; g < ng; g++) {
            if (x[g] == s->plain[g]) continue;
            if (move_col[g * nc + x[g] + 1] < 0) move_col[g * nc + x[g] + 1] = nmoves++;
            for (int h = g + 1; h < ng; h++) {
                if (x[h] == s->plain[h]) continue;
                int seen = 0;
                for (int k = 0; k < s->nt && !seen; k++)
                    seen = s->terms[k].g == g && s->terms[k].k == x[g] && s->terms[k].h == h &&
                           s->terms[k].l == x[h];
                if (seen) continue;
                if (s->nt == cap_terms) s->terms = realloc(s->terms, sizeof(QuadTerm) * (cap_terms *= 2));
                if (!s->terms) fail_other("out of memory");
                s->terms[s->nt++] = (QuadTerm){g, x[g], h, x[h], 0.0};
            }
        }
    }
    int nfeat = nmoves + s->nt, ld = rows > nfeat ? rows : nfeat;
    double* a = xcalloc((size_t)rows * nfeat, sizeof(double)); // column-major (rows, nfeat)
    double* b = xcalloc(ld, sizeof(double));
    for (int i = 1; i < r->n; i++) {
        const int* x = r->tries[i].sel;
        double y = d < 0 ? r->tries[i].v.kl : r->tries[i].dkl[d];
        b[i - 1] = y - s->m0 - s->alpha * (additive(s, x) - s->a0);
        for (int g = 0; g < ng; g++)
            if (x[g] != s->plain[g]) a[(size_t)move_col[g * nc + x[g] + 1] * rows + i - 1] = 1;
        for (int k = 0; k < s->nt; k++)
            if (x[s->terms[k].g] == s->terms[k].k && x[s->terms[k].h] == s->terms[k].l)
                a[(size_t)(nmoves + k) * rows + i - 1] = 1;
    }
    int nrhs = 1, rank, info, lwork = -1, iwq;
    double rcond = 1e-10, wq;
    double* sv = xmalloc(sizeof(double) * (rows < nfeat ? rows : nfeat));
    dgelsd_(&rows, &nfeat, &nrhs, a, &rows, b, &ld, sv, &rcond, &rank, &wq, &lwork, &iwq, &info);
    lwork = (int)wq;
    double* work = xmalloc(sizeof(double) * lwork);
    int* iwork = xmalloc(sizeof(int) * (iwq > 1 ? iwq : 1));
    dgelsd_(&rows, &nfeat, &nrhs, a, &rows, b, &ld, sv, &rcond, &rank, work, &lwork, iwork, &info);
    if (info != 0) fail_other("search --refine: the least-squares fit failed (dgelsd info %d)", info);
    for (int i = 0; i < ng * nc; i++)
        if (move_col[i] >= 0) s->delta[i] = b[move_col[i]];
    for (int k = 0; k < s->nt; k++) s->terms[k].coef = b[nmoves + k];
    free(a), free(b), free(sv), free(work), free(iwork), free(move_col);
}

typedef struct {
    int g[2], k[2]; // one or two moves (g[1] < 0: one)
    double value;   // the fitted model's KL
    int order;      // enumeration order: ties stay deterministic
} Cand;

static int by_value(const void* pa, const void* pb) {
    const Cand *a = pa, *b = pb;
    if (a->value != b->value) return a->value < b->value ? -1 : 1;
    return a->order - b->order;
}

// The base recipe's neighbours within the budget (every single move; pairs among the best moves each way),
// ranked by the fitted model. Returns their count in *out (malloc'd).
static int neighbours(const Models* M, const int* base, Cand** out) {
    const Fit* s = &M->f[0];
    const SearchCtx* c = s->c;
    const ScoreTable* t = c->t;
    int ng = s->ng, nc = s->nc;
    int64_t cost0 = recipe_cost(c, base);
    int* x = xmalloc(sizeof(int) * ng);
    memcpy(x, base, sizeof(int) * ng);
    double f0 = models_value(M, base);
    Cand* mv = xmalloc(sizeof(Cand) * ng * nc); // every move, with its cost change in value's stead below
    int64_t* dcost = xmalloc(sizeof(int64_t) * ng * nc);
    int nm = 0, lead = kv_lead(c);
    for (int g = 0; g < ng; g++) {
        if (t->disabled[g] || (moves_together(c, g) && g != lead)) continue; // the lead moves them all
        for (int k = -1; k < t->nf; k++) {
            if (k == base[g] || !move_offered(c, s->misfit, g, k)) continue;
            set_choice(c, x, g, k);
            mv[nm] = (Cand){{g, -1}, {k, 0}, models_value(M, x) - f0, nm};
            dcost[nm++] = move_cost(c, base, g, k);
            set_choice(c, x, g, base[g]);
        }
    }
    int cap = nm + 2 * MOVES_PER_SIDE * MOVES_PER_SIDE * 2 + 1, n = 0;
    Cand* cand = xmalloc(sizeof(Cand) * cap);
    for (int i = 0; i < nm; i++)
        if (cost0 + dcost[i] <= s->cap) {
            cand[n] = mv[i];
            cand[n].value += f0;
            cand[n].order = n;
            n++;
        }
    // the best moves each way, by the model's change
    int* up = xmalloc(sizeof(int) * nm);
    int* down = xmalloc(sizeof(int) * nm);
    int nu = 0, nd = 0;
    Cand* sorted = xmalloc(sizeof(Cand) * (nm ? nm : 1));
    if (nm > 0) memcpy(sorted, mv, sizeof(Cand) * (size_t)nm);
    qsort(sorted, nm, sizeof(Cand), by_value);
    for (int i = 0; i < nm; i++) {
        int m = sorted[i].order;
        if (dcost[m] > 0 && nu < MOVES_PER_SIDE) up[nu++] = m;
        if (dcost[m] <= 0 && nd < MOVES_PER_SIDE) down[nd++] = m;
    }
    int* pool = xmalloc(sizeof(int) * (nu + nd + 1));
    memcpy(pool, up, sizeof(int) * nu);
    memcpy(pool + nu, down, sizeof(int) * nd);
    int np = nu + nd;
    for (int i = 0; i < np; i++)
        for (int j = i + 1; j < np; j++) {
            const Cand *a = &mv[pool[i]], *b = &mv[pool[j]];
            if (a->g[0] == b->g[0] || cost0 + dcost[pool[i]] + dcost[pool[j]] > s->cap) continue;
            if (n == cap) break;
            set_choice(c, x, a->g[0], a->k[0]), set_choice(c, x, b->g[0], b->k[0]);
            int lo = a->g[0] < b->g[0] ? 0 : 1; // moves in group order
            const Cand* p = lo == 0 ? a : b;
            const Cand* q = lo == 0 ? b : a;
            cand[n] = (Cand){{p->g[0], q->g[0]}, {p->k[0], q->k[0]}, models_value(M, x), n};
            n++;
            set_choice(c, x, a->g[0], base[a->g[0]]), set_choice(c, x, b->g[0], base[b->g[0]]);
        }
    qsort(cand, n, sizeof(Cand), by_value);
    free(x), free(mv), free(dcost), free(up), free(down), free(sorted), free(pool);
    *out = cand;
    return n;
}

static void apply(const SearchCtx* c, int* x, const int* base, int ng, const Cand* m) {
    memcpy(x, base, sizeof(int) * ng);
    for (int i = 0; i < 2; i++)
        if (m->g[i] >= 0) set_choice(c, x, m->g[i], m->k[i]);
}

// d >= 0: domain d's model (its loss per scored window against its measured KL per held-out window).
static void fit_init(Fit* s, const SearchCtx* c, const Objective* o, const Solution* plain,
                     const RefineOpts* opt, int d) {
    const ScoreTable* t = c->t;
    memset(s, 0, sizeof(*s));
    s->c = c;
    s->ng = t->ng;
    s->nc = t->nf + 1;
    s->plain = plain->sel;
    s->lin = xcalloc((size_t)s->ng * s->nc, sizeof(double));
    s->delta = xcalloc((size_t)s->ng * s->nc, sizeof(double));
    s->misfit = search_misfit_table(c);
    s->cap = search_cap(c, plain->budget);
    double norm = t->num_samples > 0 ? t->num_samples : 1; // the additive scores' windows
    if (d >= 0) {
        norm = 1;
        for (int g = 0; g < t->ng; g++)
            for (int f = 0; f < t->nf; f++)
                s->lin[(size_t)g * s->nc + f + 1] =
                    t->dscore[((size_t)d * t->nf + f) * t->ng + g] / t->dsamples[d];
    } else if (o->kind == OBJ_SUM) {
        for (int g = 0; g < t->ng; g++)
            for (int f = 0; f < t->nf; f++) s->lin[(size_t)g * s->nc + f + 1] = t->score[(size_t)f * t->ng + g];
    } else { // mean or weights: each domain's loss per window, weighted
        norm = 0;
        for (int d = 0; d < t->nd; d++) {
            norm += o->w[d];
            for (int g = 0; g < t->ng; g++)
                for (int f = 0; f < t->nf; f++)
                    s->lin[(size_t)g * s->nc + f + 1] +=
                        o->w[d] * t->dscore[((size_t)d * t->nf + f) * t->ng + g] / t->dsamples[d];
        }
    }
    s->a0 = additive(s, plain->sel);
    // kl scores are KL summed over windows and positions: per scored token times the held-out tokens is the
    // same measure
    double ratio = opt->seq_len > 0 && t->seq_len > 0 ? (double)opt->seq_len / t->seq_len : 1.0;
    s->alpha = strcmp(t->method, "kl") == 0 ? (d >= 0 ? 1 : opt->windows) * ratio / norm : 0;
}

// The exact re-solve under the fitted model(s): linear part alpha A + delta, pairs as products; with domains
// the largest domain's model (an epigraph variable). Returns 0 with x, -1 when infeasible.
static int resolve(const Models* M, const SearchCtx* c, double budget, int* x) {
    const Fit* f0 = &M->f[0];
    int ng = f0->ng, nc = f0->nc, nd = M->nd ? M->nd : 1, nt = f0->nt;
    double* lin = xmalloc(sizeof(double) * nd * ng * nc);
    double* off = xmalloc(sizeof(double) * nd);
    double* coefs = xmalloc(sizeof(double) * nd * (nt ? nt : 1));
    for (int d = 0; d < nd; d++) {
        const Fit* f = &M->f[d];
        if (f->nt != nt) fail_other("internal: the domains' fits have different terms");
        for (int g = 0; g < ng; g++)
            for (int k = 0; k < nc; k++)
                lin[((size_t)d * ng + g) * nc + k] = f->alpha * f->lin[(size_t)g * nc + k] +
                                                     (k - 1 != f->plain[g] ? f->delta[(size_t)g * nc + k] : 0);
        off[d] = f->m0 - f->alpha * f->a0;
        for (int i = 0; i < nt; i++) coefs[(size_t)d * nt + i] = f->terms[i].coef;
    }
    double value;
    int rc = M->nd ? milp_solve_quadratic_max(c, budget, M->nd, lin, off, f0->terms, coefs, nt, x, &value)
                   : milp_solve_quadratic(c, budget, lin, f0->terms, nt, x, &value);
    free(lin), free(off), free(coefs);
    return rc;
}

void refine_run(Refine* r, const SearchCtx* c, const Objective* o, const Solution* s, RefineMeasure measure,
                void* ctx, const RefineOpts* opt) {
    const ScoreTable* t = c->t;
    int ng = t->ng;
    memset(r, 0, sizeof(*r));
    r->windows = opt->windows;
    r->nd = o->kind == OBJ_MAX ? opt->nd : 0;
    if (o->kind == OBJ_MAX && r->nd != t->nd)
        fail_other("internal: --objective max refined without its domains");
    for (int d = 0; d < r->nd; d++) r->dwindows[d] = opt->dwindows[d];
    Models M = {xcalloc(r->nd ? r->nd : 1, sizeof(Fit)), r->nd};
    for (int d = 0; d < (r->nd ? r->nd : 1); d++) fit_init(&M.f[d], c, o, s, opt, r->nd ? d : -1);
    int kl = M.f[0].alpha > 0;
    double pred0 = -INFINITY; // the additive prediction in held-out nats
    for (int d = 0; d < (r->nd ? r->nd : 1); d++)
        pred0 = M.f[d].alpha * M.f[d].a0 > pred0 ? M.f[d].alpha * M.f[d].a0 : pred0;
    add_try(r, &M, s->sel, 0, TRY_PLAIN, kl ? pred0 : NAN, measure, ctx);
    for (int d = 0; d < (r->nd ? r->nd : 1); d++) {
        Fit* f = &M.f[d];
        f->m0 = r->nd ? r->tries[0].dkl[d] : r->tries[0].v.kl;
        if (!kl) f->alpha = f->a0 > 0 ? f->m0 / f->a0 : 0; // gradient scores: scaled to the plain recipe's KL
    }
    r->alpha = M.f[0].alpha;
    int base = 0;
    r->stop = "--refine-rounds reached";
    int* x = xmalloc(sizeof(int) * ng);
    for (int round = 1; round <= opt->rounds; round++) {
        r->rounds = round;
        double base_obj = r->tries[base].obj;
        int* bsel = xmalloc(sizeof(int) * ng);
        memcpy(bsel, r->tries[base].sel, sizeof(int) * ng);
        Cand* cand;
        int nc = neighbours(&M, bsel, &cand), taken = 0, first = r->n;
        for (int i = 0; i < nc && taken < opt->candidates; i++) {
            apply(c, x, bsel, ng, &cand[i]);
            if (find_try(r, x, ng) >= 0) continue;
            add_try(r, &M, x, round, TRY_NEIGHBOUR, cand[i].value, measure, ctx);
            taken++;
            if (cand[i].g[1] < 0) continue;
            for (int m = 0; m < 2; m++) { // each move alone, for the pair's interaction
                Cand one = {{cand[i].g[m], -1}, {cand[i].k[m], 0}, 0, 0};
                apply(c, x, bsel, ng, &one);
                if (find_try(r, x, ng) < 0)
                    add_try(r, &M, x, round, TRY_MOVE, models_value(&M, x), measure, ctx);
            }
        }
        free(cand);
        if (r->n == first) {
            r->stop = "no unmeasured neighbour within the budget";
            free(bsel);
            break;
        }
        for (int d = 0; d < (r->nd ? r->nd : 1); d++) fit_terms(&M.f[d], r, r->nd ? d : -1);
        if (resolve(&M, c, s->budget, x) == 0 && find_try(r, x, ng) < 0)
            add_try(r, &M, x, round, TRY_SOLVED, models_value(&M, x), measure, ctx);
        for (int i = 0; i < r->n; i++)
            if (r->tries[i].in_budget && r->tries[i].obj < r->tries[base].obj) base = i;
        free(bsel);
        if (!(r->tries[base].obj < base_obj)) {
            r->stop = "the measured KL stopped falling";
            break;
        }
    }
    r->best = base;
    r->nterms = M.f[0].nt; // with domains: the first domain's terms (every domain fits the same pairs)
    r->terms = M.f[0].terms;
    for (int d = 0; d < (r->nd ? r->nd : 1); d++) {
        free(M.f[d].lin), free(M.f[d].delta), free(M.f[d].misfit);
        if (d) free(M.f[d].terms);
    }
    free(M.f);
    free(x);
}

void refine_free(Refine* r) {
    for (int i = 0; i < r->n; i++) free(r->tries[i].sel);
    free(r->tries);
    free(r->terms);
    memset(r, 0, sizeof(*r));
}

static const char* kind_name(TryKind k) {
    static const char* n[] = {"plain", "neighbour", "move", "solved"};
    return n[k];
}

static const char* choice_of(const ScoreTable* t, int k) { return k < 0 ? "bf16" : t->fmts[k].name; }

static const char* short_name(const char* g) { return strncmp(g, "model.", 6) ? g : g + 6; }

void refine_print(const Refine* r, const SearchCtx* c) {
    const ScoreTable* t = c->t;
    const RefineTry* p = &r->tries[0];
    printf("\nrefine: %d held-out window(s), %d round(s), %d recipe(s) measured in %.2f s (%.3f s each, %s "
           "engine%s); stopped: %s\n",
           r->windows, r->rounds, r->n, r->seconds, r->n ? r->seconds / r->n : 0.0,
           r->device && !strcmp(r->device, "cuda") ? "CUDA" : "CPU", r->streamed ? ", streamed layers" : "",
           r->stop);
    printf("%3s %5s %-9s %7s %15s %13s %13s %11s  %s\n", "#", "round", "kind", "bits", "predicted score",
           "predicted KL", "measured KL", "NLL change", "choices that differ from the plain recipe");
    for (int i = 0; i < r->n; i++) {
        const RefineTry* x = &r->tries[i];
        char pk[32];
        if (isnan(x->pred_kl))
            snprintf(pk, sizeof(pk), "-");
        else
            snprintf(pk, sizeof(pk), "%.6g", x->pred_kl);
        printf("%3d %5d %-9s %7.4f %15.6g %13s %13.6g %+11.6f  ", i, x->round, kind_name(x->kind), x->bits,
               x->score, pk, x->v.kl, x->v.nll_q - x->v.nll_ref);
        int nd = 0;
        for (int g = 0; g < t->ng; g++)
            if (x->sel[g] != p->sel[g])
                printf("%s%s %s->%s", nd++ ? ", " : "", short_name(t->gname[g]), choice_of(t, p->sel[g]),
                       choice_of(t, x->sel[g]));
        printf("%s", nd ? "" : "-");
        for (int d = 0; d < r->nd; d++)
            printf("%s%s %.6g", d ? ", " : " [KL per window: ", t->dname[d], x->dkl[d]);
        printf("%s%s%s\n", r->nd ? "]" : "", x->in_budget ? "" : " (over budget: measured for the fit)",
               i == r->best ? "  <- best" : "");
    }
    const RefineTry* b = &r->tries[r->best];
    printf(
        "refine: measured KL of the plain recipe %.6g, of the refined recipe (#%d) %.6g (%+.3f%%); %d pairwise "
        "interaction term(s) fitted\n",
        p->v.kl, r->best, b->v.kl, p->v.kl > 0 ? 100 * (b->v.kl - p->v.kl) / p->v.kl : 0.0, r->nterms);
    if (r->nd)
        printf("refine: objective max: the worst domain's measured KL per held-out window, plain %.6g, refined "
               "%.6g "
               "(%+.3f%%); each domain's model fitted on its own windows\n",
               p->obj, b->obj, p->obj > 0 ? 100 * (b->obj - p->obj) / p->obj : 0.0);
}

json_t* refine_json(const Refine* r, const SearchCtx* c) {
    const ScoreTable* t = c->t;
    const RefineTry* p = &r->tries[0];
    json_t* o = json_pack("{s:i,s:i,s:f,s:f,s:s,s:i,s:f,s:f,s:s}", "windows", r->windows, "rounds", r->rounds,
                          "alpha", r->alpha, "seconds", r->seconds, "stopped", r->stop, "best", r->best,
                          "plain_measured_kl", p->v.kl, "refined_measured_kl", r->tries[r->best].v.kl, "device",
                          r->device ? r->device : "cpu");
    json_object_set_new(o, "streamed", json_boolean(r->streamed));
    json_t* tries = json_array();
    for (int i = 0; i < r->n; i++) {
        const RefineTry* x = &r->tries[i];
        json_t* changes = json_object();
        for (int g = 0; g < t->ng; g++)
            if (x->sel[g] != p->sel[g])
                json_object_set_new(changes, t->gname[g], json_string(choice_of(t, x->sel[g])));
        json_t* j =
            json_pack("{s:i,s:s,s:b,s:f,s:f,s:o,s:f,s:f,s:o}", "round", x->round, "kind", kind_name(x->kind),
                      "in_budget", x->in_budget, "effective_bits", x->bits, "predicted_score", x->score,
                      "predicted_kl", isnan(x->pred_kl) ? json_null() : json_real(x->pred_kl), "measured_kl",
                      x->v.kl, "measured_nll_delta", x->v.nll_q - x->v.nll_ref, "changes", changes);
        json_array_append_new(tries, j);
    }
    json_object_set_new(o, "tries", tries);
    if (r->nd) { // --objective max: each domain measured apart
        json_object_set_new(o, "objective", json_string("max"));
        json_object_set_new(o, "plain_measured_objective", json_real(p->obj));
        json_object_set_new(o, "refined_measured_objective", json_real(r->tries[r->best].obj));
        for (int i = 0; i < r->n; i++) {
            json_t* dk = json_object();
            for (int d = 0; d < r->nd; d++) json_object_set_new(dk, t->dname[d], json_real(r->tries[i].dkl[d]));
            json_t* x = json_array_get(tries, i);
            json_object_set_new(x, "measured_kl_per_window", dk);
            json_object_set_new(x, "measured_objective", json_real(r->tries[i].obj));
        }
    }
    json_t* terms = json_array();
    for (int i = 0; i < r->nterms; i++) {
        const QuadTerm* q = &r->terms[i];
        json_array_append_new(terms,
                              json_pack("{s:[s,s],s:[s,s],s:f}", "groups", t->gname[q->g], t->gname[q->h],
                                        "choices", choice_of(t, q->k), choice_of(t, q->l), "kl", q->coef));
    }
    json_object_set_new(o, "interactions", terms);
    return o;
}

static void attr_num(hid_t g, const char* name, hid_t type, const void* v, const char* path) {
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(g, name, type, sp, H5P_DEFAULT, H5P_DEFAULT);
    if (sp < 0 || a < 0 || H5Awrite(a, type, v) < 0 || H5Aclose(a) < 0)
        fail_other("%s: cannot write attribute /refine@%s (disk full?)", path, name);
    H5Sclose(sp);
}

void refine_write_h5(long file, const Refine* r, const SearchCtx* c, const char* path) {
    const ScoreTable* t = c->t;
    hid_t g = H5Gcreate2((hid_t)file, "refine", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (g < 0) fail_other("%s: cannot create group /refine", path);
    h5_attr_str(g, "description",
                "search --refine: every recipe measured on the held-out windows (attribute windows), row 0 the "
                "plain recipe, best the row of the refined one (the best measured within the budget); alpha "
                "converts the additive prediction into held-out nats; stopped says why it ended");
    attr_num(g, "windows", H5T_NATIVE_INT, &r->windows, path);
    attr_num(g, "rounds", H5T_NATIVE_INT, &r->rounds, path);
    attr_num(g, "best", H5T_NATIVE_INT, &r->best, path);
    attr_num(g, "alpha", H5T_NATIVE_DOUBLE, &r->alpha, path);
    h5_attr_str(g, "stopped", r->stop);
    h5_attr_str(g, "device", r->device ? r->device : "cpu");
    hsize_t n = (hsize_t)r->n, d2[2] = {n, (hsize_t)t->ng};
    int* sel = xmalloc(sizeof(int) * r->n * t->ng);
    int* iv = xmalloc(sizeof(int) * r->n);
    uint8_t* u = xmalloc(r->n);
    double* v = xmalloc(sizeof(double) * r->n);
    for (int i = 0; i < r->n; i++) memcpy(sel + (size_t)i * t->ng, r->tries[i].sel, sizeof(int) * t->ng);
    h5_write(g, "selected", H5T_NATIVE_INT, 2, d2, sel);
    h5_describe(g, "selected", NULL,
                "[recipes, groups]: each measured recipe's choice per group, as /search/selected");
    for (int i = 0; i < r->n; i++) iv[i] = r->tries[i].round;
    h5_write(g, "round", H5T_NATIVE_INT, 1, &n, iv);
    h5_describe(g, "round", NULL, "the round that measured each recipe (0: the plain recipe)");
    for (int i = 0; i < r->n; i++) u[i] = (uint8_t)r->tries[i].kind;
    h5_write(g, "kind", H5T_NATIVE_UINT8, 1, &n, u);
    h5_describe(g, "kind", NULL,
                "0 the plain recipe, 1 a neighbour (one or two groups swapped within the budget), 2 one move "
                "of a neighbour alone (for the fit), 3 the re-solve with the fitted terms");
    for (int i = 0; i < r->n; i++) u[i] = (uint8_t)r->tries[i].in_budget;
    h5_write(g, "in_budget", H5T_NATIVE_UINT8, 1, &n, u);
    h5_describe(g, "in_budget", NULL, "1: within the budget (only these can be the refined recipe)");
    struct {
        const char* name;
        const char* units;
        const char* what;
        size_t off;
    } cols[] = {
        {"effective_bits", "bits per weight", "each recipe's effective bits, as /search",
         offsetof(RefineTry, bits)},
        {"predicted_score", NULL, "each recipe's additive prediction (the objective's units, as /search)",
         offsetof(RefineTry, score)},
        {"predicted_kl", "nats",
         "the fitted model's KL on the held-out windows before the recipe was measured (NaN: none yet)",
         offsetof(RefineTry, pred_kl)},
        {"measured_kl", "nats", "KL to the unquantized model on the held-out windows, summed",
         offsetof(RefineTry, v) + offsetof(VerifyResult, kl)},
    };
    for (size_t k = 0; k < sizeof(cols) / sizeof(cols[0]); k++) {
        for (int i = 0; i < r->n; i++) v[i] = *(const double*)((const char*)&r->tries[i] + cols[k].off);
        h5_write(g, cols[k].name, H5T_NATIVE_DOUBLE, 1, &n, v);
        h5_describe(g, cols[k].name, cols[k].units ? cols[k].units : table_score_units(t), cols[k].what);
    }
    for (int i = 0; i < r->n; i++) v[i] = r->tries[i].v.nll_q - r->tries[i].v.nll_ref;
    h5_write(g, "measured_nll_delta", H5T_NATIVE_DOUBLE, 1, &n, v);
    h5_describe(g, "measured_nll_delta", "nats per token",
                "mean next-token cross-entropy change on the held-out windows");
    if (r->nd) {
        hsize_t dd[2] = {n, (hsize_t)r->nd};
        double* dk = xmalloc(sizeof(double) * r->n * r->nd);
        for (int i = 0; i < r->n; i++) memcpy(dk + (size_t)i * r->nd, r->tries[i].dkl, sizeof(double) * r->nd);
        h5_write(g, "measured_domain_kl", H5T_NATIVE_DOUBLE, 2, dd, dk);
        h5_describe(
            g, "measured_domain_kl", "nats per window",
            "[recipes, domains] (--objective max): KL on each domain's held-out windows, per window; the "
            "largest is the objective");
        free(dk);
    }
    free(sel), free(iv), free(u), free(v);
    if (H5Gclose(g) < 0) fail_other("%s: cannot write group /refine (disk full?)", path);
}
