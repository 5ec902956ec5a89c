// Confidence of a recipe (README §7): resample the calibration windows with replacement, recompute every
// group's score from the per-window contributions (/groups/window_scores), re-solve the exact search each
// time, and count how often each group gets each choice.
#pragma once
#include <jansson.h>
#include <stdint.h>

#include "milp.h"
#include "recipe.h"

// A decision is "in the noise" when the recipe's choice for a group comes back in fewer than this fraction
// of the resamples.
#define BOOT_STABLE 0.8

typedef struct Bootstrap {
    int n; // resamples
    uint64_t seed;
    int ng, nf;
    double *lo, *hi; // (nf, ng) each group's resampled score, 2.5% and 97.5% quantiles (linear interpolation)
    double* freq;    // (nf + 1, ng) fraction of resamples choosing bf16 (row 0) or format f (row f + 1)
    double* same;    // (ng) fraction of resamples giving the recipe's choice (1 for a disabled group)
    uint8_t* noisy;  // (ng) same < BOOT_STABLE
    double all_same; // fraction of resamples whose whole recipe equals it
    int n_noisy;
} Bootstrap;

// Resample r of a seeded bootstrap: how many times each of nw windows is drawn (nw draws with replacement,
// splitmix64 seeded with seed and r, so any resample can be recomputed alone).
void boot_counts(uint64_t seed, int r, int nw, int* counts);
// The same within ns strata of sizes[k] consecutive windows each (calibration domains): each stratum draws its
// own size from itself; one stratum is boot_counts.
void boot_counts_strata(uint64_t seed, int r, int ns, const int* sizes, int* counts);
// Bootstraps solution s of c (whose table holds window scores) n times at s->budget under objective o.
void bootstrap_run(Bootstrap* b, const SearchCtx* c, const Objective* o, const Solution* s, int n,
                   uint64_t seed);
void bootstrap_free(Bootstrap* b);
void bootstrap_print(const Bootstrap* b, const SearchCtx* c, const Solution* s);
// {"resamples", "seed", "stable_threshold", "recipe_agreement", "noisy_groups"} for the recipe JSON, and
// per group {"score_interval": {format: [lo, hi]}, "choice_frequency": {choice: f}, "choice_agreement",
// "noisy"}.
json_t* bootstrap_json(const Bootstrap* b);
json_t* bootstrap_group_json(const Bootstrap* b, const ScoreTable* t, int g);
// /bootstrap in an open HDF5 file (README §8).
void bootstrap_write_h5(long file, const Bootstrap* b, const ScoreTable* t, const char* path);
