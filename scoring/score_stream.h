// Scoring with streamed layers (README "Streaming"): kl layer-major over every in-flight pass of a
// streamed batch of windows, and the gradient as a streamed forward that keeps every layer's input (on
// the GPU or spilled to pinned host memory) then a streamed backward in reverse layer order. The
// arithmetic of each pass is score_gpu.cu's, so the scores equal the resident run's. C interface.
#pragma once

#ifdef __cplusplus
extern "C" {
#endif
#include "../engine/gpu_stream.h"
#include "score_gpu.h"
#include "stream_plan.h"

typedef struct {
    GpuEngine* e;
    GpuStream* st;
    GpuScorer s;
    const GpuScoreSpec* sp;
    const StreamPlan* plan;
    int n_state;   // states of a streamed batch (plan->states_peak)
    int n_gpu;     // of those, held on the GPU
    float** state; // (n_state) device buffers, or pinned host ones for spilled states
    // spilled states compute in one of two device slots, loaded on one copy stream and written back on
    // another, so that the next state's load and the last one's write-back overlap this one's compute
    float* ring[2];
    StreamRing slots; // which state each slot holds
    void* ring_ev;    // the slots' events and the two copy streams (score_stream.cu)
    int sync;         // AUTOQ_STREAM_SYNC=1: the device synchronized after every state's use (debugging)
    int* order;       // kl: the passes (format, group index into sp->gs), sorted by birth layer
    int n_pass;
    double spill_bytes; // bytes each way through spilled states
    double** dw;        // gradient with per-window scores: (plan->k) device (B, nf * groups) sums, or NULL
    GpuScoreSpec spec;  // sp without its given weights: the scorer's (this file gives them layer by layer)
    void* given;        // GPTQ's given weights of the streamed layers (score_stream.cu), or NULL
} GpuStreamScorer;

// Free memory of the current GPU, bytes.
size_t gpu_stream_free_memory(void);
// The engine and scorer of a streamed run planned by plan (plan->streamed). Given weights (sp->qc, GPTQ's)
// of resident layers are uploaded once; a streamed layer's follow it into its slot, as int8 codes and scales.
void gpu_stream_scorer_init(GpuStreamScorer* ss, const GpuScoreSpec* sp, const StreamPlan* plan);
void gpu_stream_scorer_free(GpuStreamScorer* ss);
// nw windows (ids (nw, T), nw <= plan->k B) as one streamed batch, added to score; more: another batch
// follows (its first layer is copied while this batch's heads run). wrows: host rows (nw, nf * groups)
// the windows' own scores are added to (README §6), or NULL: none kept; the gradient's totals are then the
// sums of its windows, as resident. The gradient returns the summed per-window mean CE.
void gpu_stream_score_kl(GpuStreamScorer* ss, const int* ids, int nw, double* score, double* wrows, int more);
double gpu_stream_score_gradient(GpuStreamScorer* ss, const int* ids, int nw, double* score, double* wrows,
                                 int more);
// gpu_score_multi with every GPU streaming its layers by plan (sp->B: its engine batch): each GPU scores its
// share of the windows as one streamed run; stats[0..2] receive the bytes copied host->GPU and seconds of
// copies not hidden (summed over the GPUs), and the engine's allocations (the largest).
void gpu_score_multi_stream(const GpuScoreSpec* sp, const StreamPlan* plan, double* stats, const int* ids,
                            int n, int ngpus, double* score, double* seconds, size_t* peak);

#ifdef __cplusplus
}
#endif
