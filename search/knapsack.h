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

typedef struct {
    int n;
    const KsItem* items;
    int64_t unit;     // gcd of all costs
    int64_t cap;      // capacity in units the table was built for
    int64_t min_cost; // smallest achievable total cost (in cost units, not divided)
    uint8_t* choice;  // (n, cap + 1): best choice of item i given capacity c for items i..n-1
    double* best;     // (cap + 1): best score with items 0..n-1 and capacity c
    int64_t* best_bf16;
    int64_t* best_cost;
} Knapsack;

// Builds the table for every capacity up to max_cost. Returns 0, or -1 when
// the table would exceed max_states cells (the caller reports it).
int ks_build(Knapsack* ks, const KsItem* items, int n, int64_t max_cost, int64_t max_states);
// Chosen option per item for capacity cap_cost (<= the built max). Returns 0,
// or -1 when infeasible. total_* receive the solution's sums.
int ks_solve(const Knapsack* ks, int64_t cap_cost, int* out, double* total_score, int64_t* total_cost);
void ks_free(Knapsack* ks);
// Brute force over every combination (tests only; n small).
int ks_brute(const KsItem* items, int n, int64_t cap_cost, int* out, double* total_score, int64_t* total_cost);
