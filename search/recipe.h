// Solving the budgeted search over a ScoreTable and writing the recipe (README §7-§8): recipe.c
// solves and writes the recipe JSON and HDF5; export.c the llm-compressor YAML and ModelOpt
// quant_cfg JSON.
#pragma once
#include "../scoring/format.h"
#include "../scoring/table.h"
#include "../engine/model.h"
#include "verify.h"

typedef enum { SCOPE_CANDIDATES, SCOPE_ALL } Scope;
// What a bit costs: every stored parameter (memory), or the parameters a token reads (active: a
// routed expert's parameters count top_k / E, as ModelOpt's active-MoE cost does).
typedef enum { COST_MEMORY, COST_ACTIVE } Cost;
// How a format's bits are counted (README §7): true (values and their scales, format_weight_bits), or
// ModelOpt's convention (the smallest num_bits of the enabled quantizers, W4A8 = 4).
typedef enum { BITS_TRUE, BITS_MODELOPT } Bits;

typedef struct {
    double budget;
    int* sel;         // (ng) -1 bf16, else format index; disabled groups -1
    double predicted; // sum of the chosen groups' scores
    double bits[2];   // achieved effective bits, [SCOPE_CANDIDATES], [SCOPE_ALL], in the search's cost and bits
    double bits_cost[2][2]; // the same in each cost: [COST_MEMORY | COST_ACTIVE][scope], in the search's bits
    double bits_conv[2][2]; // the same in each convention: [BITS_TRUE | BITS_MODELOPT][scope], in the search's
                            // cost
    int verified;
    VerifyResult v;
    const struct Bootstrap* boot; // search --bootstrap's confidence (bootstrap.h), or NULL
    const struct Refine* refine;  // search --refine's measurements (refine.h), or NULL
    // Calibration domains (README §7): the objective searched ("sum" without --objective) and each domain's
    // predicted loss (summed score over its windows / its windows), nd = the table's domains.
    const char* objective;
    int nd;
    double dloss[MAX_DOMAINS];
    // A byte budget (search --memory-budget, README §7): the recipe's bytes, MEM_* parts and their total.
    int64_t mem[5];
} Solution;

// The parts of a byte budget: candidate linears (their choices; disabled ones bf16), every other parameter
// (bf16), the KV cache at --context x --batch (with its scale tensors), the fixed --overhead, and the total.
enum { MEM_LINEARS, MEM_OTHER, MEM_KV, MEM_OVERHEAD, MEM_TOTAL };
extern const char* const mem_part_name[5];

// A byte budget's setting (README §7).
typedef struct {
    int on;              // --memory-budget given: budgets are bytes
    long context, batch; // tokens per sequence and sequences the KV cache holds
    int64_t overhead;    // bytes
} MemBudget;

typedef struct {
    const ScoreTable* t;
    Scope scope;
    Cost cost;
    Bits bits;
    long total[2][2];     // [cost][scope]: params counted by each scope
    long fixed[2][2];     // [cost][scope]: cost of disabled groups at 16 bits
    int64_t* gtrue;       // (nf, ng) true memory bits of each group under each format (format_weight_bits)
    int quiet;            // no warnings from search_solve (the bootstrap's many re-solves)
    MemBudget mem;        // byte budgets: costs are bits of memory, budgets bytes
    int kv_uniform;       // --kv-uniform: every enabled KV-cache group takes one choice (one knapsack item)
    long* gkvv;           // (ng) K and V values per token of a KV-cache group (0 for the rest)
    int64_t mem_fixed[4]; // bits every recipe stores: [MEM_LINEARS] disabled linears, [MEM_OTHER], [MEM_KV] the
                          // KV caches of layers without an enabled KV-cache group (bf16), [MEM_OVERHEAD]
    const uint8_t* deny;  // (nf, ng) 1 where --target's engine does not serve format f (target.h), or NULL
} SearchCtx;

// A byte budget over the table (after search_init): exits 2 when the scores file predates /memory.
void search_set_memory(SearchCtx* c, const MemBudget* mb);

void search_init(SearchCtx* c, const ScoreTable* t, Scope scope, Cost cost, Bits bits);
void search_free(SearchCtx* c);
// Smallest budget that any choice satisfies, in the context's scope (with --kv-uniform, one shared by the
// KV-cache groups).
double search_min_budget(const SearchCtx* c);
// Solves each budget exactly; exits 2 on an infeasible one (naming the smallest feasible budget).
void search_solve(const SearchCtx* c, const double* budgets, int nb, Solution* out);
void solution_free(Solution* s);
// Pieces of search_solve for other solvers (milp.c): group g's cost under choice f (-1 bf16) in the context's
// cost and bits; (nf, ng) 1 where format f is not offered to group g (malloc'd); the capacity a budget leaves
// the enabled groups; a solution's achieved bits from its sel.
int64_t search_choice_cost(const SearchCtx* c, int g, int f);
uint8_t* search_misfit_table(const SearchCtx* c);
int64_t search_cap(const SearchCtx* c, double budget);
void search_measure(const SearchCtx* c, Solution* s);
// Reads a recipe JSON written by recipe_write_json: fills fmts from the stored
// definitions (returns their count) and choice[i] per linear of m (-1 keeps bf16).
// Exits 2 naming the field on bad input, and when the recipe does not fit m (names a linear m
// lacks, or leaves one of m's linears out) unless allow_partial, which warns instead and keeps
// the linears left out bf16.
int recipe_read(const char* path, const Model* m, Format* fmts, int* choice, int allow_partial);

// The KV-cache choice of each layer of m in the recipe at path (fmts as recipe_read loaded them): kv[l] a
// format index, or -1 (bf16, no KV-cache group, or a Gated DeltaNet layer). A KV-cache group naming no
// full-attention layer of m is exit 2 (a warning with allow_partial). Returns how many layers take a KV-cache
// format.
int recipe_read_kv(const char* path, const Model* m, const Format* fmts, int nf, int* kv, int allow_partial);

void recipe_write_json(const char* path, const SearchCtx* c, const Solution* s, const Format* fmts);
void search_write_h5(const char* path, const SearchCtx* c, const Solution* main, const Solution* sweep, int ns);
void solution_print(const SearchCtx* c, const Solution* s, int detail);

// ---- export.c ----
// fnmatch pattern (autoq's rules: '*' crosses dots, no backslash escapes, [...] and [!...] sets)
// -> anchored Python regular expression matching the same names; malloc'd.
char* recipe_regex_glob(const char* glob);
// A module name -> anchored regular expression matching exactly that name; malloc'd.
char* recipe_regex_name(const char* name);
// An experts group "<layer>.mlp.experts" as one regex over its linears "<group>.N.{gate,up,down}_proj"
// (malloc'd), as the exports and quantize's quantization_config name it.
char* recipe_regex_experts(const char* group);
// llm-compressor GPTQModifier recipe (YAML, through libyaml's emitter). q: the quantizer the search
// used (its GPTQ settings travel as dampening_frac, actorder, block_size); NULL: autoq's defaults.
// Both exports warn when the scores' numerics are not the ones the tool applies (export_numerics_note).
void export_llmcompressor(const char* path, const SearchCtx* c, const Solution* s, const Format* fmts,
                          const Quantizer* q);
void export_modelopt(const char* path, const SearchCtx* c, const Solution* s, const Format* fmts,
                     const Quantizer* q);
// How format f's numerics differ from those of the tool that deploys them (ct: compressed-tensors /
// llm-compressor numerics, else ModelOpt's), as one line into buf ("" when they are the same):
// which quantizer and its scale ratio. Returns the largest relative scale change (0 when none).
double export_numerics_note(const Format* f, int ct, char* buf, size_t n);
