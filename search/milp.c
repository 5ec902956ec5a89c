#include "milp.h"

#include <glpk.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../engine/util.h"

static int domain_index(const ScoreTable* t, const char* name, size_t len) {
    for (int d = 0; d < t->nd; d++)
        if (strlen(t->dname[d]) == len && !strncmp(t->dname[d], name, len)) return d;
    return -1;
}

void objective_parse(Objective* o, const char* s, const ScoreTable* t) {
    memset(o, 0, sizeof(*o));
    if (!s) return;
    if (!t->nd)
        fail_input(
            "search: --objective %s needs a scores file with calibration domains (score --data NAME=FILE, "
            "README §8 /domains)",
            s);
    if (!strcmp(s, "max")) {
        o->kind = OBJ_MAX;
        return;
    }
    if (!strcmp(s, "mean")) {
        o->kind = OBJ_MEAN;
        for (int d = 0; d < t->nd; d++) o->w[d] = 1.0 / t->nd;
        return;
    }
    if (strncmp(s, "weights:", 8))
        fail_input("search: --objective '%s' must be mean, max or weights:NAME=W,... (NAME a domain)", s);
    o->kind = OBJ_WEIGHTS;
    int seen[MAX_DOMAINS] = {0}, any = 0;
    for (const char* p = s + 8; *p;) {
        const char* end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char* eq = memchr(p, '=', len);
        if (!eq) fail_input("search: --objective '%s': '%.*s' is not NAME=W", s, (int)len, p);
        int d = domain_index(t, p, (size_t)(eq - p));
        if (d < 0) fail_input("search: --objective '%s': no domain '%.*s' in the scores", s, (int)(eq - p), p);
        if (seen[d]++) fail_input("search: --objective '%s': domain %s given twice", s, t->dname[d]);
        char num[64], *e;
        snprintf(num, sizeof(num), "%.*s", (int)(len - (size_t)(eq + 1 - p)), eq + 1);
        double w = strtod(num, &e);
        if (!num[0] || *e || !isfinite(w) || w < 0)
            fail_input("search: --objective '%s': weight '%s' of %s must be a finite number >= 0", s, num,
                       t->dname[d]);
        o->w[d] = w;
        any |= w > 0;
        p += len + (end != NULL);
        if (end && !*p) fail_input("search: --objective '%s' ends with ','", s);
    }
    if (!any) fail_input("search: --objective '%s': some weight must be above 0", s);
}

const char* objective_name(const Objective* o) {
    static const char* n[] = {"sum", "mean", "weights", "max"};
    return n[o->kind];
}

void objective_losses(const ScoreTable* t, const int* sel, double* loss) {
    for (int d = 0; d < t->nd; d++) {
        const double* sc = t->dscore + (size_t)d * t->nf * t->ng;
        double l = 0;
        for (int g = 0; g < t->ng; g++)
            if (!t->disabled[g] && sel[g] >= 0) l += sc[(size_t)sel[g] * t->ng + g];
        loss[d] = l / t->dsamples[d];
    }
}

// The weighted sum's knapsack: the table with scores Σ_d w_d score_d / windows_d.
static void solve_weighted(const SearchCtx* c, const Objective* o, double budget, Solution* out) {
    const ScoreTable* t = c->t;
    size_t n = (size_t)t->nf * t->ng;
    ScoreTable tb = *t;
    tb.score = xcalloc(n, sizeof(double));
    for (int d = 0; d < t->nd; d++)
        for (size_t k = 0; k < n; k++) tb.score[k] += o->w[d] * t->dscore[d * n + k] / t->dsamples[d];
    SearchCtx cb = *c;
    cb.t = &tb;
    search_solve(&cb, &budget, 1, out);
    free(tb.score);
}

// Solves lp exactly (a proven optimum, no gap). col[g nc + k] is group g's column for choice k - 1 (k >= 1;
// 0 where the choice is not offered); sel[g] gets the chosen format, -1 for bf16, *obj the optimum.
// Returns 0, or -1 when the programme has no feasible solution; exits on a GLPK failure.
static int milp_run(glp_prob* lp, const int* col, int ng, int nc, int* sel, double* obj, const char* what) {
    glp_iocp parm;
    glp_init_iocp(&parm);
    parm.presolve = GLP_ON;
    parm.msg_lev = GLP_MSG_OFF;
    parm.mip_gap = 0.0;
    int rc = glp_intopt(lp, &parm), st = glp_mip_status(lp);
    if (rc == 0 && st == GLP_OPT) {
        *obj = glp_mip_obj_val(lp);
        for (int g = 0; g < ng; g++) {
            sel[g] = -1;
            for (int k = 1; k < nc; k++)
                if (col[g * nc + k] && glp_mip_col_val(lp, col[g * nc + k]) > 0.5) sel[g] = k - 1;
        }
        return 0;
    }
    if (rc != 0 && rc != GLP_ENOPFS && rc != GLP_ENODFS)
        fail_other("search: GLPK failed on %s (glp_intopt %d)", what, rc);
    return -1;
}

// --kv-uniform (README §7): every enabled KV-cache group takes one choice. The first enabled KV-cache group's
// columns x[g0][k] are the shared choice y_k (exactly one of them is 1: g0's own choice row), and every other
// enabled KV-cache group's x[g][k] = y_k, one equality row per choice k. A choice offered to g0 but not to g (a
// misfit, or --target's deny table) is fixed off by its row (x[g0][k] = 0), so the shared choice is one every
// KV-cache group may take. Returns the rows it would add (rows NULL: only counts), filling ia/ja/ar from *nnz.
static int kv_tie_rows(const SearchCtx* c, const int* col, int nc, glp_prob* lp, int r0, int* nnz, int* ia,
                       int* ja, double* ar) {
    const ScoreTable* t = c->t;
    if (!c->kv_uniform) return 0;
    int g0 = -1, r = r0;
    for (int g = 0; g < t->ng; g++) {
        if (t->disabled[g] || !table_kv(t, g)) continue;
        if (g0 < 0) {
            g0 = g;
            continue;
        }
        for (int k = 0; k < nc; k++) {
            int a = col[g * nc + k], b = col[g0 * nc + k];
            if (!a && !b) continue;
            if (lp) {
                glp_set_row_bnds(lp, ++r, GLP_FX, 0.0, 0.0);
                if (a) ++*nnz, ia[*nnz] = r, ja[*nnz] = a, ar[*nnz] = 1.0;
                if (b) ++*nnz, ia[*nnz] = r, ja[*nnz] = b, ar[*nnz] = -1.0;
            } else {
                r++;
            }
        }
    }
    return r - r0;
}

int milp_solve_max(const SearchCtx* c, double budget, int* sel, double* z) {
    const ScoreTable* t = c->t;
    int ng = t->ng, nf = t->nf, nd = t->nd;
    uint8_t* misfit = search_misfit_table(c);
    int64_t cap = search_cap(c, budget);
    // columns: 1 = z, then x[g][k] for enabled g, k = 0 (bf16) .. nf, misfits left out
    int* col = xmalloc(sizeof(int) * ng * (nf + 1));
    int ncol = 1;
    for (int g = 0; g < ng; g++)
        for (int k = 0; k <= nf; k++) {
            int ok = !t->disabled[g] && (k == 0 || !misfit[(size_t)(k - 1) * ng + g]);
            col[g * (nf + 1) + k] = ok ? ++ncol : 0;
        }
    int ngr = 0;
    for (int g = 0; g < ng; g++) ngr += !t->disabled[g];
    glp_prob* lp = glp_create_prob();
    glp_set_obj_dir(lp, GLP_MIN);
    glp_add_cols(lp, ncol);
    glp_set_col_bnds(lp, 1, GLP_LO, 0.0, 0.0);
    glp_set_obj_coef(lp, 1, 1.0);
    for (int j = 2; j <= ncol; j++) glp_set_col_kind(lp, j, GLP_BV);
    // rows: one choice per enabled group, the budget, each domain's loss <= z, --kv-uniform's ties
    int ntie = kv_tie_rows(c, col, nf + 1, NULL, 0, NULL, NULL, NULL, NULL);
    glp_add_rows(lp, ngr + 1 + nd + ntie);
    int nnz_max = ncol * (nd + 2) + 2 * ntie + 1, nnz = 0;
    int *ia = xmalloc(sizeof(int) * nnz_max), *ja = xmalloc(sizeof(int) * nnz_max);
    double* ar = xmalloc(sizeof(double) * nnz_max);
    int r = 0;
    for (int g = 0; g < ng; g++) {
        if (t->disabled[g]) continue;
        glp_set_row_bnds(lp, ++r, GLP_FX, 1.0, 1.0);
        for (int k = 0; k <= nf; k++)
            if (col[g * (nf + 1) + k]) ++nnz, ia[nnz] = r, ja[nnz] = col[g * (nf + 1) + k], ar[nnz] = 1.0;
    }
    glp_set_row_bnds(lp, ++r, GLP_UP, 0.0, (double)cap);
    for (int g = 0; g < ng; g++)
        for (int k = 0; k <= nf; k++)
            if (col[g * (nf + 1) + k])
                ++nnz, ia[nnz] = r, ja[nnz] = col[g * (nf + 1) + k],
                       ar[nnz] = (double)search_choice_cost(c, g, k - 1);
    for (int d = 0; d < nd; d++) {
        glp_set_row_bnds(lp, ++r, GLP_UP, 0.0, 0.0);
        ++nnz, ia[nnz] = r, ja[nnz] = 1, ar[nnz] = -1.0;
        for (int g = 0; g < ng; g++)
            for (int k = 1; k <= nf; k++) // bf16 scores 0: no entry
                if (col[g * (nf + 1) + k]) {
                    double v = t->dscore[((size_t)d * nf + k - 1) * ng + g] / t->dsamples[d];
                    if (v != 0) ++nnz, ia[nnz] = r, ja[nnz] = col[g * (nf + 1) + k], ar[nnz] = v;
                }
    }
    r += kv_tie_rows(c, col, nf + 1, lp, r, &nnz, ia, ja, ar);
    glp_load_matrix(lp, nnz, ia, ja, ar);
    int res = milp_run(lp, col, ng, nf + 1, sel, z, "the max objective's programme");
    glp_delete_prob(lp);
    free(ia), free(ja), free(ar), free(col), free(misfit);
    return res;
}

void objective_solve(const SearchCtx* c, const Objective* o, double budget, Solution* out) {
    const ScoreTable* t = c->t;
    if (o->kind == OBJ_SUM) {
        search_solve(c, &budget, 1, out);
        return;
    }
    if (o->kind != OBJ_MAX || t->nd == 1) { // one domain's max is its own knapsack
        Objective one = *o;
        if (o->kind == OBJ_MAX) one.w[0] = 1.0;
        solve_weighted(c, &one, budget, out);
        return;
    }
    search_solve(c, &budget, 1, out); // checks the budget's feasibility, names the smallest one
    double z;
    if (milp_solve_max(c, budget, out->sel, &z) != 0)
        fail_input("--budget %.4g is infeasible under --objective max", budget);
    out->predicted = z;
    search_measure(c, out);
}

// The quadratic programme of milp_solve_quadratic (nd 0) or milp_solve_quadratic_max (nd domains: column z
// last, one row per domain d: Σ lin_d x + Σ coefs[d][i] w_i - z <= -off[d]; minimise z).
static int quad_solve(const SearchCtx* c, double budget, int nd, const double* lin, const double* off,
                      const QuadTerm* terms, const double* coefs, int nt, int* sel, double* value) {
    const ScoreTable* t = c->t;
    int ng = t->ng, nf = t->nf, nc = nf + 1;
    uint8_t* misfit = search_misfit_table(c);
    int64_t cap = search_cap(c, budget);
    // columns: x[g][k] for enabled g, k = 0 (bf16) .. nf, misfits left out; then one w per usable term; then z
    int* col = xmalloc(sizeof(int) * ng * nc);
    int ncol = 0, ngr = 0;
    for (int g = 0; g < ng; g++) {
        ngr += !t->disabled[g];
        for (int k = 0; k < nc; k++) {
            int ok = !t->disabled[g] && (k == 0 || !misfit[(size_t)(k - 1) * ng + g]);
            col[g * nc + k] = ok ? ++ncol : 0;
        }
    }
    int nx = ncol, nw = 0;
    int* tcol = xmalloc(sizeof(int) * (nt ? nt : 1)); // each term's w column, 0 when a factor is not offered
    for (int i = 0; i < nt; i++) {
        int a = col[terms[i].g * nc + terms[i].k + 1], b = col[terms[i].h * nc + terms[i].l + 1];
        tcol[i] = a && b && terms[i].g != terms[i].h ? nx + ++nw : 0;
    }
    int zc = nd ? nx + nw + 1 : 0;
    glp_prob* lp = glp_create_prob();
    glp_set_obj_dir(lp, GLP_MIN);
    glp_add_cols(lp, nx + nw + (nd > 0));
    for (int j = 1; j <= nx; j++) glp_set_col_kind(lp, j, GLP_BV);
    if (nd) { // the largest domain's fitted loss: free (a fitted value may fall below 0)
        glp_set_col_bnds(lp, zc, GLP_FR, 0.0, 0.0);
        glp_set_obj_coef(lp, zc, 1.0);
    } else {
        for (int g = 0; g < ng; g++)
            for (int k = 0; k < nc; k++)
                if (col[g * nc + k]) glp_set_obj_coef(lp, col[g * nc + k], lin[(size_t)g * nc + k]);
    }
    for (int i = 0; i < nt; i++)
        if (tcol[i]) {
            glp_set_col_bnds(lp, tcol[i], GLP_DB, 0.0, 1.0);
            if (!nd) glp_set_obj_coef(lp, tcol[i], coefs[i]);
        }
    // rows: one choice per enabled group, the budget, three per product (exact for binary factors whatever
    // the sign of the product's coefficients), one per domain, --kv-uniform's ties
    int ntie = kv_tie_rows(c, col, nc, NULL, 0, NULL, NULL, NULL, NULL);
    glp_add_rows(lp, ngr + 1 + 3 * nw + nd + ntie);
    int nnz_max = 2 * nx + 7 * nw + 1 + nd * (nx + nw + 1) + 2 * ntie, nnz = 0;
    int *ia = xmalloc(sizeof(int) * nnz_max), *ja = xmalloc(sizeof(int) * nnz_max);
    double* ar = xmalloc(sizeof(double) * nnz_max);
    int r = 0;
#define NZ(row, column, v) (++nnz, ia[nnz] = (row), ja[nnz] = (column), ar[nnz] = (v))
    for (int g = 0; g < ng; g++) {
        if (t->disabled[g]) continue;
        glp_set_row_bnds(lp, ++r, GLP_FX, 1.0, 1.0);
        for (int k = 0; k < nc; k++)
            if (col[g * nc + k]) NZ(r, col[g * nc + k], 1.0);
    }
    glp_set_row_bnds(lp, ++r, GLP_UP, 0.0, (double)cap);
    for (int g = 0; g < ng; g++)
        for (int k = 0; k < nc; k++)
            if (col[g * nc + k]) NZ(r, col[g * nc + k], (double)search_choice_cost(c, g, k - 1));
    for (int i = 0; i < nt; i++) {
        if (!tcol[i]) continue;
        int a = col[terms[i].g * nc + terms[i].k + 1], b = col[terms[i].h * nc + terms[i].l + 1];
        glp_set_row_bnds(lp, ++r, GLP_LO, -1.0, 0.0); // w - a - b >= -1
        NZ(r, tcol[i], 1.0), NZ(r, a, -1.0), NZ(r, b, -1.0);
        glp_set_row_bnds(lp, ++r, GLP_UP, 0.0, 0.0); // w - a <= 0
        NZ(r, tcol[i], 1.0), NZ(r, a, -1.0);
        glp_set_row_bnds(lp, ++r, GLP_UP, 0.0, 0.0); // w - b <= 0
        NZ(r, tcol[i], 1.0), NZ(r, b, -1.0);
    }
    for (int d = 0; d < nd; d++) { // domain d's fitted loss <= z
        glp_set_row_bnds(lp, ++r, GLP_UP, 0.0, -off[d]);
        const double* ld = lin + (size_t)d * ng * nc;
        for (int g = 0; g < ng; g++)
            for (int k = 0; k < nc; k++)
                if (col[g * nc + k] && ld[(size_t)g * nc + k] != 0)
                    NZ(r, col[g * nc + k], ld[(size_t)g * nc + k]);
        for (int i = 0; i < nt; i++)
            if (tcol[i] && coefs[(size_t)d * nt + i] != 0) NZ(r, tcol[i], coefs[(size_t)d * nt + i]);
        NZ(r, zc, -1.0);
    }
    r += kv_tie_rows(c, col, nc, lp, r, &nnz, ia, ja, ar);
#undef NZ
    glp_load_matrix(lp, nnz, ia, ja, ar);
    int res = milp_run(lp, col, ng, nc, sel, value,
                       nd ? "the refinement's max programme" : "the refinement's programme");
    glp_delete_prob(lp);
    free(ia), free(ja), free(ar), free(col), free(tcol), free(misfit);
    return res;
}

int milp_solve_quadratic(const SearchCtx* c, double budget, const double* lin, const QuadTerm* terms, int nt,
                         int* sel, double* value) {
    double* coefs = xmalloc(sizeof(double) * (nt ? nt : 1));
    for (int i = 0; i < nt; i++) coefs[i] = terms[i].coef;
    int res = quad_solve(c, budget, 0, lin, NULL, terms, coefs, nt, sel, value);
    free(coefs);
    return res;
}

int milp_solve_quadratic_max(const SearchCtx* c, double budget, int nd, const double* lin, const double* off,
                             const QuadTerm* terms, const double* coefs, int nt, int* sel, double* z) {
    return quad_solve(c, budget, nd, lin, off, terms, coefs, nt, sel, z);
}
