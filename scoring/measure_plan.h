// Where a recipe's measurement (eval --recipe / --format, search --verify: README "Streaming") runs on one
// GPU: resident (scoring/measure_gpu.h's GpuMeasure: the model, every window's unquantized logits and the
// recipe's deployed fp32 weights on the device), or with its decoder layers streamed from host memory, the
// reference and the quantized states of a batch of windows going through each layer while it is on the GPU
// (layer-major: one crossing per layer per streamed batch), the recipe's fp32 weights of a streamed layer
// following it into its slot, and only one engine batch's reference logits on the device at a time. Pure
// arithmetic on byte counts (scoring/stream_plan.c's planner), so the CPU tests check it.
#pragma once
#ifdef __cplusplus
extern "C" {
#endif
#include "../engine/config.h"
#include "stream_plan.h"

typedef struct {
    int streamed;    // 0: resident GpuMeasure, 1: streamed layers
    int B;           // engine batch (windows)
    StreamPlan sp;   // streamed: the resident layers (sp.res) and engine batches per streamed batch (sp.k)
    double resident; // bytes the resident measurement needs (at the first B)
    double need;     // refused (measure_plan returned 0): what the smallest streamed plan needs
} MeasurePlan;

// The resident measurement's engine batch (GpuMeasure): 8192 tokens, logits of at most 2 GiB, at most n.
int measure_batch(int T, int V, int n);
// The spec of one engine batch, s (stream_spec_model's, or a test's), made the measurement's: each layer's
// bytes plus extra[l] (its deployed fp32 weights, which follow it into its slot: the two slots of those are
// counted beyond the layers' own where the largest layer and the largest extra are different layers),
// batch_bytes (an engine batch's reference logits and scratch) and fixed_more (the windows' ids, per-window
// KLs) added to the fixed bytes, two states per engine batch (the reference's and the quantized one's, both on
// the GPU: no spills). Allocates what measure_spec_free frees. Returns the resident measurement's bytes: the
// layers, their extras, the embedding table and held (every window's reference logits) beside s's fixed
// bytes.
double measure_spec(StreamSpec* s, const double* extra, double batch_bytes, double fixed_more, double table,
                    double held);
void measure_spec_free(StreamSpec* s);
// Plans the measurement of n windows of T tokens of a model of config c whose layer l carries extra[l] bytes
// of deployed fp32 weights, within cap bytes: resident when it fits (and not force), else streamed, the engine
// batch halved from B0 (measure_batch's when 0) until a streamed plan fits. k_force > 0: engine batches per
// streamed batch (tests). Returns 1, or 0 when not even one window streams within the cap (p->need says what
// it needs).
int measure_plan(MeasurePlan* p, const Config* c, const double* extra, int T, int n, int B0, double cap,
                 int force, int k_force);
void measure_plan_free(MeasurePlan* p);
#ifdef __cplusplus
}
#endif
