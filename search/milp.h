// Search objectives over calibration domains (README §7): each domain's predicted loss is its summed
// score over its windows divided by its window count; `mean` and `weights:` minimise a weighted sum of
// them (the plain exact knapsack on combined scores), `max` the largest of them, a mixed-integer programme
// solved by GLPK. A scores file without domains, or no --objective, searches the plain summed score.
#pragma once
#include "recipe.h"

typedef enum { OBJ_SUM, OBJ_MEAN, OBJ_WEIGHTS, OBJ_MAX } ObjKind;

typedef struct {
    ObjKind kind;
    double w[MAX_DOMAINS]; // OBJ_MEAN, OBJ_WEIGHTS: each domain's weight
} Objective;

// --objective mean|max|weights:NAME=W,... against table t (NULL: OBJ_SUM); exits 2 on an unknown domain,
// a bad weight, or domains missing from t.
void objective_parse(Objective* o, const char* s, const ScoreTable* t);
const char* objective_name(const Objective* o);
// Solves one budget under the objective into out (as search_solve); out->predicted is the objective's value.
void objective_solve(const SearchCtx* c, const Objective* o, double budget, Solution* out);
// Each domain's predicted loss (t->nd values: summed score of the chosen formats / the domain's windows).
void objective_losses(const ScoreTable* t, const int* sel, double* loss);
// The max objective's MILP alone (tests): min z s.t. one choice per enabled group, cost <= cap, and each
// domain's loss <= z. Returns 0 and sel (ng, -1 bf16), or -1 when infeasible.
int milp_solve_max(const SearchCtx* c, double budget, int* sel, double* z);

// A pairwise term of a quadratic objective: coef × x[g][k] × x[h][l] (choices k, l: -1 bf16, else a format).
typedef struct {
    int g, k, h, l;
    double coef;
} QuadTerm;

// The budgeted choice with pairwise terms (search --refine, README §7): minimise Σ lin[g][k + 1] x[g][k] +
// Σ terms' coef x[g][k] x[h][l], one choice per enabled group, cost <= the budget's capacity; lin is (ng, nf +
// 1), column 0 bf16. Each product is linearised (w >= x + y - 1, w <= x, w <= y, 0 <= w <= 1) and the programme
// solved to proven optimality by GLPK. Returns 0 with sel (ng, -1 bf16) and the objective's value, -1 when
// infeasible.
int milp_solve_quadratic(const SearchCtx* c, double budget, const double* lin, const QuadTerm* terms, int nt,
                         int* sel, double* value);
// The same under --objective max's measured models (README §7): nd domains, domain d's fitted loss
// Σ lin[d][g][k + 1] x[g][k] + Σ coefs[d][i] (product of terms[i]) + off[d]; minimises z, the largest of them
// (one row per domain: loss_d <= z). The terms' structure is shared, their coefficients per domain (nd, nt).
// Returns 0 with sel and z, -1 when infeasible.
int milp_solve_quadratic_max(const SearchCtx* c, double budget, int nd, const double* lin, const double* off,
                             const QuadTerm* terms, const double* coefs, int nt, int* sel, double* z);
