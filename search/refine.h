// Measured refinement of a recipe (search --refine, README §7): the additive model (a recipe's loss is the
// sum of its groups' scores) ignores how quantized layers interact. Starting from the exact solution, measure
// the joint KL of the recipe and of its neighbours (one or two groups' choices swapped within the budget) on
// held-out windows, fit per-move corrections and pairwise interaction terms to those measurements, re-solve
// the budgeted choice with them exactly (a quadratic knapsack, GLPK: milp_solve_quadratic), measure that
// recipe, and go on from the best measured recipe while the measured KL falls. The result is the best
// measured recipe within the budget, so never worse (measured) than the plain one.
#pragma once
#include <jansson.h>

#include "milp.h"
#include "recipe.h"

// Measures a recipe (sel per group, -1 bf16) on the held-out windows: joint KL (nats, summed) and NLL, and with
// domains (RefineOpts.nd) each domain's KL summed over its own held-out windows into dkl (nd).
typedef void (*RefineMeasure)(void* ctx, const int* sel, VerifyResult* v, double* dkl);

typedef struct {
    int rounds;     // at most this many rounds after the plain recipe's measurement
    int candidates; // neighbours measured per round (each with its moves alone, for the fit)
    int windows;    // held-out windows (reported; the measure function holds them)
    int seq_len;    // their tokens (kl scores convert per token: 0 as the scores' windows)
    // --objective max: the held-out windows of each of the scores' nd domains (dwindows[d]), measured apart;
    // the fitted model is one per domain, and the objective the largest domain's measured KL per held-out
    // window
    int nd;
    int dwindows[MAX_DOMAINS];
} RefineOpts;

typedef enum { TRY_PLAIN, TRY_NEIGHBOUR, TRY_MOVE, TRY_SOLVED } TryKind;

typedef struct {
    int* sel;       // (ng) the recipe
    int round;      // 0: the plain recipe; the round that measured it
    TryKind kind;   // plain, a neighbour (1-2 groups swapped), one move of a neighbour alone, the re-solve's
    int in_budget;  // within the budget (TRY_MOVE may not be: measured for the fit only)
    double bits;    // effective bits (the search's convention, cost and scope)
    double score;   // the additive prediction, in the objective's units (as Solution.predicted)
    double pred_kl; // the fitted model's KL before this recipe was measured (nats, held-out); NAN: none yet
    VerifyResult v; // measured
    double dkl[MAX_DOMAINS]; // with domains: each domain's measured KL per held-out window
    double obj;              // the measured objective: v.kl, or with domains the largest dkl
} RefineTry;

typedef struct Refine {
    int windows, rounds;
    int nd;                    // domains measured apart (--objective max), else 0
    int dwindows[MAX_DOMAINS]; // their held-out windows
    int n, cap;
    RefineTry* tries;
    int best;     // the best measured recipe within the budget (tries[0] is the plain one)
    double alpha; // nats on the held-out windows per unit of the additive prediction (kl: the tokens' ratio)
    int nterms;   // the fitted pairwise interactions (nats), at the end
    QuadTerm* terms;
    double seconds;     // measuring
    const char* stop;   // why it stopped
    const char* device; // where the measurements ran: "cpu" or "cuda" (the caller sets it)
    int streamed;       // on the CUDA engine with its layers streamed from host memory (the caller sets it)
} Refine;

// Refines solution s (the plain recipe) of c at s->budget. o: the objective whose additive scores are the
// model's linear part (OBJ_SUM, OBJ_MEAN or OBJ_WEIGHTS); OBJ_MAX with opt->nd domains measured apart: each
// domain's measured KL per window fitted on its own, the largest minimised (an epigraph variable).
void refine_run(Refine* r, const SearchCtx* c, const Objective* o, const Solution* s, RefineMeasure measure,
                void* ctx, const RefineOpts* opt);
void refine_free(Refine* r);
void refine_print(const Refine* r, const SearchCtx* c);
json_t* refine_json(const Refine* r, const SearchCtx* c);
// /refine in an open HDF5 file (README §8).
void refine_write_h5(long file, const Refine* r, const SearchCtx* c, const char* path);
