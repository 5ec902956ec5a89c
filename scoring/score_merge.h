// kl on one GPU with the passes' forwards merged across groups, layer-major (scoring/merge_plan.h): the same
// scores as gpu_score_kl (score_gpu.h) up to the GEMMs' tiling over more rows, with the unquantized layers of
// every pass born earlier run as engine batches of up to Bm windows instead of B. Selected by
// AUTOQ_KL_MERGE=1 (scoring/job.c) for now. C interface.
#pragma once

#ifdef __cplusplus
extern "C" {
#endif
#include "merge_plan.h"
#include "score_gpu.h"

typedef struct {
    GpuEngine* e; // built here: every layer, batch buffers for Bm windows, one layer's saved inputs
    GpuScorer s;  // the spec's B windows per pass: its reference logits and sums
    const GpuScoreSpec* sp;
    MergePlan plan;
    int n_pass;
    int* order;     // (2 n_pass): format, group of each pass, in birth order (stable: group-major in a layer)
    int* birth;     // (n_pass) birth layers, ascending
    int* wave;      // (plan.n_waves + 1): each wave's first pass
    float* states;  // (plan.per_wave B T D) device, the wave's passes in birth order, each B windows
    float* logits;  // (B T V) device: a pass's logits
    double seconds; // init: building the engine and the plan
} GpuMergeScorer;

// The engine and plan for sp (kl): bm, per_wave > 0 force the merged batch and the passes per wave (tests,
// bench: AUTOQ_KL_MERGE_BATCH, AUTOQ_KL_MERGE_WAVE), else chosen from the GPU's free memory.
void gpu_merge_scorer_init(GpuMergeScorer* ms, const GpuScoreSpec* sp, int bm, int per_wave);
void gpu_merge_scorer_free(GpuMergeScorer* ms); // not its engine (gpu_engine_free, after)
// One engine batch of nb <= sp->B windows (host ids (nb, T)) added to score; their per-window scores to wrows
// (host, the batch's first window's row), or NULL.
void gpu_merge_score_kl(GpuMergeScorer* ms, const int* ids, int nb, double* score, double* wrows);

#ifdef __cplusplus
}
#endif
