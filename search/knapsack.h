// Exact multiple-choice knapsack (README §7): each item (group) takes one of
// its choices; minimise the summed score subject to the summed cost <= cap.
// Costs are integers; dividing every cost by their gcd keeps the dynamic
// programme small for transformer shapes (all dimensions share large factors).
#pragma once
#include <stdint.h>

#define KS_MAX_CHOICES 8

typedef struct {
    int n_choices;
    int64_t cost[KS_MAX_CHOICES]; // params x bits
    double score[KS_MAX_CHOICES];
    int64_t bf16[KS_MAX_CHOICES]; // params left in bf16 by this choice (tie-break)
} KsItem;

// One partial solution of the sparse table: items i..n-1 chosen, reached from state `prev` of the
// frontier of items i+1..n-1 by choice `choice` of item i.
typedef struct {
    int64_t cost, bf16;
    double score;
    int32_t prev;
    uint8_t choice;
} KsState;

typedef struct {
    int n;
    const KsItem* items;
    // Sparse form, used when the dense table would pass max_states: the Pareto frontier of items i..n-1
    // (costs ascending, each state strictly better than every cheaper one), front[i] of n_front[i].
    int sparse;
    KsState** front; // (n + 1) frontiers; front[n] is the empty selection
    int64_t* n_front;
    int64_t unit;     // gcd of all costs
    int64_t cap;      // capacity in units the table was built for
    int64_t min_cost; // smallest achievable total cost (in cost units, not divided)
    uint8_t* choice;  // (n, cap + 1): best choice of item i given capacity c for items i..n-1
    double* best;     // (cap + 1): best score with items 0..n-1 and capacity c
    int64_t* best_bf16;
    int64_t* best_cost;
} Knapsack;

// Builds the table for every capacity up to max_cost: dense (a choice per item and capacity unit) when
// it fits max_states cells, else the sparse Pareto frontiers, which are small when many groups share a
// shape (every distinct total cost is a count of each shape's choices) however fine the cost unit.
// Returns 0, or -1 when the frontiers too exceed max_states / 32 states (the caller reports it).
int ks_build(Knapsack* ks, const KsItem* items, int n, int64_t max_cost, int64_t max_states);
// The sparse form directly, within max_states / sizeof(KsState) states (tests; ks_build falls back to it).
int ks_build_sparse(Knapsack* ks, const KsItem* items, int n, int64_t max_cost, int64_t max_states);
// Chosen option per item for capacity cap_cost (<= the built max). Returns 0,
// or -1 when infeasible. total_* receive the solution's sums.
int ks_solve(const Knapsack* ks, int64_t cap_cost, int* out, double* total_score, int64_t* total_cost);
void ks_free(Knapsack* ks);
// Brute force over every combination (tests only; n small).
int ks_brute(const KsItem* items, int n, int64_t cap_cost, int* out, double* total_score, int64_t* total_cost);
