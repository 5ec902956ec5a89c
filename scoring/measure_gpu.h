// A recipe's joint KL and NLL change on held-out windows through the CUDA engine (search --refine, README §7):
// the model uploaded once, the unquantized logits of the windows computed once and kept on the device, then
// one forward per recipe with every chosen linear on its deployed weight (gpu_recipe_set). The caller says
// which linears changed since the last recipe: only those are uploaded again.
#pragma once
#include <stddef.h>

#include "../datasets/npy.h"
#include "../engine/model.h"
#include "../kernels/quant.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct GpuMeasure GpuMeasure;

// NULL, with the reason in why, when the device cannot hold the model, the reference logits and
// recipe_bytes more (the deployed fp32 weights a recipe may upload). held: kept by the caller.
GpuMeasure* gpu_measure_init(const Model* m, const TokenIds* held, size_t recipe_bytes, char* why, size_t n);
// Linear idx on its deployed weight w (host fp32 (out, in)) with inputs fake-quantized by in; w NULL: bf16.
void gpu_measure_set(GpuMeasure* g, int idx, const float* w, QuantSpec in);
// The current recipe on every held-out window: KL to the unquantized logits (summed over windows and
// positions, as the kl score) and the mean over windows of the per-window mean NLL, unquantized and quantized;
// each window's KL into wkl (n) unless NULL.
void gpu_measure_run(GpuMeasure* g, double* kl, double* nll_ref, double* nll_q, double* wkl);
void gpu_measure_free(GpuMeasure* g);

#ifdef __cplusplus
}
#endif
