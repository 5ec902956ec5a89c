// Solving the budgeted search over a ScoreTable and writing the recipe:
// JSON, llm-compressor YAML, ModelOpt quant_cfg JSON and HDF5 (SPEC §7-§8).
#pragma once
#include "../scoring/format.h"
#include "../scoring/table.h"
#include "../engine/model.h"
#include "verify.h"

typedef enum { SCOPE_CANDIDATES, SCOPE_ALL } Scope;

typedef struct {
    double budget;
    int* sel;              // (ng) -1 bf16, else format index; disabled groups -1
    double predicted;      // sum of the chosen groups' scores
    double bits[2];        // achieved effective bits, [SCOPE_CANDIDATES], [SCOPE_ALL]
    double bits_scales[2]; // the same with per-channel scale overhead (16 / in_features per weight)
    int verified;
    VerifyResult v;
} Solution;

typedef struct {
    const ScoreTable* t;
    Scope scope;
    long total[2]; // params counted by each scope
    long fixed[2]; // cost of disabled groups at 16 bits, per scope
} SearchCtx;

void search_init(SearchCtx* c, const ScoreTable* t, Scope scope);
// Smallest budget that any choice satisfies, in the context's scope.
double search_min_budget(const SearchCtx* c);
// Solves each budget exactly; exits 2 on an infeasible one (naming the smallest feasible budget).
void search_solve(const SearchCtx* c, const double* budgets, int nb, Solution* out);
void solution_free(Solution* s);
// Reads a recipe JSON written by recipe_write_json: fills fmts (returns their
// count) and choice[i] per linear of m (-1 keeps bf16). Exits 2 on bad input.
int recipe_read(const char* path, const Model* m, Format* fmts, int* choice);

void recipe_write_json(const char* path, const SearchCtx* c, const Solution* s, const Format* fmts);
void export_llmcompressor(const char* path, const SearchCtx* c, const Solution* s, const Format* fmts);
void export_modelopt(const char* path, const SearchCtx* c, const Solution* s, const Format* fmts);
void search_write_h5(const char* path, const SearchCtx* c, const Solution* main, const Solution* sweep, int ns);
void solution_print(const SearchCtx* c, const Solution* s, int detail);
