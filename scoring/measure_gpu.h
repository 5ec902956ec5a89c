// A recipe's joint KL and NLL change on held-out windows through the CUDA engine (search --refine, README §7;
// eval --recipe / --format and search --verify, README "Streaming"). Resident: the model uploaded once, the
// unquantized logits of the windows computed once and kept on the device, then one forward per recipe with
// every chosen linear on its deployed weight (gpu_recipe_set); the caller says which linears changed since the
// last recipe: only those are uploaded again. Streamed (gpu_measure_stream_init): the decoder layers copied
// from host memory as the passes reach them, each batch of windows' reference and quantized states going
// through a layer while it is on the GPU, the recipe's fp32 weights of a streamed layer following it into its
// slot; same arithmetic per window as the resident measurement at the same engine batch.
#pragma once
#include <stddef.h>

#include "../datasets/npy.h"
#include "../engine/model.h"
#include "../kernels/quant.h"
#include "measure_plan.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct GpuMeasure GpuMeasure;

// NULL, with the reason in why, when the device cannot hold the model, the reference logits and
// recipe_bytes more (the deployed fp32 weights a recipe may upload). held: kept by the caller.
GpuMeasure* gpu_measure_init(const Model* m, const TokenIds* held, size_t recipe_bytes, char* why, size_t n);
// The same with engine batches of B windows (measure_batch's when 0).
GpuMeasure* gpu_measure_init_batch(const Model* m, const TokenIds* held, int B, size_t recipe_bytes, char* why,
                                   size_t n);
// Streamed by plan p (p->streamed): the recipe fixed for the measurer's life, linear i on its deployed weight
// w[i] (host (out, in) fp32; NULL: bf16) with inputs fake-quantized by in[i]. w is copied: the caller frees it.
GpuMeasure* gpu_measure_stream_init(const Model* m, const TokenIds* held, const MeasurePlan* p, float* const* w,
                                    const QuantSpec* in);
// Linear idx on its deployed weight w (host fp32 (out, in)) with inputs fake-quantized by in; w NULL: bf16.
// Resident measurers only.
void gpu_measure_set(GpuMeasure* g, int idx, const float* w, QuantSpec in);
// The current recipe on every held-out window: KL to the unquantized logits (summed over windows and
// positions, as the kl score) and the mean over windows of the per-window mean NLL, unquantized and quantized;
// each window's KL into wkl (n) unless NULL.
void gpu_measure_run(GpuMeasure* g, double* kl, double* nll_ref, double* nll_q, double* wkl);
// After a run: bytes copied host->GPU by the stream (0 resident), the seconds the GPU waited for copies, the
// peak GPU memory (the drop in free memory) and the engine's own allocations.
void gpu_measure_stats(GpuMeasure* g, double* h2d, double* unhidden_s, double* peak, double* alloc);
void gpu_measure_free(GpuMeasure* g);
// Free device memory now (cudaMemGetInfo).
size_t gpu_measure_free_memory(void);

#ifdef __cplusplus
}
#endif
